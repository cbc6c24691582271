package main

import (
	"context"
	"fmt"
	"os"
	"runtime/pprof"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/replog/replog"
)

func topicName(i, topics int) string {
	if topics == 1 {
		return "bench"
	}
	return fmt.Sprintf("bench-%d", i)
}

func run(c config) (result, error) {
	r := result{Records: c.records, Size: c.size, Partitions: c.partitions, Replicas: c.replicas, Codec: c.codec, Acks: c.acks,
		Producers: c.producers, Topics: c.topics, Payload: c.payload}
	comp, err := parseCodec(c.codec)
	if err != nil {
		return r, err
	}
	switch {
	case c.acks != "all" && c.acks != "none":
		return r, fmt.Errorf("-acks %q: want all or none", c.acks)
	case c.replicas != 1 && c.replicas != 3:
		return r, fmt.Errorf("-replicas %d: want 1 or 3", c.replicas)
	case c.records < 0 || c.latencyN < 0 || c.idle < 0:
		return r, fmt.Errorf("-records %d, -latency-records %d, -idle %v: want 0 or more", c.records, c.latencyN, c.idle)
	case c.topics < 1 || c.producers < 1:
		return r, fmt.Errorf("-topics %d, -producers %d: want 1 or more", c.topics, c.producers)
	case c.kafka && (c.replicas != 1 || c.acks != "all" || c.producers != 1):
		// The listener advertises only its own node for now.
		return r, fmt.Errorf("-kafka: one replica, -acks all and one producer only")
	}
	values, err := payloads(c.payload, c.size)
	if err != nil {
		return r, err
	}
	r.ValueBytes = meanLen(values)
	dir, err := os.MkdirTemp("", "replog-bench-")
	if err != nil {
		return r, err
	}
	defer os.RemoveAll(dir)
	logs, peers, err := openNodes(dir, c.replicas, 0, nil)
	closeAll := func() {
		for _, l := range logs {
			if l != nil {
				l.Close()
			}
		}
	}
	defer func() { closeAll() }()
	if err != nil {
		return r, err
	}
	ctx := context.Background()
	start := time.Now()
	topics := make([]*replog.Topic, c.topics)
	for i := range topics {
		topics[i], err = logs[0].CreateTopic(ctx, topicName(i, c.topics), replog.TopicConfig{Partitions: c.partitions, Replicas: c.replicas, Compression: comp})
		if err != nil {
			return r, err
		}
	}
	r.CreateSeconds = time.Since(start).Seconds()

	switch {
	case c.records > 0 && c.kafka:
		if err := kafkaProduceConsume(ctx, c, topics, values, logs[0], &r); err != nil {
			return r, err
		}
	case c.records > 0:
		if err := produceConsume(ctx, c, topics, values, logs[0], &r); err != nil {
			return r, err
		}
	default:
		measureStore(logs[0], &r)
	}
	r.PeakRSSBytes = peakRSS()
	if c.idle == 0 {
		return r, nil
	}

	start = time.Now()
	closeAll()
	r.CloseSeconds = time.Since(start).Seconds()
	logs = nil
	if err := reopenIdle(c, dir, peers, &r.idleResult); err != nil {
		return r, fmt.Errorf("reopen: %w", err)
	}
	return r, nil
}

