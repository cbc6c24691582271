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

// produceFrom produces n values with prefix from node i, retrying
// retriable errors, and returns the acknowledged positions by value.
func produceFrom(t *testing.T, c *replogtest.Cluster, i int, prefix string, n int) map[string]replog.Position {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	tp, err := c.Log(i).Topic("t")
	require.NoError(t, err)
	p, err := replog.NewProducer(tp, replog.String(), nil)
	require.NoError(t, err)
	defer p.Close()
	acked := map[string]replog.Position{}
	for k := range n {
		v := fmt.Sprintf("%s-%04d", prefix, k)
		pos, err := p.Produce(ctx, replog.Message[string]{Value: v})
		require.NoError(t, err, v)
		acked[v] = pos
	}
	return acked
}

// readAll reads partition 0 of topic t on node i from the start until its
// high watermark reaches want records.
func readAll(t *testing.T, c *replogtest.Cluster, i int, want int) []replog.Record[string] {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tp, err := c.Log(i).Topic("t")
	require.NoError(t, err)
	cons, err := replog.NewConsumer(tp, replog.String(), nil)
	require.NoError(t, err)
	defer cons.Close()
	var out []replog.Record[string]
	for rec, err := range cons.Records(ctx) {
		require.NoError(t, err)
		out = append(out, rec)
		if len(out) == want {
			break
		}
	}
	require.Len(t, out, want, "node %d", i)
	return out
}

// A leader crashes and loses what it had not synced; the others keep
// accepting writes; after a restart it catches up, through a snapshot since
// the Raft log was compacted meanwhile, and every replica holds the same
// records with nothing acknowledged lost.
func TestCrashLeaderRestartCatchesUp(t *testing.T) {
	c := replogtest.NewClusterWithOptions(t, 3, &replogtest.Options{Base: replog.Options{SnapshotEntries: 50}})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	_, err := c.Log(0).CreateTopic(ctx, "t", replog.TopicConfig{Replicas: 3})
	require.NoError(t, err)
	leader := c.WaitLeader("t", 0, 10*time.Second)
	acked := produceFrom(t, c, leader, "before", 50)

	c.Crash(leader)
	other := (leader + 1) % 3
	for k, v := range produceFrom(t, c, other, "during", 200) { // > SnapshotEntries/10: the log is compacted
		acked[k] = v
	}
	c.Restart(leader)

	for i := range c.Size() {
		recs := readAll(t, c, i, len(acked))
		seen := map[string]bool{}
		for _, r := range recs {
			pos, ok := acked[r.Value]
			require.True(t, ok, "phantom %s on node %d", r.Value, i)
			require.Equal(t, pos.Offset, r.Offset, "node %d holds %s at another offset", i, r.Value)
			require.False(t, seen[r.Value], "duplicate %s", r.Value)
			seen[r.Value] = true
		}
	}
}

// A partition isolating the leader: the majority elects a new leader and
// keeps accepting writes; the old leader's writes fail or time out, and
// after healing every node converges on the majority's log.
func TestPartitionedLeaderMinority(t *testing.T) {
	c := replogtest.NewCluster(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	_, err := c.Log(0).CreateTopic(ctx, "t", replog.TopicConfig{Replicas: 3})
	require.NoError(t, err)
	old := c.WaitLeader("t", 0, 10*time.Second)
	acked := produceFrom(t, c, old, "before", 20)

	a, b := (old+1)%3, (old+2)%3
	c.Partition([]int{old}, []int{a, b})
	// The minority cannot commit.
	tp, err := c.Log(old).Topic("t")
	require.NoError(t, err)
	p, err := replog.NewProducer(tp, replog.String(), &replog.ProducerOptions{DeliveryTimeout: 500 * time.Millisecond})
	require.NoError(t, err)
	_, err = p.Produce(ctx, replog.Message[string]{Value: "minority"})
	require.Error(t, err, "a write on the isolated old leader cannot be acknowledged")
	p.Close()

	for k, v := range produceFrom(t, c, a, "majority", 50) {
		acked[k] = v
	}
	c.Heal()
	c.WaitLeader("t", 0, 10*time.Second)
	for i := range c.Size() {
		recs := readAll(t, c, i, len(acked))
		for _, r := range recs {
			require.Equal(t, acked[r.Value].Offset, r.Offset, "node %d, value %s", i, r.Value)
		}
	}
	_ = b
}

// A ring partition of five nodes: each node reaches only its two
// neighbours, so every node sees a majority (itself and two others) but no
// two adjacent majorities agree. Writes from every node go on or fail;
// after healing nothing acknowledged is lost, duplicated or reordered and
// every replica holds the same log.
func TestRingPartition(t *testing.T) {
	c := replogtest.NewCluster(t, 5)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	_, err := c.Log(0).CreateTopic(ctx, "t", replog.TopicConfig{Partitions: 2, Replicas: 5})
	require.NoError(t, err)
	var stats batteryStats
	stop := make(chan struct{})
	var mu sync.Mutex
	var ops []op
	var wg sync.WaitGroup
	for node := range 5 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			mine := writer(c, node, fmt.Sprintf("n%d", node), stop, &stats, func() bool { return false })
			mu.Lock()
			ops = append(ops, mine...)
			mu.Unlock()
		}()
	}
	require.Eventually(t, func() bool { return stats.acked.Load() >= 50 }, 30*time.Second, 5*time.Millisecond)
	c.Ring()
	before := stats.acked.Load()
	time.Sleep(2 * time.Second)
	during := stats.acked.Load() - before
	c.Heal()
	for p := range 2 {
		c.WaitLeader("t", p, 10*time.Second)
	}
	time.Sleep(300 * time.Millisecond)
	close(stop)
	wg.Wait()

	hw := convergedHW(t, ctx, c, []int{0, 1, 2, 3, 4}, 2)
	var logs [][]map[int64]string
	for n := range 5 {
		logs = append(logs, drainN(t, c, n, hw, 2))
	}
	a := check(ops, logs)
	t.Logf("ring: %d acked during the ring, %d in all, %d failed; anomalies %+v", during, stats.acked.Load(), stats.failed.Load(), a)
	require.Zero(t, a.lost+a.duplicated+a.inconsistent+a.reordered+a.phantom+a.divergent+a.misplaced, "%v", a.examples)
}
