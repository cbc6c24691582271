package replog_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/replog/replog"
)

type order struct {
	ID       int    `json:"id"`
	Customer string `json:"customer"`
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func openMem(t *testing.T) *replog.Log {
	l, err := replog.Open("", &replog.Options{InMemory: true})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, l.Close()) })
	return l
}

func TestProduceConsumeRoundTrip(t *testing.T) {
	ctx := testCtx(t)
	l := openMem(t)
	tp, err := l.CreateTopic(ctx, "orders", replog.TopicConfig{Partitions: 4})
	require.NoError(t, err)
	p, err := replog.NewProducer(tp, replog.JSON[order](), nil)
	require.NoError(t, err)
	defer p.Close()

	want := map[int]replog.Position{}
	for i := range 40 {
		o := order{ID: i, Customer: fmt.Sprintf("c%d", i%7)}
		pos, err := p.Produce(ctx, replog.Message[order]{Key: []byte(o.Customer), Value: o,
			Headers: []replog.Header{{Key: "h", Value: []byte{byte(i)}}}})
		require.NoError(t, err)
		want[i] = pos
	}
	c, err := replog.NewConsumer(tp, replog.JSON[order](), nil)
	require.NoError(t, err)
	defer c.Close()
	got := map[int]replog.Record[order]{}
	for rec, err := range c.Records(ctx) {
		require.NoError(t, err)
		got[rec.Value.ID] = rec
		if len(got) == len(want) {
			break
		}
	}
	for id, pos := range want {
		rec := got[id]
		require.Equal(t, pos.Partition, rec.Partition, "record %d", id)
		require.Equal(t, pos.Offset, rec.Offset, "record %d", id)
		require.Equal(t, "orders", rec.Topic)
		require.Equal(t, fmt.Sprintf("c%d", id%7), string(rec.Key))
		require.Equal(t, []replog.Header{{Key: "h", Value: []byte{byte(id)}}}, rec.Headers)
		require.WithinDuration(t, time.Now(), rec.Time, time.Minute)
	}
}

func TestReopenKeepsTopicsAndRecords(t *testing.T) {
	ctx := testCtx(t)
	dir := t.TempDir()
	l, err := replog.Open(dir, nil)
	require.NoError(t, err)
	tp, err := l.CreateTopic(ctx, "events", replog.TopicConfig{Partitions: 2})
	require.NoError(t, err)
	p, err := replog.NewProducer(tp, replog.String(), nil)
	require.NoError(t, err)
	for i := range 10 {
		_, err := p.Produce(ctx, replog.Message[string]{Key: []byte{byte(i)}, Value: fmt.Sprint("v", i)})
		require.NoError(t, err)
	}
	require.NoError(t, l.Close())
	require.NoError(t, l.Close(), "Close twice")
	_, err = p.Produce(ctx, replog.Message[string]{Value: "late"})
	require.ErrorIs(t, err, replog.ErrClosed)

	l, err = replog.Open(dir, nil)
	require.NoError(t, err)
	defer l.Close()
	require.Len(t, l.Topics(), 1)
	require.Equal(t, "events", l.Topics()[0].Name)
	tp, err = l.Topic("events")
	require.NoError(t, err)
	c, err := replog.NewConsumer(tp, replog.String(), nil)
	require.NoError(t, err)
	seen := map[string]bool{}
	for rec, err := range c.Records(ctx) {
		require.NoError(t, err)
		seen[rec.Value] = true
		if len(seen) == 10 {
			break
		}
	}
	// New records continue the offsets.
	p, err = replog.NewProducer(tp, replog.String(), nil)
	require.NoError(t, err)
	pos, err := p.Produce(ctx, replog.Message[string]{Key: []byte{0}, Value: "after"})
	require.NoError(t, err)
	require.Greater(t, pos.Offset, int64(0))
}

