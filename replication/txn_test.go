package replication

import (
	"context"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/lni/dragonboat/v4"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/replog/replog/storage"
)

// TestTxnCoordinatorFailover runs the coordinator on three nodes and stops
// its leader between a transaction's decision (EndTxn) and its completion:
// the new leader lists the transaction as prepared, with its outcome,
// partitions and offsets, which is what a marker driver resumes from, and
// completes it. It also checks fencing and the timeout abort through the
// node's API.
func TestTxnCoordinatorFailover(t *testing.T) {
	opt := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, opt) })
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// The state as the coordinator keeps it, step by step: no node
	// completes decided transactions here (see TestTxnDriver).
	c := newTestClusterWith(t, 3, 0, func(cfg *Config) { cfg.withoutTxnDriver = true })
	n := c.nodes[1]

	// Bad input is refused before anything is proposed.
	_, err := n.InitProducerID(ctx, "tx", MaxTxnTimeout+time.Millisecond)
	require.ErrorIs(t, err, ErrInvalidTxnTimeout)
	_, err = n.InitProducerID(ctx, strings.Repeat("x", MaxTransactionalIDLength+1), time.Minute)
	require.ErrorIs(t, err, ErrInvalid)
	_, err = n.Transaction(ctx, "tx")
	require.ErrorIs(t, err, ErrUnknownTransactionalID)

	p, err := n.InitProducerID(ctx, "tx", time.Minute)
	require.NoError(t, err)
	require.NotZero(t, p.ProducerID, "allocated from the metadata group")
	require.Zero(t, p.Epoch)
	require.ErrorIs(t, errOf(n.AddTxnPartitions(ctx, "tx", p, map[string][]int{"t": make([]int, MaxTxnPartitions+1)})), ErrTxnTooLarge)
	require.NoError(t, errOf(n.AddTxnPartitions(ctx, "tx", p, map[string][]int{"t": {1, 0}, "u": {3}})))
	require.ErrorIs(t, n.TxnOffsetCommit(ctx, "tx", p, "g", map[string]map[int]TxnOffset{"in": {0: {Offset: 5}}}), ErrInvalidTxnState,
		"the group was not added")
	require.NoError(t, n.AddTxnOffsets(ctx, "tx", p, "g"))
	offsets := map[string]map[int]TxnOffset{"in": {0: {Offset: 42, Metadata: "m", Generation: 7, Member: "member-1"}}}
	require.NoError(t, n.TxnOffsetCommit(ctx, "tx", p, "g", offsets))
	require.NoError(t, n.EndTxn(ctx, "tx", p, true))
	require.NoError(t, n.EndTxn(ctx, "tx", p, true), "a retry")
	require.ErrorIs(t, n.EndTxn(ctx, "tx", p, false), ErrInvalidTxnState)
	require.ErrorIs(t, errOf(n.AddTxnPartitions(ctx, "tx", p, map[string][]int{"t": {2}})), ErrConcurrentTransactions)

	// Stop the coordinator's leader (replica ids are node ids).
	var leader uint64
	eventually(t, "a coordinator leader", func() bool {
		leader = n.Leader(TxnShardID)
		return leader != 0
	})
	c.stop(leader)
	var other *Node
	for id, o := range c.nodes {
		if id != leader {
			other = o
			break
		}
	}
	eventually(t, "a new coordinator leader", func() bool {
		l := other.Leader(TxnShardID)
		return l != 0 && l != leader
	})
	prepared, err := other.PreparedTransactions(ctx)
	require.NoError(t, err)
	require.Len(t, prepared, 1)
	got := prepared[0]
	require.Equal(t, "tx", got.ID)
	require.Equal(t, TxnPrepareCommit, got.Status, "the decided outcome")
	require.Equal(t, p, got.TxnProducer)
	require.Equal(t, map[string][]int{"t": {0, 1}, "u": {3}}, got.Partitions)
	require.Equal(t, map[string]map[string]map[int]TxnOffset{"g": offsets}, got.Offsets)

	// The new leader's side completes it (the driver's step, once the
	// markers are written); the producer goes on.
	require.NoError(t, other.CompleteTxn(ctx, "tx", got.TxnProducer, true))
	require.NoError(t, other.CompleteTxn(ctx, "tx", got.TxnProducer, true), "a retry")
	prepared, err = other.PreparedTransactions(ctx)
	require.NoError(t, err)
	require.Empty(t, prepared)
	require.NoError(t, errOf(other.AddTxnPartitions(ctx, "tx", p, map[string][]int{"t": {2}})))

	// A new instance fences the old one, whose transaction is aborted
	// first: the new one retries until the abort completes.
	_, err = other.InitProducerID(ctx, "tx", time.Minute)
	require.ErrorIs(t, err, ErrConcurrentTransactions)
	st, err := other.Transaction(ctx, "tx")
	require.NoError(t, err)
	require.Equal(t, TxnPrepareAbort, st.Status)
	require.ErrorIs(t, other.EndTxn(ctx, "tx", p, true), ErrFenced)
	require.NoError(t, other.CompleteTxn(ctx, "tx", st.TxnProducer, false))
	p2, err := other.InitProducerID(ctx, "tx", time.Minute)
	require.NoError(t, err)
	require.Equal(t, TxnProducer{ProducerID: p.ProducerID, Epoch: 2}, p2)
	require.ErrorIs(t, errOf(other.AddTxnPartitions(ctx, "tx", p, map[string][]int{"t": {0}})), ErrFenced)

	// A transaction past its timeout is aborted by the coordinator's
	// leader, which fences its producer.
	ps, err := other.InitProducerID(ctx, "short", time.Millisecond)
	require.NoError(t, err)
	require.NotEqual(t, p.ProducerID, ps.ProducerID)
	require.NoError(t, errOf(other.AddTxnPartitions(ctx, "short", ps, map[string][]int{"t": {0}})))
	eventually(t, "the timed-out transaction aborted", func() bool {
		st, err := other.Transaction(ctx, "short")
		return err == nil && st.Status == TxnPrepareAbort
	})
	require.ErrorIs(t, other.EndTxn(ctx, "short", ps, true), ErrFenced)

	// The stopped node catches up when it comes back.
	c.restart(leader)
	eventually(t, "the restarted node catching up", func() bool {
		st, err := c.nodes[leader].Transaction(ctx, "tx")
		return err == nil && st.TxnProducer == p2
	})
}

