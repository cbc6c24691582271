package storage

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"math"
	"slices"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

// Transactions inside a partition (Kafka's KIP-98), as the partition's
// state machine keeps them:
//
//   - A transactional batch (a Kafka batch with attribute bit 4, from an
//     idempotent producer) comes in a [CmdAppendTxn] command with the
//     coordinator's serial of its transaction. It opens a transaction for
//     its producer id at its base offset unless one is open, and joins
//     the open one if it is the same transaction. Sequence and epoch
//     checks are those of any idempotent batch; a batch with an older
//     epoch than the partition knows for its producer id is refused with
//     StatusFenced, one of a transaction the partition saw end (or not
//     the open one) with StatusTxnInvalid.
//   - A transaction marker ([TxnMarkerCommand], proposed by the
//     transaction coordinator) ends the transaction it names by serial,
//     appending a control batch at the next offset. An abort records the
//     transaction's offsets in the aborted-transaction index. A marker's
//     epoch may exceed the producer's: it then becomes the producer's
//     epoch, fencing older writers. Serials make markers and batches
//     safe to deliver late or twice, whatever the epochs: a late marker
//     never ends the producer's next transaction, and a late batch never
//     opens a transaction after its marker.
//   - The last stable offset ([Meta.LastStable]) is the first offset of
//     the oldest open transaction, or the high watermark if none is open:
//     a read-committed reader reads below it, skipping what
//     [Partition.AbortedTxns] and [Committed] tell it to.
//
// The open transactions and the aborted index are stored next to the
// producer states, in the same writes as the batches that change them,
// so that what Pebble holds at a flush agrees with its applied index.
//
//	'x' shard producerID          -> first offset and serial of its open transaction
//	'a' shard lastOffset producer -> first offset of an aborted transaction
//
// An aborted entry goes when the log start passes its last offset (the
// marker): every batch of the transaction is then gone too. Key
// compaction never touches a transactional or control batch (see
// [Partition.RunCompaction]).

// CmdTxnMarker writes a transaction marker; see [TxnMarkerCommand].
const CmdTxnMarker byte = 5

// CmdAppendTxn appends a transactional batch. The command is the byte, the
// serial of the batch's transaction (uint64, little-endian, as the
// transaction coordinator numbers a transactional id's transactions), then
// the batch: see [PutTxnAppendHeader]. A transactional batch comes only in
// this command, and this command carries only one.
const CmdAppendTxn byte = 6

// TxnAppendHeaderSize is the size of CmdAppendTxn's header.
const TxnAppendHeaderSize = 9

// PutTxnAppendHeader writes CmdAppendTxn's header for a batch of the
// transaction serial into cmd[:TxnAppendHeaderSize].
func PutTxnAppendHeader(cmd []byte, serial uint64) {
	cmd[0] = CmdAppendTxn
	binary.LittleEndian.PutUint64(cmd[1:], serial)
}

const (
	kindTxn     byte = 'x'
	kindAborted byte = 'a'
)

// openTxn is a producer's open transaction in a partition: its first
// offset and the coordinator's serial of the transaction. In a run's
// overlay of changes, first -1 stands for one closed.
type openTxn struct {
	first  int64
	serial uint64
}

func (t openTxn) encode() []byte {
	b := binary.LittleEndian.AppendUint64(make([]byte, 0, 16), uint64(t.first))
	return binary.LittleEndian.AppendUint64(b, t.serial)
}

// txnBatchFits reports whether a transactional batch of transaction serial
// may be stored for a producer with state st (nil if unknown) and open
// transaction cur (if open): it joins the open transaction if it is the
// same one, or opens one if the partition has not seen that transaction,
// or a later one, end. A batch of a transaction the partition saw end
// would open one that no marker ever ends, holding back the last stable
// offset for good (the "hanging transactions" of Kafka's KIP-890).
func txnBatchFits(st *producerState, cur openTxn, open bool, serial uint64) bool {
	if open {
		return cur.serial == serial
	}
	return st == nil || serial > st.txnEnded
}

// txnMarkerCmdSize is the size of a marker command: the kind, producer id,
// epoch, commit flag, coordinator epoch, time and transaction serial.
const txnMarkerCmdSize = 1 + 8 + 4 + 1 + 4 + 8 + 8

