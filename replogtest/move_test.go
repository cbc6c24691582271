package replogtest_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/replog/replog"
	"github.com/replog/replog/replogtest"
)

// A producer and a consumer on node a keep working when the partition's
// replicas move off a: node a then serves the partition through a
// non-voting replica, the producer re-resolves it, and the consumer goes on
// from its position. Every record arrives exactly once, in order. Then the
// handles fail with the public sentinels: ErrTopicNotFound once the topic
// is deleted, ErrClosed once node a closes.
func TestHandlesSurviveReplicasMovingAway(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := replogtest.NewCluster(t, 3)
	tp, err := c.Log(0).CreateTopic(ctx, "t", replog.TopicConfig{Partitions: 1, Replicas: 2})
	require.NoError(t, err)
	placed := tp.Info().PartitionReplicas[0]
	a, b := placed[0], placed[1] // node ids
	x := uint64(6) - a - b
	ia := int(a) - 1

	ta, err := c.Log(ia).Topic("t")
	require.NoError(t, err)
	p, err := replog.NewProducer(ta, replog.String(), nil)
	require.NoError(t, err)
	defer p.Close()
	cons, err := replog.NewConsumer(ta, replog.String(), nil)
	require.NoError(t, err)
	defer cons.Close()

	// The consumer reads on its own goroutine throughout.
	var mu sync.Mutex
	var read []replog.Record[string]
	var readErr error
	cctx, ccancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for rec, err := range cons.Records(cctx) {
			mu.Lock()
			if err != nil {
				readErr = err
				mu.Unlock()
				return
			}
			read = append(read, rec)
			mu.Unlock()
		}
	}()

	n := 0
	var acked []replog.Position
	produce := func(k int) {
		for range k {
			pctx, pcancel := context.WithTimeout(ctx, 30*time.Second)
			pos, err := p.Produce(pctx, replog.Message[string]{Value: fmt.Sprintf("v%05d", n)})
			pcancel()
			require.NoError(t, err, "record %d", n)
			acked = append(acked, pos)
			n++
		}
	}
	produce(50)
	done := make(chan error, 1)
	go func() { done <- c.Log(int(b)-1).ReassignPartition(ctx, "t", 0, []uint64{b, x}) }()
	for moving := true; moving; {
		select {
		case err := <-done:
			require.NoError(t, err)
			moving = false
		default:
			produce(1)
		}
	}
	require.ElementsMatch(t, []uint64{b, x}, c.Log(int(b) - 1).Topics()[0].PartitionReplicas[0])
	// Node a's voting replica is removed once the move completed; writes
	// and reads from a go on after that.
	require.Eventually(t, func() bool {
		info, err := c.Log(ia).Topic("t")
		return err == nil && !slices.Contains(info.Info().PartitionReplicas[0], a)
	}, 30*time.Second, 10*time.Millisecond)
	produce(100)

	require.Eventually(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(read) >= n || readErr != nil
	}, 30*time.Second, 10*time.Millisecond, "the consumer on node a stalled")
	ccancel()
	wg.Wait()
	require.NoError(t, readErr)
	require.Len(t, read, n, "every record exactly once")
	for i, rec := range read {
		require.Equal(t, fmt.Sprintf("v%05d", i), rec.Value, "order")
		require.Equal(t, acked[i].Offset, rec.Offset, "acknowledged offset")
	}

	// A deleted topic: both handles say so.
	require.NoError(t, c.Log(int(b)-1).DeleteTopic(ctx, "t"))
	require.Eventually(t, func() bool {
		_, err := c.Log(ia).Topic("t")
		return err != nil
	}, 10*time.Second, 10*time.Millisecond)
	_, err = p.Produce(ctx, replog.Message[string]{Value: "gone"})
	require.ErrorIs(t, err, replog.ErrTopicNotFound)
	_, err = cons.Poll(ctx)
	require.ErrorIs(t, err, replog.ErrTopicNotFound)
}

// Handles on a node that closes fail with ErrClosed, whatever replica they
// used.
func TestHandlesOnClosedNode(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := replogtest.NewCluster(t, 3)
	tp, err := c.Log(0).CreateTopic(ctx, "t", replog.TopicConfig{Partitions: 1, Replicas: 1})
	require.NoError(t, err)
	host := int(tp.Info().PartitionReplicas[0][0]) - 1
	other := (host + 1) % 3 // serves the partition through a non-voting replica
	to, err := c.Log(other).Topic("t")
	require.NoError(t, err)
	p, err := replog.NewProducer(to, replog.String(), nil)
	require.NoError(t, err)
	defer p.Close()
	cons, err := replog.NewConsumer(to, replog.String(), nil)
	require.NoError(t, err)
	defer cons.Close()
	_, err = p.Produce(ctx, replog.Message[string]{Value: "v"})
	require.NoError(t, err)
	_, err = cons.Poll(ctx)
	require.NoError(t, err)

	c.Crash(other)
	_, err = p.Produce(ctx, replog.Message[string]{Value: "after"})
	require.ErrorIs(t, err, replog.ErrClosed)
	_, err = cons.Poll(ctx)
	require.ErrorIs(t, err, replog.ErrClosed)
}
