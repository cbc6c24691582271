package replication

import (
	"context"
	"maps"
	"testing"
	"time"

	"github.com/lni/dragonboat/v4"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

// TestShareCoordinatorUpgrade: nodes of a cluster that ran without the
// share coordinator start it when they restart, with the cluster's
// members, and it serves share groups.
func TestShareCoordinatorUpgrade(t *testing.T) {
	opt := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, opt) })
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := newTestClusterWith(t, 3, 0, func(cfg *Config) { cfg.withoutShareGroup = true })
	tm, err := c.nodes[1].CreateTopic(ctx, "t", 1, 3, TopicSettings{})
	require.NoError(t, err)
	for id := range c.nodes {
		require.False(t, c.nodes[id].nh.HasNodeInfo(ShareShardID, id))
		c.stop(id)
	}
	c.startAll(func(cfg *Config) {
		cfg.Members = maps.Clone(c.peers)
		cfg.Members[9] = NewInProcessAddress()
	})

	n := c.nodes[2]
	key := SharePartitionKey{Group: "g", Topic: "t", TopicID: tm.ID, Partition: 0}
	res, err := n.ShareAcquire(ctx, ShareAcquireRequest{SharePartitionKey: key, Member: "m", Max: 5,
		HighWatermark: 3, Lock: time.Minute, MaxDeliveries: 5})
	require.NoError(t, err)
	require.Len(t, res.Records, 3)
	for id, n := range c.nodes {
		require.True(t, n.nh.HasNodeInfo(ShareShardID, id))
		var m *dragonboat.Membership
		require.NoError(t, n.request(ctx, ShareShardID, func(actx context.Context) error {
			m, err = n.nh.SyncGetShardMembership(actx, ShareShardID)
			return err
		}))
		require.Equal(t, c.peers, m.Nodes)
	}
	c.stop(3)
	c.restart(3)
	eventually(t, "node 3 serving the share coordinator again", func() bool {
		p, err := c.nodes[3].SharePartition(ctx, key)
		return err == nil && p != nil && len(p.InFlight) == 3
	})
}

// TestShareNodeErrors: the node's share API refuses bad input before
// proposing, and answers the coordinator's codes as typed errors.
func TestShareNodeErrors(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := newTestClusterWith(t, 1, 0, nil)
	n := c.nodes[1]
	tm, err := n.CreateTopic(ctx, "t", 1, 1, TopicSettings{})
	require.NoError(t, err)
	key := SharePartitionKey{Group: "g", Topic: "t", TopicID: tm.ID, Partition: 0}
	_, err = n.ShareAcquire(ctx, ShareAcquireRequest{SharePartitionKey: key, Member: "m", Max: 0,
		HighWatermark: 3, Lock: time.Minute, MaxDeliveries: 5})
	require.ErrorIs(t, err, ErrInvalid)
	res, err := n.ShareAcquire(ctx, ShareAcquireRequest{SharePartitionKey: key, Member: "m", Max: 2,
		HighWatermark: 3, Lock: time.Minute, MaxDeliveries: 5})
	require.NoError(t, err)
	ds := []ShareDelivery{res.Records[0].ShareDelivery}
	require.ErrorIs(t, n.ShareAck(ctx, key, "m", ds, ShareRelease, -time.Second), ErrInvalid)
	require.ErrorIs(t, n.ShareAck(ctx, key, "other", ds, ShareAccept, 0), ErrShareNotAcquired)
	require.NoError(t, n.ShareAck(ctx, key, "m", ds, ShareAccept, 0))
	require.ErrorIs(t, n.ShareAck(ctx, key, "m", ds, ShareAccept, 0), ErrShareAcknowledged)
	require.NoError(t, n.ShareLeave(ctx, key, "m"))
	p, err := n.SharePartition(ctx, key)
	require.NoError(t, err)
	require.Equal(t, int64(1), p.Start)
	require.Equal(t, ShareAvailable, p.InFlight[0].State)
}

