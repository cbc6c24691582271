package replog_test

import (
	"context"
	"fmt"
	"io/fs"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/replog/replog"
)

// diskUsage is what du reports for dir: the blocks allocated to its files,
// which counts space preallocated past their end.
func diskUsage(t *testing.T, dir string) int64 {
	t.Helper()
	var total int64
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		if st, ok := info.Sys().(*syscall.Stat_t); ok {
			total += st.Blocks * 512
		} else {
			total += info.Size()
		}
		return nil
	})
	require.NoError(t, err)
	return total
}

// A small log is small on disk: a durable node with a 4-partition topic
// holding 10,000 small records takes under 16 MiB once closed. The Raft
// log's write-ahead log files used to be preallocated to 36 MB each and
// kept so, three or four of them.
func TestSmallLogIsSmallOnDisk(t *testing.T) {
	dir := t.TempDir()
	l, err := replog.Open(dir, nil)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	tp, err := l.CreateTopic(ctx, "t", replog.TopicConfig{Partitions: 4})
	require.NoError(t, err)
	p, err := replog.NewProducer(tp, replog.String(), nil)
	require.NoError(t, err)
	// In rounds of 20, so that the Raft log takes hundreds of entries and
	// its memtables (and write-ahead log files) rotate as they would.
	for i := range 10_000 {
		p.ProduceAsync(ctx, replog.Message[string]{Key: []byte(fmt.Sprint(i % 97)), Value: fmt.Sprintf("record %d", i)}, func(_ replog.Position, err error) {
			if err != nil {
				t.Error(err)
			}
		})
		if i%20 == 19 {
			require.NoError(t, p.Flush(ctx))
		}
	}
	require.NoError(t, p.Close())
	open := diskUsage(t, dir)
	require.NoError(t, l.Close())
	closed := diskUsage(t, dir)
	t.Logf("disk usage: %.1f MiB open, %.1f MiB closed", float64(open)/(1<<20), float64(closed)/(1<<20))
	require.Less(t, closed, int64(16<<20), "a closed log of 10,000 small records takes %.1f MiB", float64(closed)/(1<<20))

	// It reopens with every record.
	l, err = replog.Open(dir, nil)
	require.NoError(t, err)
	defer l.Close()
	tp, err = l.Topic("t")
	require.NoError(t, err)
	n := int64(0)
	for i := range 4 {
		o, err := tp.Offsets(ctx, i)
		require.NoError(t, err)
		n += o.HighWatermark - o.LogStart
	}
	require.EqualValues(t, 10_000, n)
}
