package replication

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
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

// LeaderState returns the known leader of a shard's group (a Raft replica
// id, 0 while none is known) and a channel closed at the next leader change
// of any group on this node. In the cluster-wide groups (MetaShardID,
// GroupsShardID, TxnShardID, ShareShardID) replica ids are node ids.
func (n *Node) LeaderState(shard uint64) (uint64, <-chan struct{}) { return n.leaderState(shard) }

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
			return fmt.Errorf("%w: no leader for raft group %d: %w", ErrUnavailable, shard, ctx.Err())
		case <-n.stop:
			return ErrClosed
		}
	}
}

type leaderListener Node

func (l *leaderListener) LeaderUpdated(info raftio.LeaderInfo) {
	n := (*Node)(l)
	n.mu.Lock()
	elected := info.LeaderID != 0 && info.LeaderID != n.mu.leaders[info.ShardID]
	if elected {
		n.metrics.Elections.Add(1)
	}
	n.mu.leaders[info.ShardID] = info.LeaderID
	delete(n.mu.preferred, info.ShardID) // preferLeader's tries count per leader
	close(n.mu.leaderCh)
	n.mu.leaderCh = make(chan struct{})
	n.mu.Unlock()
	if elected {
		n.logLeader(info)
	}
	if info.LeaderID != 0 && info.LeaderID != info.ReplicaID && info.ShardID >= FirstPartitionShard {
		select { // another replica leads: the reconciler claims leadership if this one is preferred
		case n.rebalance <- info.ShardID:
		default:
		}
	}
}

// logLeader logs, at Info, a leader this node sees elected: once per
// election that Metrics.Elections counts (dragonboat also reports the
// leaderless moments of an election, and a node may learn a known leader
// again, neither of which is logged). It runs on dragonboat's event
// goroutine, after n.mu is released: the metadata lookup takes no lock,
// and walks the partitions (microseconds for thousands) only when Info is
// enabled.
func (n *Node) logLeader(info raftio.LeaderInfo) {
	ctx := context.Background()
	if !n.log.Enabled(ctx, slog.LevelInfo) {
		return
	}
	attrs := make([]slog.Attr, 0, 6)
	leader := info.LeaderID // replica ids are node ids in the cluster-wide groups
	switch info.ShardID {
	case MetaShardID:
		attrs = append(attrs, slog.String("group", "metadata"))
	case GroupsShardID:
		attrs = append(attrs, slog.String("group", "groups"))
	case TxnShardID:
		attrs = append(attrs, slog.String("group", "transactions"))
	case ShareShardID:
		attrs = append(attrs, slog.String("group", "shares"))
	default:
		if name, idx, pm, ok := n.Metadata().partitionOf(info.ShardID); ok {
			attrs = append(attrs, slog.String("topic", name), slog.Int("partition", idx))
			leader = pm.NodeOf(info.LeaderID)
		}
	}
	attrs = append(attrs, slog.Uint64("leader", leader), slog.Uint64("term", info.Term),
		slog.Uint64("node", n.cfg.NodeID), slog.Uint64("shard", info.ShardID))
	n.log.LogAttrs(ctx, slog.LevelInfo, "replog: new leader", attrs...)
}

// preferLeader claims the leadership of a partition for this node when its
// replica is the preferred one (the first in the placement, which placement
// rotates across nodes) and another replica leads, so leaders spread over
// the cluster as replicas do (Kafka's preferred leader election).
//
// The preferred replica asks for leadership, rather than the leader handing
// it over when elected: after a crash the preferred replica is often the
// one that is down, and a leader transferring leadership refuses proposals
// until the transfer ends or an election timeout passes, so transfers to a
// dead node stalled the partition after every failover, for seconds. A
// replica asks once it has caught up with the leader (a read index through
// the leader completed here), which also shows that both are alive. A
// request can be ignored (the leader is busy with another transfer), so it
// is repeated a few times.
func (n *Node) preferLeader(shard uint64) {
	pm, ok := n.Metadata().partition(shard)
	if !ok || len(pm.Replicas) == 0 || pm.Replicas[0] != n.cfg.NodeID {
		return
	}
	self := pm.ReplicaID(n.cfg.NodeID)
	l, _ := n.leaderState(shard)
	if l == self {
		// Leading again: a later failover gets its own tries.
		n.mu.Lock()
		delete(n.mu.preferred, shard)
		n.mu.Unlock()
	}
	if l == 0 || l == self {
		return
	}
	n.mu.Lock()
	n.mu.preferred[shard]++
	tries := n.mu.preferred[shard]
	n.mu.Unlock()
	if tries > preferLeaderTries {
		return
	}
	again := func() {
		time.AfterFunc(200*time.Millisecond, func() {
			select {
			case n.rebalance <- shard:
			default:
			}
		})
	}
	rs, err := n.nh.ReadIndex(shard, n.cfg.AttemptTimeout)
	if err != nil {
		again()
		return
	}
	n.wg.Add(1)
	go func() { // the reconciler does not wait for the read
		defer n.wg.Done()
		select {
		case r := <-rs.ResultC():
			if r.Completed() {
				_ = n.nh.RequestLeaderTransfer(shard, self) // forwarded to the leader
			}
			rs.Release()
			again()
		case <-n.stop:
		}
	}()
}

const preferLeaderTries = 10
