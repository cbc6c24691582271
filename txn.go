package replog

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"
	"time"

	"github.com/replog/replog/replication"
)

// TransactionalOptions configures [Log.NewTransactionalProducer]. The zero
// value (or nil) is valid.
type TransactionalOptions struct {
	// Timeout is how long a transaction may stay open (Kafka's
	// transaction.timeout.ms): the coordinator aborts a transaction
	// still open this long after its first record or offsets, and fences
	// the producer, whose later calls fail with [ErrFenced]. Until then an
	// open transaction holds its partitions' read-committed consumers
	// back (see [ReadCommitted]). Default 1 minute (Kafka's); at most
	// 15 minutes.
	Timeout time.Duration
	// Producer configures the batching of every producer joined to the
	// session (see [ProducerOptions.Transactional]), as one Kafka
	// producer's configuration does for all its topics; the defaults are
	// [ProducerOptions]'s. The session writes each topic through its own
	// partition writers, so MaxBufferedBytes and the Partitioner's state
	// are per topic. Idempotence cannot be turned off and Acks must be
	// [AcksAll]: a transaction needs both. Its Transactional must be nil.
	Producer ProducerOptions
}

// TransactionalProducer is a transactional session (Kafka's transactional
// producer, KIP-98): records produced through the producers joined to it,
// on any topics, and consumer groups' offsets, commit or abort together.
// A consumer with [ReadCommitted] sees a transaction's records once it
// commits, and never those of one that aborted.
//
// The mapping to Kafka's producer API:
//
//   - initTransactions: [Log.NewTransactionalProducer], which fences every
//     earlier session of the same transactional id;
//   - send: [Producer.Produce] and [Producer.ProduceAsync] of the producers
//     made with [ProducerOptions.Transactional];
//   - beginTransaction, commitTransaction, abortTransaction:
//     [TransactionalProducer.Begin], [TransactionalProducer.Commit],
//     [TransactionalProducer.Abort];
//   - sendOffsetsToTransaction: [TransactionalProducer.SendOffsets], which
//     takes the group consumer itself, its positions and its membership
//     (KIP-447).
//
// One transaction is open at a time. Errors tell what to do next, as
// Kafka's do: [ErrFenced] means the session is over (a newer session of
// the id, or the coordinator aborted the transaction at its Timeout):
// every later call fails with it, and only Close is left. After any other
// error of a record, of SendOffsets or of Commit, Abort the transaction
// (or call Commit again if Commit failed on its ctx) and begin the next.
//
// Safe for concurrent use: producers may produce from many goroutines
// while one goroutine begins and ends transactions. Begin, Commit, Abort
// and SendOffsets wait for each other.
type TransactionalProducer struct {
	l    *Log
	id   string
	opts TransactionalOptions

	// gate is held for reading while a record is buffered or offsets are
	// sent, and for writing while the state changes: a record is either
	// buffered before Commit or Abort begins, so that their flush sends
	// it, or refused. Lock order: gate, then mu, then a producer's locks.
	gate sync.RWMutex

	mu    sync.Mutex
	state txnState
	// fatal is why the session is over (state txnFatal or txnClosed).
	fatal error
	prod  replication.TxnProducer
	// num counts transactions begun; a partition writer that added its
	// partition to transaction num remembers it (see partitionSerial).
	num uint64
	// endCommit is the decision under way in state txnEnding; decided:
	// the coordinator took it (EndTxn succeeded), so the other one is
	// refused.
	endCommit, decided bool
	// failed is the first error of a record or of SendOffsets in this
	// transaction: it cannot commit.
	failed error
	// asked: a request that may begin the transaction on the coordinator
	// was sent (adding a partition or a group); added: one succeeded.
	asked, added bool
	groups       map[string]bool // groups added to this transaction
	// seqLost: a writer lost track of its partition's sequence numbers
	// (a batch's outcome is unknown); the session cannot go on after
	// this transaction.
	seqLost error
	cores   map[string]*producer // by topic name: the partition writers
}

type txnState int

const (
	txnReady  txnState = iota // no transaction
	txnOpen                   // Begin was called
	txnEnding                 // Commit or Abort under way, or failed and to be called again
	txnFatal                  // fenced: only Close is left
	txnClosed
)

