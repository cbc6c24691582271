package storage

import (
	"bytes"
	stdgzip "compress/gzip"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"
	"math"
	"testing"

	"github.com/klauspost/compress/s2"
	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// resignKafka recomputes the CRC of the Kafka batch b.
func resignKafka(b []byte) {
	binary.BigEndian.PutUint32(b[17:], crc32.Checksum(b[kafkaCRCCovered:], castagnoli))
}

// clientCompress compresses records as a Kafka client does, with other
// code than replog's: the standard library's gzip, the lz4 frame writer's
// defaults (4 MiB blocks, as franz-go), the Java client's xerial framed
// snappy, and zstd's streaming encoder.
func clientCompress(t testing.TB, c Compression, raw []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	switch c {
	case CompressionNone:
		return raw
	case CompressionGzip:
		w := stdgzip.NewWriter(&buf)
		_, err := w.Write(raw)
		require.NoError(t, err)
		require.NoError(t, w.Close())
	case CompressionSnappy:
		buf.WriteString(xerialMagic)
		buf.Write([]byte{0, 0, 0, 1, 0, 0, 0, 1})
		for len(raw) > 0 {
			n := min(len(raw), 32<<10)
			block := s2.EncodeSnappy(nil, raw[:n])
			buf.Write(binary.BigEndian.AppendUint32(nil, uint32(len(block))))
			buf.Write(block)
			raw = raw[n:]
		}
	case CompressionLZ4:
		w := lz4.NewWriter(&buf)
		_, err := w.Write(raw)
		require.NoError(t, err)
		require.NoError(t, w.Close())
	case CompressionZstd:
		w, err := zstd.NewWriter(&buf)
		require.NoError(t, err)
		_, err = w.Write(raw)
		require.NoError(t, err)
		require.NoError(t, w.Close())
	}
	return buf.Bytes()
}

// clientBatch encodes recs as a Kafka client's batch, with kmsg.
func clientBatch(t testing.TB, c Compression, firstMs, maxMs int64, pid int64, epoch int16, seq int32, recs []kmsg.Record) []byte {
	t.Helper()
	var raw []byte
	for _, r := range recs {
		r.Length = 0
		r.Length = int32(len(r.AppendTo(nil)) - 1)
		raw = r.AppendTo(raw)
	}
	b := kmsg.RecordBatch{
		PartitionLeaderEpoch: -1,
		Magic:                2,
		Attributes:           int16(c),
		LastOffsetDelta:      int32(len(recs) - 1),
		FirstTimestamp:       firstMs,
		MaxTimestamp:         maxMs,
		ProducerID:           pid,
		ProducerEpoch:        epoch,
		FirstSequence:        seq,
		NumRecords:           int32(len(recs)),
		Records:              clientCompress(t, c, raw),
	}
	out := b.AppendTo(nil)
	binary.BigEndian.PutUint32(out[8:], uint32(len(out)-kafkaLengthEnd))
	resignKafka(out)
	return out
}

// TestKafkaBatchFromClient: a batch as Kafka clients encode and compress it
// validates and decodes, Kafka's null value as a tombstone and an empty
// value as empty.
func TestKafkaBatchFromClient(t *testing.T) {
	recs := []kmsg.Record{
		{Key: []byte("k"), Value: []byte("v"), Headers: []kmsg.Header{{Key: "h", Value: []byte("x")}, {Key: "n"}}},
		{TimestampDelta64: 5, OffsetDelta: 1, Key: []byte("gone")},
		{TimestampDelta64: -3, OffsetDelta: 2, Value: []byte{}},
		{TimestampDelta64: 2, OffsetDelta: 3, Key: []byte{}, Value: bytes.Repeat([]byte("compressible "), 1000)},
	}
	for _, c := range allCompressions {
		t.Run(c.String(), func(t *testing.T) {
			b := clientBatch(t, c, 1_700_000_000_000, 1_700_000_000_005, 9, 2, 40, recs)
			h, st, err := Inspect(b)
			require.NoError(t, err)
			require.Equal(t, BatchHeader{
				Length: uint32(len(b)), CRC: binary.BigEndian.Uint32(b[17:]), Version: VersionKafka,
				Compression: c, Count: 4, Records: 4,
				FirstTime: 1_700_000_000_000_000_000, MaxTime: 1_700_000_000_005_000_000,
				ProducerID: 9, ProducerEpoch: 2, BaseSequence: 40,
				RawLength: h.RawLength,
			}, h)
			require.Equal(t, BatchStats{Records: 4, PayloadBytes: 1 + 1 + 1 + 1 + 1 + 4 + 13000, Keyless: 1}, st)

			SetBaseOffset(b, 100)
			_, got, err := DecodeRecords(b, 0, nil)
			require.NoError(t, err)
			require.Equal(t, []Record{
				{Offset: 100, Time: 1_700_000_000_000_000_000, Key: []byte("k"), Value: []byte("v"), Headers: []RecordHeader{{Key: "h", Value: []byte("x")}, {Key: "n"}}},
				{Offset: 101, Time: 1_700_000_000_005_000_000, Key: []byte("gone"), Tombstone: true},
				{Offset: 102, Time: 1_699_999_999_997_000_000, Value: []byte{}},
				{Offset: 103, Time: 1_700_000_000_002_000_000, Key: []byte{}, Value: recs[3].Value},
			}, got)
			require.NotNil(t, got[2].Value, "an empty value stays empty")
			require.Nil(t, got[1].Value)
		})
	}
}

// TestKafkaBatchReadByClient: what the builder writes is what a Kafka
// client reads, checked with kmsg and other codec implementations: a nil
// Go value arrives as an empty value, never as a tombstone.
func TestKafkaBatchReadByClient(t *testing.T) {
	in := []Record{
		{Time: 1_700_000_000_123_456_789, Key: []byte("k"), Value: []byte("v"), Headers: []RecordHeader{{Key: "h", Value: []byte("x")}}},
		{Time: 1_700_000_000_100_000_000, Key: []byte("nil value")},
		{Time: 1_700_000_000_200_000_000, Key: []byte("deleted"), Value: []byte("ignored"), Tombstone: true},
		{Time: 1_700_000_000_150_000_000, Value: bytes.Repeat([]byte("compressible "), 1000)},
	}
	for _, c := range allCompressions {
		t.Run(c.String(), func(t *testing.T) {
			var bb BatchBuilder
			for _, r := range in {
				bb.Add(r)
			}
			b, err := bb.Build(c, 7, 3, 11)
			require.NoError(t, err)
			SetBaseOffset(b, 50)

			var kb kmsg.RecordBatch
			require.NoError(t, kb.ReadFrom(b))
			require.Equal(t, int64(50), kb.FirstOffset)
			require.Equal(t, int32(len(b)-kafkaLengthEnd), kb.Length)
			require.Equal(t, int32(-1), kb.PartitionLeaderEpoch)
			require.Equal(t, int8(2), kb.Magic)
			require.Equal(t, crc32.Checksum(b[kafkaCRCCovered:], castagnoli), uint32(kb.CRC))
			require.Equal(t, int16(c), kb.Attributes)
			require.Equal(t, int32(3), kb.LastOffsetDelta)
			require.Equal(t, int64(1_700_000_000_123), kb.FirstTimestamp)
			require.Equal(t, int64(1_700_000_000_200), kb.MaxTimestamp)
			require.Equal(t, []any{int64(7), int16(3), int32(11), int32(4)}, []any{kb.ProducerID, kb.ProducerEpoch, kb.FirstSequence, kb.NumRecords})

			raw := clientDecompress(t, c, kb.Records)
			var got []kmsg.Record
			for len(raw) > 0 {
				n, k := binary.Varint(raw)
				require.Positive(t, k)
				var r kmsg.Record
				require.NoError(t, r.ReadFrom(raw[:k+int(n)]))
				r.Length, r.TimestampDelta = 0, 0
				got = append(got, r)
				raw = raw[k+int(n):]
			}
			require.Equal(t, []kmsg.Record{
				{Key: []byte("k"), Value: []byte("v"), Headers: []kmsg.Header{{Key: "h", Value: []byte("x")}}},
				{Attributes: kafkaRecordNilValue, TimestampDelta64: -23, OffsetDelta: 1, Key: []byte("nil value"), Value: []byte{}},
				{TimestampDelta64: 77, OffsetDelta: 2, Key: []byte("deleted")},
				{TimestampDelta64: 27, OffsetDelta: 3, Value: in[3].Value},
			}, got)
			require.NotNil(t, got[1].Value, "a nil Go value is not Kafka's null")
		})
	}
}

func clientDecompress(t testing.TB, c Compression, src []byte) []byte {
	t.Helper()
	var r io.Reader
	switch c {
	case CompressionNone:
		return src
	case CompressionGzip:
		zr, err := stdgzip.NewReader(bytes.NewReader(src))
		require.NoError(t, err)
		r = zr
	case CompressionSnappy:
		out, err := s2.Decode(nil, src)
		require.NoError(t, err)
		return out
	case CompressionLZ4:
		r = lz4.NewReader(bytes.NewReader(src))
	case CompressionZstd:
		zr, err := zstd.NewReader(bytes.NewReader(src))
		require.NoError(t, err)
		defer zr.Close()
		r = zr
	}
	out, err := io.ReadAll(r)
	require.NoError(t, err)
	return out
}

func TestKafkaCorruptHeader(t *testing.T) {
	valid := buildBatch(t, CompressionSnappy, testRecords(10))
	be := binary.BigEndian
	signed := func(f func(b []byte)) func(b []byte) []byte {
		return func(b []byte) []byte { f(b); resignKafka(b); return b }
	}
	cases := []struct {
		name   string
		mutate func(b []byte) []byte
	}{
		{"short header", func(b []byte) []byte { return b[:kafkaHeaderSize-1] }},
		{"truncated", func(b []byte) []byte { return b[:len(b)-1] }},
		{"trailing byte", func(b []byte) []byte { return append(b, 0) }},
		{"length too small", func(b []byte) []byte { be.PutUint32(b[8:], uint32(len(b)-13)); return b }},
		{"crc", func(b []byte) []byte { b[17]++; return b }},
		{"magic 3", signed(func(b []byte) { b[16] = 3 })},
		{"codec 5", signed(func(b []byte) { b[22] = b[22]&^7 | 5 })},
		{"transactional without a producer", signed(func(b []byte) { b[22] |= 0x10; be.PutUint64(b[43:], math.MaxUint64) })},
		{"control not transactional", signed(func(b []byte) { b[22] |= 0x20 })},
		{"control of ten records", signed(func(b []byte) { b[22] |= 0x30; be.PutUint32(b[53:], math.MaxUint32) })},
		{"control with a sequence", signed(func(b []byte) {
			b[22] |= 0x30
			be.PutUint32(b[23:], 0)
			be.PutUint32(b[57:], 1)
		})},
		{"delete horizon", signed(func(b []byte) { b[22] |= 0x40 })},
		{"high attribute", signed(func(b []byte) { b[21] |= 0x80 })},
		{"last offset delta negative", signed(func(b []byte) { be.PutUint32(b[23:], math.MaxUint32) })},
		{"more records than offsets", signed(func(b []byte) { be.PutUint32(b[57:], 11) })},
		{"record count negative", signed(func(b []byte) { be.PutUint32(b[57:], math.MaxUint32) })},
		{"producer id 0", signed(func(b []byte) { be.PutUint64(b[43:], 0) })},
		{"producer id -2", signed(func(b []byte) { be.PutUint64(b[43:], math.MaxUint64-1) })},
		{"producer epoch -1", signed(func(b []byte) { be.PutUint16(b[51:], math.MaxUint16) })},
		{"base sequence -1", signed(func(b []byte) { be.PutUint32(b[53:], math.MaxUint32) })},
		{"max time beyond ns", signed(func(b []byte) { be.PutUint64(b[35:], uint64(maxMillis+1)) })},
		{"base time beyond ns", signed(func(b []byte) { be.PutUint64(b[27:], 1<<63) })},
		// Only decoding the records catches these.
		{"max time early", signed(func(b []byte) { be.PutUint64(b[35:], be.Uint64(b[35:])-1) })},
		{"max time late", signed(func(b []byte) { be.PutUint64(b[35:], be.Uint64(b[35:])+1) })},
		{"fewer records than offsets", signed(func(b []byte) { be.PutUint32(b[57:], 9) })},
		{"codec none", signed(func(b []byte) { b[22] &^= 7 })},
		{"codec zstd", signed(func(b []byte) { b[22] = b[22]&^7 | 4 })},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			requireCorrupt(t, tc.mutate(bytes.Clone(valid)))
		})
	}
	h, err := Validate(valid)
	require.NoError(t, err)
	require.Equal(t, 10, h.Records)
}

