package storage

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/stretchr/testify/require"
)

// producerCmd returns a CmdAppend command with a Kafka batch of one keyed
// record per kv, from producer pid at epoch and seq, transactional if txn.
// Record i has time i ms.
func producerCmd(t testing.TB, pid uint64, epoch uint32, seq int32, serial uint64, recs ...kv) []byte {
	t.Helper()
	var bb BatchBuilder
	for i, r := range recs {
		bb.Add(Record{Time: int64(i) * 1e6, Key: []byte(r.k), Value: []byte(r.v)})
	}
	if serial == 0 {
		b, err := bb.BuildWithPrefix(1, CompressionNone, pid, epoch, seq)
		require.NoError(t, err)
		b[0] = CmdAppend
		return b
	}
	bb.SetTransactional(true)
	cmd, err := bb.BuildWithPrefix(TxnAppendHeaderSize, CompressionNone, pid, epoch, seq)
	require.NoError(t, err)
	PutTxnAppendHeader(cmd, serial)
	h, err := ParseHeader(cmd[TxnAppendHeaderSize:])
	require.NoError(t, err)
	require.True(t, h.Transactional)
	return cmd
}

// txnCmd is a transactional batch of values, keyed "k".
func txnCmd(t testing.TB, pid uint64, epoch uint32, serial uint64, seq int32, values ...string) []byte {
	t.Helper()
	recs := make([]kv, len(values))
	for i, v := range values {
		recs[i] = kv{"k", v}
	}
	return producerCmd(t, pid, epoch, seq, serial, recs...)
}

func commitCmd(pid uint64, epoch uint32, serial uint64) []byte {
	return TxnMarkerCommand(pid, epoch, serial, true, 3, 5e6)
}

func abortCmd(pid uint64, epoch uint32, serial uint64) []byte {
	return TxnMarkerCommand(pid, epoch, serial, false, 3, 5e6)
}

// committedLog reads p as a read-committed reader does: up to the last
// stable offset, skipping control batches and aborted transactions, and
// returns "offset:value" per record.
func committedLog(t testing.TB, p *Partition) []string {
	t.Helper()
	m := p.Meta()
	aborted, err := p.AbortedTxns(m.LogStart, m.LastStable)
	require.NoError(t, err)
	var out []string
	for _, b := range rawBatches(t, p, m.LogStart, m.LastStable, math.MaxInt) {
		h, recs, err := DecodeRecords(b, m.LogStart, nil)
		require.NoError(t, err)
		if !Committed(h, aborted) {
			continue
		}
		for _, r := range recs {
			if r.Offset < m.LastStable {
				out = append(out, fmt.Sprintf("%d:%s", r.Offset, r.Value))
			}
		}
	}
	return out
}

// markers returns "offset:commit" or "offset:abort" per control batch
// stored in p.
func markers(t testing.TB, p *Partition) []string {
	t.Helper()
	var out []string
	for _, b := range rawBatches(t, p, 0, p.Meta().NextOffset, math.MaxInt) {
		h, err := ParseHeader(b)
		require.NoError(t, err)
		if !h.Control {
			continue
		}
		mk, err := ParseTxnMarker(b)
		require.NoError(t, err)
		require.Equal(t, TxnMarker{Commit: mk.Commit, CoordinatorEpoch: 3}, mk)
		kind := "abort"
		if mk.Commit {
			kind = "commit"
		}
		out = append(out, fmt.Sprintf("%d:%s", h.BaseOffset, kind))
	}
	return out
}

