package storage

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"testing"

	"github.com/stretchr/testify/require"
)

// kv is a record written by the compaction tests: key "" means a keyless
// record, value "-" a tombstone.
type kv struct{ k, v string }

func kvCmd(t testing.TB, c Compression, recs ...kv) []byte {
	t.Helper()
	var bb BatchBuilder
	for i, r := range recs {
		rec := Record{Time: 1000 + int64(i), Value: []byte(r.v)}
		if r.k != "" {
			rec.Key = []byte(r.k)
		}
		if r.v == "-" {
			rec.Tombstone, rec.Value = true, nil
		}
		bb.Add(rec)
	}
	b, err := bb.Build(c, 0, 0, 0)
	require.NoError(t, err)
	return append([]byte{CmdAppend}, b...)
}

// kvLog reads every record as "offset:key=value" ("key=-" for a
// tombstone), checking that batches still follow each other without gaps.
func kvLog(t testing.TB, p *Partition) []string {
	t.Helper()
	m := p.Meta()
	var out []string
	next := int64(-1)
	for _, b := range rawBatches(t, p, 0, m.NextOffset, math.MaxInt) {
		h, recs, err := DecodeRecords(b, m.LogStart, nil)
		require.NoError(t, err)
		if next >= 0 {
			require.Equal(t, next, h.BaseOffset, "batches follow each other")
		}
		next = h.LastOffset() + 1
		for _, r := range recs {
			v := string(r.Value)
			if r.Tombstone {
				v = "-"
			}
			out = append(out, fmt.Sprintf("%d:%s=%s", r.Offset, r.Key, v))
		}
	}
	if next >= 0 {
		require.Equal(t, m.NextOffset, next, "the batches end at the next offset")
	}
	return out
}

// compactNow runs compaction passes on p, applying each command, until a
// pass reaches the head; it returns the passes' stats.
func compactNow(t testing.TB, p *Partition, o CompactOptions) []CompactStats {
	t.Helper()
	var all []CompactStats
	for range 1000 {
		st, err := p.RunCompaction(context.Background(), o, func(cmd []byte, _ bool) error {
			res := applyCmds(t, p, cmd)
			require.Equal(t, StatusOK, res[0].Status)
			return nil
		})
		require.NoError(t, err)
		all = append(all, st)
		if st.Done {
			return all
		}
	}
	t.Fatal("compaction never reached the head")
	return nil
}

func TestCompactKeepsLastValueOfEveryKey(t *testing.T) {
	for _, c := range []Compression{CompressionNone, CompressionZstd} {
		t.Run(c.String(), func(t *testing.T) {
			p := openPartition(t, openTestStore(t), 1)
			applyCmds(t, p,
				kvCmd(t, c, kv{"a", "1"}, kv{"b", "1"}, kv{"c", "1"}), // 0-2
				kvCmd(t, c, kv{"a", "2"}, kv{"", "x"}),                // 3-4
				kvCmd(t, c, kv{"b", "2"}, kv{"b", "3"}),               // 5-6: whole batch superseded by 7-8? no: b=3 is last
				kvCmd(t, c, kv{"a", "3"}, kv{"c", "-"}),               // 7-8
				kvCmd(t, c, kv{"a", "4"}, kv{"b", "4"}),               // 9-10: the head
			)
			before := p.Meta()
			stats := compactNow(t, p, CompactOptions{Now: 1, DeleteRetention: 1000})
			require.Len(t, stats, 1)
			require.Equal(t, int64(9), stats[0].End, "the head is not indexed")
			// Kept: the keyless record, the last of b and a before the
			// head (whose records do not count), the tombstone (it stays
			// for DeleteRetention), and the head, untouched.
			require.Equal(t, []string{"4:=x", "6:b=3", "7:a=3", "8:c=-", "9:a=4", "10:b=4"}, kvLog(t, p))
			m := p.Meta()
			require.Equal(t, before.NextOffset, m.NextOffset)
			require.Equal(t, before.LogStart, m.LogStart)
			require.Equal(t, before.MaxTime, m.MaxTime)
			require.Equal(t, sumBatches(t, p, 0), p.StoredBytes())

			// A second pass has nothing to do; the head, once older,
			// is compacted in turn.
			applyCmds(t, p, kvCmd(t, c, kv{"z", "1"}))
			compactNow(t, p, CompactOptions{Now: 2, DeleteRetention: 1000})
			require.Equal(t, []string{"4:=x", "8:c=-", "9:a=4", "10:b=4", "11:z=1"}, kvLog(t, p))
		})
	}
}

