package storage

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"maps"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/stretchr/testify/require"
)

// appendCmd returns a CmdAppend command carrying one uncompressed batch with
// a record per value. Record i has timestamp 1000+i (unix ns). pid 0 makes
// the batch non-idempotent; epoch and seq are then ignored.
func appendCmd(t testing.TB, pid uint64, epoch uint32, seq int32, values ...string) []byte {
	t.Helper()
	recs := make([]Record, len(values))
	for i, v := range values {
		recs[i] = Record{Time: 1000 + int64(i), Value: []byte(v)}
	}
	return recordsCmd(t, pid, epoch, seq, recs)
}

// timedCmd returns a CmdAppend command with a non-idempotent batch holding one
// record per timestamp, with the timestamp as its value.
func timedCmd(t testing.TB, times ...int64) []byte {
	t.Helper()
	recs := make([]Record, len(times))
	for i, ts := range times {
		recs[i] = Record{Time: ts, Value: []byte(fmt.Sprint(ts))}
	}
	return recordsCmd(t, 0, 0, 0, recs)
}

// recordsCmd builds a legacy batch, whose nanosecond times and 64-bit
// producer fields these tests use; kafkabatch_test.go runs the apply logic
// on Kafka batches.
func recordsCmd(t testing.TB, pid uint64, epoch uint32, seq int32, recs []Record) []byte {
	t.Helper()
	bb := BatchBuilder{legacy: true}
	for _, r := range recs {
		bb.Add(r)
	}
	b, err := bb.Build(CompressionNone, pid, epoch, seq)
	require.NoError(t, err)
	return append([]byte{CmdAppend}, b...)
}

// openTestStore opens an in-memory store that is closed when the test ends.
func openTestStore(t testing.TB) *Store {
	t.Helper()
	s, err := OpenStore("x", StoreOptions{InMemory: true})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, s.Close()) })
	return s
}

func openPartition(t testing.TB, s *Store, shard uint64) *Partition {
	t.Helper()
	p, err := s.Partition(shard)
	require.NoError(t, err)
	return p
}

// applyCmds applies cmds in one Apply call, as the Raft entries that follow
// the partition's applied index, and returns their results.
func applyCmds(t testing.TB, p *Partition, cmds ...[]byte) []Result {
	t.Helper()
	next := p.Meta().AppliedIndex + 1
	entries := make([]Entry, len(cmds))
	for i, c := range cmds {
		entries[i] = Entry{Index: next + uint64(i), Cmd: c}
	}
	return applyEntries(t, p, entries...)
}

func applyEntries(t testing.TB, p *Partition, entries ...Entry) []Result {
	t.Helper()
	results := make([]Result, len(entries))
	require.NoError(t, p.Apply(entries, results))
	return results
}

// rawBatches returns copies of the batches ReadBatches passes.
func rawBatches(t testing.TB, p *Partition, from, hw int64, maxBytes int) [][]byte {
	t.Helper()
	var out [][]byte
	require.NoError(t, p.ReadBatches(from, hw, maxBytes, func(b []byte) bool {
		out = append(out, append([]byte(nil), b...))
		return true
	}))
	return out
}

// readLog decodes every record in [from, hw) as "offset:value".
func readLog(t testing.TB, p *Partition, from, hw int64) []string {
	t.Helper()
	var out []string
	for _, b := range rawBatches(t, p, from, hw, math.MaxInt) {
		_, recs, err := DecodeRecords(b, from, nil)
		require.NoError(t, err)
		for _, r := range recs {
			if r.Offset < hw {
				out = append(out, fmt.Sprintf("%d:%s", r.Offset, r.Value))
			}
		}
	}
	return out
}

func TestApplyAssignsDenseOffsets(t *testing.T) {
	s := openTestStore(t)
	p := openPartition(t, s, 1)
	require.Equal(t, Meta{MaxTime: math.MinInt64}, p.Meta())

	res := applyCmds(t, p,
		appendCmd(t, 0, 0, 0, "a", "b", "c"),
		appendCmd(t, 0, 0, 0, "d"),
	)
	require.Equal(t, []Result{{BaseOffset: 0}, {BaseOffset: 3}}, res)
	require.Equal(t, Meta{AppliedIndex: 2, NextOffset: 4, MaxTime: 1002, LastStable: 4}, p.Meta())

	res = applyCmds(t, p, appendCmd(t, 0, 0, 0, "e", "f"))
	require.Equal(t, []Result{{BaseOffset: 4}}, res)
	require.Equal(t, Meta{AppliedIndex: 3, NextOffset: 6, MaxTime: 1002, LastStable: 6}, p.Meta())

	require.Equal(t, []string{"0:a", "1:b", "2:c", "3:d", "4:e", "5:f"}, readLog(t, p, 0, 6))

	// Every stored batch carries the base offset it was assigned.
	var bases []int64
	for _, b := range rawBatches(t, p, 0, 6, math.MaxInt) {
		h, err := ParseHeader(b)
		require.NoError(t, err)
		bases = append(bases, h.BaseOffset)
	}
	require.Equal(t, []int64{0, 3, 4}, bases)
}

