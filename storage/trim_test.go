package storage

import (
	"bytes"
	"github.com/cockroachdb/pebble/v2"
	"math"
	"testing"

	"github.com/stretchr/testify/require"
)

// fiveBatches applies five batches of two records each, at offsets 0, 2, 4,
// 6, 8, with times (batch i) 100*i and 100*i+1.
func fiveBatches(t *testing.T, p *Partition) {
	t.Helper()
	for i := range int64(5) {
		applyCmds(t, p, timedCmd(t, 100*i, 100*i+1))
	}
}

func storedBases(t *testing.T, p *Partition) []int64 {
	t.Helper()
	return batchBases(t, p, 0, p.Meta().NextOffset, math.MaxInt)
}

// sumBatches is the stored length of the batches from offset from.
func sumBatches(t *testing.T, p *Partition, from int64) int64 {
	t.Helper()
	var n int64
	for _, b := range rawBatches(t, p, from, p.Meta().NextOffset, math.MaxInt) {
		n += int64(len(b))
	}
	return n
}

func TestTrim(t *testing.T) {
	s := openTestStore(t)
	p := openPartition(t, s, 1)
	fiveBatches(t, p)
	require.Equal(t, sumBatches(t, p, 0), p.StoredBytes())

	for _, tc := range []struct {
		to        int64
		res       Result
		logStart  int64
		bases     []int64
		timeIndex int
	}{
		{to: 0, res: ok(0), logStart: 0, bases: []int64{0, 2, 4, 6, 8}, timeIndex: 5},
		{to: 3, res: ok(3), logStart: 3, bases: []int64{2, 4, 6, 8}, timeIndex: 4}, // 2-3 straddles: stays
		{to: 2, res: ok(3), logStart: 3, bases: []int64{2, 4, 6, 8}, timeIndex: 4}, // below: nothing
		{to: 6, res: ok(6), logStart: 6, bases: []int64{6, 8}, timeIndex: 2},
		{to: 11, res: rejected(StatusInvalid), logStart: 6, bases: []int64{6, 8}, timeIndex: 2},
		{to: -1, res: rejected(StatusInvalid), logStart: 6, bases: []int64{6, 8}, timeIndex: 2},
		{to: 10, res: ok(10), logStart: 10, bases: []int64{}, timeIndex: 0}, // the high watermark: empty
	} {
		before := p.Meta()
		require.Equal(t, []Result{tc.res}, applyCmds(t, p, TrimCommand(tc.to)), "trim to %d", tc.to)
		m := p.Meta()
		require.Equal(t, tc.logStart, m.LogStart)
		require.Equal(t, before.AppliedIndex+1, m.AppliedIndex)
		require.Equal(t, int64(10), m.NextOffset)
		require.Equal(t, int64(401), m.MaxTime, "the log's clock stays")
		require.Equal(t, tc.bases, storedBases(t, p))
		require.Equal(t, tc.timeIndex, countKeys(t, s, 1, kindTime))
		require.Equal(t, sumBatches(t, p, 0), p.StoredBytes())
	}
	// Appending goes on at the high watermark.
	require.Equal(t, []Result{ok(10)}, applyCmds(t, p, timedCmd(t, 500)))
	require.Equal(t, []string{"10:500"}, readLog(t, p, 10, 11))
}

func TestTrimReadsAndTimesAfterLogStart(t *testing.T) {
	s := openTestStore(t)
	p := openPartition(t, s, 1)
	fiveBatches(t, p)
	applyCmds(t, p, TrimCommand(5))
	require.Equal(t, []int64{4, 6, 8}, storedBases(t, p))
	require.Equal(t, int64(4), mustOffsetForTime(t, p, 0, 10), "the straddling batch is still indexed")
	require.Equal(t, int64(8), mustOffsetForTime(t, p, 350, 10))
}

