package replogtest_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/replog/replog"
	"github.com/replog/replog/replogtest"
)

// A partition on nodes a and b moves to b and x while a producer on b keeps
// writing, then back to a and b: a rejoins as a new replica (dragonboat
// never reuses a removed replica id). No write fails, a ends up with every
// record at its acknowledged offset, and x no longer hosts the partition.
func TestReassignPartitionWhileProducing(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	c := replogtest.NewCluster(t, 3)
	tp, err := c.Log(0).CreateTopic(ctx, "t", replog.TopicConfig{Partitions: 1, Replicas: 2})
	require.NoError(t, err)
	initial := tp.Info().PartitionReplicas[0]
	require.Len(t, initial, 2)
	a, b := initial[0], initial[1] // node ids; b stays throughout
	x := uint64(6) - a - b         // the third node
	idx := func(node uint64) int { return int(node) - 1 }

	t2, err := c.Log(idx(b)).Topic("t")
	require.NoError(t, err)
	p, err := replog.NewProducer(t2, replog.String(), nil)
	require.NoError(t, err)
	defer p.Close()
	var mu sync.Mutex
	acked := map[string]int64{}
	var failed atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			v := fmt.Sprintf("v%05d", i)
			pos, err := p.Produce(ctx, replog.Message[string]{Value: v})
			if err != nil {
				failed.Add(1)
				continue
			}
			mu.Lock()
			acked[v] = pos.Offset
			mu.Unlock()
		}
	}()
	time.Sleep(200 * time.Millisecond)
	require.NoError(t, c.Log(0).ReassignPartition(ctx, "t", 0, []uint64{b, x}))
	time.Sleep(200 * time.Millisecond)
	require.NoError(t, c.Log(2).ReassignPartition(ctx, "t", 0, []uint64{a, b}))
	time.Sleep(200 * time.Millisecond)
	close(stop)
	wg.Wait()
	require.Zero(t, failed.Load(), "writes failed during the moves")

	// Node a, back as a new replica, holds everything at the acknowledged
	// offsets.
	t1, err := c.Log(idx(a)).Topic("t")
	require.NoError(t, err)
	cons, err := replog.NewConsumer(t1, replog.String(), nil)
	require.NoError(t, err)
	defer cons.Close()
	n := 0
	for rec, err := range cons.Records(ctx) {
		require.NoError(t, err)
		off, ok := acked[rec.Value]
		require.True(t, ok, "phantom %s", rec.Value)
		require.Equal(t, off, rec.Offset, rec.Value)
		if n++; n == len(acked) {
			break
		}
	}
	// Node x left the partition again.
	t3, err := c.Log(idx(x)).Topic("t")
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		_, err := t3.Offsets(ctx, 0)
		return err != nil
	}, 10*time.Second, 20*time.Millisecond, "node x still hosts the partition")
	_, err = t3.Offsets(ctx, 0)
	require.ErrorIs(t, err, replog.ErrNoLocalReplica)

	require.ErrorIs(t, c.Log(0).ReassignPartition(ctx, "t", 0, []uint64{9}), replog.ErrInvalidConfig)
	require.ErrorIs(t, c.Log(0).ReassignPartition(ctx, "t", 5, []uint64{1}), replog.ErrPartitionNotFound)
	t.Logf("%d records produced across two moves", len(acked))
}
