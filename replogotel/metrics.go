package replogotel

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"

	"github.com/replog/replog"
)

// scope is the instrumentation scope of the meters and tracers.
const scope = "github.com/replog/replog/replogotel"

var (
	systemAttr = semconv.MessagingSystemKey.String("replog")
	nodeIDKey  = attribute.Key("replog.node.id")
	quantile   = attribute.Key("replog.quantile")
	shareKind  = attribute.Key("replog.share.kind")
)

// Metrics exports a Log's [replog.Stats] as OpenTelemetry metrics (the list
// is in the package doc). It is safe for concurrent use.
type Metrics struct {
	l   *replog.Log
	reg metric.Registration

	closeOnce sync.Once
	closeErr  error

	sent, consumed, sentBytes, sentBatches, consumedBytes metric.Int64ObservableCounter
	produceErrors                                         metric.Int64ObservableCounter
	highWatermark, logStart, leader                       metric.Int64ObservableGauge
	stored                                                metric.Int64ObservableUpDownCounter

	groupLag, groupCommitted, groupGeneration metric.Int64ObservableGauge
	groupMembers                              metric.Int64ObservableUpDownCounter

	shareRecords                                        metric.Int64ObservableCounter
	shareLag, shareStart, shareAcquired, shareAvailable metric.Int64ObservableGauge
	shareMembers                                        metric.Int64ObservableUpDownCounter

	storeUsage, raftUsage, bufferUsage, producers, consumers metric.Int64ObservableUpDownCounter
	elections, retries                                       metric.Int64ObservableCounter
	apply, sync                                              latencyInstruments
}

// latencyInstruments export one [replog.Latency].
type latencyInstruments struct {
	ops      metric.Int64ObservableCounter
	time     metric.Float64ObservableCounter
	duration metric.Float64ObservableGauge
}

