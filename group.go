package replog

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/replog/replog/replication"
)

// Assignment strategies of a consumer group.
const (
	// StrategyCooperativeSticky (the default) balances partitions and moves
	// as few as possible: partitions that keep their member are read
	// without pause during a rebalance.
	StrategyCooperativeSticky = replication.StrategyCooperativeSticky
	// StrategyRange gives each member a contiguous range of partitions.
	StrategyRange = replication.StrategyRange
	// StrategyRoundRobin deals partitions out to members in turn.
	StrategyRoundRobin = replication.StrategyRoundRobin
)

// GroupOptions configure a consumer's group membership (with
// [ConsumerOptions.Group]). The zero value is valid.
//
// Membership, assignments and committed offsets live in a Raft group of
// their own, replicated like the metadata, so they survive the loss of a
// minority of nodes. Every strategy hands partitions over incrementally: a
// partition moves to its new member only after its old member has given it
// up (and run OnRevoked), so no partition is read by two members at once.
type GroupOptions struct {
	// InstanceID makes the member static (Kafka's group.instance.id): it
	// keeps its id and its partitions across restarts without a rebalance,
	// as long as it is back within SessionTimeout, and it does not leave
	// the group on Close. Empty (the default): a new member id per consumer.
	InstanceID string
	// Strategy assigns partitions to members. Default
	// [StrategyCooperativeSticky].
	Strategy string
	// SessionTimeout: a member that sends no heartbeat for this long is
	// removed and its partitions go to the others. Default 10s.
	SessionTimeout time.Duration
	// HeartbeatInterval is how often the member reports to the group.
	// Default SessionTimeout/5, at most 1s; it must be below SessionTimeout.
	HeartbeatInterval time.Duration
	// MaxPollInterval is the longest a member may go without calling Poll
	// (Kafka's max.poll.interval.ms). Iterating Records polls, and a Poll
	// waiting for records counts as polling for as long as it waits. Default
	// 5 minutes.
	//
	// Heartbeats run on a goroutine of their own, so without this limit a
	// worker stuck between two polls would keep its partitions for ever. A
	// member past it leaves the group (a static member too: it is hung, not
	// restarting) and its partitions move to the others. Its next Poll joins
	// again: OnRevoked runs for the partitions it lost, then OnAssigned for
	// those the group gives it, which it reads from their committed offsets;
	// what it had read ahead is dropped, never returned. Its positions are
	// not committed after it left, as another member may read those
	// partitions already: until Poll has joined it again, Commit fails with
	// [ErrUnknownMember] and auto-commit skips.
	//
	// It need not exceed SessionTimeout: the session detects a process or
	// node that is gone, this a live process whose Poll loop is stuck. Set it
	// above the longest time the application spends between two polls, or
	// the member leaves and rejoins over and over.
	MaxPollInterval time.Duration
	// AutoCommitInterval commits the consumer's positions this often, and
	// before partitions are revoked and on Close. Zero (the default): only
	// Commit and CommitOffsets commit.
	AutoCommitInterval time.Duration
	// OnAssigned and OnRevoked are called from Poll (and Records), on the
	// caller's goroutine, when partitions are added to or taken from this
	// member; OnRevoked runs before the partitions are given up, so the
	// member can commit them, except for partitions lost when the member
	// left for want of Poll (see MaxPollInterval) or its session expired:
	// those are gone already, and cannot be committed. They must not call
	// Poll. They name partitions of the consumer's one topic: a consumer of
	// several topics ([NewMultiTopicConsumer]) may not set them, and sets
	// OnAssignedTopics and OnRevokedTopics instead.
	OnAssigned func(partitions []int)
	OnRevoked  func(partitions []int)
	// OnAssignedTopics and OnRevokedTopics are OnAssigned and OnRevoked
	// by topic and partition, for a consumer of one topic or several; they
	// run after OnAssigned and OnRevoked, if both are set.
	OnAssignedTopics func(partitions []TopicPartition)
	OnRevokedTopics  func(partitions []TopicPartition)
}

