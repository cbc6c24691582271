package replogprom_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/replog/replog"
	"github.com/replog/replog/replogprom"
	"github.com/replog/replog/replogtest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func openMem(t *testing.T) *replog.Log {
	l, err := replog.Open("", &replog.Options{InMemory: true})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, l.Close()) })
	return l
}

// produce writes n one-byte records to a partition, one batch each.
func produce(ctx context.Context, t *testing.T, p *replog.Producer[string], part, n int) {
	for range n {
		_, err := p.Produce(ctx, replog.Message[string]{Partition: &part, Value: "x"})
		require.NoError(t, err)
	}
}

// gather returns the families of a gather by name.
func gather(t *testing.T, g prometheus.Gatherer) map[string]*dto.MetricFamily {
	t.Helper()
	fams, err := g.Gather()
	require.NoError(t, err)
	m := map[string]*dto.MetricFamily{}
	for _, f := range fams {
		m[f.GetName()] = f
	}
	return m
}

// byLabels returns a family's values by label values, joined with "/" in
// the order of the names given.
func byLabels(f *dto.MetricFamily, names ...string) map[string]float64 {
	out := map[string]float64{}
	for _, m := range f.GetMetric() {
		var key []string
		for _, n := range names {
			for _, l := range m.GetLabel() {
				if l.GetName() == n {
					key = append(key, l.GetValue())
				}
			}
		}
		switch {
		case m.Gauge != nil:
			out[strings.Join(key, "/")] = m.GetGauge().GetValue()
		case m.Counter != nil:
			out[strings.Join(key, "/")] = m.GetCounter().GetValue()
		}
	}
	return out
}

