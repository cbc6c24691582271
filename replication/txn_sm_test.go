package replication

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	sm "github.com/lni/dragonboat/v4/statemachine"
	"github.com/stretchr/testify/require"

	"github.com/replog/replog/storage"
)

// The transaction coordinator's state machine is tested here without Raft:
// commands go through Update encoded, as dragonboat hands them over.

// txnDo applies c and returns its result code and, on success, the
// transactional id's producer.
func txnDo(t testing.TB, s *txnSM, c txnCmd) (uint64, TxnProducer) {
	t.Helper()
	b, err := json.Marshal(c)
	require.NoError(t, err)
	return txnDoRaw(t, s, b)
}

func txnDoRaw(t testing.TB, s *txnSM, cmd []byte) (uint64, TxnProducer) {
	t.Helper()
	r, err := s.Update(sm.Entry{Cmd: cmd})
	require.NoError(t, err, "Update returned an error: it would halt the Raft group")
	var p TxnProducer
	if r.Value == tOK && len(r.Data) > 0 && r.Data[0] == '{' {
		require.NoError(t, json.Unmarshal(r.Data, &p))
	}
	return r.Value, p
}

// txnMust applies commands that must succeed.
func txnMust(t testing.TB, s *txnSM, cs ...txnCmd) {
	t.Helper()
	for _, c := range cs {
		code, _ := txnDo(t, s, c)
		require.Equal(t, tOK, code, "%+v", c)
	}
}

func txnSnap(t testing.TB, s *txnSM) []byte {
	t.Helper()
	var buf bytes.Buffer
	require.NoError(t, s.SaveSnapshot(&buf, nil, nil))
	return buf.Bytes()
}

func txnGet(s *txnSM, id string) *TxnState {
	v, _ := s.Lookup(id)
	return v.(*TxnState)
}

func txInit(id string, newPID uint64, now int64) txnCmd {
	return txnCmd{Op: txopInit, ID: id, NewProducerID: newPID, Timeout: int64(time.Minute), Now: now}
}

func txAdd(id string, p TxnProducer, now int64, topic string, parts ...int) txnCmd {
	return txnCmd{Op: txopAddPartition, ID: id, TxnProducer: p, Partitions: map[string][]int{topic: parts}, Now: now}
}

func txGroup(id string, p TxnProducer, group string) txnCmd {
	return txnCmd{Op: txopAddOffsets, ID: id, TxnProducer: p, Group: group}
}

func txOffset(id string, p TxnProducer, group, topic string, part int, off int64) txnCmd {
	return txnCmd{Op: txopOffsetCommit, ID: id, TxnProducer: p, Group: group,
		Offsets: map[string]map[int]TxnOffset{topic: {part: {Offset: off, Generation: 3, Member: "m-1"}}}}
}

func txEnd(id string, p TxnProducer, commit bool) txnCmd {
	return txnCmd{Op: txopEnd, ID: id, TxnProducer: p, Commit: commit}
}

func txComplete(id string, p TxnProducer, commit bool) txnCmd {
	return txnCmd{Op: txopComplete, ID: id, TxnProducer: p, Commit: commit}
}

var p0 = TxnProducer{ProducerID: 10, Epoch: 0}

// txnFixture builds a state machine with transactional id "tx" (producer
// p0) in the named state.
func txnFixture(t testing.TB, state string) *txnSM {
	s := newTxnSM()
	steps := map[string][]txnCmd{
		"new":            nil,
		"empty":          {txInit("tx", 10, 1)},
		"ongoing":        {txInit("tx", 10, 1), txAdd("tx", p0, 2, "t", 0)},
		"ongoing+group":  {txInit("tx", 10, 1), txGroup("tx", p0, "g")},
		"prepareCommit":  {txInit("tx", 10, 1), txAdd("tx", p0, 2, "t", 0), txEnd("tx", p0, true)},
		"prepareAbort":   {txInit("tx", 10, 1), txAdd("tx", p0, 2, "t", 0), txEnd("tx", p0, false)},
		"completeCommit": {txInit("tx", 10, 1), txAdd("tx", p0, 2, "t", 0), txEnd("tx", p0, true), txComplete("tx", p0, true)},
		"completeAbort":  {txInit("tx", 10, 1), txAdd("tx", p0, 2, "t", 0), txEnd("tx", p0, false), txComplete("tx", p0, false)},
	}
	cs, ok := steps[state]
	require.True(t, ok, state)
	txnMust(t, s, cs...)
	return s
}

