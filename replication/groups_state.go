package replication

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
)

// Bounds of a replog group spanning topics. Every replica applies each
// command, and a rebalance costs time linear in the partitions of the
// group's topics: the bounds keep one cheap, so that no command stalls the
// groups Raft group.
const (
	// MaxGroupTopics caps the topics of a group: those its members read,
	// and those it keeps offsets of.
	MaxGroupTopics = 256
	// MaxGroupPartitions caps the partitions of a group's topics, together.
	MaxGroupPartitions = 4 * MaxPartitions
)

// GroupState is one consumer group. Values handed out are copies.
//
// It is stored in one of two formats (see MarshalJSON): a replog group
// with one topic in the format of the versions before groups spanned
// topics (v1), byte for byte, so that their snapshots and answers stay
// what they were; any other in v2.
type GroupState struct {
	Name       string
	Strategy   string
	Generation int64
	Members    map[string]*MemberState
	// Kind is "" for a group of replog consumers, GroupKindKafka for a
	// group of Kafka clients.
	Kind string
	// Topics are a replog group's topics, by name: those its members read
	// and those it committed offsets for, each with its committed
	// offsets. A topic no member reads and without offsets is dropped at
	// the next join. A replog group has at least one.
	Topics map[string]*GroupTopic
	// TopicOffsets are a Kafka group's committed offsets by topic and
	// partition (a replog group keeps its offsets in Topics).
	TopicOffsets map[string]map[int]CommittedOffset
}

// GroupTopic is a topic of a replog group.
type GroupTopic struct {
	// ID is the topic's id: a topic deleted and created again under its
	// name has a new one, and the group's offsets of the old one do not
	// carry over.
	ID         uint64        `json:"id"`
	Partitions int           `json:"partitions"`
	Offsets    map[int]int64 `json:"offsets"` // committed: the next offset to read
}

// MemberState is one member of a group.
type MemberState struct {
	ID             string
	Static         bool
	SessionTimeout int64 // ns
	LastSeen       int64 // unix ns, from the proposer's clock
	// Topics are the topics the member reads (its subscription), sorted.
	Topics []string
	// Target are the partitions the strategy gives it, Owned those it
	// reports consuming, by topic; sorted, and a topic without any has
	// no entry.
	Target map[string][]int
	Owned  map[string][]int
}

// Topic returns the group's one topic and true, if it has exactly one.
func (g *GroupState) Topic() (string, *GroupTopic, bool) {
	if len(g.Topics) != 1 {
		return "", nil, false
	}
	for name, t := range g.Topics {
		return name, t, true
	}
	return "", nil, false
}

// Offset returns the offset the group committed for topic's partition p.
func (g *GroupState) Offset(topic string, p int) (int64, bool) {
	t := g.Topics[topic]
	if t == nil {
		return 0, false
	}
	off, ok := t.Offsets[p]
	return off, ok
}

func (g *GroupState) clone() *GroupState {
	c := *g
	c.Members = make(map[string]*MemberState, len(g.Members))
	for k, m := range g.Members {
		c.Members[k] = m.clone()
	}
	if g.Topics != nil {
		c.Topics = make(map[string]*GroupTopic, len(g.Topics))
		for name, t := range g.Topics {
			tc := *t
			tc.Offsets = maps.Clone(t.Offsets)
			c.Topics[name] = &tc
		}
	}
	if g.TopicOffsets != nil {
		c.TopicOffsets = make(map[string]map[int]CommittedOffset, len(g.TopicOffsets))
		for t, ps := range g.TopicOffsets {
			c.TopicOffsets[t] = maps.Clone(ps)
		}
	}
	return &c
}

func (m *MemberState) clone() *MemberState {
	c := *m
	c.Topics = slices.Clone(m.Topics)
	c.Target = cloneParts(m.Target)
	c.Owned = cloneParts(m.Owned)
	return &c
}

func cloneParts(ps map[string][]int) map[string][]int {
	if ps == nil {
		return nil
	}
	out := make(map[string][]int, len(ps))
	for t, p := range ps {
		out[t] = slices.Clone(p)
	}
	return out
}

// Granted is what a member may claim now, by topic: its target partitions
// that no other member still owns. A partition moving between members is
// handed over only after the old owner reports it revoked (cooperative
// rebalancing).
func (g *GroupState) Granted(member string) map[string][]int {
	m := g.Members[member]
	if m == nil {
		return nil
	}
	var out map[string][]int
	for topic, ps := range m.Target {
		others := g.ownedByOthers(member, topic)
		for _, p := range ps {
			if !others[p] {
				if out == nil {
					out = map[string][]int{}
				}
				out[topic] = append(out[topic], p)
			}
		}
	}
	return out
}

// ownedByOthers is the set of topic's partitions members other than member
// own.
func (g *GroupState) ownedByOthers(member, topic string) map[int]bool {
	out := map[int]bool{}
	for id, o := range g.Members {
		if id != member {
			for _, p := range o.Owned[topic] {
				out[p] = true
			}
		}
	}
	return out
}