func TestApplyIgnoresProposedBaseOffset(t *testing.T) {
	s := openTestStore(t)
	p := openPartition(t, s, 1)
	applyCmds(t, p, appendCmd(t, 0, 0, 0, "a"))

	// The base offset is not covered by the CRC: whatever the proposer put
	// there, the state machine overwrites it.
	cmd := appendCmd(t, 0, 0, 0, "b", "c")
	SetBaseOffset(cmd[1:], 12345)
	require.Equal(t, []Result{{BaseOffset: 1}}, applyCmds(t, p, cmd))
	require.Equal(t, []string{"0:a", "1:b", "2:c"}, readLog(t, p, 0, 3))
}

func TestApplyAdvancesAppliedIndexOverGaps(t *testing.T) {
	s := openTestStore(t)
	p := openPartition(t, s, 1)
	// Raft indexes need not be consecutive (dragonboat skips entries that are
	// not for the state machine).
	res := applyEntries(t, p,
		Entry{Index: 5, Cmd: appendCmd(t, 0, 0, 0, "a")},
		Entry{Index: 9, Cmd: appendCmd(t, 0, 0, 0, "b")},
	)
	require.Equal(t, []Result{{BaseOffset: 0}, {BaseOffset: 1}}, res)
	require.Equal(t, uint64(9), p.Meta().AppliedIndex)

	// An Apply with no entries changes nothing.
	before := p.Meta()
	applyEntries(t, p)
	require.Equal(t, before, p.Meta())
}

func TestApplyReplayIsHarmless(t *testing.T) {
	s := openTestStore(t)
	p := openPartition(t, s, 1)
	entries := []Entry{
		{Index: 1, Cmd: appendCmd(t, 0, 0, 0, "a", "b")},
		{Index: 2, Cmd: appendCmd(t, 7, 0, 0, "c")},
		{Index: 3, Cmd: appendCmd(t, 7, 0, 1, "d")},
	}
	res := applyEntries(t, p, entries...)
	require.Equal(t, []Result{{BaseOffset: 0}, {BaseOffset: 2}, {BaseOffset: 3}}, res)
	meta := p.Meta()
	log := readLog(t, p, 0, meta.NextOffset)
	producers := cloneProducers(p.producers)

	// The same entries again, as after a crash that lost the applied index
	// in memory but not on disk: every one is skipped.
	res = applyEntries(t, p, entries...)
	skipped := Result{BaseOffset: -1, Status: StatusDuplicate}
	require.Equal(t, []Result{skipped, skipped, skipped}, res)
	require.Equal(t, meta, p.Meta())
	require.Equal(t, log, readLog(t, p, 0, meta.NextOffset+10))
	require.Equal(t, producers, p.producers)

	// An overlapping range: the old entries are skipped, the new ones applied.
	res = applyEntries(t, p,
		entries[2],
		Entry{Index: 4, Cmd: appendCmd(t, 7, 0, 2, "e")},
	)
	require.Equal(t, []Result{skipped, {BaseOffset: 4}}, res)
	require.Equal(t, []string{"0:a", "1:b", "2:c", "3:d", "4:e"}, readLog(t, p, 0, 5))
}

// TestApplyReplayAfterCrash loses the writes that were applied but not
// synced, reopens, and replays the Raft log: the partition must end up
// exactly as it was, offsets included.
func TestApplyReplayAfterCrash(t *testing.T) {
	fs := vfs.NewCrashableMem()
	s, err := OpenStore("db", StoreOptions{FS: fs})
	require.NoError(t, err)
	p := openPartition(t, s, 1)

	entries := []Entry{
		{Index: 1, Cmd: appendCmd(t, 7, 0, 0, "a", "b")},
		{Index: 2, Cmd: appendCmd(t, 0, 0, 0, "c")},
		{Index: 3, Cmd: appendCmd(t, 7, 0, 2, "d")},
		{Index: 4, Cmd: appendCmd(t, 7, 0, 3, "e", "f")},
		{Index: 5, Cmd: appendCmd(t, 7, 0, 2, "d")}, // a retry
	}
	want := applyEntries(t, p, entries[:2]...)
	require.NoError(t, s.Sync())
	want = append(want, applyEntries(t, p, entries[2:]...)...)
	wantMeta := p.Meta()
	wantLog := readLog(t, p, 0, wantMeta.NextOffset)

	crashed := fs.CrashClone(vfs.CrashCloneCfg{})
	require.NoError(t, s.Close())

	s2, err := OpenStore("db", StoreOptions{FS: crashed})
	require.NoError(t, err)
	defer func() { require.NoError(t, s2.Close()) }()
	p2 := openPartition(t, s2, 1)
	require.Equal(t, uint64(2), p2.Meta().AppliedIndex, "only the synced entries survive")

	got := applyEntries(t, p2, entries...)
	skipped := Result{BaseOffset: -1, Status: StatusDuplicate}
	require.Equal(t, append([]Result{skipped, skipped}, want[2:]...), got)
	require.Equal(t, wantMeta, p2.Meta())
	require.Equal(t, wantLog, readLog(t, p2, 0, wantMeta.NextOffset))
}

