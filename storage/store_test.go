package storage

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"testing/iotest"

	"github.com/cockroachdb/pebble/v2"
	"github.com/stretchr/testify/require"
)

// countKeys counts the keys of shard with the given kinds, in both slots,
// reading Pebble directly.
func countKeys(t testing.TB, s *Store, shard uint64, kinds ...byte) int {
	t.Helper()
	n := 0
	var all []byte
	for _, k := range kinds {
		all = append(all, k)
		if k != kindMeta {
			all = append(all, slotKind(k, 1))
		}
	}
	for _, k := range all {
		it, err := s.db.NewIter(&pebble.IterOptions{
			LowerBound: key(k, shard),
			UpperBound: key(k, shard+1),
		})
		require.NoError(t, err)
		for it.First(); it.Valid(); it.Next() {
			n++
		}
		require.NoError(t, it.Close())
	}
	return n
}

// batchBases returns the base offsets of the batches ReadBatches passes.
func batchBases(t testing.TB, p *Partition, from, hw int64, maxBytes int) []int64 {
	t.Helper()
	bases := []int64{}
	for _, b := range rawBatches(t, p, from, hw, maxBytes) {
		h, err := ParseHeader(b)
		require.NoError(t, err)
		bases = append(bases, h.BaseOffset)
	}
	return bases
}

func TestReadBatches(t *testing.T) {
	s := openTestStore(t)
	p := openPartition(t, s, 1)
	res := applyCmds(t, p,
		appendCmd(t, 0, 0, 0, "a", "b", "c"),
		appendCmd(t, 0, 0, 0, "d", "e"),
		appendCmd(t, 0, 0, 0, "f", "g", "h", "i"),
	)
	require.Equal(t, []Result{ok(0), ok(3), ok(5)}, res)
	hw := p.Meta().NextOffset
	require.Equal(t, int64(9), hw)
	sizes := rawBatches(t, p, 0, hw, math.MaxInt)
	first := len(sizes[0])

	cases := []struct {
		name     string
		from, hw int64
		maxBytes int
		want     []int64
	}{
		{"from the start", 0, hw, math.MaxInt, []int64{0, 3, 5}},
		{"middle of the first batch", 1, hw, math.MaxInt, []int64{0, 3, 5}},
		{"last record of a batch", 2, hw, math.MaxInt, []int64{0, 3, 5}},
		{"start of a batch", 3, hw, math.MaxInt, []int64{3, 5}},
		{"middle of a batch", 4, hw, math.MaxInt, []int64{3, 5}},
		{"last record", 8, hw, math.MaxInt, []int64{5}},
		{"at hw", hw, hw, math.MaxInt, []int64{}},
		{"past hw", hw + 10, hw, math.MaxInt, []int64{}},
		{"lower hw stops at it", 0, 3, math.MaxInt, []int64{0}},
		{"hw inside a batch", 0, 4, math.MaxInt, []int64{0, 3}},
		{"zero budget still returns one batch", 0, hw, 0, []int64{0}},
		{"one byte budget still returns one batch", 6, hw, 1, []int64{5}},
		{"budget of exactly the first batch", 0, hw, first, []int64{0}},
		{"budget one byte over the first batch", 0, hw, first + 1, []int64{0, 3}},
		{"negative budget", 0, hw, -1, []int64{0}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, batchBases(t, p, tc.from, tc.hw, tc.maxBytes))
		})
	}

	t.Run("decoded from an offset", func(t *testing.T) {
		require.Equal(t, []string{"4:e", "5:f", "6:g", "7:h", "8:i"}, readLog(t, p, 4, hw))
	})
	t.Run("fn stops the read", func(t *testing.T) {
		calls := 0
		require.NoError(t, p.ReadBatches(0, hw, math.MaxInt, func([]byte) bool {
			calls++
			return false
		}))
		require.Equal(t, 1, calls)
	})
	t.Run("empty partition", func(t *testing.T) {
		empty := openPartition(t, s, 2)
		require.Empty(t, rawBatches(t, empty, 0, 100, math.MaxInt))
	})
}

func TestReadBatchesNegativeFrom(t *testing.T) {
	s := openTestStore(t)
	p := openPartition(t, s, 1)
	applyCmds(t, p, appendCmd(t, 0, 0, 0, "a"), appendCmd(t, 0, 0, 0, "b"), appendCmd(t, 0, 0, 0, "c"))
	for _, from := range []int64{-1, -2, -5, math.MinInt64} {
		require.Equal(t, []int64{0, 1, 2}, batchBases(t, p, from, 3, math.MaxInt), "from %d", from)
	}
}

