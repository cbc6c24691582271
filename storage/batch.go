package storage

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math"
	"math/bits"
	"slices"
	"sync"
	"time"
	"unsafe"
)

// A record batch is the unit that is proposed, replicated, stored and fetched.
// Batches are written in Kafka's record batch format, magic v2 (see
// kafkabatch.go), so that the Kafka listener stores a client's batch as it
// came and serves it back without decoding it. Data directories written
// before hold batches in replog's own legacy format, version 1, which every
// reader keeps accepting (and key compaction rewrites in that format). Byte
// 16 is the version in both layouts: the legacy version 1 or Kafka's magic
// 2, and every decoder dispatches on it, so a partition may hold both.
//
// The legacy encoding (version 1), all header integers little-endian:
//
//	[0:8]   baseOffset    int64   assigned at apply time; not covered by the CRC
//	[8:12]  length        uint32  whole batch, header included
//	[12:16] crc           uint32  CRC-32C (Castagnoli) of bytes [16:length]
//	[16]    version       uint8   1
//	[17]    compression   uint8   a Compression
//	[18:20] flags         uint16  FlagCompacted, or 0
//	[20:24] count         uint32  offsets covered, at least 1: the records
//	                              (one per offset, unless FlagCompacted)
//	[24:32] firstTime     int64   unix ns of the first record
//	[32:40] maxTime       int64   largest record time, unix ns
//	[40:48] producerID    uint64  0 = not idempotent
//	[48:52] producerEpoch uint32
//	[52:56] baseSequence  int32   sequence of the first record, -1 if not idempotent
//	[56:60] rawLength     uint32  length of the uncompressed records section
//	[60:]   records section, compressed with compression
//
// The uncompressed records section holds count records, each:
//
//	uvarint recordLength   bytes of the rest of the record
//	varint  timestampDelta ns relative to firstTime
//	uvarint offsetDelta    the record's offset minus baseOffset: 0, 1, 2...
//	                       or, with FlagCompacted, strictly increasing
//	                       and below count
//	varint  keyLen (-1 = nil), key
//	varint  valueLen (-1 = nil, -2 = tombstone), value
//	uvarint headerCount, then per header:
//	        uvarint keyLen, key, varint valueLen (-1 = nil), value
//
// A tombstone is Kafka's null value: the record says its key was deleted,
// and has no value bytes. It is not written as -1, Kafka's null, because -1
// has always meant a nil value here, and producers wrote one for every nil
// []byte: reading those as deletes would alter acknowledged records (and let
// key compaction drop keys). So -1 keeps meaning a nil value, -2 a tombstone,
// and a batch without tombstones is encoded exactly as before.
//
// Key compaction removes records from a stored batch but never moves one:
// the rewritten batch keeps its base offset, its count (the offsets it
// covers, so that the next batch still starts at baseOffset+count) and its
// records' offset deltas, and sets FlagCompacted: it then holds records for
// some of its offsets, possibly none. Producers never send such a batch.

// ErrCorrupt is wrapped by every error that reports an undecodable batch, a
// damaged store file or an invalid snapshot.
var ErrCorrupt = errors.New("replog: corrupt record batch")

// ErrBatchTooLarge is returned by [BatchBuilder.Build] when the records do
// not fit in one batch ([MaxRawBytes] uncompressed, [MaxBatchBytes] encoded).
var ErrBatchTooLarge = errors.New("replog: record batch too large")

const (
	// legacyHeaderSize is the size of the legacy fixed batch header.
	legacyHeaderSize = 60
	// MaxBatchBytes caps the size of an encoded batch.
	MaxBatchBytes = 16 << 20
	// MaxRawBytes caps the uncompressed records section of a batch, so that
	// a small batch cannot claim to decompress to an unbounded size.
	MaxRawBytes = 64 << 20
	// FlagCompacted marks a batch rewritten by key compaction: Count is
	// the offsets it covers, and it holds records for some of them. A
	// legacy batch carries it in its flags; a Kafka batch has it when its
	// record count is below its offsets.
	FlagCompacted uint16 = 1
)

// minRecordSize is the smallest possible encoded record: six one-byte
// varints. It bounds count by rawLength, so that no decoder sizes anything
// by a count the bytes cannot back.
const minRecordSize = 6

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// RecordHeader is a key-value pair attached to a [Record].
type RecordHeader struct {
	Key   string
	Value []byte // nil and empty are distinct
}