// rawKafkaBatch wraps a records section of n records covering offsets
// offsets in an uncompressed Kafka batch header with time 0.
func rawKafkaBatch(n, offsets int32, raw []byte) []byte {
	b := make([]byte, kafkaHeaderSize, kafkaHeaderSize+len(raw))
	b = append(b, raw...)
	be := binary.BigEndian
	be.PutUint32(b[8:], uint32(len(b)-kafkaLengthEnd))
	b[16] = VersionKafka
	be.PutUint32(b[23:], uint32(offsets-1))
	be.PutUint64(b[43:], math.MaxUint64) // producer id -1
	be.PutUint32(b[57:], uint32(n))
	resignKafka(b)
	return b
}

// TestKafkaCorruptRecords builds uncompressed Kafka batches with
// well-formed headers and malformed records.
func TestKafkaCorruptRecords(t *testing.T) {
	v := func(x int64) []byte { return binary.AppendVarint(nil, x) }
	record := func(fields ...[]byte) []byte {
		body := bytes.Join(fields, nil)
		return append(v(int64(len(body))), body...)
	}
	attrs := func(a byte) []byte { return []byte{a} }
	good := record(attrs(0), v(0), v(0), v(-1), v(0), v(0))
	// A record at offset delta 1.
	second := record(attrs(0), v(0), v(1), v(-1), v(0), v(0))
	cases := []struct {
		name       string
		n, offsets int32
		raw        []byte
	}{
		{"offset delta not index", 2, 2, append(bytes.Clone(good), good...)},
		{"offset delta skips", 2, 2, append(bytes.Clone(good), record(attrs(0), v(0), v(2), v(-1), v(0), v(0))...)},
		{"negative offset delta", 1, 1, record(attrs(0), v(0), v(-1), v(-1), v(0), v(0))},
		{"fewer records than count", 2, 2, good},
		{"trailing bytes", 1, 1, append(bytes.Clone(good), 0, 0, 0, 0, 0, 0, 0)},
		{"bytes after headers", 1, 1, record(attrs(0), v(0), v(0), v(-1), v(0), v(0), []byte{0})},
		{"negative record length", 1, 1, append(v(-1), good[1:]...)},
		{"short record", 1, 1, record(attrs(0), v(0), v(0), v(-1))},
		{"unknown record attribute", 1, 1, record(attrs(2), v(0), v(0), v(-1), v(0), v(0))},
		{"nil value with bytes", 1, 1, record(attrs(kafkaRecordNilValue), v(0), v(0), v(-1), v(1), []byte{'x'}, v(0))},
		{"nil value as null", 1, 1, record(attrs(kafkaRecordNilValue), v(0), v(0), v(-1), v(-1), v(0))},
		{"key length -2", 1, 1, record(attrs(0), v(0), v(0), v(-2), v(0), v(0))},
		{"value length -2", 1, 1, record(attrs(0), v(0), v(0), v(-1), v(-2), v(0))},
		{"value past record", 1, 1, record(attrs(0), v(0), v(0), v(-1), v(3), v(0))},
		{"negative header count", 1, 1, record(attrs(0), v(0), v(0), v(-1), v(0), v(-1))},
		{"header count too large", 1, 1, record(attrs(0), v(0), v(0), v(-1), v(0), v(1_000_000), []byte{0, 0})},
		{"null header key", 1, 1, record(attrs(0), v(0), v(0), v(-1), v(0), v(1), v(-1), v(-1))},
		{"header value -2", 1, 1, record(attrs(0), v(0), v(0), v(-1), v(0), v(1), v(0), v(-2))},
		{"time delta beyond ns", 1, 1, record(attrs(0), v(maxMillis+1), v(0), v(-1), v(0), v(0))},
		{"compacted, out of order", 2, 3, append(bytes.Clone(second), good...)},
		{"compacted, past the offsets", 1, 1, second},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b := rawKafkaBatch(tc.n, tc.offsets, tc.raw)
			if _, err := ParseHeader(b); err == nil {
				requireCorrupt(t, b)
			}
		})
	}
	// The bare bones pass: one record, and a compacted batch holding only
	// its second offset.
	_, err := Validate(rawKafkaBatch(1, 1, good))
	require.NoError(t, err)
	h, err := Validate(rawKafkaBatch(1, 2, second))
	require.NoError(t, err)
	require.Equal(t, FlagCompacted, h.Flags)
}

