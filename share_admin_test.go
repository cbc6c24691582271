package replog_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/replog/replog"
)

func shareValues(recs []replog.ShareRecord[string]) []string {
	var out []string
	for _, r := range recs {
		out = append(out, r.Value)
	}
	return out
}

// TestShareGroupAdmin: a share group is described after acquisitions and
// acknowledgements; reset and delete are refused while a member holds a
// lock and work once none does, and the member then reads from the new
// start.
func TestShareGroupAdmin(t *testing.T) {
	ctx := testCtx(t)
	l := openMem(t)
	tp, err := l.CreateTopic(ctx, "jobs", replog.TopicConfig{Partitions: 1})
	require.NoError(t, err)
	produceStrings(t, ctx, tp, 10, "job")

	_, err = l.DescribeShareGroup(ctx, "workers")
	require.ErrorIs(t, err, replog.ErrGroupNotFound)
	require.ErrorIs(t, l.DeleteShareGroup(ctx, "workers"), replog.ErrGroupNotFound)
	gs, err := l.ListShareGroups(ctx)
	require.NoError(t, err)
	require.Empty(t, gs)

	c := newShare(t, tp, "workers", &replog.ShareConsumerOptions{MaxRecords: 4, PollInterval: 20 * time.Millisecond})
	recs, err := c.Poll(ctx)
	require.NoError(t, err)
	require.Equal(t, []string{"job-0000", "job-0001", "job-0002", "job-0003"}, shareValues(recs))
	require.NoError(t, recs[0].Ack(ctx))
	require.NoError(t, recs[2].Ack(ctx))

	g, err := l.DescribeShareGroup(ctx, "workers")
	require.NoError(t, err)
	require.Equal(t, "workers", g.Name)
	require.Equal(t, []string{c.Member()}, g.Members)
	require.False(t, g.Empty())
	require.Equal(t, []replog.SharePartitionInfo{{Topic: "jobs", Partition: 0, Start: 1,
		Acquired: 2, Acknowledged: 1, Members: []string{c.Member()}, HighWatermark: 10, Lag: 8}}, g.Partitions)
	gs, err = l.ListShareGroups(ctx)
	require.NoError(t, err)
	require.Equal(t, []replog.ShareGroupInfo{g}, gs)

	require.ErrorIs(t, l.ResetShareGroup(ctx, "workers", replog.OffsetReset{Start: replog.Latest}), replog.ErrGroupNotEmpty)
	require.ErrorIs(t, l.DeleteShareGroup(ctx, "workers"), replog.ErrGroupNotEmpty)

	require.NoError(t, recs[1].Release(ctx, 0))
	require.NoError(t, recs[3].Release(ctx, time.Hour))
	g, err = l.DescribeShareGroup(ctx, "workers")
	require.NoError(t, err)
	require.True(t, g.Empty())
	require.Equal(t, []replog.SharePartitionInfo{{Topic: "jobs", Partition: 0, Start: 1,
		Available: 2, Acknowledged: 1, HighWatermark: 10, Lag: 8}}, g.Partitions)

	// The member, idle but open, reads from the new start.
	require.NoError(t, l.ResetShareGroup(ctx, "workers", replog.OffsetReset{Offsets: map[int]int64{0: 7}}))
	recs, err = c.Poll(ctx)
	require.NoError(t, err)
	require.Equal(t, []string{"job-0007", "job-0008", "job-0009"}, shareValues(recs))
	require.Equal(t, 1, recs[0].Deliveries)
	require.NoError(t, c.AckAll(ctx, recs))
	g, err = l.DescribeShareGroup(ctx, "workers")
	require.NoError(t, err)
	require.Equal(t, []replog.SharePartitionInfo{{Topic: "jobs", Partition: 0, Start: 10, HighWatermark: 10, Lag: 0}}, g.Partitions)

	// Backwards, to the earliest: everything is delivered again.
	require.NoError(t, l.ResetShareGroup(ctx, "workers", replog.OffsetReset{Topic: "jobs", Start: replog.Earliest}))
	recs, err = c.Poll(ctx)
	require.NoError(t, err)
	require.Equal(t, []string{"job-0000", "job-0001", "job-0002", "job-0003"}, shareValues(recs))
	require.ErrorIs(t, l.DeleteShareGroup(ctx, "workers"), replog.ErrGroupNotEmpty)
	require.NoError(t, c.AckAll(ctx, recs))

	require.NoError(t, l.DeleteShareGroup(ctx, "workers"))
	_, err = l.DescribeShareGroup(ctx, "workers")
	require.ErrorIs(t, err, replog.ErrGroupNotFound)
	gs, err = l.ListShareGroups(ctx)
	require.NoError(t, err)
	require.Empty(t, gs)
	// Deleted, the group starts afresh at the log start.
	recs, err = c.Poll(ctx)
	require.NoError(t, err)
	require.Equal(t, "job-0000", recs[0].Value)
}