// NewTransactionalProducer starts a transactional session for the
// transactional id txnID (Kafka's initTransactions): it gets the id's
// producer id and a new epoch from the coordinator, which fences every
// earlier session of txnID (their later calls fail with [ErrFenced]) and
// aborts a transaction one of them left open. Waiting for that abort, and
// retrying while the coordinator completes an earlier transaction, is
// bounded by ctx (30s if it has no deadline). A transactional id is 1 to
// 1024 bytes.
//
// Close it to end the session.
func (l *Log) NewTransactionalProducer(ctx context.Context, txnID string, opts *TransactionalOptions) (*TransactionalProducer, error) {
	var o TransactionalOptions
	if opts != nil {
		o = *opts
	}
	if o.Timeout == 0 {
		o.Timeout = time.Minute
	}
	switch {
	case txnID == "" || len(txnID) > replication.MaxTransactionalIDLength:
		return nil, fmt.Errorf("%w: transactional id of %d bytes (1 to %d)", ErrInvalidConfig, len(txnID), replication.MaxTransactionalIDLength)
	case o.Timeout < 0 || o.Timeout > replication.MaxTxnTimeout:
		return nil, fmt.Errorf("%w: transaction Timeout %v (at most %v)", ErrInvalidConfig, o.Timeout, replication.MaxTxnTimeout)
	case o.Producer.DisableIdempotence || o.Producer.Acks != AcksAll:
		return nil, fmt.Errorf("%w: a transactional producer needs idempotence and AcksAll", ErrInvalidConfig)
	case o.Producer.Transactional != nil:
		return nil, fmt.Errorf("%w: TransactionalOptions.Producer.Transactional must be nil", ErrInvalidConfig)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if l.isClosed() {
		return nil, ErrClosed
	}
	ctx, cancel := withDefaultDeadline(ctx, defaultTimeout)
	defer cancel()
	var prod replication.TxnProducer
	err := retryConcurrent(ctx, func(ctx context.Context) error {
		var err error
		prod, err = l.node.InitProducerID(ctx, txnID, o.Timeout)
		return err
	})
	if err != nil {
		return nil, mapErr(err)
	}
	tp := &TransactionalProducer{l: l, id: txnID, opts: o, prod: prod, cores: map[string]*producer{}}
	if err := l.track(tp); err != nil {
		return nil, err
	}
	return tp, nil
}

// retryConcurrent calls f until it does not fail with
// ErrConcurrentTransactions (the coordinator is completing the id's
// previous transaction), backing off, within ctx.
func retryConcurrent(ctx context.Context, f func(context.Context) error) error {
	backoff := 10 * time.Millisecond
	for {
		err := f(ctx)
		if !errors.Is(err, replication.ErrConcurrentTransactions) {
			return err
		}
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			return fmt.Errorf("%w (%w)", ctx.Err(), err)
		}
		backoff = min(2*backoff, 500*time.Millisecond)
	}
}

// TransactionalID returns the session's transactional id.
func (tp *TransactionalProducer) TransactionalID() string { return tp.id }

// Begin begins a transaction (Kafka's beginTransaction). It contacts no
// one: the coordinator learns of the transaction with its first record or
// offsets. It fails with [ErrInvalidTxnState] while a transaction is open
// or ending, and with [ErrFenced] or [ErrClosed] once the session is over.
func (tp *TransactionalProducer) Begin() error {
	tp.gate.Lock()
	defer tp.gate.Unlock()
	tp.mu.Lock()
	defer tp.mu.Unlock()
	switch tp.state {
	case txnReady:
	case txnFatal, txnClosed:
		return tp.fatal
	default:
		return fmt.Errorf("%w: transaction %q: a transaction is open already", ErrInvalidTxnState, tp.id)
	}
	tp.state, tp.num = txnOpen, tp.num+1
	tp.failed, tp.asked, tp.added, tp.groups, tp.decided = nil, false, false, nil, false
	return nil
}

