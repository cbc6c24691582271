package replication

import (
	"context"
	"errors"
	"slices"

	"github.com/lni/dragonboat/v4"
)

// AddNode adds a node to the cluster: to the metadata (so placement and
// partition groups can use it) and to the metadata, groups, transaction
// coordinator and share coordinator Raft groups.
// The node is started with Join; it catches up through Raft.
func (n *Node) AddNode(ctx context.Context, id uint64, addr string) error {
	r, _, err := n.proposeMeta(ctx, metaCmd{Op: opAddNode, Node: id, Address: addr})
	if err != nil {
		return err
	}
	if r.Value != metaOK {
		return ErrInvalid
	}
	for _, shard := range []uint64{MetaShardID, GroupsShardID, TxnShardID, ShareShardID} {
		if err := n.changeMember(ctx, shard, id, addr, true); err != nil {
			return err
		}
	}
	n.log.Info("replog: added a node to the cluster", "added", id, "address", addr, "node", n.cfg.NodeID)
	return nil
}

// RemoveNode removes a node that hosts no partition replica (reassign them
// first) from the cluster.
func (n *Node) RemoveNode(ctx context.Context, id uint64) error {
	r, _, err := n.proposeMeta(ctx, metaCmd{Op: opRemoveNode, Node: id})
	if err != nil {
		return err
	}
	switch r.Value {
	case metaOK:
	case metaNodeBusy:
		return ErrNodeBusy
	default:
		return ErrInvalid
	}
	for _, shard := range []uint64{ShareShardID, TxnShardID, GroupsShardID, MetaShardID} {
		if err := n.changeMember(ctx, shard, id, "", false); err != nil {
			return err
		}
	}
	n.log.Info("replog: removed a node from the cluster", "removed", id, "node", n.cfg.NodeID)
	return nil
}

// changeMember adds (or removes) a replica of a cluster-wide group, unless
// the membership already says so, retrying through leader changes.
func (n *Node) changeMember(ctx context.Context, shard, id uint64, addr string, add bool) error {
	return n.request(ctx, shard, func(actx context.Context) error {
		m, err := n.nh.SyncGetShardMembership(actx, shard)
		if err != nil {
			return err
		}
		_, present := m.Nodes[id]
		switch {
		case add && !present:
			err = n.nh.SyncRequestAddReplica(actx, shard, id, addr, m.ConfigChangeID)
		case !add && present:
			err = n.nh.SyncRequestDeleteReplica(actx, shard, id, m.ConfigChangeID)
		}
		if errors.Is(err, dragonboat.ErrRejected) {
			err = errBusy // a concurrent membership change: read it and try again
		}
		return err
	})
}

// Reassign moves a partition's replicas to nodes (the first is the
// preferred leader) and waits until the move is complete: the new replicas
// hold the data and the old ones left the group.
func (n *Node) Reassign(ctx context.Context, topic string, partition int, nodes []uint64) error {
	r, _, err := n.proposeMeta(ctx, metaCmd{Op: opReassign, Name: topic, Partition: partition, Replicas2: nodes, Nodes: n.NodeIDs()})
	if err != nil {
		return err
	}
	switch r.Value {
	case metaOK:
	case metaTopicNotFound:
		return ErrTopicNotFound
	default:
		return ErrInvalid
	}
	for {
		n.mu.Lock()
		meta, changed := n.mu.meta, n.mu.metaChanged
		n.mu.Unlock()
		t := meta.Topics[topic]
		if t == nil {
			return ErrTopicNotFound
		}
		if pm := t.Partitions[partition]; !pm.Moving || !slices.Equal(pm.Replicas, nodes) {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return ctx.Err()
		case <-n.stop:
			return ErrClosed
		}
	}
}
