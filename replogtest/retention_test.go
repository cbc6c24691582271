package replogtest_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/replog/replog"
	"github.com/replog/replog/replogtest"
)

// readPartition reads partition part of tp from its log start to hw on
// that node, as "offset:value".
func readPartition(t *testing.T, tp *replog.Topic, part int, hw int64) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := replog.NewConsumer(tp, replog.String(), &replog.ConsumerOptions{Partitions: []int{part}})
	require.NoError(t, err)
	defer c.Close()
	var out []string
	if o := mustOffsets(t, tp, part); o.LogStart == hw {
		return out
	}
	for rec, err := range c.Records(ctx) {
		require.NoError(t, err)
		out = append(out, fmt.Sprintf("%d:%s", rec.Offset, rec.Value))
		if rec.Offset == hw-1 {
			break
		}
	}
	return out
}

// Retention by time and by size runs on a 3-node cluster, with one node
// down while it runs (it catches up through the Raft log or a snapshot
// that carries the log start): every replica ends with the same log start,
// high watermark and records.
func TestRetentionReplicasIdentical(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	c := replogtest.NewClusterWithOptions(t, 3, &replogtest.Options{
		RetentionInterval: 100 * time.Millisecond,
		Base:              replog.Options{SnapshotEntries: 20},
	})
	tp, err := c.Log(0).CreateTopic(ctx, "t", replog.TopicConfig{Partitions: 2, Replicas: 3})
	require.NoError(t, err)
	p, err := replog.NewProducer(tp, replog.String(), nil)
	require.NoError(t, err)
	defer p.Close()
	produce := func(n int, age time.Duration) {
		for i := range n {
			for part := range 2 {
				_, err := p.Produce(ctx, replog.Message[string]{Partition: &part, Value: fmt.Sprintf("%03d-%0100d", i, i), Time: time.Now().Add(-age)})
				require.NoError(t, err)
			}
		}
	}
	produce(20, 3*time.Hour) // old: time retention takes them
	c.Crash(2)
	produce(30, 0)

	require.NoError(t, c.Log(0).AlterTopic(ctx, "t", replog.TopicConfig{Retention: time.Hour, RetentionBytes: 3000}))
	want := make([]replog.PartitionOffsets, 2)
	for part := range 2 {
		require.Eventually(t, func() bool {
			o := mustOffsets(t, tp, part)
			want[part] = o
			return o.LogStart > 20 // the old ones by time, then some by size
		}, 30*time.Second, 20*time.Millisecond)
	}
	time.Sleep(500 * time.Millisecond) // the size limit is reached: nothing moves any more
	for part := range 2 {
		require.Equal(t, want[part], mustOffsets(t, tp, part))
		require.Equal(t, int64(50), want[part].HighWatermark)
		kept := want[part].HighWatermark - want[part].LogStart
		require.LessOrEqual(t, kept*100, int64(3000), "within the size limit")
		require.Greater(t, kept*250, int64(3000), "not more deleted than needed")
	}

	c.Restart(2)
	var first [2][]string
	for i := range 3 {
		ti, err := c.Log(i).Topic("t")
		require.NoError(t, err)
		for part := range 2 {
			require.Eventually(t, func() bool { return mustOffsets(t, ti, part) == want[part] }, 30*time.Second, 20*time.Millisecond, "node %d", i)
			got := readPartition(t, ti, part, want[part].HighWatermark)
			require.Len(t, got, int(want[part].HighWatermark-want[part].LogStart))
			if i == 0 {
				first[part] = got
			} else {
				require.Equal(t, first[part], got, "node %d partition %d", i, part)
			}
		}
	}
}

// AlterTopic grows a topic on a 3-node cluster: every node starts its
// replicas of the new partitions, which take and serve records.
func TestAlterTopicGrowsOnEveryNode(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c := replogtest.NewCluster(t, 3)
	_, err := c.Log(0).CreateTopic(ctx, "t", replog.TopicConfig{Partitions: 1, Replicas: 3})
	require.NoError(t, err)
	require.NoError(t, c.Log(1).AlterTopic(ctx, "t", replog.TopicConfig{Partitions: 3, Retention: time.Hour}))
	tp, err := c.Log(2).Topic("t")
	require.NoError(t, err)
	require.Equal(t, 3, tp.Partitions())
	p, err := replog.NewProducer(tp, replog.String(), nil)
	require.NoError(t, err)
	defer p.Close()
	for part := range 3 {
		pos, err := p.Produce(ctx, replog.Message[string]{Partition: &part, Value: fmt.Sprint(part)})
		require.NoError(t, err)
		require.Equal(t, replog.Position{Partition: part, Offset: 0}, pos)
	}
	for i := range 3 {
		ti, err := c.Log(i).Topic("t")
		require.NoError(t, err)
		require.Equal(t, time.Hour, ti.Info().Retention)
		require.Len(t, ti.Info().PartitionReplicas[2], 3)
		require.Eventually(t, func() bool { return mustOffsets(t, ti, 2).HighWatermark == 1 }, 10*time.Second, 10*time.Millisecond, "node %d", i)
		require.Equal(t, []string{"0:2"}, readPartition(t, ti, 2, 1))
	}
}
