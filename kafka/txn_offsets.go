package replogkafka

import (
	"context"
	"errors"
	"sync"

	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/replog/replog/replication"
)

// Transactional offset commits and the groups they go to (KIP-447).
//
// A TxnOffsetCommit is checked against the group's membership here, on
// the group coordinator, as Kafka's group coordinator checks it; its
// offsets then wait in the transaction coordinator until the transaction
// commits them to the group (or aborts and drops them). Until then, a
// consumer taking the partitions over must not read the offsets the
// group had before the transaction: it would consume again what the
// transaction consumed. Kafka's answer is OffsetFetch's RequireStable
// (v7+): a partition with transactional offsets pending gets
// UNSTABLE_OFFSET_COMMIT, which clients retry. The listener remembers
// which transactional ids committed offsets of each group through it
// (pendingOffsets), and asks the transaction coordinator about them when
// a fetch requires stable offsets.
//
// The coordinator answers whether any transaction has offsets of a group
// pending (replication.Node.PendingTxnOffsets), not which partitions: in
// a busy group some member nearly always has, and answering every
// partition unstable then would keep a consumer taking over partitions
// waiting. So the partitions come from the transactions the listener
// saw. What it remembers is lost when the group coordinator moves to
// another node: while only transactions that committed offsets through
// the old one have offsets pending, the new one answers every partition
// of the group unstable; once it saw one of its own, it answers the
// partitions of those it saw, and the old ones go unseen.

// txnCommitAllowed checks a TxnOffsetCommit's member, instance and
// generation, as Kafka's validateOffsetCommit does for transactional
// commits: a request naming none of them (generation -1, no member id, no
// instance id; clients before KIP-447) is not checked; otherwise the
// member must be current (FENCED_INSTANCE_ID for a static member's
// replaced id, UNKNOWN_MEMBER_ID) and of the group's generation
// (ILLEGAL_GENERATION). Unlike OffsetCommit, a group completing a
// rebalance takes commits of the current generation.
func (c *coordinator) txnCommitAllowed(name, id string, instance *string, generation int32) int16 {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return kerr.CoordinatorNotAvailable.Code
	}
	hasInstance := instance != nil && *instance != ""
	if generation < 0 && id == "" && !hasInstance {
		return 0
	}
	g := c.groups[name]
	if g == nil {
		return kerr.UnknownMemberID.Code
	}
	if hasInstance {
		if cur := g.static[*instance]; cur != "" && cur != id {
			return kerr.FencedInstanceID.Code
		}
	}
	m := g.members[id]
	switch {
	case m == nil:
		return kerr.UnknownMemberID.Code
	case generation != g.generation:
		return kerr.IllegalGeneration.Code
	}
	if m.join == nil {
		c.resetSession(g, m)
	}
	return 0
}

// pendingOffsets remembers, by group, the transactional ids that
// committed offsets of the group through this listener and may not have
// ended, each with the number of its last add (so that forgetting an id
// the coordinator said was done does not forget a commit made since).
// Safe for concurrent use.
type pendingOffsets struct {
	mu     sync.Mutex
	adds   uint64
	groups map[string]map[string]uint64
}

// maxPendingTxns bounds the transactional ids remembered per group; past
// it, an arbitrary one is forgotten. It is far above the members of a
// group, each of which has one transactional id in Kafka's
// consume-transform-produce.
const maxPendingTxns = 4096

func (p *pendingOffsets) add(group, txnID string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.groups == nil {
		p.groups = map[string]map[string]uint64{}
	}
	ids := p.groups[group]
	if ids == nil {
		ids = map[string]uint64{}
		p.groups[group] = ids
	}
	if _, ok := ids[txnID]; !ok && len(ids) >= maxPendingTxns {
		for id := range ids {
			delete(ids, id)
			break
		}
	}
	p.adds++
	ids[txnID] = p.adds
}

// ids returns the transactional ids remembered for group, with the
// number of their last add.
func (p *pendingOffsets) ids(group string) map[string]uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(map[string]uint64, len(p.groups[group]))
	for id, n := range p.groups[group] {
		out[id] = n
	}
	return out
}

// done forgets txnID for group, unless it was added again since add
// number n.
func (p *pendingOffsets) done(group, txnID string, n uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.groups[group][txnID] != n {
		return
	}
	delete(p.groups[group], txnID)
	if len(p.groups[group]) == 0 {
		delete(p.groups, group)
	}
}

// unstable returns the partitions of group, by topic, whose offsets a
// transaction has pending: recorded by TxnOffsetCommit and neither
// committed to the group nor dropped yet; all is set when a transaction
// the listener did not see has some (see below). It asks the
// coordinator whether the group has any, then about each transactional
// id remembered for the group, and forgets those without pending offsets
// of it. An error means the coordinator could not tell.
func (s *Server) unstable(ctx context.Context, group string) (parts map[string]map[int]bool, all bool, err error) {
	ids := s.pendingOffsets.ids(group)
	// One read answers the common case, nothing pending, however many
	// transactional ids are remembered.
	cctx, cancel := s.txnCtx(ctx)
	pending, err := s.node.PendingTxnOffsets(cctx, group)
	cancel()
	if err != nil {
		return nil, false, err
	}
	if !pending {
		for id, n := range ids {
			s.pendingOffsets.done(group, id, n)
		}
		return nil, false, nil
	}
	var out map[string]map[int]bool
	for id, n := range ids {
		cctx, cancel := s.txnCtx(ctx)
		t, err := s.node.Transaction(cctx, id)
		cancel()
		if errors.Is(err, replication.ErrUnknownTransactionalID) {
			s.pendingOffsets.done(group, id, n)
			continue
		}
		if err != nil {
			return nil, false, err
		}
		pending := t.Offsets[group]
		if len(pending) == 0 || t.Status != replication.TxnOngoing && !t.Status.Prepared() {
			s.pendingOffsets.done(group, id, n)
			continue
		}
		if out == nil {
			out = map[string]map[int]bool{}
		}
		for topic, ps := range pending {
			if out[topic] == nil {
				out[topic] = map[int]bool{}
			}
			for p := range ps {
				out[topic][p] = true
			}
		}
	}
	// Offsets pending, and none from the transactions remembered: they
	// came through another node that coordinated the group before this
	// one. Which partitions is not known, so none is stable until they
	// end.
	return out, out == nil, nil
}