// TestShareSweep: the share partitions of a deleted topic are forgotten,
// and those of a live topic, or of a topic re-created under the name, kept.
func TestShareSweep(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := newTestClusterWith(t, 1, 0, nil)
	n := c.nodes[1]
	acquire := func(key SharePartitionKey) {
		t.Helper()
		_, err := n.ShareAcquire(ctx, ShareAcquireRequest{SharePartitionKey: key, Member: "m", Max: 1,
			HighWatermark: 1, Lock: time.Minute, MaxDeliveries: 5})
		require.NoError(t, err)
	}
	old, err := n.CreateTopic(ctx, "t", 1, 1, TopicSettings{})
	require.NoError(t, err)
	oldKey := SharePartitionKey{Group: "g", Topic: "t", TopicID: old.ID}
	acquire(oldKey)
	require.NoError(t, n.DeleteTopic(ctx, "t"))
	cur, err := n.CreateTopic(ctx, "t", 1, 1, TopicSettings{})
	require.NoError(t, err)
	curKey := SharePartitionKey{Group: "g", Topic: "t", TopicID: cur.ID}
	acquire(curKey)
	future := SharePartitionKey{Group: "g", Topic: "t", TopicID: cur.ID + 1000}
	acquire(future) // a topic this node has not heard of yet
	eventually(t, "leader", func() bool { l, _ := n.leaderState(ShareShardID); return l == n.ID() })
	n.sweepShares()
	for key, kept := range map[SharePartitionKey]bool{oldKey: false, curKey: true, future: true} {
		p, err := n.SharePartition(ctx, key)
		require.NoError(t, err)
		require.Equal(t, kept, p != nil, "%+v", key)
	}
}

// TestShareNodeAdmin: across three nodes, a reset or group delete
// proposed on one node is refused while a member on another holds a lock,
// applies once it left, and every node's linearizable reads see it.
func TestShareNodeAdmin(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := newTestClusterWith(t, 3, 0, nil)
	n1, n2, n3 := c.nodes[1], c.nodes[2], c.nodes[3]
	tm, err := n1.CreateTopic(ctx, "t", 2, 3, TopicSettings{})
	require.NoError(t, err)
	key := SharePartitionKey{Group: "g", Topic: "t", TopicID: tm.ID, Partition: 1}

	_, err = n2.ShareGroup(ctx, "g")
	require.ErrorIs(t, err, ErrGroupNotFound)
	require.ErrorIs(t, n3.ShareDeleteGroup(ctx, "g"), ErrGroupNotFound)
	require.ErrorIs(t, n2.ShareReset(ctx, "g", "t", tm.ID, map[int]int64{0: -1}), ErrInvalid)
	require.ErrorIs(t, n2.ShareReset(ctx, "g", "t", tm.ID, nil), ErrInvalid)
	require.ErrorIs(t, n2.ShareDeleteGroup(ctx, ""), ErrInvalid)

	res, err := n1.ShareAcquire(ctx, ShareAcquireRequest{SharePartitionKey: key, Member: "m", Max: 2,
		HighWatermark: 5, Lock: time.Minute, MaxDeliveries: 5})
	require.NoError(t, err)
	require.Len(t, res.Records, 2)
	require.ErrorIs(t, n2.ShareReset(ctx, "g", "t", tm.ID, map[int]int64{0: 3}), ErrGroupNotEmpty)
	require.ErrorIs(t, n3.ShareDeleteGroup(ctx, "g"), ErrGroupNotEmpty)

	require.NoError(t, n1.ShareLeave(ctx, key, "m"))
	require.NoError(t, n2.ShareReset(ctx, "g", "t", tm.ID, map[int]int64{0: 3, 1: 4}))
	for _, n := range []*Node{n1, n2, n3} {
		ps, err := n.ShareGroup(ctx, "g")
		require.NoError(t, err)
		require.Len(t, ps, 2)
		require.Equal(t, []int64{3, 4}, []int64{ps[0].Start, ps[1].Start})
		require.Empty(t, ps[1].InFlight)
		gs, err := n.ShareGroups(ctx)
		require.NoError(t, err)
		require.Equal(t, []string{"g"}, gs)
	}
	require.NoError(t, n3.ShareDeleteGroup(ctx, "g"))
	gs, err := n1.ShareGroups(ctx)
	require.NoError(t, err)
	require.Empty(t, gs)
}
