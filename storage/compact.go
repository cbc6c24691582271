package storage

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"math"
	"slices"

	"github.com/cockroachdb/pebble/v2"
)

// Key compaction keeps, for every key, the last record stored with it, as
// Kafka's log cleaner does: offsets never move (gaps appear), the order is
// kept, and the newest batch (the head) is never touched, so a consumer
// that keeps up sees every record.
//
// The work is split between one node and the state machine:
//
//   - A planner (RunCompaction, on one replica, in the background) reads
//     its replica's batches and decides which records go. It needs one
//     pass over the dirty section (the records since the last finished
//     pass) to index their keys, in a map bounded by a memory budget, and
//     one over the partition up to the end of what it indexed. A dirty
//     section larger than the budget is compacted in several passes, each
//     up to where its index filled (as Kafka's dedupe buffer does).
//   - It proposes what it decided as compaction commands: the offsets to
//     remove, a bounded number of batches' worth per command, in offset
//     order, one at a time. The state machine rewrites the batches holding
//     them, so every replica removes the same records at the same entry.
//     The last command of a pass records how far the pass reached.
//
// A record removed is never needed again whatever happened since the plan
// (a later record of its key stays later, and trims only remove more), so
// a stale plan, two planners at once or a planner that dies half-way leave
// a correct partition; the next pass starts again from the last finished
// one. A tombstone that is the last record of its key is the exception:
// it may only go once every older record of its key has, and once
// DeleteRetention has passed since a pass first reached it. The command
// marks such removals, and the state machine checks both conditions
// itself, from the replicated compaction state: a tombstone below the
// clean end was indexed by the finished pass that reached it, which
// removed the older records of its key. (A tombstone with a later record
// of its key goes like any other record.)
//
// Transactions are left alone, the simplest rule that keeps
// read-committed reads right: records of transactional batches are
// neither indexed nor removed, and control batches (markers) stay, until
// retention or a trim deletes them with the rest of the log's front. So
// an aborted record can never stand as the last of its key (it is not
// indexed, so never hides an older committed record), a marker outlives
// the data it describes, and the aborted-transaction index stays true. A
// committed transactional record does not replace the older records of
// its key either: they stay, at the cost of some space.

// CmdCompact removes records from stored batches; see [RunCompaction].
const CmdCompact byte = 4

// DefaultCompactionMemory is the default budget of a compaction pass's
// key index.
const DefaultCompactionMemory = 32 << 20

// maxReach bounds the compaction passes remembered per partition.
const maxReach = 16

// reach says that offsets below end (and at or past the previous reach's
// end) were first reached by a compaction pass finished at time.
type reach struct{ end, time int64 }

// compaction is a partition's replicated key compaction state.
type compaction struct {
	// cleanEnd: every record below it whose key has a later record below
	// it has been removed.
	cleanEnd int64
	// lastPass is the proposer's clock of the last finished pass.
	lastPass int64
	// reach holds when passes first reached the offsets below cleanEnd,
	// by ascending end (the last one's end is cleanEnd); at most maxReach.
	reach []reach
}

func (c *compaction) zero() bool { return c.cleanEnd == 0 && c.lastPass == 0 && len(c.reach) == 0 }

// size is the length of c's encoding.
func (c *compaction) size() int {
	if c.zero() {
		return 0
	}
	return 17 + 16*len(c.reach)
}

// appendTo appends c's encoding (nothing for the zero state, so that a
// partition never compacted is stored as before compaction existed).
func (c *compaction) appendTo(b []byte) []byte {
	if c.zero() {
		return b
	}
	le := binary.LittleEndian
	b = le.AppendUint64(b, uint64(c.cleanEnd))
	b = le.AppendUint64(b, uint64(c.lastPass))
	b = append(b, byte(len(c.reach)))
	for _, r := range c.reach {
		b = le.AppendUint64(b, uint64(r.end))
		b = le.AppendUint64(b, uint64(r.time))
	}
	return b
}