// TestKafkaDecompressionBound: a small batch whose records decompress past
// MaxRawBytes is corrupt, in every codec, without decompressing much more.
func TestKafkaDecompressionBound(t *testing.T) {
	if testing.Short() {
		t.Skip("compresses 64 MiB per codec")
	}
	zeros := make([]byte, MaxRawBytes+1)
	for _, c := range allCompressions[1:] {
		t.Run(c.String(), func(t *testing.T) {
			comp, err := appendCompressedKafka(nil, c, zeros)
			require.NoError(t, err)
			b := rawKafkaBatch(1, 1, comp)
			b[22] |= byte(c)
			resignKafka(b)
			require.Less(t, len(b), MaxBatchBytes)
			requireCorrupt(t, b)
		})
	}
}

// TestLogAppendTime: in a batch of LogAppendTime type, every record's time
// is the batch's max timestamp, whatever the records say.
func TestLogAppendTime(t *testing.T) {
	recs := []kmsg.Record{{Key: []byte("a"), TimestampDelta64: 1 << 62}, {Key: []byte("b"), OffsetDelta: 1, TimestampDelta64: -5}}
	b := clientBatch(t, CompressionNone, -1, 1_700_000_000_000, -1, -1, -1, recs)
	b[22] |= kafkaAttrLogAppendTime
	resignKafka(b)
	h, got, err := DecodeRecords(b, 0, nil)
	require.NoError(t, err)
	require.True(t, h.LogAppendTime)
	require.Equal(t, int64(1_700_000_000_000_000_000), h.FirstTime)
	require.Equal(t, h.FirstTime, h.MaxTime)
	for _, r := range got {
		require.Equal(t, h.MaxTime, r.Time)
	}
}