// TxnMarkerCommand is the command that ends producer pid's transaction
// serial (the coordinator's number of it, as in [CmdAppendTxn]) in the
// partition: committed if commit, else aborted. now (unix ns, the
// proposer's clock, carried so that every replica writes the same batch)
// is the marker's timestamp; coordinatorEpoch is stored in it, as Kafka
// does.
//
// A marker is idempotent and safe to deliver late, twice, or from two
// coordinators at once: it ends only the transaction it names. Applied, it
// answers:
//   - StatusFenced if epoch is below the one the partition knows for pid;
//   - StatusOK with BaseOffset the marker's offset, if pid's open
//     transaction is serial (or an earlier one, which the coordinator's
//     order of work never leaves open);
//   - StatusOK with BaseOffset the next offset, writing nothing, if pid's
//     open transaction is a later one, or none is open and the partition
//     saw serial end already: a retried or late marker;
//   - otherwise (no transaction open; the transaction never wrote here):
//     StatusOK with BaseOffset the marker's offset if pid is unknown here
//     or epoch is above its known one, which the marker raises, fencing
//     older writers; else StatusOK with the next offset, writing no
//     batch. Either way the partition records that serial ended, so that
//     a late batch of it is refused (StatusTxnInvalid);
//   - StatusInvalid if pid is 0 or above Kafka's int64 range, epoch above
//     the int16 range, or serial 0.
func TxnMarkerCommand(pid uint64, epoch uint32, serial uint64, commit bool, coordinatorEpoch int32, now int64) []byte {
	b := make([]byte, 0, txnMarkerCmdSize)
	b = append(b, CmdTxnMarker)
	b = binary.LittleEndian.AppendUint64(b, pid)
	b = binary.LittleEndian.AppendUint32(b, epoch)
	if commit {
		b = append(b, 1)
	} else {
		b = append(b, 0)
	}
	b = binary.LittleEndian.AppendUint32(b, uint32(coordinatorEpoch))
	b = binary.LittleEndian.AppendUint64(b, uint64(now))
	return binary.LittleEndian.AppendUint64(b, serial)
}

// txnMarker is a decoded [TxnMarkerCommand].
type txnMarker struct {
	pid              uint64
	epoch            uint32
	serial           uint64
	commit           bool
	coordinatorEpoch int32
	now              int64
}

// decodeTxnMarker decodes a marker command; ok is false if it is
// malformed, which is StatusCorrupt.
func decodeTxnMarker(cmd []byte) (m txnMarker, ok bool) {
	if len(cmd) != txnMarkerCmdSize || cmd[0] != CmdTxnMarker || cmd[13] > 1 {
		return m, false
	}
	le := binary.LittleEndian
	return txnMarker{
		pid:              le.Uint64(cmd[1:]),
		epoch:            le.Uint32(cmd[9:]),
		commit:           cmd[13] == 1,
		coordinatorEpoch: int32(le.Uint32(cmd[14:])),
		now:              int64(le.Uint64(cmd[18:])),
		serial:           le.Uint64(cmd[26:]),
	}, true
}

// valid reports whether the marker fits a Kafka control batch.
func (m txnMarker) valid() bool {
	return m.pid != 0 && m.pid <= math.MaxInt64 && m.epoch <= math.MaxInt16 && m.serial != 0
}

// Marker record layout: the key is version int16 0 and type int16, the
// value version int16 0 and coordinator epoch int32.
const (
	markerKeySize   = 4
	markerValueSize = 6
	markerAbort     = 0
	markerCommit    = 1
)

