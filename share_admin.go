package replog

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/replog/replog/replication"
)

// ShareGroupInfo describes a share group (Kafka's DescribeShareGroups and
// DescribeShareGroupOffsets): its share partitions, as the share
// coordinator holds them.
type ShareGroupInfo struct {
	Name string
	// Members lists, sorted, the members that hold a record under an
	// unexpired lock. Members that hold nothing are not known to the
	// coordinator and are not listed: a share group has no membership
	// (see [ShareConsumer]).
	Members []string
	// Partitions, by topic and partition.
	Partitions []SharePartitionInfo
}

// Empty reports whether no member of the group holds a record under an
// unexpired lock: what [Log.ResetShareGroup] and [Log.DeleteShareGroup]
// require.
func (g ShareGroupInfo) Empty() bool { return len(g.Members) == 0 }

// SharePartitionInfo describes one share partition of a share group.
type SharePartitionInfo struct {
	Topic     string
	Partition int
	// Start is the share-partition start offset: every record before it
	// is done (accepted, rejected, or gone from the log).
	Start int64
	// The records in flight after Start (at most [MaxShareInFlight]), by
	// state. Acquired counts records under an unexpired lock; Available
	// those to be delivered again (released, or their lock expired),
	// including those whose release delay has not passed;
	// Acknowledged those accepted and Rejected those rejected (or given up
	// after MaxDeliveries), done but behind a record that is not.
	// Records after the window were never acquired and count in none.
	Acquired, Available, Acknowledged, Rejected int
	// Members holding records of the partition under an unexpired lock,
	// sorted.
	Members []string
	// HighWatermark of the partition, and Lag: the records from Start
	// (or the log start, if retention removed records after Start) to
	// the high watermark that are not done, acquired ones included. Both
	// -1 if this node has no replica of the partition, or the topic was
	// deleted (the coordinator forgets such partitions within seconds).
	HighWatermark int64
	Lag           int64
}

// ListShareGroups lists the share groups, by name. A share group exists
// from its first acquisition (or [Log.ResetShareGroup]) until
// [Log.DeleteShareGroup], or until its topics are deleted; share groups
// are not forgotten for being idle (Kafka forgets empty ones after
// offsets.retention.minutes, 7 days). A ctx without deadline gets 30s.
func (l *Log) ListShareGroups(ctx context.Context) ([]ShareGroupInfo, error) {
	if l.isClosed() {
		return nil, ErrClosed
	}
	ctx, cancel := withDefaultDeadline(ctx, defaultTimeout)
	defer cancel()
	names, err := l.node.ShareGroups(ctx)
	if err != nil {
		return nil, mapErr(err)
	}
	out := make([]ShareGroupInfo, 0, len(names))
	for _, name := range names {
		ps, err := l.node.ShareGroup(ctx, name)
		if errors.Is(err, replication.ErrGroupNotFound) {
			continue // deleted since the list was read
		}
		if err != nil {
			return nil, mapErr(err)
		}
		out = append(out, l.shareGroupInfo(ctx, name, ps))
	}
	return out, nil
}

// DescribeShareGroup describes one share group: per topic and partition,
// the start offset, the records in flight by state, the members holding
// records and the lag. [ErrGroupNotFound] if the coordinator holds no
// state of the group.
func (l *Log) DescribeShareGroup(ctx context.Context, group string) (ShareGroupInfo, error) {
	if l.isClosed() {
		return ShareGroupInfo{}, ErrClosed
	}
	ctx, cancel := withDefaultDeadline(ctx, defaultTimeout)
	defer cancel()
	ps, err := l.node.ShareGroup(ctx, group)
	if err != nil {
		return ShareGroupInfo{}, mapErr(err)
	}
	return l.shareGroupInfo(ctx, group, ps), nil
}

func (l *Log) shareGroupInfo(ctx context.Context, group string, ps []*replication.SharePartitionState) ShareGroupInfo {
	info := ShareGroupInfo{Name: group}
	now := time.Now().UnixNano()
	md := l.node.Metadata()
	all := map[string]bool{}
	for _, p := range ps {
		pi := SharePartitionInfo{Topic: p.Topic, Partition: p.Partition, Start: p.Start, HighWatermark: -1, Lag: -1}
		held := map[string]bool{}
		pi.Acquired, pi.Available, pi.Acknowledged, pi.Rejected = shareInFlight(p, now, held)
		pi.Members = slices.Sorted(maps.Keys(held))
		for m := range held {
			all[m] = true
		}
		if tm := md.Topics[p.Topic]; tm != nil && tm.ID == p.TopicID && p.Partition < len(tm.Partitions) {
			t := &Topic{l: l, meta: tm}
			if o, err := t.Offsets(ctx, p.Partition); err == nil {
				pi.HighWatermark = o.HighWatermark
				pi.Lag = shareLag(p, o.LogStart, o.HighWatermark)
			}
		}
		info.Partitions = append(info.Partitions, pi)
	}
	info.Members = slices.Sorted(maps.Keys(all))
	return info
}

// shareInFlight counts p's records in flight by state at now (see
// [SharePartitionInfo]), and adds to held the members holding one under an
// unexpired lock.
func shareInFlight(p *replication.SharePartitionState, now int64, held map[string]bool) (acquired, available, acknowledged, rejected int) {
	for _, r := range p.InFlight {
		switch {
		case r.State == replication.ShareAcquired && r.Deadline > now:
			acquired++
			held[r.Member] = true
		case r.State == replication.ShareAcquired, r.State == replication.ShareAvailable:
			available++
		case r.State == replication.ShareAcknowledged:
			acknowledged++
		default:
			rejected++
		}
	}
	return acquired, available, acknowledged, rejected
}