// TestTxnSMTransitions runs every command from every state: the result
// code, the state after, and that a refused command changes nothing.
func TestTxnSMTransitions(t *testing.T) {
	p1 := TxnProducer{ProducerID: 10, Epoch: 1}
	const changes, same = true, false
	for _, tc := range []struct {
		from    string
		cmd     txnCmd
		code    uint64
		status  TxnStatus // after; "" for no transactional id
		p       TxnProducer
		changed bool // whether a non-OK result changes the state
	}{
		// InitProducerID
		{"new", txInit("tx", 0, 5), tNeedProducerID, "", TxnProducer{}, same},
		{"new", txInit("tx", 10, 5), tOK, TxnEmpty, p0, changes},
		{"empty", txInit("tx", 0, 5), tOK, TxnEmpty, p1, changes},
		{"ongoing", txInit("tx", 0, 5), tConcurrent, TxnPrepareAbort, p1, changes},
		{"prepareCommit", txInit("tx", 0, 5), tConcurrent, TxnPrepareCommit, p0, same},
		{"prepareAbort", txInit("tx", 0, 5), tConcurrent, TxnPrepareAbort, p0, same},
		{"completeCommit", txInit("tx", 0, 5), tOK, TxnEmpty, p1, changes},
		{"completeAbort", txInit("tx", 0, 5), tOK, TxnEmpty, p1, changes},
		{"empty", txnCmd{Op: txopInit, ID: "tx", Now: 5}, tInvalidTimeout, TxnEmpty, p0, same},
		{"empty", txnCmd{Op: txopInit, ID: "tx", Timeout: int64(MaxTxnTimeout + 1)}, tInvalidTimeout, TxnEmpty, p0, same},

		// AddPartitions
		{"new", txAdd("tx", p0, 5, "t", 1), tUnknownID, "", TxnProducer{}, same},
		{"empty", txAdd("tx", p0, 5, "t", 1), tOK, TxnOngoing, p0, changes},
		{"ongoing", txAdd("tx", p0, 5, "t", 1), tOK, TxnOngoing, p0, changes},
		{"prepareCommit", txAdd("tx", p0, 5, "t", 1), tConcurrent, TxnPrepareCommit, p0, same},
		{"prepareAbort", txAdd("tx", p0, 5, "t", 1), tConcurrent, TxnPrepareAbort, p0, same},
		{"completeCommit", txAdd("tx", p0, 5, "t", 1), tOK, TxnOngoing, p0, changes},
		{"completeAbort", txAdd("tx", p0, 5, "t", 1), tOK, TxnOngoing, p0, changes},
		{"ongoing", txAdd("tx", p1, 5, "t", 1), tFenced, TxnOngoing, p0, same},
		{"ongoing", txAdd("tx", TxnProducer{ProducerID: 11}, 5, "t", 1), tFenced, TxnOngoing, p0, same},

		// AddOffsetsToTxn
		{"new", txGroup("tx", p0, "g"), tUnknownID, "", TxnProducer{}, same},
		{"empty", txGroup("tx", p0, "g"), tOK, TxnOngoing, p0, changes},
		{"ongoing", txGroup("tx", p0, "g"), tOK, TxnOngoing, p0, changes},
		{"ongoing+group", txGroup("tx", p0, "g"), tOK, TxnOngoing, p0, changes},
		{"prepareCommit", txGroup("tx", p0, "g"), tConcurrent, TxnPrepareCommit, p0, same},
		{"completeAbort", txGroup("tx", p0, "g"), tOK, TxnOngoing, p0, changes},
		{"ongoing", txGroup("tx", p1, "g"), tFenced, TxnOngoing, p0, same},

		// TxnOffsetCommit
		{"new", txOffset("tx", p0, "g", "t", 0, 7), tUnknownID, "", TxnProducer{}, same},
		{"empty", txOffset("tx", p0, "g", "t", 0, 7), tInvalidState, TxnEmpty, p0, same},
		{"ongoing", txOffset("tx", p0, "g", "t", 0, 7), tInvalidState, TxnOngoing, p0, same},
		{"ongoing+group", txOffset("tx", p0, "g", "t", 0, 7), tOK, TxnOngoing, p0, changes},
		{"ongoing+group", txOffset("tx", p0, "other", "t", 0, 7), tInvalidState, TxnOngoing, p0, same},
		{"ongoing+group", txOffset("tx", p1, "g", "t", 0, 7), tFenced, TxnOngoing, p0, same},
		{"prepareCommit", txOffset("tx", p0, "g", "t", 0, 7), tConcurrent, TxnPrepareCommit, p0, same},
		{"completeCommit", txOffset("tx", p0, "g", "t", 0, 7), tInvalidState, TxnCompleteCommit, p0, same},

		// EndTxn
		{"new", txEnd("tx", p0, true), tUnknownID, "", TxnProducer{}, same},
		{"empty", txEnd("tx", p0, true), tInvalidState, TxnEmpty, p0, same},
		{"empty", txEnd("tx", p0, false), tInvalidState, TxnEmpty, p0, same},
		{"ongoing", txEnd("tx", p0, true), tOK, TxnPrepareCommit, p0, changes},
		{"ongoing", txEnd("tx", p0, false), tOK, TxnPrepareAbort, p0, changes},
		{"ongoing", txEnd("tx", p1, true), tFenced, TxnOngoing, p0, same},
		{"prepareCommit", txEnd("tx", p0, true), tOK, TxnPrepareCommit, p0, same},
		{"prepareCommit", txEnd("tx", p0, false), tInvalidState, TxnPrepareCommit, p0, same},
		{"prepareAbort", txEnd("tx", p0, false), tOK, TxnPrepareAbort, p0, same},
		{"prepareAbort", txEnd("tx", p0, true), tInvalidState, TxnPrepareAbort, p0, same},
		{"completeCommit", txEnd("tx", p0, true), tOK, TxnCompleteCommit, p0, same},
		{"completeCommit", txEnd("tx", p0, false), tInvalidState, TxnCompleteCommit, p0, same},
		{"completeAbort", txEnd("tx", p0, false), tOK, TxnCompleteAbort, p0, same},
		{"completeAbort", txEnd("tx", p0, true), tInvalidState, TxnCompleteAbort, p0, same},

		// CompleteTxn
		{"new", txComplete("tx", p0, true), tUnknownID, "", TxnProducer{}, same},
		{"empty", txComplete("tx", p0, true), tInvalidState, TxnEmpty, p0, same},
		{"ongoing", txComplete("tx", p0, false), tInvalidState, TxnOngoing, p0, same},
		{"prepareCommit", txComplete("tx", p0, true), tOK, TxnCompleteCommit, p0, changes},
		{"prepareCommit", txComplete("tx", p0, false), tInvalidState, TxnPrepareCommit, p0, same},
		{"prepareCommit", txComplete("tx", p1, true), tFenced, TxnPrepareCommit, p0, same},
		{"prepareAbort", txComplete("tx", p0, false), tOK, TxnCompleteAbort, p0, changes},
		{"prepareAbort", txComplete("tx", p0, true), tInvalidState, TxnPrepareAbort, p0, same},
		{"completeCommit", txComplete("tx", p0, true), tOK, TxnCompleteCommit, p0, same},
		{"completeCommit", txComplete("tx", p0, false), tInvalidState, TxnCompleteCommit, p0, same},
		{"completeAbort", txComplete("tx", p0, false), tOK, TxnCompleteAbort, p0, same},
	} {
		t.Run(fmt.Sprintf("%s/%s/%v", tc.from, tc.cmd.Op, tc.cmd.Commit), func(t *testing.T) {
			s := txnFixture(t, tc.from)
			before := txnSnap(t, s)
			code, p := txnDo(t, s, tc.cmd)
			require.Equal(t, tc.code, code)
			if code == tOK {
				require.Equal(t, tc.p, p, "the producer in the result")
			} else if !tc.changed {
				require.Equal(t, string(before), string(txnSnap(t, s)), "a refused command changes nothing")
			}
			got := txnGet(s, "tx")
			if tc.status == "" {
				require.Nil(t, got)
				return
			}
			require.NotNil(t, got)
			require.Equal(t, tc.status, got.Status)
			require.Equal(t, tc.p, got.TxnProducer)
		})
	}
}

