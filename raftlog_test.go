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

// fillDir creates a durable log in dir with one topic and n records of
// size bytes, and closes it.
func fillDir(t *testing.T, dir string, n, size int) {
	t.Helper()
	ctx := testCtx(t)
	l, err := replog.Open(dir, nil)
	require.NoError(t, err)
	tp, err := l.CreateTopic(ctx, "events", replog.TopicConfig{Partitions: 2})
	require.NoError(t, err)
	p, err := replog.NewProducer(tp, replog.String(), nil)
	require.NoError(t, err)
	v := strings.Repeat("x", size)
	for i := range n {
		p.ProduceAsync(ctx, replog.Message[string]{Key: []byte{byte(i)}, Value: fmt.Sprint(i, v)}, nil)
	}
	require.NoError(t, p.Flush(ctx))
	require.NoError(t, l.Close())
}

// TestOpenCorruptRaftLog damages files of dragonboat's directory and
// expects Open to fail with ErrCorrupt rather than panic, and to leave
// nothing behind: no goroutine (TestMain checks), no lock (once the files
// are repaired, Open succeeds in this process and finds every record).
func TestOpenCorruptRaftLog(t *testing.T) {
	for _, c := range []struct {
		name string
		// n records of size bytes: the Raft log's Pebble writes tables
		// only past its 32 MiB memtable.
		n, size int
		suffix  string // the files damaged
	}{
		{"tables", 40, 1000 << 10, ".sst"},
		{"manifest", 20, 10, "MANIFEST-000001"},
		{"current", 20, 10, "CURRENT"},
		{"nodehost id", 20, 10, "NODEHOST.ID"},
		{"deployment", 20, 10, "dragonboat.ds"},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			fillDir(t, dir, c.n, c.size)
			saved := map[string][]byte{}
			err := filepath.WalkDir(filepath.Join(dir, "raft"), func(path string, d os.DirEntry, err error) error {
				if err == nil && !d.IsDir() && strings.HasSuffix(path, c.suffix) {
					b, err := os.ReadFile(path)
					require.NoError(t, err)
					saved[path] = b
					damage(t, path)
				}
				return err
			})
			require.NoError(t, err)
			require.NotEmpty(t, saved, "no %s file to damage: %v", c.suffix, lsR(dir))
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
			require.Equal(t, int64(c.n), n)
		})
	}
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
	_, err = f.WriteAt(junk[:min(len(junk), int(st.Size()/2))], st.Size()/2)
	require.NoError(t, err)
}