// A topic of three partitions with 3, 9 and 2 records; group g read the
// first 3, 5 and 2 and committed, so it lags by 4 on partition 1.
func TestCollector(t *testing.T) {
	ctx := testCtx(t)
	l := openMem(t)
	tp, err := l.CreateTopic(ctx, "events", replog.TopicConfig{Partitions: 3})
	require.NoError(t, err)
	p, err := replog.NewProducer(tp, replog.String(), nil)
	require.NoError(t, err)
	defer p.Close()
	produce(ctx, t, p, 0, 3)
	produce(ctx, t, p, 1, 5)
	produce(ctx, t, p, 2, 2)

	c, err := replog.NewConsumer(tp, replog.String(), &replog.ConsumerOptions{Group: "g"})
	require.NoError(t, err)
	defer c.Close()
	n := 0
	for _, err := range c.Records(ctx) {
		require.NoError(t, err)
		if n++; n == 10 {
			break
		}
	}
	require.NoError(t, c.Commit(ctx))
	produce(ctx, t, p, 1, 4) // the consumer may read ahead, but commits nothing more

	col := replogprom.NewCollector(l)
	reg := prometheus.NewPedanticRegistry() // checks what is collected against Describe
	require.NoError(t, reg.Register(col))

	t.Run("values", func(t *testing.T) {
		const want = `
# HELP replog_partition_high_watermark Offset the next record appended to the partition gets, as this replica has applied it.
# TYPE replog_partition_high_watermark gauge
replog_partition_high_watermark{node="1",partition="0",topic="events"} 3
replog_partition_high_watermark{node="1",partition="1",topic="events"} 9
replog_partition_high_watermark{node="1",partition="2",topic="events"} 2
# HELP replog_produced_records_total Records this node's producers wrote to the partition.
# TYPE replog_produced_records_total counter
replog_produced_records_total{node="1",partition="0",topic="events"} 3
replog_produced_records_total{node="1",partition="1",topic="events"} 9
replog_produced_records_total{node="1",partition="2",topic="events"} 2
# HELP replog_produced_bytes_total Keys, values and headers, uncompressed, of the records this node's producers wrote to the partition.
# TYPE replog_produced_bytes_total counter
replog_produced_bytes_total{node="1",partition="0",topic="events"} 3
replog_produced_bytes_total{node="1",partition="1",topic="events"} 9
replog_produced_bytes_total{node="1",partition="2",topic="events"} 2
# HELP replog_group_lag Records between the group's committed offset (the log start if it committed nothing) and the high watermark, as this node sees it.
# TYPE replog_group_lag gauge
replog_group_lag{group="g",node="1",partition="0",topic="events"} 0
replog_group_lag{group="g",node="1",partition="1",topic="events"} 4
replog_group_lag{group="g",node="1",partition="2",topic="events"} 0
# HELP replog_group_committed_offset Next offset the group reads from the partition, as committed.
# TYPE replog_group_committed_offset gauge
replog_group_committed_offset{group="g",node="1",partition="0",topic="events"} 3
replog_group_committed_offset{group="g",node="1",partition="1",topic="events"} 5
replog_group_committed_offset{group="g",node="1",partition="2",topic="events"} 2
# HELP replog_group_members Members of the consumer group.
# TYPE replog_group_members gauge
replog_group_members{group="g",node="1",topic="events"} 1
# HELP replog_partition_log_start_offset First offset the partition retains, as this replica has applied it.
# TYPE replog_partition_log_start_offset gauge
replog_partition_log_start_offset{node="1",partition="0",topic="events"} 0
replog_partition_log_start_offset{node="1",partition="1",topic="events"} 0
replog_partition_log_start_offset{node="1",partition="2",topic="events"} 0
# HELP replog_partition_is_leader 1 if this node leads the partition, else 0.
# TYPE replog_partition_is_leader gauge
replog_partition_is_leader{node="1",partition="0",topic="events"} 1
replog_partition_is_leader{node="1",partition="1",topic="events"} 1
replog_partition_is_leader{node="1",partition="2",topic="events"} 1
# HELP replog_open_producers Open producers.
# TYPE replog_open_producers gauge
replog_open_producers{node="1"} 1
# HELP replog_open_consumers Open consumers.
# TYPE replog_open_consumers gauge
replog_open_consumers{node="1"} 1
# HELP replog_produce_errors_total Record batches this node's producers failed to write.
# TYPE replog_produce_errors_total counter
replog_produce_errors_total{node="1"} 0
`
		require.NoError(t, testutil.GatherAndCompare(reg, strings.NewReader(want),
			"replog_partition_high_watermark", "replog_produced_records_total", "replog_produced_bytes_total",
			"replog_group_lag", "replog_group_committed_offset", "replog_group_members",
			"replog_partition_log_start_offset", "replog_partition_is_leader",
			"replog_open_producers", "replog_open_consumers", "replog_produce_errors_total"))

		fams := gather(t, reg)
		// The consumer read 10 records, and its read-ahead perhaps some of
		// the 4 new ones (one batch per Produce call: any of them).
		fetched := byLabels(fams["replog_fetched_records_total"], "partition")
		require.Equal(t, 3.0, fetched["0"])
		require.GreaterOrEqual(t, fetched["1"], 5.0)
		require.LessOrEqual(t, fetched["1"], 9.0)
		require.Equal(t, 2.0, fetched["2"])
		// One batch per Produce call.
		require.Equal(t, map[string]float64{"0": 3, "1": 9, "2": 2}, byLabels(fams["replog_produced_batches_total"], "partition"))
		require.Equal(t, map[string]float64{"0": 1, "1": 1, "2": 1}, byLabels(fams["replog_partition_leader_id"], "partition"))
		for part, v := range byLabels(fams["replog_partition_stored_bytes"], "partition") {
			require.Positive(t, v, part)
		}
		require.Positive(t, byLabels(fams["replog_group_generation"], "group")["g"])
		require.Positive(t, byLabels(fams["replog_raft_elections_total"])[""])
		start := byLabels(fams["replog_start_time_seconds"])[""]
		require.InDelta(t, float64(time.Now().Unix()), start, 60)

		h := fams["replog_apply_duration_seconds"].GetMetric()[0].GetHistogram()
		require.NotZero(t, h.GetSampleCount(), "the records were applied")
		require.Positive(t, h.GetSampleSum())
		prev := uint64(0)
		for _, b := range h.GetBucket() {
			require.GreaterOrEqual(t, b.GetCumulativeCount(), prev)
			require.LessOrEqual(t, b.GetCumulativeCount(), h.GetSampleCount())
			prev = b.GetCumulativeCount()
		}
	})

	t.Run("lint", func(t *testing.T) {
		problems, err := testutil.CollectAndLint(col)
		require.NoError(t, err)
		require.Empty(t, problems)
	})

	t.Run("every family is described and collected", func(t *testing.T) {
		descs := make(chan *prometheus.Desc, 100)
		col.Describe(descs)
		close(descs)
		var described []string
		for d := range descs {
			described = append(described, d.String())
		}
		fams := gather(t, reg)
		// All but the replica lag, which a partition of one replica has
		// none of, and the share group metrics, with no share group.
		absent := []string{"replog_partition_replica_lag_entries", "replog_share_records_total",
			"replog_share_group_members", "replog_share_group_lag", "replog_share_group_start_offset",
			"replog_share_group_acquired_records", "replog_share_group_available_records"}
		require.Len(t, described, len(fams)+len(absent))
		for _, name := range absent {
			require.NotContains(t, fams, name)
		}
		for name := range fams {
			require.True(t, strings.HasPrefix(name, "replog_"), name)
		}
	})

	t.Run("registry", func(t *testing.T) {
		reg := prometheus.NewRegistry()
		require.NoError(t, reg.Register(replogprom.NewCollector(l)))
		gather(t, reg)
		// A second collector of the same node would export the same
		// series: refused, not merged.
		err := reg.Register(replogprom.NewCollector(l))
		var are prometheus.AlreadyRegisteredError
		require.True(t, errors.As(err, &are), "%v", err)
	})

	t.Run("closed", func(t *testing.T) {
		l := openMem(t)
		reg := prometheus.NewPedanticRegistry()
		require.NoError(t, reg.Register(replogprom.NewCollector(l)))
		require.NoError(t, l.Close())
		fams := gather(t, reg)
		require.Contains(t, fams, "replog_produce_errors_total")
		require.NotContains(t, fams, "replog_partition_high_watermark")
	})
}

