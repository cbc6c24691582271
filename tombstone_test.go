package replog_test

import (
	"bytes"
	"context"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/replog/replog"
)

// countingCodec counts the calls to the codec it wraps, to show that
// tombstones never reach a codec.
type countingCodec[T any] struct {
	replog.Codec[T]
	encodes, decodes *atomic.Int64
}

func counting[T any](c replog.Codec[T]) countingCodec[T] {
	return countingCodec[T]{Codec: c, encodes: new(atomic.Int64), decodes: new(atomic.Int64)}
}

func (c countingCodec[T]) Encode(v T) ([]byte, error) {
	c.encodes.Add(1)
	return c.Codec.Encode(v)
}

func (c countingCodec[T]) Decode(b []byte) (T, error) {
	c.decodes.Add(1)
	return c.Codec.Decode(b)
}

var allCompressions = []replog.Compression{
	replog.CompressionNone, replog.CompressionGzip, replog.CompressionSnappy, replog.CompressionLZ4, replog.CompressionZstd,
}

// checkTombstones produces, on topic tp of one partition, each of values
// followed by a tombstone of the same key (whose Value is set, to show it is
// ignored), with headers and times on both, and checks that a consumer reads
// them back as produced: the values as they were (an empty one is not a
// tombstone), the tombstones with T's zero value, and no codec call for them.
func checkTombstones[T any](t *testing.T, ctx context.Context, tp *replog.Topic, codec replog.Codec[T], values []T) {
	t.Helper()
	pc := counting(codec)
	p, err := replog.NewProducer(tp, replog.Codec[T](pc), nil)
	require.NoError(t, err)
	defer p.Close()

	base := time.Unix(1_700_000_000, 0)
	var want []replog.Message[T]
	for i, v := range values {
		key := []byte(fmt.Sprintf("k%d", i%3))
		want = append(want,
			replog.Message[T]{Key: key, Value: v, Time: base.Add(time.Duration(2*i) * time.Second),
				Headers: []replog.Header{{Key: "op", Value: []byte("put")}}},
			replog.Message[T]{Key: key, Value: v, Tombstone: true, Time: base.Add(time.Duration(2*i+1) * time.Second),
				Headers: []replog.Header{{Key: "op", Value: []byte("delete")}, {Key: "nil"}}},
		)
	}
	// A tombstone's key may be empty, as long as it is not nil.
	want = append(want, replog.Message[T]{Key: []byte{}, Tombstone: true, Time: base})
	// Callbacks of one partition run one at a time, in produce order.
	var mu sync.Mutex
	var acks []string
	for _, m := range want {
		p.ProduceAsync(ctx, m, func(pos replog.Position, err error) {
			mu.Lock()
			defer mu.Unlock()
			acks = append(acks, fmt.Sprint(pos.Offset, err))
		})
	}
	require.NoError(t, p.Flush(ctx))
	mu.Lock()
	for i, a := range acks {
		require.Equal(t, fmt.Sprint(i, nil), a)
	}
	require.Len(t, acks, len(want))
	mu.Unlock()
	require.Equal(t, int64(len(values)), pc.encodes.Load(), "the codec encodes values, not tombstones")

	cc := counting(codec)
	c, err := replog.NewConsumer(tp, replog.Codec[T](cc), nil)
	require.NoError(t, err)
	defer c.Close()
	var got []replog.Record[T]
	for rec, err := range c.Records(ctx) {
		require.NoError(t, err)
		if got = append(got, rec); len(got) == len(want) {
			break
		}
	}
	require.Equal(t, int64(len(values)), cc.decodes.Load(), "the codec decodes values, not tombstones")
	var zero T
	for i, m := range want {
		rec := got[i]
		require.Equal(t, int64(i), rec.Offset)
		require.Equal(t, m.Tombstone, rec.Tombstone, "record %d", i)
		require.True(t, bytes.Equal(m.Key, rec.Key) && rec.Key != nil, "record %d key %q", i, rec.Key)
		require.Equal(t, m.Headers, rec.Headers, "record %d", i)
		require.True(t, m.Time.Equal(rec.Time), "record %d time %v", i, rec.Time)
		wantValue := m.Value
		if m.Tombstone {
			wantValue = zero
		}
		// DeepEqual, unlike require.Equal on []byte, tells nil from empty.
		require.True(t, reflect.DeepEqual(wantValue, rec.Value), "record %d: value %#v, want %#v", i, rec.Value, wantValue)
	}
}

func TestTombstoneRoundTrip(t *testing.T) {
	ctx := testCtx(t)
	l := openMem(t)
	type account struct {
		ID      int `json:"id"`
		Balance int `json:"balance"`
	}
	for _, comp := range allCompressions {
		t.Run(comp.String(), func(t *testing.T) {
			topic := func(codec string) *replog.Topic {
				tp, err := l.CreateTopic(ctx, codec+"-"+comp.String(), replog.TopicConfig{Compression: comp})
				require.NoError(t, err)
				return tp
			}
			t.Run("bytes", func(t *testing.T) {
				// A nil []byte is a value, as before tombstones existed,
				// and so is an empty one.
				checkTombstones(t, ctx, topic("bytes"), replog.Bytes(),
					[][]byte{[]byte("a"), {}, nil, bytes.Repeat([]byte("z"), 100_000)})
			})
			t.Run("string", func(t *testing.T) {
				checkTombstones(t, ctx, topic("string"), replog.String(),
					[]string{"a", "", strings.Repeat("z", 100_000)})
			})
			t.Run("json", func(t *testing.T) {
				// A nil pointer encodes as JSON null: a value, not a
				// tombstone, and read back as nil too.
				checkTombstones(t, ctx, topic("json"), replog.JSON[*account](),
					[]*account{{ID: 1, Balance: 10}, nil, {}})
			})
		})
	}
}

