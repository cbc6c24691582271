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
	// Node x left the partition's placement again.
	t3, err := c.Log(idx(x)).Topic("t")
	require.NoError(t, err)
	require.ElementsMatch(t, []uint64{a, b}, t3.Info().PartitionReplicas[0])
	require.ErrorIs(t, c.Log(0).ReassignPartition(ctx, "t", 0, []uint64{9}), replog.ErrInvalidConfig)
	require.ErrorIs(t, c.Log(0).ReassignPartition(ctx, "t", 5, []uint64{1}), replog.ErrPartitionNotFound)
	t.Logf("%d records produced across two moves", len(acked))
}

// A fourth node joins a running cluster, a partition moves onto it, and a
// first node, once its partitions moved away, leaves: records stay readable
// throughout and new topics use the new node.
func TestAddAndRemoveNodes(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	c := replogtest.NewCluster(t, 3)
	tp, err := c.Log(0).CreateTopic(ctx, "t", replog.TopicConfig{Partitions: 1, Replicas: 3})
	require.NoError(t, err)
	p, err := replog.NewProducer(tp, replog.String(), nil)
	require.NoError(t, err)
	for i := range 100 {
		_, err := p.Produce(ctx, replog.Message[string]{Value: fmt.Sprint(i)})
		require.NoError(t, err)
	}
	require.NoError(t, p.Close())

	four := c.AddNode(0)
	require.Equal(t, []uint64{1, 2, 3, 4}, c.Log(four).Nodes())
	require.Equal(t, []uint64{1, 2, 3, 4}, c.Log(0).Nodes())
	// An initial node restarts with Peers that now name the new node too
	// (the soak caught dragonboat refusing that member list).
	c.Crash(2)
	c.Restart(2)
	c.Crash(four)
	c.Restart(four)
	// The new node sees the metadata, and the partition moves onto it.
	_, err = c.Log(four).Topic("t")
	require.NoError(t, err)
	require.NoError(t, c.Log(four).ReassignPartition(ctx, "t", 0, []uint64{2, 3, 4}))
	t4, err := c.Log(four).Topic("t")
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		o, err := t4.Offsets(ctx, 0)
		return err == nil && o.HighWatermark == 100
	}, 20*time.Second, 20*time.Millisecond, "the new replica caught up")

	// Node 1 hosts nothing now and leaves.
	c.RemoveNode(0, 1)
	require.Equal(t, []uint64{2, 3, 4}, c.Log(1).Nodes())
	require.ErrorIs(t, c.Log(1).RemoveNode(ctx, 9), replog.ErrInvalidConfig)

	// The cluster keeps working without it, and places new topics on node 4.
	nt, err := c.Log(four).CreateTopic(ctx, "new", replog.TopicConfig{Partitions: 3, Replicas: 3})
	require.NoError(t, err)
	for _, reps := range nt.Info().PartitionReplicas {
		require.ElementsMatch(t, []uint64{2, 3, 4}, reps)
	}
	p, err = replog.NewProducer(nt, replog.String(), nil)
	require.NoError(t, err)
	_, err = p.Produce(ctx, replog.Message[string]{Value: "after"})
	require.NoError(t, err)
	require.NoError(t, p.Close())

	cons, err := replog.NewConsumer(t4, replog.String(), nil)
	require.NoError(t, err)
	defer cons.Close()
	n := 0
	for rec, err := range cons.Records(ctx) {
		require.NoError(t, err)
		require.Equal(t, fmt.Sprint(n), rec.Value)
		if n++; n == 100 {
			break
		}
	}
}

func TestRemoveNodeHostingReplicasRefused(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := replogtest.NewCluster(t, 3)
	_, err := c.Log(0).CreateTopic(ctx, "t", replog.TopicConfig{Replicas: 3})
	require.NoError(t, err)
	require.ErrorIs(t, c.Log(0).RemoveNode(ctx, 2), replog.ErrInvalidConfig)
	require.Equal(t, []uint64{1, 2, 3}, c.Log(0).Nodes())
}

// Any node serves any topic: nodes without a replica of a partition produce
// to and consume from it (they join its Raft group as non-voting replicas),
// and the voting replica holds what they wrote.
func TestNodeWithoutReplicaServesPartition(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c := replogtest.NewCluster(t, 3)
	tp, err := c.Log(0).CreateTopic(ctx, "t", replog.TopicConfig{Partitions: 1, Replicas: 1})
	require.NoError(t, err)
	host := int(tp.Info().PartitionReplicas[0][0]) - 1
	others := []int{(host + 1) % 3, (host + 2) % 3}

	tw, err := c.Log(others[0]).Topic("t")
	require.NoError(t, err)
	p, err := replog.NewProducer(tw, replog.String(), nil)
	require.NoError(t, err)
	defer p.Close()
	for i := range 50 {
		pos, err := p.Produce(ctx, replog.Message[string]{Value: fmt.Sprint(i)})
		require.NoError(t, err)
		require.Equal(t, int64(i), pos.Offset)
	}
	for _, i := range []int{host, others[1]} {
		tr, err := c.Log(i).Topic("t")
		require.NoError(t, err)
		cons, err := replog.NewConsumer(tr, replog.String(), nil)
		require.NoError(t, err)
		n := 0
		for rec, err := range cons.Records(ctx) {
			require.NoError(t, err)
			require.Equal(t, fmt.Sprint(n), rec.Value, "node %d", i)
			if n++; n == 50 {
				break
			}
		}
		require.NoError(t, cons.Close())
	}
	require.Equal(t, []uint64{uint64(host + 1)}, tp.Info().PartitionReplicas[0], "the voting placement is unchanged")
}