// TestTxnApply: each rule of a partition's transactions, command by
// command, through the read-committed view.
func TestTxnApply(t *testing.T) {
	controlBatch := buildMarker(txnMarker{pid: 1, commit: true, now: 1e6})
	for _, tc := range []struct {
		name      string
		cmds      [][]byte
		want      []Result
		next, lso int64
		committed []string
		aborted   []AbortedTxn
		markers   []string
	}{{
		name:      "commit",
		cmds:      [][]byte{txnCmd(t, 1, 0, 1, 0, "a", "b"), txnCmd(t, 1, 0, 1, 2, "c"), commitCmd(1, 0, 1)},
		want:      []Result{ok(0), ok(2), ok(3)},
		next:      4,
		lso:       4,
		committed: []string{"0:a", "1:b", "2:c"},
		markers:   []string{"3:commit"},
	}, {
		name:    "abort",
		cmds:    [][]byte{txnCmd(t, 1, 0, 1, 0, "a", "b"), txnCmd(t, 1, 0, 1, 2, "c"), abortCmd(1, 0, 1)},
		want:    []Result{ok(0), ok(2), ok(3)},
		next:    4,
		lso:     4,
		aborted: []AbortedTxn{{ProducerID: 1, FirstOffset: 0, LastOffset: 3}},
		markers: []string{"3:abort"},
	}, {
		name: "open transaction holds back later records",
		cmds: [][]byte{appendCmd(t, 0, 0, 0, "x"), txnCmd(t, 1, 0, 1, 0, "a"), appendCmd(t, 0, 0, 0, "y")},
		want: []Result{ok(0), ok(1), ok(2)},
		next: 3, lso: 1,
		committed: []string{"0:x"},
	}, {
		name: "two transactions, one after the other",
		cmds: [][]byte{
			txnCmd(t, 1, 0, 1, 0, "a"), abortCmd(1, 0, 1),
			txnCmd(t, 1, 0, 2, 1, "b"), commitCmd(1, 0, 2),
		},
		want: []Result{ok(0), ok(1), ok(2), ok(3)},
		next: 4, lso: 4,
		committed: []string{"2:b"},
		aborted:   []AbortedTxn{{ProducerID: 1, FirstOffset: 0, LastOffset: 1}},
		markers:   []string{"1:abort", "3:commit"},
	}, {
		name: "a retried transactional batch is a duplicate",
		cmds: [][]byte{txnCmd(t, 1, 0, 1, 0, "a"), txnCmd(t, 1, 0, 1, 0, "a"), txnCmd(t, 1, 0, 1, 2, "b"), commitCmd(1, 0, 1)},
		want: []Result{ok(0), dup(0), rejected(StatusOutOfOrder), ok(1)},
		next: 2, lso: 2,
		committed: []string{"0:a"},
		markers:   []string{"1:commit"},
	}, {
		name: "an abort with a higher epoch fences the producer",
		cmds: [][]byte{
			txnCmd(t, 1, 0, 1, 0, "a"), abortCmd(1, 1, 1),
			txnCmd(t, 1, 0, 2, 1, "zombie"), producerCmd(t, 1, 0, 1, 0, kv{"k", "zombie"}),
			txnCmd(t, 1, 1, 2, 0, "b"), commitCmd(1, 1, 2),
		},
		want: []Result{ok(0), ok(1), rejected(StatusFenced), rejected(StatusFenced), ok(2), ok(3)},
		next: 4, lso: 4,
		committed: []string{"2:b"},
		aborted:   []AbortedTxn{{ProducerID: 1, FirstOffset: 0, LastOffset: 1}},
		markers:   []string{"1:abort", "3:commit"},
	}, {
		// KIP-890's answer to hanging transactions: a coordinator that
		// ends each transaction at a bumped epoch fences a batch of it
		// that arrives late, which would otherwise open a transaction
		// nobody ends and hold the LSO back for good.
		name: "a late batch after a marker with a bumped epoch is fenced",
		cmds: [][]byte{txnCmd(t, 1, 0, 1, 0, "a"), commitCmd(1, 1, 1), txnCmd(t, 1, 0, 1, 1, "late")},
		want: []Result{ok(0), ok(1), rejected(StatusFenced)},
		next: 2, lso: 2,
		committed: []string{"0:a"},
		markers:   []string{"1:commit"},
	}, {
		name: "a batch with a higher epoch fences the older one",
		cmds: [][]byte{txnCmd(t, 1, 2, 1, 0, "a"), txnCmd(t, 1, 1, 1, 1, "old"), commitCmd(1, 2, 1)},
		want: []Result{ok(0), rejected(StatusFenced), ok(1)},
		next: 2, lso: 2,
		committed: []string{"0:a"},
		markers:   []string{"1:commit"},
	}, {
		name: "a marker with an older epoch is fenced and changes nothing",
		cmds: [][]byte{txnCmd(t, 1, 2, 1, 0, "a"), commitCmd(1, 1, 1)},
		want: []Result{ok(0), rejected(StatusFenced)},
		next: 1, lso: 0,
	}, {
		name: "retried markers write once",
		cmds: [][]byte{txnCmd(t, 1, 0, 1, 0, "a"), commitCmd(1, 0, 1), commitCmd(1, 0, 1), abortCmd(1, 0, 1)},
		want: []Result{ok(0), ok(1), ok(2), ok(2)},
		next: 2, lso: 2,
		committed: []string{"0:a"},
		markers:   []string{"1:commit"},
	}, {
		name: "a marker without a transaction that raises the epoch is written",
		cmds: [][]byte{commitCmd(9, 4, 1), producerCmd(t, 9, 3, 0, 0, kv{"k", "old"}), producerCmd(t, 9, 4, 0, 0, kv{"k", "new"})},
		want: []Result{ok(0), rejected(StatusFenced), ok(1)},
		next: 2, lso: 2,
		committed: []string{"1:new"},
		markers:   []string{"0:commit"},
	}, {
		// The raised epoch is dated by the marker, not by an empty log's
		// clock (the earliest time), so the next record does not
		// expire it.
		name: "an epoch raised on an empty log still fences after other records",
		cmds: [][]byte{abortCmd(9, 4, 1), appendCmd(t, 0, 0, 0, "x"), producerCmd(t, 9, 3, 0, 2, kv{"k", "zombie"})},
		want: []Result{ok(0), ok(1), rejected(StatusFenced)},
		next: 2, lso: 2,
		committed: []string{"1:x"},
		markers:   []string{"0:abort"},
	}, {
		name: "a producer may not send a control batch",
		cmds: [][]byte{append([]byte{CmdAppend}, controlBatch...)},
		want: []Result{rejected(StatusInvalid)},
	}, {
		name: "a non-transactional batch inside a transaction is refused",
		cmds: [][]byte{txnCmd(t, 1, 0, 1, 0, "a"), producerCmd(t, 1, 0, 1, 0, kv{"k", "b"}), txnCmd(t, 1, 0, 1, 1, "b"), commitCmd(1, 0, 1)},
		want: []Result{ok(0), rejected(StatusInvalid), ok(1), ok(2)},
		next: 3, lso: 3,
		committed: []string{"0:a", "1:b"},
		markers:   []string{"2:commit"},
	}, {
		name: "malformed and impossible markers",
		cmds: [][]byte{
			TxnMarkerCommand(1, 0, 1, true, 0, 0)[:10],
			TxnMarkerCommand(0, 0, 1, true, 0, 0),
			TxnMarkerCommand(1, math.MaxInt16+1, 1, true, 0, 0),
			TxnMarkerCommand(1<<63, 0, 1, true, 0, 0),
			append(TxnMarkerCommand(1, 0, 1, true, 0, 0), 0),
		},
		want: []Result{rejected(StatusCorrupt), rejected(StatusInvalid), rejected(StatusInvalid), rejected(StatusInvalid), rejected(StatusCorrupt)},
	}, {
		// Kafka's hanging transaction (KIP-890 part 1): a batch of a
		// transaction that already ended here, at the same epoch,
		// would open a transaction no marker ends.
		name: "a late batch of an ended transaction is refused",
		cmds: [][]byte{
			txnCmd(t, 1, 0, 1, 0, "a"), commitCmd(1, 0, 1), txnCmd(t, 1, 0, 1, 1, "late"),
			txnCmd(t, 1, 0, 2, 1, "b"), commitCmd(1, 0, 2),
		},
		want: []Result{ok(0), ok(1), rejected(StatusTxnInvalid), ok(2), ok(3)},
		next: 4, lso: 4,
		committed: []string{"0:a", "2:b"},
		markers:   []string{"1:commit", "3:commit"},
	}, {
		name: "a late marker of an earlier transaction leaves the next one open",
		cmds: [][]byte{
			txnCmd(t, 1, 0, 1, 0, "a"), commitCmd(1, 0, 1), txnCmd(t, 1, 0, 2, 1, "b"),
			commitCmd(1, 0, 1), abortCmd(1, 0, 1),
		},
		want: []Result{ok(0), ok(1), ok(2), ok(3), ok(3)},
		next: 3, lso: 2,
		committed: []string{"0:a"},
		markers:   []string{"1:commit"},
	}, {
		name: "a batch of another transaction than the open one is refused",
		cmds: [][]byte{txnCmd(t, 1, 0, 2, 0, "a"), txnCmd(t, 1, 0, 3, 1, "b"), txnCmd(t, 1, 0, 1, 1, "c"), abortCmd(1, 0, 2)},
		want: []Result{ok(0), rejected(StatusTxnInvalid), rejected(StatusTxnInvalid), ok(1)},
		next: 2, lso: 2,
		aborted: []AbortedTxn{{ProducerID: 1, FirstOffset: 0, LastOffset: 1}},
		markers: []string{"1:abort"},
	}, {
		// The transaction added the partition but its batch was late:
		// the marker of an unknown producer is written, so that the
		// state refusing the batch is dated by a stored batch.
		name: "a marker for a producer new to the partition refuses the transaction's late batch",
		cmds: [][]byte{abortCmd(1, 0, 1), appendCmd(t, 0, 0, 0, "x"), txnCmd(t, 1, 0, 1, 0, "late"), txnCmd(t, 1, 0, 2, 0, "next")},
		want: []Result{ok(0), ok(1), rejected(StatusTxnInvalid), ok(2)},
		next: 3, lso: 2,
		committed: []string{"1:x"},
		markers:   []string{"0:abort"},
	}, {
		name: "a marker for a known producer with nothing open writes nothing and refuses late batches",
		cmds: [][]byte{producerCmd(t, 1, 0, 0, 0, kv{"k", "plain"}), abortCmd(1, 0, 1), txnCmd(t, 1, 0, 1, 1, "late"), txnCmd(t, 1, 0, 2, 1, "next"), commitCmd(1, 0, 2)},
		want: []Result{ok(0), ok(1), rejected(StatusTxnInvalid), ok(1), ok(2)},
		next: 3, lso: 3,
		committed: []string{"0:plain", "1:next"},
		markers:   []string{"2:commit"},
	}, {
		name: "transactional batches come with a serial, and only they",
		cmds: [][]byte{
			func() []byte { c := txnCmd(t, 1, 0, 1, 0, "serial 0"); PutTxnAppendHeader(c, 0); return c }(),
			func() []byte {
				c := txnCmd(t, 1, 0, 1, 0, "a")
				return append([]byte{CmdAppend}, c[TxnAppendHeaderSize:]...)
			}(),
			func() []byte {
				c := producerCmd(t, 1, 0, 0, 0, kv{"k", "plain"})
				out := make([]byte, TxnAppendHeaderSize, TxnAppendHeaderSize+len(c))
				PutTxnAppendHeader(out, 1)
				return append(out, c[1:]...)
			}(),
			{CmdAppendTxn, 1, 0},
			TxnMarkerCommand(1, 0, 0, true, 0, 0),
		},
		want: []Result{rejected(StatusInvalid), rejected(StatusInvalid), rejected(StatusInvalid), rejected(StatusCorrupt), rejected(StatusInvalid)},
	}, {
		name: "legacy batches are never transactional",
		cmds: [][]byte{appendCmd(t, 5, 0, 0, "a"), commitCmd(5, 0, 1), appendCmd(t, 5, 0, 1, "b")},
		want: []Result{ok(0), ok(1), ok(1)},
		next: 2, lso: 2,
		committed: []string{"0:a", "1:b"},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			p := openPartition(t, openTestStore(t), 1)
			require.Equal(t, tc.want, applyCmds(t, p, tc.cmds...))
			m := p.Meta()
			require.Equal(t, tc.next, m.NextOffset)
			require.Equal(t, tc.lso, m.LastStable)
			require.Equal(t, tc.committed, committedLog(t, p))
			aborted, err := p.AbortedTxns(0, m.NextOffset)
			require.NoError(t, err)
			require.Equal(t, tc.aborted, aborted)
			require.Equal(t, tc.markers, markers(t, p))

			// Applied one entry per Apply call, as another replica may
			// group them, the results and the log are the same.
			q := openPartition(t, openTestStore(t), 1)
			for i, c := range tc.cmds {
				require.Equal(t, tc.want[i:i+1], applyCmds(t, q, c))
			}
			require.Equal(t, m, q.Meta())
			require.Equal(t, rawBatches(t, p, 0, m.NextOffset, math.MaxInt), rawBatches(t, q, 0, m.NextOffset, math.MaxInt))
		})
	}
}

