package replog

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/replog/replog/replication"
	"github.com/replog/replog/storage"
)

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
// each batch carries the producer's epoch and the next sequence number, and
// the partition accepts only the next one. If a batch fails with a retriable
// error, it and every batch after it are proposed again, in order, under the
// same epoch and sequence numbers; copies that were already stored come back
// as duplicates with their original offsets, and a batch that overtook a
// lost one is refused, so nothing is stored twice or out of order.
//
// When a batch fails for good (its DeliveryTimeout passed, or the partition
// refused it), the batches after it would be refused for the gap in the
// sequence, so the writer starts a new epoch and sends them again from
// sequence 0. An earlier copy of one of them, still pending somewhere in
// Raft, would be accepted too if it committed before the first batch of the
// new epoch (the partition fences an old epoch only from then on): a
// duplicate. So before a new epoch the writer waits until every proposal it
// made has an outcome (recover), as Kafka's producer waits for its
// in-flight requests; only batches known not to be stored are sent again,
// and those whose fate stays unknown fail with [ErrAmbiguous].
//
// Without idempotence only one batch is in flight, and a batch that may be
// stored (a timeout, a leader change while it was pending) is never sent
// again: it fails with [ErrAmbiguous].
type partWriter struct {
	p     *producer
	idx   int
	stats *partCounters
	wake  chan struct{}
	stop  chan struct{}

	mu    sync.Mutex
	queue pendingQueue
	spare [][]pending // slices of completed batches, for reuse
	qsize int         // bytes in queue
	taken int         // records taken from the queue, not yet completed
	sent  uint64      // records completed so far
	marks []flushMark

	// Owned by the run goroutine.
	rp       *replication.Partition // nil until resolved, and after the replica here stopped
	epoch    uint32
	seq      int32
	builder  storage.BatchBuilder
	inflight []*batchReq // proposed, oldest first
	resend   []*batchReq // to propose again before anything new, oldest first
	backoff  time.Duration
	retryAt  time.Time
	// txnNum is the session's transaction this partition was last added
	// to, serial the coordinator's number for it (transactional writers).
	txnNum uint64
	serial uint64
}

type batchReq struct {
	recs     []pending
	cmd      []byte
	pid      uint64
	serial   uint64 // the transaction's, for a transactional writer
	seq      int32  // first sequence number, once encoded
	maxBytes int    // the topic's MaxMessageBytes when the batch was taken
	notified bool   // AcksNone: the callbacks already ran
	attempts int    // proposals made, for the retry counter

	// prop is the attempt waited on; nil while the batch waits to be sent.
	prop *replication.Proposal
	// stale are earlier attempts given up on before their outcome was
	// known (the leader moved): they may still commit.
	stale []*replication.Proposal
	// unknown: an attempt ended without a known outcome (it timed out, or
	// its replica stopped), so the batch may be stored.
	unknown bool
	stored  bool  // an attempt was stored (or found its earlier copy)
	base    int64 // the stored batch's first offset
	err     error // why the latest attempt failed
}

// mayBeStored reports whether an attempt of b might commit or have
// committed without b knowing.
func (b *batchReq) mayBeStored() bool { return b.unknown || b.prop != nil || len(b.stale) > 0 }

type flushMark struct {
	upTo uint64 // done when this many records were completed
	ch   chan struct{}
}