// enter checks that a record may join the transaction, holding the state
// until leave is called: the record is buffered before Commit or Abort
// begins.
func (tp *TransactionalProducer) enter() (leave func(), err error) {
	tp.gate.RLock()
	if err := tp.usable(); err != nil {
		tp.gate.RUnlock()
		return nil, err
	}
	return tp.gate.RUnlock, nil
}

// usable returns nil if a transaction is open; called with gate held.
func (tp *TransactionalProducer) usable() error {
	tp.mu.Lock()
	defer tp.mu.Unlock()
	switch tp.state {
	case txnOpen:
		return nil
	case txnFatal, txnClosed:
		return tp.fatal
	case txnEnding:
		return fmt.Errorf("%w: transaction %q is ending: finish its Commit or Abort, then Begin the next one", ErrInvalidTxnState, tp.id)
	}
	return fmt.Errorf("%w: no transaction: call Begin first", ErrInvalidTxnState)
}

// watch wraps the callback of a record buffered in the transaction: its
// failure dooms the transaction.
func (tp *TransactionalProducer) watch(fn func(Position, error)) func(Position, error) {
	return func(pos Position, err error) {
		if err != nil {
			tp.fail(err)
		}
		fn(pos, err)
	}
}

// fail records an error of the transaction: it cannot commit. ErrFenced
// ends the session.
func (tp *TransactionalProducer) fail(err error) {
	tp.mu.Lock()
	defer tp.mu.Unlock()
	if tp.failed == nil {
		tp.failed = err
	}
	if errors.Is(err, ErrFenced) && tp.state != txnClosed && tp.state != txnFatal {
		tp.state = txnFatal
		tp.fatal = fmt.Errorf("transaction %q: %w", tp.id, err)
	}
}

// loseSequence records that a writer no longer knows its partition's
// next sequence number: a batch's outcome is unknown. The transaction
// cannot commit, and after it the session is over.
func (tp *TransactionalProducer) loseSequence(err error) {
	tp.mu.Lock()
	defer tp.mu.Unlock()
	if tp.seqLost == nil {
		tp.seqLost = err
	}
	if tp.failed == nil {
		tp.failed = err
	}
}

// partitionSerial adds w's partition to the open transaction the first
// time w sends a batch in it (Kafka's AddPartitionsToTxn), and returns
// the coordinator's serial number of the transaction, which the batch
// carries. Called by w's goroutine.
func (tp *TransactionalProducer) partitionSerial(ctx context.Context, w *partWriter) (uint64, error) {
	tp.mu.Lock()
	num, prod, fatal := tp.num, tp.prod, tp.fatal
	if fatal == nil {
		tp.asked = true
	}
	tp.mu.Unlock()
	if fatal != nil {
		return 0, fatal
	}
	if w.txnNum == num {
		return w.serial, nil
	}
	var serial uint64
	err := retryConcurrent(ctx, func(ctx context.Context) error {
		var err error
		serial, err = tp.l.node.AddTxnPartitions(ctx, tp.id, prod, map[string][]int{w.p.t.meta.Name: {w.idx}})
		return err
	})
	if err != nil {
		return 0, mapErr(err) // its records fail, and so the transaction (see watch)
	}
	tp.mu.Lock()
	tp.added = true
	tp.mu.Unlock()
	w.txnNum, w.serial = num, serial
	return serial, nil
}

// core returns the session's partition writers for topic t, starting them
// on first use: every producer of the session on t shares them, so that
// the partition sees one producer id with one sequence per partition.
func (tp *TransactionalProducer) core(t *Topic) (*producer, error) {
	if t.l != tp.l {
		// Its writers would outlive the session's Log, or the other way.
		return nil, fmt.Errorf("%w: topic %s is another Log's than the transactional producer's", ErrInvalidConfig, t.meta.Name)
	}
	tp.gate.RLock()
	defer tp.gate.RUnlock()
	tp.mu.Lock()
	defer tp.mu.Unlock()
	if tp.state == txnFatal || tp.state == txnClosed {
		return nil, tp.fatal
	}
	if p := tp.cores[t.meta.Name]; p != nil && p.t.meta.ID == t.meta.ID {
		return p, nil
	}
	if p := tp.cores[t.meta.Name]; p != nil {
		// The topic was deleted and made again: the old writers fail.
		return nil, fmt.Errorf("%w: %s was recreated while the transactional producer wrote to it", ErrTopicNotFound, t.meta.Name)
	}
	o, err := tp.opts.Producer.withDefaults(t)
	if err != nil {
		return nil, err
	}
	p := newProducer(t, o, tp)
	tp.cores[t.meta.Name] = p
	return p, nil
}