func TestPartitionsAreIsolated(t *testing.T) {
	s := openTestStore(t)
	// Adjacent shard ids, and ids that differ only in a high byte, share
	// key prefixes up to the last byte.
	shards := []uint64{1, 2, 1 << 8, 1<<56 + 1}
	parts := make([]*Partition, len(shards))
	for i, shard := range shards {
		parts[i] = openPartition(t, s, shard)
	}
	for round := range 2 {
		for i, p := range parts {
			// The same producer id in every partition, each at seq 0.
			v := fmt.Sprintf("p%d.r%d", i, round)
			res := applyCmds(t, p, appendCmd(t, 7, 0, int32(round), v), timedCmd(t, int64(2000+i*100+round)))
			require.Equal(t, []Result{ok(int64(2 * round)), ok(int64(2*round + 1))}, res)
		}
	}
	for i, shard := range shards {
		p := parts[i]
		require.Equal(t, Meta{AppliedIndex: 4, NextOffset: 4, MaxTime: int64(2000 + i*100 + 1), LastStable: 4}, p.Meta())
		want := []string{
			fmt.Sprintf("0:p%d.r0", i), fmt.Sprintf("1:%d", 2000+i*100),
			fmt.Sprintf("2:p%d.r1", i), fmt.Sprintf("3:%d", 2000+i*100+1),
		}
		require.Equal(t, want, readLog(t, p, 0, 4))
		require.Equal(t, int64(1), mustOffsetForTime(t, p, int64(2000+i*100), 4))
		require.Equal(t, int64(3), mustOffsetForTime(t, p, int64(2000+i*100+1), 4))

		reloaded := openPartition(t, s, shard)
		require.Equal(t, p.Meta(), reloaded.Meta())
		require.Equal(t, p.producers, reloaded.producers)
		require.Len(t, reloaded.producers, 1)
	}
}

func mustOffsetForTime(t testing.TB, p *Partition, ts, hw int64) int64 {
	t.Helper()
	off, err := p.OffsetForTime(ts, hw)
	require.NoError(t, err)
	return off
}

func TestOffsetForTime(t *testing.T) {
	cases := []struct {
		name    string
		batches [][]int64 // record timestamps, one slice per batch
		lookups map[int64]int64
	}{
		{
			name:    "increasing",
			batches: [][]int64{{100, 200, 300}, {400, 500}, {600}},
			lookups: map[int64]int64{
				math.MinInt64: 0,
				-1:            0,
				0:             0,
				99:            0,
				100:           0, // exactly the first record
				150:           1, // between records inside a batch
				200:           1,
				300:           2,
				301:           3, // between batches
				450:           4,
				500:           4,
				600:           5, // exactly the last record
				601:           6, // after the last: hw
				math.MaxInt64: 6,
			},
		},
		{
			name:    "equal timestamps",
			batches: [][]int64{{100, 100}, {100, 200}, {200}},
			lookups: map[int64]int64{100: 0, 101: 3, 200: 3, 201: 5},
		},
		{
			name: "non-monotonic inside a batch",
			// Running maximum: 500, 500, 600.
			batches: [][]int64{{100, 500, 200}, {300, 400}, {450, 600}},
			lookups: map[int64]int64{
				50:  0,
				100: 0,
				150: 1, // 500 at offset 1 is the first record at or after 150
				250: 1,
				500: 1,
				501: 6,
				600: 6,
				601: 7,
			},
		},
		{
			name: "later batch goes back in time",
			// Running maximum: 1000, 2000, 2000.
			batches: [][]int64{{1000}, {100, 2000}, {50}},
			lookups: map[int64]int64{
				0:    0,
				500:  0,
				1000: 0,
				1001: 2,
				1500: 2,
				2000: 2,
				2001: 4,
			},
		},
		{
			name:    "negative timestamps",
			batches: [][]int64{{-300, -100}, {0, 100}},
			lookups: map[int64]int64{
				math.MinInt64: 0,
				-1000:         0,
				-300:          0,
				-200:          1,
				-100:          1,
				-50:           2,
				0:             2,
				1:             3,
				101:           4,
			},
		},
		{
			name:    "extreme timestamps",
			batches: [][]int64{{math.MinInt64}, {math.MaxInt64}},
			lookups: map[int64]int64{
				math.MinInt64: 0,
				0:             1,
				math.MaxInt64: 1,
			},
		},
		{
			name:    "empty partition",
			lookups: map[int64]int64{math.MinInt64: 0, 0: 0, math.MaxInt64: 0},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := openTestStore(t)
			p := openPartition(t, s, 1)
			for _, times := range tc.batches {
				applyCmds(t, p, timedCmd(t, times...))
			}
			hw := p.Meta().NextOffset
			for ts, want := range tc.lookups {
				require.Equal(t, want, mustOffsetForTime(t, p, ts, hw), "time %d", ts)
			}
		})
	}

	t.Run("records past hw are not found", func(t *testing.T) {
		s := openTestStore(t)
		p := openPartition(t, s, 1)
		applyCmds(t, p, timedCmd(t, 100, 200), timedCmd(t, 300))
		require.Equal(t, int64(1), mustOffsetForTime(t, p, 150, 2))
		require.Equal(t, int64(2), mustOffsetForTime(t, p, 250, 2))
		require.Equal(t, int64(0), mustOffsetForTime(t, p, 0, 0))
	})
}