func decodeCompaction(b []byte) (compaction, error) {
	le := binary.LittleEndian
	if len(b) < 17 || int(b[16]) > maxReach || len(b) != 17+16*int(b[16]) {
		return compaction{}, fmt.Errorf("%w: compaction state of %d bytes", ErrCorrupt, len(b))
	}
	c := compaction{cleanEnd: int64(le.Uint64(b)), lastPass: int64(le.Uint64(b[8:]))}
	prev := int64(0)
	for p := b[17:]; len(p) > 0; p = p[16:] {
		r := reach{end: int64(le.Uint64(p)), time: int64(le.Uint64(p[8:]))}
		if r.end <= prev {
			return compaction{}, fmt.Errorf("%w: compaction state with passes out of order", ErrCorrupt)
		}
		prev = r.end
		c.reach = append(c.reach, r)
	}
	if c.cleanEnd < 0 || len(c.reach) > 0 && c.reach[len(c.reach)-1].end != c.cleanEnd {
		return compaction{}, fmt.Errorf("%w: compaction state cleaned to %d", ErrCorrupt, c.cleanEnd)
	}
	return c, nil
}

// tombstoneExpired reports whether the tombstone at offset o may go as of
// now: a finished pass reached it at least deleteRetention ago.
func (c *compaction) tombstoneExpired(o, now, deleteRetention int64) bool {
	if o >= c.cleanEnd {
		return false
	}
	for _, r := range c.reach {
		if o < r.end {
			return r.time <= now && uint64(now-r.time) >= uint64(deleteRetention)
		}
	}
	return false
}

// finished returns the state after a pass that reached end finished at
// time now, with logStart the partition's log start.
func (c compaction) finished(end, now, logStart int64) compaction {
	c.reach = slices.Clone(c.reach)
	if end > c.cleanEnd {
		c.cleanEnd = end
		c.reach = append(c.reach, reach{end: end, time: now})
	}
	// Passes wholly below the log start concern no stored record.
	for len(c.reach) > 1 && c.reach[0].end <= logStart {
		c.reach = c.reach[1:]
	}
	if len(c.reach) > maxReach {
		// Merge the two oldest under the later time: their tombstones
		// stay a little longer, never less.
		c.reach[1].time = max(c.reach[0].time, c.reach[1].time)
		c.reach = c.reach[1:]
	}
	c.lastPass = max(c.lastPass, now)
	return c
}

// compactCmd is a decoded compaction command.
type compactCmd struct {
	now, deleteRetention int64
	passEnd              int64 // the end of the pass's index
	final                bool  // the pass's last command: record it
	// offsets are the records to remove, ascending. expiring[i] says
	// offsets[i] is a tombstone to remove for its age, which the state
	// machine checks; otherwise the record has a later one of its key.
	offsets  []int64
	expiring []bool
}

func (c *compactCmd) encode() []byte {
	le := binary.LittleEndian
	b := make([]byte, 0, 27+2*len(c.offsets))
	b = append(b, CmdCompact)
	b = le.AppendUint64(b, uint64(c.now))
	b = le.AppendUint64(b, uint64(c.deleteRetention))
	b = le.AppendUint64(b, uint64(c.passEnd))
	if c.final {
		b = append(b, 1)
	} else {
		b = append(b, 0)
	}
	b = binary.AppendUvarint(b, uint64(len(c.offsets)))
	prev := int64(-1)
	for i, o := range c.offsets {
		d := uint64(o-prev) << 1
		if i < len(c.expiring) && c.expiring[i] {
			d |= 1
		}
		b = binary.AppendUvarint(b, d)
		prev = o
	}
	return b
}

// decodeCompactCmd decodes a compaction command; ok is false for a
// malformed one: a bad flag, offsets not strictly increasing, bytes left.
func decodeCompactCmd(b []byte) (c compactCmd, ok bool) {
	if len(b) < 27 || b[0] != CmdCompact || b[25] > 1 {
		return c, false
	}
	le := binary.LittleEndian
	c.now = int64(le.Uint64(b[1:]))
	c.deleteRetention = int64(le.Uint64(b[9:]))
	c.passEnd = int64(le.Uint64(b[17:]))
	c.final = b[25] == 1
	p := b[26:]
	n, k := binary.Uvarint(p)
	if k <= 0 || n > uint64(len(p)) { // every offset takes a byte at least
		return c, false
	}
	p = p[k:]
	c.offsets = make([]int64, 0, n)
	c.expiring = make([]bool, 0, n)
	prev := int64(-1)
	for range n {
		d, k := binary.Uvarint(p)
		exp := d&1 == 1
		d >>= 1
		if k <= 0 || d == 0 || d > math.MaxInt64-uint64(prev) {
			return c, false
		}
		p = p[k:]
		prev += int64(d)
		c.offsets = append(c.offsets, prev)
		c.expiring = append(c.expiring, exp)
	}
	return c, len(p) == 0 && c.deleteRetention >= 0 && c.passEnd >= 0
}

