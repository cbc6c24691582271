package storage

import (
	"encoding/binary"
	"math"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func FuzzDecodeRecords(f *testing.F) {
	for _, c := range allCompressions {
		for _, legacy := range []bool{false, true} {
			addDecodeSeeds(f, legacy, c)
		}
		// A Kafka client's batches, codecs framed as clients frame them.
		recs := []kmsg.Record{
			{Key: []byte("k"), Value: []byte("v"), Headers: []kmsg.Header{{Key: "h", Value: []byte("x")}}},
			{TimestampDelta64: 3, OffsetDelta: 1, Key: []byte("gone")},
			{TimestampDelta64: -2, OffsetDelta: 2, Value: []byte{}},
		}
		f.Add(clientBatch(f, c, 1_700_000_000_000, 1_700_000_000_003, 5, 1, 8, recs), int64(1))
		f.Add(clientBatch(f, c, -1, 1, -1, -1, -1, recs[:1]), int64(0))
		// A transactional batch.
		b := clientBatch(f, c, 1_700_000_000_000, 1_700_000_000_003, 5, 1, 8, recs)
		b[22] |= kafkaAttrTransactional
		resignKafka(b)
		f.Add(b, int64(0))
	}
	// Transaction markers: a commit and an abort.
	f.Add(buildMarker(txnMarker{pid: 7, epoch: 2, commit: true, coordinatorEpoch: 4, now: 1_700_000_000_000_000_000}), int64(0))
	f.Add(buildMarker(txnMarker{pid: math.MaxInt64, epoch: math.MaxInt16, coordinatorEpoch: -1, now: -5_000_000}), int64(1))
	f.Fuzz(func(t *testing.T, b []byte, minOffset int64) {
		fuzzDecodeRecords(t, b, minOffset)
	})
}

// addDecodeSeeds adds batches of the format and codec to f's corpus.
func addDecodeSeeds(f *testing.F, legacy bool, c Compression) {
	f.Add(buildFormat(f, legacy, c, testRecords(1)), int64(0))
	f.Add(buildFormat(f, legacy, c, testRecords(7)), int64(3))
	bb := BatchBuilder{legacy: legacy}
	bb.Add(Record{Time: -5, Key: []byte("k"), Headers: []RecordHeader{{Key: "a", Value: []byte("b")}}})
	bb.Add(Record{Time: 10, Value: []byte{}})
	bb.Add(Record{Time: 7, Key: []byte("deleted"), Tombstone: true, Headers: []RecordHeader{{Key: "why", Value: []byte("gdpr")}}})
	bb.Add(Record{Time: 8, Key: []byte("deleted"), Value: nil})
	b, err := bb.Build(c, 0, 0, 0)
	require.NoError(f, err)
	SetBaseOffset(b, 77)
	f.Add(b, int64(78))
	// Batches that key compaction rewrote: records at some offsets,
	// or none.
	bb.Reset()
	bb.addAt(Record{Time: 3, Key: []byte("k"), Value: []byte("v")}, 2)
	bb.addAt(Record{Time: 1, Key: []byte("j"), Tombstone: true}, 5)
	b, err = bb.build(0, c, batchIdentity{flags: FlagCompacted, count: 9, producerID: 4, epoch: 1, baseSeq: 10})
	require.NoError(f, err)
	f.Add(b, int64(3))
	bb.Reset()
	b, err = bb.build(0, c, batchIdentity{flags: FlagCompacted, count: 3, firstTime: 5_000_000, maxTime: 9_000_000})
	require.NoError(f, err)
	f.Add(b, int64(0))
}

func fuzzDecodeRecords(t *testing.T, b []byte, minOffset int64) {
	hp, perr := ParseHeader(b)
	h, err := Validate(b)
	_, recs, derr := DecodeRecords(b, math.MinInt64, nil)
	if err != nil {
		require.ErrorIs(t, err, ErrCorrupt)
		require.ErrorIs(t, derr, ErrCorrupt)
		if perr != nil {
			require.ErrorIs(t, perr, ErrCorrupt)
		}
		return
	}
	require.NoError(t, perr)
	require.NoError(t, derr)
	require.Equal(t, hp, h)
	compacted := h.Flags&FlagCompacted != 0
	if !compacted {
		require.Len(t, recs, int(h.Count))
	}
	if h.Records >= 0 {
		require.Len(t, recs, h.Records)
	}
	for i, r := range recs {
		require.GreaterOrEqual(t, r.Offset, h.BaseOffset)
		require.LessOrEqual(t, r.Offset, h.LastOffset())
		if i > 0 {
			require.Greater(t, r.Offset, recs[i-1].Offset)
		}
	}

	// The records at or past minOffset are a suffix of all of them.
	_, tail, err := DecodeRecords(b, minOffset, nil)
	require.NoError(t, err)
	var want []Record
	for _, r := range recs {
		if r.Offset >= minOffset {
			want = append(want, r)
		}
	}
	require.Equal(t, want, tail)

	// Rebuilding the decoded records in the same format yields the
	// same records.
	bb := BatchBuilder{legacy: h.Version == VersionLegacy}
	for _, r := range recs {
		bb.addAt(r, uint64(r.Offset-h.BaseOffset))
	}
	id := batchIdentity{flags: h.Flags, count: h.Count, logAppendTime: h.LogAppendTime, producerID: h.ProducerID, epoch: h.ProducerEpoch, baseSeq: h.BaseSequence, firstTime: h.FirstTime, maxTime: h.MaxTime}
	if h.ProducerID == 0 {
		id.epoch, id.baseSeq = 0, -1
	}
	rebuilt, err := bb.build(0, h.Compression, id)
	require.NoError(t, err)
	if h.Transactional || h.Control {
		// The builder writes neither: the state machine writes markers,
		// producers set the transactional bit.
		if h.Control {
			mk, err := ParseTxnMarker(b)
			require.NoError(t, err)
			rebuilt = buildMarker(txnMarker{pid: h.ProducerID, epoch: h.ProducerEpoch, commit: mk.Commit, coordinatorEpoch: mk.CoordinatorEpoch, now: h.MaxTime})
		} else {
			rebuilt[22] |= kafkaAttrTransactional
			resignKafka(rebuilt)
		}
	}
	SetBaseOffset(rebuilt, h.BaseOffset)
	h2, err := Validate(rebuilt)
	require.NoError(t, err)
	require.Equal(t, h.Count, h2.Count)
	require.Equal(t, h.Transactional, h2.Transactional)
	require.Equal(t, h.Control, h2.Control)
	if len(recs) > 0 {
		require.Equal(t, h.Compression, h2.Compression)
	}
	if h.ProducerID != 0 {
		require.Equal(t, h.ProducerEpoch, h2.ProducerEpoch)
		require.Equal(t, h.BaseSequence, h2.BaseSequence)
	}
	_, recs2, err := DecodeRecords(rebuilt, math.MinInt64, nil)
	require.NoError(t, err)
	require.Equal(t, recs, recs2)
}

func FuzzRoundTrip(f *testing.F) {
	f.Add([]byte("key"), []byte("value"), "header", int64(0), int64(1), uint8(0), uint8(0))
	f.Add([]byte{}, []byte(nil), "", int64(math.MaxInt64), int64(math.MinInt64), uint8(4), uint8(7))
	f.Add([]byte(nil), make([]byte, 1000), "h", int64(-1), int64(5), uint8(3), uint8(3))
	f.Add([]byte("key"), []byte("ignored"), "h", int64(3), int64(2), uint8(1), uint8(8))
	f.Add([]byte("key"), []byte{}, "", int64(3), int64(2), uint8(2), uint8(16+8+2))
	f.Add([]byte("key"), []byte("value"), "header", int64(0), int64(1), uint8(0), uint8(32))
	f.Add([]byte{}, []byte(nil), "", int64(math.MaxInt64), int64(math.MinInt64), uint8(4), uint8(32+7))
	f.Add([]byte("key"), []byte{}, "", int64(-1_500_000), int64(2_999_999), uint8(2), uint8(32+16+8+2))
	f.Fuzz(func(t *testing.T, key, value []byte, hkey string, t0, t1 int64, comp, shape uint8) {
		c := Compression(comp % uint8(len(allCompressions)))
		// shape selects nil-ness (the fuzzer only produces non-nil
		// slices), tombstones, one record or two, and the format.
		legacy := shape&32 != 0
		if shape&1 != 0 {
			key = nil
		}
		if shape&2 != 0 {
			value = nil
		}
		in := []Record{
			{Time: t0, Key: key, Value: value},
			{Time: t1, Key: value, Value: key, Headers: []RecordHeader{{Key: hkey, Value: value}, {Key: string(key), Value: nil}}},
		}
		// Tombstones: the builder ignores their Value, and decoding
		// gives nil.
		if shape&8 != 0 {
			in[0].Tombstone = true
		}
		if shape&16 != 0 {
			in[1].Tombstone = true
		}
		if shape&4 != 0 {
			in = in[:1]
		}
		want := withOffsets(in, 5)
		for i := range want {
			if want[i].Tombstone {
				want[i].Value = nil
			}
			if !legacy {
				want[i].Time = millis(want[i].Time) * int64(time.Millisecond)
			}
		}
		bb := BatchBuilder{legacy: legacy}
		for _, r := range in {
			bb.Add(r)
		}
		require.LessOrEqual(t, bb.RawSize(), RecordSize(in[0])+RecordSize(in[len(in)-1]))
		b, err := bb.Build(c, 9, 1, 0)
		require.NoError(t, err)
		SetBaseOffset(b, 5)
		h, out, err := DecodeRecords(b, 0, nil)
		require.NoError(t, err)
		require.Equal(t, want, out)
		require.Equal(t, want[0].Time, h.FirstTime)
		require.Equal(t, max(want[0].Time, want[len(want)-1].Time), h.MaxTime)
		if legacy {
			require.Equal(t, uint32(len(b)), binary.LittleEndian.Uint32(b[8:]))
		} else {
			require.Equal(t, uint32(len(b)-kafkaLengthEnd), binary.BigEndian.Uint32(b[8:]))
		}
	})
}
