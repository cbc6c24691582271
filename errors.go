package replog

import (
	"context"
	"errors"
	"fmt"

	"github.com/replog/replog/replication"
	"github.com/replog/replog/storage"
)

// Sentinel errors. Match them with [errors.Is]; the returned errors usually
// wrap them with detail.
var (
	// ErrClosed: the handle (or the Log under it) was closed.
	ErrClosed = errors.New("replog: closed")
	// ErrTopicNotFound: no topic by that name, or the topic was deleted.
	ErrTopicNotFound = errors.New("replog: topic not found")
	// ErrTopicExists: CreateTopic found a topic of that name.
	ErrTopicExists = errors.New("replog: topic already exists")
	// ErrInvalidConfig: an option or argument is out of range.
	ErrInvalidConfig = errors.New("replog: invalid configuration")
	// ErrRecordTooLarge: a record (or the batch it would need) exceeds the
	// size limit; nothing was written.
	ErrRecordTooLarge = errors.New("replog: record too large")
	// ErrCorrupt: stored or received data failed its checks: a record
	// batch (CRC, lengths, record count, decompressed size), a store or
	// Raft log file, a snapshot, or a node's own files. Nothing corrupt is
	// ever appended, and damaged data is never returned as records. A
	// partition replica whose store is damaged stays out of service (its
	// readers and writers get ErrCorrupt) until the node's data is wiped
	// or the partition is reassigned away.
	ErrCorrupt = storage.ErrCorrupt
	// ErrNoLocalReplica: this node hosts no replica of the partition.
	ErrNoLocalReplica = errors.New("replog: no local replica of the partition")
	// ErrOutOfOrderSequence: the partition refused an idempotent producer's
	// batch because an earlier batch of that producer failed; the producer
	// starts a new epoch and later records go through.
	ErrOutOfOrderSequence = errors.New("replog: out of order sequence")
	// ErrPartitionNotFound: the partition number is not in [0, Partitions).
	ErrPartitionNotFound = errors.New("replog: partition not found")
	// ErrGroupNotFound: no consumer group by that name (or, from the share
	// group admin calls, no share group: the share coordinator holds no
	// state of it).
	ErrGroupNotFound = errors.New("replog: group not found")
	// ErrGroupNotEmpty: the operation needs a group without members (a
	// share group: one where no member holds a record under an unexpired
	// lock).
	ErrGroupNotEmpty = errors.New("replog: group has members")
	// ErrGroupTopic: a consumer joins a group with a topic that other
	// members of the group read under an older id: the topic was deleted
	// and created again, and the members of the old one must leave first.
	// (A group's members may read different topics: joining a group whose
	// members read other topics is no longer an error.)
	ErrGroupTopic = errors.New("replog: group reads another topic")
	// ErrGroupKind: the group is used by the other kind of consumers: a
	// group of Kafka clients (through a listener of package kafka) and a
	// group of replog consumers cannot share a name.
	ErrGroupKind = errors.New("replog: group used by the other kind of consumers (Kafka clients or replog consumers)")
	// ErrNotAssigned: the partition is not assigned to this group member.
	ErrNotAssigned = errors.New("replog: partition not assigned to this member")
	// ErrUnknownMember: the group no longer knows this member: its session
	// expired, or it did not poll within GroupOptions.MaxPollInterval. Its
	// next Poll joins again by itself.
	ErrUnknownMember = errors.New("replog: unknown group member")
	// ErrLocked: [Open] found the directory open, by a Log of this process
	// or of another.
	ErrLocked = errors.New("replog: directory in use by another Log")
	// ErrNotReplogDir: [Open] was given a directory that is not empty and
	// holds no log; it left the directory untouched.
	ErrNotReplogDir = errors.New("replog: directory holds no log and is not empty")
	// ErrUnavailable: the partition (or the cluster's metadata) could not
	// take the request, and nothing was written: no leader is known (an
	// election is under way), this node's replica is starting, stopping
	// or was moved away, or the node is overloaded. Retriable: see
	// [IsRetriable].
	ErrUnavailable = errors.New("replog: unavailable")
	// ErrAmbiguous: a produced record may or may not have been written.
	// Its write was proposed and no outcome came back: its delivery timed
	// out ([ProducerOptions.DeliveryTimeout]), the partition's leader
	// changed while it was pending and the producer is not idempotent, or
	// the node closed. Producing it again may store it twice, so
	// [IsRetriable] reports false; a reader can check whether it is there.
	// The error also wraps the cause (for example
	// [context.DeadlineExceeded]).
	ErrAmbiguous = errors.New("replog: outcome unknown, the record may have been written")
	// ErrFenced: a transactional session is over because its
	// transactional id moved on without it (Kafka's PRODUCER_FENCED): a
	// newer session of the id started ([Log.NewTransactionalProducer]),
	// the coordinator aborted the session's transaction when its
	// [TransactionalOptions.Timeout] passed, or the id expired after
	// 7 days without a transaction. Every later call of the session fails
	// with it; close it (a newer session of the id takes over).
	ErrFenced = errors.New("replog: transactional producer fenced")
	// ErrInvalidTxnState: the call does not fit the transaction's state
	// (Kafka's INVALID_TXN_STATE, and its clients' IllegalStateException):
	// producing or sending offsets with no transaction begun, Begin with
	// one open, Commit of a transaction being aborted, or Abort of one
	// whose commit was decided.
	ErrInvalidTxnState = errors.New("replog: invalid transaction state")
	// ErrTxnTooLarge: the transaction would span more than 4096
	// partitions and groups, or commit more than 4096 offsets; it cannot
	// commit: abort it.
	ErrTxnTooLarge = errors.New("replog: transaction too large")
)

