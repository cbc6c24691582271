package replication

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"math"
	"sync"
	"sync/atomic"
	"testing"

	sm "github.com/lni/dragonboat/v4/statemachine"
	"github.com/stretchr/testify/require"

	"github.com/replog/replog/storage"
)

// The partition state machine is tested here without dragonboat: a bare
// Node carrying only the store stands in for the NodeHost, and the tests
// call the IOnDiskStateMachine methods as dragonboat would.

func openMemStore(t *testing.T) *storage.Store {
	t.Helper()
	s, err := storage.OpenStore("x", storage.StoreOptions{InMemory: true})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, s.Close()) })
	return s
}

// openPartitionSM opens the state machine of shard over store, as
// dragonboat's StartOnDiskReplica does, and returns it with the Partition
// readers use.
func openPartitionSM(t *testing.T, store *storage.Store, shard uint64) (*partitionSM, *Partition) {
	t.Helper()
	p := newPartition(&Node{store: store, stop: make(chan struct{})}, shard)
	s := &partitionSM{p: p}
	_, err := s.Open(nil)
	require.NoError(t, err)
	p.setReplayTo(0) // no Raft log to replay
	require.NoError(t, p.WaitOpen(context.Background()))
	return s, p
}

// partCmd is a CmdAppend command with one uncompressed batch holding a
// record per value. pid 0 makes it non-idempotent.
func partCmd(t *testing.T, pid uint64, epoch uint32, seq int32, values ...string) []byte {
	t.Helper()
	var bb storage.BatchBuilder
	for i, v := range values {
		bb.Add(storage.Record{Time: 1000 + int64(i), Value: []byte(v)})
	}
	cmd, err := bb.BuildWithPrefix(1, storage.CompressionNone, pid, epoch, seq)
	require.NoError(t, err)
	cmd[0] = storage.CmdAppend
	return cmd
}

// applySM applies cmds as the entries after the state machine's applied
// index and returns their decoded results.
func applySM(t *testing.T, s *partitionSM, cmds ...[]byte) []storage.Result {
	t.Helper()
	next := s.s.Meta().AppliedIndex + 1
	es := make([]sm.Entry, len(cmds))
	for i, c := range cmds {
		es[i] = sm.Entry{Index: next + uint64(i), Cmd: c}
	}
	out, err := s.Update(es)
	require.NoError(t, err)
	require.Len(t, out, len(cmds))
	res := make([]storage.Result, len(out))
	for i, e := range out {
		res[i] = decodeResult(e.Result.Value)
	}
	return res
}

// readRecords decodes the records a reader sees through the Partition, as
// "offset:value".
func readRecords(t *testing.T, p *Partition) []string {
	t.Helper()
	var out []string
	err := p.ReadBatches(context.Background(), 0, math.MaxInt, func(b []byte) bool {
		_, recs, err := storage.DecodeRecords(b, 0, nil)
		require.NoError(t, err)
		for _, r := range recs {
			out = append(out, fmt.Sprintf("%d:%s", r.Offset, r.Value))
		}
		return true
	})
	require.NoError(t, err)
	return out
}

func resOK(off int64) storage.Result { return storage.Result{BaseOffset: off} }
func resDup(off int64) storage.Result {
	return storage.Result{BaseOffset: off, Status: storage.StatusDuplicate}
}
func resRefused(st storage.Status) storage.Result { return storage.Result{BaseOffset: -1, Status: st} }

func TestPartitionSMApply(t *testing.T) {
	s, p := openPartitionSM(t, openMemStore(t), 3)
	require.Zero(t, p.HighWatermark())
	changed := p.Changed()

	res := applySM(t, s,
		partCmd(t, 0, 0, 0, "a", "b"),
		partCmd(t, 0, 0, 0, "c"),
	)
	require.Equal(t, []storage.Result{resOK(0), resOK(2)}, res)
	select {
	case <-changed:
	default:
		t.Fatal("Update did not signal readers")
	}
	require.Equal(t, int64(3), p.HighWatermark())
	require.Equal(t, []string{"0:a", "1:b", "2:c"}, readRecords(t, p))

	m, err := s.Lookup(nil)
	require.NoError(t, err)
	require.Equal(t, uint64(2), m.(storage.Meta).AppliedIndex)

	// Reopening the state machine over the same store starts where the
	// store is: dragonboat replays only the entries after that index.
	s2 := &partitionSM{p: newPartition(s.p.n, 3)}
	idx, err := s2.Open(nil)
	require.NoError(t, err)
	require.Equal(t, uint64(2), idx)
	require.Equal(t, int64(3), s2.p.HighWatermark())
}