// produceConsume runs the produce, latency and consume phases over topics,
// and measures the store (measureStore) at the end of the produce phase,
// when it holds the -records only, in batches as full as they get.
func produceConsume(ctx context.Context, c config, topics []*replog.Topic, values [][]byte, node1 *replog.Log, r *result) error {
	// Produce phase: asynchronous, as producer-perf-test does. Each
	// producer goroutine has a handle per topic and produces to them in
	// turn, its values in turn.
	var opts replog.ProducerOptions
	if c.acks == "none" {
		opts.DisableIdempotence = true
	}
	stopProfile, err := cpuProfile(c.cpuprofile)
	if err != nil {
		return err
	}
	defer stopProfile()
	// perTopic counts the records produced to each topic, for the consume
	// phase.
	perTopic := make([]atomic.Int64, len(topics))
	var failed, payloadBytes atomic.Int64
	var firstErr atomic.Value
	start := time.Now()
	var wg sync.WaitGroup
	for g := range c.producers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ps := make([]*replog.Producer[[]byte], len(topics))
			for i, t := range topics {
				p, err := replog.NewProducer(t, replog.Bytes(), &opts)
				if err != nil {
					firstErr.CompareAndSwap(nil, err)
					return
				}
				defer p.Close()
				ps[i] = p
			}
			n := c.records / c.producers
			if g == 0 {
				n += c.records % c.producers
			}
			nb := 0
			for i := range n {
				v := values[(g+i*c.producers)%len(values)]
				nb += len(v)
				ps[i%len(ps)].ProduceAsync(ctx, replog.Message[[]byte]{Value: v}, func(_ replog.Position, err error) {
					if err != nil {
						failed.Add(1)
						firstErr.CompareAndSwap(nil, err)
					}
				})
			}
			for i, p := range ps {
				p.Flush(ctx)
				perTopic[i].Add(int64(n/len(ps) + btoi(i < n%len(ps))))
			}
			payloadBytes.Add(int64(nb))
		}()
	}
	wg.Wait()
	el := time.Since(start)
	stopProfile()
	if e := firstErr.Load(); e != nil {
		return fmt.Errorf("%d produces failed, first: %v", failed.Load(), e)
	}
	r.ProducePeakRSS = peakRSS()
	if c.memprofile != "" {
		f, err := os.Create(c.memprofile)
		if err != nil {
			return err
		}
		pprof.Lookup("allocs").WriteTo(f, 0)
		f.Close()
	}
	r.ProduceRecordsPerS = float64(c.records) / el.Seconds()
	r.ProduceMBPerS = float64(payloadBytes.Load()) / el.Seconds() / 1e6
	measureStore(node1, r)

	// Latency phase: one synchronous Produce at a time, to the topics in
	// turn.
	ps := make([]*replog.Producer[[]byte], len(topics))
	closeProducers := func() {
		for i, p := range ps {
			if p != nil {
				p.Close()
				ps[i] = nil
			}
		}
	}
	defer closeProducers()
	for i, t := range topics {
		p, err := replog.NewProducer(t, replog.Bytes(), nil)
		if err != nil {
			return err
		}
		ps[i] = p
	}
	lat := make([]time.Duration, 0, c.latencyN)
	for i := range c.latencyN {
		s := time.Now()
		if _, err := ps[i%len(ps)].Produce(ctx, replog.Message[[]byte]{Value: values[i%len(values)]}); err != nil {
			return err
		}
		lat = append(lat, time.Since(s))
		perTopic[i%len(ps)].Add(1)
	}
	closeProducers()
	r.ProduceP50Ms, r.ProduceP99Ms, r.ProduceP999Ms = quantilesMs(lat)

	// Consume phase: everything from the earliest offset, one topic after
	// the other.
	stop, err := cpuProfile(c.consumeProfile)
	if err != nil {
		return err
	}
	defer stop()
	start = time.Now()
	got, gotBytes := 0, 0
	for i, t := range topics {
		n, nb, err := consume(ctx, t, int(perTopic[i].Load()))
		if err != nil {
			return err
		}
		got += n
		gotBytes += nb
	}
	el = time.Since(start)
	if c.consumeProfile != "" {
		pprof.StopCPUProfile()
	}
	r.ConsumeRecordsPerS = float64(got) / el.Seconds()
	r.ConsumeMBPerS = float64(gotBytes) / el.Seconds() / 1e6
	return nil
}

// consume reads t from the earliest offset until it has read n records,
// and returns the records and value bytes read.
func consume(ctx context.Context, t *replog.Topic, n int) (records, bytes int, err error) {
	c, err := replog.NewConsumer(t, replog.Bytes(), &replog.ConsumerOptions{MaxPollRecords: 10000})
	if err != nil {
		return 0, 0, err
	}
	defer c.Close()
	for records < n {
		recs, err := c.Poll(ctx)
		if err != nil {
			return records, bytes, err
		}
		records += len(recs)
		for _, rec := range recs {
			bytes += len(rec.Value)
		}
	}
	return records, bytes, nil
}

// quantilesMs sorts lat and returns its p50, p99 and p99.9 in
// milliseconds (0 for none).
func quantilesMs(lat []time.Duration) (p50, p99, p999 float64) {
	slices.Sort(lat)
	q := func(f float64) float64 {
		if len(lat) == 0 {
			return 0
		}
		return float64(lat[min(len(lat)-1, int(f*float64(len(lat))))]) / 1e6
	}
	return q(0.50), q(0.99), q(0.999)
}

// cpuProfile starts a CPU profile written to path, if path is not empty,
// and returns what stops it (and closes the file); it may be called twice.
func cpuProfile(path string) (stop func(), err error) {
	if path == "" {
		return func() {}, nil
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			pprof.StopCPUProfile()
			f.Close()
		})
	}, nil
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// measureStore fills the store and disk figures of r from node 1's Stats.
// Stats measures the disk at most once a second: this must be the first
// call on l (it is, where run calls it).
func measureStore(l *replog.Log, r *result) {
	s := l.Stats()
	r.StoredRecords, r.StoredBytes = storedRecords(s)
	r.StoreBytes, r.RaftBytes = s.Node.StoreBytes, s.Node.RaftBytes
	if r.StoredRecords > 0 {
		r.StoredBytesPerRecord = float64(r.StoredBytes) / float64(r.StoredRecords)
		r.DiskBytesPerRecord = float64(r.StoreBytes+r.RaftBytes) / float64(r.StoredRecords)
	}
}

// storedRecords sums the records (high watermark less log start) and the
// stored bytes of the partitions in s.
func storedRecords(s replog.Stats) (records, bytes int64) {
	for _, p := range s.Partitions {
		records += p.HighWatermark - p.LogStart
		bytes += p.StoredBytes
	}
	return records, bytes
}