// Record is one entry in the log.
type Record struct {
	// Offset is the absolute offset: filled by [DecodeRecords], ignored by
	// [BatchBuilder.Add].
	Offset int64
	// Time is the record's timestamp in unix nanoseconds. A Kafka batch
	// (every batch written now) keeps milliseconds: Add rounds Time down
	// to a whole millisecond, and decoded times are whole milliseconds.
	// Legacy batches keep nanoseconds.
	Time int64
	// Key and Value may each be nil, which is preserved and distinct from
	// empty. (Kafka clients see a nil Value as empty: Kafka's null value
	// is a tombstone.)
	Key   []byte
	Value []byte
	// Tombstone marks a record whose value is null (Kafka's tombstone):
	// Value is ignored by [BatchBuilder.Add] and nil when decoded. It is
	// distinct from a nil or empty Value.
	Tombstone bool
	Headers   []RecordHeader
}

// BatchHeader is the decoded fixed header of a batch, in either format. Its
// times are unix nanoseconds, and its producer fields follow the legacy
// format's conventions, whatever the batch's format.
type BatchHeader struct {
	BaseOffset int64
	Length     uint32 // the whole batch
	CRC        uint32
	// Version is VersionKafka or VersionLegacy.
	Version     uint8
	Compression Compression
	Flags       uint16
	// Count is the number of offsets the batch covers: its records,
	// unless Flags has FlagCompacted.
	Count uint32
	// Records is the number of records in the batch, or -1 for a legacy
	// batch that key compaction rewrote (whose header does not say).
	Records   int
	FirstTime int64
	MaxTime   int64
	// LogAppendTime says that every record's time is MaxTime, the time
	// the batch was received (a Kafka batch's timestamp type).
	LogAppendTime bool
	// Transactional marks a batch written inside a Kafka transaction;
	// Control a transaction marker (see [TxnMarkerCommand]), which is
	// transactional too. Legacy batches are neither.
	Transactional bool
	Control       bool
	// ProducerID 0 means not idempotent; BaseSequence is then -1 (and for
	// a control batch).
	ProducerID    uint64
	ProducerEpoch uint32
	BaseSequence  int32
	// RawLength is the length of the uncompressed records section; 0
	// for a compressed Kafka batch, which does not say.
	RawLength uint32
}

// LastOffset returns the last offset the batch covers: that of its last
// record, unless key compaction removed it.
func (h BatchHeader) LastOffset() int64 { return h.BaseOffset + int64(h.Count) - 1 }

// BatchBuilder accumulates records and encodes them as one batch.
// The zero value is ready to use. It is not safe for concurrent use, and is
// reusable after [BatchBuilder.Reset].
type BatchBuilder struct {
	// legacy selects the legacy format over Kafka's, for key compaction
	// of a legacy batch. It must not change while the builder holds
	// records.
	legacy bool
	// transactional marks the batches built as part of a transaction
	// (Kafka's attribute bit 4); see [BatchBuilder.SetTransactional].
	transactional bool
	raw           []byte // uncompressed records section
	scratch       []byte // compression output, reused across Build calls
	count         int
	firstTime     int64
	maxTime       int64
}

// Add appends r to the batch. r.Offset is ignored; r's slices are copied, so
// the caller may reuse them once Add returns.
func (b *BatchBuilder) Add(r Record) { b.addAt(r, uint64(b.count)) }

// addAt appends r with offset delta offDelta: the next index for a
// producer's batch, the original delta for a batch key compaction
// rewrites.
func (b *BatchBuilder) addAt(r Record, offDelta uint64) {
	if !b.legacy {
		r.Time = millis(r.Time) * int64(time.Millisecond)
	}
	if b.count == 0 {
		b.firstTime, b.maxTime = r.Time, r.Time
	}
	b.maxTime = max(b.maxTime, r.Time)
	if !b.legacy {
		b.raw = appendKafkaRecord(b.raw, r, r.Time/int64(time.Millisecond)-b.firstTime/int64(time.Millisecond), offDelta)
		b.count++
		return
	}
	// Wrapping is fine: the decoder adds the delta back to firstTime with
	// the same two's-complement arithmetic.
	tsDelta := r.Time - b.firstTime

	b.raw = binary.AppendUvarint(b.raw, uint64(recordBodySize(r, tsDelta, offDelta)))
	b.raw = binary.AppendVarint(b.raw, tsDelta)
	b.raw = binary.AppendUvarint(b.raw, offDelta)
	b.raw = appendBytes(b.raw, r.Key)
	b.raw = appendValue(b.raw, r)
	b.raw = binary.AppendUvarint(b.raw, uint64(len(r.Headers)))
	for _, h := range r.Headers {
		b.raw = binary.AppendUvarint(b.raw, uint64(len(h.Key)))
		b.raw = append(b.raw, h.Key...)
		b.raw = appendBytes(b.raw, h.Value)
	}
	b.count++
}