func (o *ConsumerOptions) groupDefaults(topics int) error {
	if o.Strategy == "" {
		o.Strategy = StrategyCooperativeSticky
	}
	if o.SessionTimeout == 0 {
		o.SessionTimeout = 10 * time.Second
	}
	if o.HeartbeatInterval == 0 {
		o.HeartbeatInterval = min(o.SessionTimeout/5, time.Second)
	}
	if o.MaxPollInterval == 0 {
		o.MaxPollInterval = 5 * time.Minute
	}
	switch {
	case o.Strategy != StrategyCooperativeSticky && o.Strategy != StrategyRange && o.Strategy != StrategyRoundRobin:
		return fmt.Errorf("%w: unknown strategy %q", ErrInvalidConfig, o.Strategy)
	case o.SessionTimeout < 0 || o.HeartbeatInterval <= 0 || o.HeartbeatInterval >= o.SessionTimeout:
		return fmt.Errorf("%w: HeartbeatInterval %v must be positive and below SessionTimeout %v", ErrInvalidConfig, o.HeartbeatInterval, o.SessionTimeout)
	case o.MaxPollInterval < 0:
		return fmt.Errorf("%w: negative MaxPollInterval", ErrInvalidConfig)
	case o.AutoCommitInterval < 0:
		return fmt.Errorf("%w: negative AutoCommitInterval", ErrInvalidConfig)
	case len(o.Group) > 249:
		return fmt.Errorf("%w: group name of %d characters", ErrInvalidConfig, len(o.Group))
	case topics > 1 && (o.OnAssigned != nil || o.OnRevoked != nil):
		return fmt.Errorf("%w: OnAssigned and OnRevoked name partitions of one topic: a consumer of %d topics sets OnAssignedTopics and OnRevokedTopics", ErrInvalidConfig, topics)
	case topics > MaxGroupTopics:
		return fmt.Errorf("%w: a group member reads at most %d topics, not %d", ErrInvalidConfig, MaxGroupTopics, topics)
	}
	return nil
}

// Bounds of a consumer group, which every node applies each change of on
// its own: a group's topics (those its members read, and those it keeps
// offsets of) and their partitions, together. A join past them fails with
// [ErrInvalidConfig].
const (
	MaxGroupTopics     = replication.MaxGroupTopics
	MaxGroupPartitions = replication.MaxGroupPartitions
)

// groupMember is a consumer's membership. Its goroutine sends heartbeats,
// auto-commits and leaves the group when Poll is not called for
// MaxPollInterval; Poll applies the assignment it learns (sync).
type groupMember struct {
	c      *consumer
	id     string
	static bool
	kick   chan struct{}
	// stop ends run; done is closed when it returned. Close stops the
	// heartbeats before leaving, or a late heartbeat would rejoin.
	stop chan struct{}
	done chan struct{}

	mu    sync.Mutex
	state *replication.GroupState // latest state seen; nil after leaving
	owned []TopicPartition        // partitions in c.parts, sorted; written by Poll
	// inPoll is set while Poll runs, lastPoll when it last returned (or the
	// member joined): run leaves the group when it has been out of Poll for
	// MaxPollInterval.
	inPoll   bool
	lastPoll time.Time
	// left: run left the group for want of Poll; rejoin: Poll was called
	// since, so run joins again. lost: the member left or its session
	// expired, so owned may be another member's by now; the next sync drops
	// it without committing, and heartbeats do not claim it meanwhile.
	left, rejoin, lost bool
}

func joinGroup(ctx context.Context, c *consumer) (*groupMember, error) {
	g := &groupMember{c: c, id: c.opts.InstanceID, static: c.opts.InstanceID != "", kick: make(chan struct{}, 1),
		stop: make(chan struct{}), done: make(chan struct{}), lastPoll: time.Now()}
	if g.id == "" {
		var b [8]byte
		_, _ = rand.Read(b[:])
		g.id = fmt.Sprintf("member-%d-%s", c.l.opts.NodeID, hex.EncodeToString(b[:]))
	}
	if err := g.join(ctx); err != nil {
		return nil, err
	}
	return g, nil
}