// A share group on a one-partition topic of 5 records: a member acquired
// them all, accepted 0 and 1, released 2, rejected 3 and holds 4.
func TestCollectorShareGroups(t *testing.T) {
	ctx := testCtx(t)
	l := openMem(t)
	tp, err := l.CreateTopic(ctx, "jobs", replog.TopicConfig{Partitions: 1})
	require.NoError(t, err)
	p, err := replog.NewProducer(tp, replog.String(), nil)
	require.NoError(t, err)
	defer p.Close()
	produce(ctx, t, p, 0, 5)

	c, err := replog.NewShareConsumer(tp, "workers", replog.String(), &replog.ShareConsumerOptions{LockDuration: time.Minute})
	require.NoError(t, err)
	defer c.Close()
	var recs []replog.ShareRecord[string]
	for len(recs) < 5 {
		more, err := c.Poll(ctx)
		require.NoError(t, err)
		recs = append(recs, more...)
	}
	require.NoError(t, c.AckAll(ctx, recs[:2]))
	require.NoError(t, recs[2].Release(ctx, 0))
	require.NoError(t, recs[3].Reject(ctx))

	reg := prometheus.NewPedanticRegistry()
	require.NoError(t, reg.Register(replogprom.NewCollector(l)))
	const want = `
# HELP replog_share_records_total Records of the partition that share group members on this node acquired, accepted, released, rejected or dead-lettered, by kind.
# TYPE replog_share_records_total counter
replog_share_records_total{kind="acquired",node="1",partition="0",topic="jobs"} 5
replog_share_records_total{kind="accepted",node="1",partition="0",topic="jobs"} 2
replog_share_records_total{kind="released",node="1",partition="0",topic="jobs"} 1
replog_share_records_total{kind="rejected",node="1",partition="0",topic="jobs"} 1
replog_share_records_total{kind="dead_lettered",node="1",partition="0",topic="jobs"} 0
# HELP replog_share_group_members Members of the share group holding a record under an unexpired lock.
# TYPE replog_share_group_members gauge
replog_share_group_members{group="workers",node="1"} 1
# HELP replog_share_group_lag Records from the share partition's start offset to the high watermark, as this node sees it, that are not done.
# TYPE replog_share_group_lag gauge
replog_share_group_lag{group="workers",node="1",partition="0",topic="jobs"} 2
# HELP replog_share_group_start_offset Share-partition start offset: every record before it is done.
# TYPE replog_share_group_start_offset gauge
replog_share_group_start_offset{group="workers",node="1",partition="0",topic="jobs"} 2
# HELP replog_share_group_acquired_records Records of the share partition under an unexpired lock.
# TYPE replog_share_group_acquired_records gauge
replog_share_group_acquired_records{group="workers",node="1",partition="0",topic="jobs"} 1
# HELP replog_share_group_available_records Records of the share partition in flight, waiting to be delivered again.
# TYPE replog_share_group_available_records gauge
replog_share_group_available_records{group="workers",node="1",partition="0",topic="jobs"} 1
`
	require.NoError(t, testutil.GatherAndCompare(reg, strings.NewReader(want),
		"replog_share_records_total", "replog_share_group_members", "replog_share_group_lag",
		"replog_share_group_start_offset", "replog_share_group_acquired_records", "replog_share_group_available_records"))
	problems, err := testutil.GatherAndLint(reg)
	require.NoError(t, err)
	require.Empty(t, problems)
}