// TestTxnSMContents follows what a transaction holds: partitions and
// offsets merge while it is Ongoing, stay through its decision (what the
// marker driver needs), and go when it completes; the next one starts
// afresh.
func TestTxnSMContents(t *testing.T) {
	s := newTxnSM()
	txnMust(t, s,
		txInit("tx", 10, 1),
		txAdd("tx", p0, 100, "b", 3, 1),
		txAdd("tx", p0, 101, "b", 1, 2),
		txAdd("tx", p0, 102, "a", 0),
		txGroup("tx", p0, "g2"),
		txGroup("tx", p0, "g1"),
		txOffset("tx", p0, "g1", "a", 0, 5),
		txOffset("tx", p0, "g1", "a", 0, 6), // replaces
		txOffset("tx", p0, "g1", "a", 1, 9),
		txEnd("tx", p0, true),
	)
	got := txnGet(s, "tx")
	require.Equal(t, TxnPrepareCommit, got.Status)
	require.Equal(t, map[string][]int{"a": {0}, "b": {1, 2, 3}}, got.Partitions)
	require.Equal(t, []string{"g1", "g2"}, got.Groups)
	require.Equal(t, map[string]map[string]map[int]TxnOffset{"g1": {"a": {
		0: {Offset: 6, Generation: 3, Member: "m-1"},
		1: {Offset: 9, Generation: 3, Member: "m-1"},
	}}}, got.Offsets)
	require.Equal(t, int64(100), got.Started, "started by its first partition")
	require.Equal(t, int64(time.Minute), got.Timeout)

	// Lookup hands out copies.
	got.Partitions["a"][0] = 99
	got.Offsets["g1"]["a"][0] = TxnOffset{}
	require.Equal(t, []int{0}, txnGet(s, "tx").Partitions["a"])
	require.Equal(t, int64(6), txnGet(s, "tx").Offsets["g1"]["a"][0].Offset)

	txnMust(t, s, txComplete("tx", p0, true))
	got = txnGet(s, "tx")
	require.Equal(t, TxnCompleteCommit, got.Status)
	require.Empty(t, got.Partitions)
	require.Empty(t, got.Groups)
	require.Empty(t, got.Offsets)

	txnMust(t, s, txAdd("tx", p0, 200, "c", 4))
	got = txnGet(s, "tx")
	require.Equal(t, map[string][]int{"c": {4}}, got.Partitions)
	require.Equal(t, int64(200), got.Started)
}