func TestBadInput(t *testing.T) {
	ctx := testCtx(t)
	l := openMem(t)
	for _, name := range []string{"", ".", "..", "has space", string(make([]byte, 250))} {
		_, err := l.CreateTopic(ctx, name, replog.TopicConfig{})
		require.ErrorIs(t, err, replog.ErrInvalidConfig, "name %q", name)
	}
	for _, cfg := range []replog.TopicConfig{{Partitions: -1}, {Replicas: 2}, {Replicas: -1}, {Partitions: replog.MaxPartitions + 1}, {Compression: 99}} {
		_, err := l.CreateTopic(ctx, "t", cfg)
		require.ErrorIs(t, err, replog.ErrInvalidConfig, "%+v", cfg)
	}
	tp, err := l.CreateTopic(ctx, "t", replog.TopicConfig{})
	require.NoError(t, err)
	_, err = l.CreateTopic(ctx, "t", replog.TopicConfig{})
	require.ErrorIs(t, err, replog.ErrTopicExists)
	_, err = l.Topic("missing")
	require.ErrorIs(t, err, replog.ErrTopicNotFound)
	require.ErrorIs(t, l.DeleteTopic(ctx, "missing"), replog.ErrTopicNotFound)

	_, err = replog.NewProducer[string](tp, nil, nil)
	require.ErrorIs(t, err, replog.ErrInvalidConfig)
	_, err = replog.NewConsumer[string](tp, nil, nil)
	require.ErrorIs(t, err, replog.ErrInvalidConfig)

	p, err := replog.NewProducer(tp, replog.Bytes(), &replog.ProducerOptions{MaxRecordBytes: 1000})
	require.NoError(t, err)
	_, err = p.Produce(ctx, replog.Message[[]byte]{Value: make([]byte, 2000)})
	require.ErrorIs(t, err, replog.ErrRecordTooLarge)
	pos, err := p.Produce(ctx, replog.Message[[]byte]{Value: []byte("ok")})
	require.NoError(t, err)
	require.Equal(t, int64(0), pos.Offset, "the refused record took no offset")

	// A value the consumer's codec cannot decode is a DecodeError; the
	// consumer moves past it and the next record still arrives.
	_, err = p.Produce(ctx, replog.Message[[]byte]{Value: []byte(`{"id":3}`)})
	require.NoError(t, err)
	c, err := replog.NewConsumer(tp, replog.JSON[order](), nil)
	require.NoError(t, err)
	recs, err := c.Poll(ctx)
	var de *replog.DecodeError
	require.True(t, errors.As(err, &de), "got %v", err)
	require.Equal(t, int64(0), de.Offset)
	require.Empty(t, recs)
	recs, err = c.Poll(ctx)
	require.NoError(t, err)
	require.Len(t, recs, 1)
	require.Equal(t, 3, recs[0].Value.ID)

	require.NoError(t, l.DeleteTopic(ctx, "t"))
	_, err = p.Produce(ctx, replog.Message[[]byte]{Value: []byte("gone")})
	require.ErrorIs(t, err, replog.ErrTopicNotFound)
	_, err = c.Poll(ctx)
	require.ErrorIs(t, err, replog.ErrTopicNotFound)
	require.NoError(t, p.Close())
	require.NoError(t, p.Close())
	_, err = p.Produce(ctx, replog.Message[[]byte]{Value: []byte("closed")})
	require.ErrorIs(t, err, replog.ErrClosed)
	require.NoError(t, c.Close())
	_, err = c.Poll(ctx)
	require.ErrorIs(t, err, replog.ErrClosed)

	// The name is free again and the new topic starts empty.
	tp2, err := l.CreateTopic(ctx, "t", replog.TopicConfig{})
	require.NoError(t, err)
	off, err := tp2.Offsets(ctx, 0)
	require.NoError(t, err)
	require.Equal(t, int64(0), off.HighWatermark)
}

func TestLatestConsumerWaitsForNewRecords(t *testing.T) {
	ctx := testCtx(t)
	l := openMem(t)
	tp, err := l.CreateTopic(ctx, "t", replog.TopicConfig{Partitions: 2})
	require.NoError(t, err)
	p, err := replog.NewProducer(tp, replog.String(), nil)
	require.NoError(t, err)
	_, err = p.Produce(ctx, replog.Message[string]{Value: "old"})
	require.NoError(t, err)
	c, err := replog.NewConsumer(tp, replog.String(), &replog.ConsumerOptions{Start: replog.Latest})
	require.NoError(t, err)

	short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	recs, err := c.Poll(short)
	cancel()
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.Empty(t, recs)

	got := make(chan string, 1)
	go func() {
		recs, err := c.Poll(ctx)
		if err == nil && len(recs) == 1 {
			got <- recs[0].Value
		}
		close(got)
	}()
	_, err = p.Produce(ctx, replog.Message[string]{Value: "new"})
	require.NoError(t, err)
	require.Equal(t, "new", <-got)
}
