package replogkafka

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/s2"
	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/replog/replog/storage"
)

// errInvalidRecord is a produced batch that is well formed but not
// acceptable (Kafka's INVALID_RECORD); errCorruptBatch one that fails its
// checks (CORRUPT_MESSAGE).
var (
	errInvalidRecord = errors.New("replogkafka: invalid record")
	errCorruptBatch  = errors.New("replogkafka: corrupt record batch")
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Record batch (magic v2) layout: the fixed header's fields and offsets.
const (
	batchHeaderLen  = 61 // up to the records
	batchLengthEnd  = 12 // base offset (8) and length (4)
	batchCRCStart   = 17
	batchCRCCovered = 21 // the CRC covers attributes to the end

	attrCompression   = 0x07
	attrLogAppendTime = 0x08
	attrTransactional = 0x10
	attrControl       = 0x20

	// minRecordLen is the smallest encoded record: length, attributes,
	// timestamp and offset deltas, key and value lengths, header count.
	minRecordLen = 7
)

// producedBatch is a client's record batch, decoded.
type producedBatch struct {
	producerID    int64
	producerEpoch int16
	baseSequence  int32
	records       []storage.Record
}

// decodeProduced checks and decodes the records of one partition of a
// Produce request: exactly one magic v2 batch, whose CRC32C holds, neither
// transactional nor control, decompressed to at most maxRaw bytes, with
// offset deltas 0, 1, 2... Timestamps become unix nanoseconds; a batch of
// LogAppendTime type, and a record without a timestamp (-1), get now.
func decodeProduced(raw []byte, maxRaw int, now time.Time) (producedBatch, error) {
	var pb producedBatch
	if len(raw) < batchHeaderLen {
		return pb, fmt.Errorf("%w: %d bytes, shorter than a batch header", errCorruptBatch, len(raw))
	}
	if n := int64(int32(binary.BigEndian.Uint32(raw[8:]))); n != int64(len(raw)-batchLengthEnd) {
		return pb, fmt.Errorf("%w: batch length %d, %d bytes follow (one batch per partition)", errCorruptBatch, n, len(raw)-batchLengthEnd)
	}
	var b kmsg.RecordBatch
	if err := b.ReadFrom(raw); err != nil {
		return pb, fmt.Errorf("%w: %w", errCorruptBatch, err)
	}
	if b.Magic != 2 {
		return pb, fmt.Errorf("%w: magic %d (only v2 batches)", errCorruptBatch, b.Magic)
	}
	if crc := crc32.Checksum(raw[batchCRCCovered:], castagnoli); crc != uint32(b.CRC) {
		return pb, fmt.Errorf("%w: CRC32C %08x, batch says %08x", errCorruptBatch, crc, uint32(b.CRC))
	}
	if b.Attributes&(attrTransactional|attrControl) != 0 {
		return pb, fmt.Errorf("%w: transactional and control batches are not supported", errInvalidRecord)
	}
	if b.NumRecords <= 0 || b.LastOffsetDelta != b.NumRecords-1 {
		return pb, fmt.Errorf("%w: %d records, last offset delta %d", errInvalidRecord, b.NumRecords, b.LastOffsetDelta)
	}
	recs, err := decompress(b.Records, int8(b.Attributes&attrCompression), maxRaw)
	if err != nil {
		return pb, err
	}
	if int64(b.NumRecords) > int64(len(recs)/minRecordLen) {
		return pb, fmt.Errorf("%w: %d records in %d bytes", errCorruptBatch, b.NumRecords, len(recs))
	}
	nowMs := now.UnixMilli()
	pb.producerID, pb.producerEpoch, pb.baseSequence = b.ProducerID, b.ProducerEpoch, b.FirstSequence
	pb.records = make([]storage.Record, 0, b.NumRecords)
	for i := range b.NumRecords {
		length, n := binary.Varint(recs)
		if n <= 0 || length < 0 || length > int64(len(recs)-n) {
			return pb, fmt.Errorf("%w: record %d: bad length", errCorruptBatch, i)
		}
		var r kmsg.Record
		if err := r.ReadFrom(recs[:n+int(length)]); err != nil {
			return pb, fmt.Errorf("%w: record %d: %w", errCorruptBatch, i, err)
		}
		recs = recs[n+int(length):]
		if r.OffsetDelta != i {
			return pb, fmt.Errorf("%w: record %d has offset delta %d", errInvalidRecord, i, r.OffsetDelta)
		}
		ms := b.FirstTimestamp + r.TimestampDelta64
		if b.Attributes&attrLogAppendTime != 0 || b.FirstTimestamp < 0 {
			ms = nowMs
		}
		if ms < 0 || ms > maxMillis {
			return pb, fmt.Errorf("%w: record %d has timestamp %d", errInvalidRecord, i, ms)
		}
		sr := storage.Record{Time: ms * int64(time.Millisecond), Key: r.Key, Value: r.Value}
		if r.Value == nil {
			// Kafka's null value. replog's tombstone always deletes a
			// key: a keyless null has nothing to delete.
			if r.Key == nil {
				return pb, fmt.Errorf("%w: record %d has neither key nor value", errInvalidRecord, i)
			}
			sr.Tombstone = true
		}
		for _, h := range r.Headers {
			sr.Headers = append(sr.Headers, storage.RecordHeader{Key: h.Key, Value: h.Value})
		}
		pb.records = append(pb.records, sr)
	}
	if len(recs) != 0 {
		return pb, fmt.Errorf("%w: %d bytes after the last record", errCorruptBatch, len(recs))
	}
	return pb, nil
}

// maxMillis is the largest timestamp whose nanoseconds fit an int64
// (year 2262).
const maxMillis = (1<<63 - 1) / int64(time.Millisecond)

// Kafka's compression codecs, from a batch's attributes.
const (
	codecNone   = 0
	codecGzip   = 1
	codecSnappy = 2
	codecLZ4    = 3
	codecZstd   = 4
)

// decompress returns a batch's records section uncompressed. Kafka's
// batches do not carry the uncompressed size, so every codec reads at most
// maxRaw bytes and fails past them (a compression bomb costs maxRaw).
func decompress(src []byte, codec int8, maxRaw int) ([]byte, error) {
	var r io.Reader
	switch codec {
	case codecNone:
		return src, nil
	case codecGzip:
		zr, err := gzip.NewReader(bytes.NewReader(src))
		if err != nil {
			return nil, fmt.Errorf("%w: gzip: %v", errCorruptBatch, err)
		}
		r = zr
	case codecSnappy:
		return unsnappy(src, maxRaw)
	case codecLZ4:
		r = lz4.NewReader(bytes.NewReader(src))
	case codecZstd:
		zr, err := zstd.NewReader(bytes.NewReader(src), zstd.WithDecoderConcurrency(1),
			zstd.WithDecoderMaxMemory(uint64(maxRaw)), zstd.WithDecoderLowmem(true))
		if err != nil {
			return nil, fmt.Errorf("%w: zstd: %v", errCorruptBatch, err)
		}
		defer zr.Close()
		r = zr
	default:
		return nil, fmt.Errorf("%w: compression codec %d", errCorruptBatch, codec)
	}
	out, err := io.ReadAll(io.LimitReader(r, int64(maxRaw)+1))
	switch {
	case err != nil:
		return nil, fmt.Errorf("%w: codec %d: %v", errCorruptBatch, codec, err)
	case len(out) > maxRaw:
		return nil, fmt.Errorf("%w: records decompress to more than %d bytes", errCorruptBatch, maxRaw)
	}
	return out, nil
}

// xerialMagic starts snappy data in the framing of the Java client's
// snappy library: the magic, a version and a compatible version (int32
// each), then chunks of an int32 length and a snappy block.
const xerialMagic = "\x82SNAPPY\x00"

// unsnappy decodes a raw snappy block (franz-go, librdkafka) or xerial
// framed blocks (the Java client, sarama), at most maxRaw bytes in all.
func unsnappy(src []byte, maxRaw int) ([]byte, error) {
	block := func(dst, b []byte) ([]byte, error) {
		n, err := s2.DecodedLen(b)
		if err != nil || n > maxRaw-len(dst) {
			return nil, fmt.Errorf("%w: snappy block: %d bytes, %v", errCorruptBatch, n, err)
		}
		out, err := s2.Decode(nil, b)
		if err != nil {
			return nil, fmt.Errorf("%w: snappy: %v", errCorruptBatch, err)
		}
		return append(dst, out...), nil
	}
	if !bytes.HasPrefix(src, []byte(xerialMagic)) {
		return block(nil, src)
	}
	if len(src) < len(xerialMagic)+8 {
		return nil, fmt.Errorf("%w: short xerial snappy header", errCorruptBatch)
	}
	src = src[len(xerialMagic)+8:]
	var out []byte
	for len(src) > 0 {
		if len(src) < 4 {
			return nil, fmt.Errorf("%w: short xerial snappy chunk", errCorruptBatch)
		}
		n := binary.BigEndian.Uint32(src)
		if uint64(n) > uint64(len(src)-4) {
			return nil, fmt.Errorf("%w: xerial snappy chunk of %d bytes, %d left", errCorruptBatch, n, len(src)-4)
		}
		var err error
		if out, err = block(out, src[4:4+n]); err != nil {
			return nil, err
		}
		src = src[4+n:]
	}
	return out, nil
}

// appendFetched appends a stored batch to dst as one uncompressed Kafka
// record batch (magic v2): recs are the records of h that a fetch returns
// (those at or after the fetch offset; key compaction may have removed
// others). The batch keeps h's offsets, so that its last offset delta
// steps a client over offsets that hold no record.
func appendFetched(dst []byte, h storage.BatchHeader, recs []storage.Record) []byte {
	firstMs, maxMs := h.FirstTime/int64(time.Millisecond), h.MaxTime/int64(time.Millisecond)
	start := len(dst)
	dst = binary.BigEndian.AppendUint64(dst, uint64(h.BaseOffset))
	dst = binary.BigEndian.AppendUint32(dst, 0)          // length, below
	dst = binary.BigEndian.AppendUint32(dst, 0xffffffff) // partition leader epoch: none
	dst = append(dst, 2)                                 // magic
	dst = binary.BigEndian.AppendUint32(dst, 0)          // CRC, below
	dst = binary.BigEndian.AppendUint16(dst, 0)          // attributes: uncompressed, create time
	dst = binary.BigEndian.AppendUint32(dst, uint32(h.LastOffset()-h.BaseOffset))
	dst = binary.BigEndian.AppendUint64(dst, uint64(firstMs))
	dst = binary.BigEndian.AppendUint64(dst, uint64(maxMs))
	dst = binary.BigEndian.AppendUint64(dst, 0xffffffffffffffff) // producer id: none
	dst = binary.BigEndian.AppendUint16(dst, 0xffff)             // producer epoch
	dst = binary.BigEndian.AppendUint32(dst, 0xffffffff)         // base sequence
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(recs)))
	var body []byte
	for i := range recs {
		r := &recs[i]
		body = append(body[:0], 0) // attributes
		body = binary.AppendVarint(body, r.Time/int64(time.Millisecond)-firstMs)
		body = binary.AppendVarint(body, r.Offset-h.BaseOffset)
		body = appendVarintBytes(body, r.Key)
		if r.Tombstone {
			body = binary.AppendVarint(body, -1)
		} else {
			body = appendVarintBytes(body, nonNil(r.Value))
		}
		body = binary.AppendVarint(body, int64(len(r.Headers)))
		for _, h := range r.Headers {
			body = binary.AppendVarint(body, int64(len(h.Key)))
			body = append(body, h.Key...)
			body = appendVarintBytes(body, h.Value)
		}
		dst = binary.AppendVarint(dst, int64(len(body)))
		dst = append(dst, body...)
	}
	binary.BigEndian.PutUint32(dst[start+8:], uint32(len(dst)-start-batchLengthEnd))
	binary.BigEndian.PutUint32(dst[start+batchCRCStart:], crc32.Checksum(dst[start+batchCRCCovered:], castagnoli))
	return dst
}

// appendVarintBytes appends b with a varint length, -1 for nil.
func appendVarintBytes(dst, b []byte) []byte {
	if b == nil {
		return binary.AppendVarint(dst, -1)
	}
	dst = binary.AppendVarint(dst, int64(len(b)))
	return append(dst, b...)
}

// nonNil makes a value that is not a tombstone non-null in Kafka's terms.
func nonNil(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}