// subscribed reports whether a member other than except reads topic.
func (g *GroupState) subscribed(topic, except string) bool {
	for id, m := range g.Members {
		if id != except && slices.Contains(m.Topics, topic) {
			return true
		}
	}
	return false
}

// partitionCount is the partitions of the group's topics, together.
func (g *GroupState) partitionCount() int {
	n := 0
	for _, t := range g.Topics {
		n += t.Partitions
	}
	return n
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
	case g.Strategy != "" && !validStrategy(g.Strategy):
		return fmt.Errorf("strategy %q", g.Strategy)
	case g.Kind != "" && g.Kind != GroupKindKafka:
		return fmt.Errorf("kind %q", g.Kind)
	case g.Kind == "" && len(g.TopicOffsets) > 0:
		return errors.New("a replog group with Kafka offsets")
	case g.Kind == GroupKindKafka && (len(g.Members) > 0 || len(g.Topics) > 0):
		return errors.New("a Kafka group with replog members or topics")
	case g.Kind == "" && (len(g.Topics) < 1 || len(g.Topics) > MaxGroupTopics):
		return fmt.Errorf("%d topics", len(g.Topics))
	}
	for topic, ps := range g.TopicOffsets {
		if !validKafkaOffsets(topic, ps) {
			return fmt.Errorf("offsets of topic %q", topic)
		}
	}
	if g.Members == nil {
		g.Members = map[string]*MemberState{}
	}
	// Partitions are checked against the bound, not against the topic's
	// count: a join may lower the count while members still own
	// partitions above it, and a snapshot must accept every state the
	// commands can reach.
	bad := func(p int) bool { return p < 0 || p >= MaxPartitions }
	total := 0
	for name, t := range g.Topics {
		switch {
		case t == nil:
			return fmt.Errorf("null topic %q", name)
		case len(name) > maxTopicName:
			return fmt.Errorf("topic name of %d bytes", len(name))
		case t.Partitions < 0 || t.Partitions > MaxPartitions:
			return fmt.Errorf("topic %q: %d partitions", name, t.Partitions)
		}
		total += t.Partitions
		if t.Offsets == nil {
			t.Offsets = map[int]int64{}
		}
		for p, off := range t.Offsets {
			if bad(p) || off < 0 {
				return fmt.Errorf("topic %q: offset %d for partition %d", name, off, p)
			}
		}
	}
	if total > MaxGroupPartitions {
		return fmt.Errorf("%d partitions", total)
	}
	parts := func(ps map[string][]int, subscribed []string) bool {
		for topic, p := range ps {
			if !slices.Contains(subscribed, topic) || slices.ContainsFunc(p, bad) || len(p) > MaxPartitions {
				return false
			}
		}
		return true
	}
	for id, m := range g.Members {
		switch {
		case m == nil:
			return fmt.Errorf("null member %q", id)
		case m.ID != id:
			return fmt.Errorf("member %q under %q", m.ID, id)
		case len(m.Topics) == 0 || !slices.IsSorted(m.Topics) || len(slices.Compact(slices.Clone(m.Topics))) != len(m.Topics):
			return fmt.Errorf("member %q: topics %q", id, m.Topics)
		case !parts(m.Target, m.Topics) || !parts(m.Owned, m.Topics):
			return fmt.Errorf("member %q: partitions %v, %v out of range", id, m.Target, m.Owned)
		}
		for _, t := range m.Topics {
			if g.Topics[t] == nil {
				return fmt.Errorf("member %q reads topic %q, not the group's", id, t)
			}
		}
	}
	return nil
}

// The JSON formats. v1 is the format of the versions before groups spanned
// topics: one topic, members' partitions as bare numbers. A replog group
// with one topic is still written in it, byte for byte as those versions
// wrote it, and so is a Kafka group; a group with several topics is
// written in v2, marked by "format":2, which those versions cannot read.

// groupV1 is the v1 format; its field order is the format's.
type groupV1 struct {
	Name         string                             `json:"name"`
	Topic        string                             `json:"topic"`
	TopicID      uint64                             `json:"topic_id"`
	Partitions   int                                `json:"partitions"`
	Strategy     string                             `json:"strategy"`
	Generation   int64                              `json:"generation"`
	Members      map[string]*memberV1               `json:"members"`
	Offsets      map[int]int64                      `json:"offsets"`
	Kind         string                             `json:"kind,omitempty"`
	TopicOffsets map[string]map[int]CommittedOffset `json:"topic_offsets,omitempty"`
}

type memberV1 struct {
	ID             string `json:"id"`
	Static         bool   `json:"static"`
	SessionTimeout int64  `json:"session_timeout"`
	LastSeen       int64  `json:"last_seen"`
	Target         []int  `json:"target"`
	Owned          []int  `json:"owned"`
}