func (w *partWriter) enqueue(pd pending) {
	w.mu.Lock()
	w.queue.push(pd)
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
	upTo := w.sent + uint64(w.queue.len()) + uint64(w.inflightRecords())
	if upTo == w.sent {
		close(ch)
		return ch
	}
	w.marks = append(w.marks, flushMark{upTo: upTo, ch: ch})
	// Flush sends what lingers at once, as Kafka's flush does.
	select {
	case w.wake <- struct{}{}:
	default:
	}
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
		// A batch waiting out a back-off (no leader, or a proposal dropped
		// during a leadership transfer) goes as soon as a leader is known:
		// the back-off only paces retries while nothing changes.
		var leaderCh <-chan struct{}
		if len(w.resend) > 0 && w.rp != nil {
			_, leaderCh = w.rp.LeaderState()
		}
		if len(w.inflight) == 0 {
			select {
			case <-w.p.t.l.ctx.Done():
				w.abort()
				return
			case <-wake:
			case <-timer:
			case <-leaderCh:
				w.leaderKnown()
			case <-stop:
				stopping = true
			}
		} else {
			head := w.inflight[0]
			// Without idempotence a proposal is never sent twice, so a
			// leader change is no reason to give up waiting on it.
			var moved <-chan struct{}
			if !w.p.opts.DisableIdempotence {
				moved = head.prop.LeaderChanged()
			}
			select {
			case <-w.p.t.l.ctx.Done():
				w.abort()
				return
			case r := <-head.prop.Done():
				res, err := head.prop.Result(r)
				head.prop = nil
				w.headDone(head, res, err)
			case <-moved:
				if head.prop.LeaderMoved() {
					w.retryAll()
				}
			case <-leaderCh:
				w.leaderKnown()
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

// leaderKnown ends a retry back-off once the partition has a leader.
func (w *partWriter) leaderKnown() {
	if l, _ := w.rp.LeaderState(); l != 0 {
		w.retryAt = time.Now()
	}
}

func (w *partWriter) queueLen() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.queue.len()
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
	if w.queue.len() == 0 || len(w.marks) > 0 {
		return 0 // nothing lingers, or a Flush waits
	}
	return max(w.queue.at(0).at.Add(w.p.opts.Linger).Sub(now), time.Millisecond)
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
			maxBytes := w.p.t.maxMessageBytes()
			recs := w.take(stopping, maxBytes)
			if len(recs) == 0 {
				return
			}
			var err error
			if b, err = w.build(recs, maxBytes); err != nil {
				w.finish(&batchReq{recs: recs}, 0, err)
				continue
			}
		}
		if err := w.propose(b); err != nil {
			b.err = err // b reached no log
			w.resend = append([]*batchReq{b}, w.resend...)
			if w.retriable(b) {
				w.scheduleRetry()
				return
			}
			w.giveUp(b)
			continue
		}
		w.inflight = append(w.inflight, b)
		w.onProposed(b)
	}
}

