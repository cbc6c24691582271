package replogtest_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/replog/replog"
	"github.com/replog/replog/replogtest"
)

// A partition left idle, whose leader then crashes, elects another leader
// by itself, reports it, and takes writes again; nothing acknowledged is
// lost.
//
// This is what dragonboat's Quiesce (off in replog) breaks: a group idle
// for twenty election timeouts stops ticking, and its followers then
// neither notice a dead leader nor wake for a proposal, which they forward
// to it: with Quiesce on, the survivors still named the crashed node as
// leader 30s later and every Produce timed out.
func TestIdlePartitionReplacesCrashedLeader(t *testing.T) {
	c := replogtest.NewCluster(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	_, err := c.Log(0).CreateTopic(ctx, "t", replog.TopicConfig{Replicas: 3})
	require.NoError(t, err)
	leader := c.WaitLeader("t", 0, 10*time.Second)
	acked := produceFrom(t, c, leader, "before", 20)

	// Twenty election timeouts (20 x 30 ticks of 10ms) and some without
	// traffic: long enough for a group to quiesce if it did. Not a timing
	// assertion.
	time.Sleep(8 * time.Second)
	leader = c.WaitLeader("t", 0, 10*time.Second) // it may have moved to the preferred replica
	c.Crash(leader)
	other := (leader + 1) % 3

	// Without traffic, the survivors elect a leader and report it.
	tp, err := c.Log(other).Topic("t")
	require.NoError(t, err)
	for {
		id, err := tp.Leader(ctx, 0)
		require.NoError(t, err)
		if id != 0 && int(id)-1 != leader {
			break
		}
		require.NoError(t, ctx.Err(), "node %d still reports leader %d (node %d crashed)", other+1, id, leader+1)
		time.Sleep(20 * time.Millisecond)
	}

	for k, v := range produceFrom(t, c, other, "after", 20) {
		acked[k] = v
	}
	for _, r := range readAll(t, c, other, len(acked)) {
		pos, ok := acked[r.Value]
		require.True(t, ok, "phantom %s", r.Value)
		require.Equal(t, pos.Offset, r.Offset)
	}
	c.Restart(leader)
	readAll(t, c, leader, len(acked))
}
