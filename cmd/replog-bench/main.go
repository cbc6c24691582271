// Command replog-bench measures replog in the manner of Kafka's
// producer-perf-test: produce throughput with asynchronous producers,
// synchronous Produce latency, consume throughput and peak RSS, on data on
// disk in a temporary directory (1 node, or 3 nodes in one process).
// With -compact-keys it measures instead produce throughput to a compacted
// topic without and with Log.Compact running in a loop.
//
//	go run ./cmd/replog-bench -records 1000000 -size 100 -replicas 3 -json
//	go run ./cmd/replog-bench -compact-keys 10000 -size 100
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"os"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/replog/replog/internal/expert"
	"github.com/replog/replog/replication"

	"github.com/replog/replog"
)

type result struct {
	Records            int     `json:"records"`
	Size               int     `json:"size"`
	Partitions         int     `json:"partitions"`
	Replicas           int     `json:"replicas"`
	Codec              string  `json:"codec"`
	Acks               string  `json:"acks"`
	Producers          int     `json:"producers"`
	ProduceRecordsPerS float64 `json:"produce_records_per_s"`
	ProduceMBPerS      float64 `json:"produce_mb_per_s"`
	ProduceP50Ms       float64 `json:"produce_p50_ms"`
	ProduceP99Ms       float64 `json:"produce_p99_ms"`
	ProduceP999Ms      float64 `json:"produce_p999_ms"`
	ConsumeRecordsPerS float64 `json:"consume_records_per_s"`
	ConsumeMBPerS      float64 `json:"consume_mb_per_s"`
	PeakRSSBytes       int64   `json:"peak_rss_bytes"`
	ProducePeakRSS     int64   `json:"produce_peak_rss_bytes"`
}

func main() {
	records := flag.Int("records", 1_000_000, "records to produce")
	size := flag.Int("size", 100, "value size in bytes")
	partitions := flag.Int("partitions", 4, "partitions of the topic")
	replicas := flag.Int("replicas", 1, "1 (one node) or 3 (three nodes in this process)")
	codec := flag.String("codec", "none", "compression: none, gzip, snappy, lz4, zstd")
	acks := flag.String("acks", "all", "all (quorum fsynced) or none (fire and forget)")
	producers := flag.Int("producers", 1, "producer handles producing concurrently")
	latencyN := flag.Int("latency-records", 2000, "synchronous Produce calls timed for latency")
	asJSON := flag.Bool("json", false, "print one JSON object")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile of the produce phase")
	consumeProfile := flag.String("consume-cpuprofile", "", "write a CPU profile of the consume phase")
	memprofile := flag.String("memprofile", "", "write a heap profile (allocations) at the end of the produce phase")
	compactKeys := flag.Int("compact-keys", 0, "if > 0: produce records keyed over this many keys to a compacted topic, and compare produce throughput "+
		"without and with Log.Compact looping, in alternating windows (-records, -acks, -latency-records, -consume-cpuprofile and -memprofile are then unused; -cpuprofile covers the windows)")
	compactWindow := flag.Duration("compact-window", 5*time.Second, "with -compact-keys: the length of one window")
	compactRounds := flag.Int("compact-rounds", 2, "with -compact-keys: pairs of windows (without, then with compaction)")
	flag.Parse()
	if *compactKeys > 0 {
		r, err := runCompact(*compactKeys, *size, *partitions, *replicas, *codec, *producers, *compactWindow, *compactRounds, *cpuprofile)
		if err != nil {
			log.Fatal(err)
		}
		if *asJSON {
			json.NewEncoder(os.Stdout).Encode(r)
			return
		}
		printCompact(r)
		return
	}
	r, err := run(*records, *size, *partitions, *replicas, *codec, *acks, *producers, *latencyN, *cpuprofile, *consumeProfile, *memprofile)
	if err != nil {
		log.Fatal(err)
	}
	if *asJSON {
		json.NewEncoder(os.Stdout).Encode(r)
		return
	}
	fmt.Printf("produce: %d records of %d B, %d partitions, %d replicas, codec %s, acks %s, %d producers\n",
		r.Records, r.Size, r.Partitions, r.Replicas, r.Codec, r.Acks, r.Producers)
	fmt.Printf("  %.0f records/s, %.1f MB/s\n", r.ProduceRecordsPerS, r.ProduceMBPerS)
	fmt.Printf("sync Produce latency: p50 %.2f ms, p99 %.2f ms, p99.9 %.2f ms\n", r.ProduceP50Ms, r.ProduceP99Ms, r.ProduceP999Ms)
	fmt.Printf("consume: %.0f records/s, %.1f MB/s\n", r.ConsumeRecordsPerS, r.ConsumeMBPerS)
	fmt.Printf("peak RSS: %.1f MiB (%.1f MiB by the end of the produce phase)\n", float64(r.PeakRSSBytes)/(1<<20), float64(r.ProducePeakRSS)/(1<<20))
}

func parseCodec(s string) (replog.Compression, error) {
	for _, c := range []replog.Compression{replog.CompressionNone, replog.CompressionGzip, replog.CompressionSnappy, replog.CompressionLZ4, replog.CompressionZstd} {
		if c.String() == s {
			return c, nil
		}
	}
	return 0, fmt.Errorf("unknown codec %q", s)
}

