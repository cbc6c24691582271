package replogkafka

import (
	"encoding/binary"
	"hash/crc32"
	"math"
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

// FuzzCheckProduced feeds produced record batches to checkProduced: it must
// never panic, a batch it accepts must be one the storage accepts, and the
// records of a batch it accepts must come back the same through the fetch
// conversion of legacy batches.
func FuzzCheckProduced(f *testing.F) {
	recs := []storage.Record{
		{Offset: 0, Time: 1_700_000_000_000 * int64(time.Millisecond), Key: []byte("k"), Value: []byte("v"),
			Headers: []storage.RecordHeader{{Key: "h", Value: []byte("x")}, {Key: "n"}}},
		{Offset: 1, Time: 1_700_000_000_005 * int64(time.Millisecond), Key: nil, Value: []byte{}},
		{Offset: 2, Time: 1_700_000_000_001 * int64(time.Millisecond), Key: []byte("dead"), Tombstone: true},
	}
	h := storage.BatchHeader{BaseOffset: 0, Count: 3, FirstTime: recs[0].Time, MaxTime: recs[1].Time}
	f.Add(appendFetched(nil, h, recs))
	f.Add(appendFetched(nil, storage.BatchHeader{Count: 1, FirstTime: recs[0].Time, MaxTime: recs[0].Time}, recs[:1]))
	for c := range storage.Compression(5) {
		var bb storage.BatchBuilder
		for _, r := range recs {
			bb.Add(r)
		}
		bb.Add(storage.Record{Time: recs[0].Time, Key: []byte("nil value")})
		b, err := bb.Build(c, 3, 1, 7)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
		bb.SetTransactional(true)
		if b, err = bb.Build(c, 3, 1, 7); err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	now := time.UnixMilli(1_800_000_000_000)
	f.Fuzz(func(t *testing.T, raw []byte) {
		// A transactional batch is checked alike, and goes in a command
		// with room for its transaction's serial.
		if pt, err := checkProduced(raw, now, true); err == nil {
			b := pt.cmd[storage.TxnAppendHeaderSize:]
			if _, err := storage.Validate(b); err != nil {
				t.Fatalf("accepted a transactional batch the storage refuses: %v", err)
			}
			if !pt.header.Transactional || pt.header.ProducerID == 0 {
				t.Fatalf("accepted as transactional: %+v", pt.header)
			}
		}
		pb, err := checkProduced(raw, now, false)
		if err != nil && len(raw) >= batchHeaderLen {
			// Fix the length and CRC so the fuzzer reaches the
			// records, the attributes and the codecs.
			raw = append([]byte(nil), raw...)
			binary.BigEndian.PutUint32(raw[8:], uint32(len(raw)-batchLengthEnd))
			raw[16] = 2
			binary.BigEndian.PutUint32(raw[batchCRCStart:], crc32.Checksum(raw[batchCRCCovered:], castagnoli))
			pb, err = checkProduced(raw, now, false)
		}
		if err != nil {
			return
		}
		if pb.cmd[0] != storage.CmdAppend {
			t.Fatal("not an append command")
		}
		if _, err := storage.Validate(pb.cmd[1:]); err != nil {
			t.Fatalf("accepted a batch the storage refuses: %v", err)
		}
		// From the batch's own base offset, whatever the client set
		// there (the partition sets its own).
		h, got, err := storage.DecodeRecords(pb.cmd[1:], math.MinInt64, nil)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) == 0 || len(got) != pb.stats.Records || h.Flags != 0 {
			t.Fatalf("accepted %d records, %+v, header %+v", len(got), pb.stats, h)
		}
		again, err := checkProduced(appendFetched(nil, h, got), now, false)
		if err != nil {
			t.Fatalf("converted batch refused: %v", err)
		}
		_, recs2, err := storage.DecodeRecords(again.cmd[1:], math.MinInt64, nil)
		if err != nil {
			t.Fatal(err)
		}
		for i := range got {
			a, b := got[i], recs2[i]
			if a.Time != b.Time || string(a.Key) != string(b.Key) || (a.Key == nil) != (b.Key == nil) ||
				string(a.Value) != string(b.Value) || a.Tombstone != b.Tombstone || len(a.Headers) != len(b.Headers) {
				t.Fatalf("record %d: %+v became %+v", i, a, b)
			}
		}
	})
}
