package replogkafka

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"time"

	"github.com/replog/replog"
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

	attrLogAppendTime = 0x08
	attrTransactional = 0x10
	attrControl       = 0x20
)

// produced is a client's record batch, checked, in a command ready to
// propose.
type produced struct {
	// cmd is storage.CmdAppend then the batch; for a transactional
	// batch, room for storage.PutTxnAppendHeader's header (the
	// transaction's serial is known once the batch is checked against
	// the coordinator), then the batch.
	cmd    []byte
	header storage.BatchHeader
	stats  storage.BatchStats
}

// checkProduced checks one partition's records of a Produce request and
// returns them in a command that stores them as they came: exactly one
// magic v2 batch, not a control batch, transactional if and only if the
// request named a transactional id (txn), with as many records as
// offsets, that passes the storage's full validation (the CRC32C, every
// record, decompression bounded by [storage.MaxRawBytes]) and has no
// keyless null value (replog's tombstone always deletes a key).
//
// A non-transactional batch with a transactional id is refused
// (INVALID_TXN_STATE): Kafka refuses it when its producer has a
// transaction open in the partition, which the listener cannot tell
// before proposing; a transactional client sends none. A transactional
// batch without one is refused as Kafka refuses it
// (TRANSACTIONAL_ID_AUTHORIZATION_FAILED).
//
// A batch of LogAppendTime type, or one without timestamps (a negative
// base timestamp), gets now as Kafka gives it the append time: the
// attribute set and both timestamps now, signed again. Every other batch is
// stored byte for byte, but for its base offset and partition leader epoch,
// which the partition sets and the CRC does not cover.
func checkProduced(raw []byte, now time.Time, txn bool) (produced, error) {
	be := binary.BigEndian
	switch {
	case len(raw) > storage.MaxBatchBytes:
		return produced{}, fmt.Errorf("%w: a batch of %d bytes, the limit is %d", replog.ErrRecordTooLarge, len(raw), storage.MaxBatchBytes)
	case len(raw) < batchHeaderLen:
		return produced{}, fmt.Errorf("%w: %d bytes, shorter than a batch header", errCorruptBatch, len(raw))
	case int64(int32(be.Uint32(raw[8:]))) != int64(len(raw)-batchLengthEnd):
		return produced{}, fmt.Errorf("%w: batch length %d, %d bytes follow (one batch per partition)", errCorruptBatch, int32(be.Uint32(raw[8:])), len(raw)-batchLengthEnd)
	case raw[16] != storage.VersionKafka:
		return produced{}, fmt.Errorf("%w: magic %d (only v2 batches)", errCorruptBatch, int8(raw[16]))
	}
	if crc := crc32.Checksum(raw[batchCRCCovered:], castagnoli); crc != be.Uint32(raw[batchCRCStart:]) {
		return produced{}, fmt.Errorf("%w: CRC32C %08x, batch says %08x", errCorruptBatch, crc, be.Uint32(raw[batchCRCStart:]))
	}
	attrs := be.Uint16(raw[21:])
	lastDelta, records := int32(be.Uint32(raw[23:])), int32(be.Uint32(raw[57:]))
	pid, epoch, seq := int64(be.Uint64(raw[43:])), int16(be.Uint16(raw[51:])), int32(be.Uint32(raw[53:]))
	switch {
	case attrs&attrControl != 0:
		return produced{}, fmt.Errorf("%w: a control batch from a client", errInvalidRecord)
	case txn && attrs&attrTransactional == 0:
		return produced{}, fmt.Errorf("%w: a non-transactional batch with a transactional id", errTxnState)
	case !txn && attrs&attrTransactional != 0:
		return produced{}, errTxnAuth
	case txn && pid <= 0:
		return produced{}, fmt.Errorf("%w: a transactional batch without producer id", errInvalidRecord)
	case records <= 0 || lastDelta != records-1:
		return produced{}, fmt.Errorf("%w: %d records, last offset delta %d", errInvalidRecord, records, lastDelta)
	case pid == 0 || pid > 0 && (epoch < 0 || seq < 0):
		return produced{}, fmt.Errorf("%w: producer %d with epoch %d and sequence %d", errInvalidRecord, pid, epoch, seq)
	}

	hdr := 1
	if txn {
		hdr = storage.TxnAppendHeaderSize
	}
	cmd := make([]byte, hdr+len(raw))
	if !txn {
		cmd[0] = storage.CmdAppend
	}
	b := cmd[hdr:]
	copy(b, raw)
	if attrs&attrLogAppendTime != 0 || int64(be.Uint64(raw[27:])) < 0 {
		ms := uint64(now.UnixMilli())
		be.PutUint16(b[21:], attrs|attrLogAppendTime)
		be.PutUint64(b[27:], ms)
		be.PutUint64(b[35:], ms)
		be.PutUint32(b[batchCRCStart:], crc32.Checksum(b[batchCRCCovered:], castagnoli))
	}
	h, st, err := storage.Inspect(b)
	switch {
	case err != nil:
		return produced{}, fmt.Errorf("%w: %w", errCorruptBatch, err)
	case st.KeylessTombstones > 0:
		return produced{}, fmt.Errorf("%w: %d records have neither key nor value", errInvalidRecord, st.KeylessTombstones)
	}
	return produced{cmd: cmd, header: h, stats: st}, nil
}

// maxMillis is the largest timestamp whose nanoseconds fit an int64
// (year 2262).
const maxMillis = (1<<63 - 1) / int64(time.Millisecond)

// appendFetched appends a stored legacy batch (one written before replog
// stored Kafka batches) to dst as one uncompressed Kafka record batch
// (magic v2): recs are the records of h that a fetch returns
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
