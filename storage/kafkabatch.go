package storage

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math"
	"time"
)

// Kafka's record batch, magic v2, all header integers big-endian:
//
//	[0:8]   baseOffset           int64  assigned at apply time
//	[8:12]  batchLength          int32  bytes after this field
//	[12:16] partitionLeaderEpoch int32  -1: replog stores none
//	[16]    magic                int8   2
//	[17:21] crc                  uint32 CRC-32C of bytes [21:]
//	[21:23] attributes           int16  bits 0-2 codec, bit 3 LogAppendTime
//	[23:27] lastOffsetDelta      int32  offsets covered, minus one
//	[27:35] baseTimestamp        int64  unix ms of the first record
//	[35:43] maxTimestamp         int64  largest record time, unix ms
//	[43:51] producerId           int64  -1 = not idempotent
//	[51:53] producerEpoch        int16
//	[53:57] baseSequence         int32  -1 if not idempotent
//	[57:61] recordCount          int32
//	[61:]   records, compressed with the codec
//
// Each record: varint length (of the rest), int8 attributes, varint
// timestampDelta (ms), varint offsetDelta, varint keyLength (-1 = nil),
// key, varint valueLength (-1 = null), value, varint headerCount, then per
// header varint keyLength, key, varint valueLength (-1 = nil), value.
//
// What replog reads from it, and what it rules out:
//   - The codec bits map to [Compression] (gzip 1, snappy 2, lz4 3, zstd
//     4); lz4 is the frame format and snappy a raw block or xerial frames.
//   - Attribute bit 4 marks a transactional batch (it needs a producer
//     id), bit 5 a control batch: a transaction marker, which only
//     [TxnMarkerCommand] writes. A control batch is transactional, has a
//     producer id, baseSequence -1, no compression and one record, whose
//     key is version int16 0 and type int16 (0 abort, 1 commit) and whose
//     value is version int16 0 and the coordinator epoch int32 (Kafka's
//     EndTxnMarker). Any other attribute bit is refused.
//   - Timestamps are milliseconds. [BatchHeader] and [Record] still speak
//     nanoseconds, so a record's Time in a Kafka batch is a whole number
//     of milliseconds; each must be within the int64 nanosecond range.
//     With LogAppendTime every record's time is maxTimestamp.
//   - A null value (-1) is Kafka's tombstone. A nil
//     Go value that is not a tombstone is written as an empty value with
//     record attribute bit 0 set ([kafkaRecordNilValue]), a bit Kafka
//     leaves unused and its clients write as 0: Kafka consumers see an
//     empty value, never a tombstone, and replog's own readers get nil
//     back. No other record attribute bit may be set.
//   - producerId -1 is not idempotent (BatchHeader.ProducerID 0); 0,
//     which replog never issues, is refused; otherwise epoch and sequence
//     must not be negative.
//   - A producer's batch covers exactly its records: recordCount is
//     lastOffsetDelta+1 and offset deltas run 0, 1, 2... Key compaction
//     writes batches with fewer records than offsets, deltas strictly
//     increasing (as Kafka's own compaction does); [ParseHeader] reports
//     those with FlagCompacted.

const (
	// VersionLegacy is the version byte of replog's own batch format,
	// which data directories written before Kafka batches hold.
	VersionLegacy = 1
	// VersionKafka is Kafka's record batch magic: version 2.
	VersionKafka = 2
	// HeaderSize is the size of a Kafka batch's fixed header, the larger
	// of the two formats' (a legacy batch's is 60 bytes): a batch of n
	// bytes of records takes at most HeaderSize+n.
	HeaderSize = kafkaHeaderSize

	kafkaHeaderSize = 61
	// kafkaLengthEnd ends the base offset and batch length, which the
	// batch length does not count.
	kafkaLengthEnd = 12
	// kafkaCRCCovered starts the bytes that the CRC covers.
	kafkaCRCCovered = 21

	kafkaAttrCodec         = 0x07
	kafkaAttrLogAppendTime = 0x08
	kafkaAttrTransactional = 0x10
	kafkaAttrControl       = 0x20

	// kafkaRecordNilValue marks, in a record's attributes, an empty value
	// that stands for a nil Go value, not a tombstone.
	kafkaRecordNilValue = 0x01

	// minKafkaRecordSize is the smallest encoded record: seven one-byte
	// fields.
	minKafkaRecordSize = 7

	// maxMillis is the largest timestamp whose nanoseconds fit an int64.
	maxMillis = math.MaxInt64 / int64(time.Millisecond)
)

