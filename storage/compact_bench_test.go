package storage

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Sizes of the partition BenchmarkCompaction compacts: 640,000 records
// with 100-byte values (about 75 MB of records before compression), 100
// to a batch, over 10,000 keys, so that all but the last record of each
// key (98.4%) go.
const (
	compactBenchRecords  = 640_000
	compactBenchPerBatch = 100
	compactBenchKeys     = 10_000
	compactBenchValue    = 100
)

// BenchmarkCompaction measures one full key compaction of a partition on
// disk (passes until one reaches the head, each command applied with
// Apply as the state machine would), by codec, with the default key index
// budget and with one too small for the key set (256 KiB holds about
// 4,700 keys of the 10,000), which takes about 100 passes.
//
// MB/s is the partition's stored bytes before compaction per second;
// scanned-MB/s the bytes the passes read per second (each pass reads the
// section it indexes twice and everything below it once more). Building
// the partition is not timed: it is written once per codec and closed,
// and each iteration opens a copy of it (hard links).
//
// Each command also queues a Pebble flush and a compaction of the keys it
// rewrote (see compactLater). They run in the background, alongside the
// passes, so they compete with them for CPU; what they do after the last
// command is not timed. pebble-written-MB is what the store's flushes and
// compactions wrote from the copy's opening until that background work
// ended, pebble-settle-s how long it went on after the last command.
//
//	go test -run '^$' -bench Compaction -benchtime 3x ./storage
func BenchmarkCompaction(b *testing.B) {
	for _, c := range []Compression{CompressionNone, CompressionZstd} {
		b.Run(c.String(), func(b *testing.B) {
			src, built := filepath.Join(b.TempDir(), "src"), false
			for _, m := range []struct {
				name string
				mem  int64
			}{{"mem=default", 0}, {"mem=256KiB", 256 << 10}} {
				b.Run(m.name, func(b *testing.B) {
					if !built {
						b.StopTimer()
						buildCompactBenchStore(b, src, c)
						built = true
					}
					benchCompaction(b, src, CompactOptions{Now: 1, KeyMemory: m.mem})
				})
			}
		})
	}
}

func benchCompaction(b *testing.B, src string, o CompactOptions) {
	var elapsed time.Duration
	var scanned, removed, before, after int64
	var passes, cmds int
	var flushes int64
	var bgMB float64
	var settled time.Duration
	b.StopTimer()
	for i := range b.N {
		dir := filepath.Join(b.TempDir(), fmt.Sprint(i))
		cloneStore(b, src, dir)
		s, err := OpenStore(dir, StoreOptions{})
		if err != nil {
			b.Fatal(err)
		}
		p, err := s.Partition(1)
		if err != nil {
			b.Fatal(err)
		}
		before = p.StoredBytes()
		b.SetBytes(before)
		res := make([]Result, 1)
		passes, cmds, scanned, removed = 0, 0, 0, 0

		start := time.Now()
		b.StartTimer()
		for done := false; !done; {
			st, err := p.RunCompaction(context.Background(), o, func(cmd []byte, _ bool) error {
				e := []Entry{{Index: p.Meta().AppliedIndex + 1, Cmd: cmd}}
				if err := p.Apply(e, res); err != nil {
					return err
				}
				if res[0].Status != StatusOK {
					return fmt.Errorf("compaction command: %v", res[0].Status)
				}
				return nil
			})
			if err != nil {
				b.Fatal(err)
			}
			passes++
			cmds += st.Commands
			scanned += st.Scanned
			removed += int64(st.Removed)
			done = st.Done
			if passes > 10_000 {
				b.Fatal("compaction never reached the head")
			}
		}
		b.StopTimer()
		elapsed += time.Since(start)
		after = p.StoredBytes()
		// The Pebble work the commands queued (a flush, then a compaction
		// of the keys rewritten) runs in the background, after Apply
		// returned: not timed, but counted.
		settled = settle(s)
		m := s.db.Metrics()
		flushes, bgMB = m.Flush.Count, float64(m.Total().TableBytesCompacted+m.Total().TableBytesFlushed)/1e6
		if err := s.Close(); err != nil {
			b.Fatal(err)
		}
		if err := os.RemoveAll(dir); err != nil {
			b.Fatal(err)
		}
	}
	// Every iteration does the same work: report the last one's counts.
	b.ReportMetric(float64(scanned)*float64(b.N)/1e6/elapsed.Seconds(), "scanned-MB/s")
	b.ReportMetric(float64(passes), "passes")
	b.ReportMetric(float64(cmds), "cmds")
	b.ReportMetric(float64(removed), "removed-recs")
	b.ReportMetric(float64(before)/1e6, "stored-MB-before")
	b.ReportMetric(float64(after)/1e6, "stored-MB-after")
	b.ReportMetric(float64(flushes), "pebble-flushes")
	b.ReportMetric(bgMB, "pebble-written-MB")
	b.ReportMetric(settled.Seconds(), "pebble-settle-s")
}

