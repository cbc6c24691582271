package replication

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/lni/dragonboat/v4"
	sm "github.com/lni/dragonboat/v4/statemachine"

	"github.com/replog/replog/storage"
)

// Partition returns this node's replica of a partition: ErrNotReplica if
// this node hosts none, ErrTopicNotFound if its topic is gone. A replica the
// node should host but has not started yet is waited for.
func (n *Node) Partition(ctx context.Context, shard uint64) (*Partition, error) {
	for {
		n.mu.Lock()
		p, ok := n.mu.parts[shard]
		closed, changed, meta := n.mu.closed, n.mu.partsCh, n.mu.meta
		n.mu.Unlock()
		switch {
		case closed:
			return nil, ErrClosed
		case ok:
			return p, nil
		}
		name, idx, pm, found := meta.partitionOf(shard)
		switch {
		case !found:
			return nil, ErrTopicNotFound
		case !pm.Serves(n.cfg.NodeID):
			// Serve it anyway: join its group as a non-voting replica.
			r, _, err := n.proposeMeta(ctx, metaCmd{Op: opObserve, Name: name, Partition: idx, Node: n.cfg.NodeID})
			if err != nil {
				return nil, err
			}
			if r.Value != metaOK {
				return nil, ErrNotReplica
			}
			p, err := n.Partition(ctx, shard)
			if err != nil {
				return nil, err
			}
			// A new replica starts empty: catch up with the group before
			// serving, so offsets and the high watermark are current.
			return p, p.CatchUp(ctx)
		}
		select { // the reconciler is about to start it
		case <-changed:
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-n.stop:
			return nil, ErrClosed
		}
	}
}

// Running reports whether p is still this node's running replica of its
// partition, and returns a channel closed at the next start or stop of a
// replica on this node. A replica moved off the node, or of a deleted
// topic, is stopped; [Node.Partition] then returns another one if the node
// still serves the partition (as a non-voting replica if need be).
func (n *Node) Running(p *Partition) (bool, <-chan struct{}) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return !n.mu.closed && n.mu.parts[p.Shard] == p, n.mu.partsCh
}

// reconcileLoop starts the replicas this node should host and stops those of
// deleted topics, whenever the metadata changes.
func (n *Node) reconcileLoop() {
	defer n.wg.Done()
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		if ch := n.reconcilePause.Load(); ch != nil {
			select {
			case <-*ch:
			case <-n.stop:
				return
			}
		}
		n.mu.Lock()
		meta, changed := n.mu.meta, n.mu.metaChanged
		n.mu.Unlock()
		n.reconcile(meta)
		select {
		case <-changed:
		case <-tick.C: // a move in progress advances one step per pass
		case shard := <-n.rebalance:
			n.preferLeader(shard)
		case <-n.stop:
			return
		}
	}
}

