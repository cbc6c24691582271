package replog

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/replog/replog/storage"
)

// Header is a record header.
type Header struct {
	Key   string
	Value []byte
}

// Message is a record to produce.
type Message[T any] struct {
	// Key routes the record: records with equal keys go to the same
	// partition, in order. Nil means keyless.
	Key   []byte
	Value T
	// Tombstone makes the record a delete of Key: its value is null
	// (Kafka's tombstone), the codec is not called and Value is ignored.
	// Headers and Time travel as usual, and consumers see the record with
	// [Record.Tombstone] set.
	//
	// A tombstone needs a Key: a keyless one (nil Key) is refused with
	// [ErrInvalidConfig] and nothing is written. Kafka accepts keyless
	// nulls in topics that are not compacted, where they mean nothing;
	// here a tombstone always means "delete this key". An empty, non-nil
	// Key is a key.
	Tombstone bool
	// Headers travel with the record.
	Headers []Header
	// Time is the record's create time; zero means now. It is stored
	// rounded down to a whole millisecond, as Kafka stores it.
	Time time.Time
	// Partition, when not nil, sends the record to that partition, and the
	// Partitioner is not asked (Kafka's ProducerRecord partition).
	Partition *int
}

// Position is where a record was stored.
type Position struct {
	Partition int
	Offset    int64
}

// ProducerOptions configures [NewProducer]. The zero value (or nil) is valid.
type ProducerOptions struct {
	// Linger is how long a partition's batch waits for more records before
	// it is sent. Zero (the default) sends as soon as the previous batch of
	// the partition is acknowledged; records that arrive meanwhile are
	// batched together, so batches still fill under load. [Producer.Flush]
	// and Close send at once.
	Linger time.Duration
	// BatchBytes caps the uncompressed size of one batch. Default 1 MiB.
	// Batches also stay within the topic's MaxMessageBytes (see
	// [TopicConfig]).
	BatchBytes int
	// MaxRecordBytes caps one encoded record. Default 1 MiB (Kafka's
	// message.max.bytes); at most BatchBytes. A record must also fit in a
	// batch of the topic's MaxMessageBytes (see [TopicConfig]): with the
	// default limit, a record of 1 MiB does not, as in Kafka.
	MaxRecordBytes int
	// MaxBufferedBytes caps the records buffered and in flight; when full,
	// Produce blocks until there is room or its ctx ends. Default
	// [Options.MemoryBytes]/64 (4 MiB with the default budget), and at
	// least BatchBytes. More buffer did not produce faster: 4 MiB kept
	// 4 partitions' pipelines full, and 32 MiB cost 150 MiB more resident
	// memory (Raft and the store hold copies of what is in flight).
	MaxBufferedBytes int
	// DeliveryTimeout bounds the time from buffering a record to its
	// acknowledgement, retries included (Kafka's delivery.timeout.ms).
	// Default 2 minutes. A record not acknowledged in time fails with an
	// error matching [context.DeadlineExceeded]; if one of its attempts
	// may still be stored, the error also matches [ErrAmbiguous].
	DeliveryTimeout time.Duration
	// Compression overrides the topic's default codec. Nil keeps it.
	Compression *Compression
	// DisableIdempotence turns off exactly-once writes. By default each
	// batch carries a producer id, epoch and sequence number, and the
	// partition drops a retried batch it already stored, so retries after a
	// timeout or leader change never duplicate. Without it a batch is sent
	// again only when it certainly reached no log (no leader, dropped); a
	// batch whose outcome is unknown (its attempt timed out, the node
	// closed) fails with [ErrAmbiguous] and is never sent twice.
	DisableIdempotence bool
	// Partitioner chooses partitions. Default: a new [KafkaPartitioner].
	Partitioner Partitioner
	// MaxInFlight is how many batches per partition may be proposed and not
	// yet acknowledged, 1 to 5 (as Kafka's idempotent producer). Default 5.
	// Order is kept however many are in flight. Without idempotence it is 1.
	MaxInFlight int
	// Acks is when a record counts as written. Default [AcksAll].
	Acks Acks
	// Hooks watch this producer, after [Options.Hooks] (see [Hook]).
	Hooks []Hook
	// Transactional joins the producer to a transactional session: its
	// records are written in the session's transactions, and Produce fails
	// with [ErrInvalidTxnState] when no transaction is begun (see
	// [TransactionalProducer]). Every producer of the session writes
	// through the same partition writers, configured by
	// [TransactionalOptions.Producer]: the other fields here must be left
	// zero, and the topic must be of the session's Log ([ErrInvalidConfig]
	// otherwise). Nil (the default): records are written at once, outside
	// any transaction.
	Transactional *TransactionalProducer
}