// bufferedBytes is the memory the session's buffered records take.
func (tp *TransactionalProducer) bufferedBytes() int64 {
	tp.mu.Lock()
	defer tp.mu.Unlock()
	var n int64
	for _, p := range tp.cores {
		n += p.bufferedBytes()
	}
	return n
}

// flushAll waits until every record buffered in the session is
// acknowledged or failed.
func (tp *TransactionalProducer) flushAll(ctx context.Context) error {
	tp.mu.Lock()
	cores := make([]*producer, 0, len(tp.cores))
	for _, p := range tp.cores {
		cores = append(cores, p)
	}
	tp.mu.Unlock()
	for _, p := range cores {
		if err := p.flush(ctx); err != nil {
			return err
		}
	}
	return nil
}

// Commit commits the open transaction (Kafka's commitTransaction): it
// sends every record buffered, waits for them, then asks the coordinator
// to commit, and returns once the transaction's markers are written and
// its groups' offsets committed: a [ReadCommitted] consumer then reads
// its records.
//
// If ctx is done before Commit starts, nothing is done. If any record of
// the transaction failed, or a [TransactionalProducer.SendOffsets], Commit
// asks nothing of the coordinator and returns an error wrapping the first
// failure: [TransactionalProducer.Abort] the transaction. If ctx ends
// while Commit waits, Commit returns ctx's error and may be called again
// (the coordinator takes a commit decision once); Abort is then refused
// with [ErrInvalidTxnState] if the commit decision was taken. [ErrFenced]:
// the coordinator aborted the transaction (its Timeout passed) or a newer
// session took the id; this session is over. Without a transaction begun:
// [ErrInvalidTxnState].
func (tp *TransactionalProducer) Commit(ctx context.Context) error { return tp.end(ctx, true) }

// Abort aborts the open transaction (Kafka's abortTransaction): it waits
// for the records in flight (buffered ones are sent first, and aborted
// with the rest), then asks the coordinator to abort and waits until the
// markers are written. Its records are never read by a [ReadCommitted]
// consumer, and the offsets it sent are not committed. If ctx is done
// before Abort starts, nothing is done; if it ends while Abort waits,
// Abort may be called again.
//
// After a batch whose outcome stayed unknown (its error matches
// [ErrAmbiguous]) the session cannot write in order any more: Abort ends
// the transaction, then the session is over and every later call fails
// with [ErrAmbiguous]; a new session with the same id starts afresh.
func (tp *TransactionalProducer) Abort(ctx context.Context) error { return tp.end(ctx, false) }

func (tp *TransactionalProducer) end(ctx context.Context, commit bool) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := tp.startEnd(commit); err != nil {
		return err
	}
	ctx, cancel := withDefaultDeadline(ctx, defaultTimeout)
	defer cancel()
	if err := tp.flushAll(ctx); err != nil {
		return err
	}
	tp.mu.Lock()
	failed, asked, added, prod, fatal := tp.failed, tp.asked, tp.added, tp.prod, tp.fatal
	tp.mu.Unlock()
	switch {
	case fatal != nil:
		return fatal
	case commit && failed != nil:
		return fmt.Errorf("replog: transaction %q cannot commit: %w (abort it)", tp.id, failed)
	}
	if asked {
		if err := tp.decide(ctx, commit, prod, added); err != nil {
			return err
		}
	}
	tp.mu.Lock()
	defer tp.mu.Unlock()
	if tp.state == txnEnding {
		tp.state = txnReady
		if tp.seqLost != nil {
			tp.state = txnFatal
			tp.fatal = fmt.Errorf("replog: transactional producer %q cannot go on, start a new one: %w", tp.id, tp.seqLost)
		}
	}
	return nil
}

