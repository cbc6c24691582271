package replog_test

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/replog/replog"
)

const (
	crashCompactRecords = 20000
	crashCompactKeys    = 100
)

func crashCompactKey(i int64) string { return fmt.Sprintf("key-%03d", i%crashCompactKeys) }

// TestCrashDuringCompaction kills (SIGKILL) a process in the middle of
// compacting a partition on a real disk, in a pass that its small key
// index splits into hundreds, and checks what the next process finds:
// every record stored is the one written at its offset, the last record of
// every key is there, and compaction finishes the job.
func TestCrashDuringCompaction(t *testing.T) {
	if os.Getenv(childEnv) == "compact" {
		compactChild(t, os.Getenv("REPLOG_TEST_CRASH_DIR"))
		return
	}
	if testing.Short() {
		t.Skip("kills a child process")
	}
	dir := t.TempDir()
	cmd := childCmd(t, "TestCrashDuringCompaction", childEnv+"=compact", "REPLOG_TEST_CRASH_DIR="+dir)
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	sc := bufio.NewScanner(stdout)
	compacting := false
	for sc.Scan() {
		if sc.Text() == "compacting" {
			compacting = true
			break
		}
	}
	require.True(t, compacting, "the child did not start compacting")
	time.Sleep(time.Duration(20+rand.IntN(300)) * time.Millisecond)
	require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
	_ = cmd.Wait()

	ctx := testCtx(t)
	l, err := replog.Open(dir, nil)
	require.NoError(t, err)
	defer l.Close()
	tp, err := l.Topic("table")
	require.NoError(t, err)
	// Offsets waits for the reopened partition to apply its Raft log:
	// all of it when no snapshot flushed the store before the kill.
	check := func() int {
		o := mustOffsets(t, tp, 0)
		require.Equal(t, replog.PartitionOffsets{LogStart: 0, HighWatermark: crashCompactRecords, LastStable: crashCompactRecords}, o)
		last := map[string]int64{}
		for i := range int64(crashCompactRecords) {
			last[crashCompactKey(i)] = i
		}
		got := readAll(t, tp)
		present := map[int64]bool{}
		for _, s := range got {
			var off int64
			var k, v string
			_, err := fmt.Sscanf(s, "%d:%s", &off, &k)
			require.NoError(t, err)
			k, v, _ = strings.Cut(k, "=")
			require.Equal(t, crashCompactKey(off)+"="+fmt.Sprint(off), k+"="+v, "the record at offset %d is the one written there", off)
			present[off] = true
		}
		for k, off := range last {
			require.True(t, present[off], "the last record of %s, at %d", k, off)
		}
		return len(got)
	}
	after := check()
	t.Logf("after the kill: %d of %d records stored", after, crashCompactRecords)
	require.NoError(t, l.Compact(ctx, "table"))
	final := check()
	require.LessOrEqual(t, final, crashCompactKeys+200, "one record per key, and the newest batch")
	require.LessOrEqual(t, final, after)
	t.Logf("after compacting again: %d", final)
}

// compactChild writes the table, then compacts with a key index that holds
// a handful of keys (so that a full compaction takes hundreds of passes)
// until it is killed. It gives up after 60s, should the parent be gone.
func compactChild(t *testing.T, dir string) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	l, err := replog.Open(dir, &replog.Options{CompactionMemory: 5 * (7 + 48)})
	require.NoError(t, err)
	defer l.Close()
	tp, err := l.CreateTopic(ctx, "table", replog.TopicConfig{Cleanup: replog.CleanupCompact})
	require.NoError(t, err)
	p, err := replog.NewProducer(tp, replog.String(), &replog.ProducerOptions{BatchBytes: 1 << 10})
	require.NoError(t, err)
	for i := range int64(crashCompactRecords) {
		p.ProduceAsync(ctx, replog.Message[string]{Key: []byte(crashCompactKey(i)), Value: fmt.Sprint(i)}, func(_ replog.Position, err error) {
			if err != nil {
				panic(err)
			}
		})
	}
	require.NoError(t, p.Flush(ctx))
	fmt.Println("compacting")
	for ctx.Err() == nil {
		require.NoError(t, l.Compact(ctx, "table"))
	}
}