// Acks is the acknowledgement level of a producer.
type Acks int

const (
	// AcksAll acknowledges a record once a quorum of the partition's
	// replicas has fsynced it and this node applied it: it survives the loss
	// of any minority of replicas, and a crash of every node.
	AcksAll Acks = iota
	// AcksNone is fire-and-forget: the callback runs with Offset -1 as soon
	// as the batch is handed to Raft on this node, and a later failure is
	// not reported. A record can be lost if the node stops or leadership
	// changes before it commits. It implies DisableIdempotence (as Kafka's
	// acks=0 does); errors before the hand-off still reach the callback.
	AcksNone
)

// onlyTransactional reports whether Transactional is the only option set.
func (o *ProducerOptions) onlyTransactional() bool {
	return o.Linger == 0 && o.BatchBytes == 0 && o.MaxRecordBytes == 0 && o.MaxBufferedBytes == 0 &&
		o.DeliveryTimeout == 0 && o.Compression == nil && !o.DisableIdempotence && o.Partitioner == nil &&
		o.MaxInFlight == 0 && o.Acks == AcksAll && o.Hooks == nil
}

func (o *ProducerOptions) withDefaults(t *Topic) (ProducerOptions, error) {
	var c ProducerOptions
	if o != nil {
		c = *o
	}
	if c.BatchBytes == 0 {
		c.BatchBytes = 1 << 20
	}
	if c.MaxRecordBytes == 0 {
		c.MaxRecordBytes = min(1<<20, c.BatchBytes)
	}
	if c.MaxBufferedBytes == 0 {
		c.MaxBufferedBytes = max(int(t.l.opts.MemoryBytes/64), c.BatchBytes)
	}
	if c.DeliveryTimeout == 0 {
		c.DeliveryTimeout = 2 * time.Minute
	}
	if c.Compression == nil {
		comp := Compression(t.meta.Compression)
		c.Compression = &comp
	}
	if c.Partitioner == nil {
		c.Partitioner = &KafkaPartitioner{}
	}
	if c.MaxInFlight == 0 {
		c.MaxInFlight = 5
	}
	if c.Acks == AcksNone {
		c.DisableIdempotence = true
	}
	switch {
	case c.Linger < 0 || c.DeliveryTimeout < 0:
		return c, fmt.Errorf("%w: negative Linger or DeliveryTimeout", ErrInvalidConfig)
	case c.BatchBytes < 1 || c.BatchBytes > storage.MaxBatchBytes-storage.HeaderSize:
		return c, fmt.Errorf("%w: BatchBytes %d (want 1 to %d)", ErrInvalidConfig, c.BatchBytes, storage.MaxBatchBytes-storage.HeaderSize)
	case c.MaxRecordBytes < 1 || c.MaxRecordBytes > c.BatchBytes:
		return c, fmt.Errorf("%w: MaxRecordBytes %d (want 1 to BatchBytes %d)", ErrInvalidConfig, c.MaxRecordBytes, c.BatchBytes)
	case c.MaxBufferedBytes < c.BatchBytes:
		return c, fmt.Errorf("%w: MaxBufferedBytes %d below BatchBytes %d", ErrInvalidConfig, c.MaxBufferedBytes, c.BatchBytes)
	case !storage.Compression(*c.Compression).Valid():
		return c, fmt.Errorf("%w: compression %d", ErrInvalidConfig, *c.Compression)
	case c.MaxInFlight < 1 || c.MaxInFlight > 5:
		// The partition remembers a producer's last 5 batches; a retried
		// batch older than that could not be recognised as a duplicate.
		return c, fmt.Errorf("%w: MaxInFlight %d (want 1 to 5)", ErrInvalidConfig, c.MaxInFlight)
	case c.Acks != AcksAll && c.Acks != AcksNone:
		return c, fmt.Errorf("%w: Acks %d", ErrInvalidConfig, c.Acks)
	}
	return c, nil
}

