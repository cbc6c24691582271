package main

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/replog/replog"
	replogkafka "github.com/replog/replog/kafka"
)

// kafkaProduceConsume runs the produce, latency and consume phases as
// produceConsume does, but through Kafka's protocol: node 1 serves a
// listener on a loopback port and franz-go's client produces (idempotent,
// acks all, uncompressed batches: the topic's codec applies on the node)
// and consumes (direct, from the start). The figures compare with the Go
// API's on the same node.
func kafkaProduceConsume(ctx context.Context, c config, topics []*replog.Topic, values [][]byte, node1 *replog.Log, r *result) error {
	srv, err := replogkafka.Listen(node1, "127.0.0.1:0", nil)
	if err != nil {
		return err
	}
	defer srv.Close()
	addr := srv.Addr().String()
	names := make([]string, len(topics))
	for i, t := range topics {
		names[i] = t.Name()
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.ProducerBatchCompression(kgo.NoCompression()),
		kgo.MaxBufferedBytes(32<<20))
	if err != nil {
		return err
	}
	defer cl.Close()

	var failed atomic.Int64
	var firstErr atomic.Value
	payloadBytes := 0
	start := time.Now()
	for i := range c.records {
		v := values[i%len(values)]
		payloadBytes += len(v)
		cl.Produce(ctx, &kgo.Record{Topic: names[i%len(names)], Value: v}, func(_ *kgo.Record, err error) {
			if err != nil {
				failed.Add(1)
				firstErr.CompareAndSwap(nil, err)
			}
		})
	}
	if err := cl.Flush(ctx); err != nil {
		return err
	}
	el := time.Since(start)
	if e := firstErr.Load(); e != nil {
		return fmt.Errorf("%d produces failed, first: %v", failed.Load(), e)
	}
	r.ProducePeakRSS = peakRSS()
	r.ProduceRecordsPerS = float64(c.records) / el.Seconds()
	r.ProduceMBPerS = float64(payloadBytes) / el.Seconds() / 1e6
	measureStore(node1, r)

	lat := make([]time.Duration, 0, c.latencyN)
	for i := range c.latencyN {
		s := time.Now()
		if err := cl.ProduceSync(ctx, &kgo.Record{Topic: names[i%len(names)], Value: values[i%len(values)]}).FirstErr(); err != nil {
			return err
		}
		lat = append(lat, time.Since(s))
	}
	r.ProduceP50Ms, r.ProduceP99Ms, r.ProduceP999Ms = quantilesMs(lat)

	want := c.records + c.latencyN
	cons, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.ConsumeTopics(names...),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		return err
	}
	defer cons.Close()
	stop, err := cpuProfile(c.consumeProfile)
	if err != nil {
		return err
	}
	defer stop()
	start = time.Now()
	got, gotBytes := 0, 0
	for got < want {
		fs := cons.PollFetches(ctx)
		if err := fs.Err0(); err != nil && !errors.Is(err, context.Canceled) {
			return err
		}
		fs.EachRecord(func(rec *kgo.Record) {
			got++
			gotBytes += len(rec.Value)
		})
	}
	el = time.Since(start)
	r.ConsumeRecordsPerS = float64(got) / el.Seconds()
	r.ConsumeMBPerS = float64(gotBytes) / el.Seconds() / 1e6
	return nil
}