// shareLag counts the records of [max(Start, logStart), hw) that are not
// done.
func shareLag(p *replication.SharePartitionState, logStart, hw int64) int64 {
	from := max(p.Start, logStart)
	if hw <= from {
		return 0
	}
	lag := hw - from
	for i, r := range p.InFlight {
		off := p.Start + int64(i)
		if off >= from && off < hw && (r.State == replication.ShareAcknowledged || r.State == replication.ShareArchived) {
			lag--
		}
	}
	return lag
}

// ResetShareGroup moves a share group's start offsets of r.Topic (Kafka's
// AlterShareGroupOffsets; r as for [Log.ResetGroupOffsets]: explicit
// Offsets, else the first record at or after Time, else Start, Earliest
// or Latest), forgetting the records in flight there: delivery counts
// start afresh, and records before the new start, done or not, are never
// delivered (moved backwards, those after it are delivered again). Only
// while no member of the group holds a record under an unexpired lock
// ([ErrGroupNotEmpty] otherwise; stop the members, or let their locks
// expire, as Kafka requires an empty group); members that hold nothing
// may keep polling and read from the new start. r.Topic is required
// unless the group reads a single topic. A group the coordinator holds no
// state of is created: this is how a new share group starts elsewhere
// than at the log start. Computing earliest, latest or time offsets needs
// a replica of every partition on this node. The other partitions of the
// topic keep theirs when Offsets names some.
func (l *Log) ResetShareGroup(ctx context.Context, group string, r OffsetReset) error {
	if l.isClosed() {
		return ErrClosed
	}
	if group == "" || len(group) > replication.MaxShareNameLength {
		return fmt.Errorf("%w: share group name of %d bytes (1 to %d)", ErrInvalidConfig, len(group), replication.MaxShareNameLength)
	}
	ctx, cancel := withDefaultDeadline(ctx, defaultTimeout)
	defer cancel()
	topic := r.Topic
	if topic == "" {
		ps, err := l.node.ShareGroup(ctx, group)
		if err != nil {
			return fmt.Errorf("%w (OffsetReset.Topic names the topic of a new share group)", mapErr(err))
		}
		for _, p := range ps {
			if topic != "" && p.Topic != topic {
				return fmt.Errorf("%w: share group %q reads several topics: OffsetReset.Topic names the one to reset", ErrInvalidConfig, group)
			}
			topic = p.Topic
		}
	}
	tm := l.node.Metadata().Topics[topic]
	if tm == nil {
		return fmt.Errorf("%w: %q of share group %q", ErrTopicNotFound, topic, group)
	}
	t := &Topic{l: l, meta: tm}
	offsets, err := t.resetOffsets(ctx, r)
	if err != nil {
		return err
	}
	if len(offsets) == 0 {
		return fmt.Errorf("%w: no partition to reset", ErrInvalidConfig)
	}
	err = l.node.ShareReset(ctx, group, topic, tm.ID, offsets)
	if err != nil {
		return fmt.Errorf("%w (share group %q)", mapErr(err), group)
	}
	return nil
}

// DeleteShareGroup forgets a share group's state: its start offsets,
// records in flight and config ([Log.SetShareGroupConfig]; Kafka's
// DeleteShareGroups). Only while no member holds a record under an
// unexpired lock ([ErrGroupNotEmpty] otherwise); [ErrGroupNotFound] if
// the coordinator holds neither state nor config of the group. A
// member that polls afterwards starts the group afresh, at the log start.
func (l *Log) DeleteShareGroup(ctx context.Context, group string) error {
	if l.isClosed() {
		return ErrClosed
	}
	if group == "" || len(group) > replication.MaxShareNameLength {
		return fmt.Errorf("%w: share group name of %d bytes (1 to %d)", ErrInvalidConfig, len(group), replication.MaxShareNameLength)
	}
	ctx, cancel := withDefaultDeadline(ctx, defaultTimeout)
	defer cancel()
	if err := l.node.ShareDeleteGroup(ctx, group); err != nil {
		return fmt.Errorf("%w (share group %q)", mapErr(err), group)
	}
	return nil
}

// DeleteShareGroupOffsets forgets a share group's state of one topic: its
// start offsets and records in flight there (Kafka's
// DeleteShareGroupOffsets); a member that polls the topic afterwards
// starts it afresh. Only while no member of the group holds a record
// under an unexpired lock ([ErrGroupNotEmpty] otherwise);
// [ErrGroupNotFound] if the coordinator holds no state of the group. A
// topic the group has no state of is no error. A ctx without deadline
// gets 30s.
func (l *Log) DeleteShareGroupOffsets(ctx context.Context, group, topic string) error {
	if l.isClosed() {
		return ErrClosed
	}
	if err := checkShareGroupName(group); err != nil {
		return err
	}
	if topic == "" {
		return fmt.Errorf("%w: no topic", ErrInvalidConfig)
	}
	ctx, cancel := withDefaultDeadline(ctx, defaultTimeout)
	defer cancel()
	if err := l.node.ShareDeleteTopic(ctx, group, topic); err != nil {
		return fmt.Errorf("%w (share group %q, topic %q)", mapErr(err), group, topic)
	}
	return nil
}
