package main

import (
	"context"
	"fmt"
	"os"
	"runtime/pprof"
	"sync"
	"sync/atomic"
	"time"

	"github.com/replog/replog"
)

// compactResult is what -compact-keys measures: produce throughput over
// alternating windows without and with Log.Compact running in a loop.
type compactResult struct {
	Keys               int       `json:"keys"`
	Size               int       `json:"size"`
	Partitions         int       `json:"partitions"`
	Replicas           int       `json:"replicas"`
	Codec              string    `json:"codec"`
	Producers          int       `json:"producers"`
	WindowS            float64   `json:"window_s"`
	OffRecordsPerS     []float64 `json:"off_records_per_s"` // each window without compaction
	OnRecordsPerS      []float64 `json:"on_records_per_s"`  // each window with Compact looping
	OffMeanRecordsPerS float64   `json:"off_mean_records_per_s"`
	OnMeanRecordsPerS  float64   `json:"on_mean_records_per_s"`
	CompactCalls       int64     `json:"compact_calls"` // Compact calls finished during the on windows
	CompactMeanMs      float64   `json:"compact_mean_ms"`
	Produced           int64     `json:"produced"`
	FinalCompactS      float64   `json:"final_compact_s"` // one Compact call once the producers stopped
	PeakRSSBytes       int64     `json:"peak_rss_bytes"`
}

// runCompact produces keyed records (keys key-0 ... key-<keys-1>, in turn)
// to a compacted topic as fast as the producers go, and measures the
// records acknowledged per second over 2*rounds windows: without
// compaction, then with a goroutine calling Log.Compact on the topic in a
// loop, and so on. The background compaction loop is kept out (its check
// interval is set to a day), so that the windows without compaction have
// none.
func runCompact(keys, size, partitions, replicas int, codec string, producers int, window time.Duration, rounds int, cpuprofile string) (compactResult, error) {
	r := compactResult{Keys: keys, Size: size, Partitions: partitions, Replicas: replicas, Codec: codec, Producers: producers, WindowS: window.Seconds()}
	comp, err := parseCodec(codec)
	if err != nil {
		return r, err
	}
	if replicas != 1 && replicas != 3 {
		return r, fmt.Errorf("-replicas %d: want 1 or 3", replicas)
	}
	if rounds < 1 || window <= 0 {
		return r, fmt.Errorf("-compact-rounds %d, -compact-window %v: want at least 1 and more than 0", rounds, window)
	}
	dir, err := os.MkdirTemp("", "replog-bench-")
	if err != nil {
		return r, err
	}
	defer os.RemoveAll(dir)
	logs, _, err := openNodes(dir, replicas, 24*time.Hour, nil)
	if err != nil {
		return r, err
	}
	defer func() {
		for _, l := range logs {
			l.Close()
		}
	}()
	ctx := context.Background()
	t, err := logs[0].CreateTopic(ctx, "bench", replog.TopicConfig{
		Partitions: partitions, Replicas: replicas, Compression: comp, Cleanup: replog.CleanupCompact,
	})
	if err != nil {
		return r, err
	}

	value := make([]byte, size)
	for i := range value {
		value[i] = byte('a' + i%26)
	}
	keyList := make([][]byte, keys)
	for i := range keyList {
		keyList[i] = fmt.Appendf(nil, "key-%d", i)
	}
	var acked, failed atomic.Int64
	var firstErr atomic.Value
	pctx, stopProducing := context.WithCancel(ctx)
	defer stopProducing()
	var wg sync.WaitGroup
	for g := range producers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p, err := replog.NewProducer(t, replog.Bytes(), nil)
			if err != nil {
				firstErr.CompareAndSwap(nil, err)
				return
			}
			defer p.Close()
			for i := g; pctx.Err() == nil; i += producers {
				p.ProduceAsync(ctx, replog.Message[[]byte]{Key: keyList[i%keys], Value: value}, func(_ replog.Position, err error) {
					if err != nil {
						failed.Add(1)
						firstErr.CompareAndSwap(nil, err)
						return
					}
					acked.Add(1)
				})
			}
			p.Flush(ctx)
		}()
	}

	// The compaction loop, started and stopped around the "on" windows.
	var calls, callNs atomic.Int64
	var compactErr error
	startCompacting := func() (stop func()) {
		// A deadline of its own: without one, each call would get 30s.
		cctx, cancel := context.WithTimeout(ctx, time.Hour)
		done := make(chan struct{})
		go func() {
			defer close(done)
			for cctx.Err() == nil {
				s := time.Now()
				err := logs[0].Compact(cctx, "bench")
				if cctx.Err() != nil {
					return // stopped part way: not counted
				}
				if err != nil {
					compactErr = err
					return
				}
				calls.Add(1)
				callNs.Add(int64(time.Since(s)))
			}
		}()
		return func() { cancel(); <-done }
	}

	// A first second lets the producers fill their pipelines.
	time.Sleep(time.Second)
	if cpuprofile != "" {
		f, err := os.Create(cpuprofile)
		if err != nil {
			return r, err
		}
		defer f.Close()
		pprof.StartCPUProfile(f)
		defer pprof.StopCPUProfile()
	}
	for range rounds {
		for _, on := range []bool{false, true} {
			var stop func()
			if on {
				stop = startCompacting()
			}
			a0, s := acked.Load(), time.Now()
			time.Sleep(window)
			rate := float64(acked.Load()-a0) / time.Since(s).Seconds()
			if on {
				stop()
				r.OnRecordsPerS = append(r.OnRecordsPerS, rate)
			} else {
				r.OffRecordsPerS = append(r.OffRecordsPerS, rate)
			}
		}
	}
	if cpuprofile != "" {
		pprof.StopCPUProfile()
	}
	stopProducing()
	wg.Wait()
	if e := firstErr.Load(); e != nil {
		return r, fmt.Errorf("%d produces failed, first: %v", failed.Load(), e)
	}
	if compactErr != nil {
		return r, fmt.Errorf("compact: %w", compactErr)
	}
	// What is left to compact once the producers stop: one call.
	cctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	s := time.Now()
	if err := logs[0].Compact(cctx, "bench"); err != nil {
		return r, fmt.Errorf("compact after the run: %w", err)
	}
	r.FinalCompactS = time.Since(s).Seconds()
	r.OffMeanRecordsPerS, r.OnMeanRecordsPerS = mean(r.OffRecordsPerS), mean(r.OnRecordsPerS)
	r.CompactCalls = calls.Load()
	if r.CompactCalls > 0 {
		r.CompactMeanMs = float64(callNs.Load()) / float64(r.CompactCalls) / 1e6
	}
	r.Produced = acked.Load()
	r.PeakRSSBytes = peakRSS()
	return r, nil
}

