package replog

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/replog/replog/replication"
	"github.com/replog/replog/storage"
)

// rawTxnWriter writes transactional batches and markers to one partition
// straight through its Raft group, as the coordinator and a Kafka client
// would, without a transactional producer.
type rawTxnWriter struct {
	t      *testing.T
	rp     *replication.Partition
	pid    uint64
	seq    int32
	serial uint64 // of the open transaction, or the last one
	open   bool
}

func newRawTxnWriter(t *testing.T, ctx context.Context, l *Log, tp *Topic, part int) *rawTxnWriter {
	rp, err := tp.partition(ctx, part)
	require.NoError(t, err)
	pid, err := l.node.AllocProducerID(ctx)
	require.NoError(t, err)
	return &rawTxnWriter{t: t, rp: rp, pid: pid}
}

func (w *rawTxnWriter) propose(cmd []byte) int64 {
	w.t.Helper()
	pr, err := w.rp.ProposeAsync(cmd, 10*time.Second)
	require.NoError(w.t, err)
	res, err := pr.Result(<-pr.Done())
	require.NoError(w.t, err)
	require.Equal(w.t, storage.StatusOK, res.Status)
	return res.BaseOffset
}

// send writes one transactional batch of values and returns its offset.
func (w *rawTxnWriter) send(values ...string) int64 {
	w.t.Helper()
	if !w.open {
		w.serial++
		w.open = true
	}
	var bb storage.BatchBuilder
	bb.SetTransactional(true)
	for _, v := range values {
		bb.Add(storage.Record{Time: time.Now().UnixNano(), Value: []byte(v)})
	}
	cmd, err := bb.BuildWithPrefix(storage.TxnAppendHeaderSize, storage.CompressionNone, w.pid, 0, w.seq)
	require.NoError(w.t, err)
	storage.PutTxnAppendHeader(cmd, w.serial)
	w.seq += int32(len(values))
	return w.propose(cmd)
}

// end writes the marker that commits or aborts the open transaction.
func (w *rawTxnWriter) end(commit bool) int64 {
	w.t.Helper()
	w.open = false
	return w.propose(storage.TxnMarkerCommand(w.pid, 0, w.serial, commit, 0, time.Now().UnixNano()))
}

// pollValues polls until want values came, and returns them with their
// offsets.
func pollValues(t *testing.T, ctx context.Context, c *Consumer[string], want int) ([]string, []int64) {
	t.Helper()
	var vals []string
	var offs []int64
	for len(vals) < want {
		recs, err := c.Poll(ctx)
		require.NoError(t, err)
		for _, r := range recs {
			vals, offs = append(vals, r.Value), append(offs, r.Offset)
		}
	}
	return vals, offs
}

// requireNothing checks that a Poll within d returns no record.
func requireNothing(t *testing.T, ctx context.Context, c *Consumer[string], d time.Duration) {
	t.Helper()
	pctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	recs, err := c.Poll(pctx)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.Empty(t, recs)
}