// keySpan is a range of keys written by a control command, for the
// background compactor.
type keySpan struct{ start, end []byte }

// storedBatch is a batch this command has read or rewritten.
type storedBatch struct {
	key   []byte
	v     []byte
	end   int64 // the offset after its span
	dirty bool  // changed since written to the Pebble batch
}

// applyCompact applies a compaction command to next, writing into wb: it
// rewrites the stored batches that hold the command's offsets without
// those records. Tombstones go only if expired (see
// [compaction.tombstoneExpired]), the newest batch is never touched, and
// offsets not stored any more are ignored. A batch left without records
// is merged into the batch before it, whose span grows over it (so that
// batches still follow each other without a gap); the first batch stays,
// empty, for it has none.
func (p *Partition) applyCompact(wb *pebble.Batch, next *partState, cmd []byte) (Result, keySpan, error) {
	c, ok := decodeCompactCmd(cmd)
	if !ok || c.passEnd > next.NextOffset {
		return Result{BaseOffset: -1, Status: StatusInvalid}, keySpan{}, nil
	}
	dk := slotKind(kindData, next.slot)
	it, err := p.s.db.NewIter(&pebble.IterOptions{LowerBound: key(dk, p.shard), UpperBound: upper(dk, p.shard)})
	if err != nil {
		return Result{}, keySpan{}, p.readErr(err, -1)
	}
	defer it.Close()

	var prev *storedBatch // the batch before the one at hand, if known
	flush := func() error {
		if prev != nil && prev.dirty {
			prev.dirty = false
			return wb.Set(prev.key, prev.v, nil)
		}
		return nil
	}
	var span keySpan
	var recs []Record
	var b BatchBuilder
	for offs, exp := c.offsets, c.expiring; len(offs) > 0; {
		if !it.SeekLT(key(dk, p.shard, uint64(offs[0])+1)) {
			if err := it.Error(); err != nil {
				return Result{}, keySpan{}, p.readErr(err, offs[0])
			}
			offs, exp = offs[1:], exp[1:] // below the first batch: gone
			continue
		}
		v, err := it.ValueAndErr()
		if err != nil {
			return Result{}, keySpan{}, p.readErr(err, offs[0])
		}
		h, err := ParseHeader(v)
		if err != nil {
			return Result{}, keySpan{}, fmt.Errorf("shard %d: stored batch: %w", p.shard, err)
		}
		end := h.BaseOffset + int64(h.Count)
		n := 0
		for n < len(offs) && offs[n] < end {
			n++
		}
		mine, mineExp := offs[:n], exp[:n]
		offs, exp = offs[n:], exp[n:]
		if n == 0 {
			offs, exp = offs[1:], exp[1:] // past the last batch
			continue
		}
		if end >= next.NextOffset || h.Transactional || h.Control {
			// The head stays as it is, and so do transactions (see
			// RunCompaction).
			continue
		}
		_, recs, err = DecodeRecords(v, 0, recs[:0])
		if err != nil {
			return Result{}, keySpan{}, fmt.Errorf("shard %d: stored batch at %d: %w", p.shard, h.BaseOffset, err)
		}
		kept := recs[:0]
		for _, r := range recs {
			for len(mine) > 0 && mine[0] < r.Offset {
				mine, mineExp = mine[1:], mineExp[1:]
			}
			if len(mine) > 0 && mine[0] == r.Offset {
				if !mineExp[0] || r.Tombstone && next.comp.tombstoneExpired(r.Offset, c.now, c.deleteRetention) {
					continue
				}
			}
			kept = append(kept, r)
		}
		if len(kept) == len(recs) {
			continue
		}
		k := append([]byte(nil), it.Key()...)

		if len(kept) == 0 {
			if prev == nil || prev.end != h.BaseOffset {
				if err := flush(); err != nil {
					return Result{}, keySpan{}, err
				}
				prev = nil
				if it.SeekLT(k) {
					pv, err := it.ValueAndErr()
					if err != nil {
						return Result{}, keySpan{}, p.readErr(err, h.BaseOffset)
					}
					prev = &storedBatch{key: append([]byte(nil), it.Key()...), v: append([]byte(nil), pv...), end: h.BaseOffset}
				} else if err := it.Error(); err != nil {
					return Result{}, keySpan{}, p.readErr(err, h.BaseOffset)
				}
			}
			if prev != nil && canExtend(prev.v, h.Count) && !isTxnBatch(prev.v) {
				extendBatch(prev.v, h.Count)
				prev.end, prev.dirty = end, true
				if err := wb.Delete(k, nil); err != nil {
					return Result{}, keySpan{}, err
				}
				next.stored -= int64(len(v))
				continue
			}
		}
		// A batch keeps its format: rewriting a legacy batch as a Kafka
		// one would round its records' times to milliseconds.
		b.Reset()
		b.legacy = h.Version == VersionLegacy
		for _, r := range kept {
			b.addAt(r, uint64(r.Offset-h.BaseOffset))
		}
		nb, err := b.build(0, h.Compression, batchIdentity{
			flags: FlagCompacted, count: h.Count, logAppendTime: h.LogAppendTime,
			producerID: h.ProducerID, epoch: h.ProducerEpoch, baseSeq: h.BaseSequence,
			firstTime: h.FirstTime, maxTime: h.MaxTime,
		})
		if err != nil {
			return Result{}, keySpan{}, fmt.Errorf("shard %d: rewriting the batch at %d: %w", p.shard, h.BaseOffset, err)
		}
		SetBaseOffset(nb, h.BaseOffset)
		if err := flush(); err != nil {
			return Result{}, keySpan{}, err
		}
		if err := wb.Set(k, nb, nil); err != nil {
			return Result{}, keySpan{}, err
		}
		next.stored += int64(len(nb) - len(v))
		prev = &storedBatch{key: k, v: nb, end: end}
	}
	if err := flush(); err != nil {
		return Result{}, keySpan{}, err
	}
	if !c.final {
		// The rewritten batches' old versions are compacted away once,
		// after the pass: a Pebble flush and compaction per command
		// would rewrite the same tables over and over.
		return Result{BaseOffset: next.LogStart}, keySpan{}, nil
	}
	next.comp = next.comp.finished(c.passEnd, c.now, next.LogStart)
	if c.passEnd > 0 {
		span = keySpan{start: key(dk, p.shard), end: key(dk, p.shard, uint64(c.passEnd))}
	}
	return Result{BaseOffset: next.LogStart}, span, nil
}