// inconsistentKafkaBatches returns commands whose Kafka batch has a valid
// header and CRC but records that contradict it, from producer 7 at
// sequence 0.
func inconsistentKafkaBatches(t testing.TB) map[string][]byte {
	t.Helper()
	be := binary.BigEndian
	mutate := func(c Compression, f func(b []byte)) []byte {
		var bb BatchBuilder
		for i := range 3 {
			bb.Add(Record{Time: 1_000_000 * int64(1000+i), Value: []byte(fmt.Sprintf("value %020d", i))})
		}
		cmd, err := bb.BuildWithPrefix(1, c, 7, 0, 0)
		require.NoError(t, err)
		cmd[0] = CmdAppend
		f(cmd[1:])
		resignKafka(cmd[1:])
		_, err = ParseHeader(cmd[1:])
		require.NoError(t, err, "the header must pass, so that only the records can fail")
		return cmd
	}
	return map[string][]byte{
		"record count one less": mutate(CompressionNone, func(b []byte) { be.PutUint32(b[57:], 2); be.PutUint32(b[23:], 1) }),
		"max time past":         mutate(CompressionNone, func(b []byte) { be.PutUint64(b[35:], 1000) }),
		"record length":         mutate(CompressionNone, func(b []byte) { b[kafkaHeaderSize] += 2 }),
		"zstd garbage":          mutate(CompressionZstd, func(b []byte) { b[len(b)-3] ^= 0xff }),
		"lz4 as none":           mutate(CompressionLZ4, func(b []byte) { b[22] &^= 7 }),
	}
}

