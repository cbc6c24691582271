package storage

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

var allCompressions = []Compression{
	CompressionNone, CompressionGzip, CompressionSnappy, CompressionLZ4, CompressionZstd,
}

// testRecords returns n records covering nil and empty keys, values and
// header values, tombstones (keyed and keyless), negative time deltas, and
// compressible payloads.
func testRecords(n int) []Record {
	recs := make([]Record, n)
	for i := range recs {
		// Whole milliseconds, which Kafka batches keep.
		r := Record{Time: 1_700_000_000_000_000_000 + int64(i%7)*1_000_000 - int64(i%3)*5_000_000}
		switch i % 4 {
		case 0:
			r.Key, r.Value = nil, nil
		case 1:
			r.Key, r.Value = []byte{}, []byte{}
		case 2:
			r.Key, r.Value = []byte(fmt.Sprintf("key-%d", i)), nil
		case 3:
			r.Key, r.Value = nil, []byte(fmt.Sprintf("value %d %0200d", i, i))
		}
		if i%6 == 5 {
			r.Value, r.Tombstone = nil, true
		}
		if i%5 == 0 {
			r.Headers = []RecordHeader{
				{Key: "trace", Value: []byte("abc")},
				{Key: "", Value: nil},
				{Key: "empty", Value: []byte{}},
			}
		}
		recs[i] = r
	}
	return recs
}

// buildBatch builds a Kafka batch of recs.
func buildBatch(t testing.TB, c Compression, recs []Record) []byte {
	t.Helper()
	return buildFormat(t, false, c, recs)
}

// buildLegacyBatch builds a legacy batch of recs, as older versions wrote.
func buildLegacyBatch(t testing.TB, c Compression, recs []Record) []byte {
	t.Helper()
	return buildFormat(t, true, c, recs)
}

// formats names the two batch formats for subtests: legacy or not.
var formats = []struct {
	name   string
	legacy bool
}{{"kafka", false}, {"legacy", true}}

func buildFormat(t testing.TB, legacy bool, c Compression, recs []Record) []byte {
	t.Helper()
	bb := BatchBuilder{legacy: legacy}
	for _, r := range recs {
		bb.Add(r)
	}
	b, err := bb.Build(c, 42, 3, 100)
	require.NoError(t, err)
	return b
}

// withOffsets returns recs with Offset set as decoding from base sets it.
func withOffsets(recs []Record, base int64) []Record {
	out := make([]Record, len(recs))
	for i, r := range recs {
		r.Offset = base + int64(i)
		out[i] = r
	}
	return out
}

// resign recomputes the CRC of b, so that a test reaches the checks behind it.
func resign(b []byte) {
	binary.LittleEndian.PutUint32(b[12:], crc32.Checksum(b[16:], castagnoli))
}

func TestRoundTrip(t *testing.T) {
	cases := []struct {
		name string
		recs []Record
	}{
		{"one nil record", []Record{{}}},
		{"one empty record", []Record{{Key: []byte{}, Value: []byte{}, Headers: []RecordHeader{{Key: "", Value: []byte{}}}}}},
		{"one tombstone", []Record{{Key: []byte("k"), Tombstone: true}}},
		{"tombstones only", []Record{{Key: []byte("k"), Tombstone: true, Headers: []RecordHeader{{Key: "h", Value: nil}}}, {Tombstone: true}}},
		{"few", testRecords(5)},
		{"many", testRecords(2000)},
		{"extreme times", []Record{{Time: math.MaxInt64}, {Time: math.MinInt64}, {Time: 0}}},
		{"large value", []Record{{Key: []byte("k"), Value: make([]byte, 1<<20)}}},
	}
	for _, f := range formats {
		for _, c := range allCompressions {
			for _, tc := range cases {
				t.Run(f.name+"/"+c.String()+"/"+tc.name, func(t *testing.T) {
					testRoundTrip(t, f.legacy, c, tc.recs)
				})
			}
		}
	}
}