func TestKeylessTombstoneRefused(t *testing.T) {
	ctx := testCtx(t)
	l := openMem(t)
	tp, err := l.CreateTopic(ctx, "t", replog.TopicConfig{})
	require.NoError(t, err)
	codec := counting(replog.String())
	p, err := replog.NewProducer(tp, replog.Codec[string](codec), nil)
	require.NoError(t, err)
	defer p.Close()

	_, err = p.Produce(ctx, replog.Message[string]{Tombstone: true, Value: "x"})
	require.ErrorIs(t, err, replog.ErrInvalidConfig)
	var asyncErr error
	p.ProduceAsync(ctx, replog.Message[string]{Tombstone: true}, func(_ replog.Position, err error) { asyncErr = err })
	require.ErrorIs(t, asyncErr, replog.ErrInvalidConfig, "refused before ProduceAsync returns")
	require.NoError(t, p.Flush(ctx))
	require.Zero(t, codec.encodes.Load())

	// Nothing was written: the next record is the partition's first.
	pos, err := p.Produce(ctx, replog.Message[string]{Key: []byte("k"), Tombstone: true})
	require.NoError(t, err)
	require.Equal(t, int64(0), pos.Offset)
	off, err := tp.Offsets(ctx, 0)
	require.NoError(t, err)
	require.Equal(t, int64(1), off.HighWatermark)
}

// Tombstones are stored like any record: they survive a restart on disk.
func TestTombstoneSurvivesReopen(t *testing.T) {
	ctx := testCtx(t)
	dir := t.TempDir()
	l, err := replog.Open(dir, nil)
	require.NoError(t, err)
	tp, err := l.CreateTopic(ctx, "t", replog.TopicConfig{Compression: replog.CompressionZstd})
	require.NoError(t, err)
	p, err := replog.NewProducer(tp, replog.String(), nil)
	require.NoError(t, err)
	for _, m := range []replog.Message[string]{
		{Key: []byte("a"), Value: "1"},
		{Key: []byte("a"), Tombstone: true},
		{Key: []byte("a"), Value: ""},
	} {
		_, err := p.Produce(ctx, m)
		require.NoError(t, err)
	}
	require.NoError(t, p.Close())
	require.NoError(t, l.Close())

	l, err = replog.Open(dir, nil)
	require.NoError(t, err)
	defer func() { require.NoError(t, l.Close()) }()
	tp, err = l.Topic("t")
	require.NoError(t, err)
	c, err := replog.NewConsumer(tp, replog.String(), nil)
	require.NoError(t, err)
	defer c.Close()
	var got []string
	for rec, err := range c.Records(ctx) {
		require.NoError(t, err)
		got = append(got, fmt.Sprintf("%s=%q tombstone=%v", rec.Key, rec.Value, rec.Tombstone))
		if len(got) == 3 {
			break
		}
	}
	require.Equal(t, []string{`a="1" tombstone=false`, `a="" tombstone=true`, `a="" tombstone=false`}, got)
}

// TestCompactedTopicRefusesKeylessRecords: in a topic compacted by key a
// record without a key has no place (Kafka refuses it too); it is refused
// before anything is buffered, also after AlterTopic turns compaction on.
func TestCompactedTopicRefusesKeylessRecords(t *testing.T) {
	ctx := testCtx(t)
	l := openMem(t)
	tp, err := l.CreateTopic(ctx, "accounts", replog.TopicConfig{Cleanup: replog.CleanupCompact})
	require.NoError(t, err)
	p, err := replog.NewProducer(tp, replog.String(), nil)
	require.NoError(t, err)
	defer p.Close()
	_, err = p.Produce(ctx, replog.Message[string]{Value: "no key"})
	require.ErrorIs(t, err, replog.ErrInvalidConfig)
	pos, err := p.Produce(ctx, replog.Message[string]{Key: []byte("k"), Value: "v"})
	require.NoError(t, err)
	require.Equal(t, int64(0), pos.Offset, "the refused record took no offset")

	ev, err := l.CreateTopic(ctx, "events", replog.TopicConfig{})
	require.NoError(t, err)
	pe, err := replog.NewProducer(ev, replog.String(), nil)
	require.NoError(t, err)
	defer pe.Close()
	_, err = pe.Produce(ctx, replog.Message[string]{Value: "keyless is fine here"})
	require.NoError(t, err)
	require.NoError(t, l.AlterTopic(ctx, "events", replog.TopicConfig{Cleanup: replog.CleanupCompact | replog.CleanupDelete}))
	_, err = pe.Produce(ctx, replog.Message[string]{Value: "not any more"})
	require.ErrorIs(t, err, replog.ErrInvalidConfig)
}