// TestIsolationReadCommitted: a read-committed consumer, plain or in a
// group, stops at an open transaction (the last stable offset), skips
// an aborted one and the markers, and reads a committed one; a
// read-uncommitted consumer reads every record as it is written.
func TestIsolationReadCommitted(t *testing.T) {
	for _, group := range []string{"", "rc-group"} {
		t.Run("group="+group, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			l, err := Open("", &Options{InMemory: true})
			require.NoError(t, err)
			defer func() { require.NoError(t, l.Close()) }()
			tp, err := l.CreateTopic(ctx, "iso", TopicConfig{Partitions: 1})
			require.NoError(t, err)
			p, err := NewProducer(tp, String(), nil)
			require.NoError(t, err)
			defer p.Close()
			produce := func(v string) int64 {
				pos, err := p.Produce(ctx, Message[string]{Value: v})
				require.NoError(t, err)
				return pos.Offset
			}
			rc, err := NewConsumer(tp, String(), &ConsumerOptions{Isolation: ReadCommitted, Group: group})
			require.NoError(t, err)
			defer rc.Close()
			ru, err := NewConsumer(tp, String(), nil)
			require.NoError(t, err)
			defer ru.Close()

			aborted := newRawTxnWriter(t, ctx, l, tp, 0)
			committed := newRawTxnWriter(t, ctx, l, tp, 0)
			require.Equal(t, int64(0), produce("a"))
			require.Equal(t, int64(1), aborted.send("t1", "t2"))
			require.Equal(t, int64(3), produce("b"))

			vals, offs := pollValues(t, ctx, rc, 1)
			require.Equal(t, []string{"a"}, vals)
			require.Equal(t, []int64{0}, offs)
			requireNothing(t, ctx, rc, 300*time.Millisecond)
			require.Equal(t, map[int]int64{0: 0}, rc.Lag(), "lag counts up to the last stable offset")
			vals, _ = pollValues(t, ctx, ru, 4)
			require.Equal(t, []string{"a", "t1", "t2", "b"}, vals)

			// A second transaction opens; the first aborts: the last stable
			// offset moves to the second's first batch.
			require.Equal(t, int64(4), committed.send("c1"))
			require.Equal(t, int64(5), aborted.end(false))
			vals, offs = pollValues(t, ctx, rc, 1)
			require.Equal(t, []string{"b"}, vals)
			require.Equal(t, []int64{3}, offs)
			requireNothing(t, ctx, rc, 300*time.Millisecond)

			require.Equal(t, int64(6), committed.send("c2"))
			require.Equal(t, int64(7), committed.end(true))
			require.Equal(t, int64(8), produce("d"))
			vals, offs = pollValues(t, ctx, rc, 3)
			require.Equal(t, []string{"c1", "c2", "d"}, vals)
			require.Equal(t, []int64{4, 6, 8}, offs)
			require.Equal(t, map[int]int64{0: 0}, rc.Lag())
			pos, err := rc.Position(0)
			require.NoError(t, err)
			require.Equal(t, int64(9), pos)

			vals, _ = pollValues(t, ctx, ru, 3)
			require.Equal(t, []string{"c1", "c2", "d"}, vals)
		})
	}
}

// TestIsolationLatestStartsAtLastStable: a read-committed consumer that
// starts at Latest starts at the last stable offset, so it reads an open
// transaction's records once they commit; a read-uncommitted one starts at
// the high watermark, past them.
func TestIsolationLatestStartsAtLastStable(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	l, err := Open("", &Options{InMemory: true})
	require.NoError(t, err)
	defer func() { require.NoError(t, l.Close()) }()
	tp, err := l.CreateTopic(ctx, "iso-latest", TopicConfig{Partitions: 1})
	require.NoError(t, err)
	w := newRawTxnWriter(t, ctx, l, tp, 0)
	require.Equal(t, int64(0), w.send("open"))

	rc, err := NewConsumer(tp, String(), &ConsumerOptions{Isolation: ReadCommitted, Start: Latest})
	require.NoError(t, err)
	defer rc.Close()
	pos, err := rc.Position(0)
	require.NoError(t, err)
	require.Equal(t, int64(0), pos)
	ru, err := NewConsumer(tp, String(), &ConsumerOptions{Start: Latest})
	require.NoError(t, err)
	defer ru.Close()
	pos, err = ru.Position(0)
	require.NoError(t, err)
	require.Equal(t, int64(1), pos)

	w.end(true)
	vals, offs := pollValues(t, ctx, rc, 1)
	require.Equal(t, []string{"open"}, vals)
	require.Equal(t, []int64{0}, offs)
}

func TestIsolationInvalid(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	l, err := Open("", &Options{InMemory: true})
	require.NoError(t, err)
	defer func() { require.NoError(t, l.Close()) }()
	tp, err := l.CreateTopic(ctx, "iso-invalid", TopicConfig{Partitions: 1})
	require.NoError(t, err)
	_, err = NewConsumer(tp, String(), &ConsumerOptions{Isolation: 7})
	require.ErrorIs(t, err, ErrInvalidConfig)
	require.Equal(t, "read_committed", ReadCommitted.String())
}