// decide asks the coordinator to end the transaction as decided, and
// waits until its markers are written (and, for a commit, its offsets).
// EndTxn may be asked again: the coordinator takes one decision.
func (tp *TransactionalProducer) decide(ctx context.Context, commit bool, prod replication.TxnProducer, added bool) error {
	err := retryConcurrent(ctx, func(ctx context.Context) error {
		return tp.l.node.EndTxn(ctx, tp.id, prod, commit)
	})
	switch {
	case !commit && !added && errors.Is(err, replication.ErrInvalidTxnState):
		return nil // nothing was begun on the coordinator: nothing to abort
	case err != nil:
		err = mapErr(err)
		if errors.Is(err, ErrFenced) {
			tp.fail(err)
		}
		return err
	}
	tp.mu.Lock()
	tp.decided = true
	tp.mu.Unlock()
	st, err := tp.l.node.WaitTxn(ctx, tp.id)
	if err != nil {
		return mapErr(err)
	}
	if st.ProducerID != prod.ProducerID || st.Epoch != prod.Epoch {
		// The transaction ended as decided; since, a newer session or
		// the coordinator took the id.
		tp.fail(fmt.Errorf("%w: transactional id %q has producer %d epoch %d now", ErrFenced, tp.id, st.ProducerID, st.Epoch))
	}
	return nil
}

// startEnd moves the state to ending with the decision commit. Once it
// is set, no record is buffered: what was is flushed by end.
func (tp *TransactionalProducer) startEnd(commit bool) error {
	tp.gate.Lock()
	defer tp.gate.Unlock()
	tp.mu.Lock()
	defer tp.mu.Unlock()
	switch tp.state {
	case txnOpen:
	case txnEnding:
		if tp.decided && commit != tp.endCommit {
			d := "abort"
			if tp.endCommit {
				d = "commit"
			}
			return fmt.Errorf("%w: transaction %q was decided to %s: call that again to finish it", ErrInvalidTxnState, tp.id, d)
		}
	case txnFatal, txnClosed:
		return tp.fatal
	default:
		return fmt.Errorf("%w: no transaction: call Begin first", ErrInvalidTxnState)
	}
	tp.state, tp.endCommit = txnEnding, commit
	return nil
}

// GroupConsumer is a consumer whose positions a transaction can commit
// for its group: any [*Consumer] made with [ConsumerOptions.Group].
type GroupConsumer interface {
	groupConsumer() *consumer
}

func (c *Consumer[T]) groupConsumer() *consumer {
	if c == nil {
		return nil
	}
	return c.c
}

// SendOffsets adds the positions of group consumer c (the offsets after
// the last records its Poll handed out, for every partition it reads) to
// the open transaction, as c's group's offsets (Kafka's
// sendOffsetsToTransaction, with the consumer's group metadata, KIP-447):
// if the transaction commits, the group's committed offsets become these
// positions, atomically with the transaction's records; if it aborts,
// they are not committed. A later SendOffsets for the same partitions
// replaces them.
//
// c must still be a member of its group and own these partitions, as for
// [Consumer.Commit]: a member that lost its partitions (it did not poll
// within MaxPollInterval, or its session expired) gets
// [ErrUnknownMember], and one whose partitions moved to another member
// [ErrNotAssigned]; the transaction cannot commit then: abort it, Poll
// again and redo the work from the group's offsets. If ctx is done before
// SendOffsets starts, nothing is done; if it ends during SendOffsets, the
// offsets may or may not be in the transaction: call SendOffsets again
// before Commit, or abort.
func (tp *TransactionalProducer) SendOffsets(ctx context.Context, c GroupConsumer) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if c == nil {
		return fmt.Errorf("%w: nil consumer", ErrInvalidConfig)
	}
	cc := c.groupConsumer()
	if cc == nil {
		return fmt.Errorf("%w: nil consumer", ErrInvalidConfig)
	}
	if cc.group == nil {
		return fmt.Errorf("%w: SendOffsets needs a consumer with ConsumerOptions.Group", ErrInvalidConfig)
	}
	select {
	case <-cc.closed:
		return ErrClosed
	default:
	}
	tp.gate.RLock()
	defer tp.gate.RUnlock()
	if err := tp.usable(); err != nil {
		return err
	}
	ctx, cancel := withDefaultDeadline(ctx, defaultTimeout)
	defer cancel()
	err := tp.sendOffsets(ctx, cc)
	if err != nil && ctx.Err() == nil {
		tp.fail(err)
	}
	return err
}

