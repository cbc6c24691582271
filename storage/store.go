package storage

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sync/atomic"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/replog/replog/internal/logadapt"
)

// Key layout. Every key starts with a one-byte kind and the 8-byte big-endian
// partition (Raft shard) id, so one Pebble instance holds every partition of
// a node and a partition's keys form four contiguous ranges.
//
//	'd' shard baseOffset          -> encoded record batch
//	't' shard runningMaxTime base -> (empty) time index, one entry per batch
//	'p' shard producerID          -> idempotent producer state
//	'm' shard                     -> partition meta (applied index, offsets)
const (
	kindData     byte = 'd'
	kindTime     byte = 't'
	kindProducer byte = 'p'
	kindMeta     byte = 'm'
)

var kinds = [...]byte{kindData, kindTime, kindProducer, kindMeta}

// StoreOptions configures [OpenStore].
type StoreOptions struct {
	// InMemory keeps everything in memory (Pebble's in-memory file system).
	InMemory bool
	// FS, when set, overrides the file system (tests use it to simulate
	// crashes). InMemory is ignored when FS is set.
	FS vfs.FS
	// Logger receives Pebble's messages; nil discards them.
	Logger *slog.Logger
}

// Store is one Pebble instance holding the partitions hosted by one node.
// It is safe for concurrent use; each [Partition] it returns has a single
// writer (its state machine) and any number of readers.
type Store struct {
	db *pebble.DB
}

// OpenStore opens (or creates) the store in dir.
func OpenStore(dir string, o StoreOptions) (*Store, error) {
	lg := logadapt.Pebble{L: o.Logger}
	opts := &pebble.Options{
		Logger: lg,
		// Damaged tables met while reading come back to the reader as
		// errors (see [Partition.ReadBatches]) rather than through
		// Pebble's default handler, which calls Logger.Fatalf: a bad file
		// must not take the host process down.
		EventListener: lg.EventListener(),
		// The log is append-only: large memtables and a deep L0 let most
		// data be written once or twice rather than rewritten level by level
		// (compaction was the largest CPU cost of a 3-replica profile).
		MemTableSize:                32 << 20,
		MemTableStopWritesThreshold: 4,
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
	return &Store{db: db}, nil
}

// Close flushes what was applied (so a clean restart replays nothing) and
// closes the store. Partitions must not be used afterwards.
func (s *Store) Close() error {
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
}

const metaSize = 32

func (m Meta) encode() []byte {
	b := make([]byte, metaSize)
	binary.LittleEndian.PutUint64(b[0:], m.AppliedIndex)
	binary.LittleEndian.PutUint64(b[8:], uint64(m.NextOffset))
	binary.LittleEndian.PutUint64(b[16:], uint64(m.LogStart))
	binary.LittleEndian.PutUint64(b[24:], uint64(m.MaxTime))
	return b
}

func decodeMeta(b []byte) (Meta, error) {
	if len(b) != metaSize {
		return Meta{}, fmt.Errorf("%w: partition meta of %d bytes", ErrCorrupt, len(b))
	}
	return Meta{
		AppliedIndex: binary.LittleEndian.Uint64(b[0:]),
		NextOffset:   int64(binary.LittleEndian.Uint64(b[8:])),
		LogStart:     int64(binary.LittleEndian.Uint64(b[16:])),
		MaxTime:      int64(binary.LittleEndian.Uint64(b[24:])),
	}, nil
}

// Partition is the stored log of one partition. [Partition.Apply],
// [Partition.Restore], [Partition.Delete] and [Partition.Snapshot] must be
// called from one goroutine at a time (the partition's state machine); the
// read methods and [Partition.Meta] are safe for concurrent use with them
// and with each other.
type Partition struct {
	s     *Store
	shard uint64
	// meta is replaced, never modified, by the writer after each write, so
	// readers on other goroutines (dragonboat runs the state machine's
	// Lookup on its read path while Update applies) see one whole state.
	meta atomic.Pointer[Meta]
	// Owned by the writer goroutine.
	producers map[uint64]*producerState
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
	m := Meta{MaxTime: math.MinInt64}
	producers := map[uint64]*producerState{}
	v, closer, err := p.s.db.Get(key(kindMeta, p.shard))
	switch {
	case errors.Is(err, pebble.ErrNotFound):
	case err != nil:
		return p.readErr(err, -1)
	default:
		m, err = decodeMeta(v)
		closer.Close()
		if err != nil {
			return err
		}
	}
	it, err := p.s.db.NewIter(&pebble.IterOptions{
		LowerBound: key(kindProducer, p.shard),
		UpperBound: upper(kindProducer, p.shard),
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
		st, err := decodeProducerState(it.Value())
		if err != nil {
			return err
		}
		producers[binary.BigEndian.Uint64(k[9:])] = st
	}
	if err := it.Error(); err != nil {
		return p.readErr(err, -1)
	}
	p.meta.Store(&m)
	p.producers = producers
	return nil
}

// Meta returns the partition's state as of the last write (Apply, Restore
// or Delete). Safe for concurrent use.
func (p *Partition) Meta() Meta { return *p.meta.Load() }

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
	from = max(from, 0)
	at := from // the first offset not yet passed to fn, for errors
	it, err := p.s.db.NewIter(&pebble.IterOptions{
		LowerBound: key(kindData, p.shard),
		UpperBound: key(kindData, p.shard, uint64(hw)),
	})
	if err != nil {
		return p.readErr(err, at)
	}
	defer it.Close()
	// The batch holding `from` is the last one whose base offset is <= from.
	if !it.SeekLT(key(kindData, p.shard, uint64(from)+1)) {
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
	if len(v) < HeaderSize {
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
	it, err := p.s.db.NewIter(&pebble.IterOptions{
		LowerBound: key(kindTime, p.shard),
		UpperBound: upper(kindTime, p.shard),
	})
	if err != nil {
		return 0, p.readErr(err, -1)
	}
	defer it.Close()
	// The index holds the running maximum timestamp at the end of each batch,
	// so it is sorted by offset too: the first entry >= t is the first batch
	// that can hold a record at or after t.
	if !it.SeekGE(key(kindTime, p.shard, orderedTime(t))) {
		return hw, p.readErr(it.Error(), -1)
	}
	base := int64(binary.BigEndian.Uint64(it.Key()[17:]))
	found := hw
	var recs []Record
	var derr error
	err = p.ReadBatches(base, hw, 1, func(b []byte) bool {
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
	if found == hw && len(recs) > 0 {
		// Every record of that batch is earlier than t although the running
		// maximum is not (timestamps are not monotonic): the answer is the
		// next batch.
		found = recs[len(recs)-1].Offset + 1
	}
	return found, nil
}

// Delete removes every key of the partition.
func (p *Partition) Delete() error {
	b := p.s.db.NewBatch()
	defer b.Close()
	for _, k := range kinds {
		if err := b.DeleteRange(key(k, p.shard), upper(k, p.shard), nil); err != nil {
			return err
		}
	}
	if err := b.Commit(pebble.NoSync); err != nil {
		return err
	}
	if err := p.s.db.Flush(); err != nil {
		return err
	}
	p.meta.Store(&Meta{MaxTime: math.MinInt64})
	p.producers = map[uint64]*producerState{}
	return nil
}
