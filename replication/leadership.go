package replication

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/lni/dragonboat/v4"
	"github.com/lni/dragonboat/v4/raftio"
)

// Leader returns the known leader of a shard's group as a Raft replica id
// (0 if none).
func (n *Node) Leader(shard uint64) uint64 {
	l, _ := n.leaderState(shard)
	return l
}

// LeaderNode returns the node leading a partition's group (0 if none known).
func (n *Node) LeaderNode(shard uint64) uint64 {
	l := n.Leader(shard)
	if pm, ok := n.Metadata().partition(shard); ok {
		return pm.NodeOf(l)
	}
	return l
}

// TransferLeader asks a shard's group to hand leadership to node and waits
// until this node sees the change.
func (n *Node) TransferLeader(ctx context.Context, shard, node uint64) error {
	if pm, ok := n.Metadata().partition(shard); ok {
		node = pm.ReplicaID(node)
	}
	for {
		n.mu.Lock()
		l, ch := n.mu.leaders[shard], n.mu.leaderCh
		n.mu.Unlock()
		if l == node {
			return nil
		}
		if l != 0 {
			// Only the leader acts on a transfer request; asking again after
			// each change covers a request lost in an election.
			if err := n.nh.RequestLeaderTransfer(shard, node); err != nil && !errors.Is(err, dragonboat.ErrShardNotFound) {
				return mapError(err)
			}
		}
		select {
		case <-ch:
		case <-time.After(100 * time.Millisecond):
		case <-ctx.Done():
			return ctx.Err()
		case <-n.stop:
			return ErrClosed
		}
	}
}

// leaderState returns a shard's known leader and a channel closed at the
// next leader change of any shard.
func (n *Node) leaderState(shard uint64) (uint64, <-chan struct{}) {
	n.mu.Lock()
	l, ch := n.mu.leaders[shard], n.mu.leaderCh
	n.mu.Unlock()
	if l == 0 {
		// dragonboat reports leader changes as events, but a replica that
		// restarts into a stable term may learn its leader without one:
		// ask it directly.
		if id, _, ok, err := n.nh.GetLeaderID(shard); err == nil && ok && id != 0 {
			n.mu.Lock()
			if n.mu.leaders[shard] == 0 {
				n.mu.leaders[shard] = id
			}
			n.mu.Unlock()
			l = id
		}
	}
	return l, ch
}

// waitLeader waits until the shard has a known leader.
func (n *Node) waitLeader(ctx context.Context, shard uint64) error {
	for {
		n.mu.Lock()
		closed := n.mu.closed
		n.mu.Unlock()
		if closed {
			return ErrClosed
		}
		l, ch := n.leaderState(shard)
		if l != 0 {
			return nil
		}
		select {
		case <-ch:
		case <-time.After(50 * time.Millisecond): // see leaderState
		case <-ctx.Done():
			return fmt.Errorf("no leader for raft group %d: %w", shard, ctx.Err())
		case <-n.stop:
			return ErrClosed
		}
	}
}

type leaderListener Node

func (l *leaderListener) LeaderUpdated(info raftio.LeaderInfo) {
	n := (*Node)(l)
	n.mu.Lock()
	n.mu.leaders[info.ShardID] = info.LeaderID
	close(n.mu.leaderCh)
	n.mu.leaderCh = make(chan struct{})
	n.mu.Unlock()
	if info.LeaderID == info.ReplicaID && info.ShardID != MetaShardID && info.ShardID != GroupsShardID {
		select { // the reconciler hands leadership to the preferred replica
		case n.rebalance <- info.ShardID:
		default:
		}
	}
}

// preferLeader hands a partition's leadership to its preferred replica (the
// first in its placement, which placement rotates across nodes) when this
// node finds itself leading it, so leaders spread over the cluster as
// replicas do (Kafka's preferred leader election). A transfer asked for
// right after an election can be ignored while the target catches up, so
// it is asked again a few times.
func (n *Node) preferLeader(shard uint64) {
	pm, ok := n.Metadata().partition(shard)
	if !ok || len(pm.Replicas) == 0 || pm.Replicas[0] == n.cfg.NodeID {
		return
	}
	if l, _ := n.leaderState(shard); l != pm.ReplicaID(n.cfg.NodeID) {
		return
	}
	n.mu.Lock()
	n.mu.preferred[shard]++
	tries := n.mu.preferred[shard]
	n.mu.Unlock()
	if tries > preferLeaderTries {
		return
	}
	_ = n.nh.RequestLeaderTransfer(shard, pm.ReplicaID(pm.Replicas[0])) // best effort
	time.AfterFunc(200*time.Millisecond, func() {
		select {
		case n.rebalance <- shard:
		default:
		}
	})
}

const preferLeaderTries = 10