// Producer writes records of type T to one topic. Safe for concurrent use.
// Close it to send what it buffered and stop its goroutines.
type Producer[T any] struct {
	p     *producer
	codec Codec[T]
	// joined: the producer writes through a transactional session's
	// writers (p), which it does not own; closed is its own state then.
	joined bool
	closed atomic.Bool
}

// NewProducer returns a producer for topic t using codec to encode values.
func NewProducer[T any](t *Topic, codec Codec[T], opts *ProducerOptions) (*Producer[T], error) {
	if t == nil {
		return nil, fmt.Errorf("%w: nil topic", ErrInvalidConfig)
	}
	if codec == nil {
		return nil, fmt.Errorf("%w: nil codec", ErrInvalidConfig)
	}
	if err := t.check(); err != nil {
		return nil, err
	}
	if opts != nil && opts.Transactional != nil {
		if !opts.onlyTransactional() {
			return nil, fmt.Errorf("%w: a producer joined to a transactional session takes its options from TransactionalOptions.Producer", ErrInvalidConfig)
		}
		p, err := opts.Transactional.core(t)
		if err != nil {
			return nil, err
		}
		return &Producer[T]{p: p, codec: codec, joined: true}, nil
	}
	o, err := opts.withDefaults(t)
	if err != nil {
		return nil, err
	}
	p := newProducer(t, o, nil)
	if err := t.l.track(p); err != nil {
		p.Close()
		return nil, err
	}
	return &Producer[T]{p: p, codec: codec}, nil
}

// Produce writes one record and returns where it was stored, once a quorum
// of the partition's replicas has it on disk and this node applied it.
//
// ctx bounds the wait, as in franz-go and Kafka's clients. If ctx is done
// before the record is buffered (already done when Produce is called, or
// done while Produce waits for room in a full buffer), nothing is written
// and the error matches ctx's ([errors.Is] with [context.Canceled] or
// [context.DeadlineExceeded]). Once the record is buffered, cancelling ctx
// only stops the wait: Produce returns ctx's error, and the record may still
// be written; its delivery is bounded by [ProducerOptions.DeliveryTimeout].
func (p *Producer[T]) Produce(ctx context.Context, m Message[T]) (Position, error) {
	type result struct {
		pos Position
		err error
	}
	done := make(chan result, 1)
	p.ProduceAsync(ctx, m, func(pos Position, err error) { done <- result{pos, err} })
	select {
	case r := <-done: // failed before buffering: report why, not ctx's state
		return r.pos, r.err
	default:
	}
	select {
	case r := <-done:
		return r.pos, r.err
	case <-ctx.Done():
		return Position{}, ctx.Err()
	}
}

