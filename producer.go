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
	// MaxInFlight is how many batches per partition may be proposed and not
	// yet acknowledged, 1 to 5 (as Kafka's idempotent producer). Default 5.
	// Order is kept however many are in flight. Without idempotence it is 1.
	MaxInFlight int
	// Acks is when a record counts as written. Default [AcksAll].
	Acks Acks
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
	part := -1
	if m.Partition != nil {
		part = *m.Partition
	}
	p.p.produce(ctx, r, part, fn)
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

// produce buffers r for partition part, or the Partitioner's choice if part
// is negative.
func (p *producer) produce(ctx context.Context, r storage.Record, part int, fn func(Position, error)) {
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

// pendingOverhead approximates the memory a buffered record costs besides
// its key, value and headers: the pending entry and its share of the queue.
const pendingOverhead = 128

type pending struct {
	rec  storage.Record
	size int
	fn   func(Position, error)
	at   time.Time // when it was buffered, for Linger and DeliveryTimeout
}

// partWriter batches and sends one partition's records. Its goroutine is the
// only sender for the partition: batches are proposed in order, up to
// MaxInFlight at once, and completed (callbacks run) in the same order.
//
// Ordering with several batches in flight rests on the idempotent producer:
// each batch carries the next sequence number, and the partition accepts
// only the next one. If a batch fails with a retriable error, it and every
// batch after it are proposed again, in order; copies that were already
// stored come back as duplicates with their original offsets, and a batch
// that overtook a lost one is refused, so nothing is stored twice or out of
// order. Without idempotence only one batch is in flight.
type partWriter struct {
	p    *producer
	idx  int
	wake chan struct{}
	stop chan struct{}

	mu    sync.Mutex
	queue []pending
	spare [][]pending // slices of completed batches, for reuse
	qsize int         // bytes in queue
	taken int         // records taken from the queue, not yet completed
	sent  uint64      // records completed so far
	marks []flushMark

	// Owned by the run goroutine.
	rp       *replication.Partition
	epoch    uint32
	seq      int32
	builder  storage.BatchBuilder
	inflight []*batchReq // proposed, oldest first
	resend   []*batchReq // to propose again before anything new, oldest first
	backoff  time.Duration
	retryAt  time.Time
}

type batchReq struct {
	recs     []pending
	cmd      []byte
	prop     *replication.Proposal
	pid      uint64
	notified bool // AcksNone: the callbacks already ran
}

type flushMark struct {
	upTo uint64 // done when this many records were completed
	ch   chan struct{}
}

func (w *partWriter) enqueue(pd pending) {
	w.mu.Lock()
	w.queue = append(w.queue, pd)
	w.qsize += pd.size
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
	upTo := w.sent + uint64(len(w.queue)) + uint64(w.inflightRecords())
	if upTo == w.sent {
		close(ch)
		return ch
	}
	w.marks = append(w.marks, flushMark{upTo: upTo, ch: ch})
	return ch
}

// inflightRecords counts records taken from the queue and not completed.
// Called with mu held; the run goroutine updates the counter under mu.
func (w *partWriter) inflightRecords() int { return w.taken }

// completed records that n more records are done and fires flush marks.
func (w *partWriter) completed(n int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.sent += uint64(n)
	w.taken -= n
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

func (w *partWriter) maxInFlight() int {
	if w.p.opts.DisableIdempotence {
		return 1
	}
	return w.p.opts.MaxInFlight
}

func (w *partWriter) run() {
	defer w.p.wg.Done()
	stopping := false
	for {
		w.fill(stopping)
		if len(w.inflight) == 0 && len(w.resend) == 0 && stopping && w.queueLen() == 0 {
			return
		}
		var timer <-chan time.Time
		var t *time.Timer
		if wait := w.nextWake(stopping); wait > 0 {
			t = time.NewTimer(wait)
			timer = t.C
		}
		var wake chan struct{}
		if len(w.inflight) < w.maxInFlight() {
			wake = w.wake
		}
		var stop chan struct{}
		if !stopping {
			stop = w.stop
		}
		if len(w.inflight) == 0 {
			select {
			case <-w.p.t.l.ctx.Done():
				w.abort()
				return
			case <-wake:
			case <-timer:
			case <-stop:
				stopping = true
			}
		} else {
			head := w.inflight[0]
			select {
			case <-w.p.t.l.ctx.Done():
				w.abort()
				return
			case r := <-head.prop.Done():
				res, err := head.prop.Result(r)
				w.headDone(head, res, err)
			case <-head.prop.LeaderChanged():
				if head.prop.LeaderMoved() {
					w.retryAll()
				}
			case <-wake:
			case <-timer:
			case <-stop:
				stopping = true
			}
		}
		if t != nil {
			t.Stop()
		}
	}
}

func (w *partWriter) queueLen() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.queue)
}

