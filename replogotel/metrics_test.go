package replogotel_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"go.uber.org/goleak"

	"github.com/replog/replog"
	"github.com/replog/replog/replogotel"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func openMem(t *testing.T, hooks ...replog.Hook) *replog.Log {
	l, err := replog.Open("", &replog.Options{InMemory: true, Hooks: hooks})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, l.Close()) })
	return l
}

// point finds the int64 point of the named metric whose attributes include
// attrs, and checks the metric's unit.
func point(t *testing.T, rm *metricdata.ResourceMetrics, name, unit string, attrs ...attribute.KeyValue) (int64, bool) {
	t.Helper()
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name != name {
				continue
			}
			require.Equal(t, unit, m.Unit, name)
			var dps []metricdata.DataPoint[int64]
			switch d := m.Data.(type) {
			case metricdata.Sum[int64]:
				dps = d.DataPoints
			case metricdata.Gauge[int64]:
				dps = d.DataPoints
			default:
				t.Fatalf("%s: unexpected data %T", name, m.Data)
			}
		next:
			for _, dp := range dps {
				for _, kv := range attrs {
					if v, ok := dp.Attributes.Value(kv.Key); !ok || v != kv.Value {
						continue next
					}
				}
				return dp.Value, true
			}
		}
	}
	return 0, false
}

// The metrics read through an SDK reader: the records produced, the high
// watermark and a group's lag and committed offset, per partition; then
// Close stops the callback.
func TestMetrics(t *testing.T) {
	ctx := testCtx(t)
	l := openMem(t)
	tp, err := l.CreateTopic(ctx, "orders", replog.TopicConfig{Partitions: 2})
	require.NoError(t, err)

	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer func() { require.NoError(t, mp.Shutdown(context.Background())) }()
	m, err := replogotel.NewMetrics(l, mp)
	require.NoError(t, err)
	defer m.Close()

	p, err := replog.NewProducer(tp, replog.String(), nil)
	require.NoError(t, err)
	defer p.Close()
	zero := 0
	for range 10 {
		_, err := p.Produce(ctx, replog.Message[string]{Value: "v", Partition: &zero})
		require.NoError(t, err)
	}

	c, err := replog.NewConsumer(tp, replog.String(), &replog.ConsumerOptions{Group: "billing"})
	require.NoError(t, err)
	defer c.Close()
	for n := 0; n < 10; {
		recs, err := c.Poll(ctx)
		require.NoError(t, err)
		n += len(recs)
	}
	require.NoError(t, c.CommitOffsets(ctx, map[int]int64{0: 4}))

	var rm metricdata.ResourceMetrics
	require.NoError(t, reader.Collect(ctx, &rm))
	topic := attribute.String("messaging.destination.name", "orders")
	part0 := attribute.String("messaging.destination.partition.id", "0")
	part1 := attribute.String("messaging.destination.partition.id", "1")
	group := attribute.String("messaging.consumer.group.name", "billing")
	node := attribute.Int64("replog.node.id", 1)

	check := func(name, unit string, want int64, attrs ...attribute.KeyValue) {
		t.Helper()
		v, ok := point(t, &rm, name, unit, attrs...)
		require.True(t, ok, "%s %v", name, attrs)
		require.Equal(t, want, v, "%s %v", name, attrs)
	}
	check("messaging.client.sent.messages", "{message}", 10, node, topic, part0,
		attribute.String("messaging.system", "replog"), attribute.String("messaging.operation.name", "send"))
	check("messaging.client.sent.messages", "{message}", 0, topic, part1)
	check("messaging.client.consumed.messages", "{message}", 10, topic, part0)
	check("replog.client.sent.batches", "{batch}", 10, topic, part0) // Produce waits: one record a batch
	check("replog.partition.high_watermark", "{offset}", 10, topic, part0)
	check("replog.partition.high_watermark", "{offset}", 0, topic, part1)
	check("replog.partition.log_start", "{offset}", 0, topic, part0)
	check("replog.partition.leader", "1", 1, topic, part0)
	check("replog.group.lag", "{message}", 6, group, topic, part0)
	check("replog.group.lag", "{message}", 0, group, topic, part1)
	check("replog.group.committed", "{offset}", 4, group, topic, part0)
	check("replog.group.member.count", "{member}", 1, group, topic)
	check("replog.node.producer.count", "{producer}", 1, node)
	check("replog.node.consumer.count", "{consumer}", 1, node)
	check("replog.client.produce.errors", "{batch}", 0, topic, part0)
	_, ok := point(t, &rm, "replog.group.committed", "{offset}", group, part1)
	require.False(t, ok, "partition 1 has no committed offset")
	_, ok = point(t, &rm, "replog.share.records", "{message}")
	require.False(t, ok, "no share member handled a record")
	stored, _ := point(t, &rm, "replog.partition.stored", "By", topic, part0)
	require.Positive(t, stored)
	applies, _ := point(t, &rm, "replog.store.apply.operations", "{operation}", node)
	require.Positive(t, applies)

	require.NoError(t, m.Close())
	require.NoError(t, m.Close(), "twice")
	rm = metricdata.ResourceMetrics{}
	require.NoError(t, reader.Collect(ctx, &rm))
	_, ok = point(t, &rm, "replog.partition.high_watermark", "{offset}")
	require.False(t, ok, "observed after Close")
}

// Share groups: a member acquired 5 records, accepted 0 and 1, released
// 2, rejected 3 and holds 4.
func TestMetricsShareGroups(t *testing.T) {
	ctx := testCtx(t)
	l := openMem(t)
	tp, err := l.CreateTopic(ctx, "jobs", replog.TopicConfig{Partitions: 1})
	require.NoError(t, err)
	p, err := replog.NewProducer(tp, replog.String(), nil)
	require.NoError(t, err)
	defer p.Close()
	for range 5 {
		_, err := p.Produce(ctx, replog.Message[string]{Value: "v"})
		require.NoError(t, err)
	}
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

	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer func() { require.NoError(t, mp.Shutdown(context.Background())) }()
	m, err := replogotel.NewMetrics(l, mp)
	require.NoError(t, err)
	defer m.Close()
	var rm metricdata.ResourceMetrics
	require.NoError(t, reader.Collect(ctx, &rm))

	topic := attribute.String("messaging.destination.name", "jobs")
	part := attribute.String("messaging.destination.partition.id", "0")
	group := attribute.String("messaging.consumer.group.name", "workers")
	node := attribute.Int64("replog.node.id", 1)
	check := func(name, unit string, want int64, attrs ...attribute.KeyValue) {
		t.Helper()
		v, ok := point(t, &rm, name, unit, attrs...)
		require.True(t, ok, "%s %v", name, attrs)
		require.Equal(t, want, v, "%s %v", name, attrs)
	}
	for kind, want := range map[string]int64{"acquired": 5, "accepted": 2, "released": 1, "rejected": 1, "dead_lettered": 0} {
		check("replog.share.records", "{message}", want, node, topic, part, attribute.String("replog.share.kind", kind))
	}
	check("replog.share_group.member.count", "{member}", 1, node, group)
	check("replog.share_group.lag", "{message}", 2, node, group, topic, part)
	check("replog.share_group.start", "{offset}", 2, node, group, topic, part)
	check("replog.share_group.acquired", "{message}", 1, node, group, topic, part)
	check("replog.share_group.available", "{message}", 1, node, group, topic, part)
}

func TestNewMetricsNilLog(t *testing.T) {
	_, err := replogotel.NewMetrics(nil, nil)
	require.Error(t, err)
}