// corruptStored overwrites the stored batch at base with garbage.
func corruptStored(t testing.TB, s *Store, shard uint64, base int64, garbage []byte) {
	t.Helper()
	require.NoError(t, s.db.Set(key(kindData, shard, uint64(base)), garbage, pebble.NoSync))
}

func storedCorruptions(t testing.TB, p *Partition, base int64) map[string][]byte {
	t.Helper()
	var stored []byte
	require.NoError(t, p.ReadBatches(base, base+1, 0, func(b []byte) bool {
		stored = append([]byte(nil), b...)
		return false
	}))
	flip := func(i int) []byte {
		b := append([]byte(nil), stored...)
		b[i] ^= 0xff
		return b
	}
	return map[string][]byte{
		"empty":             {},
		"short":             []byte("garbage"),
		"header-sized junk": bytes.Repeat([]byte{0xa5}, legacyHeaderSize+10),
		"flipped crc":       flip(12),
		"flipped count":     flip(20),
		"flipped record":    flip(legacyHeaderSize + 1),
		"truncated":         stored[:len(stored)-1],
		"extended":          append(append([]byte(nil), stored...), 1, 2, 3),
	}
}

func TestReadBatchesHandsOutCorruptBatches(t *testing.T) {
	s := openTestStore(t)
	p := openPartition(t, s, 1)
	applyCmds(t, p,
		appendCmd(t, 0, 0, 0, "a", "b"),
		appendCmd(t, 0, 0, 0, "c", "d"),
		appendCmd(t, 0, 0, 0, "e"),
	)
	hw := p.Meta().NextOffset
	for name, garbage := range storedCorruptions(t, p, 2) {
		t.Run(name, func(t *testing.T) {
			corruptStored(t, s, 1, 2, garbage)
			var errs []error
			require.NoError(t, p.ReadBatches(0, hw, math.MaxInt, func(b []byte) bool {
				_, _, err := DecodeRecords(b, 0, nil)
				errs = append(errs, err)
				return true
			}))
			require.Len(t, errs, 3)
			require.NoError(t, errs[0])
			require.ErrorIs(t, errs[1], ErrCorrupt)
			require.NoError(t, errs[2])

			// Reading from inside the damaged batch hands it out first.
			var got [][]byte
			require.NoError(t, p.ReadBatches(3, hw, 0, func(b []byte) bool {
				got = append(got, append([]byte(nil), b...))
				return true
			}))
			require.Len(t, got, 1)
			require.True(t, bytes.Equal(garbage, got[0]))
		})
	}
}

func TestOffsetForTimeCorruptBatch(t *testing.T) {
	s := openTestStore(t)
	p := openPartition(t, s, 1)
	applyCmds(t, p, timedCmd(t, 100, 200), timedCmd(t, 300, 400), timedCmd(t, 500))
	hw := p.Meta().NextOffset
	for name, garbage := range storedCorruptions(t, p, 2) {
		t.Run(name, func(t *testing.T) {
			corruptStored(t, s, 1, 2, garbage)
			require.NotPanics(t, func() {
				off, err := p.OffsetForTime(300, hw)
				require.ErrorIs(t, err, ErrCorrupt, "offset %d", off)
			})
		})
	}
}

func TestOffsetForTimeCorruptBatchNeverPanics(t *testing.T) {
	s := openTestStore(t)
	p := openPartition(t, s, 1)
	applyCmds(t, p, timedCmd(t, 100, 200), timedCmd(t, 300, 400), timedCmd(t, 500))
	hw := p.Meta().NextOffset
	for name, garbage := range storedCorruptions(t, p, 2) {
		corruptStored(t, s, 1, 2, garbage)
		require.NotPanics(t, func() { _, _ = p.OffsetForTime(300, hw) }, name)
		// Batches before the damaged one are still found.
		require.Equal(t, int64(1), mustOffsetForTime(t, p, 150, hw), name)
	}
}

// snapshotBytes writes a snapshot of p taken now.
func snapshotBytes(t testing.TB, p *Partition) []byte {
	t.Helper()
	snap := p.Snapshot()
	defer func() { require.NoError(t, snap.Close()) }()
	var buf bytes.Buffer
	n, err := snap.WriteTo(&buf)
	require.NoError(t, err)
	require.Equal(t, int64(buf.Len()), n)
	return buf.Bytes()
}

