package replogkafka

import (
	"encoding/binary"
	"testing"

	"github.com/twmb/franz-go/pkg/kmsg"
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
	for key, vr := range apiVersions() {
		for _, v := range []int16{vr.min, vr.max} {
			req := kmsg.RequestForKey(key)
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
