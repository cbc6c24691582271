package replication

import (
	"io"
	"testing"
	"time"

	pvfs "github.com/cockroachdb/pebble/v2/vfs"
	"github.com/stretchr/testify/require"
)

// TestCrashCutsBothFileSystemsAtOnce mimics a node: a step appends an entry
// to the Raft log and syncs it, then applies it to the store and syncs
// that, so the store never holds more entries than the Raft log. A real
// power loss keeps that true; the simulation must too. It used to stop the
// Raft log's syncs first and clone the store a moment later, so a store
// sync in between kept an entry the Raft log lost. The test runs one step
// inside that moment, widened.
func TestCrashCutsBothFileSystemsAtOnce(t *testing.T) {
	m := NewMemStorage()
	raftFS, dataFS := m.fs()
	rf, err := raftFS.Create("raft")
	require.NoError(t, err)
	rd, err := raftFS.OpenDir("")
	require.NoError(t, err)
	df, err := dataFS.Create("data", pvfs.WriteCategoryUnspecified)
	require.NoError(t, err)
	dd, err := dataFS.OpenDir("")
	require.NoError(t, err)
	for _, f := range []interface{ Sync() error }{rf, rd, df, dd} {
		require.NoError(t, f.Sync())
	}
	step := func() error {
		for _, err := range []error{first(rf.Write([]byte{1})), rf.Sync(), first(df.Write([]byte{1})), df.Sync()} {
			if err != nil {
				return err
			}
		}
		return nil
	}
	require.NoError(t, step()) // one step before the crash: kept by both

	stepped := make(chan error, 1)
	m.duringCut = func() {
		go func() { stepped <- step() }()
		select {
		case err := <-stepped: // the old cut: the step got through
			stepped <- err
		case <-time.After(100 * time.Millisecond): // the store's sync waits for the cut
		}
	}
	m.Crash(func() { require.NoError(t, <-stepped) })

	raftFS, dataFS = m.fs()
	raftLen := fileLen(t, func() (io.ReadCloser, error) { return raftFS.Open("raft") })
	dataLen := fileLen(t, func() (io.ReadCloser, error) { return dataFS.Open("data") })
	require.Equal(t, 1, raftLen, "the Raft log keeps what was synced before the crash")
	require.LessOrEqual(t, dataLen, raftLen, "the store kept an entry the Raft log lost")
}

func first(_ int, err error) error { return err }

func fileLen(t *testing.T, open func() (io.ReadCloser, error)) int {
	t.Helper()
	f, err := open()
	require.NoError(t, err)
	defer f.Close()
	b, err := io.ReadAll(f)
	require.NoError(t, err)
	return len(b)
}