// settle waits until the store's background work is over (nothing queued
// for its compactor, no Pebble flush or compaction running for 50ms), at
// most a minute, and returns how long that took.
func settle(s *Store) time.Duration {
	start := time.Now()
	last := start
	for idle := 0; idle < 5 && time.Since(start) < time.Minute; {
		time.Sleep(10 * time.Millisecond)
		s.compactor.mu.Lock()
		queued := len(s.compactor.mu.spans)
		s.compactor.mu.Unlock()
		m := s.db.Metrics()
		if queued > 0 || m.Compact.NumInProgress > 0 || m.Flush.NumInProgress > 0 {
			idle, last = 0, time.Now()
			continue
		}
		idle++
	}
	return last.Sub(start)
}

// buildCompactBenchStore writes the partition BenchmarkCompaction compacts
// (shard 1) into a store in dir and closes it.
func buildCompactBenchStore(b *testing.B, dir string, c Compression) {
	b.Helper()
	s, err := OpenStore(dir, StoreOptions{})
	if err != nil {
		b.Fatal(err)
	}
	p, err := s.Partition(1)
	if err != nil {
		b.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	words := []string{`{"user":`, `"id":`, `"event":"click",`, `"ts":`, `"ok",`, `}`, `123`, `abc`}
	value := make([]byte, 0, compactBenchValue+32)
	var bb BatchBuilder
	res := make([]Result, 1)
	for i := range compactBenchRecords {
		value = value[:0]
		for len(value) < compactBenchValue {
			value = append(value, words[rng.IntN(len(words))]...)
			value = append(value, byte('a'+rng.IntN(26)))
		}
		bb.Add(Record{
			Time:  1_700_000_000_000_000_000 + int64(i)*1000,
			Key:   fmt.Appendf(nil, "key-%05d", rng.IntN(compactBenchKeys)),
			Value: value[:compactBenchValue],
		})
		if bb.Count() < compactBenchPerBatch {
			continue
		}
		cmd, err := bb.BuildWithPrefix(1, c, 0, 0, -1)
		if err != nil {
			b.Fatal(err)
		}
		cmd[0] = CmdAppend
		bb.Reset()
		if err := p.Apply([]Entry{{Index: p.Meta().AppliedIndex + 1, Cmd: cmd}}, res); err != nil {
			b.Fatal(err)
		}
		if res[0].Status != StatusOK {
			b.Fatal(res[0].Status)
		}
	}
	if err := s.Close(); err != nil {
		b.Fatal(err)
	}
}

// cloneStore copies the closed store in src to dst, hard-linking its
// tables (Pebble never changes a table file once written).
func cloneStore(b *testing.B, src, dst string) {
	b.Helper()
	ents, err := os.ReadDir(src)
	if err != nil {
		b.Fatal(err)
	}
	if err := os.MkdirAll(dst, 0o755); err != nil {
		b.Fatal(err)
	}
	for _, e := range ents {
		from, to := filepath.Join(src, e.Name()), filepath.Join(dst, e.Name())
		if e.IsDir() {
			cloneStore(b, from, to)
			continue
		}
		if strings.HasSuffix(e.Name(), ".sst") {
			if err := os.Link(from, to); err != nil {
				b.Fatal(err)
			}
			continue
		}
		if err := copyFile(from, to); err != nil {
			b.Fatal(err)
		}
	}
}

func copyFile(from, to string) error {
	r, err := os.Open(from)
	if err != nil {
		return err
	}
	defer r.Close()
	w, err := os.Create(to)
	if err != nil {
		return err
	}
	if _, err := io.Copy(w, r); err != nil {
		w.Close()
		return err
	}
	return w.Close()
}
