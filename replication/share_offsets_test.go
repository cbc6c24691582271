package replication

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func shDeleteTopic(topic string, now int64) shareCmd {
	return shareCmd{Op: shopDeleteTopic, SharePartitionKey: SharePartitionKey{Group: "g", Topic: topic}, Now: now}
}

// TestShareSMDeleteTopic: a topic's share partitions of a group go, the
// group's others stay; refused while a member holds a lock anywhere in
// the group; a group with no state is sNoGroup, a topic without state
// no error.
func TestShareSMDeleteTopic(t *testing.T) {
	s := newShareSM()
	shMust(t, s, shReset(sec, ShareResetOffset{Partition: 0, Offset: 1}, ShareResetOffset{Partition: 1, Offset: 2}))
	other := shReset(sec, ShareResetOffset{Partition: 0, Offset: 5})
	other.Topic, other.TopicID = "u", 8
	shMust(t, s, other)
	stale := shReset(sec, ShareResetOffset{Partition: 3, Offset: 5})
	stale.TopicID = 3 // an earlier topic named t
	shMust(t, s, stale)
	shMust(t, s, shAcquire("a", 1, 10, sec))

	code, _ := shDo(t, s, shDeleteTopic("t", 2*sec))
	require.Equal(t, sNotEmpty, code)
	require.Len(t, shGroup(t, s, "g"), 4)

	shMust(t, s, shDeleteTopic("t", 40*sec))
	ps := shGroup(t, s, "g")
	require.Len(t, ps, 1)
	require.Equal(t, "u", ps[0].Topic)
	shMust(t, s, shDeleteTopic("none", 40*sec))

	shMust(t, s, shDeleteTopic("u", 40*sec))
	code, _ = shDo(t, s, shDeleteTopic("u", 40*sec))
	require.Equal(t, sNoGroup, code)

	for _, bad := range []shareCmd{shDeleteTopic("", sec), {Op: shopDeleteTopic, SharePartitionKey: SharePartitionKey{Topic: "t"}, Now: sec}} {
		code, _ := shDo(t, s, bad)
		require.Equal(t, sInvalid, code)
	}
}

// TestShareNodeDeleteTopic: through Raft, with typed errors.
func TestShareNodeDeleteTopic(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := newTestClusterWith(t, 3, 0, nil)
	n1, n2 := c.nodes[1], c.nodes[2]
	require.ErrorIs(t, n1.ShareDeleteTopic(ctx, "g", "t"), ErrGroupNotFound)
	require.ErrorIs(t, n1.ShareDeleteTopic(ctx, "", "t"), ErrInvalid)
	require.NoError(t, n2.ShareReset(ctx, "g", "t", 7, map[int]int64{0: 3}))
	require.NoError(t, n2.ShareReset(ctx, "g", "u", 8, map[int]int64{0: 3}))
	require.NoError(t, n1.ShareDeleteTopic(ctx, "g", "t"))
	ps, err := n2.ShareGroup(ctx, "g")
	require.NoError(t, err)
	require.Len(t, ps, 1)
	require.Equal(t, "u", ps[0].Topic)
}