func (n *Node) reconcile(meta *Metadata) {
	n.mu.Lock()
	synced, swept := n.mu.synced, n.mu.swept
	n.mu.swept = synced
	n.mu.Unlock()
	if !synced {
		return // see Node.mu.synced
	}
	// Leftovers first, so a partition this node hosts again starts clean.
	n.removeLeftovers(meta, !swept)
	for _, t := range meta.Topics {
		for i, pm := range t.Partitions {
			if !pm.Serves(n.cfg.NodeID) {
				continue
			}
			n.mu.Lock()
			_, running := n.mu.parts[pm.Shard]
			n.mu.Unlock()
			if running {
				continue
			}
			if err := n.startPartition(pm); err != nil {
				n.log.Error("replog: start partition replica", "topic", t.Name, "partition", i, "shard", pm.Shard, "err", err)
			}
		}
	}
	n.mu.Lock()
	running := maps.Clone(n.mu.parts)
	n.mu.Unlock()
	deleted := make(map[uint64]bool, len(meta.DeletedShards))
	for _, shard := range meta.DeletedShards {
		deleted[shard] = true
	}
	for shard, p := range running {
		name, idx, pm, ok := meta.partitionOf(shard)
		if ok {
			if l, _ := n.leaderState(shard); l == p.replicaID && (pm.Moving || !pm.Hosts(n.cfg.NodeID)) {
				n.converge(name, idx, pm, p.replicaID)
			}
		}
		// A replica of a deleted topic goes at once; one that left the
		// placement once the move is complete: the group no longer counts
		// on it. So does one running under an id the placement no longer
		// gives this node: the node was moved off and back on (under a
		// fresh id, as ids are never reused) before this pass saw it
		// leave, so the group removed it; it goes, keeping the records,
		// and the next pass starts the replica under the new id.
		stale := ok && pm.Serves(n.cfg.NodeID) && p.replicaID != pm.ReplicaID(n.cfg.NodeID)
		if deleted[shard] || ok && !pm.Serves(n.cfg.NodeID) && !pm.Moving || stale {
			if err := n.removeReplica(shard, p.replicaID, p, !stale); err != nil {
				args := []any{"shard", shard, "err", err}
				if ok { // else its topic is deleted
					args = append(args, "topic", name, "partition", idx)
				}
				n.log.Error("replog: remove partition replica", args...)
				continue
			}
			n.setPart(shard, nil)
		}
	}
}

// removeLeftovers deletes the replicas that this node holds Raft data of
// but does not run and no longer hosts: moved away or deleted while it was
// down, or whose removal an error or a crash interrupted. Each goes under
// its own replica id, as dragonboat listed it. With records, it also
// deletes the records of partitions this node no longer hosts and holds no
// Raft data of (a crash between removeReplica's two deletions); that check
// reads every such partition's meta, so it is done once per Open.
func (n *Node) removeLeftovers(meta *Metadata, records bool) {
	self := n.cfg.NodeID
	deleted := make(map[uint64]bool, len(meta.DeletedShards))
	for _, shard := range meta.DeletedShards {
		deleted[shard] = true
	}
	gone := func(shard uint64) bool { // the partition no longer lives here
		pm, ok := meta.partition(shard)
		return deleted[shard] || ok && !pm.Moving && !pm.Serves(self)
	}
	n.mu.Lock()
	type replica struct{ shard, id uint64 }
	var stale []replica
	for shard, ids := range n.mu.raftData {
		pm, known := meta.partition(shard)
		for id := range ids {
			if p, ok := n.mu.parts[shard]; ok && p.replicaID == id {
				continue // running: reconcile removes it if it must go
			}
			// An earlier replica of a partition hosted here again under a
			// new id (ids are never reused) is stale too.
			if gone(shard) || known && !pm.Moving && id != pm.ReplicaID(self) {
				stale = append(stale, replica{shard, id})
			}
		}
	}
	var orphans []uint64
	if records {
		for _, shard := range meta.DeletedShards {
			if _, held := n.mu.raftData[shard]; !held {
				orphans = append(orphans, shard)
			}
		}
		for _, t := range meta.Topics {
			for _, pm := range t.Partitions {
				if _, held := n.mu.raftData[pm.Shard]; !held && !pm.Moving && !pm.Serves(self) {
					orphans = append(orphans, pm.Shard)
				}
			}
		}
	}
	n.mu.Unlock()
	for _, r := range stale {
		// Records go too unless the partition is hosted here again.
		if err := n.removeReplica(r.shard, r.id, nil, gone(r.shard)); err != nil {
			n.log.Error("replog: remove replica left behind", "shard", r.shard, "replica", r.id, "err", err)
		}
	}
	for _, shard := range orphans {
		sp, err := n.store.Partition(shard)
		if err == nil && sp.Meta().AppliedIndex != 0 || errors.Is(err, storage.ErrCorrupt) {
			n.log.Info("replog: deleted the records of a partition no longer hosted", "shard", shard)
			err = n.store.DeletePartition(shard)
		}
		if err != nil {
			n.log.Error("replog: remove records left behind", "shard", shard, "err", err)
		}
	}
}

