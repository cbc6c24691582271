package replogtest_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/replog/replog"
	"github.com/replog/replog/replogtest"
)

// A member crashes mid-stream with records read but not committed; after
// its session times out another member, on another node, takes its
// partitions over and resumes right after the last commit: nothing is
// skipped (the uncommitted records come again: at least once). The
// committed offsets survive the crash of a node.
func TestGroupMemberCrashResumesAfterLastCommit(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c := replogtest.NewCluster(t, 3)
	tp, err := c.Log(0).CreateTopic(ctx, "t", replog.TopicConfig{Partitions: 4, Replicas: 3})
	require.NoError(t, err)
	p, err := replog.NewProducer(tp, replog.String(), nil)
	require.NoError(t, err)
	for i := range 200 {
		p.ProduceAsync(ctx, replog.Message[string]{Key: fmt.Appendf(nil, "k%d", i), Value: fmt.Sprintf("v%03d", i)}, nil)
	}
	require.NoError(t, p.Flush(ctx))
	require.NoError(t, p.Close())

	opts := &replog.ConsumerOptions{Group: "g", MaxPollRecords: 10, GroupOptions: replog.GroupOptions{
		SessionTimeout: 2 * time.Second, HeartbeatInterval: 200 * time.Millisecond,
	}}
	a, err := replog.NewConsumer(tp, replog.String(), opts)
	require.NoError(t, err)
	committed := map[string]bool{}
	for len(committed) < 100 {
		recs, err := a.Poll(ctx)
		require.NoError(t, err)
		for _, r := range recs {
			committed[r.Value] = true
		}
	}
	require.NoError(t, a.Commit(ctx))
	positions := map[int]int64{}
	for _, part := range a.Assignment() {
		positions[part], err = a.Position(part)
		require.NoError(t, err)
	}
	_, err = a.Poll(ctx) // read more, never committed
	require.NoError(t, err)

	t1, err := c.Log(1).Topic("t")
	require.NoError(t, err)
	b, err := replog.NewConsumer(t1, replog.String(), opts)
	require.NoError(t, err)
	defer b.Close()
	c.Crash(0) // member a stops heart-beating

	got := map[string]bool{}
	for !allRead(committed, got, 200) {
		pctx, pcancel := context.WithTimeout(ctx, 200*time.Millisecond)
		recs, err := b.Poll(pctx)
		pcancel()
		if err != nil && !errors.Is(err, context.DeadlineExceeded) {
			require.NoError(t, err)
		}
		for _, r := range recs {
			require.GreaterOrEqual(t, r.Offset, positions[r.Partition], "b read below a's commit in partition %d", r.Partition)
			if r.Offset == positions[r.Partition] {
				require.False(t, committed[r.Value], "the first record after the commit was committed already")
			}
			got[r.Value] = true
		}
	}
	require.Equal(t, []int{0, 1, 2, 3}, b.Assignment())

	info, err := c.Log(2).DescribeGroup(ctx, "g")
	require.NoError(t, err)
	require.Len(t, info.Members, 1)
	for _, pi := range info.Partitions {
		require.GreaterOrEqual(t, pi.Committed, positions[pi.Partition], "commit of partition %d survived the crash", pi.Partition)
	}
	c.Restart(0)
}

func allRead(committed, got map[string]bool, n int) bool {
	for i := range n {
		v := fmt.Sprintf("v%03d", i)
		if !committed[v] && !got[v] {
			return false
		}
	}
	return true
}
