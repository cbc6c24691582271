package replog

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/replog/replog/replication"
)

// GroupInfo describes a consumer group.
type GroupInfo struct {
	Name string
	// Kafka: the group's members are Kafka clients of a listener (package
	// kafka). Its committed offsets are replicated here and may span
	// topics (Topic is then empty, and each partition names its topic);
	// its members and their assignment are the listener's, which Kafka's
	// DescribeGroups shows.
	Kafka bool
	// Topic is the group's topic if it has one; empty if it has several
	// (see Topics).
	Topic string
	// Topics are a replog group's topics, sorted: those its members read,
	// and those it keeps committed offsets of.
	Topics     []string
	Strategy   string
	Generation int64 // bumped at every rebalance
	Members    []GroupMemberInfo
	// Partitions are the partitions of the group's topics, by topic and
	// partition.
	Partitions []GroupPartitionInfo
}

// GroupMemberInfo describes one member.
type GroupMemberInfo struct {
	ID     string
	Static bool
	// Topics are the topics the member reads.
	Topics []string
	// Assigned and Owned are the partitions the strategy gives it and
	// those it reported reading, in a group of one topic; nil in a group
	// of several (see AssignedTopics and OwnedTopics).
	Assigned []int
	Owned    []int
	// AssignedTopics and OwnedTopics are Assigned and Owned by topic and
	// partition, in any group.
	AssignedTopics []TopicPartition
	OwnedTopics    []TopicPartition
	LastSeen       time.Time
}

// GroupPartitionInfo is one partition as the group sees it.
type GroupPartitionInfo struct {
	Topic     string
	Partition int
	Member    string // who owns it now ("" if no one)
	Committed int64  // next offset to read, -1 if nothing was committed
	// HighWatermark and Lag (HighWatermark - Committed, or the whole log
	// when nothing was committed) are as this node sees them; -1 when it
	// hosts no replica, or the topic was deleted (or deleted and created
	// again: the group's offsets are of the old one).
	HighWatermark int64
	Lag           int64
}

func (l *Log) groupInfo(ctx context.Context, g *replication.GroupState) GroupInfo {
	if g.Kind == replication.GroupKindKafka {
		return l.kafkaGroupInfo(ctx, g)
	}
	info := GroupInfo{Name: g.Name, Topics: slices.Sorted(maps.Keys(g.Topics)), Strategy: g.Strategy, Generation: g.Generation}
	one, _, single := g.Topic()
	if single {
		info.Topic = one
	}
	owner := map[TopicPartition]string{}
	for _, id := range slices.Sorted(maps.Keys(g.Members)) {
		m := g.Members[id]
		mi := GroupMemberInfo{ID: id, Static: m.Static, Topics: slices.Clone(m.Topics),
			AssignedTopics: flat(m.Target), OwnedTopics: flat(m.Owned), LastSeen: time.Unix(0, m.LastSeen)}
		if single {
			mi.Assigned, mi.Owned = slices.Clone(m.Target[one]), slices.Clone(m.Owned[one])
		}
		info.Members = append(info.Members, mi)
		for _, tp := range mi.OwnedTopics {
			owner[tp] = id
		}
	}
	md := l.node.Metadata()
	for _, name := range info.Topics {
		gt := g.Topics[name]
		var t *Topic
		if tm := md.Topics[name]; tm != nil && tm.ID == gt.ID {
			t = &Topic{l: l, meta: tm}
		}
		for p := range gt.Partitions {
			pi := GroupPartitionInfo{Topic: name, Partition: p, Member: owner[TopicPartition{name, p}],
				Committed: -1, HighWatermark: -1, Lag: -1}
			if off, ok := gt.Offsets[p]; ok {
				pi.Committed = off
			}
			if t != nil && p < t.Partitions() {
				pi.lag(ctx, t)
			}
			info.Partitions = append(info.Partitions, pi)
		}
	}
	return info
}

// lag fills in the high watermark and lag of p from t, if t is not nil
// and this node has a replica of the partition.
func (pi *GroupPartitionInfo) lag(ctx context.Context, t *Topic) {
	if t == nil {
		return
	}
	if o, err := t.Offsets(ctx, pi.Partition); err == nil {
		pi.HighWatermark = o.HighWatermark
		from := pi.Committed
		if from < 0 {
			from = o.LogStart
		}
		pi.Lag = max(0, o.HighWatermark-from)
	}
}

// kafkaGroupInfo describes a Kafka group: the partitions it committed
// offsets for, by topic and partition.
func (l *Log) kafkaGroupInfo(ctx context.Context, g *replication.GroupState) GroupInfo {
	info := GroupInfo{Name: g.Name, Kafka: true}
	md := l.node.Metadata()
	for _, topic := range slices.Sorted(maps.Keys(g.TopicOffsets)) {
		var t *Topic
		if tm := md.Topics[topic]; tm != nil {
			t = &Topic{l: l, meta: tm}
		}
		ps := g.TopicOffsets[topic]
		for _, p := range slices.Sorted(maps.Keys(ps)) {
			pi := GroupPartitionInfo{Topic: topic, Partition: p, Committed: ps[p].Offset, HighWatermark: -1, Lag: -1}
			if t != nil && p < t.Partitions() {
				pi.lag(ctx, t)
			}
			info.Partitions = append(info.Partitions, pi)
		}
	}
	return info
}

