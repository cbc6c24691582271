package replog

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/replog/replog/storage"
)

// TestConsumerSkipsControlBatches: a transaction marker (a control batch,
// written by the coordinator through Raft) takes an offset but holds no
// record for readers: consumers step over it, as Kafka's do.
func TestConsumerSkipsControlBatches(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	l, err := Open("", &Options{InMemory: true})
	require.NoError(t, err)
	defer func() { require.NoError(t, l.Close()) }()
	tp, err := l.CreateTopic(ctx, "markers", TopicConfig{Partitions: 1})
	require.NoError(t, err)
	p, err := NewProducer(tp, String(), nil)
	require.NoError(t, err)
	defer p.Close()
	for _, v := range []string{"a", "b", "c"} {
		_, err := p.Produce(ctx, Message[string]{Value: v})
		require.NoError(t, err)
	}
	// A marker that only raises producer 99's epoch is written as a
	// control batch at offset 3.
	rp, err := tp.partition(ctx, 0)
	require.NoError(t, err)
	pr, err := rp.ProposeAsync(storage.TxnMarkerCommand(99, 1, 1, false, 0, time.Now().UnixNano()), 10*time.Second)
	require.NoError(t, err)
	res, err := pr.Result(<-pr.Done())
	require.NoError(t, err)
	require.Equal(t, storage.StatusOK, res.Status)
	require.Equal(t, int64(3), res.BaseOffset)
	for _, v := range []string{"d", "e"} {
		_, err := p.Produce(ctx, Message[string]{Value: v})
		require.NoError(t, err)
	}

	c, err := NewConsumer(tp, String(), nil)
	require.NoError(t, err)
	defer c.Close()
	var got []string
	var offsets []int64
	for rec, err := range c.Records(ctx) {
		require.NoError(t, err)
		got, offsets = append(got, rec.Value), append(offsets, rec.Offset)
		if len(got) == 5 {
			break
		}
	}
	require.Equal(t, []string{"a", "b", "c", "d", "e"}, got)
	require.Equal(t, []int64{0, 1, 2, 4, 5}, offsets)

	// A marker last in the log: the consumer waits past it for the next
	// record.
	pr, err = rp.ProposeAsync(storage.TxnMarkerCommand(99, 2, 2, false, 0, time.Now().UnixNano()), 10*time.Second)
	require.NoError(t, err)
	res, err = pr.Result(<-pr.Done())
	require.NoError(t, err)
	require.Equal(t, int64(6), res.BaseOffset)
	// The position moves past the marker: no lag is left behind it.
	require.Eventually(t, func() bool {
		pos, err := c.Position(0)
		return err == nil && pos == 7
	}, 10*time.Second, time.Millisecond, "the position moves past a marker")
	require.Equal(t, map[int]int64{0: 0}, c.Lag())
	_, err = p.Produce(ctx, Message[string]{Value: "f"})
	require.NoError(t, err)
	for rec, err := range c.Records(ctx) {
		require.NoError(t, err)
		require.Equal(t, "f", rec.Value)
		require.Equal(t, int64(7), rec.Offset)
		break
	}
}
