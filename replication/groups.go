package replication

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"sort"
	"time"

	sm "github.com/lni/dragonboat/v4/statemachine"

	"github.com/replog/replog/storage"
)

// GroupsShardID is the Raft group that holds consumer groups: members,
// assignments and committed offsets. It is separate from the metadata group
// so that frequent heartbeats and commits never stall topic metadata, as
// Kafka keeps offsets in __consumer_offsets rather than in its controller.
const GroupsShardID uint64 = 2

// Assignment strategies.
const (
	StrategyRange             = "range"
	StrategyRoundRobin        = "roundrobin"
	StrategyCooperativeSticky = "cooperative-sticky"
)

func validStrategy(s string) bool {
	return s == StrategyCooperativeSticky || s == StrategyRange || s == StrategyRoundRobin
}

// Group errors; the root package maps them to its sentinels.
var (
	ErrUnknownMember   = errors.New("unknown group member")
	ErrNotAssigned     = errors.New("partition not assigned to this member")
	ErrGroupNotFound   = errors.New("group not found")
	ErrGroupTopic      = errors.New("group consumes another topic")
	ErrGroupNotEmpty   = errors.New("group has members")
	ErrInvalidStrategy = errors.New("invalid assignment strategy")
	// ErrGroupKind: a Kafka group and a replog group cannot share a name:
	// their members, assignments and offsets mean different things.
	ErrGroupKind = errors.New("group belongs to the other kind of consumers (Kafka clients or replog consumers)")
)

// GroupKindKafka is the Kind of a group whose members are Kafka clients of
// a listener (package kafka). Such a group keeps only its committed
// offsets here, by topic and partition, so that it can span topics: its
// membership and rebalances are the listener's, held in memory as a Kafka
// coordinator does, and rebuilt by clients rejoining. The empty Kind is a
// group of replog consumers, with members and one topic.
const GroupKindKafka = "kafka"

// MaxOffsetMetadata caps the metadata a Kafka client commits with an
// offset, in bytes, as Kafka's offset.metadata.max.bytes.
const MaxOffsetMetadata = 4096

// maxTopicName is Kafka's and replog's longest topic name.
const maxTopicName = 249

// CommittedOffset is an offset a Kafka group committed for a partition.
type CommittedOffset struct {
	Offset   int64  `json:"offset"` // the next offset to read
	Metadata string `json:"metadata,omitempty"`
}

// GroupState is one consumer group. Values handed out are copies.
type GroupState struct {
	Name       string                  `json:"name"`
	Topic      string                  `json:"topic"`
	TopicID    uint64                  `json:"topic_id"`
	Partitions int                     `json:"partitions"`
	Strategy   string                  `json:"strategy"`
	Generation int64                   `json:"generation"`
	Members    map[string]*MemberState `json:"members"`
	Offsets    map[int]int64           `json:"offsets"` // committed: the next offset to read
	// Kind is "" for a group of replog consumers, GroupKindKafka for a
	// group of Kafka clients. Absent from states written before Kafka
	// groups existed, which are all replog groups.
	Kind string `json:"kind,omitempty"`
	// TopicOffsets are a Kafka group's committed offsets by topic and
	// partition (a replog group uses Offsets, for its one Topic).
	TopicOffsets map[string]map[int]CommittedOffset `json:"topic_offsets,omitempty"`
}

// MemberState is one member of a group.
type MemberState struct {
	ID             string `json:"id"`
	Static         bool   `json:"static"`
	SessionTimeout int64  `json:"session_timeout"` // ns
	LastSeen       int64  `json:"last_seen"`       // unix ns, from the proposer's clock
	Target         []int  `json:"target"`          // partitions the strategy gives it
	Owned          []int  `json:"owned"`           // partitions it reports consuming
}

func (g *GroupState) clone() *GroupState {
	c := *g
	c.Members = map[string]*MemberState{}
	for k, m := range g.Members {
		mc := *m
		mc.Target = slices.Clone(m.Target)
		mc.Owned = slices.Clone(m.Owned)
		c.Members[k] = &mc
	}
	c.Offsets = maps.Clone(g.Offsets)
	if g.TopicOffsets != nil {
		c.TopicOffsets = make(map[string]map[int]CommittedOffset, len(g.TopicOffsets))
		for t, ps := range g.TopicOffsets {
			c.TopicOffsets[t] = maps.Clone(ps)
		}
	}
	return &c
}