// canExtend reports whether the span of the stored batch v can grow by n
// offsets: a Kafka batch's last offset delta is an int32.
func canExtend(v []byte, n uint32) bool {
	if v[16] == VersionKafka {
		return uint64(binary.BigEndian.Uint32(v[23:]))+uint64(n) <= math.MaxInt32
	}
	return uint64(binary.LittleEndian.Uint32(v[20:]))+uint64(n) <= math.MaxUint32
}

// isTxnBatch reports whether the stored batch v is transactional (or a
// control batch, which is too): a span that grew over offsets of another
// producer would seem part of its transaction.
func isTxnBatch(v []byte) bool {
	return v[16] == VersionKafka && binary.BigEndian.Uint16(v[21:])&kafkaAttrTransactional != 0
}

// extendBatch grows the span of the stored batch v, in place, by n offsets
// that hold no record, marking it compacted (a Kafka batch then has fewer
// records than offsets) and signing it again. canExtend(v, n) must hold.
func extendBatch(v []byte, n uint32) {
	if v[16] == VersionKafka {
		be := binary.BigEndian
		be.PutUint32(v[23:], be.Uint32(v[23:])+n)
		be.PutUint32(v[17:], crc32.Checksum(v[kafkaCRCCovered:], castagnoli))
		return
	}
	le := binary.LittleEndian
	le.PutUint32(v[20:], le.Uint32(v[20:])+n)
	le.PutUint16(v[18:], le.Uint16(v[18:])|FlagCompacted)
	le.PutUint32(v[12:], crc32.Checksum(v[16:], castagnoli))
}

