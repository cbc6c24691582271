package replogtest_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/replog/replog"
	"github.com/replog/replog/replogtest"
)

type produced struct {
	value string
	pos   replog.Position
}

// Producers on every node of a 3-node cluster write concurrently; a consumer
// on one node must read every acknowledged record exactly once, at the
// position it was acknowledged with, and each producer's records of one key
// in send order.
func TestClusterConcurrentProducersExactlyOnce(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c := replogtest.NewCluster(t, 3)
	_, err := c.Log(0).CreateTopic(ctx, "events", replog.TopicConfig{Partitions: 3, Replicas: 3})
	require.NoError(t, err)

	const perProducer = 150
	var mu sync.Mutex
	var acked []produced
	var wg sync.WaitGroup
	for node := range c.Size() {
		for g := range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var tpn *replog.Topic
				require.Eventually(t, func() bool {
					var err error
					tpn, err = c.Log(node).Topic("events")
					return err == nil
				}, 10*time.Second, 10*time.Millisecond)
				p, err := replog.NewProducer(tpn, replog.String(), nil)
				require.NoError(t, err)
				defer p.Close()
				key := fmt.Sprintf("n%d-g%d", node, g)
				for i := range perProducer {
					v := fmt.Sprintf("%s-%04d", key, i)
					pos, err := p.Produce(ctx, replog.Message[string]{Key: []byte(key), Value: v})
					if !assertNoError(t, err) {
						return
					}
					mu.Lock()
					acked = append(acked, produced{v, pos})
					mu.Unlock()
				}
			}()
		}
	}
	wg.Wait()
	require.Len(t, acked, 3*2*perProducer)

	tc, err := c.Log(2).Topic("events")
	require.NoError(t, err)
	cons, err := replog.NewConsumer(tc, replog.String(), nil)
	require.NoError(t, err)
	defer cons.Close()
	seen := map[string]replog.Record[string]{}
	last := map[string]string{} // key -> last value, to check order
	for rec, err := range cons.Records(ctx) {
		require.NoError(t, err)
		_, dup := seen[rec.Value]
		require.False(t, dup, "duplicate %s", rec.Value)
		seen[rec.Value] = rec
		k := string(rec.Key)
		require.Less(t, last[k], rec.Value, "order of key %s", k)
		last[k] = rec.Value
		if len(seen) == len(acked) {
			break
		}
	}
	for _, a := range acked {
		rec, ok := seen[a.value]
		require.True(t, ok, "lost %s", a.value)
		require.Equal(t, a.pos.Partition, rec.Partition)
		require.Equal(t, a.pos.Offset, rec.Offset)
	}
	// Every replica holds the same offsets.
	for i := range c.Size() {
		ti, err := c.Log(i).Topic("events")
		require.NoError(t, err)
		total := int64(0)
		for part := range ti.Partitions() {
			require.Eventually(t, func() bool {
				o, err := ti.Offsets(ctx, part)
				return err == nil && o.HighWatermark == mustOffsets(t, tc, part).HighWatermark
			}, 10*time.Second, 10*time.Millisecond)
			o, _ := ti.Offsets(ctx, part)
			total += o.HighWatermark
		}
		require.Equal(t, int64(len(acked)), total, "node %d", i)
	}
}

func mustOffsets(t *testing.T, tp *replog.Topic, part int) replog.PartitionOffsets {
	o, err := tp.Offsets(context.Background(), part)
	require.NoError(t, err)
	return o
}

func assertNoError(t *testing.T, err error) bool {
	t.Helper()
	if err != nil {
		t.Errorf("produce: %v", err)
		return false
	}
	return true
}

func TestClusterTopicVisibleOnEveryNode(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := replogtest.NewCluster(t, 3)
	_, err := c.Log(1).CreateTopic(ctx, "t", replog.TopicConfig{Partitions: 2})
	require.NoError(t, err)
	for i := range c.Size() {
		tp, err := c.Log(i).Topic("t")
		require.NoError(t, err, "node %d", i)
		require.Equal(t, 2, tp.Partitions())
		require.Equal(t, 3, tp.Info().Replicas)
	}
	_, err = c.Log(0).CreateTopic(ctx, "t4", replog.TopicConfig{Replicas: 4})
	require.ErrorIs(t, err, replog.ErrInvalidConfig)
}

// An idempotent producer keeps writing while the partition's leadership is
// moved around the cluster: every acknowledged record is stored exactly
// once, in produce order.
func TestIdempotentProducerAcrossLeaderChanges(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c := replogtest.NewCluster(t, 3)
	tp, err := c.Log(0).CreateTopic(ctx, "t", replog.TopicConfig{Partitions: 1, Replicas: 3})
	require.NoError(t, err)
	p, err := replog.NewProducer(tp, replog.String(), nil)
	require.NoError(t, err)
	defer p.Close()

	stop := make(chan struct{})
	moved := make(chan int)
	go func() {
		n := 0
		defer func() { moved <- n }()
		for target := uint64(2); ; target = target%3 + 1 {
			select {
			case <-stop:
				return
			case <-time.After(30 * time.Millisecond):
			}
			tctx, tcancel := context.WithTimeout(ctx, 5*time.Second)
			if tp.TransferLeader(tctx, 0, target) == nil {
				n++
			}
			tcancel()
		}
	}()
	var acked []replog.Position
	for i := range 300 {
		pos, err := p.Produce(ctx, replog.Message[string]{Value: fmt.Sprintf("%05d", i)})
		require.NoError(t, err, "record %d", i)
		acked = append(acked, pos)
	}
	close(stop)
	transfers := <-moved
	require.GreaterOrEqual(t, transfers, 2, "leadership must actually move during the test")

	cons, err := replog.NewConsumer(tp, replog.String(), nil)
	require.NoError(t, err)
	defer cons.Close()
	i := 0
	for rec, err := range cons.Records(ctx) {
		require.NoError(t, err)
		require.Equal(t, fmt.Sprintf("%05d", i), rec.Value, "offset %d", rec.Offset)
		require.Equal(t, acked[i].Offset, rec.Offset)
		if i++; i == len(acked) {
			break
		}
	}
	off, err := tp.Offsets(ctx, 0)
	require.NoError(t, err)
	require.Equal(t, int64(len(acked)), off.HighWatermark, "no duplicate was stored")
}

// Leaders of a topic's partitions spread over the nodes, as replicas do.
func TestLeadersSpreadOverNodes(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := replogtest.NewCluster(t, 3)
	_, err := c.Log(0).CreateTopic(ctx, "t", replog.TopicConfig{Partitions: 6, Replicas: 3})
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		per := map[int]int{}
		for p := range 6 {
			per[c.Leader("t", p)]++
		}
		return per[0] == 2 && per[1] == 2 && per[2] == 2
	}, 10*time.Second, 20*time.Millisecond, "each node leads 2 of 6 partitions")
}
