// Command exactlyonce runs a consume-transform-produce service under
// crashes and checks that it wrote every output exactly once.
//
//	go run ./examples/exactlyonce
//
// The parent process writes numbered records to topic "in" of an embedded
// log, then runs the service (this same program with -worker) and kills it
// with SIGKILL several times mid-stream, each time at a random moment,
// before letting a last run finish. The service reads "in" in a consumer
// group and, for each poll, writes one record per input to "out" and sends
// its consumer offsets in the same transaction (Kafka's exactly-once
// recipe: KIP-98 and KIP-447). A killed run's open transaction is aborted
// when the next run starts its transactional producer under the same
// transactional id, which fences the dead one.
//
// The parent then reads "out" with ReadCommitted and exits non-zero unless
// every input appears exactly once; ReadUncommitted shows what the aborted
// transactions left behind.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/replog/replog"
)

const (
	inputs     = 6000
	partitions = 3
	kills      = 4
	txnID      = "exactlyonce-transform"
	group      = "transform"
)

func main() {
	worker := flag.Bool("worker", false, "run as the service")
	dir := flag.String("dir", "", "worker: the log's directory")
	flag.Parse()
	var err error
	if *worker {
		err = runWorker(*dir)
	} else {
		err = runParent()
	}
	if err != nil {
		log.Fatal(err)
	}
}

func runParent() error {
	dir, err := os.MkdirTemp("", "replog-exactlyonce-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if err := writeInputs(ctx, dir); err != nil {
		return err
	}
	fmt.Printf("wrote %d records to \"in\"\n", inputs)

	self, err := os.Executable()
	if err != nil {
		return err
	}
	for i := range kills {
		cmd := exec.Command(self, "-worker", "-dir", dir)
		cmd.Stderr = os.Stderr
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			return err
		}
		if err := cmd.Start(); err != nil {
			return err
		}
		// Killed mid-stream: a random moment after its first commit.
		lines, started := bufio.NewScanner(stdout), false
		for !started && lines.Scan() {
			started = strings.HasPrefix(lines.Text(), "committed")
		}
		if !started {
			if err := cmd.Wait(); err != nil {
				return fmt.Errorf("run %d: %w", i+1, err)
			}
			fmt.Printf("run %d: found nothing left to do\n", i+1)
			continue
		}
		after := time.Duration(10+rand.IntN(110)) * time.Millisecond
		time.Sleep(after)
		if err := cmd.Process.Kill(); err != nil {
			return err
		}
		go io.Copy(io.Discard, stdout)
		err = cmd.Wait()
		fmt.Printf("run %d: killed with SIGKILL %v after its first commit (%v)\n", i+1, after, err)
	}
	cmd := exec.Command(self, "-worker", "-dir", dir)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("last run: %w", err)
	}
	return check(ctx, dir)
}

// writeInputs creates the topics and writes the inputs "0" .. "inputs-1".
func writeInputs(ctx context.Context, dir string) error {
	l, err := replog.Open(dir, nil)
	if err != nil {
		return err
	}
	defer l.Close()
	in, err := l.CreateTopic(ctx, "in", replog.TopicConfig{Partitions: partitions})
	if err != nil {
		return err
	}
	if _, err := l.CreateTopic(ctx, "out", replog.TopicConfig{Partitions: partitions}); err != nil {
		return err
	}
	p, err := replog.NewProducer(in, replog.String(), nil)
	if err != nil {
		return err
	}
	defer p.Close()
	for i := range inputs {
		v := strconv.Itoa(i)
		p.ProduceAsync(ctx, replog.Message[string]{Key: []byte(v), Value: v}, nil)
	}
	return p.Flush(ctx)
}