// NewMetrics registers l's instruments on mp (nil means the global
// provider, [otel.GetMeterProvider]) with a callback that reads l.Stats()
// at each collection. Call [Metrics.Close] to stop it; closing l is not
// enough (a closed Log still reports its counters).
func NewMetrics(l *replog.Log, mp metric.MeterProvider) (*Metrics, error) {
	if l == nil {
		return nil, errors.New("replogotel: nil Log")
	}
	if mp == nil {
		mp = otel.GetMeterProvider()
	}
	meter := mp.Meter(scope, metric.WithSchemaURL(semconv.SchemaURL))
	m := &Metrics{l: l}
	var errs []error
	counter := func(name, unit, desc string) metric.Int64ObservableCounter {
		i, err := meter.Int64ObservableCounter(name, metric.WithUnit(unit), metric.WithDescription(desc))
		errs = append(errs, err)
		return i
	}
	updown := func(name, unit, desc string) metric.Int64ObservableUpDownCounter {
		i, err := meter.Int64ObservableUpDownCounter(name, metric.WithUnit(unit), metric.WithDescription(desc))
		errs = append(errs, err)
		return i
	}
	gauge := func(name, unit, desc string) metric.Int64ObservableGauge {
		i, err := meter.Int64ObservableGauge(name, metric.WithUnit(unit), metric.WithDescription(desc))
		errs = append(errs, err)
		return i
	}
	latency := func(op, what string) latencyInstruments {
		var li latencyInstruments
		var err1, err2 error
		li.ops = counter("replog.store."+op+".operations", "{operation}", what)
		li.time, err1 = meter.Float64ObservableCounter("replog.store."+op+".time", metric.WithUnit("s"),
			metric.WithDescription("Time spent in "+what+"."))
		li.duration, err2 = meter.Float64ObservableGauge("replog.store."+op+".duration", metric.WithUnit("s"),
			metric.WithDescription("Quantiles of the duration of "+what+", by replog.quantile: bucket bounds, at most twice the true value."))
		errs = append(errs, err1, err2)
		return li
	}

	m.sent = counter("messaging.client.sent.messages", "{message}", "Records this node's producers wrote.")
	m.consumed = counter("messaging.client.consumed.messages", "{message}", "Records this node's consumers read from the partition's replica.")
	m.sentBytes = counter("replog.client.sent.bytes", "By", "Keys, values and headers of the records written, uncompressed.")
	m.sentBatches = counter("replog.client.sent.batches", "{batch}", "Batches this node's producers wrote.")
	m.produceErrors = counter("replog.client.produce.errors", "{batch}", "Batches this node's producers failed to write.")
	m.consumedBytes = counter("replog.client.consumed.bytes", "By", "Keys, values and headers of the records read, uncompressed.")
	m.highWatermark = gauge("replog.partition.high_watermark", "{offset}", "The offset of the partition's next record, as this replica applied it.")
	m.logStart = gauge("replog.partition.log_start", "{offset}", "The first offset the partition retains.")
	m.stored = updown("replog.partition.stored", "By", "Bytes the partition's replica stores.")
	m.leader = gauge("replog.partition.leader", "1", "1 if this node leads the partition, else 0.")

	m.groupLag = gauge("replog.group.lag", "{message}", "Records between the group's committed offset (or the log start) and the high watermark.")
	m.groupCommitted = gauge("replog.group.committed", "{offset}", "The next offset the group reads.")
	m.groupMembers = updown("replog.group.member.count", "{member}", "Members of the consumer group.")
	m.groupGeneration = gauge("replog.group.generation", "1", "The consumer group's generation.")

	m.shareRecords = counter("replog.share.records", "{message}", "Records of the partition share group members on this node acquired, accepted, released, rejected or dead-lettered, by replog.share.kind.")
	m.shareLag = gauge("replog.share_group.lag", "{message}", "Records from the share partition's start offset to the high watermark that are not done.")
	m.shareStart = gauge("replog.share_group.start", "{offset}", "The share-partition start offset: every record before it is done.")
	m.shareAcquired = gauge("replog.share_group.acquired", "{message}", "Records of the share partition under an unexpired lock.")
	m.shareAvailable = gauge("replog.share_group.available", "{message}", "Records of the share partition in flight, waiting to be delivered again.")
	m.shareMembers = updown("replog.share_group.member.count", "{member}", "Members of the share group holding a record under an unexpired lock.")

	m.storeUsage = updown("replog.node.store.usage", "By", "Disk used by the record store.")
	m.raftUsage = updown("replog.node.raft.usage", "By", "Disk used by the Raft logs and snapshots.")
	m.bufferUsage = updown("replog.node.buffer.usage", "By", "Memory held in producers' buffers and consumers' read-ahead.")
	m.producers = updown("replog.node.producer.count", "{producer}", "Open producers.")
	m.consumers = updown("replog.node.consumer.count", "{consumer}", "Open consumers.")
	m.elections = counter("replog.node.elections", "{election}", "Leaders this node saw elected, over all Raft groups.")
	m.retries = counter("replog.node.retries", "{request}", "Requests to a Raft group sent again.")
	m.apply = latency("apply", "applications of committed Raft entries to the record store")
	m.sync = latency("sync", "syncs (fsync) of the record store")
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}

	reg, err := meter.RegisterCallback(m.observe,
		m.sent, m.consumed, m.sentBytes, m.sentBatches, m.produceErrors, m.consumedBytes,
		m.highWatermark, m.logStart, m.stored, m.leader,
		m.groupLag, m.groupCommitted, m.groupMembers, m.groupGeneration,
		m.shareRecords, m.shareLag, m.shareStart, m.shareAcquired, m.shareAvailable, m.shareMembers,
		m.storeUsage, m.raftUsage, m.bufferUsage, m.producers, m.consumers,
		m.elections, m.retries,
		m.apply.ops, m.apply.time, m.apply.duration,
		m.sync.ops, m.sync.time, m.sync.duration)
	if err != nil {
		return nil, err
	}
	m.reg = reg
	return m, nil
}

// Close removes the callback: later collections no longer read the Log.
// Safe to call twice. The instruments stay registered (the API cannot
// remove them) but report nothing.
func (m *Metrics) Close() error {
	m.closeOnce.Do(func() { m.closeErr = m.reg.Unregister() })
	return m.closeErr
}