func cloneProducers(m map[uint64]*producerState) map[uint64]*producerState {
	out := make(map[uint64]*producerState, len(m))
	for pid, st := range m {
		c, err := decodeProducerState(st.encode())
		if err != nil {
			panic(err)
		}
		out[pid] = c
	}
	return out
}

// produce is one batch sent by a producer in TestApplyIdempotence.
type produce struct {
	pid   uint64
	epoch uint32
	seq   int32
	n     int // records in the batch
	want  Result
}

// ok, dup and rejected build the expected results of a produce step.
func ok(off int64) Result  { return Result{BaseOffset: off} }
func dup(off int64) Result { return Result{BaseOffset: off, Status: StatusDuplicate} }
func rejected(s Status) Result {
	return Result{BaseOffset: -1, Status: s}
}

func TestApplyIdempotence(t *testing.T) {
	cases := []struct {
		name  string
		steps []produce
	}{
		{"new producer starts at seq 0", []produce{
			{pid: 1, seq: 0, n: 2, want: ok(0)},
		}},
		{"new producer not at seq 0", []produce{
			{pid: 1, seq: 1, n: 1, want: rejected(StatusOutOfOrder)},
			{pid: 1, seq: 0, n: 1, want: ok(0)},
		}},
		{"new producer at a higher epoch still starts at seq 0", []produce{
			{pid: 1, epoch: 3, seq: 4, n: 1, want: rejected(StatusOutOfOrder)},
			{pid: 1, epoch: 3, seq: 0, n: 1, want: ok(0)},
		}},
		{"next sequence is accepted", []produce{
			{pid: 1, seq: 0, n: 2, want: ok(0)},
			{pid: 1, seq: 2, n: 3, want: ok(2)},
			{pid: 1, seq: 5, n: 1, want: ok(5)},
		}},
		{"retry of the last batch", []produce{
			{pid: 1, seq: 0, n: 2, want: ok(0)},
			{pid: 1, seq: 2, n: 2, want: ok(2)},
			{pid: 1, seq: 2, n: 2, want: dup(2)},
			{pid: 1, seq: 2, n: 2, want: dup(2)},
			{pid: 1, seq: 4, n: 1, want: ok(4)},
		}},
		{"retry of each of the last five batches", []produce{
			{pid: 1, seq: 0, n: 1, want: ok(0)},
			{pid: 1, seq: 1, n: 2, want: ok(1)},
			{pid: 1, seq: 3, n: 1, want: ok(3)},
			{pid: 1, seq: 4, n: 3, want: ok(4)},
			{pid: 1, seq: 7, n: 1, want: ok(7)},
			{pid: 1, seq: 8, n: 1, want: ok(8)},
			{pid: 1, seq: 1, n: 2, want: dup(1)},
			{pid: 1, seq: 3, n: 1, want: dup(3)},
			{pid: 1, seq: 4, n: 3, want: dup(4)},
			{pid: 1, seq: 7, n: 1, want: dup(7)},
			{pid: 1, seq: 8, n: 1, want: dup(8)},
			// The sixth most recent batch is forgotten.
			{pid: 1, seq: 0, n: 1, want: rejected(StatusOutOfOrder)},
			{pid: 1, seq: 9, n: 1, want: ok(9)},
		}},
		{"retry with another record count is not a duplicate", []produce{
			{pid: 1, seq: 0, n: 2, want: ok(0)},
			{pid: 1, seq: 0, n: 1, want: rejected(StatusOutOfOrder)},
			{pid: 1, seq: 0, n: 3, want: rejected(StatusOutOfOrder)},
		}},
		{"gap in sequence", []produce{
			{pid: 1, seq: 0, n: 1, want: ok(0)},
			{pid: 1, seq: 2, n: 1, want: rejected(StatusOutOfOrder)},
			{pid: 1, seq: 1, n: 1, want: ok(1)},
		}},
		{"sequence in the middle of a stored batch", []produce{
			{pid: 1, seq: 0, n: 3, want: ok(0)},
			{pid: 1, seq: 1, n: 2, want: rejected(StatusOutOfOrder)},
		}},
		{"lower epoch is fenced", []produce{
			{pid: 1, epoch: 2, seq: 0, n: 1, want: ok(0)},
			{pid: 1, epoch: 1, seq: 1, n: 1, want: rejected(StatusFenced)},
			{pid: 1, epoch: 1, seq: 0, n: 1, want: rejected(StatusFenced)},
			{pid: 1, epoch: 2, seq: 1, n: 1, want: ok(1)},
		}},
		{"higher epoch must start at seq 0", []produce{
			{pid: 1, epoch: 1, seq: 0, n: 3, want: ok(0)},
			{pid: 1, epoch: 2, seq: 3, n: 1, want: rejected(StatusOutOfOrder)},
			{pid: 1, epoch: 2, seq: 0, n: 1, want: ok(3)},
			{pid: 1, epoch: 2, seq: 1, n: 1, want: ok(4)},
			// The old epoch is now fenced, even for a retry of its batch.
			{pid: 1, epoch: 1, seq: 0, n: 3, want: rejected(StatusFenced)},
			{pid: 1, epoch: 1, seq: 3, n: 1, want: rejected(StatusFenced)},
		}},
		{"higher epoch forgets the old epoch's batches", []produce{
			{pid: 1, epoch: 1, seq: 0, n: 1, want: ok(0)},
			{pid: 1, epoch: 2, seq: 0, n: 1, want: ok(1)},
			{pid: 1, epoch: 2, seq: 0, n: 1, want: dup(1)},
		}},
		{"rejected batches change no state", []produce{
			{pid: 1, epoch: 1, seq: 0, n: 1, want: ok(0)},
			{pid: 1, epoch: 1, seq: 5, n: 1, want: rejected(StatusOutOfOrder)},
			{pid: 1, epoch: 0, seq: 1, n: 1, want: rejected(StatusFenced)},
			{pid: 1, epoch: 2, seq: 3, n: 1, want: rejected(StatusOutOfOrder)},
			{pid: 1, epoch: 1, seq: 1, n: 1, want: ok(1)},
			{pid: 1, epoch: 1, seq: 0, n: 1, want: dup(0)},
		}},
		{"producers are independent", []produce{
			{pid: 1, seq: 0, n: 1, want: ok(0)},
			{pid: 2, seq: 0, n: 1, want: ok(1)},
			{pid: 2, seq: 1, n: 1, want: ok(2)},
			{pid: 1, seq: 0, n: 1, want: dup(0)},
			{pid: 1, seq: 2, n: 1, want: rejected(StatusOutOfOrder)},
			{pid: 3, epoch: 9, seq: 0, n: 1, want: ok(3)},
			{pid: 2, seq: 0, n: 1, want: dup(1)},
		}},
		{"producer id 0 is never deduplicated", []produce{
			{pid: 0, n: 2, want: ok(0)},
			{pid: 0, n: 2, want: ok(2)},
			{pid: 0, n: 2, want: ok(4)},
		}},
		{"largest producer id and epoch", []produce{
			{pid: math.MaxUint64, epoch: math.MaxUint32, seq: 0, n: 1, want: ok(0)},
			{pid: math.MaxUint64, epoch: math.MaxUint32, seq: 0, n: 1, want: dup(0)},
			{pid: math.MaxUint64, epoch: math.MaxUint32 - 1, seq: 1, n: 1, want: rejected(StatusFenced)},
		}},
	}
	for _, tc := range cases {
		// Each step as its own Apply call, then all steps in one call: the
		// second reads producer state written earlier in the same call.
		for _, oneCall := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/one apply=%t", tc.name, oneCall), func(t *testing.T) {
				s := openTestStore(t)
				p := openPartition(t, s, 1)
				var (
					cmds    [][]byte
					want    []Result
					wantLog []string
				)
				next := int64(0)
				for i, st := range tc.steps {
					var values []string
					for j := range st.n {
						values = append(values, fmt.Sprintf("s%d.%d", i, j))
					}
					cmds = append(cmds, appendCmd(t, st.pid, st.epoch, st.seq, values...))
					want = append(want, st.want)
					if st.want.Status == StatusOK {
						for _, v := range values {
							wantLog = append(wantLog, fmt.Sprintf("%d:%s", next, v))
							next++
						}
					}
				}

				var got []Result
				if oneCall {
					got = applyCmds(t, p, cmds...)
				} else {
					for i, c := range cmds {
						got = append(got, applyCmds(t, p, c)...)
						require.Equal(t, want[i], got[i], "step %d", i)
					}
				}
				require.Equal(t, want, got)
				require.Equal(t, uint64(len(cmds)), p.Meta().AppliedIndex)
				require.Equal(t, next, p.Meta().NextOffset)
				// Duplicates and rejected batches stored nothing.
				require.Equal(t, wantLog, readLog(t, p, 0, next+100))

				// The producer state survives a reload and answers the same.
				p2 := openPartition(t, s, 1)
				require.Equal(t, p.producers, p2.producers)
				require.Equal(t, p.Meta(), p2.Meta())
			})
		}
	}
}

