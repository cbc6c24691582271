package replication

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
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
	ErrUnknownMember = errors.New("unknown group member")
	ErrNotAssigned   = errors.New("partition not assigned to this member")
	ErrGroupNotFound = errors.New("group not found")
	// ErrGroupTopic: a member joins with a topic that the group's other
	// members read under another id (deleted and created again), or a
	// command of an earlier version names partitions of one topic in a
	// group reading several.
	ErrGroupTopic = errors.New("group consumes another topic")
	// ErrGroupTooLarge: the group would pass MaxGroupTopics or
	// MaxGroupPartitions.
	ErrGroupTooLarge   = errors.New("group too large")
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
	// Topics: the topics a member reads (GroupOpJoin). Claims: what a
	// member reads and claims, by topic (GroupOpHeartbeat). TopicCommits:
	// offsets by topic and partition (GroupOpCommit).
	Topics       []TopicRef               `json:"topics,omitempty"`
	Claims       map[string][]int         `json:"claims,omitempty"`
	TopicCommits map[string]map[int]int64 `json:"topic_commits,omitempty"`
}

// TopicRef names a topic a group member reads: its name, id and
// partition count as the member sees them.
type TopicRef struct {
	Name       string `json:"name"`
	ID         uint64 `json:"id"`
	Partitions int    `json:"partitions"`
}

// Commands of replog groups whose members may read several topics. The
// commands of the versions before (gopJoin, gopHeartbeat, gopCommit,
// gopReset: partitions as bare numbers, of the group's one topic) still
// apply exactly as those versions applied them, for their entries in
// Raft logs; they are refused with gGroupTopic where they cannot mean
// one topic. Versions before these commands refuse them as invalid: every
// node of a cluster must run this version before its consumers join
// groups.
const (
	// GroupOpJoin joins a member reading Topics (Kafka's subscription).
	GroupOpJoin = "join-topics"
	// GroupOpHeartbeat reports what a member reads and claims, by topic
	// (Claims).
	GroupOpHeartbeat = "heartbeat-topics"
	// GroupOpCommit commits offsets by topic and partition (TopicCommits):
	// a member's of partitions it owns or is granted, or, without a
	// member, any of the group's topics' (a transaction's offsets).
	GroupOpCommit = "commit-topics"
	// GroupOpReset sets the offsets of one topic (Topic, TopicID,
	// Partitions) of a group without members, replacing those it had.
	GroupOpReset = "reset-topics"
	// GroupOpLeave and GroupOpDelete are as they were.
	GroupOpLeave  = gopLeave
	GroupOpDelete = gopDelete
)

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
	gGroupTooLarge
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
// refuses no command that was accepted before these checks. A group's
// topics have at most MaxGroupPartitions: the bound keeps a rebalance
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
	case GroupOpJoin:
		if c.Group == "" || c.Member == "" || c.SessionTimeout <= 0 || (c.Strategy != "" && !validStrategy(c.Strategy)) ||
			len(c.Topics) == 0 || len(c.Topics) > MaxGroupTopics {
			return false
		}
		seen, total := map[string]bool{}, 0
		for _, t := range c.Topics {
			if !validTopicName(t.Name) || seen[t.Name] || t.Partitions < 0 || t.Partitions > MaxPartitions {
				return false
			}
			seen[t.Name] = true
			total += t.Partitions
		}
		return total <= MaxGroupPartitions
	case gopHeartbeat:
		// Owned is what the member reads plus what it claims: at most
		// twice the partitions.
		return c.Group != "" && len(c.Owned) <= 2*MaxPartitions
	case GroupOpHeartbeat:
		if c.Group == "" || len(c.Claims) > MaxGroupTopics {
			return false
		}
		n := 0
		for topic, ps := range c.Claims {
			if !validTopicName(topic) {
				return false
			}
			n += len(ps)
		}
		return n <= 2*MaxGroupPartitions
	case gopLeave, gopDelete:
		return c.Group != ""
	case gopCommit, gopReset:
		return c.Group != "" && validOffsets(c.Offsets)
	case GroupOpCommit:
		if c.Group == "" || len(c.TopicCommits) > MaxGroupTopics {
			return false
		}
		for topic, ps := range c.TopicCommits {
			if !validTopicName(topic) || !validOffsets(ps) {
				return false
			}
		}
		return true
	case GroupOpReset:
		return c.Group != "" && validTopicName(c.Topic) && c.Partitions >= 0 && c.Partitions <= MaxPartitions &&
			validOffsets(c.Offsets)
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

func validTopicName(name string) bool { return name != "" && len(name) <= maxTopicName }