// TestTxnSMFencing: once a new instance calls InitProducerID, every request
// of the previous one fails with tFenced, whatever the state.
func TestTxnSMFencing(t *testing.T) {
	for _, from := range []string{"empty", "ongoing+group", "completeCommit", "completeAbort"} {
		t.Run(from, func(t *testing.T) {
			s := txnFixture(t, from)
			code, p := txnDo(t, s, txInit("tx", 0, 10))
			if code == tConcurrent { // ongoing: aborted under the new epoch first
				p = txnGet(s, "tx").TxnProducer
				txnMust(t, s, txComplete("tx", p, false))
				code, p = txnDo(t, s, txInit("tx", 0, 11))
			}
			require.Equal(t, tOK, code)
			require.Greater(t, p.Epoch, p0.Epoch)
			before := txnSnap(t, s)
			for _, c := range []txnCmd{
				txAdd("tx", p0, 12, "t", 0),
				txGroup("tx", p0, "g"),
				txOffset("tx", p0, "g", "t", 0, 1),
				txEnd("tx", p0, true),
				txEnd("tx", p0, false),
				txComplete("tx", p0, true),
				txComplete("tx", p0, false),
			} {
				code, _ := txnDo(t, s, c)
				require.Equal(t, tFenced, code, "%s by the old producer", c.Op)
			}
			require.Equal(t, string(before), string(txnSnap(t, s)))
			// The new instance goes on.
			txnMust(t, s, txAdd("tx", p, 13, "t", 0), txEnd("tx", p, true))
		})
	}
}

// TestTxnSMReinitAbortsOngoing: a new instance finding a transaction
// Ongoing aborts it under a bumped epoch and is told to retry until its
// markers are written; then it gets an epoch of its own.
func TestTxnSMReinitAbortsOngoing(t *testing.T) {
	s := txnFixture(t, "ongoing+group")
	txnMust(t, s, txAdd("tx", p0, 3, "t", 2), txOffset("tx", p0, "g", "t", 0, 4))

	code, _ := txnDo(t, s, txInit("tx", 0, 10))
	require.Equal(t, tConcurrent, code)
	got := txnGet(s, "tx")
	require.Equal(t, TxnPrepareAbort, got.Status)
	fence := TxnProducer{ProducerID: 10, Epoch: 1}
	require.Equal(t, fence, got.TxnProducer)
	require.Equal(t, map[string][]int{"t": {2}}, got.Partitions, "kept: the markers go to them")
	require.Equal(t, int64(10), got.Updated)

	// Retries wait, changing nothing, until the abort completes.
	before := txnSnap(t, s)
	code, _ = txnDo(t, s, txInit("tx", 0, 11))
	require.Equal(t, tConcurrent, code)
	require.Equal(t, string(before), string(txnSnap(t, s)))
	prepared, _ := s.Lookup(txnPreparedQuery{})
	require.Len(t, prepared, 1)

	txnMust(t, s, txComplete("tx", fence, false))
	code, p := txnDo(t, s, txInit("tx", 0, 12))
	require.Equal(t, tOK, code)
	require.Equal(t, TxnProducer{ProducerID: 10, Epoch: 2}, p)
	require.Equal(t, TxnEmpty, txnGet(s, "tx").Status)
	code, _ = txnDo(t, s, txAdd("tx", fence, 13, "t", 0))
	require.Equal(t, tFenced, code, "the abort's epoch is nobody's")
}