// ProduceAsync buffers one record and returns; fn is called with the
// outcome. Callbacks of one partition run in produce order, one at a time,
// on the producer's goroutine: fn must not block (hand slow work to another
// goroutine). fn may be nil.
//
// ctx covers only buffering. If it is done before the record is buffered
// (when ProduceAsync is called, or while it blocks on a full buffer),
// nothing is written and fn is called, before ProduceAsync returns, with
// ctx's error. Once buffered, ctx no longer matters: the delivery is bounded
// by [ProducerOptions.DeliveryTimeout].
func (p *Producer[T]) ProduceAsync(ctx context.Context, m Message[T], fn func(Position, error)) {
	if fn == nil {
		fn = func(Position, error) {}
	}
	if err := ctx.Err(); err != nil {
		fn(Position{}, err)
		return
	}
	if p.closed.Load() {
		fn(Position{}, ErrClosed)
		return
	}
	r := storage.Record{Key: m.Key, Tombstone: m.Tombstone}
	if m.Key == nil && p.p.t.compacted() {
		fn(Position{}, fmt.Errorf("%w: topic %q is compacted: every record needs a key", ErrInvalidConfig, p.p.t.meta.Name))
		return
	}
	if m.Tombstone {
		if m.Key == nil {
			fn(Position{}, fmt.Errorf("%w: a tombstone needs a key", ErrInvalidConfig))
			return
		}
	} else {
		v, err := p.codec.Encode(m.Value)
		if err != nil {
			fn(Position{}, fmt.Errorf("replog: encode value: %w", err))
			return
		}
		r.Value = v
	}
	if m.Time.IsZero() {
		r.Time = time.Now().UnixNano()
	} else {
		r.Time = m.Time.UnixNano()
	}
	if len(m.Headers) > 0 {
		r.Headers = make([]storage.RecordHeader, len(m.Headers))
		for i, h := range m.Headers {
			r.Headers[i] = storage.RecordHeader{Key: h.Key, Value: h.Value}
		}
	}
	part := -1
	if m.Partition != nil {
		part = *m.Partition
	}
	if hs := p.p.hooks; len(hs.produced) > 0 || len(hs.recorded) > 0 {
		// Clipped: a hook that appends must not write into the
		// caller's array.
		pr := &ProducedRecord{Context: ctx, Topic: p.p.t.meta.Name, Partition: part, Key: m.Key, Tombstone: m.Tombstone, Headers: slices.Clip(m.Headers)}
		for _, h := range hs.produced {
			h.OnRecordProduced(ctx, pr)
		}
		r.Headers = make([]storage.RecordHeader, len(pr.Headers))
		for i, h := range pr.Headers {
			r.Headers[i] = storage.RecordHeader{Key: h.Key, Value: h.Value}
		}
		if len(hs.recorded) > 0 {
			done := fn
			fn = func(pos Position, err error) {
				for _, h := range hs.recorded {
					h.OnRecordWritten(pr, pos, err)
				}
				done(pos, err)
			}
		}
	}
	p.p.produce(ctx, r, part, fn)
}

// Flush sends every buffered record at once, without waiting out Linger
// (as Kafka's flush does), and waits until every record buffered before the
// call is acknowledged or failed.
//
// A producer joined to a transactional session flushes every record the
// session's producers buffered for its topic.
func (p *Producer[T]) Flush(ctx context.Context) error {
	if p.closed.Load() {
		return ErrClosed
	}
	return p.p.flush(ctx)
}

// Close sends the buffered records (within DeliveryTimeout) and stops the
// producer. Safe to call twice; afterwards Produce fails with [ErrClosed].
//
// A producer joined to a transactional session only stops taking
// records: those it buffered stay in the session's transaction, which
// Commit or Abort ends, and the session's Close stops the writers.
func (p *Producer[T]) Close() error {
	if p.joined {
		p.closed.Store(true)
		return nil
	}
	p.p.t.l.untrack(p.p)
	return p.p.Close()
}

// producer is the untyped core under every Producer[T].
type producer struct {
	t     *Topic
	opts  ProducerOptions
	parts []*partWriter
	wg    sync.WaitGroup
	hooks hookSet
	// txn is the transactional session whose writers these are; nil
	// outside transactions.
	txn *TransactionalProducer

	// pidMu serialises producer id allocation; pid 0 means not yet issued.
	pidMu sync.Mutex
	pid   uint64

	// Buffered bytes, for back-pressure.
	bufMu    sync.Mutex
	bufBytes int
	bufFree  chan struct{} // closed and replaced when bytes are released

	closeMu   sync.RWMutex // held for reading while enqueueing, for writing by Close
	closed    bool
	closeOnce sync.Once
}

func newProducer(t *Topic, o ProducerOptions, txn *TransactionalProducer) *producer {
	p := &producer{t: t, opts: o, txn: txn, bufFree: make(chan struct{}), hooks: newHookSet(t.l.opts.Hooks, o.Hooks)}
	for i := range t.meta.Partitions {
		w := &partWriter{p: p, idx: i, wake: make(chan struct{}, 1), stop: make(chan struct{}), stats: t.l.counters.part(t.meta.Name, i)}
		if txn != nil {
			// The coordinator's epoch, for the session's lifetime.
			w.epoch = uint32(txn.prod.Epoch)
		}
		p.parts = append(p.parts, w)
		p.wg.Add(1)
		go w.run()
	}
	return p
}