// take removes up to BatchBytes of records from the queue, and no more
// than fit a batch of maxBytes uncompressed (the topic's MaxMessageBytes),
// unless they should linger longer. The first record is taken whatever
// its size: encode tells whether it fits.
func (w *partWriter) take(stopping bool, maxBytes int) []pending {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.queue.len() == 0 {
		return nil
	}
	limit := min(w.p.opts.BatchBytes, maxBytes-storage.HeaderSize)
	// A partial batch waits while another is in flight: until it is full,
	// its oldest record has lingered, or the pipeline drains. So a lone
	// record goes out at once, and under load batches fill instead of
	// splitting into many small proposals.
	// A Flush waiting (a mark) sends at once too.
	if !stopping && len(w.marks) == 0 && w.qsize < limit {
		lg := w.p.opts.Linger
		waited := time.Since(w.queue.at(0).at)
		if (lg > 0 && waited < lg) || (lg == 0 && len(w.inflight) > 0) {
			return nil
		}
	}
	n, bytes := 0, 0
	for n < w.queue.len() && (n == 0 || bytes+w.queue.at(n).size-pendingOverhead <= limit) {
		bytes += w.queue.at(n).size
		n++
	}
	// The batch gets its own slice, from completed batches' when there is
	// one; the queue is a ring (see pendingQueue).
	var batch []pending
	if k := len(w.spare); k > 0 {
		batch, w.spare = w.spare[k-1][:0], w.spare[:k-1]
	}
	batch = w.queue.pop(batch, n)
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

// build encodes records as the next batch of the sequence, of at most
// maxBytes encoded.
func (w *partWriter) build(recs []pending, maxBytes int) (*batchReq, error) {
	ctx, cancel := w.deliveryCtx(recs[0].at.Add(w.p.opts.DeliveryTimeout))
	defer cancel()
	pid, err := w.p.producerID(ctx)
	if err != nil {
		return nil, err
	}
	b := &batchReq{recs: recs, pid: pid, maxBytes: maxBytes}
	if w.p.txn != nil {
		if b.serial, err = w.p.txn.partitionSerial(ctx, w); err != nil {
			return nil, err
		}
	}
	return b, w.encode(b)
}

// encode (re)builds the command of b with the current epoch and the next
// sequence number, as a batch not yet sent. A transactional writer's
// batch is transactional, and its command carries the transaction's
// serial number, so that the partition refuses it if that transaction is
// over there.
func (w *partWriter) encode(b *batchReq) error {
	txn := w.p.txn != nil
	if txn && !storage.KafkaFits(b.pid, w.epoch) {
		return fmt.Errorf("%w: producer %d epoch %d does not fit a transactional batch", ErrInvalidConfig, b.pid, w.epoch)
	}
	w.builder.SetLegacy(!storage.KafkaFits(b.pid, w.epoch))
	w.builder.SetTransactional(txn)
	for _, pd := range b.recs {
		w.builder.Add(pd.rec)
	}
	seq := int32(-1)
	if b.pid != 0 {
		seq = w.seq
	}
	prefix := 1
	if txn {
		prefix = storage.TxnAppendHeaderSize
	}
	codec := storage.Compression(*w.p.opts.Compression)
	cmd, err := w.builder.BuildWithPrefix(prefix, codec, b.pid, w.epoch, seq)
	if err == nil && len(cmd)-prefix > b.maxBytes && codec != storage.CompressionNone && storage.HeaderSize+w.builder.RawSize() <= b.maxBytes {
		// The codec grew the records (incompressible data) past the
		// topic's limit; uncompressed they fit, and a batch says its
		// codec, so consumers read it either way.
		cmd, err = w.builder.BuildWithPrefix(prefix, storage.CompressionNone, b.pid, w.epoch, seq)
	}
	if err != nil {
		return fmt.Errorf("%w: %w", ErrRecordTooLarge, err)
	}
	if n := len(cmd) - prefix; n > b.maxBytes {
		return fmt.Errorf("%w: a batch of %d record(s) takes %d bytes encoded, the topic's MaxMessageBytes is %d", ErrRecordTooLarge, len(b.recs), n, b.maxBytes)
	}
	b.seq = seq
	if b.pid != 0 {
		w.seq += int32(len(b.recs)) // only once built: a gap would fail every later batch
	}
	if txn {
		storage.PutTxnAppendHeader(cmd, b.serial)
	} else {
		cmd[0] = storage.CmdAppend
	}
	b.cmd = cmd
	b.prop, b.stale, b.unknown, b.err = nil, nil, false, nil
	return nil
}

// deadline is when b's delivery time is up: its oldest record's.
func (w *partWriter) deadline(b *batchReq) time.Time {
	return b.recs[0].at.Add(w.p.opts.DeliveryTimeout)
}

// expired reports whether too little of b's delivery time is left for
// another attempt (dragonboat refuses a timeout below one Raft tick).
func (w *partWriter) expired(b *batchReq) bool {
	return time.Until(w.deadline(b)) < 2*w.p.t.l.opts.RTT
}

// deliveryCtx is a context ending at a batch's delivery deadline or when the
// Log closes.
func (w *partWriter) deliveryCtx(deadline time.Time) (context.Context, context.CancelFunc) {
	return context.WithDeadline(w.p.t.l.ctx, deadline)
}

// propose sends one attempt of b, through this node's replica of the
// partition. An error means b reached no log.
func (w *partWriter) propose(b *batchReq) error {
	if err := w.p.t.check(); err != nil {
		return err
	}
	if w.expired(b) {
		return context.DeadlineExceeded
	}
	// Each attempt gets the node's attempt timeout: a proposal lost in a
	// leader change is sent again rather than waited on for the whole
	// DeliveryTimeout.
	timeout := min(time.Until(w.deadline(b)), w.p.t.l.node.AttemptTimeout())
	if err := w.resolve(timeout); err != nil {
		return err
	}
	if err := w.rp.Err(); err != nil {
		return err // out of service: see replication.Partition.Err
	}
	if leader, _ := w.rp.LeaderState(); leader == 0 {
		return fmt.Errorf("%w: no leader for partition %d", replication.ErrUnavailable, w.idx)
	}
	pr, err := w.rp.ProposeAsync(b.cmd, timeout)
	if err != nil {
		return err
	}
	if b.attempts++; b.attempts > 1 {
		w.p.t.l.node.Metrics().Retries.Add(1)
	}
	b.prop = pr
	return nil
}

// resolve finds this node's replica of the partition, again if the one in
// use stopped: a replica moved off this node is stopped, and the node then
// serves the partition through a non-voting replica.
func (w *partWriter) resolve(timeout time.Duration) error {
	if w.rp != nil {
		if running, _ := w.p.t.l.node.Running(w.rp); running {
			return nil
		}
	}
	w.rp = nil
	ctx, cancel := context.WithTimeout(w.p.t.l.ctx, timeout)
	defer cancel()
	rp, err := w.p.t.partition(ctx, w.idx)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) && w.p.t.l.ctx.Err() == nil {
			// Joining the partition's group takes longer than an attempt:
			// the join goes on, and the next attempt finds it further on.
			return fmt.Errorf("%w: %w", replication.ErrUnavailable, err)
		}
		return err
	}
	w.rp = rp
	return nil
}

