package storage

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"slices"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/replog/replog/internal/logadapt"
)

// Key layout. Every key starts with a one-byte kind and the 8-byte big-endian
// partition (Raft shard) id, so one Pebble instance holds every partition of
// a node and a partition's keys of one kind form a contiguous range.
//
//	'd' shard baseOffset          -> encoded record batch
//	't' shard runningMaxTime base -> (empty) time index, one entry per batch
//	'p' shard producerID          -> idempotent producer state
//	'x' shard producerID          -> open transaction (txn.go)
//	'a' shard lastOffset producer -> aborted transaction (txn.go)
//	'm' shard                     -> partition meta (applied index, offsets, slot)
//
// The data, time, producer, transaction and aborted keys of a partition
// live in one of two slots: slot 0 uses the kinds above, slot 1 the same
// letters in upper case. The meta, of which there is one, names the slot
// in use. [Partition.Restore] fills the other slot and switches to it in
// one write, so that readers see the old partition or the new one, never
// a mixture.
const (
	kindData     byte = 'd'
	kindTime     byte = 't'
	kindProducer byte = 'p'
	kindMeta     byte = 'm'
)

// kinds is every kind, in the order snapshots stream them: the meta last.
var kinds = [...]byte{kindData, kindTime, kindProducer, kindTxn, kindAborted, kindMeta}

// slotKinds are the kinds that have a range of keys per slot.
var slotKinds = [...]byte{kindData, kindTime, kindProducer, kindTxn, kindAborted}

// slotKind is the key byte of kind in slot.
func slotKind(kind, slot byte) byte {
	if slot == 0 || kind == kindMeta {
		return kind
	}
	return kind - 'a' + 'A'
}

// StoreOptions configures [OpenStore].
type StoreOptions struct {
	// InMemory keeps everything in memory (Pebble's in-memory file system).
	InMemory bool
	// FS, when set, overrides the file system (tests use it to simulate
	// crashes). InMemory is ignored when FS is set.
	FS vfs.FS
	// Logger receives Pebble's messages; nil discards them.
	Logger *slog.Logger
	// ProducerExpiration is how long an idempotent producer id may stay
	// idle in a partition before the partition forgets it (Kafka's
	// producer.id.expiration.ms). Idle time is measured by the log's
	// clock, the largest record timestamp applied, never the wall clock,
	// so that every replica forgets the same ids at the same entry; it
	// must therefore be the same on every replica. A forgotten producer's
	// next batch is refused as out of order unless it starts again at
	// sequence 0. Default (0) 7 days; negative is invalid.
	ProducerExpiration time.Duration
	// MemTableSize is the size of one of Pebble's memtables; writes stall
	// while four are full, so the store's write buffers take up to four
	// times this. Default (0) [DefaultMemTableSize].
	MemTableSize int64
	// CacheSize is the size of Pebble's block cache, which serves reads of
	// flushed records. Default (0) [DefaultCacheSize].
	CacheSize int64
}

// Defaults of [StoreOptions]: a node's share of replog's default memory
// budget of 256 MiB (1/32 and 1/16 of it).
const (
	DefaultMemTableSize = 8 << 20
	DefaultCacheSize    = 16 << 20
)

// DefaultProducerExpiration is the default of
// [StoreOptions.ProducerExpiration], as in Kafka.
const DefaultProducerExpiration = 7 * 24 * time.Hour

// Store is one Pebble instance holding the partitions hosted by one node.
// It is safe for concurrent use; each [Partition] it returns has a single
// writer (its state machine) and any number of readers.
type Store struct {
	db        *pebble.DB
	expiry    int64 // StoreOptions.ProducerExpiration in ns
	log       *slog.Logger
	compactor compactor
}