// OffsetOutOfRangeError reports an offset outside the retained log.
type OffsetOutOfRangeError struct {
	Topic     string
	Partition int
	Offset    int64
	Earliest  int64 // first retained offset
	Latest    int64 // high watermark: the next offset to be written
}

func (e *OffsetOutOfRangeError) Error() string {
	return fmt.Sprintf("replog: offset %d out of range for %s/%d (earliest %d, latest %d)",
		e.Offset, e.Topic, e.Partition, e.Earliest, e.Latest)
}

// DecodeError reports a record whose value the consumer's [Codec] could not
// decode. The record stays in the log; the consumer has moved past it.
type DecodeError struct {
	Topic     string
	Partition int
	Offset    int64
	Err       error
}

func (e *DecodeError) Error() string {
	return fmt.Sprintf("replog: decode %s/%d@%d: %v", e.Topic, e.Partition, e.Offset, e.Err)
}

func (e *DecodeError) Unwrap() error { return e.Err }

// IsRetriable reports whether an operation that failed with err may succeed
// if tried again, and trying again cannot write anything twice: an
// election under way, a busy node, a replica moving ([ErrUnavailable]), a
// timeout of a request that wrote nothing. It is false for [ErrAmbiguous].
func IsRetriable(err error) bool {
	if errors.Is(err, ErrAmbiguous) {
		return false
	}
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, ErrUnavailable) || replication.IsRetriable(err)
}

// mapErr turns replication errors into the public sentinels, keeping the
// original in the chain for debugging. Every dragonboat error is wrapped in
// a replication sentinel first (see replication's mapError), so none
// reaches the user unmapped.
func mapErr(err error) error {
	err = replication.MapError(err)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, ErrClosed), errors.Is(err, ErrTopicNotFound), errors.Is(err, ErrUnavailable),
		errors.Is(err, ErrAmbiguous), errors.Is(err, ErrRecordTooLarge), errors.Is(err, ErrInvalidConfig):
		return err // public already
	case errors.Is(err, replication.ErrClosed):
		return fmt.Errorf("%w: %w", ErrClosed, err)
	case errors.Is(err, replication.ErrTopicNotFound):
		return fmt.Errorf("%w: %w", ErrTopicNotFound, err)
	case errors.Is(err, replication.ErrTopicExists):
		return fmt.Errorf("%w: %w", ErrTopicExists, err)
	case errors.Is(err, replication.ErrNotReplica):
		return fmt.Errorf("%w: %w", ErrNoLocalReplica, err)
	case errors.Is(err, replication.ErrInvalid):
		return fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	case errors.Is(err, replication.ErrGroupNotFound):
		return fmt.Errorf("%w: %w", ErrGroupNotFound, err)
	case errors.Is(err, replication.ErrGroupNotEmpty):
		return fmt.Errorf("%w: %w", ErrGroupNotEmpty, err)
	case errors.Is(err, replication.ErrGroupTopic):
		return fmt.Errorf("%w: %w", ErrGroupTopic, err)
	case errors.Is(err, replication.ErrGroupTooLarge):
		return fmt.Errorf("%w: %w (at most %d topics, %d partitions)", ErrInvalidConfig, err, MaxGroupTopics, MaxGroupPartitions)
	case errors.Is(err, replication.ErrNotAssigned):
		return fmt.Errorf("%w: %w", ErrNotAssigned, err)
	case errors.Is(err, replication.ErrGroupKind):
		return fmt.Errorf("%w: %w", ErrGroupKind, err)
	case errors.Is(err, replication.ErrUnknownMember):
		return fmt.Errorf("%w: %w", ErrUnknownMember, err)
	case errors.Is(err, replication.ErrNodeBusy):
		return fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	case replication.IsAmbiguous(err):
		// Before ErrUnavailable: a proposal whose replica stopped while it
		// was pending is both, and may have been written.
		return fmt.Errorf("%w: %w", ErrAmbiguous, err)
	case errors.Is(err, replication.ErrUnavailable):
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	case errors.Is(err, replication.ErrTooLarge):
		return fmt.Errorf("%w: %w", ErrRecordTooLarge, err)
	case errors.Is(err, ErrFenced), errors.Is(err, ErrInvalidTxnState), errors.Is(err, ErrTxnTooLarge):
		return err // public already
	case errors.Is(err, replication.ErrFenced):
		return fmt.Errorf("%w: %w", ErrFenced, err)
	case errors.Is(err, replication.ErrUnknownTransactionalID):
		// The id expired, or was never initialised: the session cannot
		// go on, as if fenced (Kafka's INVALID_PRODUCER_ID_MAPPING).
		return fmt.Errorf("%w: %w", ErrFenced, err)
	case errors.Is(err, replication.ErrInvalidTxnState):
		return fmt.Errorf("%w: %w", ErrInvalidTxnState, err)
	case errors.Is(err, replication.ErrTxnTooLarge):
		return fmt.Errorf("%w: %w", ErrTxnTooLarge, err)
	case errors.Is(err, replication.ErrInvalidTxnTimeout):
		return fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	case errors.Is(err, replication.ErrConcurrentTransactions):
		// Retried until ctx ends; then it is a wait that wrote nothing.
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return err
}