func TestSnapshotRestore(t *testing.T) {
	src := openTestStore(t)
	p := openPartition(t, src, 7)
	applyCmds(t, p,
		appendCmd(t, 9, 1, 0, "a", "b"),
		appendCmd(t, 0, 0, 0, "c"),
		appendCmd(t, 9, 1, 2, "d"),
		appendCmd(t, 10, 0, 0, "e"),
		timedCmd(t, 5000, 4000),
	)
	// A neighbour in the source store must not leak into the snapshot.
	applyCmds(t, openPartition(t, src, 8), appendCmd(t, 0, 0, 0, "neighbour"))

	meta := p.Meta()
	hw := meta.NextOffset
	batches := rawBatches(t, p, 0, hw, math.MaxInt)
	producers := cloneProducers(p.producers)

	snap := p.Snapshot()
	defer func() { require.NoError(t, snap.Close()) }()
	require.Equal(t, meta, snap.Meta)

	// Writes after the snapshot was taken are not in it.
	applyCmds(t, p, appendCmd(t, 9, 1, 3, "later"), appendCmd(t, 11, 0, 0, "later"))
	var buf bytes.Buffer
	_, err := snap.WriteTo(&buf)
	require.NoError(t, err)
	stream := buf.Bytes()

	dst := openTestStore(t)
	// The target shard holds other data that the restore replaces; its
	// neighbour keeps its own.
	old := openPartition(t, dst, 99)
	applyCmds(t, old, appendCmd(t, 0, 0, 0, "x", "y", "z", "w", "v", "u", "t", "s"), appendCmd(t, 12, 0, 0, "x"))
	neighbour := openPartition(t, dst, 100)
	applyCmds(t, neighbour, appendCmd(t, 9, 1, 0, "n"))

	r := openPartition(t, dst, 99)
	require.NoError(t, r.Restore(bytes.NewReader(stream)))
	require.Equal(t, meta, r.Meta())

	// Entries the snapshot covers are skipped; the next one is applied.
	res := applyEntries(t, r, Entry{Index: meta.AppliedIndex, Cmd: appendCmd(t, 0, 0, 0, "old")})
	require.Equal(t, []Result{rejected(StatusDuplicate)}, res)
	require.Equal(t, meta, r.Meta())
	require.Equal(t, batches, rawBatches(t, r, 0, hw+100, math.MaxInt))
	require.Equal(t, producers, r.producers)
	require.Equal(t, int64(5), mustOffsetForTime(t, r, 4500, hw))

	// A reload reads the same state back.
	reloaded := openPartition(t, dst, 99)
	require.Equal(t, meta, reloaded.Meta())
	require.Equal(t, producers, reloaded.producers)

	// The restored partition answers producers as the original did.
	res = applyCmds(t, r,
		appendCmd(t, 9, 1, 2, "d"),      // retry
		appendCmd(t, 9, 1, 0, "a", "b"), // retry of an older batch
		appendCmd(t, 12, 0, 1, "x"),     // producer of the replaced data: gone
		appendCmd(t, 9, 0, 3, "x"),      // old epoch
		appendCmd(t, 9, 1, 3, "f"),      // next
	)
	require.Equal(t, []Result{
		dup(3), dup(0), rejected(StatusOutOfOrder), rejected(StatusFenced), ok(hw),
	}, res)

	require.Equal(t, []string{"0:n"}, readLog(t, neighbour, 0, 10))
	require.Equal(t, []string{"0:neighbour"}, readLog(t, openPartition(t, src, 8), 0, 10))

	// The stream does not depend on the shard id.
	third := openPartition(t, dst, 5)
	require.NoError(t, third.Restore(bytes.NewReader(stream)))
	require.Equal(t, stream, snapshotBytes(t, third))
}

func TestSnapshotRestoreEmpty(t *testing.T) {
	s := openTestStore(t)
	stream := snapshotBytes(t, openPartition(t, s, 1))
	require.Equal(t, []byte{0}, stream)

	p := openPartition(t, s, 2)
	applyCmds(t, p, appendCmd(t, 7, 0, 0, "a"))
	require.NoError(t, p.Restore(bytes.NewReader(stream)))
	require.Equal(t, Meta{MaxTime: math.MinInt64}, p.Meta())
	require.Empty(t, p.producers)
	require.Zero(t, countKeys(t, s, 2, kinds[:]...))
}

func TestRestoreCorruptStream(t *testing.T) {
	src := openTestStore(t)
	p := openPartition(t, src, 1)
	applyCmds(t, p, appendCmd(t, 9, 0, 0, "a", "b"), appendCmd(t, 0, 0, 0, "c"))
	stream := snapshotBytes(t, p)

	s := openTestStore(t)
	r := openPartition(t, s, 2)
	for n := range len(stream) {
		err := r.Restore(bytes.NewReader(stream[:n]))
		require.ErrorIs(t, err, ErrCorrupt, "stream truncated to %d of %d bytes", n, len(stream))
		// Nothing of the partial stream is visible, in memory or on disk.
		require.Equal(t, Meta{MaxTime: math.MinInt64}, r.Meta())
		require.Empty(t, r.producers)
		require.Zero(t, countKeys(t, s, 2, kinds[:]...))
	}

	cases := map[string][]byte{
		"key too long":        {65, 0},
		"huge value":          {2, 0xff, 0xff, 0xff, 0xff, 0x0f, 'd', 0},
		"bad uvarint":         bytes.Repeat([]byte{0xff}, 11),
		"missing terminator":  {2, 1, 'd', 0, 'v'},
		"value short of size": {2, 5, 'd', 0, 'v'},
	}
	for name, bad := range cases {
		t.Run(name, func(t *testing.T) {
			require.ErrorIs(t, r.Restore(bytes.NewReader(bad)), ErrCorrupt)
		})
	}

	// A good stream still restores afterwards.
	require.NoError(t, r.Restore(bytes.NewReader(stream)))
	require.Equal(t, p.Meta(), r.Meta())
	require.Equal(t, readLog(t, p, 0, 3), readLog(t, r, 0, 3))
}