// buildMarker encodes m as a Kafka control batch (base offset 0).
func buildMarker(m txnMarker) []byte {
	ms := millis(m.now)
	var rec []byte
	rec = binary.AppendVarint(rec, 0) // timestamp delta
	rec = binary.AppendVarint(rec, 0) // offset delta
	rec = binary.AppendVarint(rec, markerKeySize)
	typ := uint16(markerAbort)
	if m.commit {
		typ = markerCommit
	}
	rec = binary.BigEndian.AppendUint16(rec, 0)
	rec = binary.BigEndian.AppendUint16(rec, typ)
	rec = binary.AppendVarint(rec, markerValueSize)
	rec = binary.BigEndian.AppendUint16(rec, 0)
	rec = binary.BigEndian.AppendUint32(rec, uint32(m.coordinatorEpoch))
	rec = binary.AppendVarint(rec, 0) // headers
	body := append([]byte{0}, rec...) // record attributes
	records := binary.AppendVarint(nil, int64(len(body)))
	records = append(records, body...)

	out := make([]byte, kafkaHeaderSize+len(records))
	be := binary.BigEndian
	be.PutUint32(out[8:], uint32(len(out)-kafkaLengthEnd))
	be.PutUint32(out[12:], math.MaxUint32) // leader epoch -1
	out[16] = VersionKafka
	be.PutUint16(out[21:], kafkaAttrTransactional|kafkaAttrControl)
	be.PutUint32(out[23:], 0)
	be.PutUint64(out[27:], uint64(ms))
	be.PutUint64(out[35:], uint64(ms))
	be.PutUint64(out[43:], m.pid)
	be.PutUint16(out[51:], uint16(m.epoch))
	be.PutUint32(out[53:], math.MaxUint32) // sequence -1
	be.PutUint32(out[57:], 1)
	copy(out[kafkaHeaderSize:], records)
	be.PutUint32(out[17:], crc32.Checksum(out[kafkaCRCCovered:], castagnoli))
	return out
}

// TxnMarker is the content of a control batch's record.
type TxnMarker struct {
	Commit           bool
	CoordinatorEpoch int32
}

// parseMarkerRecord checks and decodes a control batch's record.
func parseMarkerRecord(rec recordView) (TxnMarker, error) {
	k, v := rec.key, rec.value
	switch {
	case len(k) != markerKeySize || len(v) != markerValueSize || rec.tombstone || rec.headerCount != 0:
		return TxnMarker{}, corruptf("control record with a %d-byte key, a %d-byte value and %d headers", len(k), len(v), rec.headerCount)
	case binary.BigEndian.Uint16(k) != 0 || binary.BigEndian.Uint16(v) != 0:
		return TxnMarker{}, corruptf("control record of version %d/%d", binary.BigEndian.Uint16(k), binary.BigEndian.Uint16(v))
	}
	typ := binary.BigEndian.Uint16(k[2:])
	if typ != markerAbort && typ != markerCommit {
		return TxnMarker{}, corruptf("control record of type %d", typ)
	}
	return TxnMarker{Commit: typ == markerCommit, CoordinatorEpoch: int32(binary.BigEndian.Uint32(v[2:]))}, nil
}

// ParseTxnMarker decodes the marker a control batch b holds (one for
// which [ParseHeader] reports Control). A damaged or malformed batch is
// [ErrCorrupt].
func ParseTxnMarker(b []byte) (TxnMarker, error) {
	h, err := ParseHeader(b)
	if err != nil {
		return TxnMarker{}, err
	}
	if !h.Control {
		return TxnMarker{}, corruptf("not a control batch")
	}
	rec, rest, err := nextKafkaRecord(b[kafkaHeaderSize:], 0)
	if err != nil {
		return TxnMarker{}, err
	}
	if len(rest) != 0 {
		return TxnMarker{}, corruptf("%d bytes after the control record", len(rest))
	}
	return parseMarkerRecord(rec)
}

// AbortedTxn is an aborted transaction: producer ProducerID's records in
// transactional batches from FirstOffset to LastOffset (the abort
// marker's offset) are not part of the log for a read-committed reader.
type AbortedTxn struct {
	ProducerID  uint64
	FirstOffset int64
	LastOffset  int64
}