func TestRetain(t *testing.T) {
	s := openTestStore(t)
	p := openPartition(t, s, 1)
	fiveBatches(t, p)

	// Invalid limits, and limits that hold for nothing, change nothing.
	require.Equal(t, []Result{rejected(StatusInvalid)}, applyCmds(t, p, RetainCommand(1000, -1, 0)))
	require.Equal(t, []Result{rejected(StatusInvalid)}, applyCmds(t, p, RetainCommand(1000, 0, -1)))
	require.Equal(t, []Result{ok(0)}, applyCmds(t, p, RetainCommand(1000, 0, 0)))
	require.Equal(t, []Result{ok(0)}, applyCmds(t, p, RetainCommand(101, 100, 0)), "batch 0's newest record is not older than 1")
	require.Equal(t, []int64{0, 2, 4, 6, 8}, storedBases(t, p))

	// By time: batches whose newest record is before now - age.
	require.Equal(t, []Result{ok(4)}, applyCmds(t, p, RetainCommand(301, 100, 0)))
	require.Equal(t, []int64{4, 6, 8}, storedBases(t, p))
	require.Equal(t, sumBatches(t, p, 0), p.StoredBytes())
	one := sumBatches(t, p, 8)

	// By size: oldest first, until within the limit.
	require.Equal(t, []Result{ok(6)}, applyCmds(t, p, RetainCommand(0, 0, 2*one+1)))
	require.Equal(t, []int64{6, 8}, storedBases(t, p))

	// Never the newest batch, whatever the limits.
	require.Equal(t, []Result{ok(8)}, applyCmds(t, p, RetainCommand(math.MaxInt64, 1, 1)))
	require.Equal(t, []int64{8}, storedBases(t, p))
	require.Equal(t, sumBatches(t, p, 0), p.StoredBytes())
	require.Equal(t, 1, countKeys(t, s, 1, kindTime))
	require.Equal(t, []string{"8:400", "9:401"}, readLog(t, p, 8, 10))
}

// TestTrimAndRetainAreDeterministic applies the same entries to two
// partitions in differently sized Apply calls (as replicas group them
// differently): they end identical, snapshot for snapshot.
func TestTrimAndRetainAreDeterministic(t *testing.T) {
	var cmds [][]byte
	for i := range int64(30) {
		cmds = append(cmds, idemAt(t, 7, int32(i), 100*i))
		switch i % 7 {
		case 3:
			cmds = append(cmds, RetainCommand(100*i, 500, 0))
		case 5:
			cmds = append(cmds, TrimCommand(i-2))
		case 6:
			cmds = append(cmds, RetainCommand(0, 0, 300))
		}
	}
	s := openTestStore(t)
	a, b := openPartition(t, s, 1), openPartition(t, s, 2)
	applyCmds(t, a, cmds...)
	for i, c := range cmds {
		if i%3 == 0 {
			applyCmds(t, b, c)
		} else {
			applyEntries(t, b, Entry{Index: uint64(i + 1), Cmd: c})
		}
	}
	require.Equal(t, a.Meta(), b.Meta())
	require.Equal(t, a.StoredBytes(), b.StoredBytes())
	require.Positive(t, a.Meta().LogStart)
	require.Equal(t, snapshotBytes(t, a), snapshotBytes(t, b))
	require.Equal(t, readLog(t, a, a.Meta().LogStart, 30), readLog(t, b, b.Meta().LogStart, 30))
}

func TestTrimKeepsProducerState(t *testing.T) {
	s := openTestStore(t)
	p := openPartition(t, s, 1)
	for i := range int32(3) {
		applyCmds(t, p, idemAt(t, 9, i, 100))
	}
	applyCmds(t, p, TrimCommand(3))
	require.Empty(t, storedBases(t, p))
	// A retry of the last batch is still a duplicate; the next is in order.
	require.Equal(t, []Result{dup(2), ok(3)}, applyCmds(t, p, idemAt(t, 9, 2, 100), idemAt(t, 9, 3, 100)))
}