func TestCompactMergesEmptiedBatches(t *testing.T) {
	p := openPartition(t, openTestStore(t), 1)
	applyCmds(t, p,
		kvCmd(t, CompressionNone, kv{"a", "1"}), // 0: emptied, the first batch: stays empty
		kvCmd(t, CompressionNone, kv{"a", "2"}), // 1: emptied: merged into 0
		kvCmd(t, CompressionNone, kv{"b", "1"}), // 2: kept
		kvCmd(t, CompressionNone, kv{"a", "3"}), // 3: emptied: merged into 2
		kvCmd(t, CompressionNone, kv{"a", "4"}), // 4: kept
		kvCmd(t, CompressionNone, kv{"z", "1"}), // 5: head
	)
	compactNow(t, p, CompactOptions{Now: 1})
	require.Equal(t, []string{"2:b=1", "4:a=4", "5:z=1"}, kvLog(t, p))
	require.Equal(t, []int64{0, 2, 4, 5}, storedBases(t, p))
	require.Equal(t, sumBatches(t, p, 0), p.StoredBytes())

	// Reads from inside the gaps find the next record.
	for from, want := range map[int64]string{0: "2:b=1", 1: "2:b=1", 3: "4:a=4"} {
		var got []string
		require.NoError(t, p.ReadBatches(from, p.Meta().NextOffset, math.MaxInt, func(b []byte) bool {
			_, recs, err := DecodeRecords(b, from, nil)
			require.NoError(t, err)
			for _, r := range recs {
				got = append(got, fmt.Sprintf("%d:%s=%s", r.Offset, r.Key, r.Value))
			}
			return true
		}))
		require.Equal(t, want, got[0], "from %d", from)
	}
	// The time index still finds the first record at or after a time.
	off, err := p.OffsetForTime(0, p.Meta().NextOffset)
	require.NoError(t, err)
	require.Equal(t, int64(2), off)

	// Trimming and retention see the merged spans.
	require.Equal(t, []Result{ok(3)}, applyCmds(t, p, TrimCommand(3)))
	require.Equal(t, []int64{2, 4, 5}, storedBases(t, p))
	require.Equal(t, []string{"4:a=4", "5:z=1"}, kvLog(t, p))
}

func TestCompactTombstonesExpireAfterDeleteRetention(t *testing.T) {
	p := openPartition(t, openTestStore(t), 1)
	applyCmds(t, p,
		kvCmd(t, CompressionNone, kv{"a", "1"}, kv{"b", "1"}),
		kvCmd(t, CompressionNone, kv{"a", "-"}),
		kvCmd(t, CompressionNone, kv{"z", "1"}), // head
	)
	const retention = 100
	compactNow(t, p, CompactOptions{Now: 1000, DeleteRetention: retention})
	require.Equal(t, []string{"1:b=1", "2:a=-", "3:z=1"}, kvLog(t, p), "first reached at 1000")

	compactNow(t, p, CompactOptions{Now: 1099, DeleteRetention: retention})
	require.Equal(t, []string{"1:b=1", "2:a=-", "3:z=1"}, kvLog(t, p), "not yet")

	// A command that asks for the tombstone early is refused by the state
	// machine, whatever its planner thought.
	early := compactCmd{now: 1099, deleteRetention: retention, passEnd: 3, offsets: []int64{1, 2}, expiring: []bool{true, true}}
	require.Equal(t, []Result{ok(0)}, applyCmds(t, p, early.encode()))
	require.Equal(t, []string{"1:b=1", "2:a=-", "3:z=1"}, kvLog(t, p), "and a value is never removed for its age")

	compactNow(t, p, CompactOptions{Now: 1100, DeleteRetention: retention})
	require.Equal(t, []string{"1:b=1", "3:z=1"}, kvLog(t, p), "gone after DeleteRetention")

	// A tombstone not yet reached by a finished pass stays, whatever the
	// clock says.
	applyCmds(t, p, kvCmd(t, CompressionNone, kv{"b", "-"}), kvCmd(t, CompressionNone, kv{"y", "1"}))
	unreached := compactCmd{now: math.MaxInt64, passEnd: 5, offsets: []int64{4}, expiring: []bool{true}}
	applyCmds(t, p, unreached.encode())
	require.Contains(t, kvLog(t, p), "4:b=-")

	// A tombstone with a later record of its key goes at once, like any
	// other superseded record.
	applyCmds(t, p, kvCmd(t, CompressionNone, kv{"b", "2"}), kvCmd(t, CompressionNone, kv{"x", "1"}))
	compactNow(t, p, CompactOptions{Now: 1101, DeleteRetention: retention})
	require.Equal(t, []string{"3:z=1", "5:y=1", "6:b=2", "7:x=1"}, kvLog(t, p))
}