// Scrapes while producers run (run with -race): counters and high
// watermarks only grow, and end at what was produced.
func TestCollectWhileProducing(t *testing.T) {
	ctx := testCtx(t)
	l := openMem(t)
	tp, err := l.CreateTopic(ctx, "events", replog.TopicConfig{Partitions: 2})
	require.NoError(t, err)
	reg := prometheus.NewPedanticRegistry()
	require.NoError(t, reg.Register(replogprom.NewCollector(l)))

	sum := func(fams map[string]*dto.MetricFamily, name string) float64 {
		var s float64
		for _, v := range byLabels(fams[name], "partition") {
			s += v
		}
		return s
	}
	const producers, each = 4, 200
	stop := make(chan struct{})
	scraped := make(chan int)
	go func() {
		var n int
		var produced, hw float64
		defer func() { scraped <- n }()
		for {
			fams, err := reg.Gather()
			if err != nil {
				t.Error(err)
				return
			}
			byName := map[string]*dto.MetricFamily{}
			for _, f := range fams {
				byName[f.GetName()] = f
			}
			p, h := sum(byName, "replog_produced_records_total"), sum(byName, "replog_partition_high_watermark")
			if p < produced || h < hw {
				t.Errorf("went back: produced %v after %v, high watermark %v after %v", p, produced, h, hw)
				return
			}
			produced, hw, n = p, h, n+1
			select {
			case <-stop:
				return
			default:
			}
		}
	}()

	var wg sync.WaitGroup
	for i := range producers {
		wg.Go(func() {
			p, err := replog.NewProducer(tp, replog.String(), nil)
			if err != nil {
				t.Error(err)
				return
			}
			defer p.Close()
			for j := range each {
				p.ProduceAsync(ctx, replog.Message[string]{Key: []byte(fmt.Sprint(j)), Value: fmt.Sprint(i)}, nil)
			}
			if err := p.Flush(ctx); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	close(stop)
	n := <-scraped
	require.Positive(t, n)
	t.Logf("%d scrapes while producing", n)

	fams := gather(t, reg)
	require.Equal(t, float64(producers*each), sum(fams, "replog_produced_records_total"))
	require.Equal(t, float64(producers*each), sum(fams, "replog_partition_high_watermark"))
}

// The collectors of a cluster's nodes share one registry: the node label
// tells their series apart.
func TestClusterSharesRegistry(t *testing.T) {
	ctx := testCtx(t)
	cl := replogtest.NewCluster(t, 3)
	_, err := cl.Log(0).CreateTopic(ctx, "events", replog.TopicConfig{Partitions: 2, Replicas: 3})
	require.NoError(t, err)
	reg := prometheus.NewPedanticRegistry()
	for i := range cl.Size() {
		require.NoError(t, reg.Register(replogprom.NewCollector(cl.Log(i))))
	}
	require.Eventually(t, func() bool {
		fams, err := reg.Gather()
		require.NoError(t, err)
		for _, f := range fams {
			if f.GetName() == "replog_partition_high_watermark" {
				return len(byLabels(f, "node", "partition")) == 6
			}
		}
		return false
	}, 10*time.Second, 10*time.Millisecond, "every node reports both partitions")
	problems, err := testutil.GatherAndLint(reg)
	require.NoError(t, err)
	require.Empty(t, problems)
}
