package storage

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"

	"github.com/cockroachdb/pebble/v2"
)

// Snapshot is a consistent view of one partition for streaming to a replica
// that fell behind. Close it when done.
type Snapshot struct {
	p    *Partition
	snap *pebble.Snapshot
	slot byte
	comp compaction
	Meta Meta
}

// Snapshot takes a consistent view of the partition. Writer only.
func (p *Partition) Snapshot() *Snapshot {
	st := p.state.Load()
	return &Snapshot{p: p, snap: p.s.db.NewSnapshot(), slot: st.slot, comp: st.comp, Meta: st.Meta}
}

// Close releases the view.
func (s *Snapshot) Close() error { return s.snap.Close() }

// WriteTo streams the partition as (kind, suffix, value) records, each
// length-prefixed, ended by a zero byte. The shard id and the key slot are
// left out, so the stream depends on neither.
func (s *Snapshot) WriteTo(w io.Writer) (int64, error) {
	bw := bufio.NewWriterSize(w, 256<<10)
	var n int64
	var hdr [2 * binary.MaxVarintLen64]byte
	for _, k := range kinds {
		sk := slotKind(k, s.slot)
		it, err := s.snap.NewIter(&pebble.IterOptions{
			LowerBound: key(sk, s.p.shard),
			UpperBound: upper(sk, s.p.shard),
		})
		if err != nil {
			return n, s.p.readErr(err, -1)
		}
		for it.First(); it.Valid(); it.Next() {
			v, err := it.ValueAndErr()
			if err != nil {
				it.Close()
				return n, s.p.readErr(err, -1)
			}
			if k == kindMeta {
				// Without the slot and the stored bytes; with the
				// compaction state, which a replica needs to remove the
				// same tombstones as the others.
				v = s.comp.appendTo(s.Meta.encode())
			}
			suffix := it.Key()[9:]
			h := binary.AppendUvarint(hdr[:0], uint64(len(suffix))+1)
			h = binary.AppendUvarint(h, uint64(len(v)))
			for _, part := range [][]byte{h, {k}, suffix, v} {
				m, err := bw.Write(part)
				n += int64(m)
				if err != nil {
					it.Close()
					return n, err
				}
			}
		}
		if err := it.Close(); err != nil {
			return n, s.p.readErr(err, -1)
		}
	}
	if err := bw.WriteByte(0); err != nil {
		return n, err
	}
	return n + 1, bw.Flush()
}

// Restore replaces the partition's contents with a stream written by
// [Snapshot.WriteTo]. Writer only.
//
// Readers see the old contents until the new ones are complete, then the
// new ones: never a mixture, never an empty partition in between. The
// stream, which may be far larger than memory, is validated and written in
// chunks into the key slot not in use, where no reader looks. One last
// write then names that slot in the meta and deletes the old slot (see
// [Partition.openIters] for how readers cross over). If the stream is
// invalid or fails, the staged keys are deleted and the partition is left
// as it was; if the process dies first, the meta on disk still names the
// old slot, and the next Restore clears the leftovers before staging.
func (p *Partition) Restore(r io.Reader) error {
	cur := p.state.Load()
	stage := 1 - cur.slot
	if err := p.commitClear(stage); err != nil {
		return err
	}
	meta, comp, stored, err := p.stage(r, stage)
	if err != nil {
		return errors.Join(err, p.commitClear(stage))
	}

	b := p.s.db.NewBatch()
	defer b.Close()
	next := &partState{gen: cur.gen + 1}
	if meta == nil {
		// The partition was never written: nothing was staged and no
		// meta is kept, as for a new partition (slot 0).
		next.Meta = emptyState.Meta
		err = errors.Join(p.clearSlot(b, 0), p.clearSlot(b, 1), b.Delete(key(kindMeta, p.shard), nil))
	} else {
		next.Meta, next.slot, next.stored, next.comp = *meta, stage, stored, comp
		err = errors.Join(b.Set(key(kindMeta, p.shard), next.encode(), nil), p.clearSlot(b, cur.slot))
	}
	if err != nil {
		return err
	}
	// Publish before the write that deletes the old slot: see openIters.
	p.state.Store(next)
	if err := b.Commit(pebble.NoSync); err != nil {
		return err
	}
	// A restored snapshot is not in the Raft log: it must be durable now.
	if err := p.s.db.Flush(); err != nil {
		return err
	}
	return p.load()
}

