// Command cluster runs a three-node replog cluster as three OS processes on
// 127.0.0.1, talking Raft over TCP with mutual TLS, using certificates it
// generates. The parent process starts the nodes (this same program with
// -node), creates a replicated topic on node 1, produces on node 2 and
// consumes on node 3, then stops them.
//
//	go run ./examples/cluster
//
// Each node reads commands on stdin and answers on stdout, one per line, so
// tests can drive and kill nodes (see cluster_test.go):
//
//	create TOPIC PARTITIONS          -> ok
//	produce TOPIC N PREFIX           -> ack VALUE PARTITION OFFSET ... ok
//	consume TOPIC N                  -> rec VALUE PARTITION OFFSET ... ok
//	leader TOPIC PARTITION           -> leader NODEID
//	quit
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/replog/replog"
	"github.com/replog/replog/internal/certs"
)

func main() {
	node := flag.Int("node", 0, "run as node N (1-3) instead of as the parent")
	dir := flag.String("dir", "", "node: data directory")
	peers := flag.String("peers", "", "node: 1=host:port,2=host:port,3=host:port")
	certDir := flag.String("certs", "", "node: directory with ca.pem, nodeN.pem, nodeN-key.pem")
	flag.Parse()
	var err error
	if *node > 0 {
		err = runNode(*node, *dir, *peers, *certDir, os.Stdin, os.Stdout)
	} else {
		err = runParent()
	}
	if err != nil {
		log.Fatal(err)
	}
}

// Setup picks three free loopback ports and writes into dir a CA and, for
// each node, a certificate bound to its address (so that no node can pass
// for another); it returns the -peers flag value.
func Setup(dir string) (string, error) {
	ca, err := certs.NewCA(dir, "replog-example")
	if err != nil {
		return "", err
	}
	var parts []string
	for i := 1; i <= 3; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return "", err
		}
		addr := l.Addr().String()
		l.Close()
		if _, err := ca.IssueNode(fmt.Sprintf("node%d", i), addr); err != nil {
			return "", err
		}
		parts = append(parts, fmt.Sprintf("%d=%s", i, addr))
	}
	return strings.Join(parts, ","), nil
}