func (g *groupMember) join(ctx context.Context) error {
	o := g.c.opts
	var topics []replication.TopicRef
	for _, t := range g.c.topics {
		topics = append(topics, replication.TopicRef{Name: t.meta.Name, ID: t.meta.ID, Partitions: t.Partitions()})
	}
	st, err := g.c.l.node.Group(ctx, replication.GroupRequest{
		Op: replication.GroupOpJoin, Group: o.Group, Topics: topics, Strategy: o.Strategy, Member: g.id,
		Static: g.static, SessionTimeout: o.SessionTimeout,
	})
	if err != nil {
		return mapErr(err)
	}
	g.mu.Lock()
	g.state, g.left, g.rejoin = st, false, false
	g.mu.Unlock()
	g.c.signalReady() // Poll applies it
	return nil
}

func (g *groupMember) setState(st *replication.GroupState) {
	g.mu.Lock()
	g.state = st
	g.mu.Unlock()
	g.c.signalReady() // Poll applies it
}

func (g *groupMember) heartbeatNow() {
	select {
	case g.kick <- struct{}{}:
	default:
	}
}

// flat turns partitions by topic into a sorted list.
func flat(ps map[string][]int) []TopicPartition {
	var out []TopicPartition
	for topic, parts := range ps {
		for _, p := range parts {
			out = append(out, TopicPartition{topic, p})
		}
	}
	sortTPs(out)
	return out
}

func sortTPs(tps []TopicPartition) {
	slices.SortFunc(tps, func(a, b TopicPartition) int {
		return cmp.Or(cmp.Compare(a.Topic, b.Topic), cmp.Compare(a.Partition, b.Partition))
	})
}

// byTopic turns a list of partitions into partitions by topic.
func byTopic(tps []TopicPartition) map[string][]int {
	out := map[string][]int{}
	for _, tp := range tps {
		out[tp.Topic] = append(out[tp.Topic], tp.Partition)
	}
	return out
}

// run sends heartbeats (reporting the partitions this member owns) and
// auto-commits until the consumer closes. It leaves the group when Poll was
// not called for MaxPollInterval, and joins again once it is.
func (g *groupMember) run() {
	defer g.c.wg.Done()
	defer close(g.done)
	hb := time.NewTicker(g.c.opts.HeartbeatInterval)
	defer hb.Stop()
	var commit <-chan time.Time
	if iv := g.c.opts.AutoCommitInterval; iv > 0 {
		t := time.NewTicker(iv)
		defer t.Stop()
		commit = t.C
	}
	pollCheck := time.NewTimer(g.c.opts.MaxPollInterval)
	defer pollCheck.Stop()
	ctx, cancel := context.WithCancel(g.c.ctx)
	defer cancel()
	go func() {
		select {
		case <-g.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return
		case <-commit:
			_ = g.commit(ctx, nil) // refused after leaving
			continue
		case <-pollCheck.C:
			leave, wait := g.checkPoll()
			pollCheck.Reset(wait)
			if leave {
				// As Kafka's heartbeat thread does: leave, so the partitions
				// move now rather than never. Should this fail, the session
				// expires instead, as no heartbeat follows.
				rctx, cancel := context.WithTimeout(ctx, g.c.opts.SessionTimeout)
				_, _ = g.c.l.node.Group(rctx, replication.GroupRequest{Op: replication.GroupOpLeave, Group: g.c.opts.Group, Member: g.id})
				cancel()
			}
			continue
		case <-hb.C:
		case <-g.kick:
		}
		// Report what this member reads, and claim what the group grants
		// it; Poll starts reading a partition only once the claim holds.
		g.mu.Lock()
		left, rejoin := g.left, g.rejoin
		claim := map[string][]int{}
		if !g.lost {
			claim = byTopic(g.owned)
		}
		if g.state != nil {
			for topic, ps := range g.state.Granted(g.id) {
				claim[topic] = append(claim[topic], ps...)
			}
		}
		g.mu.Unlock()
		if left {
			if rejoin { // a failed join is tried again at the next heartbeat
				rctx, cancel := context.WithTimeout(ctx, g.c.opts.SessionTimeout)
				_ = g.join(rctx)
				cancel()
			}
			continue
		}
		rctx, cancel := context.WithTimeout(ctx, g.c.opts.SessionTimeout)
		st, err := g.c.l.node.Group(rctx, replication.GroupRequest{
			Op: replication.GroupOpHeartbeat, Group: g.c.opts.Group, Member: g.id, Claims: claim,
		})
		cancel()
		if errors.Is(err, replication.ErrUnknownMember) {
			// The session expired (or the group was deleted): another member
			// may read this one's partitions by now. Poll treats them as
			// lost (see sync), and the member joins again.
			// A failed join is tried again at the next heartbeat.
			g.mu.Lock()
			g.lost, g.state = true, nil
			g.mu.Unlock()
			rctx, cancel := context.WithTimeout(ctx, g.c.opts.SessionTimeout)
			_ = g.join(rctx)
			cancel()
			continue
		}
		if err == nil {
			g.setState(st)
		}
	}
}