// Count returns the number of records added since the last Reset.
func (b *BatchBuilder) Count() int { return b.count }

// RawSize returns the size of the uncompressed records section so far.
func (b *BatchBuilder) RawSize() int { return len(b.raw) }

// Reset empties the builder, keeping its buffers.
func (b *BatchBuilder) Reset() {
	b.raw = b.raw[:0]
	b.count = 0
	b.firstTime, b.maxTime = 0, 0
}

// SetLegacy empties the builder, as Reset does, and makes it write legacy
// batches if legacy is true, Kafka batches (the default) otherwise. Every
// reader accepts both. A producer whose identity a Kafka batch cannot carry
// ([KafkaFits]) writes legacy batches.
func (b *BatchBuilder) SetLegacy(legacy bool) {
	b.Reset()
	b.legacy = legacy
}

// KafkaFits reports whether a Kafka batch can carry producerID and epoch
// (replog's are 64 and 32 bits wide, Kafka's an int64 and an int16): a
// producer that started more than 32767 epochs cannot.
func KafkaFits(producerID uint64, epoch uint32) bool {
	return producerID <= math.MaxInt64 && epoch <= math.MaxInt16
}

// RecordSize returns an upper bound on the bytes r adds to the records
// section, in either format. It is exact except that the record length,
// timestamp and offset deltas, which depend on the record's place in a
// batch, are counted at their widest, so RawSize()+RecordSize(r) never
// underestimates.
func RecordSize(r Record) int {
	legacy := binary.MaxVarintLen64 + 5 + recordFieldsSize(r)
	legacy += uvarintLen(uint64(legacy))
	// Attributes, and a Kafka offset delta takes up to 5 bytes too.
	kafka := 1 + binary.MaxVarintLen64 + 5 + kafkaRecordFieldsSize(r)
	kafka += varintLen(int64(kafka))
	return max(legacy, kafka)
}

// Build encodes the records added so far as a batch with base offset 0
// compressed with c. The result is newly allocated and owned by the caller;
// the builder is left as is.
//
// A producerID of 0 means the batch is not idempotent: epoch and baseSeq are
// then ignored and written as 0 and -1.
//
// Build fails if no record was added, c is not valid, or the batch exceeds
// [MaxRawBytes] or [MaxBatchBytes] ([ErrBatchTooLarge]).
func (b *BatchBuilder) Build(c Compression, producerID uint64, epoch uint32, baseSeq int32) ([]byte, error) {
	return b.BuildWithPrefix(0, c, producerID, epoch, baseSeq)
}

// BuildWithPrefix is [BatchBuilder.Build] with prefix zero bytes reserved in
// front of the batch, for a command header, so the batch need not be copied
// into a command.
func (b *BatchBuilder) BuildWithPrefix(prefix int, c Compression, producerID uint64, epoch uint32, baseSeq int32) ([]byte, error) {
	if b.count == 0 {
		return nil, errors.New("replog: empty record batch")
	}
	if producerID == 0 {
		epoch, baseSeq = 0, -1
	}
	if b.transactional && (producerID == 0 || b.legacy) {
		return nil, errors.New("replog: a transactional batch needs a producer id and Kafka's format")
	}
	return b.build(prefix, c, batchIdentity{count: uint32(b.count), producerID: producerID, epoch: epoch, baseSeq: baseSeq, transactional: b.transactional})
}

// SetTransactional makes the batches built from now on transactional
// (Kafka's attribute bit 4), or not. Such a batch is proposed in a
// [CmdAppendTxn] command, and needs a producer id and Kafka's format.
func (b *BatchBuilder) SetTransactional(txn bool) { b.transactional = txn }

// batchIdentity is what a batch's header says besides its records: what
// key compaction keeps of the batch it rewrites.
type batchIdentity struct {
	flags         uint16 // legacy batches only
	count         uint32 // offsets covered
	logAppendTime bool   // Kafka batches only
	transactional bool   // Kafka batches only
	producerID    uint64
	epoch         uint32
	baseSeq       int32
	// firstTime and maxTime are used when there is no record.
	firstTime, maxTime int64
}