func mean(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := 0.0
	for _, x := range xs {
		s += x
	}
	return s / float64(len(xs))
}

func printCompact(r compactResult) {
	fmt.Printf("produce with compaction: %d keys, records of %d B, %d partitions, %d replicas, codec %s, %d producers, %d windows of %v\n",
		r.Keys, r.Size, r.Partitions, r.Replicas, r.Codec, r.Producers, len(r.OffRecordsPerS)+len(r.OnRecordsPerS), time.Duration(r.WindowS*float64(time.Second)))
	fmt.Printf("  without compaction: %.0f records/s (windows: %s)\n", r.OffMeanRecordsPerS, rates(r.OffRecordsPerS))
	fmt.Printf("  Compact looping:    %.0f records/s (windows: %s)\n", r.OnMeanRecordsPerS, rates(r.OnRecordsPerS))
	if r.CompactCalls == 0 {
		fmt.Printf("  no Compact call finished within a window; %d records produced\n", r.Produced)
	} else {
		fmt.Printf("  %d Compact calls finished within the windows, %.0f ms each on average; %d records produced\n",
			r.CompactCalls, r.CompactMeanMs, r.Produced)
	}
	fmt.Printf("  one Compact call once the producers stopped: %.1f s; peak RSS %.1f MiB\n", r.FinalCompactS, float64(r.PeakRSSBytes)/(1<<20))
}

func rates(xs []float64) string {
	s := ""
	for i, x := range xs {
		if i > 0 {
			s += ", "
		}
		s += fmt.Sprintf("%.0f", x)
	}
	return s
}