func TestApplyRefusesInvalidKafkaBatch(t *testing.T) {
	for name, cmd := range inconsistentKafkaBatches(t) {
		t.Run(name, func(t *testing.T) {
			p := openPartition(t, openTestStore(t), 1)
			require.Equal(t, []Result{rejected(StatusInvalid)}, applyCmds(t, p, cmd))
			require.Equal(t, Meta{AppliedIndex: 1, MaxTime: math.MinInt64}, p.Meta())
		})
	}
}

// TestMixedFormats: a partition written before Kafka batches holds legacy
// batches, and new Kafka batches after them. Reads, the time index,
// idempotence, key compaction, retention and snapshots work across both,
// and key compaction keeps each batch in its format.
func TestMixedFormats(t *testing.T) {
	build := func(legacy bool, pid uint64, seq int32, recs ...kv) []byte {
		bb := BatchBuilder{legacy: legacy}
		for _, r := range recs {
			rec := Record{Time: 1_000_000 * int64(1000+seq), Key: []byte(r.k), Value: []byte(r.v)}
			if r.v == "-" {
				rec.Tombstone, rec.Value = true, nil
			}
			bb.Add(rec)
		}
		b, err := bb.BuildWithPrefix(1, CompressionZstd, pid, 0, seq)
		require.NoError(t, err)
		b[0] = CmdAppend
		return b
	}
	p := openPartition(t, openTestStore(t), 1)
	require.Equal(t, []Result{ok(0), ok(2), ok(3), ok(5), dup(3)}, applyCmds(t, p,
		build(true, 3, 0, kv{"a", "1"}, kv{"b", "1"}),
		build(false, 3, 2, kv{"a", "2"}),
		build(true, 3, 3, kv{"c", "1"}, kv{"b", "-"}),
		build(false, 3, 5, kv{"d", "1"}, kv{"e", "1"}),
		build(false, 3, 3, kv{"c", "1"}, kv{"b", "-"}), // a retry, found stored
	))
	want := []string{"0:a=1", "1:b=1", "2:a=2", "3:c=1", "4:b=-", "5:d=1", "6:e=1"}
	require.Equal(t, want, kvLog(t, p))
	versions := func() []byte {
		var vs []byte
		for _, b := range rawBatches(t, p, 0, p.Meta().NextOffset, math.MaxInt) {
			vs = append(vs, b[16])
		}
		return vs
	}
	require.Equal(t, []byte{1, 2, 1, 2}, versions())
	require.Equal(t, int64(2), mustOffsetForTime(t, p, 1_000_000*1001, 7))
	require.Equal(t, int64(5), mustOffsetForTime(t, p, 1_000_000*1004, 7))

	compactNow(t, p, CompactOptions{Now: 2_000_000_000, DeleteRetention: 1 << 40})
	require.Equal(t, []string{"2:a=2", "3:c=1", "4:b=-", "5:d=1", "6:e=1"}, kvLog(t, p))
	require.Equal(t, []byte{1, 2, 1, 2}, versions(), "each batch keeps its format")

	snap := p.Snapshot()
	var buf bytes.Buffer
	_, err := snap.WriteTo(&buf)
	require.NoError(t, err)
	require.NoError(t, snap.Close())
	r := openPartition(t, openTestStore(t), 5)
	require.NoError(t, r.Restore(bytes.NewReader(buf.Bytes())))
	require.Equal(t, kvLog(t, p), kvLog(t, r))
	require.Equal(t, p.Meta(), r.Meta())

	// Retention by time removes the legacy batches, older than 1.0035 s.
	require.Equal(t, []Result{ok(5)}, applyCmds(t, r, RetainCommand(1_000_000*1004, 500_000, 0)))
	require.Equal(t, []string{"5:d=1", "6:e=1"}, kvLog(t, r))
	require.Equal(t, []byte{2}, func() []byte { p = r; return versions() }())
}