// checkPoll reports whether the member must leave the group, not having
// polled for MaxPollInterval, and marks it gone if so; wait is when to
// check again.
func (g *groupMember) checkPoll() (leave bool, wait time.Duration) {
	g.mu.Lock()
	defer g.mu.Unlock()
	limit := g.c.opts.MaxPollInterval
	if g.inPoll || g.left {
		return false, limit
	}
	if since := time.Since(g.lastPoll); since < limit {
		return false, limit - since
	}
	g.left, g.rejoin, g.lost, g.state = true, false, true, nil
	return true, limit
}

// polling marks a Poll running until the returned func is called: a member
// inside Poll is not hung, however long Poll waits for records. A member
// that left for want of Poll joins again.
func (g *groupMember) polling() (done func()) {
	g.mu.Lock()
	g.inPoll, g.lastPoll = true, time.Now()
	rejoin := g.left && !g.rejoin
	g.rejoin = g.left
	g.mu.Unlock()
	if rejoin {
		g.heartbeatNow() // run joins
	}
	return func() {
		g.mu.Lock()
		g.inPoll, g.lastPoll = false, time.Now()
		g.mu.Unlock()
	}
}

// gone returns an error if the member is out of the group (it left for
// want of Poll and has not joined again) or its partitions are lost (also
// when its session expired) and Poll has not dropped them yet.
func (g *groupMember) gone() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.left || g.lost {
		return fmt.Errorf("%w: %s lost its partitions in group %q (no Poll for MaxPollInterval %v, or its session expired); the next Poll takes a new assignment",
			ErrUnknownMember, g.id, g.c.opts.Group, g.c.opts.MaxPollInterval)
	}
	return nil
}

// callback runs OnAssigned or OnRevoked (one, for partitions of the
// consumer's one topic) and then byTopic (the other), if set.
func callback(one func([]int), byTopic func([]TopicPartition), tps []TopicPartition) {
	if one != nil {
		ps := make([]int, len(tps))
		for i, tp := range tps {
			ps[i] = tp.Partition
		}
		one(ps)
	}
	if byTopic != nil {
		byTopic(slices.Clone(tps))
	}
}