// produce buffers r for partition part, or the Partitioner's choice if part
// is negative.
func (p *producer) produce(ctx context.Context, r storage.Record, part int, fn func(Position, error)) {
	if p.txn != nil {
		// Held until the record is buffered: Commit and Abort flush it.
		leave, err := p.txn.enter()
		if err != nil {
			fn(Position{}, err)
			return
		}
		defer leave()
	}
	size := storage.RecordSize(r)
	if size > p.opts.MaxRecordBytes {
		fn(Position{}, fmt.Errorf("%w: %d bytes (limit %d)", ErrRecordTooLarge, size, p.opts.MaxRecordBytes))
		return
	}
	// The buffer counts what a buffered record costs in memory, not only
	// its encoded bytes, so MaxBufferedBytes bounds the heap for small
	// records too.
	size += pendingOverhead
	if p.isClosed() {
		fn(Position{}, ErrClosed)
		return
	}
	if err := p.t.check(); err != nil {
		fn(Position{}, err)
		return
	}
	if err := p.reserve(ctx, size); err != nil {
		fn(Position{}, err)
		return
	}
	// ctx may have ended while reserve found room at once.
	if err := ctx.Err(); err != nil {
		p.release(size)
		fn(Position{}, err)
		return
	}
	if part < 0 {
		part = p.opts.Partitioner.Partition(r.Key, len(p.parts))
	}
	if part < 0 || part >= len(p.parts) {
		p.release(size)
		fn(Position{}, fmt.Errorf("%w: partition %d of %s (it has %d)", ErrPartitionNotFound, part, p.t.meta.Name, len(p.parts)))
		return
	}
	p.closeMu.RLock()
	defer p.closeMu.RUnlock()
	if p.closed {
		p.release(size)
		fn(Position{}, ErrClosed)
		return
	}
	if p.txn != nil {
		// Part of the transaction from here: its failure dooms it.
		fn = p.txn.watch(fn)
	}
	p.parts[part].enqueue(pending{rec: r, size: size, fn: fn, at: time.Now()})
}

func (p *producer) isClosed() bool {
	p.closeMu.RLock()
	defer p.closeMu.RUnlock()
	return p.closed
}

// reserve takes size bytes of the buffer, waiting for room.
func (p *producer) reserve(ctx context.Context, size int) error {
	for {
		p.bufMu.Lock()
		if p.bufBytes == 0 || p.bufBytes+size <= p.opts.MaxBufferedBytes {
			p.bufBytes += size
			p.bufMu.Unlock()
			return nil
		}
		ch := p.bufFree
		p.bufMu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// bufferedBytes is the memory its buffered records take.
func (p *producer) bufferedBytes() int64 {
	p.bufMu.Lock()
	defer p.bufMu.Unlock()
	return int64(p.bufBytes)
}

func (p *producer) release(size int) {
	p.bufMu.Lock()
	p.bufBytes -= size
	close(p.bufFree)
	p.bufFree = make(chan struct{})
	p.bufMu.Unlock()
}

// producerID returns the idempotent producer id, issuing it on first use.
func (p *producer) producerID(ctx context.Context) (uint64, error) {
	if p.opts.DisableIdempotence {
		return 0, nil
	}
	if p.txn != nil {
		return p.txn.prod.ProducerID, nil
	}
	p.pidMu.Lock()
	defer p.pidMu.Unlock()
	if p.pid != 0 {
		return p.pid, nil
	}
	id, err := p.t.l.node.AllocProducerID(ctx)
	if err != nil {
		return 0, mapErr(err)
	}
	p.pid = id
	return id, nil
}

func (p *producer) flush(ctx context.Context) error {
	var waits []chan struct{}
	p.closeMu.RLock()
	closed := p.closed
	if !closed {
		for _, w := range p.parts {
			waits = append(waits, w.flushMark())
		}
	}
	p.closeMu.RUnlock()
	if closed {
		return ErrClosed
	}
	for _, ch := range waits {
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

func (p *producer) Close() error {
	p.closeOnce.Do(func() {
		p.closeMu.Lock()
		p.closed = true
		p.closeMu.Unlock()
		for _, w := range p.parts {
			close(w.stop)
		}
		p.wg.Wait()
	})
	return nil
}