// OpenStore opens (or creates) the store in dir.
func OpenStore(dir string, o StoreOptions) (*Store, error) {
	switch {
	case o.ProducerExpiration < 0:
		return nil, fmt.Errorf("replog: store option ProducerExpiration is negative (%v)", o.ProducerExpiration)
	case o.ProducerExpiration == 0:
		o.ProducerExpiration = DefaultProducerExpiration
	}
	switch {
	case o.MemTableSize < 0 || o.CacheSize < 0:
		return nil, fmt.Errorf("replog: store options MemTableSize (%d) or CacheSize (%d) negative", o.MemTableSize, o.CacheSize)
	case o.MemTableSize == 0:
		o.MemTableSize = DefaultMemTableSize
	}
	if o.CacheSize == 0 {
		o.CacheSize = DefaultCacheSize
	}
	lg := logadapt.Pebble{L: o.Logger}
	opts := &pebble.Options{
		Logger: lg,
		// Damaged tables met while reading come back to the reader as
		// errors (see [Partition.ReadBatches]) rather than through
		// Pebble's default handler, which calls Logger.Fatalf: a bad file
		// must not take the host process down.
		EventListener: lg.EventListener(),
		// The log is append-only: a deep L0 lets most data be written once
		// or twice rather than rewritten level by level (compaction was the
		// largest CPU cost of a 3-replica profile). Memtables of 8 MiB
		// rather than 32 took a 3-replica run's peak RSS from 540 to 420
		// MiB for about 5% more CPU per record.
		MemTableSize:                uint64(o.MemTableSize),
		MemTableStopWritesThreshold: 4,
		CacheSize:                   o.CacheSize,
		L0CompactionThreshold:       8,
		L0StopWritesThreshold:       32,
		LBaseMaxBytes:               512 << 20,
		// No WAL: the Raft log, which dragonboat fsyncs before a batch is
		// committed, is the durable copy of everything applied since the
		// last Sync, and Sync flushes the memtables to fsynced tables
		// before dragonboat may compact that log. After a crash the store
		// reopens at its last flushed applied index (stored in the same
		// write as the data) and dragonboat replays the rest. This saves
		// writing every record a second time.
		DisableWAL: true,
	}
	// Batches are compressed (or not) by the producer's codec already;
	// compressing blocks again costs CPU for little gain.
	opts.ApplyCompressionSettings(func() pebble.DBCompressionSettings { return pebble.DBCompressionNone })
	switch {
	case o.FS != nil:
		opts.FS = o.FS
	case o.InMemory:
		opts.FS = vfs.NewMem()
	}
	db, err := pebble.Open(dir, opts)
	if err != nil {
		if pebble.IsCorruptionError(err) {
			return nil, fmt.Errorf("%w: open store %s: %w", ErrCorrupt, dir, err)
		}
		return nil, fmt.Errorf("replog: open store %s: %w", dir, err)
	}
	lgr := o.Logger
	if lgr == nil {
		lgr = slog.New(slog.DiscardHandler)
	}
	s := &Store{db: db, expiry: int64(o.ProducerExpiration), log: lgr}
	s.startCompactor()
	return s, nil
}

// Close flushes what was applied (so a clean restart replays nothing) and
// closes the store. Partitions must not be used afterwards.
func (s *Store) Close() error {
	s.stopCompactor()
	return errors.Join(s.db.Flush(), s.db.Close())
}

// Sync makes every write applied so far durable: it flushes the memtables
// to fsynced sstables (the store runs without a WAL).
func (s *Store) Sync() error { return s.db.Flush() }

func key(kind byte, shard uint64, suffix ...uint64) []byte {
	k := make([]byte, 9, 9+8*len(suffix))
	k[0] = kind
	binary.BigEndian.PutUint64(k[1:], shard)
	for _, s := range suffix {
		k = binary.BigEndian.AppendUint64(k, s)
	}
	return k
}

// upper is the exclusive upper bound of a shard's keys of one kind.
func upper(kind byte, shard uint64) []byte {
	if shard == math.MaxUint64 {
		return []byte{kind + 1}
	}
	return key(kind, shard+1)
}

// orderedTime maps a signed time onto an unsigned value that sorts the same way.
func orderedTime(t int64) uint64 { return uint64(t) ^ (1 << 63) }

// Meta is the persistent state of one partition besides its batches. It is
// written in the same Pebble batch as the records it describes.
type Meta struct {
	AppliedIndex uint64 // last Raft index applied
	NextOffset   int64  // offset the next record gets: the high watermark
	LogStart     int64  // first retained offset
	MaxTime      int64  // largest record timestamp so far (unix ns)
	// LastStable is the last stable offset: the first offset of the
	// oldest open transaction, or NextOffset if none is open, and never
	// below LogStart. Read-committed readers read below it. It is
	// derived from the stored transactions, not part of Meta's encoding.
	LastStable int64
}