func run(records, size, partitions, replicas int, codec, acks string, producers, latencyN int, cpuprofile, consumeProfile, memprofile string) (result, error) {
	r := result{Records: records, Size: size, Partitions: partitions, Replicas: replicas, Codec: codec, Acks: acks, Producers: producers}
	comp, err := parseCodec(codec)
	if err != nil {
		return r, err
	}
	if acks != "all" && acks != "none" {
		return r, fmt.Errorf("-acks %q: want all or none", acks)
	}
	if replicas != 1 && replicas != 3 {
		return r, fmt.Errorf("-replicas %d: want 1 or 3", replicas)
	}
	dir, err := os.MkdirTemp("", "replog-bench-")
	if err != nil {
		return r, err
	}
	defer os.RemoveAll(dir)
	logs, err := openNodes(dir, replicas, 0)
	if err != nil {
		return r, err
	}
	defer func() {
		for _, l := range logs {
			l.Close()
		}
	}()
	ctx := context.Background()
	t, err := logs[0].CreateTopic(ctx, "bench", replog.TopicConfig{Partitions: partitions, Replicas: replicas, Compression: comp})
	if err != nil {
		return r, err
	}

	// Produce phase: asynchronous, as producer-perf-test does.
	value := bytes.Repeat([]byte("x"), size)
	for i := range value {
		value[i] = byte('a' + i%26)
	}
	var opts replog.ProducerOptions
	if acks == "none" {
		opts.DisableIdempotence = true
	}
	if cpuprofile != "" {
		f, err := os.Create(cpuprofile)
		if err != nil {
			return r, err
		}
		pprof.StartCPUProfile(f)
		defer pprof.StopCPUProfile()
	}
	var failed atomic.Int64
	var firstErr atomic.Value
	start := time.Now()
	var wg sync.WaitGroup
	for g := range producers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p, err := replog.NewProducer(t, replog.Bytes(), &opts)
			if err != nil {
				firstErr.CompareAndSwap(nil, err)
				return
			}
			defer p.Close()
			n := records / producers
			if g == 0 {
				n += records % producers
			}
			for range n {
				p.ProduceAsync(ctx, replog.Message[[]byte]{Value: value}, func(_ replog.Position, err error) {
					if err != nil {
						failed.Add(1)
						firstErr.CompareAndSwap(nil, err)
					}
				})
			}
			p.Flush(ctx)
		}()
	}
	wg.Wait()
	el := time.Since(start)
	if cpuprofile != "" {
		pprof.StopCPUProfile()
	}
	if e := firstErr.Load(); e != nil {
		return r, fmt.Errorf("%d produces failed, first: %v", failed.Load(), e)
	}
	r.ProducePeakRSS = peakRSS()
	if memprofile != "" {
		f, err := os.Create(memprofile)
		if err != nil {
			return r, err
		}
		pprof.Lookup("allocs").WriteTo(f, 0)
		f.Close()
	}
	r.ProduceRecordsPerS = float64(records) / el.Seconds()
	r.ProduceMBPerS = float64(records*size) / el.Seconds() / 1e6

	// Latency phase: one synchronous Produce at a time.
	p, err := replog.NewProducer(t, replog.Bytes(), nil)
	if err != nil {
		return r, err
	}
	lat := make([]time.Duration, 0, latencyN)
	for range latencyN {
		s := time.Now()
		if _, err := p.Produce(ctx, replog.Message[[]byte]{Value: value}); err != nil {
			return r, err
		}
		lat = append(lat, time.Since(s))
	}
	p.Close()
	slices.Sort(lat)
	q := func(f float64) float64 {
		if len(lat) == 0 {
			return 0
		}
		return float64(lat[min(len(lat)-1, int(f*float64(len(lat))))]) / 1e6
	}
	r.ProduceP50Ms, r.ProduceP99Ms, r.ProduceP999Ms = q(0.50), q(0.99), q(0.999)

	// Consume phase: everything from the earliest offset.
	total := records + latencyN
	c, err := replog.NewConsumer(t, replog.Bytes(), &replog.ConsumerOptions{MaxPollRecords: 10000})
	if err != nil {
		return r, err
	}
	defer c.Close()
	if consumeProfile != "" {
		f, err := os.Create(consumeProfile)
		if err != nil {
			return r, err
		}
		pprof.StartCPUProfile(f)
	}
	start = time.Now()
	got := 0
	for got < total {
		recs, err := c.Poll(ctx)
		if err != nil {
			return r, err
		}
		got += len(recs)
	}
	el = time.Since(start)
	if consumeProfile != "" {
		pprof.StopCPUProfile()
	}
	r.ConsumeRecordsPerS = float64(got) / el.Seconds()
	r.ConsumeMBPerS = float64(got*size) / el.Seconds() / 1e6
	r.PeakRSSBytes = peakRSS()
	return r, nil
}

// openNodes opens n nodes; retention, if not 0, is how often their
// partition leaders check retention and compaction.
func openNodes(dir string, n int, retention time.Duration) ([]*replog.Log, error) {
	if n == 1 {
		var o replog.Options
		expert.Attach(&o, expert.Options{RetentionInterval: retention})
		l, err := replog.Open(dir, &o)
		return []*replog.Log{l}, err
	}
	peers := map[uint64]string{}
	for i := range n {
		peers[uint64(i+1)] = replication.NewInProcessAddress()
	}
	logs := make([]*replog.Log, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			o := &replog.Options{NodeID: uint64(i + 1), Peers: peers}
			expert.Attach(o, expert.Options{InProcessTransport: true, RetentionInterval: retention})
			logs[i], errs[i] = replog.Open(fmt.Sprintf("%s/node%d", dir, i+1), o)
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return logs, err
		}
	}
	return logs, nil
}

// peakRSS reads the process's high-water resident set size (Linux).
func peakRSS() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}