// TestTxnCoordinatorUpgrade: nodes of a cluster that ran without the
// coordinator start it, on their first Open with it, with the metadata
// group's members (not the configured ones), and it serves.
func TestTxnCoordinatorUpgrade(t *testing.T) {
	opt := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, opt) })
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := newTestClusterWith(t, 3, 0, func(cfg *Config) { cfg.withoutTxnGroup = true })
	_, err := c.nodes[1].CreateTopic(ctx, "t", 1, 3, TopicSettings{})
	require.NoError(t, err)
	for id := range c.nodes {
		require.False(t, c.nodes[id].nh.HasNodeInfo(TxnShardID, id))
		c.stop(id)
	}
	// The configured members are not what the coordinator starts with:
	// here they name a node that is not in the cluster.
	c.startAll(func(cfg *Config) {
		cfg.Members = maps.Clone(c.peers)
		cfg.Members[9] = NewInProcessAddress()
	})

	n := c.nodes[2]
	p, err := n.InitProducerID(ctx, "tx", time.Minute)
	require.NoError(t, err)
	require.NoError(t, errOf(n.AddTxnPartitions(ctx, "tx", p, map[string][]int{"t": {0}})))
	for id, n := range c.nodes {
		require.True(t, n.nh.HasNodeInfo(TxnShardID, id))
		var m *dragonboat.Membership
		require.NoError(t, n.request(ctx, TxnShardID, func(actx context.Context) error {
			m, err = n.nh.SyncGetShardMembership(actx, TxnShardID)
			return err
		}))
		require.Equal(t, c.peers, m.Nodes)
	}
	// A later restart is an ordinary one.
	c.stop(3)
	c.restart(3)
	eventually(t, "node 3 serving the coordinator again", func() bool {
		st, err := c.nodes[3].Transaction(ctx, "tx")
		return err == nil && st.Status == TxnOngoing
	})
}

