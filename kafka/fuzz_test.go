package replogkafka

import (
	"encoding/binary"
	"hash/crc32"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/replog/replog/storage"
)

// seedFrame encodes req as a request frame without its size prefix.
func seedFrame(req kmsg.Request) []byte {
	b := binary.BigEndian.AppendUint16(nil, uint16(req.Key()))
	b = binary.BigEndian.AppendUint16(b, uint16(req.GetVersion()))
	b = binary.BigEndian.AppendUint32(b, 1)
	b = binary.BigEndian.AppendUint16(b, 0xffff) // null client id
	if req.IsFlexible() {
		b = append(b, 0)
	}
	return req.AppendTo(b)
}

// FuzzParseRequest feeds request frames to the decoder: it must never
// panic, and what it accepts must encode back to a request that decodes
// to the same thing.
func FuzzParseRequest(f *testing.F) {
	for _, a := range servedAPIs() {
		for _, v := range []int16{a.min, a.max} {
			req := kmsg.RequestForKey(a.key)
			req.SetVersion(v)
			f.Add(seedFrame(req))
		}
	}
	f.Add([]byte{0, 18, 0, 42, 0, 0, 0, 1})
	f.Add([]byte{0, 3, 0, 0})
	f.Fuzz(func(t *testing.T, frame []byte) {
		_, req, err := parseRequest(frame)
		if err != nil || req == nil {
			return
		}
		again := seedFrame(req)
		_, req2, err := parseRequest(again)
		if err != nil {
			t.Fatalf("re-encoded %s v%d does not decode: %v", kmsg.NameForKey(req.Key()), req.GetVersion(), err)
		}
		if string(seedFrame(req2)) != string(again) {
			t.Fatalf("%s v%d changes through encode and decode", kmsg.NameForKey(req.Key()), req.GetVersion())
		}
	})
}

// FuzzDecodeProduced feeds produced record batches to the decoder: it must
// never panic, and the records of a batch it accepts must come back the
// same through the fetch encoding.
func FuzzDecodeProduced(f *testing.F) {
	recs := []storage.Record{
		{Offset: 0, Time: 1_700_000_000_000 * int64(time.Millisecond), Key: []byte("k"), Value: []byte("v"),
			Headers: []storage.RecordHeader{{Key: "h", Value: []byte("x")}, {Key: "n"}}},
		{Offset: 1, Time: 1_700_000_000_005 * int64(time.Millisecond), Key: nil, Value: []byte{}},
		{Offset: 2, Time: 1_700_000_000_001 * int64(time.Millisecond), Key: []byte("dead"), Tombstone: true},
	}
	h := storage.BatchHeader{BaseOffset: 0, Count: 3, FirstTime: recs[0].Time, MaxTime: recs[1].Time}
	f.Add(appendFetched(nil, h, recs))
	f.Add(appendFetched(nil, storage.BatchHeader{Count: 1, FirstTime: recs[0].Time, MaxTime: recs[0].Time}, recs[:1]))
	f.Fuzz(func(t *testing.T, raw []byte) {
		pb, err := decodeProduced(raw, 1<<20, time.UnixMilli(1_800_000_000_000))
		if err != nil && len(raw) >= batchHeaderLen {
			// Fix the length and CRC so the fuzzer reaches the
			// records, the attributes and the codecs.
			raw = append([]byte(nil), raw...)
			binary.BigEndian.PutUint32(raw[8:], uint32(len(raw)-batchLengthEnd))
			raw[16] = 2
			binary.BigEndian.PutUint32(raw[batchCRCStart:], crc32.Checksum(raw[batchCRCCovered:], castagnoli))
			pb, err = decodeProduced(raw, 1<<20, time.UnixMilli(1_800_000_000_000))
		}
		if err != nil {
			return
		}
		got := pb.records
		if len(got) == 0 {
			t.Fatal("accepted a batch without records")
		}
		h := storage.BatchHeader{Count: uint32(len(got)), FirstTime: got[0].Time, MaxTime: got[0].Time}
		for i := range got {
			got[i].Offset = int64(i)
			h.FirstTime, h.MaxTime = min(h.FirstTime, got[i].Time), max(h.MaxTime, got[i].Time)
		}
		again, err := decodeProduced(appendFetched(nil, h, got), 1<<20, time.UnixMilli(1_800_000_000_000))
		if err != nil {
			t.Fatalf("re-encoded batch refused: %v", err)
		}
		for i := range got {
			a, b := got[i], again.records[i]
			if a.Time != b.Time || string(a.Key) != string(b.Key) || (a.Key == nil) != (b.Key == nil) ||
				string(a.Value) != string(b.Value) || a.Tombstone != b.Tombstone || len(a.Headers) != len(b.Headers) {
				t.Fatalf("record %d: %+v became %+v", i, a, b)
			}
		}
	})
}