// TestTxnSMEpochExhausted: past the last epoch, InitProducerID moves the
// transactional id to a fresh producer id, which the proposer supplies.
func TestTxnSMEpochExhausted(t *testing.T) {
	s := txnFixture(t, "empty")
	s.txns["tx"].Epoch = maxProducerEpoch - 1
	code, p := txnDo(t, s, txInit("tx", 0, 2))
	require.Equal(t, tOK, code)
	require.Equal(t, TxnProducer{ProducerID: 10, Epoch: maxProducerEpoch}, p)

	code, _ = txnDo(t, s, txInit("tx", 0, 3))
	require.Equal(t, tNeedProducerID, code)
	require.Equal(t, p, txnGet(s, "tx").TxnProducer, "unchanged")
	code, _ = txnDo(t, s, txInit("tx", 10, 3))
	require.Equal(t, tInvalid, code, "the current id is not a fresh one")
	code, p = txnDo(t, s, txInit("tx", 77, 3))
	require.Equal(t, tOK, code)
	require.Equal(t, TxnProducer{ProducerID: 77}, p)

	// An Ongoing transaction at the last epoch is fenced one above it,
	// which no producer may use to begin a transaction.
	s = txnFixture(t, "ongoing")
	last := TxnProducer{ProducerID: 10, Epoch: maxProducerEpoch}
	s.txns["tx"].Epoch = maxProducerEpoch
	code, _ = txnDo(t, s, txInit("tx", 0, 4))
	require.Equal(t, tConcurrent, code)
	fence := TxnProducer{ProducerID: 10, Epoch: maxProducerEpoch + 1}
	require.Equal(t, fence, txnGet(s, "tx").TxnProducer)
	code, _ = txnDo(t, s, txAdd("tx", last, 5, "t", 0))
	require.Equal(t, tFenced, code)
	txnMust(t, s, txComplete("tx", fence, false))
	code, _ = txnDo(t, s, txAdd("tx", fence, 6, "t", 0))
	require.Equal(t, tFenced, code)
	code, _ = txnDo(t, s, txInit("tx", 0, 7))
	require.Equal(t, tNeedProducerID, code)
	code, p = txnDo(t, s, txInit("tx", 78, 7))
	require.Equal(t, tOK, code)
	require.Equal(t, TxnProducer{ProducerID: 78}, p)
}

// TestTxnSMExpire: an Ongoing transaction past its timeout is aborted with
// a bumped epoch (its producer is fenced); idle transactional ids are
// forgotten after the expiration the command carries.
func TestTxnSMExpire(t *testing.T) {
	s := newTxnSM()
	short := txInit("short", 10, 0)
	short.Timeout = 100
	txnMust(t, s,
		short,
		txAdd("short", p0, 1000, "t", 0),
		txInit("long", 20, 0),
		txAdd("long", TxnProducer{ProducerID: 20}, 1000, "t", 1),
		txInit("idle", 30, 500),
		txInit("decided", 40, 0),
		txAdd("decided", TxnProducer{ProducerID: 40}, 0, "t", 2),
		txEnd("decided", TxnProducer{ProducerID: 40}, true),
	)
	expire := func(now, idExpiration int64) []string {
		t.Helper()
		expirable, _ := s.Lookup(txnExpirableQuery{now: now, idExpiration: idExpiration})
		b, _ := json.Marshal(txnCmd{Op: txopExpire, Now: now, IDExpiration: idExpiration})
		r, err := s.Update(sm.Entry{Cmd: b})
		require.NoError(t, err)
		require.Equal(t, tOK, r.Value)
		var ids []string
		require.NoError(t, json.Unmarshal(r.Data, &ids))
		changed := len(ids) > 0
		return append(ids, fmt.Sprint("expirable=", expirable, " changed=", changed))
	}

	require.Equal(t, []string{"expirable=false changed=false"}, expire(1100, 0), "at the deadline, not past it")
	require.Equal(t, []string{"short", "expirable=true changed=true"}, expire(1101, 0))
	got := txnGet(s, "short")
	require.Equal(t, TxnPrepareAbort, got.Status)
	require.Equal(t, TxnProducer{ProducerID: 10, Epoch: 1}, got.TxnProducer)
	require.Equal(t, int64(1101), got.Updated)
	code, _ := txnDo(t, s, txEnd("short", p0, false))
	require.Equal(t, tFenced, code, "the producer learns it was fenced")
	require.Equal(t, []string{"expirable=false changed=false"}, expire(1101, 0), "nothing twice")
	require.Equal(t, TxnPrepareCommit, txnGet(s, "decided").Status, "decided: the driver's, not expiry's")

	// Idle ids: only those with no transaction under way.
	require.Equal(t, []string{"expirable=false changed=false"}, expire(1101, 601))
	expirable, _ := s.Lookup(txnExpirableQuery{now: 1102, idExpiration: 601})
	require.Equal(t, true, expirable)
	expire(1102, 601)
	require.Nil(t, txnGet(s, "idle"))
	require.NotNil(t, txnGet(s, "short"))
	require.NotNil(t, txnGet(s, "decided"))
	code, _ = txnDo(t, s, txAdd("idle", TxnProducer{ProducerID: 30}, 1200, "t", 0))
	require.Equal(t, tUnknownID, code)
}