func TestProducerStateSurvivesReopen(t *testing.T) {
	fs := vfs.NewMem()
	s, err := OpenStore("db", StoreOptions{FS: fs})
	require.NoError(t, err)
	p := openPartition(t, s, 1)
	res := applyCmds(t, p,
		appendCmd(t, 7, 2, 0, "a"),
		appendCmd(t, 7, 2, 1, "b", "c"),
		appendCmd(t, 8, 0, 0, "d"),
	)
	require.Equal(t, []Result{ok(0), ok(1), ok(3)}, res)
	meta := p.Meta()
	producers := cloneProducers(p.producers)
	require.Len(t, producers, 2)
	require.NoError(t, s.Close())

	s, err = OpenStore("db", StoreOptions{FS: fs})
	require.NoError(t, err)
	defer func() { require.NoError(t, s.Close()) }()
	p = openPartition(t, s, 1)
	require.Equal(t, meta, p.Meta())
	require.Equal(t, producers, p.producers)

	res = applyCmds(t, p,
		appendCmd(t, 7, 2, 1, "b", "c"), // retry
		appendCmd(t, 7, 1, 3, "x"),      // old epoch
		appendCmd(t, 8, 0, 2, "x"),      // gap
		appendCmd(t, 7, 2, 3, "e"),      // next
		appendCmd(t, 8, 0, 1, "f"),      // next
	)
	require.Equal(t, []Result{
		dup(1), rejected(StatusFenced), rejected(StatusOutOfOrder), ok(4), ok(5),
	}, res)
	require.Equal(t, []string{"0:a", "1:b", "2:c", "3:d", "4:e", "5:f"}, readLog(t, p, 0, 6))
}