// TestTxnLastStableOffset: with two producers' transactions interleaved,
// the last stable offset is the oldest open one's first offset, and what
// a read-committed reader sees grows as they end.
func TestTxnLastStableOffset(t *testing.T) {
	p := openPartition(t, openTestStore(t), 1)
	steps := []struct {
		cmd       []byte
		lso       int64
		committed []string
	}{
		{appendCmd(t, 0, 0, 0, "plain"), 1, []string{"0:plain"}},
		{txnCmd(t, 1, 0, 1, 0, "a1"), 1, []string{"0:plain"}},
		{txnCmd(t, 2, 0, 1, 0, "b1"), 1, []string{"0:plain"}},
		{appendCmd(t, 0, 0, 0, "later"), 1, []string{"0:plain"}},
		{txnCmd(t, 1, 0, 1, 1, "a2"), 1, []string{"0:plain"}},
		// Producer 2's transaction, opened at 2, still holds the LSO.
		{commitCmd(1, 0, 1), 2, []string{"0:plain", "1:a1"}},
		// Producer 1 opens another transaction at 6.
		{txnCmd(t, 1, 0, 2, 2, "a3"), 2, []string{"0:plain", "1:a1"}},
		{abortCmd(2, 0, 1), 6, []string{"0:plain", "1:a1", "3:later", "4:a2"}},
		{commitCmd(1, 0, 2), 9, []string{"0:plain", "1:a1", "3:later", "4:a2", "6:a3"}},
	}
	for i, s := range steps {
		res := applyCmds(t, p, s.cmd)
		require.Equal(t, StatusOK, res[0].Status, "step %d", i)
		require.Equal(t, s.lso, p.Meta().LastStable, "step %d", i)
		require.Equal(t, s.committed, committedLog(t, p), "step %d", i)
	}
	aborted, err := p.AbortedTxns(0, 9)
	require.NoError(t, err)
	require.Equal(t, []AbortedTxn{{ProducerID: 2, FirstOffset: 2, LastOffset: 7}}, aborted)
	// Only the aborted transactions that overlap the range are returned.
	for _, r := range []struct {
		from, to int64
		want     int
	}{{0, 2, 0}, {0, 3, 1}, {7, 9, 1}, {8, 9, 0}, {5, 5, 0}} {
		got, err := p.AbortedTxns(r.from, r.to)
		require.NoError(t, err)
		require.Len(t, got, r.want, "[%d, %d)", r.from, r.to)
	}
}

