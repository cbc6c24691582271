package replog_test

import (
	"cmp"
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/replog/replog"
)

// twoTopics creates topics a (2 partitions) and b (3), with na and nb
// records.
func twoTopics(t *testing.T, ctx context.Context, l *replog.Log, na, nb int) (*replog.Topic, *replog.Topic) {
	t.Helper()
	a, err := l.CreateTopic(ctx, "a", replog.TopicConfig{Partitions: 2})
	require.NoError(t, err)
	b, err := l.CreateTopic(ctx, "b", replog.TopicConfig{Partitions: 3})
	require.NoError(t, err)
	produceStrings(t, ctx, a, na, "a")
	produceStrings(t, ctx, b, nb, "b")
	return a, b
}

// valueSet returns the records' values as a set, failing on a value read
// twice.
func valueSet(t *testing.T, recs []replog.Record[string]) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	for _, r := range recs {
		require.False(t, out[r.Value], "%s read twice", r.Value)
		require.Equal(t, r.Value[:1], r.Topic, "record of %s names topic %s", r.Value, r.Topic)
		out[r.Value] = true
	}
	return out
}

// One consumer reads both topics of its group; its commits are kept by
// topic and partition, a consumer after it resumes there, and
// DescribeGroup shows each topic's partitions with their lag.
func TestGroupConsumerOverTwoTopics(t *testing.T) {
	ctx := testCtx(t)
	dir := t.TempDir()
	l, err := replog.Open(dir, nil)
	require.NoError(t, err)
	a, b := twoTopics(t, ctx, l, 40, 60)

	c, err := replog.NewMultiTopicConsumer([]*replog.Topic{b, a}, replog.String(), groupOpts("g"))
	require.NoError(t, err)
	require.Len(t, valueSet(t, readN(t, ctx, c, 100)), 100)
	require.Equal(t, []replog.TopicPartition{{"a", 0}, {"a", 1}, {"b", 0}, {"b", 1}, {"b", 2}}, c.TopicAssignment())
	require.Nil(t, c.Assignment(), "partitions without topics: none for a consumer of two topics")
	require.ErrorIs(t, c.CommitOffsets(ctx, map[int]int64{0: 1}), replog.ErrInvalidConfig)
	require.ErrorIs(t, c.Seek(0, 0), replog.ErrInvalidConfig)
	_, err = c.Position(0)
	require.ErrorIs(t, err, replog.ErrInvalidConfig)
	require.NoError(t, c.Commit(ctx))
	require.ErrorIs(t, c.CommitTopicOffsets(ctx, "c", map[int]int64{0: 0}), replog.ErrNotAssigned)
	lag := c.TopicLag()
	require.Len(t, lag, 5)
	for tp, n := range lag {
		require.Zero(t, n, "%v", tp)
	}
	require.NoError(t, c.Close())

	info, err := l.DescribeGroup(ctx, "g")
	require.NoError(t, err)
	require.Empty(t, info.Topic, "a group of two topics")
	require.Equal(t, []string{"a", "b"}, info.Topics)
	require.Len(t, info.Partitions, 5)
	total := int64(0)
	for _, p := range info.Partitions {
		require.Contains(t, []string{"a", "b"}, p.Topic)
		require.Equal(t, p.HighWatermark, p.Committed, "%s/%d", p.Topic, p.Partition)
		require.Zero(t, p.Lag)
		total += p.Committed
	}
	require.Equal(t, int64(100), total)

	// The offsets survive a restart, by topic: a consumer after it reads
	// only what came since, of both topics.
	require.NoError(t, l.Close())
	l, err = replog.Open(dir, nil)
	require.NoError(t, err)
	defer l.Close()
	a, err = l.Topic("a")
	require.NoError(t, err)
	b, err = l.Topic("b")
	require.NoError(t, err)
	produceStrings(t, ctx, b, 5, "b-late")
	produceStrings(t, ctx, a, 3, "a-late")
	c, err = replog.NewMultiTopicConsumer([]*replog.Topic{a, b}, replog.String(), groupOpts("g"))
	require.NoError(t, err)
	defer c.Close()
	got := valueSet(t, readN(t, ctx, c, 8))
	for v := range got {
		require.Contains(t, v, "-late", "%s was committed before the restart", v)
	}
	stats := l.Stats()
	require.Len(t, stats.Groups, 1)
	require.Len(t, stats.Groups[0].Partitions, 5)
	require.Empty(t, stats.Groups[0].Topic)
}