// build encodes the records added so far under header fields id. With no
// record (a compacted batch that lost all of its records) the records
// section is empty and uncompressed.
func (b *BatchBuilder) build(prefix int, c Compression, id batchIdentity) ([]byte, error) {
	if !c.Valid() {
		return nil, fmt.Errorf("replog: invalid compression %d", uint8(c))
	}
	if len(b.raw) > MaxRawBytes {
		return nil, fmt.Errorf("%w: %d bytes of records, the limit is %d", ErrBatchTooLarge, len(b.raw), MaxRawBytes)
	}
	firstTime, maxTime := b.firstTime, b.maxTime
	if b.count == 0 {
		c, firstTime, maxTime = CompressionNone, id.firstTime, id.maxTime
	}

	records := b.raw
	if c != CompressionNone {
		var err error
		if !b.legacy {
			b.scratch, err = appendCompressedKafka(b.scratch[:0], c, b.raw)
		} else {
			b.scratch, err = appendCompressed(b.scratch[:0], c, b.raw)
		}
		if err != nil {
			return nil, err
		}
		records = b.scratch
	}
	// Compress into scratch and copy, rather than compress into the result,
	// so that the result is exactly as large as the batch: callers keep
	// batches queued, and a compressed batch is often far smaller than the
	// bound a codec needs up front.
	if !b.legacy {
		return b.buildKafka(prefix, c, id, records, firstTime, maxTime)
	}
	n := legacyHeaderSize + len(records)
	if n > MaxBatchBytes {
		return nil, fmt.Errorf("%w: %d bytes encoded, the limit is %d", ErrBatchTooLarge, n, MaxBatchBytes)
	}
	buf := make([]byte, prefix+n)
	out := buf[prefix:]
	le := binary.LittleEndian
	le.PutUint32(out[8:], uint32(n))
	out[16] = VersionLegacy
	out[17] = byte(c)
	le.PutUint16(out[18:], id.flags)
	le.PutUint32(out[20:], id.count)
	le.PutUint64(out[24:], uint64(firstTime))
	le.PutUint64(out[32:], uint64(maxTime))
	le.PutUint64(out[40:], id.producerID)
	le.PutUint32(out[48:], id.epoch)
	le.PutUint32(out[52:], uint32(id.baseSeq))
	le.PutUint32(out[56:], uint32(len(b.raw)))
	copy(out[legacyHeaderSize:], records)
	le.PutUint32(out[12:], crc32.Checksum(out[16:], castagnoli))
	return buf, nil
}

// recordFieldsSize is the size of a record's key, value and headers.
func recordFieldsSize(r Record) int {
	n := bytesSize(r.Key) + valueSize(r) + uvarintLen(uint64(len(r.Headers)))
	for _, h := range r.Headers {
		n += uvarintLen(uint64(len(h.Key))) + len(h.Key) + bytesSize(h.Value)
	}
	return n
}

// recordBodySize is the size of a record after its length prefix.
func recordBodySize(r Record, tsDelta int64, offDelta uint64) int {
	return varintLen(tsDelta) + uvarintLen(offDelta) + recordFieldsSize(r)
}

func appendBytes(dst, p []byte) []byte {
	if p == nil {
		return binary.AppendVarint(dst, -1)
	}
	dst = binary.AppendVarint(dst, int64(len(p)))
	return append(dst, p...)
}

// tombstoneLen is the value length that marks a tombstone.
const tombstoneLen = -2

// appendValue appends r's value field: r.Value, or the tombstone mark.
func appendValue(dst []byte, r Record) []byte {
	if r.Tombstone {
		return binary.AppendVarint(dst, tombstoneLen)
	}
	return appendBytes(dst, r.Value)
}

func valueSize(r Record) int {
	if r.Tombstone {
		return 1
	}
	return bytesSize(r.Value)
}

func bytesSize(p []byte) int {
	if p == nil {
		return 1
	}
	return varintLen(int64(len(p))) + len(p)
}

func uvarintLen(x uint64) int { return (bits.Len64(x|1) + 6) / 7 }

func varintLen(x int64) int { return uvarintLen(uint64(x<<1) ^ uint64(x>>63)) }

func corruptf(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrCorrupt}, args...)...)
}

