package storage

import (
	"bytes"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// writeTwoPartitions fills shards 1 and 2 of a store in dir with n batches of
// about 8 KiB each and closes it, which flushes everything to sstables. The
// data keys of shard 1 sort before those of shard 2, so shard 1's records
// sit in the first part of the table.
func writeTwoPartitions(t *testing.T, dir string, n int) {
	t.Helper()
	s, err := OpenStore(dir, StoreOptions{})
	require.NoError(t, err)
	for _, shard := range []uint64{1, 2} {
		p := openPartition(t, s, shard)
		for range n {
			applyCmds(t, p, appendCmd(t, 0, 0, 0, strings.Repeat("x", 8<<10)))
		}
	}
	require.NoError(t, s.Close())
}

// damageTables overwrites 64 bytes at fraction f of every sstable in dir.
func damageTables(t *testing.T, dir string, f float64) {
	t.Helper()
	tables, err := filepath.Glob(filepath.Join(dir, "*.sst"))
	require.NoError(t, err)
	require.NotEmpty(t, tables)
	for _, name := range tables {
		b, err := os.ReadFile(name)
		require.NoError(t, err)
		at := int(float64(len(b)) * f)
		copy(b[at:], bytes.Repeat([]byte{0xa5}, 64))
		require.NoError(t, os.WriteFile(name, b, 0o644))
	}
}

// TestDamagedTableReadsAsErrCorrupt damages the middle of shard 1's part of
// an sstable: Pebble's block checksum catches it. Reading shard 1 must fail
// with ErrCorrupt naming the shard and offset, never panic (Pebble's default
// corruption handler calls Logger.Fatalf), and shard 2 still reads.
func TestDamagedTableReadsAsErrCorrupt(t *testing.T) {
	dir := t.TempDir()
	const n = 64
	writeTwoPartitions(t, dir, n)
	damageTables(t, dir, 0.25)

	s, err := OpenStore(dir, StoreOptions{})
	require.NoError(t, err)
	defer func() { require.NoError(t, s.Close()) }()

	damaged := openPartition(t, s, 1)
	require.Equal(t, int64(n), damaged.Meta().NextOffset)
	require.NotPanics(t, func() {
		var read int
		err := damaged.ReadBatches(0, n, math.MaxInt, func([]byte) bool { read++; return true })
		require.ErrorIs(t, err, ErrCorrupt)
		require.Less(t, read, n)
		require.Contains(t, err.Error(), "shard 1 at offset ")
	})
	require.NotPanics(t, func() {
		_, err := damaged.OffsetForTime(math.MaxInt64, n)
		// The time index is intact; the answer needs no damaged batch.
		require.NoError(t, err)
	})

	intact := openPartition(t, s, 2)
	require.Len(t, readLog(t, intact, 0, n), n)
}