// Two consumers of one group, each on its own topic: both join (a group is
// no longer bound to one topic), each reads only its topic, and their
// offsets do not mix.
func TestGroupConsumersOnDifferentTopics(t *testing.T) {
	ctx := testCtx(t)
	l := openMem(t)
	a, b := twoTopics(t, ctx, l, 30, 45)

	ca, err := replog.NewConsumer(a, replog.String(), groupOpts("g"))
	require.NoError(t, err)
	defer ca.Close()
	cb, err := replog.NewConsumer(b, replog.String(), groupOpts("g"))
	require.NoError(t, err, "a group's members may read different topics")
	defer cb.Close()
	ra := valueSet(t, readN(t, ctx, ca, 30))
	rb := valueSet(t, readN(t, ctx, cb, 45))
	require.Len(t, ra, 30)
	require.Len(t, rb, 45)
	require.Equal(t, []int{0, 1}, ca.Assignment())
	require.Equal(t, []int{0, 1, 2}, cb.Assignment())
	require.NoError(t, ca.CommitOffsets(ctx, map[int]int64{0: 1}))
	require.NoError(t, cb.Commit(ctx))

	info, err := l.DescribeGroup(ctx, "g")
	require.NoError(t, err)
	require.Equal(t, []string{"a", "b"}, info.Topics)
	require.Len(t, info.Members, 2)
	for _, m := range info.Members {
		require.Len(t, m.Topics, 1)
		require.Nil(t, m.Assigned, "partitions without topics: none in a group of two topics")
		for _, tp := range m.AssignedTopics {
			require.Equal(t, m.Topics[0], tp.Topic)
		}
	}
	committed := map[replog.TopicPartition]int64{}
	for _, p := range info.Partitions {
		committed[replog.TopicPartition{Topic: p.Topic, Partition: p.Partition}] = p.Committed
	}
	require.Equal(t, int64(1), committed[replog.TopicPartition{Topic: "a", Partition: 0}])
	require.Equal(t, int64(-1), committed[replog.TopicPartition{Topic: "a", Partition: 1}])
	var sum int64
	for p := range 3 {
		sum += committed[replog.TopicPartition{Topic: "b", Partition: p}]
	}
	require.Equal(t, int64(45), sum)
}

// Members with different subscriptions: each gets only partitions of the
// topics it reads, and together they read every partition once; a
// partition that moves is read on from the offset its member committed as
// it gave it up; when the member of both topics leaves, the other takes
// over only the topic it reads.
func TestGroupMembersWithDifferentSubscriptions(t *testing.T) {
	for _, strategy := range []string{replog.StrategyCooperativeSticky, replog.StrategyRange, replog.StrategyRoundRobin} {
		t.Run(strategy, func(t *testing.T) {
			ctx := testCtx(t)
			l := openMem(t)
			a, b := twoTopics(t, ctx, l, 20, 30)
			var revoked []replog.TopicPartition
			var read []replog.Record[string]
			poll := func(c *replog.Consumer[string]) {
				pctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
				defer cancel()
				recs, err := c.Poll(pctx)
				if !errors.Is(err, context.DeadlineExceeded) {
					require.NoError(t, err)
				}
				read = append(read, recs...)
				require.NoError(t, ctx.Err())
			}
			o := groupOpts("g")
			o.Strategy = strategy
			o.AutoCommitInterval = time.Hour // commits as partitions are revoked, and on Close
			o.OnRevokedTopics = func(tps []replog.TopicPartition) { revoked = append(revoked, tps...) }
			both, err := replog.NewMultiTopicConsumer([]*replog.Topic{a, b}, replog.String(), o)
			require.NoError(t, err)
			all := []replog.TopicPartition{{"a", 0}, {"a", 1}, {"b", 0}, {"b", 1}, {"b", 2}}
			for !slices.Equal(both.TopicAssignment(), all) {
				poll(both)
			}
			ob := groupOpts("g")
			ob.Strategy = strategy
			onlyB, err := replog.NewMultiTopicConsumer([]*replog.Topic{b}, replog.String(), ob)
			require.NoError(t, err)
			defer onlyB.Close()

			// Poll both until every partition is read by one of them, and
			// the member of b alone reads some.
			var union []replog.TopicPartition
			for !slices.Equal(union, all) || len(onlyB.TopicAssignment()) == 0 {
				poll(both)
				poll(onlyB)
				x, y := both.TopicAssignment(), onlyB.TopicAssignment()
				for _, tp := range y {
					require.Equal(t, "b", tp.Topic, "a member reading b got %v", tp)
					require.NotContains(t, x, tp, "%v read by both", tp)
				}
				union = append(slices.Clone(x), y...)
				slices.SortFunc(union, func(p, q replog.TopicPartition) int {
					return cmp.Or(cmp.Compare(p.Topic, q.Topic), cmp.Compare(p.Partition, q.Partition))
				})
			}
			require.NotEmpty(t, revoked, "the member of both gave up some of b")
			for _, tp := range revoked {
				require.Equal(t, "b", tp.Topic, "a moved, though only one member reads it")
			}
			for len(read) < 50 {
				poll(both)
				poll(onlyB)
			}
			require.NoError(t, both.Close())
			// onlyB takes all of b, never a.
			for !slices.Equal(onlyB.TopicAssignment(), all[2:]) {
				poll(onlyB)
			}
			poll(onlyB)
			require.Len(t, valueSet(t, read), 50, "every record read once: moved partitions resume at their commits")
			info, err := l.DescribeGroup(ctx, "g")
			require.NoError(t, err)
			require.Len(t, info.Members, 1)
			require.Equal(t, []string{"b"}, info.Members[0].Topics)
			require.Equal(t, []string{"a", "b"}, info.Topics, "a's offsets stay with the group")
			for _, p := range info.Partitions {
				if p.Topic == "a" {
					require.Equal(t, p.HighWatermark, p.Committed, "a/%d committed on Close", p.Partition)
				}
			}
		})
	}
}