// ParseHeader decodes and validates the fixed header of the single batch b,
// in either format: its length field must agree with len(b), and the CRC
// must match. It does not decompress or look at the records.
func ParseHeader(b []byte) (BatchHeader, error) {
	if len(b) > MaxBatchBytes {
		return BatchHeader{}, corruptf("%d bytes, larger than the %d-byte limit", len(b), MaxBatchBytes)
	}
	if len(b) > 16 && b[16] == VersionKafka {
		return parseKafkaHeader(b)
	}
	if len(b) < legacyHeaderSize {
		return BatchHeader{}, corruptf("%d bytes, shorter than the %d-byte header", len(b), legacyHeaderSize)
	}
	le := binary.LittleEndian
	h := BatchHeader{
		BaseOffset:    int64(le.Uint64(b[0:])),
		Length:        le.Uint32(b[8:]),
		CRC:           le.Uint32(b[12:]),
		Version:       b[16],
		Compression:   Compression(b[17]),
		Flags:         le.Uint16(b[18:]),
		Count:         le.Uint32(b[20:]),
		FirstTime:     int64(le.Uint64(b[24:])),
		MaxTime:       int64(le.Uint64(b[32:])),
		ProducerID:    le.Uint64(b[40:]),
		ProducerEpoch: le.Uint32(b[48:]),
		BaseSequence:  int32(le.Uint32(b[52:])),
		RawLength:     le.Uint32(b[56:]),
	}
	switch {
	case int(h.Length) != len(b):
		return BatchHeader{}, corruptf("length field is %d, batch is %d bytes", h.Length, len(b))
	case h.Version != VersionLegacy:
		return BatchHeader{}, corruptf("unknown version %d", h.Version)
	case h.Flags&^FlagCompacted != 0:
		return BatchHeader{}, corruptf("reserved flags %#x set", h.Flags)
	case !h.Compression.Valid():
		return BatchHeader{}, corruptf("unknown compression %d", uint8(h.Compression))
	case h.Count == 0:
		return BatchHeader{}, corruptf("no records")
	case h.RawLength > MaxRawBytes:
		return BatchHeader{}, corruptf("records section of %d bytes, larger than the %d-byte limit", h.RawLength, MaxRawBytes)
	case h.Flags&FlagCompacted == 0 && uint64(h.Count)*minRecordSize > uint64(h.RawLength):
		return BatchHeader{}, corruptf("%d records cannot fit in %d bytes", h.Count, h.RawLength)
	case h.Compression == CompressionNone && int(h.RawLength) != len(b)-legacyHeaderSize:
		return BatchHeader{}, corruptf("uncompressed records section is %d bytes, header says %d", len(b)-legacyHeaderSize, h.RawLength)
	}
	if crc := crc32.Checksum(b[16:], castagnoli); crc != h.CRC {
		return BatchHeader{}, corruptf("crc mismatch: computed %#08x, header says %#08x", crc, h.CRC)
	}
	h.Records = int(h.Count)
	if h.Flags&FlagCompacted != 0 {
		h.Records = -1
	}
	return h, nil
}

// SetBaseOffset sets the base offset of batch b in place, and for a Kafka
// batch its partition leader epoch to -1 (replog has none to give). The CRC
// covers neither, so b stays valid. b must have passed [ParseHeader].
func SetBaseOffset(b []byte, off int64) {
	if b[16] == VersionKafka {
		binary.BigEndian.PutUint64(b[0:8], uint64(off))
		binary.BigEndian.PutUint32(b[12:16], math.MaxUint32)
		return
	}
	binary.LittleEndian.PutUint64(b[0:8], uint64(off))
}

// rawBuffers caches decompression buffers for Validate, which lets none of
// the decoded bytes escape, and for DecodeRecords, which copies them out.
var rawBuffers sync.Pool // *[]byte

// maxPooledRaw keeps buffers for unusually large batches out of the pool.
const maxPooledRaw = 4 << 20

// Validate checks batch b fully: [ParseHeader], then decompression (to
// exactly RawLength bytes for a legacy batch, to at most [MaxRawBytes] for
// a Kafka batch) and the decoding of every record, with nothing left over:
// as many records as the header says, offset deltas 0, 1, 2..., every
// length within its record, and the latest record at MaxTime.
func Validate(b []byte) (BatchHeader, error) {
	h, _, err := Inspect(b)
	return h, err
}

// BatchStats is what [Inspect] counts in a batch.
type BatchStats struct {
	Records int
	// PayloadBytes counts the records' keys, values, header keys and
	// header values.
	PayloadBytes int
	// Keyless counts the records with a nil key, and KeylessTombstones
	// the tombstones among them.
	Keyless           int
	KeylessTombstones int
}

