package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// benchResult is bench's -json output. Rates are over each phase's wall
// time; latencies are in milliseconds.
type benchResult struct {
	Brokers     string `json:"brokers"`
	Topic       string `json:"topic"`
	Partitions  int    `json:"partitions"`
	Records     int64  `json:"records"`
	Size        int    `json:"size"`
	Acks        string `json:"acks"`
	Compression string `json:"compression"`

	ProduceSeconds      float64 `json:"produce_seconds"`
	ProduceRecordsPerS  float64 `json:"produce_records_per_s"`
	ProduceMBPerS       float64 `json:"produce_mb_per_s"`
	ProduceAckP50Millis float64 `json:"produce_ack_p50_ms"`
	ProduceAckP99Millis float64 `json:"produce_ack_p99_ms"`

	SyncRecords    int     `json:"sync_records"`
	SyncP50Millis  float64 `json:"sync_p50_ms"`
	SyncP99Millis  float64 `json:"sync_p99_ms"`
	SyncP999Millis float64 `json:"sync_p999_ms"`

	ConsumeRecords     int64   `json:"consume_records"`
	ConsumeSeconds     float64 `json:"consume_seconds"`
	ConsumeRecordsPerS float64 `json:"consume_records_per_s"`
	ConsumeMBPerS      float64 `json:"consume_mb_per_s"`
}