// parseKafkaHeader is [ParseHeader] for a batch whose magic byte says
// Kafka v2.
func parseKafkaHeader(b []byte) (BatchHeader, error) {
	if len(b) < kafkaHeaderSize {
		return BatchHeader{}, corruptf("%d bytes, shorter than the %d-byte header", len(b), kafkaHeaderSize)
	}
	be := binary.BigEndian
	length := int32(be.Uint32(b[8:]))
	attrs := be.Uint16(b[21:])
	lastDelta := int32(be.Uint32(b[23:]))
	baseTs := int64(be.Uint64(b[27:]))
	maxTs := int64(be.Uint64(b[35:]))
	pid := int64(be.Uint64(b[43:]))
	epoch := int16(be.Uint16(b[51:]))
	seq := int32(be.Uint32(b[53:]))
	records := int32(be.Uint32(b[57:]))
	codec := Compression(attrs & kafkaAttrCodec)
	switch {
	case int64(length) != int64(len(b))-kafkaLengthEnd:
		return BatchHeader{}, corruptf("batch length field is %d, %d bytes follow it", length, len(b)-kafkaLengthEnd)
	case attrs&^(kafkaAttrCodec|kafkaAttrLogAppendTime|kafkaAttrTransactional|kafkaAttrControl) != 0:
		return BatchHeader{}, corruptf("unknown attributes %#x", attrs)
	case attrs&kafkaAttrTransactional != 0 && pid <= 0:
		return BatchHeader{}, corruptf("transactional batch without a producer id")
	case attrs&kafkaAttrControl != 0 && (attrs&(kafkaAttrTransactional|kafkaAttrCodec) != kafkaAttrTransactional || seq != -1 || lastDelta != 0 || records != 1):
		return BatchHeader{}, corruptf("control batch with attributes %#x, sequence %d, %d records in %d offsets", attrs, seq, records, int64(lastDelta)+1)
	case !codec.Valid():
		return BatchHeader{}, corruptf("unknown compression %d", uint8(codec))
	case lastDelta < 0:
		return BatchHeader{}, corruptf("last offset delta %d", lastDelta)
	case records < 0 || int64(records) > int64(lastDelta)+1:
		return BatchHeader{}, corruptf("%d records in %d offsets", records, int64(lastDelta)+1)
	case records > 0 && codec == CompressionNone && int64(records)*minKafkaRecordSize > int64(len(b)-kafkaHeaderSize):
		return BatchHeader{}, corruptf("%d records cannot fit in %d bytes", records, len(b)-kafkaHeaderSize)
	case baseTs < -maxMillis || baseTs > maxMillis || maxTs < -maxMillis || maxTs > maxMillis:
		return BatchHeader{}, corruptf("timestamps %d and %d, outside the nanosecond range", baseTs, maxTs)
	case pid == 0 || pid < -1:
		return BatchHeader{}, corruptf("producer id %d", pid)
	case pid > 0 && (epoch < 0 || seq < 0 && attrs&kafkaAttrControl == 0):
		return BatchHeader{}, corruptf("producer %d with epoch %d and sequence %d", pid, epoch, seq)
	}
	h := BatchHeader{
		BaseOffset:   int64(be.Uint64(b[0:])),
		Length:       uint32(len(b)),
		CRC:          be.Uint32(b[17:]),
		Version:      VersionKafka,
		Compression:  codec,
		Count:        uint32(lastDelta) + 1,
		Records:      int(records),
		FirstTime:    baseTs * int64(time.Millisecond),
		MaxTime:      maxTs * int64(time.Millisecond),
		BaseSequence: -1,
	}
	if h.Records < int(h.Count) {
		h.Flags = FlagCompacted
	}
	if attrs&kafkaAttrLogAppendTime != 0 {
		h.LogAppendTime = true
		h.FirstTime = h.MaxTime
	}
	if pid > 0 {
		h.ProducerID, h.ProducerEpoch, h.BaseSequence = uint64(pid), uint32(epoch), seq
	}
	h.Transactional = attrs&kafkaAttrTransactional != 0
	h.Control = attrs&kafkaAttrControl != 0
	if codec == CompressionNone {
		h.RawLength = uint32(len(b) - kafkaHeaderSize)
	}
	if crc := crc32.Checksum(b[kafkaCRCCovered:], castagnoli); crc != h.CRC {
		return BatchHeader{}, corruptf("crc mismatch: computed %#08x, header says %#08x", crc, h.CRC)
	}
	return h, nil
}