func validOffsets(offsets map[int]int64) bool {
	for p, off := range offsets {
		if p < 0 || p >= MaxPartitions || off < 0 {
			return false
		}
	}
	return true
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
			g = &GroupState{Name: c.Group, Kind: GroupKindKafka, Members: map[string]*MemberState{}}
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
		case gopJoin, gopCommit, gopReset, GroupOpJoin, GroupOpCommit, GroupOpReset:
			return gGroupKind, nil
		}
	}
	switch c.Op {
	case gopJoin:
		return s.joinV1(c)
	case GroupOpJoin:
		return s.join(c)
	case gopHeartbeat, GroupOpHeartbeat:
		if g == nil {
			return gUnknownMember, nil
		}
		m := g.Members[c.Member]
		if m == nil {
			return gUnknownMember, nil
		}
		claims := c.Claims
		if c.Op == gopHeartbeat {
			// Bare partitions: of the member's one topic.
			if len(m.Topics) != 1 {
				return gGroupTopic, nil
			}
			claims = map[string][]int{m.Topics[0]: c.Owned}
		}
		m.LastSeen = c.Now
		// A claim is what the member reads plus what it claims. It keeps
		// what it already owned (a partition it must give up stays its own
		// until it says so) and gets a claimed partition only if the
		// strategy gives it that partition and no other member owns it: a
		// member reads only what it owns here, so no partition is ever read
		// by two members of a group at once.
		// Sets, so that a long claim costs linear time.
		var owned map[string][]int
		for _, topic := range slices.Sorted(maps.Keys(claims)) {
			mine, target, others := set(m.Owned[topic]), set(m.Target[topic]), g.ownedByOthers(c.Member, topic)
			var ps []int
			for _, p := range claims[topic] {
				if mine[p] || (target[p] && !others[p]) {
					ps = append(ps, p)
				}
			}
			if len(ps) == 0 {
				continue
			}
			slices.Sort(ps)
			if owned == nil {
				owned = map[string][]int{}
			}
			owned[topic] = slices.Compact(ps)
		}
		m.Owned = owned
		return gOK, g
	case gopLeave:
		if g == nil || g.Members[c.Member] == nil {
			return gUnknownMember, nil
		}
		delete(g.Members, c.Member)
		g.rebalance()
		return gOK, g
	case gopCommit, GroupOpCommit:
		if g == nil {
			return gGroupNotFound, nil
		}
		commits := c.TopicCommits
		var m *MemberState
		if c.Member != "" {
			if m = g.Members[c.Member]; m == nil {
				return gUnknownMember, nil
			}
		}
		if c.Op == gopCommit {
			// Bare partitions: of the member's one topic, or without a
			// member, of the group's.
			topic, _, one := g.Topic()
			if m != nil {
				one = len(m.Topics) == 1
				if one {
					topic = m.Topics[0]
				}
			}
			if !one {
				return gGroupTopic, nil
			}
			commits = map[string]map[int]int64{topic: c.Offsets}
		}
		if m != nil {
			for topic := range commits {
				if g.Topics[topic] == nil {
					return gNotAssigned, nil
				}
			}
			granted := g.Granted(c.Member)
			for topic, ps := range commits {
				mine, ok := set(m.Owned[topic]), set(granted[topic])
				for p := range ps {
					if !mine[p] && !ok[p] {
						return gNotAssigned, nil
					}
				}
			}
			m.LastSeen = max(m.LastSeen, c.Now)
		} else {
			for topic, ps := range commits {
				t := g.Topics[topic]
				if t == nil {
					return gInvalid, nil
				}
				for p := range ps {
					if p >= t.Partitions {
						return gInvalid, nil
					}
				}
			}
		}
		for topic, ps := range commits {
			maps.Copy(g.Topics[topic].Offsets, ps)
		}
		return gOK, g
	case gopReset:
		if g == nil {
			return gGroupNotFound, nil
		}
		if len(g.Members) > 0 {
			return gGroupNotEmpty, nil
		}
		_, t, one := g.Topic()
		if !one {
			return gGroupTopic, nil
		}
		for p := range c.Offsets {
			if p >= t.Partitions {
				return gInvalid, nil
			}
		}
		t.Offsets = maps.Clone(c.Offsets)
		if t.Offsets == nil {
			t.Offsets = map[int]int64{}
		}
		return gOK, g
	case GroupOpReset:
		if g == nil {
			return gGroupNotFound, nil
		}
		if len(g.Members) > 0 {
			return gGroupNotEmpty, nil
		}
		for p := range c.Offsets {
			if p >= c.Partitions {
				return gInvalid, nil
			}
		}
		t := g.Topics[c.Topic]
		if t == nil {
			if len(g.Topics) >= MaxGroupTopics || g.partitionCount()+c.Partitions > MaxGroupPartitions {
				return gGroupTooLarge, nil
			}
			t = &GroupTopic{}
			g.Topics[c.Topic] = t
		} else if g.partitionCount()-t.Partitions+c.Partitions > MaxGroupPartitions {
			return gGroupTooLarge, nil
		}
		t.ID, t.Partitions = c.TopicID, c.Partitions
		t.Offsets = maps.Clone(c.Offsets)
		if t.Offsets == nil {
			t.Offsets = map[int]int64{}
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

// joinV1 applies a join of the versions before groups spanned topics, as
// they did: the group reads c.Topic; one with members reading another
// topic refuses it, and an empty one moves to it, dropping its offsets. A
// group reading several topics refuses it.
func (s *groupsSM) joinV1(c groupCmd) (uint64, *GroupState) {
	g := s.groups[c.Group]
	if g == nil {
		g = &GroupState{Name: c.Group, Strategy: c.Strategy, Members: map[string]*MemberState{},
			Topics: map[string]*GroupTopic{c.Topic: {ID: c.TopicID, Partitions: c.Partitions, Offsets: map[int]int64{}}}}
		s.groups[c.Group] = g
	}
	name, t, one := g.Topic()
	if !one {
		return gGroupTopic, nil
	}
	if t.ID != c.TopicID {
		if len(g.Members) > 0 {
			return gGroupTopic, nil
		}
		// An empty group moves to the new topic; its offsets meant the old one.
		name, t = c.Topic, &GroupTopic{ID: c.TopicID, Offsets: map[int]int64{}}
		g.Topics = map[string]*GroupTopic{name: t}
	}
	t.Partitions = c.Partitions
	if c.Strategy != "" {
		g.Strategy = c.Strategy
	}
	m, ok := g.Members[c.Member]
	if ok && m.Static {
		// A static member coming back keeps its partitions: no rebalance.
		m.LastSeen, m.SessionTimeout, m.Owned = c.Now, c.SessionTimeout, nil
		return gOK, g
	}
	g.Members[c.Member] = &MemberState{ID: c.Member, Static: c.Static, SessionTimeout: c.SessionTimeout,
		LastSeen: c.Now, Topics: []string{name}}
	g.rebalance()
	return gOK, g
}

// join applies GroupOpJoin: the member reads c.Topics, which join the
// group's topics. A topic the group knows under another id (deleted and
// created again) is refused with gGroupTopic while another member reads
// it; else it takes the new id, and the group's offsets of the old topic
// go.
func (s *groupsSM) join(c groupCmd) (uint64, *GroupState) {
	g := s.groups[c.Group]
	if g != nil {
		for _, t := range c.Topics {
			if gt := g.Topics[t.Name]; gt != nil && gt.ID != t.ID && g.subscribed(t.Name, c.Member) {
				return gGroupTopic, nil
			}
		}
	}
	names := make([]string, 0, len(c.Topics))
	for _, t := range c.Topics {
		names = append(names, t.Name)
	}
	slices.Sort(names)
	// The group's topics after the join, checked against the bounds before
	// anything changes: topics no member reads and without offsets go.
	topics := map[string]*GroupTopic{}
	if g != nil {
		for name, t := range g.Topics {
			if len(t.Offsets) > 0 || g.subscribed(name, c.Member) {
				topics[name] = t
			}
		}
	}
	for _, t := range c.Topics {
		gt := topics[t.Name]
		if gt == nil || gt.ID != t.ID {
			gt = &GroupTopic{ID: t.ID, Offsets: map[int]int64{}}
		} else {
			gt = &GroupTopic{ID: t.ID, Offsets: gt.Offsets}
		}
		gt.Partitions = t.Partitions
		topics[t.Name] = gt
	}
	total := 0
	for _, t := range topics {
		total += t.Partitions
	}
	if len(topics) > MaxGroupTopics || total > MaxGroupPartitions {
		return gGroupTooLarge, nil
	}
	if g == nil {
		g = &GroupState{Name: c.Group, Strategy: c.Strategy, Members: map[string]*MemberState{}}
		s.groups[c.Group] = g
	}
	// Members that stay keep their partitions of topics that went: none
	// reads such a topic, as only topics no other member reads go.
	g.Topics = topics
	if c.Strategy != "" {
		g.Strategy = c.Strategy
	}
	m, ok := g.Members[c.Member]
	if ok && m.Static && slices.Equal(m.Topics, names) {
		// A static member coming back keeps its partitions: no rebalance.
		m.LastSeen, m.SessionTimeout, m.Owned = c.Now, c.SessionTimeout, nil
		return gOK, g
	}
	g.Members[c.Member] = &MemberState{ID: c.Member, Static: c.Static, SessionTimeout: c.SessionTimeout,
		LastSeen: c.Now, Topics: names}
	g.rebalance()
	return gOK, g
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
	// Topics, Claims and TopicCommits: see GroupOpJoin, GroupOpHeartbeat
	// and GroupOpCommit.
	Topics       []TopicRef
	Claims       map[string][]int
	TopicCommits map[string]map[int]int64
}

// Group proposes a group command and returns the group's state after it.
func (n *Node) Group(ctx context.Context, r GroupRequest) (*GroupState, error) {
	cmd, err := json.Marshal(groupCmd{
		Op: r.Op, Group: r.Group, Topic: r.Topic, TopicID: r.TopicID, Partitions: r.Partitions,
		Strategy: r.Strategy, Member: r.Member, Static: r.Static, SessionTimeout: int64(r.SessionTimeout),
		Owned: r.Owned, Offsets: r.Offsets, Commits: r.Commits, Drop: r.Drop, Now: time.Now().UnixNano(),
		Topics: r.Topics, Claims: r.Claims, TopicCommits: r.TopicCommits,
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
	case gGroupTooLarge:
		return nil, ErrGroupTooLarge
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
