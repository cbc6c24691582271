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
	Kafka      bool
	Topic      string
	Strategy   string
	Generation int64 // bumped at every rebalance
	Members    []GroupMemberInfo
	Partitions []GroupPartitionInfo
}

// GroupMemberInfo describes one member.
type GroupMemberInfo struct {
	ID       string
	Static   bool
	Assigned []int // partitions the strategy gives it
	Owned    []int // partitions it reported reading
	LastSeen time.Time
}

// GroupPartitionInfo is one partition as the group sees it.
type GroupPartitionInfo struct {
	Topic     string
	Partition int
	Member    string // who owns it now ("" if no one)
	Committed int64  // next offset to read, -1 if nothing was committed
	// HighWatermark and Lag (HighWatermark - Committed, or the whole log
	// when nothing was committed) are as this node sees them; -1 when it
	// hosts no replica.
	HighWatermark int64
	Lag           int64
}

func (l *Log) groupInfo(ctx context.Context, g *replication.GroupState) GroupInfo {
	if g.Kind == replication.GroupKindKafka {
		return l.kafkaGroupInfo(ctx, g)
	}
	info := GroupInfo{Name: g.Name, Topic: g.Topic, Strategy: g.Strategy, Generation: g.Generation}
	owner := map[int]string{}
	for _, id := range slices.Sorted(maps.Keys(g.Members)) {
		m := g.Members[id]
		info.Members = append(info.Members, GroupMemberInfo{
			ID: id, Static: m.Static, Assigned: slices.Clone(m.Target), Owned: slices.Clone(m.Owned),
			LastSeen: time.Unix(0, m.LastSeen),
		})
		for _, p := range m.Owned {
			owner[p] = id
		}
	}
	var t *Topic
	if tm := l.node.Metadata().Topics[g.Topic]; tm != nil && tm.ID == g.TopicID {
		t = &Topic{l: l, meta: tm}
	}
	for p := range g.Partitions {
		pi := GroupPartitionInfo{Topic: g.Topic, Partition: p, Member: owner[p], Committed: -1, HighWatermark: -1, Lag: -1}
		if off, ok := g.Offsets[p]; ok {
			pi.Committed = off
		}
		pi.lag(ctx, t)
		info.Partitions = append(info.Partitions, pi)
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

// OffsetReset says where [Log.ResetGroupOffsets] moves a group: to explicit
// Offsets if set, else to the first record at or after Time if set, else to
// Start (Earliest or Latest).
type OffsetReset struct {
	Start   StartPosition
	Time    time.Time
	Offsets map[int]int64
}

// ResetGroupOffsets sets the committed offsets of a group without members
// (stop its consumers first, as Kafka requires). Computing earliest, latest
// or time offsets needs a replica of every partition on this node.
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
	tm := l.node.Metadata().Topics[g.Topic]
	if tm == nil || tm.ID != g.TopicID {
		return fmt.Errorf("%w: %q of group %q", ErrTopicNotFound, g.Topic, name)
	}
	t := &Topic{l: l, meta: tm}
	offsets := maps.Clone(r.Offsets)
	if offsets == nil {
		offsets = map[int]int64{}
		for p := range t.Partitions() {
			rp, err := t.partition(ctx, p)
			if err != nil {
				return err
			}
			if err := rp.WaitOpen(ctx); err != nil {
				return mapErr(err)
			}
			switch {
			case !r.Time.IsZero():
				off, err := rp.OffsetForTime(ctx, r.Time.UnixNano())
				if err != nil {
					return mapErr(err)
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
			return fmt.Errorf("%w: %s/%d", ErrPartitionNotFound, g.Topic, p)
		}
		if off < 0 {
			return fmt.Errorf("%w: offset %d for partition %d", ErrInvalidConfig, off, p)
		}
	}
	_, err = l.node.Group(ctx, replication.GroupRequest{Op: "reset", Group: name, Offsets: offsets})
	return mapErr(err)
}