// TestTxnStateSurvives: open transactions, epochs and aborted
// transactions survive a reopen and a snapshot restored elsewhere, and the
// copies go on exactly as the original.
func TestTxnStateSurvives(t *testing.T) {
	fs := vfs.NewMem()
	s, err := OpenStore("x", StoreOptions{FS: fs})
	require.NoError(t, err)
	p := openPartition(t, s, 1)
	applyCmds(t, p,
		txnCmd(t, 1, 0, 1, 0, "a"), abortCmd(1, 1, 1), // aborted, epoch 1
		txnCmd(t, 2, 0, 1, 0, "open"), // stays open
		appendCmd(t, 0, 0, 0, "plain"),
	)
	want := p.Meta()
	require.Equal(t, int64(2), want.LastStable)
	stream := snapshotBytes(t, p)

	// The rest of the story, against which the copies are compared.
	// A late batch of producer 1's aborted transaction is refused: the
	// serial that ended is part of the state.
	rest := [][]byte{txnCmd(t, 1, 1, 1, 0, "late"), txnCmd(t, 1, 0, 2, 1, "zombie"), commitCmd(2, 0, 1), commitCmd(1, 1, 2)}
	check := func(t *testing.T, q *Partition) {
		t.Helper()
		require.Equal(t, want, q.Meta())
		aborted, err := q.AbortedTxns(0, want.NextOffset)
		require.NoError(t, err)
		require.Equal(t, []AbortedTxn{{ProducerID: 1, FirstOffset: 0, LastOffset: 1}}, aborted)
		require.Equal(t, []Result{rejected(StatusTxnInvalid), rejected(StatusFenced), ok(4), ok(5)}, applyCmds(t, q, rest...))
		require.Equal(t, []string{"2:open", "3:plain"}, committedLog(t, q))
	}

	r := openPartition(t, openTestStore(t), 7)
	require.NoError(t, r.Restore(bytes.NewReader(stream)))
	check(t, r)

	require.NoError(t, s.Close())
	s, err = OpenStore("x", StoreOptions{FS: fs})
	require.NoError(t, err)
	defer func() { require.NoError(t, s.Close()) }()
	check(t, openPartition(t, s, 1))
}

