package replog_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/replog/replog"
)

// Stats is read while producers and a consumer group run: its counters
// only grow, and once everything is acknowledged and read they count
// exactly that.
func TestStatsUnderConcurrentProduce(t *testing.T) {
	ctx := testCtx(t)
	l := openMem(t)
	tp, err := l.CreateTopic(ctx, "events", replog.TopicConfig{Partitions: 3})
	require.NoError(t, err)

	const producers, each = 4, 500
	stop := make(chan struct{})
	var readers sync.WaitGroup
	readers.Add(1)
	go func() { // Stats all along, under -race
		defer readers.Done()
		var last replog.Stats
		for {
			s := l.Stats()
			require.GreaterOrEqual(t, s.Node.ProducedRecords, last.Node.ProducedRecords)
			require.GreaterOrEqual(t, s.Node.ProducedBatches, last.Node.ProducedBatches)
			require.GreaterOrEqual(t, s.Node.FetchedRecords, last.Node.FetchedRecords)
			last = s
			select {
			case <-stop:
				return
			case <-time.After(time.Millisecond):
			}
		}
	}()

	var wg sync.WaitGroup
	for i := range producers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p, err := replog.NewProducer(tp, replog.String(), nil)
			require.NoError(t, err)
			defer p.Close()
			for j := range each {
				p.ProduceAsync(ctx, replog.Message[string]{Key: []byte(fmt.Sprint(j)), Value: fmt.Sprintf("%d-%04d", i, j)}, nil)
			}
			require.NoError(t, p.Flush(ctx))
		}()
	}
	wg.Wait()

	c, err := replog.NewConsumer(tp, replog.String(), &replog.ConsumerOptions{Group: "g"})
	require.NoError(t, err)
	defer c.Close()
	n := 0
	for _, err := range c.Records(ctx) {
		require.NoError(t, err)
		if n++; n == producers*each {
			break
		}
	}
	require.NoError(t, c.Commit(ctx))
	close(stop)
	readers.Wait()

	s := l.Stats()
	var keyBytes uint64
	for j := range each {
		keyBytes += uint64(len(fmt.Sprint(j)))
	}
	wantBytes := producers * (keyBytes + each*6)
	require.Equal(t, uint64(producers*each), s.Node.ProducedRecords)
	require.Equal(t, wantBytes, s.Node.ProducedBytes)
	require.Equal(t, uint64(producers*each), s.Node.FetchedRecords)
	require.Equal(t, wantBytes, s.Node.FetchedBytes)
	require.Zero(t, s.Node.ProduceErrors)
	require.NotZero(t, s.Node.ProducedBatches)
	require.Equal(t, 1, s.Node.Consumers)
	require.Zero(t, s.Node.Producers, "closed")
	require.NotZero(t, s.Node.Apply.Count)
	require.LessOrEqual(t, s.Node.Apply.P50, s.Node.Apply.P99)
	require.NotZero(t, s.Node.Elections, "the groups elected their first leaders")

	require.Len(t, s.Partitions, 3)
	var sum uint64
	for i, ps := range s.Partitions {
		require.Equal(t, "events", ps.Topic)
		require.Equal(t, i, ps.Partition)
		require.True(t, ps.IsLeader)
		require.Equal(t, s.Node.ID, ps.Leader)
		require.Equal(t, int64(ps.ProducedRecords), ps.HighWatermark)
		require.Positive(t, ps.StoredBytes)
		sum += ps.ProducedRecords
	}
	require.Equal(t, uint64(producers*each), sum)

	require.Len(t, s.Groups, 1)
	g := s.Groups[0]
	require.Equal(t, "g", g.Group)
	require.Equal(t, 1, g.Members)
	require.Zero(t, g.Lag, "everything committed")
	require.Len(t, g.Partitions, 3)

	// More records: the group lags by them.
	p, err := replog.NewProducer(tp, replog.String(), nil)
	require.NoError(t, err)
	defer p.Close()
	part := 1
	for range 7 {
		_, err := p.Produce(ctx, replog.Message[string]{Partition: &part, Value: "x"})
		require.NoError(t, err)
	}
	s = l.Stats()
	require.Equal(t, int64(7), s.Groups[0].Lag)
	require.Equal(t, int64(7), s.Groups[0].Partitions[1].Lag)
	require.Equal(t, 1, s.Node.Producers)
}

// hookRecorder implements every hook.
type hookRecorder struct {
	mu       sync.Mutex
	written  []replog.BatchWritten
	fetched  []replog.BatchFetched
	consumed []replog.ConsumedRecord
	acked    []string
	produced atomic.Int64
}