// sync applies the latest assignment on the Poll goroutine: it drops the
// partitions lost when the member left or its session expired, revokes
// partitions this member must give up (after OnRevoked and, with
// auto-commit, a commit), then takes the partitions granted to it, each
// from its committed offset or from Start.
func (g *groupMember) sync(ctx context.Context) error {
	o := g.c.opts
	g.mu.Lock()
	var lost []TopicPartition
	if g.lost {
		lost, g.owned, g.lost = g.owned, nil, false
	}
	st, owned := g.state, slices.Clone(g.owned)
	g.mu.Unlock()
	var added, revoke []TopicPartition
	defer func() { g.logChange(st, added, revoke, lost) }()
	if len(lost) > 0 {
		// Another member may read these already: they go without a commit,
		// and before OnRevoked, so that a Commit there cannot send their
		// stale positions; what was read ahead of them is never returned.
		g.c.dropParts(lost)
		callback(o.OnRevoked, o.OnRevokedTopics, lost)
	}
	if st == nil {
		return nil
	}
	// granted: partitions the group records as this member's (claimed by
	// a heartbeat) that the strategy still gives it.
	var target, granted []TopicPartition
	if m := st.Members[g.id]; m != nil {
		target = flat(m.Target)
		for _, tp := range flat(m.Owned) {
			if slices.Contains(target, tp) {
				granted = append(granted, tp)
			}
		}
		mine := flat(m.Owned)
		for _, tp := range flat(st.Granted(g.id)) {
			if !slices.Contains(mine, tp) {
				g.heartbeatNow() // free partitions to claim
				break
			}
		}
	}
	for _, tp := range owned {
		if !slices.Contains(target, tp) {
			revoke = append(revoke, tp)
		}
	}
	if len(revoke) > 0 && o.AutoCommitInterval > 0 && ctx.Err() != nil {
		// A Poll whose ctx is done starts no commit: the next Poll
		// gives the partitions up.
		revoke = nil
	}
	if len(revoke) > 0 {
		if o.AutoCommitInterval > 0 {
			// The commit runs to its end whatever the Poll's deadline
			// (a short one cut it off, and the next owner read again
			// what this member had returned). If it fails, the member
			// keeps the partitions for now and the next Poll tries
			// again (the group waits for them, as cooperative
			// rebalancing does); one whose membership is gone has
			// nothing to commit.
			cctx, cancel := context.WithTimeout(g.c.ctx, defaultTimeout)
			err := g.commit(cctx, revoke)
			cancel()
			if err != nil && !errors.Is(err, ErrUnknownMember) && g.c.ctx.Err() == nil {
				g.c.l.node.Logger().Warn("replog: commit before giving up partitions failed; tried again at the next Poll",
					"group", o.Group, "member", g.id, "err", err)
				revoke = nil
				return nil
			}
		}
		callback(o.OnRevoked, o.OnRevokedTopics, revoke)
		g.c.dropParts(revoke)
		owned = slices.DeleteFunc(owned, func(tp TopicPartition) bool { return slices.Contains(revoke, tp) })
		g.setOwned(owned)
		g.heartbeatNow() // tell the group, so the partitions move on
	}
	var add []TopicPartition
	for _, tp := range granted {
		if !slices.Contains(owned, tp) && g.c.topic(tp.Topic) != nil {
			add = append(add, tp)
		}
	}
	if len(add) == 0 {
		return nil
	}
	// Open them all before taking any, so a failure leaves no half-added
	// partition behind; the caller's (possibly short) Poll ctx is not used.
	octx, cancel := context.WithTimeout(g.c.ctx, defaultTimeout)
	defer cancel()
	offset := st.Offset
	if o.Isolation == ReadCommitted {
		stable, ok, err := g.stableOffsets(ctx, add)
		if err != nil || !ok {
			return err // still pending: the next Poll tries again
		}
		offset = stable.Offset
	}
	var parts []*consumerPart
	for _, tp := range add {
		off, ok := offset(tp.Topic, tp.Partition)
		if !ok {
			off = -1
		}
		cp, err := g.c.newPart(octx, g.c.topic(tp.Topic), tp.Partition, off)
		if err != nil {
			return err
		}
		parts = append(parts, cp)
	}
	g.c.partsMu.Lock()
	g.c.parts = append(g.c.parts, parts...)
	g.c.partsMu.Unlock()
	owned = append(owned, add...)
	sortTPs(owned)
	g.setOwned(owned)
	g.heartbeatNow()
	g.c.wakeFetcher()
	added = add
	callback(o.OnAssigned, o.OnAssignedTopics, add)
	return nil
}

// dropParts stops reading the partitions tps.
func (c *consumer) dropParts(tps []TopicPartition) {
	c.partsMu.Lock()
	c.parts = slices.DeleteFunc(c.parts, func(cp *consumerPart) bool { return slices.Contains(tps, cp.tp()) })
	c.partsMu.Unlock()
}