// converge makes a partition's Raft membership match its placement, one
// change per call (the reconciler calls again): first add missing replicas,
// then hand leadership away if this replica is leaving, then remove the
// replicas that left; when they match, it marks the move complete.
func (n *Node) converge(topic string, idx int, pm PartitionMeta, self uint64) {
	ctx, cancel := context.WithTimeout(context.Background(), n.cfg.AttemptTimeout)
	defer cancel()
	m, err := n.nh.SyncGetShardMembership(ctx, pm.Shard)
	if err != nil {
		return
	}
	desired := map[uint64]string{}
	for _, node := range pm.Replicas {
		desired[pm.ReplicaID(node)] = n.addr(node)
	}
	observers := map[uint64]string{}
	for _, node := range pm.Observers {
		observers[pm.ReplicaID(node)] = n.addr(node)
	}
	for _, rid := range slices.Sorted(maps.Keys(desired)) {
		if _, ok := m.Nodes[rid]; !ok {
			// Adds a voter, or promotes a non-voting replica with this id.
			if err := n.nh.SyncRequestAddReplica(ctx, pm.Shard, rid, desired[rid], m.ConfigChangeID); err != nil {
				n.log.Warn("replog: add replica", "topic", topic, "partition", idx, "shard", pm.Shard, "replica", rid, "err", err)
			}
			return
		}
	}
	for _, rid := range slices.Sorted(maps.Keys(observers)) {
		if _, ok := m.NonVotings[rid]; !ok {
			if err := n.nh.SyncRequestAddNonVoting(ctx, pm.Shard, rid, observers[rid], m.ConfigChangeID); err != nil {
				n.log.Warn("replog: add non-voting replica", "topic", topic, "partition", idx, "shard", pm.Shard, "replica", rid, "err", err)
			}
			return
		}
	}
	for _, rid := range slices.Sorted(maps.Keys(m.NonVotings)) {
		if _, ok := observers[rid]; !ok {
			if _, voter := desired[rid]; !voter {
				_ = n.nh.SyncRequestDeleteReplica(ctx, pm.Shard, rid, m.ConfigChangeID)
				return
			}
		}
	}
	for _, rid := range slices.Sorted(maps.Keys(m.Nodes)) {
		if _, ok := desired[rid]; ok {
			continue
		}
		if rid == self {
			_ = n.nh.RequestLeaderTransfer(pm.Shard, pm.ReplicaID(pm.Replicas[0]))
			return
		}
		if err := n.nh.SyncRequestDeleteReplica(ctx, pm.Shard, rid, m.ConfigChangeID); err != nil {
			n.log.Warn("replog: remove replica", "topic", topic, "partition", idx, "shard", pm.Shard, "replica", rid, "err", err)
		}
		return
	}
	if pm.Moving {
		_, _, _ = n.proposeMeta(ctx, metaCmd{Op: opReassignDone, Name: topic, Partition: idx, Replicas2: pm.Replicas, Observers: pm.Observers})
	}
}

// setPart adds (p != nil) or removes a running replica and wakes waiters.
func (n *Node) setPart(shard uint64, p *Partition) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if p == nil {
		delete(n.mu.parts, shard)
	} else {
		n.mu.parts[shard] = p
	}
	close(n.mu.partsCh)
	n.mu.partsCh = make(chan struct{})
}

