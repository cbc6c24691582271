package storage

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// benchRecords returns n records with size-byte values that compress about
// as well as typical JSON payloads: a repeated vocabulary with random picks.
func benchRecords(n, size int) []Record {
	rng := rand.New(rand.NewPCG(uint64(n), uint64(size)))
	words := []string{`{"user":`, `"id":`, `"event":"click",`, `"ts":`, `"ok",`, `}`, `123`, `abc`}
	recs := make([]Record, n)
	for i := range recs {
		v := make([]byte, 0, size)
		for len(v) < size {
			v = append(v, words[rng.IntN(len(words))]...)
			v = append(v, byte('a'+rng.IntN(26)))
		}
		recs[i] = Record{
			Time:  1_700_000_000_000_000_000 + int64(i)*1000,
			Key:   fmt.Appendf(nil, "user-%d", rng.IntN(1000)),
			Value: v[:size],
		}
	}
	return recs
}

var benchSizes = []struct {
	name string
	size int
}{{"100B", 100}, {"1KiB", 1 << 10}}

const benchRecordsPerBatch = 1000

func BenchmarkBuild(b *testing.B) {
	for _, f := range formats {
		for _, c := range allCompressions {
			for _, s := range benchSizes {
				b.Run(f.name+"/"+c.String()+"/"+s.name, func(b *testing.B) {
					recs := benchRecords(benchRecordsPerBatch, s.size)
					bb := BatchBuilder{legacy: f.legacy}
					for _, r := range recs {
						bb.Add(r)
					}
					b.SetBytes(int64(bb.RawSize()))
					b.ReportAllocs()
					for b.Loop() {
						bb.Reset()
						for _, r := range recs {
							bb.Add(r)
						}
						if _, err := bb.Build(c, 1, 0, 0); err != nil {
							b.Fatal(err)
						}
					}
				})
			}
		}
	}
}

func BenchmarkDecode(b *testing.B) {
	for _, f := range formats {
		for _, c := range allCompressions {
			for _, s := range benchSizes {
				b.Run(f.name+"/"+c.String()+"/"+s.name, func(b *testing.B) {
					bb := BatchBuilder{legacy: f.legacy}
					for _, r := range benchRecords(benchRecordsPerBatch, s.size) {
						bb.Add(r)
					}
					batch, err := bb.Build(c, 1, 0, 0)
					if err != nil {
						b.Fatal(err)
					}
					b.SetBytes(int64(bb.RawSize()))
					b.ReportAllocs()
					dst := make([]Record, 0, benchRecordsPerBatch)
					for b.Loop() {
						if _, dst, err = DecodeRecords(batch, 0, dst[:0]); err != nil {
							b.Fatal(err)
						}
					}
				})
			}
		}
	}
}

func BenchmarkValidate(b *testing.B) {
	for _, f := range formats {
		for _, c := range allCompressions {
			b.Run(f.name+"/"+c.String(), func(b *testing.B) {
				bb := BatchBuilder{legacy: f.legacy}
				for _, r := range benchRecords(benchRecordsPerBatch, 1<<10) {
					bb.Add(r)
				}
				batch, err := bb.Build(c, 1, 0, 0)
				if err != nil {
					b.Fatal(err)
				}
				b.SetBytes(int64(bb.RawSize()))
				b.ReportAllocs()
				for b.Loop() {
					if _, err := Validate(batch); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
