package replog_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/replog/replog"
)

func produceN(t *testing.T, p *replog.Producer[string], ctx context.Context, n int, at func(i int) time.Time) []replog.Position {
	t.Helper()
	var out []replog.Position
	for i := range n {
		m := replog.Message[string]{Value: fmt.Sprint(i)}
		if at != nil {
			m.Time = at(i)
		}
		pos, err := p.Produce(ctx, m)
		require.NoError(t, err)
		out = append(out, pos)
	}
	return out
}

func TestSeekAndOutOfRange(t *testing.T) {
	ctx := testCtx(t)
	l := openMem(t)
	tp, err := l.CreateTopic(ctx, "t", replog.TopicConfig{})
	require.NoError(t, err)
	p, err := replog.NewProducer(tp, replog.String(), nil)
	require.NoError(t, err)
	produceN(t, p, ctx, 10, nil)

	c, err := replog.NewConsumer(tp, replog.String(), nil)
	require.NoError(t, err)
	require.NoError(t, c.Seek(0, 7))
	recs, err := c.Poll(ctx)
	require.NoError(t, err)
	require.Equal(t, []string{"7", "8", "9"}, values(recs))
	require.Equal(t, map[int]int64{0: 0}, c.Lag())

	var oor *replog.OffsetOutOfRangeError
	require.True(t, errors.As(c.Seek(0, 11), &oor))
	require.Equal(t, replog.OffsetOutOfRangeError{Topic: "t", Partition: 0, Offset: 11, Earliest: 0, Latest: 10}, *oor)
	require.True(t, errors.As(c.Seek(0, -1), &oor))
	require.ErrorIs(t, c.Seek(3, 0), replog.ErrPartitionNotFound)

	require.NoError(t, c.Seek(0, 2))
	require.Equal(t, map[int]int64{0: 8}, c.Lag())
	pos, err := c.Position(0)
	require.NoError(t, err)
	require.Equal(t, int64(2), pos)
}

func TestSeekTime(t *testing.T) {
	ctx := testCtx(t)
	l := openMem(t)
	tp, err := l.CreateTopic(ctx, "t", replog.TopicConfig{Partitions: 2})
	require.NoError(t, err)
	p, err := replog.NewProducer(tp, replog.String(), nil)
	require.NoError(t, err)
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := range 20 {
		// Keyless records stick to a partition per batch; the time index
		// must find the right record in either partition.
		_, err := p.Produce(ctx, replog.Message[string]{Key: []byte{byte(i % 2)}, Value: fmt.Sprint(i), Time: base.Add(time.Duration(i) * time.Second)})
		require.NoError(t, err)
	}
	c, err := replog.NewConsumer(tp, replog.String(), nil)
	require.NoError(t, err)
	require.NoError(t, c.SeekTime(ctx, base.Add(15*time.Second+time.Millisecond)))
	got := map[string]bool{}
	for rec, err := range c.Records(ctx) {
		require.NoError(t, err)
		require.False(t, rec.Time.Before(base.Add(15*time.Second)), "record %s at %v", rec.Value, rec.Time)
		got[rec.Value] = true
		if len(got) == 4 {
			break
		}
	}
	require.Equal(t, map[string]bool{"16": true, "17": true, "18": true, "19": true}, got)

	// After the last record: nothing until something new arrives.
	require.NoError(t, c.SeekTime(ctx, base.Add(time.Hour)))
	require.Equal(t, map[int]int64{0: 0, 1: 0}, c.Lag())
}

func values(recs []replog.Record[string]) []string {
	var out []string
	for _, r := range recs {
		out = append(out, r.Value)
	}
	return out
}

// Records of one key keep their produce order, also when produced
// asynchronously from many goroutines' own keys at once.
func TestKeyedOrderPerPartition(t *testing.T) {
	ctx := testCtx(t)
	l := openMem(t)
	tp, err := l.CreateTopic(ctx, "t", replog.TopicConfig{Partitions: 3})
	require.NoError(t, err)
	p, err := replog.NewProducer(tp, replog.String(), &replog.ProducerOptions{Linger: time.Millisecond})
	require.NoError(t, err)
	const keys, per = 8, 300
	var wg sync.WaitGroup
	var mu sync.Mutex
	var failures []error
	for k := range keys {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range per {
				p.ProduceAsync(ctx, replog.Message[string]{Key: fmt.Appendf(nil, "k%d", k), Value: fmt.Sprintf("%d-%05d", k, i)},
					func(_ replog.Position, err error) {
						if err != nil {
							mu.Lock()
							failures = append(failures, err)
							mu.Unlock()
						}
					})
			}
		}()
	}
	wg.Wait()
	require.NoError(t, p.Flush(ctx))
	require.Empty(t, failures)

	c, err := replog.NewConsumer(tp, replog.String(), nil)
	require.NoError(t, err)
	last := map[string]string{}
	partOf := map[string]int{}
	n := 0
	for rec, err := range c.Records(ctx) {
		require.NoError(t, err)
		k := string(rec.Key)
		if p, ok := partOf[k]; ok {
			require.Equal(t, p, rec.Partition, "key %s moved partition", k)
		}
		partOf[k] = rec.Partition
		require.Less(t, last[k], rec.Value, "key %s out of order", k)
		last[k] = rec.Value
		if n++; n == keys*per {
			break
		}
	}
}