// observe is the callback: one Stats snapshot for every instrument.
func (m *Metrics) observe(_ context.Context, o metric.Observer) error {
	s := m.l.Stats()
	node := nodeIDKey.Int64(int64(s.Node.ID))

	for _, p := range s.Partitions {
		dest := semconv.MessagingDestinationName(p.Topic)
		part := semconv.MessagingDestinationPartitionID(strconv.Itoa(p.Partition))
		attrs := metric.WithAttributeSet(attribute.NewSet(node, dest, part))
		o.ObserveInt64(m.sent, int64(p.ProducedRecords), metric.WithAttributes(node, systemAttr, semconv.MessagingOperationName("send"), dest, part))
		o.ObserveInt64(m.consumed, int64(p.FetchedRecords), metric.WithAttributes(node, systemAttr, semconv.MessagingOperationName("fetch"), dest, part))
		o.ObserveInt64(m.sentBytes, int64(p.ProducedBytes), attrs)
		o.ObserveInt64(m.sentBatches, int64(p.ProducedBatches), attrs)
		o.ObserveInt64(m.produceErrors, int64(p.ProduceErrors), attrs)
		o.ObserveInt64(m.consumedBytes, int64(p.FetchedBytes), attrs)
		o.ObserveInt64(m.highWatermark, p.HighWatermark, attrs)
		o.ObserveInt64(m.logStart, p.LogStart, attrs)
		o.ObserveInt64(m.stored, p.StoredBytes, attrs)
		leads := int64(0)
		if p.IsLeader {
			leads = 1
		}
		o.ObserveInt64(m.leader, leads, attrs)
		if p.ShareAcquired+p.ShareAccepted+p.ShareReleased+p.ShareRejected+p.ShareDeadLettered > 0 {
			for _, k := range []struct {
				kind string
				v    uint64
			}{{"acquired", p.ShareAcquired}, {"accepted", p.ShareAccepted}, {"released", p.ShareReleased},
				{"rejected", p.ShareRejected}, {"dead_lettered", p.ShareDeadLettered}} {
				o.ObserveInt64(m.shareRecords, int64(k.v), metric.WithAttributes(node, dest, part, shareKind.String(k.kind)))
			}
		}
	}

	for _, g := range s.Groups {
		group := semconv.MessagingConsumerGroupName(g.Group)
		dest := semconv.MessagingDestinationName(g.Topic)
		attrs := metric.WithAttributeSet(attribute.NewSet(node, group, dest))
		o.ObserveInt64(m.groupMembers, int64(g.Members), attrs)
		o.ObserveInt64(m.groupGeneration, g.Generation, attrs)
		for _, p := range g.Partitions {
			pattrs := metric.WithAttributeSet(attribute.NewSet(node, group, semconv.MessagingDestinationName(p.Topic),
				semconv.MessagingDestinationPartitionID(strconv.Itoa(p.Partition))))
			if p.Lag >= 0 { // -1: this node hosts no replica to measure it
				o.ObserveInt64(m.groupLag, p.Lag, pattrs)
			}
			if p.Committed >= 0 { // -1: nothing committed
				o.ObserveInt64(m.groupCommitted, p.Committed, pattrs)
			}
		}
	}

	for _, g := range s.ShareGroups {
		group := semconv.MessagingConsumerGroupName(g.Group)
		o.ObserveInt64(m.shareMembers, int64(g.Members), metric.WithAttributeSet(attribute.NewSet(node, group)))
		for _, p := range g.Partitions {
			pattrs := metric.WithAttributeSet(attribute.NewSet(node, group, semconv.MessagingDestinationName(p.Topic),
				semconv.MessagingDestinationPartitionID(strconv.Itoa(p.Partition))))
			if p.Lag >= 0 { // -1: this node hosts no replica to measure it
				o.ObserveInt64(m.shareLag, p.Lag, pattrs)
			}
			o.ObserveInt64(m.shareStart, p.Start, pattrs)
			o.ObserveInt64(m.shareAcquired, int64(p.Acquired), pattrs)
			o.ObserveInt64(m.shareAvailable, int64(p.Available), pattrs)
		}
	}

	n := &s.Node
	attrs := metric.WithAttributeSet(attribute.NewSet(node))
	o.ObserveInt64(m.storeUsage, n.StoreBytes, attrs)
	o.ObserveInt64(m.raftUsage, n.RaftBytes, attrs)
	o.ObserveInt64(m.bufferUsage, n.BufferedBytes, attrs)
	o.ObserveInt64(m.producers, int64(n.Producers), attrs)
	o.ObserveInt64(m.consumers, int64(n.Consumers), attrs)
	o.ObserveInt64(m.elections, int64(n.Elections), attrs)
	o.ObserveInt64(m.retries, int64(n.Retries), attrs)
	observeLatency(o, m.apply, n.Apply, node)
	observeLatency(o, m.sync, n.Sync, node)
	return nil
}

func observeLatency(o metric.Observer, li latencyInstruments, l replog.Latency, node attribute.KeyValue) {
	o.ObserveInt64(li.ops, int64(l.Count), metric.WithAttributes(node))
	o.ObserveFloat64(li.time, l.Sum.Seconds(), metric.WithAttributes(node))
	if l.Count == 0 {
		return // no quantile to speak of
	}
	for _, q := range []struct {
		q float64
		d time.Duration
	}{{0.5, l.P50}, {0.99, l.P99}, {1, l.Max}} {
		o.ObserveFloat64(li.duration, q.d.Seconds(), metric.WithAttributes(node, quantile.Float64(q.q)))
	}
}
