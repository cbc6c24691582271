package replogkafka_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/replog/replog"
	replogkafka "github.com/replog/replog/kafka"
)

// BenchmarkKafkaShareGroup measures franz-go share members reading one
// partition of a single in-memory node through the listener: one op is
// one 100-byte record, produced before the timer starts, fetched by one of
// the members and accepted (acknowledgements ride on the next ShareFetch).
// Compare BenchmarkShareGroup (package replog), the same work from Go
// members without the protocol.
func BenchmarkKafkaShareGroup(b *testing.B) {
	for _, members := range []int{1, 4} {
		b.Run(fmt.Sprintf("members=%d", members), func(b *testing.B) { benchKafkaShare(b, members) })
	}
}

func benchKafkaShare(b *testing.B, members int) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	l, err := replog.Open("", &replog.Options{InMemory: true})
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	tp, err := l.CreateTopic(ctx, "jobs", replog.TopicConfig{Partitions: 1})
	if err != nil {
		b.Fatal(err)
	}
	if err := l.SetShareGroupConfig(ctx, "workers", replog.ShareGroupConfig{AutoOffsetReset: replog.ShareOffsetEarliest}); err != nil {
		b.Fatal(err)
	}
	p, err := replog.NewProducer(tp, replog.Bytes(), nil)
	if err != nil {
		b.Fatal(err)
	}
	value := make([]byte, 100)
	for range b.N {
		p.ProduceAsync(ctx, replog.Message[[]byte]{Value: value}, nil)
	}
	if err := p.Flush(ctx); err != nil {
		b.Fatal(err)
	}
	p.Close()
	srv, err := replogkafka.Listen(l, "127.0.0.1:0", nil)
	if err != nil {
		b.Fatal(err)
	}
	defer srv.Close()

	var accepted atomic.Int64
	done := make(chan struct{})
	var once sync.Once
	var wg sync.WaitGroup
	b.ResetTimer()
	for range members {
		cl, err := kgo.NewClient(kgo.SeedBrokers(srv.Addr().String()), kgo.ConsumeTopics("jobs"), kgo.ShareGroup("workers"),
			kgo.FetchMaxWait(100*time.Millisecond))
		if err != nil {
			b.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer cl.Close()
			for {
				select {
				case <-done:
					_ = cl.FlushAcks(ctx)
					return
				default:
				}
				pctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
				recs := cl.PollRecords(pctx, 200).Records()
				cancel()
				for _, r := range recs {
					r.Ack(kgo.AckAccept)
				}
				if accepted.Add(int64(len(recs))) >= int64(b.N) {
					once.Do(func() { close(done) })
				}
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
}
