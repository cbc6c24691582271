package replog_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/replog/replog"
	"github.com/replog/replog/internal/expert"
)

func TestTopicConfigRetentionSettings(t *testing.T) {
	ctx := testCtx(t)
	l := openMem(t)
	tp, err := l.CreateTopic(ctx, "plain", replog.TopicConfig{})
	require.NoError(t, err)
	info := tp.Info()
	require.Equal(t, time.Duration(0), info.Retention, "zero keeps forever")
	require.Equal(t, int64(0), info.RetentionBytes)
	require.Equal(t, replog.CleanupDelete, info.Cleanup)
	require.Equal(t, replog.DefaultDeleteRetention, info.DeleteRetention)

	cfg := replog.TopicConfig{
		Retention: time.Hour, RetentionBytes: 1 << 20,
		Cleanup: replog.CleanupCompact | replog.CleanupDelete, DeleteRetention: time.Minute,
	}
	tp, err = l.CreateTopic(ctx, "set", cfg)
	require.NoError(t, err)
	info = tp.Info()
	require.Equal(t, time.Hour, info.Retention)
	require.Equal(t, int64(1<<20), info.RetentionBytes)
	require.Equal(t, replog.CleanupCompact|replog.CleanupDelete, info.Cleanup)
	require.Equal(t, "compact,delete", info.Cleanup.String())
	require.Equal(t, time.Minute, info.DeleteRetention)
	require.Equal(t, info, l.Topics()[1])
}

func TestTopicConfigInvalid(t *testing.T) {
	ctx := testCtx(t)
	l := openMem(t)
	_, err := l.CreateTopic(ctx, "ok", replog.TopicConfig{Partitions: 2})
	require.NoError(t, err)
	for name, cfg := range map[string]replog.TopicConfig{
		"negative retention":           {Retention: -time.Second},
		"negative retention bytes":     {RetentionBytes: -1},
		"negative delete retention":    {DeleteRetention: -time.Second},
		"unknown cleanup bit":          {Cleanup: 4},
		"negative max message bytes":   {MaxMessageBytes: -1},
		"max message bytes over 2 GiB": {MaxMessageBytes: 1 << 31},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := l.CreateTopic(ctx, "bad", cfg)
			require.ErrorIs(t, err, replog.ErrInvalidConfig)
			_, err = l.EnsureTopic(ctx, "bad", cfg)
			require.ErrorIs(t, err, replog.ErrInvalidConfig)
			require.ErrorIs(t, l.AlterTopic(ctx, "ok", cfg), replog.ErrInvalidConfig)
			_, err = l.Topic("bad")
			require.ErrorIs(t, err, replog.ErrTopicNotFound, "nothing created")
		})
	}
	tp, err := l.Topic("ok")
	require.NoError(t, err)
	require.Equal(t, replog.TopicInfo{}.Retention, tp.Info().Retention, "nothing altered")
}

func TestEnsureTopic(t *testing.T) {
	ctx := testCtx(t)
	l := openMem(t)
	tp, err := l.EnsureTopic(ctx, "events", replog.TopicConfig{Partitions: 3, Retention: time.Hour})
	require.NoError(t, err)
	require.Equal(t, 3, tp.Partitions())
	require.Equal(t, time.Hour, tp.Info().Retention)

	// Existing: returned as it is, a differing config is no error.
	again, err := l.EnsureTopic(ctx, "events", replog.TopicConfig{Partitions: 5})
	require.NoError(t, err)
	require.Equal(t, 3, again.Partitions())
	require.Equal(t, tp.Info(), again.Info())
}