// TestTxnRestoreChecks: a snapshot whose transactions disagree with its
// log is refused.
func TestTxnRestoreChecks(t *testing.T) {
	p := openPartition(t, openTestStore(t), 1)
	applyCmds(t, p, txnCmd(t, 1, 0, 1, 0, "a"), abortCmd(1, 0, 1), txnCmd(t, 1, 0, 2, 1, "b"))
	good := decodeStream(t, snapshotBytes(t, p))
	le := binary.LittleEndian
	for name, mutate := range map[string]func(r *streamRecord){
		"open past the log": func(r *streamRecord) {
			if r.kind == kindTxn {
				r.value = le.AppendUint64(nil, 3)
			}
		},
		"open transaction of producer 0": func(r *streamRecord) {
			if r.kind == kindTxn {
				r.suffix = make([]byte, 8)
			}
		},
		"aborted past the log": func(r *streamRecord) {
			if r.kind == kindAborted {
				binary.BigEndian.PutUint64(r.suffix, 3)
			}
		},
		"aborted ending before it starts": func(r *streamRecord) {
			if r.kind == kindAborted {
				r.value = le.AppendUint64(nil, 1)
			}
		},
		"short aborted entry": func(r *streamRecord) {
			if r.kind == kindAborted {
				r.value = r.value[:7]
			}
		},
	} {
		t.Run(name, func(t *testing.T) {
			var recs []streamRecord
			for _, r := range good {
				r.suffix, r.value = bytes.Clone(r.suffix), bytes.Clone(r.value)
				mutate(&r)
				recs = append(recs, r)
			}
			q := openPartition(t, openTestStore(t), 1)
			require.ErrorIs(t, q.Restore(bytes.NewReader(encodeStream(recs...))), ErrCorrupt)
		})
	}
}

