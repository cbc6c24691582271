package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

var built struct {
	once sync.Once
	bin  string
	err  error
	dir  string
}

// replogBinary builds the command once per test binary run.
func replogBinary(t *testing.T) string {
	t.Helper()
	built.once.Do(func() {
		dir, err := os.MkdirTemp("", "replog-cmd-test")
		if err != nil {
			built.err = err
			return
		}
		built.dir = dir
		built.bin = filepath.Join(dir, "replog")
		out, err := exec.Command("go", "build", "-o", built.bin, ".").CombinedOutput()
		if err != nil {
			built.err = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if built.err != nil {
		t.Fatal(built.err)
	}
	return built.bin
}

// node is a running "replog serve" process.
type node struct {
	cmd    *exec.Cmd
	addr   string
	stderr *lockedWriter
	done   chan error
}

// startServe starts "replog serve" on dir and waits for its listening line.
func startServe(t *testing.T, dir string, extra ...string) *node {
	t.Helper()
	cmd := exec.Command(replogBinary(t), append([]string{"serve", "-dir", dir, "-kafka", "127.0.0.1:0"}, extra...)...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	n := &node{cmd: cmd, stderr: &lockedWriter{}, done: make(chan error, 1)}
	cmd.Stderr = n.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			<-n.done
		}
	})
	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
		n.done <- cmd.Wait()
	}()
	deadline := time.After(60 * time.Second)
	for {
		select {
		case line, ok := <-lines:
			if !ok {
				t.Fatalf("serve ended before listening; stderr:\n%s", n.stderr)
			}
			if _, addr, found := strings.Cut(line, "listening for Kafka clients on "); found {
				n.addr = strings.TrimSpace(addr)
				go func() {
					for range lines {
					}
				}()
				return n
			}
		case <-deadline:
			t.Fatalf("no listening line within 60s; stderr:\n%s", n.stderr)
		}
	}
}

// stop sends sig and returns the exit code.
func (n *node) stop(t *testing.T, sig syscall.Signal) int {
	t.Helper()
	if err := n.cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-n.done:
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return ee.ExitCode()
		}
		if err != nil {
			t.Fatal(err)
		}
		return 0
	case <-time.After(60 * time.Second):
		t.Fatalf("serve did not stop within 60s of %v; stderr:\n%s", sig, n.stderr)
		return -1
	}
}

// lockedWriter collects a process's stderr, read while it runs.
type lockedWriter struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedWriter) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func consumeN(t *testing.T, ctx context.Context, addr, topic string, n int) []string {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var got []string
	for len(got) < n {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			t.Fatalf("consumed %d of %d records: %v", len(got), n, err)
		}
		fs.EachError(func(t string, p int32, err error) {})
		fs.EachRecord(func(r *kgo.Record) { got = append(got, string(r.Value)) })
	}
	return got
}

// TestServe is the contract of "replog serve": a listening line once
// clients can connect, topics created on first use, a clean stop on
// SIGTERM and SIGINT with exit code 0, records kept across a restart.
func TestServe(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the command")
	}
	dir := t.TempDir()
	n := startServe(t, dir)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()

	cl, err := kgo.NewClient(kgo.SeedBrokers(n.addr), kgo.DefaultProduceTopic("auto"), kgo.AllowAutoTopicCreation())
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for i := range 10 {
		want = append(want, fmt.Sprintf("record-%d", i))
		if err := cl.ProduceSync(ctx, &kgo.Record{Value: []byte(want[i])}).FirstErr(); err != nil {
			t.Fatalf("produce to an auto-created topic: %v", err)
		}
	}
	cl.Close()
	if got := consumeN(t, ctx, n.addr, "auto", 10); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("consumed %q, want %q", got, want)
	}
	if code := n.stop(t, syscall.SIGTERM); code != 0 {
		t.Fatalf("exit code %d after SIGTERM; stderr:\n%s", code, n.stderr)
	}

	n = startServe(t, dir)
	if got := consumeN(t, ctx, n.addr, "auto", 10); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("after a restart consumed %q, want %q", got, want)
	}
	if code := n.stop(t, syscall.SIGINT); code != 0 {
		t.Fatalf("exit code %d after SIGINT; stderr:\n%s", code, n.stderr)
	}
}

// TestServeNoAutoCreate: with -auto-create=false a produce to a missing
// topic fails rather than creating it.
func TestServeNoAutoCreate(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the command")
	}
	n := startServe(t, t.TempDir(), "-auto-create=false")
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
	defer cancel()
	cl, err := kgo.NewClient(kgo.SeedBrokers(n.addr), kgo.DefaultProduceTopic("missing"), kgo.AllowAutoTopicCreation())
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if err := cl.ProduceSync(ctx, &kgo.Record{Value: []byte("x")}).FirstErr(); err == nil {
		t.Fatal("produce to a missing topic succeeded with -auto-create=false")
	}
	if code := n.stop(t, syscall.SIGTERM); code != 0 {
		t.Fatalf("exit code %d; stderr:\n%s", code, n.stderr)
	}
}