// abort fails everything buffered or in flight with ErrClosed: the Log is
// gone (closed after its producers, or crashed in a test).
func (w *partWriter) abort() {
	for _, b := range slices.Concat(w.inflight, w.resend) {
		err := ErrClosed
		if b.mayBeStored() {
			err = fmt.Errorf("%w: %w", ErrClosed, ErrAmbiguous)
		}
		w.finish(b, 0, err)
	}
	w.inflight, w.resend = nil, nil
	w.mu.Lock()
	q := w.queue.pop(nil, w.queue.len())
	w.queue, w.qsize = pendingQueue{}, 0
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

// note records the outcome of one attempt of b.
func (w *partWriter) note(b *batchReq, res storage.Result, err error) {
	switch {
	case err != nil:
		b.err = err
		if replication.IsAmbiguous(err) {
			b.unknown = true
		}
	case res.Status == storage.StatusOK || res.Status == storage.StatusDuplicate:
		if !b.stored {
			b.stored, b.base = true, res.BaseOffset
		}
	case res.Status == storage.StatusCorrupt || res.Status == storage.StatusInvalid:
		b.err = fmt.Errorf("%w: partition refused the batch (%s)", ErrCorrupt, res.Status)
	case res.Status == storage.StatusFenced && w.p.txn != nil:
		b.err = fmt.Errorf("%w: the partition knows a newer epoch of the producer", ErrFenced)
	case res.Status == storage.StatusTxnInvalid:
		b.err = fmt.Errorf("%w: the partition's transaction of the producer is not the current one", ErrInvalidTxnState)
	default:
		b.err = fmt.Errorf("%w: %s", ErrOutOfOrderSequence, res.Status)
	}
}

// retriable reports whether b may be proposed again, under the same epoch
// and sequence number, after b.err.
func (w *partWriter) retriable(b *batchReq) bool {
	switch {
	case w.p.t.l.isClosed() || w.expired(b):
		return false
	case b.pid == 0 && b.unknown:
		// Without idempotence a batch that may be stored is never sent
		// again: it could be stored twice.
		return false
	}
	return replication.IsRetriable(b.err)
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
	w.note(head, res, err)
	switch {
	case head.stored:
		w.inflight = w.inflight[1:]
		w.backoff = 0
		w.finish(head, head.base, nil)
	case w.retriable(head):
		w.retryAll()
	default:
		w.giveUp(head)
	}
}

// retryAll moves every batch in flight back to be proposed again, in order.
// Their pending attempts are kept as stale: they may still commit.
func (w *partWriter) retryAll() {
	for _, b := range w.inflight {
		if b.prop != nil {
			b.stale = append(b.stale, b.prop)
			b.prop = nil
		}
	}
	w.resend = slices.Concat(w.inflight, w.resend)
	w.inflight = nil
	w.scheduleRetry()
}

// giveUp handles b, in flight or waiting to be sent again, that cannot be
// delivered as it is.
func (w *partWriter) giveUp(b *batchReq) {
	if b.pid != 0 {
		w.recover()
		return
	}
	// Without idempotence b is the only batch in flight or waiting, and no
	// attempt of it is pending.
	notB := func(x *batchReq) bool { return x == b }
	w.inflight = slices.DeleteFunc(w.inflight, notB)
	w.resend = slices.DeleteFunc(w.resend, notB)
	w.finish(b, 0, w.failure(b))
}

// recover settles every batch in flight or waiting to be sent again, after
// one of them failed for good, and starts a new epoch for the rest.
//
// It first waits until every attempt of every batch has an outcome (each
// ends within its attempt timeout). Then, in order: a batch with a stored
// attempt succeeds; a batch that may be stored fails with ErrAmbiguous; a
// batch certainly not stored is sent again under the new epoch, unless its
// delivery time is up or its error is final. Once a batch is certainly not
// stored, no later batch of the old epoch can be (its sequence number would
// be out of order), so from there on none is ambiguous. And once one batch
// is kept to be sent again, every later one is kept too, so that callbacks
// still run in produce order (a later one failing for good fails when sent).
func (w *partWriter) recover() {
	all := slices.Concat(w.inflight, w.resend)
	w.inflight, w.resend = nil, nil
	for _, b := range all {
		for _, pr := range slices.Concat([]*replication.Proposal{b.prop}, b.stale) {
			if pr == nil {
				continue
			}
			select {
			case r := <-pr.Done():
				res, err := pr.Result(r)
				w.note(b, res, err)
			case <-w.p.t.l.ctx.Done():
				w.inflight = all
				w.abort()
				return
			}
		}
		b.prop, b.stale = nil, nil
	}
	var keep []*batchReq
	gap := false // an earlier batch is certainly not stored
	var firstLost *batchReq
	for _, b := range all {
		if gap {
			b.unknown = false
		}
		if !b.stored && firstLost == nil {
			firstLost = b
		}
		switch {
		case b.stored:
			w.finish(b, b.base, nil)
		case len(keep) > 0 || w.resendable(b):
			keep = append(keep, b)
		default:
			w.finish(b, 0, w.failure(b))
		}
		if !b.stored && !b.unknown {
			gap = true
		}
	}
	if w.p.txn != nil {
		// A transactional writer keeps its epoch, the coordinator's: the
		// transaction cannot commit anyway (its records failed), and the
		// next one goes on with the sequence where the partition stopped,
		// if that is known.
		switch {
		case firstLost == nil:
		case firstLost.unknown:
			w.p.txn.loseSequence(fmt.Errorf("%w: %s/%d: a batch may or may not be stored", ErrAmbiguous, w.p.t.meta.Name, w.idx))
		case errors.Is(firstLost.err, ErrOutOfOrderSequence):
			// The partition expects another sequence number (it forgot
			// the producer): only a new epoch starts afresh.
			w.p.txn.loseSequence(fmt.Errorf("%s/%d: %w", w.p.t.meta.Name, w.idx, firstLost.err))
		default:
			w.seq = firstLost.seq
		}
		w.backoff = 0
		w.retryAt = time.Now()
		return
	}
	w.epoch++
	w.seq = 0
	for _, b := range keep {
		if err := w.encode(b); err != nil {
			w.finish(b, 0, err)
			continue
		}
		w.resend = append(w.resend, b)
	}
	w.backoff = 0
	w.retryAt = time.Now()
}

// resendable reports whether b, certainly not stored, may be sent again
// under a new epoch.
func (w *partWriter) resendable(b *batchReq) bool {
	// A transactional writer cannot start a new epoch: see recover.
	if b.stored || b.unknown || w.p.txn != nil || w.p.t.l.isClosed() || w.expired(b) {
		return false
	}
	return b.err == nil || replication.IsRetriable(b.err) || errors.Is(b.err, ErrOutOfOrderSequence)
}

// failure is the error b's records fail with.
func (w *partWriter) failure(b *batchReq) error {
	var err error
	switch {
	case w.p.t.l.isClosed():
		err = ErrClosed
	case w.expired(b) && (b.err == nil || replication.IsRetriable(b.err) || errors.Is(b.err, context.DeadlineExceeded)):
		err = fmt.Errorf("replog: not delivered within DeliveryTimeout %v (last attempt: %v): %w",
			w.p.opts.DeliveryTimeout, b.err, context.DeadlineExceeded)
	case b.err == nil: // not reached: a batch fails for a reason
		err = fmt.Errorf("%w: batch not delivered", ErrUnavailable)
	default:
		err = mapErr(b.err)
	}
	if b.unknown && !errors.Is(err, ErrAmbiguous) {
		err = fmt.Errorf("%w: %w", ErrAmbiguous, err)
	}
	return err
}

// finish completes a batch's records in order: with their offsets, or with
// err.
func (w *partWriter) finish(b *batchReq, base int64, err error) {
	w.count(b, base, err)
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

// count adds a finished batch to the counters and tells the hooks.
func (w *partWriter) count(b *batchReq, base int64, err error) {
	bytes := 0
	for _, pd := range b.recs {
		bytes += payloadBytes(&pd.rec)
	}
	if err != nil {
		w.stats.produceErrors.Add(1)
	} else {
		w.stats.producedBatches.Add(1)
		w.stats.producedRecords.Add(uint64(len(b.recs)))
		w.stats.producedBytes.Add(uint64(bytes))
	}
	if hs := w.p.hooks.written; len(hs) > 0 && len(b.recs) > 0 {
		bw := BatchWritten{Topic: w.p.t.meta.Name, Partition: w.idx, BaseOffset: base, Records: len(b.recs), Bytes: bytes, Latency: time.Since(b.recs[0].at), Err: err}
		if err != nil {
			bw.BaseOffset = -1
		}
		for _, h := range hs {
			h.OnBatchWritten(bw)
		}
	}
}