// TestCompactInBoundedMemory compacts a partition whose keys do not fit
// the key index: passes stop where the index fills, and the result is
// the same as with room for every key.
func TestCompactInBoundedMemory(t *testing.T) {
	write := func(p *Partition) {
		for round := range 4 {
			for b := range 10 {
				var recs []kv
				for i := range 10 {
					recs = append(recs, kv{fmt.Sprintf("key-%03d", b*10+i), fmt.Sprint(round)})
				}
				applyCmds(t, p, kvCmd(t, CompressionLZ4, recs...))
			}
		}
		applyCmds(t, p, kvCmd(t, CompressionNone, kv{"head", "1"}))
	}
	big := openPartition(t, openTestStore(t), 1)
	write(big)
	require.Len(t, compactNow(t, big, CompactOptions{Now: 1}), 1)

	small := openPartition(t, openTestStore(t), 1)
	write(small)
	// Room for about 10 keys: each pass indexes one batch's worth.
	passes := compactNow(t, small, CompactOptions{Now: 1, KeyMemory: 10 * (7 + keyOverhead), CommandBytes: 1})
	require.Greater(t, len(passes), 10)
	for _, st := range passes[:len(passes)-1] {
		require.False(t, st.Done)
		require.Greater(t, st.Commands, 0)
	}
	want := kvLog(t, big)
	require.Len(t, want, 101) // 100 keys at their last value, and the head
	require.Equal(t, want, kvLog(t, small))
	requireSameOffsets(t, big, small)
	require.Equal(t, big.state.Load().comp.cleanEnd, small.state.Load().comp.cleanEnd)
}

// TestCompactStopsHalfWay: a pass whose proposals fail part of the way
// (its node crashed or lost the leadership) leaves a readable partition
// with no record lost that should stay, and the next pass finishes.
func TestCompactStopsHalfWay(t *testing.T) {
	write := func(p *Partition) {
		for round := range 3 {
			for b := range 8 {
				applyCmds(t, p, kvCmd(t, CompressionNone, kv{fmt.Sprintf("k%d", b), fmt.Sprint(round)}, kv{"", "keyless"}))
			}
		}
		applyCmds(t, p, kvCmd(t, CompressionNone, kv{"head", "1"}))
	}
	want := openPartition(t, openTestStore(t), 1)
	write(want)
	compactNow(t, want, CompactOptions{Now: 1})

	p := openPartition(t, openTestStore(t), 1)
	write(p)
	full := kvLog(t, p)
	crash := errors.New("crashed")
	n := 0
	_, err := p.RunCompaction(context.Background(), CompactOptions{Now: 1, CommandBytes: 1}, func(cmd []byte, _ bool) error {
		if n++; n > 3 {
			return crash
		}
		applyCmds(t, p, cmd)
		return nil
	})
	require.ErrorIs(t, err, crash)
	half := kvLog(t, p)
	require.Less(t, len(half), len(full))
	require.Greater(t, len(half), len(kvLog(t, want)))
	require.Subset(t, full, half)
	require.Subset(t, half, kvLog(t, want))
	require.Zero(t, p.state.Load().comp.cleanEnd, "the pass did not finish")

	// The same commands again, stale, change nothing more.
	compactNow(t, p, CompactOptions{Now: 1})
	require.Equal(t, kvLog(t, want), kvLog(t, p))
	requireSameOffsets(t, want, p)
}

// TestCompactSnapshot: a replica restored from a snapshot taken after
// compaction holds the same records and the same compaction state, so it
// removes the same tombstones at the same entry.
func TestCompactSnapshot(t *testing.T) {
	p := openPartition(t, openTestStore(t), 1)
	applyCmds(t, p,
		kvCmd(t, CompressionNone, kv{"a", "1"}),
		kvCmd(t, CompressionNone, kv{"a", "2"}), // merged into the first
		kvCmd(t, CompressionNone, kv{"b", "1"}, kv{"c", "-"}),
		kvCmd(t, CompressionNone, kv{"b", "2"}),
		kvCmd(t, CompressionNone, kv{"z", "1"}),
	)
	compactNow(t, p, CompactOptions{Now: 1000, DeleteRetention: 10})
	snap := p.Snapshot()
	var buf bytes.Buffer
	_, err := snap.WriteTo(&buf)
	require.NoError(t, err)
	require.NoError(t, snap.Close())

	r := openPartition(t, openTestStore(t), 5)
	applyCmds(t, r, kvCmd(t, CompressionNone, kv{"old", "stuff"}))
	require.NoError(t, r.Restore(bytes.NewReader(buf.Bytes())))
	require.Equal(t, kvLog(t, p), kvLog(t, r))
	require.Equal(t, p.Meta(), r.Meta())
	require.Equal(t, p.state.Load().comp, r.state.Load().comp)
	require.Equal(t, p.StoredBytes(), r.StoredBytes())

	// The same next pass on both: the tombstone goes on both.
	for _, q := range []*Partition{p, r} {
		compactNow(t, q, CompactOptions{Now: 1010, DeleteRetention: 10})
		require.NotContains(t, kvLog(t, q), "3:c=-")
	}
	require.Equal(t, kvLog(t, p), kvLog(t, r))

	// And it survives reopening the store.
	r2 := openPartition(t, r.s, 5)
	require.Equal(t, r.state.Load().comp, r2.state.Load().comp)
}

