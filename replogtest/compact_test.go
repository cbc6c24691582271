package replogtest_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/replog/replog"
	"github.com/replog/replog/replogtest"
)

// Key compaction on a 3-node cluster, with one node down while it runs: the
// node comes back through the Raft log or a snapshot taken after
// compaction, and every replica ends with the same records at the same
// offsets, then removes the same tombstones.
func TestCompactionReplicasIdentical(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	c := replogtest.NewClusterWithOptions(t, 3, &replogtest.Options{
		// Only Compact compacts here, so that what each step removes is
		// known.
		RetentionInterval: time.Hour,
		Base:              replog.Options{SnapshotEntries: 20},
	})
	tp, err := c.Log(0).CreateTopic(ctx, "t", replog.TopicConfig{
		Partitions: 2, Replicas: 3, Cleanup: replog.CleanupCompact, DeleteRetention: 500 * time.Millisecond,
	})
	require.NoError(t, err)
	p, err := replog.NewProducer(tp, replog.String(), nil)
	require.NoError(t, err)
	defer p.Close()
	seq := 0
	produce := func(n int, tombstones bool) {
		for range n {
			for part := range 2 {
				seq++
				m := replog.Message[string]{Partition: &part, Key: []byte(fmt.Sprint("k", seq%7)), Value: fmt.Sprint(seq)}
				if tombstones && seq%5 == 0 {
					m.Tombstone, m.Value = true, ""
				}
				_, err := p.Produce(ctx, m)
				require.NoError(t, err)
			}
		}
	}
	produce(30, true)
	c.Crash(2)
	produce(30, true)
	require.NoError(t, c.Log(1).Compact(ctx, "t"))
	produce(30, false) // past SnapshotEntries: node 2 catches up through a snapshot

	hw := make([]int64, 2)
	for part := range 2 {
		hw[part] = mustOffsets(t, tp, part).HighWatermark
		require.Equal(t, int64(90), hw[part])
	}
	c.Restart(2)

	// Every replica holds the same records as the node that ran Compact
	// (which has applied its commands when it returns; the others apply
	// them as they come); compaction left far fewer than were written.
	read := func(i int) []string {
		ti, err := c.Log(i).Topic("t")
		require.NoError(t, err)
		var all []string
		for part := range 2 {
			require.Eventually(t, func() bool { return mustOffsets(t, ti, part).HighWatermark == hw[part] }, 30*time.Second, 20*time.Millisecond)
			all = append(all, readPartition(t, ti, part, hw[part])...)
		}
		return all
	}
	same := func(ref int) []string {
		want := read(ref)
		for i := range 3 {
			require.EventuallyWithT(t, func(ct *assert.CollectT) {
				assert.Equal(ct, want, read(i))
			}, 30*time.Second, 50*time.Millisecond, "node %d", i)
		}
		return want
	}
	compacted := same(1)
	require.Less(t, len(compacted), 2*90-2*30, "compaction removed records")
	require.NotZero(t, tombstones(compacted), "tombstones stay until DeleteRetention has passed")

	// The tombstones' DeleteRetention passes; a pass on another node
	// removes them, on every replica alike.
	time.Sleep(600 * time.Millisecond)
	require.NoError(t, c.Log(2).Compact(ctx, "t"))
	after := same(2)
	require.Less(t, len(after), len(compacted))
	require.Zero(t, tombstones(after))
	// Each partition: the last record of each of the 7 keys at most, and
	// the newest batch.
	require.LessOrEqual(t, len(after), 2*8)
}

// tombstones counts the tombstones (empty values) in recs, as
// readPartition writes them.
func tombstones(recs []string) int {
	n := 0
	for _, r := range recs {
		if r[len(r)-1] == ':' {
			n++
		}
	}
	return n
}