// stage validates the stream and writes its batches, time index and
// producer states into slot, committing every 8 MiB or so. It returns the
// stream's meta, nil for a partition never written, its compaction state
// and the stored bytes of its batches.
func (p *Partition) stage(r io.Reader, slot byte) (*Meta, compaction, int64, error) {
	src := &sourceReader{r: r}
	br := bufio.NewReaderSize(src, 256<<10)
	check := restoreCheck{producerTime: math.MinInt64, txnFirst: math.MaxInt64}
	b := p.s.db.NewBatch()
	defer func() { b.Close() }()
	for {
		kl, err := binary.ReadUvarint(br)
		if err != nil {
			return nil, compaction{}, 0, src.wrap(err)
		}
		if kl == 0 {
			break
		}
		vl, err := binary.ReadUvarint(br)
		if err != nil {
			return nil, compaction{}, 0, src.wrap(err)
		}
		if kl > 64 || vl > MaxBatchBytes {
			return nil, compaction{}, 0, snapshotCorrupt("record of %d+%d bytes", kl, vl)
		}
		buf := make([]byte, kl+vl)
		if _, err := io.ReadFull(br, buf); err != nil {
			return nil, compaction{}, 0, src.wrap(err)
		}
		kind, suffix, value := buf[0], buf[1:kl], buf[kl:]
		if err := check.record(kind, suffix, value); err != nil {
			return nil, compaction{}, 0, err
		}
		if kind == kindMeta {
			continue // written with the switch-over
		}
		k := append(key(slotKind(kind, slot), p.shard), suffix...)
		if err := b.Set(k, value, nil); err != nil {
			return nil, compaction{}, 0, err
		}
		if b.Len() > 8<<20 {
			if err := b.Commit(pebble.NoSync); err != nil {
				return nil, compaction{}, 0, err
			}
			b.Close()
			b = p.s.db.NewBatch()
		}
	}
	if err := check.finish(); err != nil {
		return nil, compaction{}, 0, err
	}
	return check.meta, check.comp, check.stored, b.Commit(pebble.NoSync)
}

// commitClear deletes the partition's keys in slot.
func (p *Partition) commitClear(slot byte) error {
	b := p.s.db.NewBatch()
	defer b.Close()
	if err := p.clearSlot(b, slot); err != nil {
		return err
	}
	return b.Commit(pebble.NoSync)
}

// sourceReader keeps the first error of a snapshot's source other than
// EOF, to tell a failing source (a closed connection, a stopped
// dragonboat, whose error must stay matchable) from a malformed stream.
type sourceReader struct {
	r   io.Reader
	err error
}

func (s *sourceReader) Read(b []byte) (int, error) {
	n, err := s.r.Read(b)
	if err != nil && err != io.EOF && s.err == nil {
		s.err = err
	}
	return n, err
}

// wrap explains err, met while decoding the stream.
func (s *sourceReader) wrap(err error) error {
	if s.err != nil {
		return fmt.Errorf("replog: snapshot: %w", s.err)
	}
	return snapshotCorrupt("%v", err)
}

// restoreCheck validates a snapshot stream record by record as
// [Partition.Restore] reads it, so that only what Apply could have written
// gets in: a record Apply never writes (a producer state without batches, a
// batch that does not decode, a meta that disagrees with the batches) would
// otherwise surface later as wrong reads or a panic in Apply. Records come
// as WriteTo writes them: kinds in the order of [kinds], keys ascending
// within a kind, the meta last.
//
// It keeps 16 bytes per batch, to match the time index against the
// batches.
type restoreCheck struct {
	records  int
	rank     int    // position in kinds of the last record's kind
	last     []byte // the last record's key suffix
	batches  []batchSpan
	next     int64 // offset after the last batch
	stored   int64 // the batches' bytes
	times    int   // time index entries seen
	lastTime int64 // running maximum of the last time index entry
	// producerEnd is the largest offset after a batch a producer state
	// remembers, producerTime the latest lastTime of one.
	producerEnd  int64
	producerTime int64
	// txnFirst is the smallest first offset of an open transaction
	// (MaxInt64 if none), abortedEnd the offset after the last aborted
	// transaction's marker.
	txnFirst   int64
	abortedEnd int64
	meta       *Meta
	comp       compaction
	// indexed counts the batches with a time index entry of their own;
	// tb is the batch the last entry fell in.
	indexed int
	tb      int
	lastTB  int64 // the base the last entry named
}

