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

// DeleteRecords moves the log start of each partition in offsets
// (partition -> offset) to the given offset, as Kafka's DeleteRecords
// does: records below it are no longer readable, and the stored batches
// wholly below it are deleted on every replica (a batch straddling it
// stays stored, its records below the log start skipped), their disk space
// freed in the background. The offset may be the high watermark (every
// record goes); -1 stands for the high watermark, as in Kafka. An offset
// at or below the current log start changes nothing.
//
// Everything is checked before anything changes: an unknown topic is
// [ErrTopicNotFound], an unknown partition [ErrPartitionNotFound], an
// offset beyond the high watermark (or below -1) an
// [*OffsetOutOfRangeError]. Partitions are then trimmed one by one; if
// that fails part way (the ctx ends, a partition has no leader), the
// partitions trimmed already stay trimmed and calling again with the same
// offsets finishes the job. A ctx without deadline gets 30s.
func (l *Log) DeleteRecords(ctx context.Context, topic string, offsets map[int]int64) error {
	if l.isClosed() {
		return ErrClosed
	}
	t, err := l.Topic(topic)
	if err != nil {
		return err
	}
	ctx, cancel := withDefaultDeadline(ctx, defaultTimeout)
	defer cancel()
	parts := slices.Sorted(maps.Keys(offsets))
	for _, i := range parts {
		if i < 0 || i >= t.Partitions() {
			return fmt.Errorf("%w: %s/%d (topic has %d)", ErrPartitionNotFound, topic, i, t.Partitions())
		}
	}
	// The offsets are checked against the high watermarks that the
	// groups had committed when the call began: they only grow, so an
	// offset that passes stays valid until it is applied.
	reps := make(map[int]*replication.Partition, len(offsets))
	to := make(map[int]int64, len(offsets))
	for _, i := range parts {
		rp, err := t.partition(ctx, i)
		if err != nil {
			return err
		}
		if err := rp.CatchUp(ctx); err != nil {
			return mapErr(err)
		}
		off, start, hw := offsets[i], rp.LogStart(), rp.HighWatermark()
		if off == -1 {
			off = hw
		}
		if off < 0 || off > hw {
			return &OffsetOutOfRangeError{Topic: topic, Partition: i, Offset: offsets[i], Earliest: start, Latest: hw}
		}
		reps[i], to[i] = rp, off
	}
	for _, i := range parts {
		if _, err := reps[i].Trim(ctx, to[i]); err != nil {
			if errors.Is(err, replication.ErrInvalid) {
				// Not expected (the high watermark only grows); reported
				// as the caller would see it.
				rp := reps[i]
				return &OffsetOutOfRangeError{Topic: topic, Partition: i, Offset: to[i], Earliest: rp.LogStart(), Latest: rp.HighWatermark()}
			}
			return fmt.Errorf("replog: delete records of %s/%d: %w", topic, i, mapErr(err))
		}
	}
	return nil
}

// compactTimeout bounds a Compact call whose ctx has no deadline.
const compactTimeout = 10 * time.Minute

// Compact runs key compaction on every partition of topic now, as the
// background does when enough of a partition is dirty (half its bytes,
// Kafka's min.cleanable.dirty.ratio) or tombstones expire, and returns
// once each partition is compacted up to its newest batch, which stays as
// it is. For every key only its last record stays; offsets do not change;
// tombstones first reached by an earlier pass at least DeleteRetention ago
// go. It works from this node's replicas and may be called on any node.
//
// The topic must have [CleanupCompact] ([ErrInvalidConfig] otherwise).
// If the ctx ends part way, what was compacted stays and the background
// goes on from the last finished pass. A pass reads the whole partition
// (about 100 MB/s here uncompressed, less with zstd), so a ctx without
// deadline gets 10 minutes rather than the 30s of other calls.
func (l *Log) Compact(ctx context.Context, topic string) error {
	if l.isClosed() {
		return ErrClosed
	}
	t, err := l.Topic(topic)
	if err != nil {
		return err
	}
	if !t.meta.Compacts() {
		return fmt.Errorf("%w: topic %q is not compacted (its Cleanup is %v)", ErrInvalidConfig, topic, Cleanup(t.meta.Cleanup))
	}
	ctx, cancel := withDefaultDeadline(ctx, compactTimeout)
	defer cancel()
	for i := range t.Partitions() {
		rp, err := t.partition(ctx, i)
		if err != nil {
			return err
		}
		if err := rp.Compact(ctx, t.meta.TombstoneRetention()); err != nil {
			return fmt.Errorf("replog: compact %s/%d: %w", topic, i, mapErr(err))
		}
	}
	return nil
}
