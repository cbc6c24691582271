package replog_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/replog/replog"
)

// TestShareGroupConfig: a group's config is set and read back, bad values
// are refused with ErrInvalidConfig, and deleting the group deletes it.
func TestShareGroupConfig(t *testing.T) {
	ctx := testCtx(t)
	l := openMem(t)

	cfg, err := l.ShareGroupConfig(ctx, "workers")
	require.NoError(t, err)
	require.Equal(t, replog.ShareGroupConfig{}, cfg)

	want := replog.ShareGroupConfig{AutoOffsetReset: replog.ShareOffsetEarliest, LockDuration: 15 * time.Second,
		DeliveryCountLimit: 3, SessionTimeout: 20 * time.Second, HeartbeatInterval: time.Second,
		IsolationLevel: replog.ShareReadUncommitted}
	require.NoError(t, l.SetShareGroupConfig(ctx, "workers", want))
	cfg, err = l.ShareGroupConfig(ctx, "workers")
	require.NoError(t, err)
	require.Equal(t, want, cfg)

	for name, bad := range map[string]replog.ShareGroupConfig{
		"reset":      {AutoOffsetReset: "by_duration:PT1H"},
		"lock":       {LockDuration: time.Millisecond},
		"deliveries": {DeliveryCountLimit: 1},
		"isolation":  {IsolationLevel: "serializable"},
		"heartbeat":  {HeartbeatInterval: time.Minute},
	} {
		require.ErrorIs(t, l.SetShareGroupConfig(ctx, "workers", bad), replog.ErrInvalidConfig, name)
	}
	require.ErrorIs(t, l.SetShareGroupConfig(ctx, "", want), replog.ErrInvalidConfig)
	_, err = l.ShareGroupConfig(ctx, "")
	require.ErrorIs(t, err, replog.ErrInvalidConfig)
	cfg, err = l.ShareGroupConfig(ctx, "workers")
	require.NoError(t, err)
	require.Equal(t, want, cfg, "unchanged by refused sets")

	require.NoError(t, l.DeleteShareGroup(ctx, "workers"))
	cfg, err = l.ShareGroupConfig(ctx, "workers")
	require.NoError(t, err)
	require.Equal(t, replog.ShareGroupConfig{}, cfg)
	require.ErrorIs(t, l.DeleteShareGroup(ctx, "workers"), replog.ErrGroupNotFound)

	require.NoError(t, l.Close())
	_, err = l.ShareGroupConfig(ctx, "workers")
	require.ErrorIs(t, err, replog.ErrClosed)
	require.ErrorIs(t, l.SetShareGroupConfig(ctx, "workers", want), replog.ErrClosed)
}

// TestShareConsumerGroupConfig: a ShareConsumer whose options leave the
// lock duration and delivery limit zero takes the group's; options that
// set them win.
func TestShareConsumerGroupConfig(t *testing.T) {
	ctx := testCtx(t)
	l := openMem(t)
	tp, err := l.CreateTopic(ctx, "jobs", replog.TopicConfig{Partitions: 1})
	require.NoError(t, err)
	produceStrings(t, ctx, tp, 4, "job")
	require.NoError(t, l.SetShareGroupConfig(ctx, "workers", replog.ShareGroupConfig{
		LockDuration: 10 * time.Minute, DeliveryCountLimit: 2}))

	c := newShare(t, tp, "workers", &replog.ShareConsumerOptions{MaxRecords: 1, PollInterval: 10 * time.Millisecond})
	before := time.Now()
	recs, err := c.Poll(ctx)
	require.NoError(t, err)
	require.Len(t, recs, 1)
	lock := recs[0].Deadline().Sub(before)
	require.Greater(t, lock, 9*time.Minute)
	require.LessOrEqual(t, lock, 10*time.Minute+time.Minute)
	// The delivery limit is 2: after two releases the record is given up
	// on (rejected, with no dead-letter topic), and the next one comes.
	require.NoError(t, recs[0].Release(ctx, 0))
	recs, err = c.Poll(ctx)
	require.NoError(t, err)
	require.Equal(t, 2, recs[0].Deliveries)
	require.NoError(t, recs[0].Release(ctx, 0))
	recs, err = c.Poll(ctx)
	require.NoError(t, err)
	require.Equal(t, "job-0001", recs[0].Value)

	own := newShare(t, tp, "workers", &replog.ShareConsumerOptions{MaxRecords: 1, LockDuration: time.Minute})
	before = time.Now()
	recs, err = own.Poll(ctx)
	require.NoError(t, err)
	require.Less(t, recs[0].Deadline().Sub(before), 2*time.Minute)
}

// TestShareConsumerGroupIsolation: a ShareConsumer whose options leave
// Isolation zero reads committed when the group's config says so.
func TestShareConsumerGroupIsolation(t *testing.T) {
	ctx := testCtx(t)
	l, topics := openTxnLog(t, ctx, map[string]int{"jobs": 1})
	tp := topics["jobs"]
	s, err := l.NewTransactionalProducer(ctx, "share-cfg", nil)
	require.NoError(t, err)
	defer s.Close()
	p := joined(t, tp, s)
	require.NoError(t, s.Begin())
	_, err = p.Produce(ctx, replog.Message[string]{Value: "open"})
	require.NoError(t, err)

	require.NoError(t, l.SetShareGroupConfig(ctx, "rc", replog.ShareGroupConfig{IsolationLevel: replog.ShareReadCommitted}))
	rc := newShare(t, tp, "rc", nil)
	require.Empty(t, pollWithin(t, rc, 300*time.Millisecond), "the open transaction is not read")
	ru := newShare(t, tp, "ru", nil)
	require.Len(t, pollWithin(t, ru, 5*time.Second), 1)
	require.NoError(t, s.Commit(ctx))
	recs := pollWithin(t, rc, 5*time.Second)
	require.Len(t, recs, 1)
	require.Equal(t, "open", recs[0].Value)
}

// TestShareConsumerGroupLatest: a group whose config says latest starts,
// for a Go member too, at the high watermark of its first poll: what was
// there is never delivered, what comes after is.
func TestShareConsumerGroupLatest(t *testing.T) {
	ctx := testCtx(t)
	l := openMem(t)
	tp, err := l.CreateTopic(ctx, "jobs", replog.TopicConfig{Partitions: 1})
	require.NoError(t, err)
	produceStrings(t, ctx, tp, 4, "old")
	require.NoError(t, l.SetShareGroupConfig(ctx, "late", replog.ShareGroupConfig{AutoOffsetReset: replog.ShareOffsetLatest}))
	c := newShare(t, tp, "late", &replog.ShareConsumerOptions{PollInterval: 10 * time.Millisecond})
	require.Empty(t, pollWithin(t, c, 300*time.Millisecond))
	produceStrings(t, ctx, tp, 2, "new")
	recs := pollWithin(t, c, 5*time.Second)
	require.Len(t, recs, 2)
	require.Equal(t, "new-0000", recs[0].Value)

	// Without the setting, a Go member starts at the log start.
	recs = pollWithin(t, newShare(t, tp, "early", nil), 5*time.Second)
	require.Len(t, recs, 6)
}
