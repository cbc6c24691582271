package replication

import (
	"sync/atomic"

	pb "github.com/lni/dragonboat/v4/raftpb"
	"time"

	"github.com/replog/replog/internal/metrics"
)

// Metrics are a node's counters since it started, updated with atomics on
// the hot paths.
type Metrics struct {
	// Elections counts the leaders this node saw elected, over every Raft
	// group it hosts.
	Elections atomic.Uint64
	// Retries counts the attempts of requests to Raft groups after the
	// first (a proposal or read sent again after a timeout, a leader
	// change or a busy group), produced batches included.
	Retries atomic.Uint64
	// Apply is how long applying a run of committed entries to the record
	// store takes; Sync how long making the store durable (an fsync of
	// flushed tables) takes.
	Apply, Sync metrics.Histogram
}

// Metrics returns the node's counters.
func (n *Node) Metrics() *Metrics { return &n.metrics }

// SlowSync and SlowApply are the durations above which a store sync or an
// apply is logged at Warn: far above what a healthy disk takes.
const (
	SlowSync  = time.Second
	SlowApply = time.Second
)

// Local returns this node's running replicas by shard. The map is the
// caller's.
func (n *Node) Local() map[uint64]*Partition {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := make(map[uint64]*Partition, len(n.mu.parts))
	for s, p := range n.mu.parts {
		out[s] = p
	}
	return out
}

// LocalGroups reads every consumer group as this node's replica of the
// groups group has applied them, without a round trip: it may lag the
// group's leader a little.
func (n *Node) LocalGroups() ([]*GroupState, error) {
	v, err := n.nh.StaleRead(GroupsShardID, "")
	if err != nil {
		return nil, mapError(err)
	}
	gs, _ := v.([]*GroupState)
	return gs, nil
}

// StoredBytes is the partition's stored batch bytes on this replica, 0
// before it opened.
func (p *Partition) StoredBytes() int64 {
	if s := p.store.Load(); s != nil {
		return s.StoredBytes()
	}
	return 0
}

type progressKey struct{ shard, replica uint64 }

// observeProgress records, from the messages this node receives, the last
// log index each follower acknowledged having (a ReplicateResp that is not
// a rejection): dragonboat keeps its leaders' view of their followers to
// itself, and this is the same figure, seen on the wire.
func (n *Node) observeProgress(b pb.MessageBatch) {
	for i := range b.Requests {
		m := &b.Requests[i]
		if m.Type != pb.ReplicateResp || m.Reject {
			continue
		}
		k := progressKey{m.ShardID, m.From}
		if v, ok := n.progress.Load(k); ok && v.(uint64) >= m.LogIndex {
			continue
		}
		n.progress.Store(k, m.LogIndex)
	}
}

// ReplicaLag returns, for a partition this node leads, how many Raft
// entries (record batches) each other replica's log is behind the
// leader's, by replica id, as its last acknowledgement says; nil if this
// node does not lead it.
func (p *Partition) ReplicaLag(replicas []uint64) map[uint64]uint64 {
	if p.n.Leader(p.Shard) != p.replicaID || p.replicaID == 0 {
		return nil
	}
	r, err := p.n.nh.GetLogReader(p.Shard)
	if err != nil {
		return nil
	}
	_, last := r.GetRange()
	out := make(map[uint64]uint64, len(replicas))
	for _, id := range replicas {
		if id == p.replicaID {
			continue
		}
		var acked uint64
		if v, ok := p.n.progress.Load(progressKey{p.Shard, id}); ok {
			acked = v.(uint64)
		}
		out[id] = last - min(acked, last)
	}
	return out
}