// TestTxnTrimDropsAbortedEntries: the aborted index loses the entries
// whose marker falls below the log start, and keeps the others.
func TestTxnTrimDropsAbortedEntries(t *testing.T) {
	p := openPartition(t, openTestStore(t), 1)
	applyCmds(t, p,
		txnCmd(t, 1, 0, 1, 0, "a"), abortCmd(1, 0, 1), // 0, 1
		txnCmd(t, 2, 0, 1, 0, "b"), appendCmd(t, 0, 0, 0, "x"), abortCmd(2, 0, 1), // 2, 3, 4
		txnCmd(t, 1, 0, 2, 1, "c"), // 5, open
		appendCmd(t, 0, 0, 0, "y"),
	)
	require.Equal(t, 2, countKeys(t, p.s, 1, kindAborted))
	for _, tc := range []struct {
		to      int64
		aborted []AbortedTxn
		lso     int64
	}{
		{1, []AbortedTxn{{1, 0, 1}, {2, 2, 4}}, 5},
		{2, []AbortedTxn{{2, 2, 4}}, 5},
		{5, nil, 5},
		// Past the open transaction: the LSO follows the log start.
		{6, nil, 6},
	} {
		res := applyCmds(t, p, TrimCommand(tc.to))
		require.Equal(t, ok(tc.to), res[0])
		aborted, err := p.AbortedTxns(0, p.Meta().NextOffset)
		require.NoError(t, err)
		require.Equal(t, tc.aborted, aborted, "trimmed to %d", tc.to)
		require.Equal(t, len(tc.aborted), countKeys(t, p.s, 1, kindAborted))
		require.Equal(t, tc.lso, p.Meta().LastStable)
	}
	// The transaction trimmed past is still open: its marker ends it.
	require.Equal(t, ok(7), applyCmds(t, p, commitCmd(1, 0, 2))[0])
	require.Equal(t, int64(8), p.Meta().LastStable)
}

// TestTxnOpenProducerDoesNotExpire: a producer idle past the expiration
// keeps its state while its transaction is open, so that its marker still
// finds it; once the transaction ends it expires as any other.
func TestTxnOpenProducerDoesNotExpire(t *testing.T) {
	s := openExpiringStore(t, vfs.NewMem(), 1e6) // 1 ms
	defer func() { require.NoError(t, s.Close()) }()
	p := openPartition(t, s, 1)
	applyCmds(t, p, txnCmd(t, 1, 0, 1, 0, "a"), producerCmd(t, 2, 0, 0, 0, kv{"k", "idle"}))
	// Move the log's clock far ahead.
	var bb BatchBuilder
	bb.Add(Record{Time: 1e12, Value: []byte("late")})
	b, err := bb.Build(CompressionNone, 0, 0, 0)
	require.NoError(t, err)
	applyCmds(t, p, append([]byte{CmdAppend}, b...))
	require.Contains(t, p.producers, uint64(1))
	require.NotContains(t, p.producers, uint64(2))
	// Its sequence goes on where it was; the other starts again.
	require.Equal(t, []Result{ok(3), rejected(StatusOutOfOrder), ok(4)}, applyCmds(t, p,
		txnCmd(t, 1, 0, 1, 1, "b"), producerCmd(t, 2, 0, 1, 0, kv{"k", "forgotten"}), commitCmd(1, 0, 1)))
	require.Equal(t, []string{"0:a", "1:idle", "2:late", "3:b"}, committedLog(t, p))
}

// TestTxnCompaction: key compaction never makes an aborted record
// visible, never lets an aborted record hide a committed one, and keeps
// the markers.
func TestTxnCompaction(t *testing.T) {
	p := openPartition(t, openTestStore(t), 1)
	applyCmds(t, p,
		kvCmd(t, CompressionNone, kv{"k", "v1"}, kv{"j", "j1"}), // 0, 1
		producerCmd(t, 1, 0, 0, 1, kv{"k", "aborted"}),          // 2
		abortCmd(1, 0, 1), // 3
		producerCmd(t, 1, 0, 1, 2, kv{"j", "committed"}), // 4
		commitCmd(1, 0, 2),                         // 5
		kvCmd(t, CompressionNone, kv{"x", "head"}), // 6
	)
	before := markers(t, p)
	compactNow(t, p, CompactOptions{Now: 1})
	require.Equal(t, []string{"0:v1", "1:j1", "4:committed", "6:head"}, committedLog(t, p))
	require.Equal(t, before, markers(t, p))

	// A later committed record of k: v1 goes; the aborted record stays
	// stored (its transaction's batch is untouched) and hidden.
	applyCmds(t, p, kvCmd(t, CompressionNone, kv{"k", "v2"}), kvCmd(t, CompressionNone, kv{"x", "head2"}))
	compactNow(t, p, CompactOptions{Now: 2})
	require.Equal(t, []string{"1:j1", "4:committed", "6:head", "7:v2", "8:head2"}, committedLog(t, p))
	require.Contains(t, kvLog(t, p), "2:k=aborted")
	require.Equal(t, before, markers(t, p))
	aborted, err := p.AbortedTxns(0, p.Meta().NextOffset)
	require.NoError(t, err)
	require.Equal(t, []AbortedTxn{{1, 2, 3}}, aborted)
}