// nextWake returns how long to sleep before fill can make progress: the
// rest of a retry back-off or of the oldest record's linger. Zero means no
// timer is needed.
func (w *partWriter) nextWake(stopping bool) time.Duration {
	now := time.Now()
	if len(w.resend) > 0 {
		return max(w.retryAt.Sub(now), time.Millisecond)
	}
	if w.p.opts.Linger <= 0 || stopping {
		return 0
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.queue) == 0 {
		return 0
	}
	return max(w.queue[0].at.Add(w.p.opts.Linger).Sub(now), time.Millisecond)
}

// fill proposes batches until MaxInFlight are in flight: first those to
// resend, then new ones from the queue.
func (w *partWriter) fill(stopping bool) {
	for len(w.inflight) < w.maxInFlight() {
		var b *batchReq
		switch {
		case len(w.resend) > 0:
			if time.Now().Before(w.retryAt) {
				return
			}
			b = w.resend[0]
			w.resend = w.resend[1:]
		default:
			recs := w.take(stopping)
			if len(recs) == 0 {
				return
			}
			var err error
			if b, err = w.build(recs); err != nil {
				w.finish(&batchReq{recs: recs}, 0, err)
				continue
			}
		}
		if err := w.propose(b); err != nil {
			if w.retriable(b, err) {
				w.resend = append([]*batchReq{b}, w.resend...)
				w.scheduleRetry()
				return
			}
			w.fail(b, err)
			continue
		}
		w.inflight = append(w.inflight, b)
		w.onProposed(b)
	}
}

// take removes up to BatchBytes of records from the queue, unless they
// should linger longer.
func (w *partWriter) take(stopping bool) []pending {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.queue) == 0 {
		return nil
	}
	// A partial batch waits while another is in flight: until it is full,
	// its oldest record has lingered, or the pipeline drains. So a lone
	// record goes out at once, and under load batches fill instead of
	// splitting into many small proposals.
	if !stopping && w.qsize < w.p.opts.BatchBytes {
		lg := w.p.opts.Linger
		waited := time.Since(w.queue[0].at)
		if (lg > 0 && waited < lg) || (lg == 0 && len(w.inflight) > 0) {
			return nil
		}
	}
	n, bytes := 0, 0
	for n < len(w.queue) && (n == 0 || bytes+w.queue[n].size-pendingOverhead <= w.p.opts.BatchBytes) {
		bytes += w.queue[n].size
		n++
	}
	// The batch gets its own slice and the queue keeps its backing array,
	// so steady producing reuses a few arrays instead of growing new ones.
	var batch []pending
	if k := len(w.spare); k > 0 {
		batch, w.spare = w.spare[k-1][:0], w.spare[:k-1]
	}
	batch = append(batch, w.queue[:n]...)
	rest := copy(w.queue, w.queue[n:])
	clear(w.queue[rest:])
	w.queue = w.queue[:rest]
	w.qsize -= bytes
	w.taken += n
	return batch
}

// recycle keeps a completed batch's slice for reuse.
func (w *partWriter) recycle(recs []pending) {
	clear(recs)
	w.mu.Lock()
	if len(w.spare) < 8 {
		w.spare = append(w.spare, recs[:0])
	}
	w.mu.Unlock()
}

// build encodes records as the next batch of the sequence.
func (w *partWriter) build(recs []pending) (*batchReq, error) {
	ctx, cancel := w.deliveryCtx(recs[0].at.Add(w.p.opts.DeliveryTimeout))
	defer cancel()
	if w.rp == nil {
		rp, err := w.p.t.partition(ctx, w.idx)
		if err != nil {
			return nil, err
		}
		w.rp = rp
	}
	pid, err := w.p.producerID(ctx)
	if err != nil {
		return nil, err
	}
	b := &batchReq{recs: recs, pid: pid}
	return b, w.encode(b)
}

// encode (re)builds the command of b with the current epoch and the next
// sequence number.
func (w *partWriter) encode(b *batchReq) error {
	w.builder.Reset()
	for _, pd := range b.recs {
		w.builder.Add(pd.rec)
	}
	seq := int32(-1)
	if b.pid != 0 {
		seq = w.seq
		w.seq += int32(len(b.recs))
	}
	cmd, err := w.builder.BuildWithPrefix(1, storage.Compression(*w.p.opts.Compression), b.pid, w.epoch, seq)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrRecordTooLarge, err)
	}
	cmd[0] = storage.CmdAppend
	b.cmd = cmd
	return nil
}

// deadline is when b's delivery time is up: its oldest record's.
func (w *partWriter) deadline(b *batchReq) time.Time {
	return b.recs[0].at.Add(w.p.opts.DeliveryTimeout)
}

// deliveryCtx is a context ending at a batch's delivery deadline or when the
// Log closes.
func (w *partWriter) deliveryCtx(deadline time.Time) (context.Context, context.CancelFunc) {
	return context.WithDeadline(w.p.t.l.ctx, deadline)
}