// AbortedTxns returns the aborted transactions that overlap offsets
// [from, to), ordered by last offset: what Kafka's Fetch returns as
// AbortedTransactions for a read-committed fetch of that range. Safe for
// concurrent use with the writer.
func (p *Partition) AbortedTxns(from, to int64) ([]AbortedTxn, error) {
	if from >= to {
		return nil, nil
	}
	var buf [1]*pebble.Iterator
	its, slot, err := p.openIters(buf[:0], iterSpan{kind: kindAborted})
	if err != nil {
		return nil, err
	}
	it := its[0]
	defer it.Close()
	var out []AbortedTxn
	for ok := it.SeekGE(key(slotKind(kindAborted, slot), p.shard, uint64(max(from, 0)))); ok; ok = it.Next() {
		a, err := decodeAborted(it.Key()[9:], it.Value())
		if err != nil {
			return nil, fmt.Errorf("shard %d: %w", p.shard, err)
		}
		if a.FirstOffset < to {
			out = append(out, a)
		}
	}
	return out, p.readErr(it.Error(), -1)
}

func decodeAborted(suffix, value []byte) (AbortedTxn, error) {
	if len(suffix) != 16 || len(value) != 8 {
		return AbortedTxn{}, fmt.Errorf("%w: aborted transaction entry of %d+%d bytes", ErrCorrupt, len(suffix), len(value))
	}
	a := AbortedTxn{
		LastOffset:  int64(binary.BigEndian.Uint64(suffix)),
		ProducerID:  binary.BigEndian.Uint64(suffix[8:]),
		FirstOffset: int64(binary.LittleEndian.Uint64(value)),
	}
	if a.ProducerID == 0 || a.FirstOffset < 0 || a.FirstOffset >= a.LastOffset {
		return AbortedTxn{}, fmt.Errorf("%w: aborted transaction of producer %d from %d to %d", ErrCorrupt, a.ProducerID, a.FirstOffset, a.LastOffset)
	}
	return a, nil
}

// Committed reports whether a read-committed reader sees the records of
// the batch with header h, given the aborted transactions that overlap it
// (from [Partition.AbortedTxns]): not a control batch, and not a
// transactional batch of an aborted transaction. A transaction's batches
// are all committed or all aborted, so the answer holds for every record
// of the batch. A read-committed reader also reads no further than
// [Meta.LastStable].
func Committed(h BatchHeader, aborted []AbortedTxn) bool {
	if h.Control {
		return false
	}
	if !h.Transactional {
		return true
	}
	for _, a := range aborted {
		if a.ProducerID == h.ProducerID && a.FirstOffset <= h.BaseOffset && h.BaseOffset < a.LastOffset {
			return false
		}
	}
	return true
}

// openTxn returns pid's open transaction as the current run of appends
// left it (overlay dirty, first -1 for closed, over the partition's), and
// whether one is open.
func (p *Partition) openTxn(dirty map[uint64]openTxn, pid uint64) (openTxn, bool) {
	if t, ok := dirty[pid]; ok {
		return t, t.first >= 0
	}
	t, ok := p.txns[pid]
	return t, ok
}

// lastStable is the last stable offset of m with the partition's open
// transactions: clamped to the log start, as Kafka does when the log
// start passes an open transaction's first offset.
func (p *Partition) lastStable(m Meta) int64 {
	lso := m.NextOffset
	for _, t := range p.txns {
		lso = min(lso, t.first)
	}
	return max(lso, m.LogStart)
}

