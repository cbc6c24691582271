package main

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/replog/replog"
)

// txnResult is what -txn measures: for each transaction size, transactions
// and records per second of transactional sessions (Begin, the records,
// Commit), beside an idempotent producer that flushes after as many
// records (what a service without transactions waits for to know its
// writes are durable).
type txnResult struct {
	Size       int      `json:"size"`
	Partitions int      `json:"partitions"`
	Replicas   int      `json:"replicas"`
	Sessions   int      `json:"sessions"`
	WindowS    float64  `json:"window_s"`
	Rows       []txnRow `json:"rows"`
}

type txnRow struct {
	RecordsPerTxn int     `json:"records_per_txn"`
	TxnPerS       float64 `json:"txn_per_s"`
	TxnRecordsPS  float64 `json:"txn_records_per_s"`
	TxnP50Ms      float64 `json:"txn_p50_ms"`
	TxnP99Ms      float64 `json:"txn_p99_ms"`
	// The idempotent producer flushing every RecordsPerTxn records.
	FlushesPerS     float64 `json:"idempotent_flushes_per_s"`
	IdemRecordsPerS float64 `json:"idempotent_records_per_s"`
}

func parseSizes(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("-txn %q: want sizes of 1 or more, comma-separated", s)
		}
		out = append(out, n)
	}
	return out, nil
}

// runTxn runs, for each size, a window of transactional sessions (each its
// own transactional id, on its own goroutine), then a window of as many
// idempotent producers flushing every size records, on one topic.
func runTxn(sizes []int, size, partitions, replicas, sessions int, window time.Duration) (*txnResult, error) {
	r := &txnResult{Size: size, Partitions: partitions, Replicas: replicas, Sessions: sessions, WindowS: window.Seconds()}
	if replicas != 1 && replicas != 3 {
		return r, fmt.Errorf("-replicas %d: want 1 or 3", replicas)
	}
	dir, err := os.MkdirTemp("", "replog-bench-")
	if err != nil {
		return r, err
	}
	defer os.RemoveAll(dir)
	logs, _, err := openNodes(dir, replicas, 0, nil)
	defer func() {
		for _, l := range logs {
			if l != nil {
				l.Close()
			}
		}
	}()
	if err != nil {
		return r, err
	}
	ctx := context.Background()
	t, err := logs[0].CreateTopic(ctx, "bench", replog.TopicConfig{Partitions: partitions, Replicas: replicas})
	if err != nil {
		return r, err
	}
	value := make([]byte, size)
	for i := range value {
		value[i] = byte('a' + i%26)
	}
	for _, n := range sizes {
		row := txnRow{RecordsPerTxn: n}
		txns, lat, err := txnWindow(ctx, logs[0], t, value, n, sessions, window)
		if err != nil {
			return r, err
		}
		row.TxnPerS = float64(txns) / window.Seconds()
		row.TxnRecordsPS = row.TxnPerS * float64(n)
		row.TxnP50Ms, row.TxnP99Ms, _ = quantilesMs(lat)
		flushes, err := flushWindow(ctx, t, value, n, sessions, window)
		if err != nil {
			return r, err
		}
		row.FlushesPerS = float64(flushes) / window.Seconds()
		row.IdemRecordsPerS = row.FlushesPerS * float64(n)
		r.Rows = append(r.Rows, row)
	}
	return r, nil
}

// txnWindow runs sessions transactional sessions of n records per
// transaction for window, and returns the transactions committed and each
// one's time from Begin to Commit's return.
func txnWindow(ctx context.Context, l *replog.Log, t *replog.Topic, value []byte, n, sessions int, window time.Duration) (int64, []time.Duration, error) {
	var done atomic.Int64
	var mu sync.Mutex
	var lat []time.Duration
	errs := make([]error, sessions)
	deadline := time.Now().Add(window)
	var wg sync.WaitGroup
	for s := range sessions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tp, err := l.NewTransactionalProducer(ctx, fmt.Sprintf("bench-%d-%d", n, s), nil)
			if err != nil {
				errs[s] = err
				return
			}
			defer tp.Close()
			p, err := replog.NewProducer(t, replog.Bytes(), &replog.ProducerOptions{Transactional: tp})
			if err != nil {
				errs[s] = err
				return
			}
			defer p.Close()
			var mine []time.Duration
			for i := 0; time.Now().Before(deadline); {
				start := time.Now()
				if err := tp.Begin(); err != nil {
					errs[s] = err
					return
				}
				for range n {
					p.ProduceAsync(ctx, replog.Message[[]byte]{Key: []byte(strconv.Itoa(i)), Value: value}, nil)
					i++
				}
				if err := tp.Commit(ctx); err != nil {
					errs[s] = err
					return
				}
				mine = append(mine, time.Since(start))
				done.Add(1)
			}
			mu.Lock()
			lat = append(lat, mine...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return 0, nil, err
		}
	}
	return done.Load(), lat, nil
}

// flushWindow runs sessions idempotent producers that produce n records and
// Flush, in a loop, for window, and returns the flushes done.
func flushWindow(ctx context.Context, t *replog.Topic, value []byte, n, sessions int, window time.Duration) (int64, error) {
	var done atomic.Int64
	errs := make([]error, sessions)
	deadline := time.Now().Add(window)
	var wg sync.WaitGroup
	for s := range sessions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p, err := replog.NewProducer(t, replog.Bytes(), nil)
			if err != nil {
				errs[s] = err
				return
			}
			defer p.Close()
			var failed atomic.Int64
			for i := 0; time.Now().Before(deadline); {
				for range n {
					p.ProduceAsync(ctx, replog.Message[[]byte]{Key: []byte(strconv.Itoa(i)), Value: value}, func(_ replog.Position, err error) {
						if err != nil {
							failed.Add(1)
						}
					})
					i++
				}
				if err := p.Flush(ctx); err != nil {
					errs[s] = err
					return
				}
				done.Add(1)
			}
			if f := failed.Load(); f > 0 {
				errs[s] = fmt.Errorf("%d records failed", f)
			}
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return 0, err
		}
	}
	return done.Load(), nil
}

func printTxn(r *txnResult) {
	fmt.Printf("transactions: %d partitions, %d replicas, %d sessions, values of %d B, windows of %.0f s\n",
		r.Partitions, r.Replicas, r.Sessions, r.Size, r.WindowS)
	fmt.Printf("%-16s %12s %14s %10s %10s | %16s %16s\n", "records/txn", "txn/s", "records/s", "p50 ms", "p99 ms", "idem. flushes/s", "idem. records/s")
	for _, row := range r.Rows {
		fmt.Printf("%-16d %12.0f %14.0f %10.2f %10.2f | %16.0f %16.0f\n", row.RecordsPerTxn, row.TxnPerS, row.TxnRecordsPS,
			row.TxnP50Ms, row.TxnP99Ms, row.FlushesPerS, row.IdemRecordsPerS)
	}
}