func testRoundTrip(t *testing.T, legacy bool, c Compression, in []Record) {
	b := buildFormat(t, legacy, c, in)
	want := in
	version := VersionKafka
	if legacy {
		version = VersionLegacy
	} else {
		// Kafka batches keep milliseconds.
		want = slices.Clone(in)
		for i := range want {
			want[i].Time = millis(in[i].Time) * int64(time.Millisecond)
		}
	}
	h, err := Validate(b)
	require.NoError(t, err)
	require.Equal(t, version, int(h.Version))
	require.Equal(t, c, h.Compression)
	require.Equal(t, uint32(len(want)), h.Count)
	require.Equal(t, uint32(len(b)), h.Length)
	require.Equal(t, uint64(42), h.ProducerID)
	require.Equal(t, uint32(3), h.ProducerEpoch)
	require.Equal(t, int32(100), h.BaseSequence)
	require.Equal(t, want[0].Time, h.FirstTime)
	maxTime := want[0].Time
	for _, r := range want {
		maxTime = max(maxTime, r.Time)
	}
	require.Equal(t, maxTime, h.MaxTime)
	require.Equal(t, int64(len(want)-1), h.LastOffset())

	h2, got, err := DecodeRecords(b, 0, nil)
	require.NoError(t, err)
	require.Equal(t, h, h2)
	require.Equal(t, withOffsets(want, 0), got)
	for i := range got {
		require.Equal(t, want[i].Key == nil, got[i].Key == nil, "record %d key nil-ness", i)
		require.Equal(t, want[i].Value == nil, got[i].Value == nil, "record %d value nil-ness", i)
		require.Equal(t, want[i].Tombstone, got[i].Tombstone, "record %d tombstone", i)
	}
}

func TestDecodeRecordsMinOffset(t *testing.T) {
	recs := testRecords(50)
	for _, c := range allCompressions {
		t.Run(c.String(), func(t *testing.T) {
			b := buildBatch(t, c, recs)
			SetBaseOffset(b, 1000)

			prefix := []Record{{Offset: -1}}
			h, got, err := DecodeRecords(b, 1020, prefix)
			require.NoError(t, err)
			require.Equal(t, int64(1000), h.BaseOffset)
			require.Equal(t, int64(1049), h.LastOffset())
			require.Equal(t, append([]Record{{Offset: -1}}, withOffsets(recs, 1000)[20:]...), got)

			_, got, err = DecodeRecords(b, 2000, nil)
			require.NoError(t, err)
			require.Empty(t, got)

			_, got, err = DecodeRecords(b, math.MinInt64, nil)
			require.NoError(t, err)
			require.Equal(t, withOffsets(recs, 1000), got)
		})
	}
}

func TestDecodedSlicesDoNotOverlap(t *testing.T) {
	recs := []Record{
		{Key: []byte("a"), Value: []byte("b"), Headers: []RecordHeader{{Key: "h", Value: []byte("v")}}},
		{Key: []byte("c"), Value: []byte("d"), Headers: []RecordHeader{{Key: "i", Value: []byte("w")}}},
	}
	b := buildBatch(t, CompressionNone, recs)
	_, got, err := DecodeRecords(b, 0, nil)
	require.NoError(t, err)
	_ = append(got[0].Key, 'X')
	_ = append(got[0].Value, 'X')
	_ = append(got[0].Headers, RecordHeader{Key: "X"})
	_ = append(got[0].Headers[0].Value, 'X')
	require.Equal(t, withOffsets(recs, 0), got)
}

func TestSetBaseOffsetKeepsCRC(t *testing.T) {
	for _, c := range allCompressions {
		b := buildBatch(t, c, testRecords(10))
		for _, off := range []int64{0, 1, 1 << 40, math.MaxInt64 - 9, -5} {
			SetBaseOffset(b, off)
			h, err := Validate(b)
			require.NoError(t, err, c)
			require.Equal(t, off, h.BaseOffset)
		}
	}
}

