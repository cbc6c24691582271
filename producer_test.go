package replog_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/replog/replog"
)

// Many small batches in flight at once must still land in produce order,
// each record exactly once.
func TestOrderWithManyBatchesInFlight(t *testing.T) {
	ctx := testCtx(t)
	l := openMem(t)
	tp, err := l.CreateTopic(ctx, "t", replog.TopicConfig{})
	require.NoError(t, err)
	p, err := replog.NewProducer(tp, replog.String(), &replog.ProducerOptions{
		BatchBytes: 256, MaxRecordBytes: 256, MaxBufferedBytes: 64 << 10, MaxInFlight: 5,
	})
	require.NoError(t, err)
	const n = 3000
	var mu sync.Mutex
	var offsets []int64
	for i := range n {
		p.ProduceAsync(ctx, replog.Message[string]{Value: fmt.Sprintf("%06d", i)}, func(pos replog.Position, err error) {
			require.NoError(t, err)
			mu.Lock()
			offsets = append(offsets, pos.Offset)
			mu.Unlock()
		})
	}
	require.NoError(t, p.Flush(ctx))
	for i, off := range offsets {
		require.Equal(t, int64(i), off, "callbacks run in produce order with dense offsets")
	}
	c, err := replog.NewConsumer(tp, replog.String(), &replog.ConsumerOptions{MaxPollRecords: 700})
	require.NoError(t, err)
	i := 0
	for rec, err := range c.Records(ctx) {
		require.NoError(t, err)
		require.Equal(t, fmt.Sprintf("%06d", i), rec.Value)
		if i++; i == n {
			break
		}
	}
	off, err := tp.Offsets(ctx, 0)
	require.NoError(t, err)
	require.Equal(t, int64(n), off.HighWatermark)
}

func TestAcksNoneAndManualPartition(t *testing.T) {
	ctx := testCtx(t)
	l := openMem(t)
	tp, err := l.CreateTopic(ctx, "t", replog.TopicConfig{Partitions: 3})
	require.NoError(t, err)
	p, err := replog.NewProducer(tp, replog.String(), &replog.ProducerOptions{Acks: replog.AcksNone})
	require.NoError(t, err)
	two := 2
	for i := range 10 {
		pos, err := p.Produce(ctx, replog.Message[string]{Value: fmt.Sprint(i), Partition: &two})
		require.NoError(t, err)
		require.Equal(t, replog.Position{Partition: 2, Offset: -1}, pos, "fire-and-forget has no offset")
	}
	require.NoError(t, p.Flush(ctx))
	require.Eventually(t, func() bool {
		o, err := tp.Offsets(ctx, 2)
		return err == nil && o.HighWatermark == 10
	}, 5*time.Second, 5*time.Millisecond)

	bad := 3
	_, err = p.Produce(ctx, replog.Message[string]{Value: "x", Partition: &bad})
	require.ErrorIs(t, err, replog.ErrPartitionNotFound)

	// A custom partitioner.
	p2, err := replog.NewProducer(tp, replog.String(), &replog.ProducerOptions{
		Partitioner: replog.PartitionerFunc(func(key []byte, n int) int { return len(key) % n }),
	})
	require.NoError(t, err)
	pos, err := p2.Produce(ctx, replog.Message[string]{Key: []byte("a"), Value: "y"})
	require.NoError(t, err)
	require.Equal(t, 1, pos.Partition)

	for _, o := range []replog.ProducerOptions{{MaxInFlight: 6}, {MaxInFlight: -1}, {Acks: 7}, {Linger: -1}, {BatchBytes: 10, MaxRecordBytes: 20}} {
		_, err := replog.NewProducer(tp, replog.String(), &o)
		require.ErrorIs(t, err, replog.ErrInvalidConfig, "%+v", o)
	}
}

// A context that is done before the record is buffered writes nothing, and
// the error matches the context's: code that retries on error must not
// duplicate records.
func TestProduceWithDoneContextWritesNothing(t *testing.T) {
	ctx := testCtx(t)
	l := openMem(t)
	tp, err := l.CreateTopic(ctx, "t", replog.TopicConfig{})
	require.NoError(t, err)
	p, err := replog.NewProducer(tp, replog.String(), nil)
	require.NoError(t, err)
	defer p.Close()

	done, cancel := context.WithCancel(ctx)
	cancel()
	for range 20 {
		_, err := p.Produce(done, replog.Message[string]{Value: "cancelled"})
		require.ErrorIs(t, err, context.Canceled)
	}
	expired, cancel2 := context.WithDeadline(ctx, time.Now().Add(-time.Second))
	defer cancel2()
	_, err = p.Produce(expired, replog.Message[string]{Value: "expired"})
	require.ErrorIs(t, err, context.DeadlineExceeded)

	var async []error
	for range 20 {
		p.ProduceAsync(done, replog.Message[string]{Value: "cancelled async"}, func(_ replog.Position, err error) {
			async = append(async, err) // called before ProduceAsync returns: nothing was buffered
		})
	}
	require.Len(t, async, 20)
	for _, err := range async {
		require.ErrorIs(t, err, context.Canceled)
	}
	require.NoError(t, p.Flush(ctx))

	pos, err := p.Produce(ctx, replog.Message[string]{Value: "first"})
	require.NoError(t, err)
	require.Equal(t, int64(0), pos.Offset, "nothing was written before")
	off, err := tp.Offsets(ctx, 0)
	require.NoError(t, err)
	require.Equal(t, int64(1), off.HighWatermark)
}

func TestRequestTimeoutOption(t *testing.T) {
	for _, d := range []time.Duration{-time.Second, time.Millisecond} {
		_, err := replog.Open("", &replog.Options{InMemory: true, RequestTimeout: d})
		require.ErrorIs(t, err, replog.ErrInvalidConfig, "RequestTimeout %v", d)
	}
	l, err := replog.Open("", &replog.Options{InMemory: true, RequestTimeout: 300 * time.Millisecond})
	require.NoError(t, err)
	defer l.Close()
	ctx := testCtx(t)
	tp, err := l.CreateTopic(ctx, "t", replog.TopicConfig{})
	require.NoError(t, err)
	p, err := replog.NewProducer(tp, replog.String(), nil)
	require.NoError(t, err)
	defer p.Close()
	_, err = p.Produce(ctx, replog.Message[string]{Value: "v"})
	require.NoError(t, err)
}

// TestFlushSendsLingeringRecords: Flush sends what lingers at once, as
// Kafka's flush does; it used to wait out the whole Linger.
func TestFlushSendsLingeringRecords(t *testing.T) {
	ctx := testCtx(t)
	l := openMem(t)
	tp, err := l.CreateTopic(ctx, "t", replog.TopicConfig{})
	require.NoError(t, err)
	p, err := replog.NewProducer(tp, replog.String(), &replog.ProducerOptions{Linger: time.Hour})
	require.NoError(t, err)
	defer p.Close()
	done := make(chan error, 1)
	p.ProduceAsync(ctx, replog.Message[string]{Value: "lingering"}, func(_ replog.Position, err error) { done <- err })
	fctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	require.NoError(t, p.Flush(fctx), "Flush must not wait out Linger")
	require.NoError(t, <-done)
}