type spanKey struct{}

func (h *hookRecorder) OnRecordWritten(r *replog.ProducedRecord, pos replog.Position, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.acked = append(h.acked, fmt.Sprintf("%v %d %v", r.Context.Value(spanKey{}), pos.Offset, err))
}

type ctxKey struct{}

func (h *hookRecorder) OnRecordProduced(ctx context.Context, r *replog.ProducedRecord) {
	h.produced.Add(1)
	if v, ok := ctx.Value(ctxKey{}).(string); ok {
		r.Headers = append(r.Headers, replog.Header{Key: "trace", Value: []byte(v)})
	}
	r.Context = context.WithValue(r.Context, spanKey{}, fmt.Sprint("span", h.produced.Load()))
}

func (h *hookRecorder) OnBatchWritten(b replog.BatchWritten) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.written = append(h.written, b)
}

func (h *hookRecorder) OnBatchFetched(b replog.BatchFetched) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.fetched = append(h.fetched, b)
}

func (h *hookRecorder) OnRecordConsumed(r replog.ConsumedRecord) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.consumed = append(h.consumed, r)
}

func TestHooks(t *testing.T) {
	ctx := testCtx(t)
	logHooks, prodHooks := &hookRecorder{}, &hookRecorder{}
	l, err := replog.Open("", &replog.Options{InMemory: true, Hooks: []replog.Hook{logHooks}})
	require.NoError(t, err)
	defer l.Close()
	tp, err := l.CreateTopic(ctx, "t", replog.TopicConfig{})
	require.NoError(t, err)
	p, err := replog.NewProducer(tp, replog.String(), &replog.ProducerOptions{Hooks: []replog.Hook{prodHooks}})
	require.NoError(t, err)
	defer p.Close()
	headers := make([]replog.Header, 1, 2) // room to append into
	headers[0] = replog.Header{Key: "a", Value: []byte("1")}
	m := replog.Message[string]{Key: []byte("k"), Value: "v", Headers: headers}
	pos, err := p.Produce(context.WithValue(ctx, ctxKey{}, "span-1"), m)
	require.NoError(t, err)
	_, err = p.Produce(ctx, replog.Message[string]{Value: "w"})
	require.NoError(t, err)
	require.Equal(t, []replog.Header{{Key: "a", Value: []byte("1")}}, m.Headers, "the caller's headers are left alone")
	require.Equal(t, replog.Header{}, headers[:2][1], "and so is their array")

	require.Equal(t, int64(2), logHooks.produced.Load())
	require.Equal(t, []string{"span1 0 <nil>", "span2 1 <nil>"}, logHooks.acked, "each record's outcome, with the context its produced hook left")
	require.Equal(t, int64(2), prodHooks.produced.Load())
	require.Len(t, logHooks.written, 2)
	require.Equal(t, replog.BatchWritten{Topic: "t", Partition: 0, BaseOffset: pos.Offset, Records: 1, Bytes: len("kva1") + 2*len("tracespan-1")}, withoutLatency(logHooks.written[0]))

	c, err := replog.NewConsumer(tp, replog.String(), nil)
	require.NoError(t, err)
	defer c.Close()
	recs, err := c.Poll(ctx)
	require.NoError(t, err)
	for len(recs) < 2 {
		more, err := c.Poll(ctx)
		require.NoError(t, err)
		recs = append(recs, more...)
	}
	// Both hooks (the Log's and the producer's) added a trace header.
	require.Equal(t, []replog.Header{{Key: "a", Value: []byte("1")}, {Key: "trace", Value: []byte("span-1")}, {Key: "trace", Value: []byte("span-1")}}, recs[0].Headers)
	require.Len(t, logHooks.consumed, 2)
	require.Equal(t, recs[0].Headers, logHooks.consumed[0].Headers)
	require.Equal(t, int64(1), logHooks.consumed[1].Offset)
	require.NotEmpty(t, logHooks.fetched)
	require.Equal(t, int64(0), logHooks.fetched[0].FirstOffset)
	require.Empty(t, prodHooks.consumed, "a producer's hooks watch only it")
}

func withoutLatency(b replog.BatchWritten) replog.BatchWritten {
	b.Latency = 0
	return b
}

