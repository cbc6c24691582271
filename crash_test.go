package replog_test

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/replog/replog"
)

// ack is a record the child process saw acknowledged.
type ack struct {
	offset int64
	value  string
}

// TestCrashKeepsAcknowledgedRecords kills (SIGKILL) a process that
// produces synchronously to a durable single node on a real disk, a few
// times, and checks after each kill that every record it saw acknowledged
// is in the log exactly once, at its offset. The store runs without a WAL:
// what it had not flushed comes back from the Raft log.
func TestCrashKeepsAcknowledgedRecords(t *testing.T) {
	if os.Getenv(childEnv) == "crash" {
		crashChild(t, os.Getenv("REPLOG_TEST_CRASH_DIR"), os.Getenv("REPLOG_TEST_CRASH_ROUND"))
		return
	}
	if testing.Short() {
		t.Skip("kills child processes")
	}
	dir := t.TempDir()
	var acks []ack
	for round := range 3 {
		cmd := childCmd(t, "TestCrashKeepsAcknowledgedRecords", childEnv+"=crash",
			"REPLOG_TEST_CRASH_DIR="+dir, "REPLOG_TEST_CRASH_ROUND="+strconv.Itoa(round))
		cmd.Stderr = os.Stderr
		stdout, err := cmd.StdoutPipe()
		require.NoError(t, err)
		require.NoError(t, cmd.Start())

		// Kill it after a random number of acknowledgements, at whatever
		// point of its next produce it is.
		want := 20 + rand.IntN(200)
		got := 0
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			a, ok := parseAck(sc.Text())
			if !ok {
				continue // a line the test framework wrote
			}
			acks = append(acks, a)
			if got++; got == want {
				require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
			}
		}
		err = cmd.Wait()
		// Acknowledgements the child printed before the kill reached it
		// are read after it, and checked like the others.
		require.GreaterOrEqual(t, got, want, "the child stopped early: %v", err)
		t.Logf("round %d: killed after %d acknowledged records (%d in all)", round, got, len(acks))
		checkAcked(t, dir, acks)
	}
}

// parseAck reads a line "ack OFFSET VALUE end"; a line cut by the kill
// does not parse.
func parseAck(line string) (ack, bool) {
	f := strings.Fields(line)
	if len(f) != 4 || f[0] != "ack" || f[3] != "end" {
		return ack{}, false
	}
	off, err := strconv.ParseInt(f[1], 10, 64)
	return ack{off, f[2]}, err == nil
}

// crashChild produces until it is killed, printing each acknowledged
// record. It gives up after 30s, should the parent be gone.
func crashChild(t *testing.T, dir, round string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	l, err := replog.Open(dir, nil)
	require.NoError(t, err)
	defer l.Close()
	tp, err := l.Topic("crash")
	if err != nil {
		tp, err = l.CreateTopic(ctx, "crash", replog.TopicConfig{Partitions: 1})
	}
	require.NoError(t, err)
	p, err := replog.NewProducer(tp, replog.String(), nil)
	require.NoError(t, err)
	for i := 0; ctx.Err() == nil; i++ {
		v := fmt.Sprintf("r%s-%d", round, i)
		pos, err := p.Produce(ctx, replog.Message[string]{Value: v})
		require.NoError(t, err)
		fmt.Printf("ack %d %s end\n", pos.Offset, v)
	}
}

// checkAcked opens dir and checks that every acknowledged record is there,
// at its offset, and that no value is there twice.
func checkAcked(t *testing.T, dir string, acks []ack) {
	t.Helper()
	ctx := testCtx(t)
	l, err := replog.Open(dir, nil)
	require.NoError(t, err)
	defer l.Close()
	tp, err := l.Topic("crash")
	require.NoError(t, err)
	// Right after Open, the high watermark already covers every record
	// acknowledged before the crash: Offsets waits for the reopened
	// partition to apply what its Raft log had committed.
	o, err := tp.Offsets(ctx, 0)
	require.NoError(t, err)
	require.Greater(t, o.HighWatermark, acks[len(acks)-1].offset, "high watermark right after reopening")
	c, err := replog.NewConsumer(tp, replog.String(), nil)
	require.NoError(t, err)
	defer c.Close()

	// Read past the last acknowledged offset, then to the end: records
	// committed but not acknowledged before the kill may follow.
	log := map[int64]string{}
	seen := map[string]int64{}
	read := func(upTo int64) {
		for int64(len(log)) <= upTo {
			rec, err := nextRecord(ctx, c)
			require.NoError(t, err, "reading offset %d", len(log))
			prev, dup := seen[rec.Value]
			require.False(t, dup, "%q at offsets %d and %d", rec.Value, prev, rec.Offset)
			seen[rec.Value], log[rec.Offset] = rec.Offset, rec.Value
		}
	}
	read(acks[len(acks)-1].offset)
	for hw := int64(-1); ; {
		time.Sleep(100 * time.Millisecond)
		o, err := tp.Offsets(ctx, 0)
		require.NoError(t, err)
		if o.HighWatermark == hw {
			break
		}
		hw = o.HighWatermark
		read(hw - 1)
	}

	last := int64(-1)
	for _, a := range acks {
		require.Greater(t, a.offset, last, "acknowledged offsets out of order")
		last = a.offset
		require.Equal(t, a.value, log[a.offset], "acknowledged record at offset %d", a.offset)
	}
}

func nextRecord(ctx context.Context, c *replog.Consumer[string]) (replog.Record[string], error) {
	for rec, err := range c.Records(ctx) {
		return rec, err
	}
	return replog.Record[string]{}, ctx.Err()
}