// Granted is what a member may claim now: its target partitions that no
// other member still owns. A partition moving between members is handed
// over only after the old owner reports it revoked (cooperative
// rebalancing).
func (g *GroupState) Granted(member string) []int {
	m := g.Members[member]
	if m == nil {
		return nil
	}
	var out []int
	for _, p := range m.Target {
		if !g.ownedByOther(member, p) {
			out = append(out, p)
		}
	}
	return out
}

func (g *GroupState) ownedByOther(member string, p int) bool {
	for id, o := range g.Members {
		if id != member && slices.Contains(o.Owned, p) {
			return true
		}
	}
	return false
}

// ownedByOthers is the set of partitions members other than member own.
func (g *GroupState) ownedByOthers(member string) map[int]bool {
	out := map[int]bool{}
	for id, o := range g.Members {
		if id != member {
			for _, p := range o.Owned {
				out[p] = true
			}
		}
	}
	return out
}

// inRange reports whether every partition of offsets is one of the group's.
func (g *GroupState) inRange(offsets map[int]int64) bool {
	for p := range offsets {
		if p >= g.Partitions {
			return false
		}
	}
	return true
}

// check validates a group read from a snapshot, filling in missing maps:
// commands assume a well-formed state, and a snapshot we did not write
// could otherwise make them panic or run for ever.
func (g *GroupState) check(name string) error {
	switch {
	case g == nil:
		return errors.New("null group")
	case g.Name != name:
		return fmt.Errorf("group named %q under %q", g.Name, name)
	case g.Partitions < 0 || g.Partitions > MaxPartitions:
		return fmt.Errorf("%d partitions", g.Partitions)
	case g.Strategy != "" && !validStrategy(g.Strategy):
		return fmt.Errorf("strategy %q", g.Strategy)
	case g.Kind != "" && g.Kind != GroupKindKafka:
		return fmt.Errorf("kind %q", g.Kind)
	case g.Kind == "" && len(g.TopicOffsets) > 0:
		return errors.New("a replog group with Kafka offsets")
	case g.Kind == GroupKindKafka && (len(g.Members) > 0 || len(g.Offsets) > 0):
		return errors.New("a Kafka group with replog members or offsets")
	}
	for topic, ps := range g.TopicOffsets {
		if !validKafkaOffsets(topic, ps) {
			return fmt.Errorf("offsets of topic %q", topic)
		}
	}
	if g.Members == nil {
		g.Members = map[string]*MemberState{}
	}
	if g.Offsets == nil {
		g.Offsets = map[int]int64{}
	}
	// Partitions are checked against the bound, not against g.Partitions:
	// a join may lower the count while members still own partitions above
	// it, and a snapshot must accept every state the commands can reach.
	bad := func(p int) bool { return p < 0 || p >= MaxPartitions }
	for id, m := range g.Members {
		switch {
		case m == nil:
			return fmt.Errorf("null member %q", id)
		case m.ID != id:
			return fmt.Errorf("member %q under %q", m.ID, id)
		case slices.ContainsFunc(m.Target, bad) || slices.ContainsFunc(m.Owned, bad):
			return fmt.Errorf("member %q: partitions %v, %v out of range", id, m.Target, m.Owned)
		}
	}
	for p, off := range g.Offsets {
		if bad(p) || off < 0 {
			return fmt.Errorf("offset %d for partition %d", off, p)
		}
	}
	return nil
}

func set(ps []int) map[int]bool {
	out := make(map[int]bool, len(ps))
	for _, p := range ps {
		out[p] = true
	}
	return out
}

type groupCmd struct {
	Op             string        `json:"op"`
	Group          string        `json:"group,omitempty"`
	Topic          string        `json:"topic,omitempty"`
	TopicID        uint64        `json:"topic_id,omitempty"`
	Partitions     int           `json:"partitions,omitempty"`
	Strategy       string        `json:"strategy,omitempty"`
	Member         string        `json:"member,omitempty"`
	Static         bool          `json:"static,omitempty"`
	SessionTimeout int64         `json:"session_timeout,omitempty"`
	Owned          []int         `json:"owned,omitempty"`
	Offsets        map[int]int64 `json:"offsets,omitempty"`
	Now            int64         `json:"now"`
	// Commits: a Kafka group's offsets by topic and partition
	// (gopKafkaCommit); Drop: partitions whose offsets go, by topic
	// (gopKafkaDeleteOffsets).
	Commits map[string]map[int]CommittedOffset `json:"commits,omitempty"`
	Drop    map[string][]int                   `json:"drop,omitempty"`
}

