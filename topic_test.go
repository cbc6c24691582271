package replog_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/replog/replog"
	"github.com/replog/replog/storage"
)

// batchSize is the encoded size of a batch holding one record of value v,
// as a producer would build it.
func batchSize(t *testing.T, v []byte, c storage.Compression) int {
	t.Helper()
	var b storage.BatchBuilder
	b.Add(storage.Record{Value: v, Time: 1})
	enc, err := b.Build(c, 1, 0, 0)
	require.NoError(t, err)
	return len(enc)
}

func TestTopicMaxMessageBytes(t *testing.T) {
	ctx := testCtx(t)
	l := openMem(t)

	tp, err := l.CreateTopic(ctx, "default", replog.TopicConfig{})
	require.NoError(t, err)
	require.Equal(t, replog.DefaultMaxMessageBytes, tp.Info().MaxMessageBytes)
	require.Equal(t, 1048588, replog.DefaultMaxMessageBytes, "Kafka's default")

	// The limit is set to exactly one uncompressed batch of an
	// incompressible record, so that compressing it would not fit.
	random := make([]byte, 3000)
	_, _ = rand.Read(random)
	limit := batchSize(t, random, storage.CompressionNone)
	require.Greater(t, batchSize(t, random, storage.CompressionZstd), limit, "zstd grows random bytes")

	tp, err = l.CreateTopic(ctx, "small", replog.TopicConfig{MaxMessageBytes: limit})
	require.NoError(t, err)
	require.Equal(t, limit, tp.Info().MaxMessageBytes)

	for _, c := range []replog.Compression{replog.CompressionNone, replog.CompressionZstd} {
		t.Run(c.String(), func(t *testing.T) {
			p, err := replog.NewProducer(tp, replog.Bytes(), &replog.ProducerOptions{Compression: &c})
			require.NoError(t, err)
			defer p.Close()

			_, err = p.Produce(ctx, replog.Message[[]byte]{Value: append(random, 'x')})
			require.ErrorIs(t, err, replog.ErrRecordTooLarge, "one byte over the limit")
			_, err = p.Produce(ctx, replog.Message[[]byte]{Value: random})
			require.NoError(t, err, "a batch that compression would grow past the limit goes uncompressed")

			// Records that fit one by one are batched under the
			// limit, not refused together.
			produceAll(ctx, t, p, 40, func(int) []byte { return make([]byte, 500) })
		})
	}

	// A record far over the limit uncompressed fits compressed: the limit
	// is on the batch as encoded, as Kafka's max.message.bytes.
	zstd := replog.CompressionZstd
	p, err := replog.NewProducer(tp, replog.Bytes(), &replog.ProducerOptions{Compression: &zstd})
	require.NoError(t, err)
	defer p.Close()
	_, err = p.Produce(ctx, replog.Message[[]byte]{Value: bytes.Repeat([]byte("x"), 10*limit)})
	require.NoError(t, err)

	// AlterTopic changes it for producers already running; zero is the
	// default again.
	require.NoError(t, l.AlterTopic(ctx, "small", replog.TopicConfig{MaxMessageBytes: 100}))
	require.Equal(t, 100, tp.Info().MaxMessageBytes)
	_, err = p.Produce(ctx, replog.Message[[]byte]{Value: random})
	require.ErrorIs(t, err, replog.ErrRecordTooLarge)
	require.NoError(t, l.AlterTopic(ctx, "small", replog.TopicConfig{}))
	require.Equal(t, replog.DefaultMaxMessageBytes, tp.Info().MaxMessageBytes)
	_, err = p.Produce(ctx, replog.Message[[]byte]{Value: random})
	require.NoError(t, err)
}

// produceAll produces n records at once and waits for every one.
func produceAll(ctx context.Context, t *testing.T, p *replog.Producer[[]byte], n int, value func(int) []byte) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		p.ProduceAsync(ctx, replog.Message[[]byte]{Value: value(i)}, func(_ replog.Position, err error) {
			errs[i] = err
			wg.Done()
		})
	}
	wg.Wait()
	for i, err := range errs {
		require.NoError(t, err, "record %d", i)
	}
}
