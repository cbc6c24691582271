package replog_test

import (
	"crypto/rand"
	"io/fs"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/replog/replog"
	"github.com/replog/replog/internal/expert"
)

// dirSize is the bytes of the regular files under dir.
func dirSize(t *testing.T, dir string) int64 {
	t.Helper()
	var n int64
	require.NoError(t, filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return nil // removed meanwhile
		}
		n += fi.Size()
		return nil
	}))
	return n
}

// fillIncompressible produces n records of size random bytes to tp.
func fillIncompressible(t *testing.T, tp *replog.Topic, n, size int) {
	t.Helper()
	ctx := testCtx(t)
	p, err := replog.NewProducer(tp, replog.Bytes(), nil)
	require.NoError(t, err)
	defer p.Close()
	var failed atomic.Pointer[error]
	for range n {
		v := make([]byte, size)
		rand.Read(v)
		p.ProduceAsync(ctx, replog.Message[[]byte]{Value: v}, func(_ replog.Position, err error) {
			if err != nil {
				failed.CompareAndSwap(nil, &err)
			}
		})
	}
	require.NoError(t, p.Flush(ctx))
	require.Nil(t, failed.Load())
}

// Deleted records give their disk space back: the store compacts the
// deleted range, and the Raft log, compacted after snapshots, does not keep
// the entries either. What stays in raft/ is dragonboat's LogDB write-ahead
// log, bounded by its write buffers, not by the partition's size.
func TestDiskFreedAfterDeleteRecordsAndRetention(t *testing.T) {
	if testing.Short() {
		t.Skip("writes 40 MiB")
	}
	ctx := testCtx(t)
	dir := t.TempDir()
	o := replog.Options{SnapshotEntries: 100}
	expert.Attach(&o, expert.Options{RetentionInterval: 50 * time.Millisecond})
	l, err := replog.Open(dir, &o)
	require.NoError(t, err)
	defer func() { require.NoError(t, l.Close()) }()
	tp, err := l.CreateTopic(ctx, "big", replog.TopicConfig{})
	require.NoError(t, err)

	const n, size = 320, 64 << 10 // 20 MiB
	fill := func() {
		fillIncompressible(t, tp, n, size)
	}
	measure := func(what string) (all, store int64) {
		all, store = dirSize(t, dir), dirSize(t, filepath.Join(dir, "data"))
		t.Logf("%s: directory %.1f MiB, store %.1f MiB", what, float64(all)/(1<<20), float64(store)/(1<<20))
		return all, store
	}
	shrinks := func(what string, allBefore int64) {
		require.Eventually(t, func() bool {
			all, store := dirSize(t, dir), dirSize(t, filepath.Join(dir, "data"))
			// The store's deleted range is compacted away; the Raft log
			// drops its entries after the next snapshots, which a loaded
			// machine can take a while to reach.
			return store < 5<<20 && all < allBefore-5<<20
		}, 60*time.Second, 100*time.Millisecond, what)
		measure(what)
	}

	fill()
	before, _ := measure("after 20 MiB")
	require.Greater(t, before, int64(20<<20))
	hw := mustOffsets(t, tp, 0).HighWatermark
	require.NoError(t, l.DeleteRecords(ctx, "big", map[int]int64{0: hw}))
	shrinks("after DeleteRecords", before)

	fill()
	before, _ = measure("after 20 MiB more")
	require.NoError(t, l.AlterTopic(ctx, "big", replog.TopicConfig{RetentionBytes: 1 << 20}))
	shrinks("after retention to 1 MiB", before)
	require.Equal(t, 2*hw, mustOffsets(t, tp, 0).HighWatermark)
}

// The log start survives a restart, and appends go on at the high
// watermark.
func TestDeleteRecordsSurvivesRestart(t *testing.T) {
	ctx := testCtx(t)
	dir := t.TempDir()
	l, err := replog.Open(dir, nil)
	require.NoError(t, err)
	tp, err := l.CreateTopic(ctx, "t", replog.TopicConfig{})
	require.NoError(t, err)
	produceTo(t, tp, 0, 6)
	require.NoError(t, l.DeleteRecords(ctx, "t", map[int]int64{0: 4}))
	require.NoError(t, l.Close())

	l, err = replog.Open(dir, nil)
	require.NoError(t, err)
	defer func() { require.NoError(t, l.Close()) }()
	tp, err = l.Topic("t")
	require.NoError(t, err)
	require.Equal(t, replog.PartitionOffsets{LogStart: 4, HighWatermark: 6, LastStable: 6}, mustOffsets(t, tp, 0))
	produceTo(t, tp, 0, 1)
	require.Equal(t, replog.PartitionOffsets{LogStart: 4, HighWatermark: 7, LastStable: 7}, mustOffsets(t, tp, 0))
}