// stableOffsets waits until no transaction that is not complete commits
// offsets of the group for the partitions parts, and returns the group's
// state then, with its committed offsets (Kafka's stable offsets, KIP-447,
// which a read_committed consumer asks for): a member that takes a
// partition over while another member's transaction sends its offset
// starts after it once the transaction commits, rather than at the older
// one, reading again what the transaction consumed. ok is false if ctx
// ended first.
func (g *groupMember) stableOffsets(ctx context.Context, parts []TopicPartition) (st *replication.GroupState, ok bool, err error) {
	node := g.c.l.node
	backoff := 2 * time.Millisecond
	for {
		pending, err := node.PendingTxnOffsets(ctx, g.c.opts.Group)
		if ctx.Err() != nil {
			return nil, false, nil
		}
		if err != nil {
			return nil, false, mapErr(err)
		}
		if !slices.ContainsFunc(parts, func(tp TopicPartition) bool { return slices.Contains(pending[tp.Topic], tp.Partition) }) {
			break
		}
		select {
		case <-time.After(backoff):
			backoff = min(2*backoff, 100*time.Millisecond)
		case <-ctx.Done():
			return nil, false, nil
		}
	}
	gs, err := node.Groups(ctx, g.c.opts.Group)
	if ctx.Err() != nil {
		return nil, false, nil
	}
	if err != nil || len(gs) != 1 {
		return nil, false, mapErr(err)
	}
	return gs[0], true, nil
}

// logChange logs, at Info, a change of the partitions this member reads:
// those added, revoked, or lost (the member left for want of Poll, or its
// session expired). st is the group state the change follows, if any. A
// consumer of one topic names it ("topic") and lists partition numbers; a
// consumer of several names them ("topics") and lists partitions by topic.
func (g *groupMember) logChange(st *replication.GroupState, added, revoked, lost []TopicPartition) {
	if len(added) == 0 && len(revoked) == 0 && len(lost) == 0 {
		return
	}
	list := func(tps []TopicPartition) any { return byTopic(tps) }
	args := []any{"group", g.c.opts.Group, "member", g.id}
	if len(g.c.topics) == 1 {
		list = func(tps []TopicPartition) any {
			ps := []int{}
			for _, tp := range tps {
				ps = append(ps, tp.Partition)
			}
			return ps
		}
		args = append(args, "topic", g.c.topics[0].meta.Name)
	} else {
		var topics []string
		for _, t := range g.c.topics {
			topics = append(topics, t.meta.Name)
		}
		args = append(args, "topics", topics)
	}
	args = append(args, "added", list(added), "revoked", list(revoked))
	if len(lost) > 0 {
		args = append(args, "lost", list(lost))
	}
	if st != nil {
		args = append(args, "generation", st.Generation)
	}
	g.mu.Lock()
	owned := slices.Clone(g.owned)
	g.mu.Unlock()
	args = append(args, "partitions", list(owned), "node", g.c.l.opts.NodeID)
	g.c.l.node.Logger().Info("replog: group member's partitions changed", args...)
}

func (g *groupMember) setOwned(owned []TopicPartition) {
	g.mu.Lock()
	g.owned = owned
	g.mu.Unlock()
}

// commit commits the positions of the given partitions (nil: all owned).
func (g *groupMember) commit(ctx context.Context, parts []TopicPartition) error {
	offsets := map[string]map[int]int64{}
	for _, cp := range g.c.partList() {
		tp := cp.tp()
		if parts == nil || slices.Contains(parts, tp) {
			if offsets[tp.Topic] == nil {
				offsets[tp.Topic] = map[int]int64{}
			}
			cp.mu.Lock()
			offsets[tp.Topic][tp.Partition] = cp.offset
			cp.mu.Unlock()
		}
	}
	return g.commitOffsets(ctx, offsets)
}

func (g *groupMember) commitOffsets(ctx context.Context, offsets map[string]map[int]int64) error {
	if err := g.gone(); err != nil {
		return err
	}
	if len(offsets) == 0 {
		return nil
	}
	ctx, cancel := withDefaultDeadline(ctx, defaultTimeout)
	defer cancel()
	_, err := g.c.l.node.Group(ctx, replication.GroupRequest{
		Op: replication.GroupOpCommit, Group: g.c.opts.Group, Member: g.id, TopicCommits: offsets,
	})
	return mapErr(err)
}

