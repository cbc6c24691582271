package replog

import (
	"context"
	"fmt"
	"time"

	"github.com/replog/replog/replication"
	"github.com/replog/replog/storage"
)

// Limits on topics.
const (
	MaxTopicNameLen    = 249 // as Kafka
	MaxPartitions      = replication.MaxPartitions
	DefaultPartitions  = 1
	defaultMaxReplicas = 3
)

// Compression is a record-batch compression codec.
type Compression uint8

// Compression codecs. Batches are compressed once by the producer,
// replicated and stored compressed, and decompressed by the consumer.
const (
	CompressionNone   = Compression(storage.CompressionNone)
	CompressionGzip   = Compression(storage.CompressionGzip)
	CompressionSnappy = Compression(storage.CompressionSnappy)
	CompressionLZ4    = Compression(storage.CompressionLZ4)
	CompressionZstd   = Compression(storage.CompressionZstd)
)

func (c Compression) String() string { return storage.Compression(c).String() }

// TopicConfig configures [Log.CreateTopic]. The zero value is valid.
type TopicConfig struct {
	// Partitions is the number of partitions, 1 to MaxPartitions. Default 1.
	Partitions int
	// Replicas is how many nodes hold each partition, at most the number of
	// nodes. Default: 1 on a single node, else min(3, nodes).
	Replicas int
	// Compression is the default codec of the topic's producers. Default none.
	Compression Compression
}

func (c TopicConfig) withDefaults(nodes int) (TopicConfig, error) {
	if c.Partitions == 0 {
		c.Partitions = DefaultPartitions
	}
	if c.Replicas == 0 {
		c.Replicas = min(defaultMaxReplicas, nodes)
	}
	switch {
	case c.Partitions < 1 || c.Partitions > MaxPartitions:
		return c, fmt.Errorf("%w: %d partitions (want 1 to %d)", ErrInvalidConfig, c.Partitions, MaxPartitions)
	case c.Replicas < 1:
		return c, fmt.Errorf("%w: %d replicas", ErrInvalidConfig, c.Replicas)
	case c.Replicas > nodes:
		return c, fmt.Errorf("%w: %d replicas but %d nodes", ErrInvalidConfig, c.Replicas, nodes)
	case !storage.Compression(c.Compression).Valid():
		return c, fmt.Errorf("%w: compression %d", ErrInvalidConfig, c.Compression)
	}
	return c, nil
}

// ValidateTopicName checks Kafka's rules: 1 to 249 characters of
// [a-zA-Z0-9._-], and not "." or "..".
func ValidateTopicName(name string) error {
	if name == "" || len(name) > MaxTopicNameLen || name == "." || name == ".." {
		return fmt.Errorf("%w: topic name %q must have 1 to %d characters and be neither \".\" nor \"..\"", ErrInvalidConfig, name, MaxTopicNameLen)
	}
	for _, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-') {
			return fmt.Errorf("%w: topic name %q has %q (allowed: a-z A-Z 0-9 . _ -)", ErrInvalidConfig, name, r)
		}
	}
	return nil
}

// TopicInfo describes a topic.
type TopicInfo struct {
	Name        string
	Partitions  int
	Replicas    int
	Compression Compression
	Created     time.Time
	// PartitionReplicas lists, per partition, the node ids holding a replica.
	PartitionReplicas [][]uint64
}

func topicInfo(t *replication.TopicMeta) TopicInfo {
	info := TopicInfo{
		Name: t.Name, Partitions: len(t.Partitions), Replicas: t.Replicas,
		Compression: Compression(t.Compression), Created: time.Unix(0, t.Created),
	}
	for _, p := range t.Partitions {
		info.PartitionReplicas = append(info.PartitionReplicas, append([]uint64(nil), p.Replicas...))
	}
	return info
}

// Topic is a handle on one topic, bound to the topic as it was created: if
// the topic is deleted (even if re-created under the same name) the handle
// fails with [ErrTopicNotFound]. Safe for concurrent use; it holds no
// resources and needs no closing.
type Topic struct {
	l    *Log
	meta *replication.TopicMeta
}

// Name is the topic's name.
func (t *Topic) Name() string { return t.meta.Name }

// Partitions is the number of partitions.
func (t *Topic) Partitions() int { return len(t.meta.Partitions) }

// Info describes the topic.
func (t *Topic) Info() TopicInfo { return topicInfo(t.meta) }

// check reports whether the Log is open and the topic still exists.
func (t *Topic) check() error {
	if t.l.isClosed() {
		return ErrClosed
	}
	if cur := t.l.node.Metadata().Topics[t.meta.Name]; cur == nil || cur.ID != t.meta.ID {
		return fmt.Errorf("%w: %q was deleted", ErrTopicNotFound, t.meta.Name)
	}
	return nil
}

// partition returns this node's replica of partition i.
func (t *Topic) partition(ctx context.Context, i int) (*replication.Partition, error) {
	if i < 0 || i >= len(t.meta.Partitions) {
		return nil, fmt.Errorf("%w: %s/%d (topic has %d)", ErrPartitionNotFound, t.meta.Name, i, len(t.meta.Partitions))
	}
	if err := t.check(); err != nil {
		return nil, err
	}
	p, err := t.l.node.Partition(ctx, t.meta.Partitions[i].Shard)
	return p, mapErr(err)
}

// PartitionOffsets are the bounds of one partition's log as applied on this
// node.
type PartitionOffsets struct {
	// LogStart is the first retained offset.
	LogStart int64
	// HighWatermark is the offset the next record will get; every offset
	// below it is committed.
	HighWatermark int64
}

// Offsets returns the bounds of partition i's log on this node.
func (t *Topic) Offsets(ctx context.Context, i int) (PartitionOffsets, error) {
	p, err := t.partition(ctx, i)
	if err != nil {
		return PartitionOffsets{}, err
	}
	if err := p.WaitOpen(ctx); err != nil {
		return PartitionOffsets{}, mapErr(err)
	}
	return PartitionOffsets{LogStart: p.LogStart(), HighWatermark: p.HighWatermark()}, nil
}

// Leader returns the id of the node leading partition i's Raft group, as
// this node knows it (0 while an election is under way).
func (t *Topic) Leader(ctx context.Context, i int) (uint64, error) {
	p, err := t.partition(ctx, i)
	if err != nil {
		return 0, err
	}
	return t.l.node.LeaderNode(p.Shard), nil
}

// TransferLeader moves the leadership of partition i to node (as Kafka's
// preferred leader election does) and waits until it has moved or ctx ends.
// A ctx without deadline gets 30s.
func (t *Topic) TransferLeader(ctx context.Context, i int, node uint64) error {
	p, err := t.partition(ctx, i)
	if err != nil {
		return err
	}
	ctx, cancel := withDefaultDeadline(ctx, defaultTimeout)
	defer cancel()
	return mapErr(t.l.node.TransferLeader(ctx, p.Shard, node))
}