func (w *partWriter) propose(b *batchReq) error {
	if err := w.p.t.check(); err != nil {
		return err
	}
	if w.p.t.l.isClosed() {
		return ErrClosed
	}
	timeout := min(time.Until(w.deadline(b)), proposeAttemptTimeout)
	if timeout <= 0 {
		return context.DeadlineExceeded
	}
	if w.p.t.l.node.Leader(w.rp.Shard) == 0 {
		return replication.ErrLeaderChanged // no leader yet: retry after a back-off
	}
	pr, err := w.rp.ProposeAsync(b.cmd, timeout)
	if err != nil {
		return err
	}
	b.prop = pr
	return nil
}

// abort fails everything buffered or in flight with ErrClosed: the Log is
// gone (closed after its producers, or crashed in a test).
func (w *partWriter) abort() {
	for _, b := range append(w.inflight, w.resend...) {
		w.finish(b, 0, ErrClosed)
	}
	w.inflight, w.resend = nil, nil
	w.mu.Lock()
	q := w.queue
	w.queue, w.qsize = nil, 0
	w.taken += len(q)
	w.mu.Unlock()
	if len(q) > 0 {
		w.finish(&batchReq{recs: q}, 0, ErrClosed)
	}
}

// onProposed runs the AcksNone callbacks: the records are handed to Raft.
func (w *partWriter) onProposed(b *batchReq) {
	if w.p.opts.Acks != AcksNone || b.notified {
		return
	}
	b.notified = true
	for _, pd := range b.recs {
		pd.fn(Position{Partition: w.idx, Offset: -1}, nil)
	}
}

// retriable reports whether b may be proposed again after err.
func (w *partWriter) retriable(b *batchReq, err error) bool {
	if w.p.t.l.isClosed() || time.Now().After(w.deadline(b)) {
		return false
	}
	if !replication.IsRetriable(err) {
		return false
	}
	// Without idempotence a timed-out batch may have been stored: sending it
	// again could write it twice.
	return b.pid != 0 || !errors.Is(err, context.DeadlineExceeded)
}

func (w *partWriter) scheduleRetry() {
	if w.backoff == 0 {
		w.backoff = 5 * time.Millisecond
	} else {
		w.backoff = min(2*w.backoff, 500*time.Millisecond)
	}
	w.retryAt = time.Now().Add(w.backoff)
}

// headDone handles the outcome of the oldest batch in flight.
func (w *partWriter) headDone(head *batchReq, res storage.Result, err error) {
	if err == nil {
		switch res.Status {
		case storage.StatusOK, storage.StatusDuplicate:
			w.inflight = w.inflight[1:]
			w.backoff = 0
			w.finish(head, res.BaseOffset, nil)
			return
		case storage.StatusCorrupt, storage.StatusInvalid:
			err = fmt.Errorf("%w: partition refused the batch", ErrCorrupt)
		default:
			err = fmt.Errorf("%w: %s", ErrOutOfOrderSequence, res.Status)
		}
	} else if w.retriable(head, err) {
		w.retryAll()
		return
	}
	w.inflight = w.inflight[1:]
	w.fail(head, err)
}

// retryAll moves every batch in flight back to be proposed again, in order.
func (w *partWriter) retryAll() {
	w.resend = append(w.inflight, w.resend...)
	w.inflight = nil
	w.scheduleRetry()
}

// fail completes b's records with err. The partition may or may not have
// stored b; later batches would be refused for the gap in the sequence, so
// the producer starts a new epoch and re-encodes them from sequence 0.
func (w *partWriter) fail(b *batchReq, err error) {
	if w.p.t.l.isClosed() && (errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled)) {
		err = ErrClosed
	}
	w.finish(b, 0, mapErr(err))
	if b.pid == 0 {
		return
	}
	w.epoch++
	w.seq = 0
	rest := append(w.inflight, w.resend...)
	w.inflight, w.resend = nil, nil
	for _, r := range rest {
		if err := w.encode(r); err != nil {
			w.finish(r, 0, err)
			continue
		}
		w.resend = append(w.resend, r)
	}
}

// finish completes a batch's records in order: with their offsets, or with
// err.
func (w *partWriter) finish(b *batchReq, base int64, err error) {
	size := 0
	for i, pd := range b.recs {
		size += pd.size
		switch {
		case b.notified:
			// AcksNone: the callback ran when the batch was handed to Raft.
		case err != nil:
			pd.fn(Position{}, err)
		default:
			pd.fn(Position{Partition: w.idx, Offset: base + int64(i)}, nil)
		}
	}
	w.p.release(size)
	w.completed(len(b.recs))
	w.recycle(b.recs)
	b.recs = nil
	if kp, ok := w.p.opts.Partitioner.(*KafkaPartitioner); ok {
		kp.batchDone(w.idx, len(w.p.parts))
	}
}

// proposeAttemptTimeout bounds one proposal: a proposal lost in a leader
// change is retried rather than waited on for the whole DeliveryTimeout.
const proposeAttemptTimeout = 3 * time.Second