// A share consumer acquires, accepts, releases, rejects and dead-letters
// records: the share counters count exactly that, per partition and for
// the node, and the share group's stats follow its start offset, locks,
// redeliveries and lag. A share group of a deleted topic is left out.
func TestStatsShareGroups(t *testing.T) {
	ctx := testCtx(t)
	l := openMem(t)
	tp, err := l.CreateTopic(ctx, "jobs", replog.TopicConfig{Partitions: 1})
	require.NoError(t, err)
	_, err = l.CreateTopic(ctx, "jobs.dlq", replog.TopicConfig{Partitions: 1})
	require.NoError(t, err)
	gone, err := l.CreateTopic(ctx, "gone", replog.TopicConfig{Partitions: 1})
	require.NoError(t, err)
	for _, tp := range []*replog.Topic{tp, gone} {
		p, err := replog.NewProducer(tp, replog.String(), nil)
		require.NoError(t, err)
		for i := range 10 {
			p.ProduceAsync(ctx, replog.Message[string]{Value: fmt.Sprint(i)}, nil)
		}
		require.NoError(t, p.Flush(ctx))
		require.NoError(t, p.Close())
	}
	old := newShare(t, gone, "old", nil)
	oldRecs := pollWithin(t, old, 5*time.Second)
	require.NotEmpty(t, oldRecs)
	require.NoError(t, old.Close())
	require.NoError(t, l.DeleteTopic(ctx, "gone"))

	c := newShare(t, tp, "g", &replog.ShareConsumerOptions{MaxDeliveries: 2, DeadLetterTopic: "jobs.dlq",
		MaxRecords: 10, LockDuration: time.Minute})
	pollAll := func(n int) []replog.ShareRecord[string] {
		t.Helper()
		var recs []replog.ShareRecord[string]
		for len(recs) < n {
			more, err := c.Poll(ctx)
			require.NoError(t, err)
			recs = append(recs, more...)
		}
		require.Len(t, recs, n)
		return recs
	}
	type counts struct{ acquired, accepted, released, rejected, dead uint64 }
	check := func(want counts, group replog.ShareGroupStats) {
		t.Helper()
		s := l.Stats()
		n := s.Node
		require.Equal(t, 1, n.Consumers, "an open share consumer is an open consumer")
		n.ShareAcquired -= uint64(len(oldRecs)) // the node keeps the deleted topic's counts
		require.Equal(t, want, counts{n.ShareAcquired, n.ShareAccepted, n.ShareReleased, n.ShareRejected, n.ShareDeadLettered}, "node")
		var ps replog.PartitionStats
		for _, p := range s.Partitions {
			if p.Topic == "jobs" {
				ps = p
			} else {
				require.Zero(t, p.ShareAcquired+p.ShareAccepted+p.ShareReleased+p.ShareRejected+p.ShareDeadLettered, p.Topic)
			}
		}
		require.Equal(t, want, counts{ps.ShareAcquired, ps.ShareAccepted, ps.ShareReleased, ps.ShareRejected, ps.ShareDeadLettered}, "partition")
		require.Equal(t, []replog.ShareGroupStats{group}, s.ShareGroups)
	}
	part := func(start, lag int64, acquired, available int) []replog.SharePartitionStats {
		return []replog.SharePartitionStats{{Topic: "jobs", Partition: 0, Start: start, Lag: lag, Acquired: acquired, Available: available}}
	}

	recs := pollAll(10)
	check(counts{acquired: 10}, replog.ShareGroupStats{Group: "g", Members: 1, Lag: 10, Partitions: part(0, 10, 10, 0)})

	require.NoError(t, c.AckAll(ctx, recs[:6]))
	require.NoError(t, recs[6].Release(ctx, 0))
	require.NoError(t, recs[7].Release(ctx, 0))
	require.NoError(t, recs[8].Reject(ctx))
	// 0-5 done: the start moves to 6; 6 and 7 wait, 8 is done, 9 is held.
	check(counts{acquired: 10, accepted: 6, released: 2, rejected: 1},
		replog.ShareGroupStats{Group: "g", Members: 1, Lag: 3, Partitions: part(6, 3, 1, 2)})

	again := pollAll(2)
	for _, r := range again {
		require.Equal(t, 2, r.Deliveries)
		require.NoError(t, r.Release(ctx, 0))
	}
	// Delivered twice (MaxDeliveries): the next Poll dead-letters 6 and 7
	// and rejects them, which moves the start past 8.
	require.Empty(t, pollWithin(t, c, 500*time.Millisecond))
	check(counts{acquired: 12, accepted: 6, released: 4, rejected: 3, dead: 2},
		replog.ShareGroupStats{Group: "g", Members: 1, Lag: 1, Partitions: part(9, 1, 1, 0)})

	require.NoError(t, recs[9].Ack(ctx))
	check(counts{acquired: 12, accepted: 7, released: 4, rejected: 3, dead: 2},
		replog.ShareGroupStats{Group: "g", Members: 0, Lag: 0, Partitions: part(10, 0, 0, 0)})
}