func TestDelete(t *testing.T) {
	s := openTestStore(t)
	gone := openPartition(t, s, 1)
	kept := openPartition(t, s, 2)
	for _, p := range []*Partition{gone, kept} {
		applyCmds(t, p, appendCmd(t, 7, 0, 0, "a"), appendCmd(t, 7, 0, 1, "b"), timedCmd(t, 50))
	}
	keptMeta := kept.Meta()
	keptLog := readLog(t, kept, 0, keptMeta.NextOffset)
	keptProducers := cloneProducers(kept.producers)
	require.Equal(t, 3+3+1+1, countKeys(t, s, 1, kinds[:]...), "data, time, producer and meta keys")

	require.NoError(t, gone.Delete())
	require.Zero(t, countKeys(t, s, 1, kinds[:]...))
	require.Equal(t, Meta{MaxTime: math.MinInt64}, gone.Meta())
	require.Empty(t, gone.producers)
	require.Empty(t, rawBatches(t, gone, 0, 3, math.MaxInt))
	require.Equal(t, int64(3), mustOffsetForTime(t, gone, 0, 3))

	reloaded := openPartition(t, s, 1)
	require.Equal(t, Meta{MaxTime: math.MinInt64}, reloaded.Meta())
	require.Empty(t, reloaded.producers)
	// The producer is forgotten: it must start again at seq 0.
	res := applyCmds(t, gone, appendCmd(t, 7, 0, 2, "c"), appendCmd(t, 7, 0, 0, "d"))
	require.Equal(t, []Result{rejected(StatusOutOfOrder), ok(0)}, res)

	require.Equal(t, keptMeta, kept.Meta())
	require.Equal(t, keptLog, readLog(t, kept, 0, keptMeta.NextOffset))
	keptReloaded := openPartition(t, s, 2)
	require.Equal(t, keptMeta, keptReloaded.Meta())
	require.Equal(t, keptProducers, keptReloaded.producers)
	require.Equal(t, 3+3+1+1, countKeys(t, s, 2, kinds[:]...))
}

// TestLargestShardID checks the key ranges of the last shard id, whose
// successor wraps around to 0.
func TestLargestShardID(t *testing.T) {
	s := openTestStore(t)
	other := openPartition(t, s, 0)
	applyCmds(t, other, appendCmd(t, 7, 0, 0, "other"))

	p := openPartition(t, s, math.MaxUint64)
	applyCmds(t, p, appendCmd(t, 7, 0, 0, "a"), timedCmd(t, 5000))
	require.Equal(t, []string{"0:a", "1:5000"}, readLog(t, p, 0, 2))
	require.Equal(t, int64(0), mustOffsetForTime(t, p, 5, 2))
	require.Equal(t, int64(1), mustOffsetForTime(t, p, 5000, 2))

	reloaded := openPartition(t, s, math.MaxUint64)
	require.Equal(t, p.Meta(), reloaded.Meta())
	require.Len(t, reloaded.producers, 1)

	stream := snapshotBytes(t, p)
	r := openPartition(t, s, 3)
	require.NoError(t, r.Restore(bytes.NewReader(stream)))
	require.Equal(t, readLog(t, p, 0, 2), readLog(t, r, 0, 2))

	require.NoError(t, p.Delete())
	require.Empty(t, readLog(t, openPartition(t, s, math.MaxUint64), 0, 2))
	require.Equal(t, []string{"0:other"}, readLog(t, other, 0, 1))
}

// streamRecord is one (kind, suffix, value) record of a snapshot stream.
type streamRecord struct {
	kind          byte
	suffix, value []byte
}

// encodeStream writes records as Snapshot.WriteTo does, terminator
// included.
func encodeStream(recs ...streamRecord) []byte {
	var b []byte
	for _, r := range recs {
		b = binary.AppendUvarint(b, uint64(len(r.suffix))+1)
		b = binary.AppendUvarint(b, uint64(len(r.value)))
		b = append(b, r.kind)
		b = append(b, r.suffix...)
		b = append(b, r.value...)
	}
	return append(b, 0)
}

// decodeStream splits a stream written by Snapshot.WriteTo into records.
func decodeStream(t testing.TB, b []byte) []streamRecord {
	t.Helper()
	var out []streamRecord
	for {
		kl, n := binary.Uvarint(b)
		require.Positive(t, n)
		b = b[n:]
		if kl == 0 {
			require.Empty(t, b)
			return out
		}
		vl, n := binary.Uvarint(b)
		require.Positive(t, n)
		b = b[n:]
		out = append(out, streamRecord{kind: b[0], suffix: b[1:kl], value: b[kl : kl+vl]})
		b = b[kl+vl:]
	}
}