type batchSpan struct{ base, end, maxTime int64 }

func snapshotCorrupt(format string, args ...any) error {
	return fmt.Errorf("%w: snapshot: "+format, append([]any{ErrCorrupt}, args...)...)
}

func (c *restoreCheck) record(kind byte, suffix, value []byte) error {
	rank := slices.Index(kinds[:], kind)
	switch {
	case rank < 0:
		return snapshotCorrupt("unknown key kind %#x", kind)
	case c.meta != nil:
		return snapshotCorrupt("%q record after the meta", kind)
	case c.records > 0 && (rank < c.rank || rank == c.rank && bytes.Compare(suffix, c.last) <= 0):
		return snapshotCorrupt("%q record out of order", kind)
	}
	c.records++
	c.rank = rank
	c.last = append(c.last[:0], suffix...)

	switch kind {
	case kindData:
		if len(suffix) != 8 {
			return snapshotCorrupt("batch key of %d bytes", len(suffix))
		}
		base := int64(binary.BigEndian.Uint64(suffix))
		h, err := Validate(value)
		switch {
		case err != nil:
			return fmt.Errorf("snapshot: batch at %d: %w", base, err)
		case base < 0 || h.BaseOffset != base:
			return snapshotCorrupt("batch with base offset %d stored at %d", h.BaseOffset, base)
		case len(c.batches) > 0 && base != c.next:
			return snapshotCorrupt("batch at %d follows one ending at %d", base, c.next)
		}
		c.batches = append(c.batches, batchSpan{base: base, end: base + int64(h.Count), maxTime: h.MaxTime})
		c.next = base + int64(h.Count)
		c.stored += int64(len(value))

	case kindTime:
		// Each batch has an entry naming its base offset, with the running
		// maximum of the record times up to the end of that batch. Key
		// compaction leaves two kinds of trace: a rewritten batch keeps
		// its entry although its latest record may be gone (the entry
		// then exceeds the running maximum of what is left), and a batch
		// merged into the one before it leaves its entry behind, inside
		// that batch's span.
		if len(suffix) != 16 || len(value) != 0 {
			return snapshotCorrupt("time index entry of %d+%d bytes", len(suffix), len(value))
		}
		t := int64(binary.BigEndian.Uint64(suffix) ^ 1<<63)
		base := int64(binary.BigEndian.Uint64(suffix[8:]))
		if c.times > 0 && base <= c.lastTB {
			return snapshotCorrupt("time index entry for offset %d after one for %d", base, c.lastTB)
		}
		for c.tb+1 < len(c.batches) && c.batches[c.tb+1].base <= base {
			c.tb++
		}
		if len(c.batches) == 0 || base < c.batches[c.tb].base || base >= c.batches[c.tb].end {
			return snapshotCorrupt("time index entry for offset %d, which no batch holds", base)
		}
		b := c.batches[c.tb]
		if base == b.base {
			if c.indexed != c.tb {
				return snapshotCorrupt("no time index entry for the batch at %d", c.batches[c.indexed].base)
			}
			c.indexed++
		}
		if t < max(c.lastTime, b.maxTime) {
			return snapshotCorrupt("time index says %d for the batch at %d", t, base)
		}
		c.times++
		c.lastTime = t
		c.lastTB = base

	case kindProducer:
		if len(suffix) != 8 || binary.BigEndian.Uint64(suffix) == 0 {
			return snapshotCorrupt("producer key %x", suffix)
		}
		st, err := decodeProducerState(value)
		if err != nil {
			return fmt.Errorf("snapshot: %w", err)
		}
		for _, sb := range st.batches {
			if sb.count == 0 || sb.baseOffset < 0 {
				return snapshotCorrupt("producer %x remembers %d records at %d", suffix, sb.count, sb.baseOffset)
			}
			c.producerEnd = max(c.producerEnd, sb.baseOffset+int64(sb.count))
		}
		if !st.timeUnknown {
			c.producerTime = max(c.producerTime, st.lastTime)
		}

	case kindTxn:
		_, t, err := decodeTxn(suffix, value)
		if err != nil {
			return fmt.Errorf("snapshot: %w", err)
		}
		c.txnFirst = min(c.txnFirst, t.first)

	case kindAborted:
		a, err := decodeAborted(suffix, value)
		if err != nil {
			return fmt.Errorf("snapshot: %w", err)
		}
		c.abortedEnd = a.LastOffset + 1

	case kindMeta:
		if len(suffix) != 0 {
			return snapshotCorrupt("meta key with a %d-byte suffix", len(suffix))
		}
		if len(value) > metaSize {
			comp, err := decodeCompaction(value[metaSize:])
			if err != nil {
				return fmt.Errorf("snapshot: %w", err)
			}
			c.comp, value = comp, value[:metaSize]
		}
		m, err := decodeMeta(value)
		if err != nil {
			return fmt.Errorf("snapshot: %w", err)
		}
		c.meta = &m
	}
	return nil
}

