package replog_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/replog/replog"
)

// fillDir creates a durable log in dir with one topic and a few records,
// and closes it.
func fillDir(t *testing.T, dir string) {
	t.Helper()
	ctx := testCtx(t)
	l, err := replog.Open(dir, nil)
	require.NoError(t, err)
	tp, err := l.CreateTopic(ctx, "events", replog.TopicConfig{Partitions: 2})
	require.NoError(t, err)
	p, err := replog.NewProducer(tp, replog.String(), nil)
	require.NoError(t, err)
	// 40 MiB: more than the Raft log's memtable, so it writes tables.
	big := strings.Repeat("x", 1000<<10)
	for i := range 40 {
		p.ProduceAsync(ctx, replog.Message[string]{Key: []byte{byte(i)}, Value: fmt.Sprint(i, big)}, nil)
	}
	require.NoError(t, p.Flush(ctx))
	require.NoError(t, l.Close())
}

// TestOpenCorruptRaftLog damages every table of the Raft log's Pebble and
// expects Open to fail with ErrCorrupt rather than panic, and to leave
// nothing behind: no goroutine (TestMain checks), no lock (once the tables
// are repaired, Open succeeds in this process).
func TestOpenCorruptRaftLog(t *testing.T) {
	dir := t.TempDir()
	fillDir(t, dir)
	var tables []string
	err := filepath.WalkDir(filepath.Join(dir, "raft"), func(path string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasSuffix(path, ".sst") {
			tables = append(tables, path)
		}
		return err
	})
	require.NoError(t, err)
	require.NotEmpty(t, tables, "the Raft log has no table to damage: %v", lsR(dir))
	saved := map[string][]byte{}
	for _, path := range tables {
		b, err := os.ReadFile(path)
		require.NoError(t, err)
		saved[path] = b
		damage(t, path)
	}
	l, err := replog.Open(dir, nil)
	if err == nil {
		l.Close()
	}
	require.ErrorIs(t, err, replog.ErrCorrupt)
	t.Log(err)

	for path, b := range saved {
		require.NoError(t, os.WriteFile(path, b, 0o644))
	}
	start := time.Now()
	l, err = replog.Open(dir, nil)
	require.NoError(t, err, "Open after repair")
	t.Logf("Open with a %d MiB Raft log: %v", raftLogSize(t, dir)>>20, time.Since(start))
	defer l.Close()
	tp, err := l.Topic("events")
	require.NoError(t, err)
	n := int64(0)
	for part := range tp.Partitions() {
		o, err := tp.Offsets(testCtx(t), part)
		require.NoError(t, err)
		n += o.HighWatermark
	}
	require.Equal(t, int64(40), n)
}

func raftLogSize(t *testing.T, dir string) int64 {
	var n int64
	err := filepath.WalkDir(filepath.Join(dir, "raft"), func(path string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			info, err := d.Info()
			if err == nil {
				n += info.Size()
			}
		}
		return err
	})
	require.NoError(t, err)
	return n
}

// damage overwrites bytes in the middle of a file.
func damage(t *testing.T, path string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	require.NoError(t, err)
	defer f.Close()
	st, err := f.Stat()
	require.NoError(t, err)
	junk := []byte(strings.Repeat("\xde\xad\xbe\xef", 16))
	_, err = f.WriteAt(junk, st.Size()/2)
	require.NoError(t, err)
}