// TestTxnSMLimits: commands beyond the limits are refused with their own
// codes, changing nothing.
func TestTxnSMLimits(t *testing.T) {
	many := func(from, n int) []int {
		ps := make([]int, n)
		for i := range ps {
			ps[i] = from + i
		}
		return ps
	}
	offsets := func(n int) map[string]map[int]TxnOffset {
		m := map[int]TxnOffset{}
		for i := range n {
			m[i] = TxnOffset{Offset: 1}
		}
		return map[string]map[int]TxnOffset{"t": m}
	}
	for _, tc := range []struct {
		name  string
		setup []txnCmd
		cmd   txnCmd
		code  uint64
	}{
		{"one command", nil, txAdd("tx", p0, 1, "t", many(0, MaxTxnPartitions+1)...), tTooLarge},
		{"at the limit", nil, txAdd("tx", p0, 1, "t", many(0, MaxTxnPartitions)...), tOK},
		{"over two topics", nil, txnCmd{Op: txopAddPartition, ID: "tx", TxnProducer: p0, Partitions: map[string][]int{
			"a": many(0, MaxTxnPartitions/2+1), "b": many(0, MaxTxnPartitions/2)}}, tTooLarge},
		{"cumulative", []txnCmd{txAdd("tx", p0, 1, "t", many(0, MaxTxnPartitions-1)...)}, txAdd("tx", p0, 1, "u", 0, 1), tTooLarge},
		{"cumulative with repeats", []txnCmd{txAdd("tx", p0, 1, "t", many(0, MaxTxnPartitions-1)...)}, txAdd("tx", p0, 1, "t", 0, 1, 2, MaxTxnPartitions-1), tOK},
		{"a group counts", []txnCmd{txAdd("tx", p0, 1, "t", many(0, MaxTxnPartitions)...)}, txGroup("tx", p0, "g"), tTooLarge},
		{"partitions after groups", []txnCmd{txGroup("tx", p0, "g"), txAdd("tx", p0, 1, "t", many(0, MaxTxnPartitions-1)...)}, txAdd("tx", p0, 1, "u", 0), tTooLarge},
		{"offsets", []txnCmd{txGroup("tx", p0, "g")}, txnCmd{Op: txopOffsetCommit, ID: "tx", TxnProducer: p0, Group: "g", Offsets: offsets(MaxTxnPartitions + 1)}, tTooLarge},
		{"offsets cumulative", []txnCmd{txGroup("tx", p0, "g"), txGroup("tx", p0, "h"),
			{Op: txopOffsetCommit, ID: "tx", TxnProducer: p0, Group: "g", Offsets: offsets(MaxTxnPartitions)}},
			txOffset("tx", p0, "h", "t", 0, 1), tTooLarge},
		{"offsets replaced", []txnCmd{txGroup("tx", p0, "g"),
			{Op: txopOffsetCommit, ID: "tx", TxnProducer: p0, Group: "g", Offsets: offsets(MaxTxnPartitions)}},
			txOffset("tx", p0, "g", "t", 0, 1), tOK},
		{"timeout zero", nil, txnCmd{Op: txopInit, ID: "new", NewProducerID: 3}, tInvalidTimeout},
		{"timeout negative", nil, txnCmd{Op: txopInit, ID: "new", NewProducerID: 3, Timeout: -1}, tInvalidTimeout},
		{"timeout over the max", nil, txnCmd{Op: txopInit, ID: "new", NewProducerID: 3, Timeout: int64(MaxTxnTimeout) + 1}, tInvalidTimeout},
		{"timeout at the max", nil, txnCmd{Op: txopInit, ID: "new", NewProducerID: 3, Timeout: int64(MaxTxnTimeout)}, tOK},
		{"id too long", nil, txInit(strings.Repeat("x", MaxTransactionalIDLength+1), 3, 0), tInvalid},
		{"id at the limit", nil, txInit(strings.Repeat("x", MaxTransactionalIDLength), 3, 0), tOK},
		{"empty id", nil, txInit("", 3, 0), tInvalid},
		{"group name too long", nil, txGroup("tx", p0, strings.Repeat("g", MaxTransactionalIDLength+1)), tInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := txnFixture(t, "empty")
			txnMust(t, s, tc.setup...)
			before := txnSnap(t, s)
			code, _ := txnDo(t, s, tc.cmd)
			require.Equal(t, tc.code, code)
			if code != tOK {
				require.Equal(t, string(before), string(txnSnap(t, s)))
			}
		})
	}
}