// ResetGroupOffsets moves one topic's offsets; a group of several topics
// needs the topic named. A topic deleted and created again starts without
// the old topic's offsets.
func TestGroupResetAndRecreatedTopic(t *testing.T) {
	ctx := testCtx(t)
	l := openMem(t)
	a, b := twoTopics(t, ctx, l, 10, 15)
	c, err := replog.NewMultiTopicConsumer([]*replog.Topic{a, b}, replog.String(), groupOpts("g"))
	require.NoError(t, err)
	readN(t, ctx, c, 25)
	require.NoError(t, c.Commit(ctx))
	require.NoError(t, c.Close())

	require.ErrorIs(t, l.ResetGroupOffsets(ctx, "g", replog.OffsetReset{}), replog.ErrInvalidConfig)
	require.NoError(t, l.ResetGroupOffsets(ctx, "g", replog.OffsetReset{Topic: "a", Start: replog.Earliest}))
	c, err = replog.NewMultiTopicConsumer([]*replog.Topic{a, b}, replog.String(), groupOpts("g"))
	require.NoError(t, err)
	got := valueSet(t, readN(t, ctx, c, 10))
	for v := range got {
		require.Equal(t, "a", v[:1], "b was not reset")
	}
	require.NoError(t, c.Commit(ctx))
	require.NoError(t, c.Close())

	// b deleted and created again: its new records are read from the
	// start, the group's offsets of the old b notwithstanding.
	require.NoError(t, l.DeleteTopic(ctx, "b"))
	b, err = l.CreateTopic(ctx, "b", replog.TopicConfig{Partitions: 3})
	require.NoError(t, err)
	produceStrings(t, ctx, b, 6, "b")
	cb, err := replog.NewConsumer(b, replog.String(), groupOpts("g"))
	require.NoError(t, err)
	defer cb.Close()
	require.Len(t, valueSet(t, readN(t, ctx, cb, 6)), 6)
	info, err := l.DescribeGroup(ctx, "g")
	require.NoError(t, err)
	for _, p := range info.Partitions {
		if p.Topic == "a" {
			require.Equal(t, p.HighWatermark, p.Committed, "a keeps its offsets")
		}
	}

	// The callbacks of one topic are refused on a consumer of two.
	o := groupOpts("h")
	o.OnAssigned = func([]int) {}
	_, err = replog.NewMultiTopicConsumer([]*replog.Topic{a, b}, replog.String(), o)
	require.ErrorIs(t, err, replog.ErrInvalidConfig)
	_, err = replog.NewMultiTopicConsumer([]*replog.Topic{a, a}, replog.String(), nil)
	require.ErrorIs(t, err, replog.ErrInvalidConfig)
	_, err = replog.NewMultiTopicConsumer(nil, replog.String(), nil)
	require.ErrorIs(t, err, replog.ErrInvalidConfig)
}