const (
	gopJoin      = "join"
	gopHeartbeat = "heartbeat"
	gopLeave     = "leave"
	gopCommit    = "commit"
	gopExpire    = "expire"
	gopReset     = "reset"
	gopDelete    = "delete"
	// Kafka groups (Kind GroupKindKafka): claim the name, create the group
	// if need be (a Kafka client may commit without ever joining), commit,
	// and drop offsets (Kafka's OffsetDelete). replog's join, commit and
	// reset refuse a Kafka group, and these a replog group, with
	// gGroupKind; heartbeat and leave find no member; delete serves both.
	gopKafkaClaim         = "kafka-claim"
	gopKafkaCommit        = "kafka-commit"
	gopKafkaDeleteOffsets = "kafka-delete-offsets"
)

// Result codes of group commands (sm.Result.Value); Data holds the group's
// state as JSON on success.
const (
	gOK uint64 = iota
	gUnknownMember
	gNotAssigned
	gGroupNotFound
	gGroupTopic
	gGroupNotEmpty
	gInvalid
	gGroupKind
)

type groupsSM struct {
	groups map[string]*GroupState
}

// Update applies one command. Whatever the bytes, it returns a result code
// and never an error: an error (or a panic) would stop the groups Raft
// group on every replica, each time it replays the entry.
func (s *groupsSM) Update(e sm.Entry) (sm.Result, error) {
	var c groupCmd
	if err := json.Unmarshal(e.Cmd, &c); err != nil || !c.valid() {
		return sm.Result{Value: gInvalid}, nil
	}
	code, g := s.apply(c)
	r := sm.Result{Value: code}
	if code == gOK && g != nil {
		r.Data, _ = json.Marshal(g)
	}
	return r, nil
}

// valid reports whether c is well formed, before it touches any state. The
// root package never proposes anything else, so replaying an existing log
// refuses no command that was accepted before these checks. A group reads
// one topic, so it has at most MaxPartitions: the bound keeps a rebalance
// (linear in the count) cheap, since every replica applies each command,
// and one that ran for ever would stall the groups Raft group on all of
// them.
func (c *groupCmd) valid() bool {
	switch c.Op {
	case gopExpire:
		return true
	case gopJoin:
		return c.Group != "" && c.Member != "" && c.Partitions >= 0 && c.Partitions <= MaxPartitions &&
			c.SessionTimeout > 0 && (c.Strategy == "" || validStrategy(c.Strategy))
	case gopHeartbeat:
		// Owned is what the member reads plus what it claims: at most
		// twice the partitions.
		return c.Group != "" && len(c.Owned) <= 2*MaxPartitions
	case gopLeave, gopDelete:
		return c.Group != ""
	case gopCommit, gopReset:
		if c.Group == "" {
			return false
		}
		for p, off := range c.Offsets {
			if p < 0 || p >= MaxPartitions || off < 0 {
				return false
			}
		}
		return true
	case gopKafkaClaim:
		return c.Group != ""
	case gopKafkaCommit:
		if c.Group == "" {
			return false
		}
		for topic, ps := range c.Commits {
			if !validKafkaOffsets(topic, ps) {
				return false
			}
		}
		return true
	case gopKafkaDeleteOffsets:
		if c.Group == "" {
			return false
		}
		for topic, ps := range c.Drop {
			if topic == "" || len(topic) > maxTopicName || len(ps) > MaxPartitions ||
				slices.ContainsFunc(ps, func(p int) bool { return p < 0 || p >= MaxPartitions }) {
				return false
			}
		}
		return true
	}
	return false
}

// validKafkaOffsets reports whether a Kafka group's offsets for topic are
// well formed.
func validKafkaOffsets(topic string, ps map[int]CommittedOffset) bool {
	if topic == "" || len(topic) > maxTopicName {
		return false
	}
	for p, o := range ps {
		if p < 0 || p >= MaxPartitions || o.Offset < 0 || len(o.Metadata) > MaxOffsetMetadata {
			return false
		}
	}
	return true
}