func (n *Node) startPartition(pm PartitionMeta) error {
	p := newPartition(n, pm.Shard)
	p.replicaID = pm.ReplicaID(n.cfg.NodeID)
	n.setPart(pm.Shard, p)
	// Initial members bootstrap the group together; a replica added by a
	// reassignment joins it (the leader adds it to the membership).
	join := !pm.bootstrap(n.cfg.NodeID)
	members := map[uint64]string{}
	if !join && !n.nh.HasNodeInfo(pm.Shard, p.replicaID) {
		for _, id := range pm.initial() {
			members[id] = n.addr(id)
		}
	}
	// Load the store before starting the group: dragonboat halts the
	// process when a state machine fails to open, so a damaged store
	// leaves this replica out of service instead, and the node's other
	// partitions keep serving.
	sp, err := n.store.Partition(pm.Shard)
	if errors.Is(err, storage.ErrCorrupt) {
		p.fail(fmt.Errorf("shard %d: %w", pm.Shard, err))
		return nil
	}
	if err != nil {
		n.setPart(pm.Shard, nil)
		return err
	}
	cfg := n.raftConfig(pm.Shard, p.replicaID)
	cfg.IsNonVoting = !pm.Hosts(n.cfg.NodeID) // an observer
	err = n.nh.StartOnDiskReplica(members, join, func(uint64, uint64) sm.IOnDiskStateMachine {
		return &partitionSM{p: p, s: sp}
	}, cfg)
	if err != nil && !errors.Is(err, dragonboat.ErrShardAlreadyExist) {
		n.setPart(pm.Shard, nil)
		return err
	}
	n.holdRaftData(pm.Shard, p.replicaID, true)
	p.setReplayTo(n.lastCommittedCommand(pm.Shard, sp.Meta().AppliedIndex))
	return nil
}

// lastCommittedCommand returns the index of the last command (an entry the
// state machine applies) that shard's Raft log held as committed when the
// replica started, or applied if there is none past applied. dragonboat
// applies committed entries after a restart without waiting for a leader;
// entries it keeps to itself (elections' empty entries, membership
// changes) never reach the store's applied index, so they are skipped.
func (n *Node) lastCommittedCommand(shard, applied uint64) uint64 {
	lr, err := n.nh.GetLogReader(shard)
	if err != nil {
		return applied
	}
	st, _ := lr.NodeState()
	first, _ := lr.GetRange()
	for i := st.Commit; i > applied && i >= first; i-- {
		es, err := lr.Entries(i, i+1, 1)
		if err != nil || len(es) == 0 {
			// Compacted away: covered by a snapshot the store holds.
			return applied
		}
		if es[0].IsUpdateEntry() {
			return i
		}
	}
	return applied
}

// removeReplica deletes replica id of shard from this node: its Raft log
// and snapshots through dragonboat and, with records, the partition's
// records from the store. p is the running replica, stopped first, or nil.
//
// The records go after the Raft data when p runs: dragonboat must have
// unloaded the state machine (SyncRemoveData waits for it) so that no
// apply writes them again. Otherwise they go first, so that Raft data left
// behind, which Open finds in dragonboat's LogDB, marks an unfinished
// removal; removeLeftovers finishes both cases after a crash.
func (n *Node) removeReplica(shard, id uint64, p *Partition, records bool) error {
	deleteRecords := func() error {
		if !records {
			return nil
		}
		var sp *storage.Partition
		if p != nil {
			sp = p.store.Load()
		}
		if sp == nil {
			// Not loaded (or damaged): delete without reading.
			return n.store.DeletePartition(shard)
		}
		return sp.Delete()
	}
	var err error
	if p != nil {
		if err := n.nh.StopShard(shard); err != nil && !errors.Is(err, dragonboat.ErrShardNotFound) {
			return err
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := n.nh.SyncRemoveData(ctx, shard, id); err != nil {
			return err
		}
		n.holdRaftData(shard, id, false)
		err = deleteRecords()
	} else {
		if err := deleteRecords(); err != nil {
			return err
		}
		// Not SyncRemoveData: the shard may run here under another id.
		if err = n.nh.RemoveData(shard, id); err == nil {
			n.holdRaftData(shard, id, false)
		}
	}
	if err != nil {
		return err
	}
	n.log.Info("replog: deleted a replica's data", "shard", shard, "replica", id, "records", records)
	return nil
}