// TestTxnReplayAfterCrash: the store keeps no WAL, so a crash loses what
// was applied since the last sync; the transactions must roll back with
// the batches and the applied index, and the replay of the Raft log must
// end where the original did.
func TestTxnReplayAfterCrash(t *testing.T) {
	fs := vfs.NewCrashableMem()
	s, err := OpenStore("db", StoreOptions{FS: fs})
	require.NoError(t, err)
	p := openPartition(t, s, 1)
	cmds := [][]byte{
		txnCmd(t, 1, 0, 1, 0, "a"), txnCmd(t, 2, 0, 1, 0, "b"), // synced: both open
		abortCmd(1, 1, 1), txnCmd(t, 1, 1, 2, 0, "c"), commitCmd(2, 0, 1), TrimCommand(2), appendCmd(t, 0, 0, 0, "d"),
	}
	entries := make([]Entry, len(cmds))
	for i, c := range cmds {
		entries[i] = Entry{Index: uint64(i + 1), Cmd: c}
	}
	want := applyEntries(t, p, entries[:2]...)
	require.NoError(t, s.Sync())
	want = append(want, applyEntries(t, p, entries[2:]...)...)
	wantMeta := p.Meta()
	require.Equal(t, int64(3), wantMeta.LastStable) // producer 1's second transaction
	wantAborted, err := p.AbortedTxns(0, wantMeta.NextOffset)
	require.NoError(t, err)
	require.Equal(t, []AbortedTxn{{ProducerID: 1, FirstOffset: 0, LastOffset: 2}}, wantAborted)

	crashed := fs.CrashClone(vfs.CrashCloneCfg{})
	require.NoError(t, s.Close())
	s2, err := OpenStore("db", StoreOptions{FS: crashed})
	require.NoError(t, err)
	defer func() { require.NoError(t, s2.Close()) }()
	p2 := openPartition(t, s2, 1)
	// The trim (entry 6) queues a flush of the memtable in the background
	// to reclaim space, which persists what was applied by then if it
	// runs before the crash: the store then comes back at 6 or 7, a state
	// it was in.
	applied := p2.Meta().AppliedIndex
	require.Contains(t, []uint64{2, 6, 7}, applied)
	if applied == 2 {
		require.Equal(t, int64(0), p2.Meta().LastStable, "both transactions open again")
		aborted, err := p2.AbortedTxns(0, 10)
		require.NoError(t, err)
		require.Empty(t, aborted)
	}

	got := applyEntries(t, p2, entries...)
	skipped := Result{BaseOffset: -1, Status: StatusDuplicate}
	require.Equal(t, append(slices.Repeat([]Result{skipped}, int(applied)), want[applied:]...), got)
	require.Equal(t, wantMeta, p2.Meta())
	aborted, err := p2.AbortedTxns(0, wantMeta.NextOffset)
	require.NoError(t, err)
	require.Equal(t, wantAborted, aborted)
}