// applyKafka runs a command of a Kafka group.
func (s *groupsSM) applyKafka(c groupCmd) (uint64, *GroupState) {
	g := s.groups[c.Group]
	if g != nil && g.Kind != GroupKindKafka {
		return gGroupKind, nil
	}
	switch c.Op {
	case gopKafkaClaim, gopKafkaCommit:
		if g == nil {
			g = &GroupState{Name: c.Group, Kind: GroupKindKafka, Members: map[string]*MemberState{}, Offsets: map[int]int64{}}
			s.groups[c.Group] = g
		}
		for topic, ps := range c.Commits {
			if g.TopicOffsets == nil {
				g.TopicOffsets = map[string]map[int]CommittedOffset{}
			}
			if g.TopicOffsets[topic] == nil {
				g.TopicOffsets[topic] = map[int]CommittedOffset{}
			}
			maps.Copy(g.TopicOffsets[topic], ps)
		}
		return gOK, g
	case gopKafkaDeleteOffsets:
		if g == nil {
			return gGroupNotFound, nil
		}
		for topic, ps := range c.Drop {
			for _, p := range ps {
				delete(g.TopicOffsets[topic], p)
			}
			if len(g.TopicOffsets[topic]) == 0 {
				delete(g.TopicOffsets, topic)
			}
		}
		return gOK, g
	}
	return gInvalid, nil
}

// apply runs one command; it must be deterministic (time comes from the
// command, never from the clock).
func (s *groupsSM) apply(c groupCmd) (uint64, *GroupState) {
	if c.Op == gopExpire {
		for _, g := range s.groups {
			changed := false
			for id, m := range g.Members {
				if c.Now-m.LastSeen > m.SessionTimeout {
					delete(g.Members, id)
					changed = true
				}
			}
			if changed {
				g.rebalance()
			}
		}
		return gOK, nil
	}
	switch c.Op {
	case gopKafkaClaim, gopKafkaCommit, gopKafkaDeleteOffsets:
		return s.applyKafka(c)
	}
	g := s.groups[c.Group]
	if g != nil && g.Kind == GroupKindKafka {
		switch c.Op {
		case gopJoin, gopCommit, gopReset:
			return gGroupKind, nil
		}
	}
	switch c.Op {
	case gopJoin:
		if g == nil {
			g = &GroupState{Name: c.Group, Topic: c.Topic, TopicID: c.TopicID, Partitions: c.Partitions,
				Strategy: c.Strategy, Members: map[string]*MemberState{}, Offsets: map[int]int64{}}
			s.groups[c.Group] = g
		}
		if g.TopicID != c.TopicID {
			if len(g.Members) > 0 {
				return gGroupTopic, nil
			}
			// An empty group moves to the new topic; its offsets meant the old one.
			g.Topic, g.TopicID, g.Offsets = c.Topic, c.TopicID, map[int]int64{}
		}
		g.Partitions = c.Partitions
		if c.Strategy != "" {
			g.Strategy = c.Strategy
		}
		m, ok := g.Members[c.Member]
		if ok && m.Static {
			// A static member coming back keeps its partitions: no rebalance.
			m.LastSeen, m.SessionTimeout, m.Owned = c.Now, c.SessionTimeout, nil
			return gOK, g
		}
		g.Members[c.Member] = &MemberState{ID: c.Member, Static: c.Static, SessionTimeout: c.SessionTimeout, LastSeen: c.Now}
		g.rebalance()
		return gOK, g
	case gopHeartbeat:
		if g == nil {
			return gUnknownMember, nil
		}
		m := g.Members[c.Member]
		if m == nil {
			return gUnknownMember, nil
		}
		m.LastSeen = c.Now
		// c.Owned is what the member reads plus what it claims. It keeps
		// what it already owned (a partition it must give up stays its own
		// until it says so) and gets a claimed partition only if the
		// strategy gives it that partition and no other member owns it: a
		// member reads only what it owns here, so no partition is ever read
		// by two members of a group at once.
		// Sets, so that a long claim costs linear time.
		mine, target, others := set(m.Owned), set(m.Target), g.ownedByOthers(c.Member)
		var owned []int
		for _, p := range c.Owned {
			if mine[p] || (target[p] && !others[p]) {
				owned = append(owned, p)
			}
		}
		slices.Sort(owned)
		m.Owned = slices.Compact(owned)
		return gOK, g
	case gopLeave:
		if g == nil || g.Members[c.Member] == nil {
			return gUnknownMember, nil
		}
		delete(g.Members, c.Member)
		g.rebalance()
		return gOK, g
	case gopCommit:
		if g == nil {
			return gGroupNotFound, nil
		}
		if c.Member != "" {
			m := g.Members[c.Member]
			if m == nil {
				return gUnknownMember, nil
			}
			mine, granted := set(m.Owned), set(g.Granted(c.Member))
			for p := range c.Offsets {
				if !mine[p] && !granted[p] {
					return gNotAssigned, nil
				}
			}
			m.LastSeen = max(m.LastSeen, c.Now)
		} else if !g.inRange(c.Offsets) {
			return gInvalid, nil
		}
		for p, off := range c.Offsets {
			g.Offsets[p] = off
		}
		return gOK, g
	case gopReset:
		if g == nil {
			return gGroupNotFound, nil
		}
		if len(g.Members) > 0 {
			return gGroupNotEmpty, nil
		}
		if !g.inRange(c.Offsets) {
			return gInvalid, nil
		}
		g.Offsets = maps.Clone(c.Offsets)
		if g.Offsets == nil {
			g.Offsets = map[int]int64{}
		}
		return gOK, g
	case gopDelete:
		if g == nil {
			return gGroupNotFound, nil
		}
		if len(g.Members) > 0 {
			return gGroupNotEmpty, nil
		}
		delete(s.groups, c.Group)
		return gOK, nil
	}
	return gInvalid, nil
}