// leave commits (with auto-commit, unless the member left already for want
// of Poll) and leaves the group so the partitions move at once; a static
// member stays, to come back to its partitions.
func (g *groupMember) leave() error {
	close(g.stop)
	<-g.done
	if g.c.l.ctx.Err() != nil {
		return nil // the Log crashed (in a test): a crashed member just stops
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var err error
	if g.c.opts.AutoCommitInterval > 0 && g.gone() == nil {
		err = g.commit(ctx, nil)
	}
	if g.static || g.c.l.isClosed() {
		return err
	}
	_, lerr := g.c.l.node.Group(ctx, replication.GroupRequest{Op: replication.GroupOpLeave, Group: g.c.opts.Group, Member: g.id})
	if lerr != nil && !errors.Is(lerr, replication.ErrUnknownMember) {
		err = errors.Join(err, mapErr(lerr))
	}
	return err
}

// Commit commits, for every partition this consumer reads, the position
// after the last record Poll handed out: a member that takes the partition
// over resumes there. The consumer must have a Group. A member that lost
// its partitions (it did not poll within MaxPollInterval, or its session
// expired) gets [ErrUnknownMember] until Poll has taken a new assignment.
func (c *Consumer[T]) Commit(ctx context.Context) error {
	if c.c.group == nil {
		return fmt.Errorf("%w: Commit needs ConsumerOptions.Group", ErrInvalidConfig)
	}
	return c.c.group.commit(ctx, nil)
}

// CommitOffsets commits explicit offsets (the next offset to read) for
// partitions this member owns. An offset outside [log start, high
// watermark] is an [*OffsetOutOfRangeError]; a partition not assigned to
// this member is [ErrNotAssigned]. Nothing is committed on error. A
// consumer of several topics gets [ErrInvalidConfig]: see
// [Consumer.CommitTopicOffsets].
func (c *Consumer[T]) CommitOffsets(ctx context.Context, offsets map[int]int64) error {
	topic, err := c.c.onlyTopic("CommitOffsets", "CommitTopicOffsets")
	if err != nil {
		return err
	}
	return c.CommitTopicOffsets(ctx, topic, offsets)
}

// CommitTopicOffsets is [Consumer.CommitOffsets] for partitions of topic,
// one of the consumer's topics.
func (c *Consumer[T]) CommitTopicOffsets(ctx context.Context, topic string, offsets map[int]int64) error {
	if c.c.group == nil {
		return fmt.Errorf("%w: CommitOffsets needs ConsumerOptions.Group", ErrInvalidConfig)
	}
	for p, off := range offsets {
		cp, err := c.c.part(topic, p)
		if err != nil {
			return fmt.Errorf("%w: %s/%d", ErrNotAssigned, topic, p)
		}
		if start, hw := cp.replica().LogStart(), cp.replica().HighWatermark(); off < start || off > hw {
			return &OffsetOutOfRangeError{Topic: topic, Partition: p, Offset: off, Earliest: start, Latest: hw}
		}
	}
	return c.c.group.commitOffsets(ctx, map[string]map[int]int64{topic: maps.Clone(offsets)})
}

// Assignment returns the partitions this consumer reads now, sorted: none
// after it lost them (see [Consumer.Commit]), until the next Poll. A
// consumer of several topics gets nil: see [Consumer.TopicAssignment].
func (c *Consumer[T]) Assignment() []int {
	if len(c.c.topics) != 1 {
		return nil
	}
	var out []int
	for _, tp := range c.TopicAssignment() {
		out = append(out, tp.Partition)
	}
	return out
}

// TopicAssignment is [Consumer.Assignment] by topic and partition, sorted,
// for a consumer of one topic or several.
func (c *Consumer[T]) TopicAssignment() []TopicPartition {
	if g := c.c.group; g != nil && g.gone() != nil {
		return nil
	}
	var out []TopicPartition
	for _, cp := range c.c.partList() {
		out = append(out, cp.tp())
	}
	sortTPs(out)
	return out
}