// runWorker is the service: it transforms until it has consumed every
// input, then exits.
func runWorker(dir string) error {
	ctx := context.Background()
	l, err := replog.Open(dir, nil)
	if err != nil {
		return err
	}
	defer l.Close()
	in, err := l.Topic("in")
	if err != nil {
		return err
	}
	out, err := l.Topic("out")
	if err != nil {
		return err
	}
	// The transactional producer first: it fences the previous run and
	// aborts what it left open, so that the group's offsets are stable
	// when the consumer reads them.
	tp, err := l.NewTransactionalProducer(ctx, txnID, &replog.TransactionalOptions{Timeout: 30 * time.Second})
	if err != nil {
		return err
	}
	defer tp.Close()
	p, err := replog.NewProducer(out, replog.String(), &replog.ProducerOptions{Transactional: tp})
	if err != nil {
		return err
	}
	defer p.Close()
	c, err := replog.NewConsumer(in, replog.String(), &replog.ConsumerOptions{
		Group:     group,
		Isolation: replog.ReadCommitted,
		// Static membership: a restarted run takes its partitions back at
		// once instead of waiting for the dead one's session to expire.
		GroupOptions:   replog.GroupOptions{InstanceID: "worker-1", SessionTimeout: 3 * time.Second},
		MaxPollRecords: 20,
	})
	if err != nil {
		return err
	}
	defer c.Close()

	ends := make([]int64, partitions)
	for i := range ends {
		o, err := in.Offsets(ctx, i)
		if err != nil {
			return err
		}
		ends[i] = o.HighWatermark
	}
	for done := 0; ; {
		pctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
		recs, err := c.Poll(pctx)
		cancel()
		if err != nil && !errors.Is(err, context.DeadlineExceeded) {
			return err
		}
		if len(recs) == 0 {
			if caughtUp(c, ends, true) {
				fmt.Printf("worker: done, %d inputs transformed in this run\n", done)
				return nil
			}
			continue
		}
		if err := tp.Begin(); err != nil {
			return err
		}
		for _, r := range recs {
			p.ProduceAsync(ctx, replog.Message[string]{Key: r.Key, Value: "out-" + r.Value}, nil)
		}
		if err := tp.SendOffsets(ctx, c); err != nil {
			return errors.Join(err, tp.Abort(ctx))
		}
		if err := tp.Commit(ctx); err != nil {
			return errors.Join(err, tp.Abort(ctx))
		}
		if done == 0 {
			fmt.Println("committed the first transaction")
		}
		done += len(recs)
	}
}

// caughtUp reports whether c's positions reached ends on every partition
// (a group member's only once it was assigned all of them).
func caughtUp(c *replog.Consumer[string], ends []int64, group bool) bool {
	if group && len(c.Assignment()) != len(ends) {
		return false
	}
	for i, end := range ends {
		pos, err := c.Position(i)
		if err != nil || pos < end {
			return false
		}
	}
	return true
}

// check reads "out" at both isolation levels and compares with the inputs.
func check(ctx context.Context, dir string) error {
	l, err := replog.Open(dir, nil)
	if err != nil {
		return err
	}
	defer l.Close()
	out, err := l.Topic("out")
	if err != nil {
		return err
	}
	committed, err := readAll(ctx, out, replog.ReadCommitted)
	if err != nil {
		return err
	}
	all, err := readAll(ctx, out, replog.ReadUncommitted)
	if err != nil {
		return err
	}
	counts := map[string]int{}
	for _, v := range committed {
		counts[v]++
	}
	var missing, duplicated []string
	for i := range inputs {
		v := "out-" + strconv.Itoa(i)
		switch n := counts[v]; {
		case n == 0:
			missing = append(missing, v)
		case n > 1:
			duplicated = append(duplicated, fmt.Sprintf("%s x%d", v, n))
		}
	}
	fmt.Printf("read_uncommitted: %d records in \"out\" (%d from aborted transactions)\n", len(all), len(all)-len(committed))
	fmt.Printf("read_committed:   %d records, %d distinct, %d missing, %d duplicated\n", len(committed), len(counts), len(missing), len(duplicated))
	if len(missing) > 0 || len(duplicated) > 0 || len(committed) != inputs {
		return fmt.Errorf("not exactly once: missing %s; duplicated %s", head(missing), head(duplicated))
	}
	fmt.Println("every input transformed exactly once")
	return nil
}

// readAll reads every record of t up to its high watermark at the
// isolation level. Every transaction has ended: the last run committed
// its own, and aborted the killed runs' ones when it started.
func readAll(ctx context.Context, t *replog.Topic, iso replog.IsolationLevel) ([]string, error) {
	c, err := replog.NewConsumer(t, replog.String(), &replog.ConsumerOptions{Isolation: iso})
	if err != nil {
		return nil, err
	}
	defer c.Close()
	ends := make([]int64, t.Partitions())
	for i := range ends {
		o, err := t.Offsets(ctx, i)
		if err != nil {
			return nil, err
		}
		ends[i] = o.HighWatermark
	}
	var out []string
	for !caughtUp(c, ends, false) {
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		recs, err := c.Poll(pctx)
		cancel()
		if err != nil {
			return nil, fmt.Errorf("reading %s (%v): %w", t.Name(), iso, err)
		}
		for _, r := range recs {
			out = append(out, r.Value)
		}
	}
	return out, nil
}

func head(vs []string) string {
	if len(vs) > 5 {
		vs = append(vs[:5:5], "...")
	}
	return strings.Join(vs, ", ")
}