// TestPartitionSMTransactions: the state machine applies transactional
// batches and markers, and the Partition publishes the last stable offset
// and the aborted transactions.
func TestPartitionSMTransactions(t *testing.T) {
	s, p := openPartitionSM(t, openMemStore(t), 3)
	txn := func(pid uint64, seq int32, v string) []byte {
		cmd := partCmd(t, pid, 0, seq, v)
		cmd[1+22] |= 0x10 // transactional
		binary.BigEndian.PutUint32(cmd[1+17:], crc32.Checksum(cmd[1+21:], crc32.MakeTable(crc32.Castagnoli)))
		out := make([]byte, storage.TxnAppendHeaderSize, storage.TxnAppendHeaderSize+len(cmd)-1)
		storage.PutTxnAppendHeader(out, 1) // the transaction's serial
		return append(out, cmd[1:]...)
	}
	require.Equal(t, []storage.Result{resOK(0), resOK(1), resOK(2)}, applySM(t, s,
		txn(7, 0, "a"), partCmd(t, 0, 0, 0, "b"), txn(8, 0, "c")))
	require.Equal(t, int64(3), p.HighWatermark())
	require.Equal(t, int64(0), p.LastStable())
	require.Equal(t, []storage.Result{resOK(3), resOK(4)}, applySM(t, s,
		storage.TxnMarkerCommand(7, 0, 1, false, 1, 5e6), storage.TxnMarkerCommand(8, 1, 1, true, 1, 5e6)))
	require.Equal(t, int64(5), p.LastStable())
	aborted, err := p.AbortedTxns(context.Background(), 0, 5)
	require.NoError(t, err)
	require.Equal(t, []storage.AbortedTxn{{ProducerID: 7, FirstOffset: 0, LastOffset: 3}}, aborted)
	// The marker raised producer 8's epoch: epoch 0 is fenced.
	require.Equal(t, []storage.Result{resRefused(storage.StatusFenced)}, applySM(t, s, txn(8, 1, "zombie")))
}

func TestPartitionSMDeduplicatesRetries(t *testing.T) {
	s, p := openPartitionSM(t, openMemStore(t), 1)
	first := partCmd(t, 7, 0, 0, "a", "b")
	second := partCmd(t, 7, 0, 2, "c")
	require.Equal(t, []storage.Result{resOK(0), resOK(2)}, applySM(t, s, first, second))

	// A producer that lost the acknowledgements sends both again: Raft
	// commits them a second time, at new indexes.
	require.Equal(t, []storage.Result{resDup(0), resDup(2)}, applySM(t, s, first, second))
	require.Equal(t, []storage.Result{
		resRefused(storage.StatusOutOfOrder), // skips seq 3
		resOK(3),
	}, applySM(t, s, partCmd(t, 7, 0, 4, "x"), partCmd(t, 7, 0, 3, "d")))
	require.Equal(t, []string{"0:a", "1:b", "2:c", "3:d"}, readRecords(t, p))
}