const metaSize = 32

func (m Meta) encode() []byte { return m.appendTo(make([]byte, 0, metaSize)) }

func (m Meta) appendTo(b []byte) []byte {
	b = binary.LittleEndian.AppendUint64(b, m.AppliedIndex)
	b = binary.LittleEndian.AppendUint64(b, uint64(m.NextOffset))
	b = binary.LittleEndian.AppendUint64(b, uint64(m.LogStart))
	return binary.LittleEndian.AppendUint64(b, uint64(m.MaxTime))
}

func decodeMeta(b []byte) (Meta, error) {
	if len(b) != metaSize {
		return Meta{}, fmt.Errorf("%w: partition meta of %d bytes", ErrCorrupt, len(b))
	}
	m := Meta{
		AppliedIndex: binary.LittleEndian.Uint64(b[0:]),
		NextOffset:   int64(binary.LittleEndian.Uint64(b[8:])),
		LogStart:     int64(binary.LittleEndian.Uint64(b[16:])),
		MaxTime:      int64(binary.LittleEndian.Uint64(b[24:])),
	}
	m.LastStable = m.NextOffset // lowered by open transactions when loaded
	return m, nil
}

// partState is what the writer publishes after each write: the partition's
// Meta and where its keys are.
type partState struct {
	Meta
	slot byte // the key slot of the data, time and producer keys
	// stored is the sum of the stored batches' lengths, which size
	// retention bounds. Every replica stores the same batches, so it is
	// the same on every replica.
	stored int64
	// comp is the key compaction state; zero for a partition never
	// compacted.
	comp compaction
	// gen changes whenever slot does; readers compare it around opening
	// their iterators (see [Partition.openIters]).
	gen uint64
}

// emptyState is the state of a partition never written.
var emptyState = partState{Meta: Meta{MaxTime: math.MinInt64}}

// stateSize is the length of the meta key's value: the Meta, the slot and
// the stored bytes.
const stateSize = metaSize + 1 + 8

// encode is the meta key's value: the Meta, the slot, the stored bytes,
// then the compaction state if the partition was ever compacted. Stores
// written before size retention lack the stored bytes (33 bytes), and
// before slots the slot too (32 bytes); decodeState reads them all.
func (st *partState) encode() []byte {
	b := st.Meta.appendTo(make([]byte, 0, stateSize+st.comp.size()))
	b = append(b, st.slot)
	b = binary.LittleEndian.AppendUint64(b, uint64(st.stored))
	return st.comp.appendTo(b)
}

// decodeState decodes a meta key's value. known is false when the value
// predates the stored bytes, which the caller must then count.
func decodeState(b []byte) (st partState, known bool, err error) {
	if len(b) > stateSize {
		if st.comp, err = decodeCompaction(b[stateSize:]); err != nil {
			return partState{}, false, err
		}
		b = b[:stateSize]
	}
	switch len(b) {
	case stateSize:
		st.stored = int64(binary.LittleEndian.Uint64(b[metaSize+1:]))
		if st.stored < 0 {
			return partState{}, false, fmt.Errorf("%w: partition meta with %d stored bytes", ErrCorrupt, st.stored)
		}
		known = true
		fallthrough
	case metaSize + 1:
		st.slot = b[metaSize]
		b = b[:metaSize]
		if st.slot > 1 {
			return partState{}, false, fmt.Errorf("%w: partition meta names slot %d", ErrCorrupt, st.slot)
		}
	}
	st.Meta, err = decodeMeta(b)
	return st, known, err
}

// Partition is the stored log of one partition. [Partition.Apply],
// [Partition.Restore], [Partition.Delete] and [Partition.Snapshot] must be
// called from one goroutine at a time (the partition's state machine); the
// read methods and [Partition.Meta] are safe for concurrent use with them
// and with each other.
type Partition struct {
	s     *Store
	shard uint64
	// state is replaced, never modified, by the writer after each write,
	// so readers on other goroutines (dragonboat runs the state machine's
	// Lookup on its read path while Update applies) see one whole state.
	state atomic.Pointer[partState]
	// Owned by the writer goroutine.
	producers map[uint64]*producerState
	txns      map[uint64]openTxn // producer id -> its open transaction
	lru       producerLRU        // the ids of producers, by lastTime
	// clean caches the bytes below the clean end for CompactionDue.
	clean atomic.Pointer[cleanCache]
}