func TestEveryCompressionRoundTrips(t *testing.T) {
	for _, comp := range []replog.Compression{replog.CompressionNone, replog.CompressionGzip, replog.CompressionSnappy, replog.CompressionLZ4, replog.CompressionZstd} {
		t.Run(comp.String(), func(t *testing.T) {
			ctx := testCtx(t)
			l := openMem(t)
			tp, err := l.CreateTopic(ctx, "t", replog.TopicConfig{Compression: comp})
			require.NoError(t, err)
			p, err := replog.NewProducer(tp, replog.Bytes(), nil)
			require.NoError(t, err)
			want := [][]byte{[]byte("a"), {}, make([]byte, 100_000), []byte("zzzz")}
			for _, v := range want {
				p.ProduceAsync(ctx, replog.Message[[]byte]{Value: v}, nil)
			}
			require.NoError(t, p.Flush(ctx))
			c, err := replog.NewConsumer(tp, replog.Bytes(), nil)
			require.NoError(t, err)
			var got [][]byte
			for rec, err := range c.Records(ctx) {
				require.NoError(t, err)
				got = append(got, rec.Value)
				if len(got) == len(want) {
					break
				}
			}
			require.Equal(t, want, got)
		})
	}
}

func TestProducerOverridesTopicCompression(t *testing.T) {
	ctx := testCtx(t)
	l := openMem(t)
	tp, err := l.CreateTopic(ctx, "t", replog.TopicConfig{Compression: replog.CompressionZstd})
	require.NoError(t, err)
	none := replog.CompressionLZ4
	p, err := replog.NewProducer(tp, replog.String(), &replog.ProducerOptions{Compression: &none})
	require.NoError(t, err)
	_, err = p.Produce(ctx, replog.Message[string]{Value: "x"})
	require.NoError(t, err)
	bad := replog.Compression(42)
	_, err = replog.NewProducer(tp, replog.String(), &replog.ProducerOptions{Compression: &bad})
	require.ErrorIs(t, err, replog.ErrInvalidConfig)
}

// Back-pressure: with a small buffer, ProduceAsync blocks rather than
// buffering without bound, and a ctx that ends while blocked is reported.
func TestBufferFullBlocksUntilCtx(t *testing.T) {
	ctx := testCtx(t)
	l := openMem(t)
	tp, err := l.CreateTopic(ctx, "t", replog.TopicConfig{})
	require.NoError(t, err)
	p, err := replog.NewProducer(tp, replog.Bytes(), &replog.ProducerOptions{
		BatchBytes: 4096, MaxRecordBytes: 4096, MaxBufferedBytes: 4096, Linger: time.Hour,
	})
	require.NoError(t, err)
	p.ProduceAsync(ctx, replog.Message[[]byte]{Value: make([]byte, 3000)}, nil) // fills the buffer; lingers
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	errc := make(chan error, 1)
	p.ProduceAsync(short, replog.Message[[]byte]{Value: make([]byte, 3000)}, func(_ replog.Position, err error) { errc <- err })
	require.ErrorIs(t, <-errc, context.DeadlineExceeded)
	require.NoError(t, p.Close(), "Close sends the lingering record")
	tp2, _ := l.Topic("t")
	off, err := tp2.Offsets(ctx, 0)
	require.NoError(t, err)
	require.Equal(t, int64(1), off.HighWatermark)
}

func TestMurmur2MatchesKafka(t *testing.T) {
	// Partitions computed by Kafka's DefaultPartitioner (toPositive(murmur2(key)) % n)
	// for known murmur2 values from Kafka's UtilsTest.
	cases := []struct {
		key  string
		hash int32
	}{
		{"21", -973932308},
		{"foobar", -790332482},
		{"a-little-bit-long-string", -985981536},
		{"a-little-bit-longer-string", -1486304829},
		{"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971},
		{"abc", 479470107},
	}
	var kp replog.KafkaPartitioner
	for _, c := range cases {
		want := int(uint32(c.hash)&0x7fffffff) % 12
		require.Equal(t, want, kp.Partition([]byte(c.key), 12), c.key)
	}
}