// CompactOptions configures one compaction pass ([Partition.RunCompaction]).
type CompactOptions struct {
	// Now is the proposer's clock (unix ns): tombstones expire by it.
	Now int64
	// DeleteRetention (ns) is how long a tombstone stays after a pass
	// first reaches it.
	DeleteRetention int64
	// KeyMemory bounds the pass's key index, in bytes (about 48 bytes per
	// key plus the key). Default (0) [DefaultCompactionMemory].
	KeyMemory int64
	// CommandBytes bounds the stored bytes of the batches one command
	// rewrites, so that applying one stays short. Default (0) 4 MiB.
	CommandBytes int64
}

// CompactStats describes a compaction pass.
type CompactStats struct {
	// End is the end of the pass's key index: records below it were
	// compacted against every key up to it.
	End int64
	// Done: the pass reached the head, the newest batch, which stays as it
	// is; nothing before it is left uncompacted.
	Done bool
	// Scanned is the stored bytes of the batches the pass read.
	Scanned int64
	// Removed is the number of records the pass asked to remove.
	Removed int
	// Commands is the number of commands proposed.
	Commands int
}

// keyOverhead is what a key costs the index besides its bytes: the map
// entry, the string header and the offset.
const keyOverhead = 48

// RunCompaction runs one compaction pass over the partition as it stands
// (see the top of this file) and calls propose with each of its commands,
// in order. propose may return before a command that is not final is
// applied, to have several in flight (they are independent), but must
// return for the final one only once every command before it was applied
// and that one too, and must report the failure of any. It stops at the
// first error propose or a read returns: what was applied stays, and the
// next pass starts again from the last finished one. Safe for concurrent
// use with the writer and readers; the commands are applied through the
// log like any other.
func (p *Partition) RunCompaction(ctx context.Context, o CompactOptions, propose func(cmd []byte, final bool) error) (CompactStats, error) {
	if o.KeyMemory <= 0 {
		o.KeyMemory = DefaultCompactionMemory
	}
	if o.CommandBytes <= 0 {
		o.CommandBytes = 4 << 20
	}
	var stats CompactStats
	var buf [1]*pebble.Iterator
	its, slot, err := p.openIters(buf[:0], iterSpan{kind: kindData})
	if err != nil {
		return stats, err
	}
	it := its[0]
	defer it.Close()
	st := p.state.Load() // as of the iterator, or a little later: offsets only grow
	if !it.Last() {
		return stats, p.readErr(it.Error(), -1)
	}
	head := int64(binary.BigEndian.Uint64(it.Key()[9:]))
	comp := st.comp

	// Pass 1: the last offset of every key in the dirty section, up to
	// where the index fills (at a batch's end) or the head.
	index := map[string]int64{}
	used := int64(0)
	dirty := max(comp.cleanEnd, st.LogStart)
	end := dirty
	var recs []Record
	decode := func(v []byte) (BatchHeader, error) {
		h, r, err := DecodeRecords(v, 0, recs[:0])
		recs = r
		if err != nil {
			return h, fmt.Errorf("shard %d: stored batch: %w", p.shard, err)
		}
		stats.Scanned += int64(len(v))
		return h, nil
	}
	if end < head {
		ok := it.SeekLT(key(slotKind(kindData, slot), p.shard, uint64(end)+1))
		if !ok {
			ok = it.First()
		}
		for ; ok; ok = it.Next() {
			if err := ctx.Err(); err != nil {
				return stats, err
			}
			if used >= o.KeyMemory {
				break
			}
			v, err := it.ValueAndErr()
			if err != nil {
				return stats, p.readErr(err, end)
			}
			h, err := decode(v)
			if err != nil {
				return stats, err
			}
			if h.BaseOffset >= head {
				break
			}
			for _, r := range recs {
				if r.Key == nil || r.Offset < dirty || h.Transactional || h.Control {
					continue
				}
				if _, ok := index[string(r.Key)]; !ok {
					used += int64(len(r.Key)) + keyOverhead
				}
				index[string(r.Key)] = r.Offset
			}
			end = h.BaseOffset + int64(h.Count)
		}
		if err := it.Error(); err != nil {
			return stats, p.readErr(err, end)
		}
	}
	stats.End, stats.Done = end, end >= head

	// Pass 2: every record below end whose key has a later one, and the
	// expired tombstones of the clean section.
	cmd := compactCmd{now: o.Now, deleteRetention: o.DeleteRetention, passEnd: end}
	var touched int64
	send := func(final bool) error {
		cmd.final = final
		if err := propose(cmd.encode(), final); err != nil {
			return err
		}
		stats.Commands++
		stats.Removed += len(cmd.offsets)
		cmd.offsets, cmd.expiring, touched = cmd.offsets[:0], cmd.expiring[:0], 0
		return nil
	}
	for ok := it.First(); ok; ok = it.Next() {
		if err := ctx.Err(); err != nil {
			return stats, err
		}
		v, err := it.ValueAndErr()
		if err != nil {
			return stats, p.readErr(err, -1)
		}
		if int64(binary.BigEndian.Uint64(it.Key()[9:])) >= end {
			break
		}
		h, err := decode(v)
		if err != nil {
			return stats, err
		}
		n := len(cmd.offsets)
		for _, r := range recs {
			if r.Key == nil || h.Transactional || h.Control {
				continue
			}
			last, indexed := index[string(r.Key)]
			switch {
			case indexed && last > r.Offset:
				cmd.offsets = append(cmd.offsets, r.Offset)
				cmd.expiring = append(cmd.expiring, false)
			case r.Tombstone && !indexed && comp.tombstoneExpired(r.Offset, o.Now, o.DeleteRetention):
				cmd.offsets = append(cmd.offsets, r.Offset)
				cmd.expiring = append(cmd.expiring, true)
			}
		}
		if len(cmd.offsets) > n {
			touched += int64(len(v))
		}
		if touched >= o.CommandBytes {
			if err := send(false); err != nil {
				return stats, err
			}
		}
	}
	if err := it.Error(); err != nil {
		return stats, p.readErr(err, -1)
	}
	return stats, send(true)
}