func TestCompactCommandInvalid(t *testing.T) {
	p := openPartition(t, openTestStore(t), 1)
	applyCmds(t, p, kvCmd(t, CompressionNone, kv{"a", "1"}), kvCmd(t, CompressionNone, kv{"a", "2"}))
	good := compactCmd{now: 1, passEnd: 1, offsets: []int64{0}}
	for name, cmd := range map[string][]byte{
		"short":           good.encode()[:20],
		"bad final flag":  func() []byte { b := good.encode(); b[25] = 7; return b }(),
		"trailing bytes":  append(good.encode(), 1),
		"past the end":    (&compactCmd{passEnd: 3}).encode(),
		"negative retain": (&compactCmd{deleteRetention: -1}).encode(),
		"repeated offset": func() []byte {
			b := (&compactCmd{offsets: []int64{0, 1}}).encode()
			b[len(b)-1] = 0 // a zero delta
			return b
		}(),
	} {
		require.Equal(t, []Result{rejected(StatusInvalid)}, applyCmds(t, p, cmd), name)
	}
	require.Equal(t, []string{"0:a=1", "1:a=2"}, kvLog(t, p))

	// A producer cannot send a compacted batch: in Kafka's format, one
	// with fewer records than offsets, and in the legacy one, one with
	// the flag.
	b := kvCmd(t, CompressionNone, kv{"a", "3"})
	binary.BigEndian.PutUint32(b[1+23:], 1) // last offset delta
	resignKafka(b[1:])
	require.Equal(t, []Result{rejected(StatusInvalid)}, applyCmds(t, p, b))
	bb := BatchBuilder{legacy: true}
	bb.Add(Record{Key: []byte("a"), Value: []byte("3")})
	lb, err := bb.Build(CompressionNone, 0, 0, 0)
	require.NoError(t, err)
	lb[18] = byte(FlagCompacted)
	resign(lb)
	require.Equal(t, []Result{rejected(StatusInvalid)}, applyCmds(t, p, append([]byte{CmdAppend}, lb...)))
}

func TestCompactedBatchValidation(t *testing.T) {
	for _, f := range formats {
		t.Run(f.name, func(t *testing.T) { testCompactedBatchValidation(t, f.legacy) })
	}
}

func testCompactedBatchValidation(t *testing.T, legacy bool) {
	bb := BatchBuilder{legacy: legacy}
	for _, d := range []uint64{1, 4, 5} {
		bb.addAt(Record{Time: 7, Key: []byte("k"), Value: []byte("v")}, d)
	}
	id := batchIdentity{flags: FlagCompacted, count: 6}
	b, err := bb.build(0, CompressionNone, id)
	require.NoError(t, err)
	SetBaseOffset(b, 100)
	h, recs, err := DecodeRecords(b, 0, nil)
	require.NoError(t, err)
	require.Equal(t, int64(105), h.LastOffset())
	require.Equal(t, []int64{101, 104, 105}, slices.Collect(func(yield func(int64) bool) {
		for _, r := range recs {
			if !yield(r.Offset) {
				return
			}
		}
	}))

	for name, deltas := range map[string][]uint64{"out of order": {2, 1}, "repeated": {1, 1}, "past the count": {1, 6}} {
		bb.Reset()
		for _, d := range deltas {
			bb.addAt(Record{Time: 7, Key: []byte("k")}, d)
		}
		b, err := bb.build(0, CompressionNone, id)
		require.NoError(t, err)
		requireCorrupt(t, b, name)
	}
	// Without the flag (a Kafka batch: with as many records as
	// offsets), the deltas must be dense.
	bb.Reset()
	bb.addAt(Record{Time: 7}, 1)
	bb.addAt(Record{Time: 7}, 2)
	b, err = bb.build(0, CompressionNone, batchIdentity{count: 2})
	require.NoError(t, err)
	requireCorrupt(t, b)
}

// requireSameOffsets: a and b have the same log start, next offset and
// clock (their applied indexes differ with the commands they applied).
func requireSameOffsets(t *testing.T, a, b *Partition) {
	t.Helper()
	ma, mb := a.Meta(), b.Meta()
	ma.AppliedIndex, mb.AppliedIndex = 0, 0
	require.Equal(t, ma, mb)
	require.Equal(t, a.StoredBytes(), b.StoredBytes())
}
