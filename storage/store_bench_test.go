package storage

import "testing"

// BenchmarkApply measures the state machine's apply path: offsets,
// idempotence checks, validation and the Pebble write, for batches of 1000
// records as a producer would build them, by codec and record size.
func BenchmarkApply(b *testing.B) {
	for _, c := range []Compression{CompressionNone, CompressionLZ4, CompressionZstd} {
		for _, size := range benchSizes {
			b.Run(c.String()+"/"+size.name, func(b *testing.B) {
				s, err := OpenStore("bench", StoreOptions{InMemory: true})
				if err != nil {
					b.Fatal(err)
				}
				defer s.Close()
				p, err := s.Partition(1)
				if err != nil {
					b.Fatal(err)
				}
				var bb BatchBuilder
				for _, r := range benchRecords(benchRecordsPerBatch, size.size) {
					bb.Add(r)
				}
				cmd, err := bb.BuildWithPrefix(1, c, 0, 0, -1)
				if err != nil {
					b.Fatal(err)
				}
				cmd[0] = CmdAppend
				res := make([]Result, 1)
				idx := uint64(0)
				b.ReportAllocs()
				b.SetBytes(int64(bb.RawSize()))
				for b.Loop() {
					idx++
					if err := p.Apply([]Entry{{Index: idx, Cmd: cmd}}, res); err != nil {
						b.Fatal(err)
					}
					if res[0].Status != StatusOK {
						b.Fatal(res[0].Status)
					}
				}
			})
		}
	}
}

// BenchmarkReadBatches measures reading stored batches back from offset 0.
func BenchmarkReadBatches(b *testing.B) {
	s, err := OpenStore("bench", StoreOptions{InMemory: true})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	p, _ := s.Partition(1)
	var bb BatchBuilder
	for range 1000 {
		bb.Add(Record{Time: 1, Value: make([]byte, 100)})
	}
	cmd, _ := bb.BuildWithPrefix(1, CompressionNone, 0, 0, -1)
	cmd[0] = CmdAppend
	res := make([]Result, 1)
	for i := range 100 {
		if err := p.Apply([]Entry{{Index: uint64(i + 1), Cmd: cmd}}, res); err != nil {
			b.Fatal(err)
		}
	}
	hw := p.Meta().NextOffset
	b.ReportAllocs()
	b.SetBytes(int64(100 * len(cmd)))
	for b.Loop() {
		if err := p.ReadBatches(0, hw, 1<<30, func([]byte) bool { return true }); err != nil {
			b.Fatal(err)
		}
	}
}
