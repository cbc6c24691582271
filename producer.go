package replog

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/replog/replog/replication"
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
	// Headers travel with the record.
	Headers []Header
	// Time is the record's create time; zero means now.
	Time time.Time
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
	// batched together, so batches still fill under load.
	Linger time.Duration
	// BatchBytes caps the uncompressed size of one batch. Default 1 MiB.
	BatchBytes int
	// MaxRecordBytes caps one encoded record. Default 1 MiB (Kafka's
	// message.max.bytes); at most BatchBytes.
	MaxRecordBytes int
	// MaxBufferedBytes caps the records buffered and in flight; when full,
	// Produce blocks until there is room or its ctx ends. Default 32 MiB.
	MaxBufferedBytes int
	// DeliveryTimeout bounds the time from buffering a record to its
	// acknowledgement, retries included (Kafka's delivery.timeout.ms).
	// Default 2 minutes.
	DeliveryTimeout time.Duration
	// Compression overrides the topic's default codec. Nil keeps it.
	Compression *Compression
	// DisableIdempotence turns off exactly-once writes. By default each
	// batch carries a producer id and sequence number, and the partition
	// drops a retried batch it already stored, so retries after a timeout or
	// leader change never duplicate. Without it a retry can write a
	// duplicate, and ambiguous failures (timeouts) are not retried.
	DisableIdempotence bool
	// Partitioner chooses partitions. Default: a new [KafkaPartitioner].
	Partitioner Partitioner
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
		c.MaxBufferedBytes = 32 << 20
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
	}
	return c, nil
}

// Producer writes records of type T to one topic. Safe for concurrent use.
// Close it to send what it buffered and stop its goroutines.
type Producer[T any] struct {
	p     *producer
	codec Codec[T]
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
	o, err := opts.withDefaults(t)
	if err != nil {
		return nil, err
	}
	p := newProducer(t, o)
	if err := t.l.track(p); err != nil {
		p.Close()
		return nil, err
	}
	return &Producer[T]{p: p, codec: codec}, nil
}

