// Package replog is an embeddable, replicated, partitioned, durable log for
// Go programs: what Kafka gives a data centre, linked into the program.
//
// A [Log] is one node. It holds topics; a topic has partitions; each
// partition is a Raft group (run by dragonboat) whose state machine appends
// record batches to a Pebble store. Offsets are assigned when a batch is
// applied, so they are dense and the same on every replica.
//
// Batches are stored in Kafka's record batch format (magic v2), the format
// the Kafka listener (package [github.com/replog/replog/kafka]) receives
// and serves as is. So a record's time is kept to the millisecond: a
// Message's Time is rounded down to a whole millisecond, and a consumed
// Record's Time is a whole millisecond. (Logs written by versions before
// this one keep their nanosecond times.) A nil Key or Value is kept apart
// from an empty one, and neither is a tombstone: Kafka consumers see a nil
// Value as an empty one, and a tombstone as Kafka's null value.
//
// # Usage
//
// Open a log in a directory. With nil options it runs a single node,
// durable on disk (fsync before acknowledging), and opens no network port:
//
//	l, err := replog.Open(dir, nil)
//	defer l.Close()
//
// Create a topic, then produce typed records through a [Codec]:
//
//	t, err := l.CreateTopic(ctx, "orders", replog.TopicConfig{Partitions: 4})
//	p, err := replog.NewProducer(t, replog.JSON[Order](), nil)
//	pos, err := p.Produce(ctx, replog.Message[Order]{Key: []byte(o.Customer), Value: o})
//
// Produce returns once the record is committed by a quorum of the
// partition's replicas (each fsynced its Raft log) and applied. Records with
// the same key go to the same partition (Kafka's murmur2 partitioner) and
// are read back in produce order. Producers are idempotent by default: a
// retried batch is stored once.
//
// A tombstone records that a key was deleted (Kafka's null value). It needs
// a key, has no value (the codec is not called), and is read back with
// [Record.Tombstone] set:
//
//	pos, err := p.Produce(ctx, replog.Message[Order]{Key: []byte(id), Tombstone: true})
//
// Consume from every partition, from the earliest offset by default:
//
//	c, err := replog.NewConsumer(t, replog.JSON[Order](), nil)
//	for rec, err := range c.Records(ctx) {
//		// rec.Partition, rec.Offset, rec.Key, rec.Value, rec.Headers, rec.Time
//	}
//
// Records blocks while nothing new is committed and wakes as soon as
// something is, until ctx ends.
//
// # Data lifecycle
//
// A log grows until records are deleted, as in Kafka: by the topic's
// retention limits (TopicConfig.Retention by record age,
// TopicConfig.RetentionBytes per partition; both zero, the default, keep
// records forever), or on request with [Log.DeleteRecords]:
//
//	t, err := l.EnsureTopic(ctx, "events", replog.TopicConfig{
//		Partitions: 4, Retention: 24 * time.Hour, RetentionBytes: 10 << 30,
//	})
//	err = l.AlterTopic(ctx, "events", cfg)                       // change limits, grow partitions
//	err = l.DeleteRecords(ctx, "events", map[int]int64{0: 1200}) // move partition 0's log start
//
// Whole stored batches are deleted from the front, decided by each
// partition's state machine from replicated inputs, so every replica keeps
// the same records; the disk space comes back within seconds. The log start
// ([Topic.Offsets]) moves; an Earliest consumer starts there, a consumer
// whose position fell below it gets an [*OffsetOutOfRangeError], and a
// group member resumes at it.
//
// A topic with [CleanupCompact] is a table: key compaction keeps the last
// record of every key and removes the older ones, in the background once
// half a partition's bytes are new since the last pass, or now with
// [Log.Compact]. A tombstone deletes its key:
//
//	state, err := l.CreateTopic(ctx, "accounts", replog.TopicConfig{
//		Cleanup: replog.CleanupCompact, DeleteRetention: 24 * time.Hour,
//	})
//	p.Produce(ctx, replog.Message[Account]{Key: id, Tombstone: true})
//	err = l.Compact(ctx, "accounts")
//
// Offsets never change: compaction leaves gaps, which consumers step over.
// The newest batch of a partition is never compacted, so a consumer that
// keeps up sees every record, and one that reads from the start sees at
// least the last record of every key, and every tombstone younger than
// DeleteRetention. Like retention, compaction is decided through Raft
// (the state machine removes the records a replica's planner proposes and
// checks tombstone expiry itself), so every replica keeps the same records;
// a pass works in bounded memory ([Options.CompactionMemory]) and a crash
// in the middle loses nothing it should keep.
//
// # Consumer groups
//
// With [ConsumerOptions.Group] a consumer joins a group: each group reads
// every record of its members' topics, and inside a group each partition is
// read by one member at a time, with committed offsets ([Consumer.Commit])
// replicated through Raft by topic and partition. A group's members may
// read different topics, and [NewMultiTopicConsumer] reads several; each
// member is given partitions of its own topics only. See [GroupOptions] for
// strategies, static membership, auto-commit and the callbacks, and
// [Log.DescribeGroup] for introspection.
//
// # Share groups
//
// A share group (Kafka's share groups, KIP-932; a work queue) lets any
// number of members read the same partitions at once: each record is
// acquired by one member at a time, under a lock, and acknowledged one by
// one. More members than partitions all work; records come in no order
// across members.
//
//	c, err := replog.NewShareConsumer(t, "workers", codec, &replog.ShareConsumerOptions{
//		LockDuration: 30 * time.Second, MaxDeliveries: 5, DeadLetterTopic: "jobs.dead"})
//	recs, err := c.Poll(ctx)          // each record locked to this member
//	err = recs[0].Ack(ctx)            // KIP-932 ACCEPT; JetStream Ack
//	err = recs[1].Release(ctx, delay) // RELEASE: deliver again after delay; JetStream Nak(WithDelay)
//	err = recs[2].Reject(ctx)         // REJECT: give up; JetStream Term
//	err = recs[3].Renew(ctx)          // lock extended; JetStream InProgress (KIP-932 has none)
//
// A record whose lock expires, or whose member dies, is delivered again;
// [ShareConsumer.Close] releases what its member holds at once. Each
// delivery counts: a record delivered MaxDeliveries times (5 by default,
// Kafka's group.share.delivery.count.limit) is written to the
// DeadLetterTopic (which must exist, or is created with
// DeadLetterTopicConfig), with the HeaderDLQ* headers saying why, and
// rejected (without a DeadLetterTopic, rejected only); so is a record the codec
// cannot decode. An acknowledgement too late fails with [ErrNotAcquired],
// a second one with [ErrAlreadyAcknowledged].
//
// The share state (per group and partition: a start offset before which
// every record is done, and the records in flight after it: who holds
// each until when, its delivery count, when it may be delivered again) is
// kept by the share coordinator, a Raft group of its own, and survives any
// minority of nodes failing. Members read the records themselves from
// their node's replica; the coordinator deals in offsets. Limits: at most
// [MaxShareInFlight] (200) records in flight per share partition, Kafka's
// group.share.record.lock.partition.limit: one record held for long holds
// the partition's group back by that many; locks up to an hour, measured
// on the members' nodes' clocks; a share group starts at the log start
// (share.auto.offset.reset=earliest; [Log.ResetShareGroup] before its
// first member polls starts it elsewhere), reads uncommitted (records of
// open and aborted transactions included), and its name is unrelated to a
// consumer group's.
//
// [Log.ListShareGroups] and [Log.DescribeShareGroup] show each share
// partition's start offset, records in flight by state, the members
// holding locks and the lag; [Log.ResetShareGroup] moves the start
// offsets and [Log.DeleteShareGroup] forgets a group, both only while no
// member holds a record under an unexpired lock (Kafka requires an empty
// group; a share group has no membership beyond its locks). Share groups
// are not forgotten for being idle: the coordinator does not know members
// that hold nothing, and forgetting a group they still poll would
// restart it at the log start.
//
// # Transactions
//
// A [TransactionalProducer] writes records to any topics, and consumer
// groups' offsets, all or nothing (Kafka's transactions, KIP-98, with
// KIP-447's group membership check), in Kafka's vocabulary:
//
//	s, err := l.NewTransactionalProducer(ctx, "etl-1", nil)    // initTransactions
//	out, err := replog.NewProducer(t, codec, &replog.ProducerOptions{Transactional: s})
//	err = s.Begin()                                            // beginTransaction
//	pos, err := out.Produce(ctx, msg)                          // send
//	err = s.SendOffsets(ctx, in)                               // sendOffsetsToTransaction
//	err = s.Commit(ctx)                                        // commitTransaction, or s.Abort(ctx): abortTransaction
//
// The transactional id names the application instance across restarts:
// a new session of an id fences the older ones ([ErrFenced]), and aborts
// the transaction one of them left open. Each record of a transaction
// carries the session's producer id and epoch; the transaction coordinator
// (a Raft group of its own) records which partitions and groups the
// transaction touches and, at Commit or Abort, writes a marker to each
// partition and commits the offsets. Commit returns once that is done.
//
// [ConsumerOptions.Isolation] is Kafka's isolation.level. [ReadUncommitted]
// (the default) reads every record as it is written, those of open and
// aborted transactions included. [ReadCommitted] reads committed records
// only, and no further than a partition's last stable offset: the first
// offset of its oldest open transaction. A transaction left open so holds
// back every later record of its partitions, whoever wrote them, from
// read-committed consumers, until it ends or the coordinator aborts it
// when its [TransactionalOptions.Timeout] (1 minute by default, at most
// 15) has passed. Markers take an offset and are never returned, so
// offsets read have gaps. A read-committed group member that takes a
// partition over while a transaction sends offsets of its group waits for
// that transaction to end and starts after them (KIP-447's stable
// offsets). An aborted transaction's entry in the index read-committed
// consumers skip its records by goes only once retention's log start has
// passed its marker, and so every record of it; key compaction leaves
// transactional batches and markers as they are, so it never removes a
// committed value in favour of an aborted one. Limits: 4096 partitions
// and groups, and 4096 offsets, per transaction; a transactional id of 1
// to 1024 bytes.
//
// # Clusters and tests
//
// Package [github.com/replog/replog/replogtest] starts several nodes in one
// process on in-memory storage, for tests, and can crash, restart and
// partition them. Options.NodeID, Options.Peers, Options.ClusterID and
// Options.TLS describe a cluster across machines: Raft over TCP with mutual
// TLS, where each node's certificate is bound to its address, frames are
// capped before they are allocated, and clusters with different ids ignore
// each other (see [Options] for what is guaranteed).
//
// # Errors
//
// Errors match sentinels with [errors.Is] ([ErrClosed], [ErrTopicNotFound],
// [ErrTopicExists], [ErrRecordTooLarge], [ErrCorrupt], [ErrInvalidConfig],
// [ErrUnavailable], [ErrAmbiguous], [ErrLocked], [ErrFenced],
// [ErrInvalidTxnState], ...) or carry data
// ([*OffsetOutOfRangeError], [*DecodeError]); no error of dragonboat or
// Pebble reaches the caller unwrapped. [IsRetriable] tells which may
// succeed when tried again. Bad input is refused before anything is
// proposed; nothing acknowledged is altered by it.
//
// # Embedding
//
// replog never takes its host down and changes no process-wide state: no
// panic, log.Fatal or os.Exit is reachable from input, files or the
// network; importing it leaves the standard logger as it was; it installs
// no signal handler and reads no environment. Its messages, dragonboat's
// and Pebble's go to Options.Logger (nil discards them): routine Raft
// events at Debug, Warn only for what needs a human. A damaged file is
// [ErrCorrupt]: from [Open] when the Raft log or the node's own files are
// damaged, and from the readers and writers of one partition when that
// partition's records are, while the node's other partitions keep serving.
// A context that is done before a call starts means the call did nothing.
//
// # Memory and disk
//
// [Options.MemoryBytes] (256 MiB by default) is a node's memory budget: it
// sizes Pebble's memtables and block cache for the records and for the
// Raft log, dragonboat's limits on what is in flight, and the defaults of
// [ProducerOptions.MaxBufferedBytes] and [ConsumerOptions.ReadAheadBytes].
// It does not bound the Go heap, which the garbage collector lets grow to
// twice what is live: a process that must stay under a limit sets
// GOMEMLIMIT. On disk, a closed log takes about what it stores; while a
// node runs, the Raft log's write-ahead files are preallocated (35 MiB
// each with the default budget).
//
// # Limits
//
// Topic names: 1 to 249 characters of [a-zA-Z0-9._-]. Partitions per topic:
// up to 4096. One record: 1 MiB by default (ProducerOptions.MaxRecordBytes).
// One batch: 16 MiB encoded, 64 MiB decompressed.
package replog