func TestApplyCorruptCommand(t *testing.T) {
	valid := appendCmd(t, 7, 0, 0, "a", "b")
	batch := valid[1:]
	with := func(cmd byte, b []byte) []byte { return append([]byte{cmd}, b...) }
	flipped := func(i int) []byte {
		c := append([]byte(nil), valid...)
		c[1+i] ^= 0x10
		return c
	}
	cases := map[string][]byte{
		"empty":                    {},
		"nil":                      nil,
		"command byte only":        {CmdAppend},
		"command 0":                with(0, batch),
		"unknown command":          with(2, batch),
		"command 255":              with(255, batch),
		"truncated batch":          valid[:len(valid)-1],
		"header only":              valid[:1+legacyHeaderSize],
		"trailing garbage":         append(append([]byte(nil), valid...), 0),
		"two batches":              append(append([]byte(nil), valid...), batch...),
		"flipped length":           flipped(8),
		"flipped crc":              flipped(12),
		"flipped version":          flipped(16),
		"flipped count":            flipped(20),
		"flipped max time":         flipped(32),
		"flipped producer id":      flipped(40),
		"flipped producer epoch":   flipped(48),
		"flipped base sequence":    flipped(52),
		"flipped record":           flipped(legacyHeaderSize + 2),
		"flipped last record byte": flipped(len(batch) - 1),
	}
	for name, cmd := range cases {
		t.Run(name, func(t *testing.T) {
			s := openTestStore(t)
			p := openPartition(t, s, 1)
			res := applyCmds(t, p, cmd)
			require.Equal(t, []Result{rejected(StatusCorrupt)}, res)
			require.Equal(t, Meta{AppliedIndex: 1, MaxTime: math.MinInt64}, p.Meta())
			require.Empty(t, rawBatches(t, p, 0, math.MaxInt64, math.MaxInt))
			require.Empty(t, p.producers)
			require.Zero(t, countKeys(t, s, 1, kindData, kindTime, kindProducer))

			// The partition carries on: the producer was not registered by
			// the corrupt batch, so its first batch is still seq 0.
			res = applyCmds(t, p, valid)
			require.Equal(t, []Result{ok(0)}, res)
			require.Equal(t, []string{"0:a", "1:b"}, readLog(t, p, 0, 2))
		})
	}
}