// scanKafkaRecords is scanRecords for a Kafka batch: raw holds exactly
// h.Records well-formed records with offset deltas 0, 1, 2... (or, with
// FlagCompacted, strictly increasing below h.Count), whose latest time is
// h.MaxTime.
func scanKafkaRecords(raw []byte, h BatchHeader, minOffset int64) (scanStats, error) {
	var st scanStats
	p := raw
	baseMs := h.FirstTime / int64(time.Millisecond)
	maxMs := int64(math.MinInt64)
	compacted := h.Flags&FlagCompacted != 0
	next := uint64(0) // the smallest offset delta the next record may have
	for i := range h.Records {
		rec, rest, err := nextKafkaRecord(p, i)
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
		if !h.LogAppendTime {
			ms, ok := kafkaTime(baseMs, rec.tsDelta)
			if !ok {
				return scanStats{}, corruptf("record %d: timestamp delta %d from %d is outside the nanosecond range", i, rec.tsDelta, baseMs)
			}
			maxMs = max(maxMs, ms)
		}
		if h.Control {
			if _, err := parseMarkerRecord(rec); err != nil {
				return scanStats{}, err
			}
		}
		st.count(rec)
		wanted := h.BaseOffset+int64(rec.offDelta) >= minOffset
		if !wanted {
			st.skip++
		}
		hp := rec.headers
		for range rec.headerCount {
			key, value, rest, err := nextKafkaHeader(hp)
			if err != nil {
				return scanStats{}, corruptf("record %d: %v", i, err)
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
	if len(p) != 0 {
		return scanStats{}, corruptf("%d bytes after the last record", len(p))
	}
	// The header's max time feeds the time index and the log's clock
	// (producer expiry): it must be the records' own. A compacted batch
	// may have lost every record; its time is then the one it had.
	if !h.LogAppendTime && st.records > 0 && maxMs*int64(time.Millisecond) != h.MaxTime {
		return scanStats{}, corruptf("latest record time is %d ms, header says %d ms", maxMs, h.MaxTime/int64(time.Millisecond))
	}
	return st, nil
}

// kafkaTime returns the record time base+delta (ms) and whether it is
// within the nanosecond range. base is within it.
func kafkaTime(base, delta int64) (int64, bool) {
	if delta < -2*maxMillis || delta > 2*maxMillis {
		return 0, false
	}
	ms := base + delta
	return ms, ms >= -maxMillis && ms <= maxMillis
}

// nextKafkaRecord decodes the Kafka record at the start of p, record i of
// its batch (for errors), and returns it with the bytes that follow it.
func nextKafkaRecord(p []byte, i int) (recordView, []byte, error) {
	var rec recordView
	n, k := binary.Varint(p)
	if k <= 0 {
		return rec, nil, corruptf("record %d: bad length", i)
	}
	p = p[k:]
	if n < minKafkaRecordSize-1 || n > int64(len(p)) {
		return rec, nil, corruptf("record %d: length %d with %d bytes left", i, n, len(p))
	}
	body, rest := p[1:n], p[n:]
	attrs := p[0]
	if attrs&^kafkaRecordNilValue != 0 {
		return rec, nil, corruptf("record %d: attributes %#x", i, attrs)
	}
	rec.tsDelta, k = binary.Varint(body)
	if k <= 0 {
		return rec, nil, corruptf("record %d: bad timestamp delta", i)
	}
	body = body[k:]
	od, k := binary.Varint(body)
	if k <= 0 || od < 0 {
		return rec, nil, corruptf("record %d: bad offset delta", i)
	}
	rec.offDelta = uint64(od)
	body = body[k:]
	var err error
	if rec.key, body, err = nextBytes(body); err != nil {
		return rec, nil, corruptf("record %d: key: %v", i, err)
	}
	vl, k := binary.Varint(body)
	if k <= 0 {
		return rec, nil, corruptf("record %d: value: bad length", i)
	}
	switch {
	case attrs&kafkaRecordNilValue != 0:
		if vl != 0 {
			return rec, nil, corruptf("record %d: a nil value of %d bytes", i, vl)
		}
		body = body[k:]
	case vl == -1:
		rec.tombstone = true
		body = body[k:]
	default:
		if rec.value, body, err = lengthPrefixed(body[k:], vl); err != nil {
			return rec, nil, corruptf("record %d: value: %v", i, err)
		}
		if rec.value == nil {
			rec.value = []byte{} // lengthPrefixed returns nil only for -1
		}
	}
	hc, k := binary.Varint(body)
	if k <= 0 {
		return rec, nil, corruptf("record %d: bad header count", i)
	}
	body = body[k:]
	// Each header takes at least two bytes; this keeps the count, which
	// sizes allocations, backed by real bytes.
	if hc < 0 || hc > int64(len(body))/2 {
		return rec, nil, corruptf("record %d: %d headers cannot fit in %d bytes", i, hc, len(body))
	}
	rec.headerCount = int(hc)
	rec.headers = body
	return rec, rest, nil
}

// nextKafkaHeader decodes the Kafka record header at the start of p.
func nextKafkaHeader(p []byte) (key, value, rest []byte, err error) {
	n, k := binary.Varint(p)
	if k <= 0 || n < 0 || n > int64(len(p)-k) {
		return nil, nil, nil, errors.New("bad header key length")
	}
	p = p[k:]
	key, p = p[:n], p[n:]
	value, p, err = nextBytes(p)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("header value: %v", err)
	}
	return key, value, p, nil
}

// kafkaRecordFieldsSize is the size of a Kafka record's key, value and
// headers.
func kafkaRecordFieldsSize(r Record) int {
	n := bytesSize(r.Key) + varintLen(int64(len(r.Headers)))
	if r.Tombstone || r.Value == nil {
		n++
	} else {
		n += bytesSize(r.Value)
	}
	for _, h := range r.Headers {
		n += varintLen(int64(len(h.Key))) + len(h.Key) + bytesSize(h.Value)
	}
	return n
}

// appendKafkaRecord appends r as a Kafka record.
func appendKafkaRecord(dst []byte, r Record, tsDelta int64, offDelta uint64) []byte {
	body := 1 + varintLen(tsDelta) + varintLen(int64(offDelta)) + kafkaRecordFieldsSize(r)
	dst = binary.AppendVarint(dst, int64(body))
	switch {
	case r.Tombstone:
		dst = append(dst, 0)
	case r.Value == nil:
		dst = append(dst, kafkaRecordNilValue)
	default:
		dst = append(dst, 0)
	}
	dst = binary.AppendVarint(dst, tsDelta)
	dst = binary.AppendVarint(dst, int64(offDelta))
	dst = appendBytes(dst, r.Key)
	switch {
	case r.Tombstone:
		dst = binary.AppendVarint(dst, -1)
	case r.Value == nil:
		dst = binary.AppendVarint(dst, 0)
	default:
		dst = appendBytes(dst, r.Value)
	}
	dst = binary.AppendVarint(dst, int64(len(r.Headers)))
	for _, h := range r.Headers {
		dst = binary.AppendVarint(dst, int64(len(h.Key)))
		dst = append(dst, h.Key...)
		dst = appendBytes(dst, h.Value)
	}
	return dst
}

// millis is t (unix ns) in whole milliseconds, rounded down, except that
// the few nanosecond times before the earliest millisecond whose
// nanoseconds fit an int64 (in 1677) round up to it.
func millis(t int64) int64 {
	ms := t / int64(time.Millisecond)
	if t%int64(time.Millisecond) < 0 {
		ms--
	}
	return max(ms, -maxMillis)
}

// buildKafka is build for a Kafka batch: records is the records section,
// already compressed with c.
func (b *BatchBuilder) buildKafka(prefix int, c Compression, id batchIdentity, records []byte, firstTime, maxTime int64) ([]byte, error) {
	switch {
	case id.count == 0 || id.count > math.MaxInt32:
		return nil, fmt.Errorf("%w: %d offsets in one batch", ErrBatchTooLarge, id.count)
	case id.producerID > math.MaxInt64 || id.epoch > math.MaxInt16:
		return nil, fmt.Errorf("replog: producer id %d epoch %d do not fit a Kafka batch", id.producerID, id.epoch)
	}
	n := kafkaHeaderSize + len(records)
	if n > MaxBatchBytes {
		return nil, fmt.Errorf("%w: %d bytes encoded, the limit is %d", ErrBatchTooLarge, n, MaxBatchBytes)
	}
	buf := make([]byte, prefix+n)
	out := buf[prefix:]
	be := binary.BigEndian
	be.PutUint32(out[8:], uint32(n-kafkaLengthEnd))
	be.PutUint32(out[12:], math.MaxUint32) // leader epoch -1
	out[16] = VersionKafka
	attrs := uint16(c)
	if id.logAppendTime {
		attrs |= kafkaAttrLogAppendTime
	}
	if id.transactional {
		attrs |= kafkaAttrTransactional
	}
	be.PutUint16(out[21:], attrs)
	be.PutUint32(out[23:], id.count-1)
	be.PutUint64(out[27:], uint64(millis(firstTime)))
	be.PutUint64(out[35:], uint64(millis(maxTime)))
	pid, epoch, seq := int64(-1), int16(-1), int32(-1)
	if id.producerID != 0 {
		pid, epoch, seq = int64(id.producerID), int16(id.epoch), id.baseSeq
	}
	be.PutUint64(out[43:], uint64(pid))
	be.PutUint16(out[51:], uint16(epoch))
	be.PutUint32(out[53:], uint32(seq))
	be.PutUint32(out[57:], uint32(b.count))
	copy(out[kafkaHeaderSize:], records)
	be.PutUint32(out[17:], crc32.Checksum(out[kafkaCRCCovered:], castagnoli))
	return buf, nil
}