// applyMarker applies a marker command within a run of appends.
func (p *Partition) applyMarker(wb *pebble.Batch, next *partState, dirty map[uint64]*producerState, txns map[uint64]openTxn, cmd []byte) Result {
	m, slot := &next.Meta, next.slot
	mk, ok := decodeTxnMarker(cmd)
	if !ok {
		return Result{BaseOffset: -1, Status: StatusCorrupt}
	}
	if !mk.valid() {
		return Result{BaseOffset: -1, Status: StatusInvalid}
	}
	cur, open := p.openTxn(txns, mk.pid)
	st := p.producer(dirty, mk.pid, m.MaxTime, open)
	if st != nil && mk.epoch < st.epoch {
		return Result{BaseOffset: -1, Status: StatusFenced}
	}
	ended := mk.serial
	if st != nil {
		ended = max(ended, st.txnEnded)
	}
	switch {
	case open && cur.serial > mk.serial:
		return Result{BaseOffset: m.NextOffset} // late: a later transaction is open
	case !open && st != nil && mk.serial <= st.txnEnded:
		return Result{BaseOffset: m.NextOffset} // a retry
	case !open && st != nil && mk.epoch == st.epoch:
		// Nothing to end and no epoch to raise: only remember that the
		// transaction ended, without a batch.
		ns := *st
		ns.txnEnded = ended
		dirty[mk.pid] = &ns
		return Result{BaseOffset: m.NextOffset}
	}
	// A marker with no transaction to end is still written when it raises
	// the epoch or the producer is unknown: the producer state that
	// fences older writers and refuses the transaction's late batches is
	// dated by the log's clock, which only a stored batch may move, and
	// an empty log's clock (the earliest time) would let the next record
	// expire the state at once.
	base := m.NextOffset
	batch := buildMarker(mk)
	SetBaseOffset(batch, base)
	k := key(slotKind(kindData, slot), p.shard, uint64(base))
	if err := wb.Set(k, batch, nil); err != nil {
		return Result{BaseOffset: -1, Status: StatusCorrupt}
	}
	m.NextOffset = base + 1
	m.MaxTime = max(m.MaxTime, millis(mk.now)*int64(time.Millisecond))
	next.stored += int64(len(batch))
	_ = wb.Set(key(slotKind(kindTime, slot), p.shard, orderedTime(m.MaxTime), uint64(base)), nil, nil)
	if open {
		_ = wb.Delete(key(slotKind(kindTxn, slot), p.shard, mk.pid), nil)
		txns[mk.pid] = openTxn{first: -1}
	}
	if open && !mk.commit {
		_ = wb.Set(key(slotKind(kindAborted, slot), p.shard, uint64(base), mk.pid), binary.LittleEndian.AppendUint64(nil, uint64(cur.first)), nil)
	}
	ns := &producerState{epoch: mk.epoch, lastTime: m.MaxTime, txnEnded: ended}
	if st != nil && st.epoch == mk.epoch {
		ns.batches = slices.Clone(st.batches)
	}
	dirty[mk.pid] = ns
	return Result{BaseOffset: base}
}

// producer returns pid's state as the current run left it, nil if unknown
// or expired as of the log time now (a producer with an open transaction
// never expires: its marker must still find it).
func (p *Partition) producer(dirty map[uint64]*producerState, pid uint64, now int64, open bool) *producerState {
	st := dirty[pid]
	if st == nil {
		st = p.producers[pid]
	}
	if st != nil && !open && p.s.expired(st.lastTime, now) {
		return nil // forgotten: as if never seen (Kafka's unknown producer id)
	}
	return st
}

// loadTxns reads the open transactions stored in slot.
func (p *Partition) loadTxns(slot byte) (map[uint64]openTxn, error) {
	txns := map[uint64]openTxn{}
	tk := slotKind(kindTxn, slot)
	it, err := p.s.db.NewIter(&pebble.IterOptions{LowerBound: key(tk, p.shard), UpperBound: upper(tk, p.shard)})
	if err != nil {
		return nil, p.readErr(err, -1)
	}
	defer it.Close()
	for it.First(); it.Valid(); it.Next() {
		pid, t, err := decodeTxn(it.Key()[9:], it.Value())
		if err != nil {
			return nil, err
		}
		txns[pid] = t
	}
	return txns, p.readErr(it.Error(), -1)
}

// decodeTxn decodes an open transaction entry: the first offset and the
// serial (entries written before serials hold only the offset, serial 0).
func decodeTxn(suffix, value []byte) (uint64, openTxn, error) {
	if len(suffix) != 8 || (len(value) != 8 && len(value) != 16) {
		return 0, openTxn{}, fmt.Errorf("%w: open transaction entry of %d+%d bytes", ErrCorrupt, len(suffix), len(value))
	}
	pid := binary.BigEndian.Uint64(suffix)
	t := openTxn{first: int64(binary.LittleEndian.Uint64(value))}
	if len(value) == 16 {
		t.serial = binary.LittleEndian.Uint64(value[8:])
	}
	if pid == 0 || t.first < 0 || len(value) == 16 && t.serial == 0 {
		return 0, openTxn{}, fmt.Errorf("%w: open transaction of producer %d at %d (serial %d)", ErrCorrupt, pid, t.first, t.serial)
	}
	return pid, t, nil
}