// bench measures a broker through Kafka's protocol, so the same command
// compares replog with Kafka or Redpanda: it produces -records values of
// -size bytes as fast as the client pipelines them (one franz-go client,
// idempotent with -acks all), times -sync synchronous produces one after
// the other, then reads back exactly the offsets it wrote. Progress goes to
// stderr each -progress interval; the result to stdout.
func bench(ctx context.Context, args []string, e env) error {
	fs := newFlags("bench", e)
	var cf clientFlags
	cf.register(fs, e, true)
	topic := fs.String("topic", "replog-bench", "`topic` to write (created with -partitions if missing; an existing one is appended to)")
	records := fs.Int64("records", 1_000_000, "records to produce in the throughput phase")
	size := fs.Int("size", 100, "value size in `bytes`")
	partitions := fs.Int("partitions", 4, "partitions of the topic if bench creates it")
	replicas := fs.Int("replicas", -1, "replication factor if bench creates the topic (-1: the broker's default)")
	acks := fs.String("acks", "all", "all (idempotent), leader or none")
	codec := fs.String("compression", "none", "none, gzip, snappy, lz4 or zstd")
	syncN := fs.Int("sync", 1000, "synchronous produces timed one by one after the throughput phase (0: none)")
	consume := fs.Bool("consume", true, "read back what was produced, timed")
	progress := fs.Duration("progress", time.Second, "print progress to stderr this often (0: never)")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if err := wantArgs(pos, 0, "no arguments"); err != nil {
		return err
	}
	if *records < 0 || *size < 0 || *syncN < 0 || *partitions < 1 || *progress < 0 {
		return usagef("-records, -size, -sync and -progress must not be negative, -partitions at least 1")
	}
	opts := []kgo.Opt{kgo.DefaultProduceTopic(*topic), kgo.ProducerLinger(0)}
	switch *acks {
	case "all":
		opts = append(opts, kgo.RequiredAcks(kgo.AllISRAcks()))
	case "leader":
		opts = append(opts, kgo.RequiredAcks(kgo.LeaderAck()), kgo.DisableIdempotentWrite())
	case "none":
		opts = append(opts, kgo.RequiredAcks(kgo.NoAck()), kgo.DisableIdempotentWrite())
	default:
		return usagef("-acks %q: want all, leader or none", *acks)
	}
	switch *codec {
	case "none":
		opts = append(opts, kgo.ProducerBatchCompression(kgo.NoCompression()))
	case "gzip":
		opts = append(opts, kgo.ProducerBatchCompression(kgo.GzipCompression()))
	case "snappy":
		opts = append(opts, kgo.ProducerBatchCompression(kgo.SnappyCompression()))
	case "lz4":
		opts = append(opts, kgo.ProducerBatchCompression(kgo.Lz4Compression()))
	case "zstd":
		opts = append(opts, kgo.ProducerBatchCompression(kgo.ZstdCompression()))
	default:
		return usagef("-compression %q: want none, gzip, snappy, lz4 or zstd", *codec)
	}

	cl, err := cf.client(opts...)
	if err != nil {
		return err
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	res := benchResult{Brokers: cf.brokers, Topic: *topic, Records: *records, Size: *size, Acks: *acks, Compression: *codec}

	// The topic, and where each partition ends before the run: the
	// consume phase reads from there.
	if _, err := adm.CreateTopic(ctx, int32(*partitions), int16(*replicas), nil, *topic); err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
		return fmt.Errorf("creating topic %q: %w", *topic, err)
	}
	start, err := endOffsets(ctx, adm, *topic)
	if err != nil {
		return err
	}
	res.Partitions = len(start)

	value := benchValue(*size)
	prog := newProgress(e.stderr, *progress)
	defer prog.stop()

	// Throughput: as many records in flight as the client buffers.
	// Acknowledgement latencies are sampled (at most a million kept).
	every := max(1, *records/1_000_000)
	var (
		acked, failed atomic.Int64
		firstErr      error
		mu            sync.Mutex
		lat           []time.Duration
	)
	prog.phase("produce", *records, &acked)
	t0 := time.Now()
	for i := int64(0); i < *records && ctx.Err() == nil; i++ {
		sent := time.Now()
		sample := i%every == 0
		cl.Produce(ctx, &kgo.Record{Value: value}, func(_ *kgo.Record, err error) {
			if err != nil {
				failed.Add(1)
				mu.Lock()
				if firstErr == nil {
					firstErr = err
				}
				mu.Unlock()
				return
			}
			acked.Add(1)
			if sample {
				d := time.Since(sent)
				mu.Lock()
				lat = append(lat, d)
				mu.Unlock()
			}
		})
	}
	if err := cl.Flush(ctx); err != nil && firstErr == nil {
		firstErr = err
	}
	took := time.Since(t0)
	prog.done()
	mu.Lock()
	err = firstErr
	mu.Unlock()
	if err == nil && ctx.Err() != nil {
		err = fmt.Errorf("interrupted: %w", ctx.Err())
	}
	if err != nil {
		return fmt.Errorf("produce phase: %d acknowledged, %d failed: %w", acked.Load(), failed.Load(), err)
	}
	res.ProduceSeconds = took.Seconds()
	res.ProduceRecordsPerS = float64(*records) / took.Seconds()
	res.ProduceMBPerS = float64(*records) * float64(*size) / 1e6 / took.Seconds()
	res.ProduceAckP50Millis, res.ProduceAckP99Millis = quantileMillis(lat, 0.50), quantileMillis(lat, 0.99)

	// Latency: one record at a time, each waiting for its ack.
	if *syncN > 0 {
		var n atomic.Int64
		prog.phase("sync produce", int64(*syncN), &n)
		lat = lat[:0]
		for range *syncN {
			t := time.Now()
			if err := cl.ProduceSync(ctx, &kgo.Record{Value: value}).FirstErr(); err != nil {
				return fmt.Errorf("sync produce phase: %w", err)
			}
			lat = append(lat, time.Since(t))
			n.Add(1)
		}
		prog.done()
		res.SyncRecords = *syncN
		res.SyncP50Millis, res.SyncP99Millis, res.SyncP999Millis = quantileMillis(lat, 0.50), quantileMillis(lat, 0.99), quantileMillis(lat, 0.999)
	}

	// Read back exactly the offsets written since the run began.
	if *consume {
		end, err := endOffsets(ctx, adm, *topic)
		if err != nil {
			return err
		}
		if err := benchConsume(ctx, &cf, *topic, start, end, prog, &res); err != nil {
			return err
		}
	}

	if cf.json {
		return printJSON(e.stdout, res)
	}
	w := e.stdout
	fmt.Fprintf(w, "topic %s: %d partition(s), %d records of %d bytes, acks %s, compression %s\n", res.Topic, res.Partitions, res.Records, res.Size, res.Acks, res.Compression)
	fmt.Fprintf(w, "produce: %.0f records/s, %.1f MB/s; ack latency p50 %.2f ms, p99 %.2f ms\n", res.ProduceRecordsPerS, res.ProduceMBPerS, res.ProduceAckP50Millis, res.ProduceAckP99Millis)
	if res.SyncRecords > 0 {
		fmt.Fprintf(w, "sync produce (%d, one at a time): p50 %.2f ms, p99 %.2f ms, p99.9 %.2f ms\n", res.SyncRecords, res.SyncP50Millis, res.SyncP99Millis, res.SyncP999Millis)
	}
	if *consume {
		fmt.Fprintf(w, "consume: %d records, %.0f records/s, %.1f MB/s\n", res.ConsumeRecords, res.ConsumeRecordsPerS, res.ConsumeMBPerS)
	}
	return nil
}