func TestAlterTopic(t *testing.T) {
	ctx := testCtx(t)
	l := openMem(t)
	tp, err := l.CreateTopic(ctx, "events", replog.TopicConfig{Partitions: 2})
	require.NoError(t, err)

	require.NoError(t, l.AlterTopic(ctx, "events", replog.TopicConfig{
		Retention: time.Minute, RetentionBytes: 4096, Compression: replog.CompressionZstd,
	}))
	info := tp.Info() // an older handle sees the new settings
	require.Equal(t, time.Minute, info.Retention)
	require.Equal(t, int64(4096), info.RetentionBytes)
	require.Equal(t, replog.CompressionZstd, info.Compression)
	require.Equal(t, 2, info.Partitions, "0 keeps the count")

	// Growing: the new partitions take records.
	require.NoError(t, l.AlterTopic(ctx, "events", replog.TopicConfig{Partitions: 4, Retention: time.Minute}))
	grown, err := l.Topic("events")
	require.NoError(t, err)
	require.Equal(t, 4, grown.Partitions())
	require.Equal(t, time.Duration(0), time.Duration(grown.Info().RetentionBytes), "settings replaced as a whole")
	p, err := replog.NewProducer(grown, replog.String(), nil)
	require.NoError(t, err)
	defer p.Close()
	three := 3
	pos, err := p.Produce(ctx, replog.Message[string]{Partition: &three, Value: "x"})
	require.NoError(t, err)
	require.Equal(t, 3, pos.Partition)

	// Shrinking and unknown topics fail, changing nothing.
	err = l.AlterTopic(ctx, "events", replog.TopicConfig{Partitions: 3})
	require.ErrorIs(t, err, replog.ErrInvalidConfig)
	require.ErrorIs(t, l.AlterTopic(ctx, "nope", replog.TopicConfig{}), replog.ErrTopicNotFound)
	grown, err = l.Topic("events")
	require.NoError(t, err)
	require.Equal(t, 4, grown.Partitions())
	require.Equal(t, time.Minute, grown.Info().Retention)
}

// produceTo produces n records "v0".."v{n-1}" to partition part, one
// batch each (Produce waits for each).
func produceTo(t *testing.T, tp *replog.Topic, part, n int) {
	t.Helper()
	ctx := testCtx(t)
	p, err := replog.NewProducer(tp, replog.String(), nil)
	require.NoError(t, err)
	defer p.Close()
	for i := range n {
		_, err := p.Produce(ctx, replog.Message[string]{Partition: &part, Value: fmt.Sprintf("v%d", i)})
		require.NoError(t, err)
	}
}

func TestDeleteRecords(t *testing.T) {
	ctx := testCtx(t)
	l := openMem(t)
	tp, err := l.CreateTopic(ctx, "events", replog.TopicConfig{Partitions: 2})
	require.NoError(t, err)
	produceTo(t, tp, 0, 10)
	produceTo(t, tp, 1, 4)

	// Bad input changes nothing, on any partition.
	var oor *replog.OffsetOutOfRangeError
	err = l.DeleteRecords(ctx, "events", map[int]int64{0: 5, 1: 5})
	require.ErrorAs(t, err, &oor)
	require.Equal(t, replog.OffsetOutOfRangeError{Topic: "events", Partition: 1, Offset: 5, Earliest: 0, Latest: 4}, *oor)
	require.ErrorAs(t, l.DeleteRecords(ctx, "events", map[int]int64{0: -2}), &oor)
	require.ErrorIs(t, l.DeleteRecords(ctx, "events", map[int]int64{0: 5, 2: 0}), replog.ErrPartitionNotFound)
	require.ErrorIs(t, l.DeleteRecords(ctx, "nope", map[int]int64{0: 0}), replog.ErrTopicNotFound)
	for i := range 2 {
		require.Equal(t, int64(0), mustOffsets(t, tp, i).LogStart)
	}

	require.NoError(t, l.DeleteRecords(ctx, "events", map[int]int64{0: 7, 1: -1}))
	require.Equal(t, replog.PartitionOffsets{LogStart: 7, HighWatermark: 10, LastStable: 10}, mustOffsets(t, tp, 0))
	require.Equal(t, replog.PartitionOffsets{LogStart: 4, HighWatermark: 4, LastStable: 4}, mustOffsets(t, tp, 1))
	// Below the log start: nothing changes, no error.
	require.NoError(t, l.DeleteRecords(ctx, "events", map[int]int64{0: 3}))
	require.Equal(t, int64(7), mustOffsets(t, tp, 0).LogStart)

	// An Earliest consumer starts at the log start.
	c, err := replog.NewConsumer(tp, replog.String(), &replog.ConsumerOptions{Partitions: []int{0}})
	require.NoError(t, err)
	defer c.Close()
	var got []string
	for rec, err := range c.Records(ctx) {
		require.NoError(t, err)
		got = append(got, fmt.Sprintf("%d:%s", rec.Offset, rec.Value))
		if len(got) == 3 {
			break
		}
	}
	require.Equal(t, []string{"7:v7", "8:v8", "9:v9"}, got)
	// Seeking below it is out of range.
	require.ErrorAs(t, c.Seek(0, 6), &oor)
	require.Equal(t, int64(7), oor.Earliest)
}