// TestRestoreValidatesEveryRecord feeds Restore streams that frame well
// but carry records this store could never have written. Each must fail
// with ErrCorrupt and leave the partition as it was; none may be loaded (a
// producer state without batches used to make the next Apply panic).
func TestRestoreValidatesEveryRecord(t *testing.T) {
	src := openTestStore(t)
	p := openPartition(t, src, 1)
	applyCmds(t, p,
		appendCmd(t, 9, 0, 0, "a", "b"),
		appendCmd(t, 0, 0, 0, "c"),
		timedCmd(t, 5000),
	)
	good := decodeStream(t, snapshotBytes(t, p))
	// d d d t t t p m
	require.Len(t, good, 8)
	byKind := func(k byte) []int {
		var is []int
		for i, r := range good {
			if r.kind == k {
				is = append(is, i)
			}
		}
		return is
	}
	d, tm, pr, m := byKind(kindData), byKind(kindTime), byKind(kindProducer), byKind(kindMeta)
	require.Len(t, d, 3)
	require.Len(t, tm, 3)
	require.Len(t, pr, 1)
	require.Len(t, m, 1)

	with := func(f func(recs []streamRecord) []streamRecord) []byte {
		recs := make([]streamRecord, len(good))
		for i, r := range good {
			recs[i] = streamRecord{r.kind, bytes.Clone(r.suffix), bytes.Clone(r.value)}
		}
		return encodeStream(f(recs)...)
	}
	set := func(i int, r streamRecord) []byte {
		return with(func(recs []streamRecord) []streamRecord { recs[i] = r; return recs })
	}
	drop := func(i int) []byte {
		return with(func(recs []streamRecord) []streamRecord { return append(recs[:i], recs[i+1:]...) })
	}
	u64 := func(x uint64) []byte { return binary.BigEndian.AppendUint64(nil, x) }
	le32 := func(x uint32) []byte { return binary.LittleEndian.AppendUint32(nil, x) }
	meta := func(f func(m *Meta)) streamRecord {
		mm := p.Meta()
		f(&mm)
		return streamRecord{kindMeta, nil, mm.encode()}
	}
	batch1 := good[d[1]]
	resigned := func(f func(b []byte)) []byte {
		b := bytes.Clone(batch1.value)
		f(b)
		resign(b)
		return b
	}
	cases := map[string][]byte{
		"unknown kind":              set(pr[0], streamRecord{'x', u64(9), good[pr[0]].value}),
		"uppercase kind":            set(pr[0], streamRecord{'P', u64(9), good[pr[0]].value}),
		"producer without batches":  set(pr[0], streamRecord{kindProducer, u64(9), le32(0)}),
		"producer state truncated":  set(pr[0], streamRecord{kindProducer, u64(9), good[pr[0]].value[:10]}),
		"producer id 0":             set(pr[0], streamRecord{kindProducer, u64(0), good[pr[0]].value}),
		"producer key short":        set(pr[0], streamRecord{kindProducer, u64(9)[:7], good[pr[0]].value}),
		"producer past hw":          set(m[0], meta(func(m *Meta) { m.NextOffset = 1 })),
		"data key short":            set(d[1], streamRecord{kindData, u64(2)[:4], batch1.value}),
		"data not a batch":          set(d[1], streamRecord{kindData, batch1.suffix, []byte("garbage")}),
		"data crc mismatch":         set(d[1], streamRecord{kindData, batch1.suffix, append(bytes.Clone(batch1.value[:len(batch1.value)-1]), batch1.value[len(batch1.value)-1]^1)}),
		"data count lies":           set(d[1], streamRecord{kindData, batch1.suffix, resigned(func(b []byte) { binary.LittleEndian.PutUint32(b[20:], 2) })}),
		"data base mismatch":        set(d[1], streamRecord{kindData, u64(3), batch1.value}),
		"data gap":                  drop(d[1]),
		"data out of order":         with(func(r []streamRecord) []streamRecord { r[d[0]], r[d[1]] = r[d[1]], r[d[0]]; return r }),
		"time value":                set(tm[0], streamRecord{kindTime, good[tm[0]].suffix, []byte{1}}),
		"time key short":            set(tm[0], streamRecord{kindTime, good[tm[0]].suffix[:8], nil}),
		"time for no batch":         set(tm[0], streamRecord{kindTime, append(bytes.Clone(good[tm[0]].suffix[:8]), u64(7)...), nil}),
		"time missing":              drop(tm[0]),
		"kinds out of order":        with(func(r []streamRecord) []streamRecord { r[d[2]], r[tm[0]] = r[tm[0]], r[d[2]]; return r }),
		"meta short":                set(m[0], streamRecord{kindMeta, nil, []byte{1, 2, 3}}),
		"meta with suffix":          set(m[0], streamRecord{kindMeta, []byte{0}, good[m[0]].value}),
		"meta missing":              drop(m[0]),
		"meta twice":                with(func(r []streamRecord) []streamRecord { return append(r, r[m[0]]) }),
		"meta next offset short":    set(m[0], meta(func(m *Meta) { m.NextOffset-- })),
		"meta next offset long":     set(m[0], meta(func(m *Meta) { m.NextOffset++ })),
		"meta log start past hw":    set(m[0], meta(func(m *Meta) { m.LogStart = m.NextOffset + 1 })),
		"meta max time":             set(m[0], meta(func(m *Meta) { m.MaxTime++ })),
		"only meta of a full log":   encodeStream(good[m[0]]),
		"data without meta":         encodeStream(good[d[0]]),
		"duplicate producer":        with(func(r []streamRecord) []streamRecord { return append(r[:m[0]], r[pr[0]], r[m[0]]) }),
		"negative base offset":      set(d[0], streamRecord{kindData, u64(1 << 63), good[d[0]].value}),
		"producer batch count zero": set(pr[0], streamRecord{kindProducer, u64(9), append(le32(0), make([]byte, 16)...)}),
	}

	dst := openTestStore(t)
	r := openPartition(t, dst, 2)
	applyCmds(t, r, appendCmd(t, 4, 0, 0, "kept"))
	before := r.Meta()
	for name, stream := range cases {
		t.Run(name, func(t *testing.T) {
			require.NotPanics(t, func() {
				require.ErrorIs(t, r.Restore(bytes.NewReader(stream)), ErrCorrupt)
			})
			// The partition is as it was, in memory and on disk, and
			// nothing staged is left behind.
			require.Equal(t, before, r.Meta())
			require.Equal(t, []string{"0:kept"}, readLog(t, r, 0, before.NextOffset))
			reloaded := openPartition(t, dst, 2)
			require.Equal(t, before, reloaded.Meta())
			require.Equal(t, cloneProducers(r.producers), reloaded.producers)
			require.Equal(t, 1+1+1+1, countKeys(t, dst, 2, kinds[:]...))
		})
	}

	// The unaltered stream restores.
	require.NoError(t, r.Restore(bytes.NewReader(encodeStream(good...))))
	require.Equal(t, p.Meta(), r.Meta())
}