// rebalance recomputes every member's target partitions with the group's
// strategy and starts a new generation.
func (g *GroupState) rebalance() {
	g.Generation++
	ids := slices.Sorted(maps.Keys(g.Members))
	if len(ids) == 0 {
		return
	}
	targets := map[string][]int{}
	switch g.Strategy {
	case StrategyRange:
		per, extra := g.Partitions/len(ids), g.Partitions%len(ids)
		p := 0
		for i, id := range ids {
			n := per
			if i < extra {
				n++
			}
			for range n {
				targets[id] = append(targets[id], p)
				p++
			}
		}
	case StrategyRoundRobin:
		for p := range g.Partitions {
			id := ids[p%len(ids)]
			targets[id] = append(targets[id], p)
		}
	default: // cooperative-sticky: keep what stays balanced, move the rest
		quota := func(i int) int {
			n := g.Partitions / len(ids)
			if i < g.Partitions%len(ids) {
				n++
			}
			return n
		}
		// Members that already hold more partitions get the larger quotas,
		// so fewer partitions move.
		order := slices.Clone(ids)
		sort.SliceStable(order, func(a, b int) bool {
			return len(g.Members[order[a]].Target) > len(g.Members[order[b]].Target)
		})
		taken := map[int]bool{}
		for i, id := range order {
			for _, p := range g.Members[id].Target {
				if p < g.Partitions && !taken[p] && len(targets[id]) < quota(i) {
					targets[id] = append(targets[id], p)
					taken[p] = true
				}
			}
		}
		for p := range g.Partitions {
			if taken[p] {
				continue
			}
			for i, id := range order {
				if len(targets[id]) < quota(i) {
					targets[id] = append(targets[id], p)
					taken[p] = true
					break
				}
			}
		}
	}
	for _, id := range ids {
		t := targets[id]
		slices.Sort(t)
		g.Members[id].Target = t
	}
}

func (s *groupsSM) Lookup(q any) (any, error) {
	name, _ := q.(string)
	if name == "" {
		out := make([]*GroupState, 0, len(s.groups))
		for _, k := range slices.Sorted(maps.Keys(s.groups)) {
			out = append(out, s.groups[k].clone())
		}
		return out, nil
	}
	if g := s.groups[name]; g != nil {
		return g.clone(), nil
	}
	return (*GroupState)(nil), nil
}

func (s *groupsSM) SaveSnapshot(w io.Writer, _ sm.ISnapshotFileCollection, _ <-chan struct{}) error {
	return json.NewEncoder(w).Encode(s.groups)
}

// RecoverFromSnapshot replaces the state with a snapshot's. A snapshot that
// does not decode or validate is an error wrapping storage.ErrCorrupt, and
// the state is left as it was.
func (s *groupsSM) RecoverFromSnapshot(r io.Reader, _ []sm.SnapshotFile, _ <-chan struct{}) error {
	var groups map[string]*GroupState
	if err := json.NewDecoder(r).Decode(&groups); err != nil {
		return fmt.Errorf("%w: groups snapshot: %w", storage.ErrCorrupt, err)
	}
	if groups == nil {
		return fmt.Errorf("%w: groups snapshot: null", storage.ErrCorrupt)
	}
	for name, g := range groups {
		if err := g.check(name); err != nil {
			return fmt.Errorf("%w: groups snapshot: group %q: %w", storage.ErrCorrupt, name, err)
		}
	}
	s.groups = groups
	return nil
}

func (s *groupsSM) Close() error { return nil }

