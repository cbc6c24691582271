package replog

import (
	"context"
	"fmt"
	"math"
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

// Cleanup is a topic's cleanup policy, a bit set as Kafka's
// cleanup.policy: [CleanupDelete], [CleanupCompact], or both
// (CleanupDelete|CleanupCompact, Kafka's "compact,delete").
type Cleanup uint8

// Cleanup policies.
const (
	// CleanupDelete deletes records by the topic's retention limits
	// (TopicConfig.Retention and RetentionBytes). The default.
	CleanupDelete Cleanup = Cleanup(replication.CleanupDeleteBit)
	// CleanupCompact keeps the last record of every key (Kafka's log
	// compaction): older records of a key are removed in the background,
	// offsets never change, and a tombstone ([Message.Tombstone]) removes
	// its key once DeleteRetention has passed. See [Log.Compact]. Every
	// record of such a topic needs a key: a keyless one is refused with
	// [ErrInvalidConfig] before it is buffered (one written before the
	// topic became compacted stays). With CleanupCompact alone the
	// retention limits do not apply.
	CleanupCompact Cleanup = Cleanup(replication.CleanupCompactBit)
)

func (c Cleanup) String() string {
	switch c {
	case CleanupDelete:
		return "delete"
	case CleanupCompact:
		return "compact"
	case CleanupDelete | CleanupCompact:
		return "compact,delete"
	}
	return fmt.Sprintf("cleanup(%d)", uint8(c))
}

// DefaultDeleteRetention is the default of TopicConfig.DeleteRetention, as
// Kafka's delete.retention.ms.
const DefaultDeleteRetention = 24 * time.Hour

// DefaultMaxMessageBytes is the default of TopicConfig.MaxMessageBytes,
// Kafka's default max.message.bytes: 1 MiB and the 12 bytes of Kafka's
// log entry header.
const DefaultMaxMessageBytes = 1048588

// TopicConfig configures [Log.CreateTopic], [Log.EnsureTopic] and
// [Log.AlterTopic]. The zero value is valid.
type TopicConfig struct {
	// Partitions is the number of partitions, 1 to MaxPartitions. Default 1.
	// [Log.AlterTopic] can only grow it; there 0 keeps the current count.
	Partitions int
	// Replicas is how many nodes hold each partition, at most the number of
	// nodes. Default: 1 on a single node, else min(3, nodes).
	// [Log.AlterTopic] ignores it (see [Log.ReassignPartition]).
	Replicas int
	// Compression is the default codec of the topic's producers. Default none.
	Compression Compression
	// Retention deletes records older than this, by record time (Kafka's
	// retention.ms, JetStream's MaxAge): a stored batch goes once its
	// newest record is older than Retention, measured at the partition
	// leader's clock when it checks (every few seconds). Default 0: keep
	// records forever (JetStream's default; Kafka's is 7 days). Negative
	// is invalid.
	Retention time.Duration
	// RetentionBytes bounds each partition's stored bytes (the batches as
	// stored, compressed if they are): the oldest batches go until the
	// partition is within it (Kafka's retention.bytes, JetStream's
	// MaxBytes per partition). The newest batch always stays, so a
	// partition may exceed it by at most one batch. Default 0: no limit.
	// Negative is invalid.
	RetentionBytes int64
	// Cleanup is the cleanup policy. Default (0) [CleanupDelete]. The
	// retention limits apply only with CleanupDelete set.
	Cleanup Cleanup
	// DeleteRetention is how long compaction keeps tombstones readable
	// after it first reaches them (Kafka's delete.retention.ms): a
	// consumer that reads the topic from the start within that time sees
	// every deletion. Default (0) [DefaultDeleteRetention], 24h. Negative
	// is invalid.
	DeleteRetention time.Duration
	// MaxMessageBytes is the largest record batch the topic accepts, in
	// bytes as encoded, after compression (Kafka's max.message.bytes).
	// A [Producer] puts no more records in a batch than fit (counted
	// uncompressed, so that every batch fits), stores a batch that its
	// codec would grow past the limit uncompressed, and fails a record
	// that fits in no batch with [ErrRecordTooLarge]; the Kafka listener
	// (package kafka) answers a client's larger batch with
	// MESSAGE_TOO_LARGE. Producers read the topic's current value for
	// each batch, so [Log.AlterTopic] changes it for those running;
	// batches already proposed are not checked again. Whatever it says,
	// a batch also stays within replog's own limits (16 MiB encoded, 64
	// MiB uncompressed). Default (0) [DefaultMaxMessageBytes], 1048588
	// bytes; negative or above 2^31-1 is invalid.
	MaxMessageBytes int
}

// settingsDefaults fills and validates the settings that CreateTopic and
// AlterTopic share.
func (c TopicConfig) settingsDefaults() (TopicConfig, error) {
	if c.Cleanup == 0 {
		c.Cleanup = CleanupDelete
	}
	if c.DeleteRetention == 0 {
		c.DeleteRetention = DefaultDeleteRetention
	}
	if c.MaxMessageBytes == 0 {
		c.MaxMessageBytes = DefaultMaxMessageBytes
	}
	switch {
	case !storage.Compression(c.Compression).Valid():
		return c, fmt.Errorf("%w: compression %d", ErrInvalidConfig, c.Compression)
	case c.Retention < 0:
		return c, fmt.Errorf("%w: negative Retention %v", ErrInvalidConfig, c.Retention)
	case c.RetentionBytes < 0:
		return c, fmt.Errorf("%w: negative RetentionBytes %d", ErrInvalidConfig, c.RetentionBytes)
	case c.DeleteRetention < 0:
		return c, fmt.Errorf("%w: negative DeleteRetention %v", ErrInvalidConfig, c.DeleteRetention)
	case c.MaxMessageBytes < 0 || c.MaxMessageBytes > math.MaxInt32:
		return c, fmt.Errorf("%w: MaxMessageBytes %d (want 1 to %d, or 0 for the default)", ErrInvalidConfig, c.MaxMessageBytes, math.MaxInt32)
	case c.Cleanup&^(CleanupDelete|CleanupCompact) != 0:
		return c, fmt.Errorf("%w: cleanup policy %d", ErrInvalidConfig, c.Cleanup)
	}
	return c, nil
}

func (c TopicConfig) settings() replication.TopicSettings {
	return replication.TopicSettings{
		Compression:     uint8(c.Compression),
		Retention:       int64(c.Retention),
		RetentionBytes:  c.RetentionBytes,
		Cleanup:         uint8(c.Cleanup),
		DeleteRetention: int64(c.DeleteRetention),
		MaxMessageBytes: int32(c.MaxMessageBytes),
	}
}

func (c TopicConfig) withDefaults(nodes int) (TopicConfig, error) {
	if c.Partitions == 0 {
		c.Partitions = DefaultPartitions
	}
	if c.Replicas == 0 {
		c.Replicas = min(defaultMaxReplicas, nodes)
	}
	c, err := c.settingsDefaults()
	if err != nil {
		return c, err
	}
	switch {
	case c.Partitions < 1 || c.Partitions > MaxPartitions:
		return c, fmt.Errorf("%w: %d partitions (want 1 to %d)", ErrInvalidConfig, c.Partitions, MaxPartitions)
	case c.Replicas < 1:
		return c, fmt.Errorf("%w: %d replicas", ErrInvalidConfig, c.Replicas)
	case c.Replicas > nodes:
		return c, fmt.Errorf("%w: %d replicas but %d nodes", ErrInvalidConfig, c.Replicas, nodes)
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
	// Retention, RetentionBytes, Cleanup, DeleteRetention and
	// MaxMessageBytes are as in [TopicConfig], defaults filled in.
	Retention       time.Duration
	RetentionBytes  int64
	Cleanup         Cleanup
	DeleteRetention time.Duration
	MaxMessageBytes int
	// PartitionReplicas lists, per partition, the node ids holding a replica.
	PartitionReplicas [][]uint64
}

func topicInfo(t *replication.TopicMeta) TopicInfo {
	info := TopicInfo{
		Name: t.Name, Partitions: len(t.Partitions), Replicas: t.Replicas,
		Compression: Compression(t.Compression), Created: time.Unix(0, t.Created),
		Retention: time.Duration(t.Retention), RetentionBytes: t.RetentionBytes,
		Cleanup: Cleanup(t.Cleanup), DeleteRetention: time.Duration(t.DeleteRetention),
		MaxMessageBytes: maxMessageBytes(t.TopicSettings),
	}
	// Metadata written before these settings existed lacks them.
	if info.Cleanup == 0 {
		info.Cleanup = CleanupDelete
	}
	if info.DeleteRetention == 0 {
		info.DeleteRetention = DefaultDeleteRetention
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

// Info describes the topic with its current settings (as changed by
// [Log.AlterTopic] since the handle was made), as this node knows them.
// Partitions stays the handle's count: a handle made before the topic
// grew does not use the new partitions; get a new one with [Log.Topic].
func (t *Topic) Info() TopicInfo {
	tm := t.meta
	if cur := t.l.node.Metadata().Topics[tm.Name]; cur != nil && cur.ID == tm.ID {
		c := *tm
		c.TopicSettings = cur.TopicSettings
		tm = &c
	}
	return topicInfo(tm)
}

// maxMessageBytes is s's MaxMessageBytes, its default filled in: metadata
// written before the setting existed lacks it.
func maxMessageBytes(s replication.TopicSettings) int {
	if s.MaxMessageBytes == 0 {
		return DefaultMaxMessageBytes
	}
	return int(s.MaxMessageBytes)
}

// current is the topic's metadata as this node knows it now, settings
// changed by [Log.AlterTopic] included; the handle's own if the topic was
// deleted since.
func (t *Topic) current() *replication.TopicMeta {
	cur := t.l.node.Metadata().Topics[t.meta.Name]
	if cur == nil || cur.ID != t.meta.ID {
		cur = t.meta
	}
	return cur
}

// maxMessageBytes is the topic's current MaxMessageBytes.
func (t *Topic) maxMessageBytes() int { return maxMessageBytes(t.current().TopicSettings) }

// compacted reports whether the topic's current cleanup policy compacts by
// key, so that keyless records have no place in it (Kafka refuses them
// too).
func (t *Topic) compacted() bool {
	return Cleanup(t.current().Cleanup)&CleanupCompact != 0
}

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
	// LastStable is the last stable offset (Kafka's LSO): the first
	// offset of the oldest transaction still open in the partition, or
	// the high watermark if none is. A [ReadCommitted] consumer reads
	// below it.
	LastStable int64
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
	// The last stable offset first: read after, the high watermark is
	// never below it.
	lso := p.LastStable()
	return PartitionOffsets{LogStart: p.LogStart(), HighWatermark: p.HighWatermark(), LastStable: lso}, nil
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