// TestApplyNeverPanicsOnProducerState applies batches against producer
// states that Apply never writes but a store might hold.
func TestApplyNeverPanicsOnProducerState(t *testing.T) {
	states := map[string]*producerState{
		"no batches":        {epoch: 3},
		"zero-count batch":  {epoch: 3, batches: []seqBatch{{baseSeq: 0, count: 0, baseOffset: 0}}},
		"negative sequence": {epoch: 3, batches: []seqBatch{{baseSeq: -5, count: 1, baseOffset: 0}}},
		"max sequence":      {epoch: 3, batches: []seqBatch{{baseSeq: math.MaxInt32, count: math.MaxUint32, baseOffset: math.MaxInt64}}},
	}
	for name, st := range states {
		t.Run(name, func(t *testing.T) {
			s := openTestStore(t)
			p := openPartition(t, s, 1)
			p.producers[7] = st
			for _, cmd := range [][]byte{
				appendCmd(t, 7, 3, 0, "a"),
				appendCmd(t, 7, 3, 1, "b"),
				appendCmd(t, 7, 2, 0, "c"),
				appendCmd(t, 7, 4, 0, "d"),
			} {
				require.NotPanics(t, func() {
					res := make([]Result, 1)
					require.NoError(t, p.Apply([]Entry{{Index: p.Meta().AppliedIndex + 1, Cmd: cmd}}, res))
				})
			}
		})
	}
}

// bigLog fills p with batches of 8 records of 64 KiB each, all of whose
// values start with tag, until it holds more than size bytes.
func bigLog(t testing.TB, p *Partition, tag byte, size int) {
	t.Helper()
	v := bytes.Repeat([]byte{tag}, 64<<10)
	recs := make([]Record, 8)
	for i := range recs {
		recs[i] = Record{Time: 1000, Value: v}
	}
	cmd := recordsCmd(t, 0, 0, 0, recs)
	for n := 0; n <= size; n += 8 * len(v) {
		applyCmds(t, p, cmd)
	}
}

// logView reads every batch of p and returns the record count and the
// distinct first bytes of the values, or an error.
func logView(p *Partition) (int, string, error) {
	n, tags := 0, map[byte]bool{}
	var derr error
	err := p.ReadBatches(0, math.MaxInt64, math.MaxInt, func(b []byte) bool {
		var recs []Record
		_, recs, derr = DecodeRecords(b, 0, nil)
		for _, r := range recs {
			n++
			tags[r.Value[0]] = true
		}
		return derr == nil
	})
	var s []byte
	for tag := range tags {
		s = append(s, tag)
	}
	return n, string(s), errors.Join(err, derr)
}