// errOf drops a result and keeps the error.
func errOf[T any](_ T, err error) error { return err }

// txnBatch is a CmdAppendTxn command: one transactional batch of values
// from producer p, at sequence seq, in transaction serial.
func txnBatch(t *testing.T, p TxnProducer, serial uint64, seq int32, values ...string) []byte {
	t.Helper()
	var bb storage.BatchBuilder
	bb.SetTransactional(true)
	for i, v := range values {
		bb.Add(storage.Record{Time: 1000 + int64(i), Value: []byte(v)})
	}
	cmd, err := bb.BuildWithPrefix(storage.TxnAppendHeaderSize, storage.CompressionNone, p.ProducerID, uint32(p.Epoch), seq)
	require.NoError(t, err)
	storage.PutTxnAppendHeader(cmd, serial)
	return cmd
}

// proposeTo proposes cmd to a partition through node n and returns the
// state machine's result.
func proposeTo(t *testing.T, ctx context.Context, n *Node, shard uint64, cmd []byte) storage.Result {
	t.Helper()
	p, err := n.Partition(ctx, shard)
	require.NoError(t, err)
	r, _, err := n.syncPropose(ctx, p.Shard, cmd)
	require.NoError(t, err)
	return decodeResult(r.Value)
}

// TestTxnDriver: a transaction over partitions of two topics and a group's
// offsets is completed by EndTxn (markers on every partition, offsets
// committed); one decided by a node that then stopped is completed by the
// coordinator's leader, as is one its timeout aborted; and a late batch of
// an ended transaction is refused.
func TestTxnDriver(t *testing.T) {
	opt := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, opt) })
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := newTestCluster(t, 3)
	n := c.nodes[1]
	a, err := n.CreateTopic(ctx, "a", 2, 3, TopicSettings{})
	require.NoError(t, err)
	b, err := n.CreateTopic(ctx, "b", 1, 3, TopicSettings{})
	require.NoError(t, err)
	shardA0, shardA1, shardB := a.Partitions[0].Shard, a.Partitions[1].Shard, b.Partitions[0].Shard
	part := func(shard uint64) *Partition {
		p, err := n.Partition(ctx, shard)
		require.NoError(t, err)
		return p
	}

	p, err := n.InitProducerID(ctx, "tx", time.Minute)
	require.NoError(t, err)
	serial, err := n.AddTxnPartitions(ctx, "tx", p, map[string][]int{"a": {0, 1}, "b": {0}})
	require.NoError(t, err)
	require.Equal(t, uint64(1), serial)
	require.Equal(t, resOK(0), proposeTo(t, ctx, n, shardA0, txnBatch(t, p, serial, 0, "a0")))
	require.Equal(t, resOK(0), proposeTo(t, ctx, n, shardB, txnBatch(t, p, serial, 0, "b0")))
	// Partition a/1 is in the transaction but gets no batch.
	require.NoError(t, n.AddTxnOffsets(ctx, "tx", p, "g"))
	require.NoError(t, n.TxnOffsetCommit(ctx, "tx", p, "g", map[string]map[int]TxnOffset{"in": {0: {Offset: 42, Generation: -1}}}))
	pending, err := n.PendingTxnOffsets(ctx, "g")
	require.NoError(t, err)
	require.Equal(t, map[string][]int{"in": {0}}, pending)
	require.Equal(t, int64(0), part(shardA0).LastStable(), "the open transaction holds the LSO back")

	require.NoError(t, n.EndTxn(ctx, "tx", p, true))
	st, err := n.Transaction(ctx, "tx")
	require.NoError(t, err)
	require.Equal(t, TxnCompleteCommit, st.Status, "EndTxn completed it")
	for _, shard := range []uint64{shardA0, shardB} {
		eventually(t, "the marker applied on this node", func() bool { return part(shard).LastStable() == 2 })
		require.Equal(t, "0:"+map[uint64]string{shardA0: "a0", shardB: "b0"}[shard], readRecords(t, part(shard))[0])
	}
	// a/1 got a marker too (its producer was new there): a batch of the
	// transaction arriving now would open one nobody ends.
	require.Equal(t, int64(1), part(shardA1).HighWatermark())
	require.Equal(t, resRefused(storage.StatusTxnInvalid), proposeTo(t, ctx, n, shardA1, txnBatch(t, p, serial, 0, "late")))
	gs, err := n.Groups(ctx, "g")
	require.NoError(t, err)
	require.Equal(t, int64(42), gs[0].TopicOffsets["in"][0].Offset)
	pending, err = n.PendingTxnOffsets(ctx, "g")
	require.NoError(t, err)
	require.Empty(t, pending)

	// The next transaction, decided by a node that stops before writing
	// any marker (the decision alone, as EndTxn proposes it).
	serial, err = n.AddTxnPartitions(ctx, "tx", p, map[string][]int{"a": {0}})
	require.NoError(t, err)
	require.Equal(t, uint64(2), serial)
	require.Equal(t, resOK(2), proposeTo(t, ctx, n, shardA0, txnBatch(t, p, serial, 1, "a2")))
	_, err = n.proposeTxnOnce(ctx, txnCmd{Op: txopEnd, ID: "tx", TxnProducer: p, Commit: false})
	require.NoError(t, err)
	var leader uint64
	eventually(t, "a coordinator leader", func() bool { leader = n.Leader(TxnShardID); return leader != 0 })
	c.stop(leader)
	var other *Node
	for id, o := range c.nodes {
		if id != leader {
			other = o
			break
		}
	}
	eventually(t, "the new coordinator leader completing the abort", func() bool {
		st, err := other.Transaction(ctx, "tx")
		return err == nil && st.Status == TxnCompleteAbort
	})
	op, err := other.Partition(ctx, shardA0)
	require.NoError(t, err)
	eventually(t, "the abort marker applied", func() bool { return op.LastStable() == 4 })
	aborted, err := op.AbortedTxns(ctx, 0, 4)
	require.NoError(t, err)
	require.Equal(t, []storage.AbortedTxn{{ProducerID: p.ProducerID, FirstOffset: 2, LastOffset: 3}}, aborted)

	// A transaction past its timeout: aborted and completed by the
	// leader, its producer fenced.
	ps, err := other.InitProducerID(ctx, "short", 50*time.Millisecond)
	require.NoError(t, err)
	_, err = other.AddTxnPartitions(ctx, "short", ps, map[string][]int{"b": {0}})
	require.NoError(t, err)
	require.Equal(t, resOK(2), proposeTo(t, ctx, other, shardB, txnBatch(t, ps, 1, 0, "expired")))
	eventually(t, "the timed-out transaction aborted and complete", func() bool {
		st, err := other.Transaction(ctx, "short")
		return err == nil && st.Status == TxnCompleteAbort
	})
	ob, err := other.Partition(ctx, shardB)
	require.NoError(t, err)
	eventually(t, "its marker applied", func() bool { return ob.LastStable() == 4 })
	require.ErrorIs(t, other.EndTxn(ctx, "short", ps, true), ErrFenced)
	require.Equal(t, resRefused(storage.StatusFenced), proposeTo(t, ctx, other, shardB, txnBatch(t, ps, 1, 1, "zombie")))
	c.restart(leader)
}