// ListGroups lists the consumer groups, by name. A ctx without deadline
// gets 30s.
func (l *Log) ListGroups(ctx context.Context) ([]GroupInfo, error) {
	if l.isClosed() {
		return nil, ErrClosed
	}
	ctx, cancel := withDefaultDeadline(ctx, defaultTimeout)
	defer cancel()
	gs, err := l.node.Groups(ctx, "")
	if err != nil {
		return nil, mapErr(err)
	}
	out := make([]GroupInfo, 0, len(gs))
	for _, g := range gs {
		out = append(out, l.groupInfo(ctx, g))
	}
	return out, nil
}

// DescribeGroup describes one group: members, assignment, committed
// offsets and lag per partition.
func (l *Log) DescribeGroup(ctx context.Context, name string) (GroupInfo, error) {
	if l.isClosed() {
		return GroupInfo{}, ErrClosed
	}
	ctx, cancel := withDefaultDeadline(ctx, defaultTimeout)
	defer cancel()
	gs, err := l.node.Groups(ctx, name)
	if err != nil {
		return GroupInfo{}, fmt.Errorf("%w (group %q)", mapErr(err), name)
	}
	return l.groupInfo(ctx, gs[0]), nil
}

// DeleteGroup deletes a group without members, and its committed offsets.
func (l *Log) DeleteGroup(ctx context.Context, name string) error {
	if l.isClosed() {
		return ErrClosed
	}
	ctx, cancel := withDefaultDeadline(ctx, defaultTimeout)
	defer cancel()
	_, err := l.node.Group(ctx, replication.GroupRequest{Op: "delete", Group: name})
	return mapErr(err)
}

// OffsetReset says where [Log.ResetGroupOffsets] moves a group's offsets
// of Topic: to explicit Offsets if set, else to the first record at or
// after Time if set, else to Start (Earliest or Latest).
type OffsetReset struct {
	// Topic is the topic whose offsets move; the group's others keep
	// theirs. Empty: the group's topic, if it has just one, and
	// [ErrTopicNotFound] if that topic was deleted (or deleted and created
	// again). A topic named here is taken as it exists now: a topic the
	// group has no offsets of yet gets these, for members that will read
	// it, and one the group knew under an older id (deleted and created
	// again) gets these in place of the old topic's.
	Topic   string
	Start   StartPosition
	Time    time.Time
	Offsets map[int]int64
}

// ResetGroupOffsets sets the committed offsets of one topic of a group
// without members (stop its consumers first, as Kafka requires), replacing
// those the group had for that topic. Computing earliest, latest or time
// offsets needs a replica of every partition on this node. A group of
// several topics needs [OffsetReset.Topic].
func (l *Log) ResetGroupOffsets(ctx context.Context, name string, r OffsetReset) error {
	if l.isClosed() {
		return ErrClosed
	}
	ctx, cancel := withDefaultDeadline(ctx, defaultTimeout)
	defer cancel()
	gs, err := l.node.Groups(ctx, name)
	if err != nil {
		return mapErr(err)
	}
	g := gs[0]
	if g.Kind == replication.GroupKindKafka {
		return fmt.Errorf("%w: %q is a Kafka group: reset its offsets with a Kafka client's OffsetCommit", ErrGroupKind, name)
	}
	topic := r.Topic
	if topic == "" {
		one, _, single := g.Topic()
		if !single {
			return fmt.Errorf("%w: group %q reads %d topics: OffsetReset.Topic names the one to reset", ErrInvalidConfig, name, len(g.Topics))
		}
		topic = one
	}
	tm := l.node.Metadata().Topics[topic]
	if gt := g.Topics[topic]; tm == nil || (r.Topic == "" && gt != nil && tm.ID != gt.ID) {
		return fmt.Errorf("%w: %q of group %q", ErrTopicNotFound, topic, name)
	}
	t := &Topic{l: l, meta: tm}
	offsets, err := t.resetOffsets(ctx, r)
	if err != nil {
		return err
	}
	_, err = l.node.Group(ctx, replication.GroupRequest{Op: replication.GroupOpReset, Group: name,
		Topic: topic, TopicID: tm.ID, Partitions: t.Partitions(), Offsets: offsets})
	return mapErr(err)
}

// resetOffsets resolves r into an offset per partition of t: r.Offsets as
// given (checked), or every partition's offset at r.Time, its high
// watermark (Latest) or its log start, read from this node's replicas.
func (t *Topic) resetOffsets(ctx context.Context, r OffsetReset) (map[int]int64, error) {
	offsets := maps.Clone(r.Offsets)
	if offsets == nil {
		offsets = map[int]int64{}
		for p := range t.Partitions() {
			rp, err := t.partition(ctx, p)
			if err != nil {
				return nil, err
			}
			if err := rp.WaitOpen(ctx); err != nil {
				return nil, mapErr(err)
			}
			switch {
			case !r.Time.IsZero():
				off, err := rp.OffsetForTime(ctx, r.Time.UnixNano())
				if err != nil {
					return nil, mapErr(err)
				}
				offsets[p] = off
			case r.Start == Latest:
				offsets[p] = rp.HighWatermark()
			default:
				offsets[p] = rp.LogStart()
			}
		}
	}
	for p, off := range offsets {
		if p < 0 || p >= t.Partitions() {
			return nil, fmt.Errorf("%w: %s/%d", ErrPartitionNotFound, t.meta.Name, p)
		}
		if off < 0 {
			return nil, fmt.Errorf("%w: offset %d for partition %d", ErrInvalidConfig, off, p)
		}
	}
	return offsets, nil
}