// Produce writes one record and returns where it was stored, once a quorum
// of the partition's replicas has it on disk and this node applied it. If
// ctx ends first Produce returns ctx's error, but the record may still be
// written (as with any request that reached the log).
func (p *Producer[T]) Produce(ctx context.Context, m Message[T]) (Position, error) {
	type result struct {
		pos Position
		err error
	}
	done := make(chan result, 1)
	p.ProduceAsync(ctx, m, func(pos Position, err error) { done <- result{pos, err} })
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
// goroutine). fn may be nil. When the buffer is full ProduceAsync blocks
// until there is room or ctx ends (fn then gets ctx's error); ctx does not
// bound the delivery itself, DeliveryTimeout does.
func (p *Producer[T]) ProduceAsync(ctx context.Context, m Message[T], fn func(Position, error)) {
	if fn == nil {
		fn = func(Position, error) {}
	}
	v, err := p.codec.Encode(m.Value)
	if err != nil {
		fn(Position{}, fmt.Errorf("replog: encode value: %w", err))
		return
	}
	r := storage.Record{Key: m.Key, Value: v}
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
	p.p.produce(ctx, r, fn)
}

// Flush waits until every record buffered before the call is acknowledged
// or failed.
func (p *Producer[T]) Flush(ctx context.Context) error { return p.p.flush(ctx) }

// Close sends the buffered records (within DeliveryTimeout) and stops the
// producer. Safe to call twice; afterwards Produce fails with [ErrClosed].
func (p *Producer[T]) Close() error {
	p.p.t.l.untrack(p.p)
	return p.p.Close()
}

// producer is the untyped core under every Producer[T].
type producer struct {
	t     *Topic
	opts  ProducerOptions
	parts []*partWriter
	wg    sync.WaitGroup

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

func newProducer(t *Topic, o ProducerOptions) *producer {
	p := &producer{t: t, opts: o, bufFree: make(chan struct{})}
	for i := range t.meta.Partitions {
		w := &partWriter{p: p, idx: i, wake: make(chan struct{}, 1), stop: make(chan struct{})}
		p.parts = append(p.parts, w)
		p.wg.Add(1)
		go w.run()
	}
	return p
}

func (p *producer) produce(ctx context.Context, r storage.Record, fn func(Position, error)) {
	size := storage.RecordSize(r)
	if size > p.opts.MaxRecordBytes {
		fn(Position{}, fmt.Errorf("%w: %d bytes (limit %d)", ErrRecordTooLarge, size, p.opts.MaxRecordBytes))
		return
	}
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
	part := p.opts.Partitioner.Partition(r.Key, len(p.parts))
	if part < 0 || part >= len(p.parts) {
		p.release(size)
		fn(Position{}, fmt.Errorf("%w: partitioner chose %d of %d", ErrPartitionNotFound, part, len(p.parts)))
		return
	}
	p.closeMu.RLock()
	defer p.closeMu.RUnlock()
	if p.closed {
		p.release(size)
		fn(Position{}, ErrClosed)
		return
	}
	p.parts[part].enqueue(pending{rec: r, size: size, fn: fn, deadline: time.Now().Add(p.opts.DeliveryTimeout)})
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

type pending struct {
	rec      storage.Record
	size     int
	fn       func(Position, error)
	deadline time.Time
}

// partWriter batches and sends one partition's records. Its goroutine is the
// only sender for the partition, so batches are proposed, acknowledged and
// called back in produce order.
type partWriter struct {
	p    *producer
	idx  int
	wake chan struct{}
	stop chan struct{}

	mu    sync.Mutex
	queue []pending
	sent  uint64 // records taken from the queue so far
	marks []flushMark

	// Owned by the run goroutine.
	rp      *replication.Partition
	epoch   uint32
	seq     int32
	builder storage.BatchBuilder
}

type flushMark struct {
	upTo uint64 // done when this many records were completed
	ch   chan struct{}
}

func (w *partWriter) enqueue(pd pending) {
	w.mu.Lock()
	w.queue = append(w.queue, pd)
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// flushMark returns a channel closed once every record queued so far is done.
func (w *partWriter) flushMark() chan struct{} {
	w.mu.Lock()
	defer w.mu.Unlock()
	ch := make(chan struct{})
	upTo := w.sent + uint64(len(w.queue))
	if upTo == w.sent {
		close(ch)
		return ch
	}
	w.marks = append(w.marks, flushMark{upTo: upTo, ch: ch})
	return ch
}

// completed records that n more records are done and fires flush marks.
func (w *partWriter) completed(n int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.sent += uint64(n)
	kept := w.marks[:0]
	for _, m := range w.marks {
		if m.upTo <= w.sent {
			close(m.ch)
		} else {
			kept = append(kept, m)
		}
	}
	w.marks = kept
}

func (w *partWriter) run() {
	defer w.p.wg.Done()
	stopping := false
	for {
		if !stopping {
			select {
			case <-w.wake:
			case <-w.stop:
				stopping = true
			}
		}
		if w.p.opts.Linger > 0 && !stopping && w.queuedBytes() < w.p.opts.BatchBytes {
			t := time.NewTimer(w.p.opts.Linger)
			select {
			case <-t.C:
			case <-w.stop:
				stopping = true
				t.Stop()
			}
		}
		for {
			batch := w.take()
			if len(batch) == 0 {
				break
			}
			w.send(batch)
		}
		if stopping {
			return
		}
	}
}

func (w *partWriter) queuedBytes() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	for _, pd := range w.queue {
		n += pd.size
	}
	return n
}

// take removes up to BatchBytes of records from the queue.
func (w *partWriter) take() []pending {
	w.mu.Lock()
	defer w.mu.Unlock()
	n, bytes := 0, 0
	for n < len(w.queue) && (n == 0 || bytes+w.queue[n].size <= w.p.opts.BatchBytes) {
		bytes += w.queue[n].size
		n++
	}
	batch := w.queue[:n:n]
	w.queue = w.queue[n:]
	if len(w.queue) == 0 {
		w.queue = nil
	}
	return batch
}

// send proposes one batch, retrying retriable failures until the earliest
// delivery deadline in it, and completes its records in order.
func (w *partWriter) send(batch []pending) {
	pos, err := w.sendBatch(batch)
	size := 0
	for i, pd := range batch {
		size += pd.size
		if err != nil {
			pd.fn(Position{}, err)
		} else {
			pd.fn(Position{Partition: w.idx, Offset: pos + int64(i)}, nil)
		}
	}
	w.p.release(size)
	w.completed(len(batch))
	if kp, ok := w.p.opts.Partitioner.(*KafkaPartitioner); ok {
		kp.batchDone(w.idx, len(w.p.parts))
	}
}

func (w *partWriter) sendBatch(batch []pending) (int64, error) {
	ctx, cancel := context.WithDeadline(context.Background(), batch[0].deadline)
	defer cancel()
	go func() { // Close of the Log ends a retry loop early.
		select {
		case <-w.p.t.l.closed:
			cancel()
		case <-ctx.Done():
		}
	}()
	if w.rp == nil {
		rp, err := w.p.t.partition(ctx, w.idx)
		if err != nil {
			return 0, err
		}
		w.rp = rp
	}
	pid, err := w.p.producerID(ctx)
	if err != nil {
		return 0, err
	}
	w.builder.Reset()
	for _, pd := range batch {
		w.builder.Add(pd.rec)
	}
	seq := int32(-1)
	if pid != 0 {
		seq = w.seq
	}
	enc, err := w.builder.Build(storage.Compression(*w.p.opts.Compression), pid, w.epoch, seq)
	if err != nil {
		return 0, fmt.Errorf("%w: %w", ErrRecordTooLarge, err)
	}
	cmd := make([]byte, 1+len(enc))
	cmd[0] = storage.CmdAppend
	copy(cmd[1:], enc)
	backoff := 5 * time.Millisecond
	for {
		if err := w.p.t.check(); err != nil {
			return 0, err
		}
		// Each attempt gets a bounded slice of the delivery time, so a
		// proposal lost in a leader change is retried rather than waited on.
		actx, acancel := context.WithTimeout(ctx, proposeAttemptTimeout)
		res, err := w.rp.Propose(actx, cmd)
		acancel()
		if err == nil {
			switch res.Status {
			case storage.StatusOK, storage.StatusDuplicate:
				if pid != 0 {
					w.seq += int32(len(batch))
				}
				return res.BaseOffset, nil
			case storage.StatusCorrupt:
				return 0, fmt.Errorf("%w: partition refused the batch", ErrCorrupt)
			default:
				w.bumpEpoch()
				return 0, fmt.Errorf("%w: %s", ErrOutOfOrderSequence, res.Status)
			}
		}
		retry := replication.IsRetriable(err) && (pid != 0 || !errors.Is(err, context.DeadlineExceeded))
		if !retry || ctx.Err() != nil {
			if pid != 0 {
				// The batch may or may not be stored. A new epoch restarts the
				// sequence, so the next batch is accepted either way.
				w.bumpEpoch()
			}
			if ctx.Err() != nil && w.p.t.l.isClosed() {
				return 0, ErrClosed
			}
			return 0, mapErr(err)
		}
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
		}
		backoff = min(2*backoff, 500*time.Millisecond)
	}
}

const proposeAttemptTimeout = 3 * time.Second

func (w *partWriter) bumpEpoch() {
	w.epoch++
	w.seq = 0
}
