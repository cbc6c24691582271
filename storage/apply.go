package storage

import (
	"cmp"
	"container/list"
	"encoding/binary"
	"fmt"
	"maps"
	"math"
	"slices"

	"github.com/cockroachdb/pebble/v2"
)

// Command kinds: the first byte of every command proposed to a partition.
const (
	// CmdAppend is followed by one encoded record batch.
	CmdAppend byte = 1
	// CmdTrim moves the log start (Kafka's DeleteRecords); see
	// [TrimCommand].
	CmdTrim byte = 2
	// CmdRetain applies retention limits; see [RetainCommand].
	CmdRetain byte = 3
	// CmdCompact (4, in compact.go) removes records key compaction
	// decided to; CmdTxnMarker (5, in txn.go) ends a transaction;
	// CmdAppendTxn (6, in txn.go) appends a transactional batch.
)

// Status is the outcome of applying one command. It is decided by the state
// machine, so every replica reaches the same one.
type Status uint8

const (
	StatusOK Status = iota
	// StatusDuplicate: an idempotent producer sent a batch that is already
	// stored; Result.BaseOffset is where it was stored the first time.
	StatusDuplicate
	// StatusCorrupt: the command is unknown, or its batch is damaged (its
	// header or CRC failed [ParseHeader]); it was dropped.
	StatusCorrupt
	// StatusOutOfOrder: the batch's sequence number is not the next one
	// expected from its producer.
	StatusOutOfOrder
	// StatusFenced: the batch or transaction marker carries an older
	// producer epoch than one already seen (from a batch or a marker):
	// its producer is a zombie.
	StatusFenced
	// StatusInvalid: the batch's CRC holds but its contents contradict its
	// header (record count, offset deltas, lengths, timestamps, compressed
	// size), as [Validate] checks: it was built wrongly, not damaged on the
	// way. It was dropped. Like StatusCorrupt, it means ErrCorrupt to the
	// producer.
	StatusInvalid
	// StatusTxnInvalid: a transactional batch that is not part of its
	// producer's current transaction in the partition: the transaction
	// it was sent in has ended there (a late or stray batch, which would
	// otherwise open a transaction no marker ends: Kafka's "hanging
	// transaction"), or another one is open. Kafka's INVALID_TXN_STATE.
	StatusTxnInvalid
)

func (s Status) String() string {
	switch s {
	case StatusOK:
		return "ok"
	case StatusDuplicate:
		return "duplicate"
	case StatusCorrupt:
		return "corrupt"
	case StatusOutOfOrder:
		return "out of order sequence"
	case StatusFenced:
		return "fenced producer epoch"
	case StatusInvalid:
		return "invalid"
	case StatusTxnInvalid:
		return "not in the producer's current transaction"
	}
	return fmt.Sprintf("status(%d)", uint8(s))
}

// Entry is one committed command.
type Entry struct {
	Index uint64 // Raft log index
	Cmd   []byte
}

// Result is the outcome of one Entry.
type Result struct {
	BaseOffset int64
	Status     Status
}

// maxProducerBatches is how many recent batches per producer are remembered
// to answer a retried batch with its original offset (as Kafka does).
const maxProducerBatches = 5

type seqBatch struct {
	baseSeq    int32
	count      uint32
	baseOffset int64
}

// producerState is what a partition remembers of an idempotent producer.
// Stored, it is the epoch, the last time, then the batches, little-endian;
// stores written before producers expired lack the last time, and a
// transactional producer's state carries the serial of the last
// transaction that ended in the partition (see decodeProducerState).
type producerState struct {
	epoch uint32
	// lastTime is the log's clock (Meta.MaxTime) after the producer's
	// last accepted batch: it expires by that clock.
	lastTime int64
	// txnEnded is the coordinator's serial of the producer's last
	// transaction that a marker ended in this partition (0: none): a
	// transactional batch of that transaction or an earlier one is late,
	// and refused (StatusTxnInvalid).
	txnEnded uint64
	batches  []seqBatch // oldest first, at most maxProducerBatches
	// timeUnknown: decoded from the format without lastTime, which
	// [Partition.load] fills in.
	timeUnknown bool
}

// Producer state formats, told apart by their length modulo 16 (each
// remembered batch takes 16 bytes): 4+16n (epoch, batches), 12+16n (epoch,
// last time, batches) and 24+16n (epoch, last time, txnEnded, 4 bytes
// reserved as zero, batches). The shortest that holds the state is
// written, so stores of producers that never used a transaction keep
// their format.
const (
	producerHeadOld  = 4
	producerHead     = 12
	producerHeadTxn  = 24
	producerBatchLen = 16
)