// groupV2 is the v2 format.
type groupV2 struct {
	Format     int                    `json:"format"`
	Name       string                 `json:"name"`
	Strategy   string                 `json:"strategy"`
	Generation int64                  `json:"generation"`
	Members    map[string]*memberV2   `json:"members"`
	Topics     map[string]*GroupTopic `json:"topics"`
}

type memberV2 struct {
	ID             string           `json:"id"`
	Static         bool             `json:"static"`
	SessionTimeout int64            `json:"session_timeout"`
	LastSeen       int64            `json:"last_seen"`
	Topics         []string         `json:"topics"`
	Target         map[string][]int `json:"target,omitempty"`
	Owned          map[string][]int `json:"owned,omitempty"`
}

// groupAny reads either format: "format" tells which.
type groupAny struct {
	Format int `json:"format"`
	groupV1
	Members map[string]*json.RawMessage `json:"members"`
	Topics  map[string]*GroupTopic      `json:"topics"`
}

// MarshalJSON writes g in the v1 format if it is a Kafka group or a replog
// group with one topic, else in v2.
func (g GroupState) MarshalJSON() ([]byte, error) {
	name, t, one := g.Topic()
	if g.Kind != "" || one {
		v := groupV1{Name: g.Name, Strategy: g.Strategy, Generation: g.Generation,
			Members: make(map[string]*memberV1, len(g.Members)), Offsets: map[int]int64{},
			Kind: g.Kind, TopicOffsets: g.TopicOffsets}
		if one {
			v.Topic, v.TopicID, v.Partitions = name, t.ID, t.Partitions
			if t.Offsets != nil {
				v.Offsets = t.Offsets
			}
		}
		for id, m := range g.Members {
			v.Members[id] = &memberV1{ID: m.ID, Static: m.Static, SessionTimeout: m.SessionTimeout,
				LastSeen: m.LastSeen, Target: m.Target[name], Owned: m.Owned[name]}
		}
		return json.Marshal(v)
	}
	v := groupV2{Format: 2, Name: g.Name, Strategy: g.Strategy, Generation: g.Generation,
		Members: make(map[string]*memberV2, len(g.Members)), Topics: g.Topics}
	for id, m := range g.Members {
		v.Members[id] = &memberV2{ID: m.ID, Static: m.Static, SessionTimeout: m.SessionTimeout,
			LastSeen: m.LastSeen, Topics: m.Topics, Target: m.Target, Owned: m.Owned}
	}
	return json.Marshal(v)
}

// UnmarshalJSON reads g in either format. It checks the shape only;
// [GroupState.check] checks the values.
func (g *GroupState) UnmarshalJSON(b []byte) error {
	var a groupAny
	if err := json.Unmarshal(b, &a); err != nil {
		return err
	}
	*g = GroupState{Name: a.Name, Strategy: a.Strategy, Generation: a.Generation, Kind: a.Kind,
		TopicOffsets: a.TopicOffsets}
	if a.Members != nil {
		g.Members = make(map[string]*MemberState, len(a.Members))
	}
	switch a.Format {
	case 0:
		if a.Topics != nil {
			return errors.New("v1 group with v2 topics")
		}
		if a.Kind == "" {
			g.Topics = map[string]*GroupTopic{a.Topic: {ID: a.TopicID, Partitions: a.Partitions, Offsets: a.Offsets}}
		} else if a.Topic != "" || a.TopicID != 0 || a.Partitions != 0 || len(a.Offsets) > 0 {
			return errors.New("a Kafka group with a replog topic")
		}
		for id, raw := range a.Members {
			if raw == nil {
				g.Members[id] = nil
				continue
			}
			var m memberV1
			if err := json.Unmarshal(*raw, &m); err != nil {
				return err
			}
			ms := &MemberState{ID: m.ID, Static: m.Static, SessionTimeout: m.SessionTimeout, LastSeen: m.LastSeen,
				Topics: []string{a.Topic}}
			if len(m.Target) > 0 {
				ms.Target = map[string][]int{a.Topic: m.Target}
			}
			if len(m.Owned) > 0 {
				ms.Owned = map[string][]int{a.Topic: m.Owned}
			}
			g.Members[id] = ms
		}
	case 2:
		if a.Kind != "" || a.Topic != "" || a.TopicID != 0 || a.Partitions != 0 || a.Offsets != nil || a.TopicOffsets != nil {
			return errors.New("v2 group with v1 fields")
		}
		g.Topics = a.Topics
		for id, raw := range a.Members {
			if raw == nil {
				g.Members[id] = nil
				continue
			}
			var m memberV2
			if err := json.Unmarshal(*raw, &m); err != nil {
				return err
			}
			g.Members[id] = &MemberState{ID: m.ID, Static: m.Static, SessionTimeout: m.SessionTimeout,
				LastSeen: m.LastSeen, Topics: m.Topics, Target: m.Target, Owned: m.Owned}
		}
	default:
		return fmt.Errorf("group format %d", a.Format)
	}
	return nil
}