// TestBuilderFallsBackToLegacy: a producer identity that Kafka's batch
// cannot carry is written in the legacy format, which keeps it whole.
func TestBuilderFallsBackToLegacy(t *testing.T) {
	require.True(t, KafkaFits(1, 0))
	require.True(t, KafkaFits(math.MaxInt64, math.MaxInt16))
	require.False(t, KafkaFits(1, math.MaxInt16+1))
	require.False(t, KafkaFits(math.MaxInt64+1, 0))

	var bb BatchBuilder
	bb.Add(Record{Key: []byte("k")})
	_, err := bb.Build(CompressionNone, 1, math.MaxInt16+1, 0)
	require.Error(t, err, "a Kafka batch cannot carry the epoch")

	bb.SetLegacy(!KafkaFits(1, math.MaxInt16+1))
	bb.Add(Record{Time: 1_234_567, Key: []byte("k")})
	b, err := bb.Build(CompressionNone, 1, math.MaxInt16+1, 5)
	require.NoError(t, err)
	h, recs, err := DecodeRecords(b, 0, nil)
	require.NoError(t, err)
	require.Equal(t, uint8(VersionLegacy), h.Version)
	require.Equal(t, uint32(math.MaxInt16+1), h.ProducerEpoch)
	require.Equal(t, int64(1_234_567), recs[0].Time, "legacy batches keep nanoseconds")

	bb.SetLegacy(false)
	require.Zero(t, bb.Count())
	bb.Add(Record{Key: []byte("k")})
	b, err = bb.Build(CompressionNone, 1, 2, 5)
	require.NoError(t, err)
	require.Equal(t, byte(VersionKafka), b[16])
}