// GroupRequest is a command for the groups Raft group.
type GroupRequest struct {
	Op             string
	Group, Topic   string
	TopicID        uint64
	Partitions     int
	Strategy       string
	Member         string
	Static         bool
	SessionTimeout time.Duration
	Owned          []int
	Offsets        map[int]int64
	// Commits and Drop: a Kafka group's offsets to commit, and to delete,
	// by topic.
	Commits map[string]map[int]CommittedOffset
	Drop    map[string][]int
}

// Group proposes a group command and returns the group's state after it.
func (n *Node) Group(ctx context.Context, r GroupRequest) (*GroupState, error) {
	cmd, err := json.Marshal(groupCmd{
		Op: r.Op, Group: r.Group, Topic: r.Topic, TopicID: r.TopicID, Partitions: r.Partitions,
		Strategy: r.Strategy, Member: r.Member, Static: r.Static, SessionTimeout: int64(r.SessionTimeout),
		Owned: r.Owned, Offsets: r.Offsets, Commits: r.Commits, Drop: r.Drop, Now: time.Now().UnixNano(),
	})
	if err != nil {
		return nil, err
	}
	res, _, err := n.syncPropose(ctx, GroupsShardID, cmd)
	if err != nil {
		return nil, err
	}
	switch res.Value {
	case gOK:
	case gUnknownMember:
		return nil, ErrUnknownMember
	case gNotAssigned:
		return nil, ErrNotAssigned
	case gGroupNotFound:
		return nil, ErrGroupNotFound
	case gGroupTopic:
		return nil, ErrGroupTopic
	case gGroupNotEmpty:
		return nil, ErrGroupNotEmpty
	case gGroupKind:
		return nil, ErrGroupKind
	default:
		return nil, ErrInvalid
	}
	if len(res.Data) == 0 {
		return nil, nil
	}
	g := &GroupState{}
	return g, json.Unmarshal(res.Data, g)
}

// Groups reads every group (name "") or one group, linearizably.
func (n *Node) Groups(ctx context.Context, name string) ([]*GroupState, error) {
	v, err := n.syncRead(ctx, GroupsShardID, name)
	if err != nil {
		return nil, err
	}
	switch x := v.(type) {
	case []*GroupState:
		return x, nil
	case *GroupState:
		if x == nil {
			return nil, ErrGroupNotFound
		}
		return []*GroupState{x}, nil
	}
	return nil, ErrInvalid
}

// expireLoop proposes session expiry once a second while this node leads
// the groups Raft group, and transaction expiry while it leads the
// coordinator (see expireTxns), whose decided transactions it then
// completes (driveTxns); the time travels in the command.
func (n *Node) expireLoop() {
	defer n.wg.Done()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-n.stop:
			return
		case <-t.C:
		}
		n.expireTxns()
		n.driveTxns()
		if l, _ := n.leaderState(GroupsShardID); l != n.cfg.NodeID {
			continue
		}
		cmd, _ := json.Marshal(groupCmd{Op: gopExpire, Now: time.Now().UnixNano()})
		ctx, cancel := context.WithTimeout(context.Background(), n.cfg.AttemptTimeout)
		_, _ = n.nh.SyncPropose(ctx, n.nh.GetNoOPSession(GroupsShardID), cmd)
		cancel()
	}
}

// ClaimKafkaGroup makes group a Kafka group (Kind GroupKindKafka) if it
// does not exist, so that replog consumers cannot join it; it fails with
// ErrGroupKind if replog consumers use the name.
func (n *Node) ClaimKafkaGroup(ctx context.Context, group string) (*GroupState, error) {
	return n.Group(ctx, GroupRequest{Op: gopKafkaClaim, Group: group})
}

// CommitKafkaOffsets commits a Kafka group's offsets, by topic and
// partition, creating the group if need be; ErrGroupKind if replog
// consumers use the name.
func (n *Node) CommitKafkaOffsets(ctx context.Context, group string, commits map[string]map[int]CommittedOffset) (*GroupState, error) {
	return n.Group(ctx, GroupRequest{Op: gopKafkaCommit, Group: group, Commits: commits})
}

// DeleteKafkaOffsets drops a Kafka group's offsets of the given partitions,
// by topic.
func (n *Node) DeleteKafkaOffsets(ctx context.Context, group string, drop map[string][]int) (*GroupState, error) {
	return n.Group(ctx, GroupRequest{Op: gopKafkaDeleteOffsets, Group: group, Drop: drop})
}
