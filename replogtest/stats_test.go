package replogtest_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/replog/replog"
	"github.com/replog/replog/replogtest"
)

// The leader's Stats report how far behind each replica is: a crashed
// follower falls behind by what is written meanwhile, and catches up once
// it is back.
func TestStatsReplicaLag(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c := replogtest.NewCluster(t, 3)
	tp, err := c.Log(0).CreateTopic(ctx, "t", replog.TopicConfig{Partitions: 1, Replicas: 3})
	require.NoError(t, err)
	p, err := replog.NewProducer(tp, replog.String(), nil)
	require.NoError(t, err)
	defer p.Close()
	produce := func(n int) {
		for i := range n {
			_, err := p.Produce(ctx, replog.Message[string]{Value: fmt.Sprint(i)})
			require.NoError(t, err)
		}
	}
	produce(10)
	leaderStats := func() replog.PartitionStats {
		for i := range 3 {
			l := c.Log(i)
			if l == nil {
				continue // crashed
			}
			for _, ps := range l.Stats().Partitions {
				if ps.IsLeader {
					return ps
				}
			}
		}
		return replog.PartitionStats{}
	}
	require.Eventually(t, func() bool {
		ps := leaderStats()
		return len(ps.ReplicaLag) == 2 && ps.ReplicaLag[1]+ps.ReplicaLag[2]+ps.ReplicaLag[3] == 0
	}, 20*time.Second, 20*time.Millisecond, "followers caught up")

	leader := leaderStats().Leader
	follower := 0 // not node 0, whose Log the producer uses
	for node := uint64(2); node <= 3; node++ {
		if node != leader {
			follower = int(node - 1) // replogtest numbers nodes from 0
		}
	}
	c.Crash(follower)
	produce(20)
	ps := leaderStats()
	require.GreaterOrEqual(t, ps.ReplicaLag[uint64(follower+1)], uint64(20), "one entry per synchronous Produce at least: %+v", ps.ReplicaLag)
	c.Restart(follower)
	require.Eventually(t, func() bool {
		ps := leaderStats()
		return ps.Leader != 0 && ps.ReplicaLag[uint64(follower+1)] == 0
	}, 30*time.Second, 20*time.Millisecond, "the restarted follower caught up")
}