// Partition loads the stored state of a partition; a partition never
// written reads as empty.
func (s *Store) Partition(shard uint64) (*Partition, error) {
	p := &Partition{s: s, shard: shard}
	if err := p.load(); err != nil {
		return nil, err
	}
	return p, nil
}

func (p *Partition) load() error {
	st := emptyState
	producers := map[uint64]*producerState{}
	v, closer, err := p.s.db.Get(key(kindMeta, p.shard))
	switch {
	case errors.Is(err, pebble.ErrNotFound):
	case err != nil:
		return p.readErr(err, -1)
	default:
		var known bool
		st, known, err = decodeState(v)
		closer.Close()
		if err != nil {
			return err
		}
		if !known {
			if st.stored, err = p.countStored(st.slot); err != nil {
				return err
			}
		}
	}
	if old := p.state.Load(); old != nil {
		st.gen = old.gen + 1
	}
	pk := slotKind(kindProducer, st.slot)
	it, err := p.s.db.NewIter(&pebble.IterOptions{
		LowerBound: key(pk, p.shard),
		UpperBound: upper(pk, p.shard),
	})
	if err != nil {
		return p.readErr(err, -1)
	}
	defer it.Close()
	for it.First(); it.Valid(); it.Next() {
		k := it.Key()
		if len(k) != 17 {
			return fmt.Errorf("%w: producer key of %d bytes", ErrCorrupt, len(k))
		}
		ps, err := decodeProducerState(it.Value())
		if err != nil {
			return err
		}
		if ps.timeUnknown {
			if ps.lastTime, err = p.batchMaxTime(st.slot, ps.batches[len(ps.batches)-1].baseOffset); err != nil {
				return err
			}
			ps.timeUnknown = false
		}
		producers[binary.BigEndian.Uint64(k[9:])] = ps
	}
	if err := it.Error(); err != nil {
		return p.readErr(err, -1)
	}
	txns, err := p.loadTxns(st.slot)
	if err != nil {
		return err
	}
	pids := slices.SortedFunc(maps.Keys(producers), func(a, b uint64) int {
		return cmp.Or(cmp.Compare(producers[a].lastTime, producers[b].lastTime), cmp.Compare(a, b))
	})
	p.lru = producerLRU{}
	for _, pid := range pids {
		p.lru.touch(pid)
	}
	p.txns = txns
	st.LastStable = p.lastStable(st.Meta)
	p.state.Store(&st)
	p.producers = producers
	return nil
}

// countStored sums the lengths of the batches stored in slot: once, for a
// store written before the sum was kept.
func (p *Partition) countStored(slot byte) (int64, error) {
	dk := slotKind(kindData, slot)
	it, err := p.s.db.NewIter(&pebble.IterOptions{LowerBound: key(dk, p.shard), UpperBound: upper(dk, p.shard)})
	if err != nil {
		return 0, p.readErr(err, -1)
	}
	defer it.Close()
	var n int64
	for it.First(); it.Valid(); it.Next() {
		lv := it.LazyValue()
		n += int64(lv.Len())
	}
	return n, p.readErr(it.Error(), -1)
}

// StoredBytes is the sum of the stored batches' lengths as of the last
// write. Safe for concurrent use.
func (p *Partition) StoredBytes() int64 { return p.state.Load().stored }

// batchMaxTime returns the MaxTime of the batch stored at base in slot, or
// math.MinInt64 if there is none. It dates producer states stored before
// they carried their lastTime: the batch a producer remembers last is
// from its last write, and every replica holds the same batch, so every
// replica dates it alike (a little early: the log's clock may have been
// ahead of that batch's records).
func (p *Partition) batchMaxTime(slot byte, base int64) (int64, error) {
	v, closer, err := p.s.db.Get(key(slotKind(kindData, slot), p.shard, uint64(base)))
	switch {
	case errors.Is(err, pebble.ErrNotFound):
		return math.MinInt64, nil
	case err != nil:
		return 0, p.readErr(err, base)
	}
	defer closer.Close()
	h, err := ParseHeader(v)
	if err != nil {
		return 0, fmt.Errorf("shard %d: batch at %d: %w", p.shard, base, err)
	}
	return h.MaxTime, nil
}