func TestBuilder(t *testing.T) {
	var bb BatchBuilder
	_, err := bb.Build(CompressionNone, 0, 0, 0)
	require.Error(t, err, "empty batch")

	r := Record{Time: 5, Key: []byte("key"), Value: []byte("value"), Headers: []RecordHeader{{Key: "h", Value: nil}}}
	bb.Add(r)
	require.Equal(t, 1, bb.Count())
	require.LessOrEqual(t, bb.RawSize(), RecordSize(r))
	before := bb.RawSize()
	bb.Add(r)
	require.LessOrEqual(t, bb.RawSize()-before, RecordSize(r))

	_, err = bb.Build(Compression(9), 0, 0, 0)
	require.Error(t, err, "invalid compression")

	// Build leaves the builder untouched, and producerID 0 normalises the
	// idempotence fields.
	b1, err := bb.Build(CompressionZstd, 0, 7, 7)
	require.NoError(t, err)
	b2, err := bb.Build(CompressionZstd, 0, 7, 7)
	require.NoError(t, err)
	require.Equal(t, b1, b2)
	h, err := Validate(b1)
	require.NoError(t, err)
	require.Equal(t, uint32(0), h.ProducerEpoch)
	require.Equal(t, int32(-1), h.BaseSequence)
	require.Equal(t, len(b1), cap(b1), "no slack capacity in the result")

	bb.Reset()
	require.Equal(t, 0, bb.Count())
	require.Equal(t, 0, bb.RawSize())
	bb.Add(Record{Time: 9_999_999})
	b3, err := bb.Build(CompressionNone, 1, 2, 3)
	require.NoError(t, err)
	_, got, err := DecodeRecords(b3, 0, nil)
	require.NoError(t, err)
	require.Equal(t, []Record{{Time: 9_000_000}}, got, "rounded down to a millisecond")
}

func TestBuildTooLarge(t *testing.T) {
	var bb BatchBuilder
	bb.Add(Record{Value: make([]byte, MaxBatchBytes)})
	_, err := bb.Build(CompressionNone, 0, 0, 0)
	require.ErrorIs(t, err, ErrBatchTooLarge)
	// Compressed, the same records fit.
	b, err := bb.Build(CompressionZstd, 0, 0, 0)
	require.NoError(t, err)
	_, err = Validate(b)
	require.NoError(t, err)

	bb.Reset()
	bb.Add(Record{Value: make([]byte, MaxRawBytes)})
	_, err = bb.Build(CompressionZstd, 0, 0, 0)
	require.ErrorIs(t, err, ErrBatchTooLarge)
}

// requireCorrupt checks that both full decoders reject b with ErrCorrupt.
func requireCorrupt(t *testing.T, b []byte, msgAndArgs ...any) {
	t.Helper()
	_, err := Validate(b)
	require.ErrorIs(t, err, ErrCorrupt, msgAndArgs...)
	_, recs, err := DecodeRecords(b, 0, nil)
	require.ErrorIs(t, err, ErrCorrupt, msgAndArgs...)
	require.Empty(t, recs, msgAndArgs...)
}

func TestCorruptByteFlips(t *testing.T) {
	for _, f := range formats {
		for _, c := range allCompressions {
			t.Run(f.name+"/"+c.String(), func(t *testing.T) {
				testCorruptByteFlips(t, buildFormat(t, f.legacy, c, testRecords(20)))
			})
		}
	}
}

func testCorruptByteFlips(t *testing.T, b []byte) {
	for i := 8; i < len(b); i++ {
		if b[16] == VersionKafka && i >= 12 && i < 16 {
			continue // the leader epoch, outside the CRC as the base offset is
		}
		for _, mask := range []byte{0x01, 0x80} {
			b[i] ^= mask
			requireCorrupt(t, b, "byte %d ^ %#x", i, mask)
			b[i] ^= mask
		}
	}
	_, err := Validate(b)
	require.NoError(t, err)
}