func (tp *TransactionalProducer) sendOffsets(ctx context.Context, cc *consumer) error {
	g := cc.group
	group := cc.opts.Group
	if err := g.gone(); err != nil {
		return err
	}
	offsets := map[string]map[int]replication.TxnOffset{}
	for _, cp := range cc.partList() {
		topic := cp.t.meta.Name
		if offsets[topic] == nil {
			offsets[topic] = map[int]replication.TxnOffset{}
		}
		cp.mu.Lock()
		offsets[topic][cp.idx] = replication.TxnOffset{Offset: cp.offset, Member: g.id, Instance: cc.opts.InstanceID}
		cp.mu.Unlock()
	}
	if len(offsets) == 0 {
		return nil
	}
	// The member must still own the partitions, as the group checks a
	// plain commit (KIP-447's check of the consumer's membership).
	states, err := tp.l.node.Groups(ctx, group)
	if err != nil {
		return mapErr(err)
	}
	var st *replication.GroupState
	for _, s := range states {
		if s.Name == group {
			st = s
		}
	}
	if st == nil || st.Members[g.id] == nil {
		return fmt.Errorf("%w: %s is no longer a member of group %q", ErrUnknownMember, g.id, group)
	}
	m := st.Members[g.id]
	granted := st.Granted(g.id)
	gen := int32(-1) // none: a generation past int32 cannot be carried
	if st.Generation <= math.MaxInt32 {
		gen = int32(st.Generation)
	}
	for topic, ps := range offsets {
		for p, o := range ps {
			if !slices.Contains(m.Owned[topic], p) && !slices.Contains(granted[topic], p) {
				return fmt.Errorf("%w: %s/%d moved to another member of group %q", ErrNotAssigned, topic, p, group)
			}
			o.Generation = gen
			ps[p] = o
		}
	}
	tp.mu.Lock()
	prod, known := tp.prod, tp.groups[group]
	tp.asked = true
	tp.mu.Unlock()
	if !known {
		err := retryConcurrent(ctx, func(ctx context.Context) error {
			return tp.l.node.AddTxnOffsets(ctx, tp.id, prod, group)
		})
		if err != nil {
			return mapErr(err)
		}
		tp.mu.Lock()
		tp.added = true
		if tp.groups == nil {
			tp.groups = map[string]bool{}
		}
		tp.groups[group] = true
		tp.mu.Unlock()
	}
	err = retryConcurrent(ctx, func(ctx context.Context) error {
		return tp.l.node.TxnOffsetCommit(ctx, tp.id, prod, group, offsets)
	})
	return mapErr(err)
}

// Close ends the session (Kafka's close): a transaction still open is
// aborted first, within 30 seconds, as Kafka's close does; then the
// producers joined to the session fail with [ErrClosed]. It returns the
// abort's error, if any. Safe to call twice.
func (tp *TransactionalProducer) Close() error {
	tp.l.untrack(tp)
	var err error
	tp.mu.Lock()
	open := tp.state == txnOpen || tp.state == txnEnding
	tp.mu.Unlock()
	if open && !tp.l.isClosed() && tp.l.ctx.Err() == nil {
		ctx, cancel := context.WithTimeout(tp.l.ctx, defaultTimeout)
		err = tp.end(ctx, false)
		cancel()
	}
	tp.gate.Lock()
	tp.mu.Lock()
	if tp.state == txnClosed {
		tp.mu.Unlock()
		tp.gate.Unlock()
		return nil
	}
	tp.state, tp.fatal = txnClosed, ErrClosed
	cores := tp.cores
	tp.mu.Unlock()
	tp.gate.Unlock()
	for _, p := range cores {
		p.Close()
	}
	if errors.Is(err, ErrClosed) || errors.Is(err, ErrFenced) || errors.Is(err, ErrInvalidTxnState) {
		// Nothing left to abort, or a commit was decided, which the
		// coordinator completes by itself.
		err = nil
	}
	return err
}