func TestTrimSurvivesSnapshotAndReopen(t *testing.T) {
	s := openTestStore(t)
	p := openPartition(t, s, 1)
	fiveBatches(t, p)
	applyCmds(t, p, TrimCommand(5), RetainCommand(0, 0, 1))
	want := p.Meta()
	require.Equal(t, int64(8), want.LogStart)

	r := openPartition(t, s, 2)
	require.NoError(t, r.Restore(bytes.NewReader(snapshotBytes(t, p))))
	require.Equal(t, want, r.Meta())
	require.Equal(t, p.StoredBytes(), r.StoredBytes())
	require.Equal(t, readLog(t, p, 8, 10), readLog(t, r, 8, 10))

	again := openPartition(t, s, 1) // reloaded from the store
	require.Equal(t, want, again.Meta())
	require.Equal(t, p.StoredBytes(), again.StoredBytes())
}

func TestRestoreChecksLogStart(t *testing.T) {
	s := openTestStore(t)
	p := openPartition(t, s, 1)
	fiveBatches(t, p)
	applyCmds(t, p, TrimCommand(3))
	recs := decodeStream(t, snapshotBytes(t, p))
	meta := &recs[len(recs)-1]
	require.Equal(t, kindMeta, meta.kind)
	for _, ls := range []int64{1, 4} { // before the first batch, after it
		m, err := decodeMeta(meta.value)
		require.NoError(t, err)
		m.LogStart = ls
		meta.value = m.encode()
		r := openPartition(t, s, 2)
		require.ErrorIs(t, r.Restore(bytes.NewReader(encodeStream(recs...))), ErrCorrupt, "log start %d", ls)
	}
}

func TestStoredBytesOfOlderStores(t *testing.T) {
	s := openTestStore(t)
	p := openPartition(t, s, 1)
	fiveBatches(t, p)
	want := p.StoredBytes()
	// A meta as stores wrote it before the stored bytes were kept.
	st := *p.state.Load()
	require.NoError(t, s.db.Set(key(kindMeta, 1), st.Meta.encode(), pebble.NoSync))
	again := openPartition(t, s, 1)
	require.Equal(t, want, again.StoredBytes())
	require.Equal(t, p.Meta(), again.Meta())
}

func TestRetentionDue(t *testing.T) {
	s := openTestStore(t)
	p := openPartition(t, s, 1)
	due := func(now, age, maxBytes int64) bool {
		d, err := p.RetentionDue(now, age, maxBytes)
		require.NoError(t, err)
		return d
	}
	require.False(t, due(math.MaxInt64, 1, 1), "empty")
	applyCmds(t, p, timedCmd(t, 100))
	require.False(t, due(math.MaxInt64, 1, 1), "only the newest batch")
	applyCmds(t, p, timedCmd(t, 200))
	require.False(t, due(150, 100, 0))
	require.True(t, due(201, 100, 0))
	require.False(t, due(201, 0, 0), "no limits")
	require.True(t, due(0, 0, 1))
	require.False(t, due(0, 0, p.StoredBytes()))
	// It agrees with what applying does.
	require.Equal(t, []Result{ok(1)}, applyCmds(t, p, RetainCommand(0, 0, 1)))
	require.False(t, due(0, 0, 1))
}

// FuzzApplyControl: no trim or retention command, however malformed,
// fails Apply or leaves a partition that its own snapshot cannot restore.
func FuzzApplyControl(f *testing.F) {
	f.Add(TrimCommand(3))
	f.Add(TrimCommand(10))
	f.Add(RetainCommand(300, 100, 0))
	f.Add(RetainCommand(math.MaxInt64, 0, 1))
	f.Add(RetainCommand(math.MinInt64, math.MaxInt64, 0))
	f.Fuzz(func(t *testing.T, cmd []byte) {
		if len(cmd) == 0 {
			return
		}
		cmd[0] = CmdTrim + cmd[0]%2 // a control command
		s := openTestStore(t)
		p := openPartition(t, s, 1)
		fiveBatches(t, p)
		applyCmds(t, p, cmd)
		m := p.Meta()
		require.LessOrEqual(t, m.LogStart, m.NextOffset)
		require.Equal(t, int64(10), m.NextOffset)
		require.Equal(t, sumBatches(t, p, 0), p.StoredBytes())
		r := openPartition(t, s, 2)
		require.NoError(t, r.Restore(bytes.NewReader(snapshotBytes(t, p))))
		require.Equal(t, m, r.Meta())
	})
}
