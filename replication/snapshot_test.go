package replication

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestSnapshotsFollowAppliedBytes writes four times a partition's
// snapshot threshold in small entries and checks that it took about four
// snapshots. Before, the bytes counted towards the threshold were reset
// only by PrepareSnapshot, which dragonboat never calls for an on-disk
// state machine's own snapshots: past the threshold, every apply asked for
// one more, and each flushed the record store (sync Produce p50 after a
// 1M-record load went from 1 to 4 ms).
func TestSnapshotsFollowAppliedBytes(t *testing.T) {
	c := newTestClusterRetaining(t, 1, 100*time.Millisecond)
	n := c.nodes[1]
	n.cfg.SnapshotBytes = 256 << 10
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tm, err := n.CreateTopic(ctx, "snap", 1, 1, TopicSettings{})
	require.NoError(t, err)
	p, err := n.Partition(ctx, tm.Partitions[0].Shard)
	require.NoError(t, err)
	require.NoError(t, p.WaitOpen(ctx))

	value := strings.Repeat("v", 1<<10)
	const entries = 1024 // 1 MiB: four thresholds
	for i := range entries {
		pr, err := p.ProposeAsync(partCmd(t, 0, 0, 0, fmt.Sprint(i), value), 10*time.Second)
		require.NoError(t, err)
		select {
		case r := <-pr.Done():
			require.True(t, r.Completed(), "entry %d", i)
		case <-ctx.Done():
			t.Fatal(ctx.Err())
		}
	}
	eventually(t, "snapshots finish", func() bool { return !p.snapshotting.Load() })
	taken := p.snapshots.Load()
	t.Logf("%d snapshots", taken)
	require.GreaterOrEqual(t, taken, int64(3), "snapshots taken")
	require.LessOrEqual(t, taken, int64(8), "snapshots taken")
	require.Less(t, p.unsnapshotted.Load(), n.cfg.SnapshotBytes)

	// Its Raft log storage is compacted once it is quiet (dragonboat's
	// compaction after every snapshot is off for partitions).
	eventually(t, "Raft log storage compacted once quiet", func() bool { return p.logCompactions.Load() > 0 })
}