// cleanCache remembers the stored bytes below a partition's clean end,
// which [Partition.CompactionDue] needs, until the clean end, the log
// start or the slot changes. Local to this replica, never replicated.
type cleanCache struct {
	cleanEnd, logStart int64
	gen                uint64
	bytes              int64
}

// MinDirtyRatio is the share of a partition's stored bytes that must be
// dirty (written since the last finished compaction pass) before
// [Partition.CompactionDue] calls for a pass: Kafka's
// min.cleanable.dirty.ratio default.
const MinDirtyRatio = 0.5

// CompactionDue reports whether a compaction pass would do work worth its
// cost now: at least MinDirtyRatio of the stored bytes are dirty and the
// dirty section holds a batch besides the head, or a tombstone reached by
// a pass expired since the last pass (deleteRetention ns). A hint, as
// [Partition.RetentionDue] is.
func (p *Partition) CompactionDue(now, deleteRetention int64) (bool, error) {
	st := p.state.Load()
	for _, r := range st.comp.reach {
		if r.time > math.MaxInt64-deleteRetention {
			continue
		}
		if exp := r.time + deleteRetention; exp > st.comp.lastPass && exp <= now {
			return true, nil
		}
	}
	var buf [1]*pebble.Iterator
	its, slot, err := p.openIters(buf[:0], iterSpan{kind: kindData})
	if err != nil {
		return false, err
	}
	it := its[0]
	defer it.Close()
	if !it.Last() {
		return false, p.readErr(it.Error(), -1)
	}
	head := int64(binary.BigEndian.Uint64(it.Key()[9:]))
	if max(st.comp.cleanEnd, st.LogStart) >= head {
		return false, nil
	}
	c := p.clean.Load()
	if c == nil || c.cleanEnd != st.comp.cleanEnd || c.logStart != st.LogStart || c.gen != st.gen {
		c = &cleanCache{cleanEnd: st.comp.cleanEnd, logStart: st.LogStart, gen: st.gen}
		end := key(slotKind(kindData, slot), p.shard, uint64(st.comp.cleanEnd))
		for ok := it.First(); ok && bytes.Compare(it.Key(), end) < 0; ok = it.Next() {
			lv := it.LazyValue()
			c.bytes += int64(lv.Len())
		}
		if err := it.Error(); err != nil {
			return false, p.readErr(err, -1)
		}
		p.clean.Store(c)
	}
	dirty := st.stored - c.bytes
	return float64(dirty) >= MinDirtyRatio*float64(st.stored), nil
}