// Meta returns the partition's state as of the last write (Apply, Restore
// or Delete). Safe for concurrent use.
func (p *Partition) Meta() Meta { return p.state.Load().Meta }

// iterSpan bounds an iterator over the partition's keys of one kind: all
// of them, or, if bounded, those whose suffix is below hi.
type iterSpan struct {
	kind    byte
	bounded bool
	hi      uint64
}

// openIters opens an iterator per span over the slot in use, appends them
// to its and returns them with that slot. The caller closes them.
//
// A restore switches slots under readers' feet; openIters makes sure all
// the iterators see one slot's complete contents. Restore stages the new
// contents in the other slot, then (1) publishes a state with the new slot
// and a new gen, then (2) commits the write that deletes the old slot. A
// reader (a) loads the state, (b) opens its iterators on that slot, (c)
// loads the state again, and retries if gen changed:
//
//   - (c) saw the same gen: (c) came before (1), so (b) came before (2),
//     and Pebble iterators read as of their creation: they see the old
//     slot before its deletion, whole.
//   - (c) saw another gen: the iterators may have been opened after (2) on
//     a deleted slot; the reader retries on the new slot, already complete
//     at (1).
//
// Comparing gen rather than slot rules out two restores passing between
// (a) and (c) and bringing the slot back.
func (p *Partition) openIters(its []*pebble.Iterator, spans ...iterSpan) ([]*pebble.Iterator, byte, error) {
	closeAll := func() {
		for _, it := range its {
			it.Close()
		}
		its = its[:0]
	}
	for {
		st := p.state.Load()
		for _, sp := range spans {
			k := slotKind(sp.kind, st.slot)
			o := &pebble.IterOptions{LowerBound: key(k, p.shard)}
			if sp.bounded {
				o.UpperBound = key(k, p.shard, sp.hi)
			} else {
				o.UpperBound = upper(k, p.shard)
			}
			it, err := p.s.db.NewIter(o)
			if err != nil {
				closeAll()
				return nil, 0, p.readErr(err, -1)
			}
			its = append(its, it)
		}
		if p.state.Load().gen == st.gen {
			return its, st.slot, nil
		}
		closeAll()
	}
}

// ReadBatches calls fn with each stored batch that may hold offsets in
// [from, hw), in offset order, until fn returns false or more than maxBytes
// were passed (the first batch is always passed, however large). b is only
// valid during the call. Batches are passed as stored; the caller verifies
// them (DecodeRecords checks the CRC). A damaged store file fails the read
// with [ErrCorrupt], naming the shard and the first offset not passed.
func (p *Partition) ReadBatches(from, hw int64, maxBytes int, fn func(b []byte) bool) error {
	if from >= hw {
		return nil
	}
	var buf [1]*pebble.Iterator
	its, slot, err := p.openIters(buf[:0], iterSpan{kind: kindData, bounded: true, hi: uint64(hw)})
	if err != nil {
		return err
	}
	defer its[0].Close()
	return p.readBatches(its[0], slot, from, maxBytes, fn)
}

// readBatches is ReadBatches over it, an iterator on the data keys of slot
// bounded by the high watermark.
func (p *Partition) readBatches(it *pebble.Iterator, slot byte, from int64, maxBytes int, fn func(b []byte) bool) error {
	from = max(from, 0)
	at := from // the first offset not yet passed to fn, for errors
	// The batch holding `from` is the last one whose base offset is <= from.
	if !it.SeekLT(key(slotKind(kindData, slot), p.shard, uint64(from)+1)) {
		it.First()
	}
	sent := 0
	for ; it.Valid(); it.Next() {
		v, err := it.ValueAndErr()
		if err != nil {
			return p.readErr(err, at)
		}
		if !fn(v) {
			break
		}
		at = nextOffset(it.Key(), v)
		sent += len(v)
		if sent >= maxBytes {
			break
		}
	}
	return p.readErr(it.Error(), at)
}

// nextOffset is the offset after the stored batch v at data key k, as far as
// its unverified header tells; it only locates errors.
func nextOffset(k, v []byte) int64 {
	base := int64(binary.BigEndian.Uint64(k[9:]))
	switch {
	case len(v) >= kafkaHeaderSize && v[16] == VersionKafka:
		return base + int64(binary.BigEndian.Uint32(v[23:])) + 1
	case len(v) < legacyHeaderSize:
		return base + 1
	}
	return base + int64(binary.LittleEndian.Uint32(v[20:]))
}