// Inspect is [Validate], and also counts what b holds.
func Inspect(b []byte) (BatchHeader, BatchStats, error) {
	h, err := ParseHeader(b)
	if err != nil {
		return BatchHeader{}, BatchStats{}, err
	}
	st, err := validateRecords(b, h)
	if err != nil {
		return BatchHeader{}, BatchStats{}, err
	}
	return h, BatchStats{Records: st.records, PayloadBytes: st.payload, Keyless: st.keyless, KeylessTombstones: st.keylessTombstones}, nil
}

// validateRecords is the part of [Validate] after ParseHeader: b's records
// agree with h, the header ParseHeader returned for b. A batch that passes
// ParseHeader but not this was built wrongly rather than damaged (the CRC
// holds).
func validateRecords(b []byte, h BatchHeader) (scanStats, error) {
	if h.Compression == CompressionNone {
		return scan(b[headerSize(h):], h, h.BaseOffset)
	}
	bp := pooledRaw()
	defer putRaw(bp)
	var st scanStats
	var err error
	if h.Version == VersionKafka {
		var raw []byte
		if raw, err = decompressKafka((*bp)[:0], h.Compression, b[kafkaHeaderSize:]); err == nil {
			*bp = raw
			st, err = scanKafkaRecords(raw, h, h.BaseOffset)
		}
	} else {
		if cap(*bp) < int(h.RawLength) {
			*bp = make([]byte, h.RawLength)
		}
		raw := (*bp)[:h.RawLength]
		if err = decompressInto(raw, h.Compression, b[legacyHeaderSize:]); err == nil {
			st, err = scanRecords(raw, h, h.BaseOffset)
		}
	}
	return st, err
}

// pooledRaw returns a buffer from rawBuffers, to give back with putRaw.
func pooledRaw() *[]byte {
	bp, _ := rawBuffers.Get().(*[]byte)
	if bp == nil {
		bp = new([]byte)
	}
	return bp
}

// putRaw gives bp back to rawBuffers, unless it grew unusually large.
func putRaw(bp *[]byte) {
	if cap(*bp) <= maxPooledRaw {
		rawBuffers.Put(bp)
	}
}

// headerSize is the size of the fixed header of a batch whose header is h.
func headerSize(h BatchHeader) int {
	if h.Version == VersionKafka {
		return kafkaHeaderSize
	}
	return legacyHeaderSize
}

// scan is scanRecords or scanKafkaRecords, by h's format.
func scan(raw []byte, h BatchHeader, minOffset int64) (scanStats, error) {
	if h.Version == VersionKafka {
		return scanKafkaRecords(raw, h, minOffset)
	}
	return scanRecords(raw, h, minOffset)
}

// DecodeRecords validates batch b as [Validate] does and appends its records
// with Offset >= minOffset to dst.
//
// The Key, Value and header Value slices of the appended records alias
// memory that is not copied per record: b itself for an uncompressed batch,
// and a buffer allocated by this call otherwise. The caller must therefore
// not modify b while it uses the records (copy them first if b is, say, a
// reused read buffer). The slices are capped at their length, so appending
// to one never overwrites another. Header keys never alias b.
func DecodeRecords(b []byte, minOffset int64, dst []Record) (BatchHeader, []Record, error) {
	h, err := ParseHeader(b)
	if err != nil {
		return BatchHeader{}, dst, err
	}
	raw := b[headerSize(h):]
	switch {
	case h.Compression == CompressionNone:
	case h.Version == VersionKafka:
		// The size is known only once decompressed: decompress into a
		// pooled buffer, which has grown to fit batches before, and copy
		// to one of the exact size, which the records then alias.
		bp := pooledRaw()
		out, err := decompressKafka((*bp)[:0], h.Compression, raw)
		if err == nil {
			raw = slices.Clone(out)
			*bp = out
		}
		putRaw(bp)
		if err != nil {
			return BatchHeader{}, dst, err
		}
	default:
		raw = make([]byte, h.RawLength)
		if err := decompressInto(raw, h.Compression, b[legacyHeaderSize:]); err != nil {
			return BatchHeader{}, dst, err
		}
	}
	st, err := scan(raw, h, minOffset)
	if err != nil {
		return BatchHeader{}, dst, err
	}
	return h, fillRecords(raw, h, minOffset, st, dst), nil
}