// inconsistentBatches returns commands whose legacy batch has a valid header
// and CRC but contents that contradict the header, each from producer 7 at
// sequence 0. (inconsistentKafkaBatches has Kafka's.)
func inconsistentBatches(t testing.TB) map[string][]byte {
	t.Helper()
	le := binary.LittleEndian
	build := func(c Compression) []byte {
		bb := BatchBuilder{legacy: true}
		for i := range 3 {
			bb.Add(Record{Time: 1000 + int64(i), Value: []byte(fmt.Sprintf("value %020d", i))})
		}
		b, err := bb.BuildWithPrefix(1, c, 7, 0, 0)
		require.NoError(t, err)
		b[0] = CmdAppend
		return b
	}
	// mutate changes a copy of an uncompressed batch and signs it again.
	mutate := func(c Compression, f func(b []byte)) []byte {
		cmd := build(c)
		b := cmd[1:]
		f(b)
		le.PutUint32(b[12:], crc32.Checksum(b[16:], castagnoli))
		_, err := ParseHeader(b)
		require.NoError(t, err, "the header must pass, so that only the records can fail")
		return cmd
	}
	// Record 1's offset delta: after record 0 (a one-byte length and
	// its body), its length and its one-byte timestamp delta.
	rec1Delta := func(b []byte) int { return legacyHeaderSize + 1 + int(b[legacyHeaderSize]) + 2 }
	return map[string][]byte{
		"count one more":    mutate(CompressionNone, func(b []byte) { le.PutUint32(b[20:], 4) }),
		"count one less":    mutate(CompressionNone, func(b []byte) { le.PutUint32(b[20:], 2) }),
		"offset delta":      mutate(CompressionNone, func(b []byte) { b[rec1Delta(b)] = 2 }),
		"record length":     mutate(CompressionNone, func(b []byte) { b[legacyHeaderSize]++ }),
		"max time future":   mutate(CompressionNone, func(b []byte) { le.PutUint64(b[32:], 1<<62) }),
		"max time past":     mutate(CompressionNone, func(b []byte) { le.PutUint64(b[32:], 1000) }),
		"first time":        mutate(CompressionNone, func(b []byte) { le.PutUint64(b[24:], 999) }),
		"first record time": mutate(CompressionNone, func(b []byte) { b[legacyHeaderSize+1] = 2 }), // delta +1
		"zstd garbage":      mutate(CompressionZstd, func(b []byte) { b[len(b)-3] ^= 0xff }),
		"lz4 raw length":    mutate(CompressionLZ4, func(b []byte) { le.PutUint32(b[56:], le.Uint32(b[56:])+1) }),
	}
}

// TestApplyRefusesInvalidBatch: a batch whose CRC holds but whose records
// contradict its header (a buggy encoder, not a damaged wire) is refused
// with StatusInvalid and stores nothing: stored, it would get offsets
// from the wrong count and break every reader.
func TestApplyRefusesInvalidBatch(t *testing.T) {
	for name, cmd := range inconsistentBatches(t) {
		t.Run(name, func(t *testing.T) {
			s := openTestStore(t)
			p := openPartition(t, s, 1)
			require.Equal(t, []Result{rejected(StatusInvalid)}, applyCmds(t, p, cmd))
			require.Equal(t, Meta{AppliedIndex: 1, MaxTime: math.MinInt64}, p.Meta())
			require.Empty(t, p.producers)
			require.Zero(t, countKeys(t, s, 1, kindData, kindTime, kindProducer))
			require.Equal(t, []Result{ok(0)}, applyCmds(t, p, appendCmd(t, 7, 0, 0, "a")))
		})
	}
}

// TestApplyEveryByteFlip flips each byte covered by the CRC in turn.
func TestApplyEveryByteFlip(t *testing.T) {
	s := openTestStore(t)
	p := openPartition(t, s, 1)
	valid := appendCmd(t, 7, 0, 0, "hello", "world")
	for i := 1 + 8; i < len(valid); i++ {
		c := append([]byte(nil), valid...)
		c[i] ^= 1
		require.Equal(t, []Result{rejected(StatusCorrupt)}, applyCmds(t, p, c), "byte %d", i)
	}
	require.Equal(t, int64(0), p.Meta().NextOffset)
	require.Empty(t, p.producers)
	require.Equal(t, []Result{ok(0)}, applyCmds(t, p, valid))
}

func TestApplyCompressedBatches(t *testing.T) {
	s := openTestStore(t)
	p := openPartition(t, s, 1)
	var want []string
	for i, c := range allCompressions {
		var bb BatchBuilder
		for j := range 3 {
			v := fmt.Sprintf("%s-%d %0100d", c, j, j)
			bb.Add(Record{Time: int64(j), Value: []byte(v)})
			want = append(want, fmt.Sprintf("%d:%s", 3*i+j, v))
		}
		b, err := bb.Build(c, 0, 0, 0)
		require.NoError(t, err)
		require.Equal(t, []Result{ok(int64(3 * i))}, applyCmds(t, p, append([]byte{CmdAppend}, b...)), "%s", c)
	}
	require.Equal(t, want, readLog(t, p, 0, p.Meta().NextOffset))
}