func TestDeleteRecordsUnderAConsumer(t *testing.T) {
	ctx := testCtx(t)
	l := openMem(t)
	tp, err := l.CreateTopic(ctx, "events", replog.TopicConfig{})
	require.NoError(t, err)
	produceTo(t, tp, 0, 5)
	// Reading ahead one batch at most, so that the deletion overtakes it.
	c, err := replog.NewConsumer(tp, replog.String(), &replog.ConsumerOptions{MaxPollRecords: 1, FetchBytes: 1, ReadAheadBytes: 1})
	require.NoError(t, err)
	defer c.Close()
	recs, err := c.Poll(ctx)
	require.NoError(t, err)
	require.Equal(t, int64(0), recs[0].Offset)
	require.NoError(t, l.DeleteRecords(ctx, "events", map[int]int64{0: 5}))
	produceTo(t, tp, 0, 1)
	// The consumer's fetch position fell below the log start: it is
	// told, once it has handed out what it had read already.
	var oor *replog.OffsetOutOfRangeError
	require.Eventually(t, func() bool {
		_, err := c.Poll(ctx)
		return errors.As(err, &oor)
	}, 10*time.Second, time.Millisecond)
	require.Equal(t, int64(5), oor.Earliest)
}

func TestGroupMemberBelowLogStartResumesThere(t *testing.T) {
	ctx := testCtx(t)
	l := openMem(t)
	tp, err := l.CreateTopic(ctx, "events", replog.TopicConfig{})
	require.NoError(t, err)
	produceTo(t, tp, 0, 5)
	opts := &replog.ConsumerOptions{Group: "g"}
	c, err := replog.NewConsumer(tp, replog.String(), opts)
	require.NoError(t, err)
	recs, err := c.Poll(ctx)
	require.NoError(t, err)
	require.NotEmpty(t, recs)
	require.NoError(t, c.CommitOffsets(ctx, map[int]int64{0: 2}))
	require.NoError(t, c.Close())

	require.NoError(t, l.DeleteRecords(ctx, "events", map[int]int64{0: 4}))
	c, err = replog.NewConsumer(tp, replog.String(), opts)
	require.NoError(t, err)
	defer c.Close()
	recs, err = c.Poll(ctx)
	require.NoError(t, err)
	require.Equal(t, int64(4), recs[0].Offset, "committed 2, resumed at the log start")
}

func mustOffsets(t *testing.T, tp *replog.Topic, part int) replog.PartitionOffsets {
	t.Helper()
	o, err := tp.Offsets(testCtx(t), part)
	require.NoError(t, err)
	return o
}

// openRetaining opens an in-memory node that checks retention every 50ms.
func openRetaining(t *testing.T) *replog.Log {
	t.Helper()
	var o replog.Options
	o.InMemory = true
	expert.Attach(&o, expert.Options{RetentionInterval: 50 * time.Millisecond})
	l, err := replog.Open("", &o)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, l.Close()) })
	return l
}

func TestRetentionByTime(t *testing.T) {
	ctx := testCtx(t)
	l := openRetaining(t)
	tp, err := l.CreateTopic(ctx, "events", replog.TopicConfig{Retention: time.Hour})
	require.NoError(t, err)
	p, err := replog.NewProducer(tp, replog.String(), nil)
	require.NoError(t, err)
	defer p.Close()
	now := time.Now()
	for i, at := range []time.Time{now.Add(-3 * time.Hour), now.Add(-2 * time.Hour), now.Add(-time.Minute), now.Add(-3 * time.Hour)} {
		_, err := p.Produce(ctx, replog.Message[string]{Value: fmt.Sprint(i), Time: at})
		require.NoError(t, err)
	}
	// The two old batches go; the third is recent, so the fourth (old
	// but behind it) stays, as Kafka stops at the first segment it keeps.
	require.Eventually(t, func() bool { return mustOffsets(t, tp, 0).LogStart == 2 }, 10*time.Second, 10*time.Millisecond)
	time.Sleep(200 * time.Millisecond) // a few more checks
	require.Equal(t, replog.PartitionOffsets{LogStart: 2, HighWatermark: 4, LastStable: 4}, mustOffsets(t, tp, 0))

	// Lowering the limit on the live topic: all but the newest batch go.
	require.NoError(t, l.AlterTopic(ctx, "events", replog.TopicConfig{Retention: time.Second}))
	require.Eventually(t, func() bool { return mustOffsets(t, tp, 0).LogStart == 3 }, 10*time.Second, 10*time.Millisecond)
	c, err := replog.NewConsumer(tp, replog.String(), nil)
	require.NoError(t, err)
	defer c.Close()
	recs, err := c.Poll(ctx)
	require.NoError(t, err)
	require.Equal(t, int64(3), recs[0].Offset, "an Earliest consumer starts at the log start")
}

