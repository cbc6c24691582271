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

// A member reading two topics crashes with records read past its commit;
// a member on another node, reading the same two topics, takes both
// topics' partitions over and resumes each at its committed offset, which
// survived the crash of the node.
func TestGroupOfTwoTopicsResumesAfterCrash(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c := replogtest.NewCluster(t, 3)
	var topics []*replog.Topic
	for _, name := range []string{"x", "y"} {
		tp, err := c.Log(0).CreateTopic(ctx, name, replog.TopicConfig{Partitions: 2, Replicas: 3})
		require.NoError(t, err)
		p, err := replog.NewProducer(tp, replog.String(), nil)
		require.NoError(t, err)
		for i := range 100 {
			p.ProduceAsync(ctx, replog.Message[string]{Key: fmt.Appendf(nil, "k%d", i), Value: fmt.Sprintf("%s%03d", name, i)}, nil)
		}
		require.NoError(t, p.Flush(ctx))
		require.NoError(t, p.Close())
		topics = append(topics, tp)
	}

	opts := &replog.ConsumerOptions{Group: "g", MaxPollRecords: 10, GroupOptions: replog.GroupOptions{
		SessionTimeout: 2 * time.Second, HeartbeatInterval: 200 * time.Millisecond,
	}}
	a, err := replog.NewMultiTopicConsumer(topics, replog.String(), opts)
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
	positions := map[replog.TopicPartition]int64{}
	for _, tp := range a.TopicAssignment() {
		positions[tp], err = a.PositionTopic(tp.Topic, tp.Partition)
		require.NoError(t, err)
	}
	require.Len(t, positions, 4)
	_, err = a.Poll(ctx) // read more, never committed
	require.NoError(t, err)

	var on1 []*replog.Topic
	for _, name := range []string{"y", "x"} {
		tp, err := c.Log(1).Topic(name)
		require.NoError(t, err)
		on1 = append(on1, tp)
	}
	b, err := replog.NewMultiTopicConsumer(on1, replog.String(), opts)
	require.NoError(t, err)
	defer b.Close()
	c.Crash(0) // member a stops heart-beating

	got := map[string]bool{}
	done := func() bool {
		for _, name := range []string{"x", "y"} {
			for i := range 100 {
				if v := fmt.Sprintf("%s%03d", name, i); !committed[v] && !got[v] {
					return false
				}
			}
		}
		return true
	}
	for !done() {
		pctx, pcancel := context.WithTimeout(ctx, 200*time.Millisecond)
		recs, err := b.Poll(pctx)
		pcancel()
		if err != nil && !errors.Is(err, context.DeadlineExceeded) {
			require.NoError(t, err)
		}
		for _, r := range recs {
			tp := replog.TopicPartition{Topic: r.Topic, Partition: r.Partition}
			require.GreaterOrEqual(t, r.Offset, positions[tp], "b read below a's commit in %v", tp)
			if r.Offset == positions[tp] {
				require.False(t, committed[r.Value], "the first record after the commit was committed already")
			}
			got[r.Value] = true
		}
	}
	require.Len(t, b.TopicAssignment(), 4)

	info, err := c.Log(2).DescribeGroup(ctx, "g")
	require.NoError(t, err)
	require.Len(t, info.Members, 1)
	require.Equal(t, []string{"x", "y"}, info.Topics)
	for _, pi := range info.Partitions {
		tp := replog.TopicPartition{Topic: pi.Topic, Partition: pi.Partition}
		require.GreaterOrEqual(t, pi.Committed, positions[tp], "commit of %v survived the crash", tp)
	}
	c.Restart(0)
}