// benchConsume reads each partition of topic from start to end with a new
// client and records the rate in res.
func benchConsume(ctx context.Context, cf *clientFlags, topic string, start, end map[int32]int64, prog *progress, res *benchResult) error {
	offsets := map[int32]kgo.Offset{}
	var want int64
	for p, s := range start {
		if n := end[p] - s; n > 0 {
			offsets[p] = kgo.NewOffset().At(s)
			want += n
		}
	}
	if want == 0 {
		return nil
	}
	cl, err := cf.client(kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: offsets}), kgo.FetchMaxBytes(64<<20))
	if err != nil {
		return err
	}
	defer cl.Close()
	var got, bytes atomic.Int64
	prog.phase("consume", want, &got)
	defer prog.done()
	t0 := time.Now()
	for got.Load() < want {
		fetches := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return fmt.Errorf("consume phase: %d of %d records read: %w", got.Load(), want, ctx.Err())
		}
		if err := fetches.Err(); err != nil {
			return fmt.Errorf("consume phase: %w", err)
		}
		fetches.EachRecord(func(r *kgo.Record) {
			if r.Offset < end[r.Partition] {
				got.Add(1)
				bytes.Add(int64(len(r.Value)))
			}
		})
	}
	took := time.Since(t0)
	res.ConsumeRecords = got.Load()
	res.ConsumeSeconds = took.Seconds()
	res.ConsumeRecordsPerS = float64(got.Load()) / took.Seconds()
	res.ConsumeMBPerS = float64(bytes.Load()) / 1e6 / took.Seconds()
	return nil
}

// endOffsets returns the high watermark of each partition of topic.
func endOffsets(ctx context.Context, adm *kadm.Client, topic string) (map[int32]int64, error) {
	lo, err := adm.ListEndOffsets(ctx, topic)
	if err == nil {
		err = lo.Error()
	}
	if err != nil {
		return nil, fmt.Errorf("listing the end offsets of %q: %w", topic, err)
	}
	out := map[int32]int64{}
	lo.Each(func(o kadm.ListedOffset) { out[o.Partition] = o.Offset })
	if len(out) == 0 {
		return nil, fmt.Errorf("topic %q has no partitions", topic)
	}
	return out, nil
}

// benchValue is size bytes of text, as replog-bench's default payload.
func benchValue(size int) []byte {
	const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
	v := make([]byte, size)
	for i := range v {
		v[i] = alphabet[i%len(alphabet)]
	}
	return v
}

// quantileMillis returns the q quantile of ds in milliseconds (0 if
// empty); it sorts ds.
func quantileMillis(ds []time.Duration, q float64) float64 {
	if len(ds) == 0 {
		return 0
	}
	slices.Sort(ds)
	i := min(len(ds)-1, int(q*float64(len(ds))))
	return float64(ds[i]) / float64(time.Millisecond)
}

// progress prints a phase's count to w every interval, from its own
// goroutine, until done; a zero interval prints nothing.
type progress struct {
	w        io.Writer
	interval time.Duration
	mu       sync.Mutex
	stopCh   chan struct{}
	wg       sync.WaitGroup
}

func newProgress(w io.Writer, interval time.Duration) *progress {
	return &progress{w: w, interval: interval}
}

// phase starts reporting count against total under name.
func (p *progress) phase(name string, total int64, count *atomic.Int64) {
	p.done()
	if p.interval <= 0 {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	stop := make(chan struct{})
	p.stopCh = stop
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		t := time.NewTicker(p.interval)
		defer t.Stop()
		start, last, lastN := time.Now(), time.Now(), int64(0)
		for {
			select {
			case <-stop:
				return
			case now := <-t.C:
				n := count.Load()
				rate := float64(n-lastN) / now.Sub(last).Seconds()
				last, lastN = now, n
				pct := 100.0
				if total > 0 {
					pct = 100 * float64(n) / float64(total)
				}
				fmt.Fprintf(p.w, "%s: %d/%d (%.0f%%), %.0f/s, %s\n", name, n, total, pct, rate, now.Sub(start).Round(time.Second))
			}
		}
	}()
}

// done stops the current phase's reports.
func (p *progress) done() {
	p.mu.Lock()
	if p.stopCh != nil {
		close(p.stopCh)
		p.stopCh = nil
	}
	p.mu.Unlock()
	p.wg.Wait()
}

func (p *progress) stop() { p.done() }