// TestShareGroupResetNew: resetting a share group that does not exist
// creates it, so that it starts at the latest offset rather than the log
// start; without a topic it is refused as unknown.
func TestShareGroupResetNew(t *testing.T) {
	ctx := testCtx(t)
	l := openMem(t)
	tp, err := l.CreateTopic(ctx, "jobs", replog.TopicConfig{Partitions: 2})
	require.NoError(t, err)
	produceStrings(t, ctx, tp, 6, "old")

	require.ErrorIs(t, l.ResetShareGroup(ctx, "late", replog.OffsetReset{Start: replog.Latest}), replog.ErrGroupNotFound)
	require.ErrorIs(t, l.ResetShareGroup(ctx, "late", replog.OffsetReset{Topic: "nope"}), replog.ErrTopicNotFound)
	require.ErrorIs(t, l.ResetShareGroup(ctx, "late", replog.OffsetReset{Topic: "jobs", Offsets: map[int]int64{2: 0}}), replog.ErrPartitionNotFound)
	require.ErrorIs(t, l.ResetShareGroup(ctx, "", replog.OffsetReset{Topic: "jobs"}), replog.ErrInvalidConfig)

	require.NoError(t, l.ResetShareGroup(ctx, "late", replog.OffsetReset{Topic: "jobs", Start: replog.Latest}))
	g, err := l.DescribeShareGroup(ctx, "late")
	require.NoError(t, err)
	require.Len(t, g.Partitions, 2)
	var sum int64
	for _, p := range g.Partitions {
		require.Equal(t, p.HighWatermark, p.Start)
		require.Zero(t, p.Lag)
		sum += p.Start
	}
	require.Equal(t, int64(6), sum)

	produceStrings(t, ctx, tp, 3, "new")
	c := newShare(t, tp, "late", &replog.ShareConsumerOptions{PollInterval: 20 * time.Millisecond})
	var got []string
	for len(got) < 3 {
		recs, err := c.Poll(ctx)
		require.NoError(t, err)
		got = append(got, shareValues(recs)...)
		require.NoError(t, c.AckAll(ctx, recs))
	}
	require.ElementsMatch(t, []string{"new-0000", "new-0001", "new-0002"}, got)
	require.Empty(t, pollWithin(t, c, 300*time.Millisecond))
}

// TestDeleteShareGroupOffsets: a topic's share state goes, the group's
// other topics stay; refused while a member holds a lock.
func TestDeleteShareGroupOffsets(t *testing.T) {
	ctx := testCtx(t)
	l := openMem(t)
	for _, name := range []string{"a", "b"} {
		tp, err := l.CreateTopic(ctx, name, replog.TopicConfig{Partitions: 1})
		require.NoError(t, err)
		produceStrings(t, ctx, tp, 3, name)
	}
	require.ErrorIs(t, l.DeleteShareGroupOffsets(ctx, "workers", "a"), replog.ErrGroupNotFound)
	require.NoError(t, l.ResetShareGroup(ctx, "workers", replog.OffsetReset{Topic: "a", Offsets: map[int]int64{0: 1}}))
	require.NoError(t, l.ResetShareGroup(ctx, "workers", replog.OffsetReset{Topic: "b", Offsets: map[int]int64{0: 2}}))

	tb, err := l.Topic("b")
	require.NoError(t, err)
	c := newShare(t, tb, "workers", &replog.ShareConsumerOptions{MaxRecords: 1})
	recs, err := c.Poll(ctx)
	require.NoError(t, err)
	require.ErrorIs(t, l.DeleteShareGroupOffsets(ctx, "workers", "a"), replog.ErrGroupNotEmpty)
	require.NoError(t, c.AckAll(ctx, recs))

	require.NoError(t, l.DeleteShareGroupOffsets(ctx, "workers", "a"))
	require.NoError(t, l.DeleteShareGroupOffsets(ctx, "workers", "none"))
	g, err := l.DescribeShareGroup(ctx, "workers")
	require.NoError(t, err)
	require.Len(t, g.Partitions, 1)
	require.Equal(t, "b", g.Partitions[0].Topic)
	require.ErrorIs(t, l.DeleteShareGroupOffsets(ctx, "workers", ""), replog.ErrInvalidConfig)
	require.ErrorIs(t, l.DeleteShareGroupOffsets(ctx, "", "a"), replog.ErrInvalidConfig)
}
