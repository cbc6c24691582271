package replogkafka

import (
	"context"

	"github.com/twmb/franz-go/pkg/kerr"
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
// UNSTABLE_OFFSET_COMMIT, which clients retry; the transaction
// coordinator names those partitions (replication.Node.PendingTxnOffsets),
// whichever node the transactions went through.

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

// unstable returns the partitions of group, by topic, whose offsets a
// transaction has pending: recorded by TxnOffsetCommit and neither
// committed to the group nor dropped yet, as the transaction coordinator
// answers linearizably. An error means the coordinator could not tell.
func (s *Server) unstable(ctx context.Context, group string) (map[string]map[int]bool, error) {
	cctx, cancel := s.txnCtx(ctx)
	pending, err := s.node.PendingTxnOffsets(cctx, group)
	cancel()
	if err != nil || len(pending) == 0 {
		return nil, err
	}
	out := make(map[string]map[int]bool, len(pending))
	for topic, ps := range pending {
		out[topic] = make(map[int]bool, len(ps))
		for _, p := range ps {
			out[topic][p] = true
		}
	}
	return out, nil
}