// txnBadCommands are commands no proposer sends; each is refused with the
// code given and changes nothing.
var txnBadCommands = []struct {
	name, cmd string
	code      uint64
}{
	{"garbage", "\x00\x01garbage", tInvalid},
	{"empty", "", tInvalid},
	{"null", "null", tInvalid},
	{"empty object", "{}", tInvalid},
	{"unknown op", `{"op":"explode","id":"tx"}`, tInvalid},
	{"op type", `{"op":1}`, tInvalid},
	{"no id", `{"op":"end","producer_id":10}`, tInvalid},
	{"negative epoch", `{"op":"end","id":"tx","producer_id":10,"epoch":-1}`, tInvalid},
	{"epoch overflow", `{"op":"end","id":"tx","producer_id":10,"epoch":40000}`, tInvalid},
	{"no partitions", `{"op":"add-partitions","id":"tx","producer_id":10}`, tInvalid},
	{"empty topic", `{"op":"add-partitions","id":"tx","producer_id":10,"partitions":{"":[0]}}`, tInvalid},
	{"topic without partitions", `{"op":"add-partitions","id":"tx","producer_id":10,"partitions":{"t":[]}}`, tInvalid},
	{"negative partition", `{"op":"add-partitions","id":"tx","producer_id":10,"partitions":{"t":[-1]}}`, tInvalid},
	{"huge partition", `{"op":"add-partitions","id":"tx","producer_id":10,"partitions":{"t":[1099511627776]}}`, tInvalid},
	{"long topic", `{"op":"add-partitions","id":"tx","producer_id":10,"partitions":{"` + strings.Repeat("t", 250) + `":[0]}}`, tInvalid},
	{"no group", `{"op":"add-offsets","id":"tx","producer_id":10}`, tInvalid},
	{"negative offset", `{"op":"offset-commit","id":"tx","producer_id":10,"group":"g","offsets":{"t":{"0":{"offset":-1}}}}`, tInvalid},
	{"offset partition key", `{"op":"offset-commit","id":"tx","producer_id":10,"group":"g","offsets":{"t":{"x":{"offset":1}}}}`, tInvalid},
	{"long metadata", `{"op":"offset-commit","id":"tx","producer_id":10,"group":"g","offsets":{"t":{"0":{"offset":1,"metadata":"` + strings.Repeat("m", MaxOffsetMetadata+1) + `"}}}}`, tInvalid},
	{"timeout type", `{"op":"init","id":"tx","timeout":"1s"}`, tInvalid},
}

func TestTxnSMBadInput(t *testing.T) {
	for _, tc := range txnBadCommands {
		t.Run(tc.name, func(t *testing.T) {
			s := txnFixture(t, "ongoing+group")
			before := txnSnap(t, s)
			var code uint64
			require.NotPanics(t, func() { code, _ = txnDoRaw(t, s, []byte(tc.cmd)) })
			require.Equal(t, tc.code, code)
			require.Equal(t, string(before), string(txnSnap(t, s)), "a refused command changes nothing")
		})
	}
	_, err := newTxnSM().Lookup(42)
	require.ErrorIs(t, err, ErrInvalid)
}

func TestTxnSMSnapshotRoundTrip(t *testing.T) {
	s := txnFixture(t, "ongoing+group")
	txnMust(t, s,
		txAdd("tx", p0, 3, "t", 5, 2),
		txOffset("tx", p0, "g", "t", 1, 1<<50),
		txInit("other", 11, 4),
		txAdd("other", TxnProducer{ProducerID: 11}, 5, "u", 0),
		txEnd("other", TxnProducer{ProducerID: 11}, false),
		txInit("done", 12, 6),
		txAdd("done", TxnProducer{ProducerID: 12}, 7, "u", 0),
		txEnd("done", TxnProducer{ProducerID: 12}, true),
		txComplete("done", TxnProducer{ProducerID: 12}, true),
	)
	snap := txnSnap(t, s)
	r := newTxnSM()
	require.NoError(t, r.RecoverFromSnapshot(bytes.NewReader(snap), nil, nil))
	require.Equal(t, s.txns, r.txns)
	require.Equal(t, snap, txnSnap(t, r))

	// The recovered replica goes on exactly as the original.
	for _, c := range []txnCmd{
		txEnd("tx", p0, true),
		txInit("other", 0, 8),
		txComplete("other", TxnProducer{ProducerID: 11}, false),
		txInit("done", 0, 9),
		{Op: txopExpire, Now: int64(time.Hour), IDExpiration: 1},
	} {
		c1, p1 := txnDo(t, s, c)
		c2, p2 := txnDo(t, r, c)
		require.Equal(t, c1, c2)
		require.Equal(t, p1, p2)
	}
	require.Equal(t, txnSnap(t, s), txnSnap(t, r))

	// An empty coordinator round-trips too, into a usable state.
	r2 := newTxnSM()
	require.NoError(t, r2.RecoverFromSnapshot(bytes.NewReader(txnSnap(t, newTxnSM())), nil, nil))
	require.NotNil(t, r2.txns)
	txnMust(t, r2, txInit("tx", 1, 0))
}