// TestReadWhileApplying runs readers concurrently with the writer, as the
// Partition doc allows; readers only look below the published high
// watermark, as replication does. Run it with -race.
func TestReadWhileApplying(t *testing.T) {
	s := openTestStore(t)
	p := openPartition(t, s, 1)
	var hw atomic.Int64
	var done atomic.Bool

	// read checks that everything below the current hw reads back dense.
	read := func() error {
		h := hw.Load()
		next := int64(0)
		var decodeErr error
		err := p.ReadBatches(0, h, math.MaxInt, func(b []byte) bool {
			var recs []Record
			_, recs, decodeErr = DecodeRecords(b, 0, nil)
			for _, r := range recs {
				if r.Offset != next {
					decodeErr = fmt.Errorf("offset %d, want %d", r.Offset, next)
					return false
				}
				next++
			}
			return decodeErr == nil
		})
		switch {
		case err != nil:
			return err
		case decodeErr != nil:
			return decodeErr
		case next != h:
			return fmt.Errorf("read %d records below hw %d", next, h)
		}
		_, err = p.OffsetForTime(0, h)
		return err
	}

	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for !done.Load() {
				if err := read(); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	// Stop the readers before the store closes, even if the writer fails.
	defer func() {
		done.Store(true)
		wg.Wait()
		require.NoError(t, read())
	}()
	for i := range 200 {
		applyCmds(t, p, appendCmd(t, 7, 0, int32(2*i), "a", "b"))
		hw.Store(p.Meta().NextOffset)
	}
}

// idemAt is a one-record batch of producer pid (epoch 0) at sequence seq
// with timestamp ts.
func idemAt(t testing.TB, pid uint64, seq int32, ts int64) []byte {
	t.Helper()
	return recordsCmd(t, pid, 0, seq, []Record{{Time: ts, Value: []byte(fmt.Sprint(pid, "@", ts))}})
}

func openExpiringStore(t testing.TB, fs vfs.FS, expiration time.Duration) *Store {
	t.Helper()
	s, err := OpenStore("x", StoreOptions{FS: fs, ProducerExpiration: expiration})
	require.NoError(t, err)
	return s
}

// TestProducerExpiry: a producer idle for longer than ProducerExpiration,
// measured by the log's clock (the largest record time applied), is
// forgotten: its state goes from memory and disk, its next batch with a
// sequence above 0 is refused as out of order, and sequence 0 starts it
// afresh.
func TestProducerExpiry(t *testing.T) {
	fs := vfs.NewMem()
	s := openExpiringStore(t, fs, 1000)
	p := openPartition(t, s, 1)

	require.Equal(t, []Result{ok(0), ok(1), ok(2)}, applyCmds(t, p,
		idemAt(t, 7, 0, 1000), // 7 last writes at log time 1000
		idemAt(t, 8, 0, 1500),
		idemAt(t, 8, 1, 2000), // log time 2000: 7 idle for exactly 1000
	))
	require.Len(t, p.producers, 2)
	// 7 is not yet expired: its retry is a duplicate, its next batch goes in.
	require.Equal(t, []Result{dup(0)}, applyCmds(t, p, idemAt(t, 7, 0, 1000)))

	require.Equal(t, []Result{ok(3)}, applyCmds(t, p, idemAt(t, 8, 2, 2001)))
	// Log time 2001: 7 has been idle for 1001 and is gone, from disk too.
	require.Len(t, p.producers, 1)
	require.Equal(t, 1, countKeys(t, s, 1, kindProducer))
	require.Equal(t, []Result{rejected(StatusOutOfOrder), ok(4)}, applyCmds(t, p,
		idemAt(t, 7, 1, 2001), // its next sequence: unknown producer
		idemAt(t, 7, 0, 2001), // sequence 0: a fresh start
	))
	require.Len(t, p.producers, 2)

	// A producer that keeps writing never expires, however long the log runs.
	for i := range int32(10) {
		require.Equal(t, []Result{ok(5 + int64(i))}, applyCmds(t, p, idemAt(t, 8, 3+i, 2500+500*int64(i))))
	}
	require.Equal(t, []uint64{8}, slices.Collect(maps.Keys(p.producers)))
	require.Equal(t, 1, countKeys(t, s, 1, kindProducer))

	// The last-write times survive a reopen.
	meta, producers := p.Meta(), cloneProducers(p.producers)
	require.NoError(t, s.Close())
	s = openExpiringStore(t, fs, 1000)
	defer func() { require.NoError(t, s.Close()) }()
	p = openPartition(t, s, 1)
	require.Equal(t, meta, p.Meta())
	require.Equal(t, producers, p.producers)
	require.Equal(t, []Result{ok(15), ok(16), rejected(StatusOutOfOrder)}, applyCmds(t, p,
		idemAt(t, 8, 13, meta.MaxTime),      // 8 is still known
		idemAt(t, 9, 0, meta.MaxTime+1001),  // the clock moves on
		idemAt(t, 8, 14, meta.MaxTime+1001), // and 8 is forgotten
	))
	require.Equal(t, []uint64{9}, slices.Collect(maps.Keys(p.producers)))
}

// TestProducerExpiryIsDeterministic applies one sequence of entries in
// Apply calls of different sizes, as replicas may: the results must be the
// same, and so must the producers remembered once a last Apply has run.
// Expiry follows the log's clock, never the wall clock.
func TestProducerExpiryIsDeterministic(t *testing.T) {
	var cmds [][]byte
	seq := map[uint64]int32{}
	for i := range 200 {
		pid := uint64(1 + (i*7)%13)
		if i%11 == 0 {
			seq[pid] += 3 // a gap: refused
		}
		if i%17 == 0 {
			seq[pid] = 0 // a restart
		}
		cmds = append(cmds, idemAt(t, pid, seq[pid], int64(i*i)))
		seq[pid]++
	}
	run := func(split int, expiration time.Duration) ([]Result, map[uint64]*producerState) {
		s := openExpiringStore(t, vfs.NewMem(), expiration)
		defer func() { require.NoError(t, s.Close()) }()
		p := openPartition(t, s, 1)
		var res []Result
		for c := range slices.Chunk(cmds, split) {
			res = append(res, applyCmds(t, p, c...)...)
		}
		applyCmds(t, p, idemAt(t, 99, 0, 200*200)) // sweeps on every replica
		return res, cloneProducers(p.producers)
	}
	want, wantProducers := run(1, 5000)
	never, neverProducers := run(1, 1<<62)
	require.NotEqual(t, never, want, "expiry changes results")
	require.Less(t, len(wantProducers), len(neverProducers), "expiry forgets producers")
	for _, split := range []int{2, 3, 7, 50, 200} {
		got, producers := run(split, 5000)
		require.Equal(t, want, got, "Apply calls of %d entries", split)
		require.Equal(t, wantProducers, producers, "Apply calls of %d entries", split)
	}
}

// TestLegacyProducerState reads producer states stored before they carried
// the log time of their last write: that time is taken from the batch they
// remember, the same on every replica.
func TestLegacyProducerState(t *testing.T) {
	fs := vfs.NewMem()
	s := openExpiringStore(t, fs, 1000)
	p := openPartition(t, s, 1)
	applyCmds(t, p, idemAt(t, 7, 0, 1000), idemAt(t, 8, 0, 1800))
	// Rewrite both states as the old format: epoch, then the batches.
	for pid, st := range p.producers {
		old := binary.LittleEndian.AppendUint32(nil, st.epoch)
		for _, sb := range st.batches {
			old = binary.LittleEndian.AppendUint32(old, uint32(sb.baseSeq))
			old = binary.LittleEndian.AppendUint32(old, sb.count)
			old = binary.LittleEndian.AppendUint64(old, uint64(sb.baseOffset))
		}
		require.NoError(t, s.db.Set(key(kindProducer, 1, pid), old, pebble.NoSync))
	}
	require.NoError(t, s.Close())

	s = openExpiringStore(t, fs, 1000)
	defer func() { require.NoError(t, s.Close()) }()
	p = openPartition(t, s, 1)
	require.Equal(t, int64(1000), p.producers[7].lastTime)
	require.Equal(t, int64(1800), p.producers[8].lastTime)
	require.Equal(t, []Result{dup(0), ok(2), rejected(StatusOutOfOrder), ok(3)}, applyCmds(t, p,
		idemAt(t, 7, 0, 1000), // still known
		idemAt(t, 9, 0, 2001), // the log's clock moves past 7's expiry
		idemAt(t, 7, 1, 2001),
		idemAt(t, 8, 1, 2001), // 8 wrote at 1800: still known
	))
}

func TestProducerExpirationOption(t *testing.T) {
	require.Equal(t, int64(DefaultProducerExpiration), openTestStore(t).expiry)
	require.Equal(t, 7*24*time.Hour, DefaultProducerExpiration)
	_, err := OpenStore("x", StoreOptions{InMemory: true, ProducerExpiration: -1})
	require.Error(t, err)
}