func runParent() error {
	tmp, err := os.MkdirTemp("", "replog-cluster-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	peers, err := Setup(tmp)
	if err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	var nodes []*Node
	defer func() {
		for _, n := range nodes {
			n.Quit()
		}
	}()
	for i := 1; i <= 3; i++ {
		n, err := StartNode(self, i, filepath.Join(tmp, fmt.Sprintf("data%d", i)), peers, tmp)
		if err != nil {
			return err
		}
		nodes = append(nodes, n)
		fmt.Printf("started node %d (pid %d)\n", i, n.cmd.Process.Pid)
	}
	if _, err := nodes[0].Do("create events 3"); err != nil {
		return err
	}
	fmt.Println("node 1 created topic events: 3 partitions, 3 replicas")
	acks, err := nodes[1].Do("produce events 6 order")
	if err != nil {
		return err
	}
	for _, a := range acks {
		fmt.Println("node 2", a)
	}
	recs, err := nodes[2].Do("consume events 6")
	if err != nil {
		return err
	}
	for _, r := range recs {
		fmt.Println("node 3", r)
	}
	return nil
}

// Node is a child node process driven over its stdin and stdout.
type Node struct {
	cmd *exec.Cmd
	in  io.WriteCloser
	out *bufio.Scanner
}

// StartNode starts bin as node id and waits until it is ready.
func StartNode(bin string, id int, dir, peers, certDir string) (*Node, error) {
	cmd := exec.Command(bin, "-node", strconv.Itoa(id), "-dir", dir, "-peers", peers, "-certs", certDir)
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	return &Node{cmd: cmd, in: in, out: bufio.NewScanner(out)}, nil
}

// Do sends one command and returns the lines answered before "ok".
func (n *Node) Do(command string) ([]string, error) {
	if _, err := fmt.Fprintln(n.in, command); err != nil {
		return nil, err
	}
	var lines []string
	for n.out.Scan() {
		line := n.out.Text()
		switch {
		case line == "ok":
			return lines, nil
		case strings.HasPrefix(line, "error "):
			return lines, errors.New(strings.TrimPrefix(line, "error "))
		}
		lines = append(lines, line)
	}
	return lines, fmt.Errorf("node exited: %v", n.out.Err())
}

// Kill sends SIGKILL, as a crash.
func (n *Node) Kill() error {
	err := n.cmd.Process.Kill()
	n.cmd.Wait()
	return err
}

// Quit asks the node to close and waits for it.
func (n *Node) Quit() {
	fmt.Fprintln(n.in, "quit")
	n.in.Close()
	done := make(chan struct{})
	go func() { n.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		n.cmd.Process.Kill()
		<-done
	}
}

func runNode(id int, dir, peerFlag, certDir string, in io.Reader, out io.Writer) error {
	peers := map[uint64]string{}
	for _, p := range strings.Split(peerFlag, ",") {
		k, v, ok := strings.Cut(p, "=")
		n, err := strconv.ParseUint(k, 10, 64)
		if !ok || err != nil {
			return fmt.Errorf("bad -peers entry %q", p)
		}
		peers[n] = v
	}
	l, err := replog.Open(dir, &replog.Options{
		NodeID:    uint64(id),
		Peers:     peers,
		ClusterID: "example",
		TLS: &replog.TLSOptions{
			CAFile:   filepath.Join(certDir, "replog-example-ca.pem"),
			CertFile: filepath.Join(certDir, fmt.Sprintf("node%d.pem", id)),
			KeyFile:  filepath.Join(certDir, fmt.Sprintf("node%d-key.pem", id)),
		},
	})
	if err != nil {
		return err
	}
	defer l.Close()
	producers := map[string]*replog.Producer[string]{}
	defer func() {
		for _, p := range producers {
			p.Close()
		}
	}()
	sc := bufio.NewScanner(in)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 {
			continue
		}
		if f[0] == "quit" {
			return nil
		}
		if err := command(l, producers, f, out); err != nil {
			fmt.Fprintln(out, "error", strings.ReplaceAll(err.Error(), "\n", " "))
			continue
		}
		fmt.Fprintln(out, "ok")
	}
	return sc.Err()
}

func command(l *replog.Log, producers map[string]*replog.Producer[string], f []string, out io.Writer) error {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	arg := func(i int) int {
		if i >= len(f) {
			return 0
		}
		n, _ := strconv.Atoi(f[i])
		return n
	}
	if len(f) < 2 {
		return fmt.Errorf("usage: %s TOPIC [ARGS]", f[0])
	}
	switch f[0] {
	case "create":
		_, err := l.CreateTopic(ctx, f[1], replog.TopicConfig{Partitions: arg(2), Replicas: 3})
		return err
	case "produce":
		t, err := l.Topic(f[1])
		if err != nil {
			return err
		}
		p := producers[f[1]]
		if p == nil {
			if p, err = replog.NewProducer(t, replog.String(), nil); err != nil {
				return err
			}
			producers[f[1]] = p
		}
		for i := range arg(2) {
			v := fmt.Sprintf("%s-%06d", f[3], i)
			pos, err := p.Produce(ctx, replog.Message[string]{Key: []byte(v), Value: v})
			if err != nil {
				return err
			}
			fmt.Fprintln(out, "ack", v, pos.Partition, pos.Offset)
		}
		return nil
	case "consume":
		t, err := l.Topic(f[1])
		if err != nil {
			return err
		}
		c, err := replog.NewConsumer(t, replog.String(), nil)
		if err != nil {
			return err
		}
		defer c.Close()
		n, want := 0, arg(2)
		for rec, err := range c.Records(ctx) {
			if err != nil {
				return err
			}
			fmt.Fprintln(out, "rec", rec.Value, rec.Partition, rec.Offset)
			if n++; n == want {
				break
			}
		}
		if n < want {
			return fmt.Errorf("read %d of %d records: %v", n, want, ctx.Err())
		}
		return nil
	case "leader":
		t, err := l.Topic(f[1])
		if err != nil {
			return err
		}
		id, err := t.Leader(ctx, arg(2))
		if err != nil {
			return err
		}
		fmt.Fprintln(out, "leader", id)
		return nil
	}
	return fmt.Errorf("unknown command %q", f[0])
}