func TestRetentionBySize(t *testing.T) {
	ctx := testCtx(t)
	l := openRetaining(t)
	tp, err := l.CreateTopic(ctx, "events", replog.TopicConfig{RetentionBytes: 2000})
	require.NoError(t, err)
	p, err := replog.NewProducer(tp, replog.Bytes(), nil)
	require.NoError(t, err)
	defer p.Close()
	for range 20 {
		_, err := p.Produce(ctx, replog.Message[[]byte]{Value: make([]byte, 200)})
		require.NoError(t, err)
	}
	// Batches of one 200-byte value and under 200 bytes of framing: at
	// most 2000 bytes stay, so 5 to 10 of them.
	require.Eventually(t, func() bool { return mustOffsets(t, tp, 0).LogStart > 0 }, 10*time.Second, 10*time.Millisecond)
	time.Sleep(200 * time.Millisecond) // a few more checks
	o := mustOffsets(t, tp, 0)
	require.Equal(t, int64(20), o.HighWatermark)
	require.GreaterOrEqual(t, o.LogStart, int64(10))
	require.LessOrEqual(t, o.LogStart, int64(15))

	// A compact-only topic keeps everything (compaction is not performed).
	require.NoError(t, l.AlterTopic(ctx, "events", replog.TopicConfig{RetentionBytes: 1, Cleanup: replog.CleanupCompact}))
	before := mustOffsets(t, tp, 0)
	time.Sleep(300 * time.Millisecond)
	require.Equal(t, before, mustOffsets(t, tp, 0))
}

// A batch straddling the new log start stays stored, but its records below
// the log start are never read, by position or by time.
func TestDeleteRecordsInsideABatch(t *testing.T) {
	ctx := testCtx(t)
	l := openMem(t)
	tp, err := l.CreateTopic(ctx, "t", replog.TopicConfig{})
	require.NoError(t, err)
	p, err := replog.NewProducer(tp, replog.String(), &replog.ProducerOptions{Linger: 200 * time.Millisecond})
	require.NoError(t, err)
	defer p.Close()
	for i := range 4 {
		p.ProduceAsync(ctx, replog.Message[string]{Value: fmt.Sprint(i)}, func(_ replog.Position, err error) { require.NoError(t, err) })
	}
	require.NoError(t, p.Flush(ctx)) // one batch: offsets 0 to 3
	require.NoError(t, l.DeleteRecords(ctx, "t", map[int]int64{0: 2}))
	require.Equal(t, replog.PartitionOffsets{LogStart: 2, HighWatermark: 4, LastStable: 4}, mustOffsets(t, tp, 0))

	c, err := replog.NewConsumer(tp, replog.String(), nil)
	require.NoError(t, err)
	defer c.Close()
	recs, err := c.Poll(ctx)
	require.NoError(t, err)
	require.Len(t, recs, 2)
	require.Equal(t, int64(2), recs[0].Offset)
	require.NoError(t, c.SeekTime(ctx, time.Unix(0, 0)))
	pos, err := c.Position(0)
	require.NoError(t, err)
	require.Equal(t, int64(2), pos, "not below the log start")
}

// With the default check interval, an eligible batch goes within 30s (in
// practice within one 5s interval).
func TestRetentionDefaultInterval(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for the 5s retention check")
	}
	ctx := testCtx(t)
	l := openMem(t)
	tp, err := l.CreateTopic(ctx, "t", replog.TopicConfig{Retention: time.Minute})
	require.NoError(t, err)
	p, err := replog.NewProducer(tp, replog.String(), nil)
	require.NoError(t, err)
	defer p.Close()
	for _, age := range []time.Duration{time.Hour, 0} {
		_, err := p.Produce(ctx, replog.Message[string]{Value: "x", Time: time.Now().Add(-age)})
		require.NoError(t, err)
	}
	start := time.Now()
	require.Eventually(t, func() bool { return mustOffsets(t, tp, 0).LogStart == 1 }, 30*time.Second, 50*time.Millisecond)
	t.Logf("the expired batch went after %v", time.Since(start).Round(time.Millisecond))
}