// TestRestoreIsAtomicForReaders reads a partition continuously while a
// snapshot of more than 8 MiB, the size at which Restore commits a chunk,
// replaces it. Every read must see either the whole old log or the whole
// new one. (Restore used to delete the old log first and commit the new
// one in chunks: readers saw an empty, then a partial partition.)
func TestRestoreIsAtomicForReaders(t *testing.T) {
	src := openTestStore(t)
	np := openPartition(t, src, 1)
	bigLog(t, np, 'n', 12<<20)
	stream := snapshotBytes(t, np)
	newCount, _, err := logView(np)
	require.NoError(t, err)

	dst := openTestStore(t)
	p := openPartition(t, dst, 2)
	bigLog(t, p, 'o', 1<<20)
	oldMeta := p.Meta()
	oldCount, _, err := logView(p)
	require.NoError(t, err)

	var done atomic.Bool
	var reads [2]atomic.Int64 // of the old log, of the new one
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			for !done.Load() {
				n, tags, err := logView(p)
				switch {
				case err != nil:
					t.Error(err)
					return
				case tags == "o" && n == oldCount:
					reads[0].Add(1)
				case tags == "n" && n == newCount:
					reads[1].Add(1)
				default:
					t.Errorf("read %d records with values %q: neither the old log (%d) nor the new (%d)", n, tags, oldCount, newCount)
					return
				}
				if _, err := p.OffsetForTime(1000, math.MaxInt64); err != nil {
					t.Error(err)
					return
				}
				if m := p.Meta(); m != oldMeta && m != np.Meta() {
					t.Errorf("meta %+v is neither the old nor the new", m)
					return
				}
			}
		})
	}
	for reads[0].Load() == 0 {
		runtime.Gosched()
	}
	require.NoError(t, p.Restore(bytes.NewReader(stream)))
	for reads[1].Load() == 0 && !t.Failed() {
		runtime.Gosched()
	}
	done.Store(true)
	wg.Wait()
	require.Equal(t, np.Meta(), p.Meta())
	// Nothing of the old log is left in either slot.
	require.Equal(t, countKeys(t, src, 1, kinds[:]...), countKeys(t, dst, 2, kinds[:]...))
}

// TestRestoreFailingLateKeepsOldLog cuts a large snapshot stream after
// Restore has committed several chunks of it.
func TestRestoreFailingLateKeepsOldLog(t *testing.T) {
	src := openTestStore(t)
	bigLog(t, openPartition(t, src, 1), 'n', 12<<20)
	stream := snapshotBytes(t, openPartition(t, src, 1))

	s := openTestStore(t)
	p := openPartition(t, s, 2)
	bigLog(t, p, 'o', 1<<20)
	before := p.Meta()
	keys := countKeys(t, s, 2, kinds[:]...)

	err := p.Restore(bytes.NewReader(stream[:len(stream)*9/10]))
	require.ErrorIs(t, err, ErrCorrupt)
	require.Equal(t, before, p.Meta())
	n, tags, err := logView(p)
	require.NoError(t, err)
	require.Equal(t, "o", tags)
	require.Equal(t, before.NextOffset, int64(n))
	require.Equal(t, keys, countKeys(t, s, 2, kinds[:]...), "no staged key is left")
	require.Equal(t, before, openPartition(t, s, 2).Meta())

	// A source that fails (as dragonboat's does when it stops) is not
	// reported as corruption: its error stays matchable.
	stop := errors.New("stopped")
	err = p.Restore(io.MultiReader(bytes.NewReader(stream[:len(stream)/2]), iotest.ErrReader(stop)))
	require.ErrorIs(t, err, stop)
	require.NotErrorIs(t, err, ErrCorrupt)
	require.Equal(t, before, p.Meta())
	require.Equal(t, keys, countKeys(t, s, 2, kinds[:]...))

	// The whole stream restores, and a second restore switches back to
	// the first slot.
	require.NoError(t, p.Restore(bytes.NewReader(stream)))
	require.Equal(t, openPartition(t, src, 1).Meta(), p.Meta())
	require.NoError(t, p.Restore(bytes.NewReader(stream)))
	_, tags, err = logView(p)
	require.NoError(t, err)
	require.Equal(t, "n", tags)
	require.Equal(t, countKeys(t, src, 1, kinds[:]...), countKeys(t, s, 2, kinds[:]...))
}

// TestDeleteDamagedPartition: a partition whose meta no longer reads back
// cannot be loaded, yet must be deletable (its topic deleted, or the
// replica moved away), without touching its neighbours.
func TestDeleteDamagedPartition(t *testing.T) {
	s := openTestStore(t)
	p := openPartition(t, s, 5)
	q := openPartition(t, s, 6)
	applyCmds(t, p, appendCmd(t, 7, 0, 0, "a"))
	applyCmds(t, q, appendCmd(t, 7, 0, 0, "b"))
	require.NoError(t, s.db.Set(key(kindMeta, 5), []byte("damaged"), pebble.NoSync))
	_, err := s.Partition(5)
	require.ErrorIs(t, err, ErrCorrupt)

	require.NoError(t, s.DeletePartition(5))
	require.Zero(t, countKeys(t, s, 5, kindMeta, kindData, kindTime, kindProducer))
	p, err = s.Partition(5)
	require.NoError(t, err)
	require.Equal(t, Meta{MaxTime: math.MinInt64}, p.Meta())
	require.Equal(t, []string{"0:b"}, readLog(t, openPartition(t, s, 6), 0, 1))
}
