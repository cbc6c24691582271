package replog_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/replog/replog"
)

// BenchmarkShareGroup measures a share group's throughput on one
// partition of a single in-memory node: one op is one 100-byte record
// acquired by one of the workers and accepted (each worker accepts a
// poll's records with one AckAll). A producer keeps the partition ahead
// of the workers. Every acquisition and acknowledgement is a proposal to
// the share coordinator, so this measures the coordinator's Raft group as
// much as the partition.
func BenchmarkShareGroup(b *testing.B) {
	for _, workers := range []int{1, 4, 16} {
		b.Run(fmt.Sprintf("workers=%d", workers), func(b *testing.B) { benchShare(b, workers) })
	}
}

func benchShare(b *testing.B, workers int) {
	ctx, cancel := context.WithCancel(context.Background())
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
	const ahead = 4000 // records produced and not yet accepted, at most
	credit := make(chan struct{}, ahead)
	for range ahead {
		credit <- struct{}{}
	}
	acked := make(chan struct{}, ahead)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // the producer
		defer wg.Done()
		p, err := replog.NewProducer(tp, replog.Bytes(), nil)
		if err != nil {
			b.Error(err)
			return
		}
		defer p.Close()
		value := make([]byte, 100)
		for {
			select {
			case <-credit:
			case <-ctx.Done():
				return
			}
			p.ProduceAsync(ctx, replog.Message[[]byte]{Value: value}, nil)
		}
	}()
	for range workers {
		c, err := replog.NewShareConsumer(tp, "bench", replog.Bytes(), &replog.ShareConsumerOptions{MaxRecords: 50})
		if err != nil {
			b.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Close()
			for ctx.Err() == nil {
				pctx, pcancel := context.WithTimeout(ctx, time.Second)
				recs, err := c.Poll(pctx)
				pcancel()
				if err != nil || len(recs) == 0 {
					continue
				}
				if err := c.AckAll(ctx, recs); err != nil {
					continue
				}
				for range recs {
					select {
					case acked <- struct{}{}:
					case <-ctx.Done():
						return
					}
				}
			}
		}()
	}
	b.SetBytes(100)
	for b.Loop() {
		<-acked
		credit <- struct{}{}
	}
	b.StopTimer()
	cancel()
	wg.Wait()
}