// scanStats is what fillRecords needs to allocate up front for the records
// at or past minOffset, and what [Inspect] reports of all of them.
type scanStats struct {
	records  int // records in the batch
	skip     int // records below minOffset
	headers  int
	keyBytes int
	// payload counts keys, values and headers; keyless the records with
	// a nil key, and keylessTombstones the tombstones among them.
	payload           int
	keyless           int
	keylessTombstones int
}

// count counts rec, a record of the batch, in st.
func (st *scanStats) count(rec recordView) {
	st.records++
	st.payload += len(rec.key) + len(rec.value)
	if rec.key == nil {
		st.keyless++
		if rec.tombstone {
			st.keylessTombstones++
		}
	}
}

// scanRecords checks that raw holds well-formed records that agree with h
// (exactly h.Count with offset deltas 0, 1, 2..., or, with FlagCompacted,
// any number with strictly increasing deltas below h.Count), the first at
// h.FirstTime and the latest at h.MaxTime, and counts what decoding those
// at or past minOffset will need. It does not allocate.
func scanRecords(raw []byte, h BatchHeader, minOffset int64) (scanStats, error) {
	var st scanStats
	p := raw
	maxTime := h.FirstTime
	compacted := h.Flags&FlagCompacted != 0
	next := uint64(0) // the smallest offset delta the next record may have
	for i := 0; len(p) > 0 || !compacted && i < int(h.Count); i++ {
		if !compacted && i == int(h.Count) {
			return scanStats{}, corruptf("%d bytes after the last record", len(p))
		}
		rec, rest, err := nextRecord(p, i)
		if err != nil {
			return scanStats{}, err
		}
		p = rest
		switch {
		case !compacted && rec.offDelta != uint64(i):
			return scanStats{}, corruptf("record %d: offset delta is %d", i, rec.offDelta)
		case compacted && (rec.offDelta < next || rec.offDelta >= uint64(h.Count)):
			return scanStats{}, corruptf("record %d: offset delta %d out of order or past the batch's %d offsets", i, rec.offDelta, h.Count)
		}
		next = rec.offDelta + 1
		// The header's times feed the time index and the log's clock
		// (producer expiry): they must be the records' own.
		if i == 0 && rec.tsDelta != 0 {
			return scanStats{}, corruptf("record 0: timestamp delta %d, not 0", rec.tsDelta)
		}
		maxTime = max(maxTime, h.FirstTime+rec.tsDelta)
		st.count(rec)
		wanted := h.BaseOffset+int64(rec.offDelta) >= minOffset
		if !wanted {
			st.skip++
		}
		hp := rec.headers
		for range rec.headerCount {
			key, value, rest, err := nextHeader(hp)
			if err != nil {
				return scanStats{}, err
			}
			hp = rest
			st.payload += len(key) + len(value)
			if wanted {
				st.headers++
				st.keyBytes += len(key)
			}
		}
		if len(hp) != 0 {
			return scanStats{}, corruptf("record %d: %d bytes after its headers", i, len(hp))
		}
	}
	// A compacted batch may have lost every record; its times are then
	// those it had.
	if st.records > 0 && maxTime != h.MaxTime {
		return scanStats{}, corruptf("latest record time is %d, header says %d", maxTime, h.MaxTime)
	}
	return st, nil
}

// fillRecords decodes the records that scanRecords has checked. Per batch it
// makes at most three allocations: dst's growth, one slice shared by all
// headers, and one buffer shared by all header keys.
func fillRecords(raw []byte, h BatchHeader, minOffset int64, st scanStats, dst []Record) []Record {
	dst = slices.Grow(dst, st.records-st.skip)
	var hdrs []RecordHeader
	var keys []byte
	if st.headers > 0 {
		hdrs = make([]RecordHeader, st.headers)
	}
	if st.keyBytes > 0 {
		keys = make([]byte, st.keyBytes)
	}
	kafka := h.Version == VersionKafka
	next, nextHdr := nextRecord, nextHeader
	if kafka {
		next, nextHdr = nextKafkaRecord, nextKafkaHeader
	}
	p := raw
	for i := range st.records {
		// Already checked by scan, which saw the same bytes.
		rec, rest, _ := next(p, i)
		p = rest
		off := h.BaseOffset + int64(rec.offDelta)
		if off < minOffset {
			continue
		}
		r := Record{
			Offset:    off,
			Time:      h.FirstTime + rec.tsDelta,
			Key:       rec.key,
			Value:     rec.value,
			Tombstone: rec.tombstone,
		}
		if kafka {
			r.Time = h.MaxTime
			if !h.LogAppendTime {
				r.Time = h.FirstTime + rec.tsDelta*int64(time.Millisecond)
			}
		}
		if rec.headerCount > 0 {
			r.Headers, hdrs = hdrs[:rec.headerCount:rec.headerCount], hdrs[rec.headerCount:]
			hp := rec.headers
			for j := range r.Headers {
				key, value, rest, _ := nextHdr(hp)
				hp = rest
				r.Headers[j].Value = value
				if len(key) > 0 {
					n := copy(keys, key)
					// keys[:n] is written only here, before the string
					// over it exists, and never again.
					r.Headers[j].Key = unsafe.String(&keys[0], n)
					keys = keys[n:]
				}
			}
		}
		dst = append(dst, r)
	}
	return dst
}