func TestCorruptHeader(t *testing.T) {
	valid := buildLegacyBatch(t, CompressionSnappy, testRecords(10))
	le := binary.LittleEndian
	cases := []struct {
		name   string
		mutate func(b []byte) []byte
	}{
		{"empty", func(b []byte) []byte { return nil }},
		{"short header", func(b []byte) []byte { return b[:legacyHeaderSize-1] }},
		{"truncated", func(b []byte) []byte { return b[:len(b)-1] }},
		{"truncated to header", func(b []byte) []byte { return b[:legacyHeaderSize] }},
		{"trailing byte", func(b []byte) []byte { return append(b, 0) }},
		{"length too small", func(b []byte) []byte { le.PutUint32(b[8:], uint32(len(b)-1)); return b }},
		{"length too large", func(b []byte) []byte { le.PutUint32(b[8:], uint32(len(b)+1)); return b }},
		{"version 0", func(b []byte) []byte { b[16] = 0; resign(b); return b }},
		{"version 2", func(b []byte) []byte { b[16] = 2; resign(b); return b }},
		{"unknown compression", func(b []byte) []byte { b[17] = 5; resign(b); return b }},
		{"reserved flags", func(b []byte) []byte { le.PutUint16(b[18:], 2); resign(b); return b }},
		{"count 0", func(b []byte) []byte { le.PutUint32(b[20:], 0); resign(b); return b }},
		{"count too small", func(b []byte) []byte { le.PutUint32(b[20:], 9); resign(b); return b }},
		{"count too large", func(b []byte) []byte { le.PutUint32(b[20:], 11); resign(b); return b }},
		{"count huge", func(b []byte) []byte { le.PutUint32(b[20:], math.MaxUint32); resign(b); return b }},
		{"raw length over limit", func(b []byte) []byte { le.PutUint32(b[56:], MaxRawBytes+1); resign(b); return b }},
		{"raw length one short", func(b []byte) []byte { le.PutUint32(b[56:], le.Uint32(b[56:])-1); resign(b); return b }},
		{"raw length one long", func(b []byte) []byte { le.PutUint32(b[56:], le.Uint32(b[56:])+1); resign(b); return b }},
		{"crc", func(b []byte) []byte { b[12]++; return b }},
		{"max time early", func(b []byte) []byte { le.PutUint64(b[32:], le.Uint64(b[32:])-1); resign(b); return b }},
		{"max time late", func(b []byte) []byte { le.PutUint64(b[32:], le.Uint64(b[32:])+1); resign(b); return b }},
		{"first time", func(b []byte) []byte { le.PutUint64(b[24:], le.Uint64(b[24:])+1); resign(b); return b }},
	}
	// Cases that only decoding the records section can catch.
	recordLevel := map[string]bool{
		"count too small": true, "count too large": true,
		"raw length one short": true, "raw length one long": true,
		"max time early": true, "max time late": true, "first time": true,
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b := tc.mutate(append([]byte(nil), valid...))
			requireCorrupt(t, b)
			if !recordLevel[tc.name] {
				_, err := ParseHeader(b)
				require.ErrorIs(t, err, ErrCorrupt)
			}
		})
	}
}

// TestLyingRawLength re-signs batches whose rawLength is off by a little or a
// lot, so that only the decompression guard can catch them.
func TestLyingRawLength(t *testing.T) {
	for _, c := range allCompressions {
		valid := buildLegacyBatch(t, c, testRecords(30))
		raw := binary.LittleEndian.Uint32(valid[56:])
		for _, claim := range []uint32{raw - 1, raw + 1, raw / 2, raw * 2, 1 << 20} {
			b := append([]byte(nil), valid...)
			binary.LittleEndian.PutUint32(b[56:], claim)
			resign(b)
			requireCorrupt(t, b, "%s claiming %d of %d bytes", c, claim, raw)
		}
	}
}

// rawRecord encodes one record of a records section from its fields.
func rawRecord(fields ...[]byte) []byte {
	var body []byte
	for _, f := range fields {
		body = append(body, f...)
	}
	return append(binary.AppendUvarint(nil, uint64(len(body))), body...)
}

// rawBatch wraps a records section of count records in a valid uncompressed
// batch header with time 0.
func rawBatch(count uint32, raw []byte) []byte {
	b := make([]byte, legacyHeaderSize, legacyHeaderSize+len(raw))
	b = append(b, raw...)
	le := binary.LittleEndian
	le.PutUint32(b[8:], uint32(len(b)))
	b[16] = VersionLegacy
	le.PutUint32(b[20:], count)
	le.PutUint32(b[56:], uint32(len(raw)))
	resign(b)
	return b
}