// FuzzApplyTxn applies a sequence of transactional and idempotent batches,
// markers, plain batches and trims from two producers, and checks them
// against a model: a write with an epoch below the producer's is fenced,
// no aborted or open-transaction record is ever visible to a
// read-committed reader (Jepsen's aborted reads), the last stable offset
// is the oldest open transaction's start, the aborted index holds what
// was aborted, and a replica applying the entries one by one or restoring
// a snapshot ends the same.
func FuzzApplyTxn(f *testing.F) {
	f.Add([]byte{0, 0, 0, 4, 0, 0, 2, 0, 0})
	f.Add([]byte{0, 0, 0, 0, 1, 0, 0, 0, 1, 3, 0, 0, 2, 1, 0})
	f.Add([]byte{0, 0, 0, 3, 0, 4, 0, 0, 0, 0, 0, 4, 1, 0, 4, 2, 0, 4, 5, 0, 1})
	f.Add([]byte{0, 1, 0, 4, 0, 0, 5, 0, 0, 0, 1, 1, 3, 1, 0, 0, 0, 0, 2, 0, 0})
	f.Fuzz(func(t *testing.T, ops []byte) {
		if len(ops) > 3*40 {
			return
		}
		p := openPartition(t, openTestStore(t), 1)
		epoch := map[uint64]uint32{}            // the highest epoch accepted per producer
		open := map[uint64]int64{}              // open transactions' first offsets
		inTxn := map[uint64][]string{}          // the values of each open transaction
		hidden := map[string]bool{}             // values a read-committed reader must not see
		var aborted []AbortedTxn                // expected index, by last offset
		serial := map[uint64]uint64{1: 1, 2: 1} // the coordinator's current transaction per producer
		var cmds [][]byte
		for i := 0; i+3 <= len(ops); i += 3 {
			op, pid, x := ops[i]%6, uint64(1+ops[i+1]%2), ops[i+2]
			e, seq := uint32(x>>2)%3, int32(x%3)
			v := fmt.Sprint("v", i)
			var cmd []byte
			switch op {
			case 0:
				cmd = producerCmd(t, pid, e, seq, serial[pid], kv{"k", v})
			case 1:
				cmd = producerCmd(t, pid, e, seq, 0, kv{"k", v})
			case 2, 3:
				cmd = TxnMarkerCommand(pid, e, serial[pid], op == 2, 0, 1e6)
			case 4:
				cmd = producerCmd(t, 0, 0, 0, 0, kv{"k", v})
			case 5:
				cmd = TrimCommand(max(p.Meta().NextOffset-int64(x%3), 0))
			}
			cmds = append(cmds, cmd)
			before := p.Meta()
			res := applyCmds(t, p, cmd)[0]
			after := p.Meta()
			known, seen := epoch[pid]
			if (op <= 3) && seen && e < known {
				require.Equal(t, StatusFenced, res.Status, "op %d: a zombie's write", i/3)
			}
			if res.Status == StatusFenced {
				require.True(t, seen && e < known, "op %d: fenced without cause", i/3)
			}
			if op <= 3 && res.Status == StatusOK {
				epoch[pid] = max(known, e)
			}
			switch {
			case op == 0 && res.Status == StatusOK:
				if _, ok := open[pid]; !ok {
					open[pid] = res.BaseOffset
				}
				inTxn[pid] = append(inTxn[pid], v)
				hidden[v] = true
			case op == 1 && res.Status == StatusOK:
				_, ok := open[pid]
				require.False(t, ok, "op %d: a non-transactional batch inside a transaction", i/3)
			case (op == 2 || op == 3) && res.Status == StatusOK:
				serial[pid]++
				first, ok := open[pid]
				if !ok {
					// Written only if it raises the epoch or the
					// producer is new to the partition.
					wrote := int64(0)
					if e > known || !seen {
						wrote = 1
					}
					require.Equal(t, before.NextOffset+wrote, after.NextOffset, "op %d: a marker without a transaction", i/3)
					break
				}
				require.Equal(t, before.NextOffset, res.BaseOffset)
				require.Equal(t, before.NextOffset+1, after.NextOffset)
				if op == 2 {
					for _, w := range inTxn[pid] {
						delete(hidden, w)
					}
				} else {
					aborted = append(aborted, AbortedTxn{ProducerID: pid, FirstOffset: first, LastOffset: res.BaseOffset})
				}
				delete(open, pid)
				delete(inTxn, pid)
			}
			lso := after.NextOffset
			for _, first := range open {
				lso = min(lso, first)
			}
			require.Equal(t, max(lso, after.LogStart), after.LastStable, "op %d", i/3)
			for _, s := range committedLog(t, p) {
				_, val, _ := strings.Cut(s, ":")
				require.False(t, hidden[val], "op %d: %s is visible", i/3, s)
			}
		}
		m := p.Meta()
		aborted = slices.DeleteFunc(aborted, func(a AbortedTxn) bool { return a.LastOffset < m.LogStart })
		got, err := p.AbortedTxns(0, m.NextOffset)
		require.NoError(t, err)
		require.Equal(t, len(aborted), len(got))
		if len(aborted) > 0 {
			require.Equal(t, aborted, got)
		}

		q := openPartition(t, openTestStore(t), 1)
		for _, c := range cmds {
			applyCmds(t, q, c)
		}
		require.Equal(t, m, q.Meta())
		r := openPartition(t, openTestStore(t), 2)
		require.NoError(t, r.Restore(bytes.NewReader(snapshotBytes(t, p))))
		require.Equal(t, m, r.Meta())
		got, err = r.AbortedTxns(0, m.NextOffset)
		require.NoError(t, err)
		require.Equal(t, len(aborted), len(got))
		require.Equal(t, committedLog(t, p), committedLog(t, r))
	})
}