type recordView struct {
	tsDelta     int64
	offDelta    uint64
	key, value  []byte
	tombstone   bool
	headerCount int
	headers     []byte // the encoded headers
}

// nextRecord decodes the record at the start of p, record i of its batch
// (for errors), and returns it with the bytes that follow it.
func nextRecord(p []byte, i int) (recordView, []byte, error) {
	var rec recordView
	n, k := binary.Uvarint(p)
	if k <= 0 {
		return rec, nil, corruptf("record %d: bad length", i)
	}
	p = p[k:]
	if n > uint64(len(p)) {
		return rec, nil, corruptf("record %d: length %d exceeds the %d bytes left", i, n, len(p))
	}
	body, rest := p[:n], p[n:]

	rec.tsDelta, k = binary.Varint(body)
	if k <= 0 {
		return rec, nil, corruptf("record %d: bad timestamp delta", i)
	}
	body = body[k:]
	od, k := binary.Uvarint(body)
	if k <= 0 {
		return rec, nil, corruptf("record %d: bad offset delta", i)
	}
	rec.offDelta = od
	body = body[k:]
	var err error
	if rec.key, body, err = nextBytes(body); err != nil {
		return rec, nil, corruptf("record %d: key: %v", i, err)
	}
	if rec.value, rec.tombstone, body, err = nextValue(body); err != nil {
		return rec, nil, corruptf("record %d: value: %v", i, err)
	}
	hc, k := binary.Uvarint(body)
	if k <= 0 {
		return rec, nil, corruptf("record %d: bad header count", i)
	}
	body = body[k:]
	// Each header takes at least two bytes; this keeps the count, which
	// sizes allocations, backed by real bytes.
	if hc > uint64(len(body))/2 {
		return rec, nil, corruptf("record %d: %d headers cannot fit in %d bytes", i, hc, len(body))
	}
	rec.headerCount = int(hc)
	rec.headers = body
	return rec, rest, nil
}

// nextHeader decodes the record header at the start of p.
func nextHeader(p []byte) (key, value, rest []byte, err error) {
	n, k := binary.Uvarint(p)
	if k <= 0 {
		return nil, nil, nil, corruptf("bad header key length")
	}
	p = p[k:]
	if n > uint64(len(p)) {
		return nil, nil, nil, corruptf("header key length %d exceeds the %d bytes left", n, len(p))
	}
	key, p = p[:n], p[n:]
	value, p, err = nextBytes(p)
	if err != nil {
		return nil, nil, nil, corruptf("header value: %v", err)
	}
	return key, value, p, nil
}

// nextBytes decodes a varint length (-1 for nil) and that many bytes. The
// result's capacity is its length.
func nextBytes(p []byte) (field, rest []byte, err error) {
	n, k := binary.Varint(p)
	if k <= 0 {
		return nil, nil, errors.New("bad length")
	}
	return lengthPrefixed(p[k:], n)
}

// nextValue is [nextBytes] for a record's value, which may also be the
// tombstone mark.
func nextValue(p []byte) (value []byte, tombstone bool, rest []byte, err error) {
	n, k := binary.Varint(p)
	if k <= 0 {
		return nil, false, nil, errors.New("bad length")
	}
	if n == tombstoneLen {
		return nil, true, p[k:], nil
	}
	value, rest, err = lengthPrefixed(p[k:], n)
	return value, false, rest, err
}

// lengthPrefixed returns the n bytes at the start of p (nil if n is -1) and
// the bytes after them.
func lengthPrefixed(p []byte, n int64) (field, rest []byte, err error) {
	switch {
	case n == -1:
		return nil, p, nil
	case n < -1 || n > int64(len(p)):
		return nil, nil, fmt.Errorf("length %d with %d bytes left", n, len(p))
	}
	return p[:n:n], p[n:], nil
}