func (st *producerState) encode() []byte {
	head := producerHead
	if st.txnEnded != 0 {
		head = producerHeadTxn
	}
	b := make([]byte, 0, head+len(st.batches)*producerBatchLen)
	b = binary.LittleEndian.AppendUint32(b, st.epoch)
	b = binary.LittleEndian.AppendUint64(b, uint64(st.lastTime))
	if st.txnEnded != 0 {
		b = binary.LittleEndian.AppendUint64(b, st.txnEnded)
		b = binary.LittleEndian.AppendUint32(b, 0)
	}
	for _, sb := range st.batches {
		b = binary.LittleEndian.AppendUint32(b, uint32(sb.baseSeq))
		b = binary.LittleEndian.AppendUint32(b, sb.count)
		b = binary.LittleEndian.AppendUint64(b, uint64(sb.baseOffset))
	}
	return b
}

// decodeProducerState decodes the three formats (see producerHead).
func decodeProducerState(b []byte) (*producerState, error) {
	var st producerState
	switch {
	case len(b) >= producerHeadTxn && (len(b)-producerHeadTxn)%producerBatchLen == 0:
		st.epoch = binary.LittleEndian.Uint32(b)
		st.lastTime = int64(binary.LittleEndian.Uint64(b[4:]))
		st.txnEnded = binary.LittleEndian.Uint64(b[12:])
		if st.txnEnded == 0 || binary.LittleEndian.Uint32(b[20:]) != 0 {
			return nil, fmt.Errorf("%w: transactional producer state with serial %d, reserved %x", ErrCorrupt, st.txnEnded, b[20:24])
		}
		b = b[producerHeadTxn:]
	case len(b) >= producerHead && (len(b)-producerHead)%producerBatchLen == 0:
		st.epoch = binary.LittleEndian.Uint32(b)
		st.lastTime = int64(binary.LittleEndian.Uint64(b[4:]))
		b = b[producerHead:]
	case len(b) >= producerHeadOld && (len(b)-producerHeadOld)%producerBatchLen == 0:
		st.epoch = binary.LittleEndian.Uint32(b)
		st.lastTime, st.timeUnknown = math.MinInt64, true
		b = b[producerHeadOld:]
	default:
		return nil, fmt.Errorf("%w: producer state of %d bytes", ErrCorrupt, len(b))
	}
	// Apply remembers at least the batch it just stored, except for an
	// epoch a transaction marker raised (new formats only).
	if n := len(b) / producerBatchLen; n < 1 && st.timeUnknown || n > maxProducerBatches {
		return nil, fmt.Errorf("%w: producer state with %d batches", ErrCorrupt, n)
	}
	for ; len(b) > 0; b = b[producerBatchLen:] {
		st.batches = append(st.batches, seqBatch{
			baseSeq:    int32(binary.LittleEndian.Uint32(b)),
			count:      binary.LittleEndian.Uint32(b[4:]),
			baseOffset: int64(binary.LittleEndian.Uint64(b[8:])),
		})
	}
	return &st, nil
}

// producerLRU orders a partition's producer ids by their lastTime, oldest
// first, so that expiry looks only at the ids it removes. Apply gives the
// producer of a batch the current log time, which no other lastTime
// exceeds, so moving it to the back keeps the order. Not safe for
// concurrent use.
type producerLRU struct {
	l    list.List // of uint64 producer ids
	elem map[uint64]*list.Element
}

// touch moves pid to the back, adding it if needed.
func (q *producerLRU) touch(pid uint64) {
	if e := q.elem[pid]; e != nil {
		q.l.MoveToBack(e)
		return
	}
	if q.elem == nil {
		q.elem = map[uint64]*list.Element{}
	}
	q.elem[pid] = q.l.PushBack(pid)
}

func (q *producerLRU) remove(pid uint64) {
	if e := q.elem[pid]; e != nil {
		q.l.Remove(e)
		delete(q.elem, pid)
	}
}

// expired reports whether a producer whose last batch came at log time
// last has been idle for longer than the store's producer expiration at
// log time now.
func (s *Store) expired(last, now int64) bool {
	return now > math.MinInt64+s.expiry && last < now-s.expiry
}

