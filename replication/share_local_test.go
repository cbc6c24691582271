package replication

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestShareSMPartitionsQuery: the query behind LocalShareGroups answers
// every group's share partitions as copies: changing them changes nothing
// in the state machine.
func TestShareSMPartitionsQuery(t *testing.T) {
	s := newShareSM()
	shMust(t, s, shAcquire("a", 2, 10, sec))
	other := shAcquire("b", 1, 10, sec)
	other.Group = "h"
	shMust(t, s, other)

	v, err := s.Lookup(sharePartitionsQuery{})
	require.NoError(t, err)
	ps := v.([]*SharePartitionState)
	require.Len(t, ps, 2)
	for _, p := range ps {
		p.Start = 99
		p.InFlight[0].State = ShareAcknowledged
	}
	st := shState(t, s)
	require.Zero(t, st.Start)
	require.Equal(t, ShareAcquired, st.InFlight[0].State)
}

// TestShareNodeLocalGroups: every node reads the share partitions from its
// own replica of the coordinator, sorted, without a round trip; a
// follower's view catches up with what the leader applied.
func TestShareNodeLocalGroups(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := newTestClusterWith(t, 3, 0, nil)
	n1 := c.nodes[1]
	tm, err := n1.CreateTopic(ctx, "t", 2, 3, TopicSettings{})
	require.NoError(t, err)
	for _, k := range []SharePartitionKey{
		{Group: "h", Topic: "t", TopicID: tm.ID, Partition: 0},
		{Group: "g", Topic: "t", TopicID: tm.ID, Partition: 1},
		{Group: "g", Topic: "t", TopicID: tm.ID, Partition: 0},
	} {
		_, err := n1.ShareAcquire(ctx, ShareAcquireRequest{SharePartitionKey: k, Member: "m", Max: 2,
			HighWatermark: 5, Lock: time.Minute, MaxDeliveries: 5})
		require.NoError(t, err)
	}
	for _, n := range []*Node{c.nodes[1], c.nodes[2], c.nodes[3]} {
		var ps []*SharePartitionState
		require.Eventually(t, func() bool {
			ps, err = n.LocalShareGroups()
			return err == nil && len(ps) == 3
		}, 10*time.Second, 10*time.Millisecond, "%v", err)
		var got []string
		for _, p := range ps {
			got = append(got, fmt.Sprintf("%s/%d", p.Group, p.Partition))
			require.Len(t, p.InFlight, 2)
		}
		require.Equal(t, []string{"g/0", "g/1", "h/0"}, got)
	}
}
