package replog_test

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/replog/replog"
)

// TestDamagedStoreFile overwrites bytes in the record store's tables of a
// closed log and reads it again. The partition whose records were hit
// fails with ErrCorrupt naming the topic, partition and offset after the
// records before the damage; the other one still
// serves all its records; the process does not panic (it used to, from the
// consumer's read-ahead goroutine, through Pebble's Logger.Fatalf).
func TestDamagedStoreFile(t *testing.T) {
	ctx := testCtx(t)
	dir := t.TempDir()
	const perPartition = 64

	l, err := replog.Open(dir, nil)
	require.NoError(t, err)
	tp, err := l.CreateTopic(ctx, "events", replog.TopicConfig{Partitions: 2})
	require.NoError(t, err)
	p, err := replog.NewProducer(tp, replog.Bytes(), nil)
	require.NoError(t, err)
	rng := rand.New(rand.NewPCG(1, 2))
	for part := range 2 {
		for range perPartition {
			v := make([]byte, 8<<10) // incompressible, so tables are large
			for i := range v {
				v[i] = byte(rng.Uint32())
			}
			_, err := p.Produce(ctx, replog.Message[[]byte]{Value: v, Partition: &part})
			require.NoError(t, err)
		}
	}
	require.NoError(t, p.Close())
	require.NoError(t, l.Close())

	// One Pebble holds every partition of the node, keyed by shard: the
	// lower shard's records come first in the table, the indexes last. A
	// quarter into a table is the middle of the first partition's records.
	damageTables(t, dir, func(b []byte) { copy(b[len(b)/4:], bytes.Repeat([]byte{0xa5}, 64)) })

	l, err = replog.Open(dir, nil)
	require.NoError(t, err)
	defer l.Close()
	tp, err = l.Topic("events")
	require.NoError(t, err)
	c, err := replog.NewConsumer(tp, replog.Bytes(), nil)
	require.NoError(t, err)
	defer c.Close()

	read := map[int]int{}
	var corrupt error
	for corrupt == nil || max(read[0], read[1]) < perPartition {
		recs, err := c.Poll(ctx)
		for _, r := range recs {
			read[r.Partition]++
		}
		switch {
		case err == nil:
		case errors.Is(err, replog.ErrCorrupt):
			corrupt = err
		default:
			require.NoError(t, err, "read %v", read)
		}
	}
	damaged := 0
	if read[1] < read[0] {
		damaged = 1
	}
	require.Equal(t, perPartition, read[1-damaged], "the intact partition serves everything")
	// The records before the damage are handed out, then the error, at
	// the first offset not read.
	require.Positive(t, read[damaged])
	require.Less(t, read[damaged], perPartition)
	require.ErrorContains(t, corrupt, fmt.Sprintf("events/%d at offset %d", damaged, read[damaged]))

	// The error stays until the consumer moves past the damage.
	_, err = c.Poll(ctx)
	require.ErrorIs(t, err, replog.ErrCorrupt)
}

// TestDamagedStoreAtOpen damages the record store so badly that a
// partition's own state (its high watermark and producer states) no longer
// reads back. dragonboat halts the process when a state machine fails to
// open, so the replica must be taken out of service before it starts: Open
// succeeds, and its readers and writers get ErrCorrupt.
func TestDamagedStoreAtOpen(t *testing.T) {
	ctx := testCtx(t)
	dir := t.TempDir()
	l, err := replog.Open(dir, nil)
	require.NoError(t, err)
	tp, err := l.CreateTopic(ctx, "events", replog.TopicConfig{Partitions: 2})
	require.NoError(t, err)
	p, err := replog.NewProducer(tp, replog.String(), nil)
	require.NoError(t, err)
	for i := range 200 {
		part := i % 2
		_, err := p.Produce(ctx, replog.Message[string]{Value: fmt.Sprint("v", i), Partition: &part})
		require.NoError(t, err)
	}
	require.NoError(t, p.Close())
	require.NoError(t, l.Close())

	damageTables(t, dir, func(b []byte) {
		for i := len(b) / 20; i < len(b)*19/20; i++ {
			b[i] ^= 0x5a
		}
	})

	l, err = replog.Open(dir, nil)
	if err != nil {
		require.ErrorIs(t, err, replog.ErrCorrupt)
		return
	}
	defer l.Close()
	tp, err = l.Topic("events")
	require.NoError(t, err)
	c, err := replog.NewConsumer(tp, replog.String(), nil)
	require.NoError(t, err)
	defer c.Close()
	_, err = c.Poll(ctx)
	require.ErrorIs(t, err, replog.ErrCorrupt)

	p, err = replog.NewProducer(tp, replog.String(), nil)
	require.NoError(t, err)
	part := 0
	_, err = p.Produce(ctx, replog.Message[string]{Value: "after", Partition: &part})
	require.ErrorIs(t, err, replog.ErrCorrupt)
	require.NoError(t, p.Close())

	// The damaged partition can still be deleted with its topic (its keys
	// go without being read: TestDeleteDamagedPartition in storage). The
	// store's damaged tables remain until the node's data is wiped.
	require.NoError(t, c.Close())
	require.NoError(t, l.DeleteTopic(ctx, "events"))
	require.NoError(t, l.Close())
	l, err = replog.Open(dir, nil)
	require.NoError(t, err)
	require.Empty(t, l.Topics())
	require.NoError(t, l.Close())
}

// damageTables rewrites every table of the record store of the closed log
// in dir through damage.
func damageTables(t *testing.T, dir string, damage func([]byte)) {
	t.Helper()
	tables, err := filepath.Glob(filepath.Join(dir, "data", "*.sst"))
	require.NoError(t, err)
	require.NotEmpty(t, tables)
	for _, name := range tables {
		b, err := os.ReadFile(name)
		require.NoError(t, err)
		damage(b)
		require.NoError(t, os.WriteFile(name, b, 0o644))
	}
}