// A snapshot we did not write is refused with an error wrapping
// ErrCorrupt, never a panic, and the state is kept.
func TestTxnSMRecoverGarbage(t *testing.T) {
	valid := `{"id":"tx","producer_id":10,"epoch":0,"status":"Ongoing","timeout":60000000000,"serial":1,"started":2,"updated":2,"partitions":{"t":[0]},"groups":["g"],"offsets":{"g":{"t":{"0":{"offset":1,"generation":3}}}}}`
	with := func(old, new string) string {
		require.Contains(t, valid, old)
		return `{"transactions":{"tx":` + strings.Replace(valid, old, new, 1) + `}}`
	}
	require.NoError(t, newTxnSM().RecoverFromSnapshot(strings.NewReader(with(`"epoch":0`, `"epoch":0`)), nil, nil))
	for name, in := range map[string]string{
		"empty":              "",
		"garbage":            "\x00\xffgarbage",
		"null":               "null",
		"no transactions":    "{}",
		"null transactions":  `{"transactions":null}`,
		"array":              `{"transactions":[1]}`,
		"null transaction":   `{"transactions":{"tx":null}}`,
		"id":                 with(`"id":"tx"`, `"id":"other"`),
		"no producer id":     with(`"producer_id":10`, `"producer_id":0`),
		"negative epoch":     with(`"epoch":0`, `"epoch":-1`),
		"epoch past fencing": with(`"epoch":0`, `"epoch":32768`),
		"status":             with(`"status":"Ongoing"`, `"status":"Limbo"`),
		"timeout":            with(`"timeout":60000000000`, `"timeout":0`),
		"huge timeout":       with(`"timeout":60000000000`, `"timeout":60000000000000`),
		"empty with parts":   with(`"status":"Ongoing"`, `"status":"Empty"`),
		"no serial":          with(`"serial":1`, `"serial":0`),
		"negative partition": with(`"t":[0]`, `"t":[-1]`),
		"unsorted":           with(`"t":[0]`, `"t":[1,0]`),
		"repeated":           with(`"t":[0]`, `"t":[0,0]`),
		"no partitions":      with(`"t":[0]`, `"t":[]`),
		"empty topic":        with(`"partitions":{"t"`, `"partitions":{""`),
		"groups unsorted":    with(`"groups":["g"]`, `"groups":["g","a"]`),
		"group not added":    with(`"groups":["g"]`, `"groups":["h"]`),
		"negative offset":    with(`"offset":1`, `"offset":-1`),
		"offset partition":   with(`{"0":{"offset"`, `{"-5":{"offset"`),
		"truncated":          with(`"epoch":0`, `"epoch":0`)[:40],
	} {
		t.Run(name, func(t *testing.T) {
			s := txnFixture(t, "ongoing")
			before := txnSnap(t, s)
			var err error
			require.NotPanics(t, func() { err = s.RecoverFromSnapshot(strings.NewReader(in), nil, nil) })
			require.ErrorIs(t, err, storage.ErrCorrupt)
			require.Equal(t, string(before), string(txnSnap(t, s)), "a refused snapshot changes nothing")
		})
	}
}

// FuzzTxnSMUpdate feeds arbitrary commands to a coordinator with a
// transaction in every state: Update never panics or fails, and the state
// it leaves round-trips through a snapshot.
func FuzzTxnSMUpdate(f *testing.F) {
	for _, c := range []txnCmd{
		txInit("tx", 0, 1), txInit("new", 9, 1),
		txAdd("tx", p0, 2, "t", 1), txGroup("tx", p0, "g"), txOffset("tx", p0, "g", "t", 0, 3),
		txEnd("tx", p0, true), txComplete("tx", p0, false),
		{Op: txopExpire, Now: int64(time.Hour), IDExpiration: 5},
	} {
		b, _ := json.Marshal(c)
		f.Add(b)
	}
	for _, tc := range txnBadCommands {
		f.Add([]byte(tc.cmd))
	}
	f.Fuzz(func(t *testing.T, cmd []byte) {
		s := txnFixture(t, "ongoing+group")
		for i, id := range []string{"a", "b", "c"} {
			p := TxnProducer{ProducerID: uint64(20 + i)}
			txnMust(t, s, txInit(id, p.ProducerID, 1), txAdd(id, p, 2, "t", i))
			if i > 0 {
				txnMust(t, s, txEnd(id, p, i == 1))
			}
			if i > 1 {
				txnMust(t, s, txComplete(id, p, false))
			}
		}
		txnDoRaw(t, s, cmd)
		txnDoRaw(t, s, cmd) // twice: proposals may apply twice
		snap := txnSnap(t, s)
		r := newTxnSM()
		require.NoError(t, r.RecoverFromSnapshot(bytes.NewReader(snap), nil, nil))
		require.Equal(t, snap, txnSnap(t, r))
	})
}
