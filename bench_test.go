package replog_test

import (
	"context"
	"fmt"
	"testing"

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