// readErr turns on-disk corruption met while reading the partition (a
// failed block checksum, a missing table) into [ErrCorrupt] naming the
// partition's shard and, when off >= 0, the offset the read had reached. Pebble's
// error stays in the chain; other errors pass unchanged.
func (p *Partition) readErr(err error, off int64) error {
	if err == nil || !pebble.IsCorruptionError(err) {
		return err
	}
	// Pebble joins its error with a carrier of the details it has already
	// handed to [logadapt.Pebble.DataCorruption], whose text is a
	// placeholder: keep the error proper.
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		if es := j.Unwrap(); len(es) > 0 && pebble.IsCorruptionError(es[0]) {
			err = es[0]
		}
	}
	if off < 0 {
		return fmt.Errorf("%w: shard %d: %w", ErrCorrupt, p.shard, err)
	}
	return fmt.Errorf("%w: shard %d at offset %d: %w", ErrCorrupt, p.shard, off, err)
}

// OffsetForTime returns the first offset whose record timestamp is at or
// after t (unix ns), or hw when no record is that late.
func (p *Partition) OffsetForTime(t, hw int64) (int64, error) {
	if hw <= 0 {
		return hw, nil
	}
	// The index and the batches are read from one slot (see openIters).
	var buf [2]*pebble.Iterator
	its, slot, err := p.openIters(buf[:0], iterSpan{kind: kindTime}, iterSpan{kind: kindData, bounded: true, hi: uint64(hw)})
	if err != nil {
		return 0, err
	}
	it, data := its[0], its[1]
	defer it.Close()
	defer data.Close()
	// The index holds the running maximum timestamp at the end of each batch,
	// so it is sorted by offset too: the first entry >= t is the first batch
	// that can hold a record at or after t.
	if !it.SeekGE(key(slotKind(kindTime, slot), p.shard, orderedTime(t))) {
		return hw, p.readErr(it.Error(), -1)
	}
	base := int64(binary.BigEndian.Uint64(it.Key()[17:]))
	if base >= hw {
		return hw, nil
	}
	found := hw
	var recs []Record
	var derr error
	// That batch holds a record at or after t, unless key compaction
	// removed it: then a later batch does, or none.
	err = p.readBatches(data, slot, base, math.MaxInt, func(b []byte) bool {
		_, recs, derr = DecodeRecords(b, base, recs[:0])
		if derr != nil {
			return false
		}
		for _, r := range recs {
			if r.Time >= t {
				found = r.Offset
				return false
			}
		}
		return true
	})
	if err == nil {
		err = derr
	}
	if err != nil {
		return 0, err
	}
	return found, nil
}

// Delete removes every key of the partition.
func (p *Partition) Delete() error {
	if err := p.s.DeletePartition(p.shard); err != nil {
		return err
	}
	st := emptyState
	st.gen = p.state.Load().gen + 1
	p.state.Store(&st)
	p.producers = map[uint64]*producerState{}
	p.txns = map[uint64]openTxn{}
	p.lru = producerLRU{}
	return nil
}

// DeletePartition deletes every key of a partition without reading any:
// it works on a partition whose data is damaged, which
// [Store.Partition] refuses to load.
func (s *Store) DeletePartition(shard uint64) error {
	b := s.db.NewBatch()
	defer b.Close()
	for _, slot := range []byte{0, 1} {
		for _, k := range slotKinds {
			sk := slotKind(k, slot)
			if err := b.DeleteRange(key(sk, shard), upper(sk, shard), nil); err != nil {
				return err
			}
		}
	}
	if err := b.Delete(key(kindMeta, shard), nil); err != nil {
		return err
	}
	if err := b.Commit(pebble.NoSync); err != nil {
		return err
	}
	return s.db.Flush()
}

// clearSlot adds to b the deletion of the partition's keys in slot.
func (p *Partition) clearSlot(b *pebble.Batch, slot byte) error {
	for _, k := range slotKinds {
		sk := slotKind(k, slot)
		if err := b.DeleteRange(key(sk, p.shard), upper(sk, p.shard), nil); err != nil {
			return err
		}
	}
	return nil
}