// check decides whether a batch from this producer is accepted, following
// Kafka's rules: within an epoch sequences are consecutive; a batch equal to
// a recent one is a duplicate; a higher epoch starts again at sequence 0 and
// fences the older one.
func (st *producerState) check(h BatchHeader) (Status, int64) {
	switch {
	case st == nil:
		if h.BaseSequence != 0 {
			return StatusOutOfOrder, 0
		}
		return StatusOK, 0
	case h.ProducerEpoch < st.epoch:
		return StatusFenced, 0
	case h.ProducerEpoch > st.epoch || len(st.batches) == 0:
		// A new epoch, or (never written by Apply, so never loaded, but
		// checked so that no stored state can crash Apply) one without
		// batches: it starts at sequence 0.
		if h.BaseSequence != 0 {
			return StatusOutOfOrder, 0
		}
		return StatusOK, 0
	}
	for _, sb := range st.batches {
		if sb.baseSeq == h.BaseSequence && sb.count == h.Count {
			return StatusDuplicate, sb.baseOffset
		}
	}
	last := st.batches[len(st.batches)-1]
	if h.BaseSequence != last.baseSeq+int32(last.count) {
		return StatusOutOfOrder, 0
	}
	return StatusOK, 0
}

// Apply applies committed entries in order and writes their results into
// results (len(results) == len(entries)). The batches, the applied index and
// the producer states go to Pebble in one atomic write without fsync: Raft's
// log, which dragonboat fsyncs before commit, is the durable copy until
// [Store.Sync]. Entries at or below the applied index are skipped, so a
// replay after a crash is harmless.
//
// Appends are applied in runs, one write per run; a trim or retention
// command ends a run and is applied in a write of its own, against the
// store as the run left it (see [Partition.applyControl]).
func (p *Partition) Apply(entries []Entry, results []Result) error {
	for len(entries) > 0 {
		n := 0
		for n < len(entries) && !isControl(entries[n].Cmd) {
			n++
		}
		var err error
		if n == 0 {
			n = 1
			results[0], err = p.applyControl(entries[0])
		} else {
			err = p.applyAppends(entries[:n], results[:n])
		}
		if err != nil {
			return err
		}
		entries, results = entries[n:], results[n:]
	}
	return nil
}

func isControl(cmd []byte) bool {
	return len(cmd) > 0 && (cmd[0] == CmdTrim || cmd[0] == CmdRetain || cmd[0] == CmdCompact)
}

// applyAppends applies a run of entries that holds no control command.
func (p *Partition) applyAppends(entries []Entry, results []Result) error {
	wb := p.s.db.NewBatch()
	defer wb.Close()
	cur := p.state.Load()
	next := *cur // the same slot and gen: only Restore and Delete move keys
	m := &next.Meta
	dirty := map[uint64]*producerState{}
	txns := map[uint64]openTxn{} // transactions opened or closed (first -1)
	for i, e := range entries {
		if e.Index <= m.AppliedIndex {
			results[i] = Result{BaseOffset: -1, Status: StatusDuplicate}
			continue
		}
		m.AppliedIndex = e.Index
		if len(e.Cmd) > 0 && e.Cmd[0] == CmdTxnMarker {
			results[i] = p.applyMarker(wb, &next, dirty, txns, e.Cmd)
		} else {
			results[i] = p.applyOne(wb, &next, dirty, txns, e.Cmd)
		}
	}
	// Forget the producers idle for too long by now. Which Apply call
	// does it depends on how entries were grouped, which differs between
	// replicas, but applyOne already treats an expired producer as
	// unknown entry by entry, so results never depend on it: this only
	// frees the memory and the keys.
	pk := slotKind(kindProducer, next.slot)
	var expired []uint64
	for pid, st := range dirty {
		if _, open := p.openTxn(txns, pid); !open && p.s.expired(st.lastTime, m.MaxTime) {
			expired = append(expired, pid)
			if err := wb.Delete(key(pk, p.shard, pid), nil); err != nil {
				return err
			}
		} else if err := wb.Set(key(pk, p.shard, pid), st.encode(), nil); err != nil {
			return err
		}
	}
	for e := p.lru.l.Front(); e != nil; e = e.Next() {
		pid := e.Value.(uint64)
		if st := p.producers[pid]; st == nil || !p.s.expired(st.lastTime, m.MaxTime) {
			break
		}
		if _, open := p.openTxn(txns, pid); open || dirty[pid] != nil {
			continue // decided above, or kept for its transaction
		}
		expired = append(expired, pid)
		if err := wb.Delete(key(pk, p.shard, pid), nil); err != nil {
			return err
		}
	}
	if err := wb.Set(key(kindMeta, p.shard), next.encode(), nil); err != nil {
		return err
	}
	if err := wb.Commit(pebble.NoSync); err != nil {
		return err
	}
	for pid, t := range txns {
		if t.first < 0 {
			delete(p.txns, pid)
		} else {
			p.txns[pid] = t
		}
	}
	m.LastStable = p.lastStable(*m)
	p.state.Store(&next)
	for _, pid := range expired {
		delete(p.producers, pid)
		delete(dirty, pid)
		p.lru.remove(pid)
	}
	// In the order of their lastTime, to keep the LRU sorted.
	pids := slices.SortedFunc(maps.Keys(dirty), func(a, b uint64) int {
		return cmp.Or(cmp.Compare(dirty[a].lastTime, dirty[b].lastTime), cmp.Compare(a, b))
	})
	for _, pid := range pids {
		p.producers[pid] = dirty[pid]
		p.lru.touch(pid)
	}
	return nil
}