func TestPartitionSMSnapshotRoundTrip(t *testing.T) {
	src, srcPart := openPartitionSM(t, openMemStore(t), 1)
	applySM(t, src,
		partCmd(t, 7, 0, 0, "a", "b"),
		partCmd(t, 0, 0, 0, "c"),
		partCmd(t, 7, 0, 2, "d"),
	)
	ctx, err := src.PrepareSnapshot()
	require.NoError(t, err)
	// Applies after PrepareSnapshot are not in the snapshot.
	applySM(t, src, partCmd(t, 7, 0, 3, "later"))
	var buf bytes.Buffer
	require.NoError(t, src.SaveSnapshot(ctx, &buf, nil))

	// Another node's replica, of another shard id, with data of its own
	// that the snapshot replaces.
	dst, dstPart := openPartitionSM(t, openMemStore(t), 9)
	applySM(t, dst, partCmd(t, 0, 0, 0, "x", "y", "z", "w", "v"))
	changed := dstPart.Changed()
	require.NoError(t, dst.RecoverFromSnapshot(bytes.NewReader(buf.Bytes()), nil))
	select {
	case <-changed:
	default:
		t.Fatal("RecoverFromSnapshot did not signal readers")
	}
	require.Equal(t, int64(4), dstPart.HighWatermark())
	require.Equal(t, []string{"0:a", "1:b", "2:c", "3:d"}, readRecords(t, dstPart))
	m, err := dst.Lookup(nil)
	require.NoError(t, err)
	require.Equal(t, uint64(3), m.(storage.Meta).AppliedIndex)

	// The restored replica applies the entry the source applied after the
	// snapshot exactly as the source did, idempotence included.
	later := partCmd(t, 7, 0, 3, "later")
	require.Equal(t, []storage.Result{resOK(4)}, applySM(t, dst, later))
	require.Equal(t, []storage.Result{resDup(4)}, applySM(t, dst, later))
	require.Equal(t, readRecords(t, srcPart), readRecords(t, dstPart))
}

func TestPartitionSMBadInput(t *testing.T) {
	s, p := openPartitionSM(t, openMemStore(t), 1)
	valid := partCmd(t, 7, 0, 0, "a")
	flipped := bytes.Clone(valid)
	flipped[len(flipped)-1] ^= 1
	cases := map[string][]byte{
		"nil":             nil,
		"unknown command": {99, 1, 2, 3},
		"command only":    {storage.CmdAppend},
		"garbage":         append([]byte{storage.CmdAppend}, bytes.Repeat([]byte{0xa5}, 100)...),
		"crc mismatch":    flipped,
		"truncated":       valid[:len(valid)-1],
	}
	for name, cmd := range cases {
		require.NotPanics(t, func() {
			require.Equal(t, []storage.Result{resRefused(storage.StatusCorrupt)}, applySM(t, s, cmd), name)
		}, name)
	}

	// A batch whose CRC holds but whose header claims one record more
	// than it carries: stored, it would shift every later offset.
	// (A Kafka batch: its last offset delta and record count, big-endian
	// at 23 and 57, and the CRC at 17 over the bytes from 21.)
	lying := partCmd(t, 7, 0, 0, "long enough to back two records")
	b := lying[1:]
	binary.BigEndian.PutUint32(b[23:], 1)
	binary.BigEndian.PutUint32(b[57:], 2)
	binary.BigEndian.PutUint32(b[17:], crc32.Checksum(b[21:], crc32.MakeTable(crc32.Castagnoli)))
	_, err := storage.ParseHeader(b)
	require.NoError(t, err)
	require.NotPanics(t, func() {
		require.Equal(t, []storage.Result{resRefused(storage.StatusInvalid)}, applySM(t, s, lying))
	})

	require.Zero(t, p.HighWatermark())
	require.Equal(t, uint64(len(cases)+1), s.s.Meta().AppliedIndex, "refused entries are applied")
	require.Equal(t, []storage.Result{resOK(0)}, applySM(t, s, valid))
}

// TestPartitionSMLookupDuringUpdate reads the state machine as dragonboat
// does for a linearizable read (Lookup, on a read goroutine) while entries
// are applied. Run it with -race.
func TestPartitionSMLookupDuringUpdate(t *testing.T) {
	s, _ := openPartitionSM(t, openMemStore(t), 1)
	var done atomic.Bool
	var wg sync.WaitGroup
	wg.Go(func() {
		last := uint64(0)
		for !done.Load() {
			v, err := s.Lookup(nil)
			if err != nil {
				t.Error(err)
				return
			}
			m := v.(storage.Meta)
			if m.AppliedIndex < last || m.NextOffset != int64(m.AppliedIndex) {
				t.Errorf("lookup saw %+v after index %d", m, last)
				return
			}
			last = m.AppliedIndex
		}
	})
	defer wg.Wait()
	defer done.Store(true)
	for range 200 {
		applySM(t, s, partCmd(t, 0, 0, 0, "a"))
	}
}
