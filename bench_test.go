package replog_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/replog/replog"
)

// BenchmarkProduce measures asynchronous produce through a single in-memory
// node (Raft, state machine and store included), by record size and codec.
func BenchmarkProduce(b *testing.B) {
	for _, size := range []int{100, 1024} {
		for _, comp := range []replog.Compression{replog.CompressionNone, replog.CompressionLZ4, replog.CompressionZstd} {
			b.Run(fmt.Sprintf("%dB/%s", size, comp), func(b *testing.B) {
				ctx := context.Background()
				l, err := replog.Open("", &replog.Options{InMemory: true})
				if err != nil {
					b.Fatal(err)
				}
				defer l.Close()
				t, err := l.CreateTopic(ctx, "bench", replog.TopicConfig{Partitions: 4, Compression: comp})
				if err != nil {
					b.Fatal(err)
				}
				p, err := replog.NewProducer(t, replog.Bytes(), nil)
				if err != nil {
					b.Fatal(err)
				}
				defer p.Close()
				value := make([]byte, size)
				for i := range value {
					value[i] = byte('a' + i%26)
				}
				var failed error
				b.ReportAllocs()
				b.SetBytes(int64(size))
				for b.Loop() {
					p.ProduceAsync(ctx, replog.Message[[]byte]{Value: value}, func(_ replog.Position, err error) {
						if err != nil {
							failed = err
						}
					})
				}
				if err := p.Flush(ctx); err != nil {
					b.Fatal(err)
				}
				if failed != nil {
					b.Fatal(failed)
				}
			})
		}
	}
}

// BenchmarkConsume measures reading committed records back.
func BenchmarkConsume(b *testing.B) {
	for _, comp := range []replog.Compression{replog.CompressionNone, replog.CompressionZstd} {
		b.Run(comp.String(), func(b *testing.B) {
			ctx := context.Background()
			l, err := replog.Open("", &replog.Options{InMemory: true})
			if err != nil {
				b.Fatal(err)
			}
			defer l.Close()
			t, _ := l.CreateTopic(ctx, "bench", replog.TopicConfig{Partitions: 4, Compression: comp})
			p, _ := replog.NewProducer(t, replog.Bytes(), nil)
			value := make([]byte, 100)
			const n = 200_000
			for range n {
				p.ProduceAsync(ctx, replog.Message[[]byte]{Value: value}, nil)
			}
			if err := p.Flush(ctx); err != nil {
				b.Fatal(err)
			}
			p.Close()
			b.ReportAllocs()
			b.SetBytes(100)
			var c *replog.Consumer[[]byte]
			left := 0
			for b.Loop() {
				if left == 0 {
					if c != nil {
						c.Close()
					}
					c, _ = replog.NewConsumer(t, replog.Bytes(), &replog.ConsumerOptions{MaxPollRecords: 1})
					left = n
				}
				if _, err := c.Poll(ctx); err != nil {
					b.Fatal(err)
				}
				left--
			}
			c.Close()
		})
	}
}

// countingHook implements every hook with an atomic add, as a metrics
// adapter would.
type countingHook struct{ n atomic.Int64 }

func (h *countingHook) OnRecordProduced(context.Context, *replog.ProducedRecord) { h.n.Add(1) }
func (h *countingHook) OnRecordWritten(*replog.ProducedRecord, replog.Position, error) {
	h.n.Add(1)
}
func (h *countingHook) OnBatchWritten(replog.BatchWritten)     { h.n.Add(1) }
func (h *countingHook) OnBatchFetched(replog.BatchFetched)     { h.n.Add(1) }
func (h *countingHook) OnRecordConsumed(replog.ConsumedRecord) { h.n.Add(1) }

// observed opens an in-memory node that is watched or not: with metrics,
// Stats is taken every 10ms (a hundred times a usual scrape rate) and
// batch hooks count what they see, as replogprom and replogotel's metrics
// do; per-record hooks (tracing) are not part of it.
func observed(b *testing.B, metrics bool) *replog.Log {
	o := &replog.Options{InMemory: true}
	if metrics {
		o.Hooks = []replog.Hook{batchHooks{&countingHook{}}}
	}
	l, err := replog.Open("", o)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { l.Close() })
	if metrics {
		go func() {
			for {
				select {
				case <-l.Done():
					return
				case <-time.After(10 * time.Millisecond):
					l.Stats()
				}
			}
		}()
	}
	return l
}

// batchHooks exposes only the batch-level hooks of a countingHook.
type batchHooks struct{ h *countingHook }

func (b batchHooks) OnBatchWritten(w replog.BatchWritten) { b.h.OnBatchWritten(w) }
func (b batchHooks) OnBatchFetched(f replog.BatchFetched) { b.h.OnBatchFetched(f) }

// BenchmarkObserved compares produce and consume throughput with metrics
// off and on (see observed): compare the two with benchstat.
func BenchmarkObserved(b *testing.B) {
	for _, metrics := range []bool{false, true} {
		name := "metrics=off"
		if metrics {
			name = "metrics=on"
		}
		b.Run("produce/"+name, func(b *testing.B) {
			ctx := context.Background()
			l := observed(b, metrics)
			t, err := l.CreateTopic(ctx, "bench", replog.TopicConfig{Partitions: 4})
			if err != nil {
				b.Fatal(err)
			}
			p, err := replog.NewProducer(t, replog.Bytes(), nil)
			if err != nil {
				b.Fatal(err)
			}
			defer p.Close()
			value := make([]byte, 100)
			b.ReportAllocs()
			b.SetBytes(100)
			for b.Loop() {
				p.ProduceAsync(ctx, replog.Message[[]byte]{Value: value}, nil)
			}
			if err := p.Flush(ctx); err != nil {
				b.Fatal(err)
			}
		})
		b.Run("consume/"+name, func(b *testing.B) {
			ctx := context.Background()
			l := observed(b, metrics)
			t, _ := l.CreateTopic(ctx, "bench", replog.TopicConfig{Partitions: 4})
			p, _ := replog.NewProducer(t, replog.Bytes(), nil)
			value := make([]byte, 100)
			const n = 200_000
			for range n {
				p.ProduceAsync(ctx, replog.Message[[]byte]{Value: value}, nil)
			}
			if err := p.Flush(ctx); err != nil {
				b.Fatal(err)
			}
			p.Close()
			b.ReportAllocs()
			b.SetBytes(100)
			var c *replog.Consumer[[]byte]
			var recs []replog.Record[[]byte]
			for b.Loop() {
				if len(recs) == 0 {
					if c == nil || c.Lag()[0]+c.Lag()[1]+c.Lag()[2]+c.Lag()[3] == 0 {
						if c != nil {
							c.Close()
						}
						c, _ = replog.NewConsumer(t, replog.Bytes(), nil)
					}
					var err error
					if recs, err = c.Poll(ctx); err != nil {
						b.Fatal(err)
					}
				}
				recs = recs[1:]
			}
			c.Close()
		})
	}
}