// firstEnd is the offset after the first batch.
func (c *restoreCheck) firstEnd() int64 {
	if len(c.batches) > 1 {
		return c.batches[1].base
	}
	return c.next
}

// finish checks what only the whole stream shows: the meta agrees with the
// batches, the time index and the producer states.
func (c *restoreCheck) finish() error {
	m := c.meta
	switch {
	case m == nil && c.records > 0:
		return snapshotCorrupt("no meta")
	case m == nil:
		return nil // a partition never written
	case c.indexed != len(c.batches):
		return snapshotCorrupt("%d batches have a time index entry, of %d", c.indexed, len(c.batches))
	case c.comp.cleanEnd > m.NextOffset:
		return snapshotCorrupt("compacted up to %d, past the next offset %d", c.comp.cleanEnd, m.NextOffset)
	case m.LogStart < 0 || m.LogStart > m.NextOffset:
		return snapshotCorrupt("log start %d, next offset %d", m.LogStart, m.NextOffset)
	case len(c.batches) == 0 && m.NextOffset != m.LogStart:
		return snapshotCorrupt("no batch, but offsets %d to %d", m.LogStart, m.NextOffset)
	case len(c.batches) > 0 && (c.batches[0].base > m.LogStart || c.firstEnd() <= m.LogStart):
		// Trims delete the batches wholly below the log start, and
		// keep the one that straddles it.
		return snapshotCorrupt("log start %d, but the first batch starts at %d and ends at %d", m.LogStart, c.batches[0].base, c.firstEnd())
	case len(c.batches) > 0 && m.NextOffset != c.next:
		return snapshotCorrupt("next offset %d, but the batches end at %d", m.NextOffset, c.next)
	case len(c.batches) > 0 && m.MaxTime != c.lastTime:
		return snapshotCorrupt("max time %d, but the time index ends at %d", m.MaxTime, c.lastTime)
	case c.producerEnd > m.NextOffset:
		return snapshotCorrupt("a producer remembers offsets up to %d, past %d", c.producerEnd, m.NextOffset)
	case c.producerTime > m.MaxTime:
		return snapshotCorrupt("a producer wrote at %d, after the log's max time %d", c.producerTime, m.MaxTime)
	case c.txnFirst != math.MaxInt64 && c.txnFirst >= m.NextOffset:
		return snapshotCorrupt("a transaction opens at %d, past %d", c.txnFirst, m.NextOffset)
	case c.abortedEnd > m.NextOffset:
		return snapshotCorrupt("an aborted transaction ends at %d, past %d", c.abortedEnd-1, m.NextOffset)
	}
	m.LastStable = max(min(c.txnFirst, m.NextOffset), m.LogStart)
	return nil
}
