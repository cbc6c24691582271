package replogprom

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/require"

	"github.com/replog/replog"
)

func TestHistogram(t *testing.T) {
	d := prometheus.NewDesc("replog_test_seconds", "Test.", nil, nil)
	type bucket struct {
		le    float64
		count uint64
	}
	for _, tc := range []struct {
		name    string
		in      replog.Latency
		count   uint64
		sum     float64
		buckets []bucket
	}{{
		name:    "empty",
		in:      replog.Latency{Buckets: []replog.LatencyBucket{{UpperBound: time.Microsecond}}},
		buckets: []bucket{{1e-6, 0}},
	}, {
		name: "seconds",
		in: replog.Latency{Count: 3, Sum: 1500 * time.Microsecond, Buckets: []replog.LatencyBucket{
			{UpperBound: 512 * time.Microsecond, Count: 1},
			{UpperBound: 1024 * time.Microsecond, Count: 3},
		}},
		count: 3, sum: 0.0015,
		buckets: []bucket{{0.000512, 1}, {0.001024, 3}},
	}, {
		// An observation made while Stats read: in a bucket, not in Count.
		name: "count read before buckets",
		in: replog.Latency{Count: 2, Sum: time.Millisecond, Buckets: []replog.LatencyBucket{
			{UpperBound: time.Millisecond, Count: 3},
		}},
		count: 3, sum: 0.001,
		buckets: []bucket{{0.001, 3}},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			var m dto.Metric
			require.NoError(t, histogram(d, tc.in).Write(&m))
			h := m.GetHistogram()
			require.Equal(t, tc.count, h.GetSampleCount())
			require.InDelta(t, tc.sum, h.GetSampleSum(), 1e-12)
			var got []bucket
			for _, b := range h.GetBucket() {
				got = append(got, bucket{b.GetUpperBound(), b.GetCumulativeCount()})
			}
			require.Equal(t, tc.buckets, got)
		})
	}
}

func TestLabelValue(t *testing.T) {
	require.Equal(t, "billing", labelValue("billing"))
	require.Equal(t, "émile", labelValue("émile"))
	require.Equal(t, `"a\xffb"`, labelValue("a\xffb"))
	require.NotEqual(t, labelValue("a\xffb"), labelValue("a\xfeb"))
}

// A group name that is not UTF-8 is exported, not a failed scrape.
func TestGroupNameNotUTF8(t *testing.T) {
	d := prometheus.NewDesc("replog_test", "Test.", []string{"group"}, nil)
	var m dto.Metric
	require.Error(t, constMetric(d, prometheus.GaugeValue, 1, "a\xffb").Write(&m), "invalid metric, not a panic")
	require.NoError(t, constMetric(d, prometheus.GaugeValue, 1, labelValue("a\xffb")).Write(&m))
}
