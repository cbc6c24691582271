package replog_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/replog/replog"
)

// readAll reads partition 0 of tp from its log start up to its high
// watermark as "offset:key=value" ("key=-" for a tombstone).
func readAll(t *testing.T, tp *replog.Topic) []string {
	t.Helper()
	ctx := testCtx(t)
	o := mustOffsets(t, tp, 0)
	c, err := replog.NewConsumer(tp, replog.String(), &replog.ConsumerOptions{Partitions: []int{0}})
	require.NoError(t, err)
	defer c.Close()
	var out []string
	if o.LogStart == o.HighWatermark {
		return out
	}
	for rec, err := range c.Records(ctx) {
		require.NoError(t, err)
		v := rec.Value
		if rec.Tombstone {
			v = "-"
		}
		out = append(out, fmt.Sprintf("%d:%s=%s", rec.Offset, rec.Key, v))
		if rec.Offset == o.HighWatermark-1 {
			break
		}
	}
	return out
}

// put produces key=value (value "-": a tombstone) to partition 0, one
// batch each.
func put(t *testing.T, p *replog.Producer[string], kvs ...string) {
	t.Helper()
	part := 0
	for i := 0; i < len(kvs); i += 2 {
		m := replog.Message[string]{Partition: &part, Key: []byte(kvs[i]), Value: kvs[i+1]}
		if kvs[i+1] == "-" {
			m.Value, m.Tombstone = "", true
		}
		_, err := p.Produce(testCtx(t), m)
		require.NoError(t, err)
	}
}

func TestCompactKeepsLastValuePerKey(t *testing.T) {
	ctx := testCtx(t)
	l := openMem(t)
	tp, err := l.CreateTopic(ctx, "accounts", replog.TopicConfig{Cleanup: replog.CleanupCompact, DeleteRetention: time.Hour})
	require.NoError(t, err)
	p, err := replog.NewProducer(tp, replog.String(), nil)
	require.NoError(t, err)
	defer p.Close()
	put(t, p, "a", "1", "b", "1", "c", "1", "a", "2", "b", "-", "a", "3", "z", "1")

	require.NoError(t, l.Compact(ctx, "accounts"))
	// a's last value, b's tombstone (DeleteRetention has not passed), c,
	// and the newest batch, which compaction never touches.
	want := []string{"2:c=1", "4:b=-", "5:a=3", "6:z=1"}
	require.Equal(t, want, readAll(t, tp))
	require.Equal(t, replog.PartitionOffsets{LogStart: 0, HighWatermark: 7, LastStable: 7}, mustOffsets(t, tp, 0), "offsets do not move")

	// A consumer positioned inside a gap goes on to the next record.
	c, err := replog.NewConsumer(tp, replog.String(), &replog.ConsumerOptions{Partitions: []int{0}})
	require.NoError(t, err)
	defer c.Close()
	require.NoError(t, c.Seek(0, 3))
	recs, err := c.Poll(ctx)
	require.NoError(t, err)
	require.Equal(t, int64(4), recs[0].Offset)

	// New records keep coming after the gaps; compacting again is stable.
	put(t, p, "c", "2", "y", "1")
	require.NoError(t, l.Compact(ctx, "accounts"))
	require.Equal(t, []string{"4:b=-", "5:a=3", "6:z=1", "7:c=2", "8:y=1"}, readAll(t, tp))
}

func TestCompactRemovesTombstonesAfterDeleteRetention(t *testing.T) {
	ctx := testCtx(t)
	l := openMem(t)
	tp, err := l.CreateTopic(ctx, "t", replog.TopicConfig{Cleanup: replog.CleanupCompact, DeleteRetention: 300 * time.Millisecond})
	require.NoError(t, err)
	p, err := replog.NewProducer(tp, replog.String(), nil)
	require.NoError(t, err)
	defer p.Close()
	put(t, p, "a", "1", "a", "-", "b", "1", "z", "1")
	require.NoError(t, l.Compact(ctx, "t"))
	require.Equal(t, []string{"1:a=-", "2:b=1", "3:z=1"}, readAll(t, tp), "reached now: stays for DeleteRetention")
	time.Sleep(350 * time.Millisecond)
	require.NoError(t, l.Compact(ctx, "t"))
	require.Equal(t, []string{"2:b=1", "3:z=1"}, readAll(t, tp))
}

func TestCompactNeedsCompactedTopic(t *testing.T) {
	ctx := testCtx(t)
	l := openMem(t)
	_, err := l.CreateTopic(ctx, "plain", replog.TopicConfig{})
	require.NoError(t, err)
	require.ErrorIs(t, l.Compact(ctx, "plain"), replog.ErrInvalidConfig)
	require.ErrorIs(t, l.Compact(ctx, "nope"), replog.ErrTopicNotFound)
}

// The background compacts a compacted topic by itself once half its bytes
// are new since the last pass.
//
// The topic becomes compacted once all 20 records are stored: a pass that
// ran while they were written (as on a loaded machine) could leave the
// last few as a dirty section under half the bytes, which the background
// rightly leaves alone, and the count below would never be reached.
func TestCompactionInBackground(t *testing.T) {
	ctx := testCtx(t)
	l := openRetaining(t)
	tp, err := l.CreateTopic(ctx, "t", replog.TopicConfig{})
	require.NoError(t, err)
	p, err := replog.NewProducer(tp, replog.String(), nil)
	require.NoError(t, err)
	defer p.Close()
	for i := range 20 {
		put(t, p, fmt.Sprint("k", i%4), fmt.Sprint(i))
	}
	require.Len(t, readAll(t, tp), 20)
	require.NoError(t, l.AlterTopic(ctx, "t", replog.TopicConfig{Cleanup: replog.CleanupCompact | replog.CleanupDelete}))
	require.Eventually(t, func() bool { return len(readAll(t, tp)) == 5 }, 10*time.Second, 20*time.Millisecond)
	require.Equal(t, []string{"15:k3=15", "16:k0=16", "17:k1=17", "18:k2=18", "19:k3=19"}, readAll(t, tp))
}

// Closing the Log under a running Compact ends it with an error matching
// ErrClosed, after which Close has returned: no pass reads a closed store.
func TestCompactDuringClose(t *testing.T) {
	ctx := testCtx(t)
	l, err := replog.Open("", &replog.Options{InMemory: true, CompactionMemory: 1})
	require.NoError(t, err)
	tp, err := l.CreateTopic(ctx, "t", replog.TopicConfig{Cleanup: replog.CleanupCompact})
	require.NoError(t, err)
	p, err := replog.NewProducer(tp, replog.String(), &replog.ProducerOptions{BatchBytes: 512})
	require.NoError(t, err)
	for i := range 20000 {
		p.ProduceAsync(ctx, replog.Message[string]{Key: []byte(fmt.Sprint(i % 500)), Value: fmt.Sprint(i)}, nil)
	}
	require.NoError(t, p.Flush(ctx))
	done := make(chan error, 1)
	go func() { done <- l.Compact(ctx, "t") }()
	time.Sleep(100 * time.Millisecond) // a key index of one key, small batches: hundreds of passes
	require.NoError(t, l.Close())
	select {
	case err := <-done:
		t.Logf("Compact ended with: %v", err)
		if err != nil {
			require.ErrorIs(t, err, replog.ErrClosed)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Compact did not end with the Log")
	}
	require.ErrorIs(t, l.Compact(ctx, "t"), replog.ErrClosed)
}
