package replog_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/replog/replog"
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
		"negative retention":        {Retention: -time.Second},
		"negative retention bytes":  {RetentionBytes: -1},
		"negative delete retention": {DeleteRetention: -time.Second},
		"unknown cleanup bit":       {Cleanup: 4},
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