// TestCompactKeepsLogAppendTime: key compaction rewrites a batch of
// LogAppendTime type as one, so its records keep the append time.
func TestCompactKeepsLogAppendTime(t *testing.T) {
	recs := []kmsg.Record{{Key: []byte("a"), Value: []byte("1"), TimestampDelta64: 7}, {Key: []byte("b"), Value: []byte("1"), OffsetDelta: 1}}
	b := clientBatch(t, CompressionLZ4, 5, 1_700_000_000_000, -1, -1, -1, recs)
	b[22] |= kafkaAttrLogAppendTime
	resignKafka(b)
	p := openPartition(t, openTestStore(t), 1)
	// The head (offset 3) is left alone, and its records do not count.
	applyCmds(t, p, append([]byte{CmdAppend}, b...), kvCmd(t, CompressionNone, kv{"a", "2"}), kvCmd(t, CompressionNone, kv{"z", "1"}))
	compactNow(t, p, CompactOptions{Now: 2_000_000_000_000_000_000})
	require.Equal(t, []string{"1:b=1", "2:a=2", "3:z=1"}, kvLog(t, p))
	first := rawBatches(t, p, 0, 4, math.MaxInt)[0]
	h, got, err := DecodeRecords(first, 0, nil)
	require.NoError(t, err)
	require.True(t, h.LogAppendTime)
	require.Equal(t, CompressionLZ4, h.Compression)
	require.Equal(t, FlagCompacted, h.Flags)
	require.Equal(t, []Record{{Offset: 1, Time: 1_700_000_000_000_000_000, Key: []byte("b"), Value: []byte("1")}}, got)
}