func TestTombstone(t *testing.T) {
	v := func(x int64) []byte { return binary.AppendVarint(nil, x) }
	u := func(x uint64) []byte { return binary.AppendUvarint(nil, x) }
	key := append(v(1), 'k')

	t.Run("encoding", func(t *testing.T) {
		// A tombstone's value length is -2, and its Value is not written.
		bb := BatchBuilder{legacy: true}
		bb.Add(Record{Key: []byte("k"), Value: []byte("ignored"), Tombstone: true})
		b, err := bb.Build(CompressionNone, 0, 0, 0)
		require.NoError(t, err)
		require.Equal(t, rawRecord(v(0), u(0), key, v(-2), u(0)), b[legacyHeaderSize:])
		require.Equal(t, RecordSize(Record{Key: []byte("k")}), RecordSize(Record{Key: []byte("k"), Value: []byte("ignored"), Tombstone: true}),
			"a tombstone costs one byte, as a nil value does")

		// A batch without tombstones is encoded as before they existed.
		bb.Reset()
		bb.Add(Record{Key: []byte("k")})
		b, err = bb.Build(CompressionNone, 0, 0, 0)
		require.NoError(t, err)
		require.Equal(t, rawRecord(v(0), u(0), key, v(-1), u(0)), b[legacyHeaderSize:])
	})

	t.Run("decoding", func(t *testing.T) {
		// Hand-encoded, as a batch written before tombstones existed would
		// be (nil and empty values) next to a tombstone.
		raw := rawRecord(v(0), u(0), key, v(-1), u(0))
		raw = append(raw, rawRecord(v(0), u(1), key, v(0), u(0))...)
		raw = append(raw, rawRecord(v(0), u(2), key, v(-2), u(1), u(1), []byte("h"), v(-1))...)
		_, got, err := DecodeRecords(rawBatch(3, raw), 0, nil)
		require.NoError(t, err)
		require.Equal(t, []Record{
			{Offset: 0, Key: []byte("k")},
			{Offset: 1, Key: []byte("k"), Value: []byte{}},
			{Offset: 2, Key: []byte("k"), Tombstone: true, Headers: []RecordHeader{{Key: "h"}}},
		}, got)
		require.Nil(t, got[0].Value)
		require.NotNil(t, got[1].Value)
		require.Nil(t, got[2].Value)
	})
}

// TestCorruptRecords builds uncompressed batches with well-formed headers
// and malformed records sections.
func TestCorruptRecords(t *testing.T) {
	record := rawRecord
	v := func(x int64) []byte { return binary.AppendVarint(nil, x) }
	u := func(x uint64) []byte { return binary.AppendUvarint(nil, x) }
	good := record(v(0), u(0), v(-1), v(-1), u(0))
	cases := []struct {
		name  string
		count uint32
		raw   []byte
	}{
		{"offset delta not index", 2, append(append([]byte(nil), good...), record(v(0), u(0), v(-1), v(-1), u(0))...)},
		{"offset delta skips", 2, append(append([]byte(nil), good...), record(v(0), u(2), v(-1), v(-1), u(0))...)},
		{"fewer records than count", 2, append(append([]byte(nil), good...), 0, 0, 0, 0, 0, 0)},
		{"trailing bytes", 1, append(append([]byte(nil), good...), 0, 0, 0, 0, 0, 0)},
		{"bytes after headers", 1, record(v(0), u(0), v(-1), v(-1), u(0), []byte{0})},
		{"key length -2", 1, record(v(0), u(0), v(-2), v(-1), u(0))},
		{"key past record", 1, record(v(0), u(0), v(100), v(-1), u(0))},
		{"value past record", 1, record(v(0), u(0), v(-1), v(3), u(0))},
		{"value length -3", 1, record(v(0), u(0), v(-1), v(-3), u(0))},
		{"bytes after tombstone", 1, record(v(0), u(0), v(-1), v(-2), []byte{'x'}, u(0))},
		{"record length past section", 1, append(u(200), v(0)[0], u(0)[0], v(-1)[0], v(-1)[0], u(0)[0])},
		{"header count too large", 1, record(v(0), u(0), v(-1), v(-1), u(1_000_000), []byte{0, 0})},
		{"header missing", 1, record(v(0), u(0), v(-1), v(-1), u(2), u(0), v(-1), []byte{9, 9})},
		{"header key past record", 1, record(v(0), u(0), v(-1), v(-1), u(1), u(10), v(-1))},
		{"header value -2", 1, record(v(0), u(0), v(-1), v(-1), u(1), u(0), v(-2))},
		{"bad varint", 1, record([]byte{0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01}, u(0), v(-1), v(-1), u(0))},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for len(tc.raw) < int(tc.count)*minRecordSize {
				tc.raw = append(tc.raw, 0)
			}
			b := rawBatch(tc.count, tc.raw)
			_, err := ParseHeader(b)
			require.NoError(t, err)
			requireCorrupt(t, b)
		})
	}
}

func TestCompressionNames(t *testing.T) {
	for _, c := range allCompressions {
		require.True(t, c.Valid())
		got, err := ParseCompression(c.String())
		require.NoError(t, err)
		require.Equal(t, c, got)
	}
	require.False(t, Compression(5).Valid())
	require.Equal(t, "compression(5)", Compression(5).String())
	_, err := ParseCompression("brotli")
	require.Error(t, err)
	require.False(t, errors.Is(err, ErrCorrupt))
}