func (p *Partition) applyOne(wb *pebble.Batch, next *partState, dirty map[uint64]*producerState, txns map[uint64]openTxn, cmd []byte) Result {
	m, slot := &next.Meta, next.slot
	var batch []byte
	var serial uint64 // the transaction's, for CmdAppendTxn
	switch {
	case len(cmd) >= 1 && cmd[0] == CmdAppend:
		batch = cmd[1:]
	case len(cmd) >= TxnAppendHeaderSize && cmd[0] == CmdAppendTxn:
		batch, serial = cmd[TxnAppendHeaderSize:], binary.LittleEndian.Uint64(cmd[1:])
	default:
		return Result{BaseOffset: -1, Status: StatusCorrupt}
	}
	// The CRC keeps a batch damaged on the way out of the log. A batch
	// whose CRC holds may still lie (a buggy or foreign proposer): stored
	// with a wrong count it would shift every later offset, and a wrong
	// MaxTime would corrupt the time index and move the log's clock. So
	// every record is decoded here, before anything is stored; readers
	// then find only batches that decode.
	h, err := ParseHeader(batch)
	if err != nil {
		return Result{BaseOffset: -1, Status: StatusCorrupt}
	}
	// Only key compaction writes compacted batches; a producer's batch
	// holds one record per offset, which its count and sequences rely on.
	// Only the state machine writes control batches (transaction
	// markers).
	if h.Flags != 0 || h.Control {
		return Result{BaseOffset: -1, Status: StatusInvalid}
	}
	// A transactional batch comes with its transaction's serial, and
	// only from an idempotent producer; a serial only with one.
	if h.Transactional != (serial != 0) || h.Transactional && h.ProducerID == 0 {
		return Result{BaseOffset: -1, Status: StatusInvalid}
	}
	if _, err := validateRecords(batch, h); err != nil {
		return Result{BaseOffset: -1, Status: StatusInvalid}
	}
	var st *producerState
	var open bool
	if h.ProducerID != 0 {
		var cur openTxn
		cur, open = p.openTxn(txns, h.ProducerID)
		st = p.producer(dirty, h.ProducerID, m.MaxTime, open)
		status, off := st.check(h)
		if status != StatusOK {
			if status != StatusDuplicate {
				off = -1
			}
			return Result{BaseOffset: off, Status: status}
		}
		// A producer inside a transaction writes only transactional
		// batches until its marker (Kafka's INVALID_TXN_STATE).
		if open && !h.Transactional {
			return Result{BaseOffset: -1, Status: StatusInvalid}
		}
		if h.Transactional && !txnBatchFits(st, cur, open, serial) {
			return Result{BaseOffset: -1, Status: StatusTxnInvalid}
		}
	}
	base := m.NextOffset
	k := key(slotKind(kindData, slot), p.shard, uint64(base))
	op := wb.SetDeferred(len(k), len(batch))
	copy(op.Key, k)
	copy(op.Value, batch)
	SetBaseOffset(op.Value, base)
	if err := op.Finish(); err != nil {
		return Result{BaseOffset: -1, Status: StatusCorrupt}
	}
	m.NextOffset = base + int64(h.Count)
	m.MaxTime = max(m.MaxTime, h.MaxTime)
	next.stored += int64(len(batch))
	_ = wb.Set(key(slotKind(kindTime, slot), p.shard, orderedTime(m.MaxTime), uint64(base)), nil, nil)
	if h.ProducerID != 0 {
		next := &producerState{epoch: h.ProducerEpoch, lastTime: m.MaxTime}
		if st != nil && st.epoch == h.ProducerEpoch {
			next.batches = append(next.batches, st.batches...)
		}
		next.batches = append(next.batches, seqBatch{baseSeq: h.BaseSequence, count: h.Count, baseOffset: base})
		if len(next.batches) > maxProducerBatches {
			next.batches = next.batches[len(next.batches)-maxProducerBatches:]
		}
		if st != nil {
			next.txnEnded = st.txnEnded
		}
		dirty[h.ProducerID] = next
		if h.Transactional && !open {
			t := openTxn{first: base, serial: serial}
			txns[h.ProducerID] = t
			_ = wb.Set(key(slotKind(kindTxn, slot), p.shard, h.ProducerID), t.encode(), nil)
		}
	}
	return Result{BaseOffset: base}
}
