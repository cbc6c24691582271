// Package metrics holds the lock-free counters and latency histograms that
// replog's hot paths update and [replog.Log.Stats] reads.
package metrics

import (
	"math/bits"
	"sync/atomic"
	"time"
)

// buckets is the number of latency buckets: bucket i counts durations in
// [2^(i-1), 2^i) microseconds (bucket 0: below 1µs), so the last covers
// about 2^38 µs and above.
const buckets = 40

// Histogram records durations in power-of-two buckets with atomics: no
// lock and no allocation per observation. The zero value is ready to use.
type Histogram struct {
	sum     atomic.Int64 // ns
	max     atomic.Int64 // ns
	buckets [buckets]atomic.Uint64
}

// Observe records d.
func (h *Histogram) Observe(d time.Duration) {
	if d < 0 {
		d = 0
	}
	us := uint64(d / time.Microsecond)
	i := min(bits.Len64(us), buckets-1)
	h.buckets[i].Add(1)
	h.sum.Add(int64(d))
	for {
		m := h.max.Load()
		if int64(d) <= m || h.max.CompareAndSwap(m, int64(d)) {
			break
		}
	}
}

// Summary is a histogram's figures at one moment.
type Summary struct {
	Count uint64
	Sum   time.Duration
	// P50, P99 are upper bounds of the bucket the quantile falls in: at
	// most twice the true value.
	P50, P99, Max time.Duration
	// Buckets holds the cumulative count of observations below each bound
	// in Bounds (Prometheus's le buckets, but for a value exactly on a
	// bound). Its last equals Count.
	Buckets []uint64
}

// Bounds are the upper bounds of the buckets, for Summary.Buckets.
var Bounds = func() []time.Duration {
	b := make([]time.Duration, buckets)
	for i := range b {
		b[i] = time.Duration(uint64(1)<<i) * time.Microsecond
	}
	return b
}()

// Summary returns the histogram's figures. Count is the buckets' total,
// so that the two agree; Sum and Max may already include an observation
// being recorded meanwhile.
func (h *Histogram) Summary() Summary {
	s := Summary{Sum: time.Duration(h.sum.Load()), Max: time.Duration(h.max.Load()), Buckets: make([]uint64, buckets)}
	var total uint64
	for i := range h.buckets {
		total += h.buckets[i].Load()
		s.Buckets[i] = total
	}
	s.Count = total
	quantile := func(q float64) time.Duration {
		if total == 0 {
			return 0
		}
		rank := uint64(q*float64(total-1)) + 1
		for i, c := range s.Buckets {
			if c >= rank {
				return min(Bounds[i], s.Max)
			}
		}
		return s.Max
	}
	s.P50, s.P99 = quantile(0.5), quantile(0.99)
	return s
}
