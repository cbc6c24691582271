// Package replogprom exports a [replog.Log]'s [replog.Stats] as Prometheus
// metrics.
//
// Register a collector for each Log with any registry:
//
//	prometheus.MustRegister(replogprom.NewCollector(l))
//	http.Handle("/metrics", promhttp.Handler())
//
// Each scrape calls [replog.Log.Stats] once and turns the snapshot into
// constant metrics: no state is kept between scrapes and nothing runs in
// the background. Names follow Prometheus conventions: the replog_ prefix,
// _total on counters, base units (seconds, bytes).
//
// Every metric carries a node label, the Log's [replog.Log.NodeID], as a
// constant label: the collectors of several Logs in one process (a
// replogtest cluster, or several nodes embedded side by side) can share a
// registry, as long as their node ids differ. Figures are as this node
// sees them (see [replog.Stats]), so in a cluster each node exports its
// own view of the partitions it hosts and of every group: pick one node
// or aggregate with max, not sum, for the figures other nodes decide
// (high watermark, lag, committed offsets).
//
// # Metrics
//
// Per partition replica hosted on this node, with labels topic and
// partition:
//
//	replog_partition_high_watermark      gauge      offset the next record gets
//	replog_partition_log_start_offset    gauge      first retained offset
//	replog_partition_stored_bytes        gauge      bytes of stored batches
//	replog_partition_replicas            gauge      number of replicas
//	replog_partition_leader_id           gauge      node id of the leader, 0 if none is known
//	replog_partition_is_leader           gauge      1 if this node leads the partition, else 0
//	replog_partition_replica_lag_entries gauge      on the leader: Raft entries a replica is behind (label replica)
//	replog_produced_records_total        counter    records this node's producers wrote
//	replog_produced_bytes_total          counter    their keys, values and headers, uncompressed
//	replog_produced_batches_total        counter    batches this node's producers wrote
//	replog_fetched_records_total         counter    records this node's consumers read
//	replog_fetched_bytes_total           counter    their keys, values and headers
//	replog_share_records_total           counter    records share group members on this node handled (label kind)
//
// The produced and fetched counters are per partition rather than per
// node: sum(replog_produced_records_total) by (node, topic) gives the
// coarser figures, while the reverse is impossible. They are exported for
// the partitions this node hosts, like the rest of the partition metrics.
//
// replog_share_records_total counts, by kind, the records share group
// members on this node (replog's share consumers and Kafka clients)
// handled (see [replog.PartitionStats]): acquired (handed to a member),
// accepted, released, rejected (by a member, or given up after the
// delivery limit) and dead_lettered (written to a dead-letter topic). A
// partition's five series appear once a share member on this node has
// handled one of its records, so that a node without share groups does
// not export them.
//
// Per consumer group, with labels group and topic (empty for a group of
// several topics):
//
//	replog_group_members                 gauge      members in the group
//	replog_group_generation              gauge      the group's generation
//
// and per partition of the group's topics, with labels group, topic (the
// partition's) and partition:
//
//	replog_group_lag                     gauge      records between the committed offset and the high watermark
//	replog_group_committed_offset        gauge      the next offset the group reads
//
// replog_group_lag is only exported for the partitions this node hosts
// (elsewhere it cannot see the high watermark), so that
// sum(replog_group_lag) by (node, group) equals the group's lag as
// [replog.GroupStats] reports it; replog_group_committed_offset only for
// the partitions where the group committed something.
//
// Per share group, with label group, as this node's replica of the share
// coordinator holds it:
//
//	replog_share_group_members           gauge      members holding a record under an unexpired lock
//
// and per share partition of the group's topics, with labels group, topic
// and partition:
//
//	replog_share_group_lag               gauge      records from the start offset to the high watermark that are not done
//	replog_share_group_start_offset      gauge      the share-partition start offset: every record before it is done
//	replog_share_group_acquired_records  gauge      records under an unexpired lock
//	replog_share_group_available_records gauge      records in flight waiting to be delivered again
//
// replog_share_group_lag, like replog_group_lag, is only exported for the
// partitions this node hosts.
//
// Per node:
//
//	replog_start_time_seconds            gauge      when the Log was opened, Unix time
//	replog_store_disk_bytes              gauge      disk used by the record store (0 in memory)
//	replog_raft_disk_bytes               gauge      disk used by Raft logs and snapshots (0 in memory)
//	replog_buffered_bytes                gauge      memory in producers' buffers and consumers' read-ahead
//	replog_open_producers                gauge      open producers
//	replog_open_consumers                gauge      open consumers
//	replog_produce_errors_total          counter    produced batches that failed
//	replog_raft_elections_total          counter    leaders this node saw elected, all Raft groups
//	replog_raft_request_retries_total    counter    requests to a Raft group sent again
//	replog_apply_duration_seconds        histogram  time to apply committed entries to the store
//	replog_store_sync_duration_seconds   histogram  time to make the store durable (fsync)
//
// The histograms' buckets are those of [replog.Latency], which stop at
// the bucket of the slowest observation so far: a bucket's series appears
// the first time an observation reaches it.
package replogprom

import (
	"strconv"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/replog/replog"
)

// collector is a [prometheus.Collector] over one Log. Its descriptors are
// fixed, so registries check what it collects against them. It is safe
// for concurrent use, as [replog.Log.Stats] is.
type collector struct {
	log *replog.Log

	// Per partition: labels topic, partition.
	highWatermark, logStart, storedBytes, replicas, leaderID, isLeader            *prometheus.Desc
	replicaLag                                                                    *prometheus.Desc
	producedRecords, producedBytes, producedBatches, fetchedRecords, fetchedBytes *prometheus.Desc

	// Per partition: labels topic, partition, kind.
	shareRecords *prometheus.Desc

	// Per group: labels group, topic; lag and committed add partition.
	groupMembers, groupGeneration, groupLag, groupCommitted *prometheus.Desc

	// Per share group: label group; the rest add topic, partition.
	shareMembers, shareLag, shareStart, shareAcquired, shareAvailable *prometheus.Desc

	// Per node: no variable label.
	startTime, storeDisk, raftDisk, buffered, producers, consumers *prometheus.Desc
	produceErrors, elections, retries                              *prometheus.Desc
	apply, sync                                                    *prometheus.Desc
}

// NewCollector returns a collector of l's [replog.Stats], to register with
// a Prometheus registry (see the package documentation for the metrics).
// Collecting after l is closed exports the node's counters only, as
// [replog.Log.Stats] does. Registering collectors of two Logs with the same
// node id in one registry fails: their metrics would collide.
func NewCollector(l *replog.Log) prometheus.Collector {
	node := prometheus.Labels{"node": strconv.FormatUint(l.NodeID(), 10)}
	desc := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("replog_"+name, help, labels, node)
	}
	part := []string{"topic", "partition"}
	group := []string{"group", "topic"}
	groupPart := []string{"group", "topic", "partition"}
	shareGroup := []string{"group"}
	return &collector{
		log: l,

		highWatermark: desc("partition_high_watermark", "Offset the next record appended to the partition gets, as this replica has applied it.", part...),
		logStart:      desc("partition_log_start_offset", "First offset the partition retains, as this replica has applied it.", part...),
		storedBytes:   desc("partition_stored_bytes", "Bytes of record batches this replica stores.", part...),
		replicas:      desc("partition_replicas", "Number of nodes that hold a replica of the partition.", part...),
		leaderID:      desc("partition_leader_id", "Node id of the partition's leader, 0 if none is known.", part...),
		isLeader:      desc("partition_is_leader", "1 if this node leads the partition, else 0.", part...),
		replicaLag:    desc("partition_replica_lag_entries", "On the leader: Raft entries (record batches) a replica's log is behind the leader's, as it last acknowledged.", append(part, "replica")...),

		producedRecords: desc("produced_records_total", "Records this node's producers wrote to the partition.", part...),
		producedBytes:   desc("produced_bytes_total", "Keys, values and headers, uncompressed, of the records this node's producers wrote to the partition.", part...),
		producedBatches: desc("produced_batches_total", "Record batches this node's producers wrote to the partition.", part...),
		fetchedRecords:  desc("fetched_records_total", "Records this node's consumers read from the partition.", part...),
		fetchedBytes:    desc("fetched_bytes_total", "Keys, values and headers of the records this node's consumers read from the partition.", part...),
		shareRecords:    desc("share_records_total", "Records of the partition that share group members on this node acquired, accepted, released, rejected or dead-lettered, by kind.", append(part, "kind")...),

		groupMembers:    desc("group_members", "Members of the consumer group.", group...),
		groupGeneration: desc("group_generation", "Generation of the consumer group, incremented at each rebalance.", group...),
		groupLag:        desc("group_lag", "Records between the group's committed offset (the log start if it committed nothing) and the high watermark, as this node sees it.", groupPart...),
		groupCommitted:  desc("group_committed_offset", "Next offset the group reads from the partition, as committed.", groupPart...),

		shareMembers:   desc("share_group_members", "Members of the share group holding a record under an unexpired lock.", shareGroup...),
		shareLag:       desc("share_group_lag", "Records from the share partition's start offset to the high watermark, as this node sees it, that are not done.", groupPart...),
		shareStart:     desc("share_group_start_offset", "Share-partition start offset: every record before it is done.", groupPart...),
		shareAcquired:  desc("share_group_acquired_records", "Records of the share partition under an unexpired lock.", groupPart...),
		shareAvailable: desc("share_group_available_records", "Records of the share partition in flight, waiting to be delivered again.", groupPart...),

		startTime:     desc("start_time_seconds", "Time the Log was opened, in seconds since the Unix epoch."),
		storeDisk:     desc("store_disk_bytes", "Disk used by the record store, measured at most a second ago; 0 for an in-memory node."),
		raftDisk:      desc("raft_disk_bytes", "Disk used by the Raft logs and snapshots, measured at most a second ago; 0 for an in-memory node."),
		buffered:      desc("buffered_bytes", "Memory held in producers' buffers and consumers' read-ahead."),
		producers:     desc("open_producers", "Open producers."),
		consumers:     desc("open_consumers", "Open consumers."),
		produceErrors: desc("produce_errors_total", "Record batches this node's producers failed to write."),
		elections:     desc("raft_elections_total", "Leaders this node saw elected, over all its Raft groups."),
		retries:       desc("raft_request_retries_total", "Requests to a Raft group sent again."),
		apply:         desc("apply_duration_seconds", "Time to apply committed Raft entries to the record store."),
		sync:          desc("store_sync_duration_seconds", "Time to make the record store durable (an fsync)."),
	}
}

// Describe sends every descriptor the collector uses.
func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{
		c.highWatermark, c.logStart, c.storedBytes, c.replicas, c.leaderID, c.isLeader, c.replicaLag,
		c.producedRecords, c.producedBytes, c.producedBatches, c.fetchedRecords, c.fetchedBytes, c.shareRecords,
		c.groupMembers, c.groupGeneration, c.groupLag, c.groupCommitted,
		c.shareMembers, c.shareLag, c.shareStart, c.shareAcquired, c.shareAvailable,
		c.startTime, c.storeDisk, c.raftDisk, c.buffered, c.producers, c.consumers,
		c.produceErrors, c.elections, c.retries, c.apply, c.sync,
	} {
		ch <- d
	}
}

// Collect takes one [replog.Stats] snapshot and sends it as constant
// metrics.
func (c *collector) Collect(ch chan<- prometheus.Metric) {
	s := c.log.Stats()
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- constMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- constMetric(d, prometheus.CounterValue, float64(v), labels...)
	}

	n := &s.Node
	gauge(c.startTime, float64(n.Started.UnixNano())/1e9)
	gauge(c.storeDisk, float64(n.StoreBytes))
	gauge(c.raftDisk, float64(n.RaftBytes))
	gauge(c.buffered, float64(n.BufferedBytes))
	gauge(c.producers, float64(n.Producers))
	gauge(c.consumers, float64(n.Consumers))
	counter(c.produceErrors, n.ProduceErrors)
	counter(c.elections, n.Elections)
	counter(c.retries, n.Retries)
	ch <- histogram(c.apply, n.Apply)
	ch <- histogram(c.sync, n.Sync)

	for _, p := range s.Partitions {
		l := []string{p.Topic, strconv.Itoa(p.Partition)}
		gauge(c.highWatermark, float64(p.HighWatermark), l...)
		gauge(c.logStart, float64(p.LogStart), l...)
		gauge(c.storedBytes, float64(p.StoredBytes), l...)
		gauge(c.replicas, float64(len(p.Replicas)), l...)
		gauge(c.leaderID, float64(p.Leader), l...)
		gauge(c.isLeader, boolFloat(p.IsLeader), l...)
		for node, lag := range p.ReplicaLag {
			gauge(c.replicaLag, float64(lag), p.Topic, strconv.Itoa(p.Partition), strconv.FormatUint(node, 10))
		}
		counter(c.producedRecords, p.ProducedRecords, l...)
		counter(c.producedBytes, p.ProducedBytes, l...)
		counter(c.producedBatches, p.ProducedBatches, l...)
		counter(c.fetchedRecords, p.FetchedRecords, l...)
		counter(c.fetchedBytes, p.FetchedBytes, l...)
		if p.ShareAcquired+p.ShareAccepted+p.ShareReleased+p.ShareRejected+p.ShareDeadLettered > 0 {
			for _, k := range []struct {
				kind string
				v    uint64
			}{{"acquired", p.ShareAcquired}, {"accepted", p.ShareAccepted}, {"released", p.ShareReleased},
				{"rejected", p.ShareRejected}, {"dead_lettered", p.ShareDeadLettered}} {
				counter(c.shareRecords, k.v, p.Topic, strconv.Itoa(p.Partition), k.kind)
			}
		}
	}

	for _, g := range s.Groups {
		name := labelValue(g.Group)
		gauge(c.groupMembers, float64(g.Members), name, g.Topic)
		gauge(c.groupGeneration, float64(g.Generation), name, g.Topic)
		for _, p := range g.Partitions {
			part := strconv.Itoa(p.Partition)
			// -1 means unknown (no replica here) or nothing committed: an
			// absent series says so, where -1 would spoil sums and rates.
			if p.Lag >= 0 {
				gauge(c.groupLag, float64(p.Lag), name, p.Topic, part)
			}
			if p.Committed >= 0 {
				gauge(c.groupCommitted, float64(p.Committed), name, p.Topic, part)
			}
		}
	}

	for _, g := range s.ShareGroups {
		name := labelValue(g.Group)
		gauge(c.shareMembers, float64(g.Members), name)
		for _, p := range g.Partitions {
			l := []string{name, p.Topic, strconv.Itoa(p.Partition)}
			if p.Lag >= 0 { // -1: no replica here to see the high watermark
				gauge(c.shareLag, float64(p.Lag), l...)
			}
			gauge(c.shareStart, float64(p.Start), l...)
			gauge(c.shareAcquired, float64(p.Acquired), l...)
			gauge(c.shareAvailable, float64(p.Available), l...)
		}
	}
}

// constMetric is [prometheus.MustNewConstMetric] without the panic: a
// scrape must not take the host down. The error, if any, reaches whoever
// gathers.
func constMetric(d *prometheus.Desc, t prometheus.ValueType, v float64, labels ...string) prometheus.Metric {
	m, err := prometheus.NewConstMetric(d, t, v, labels...)
	if err != nil {
		return prometheus.NewInvalidMetric(d, err)
	}
	return m
}

// labelValue makes a group name a valid label value. Prometheus needs
// UTF-8, while a group name is any bytes: one that is not UTF-8 is
// exported Go-quoted ("\xff..."), which keeps distinct names distinct.
// Topic names need nothing: they are ASCII.
func labelValue(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	return strconv.Quote(s)
}

// histogram converts a [replog.Latency] to a constant histogram in
// seconds. Its buckets are already cumulative, as Prometheus's are.
func histogram(d *prometheus.Desc, l replog.Latency) prometheus.Metric {
	buckets := make(map[float64]uint64, len(l.Buckets))
	count := l.Count
	for _, b := range l.Buckets {
		buckets[b.UpperBound.Seconds()] = b.Count
		// Stats reads the count before the buckets, so an observation
		// made meanwhile can be in a bucket and not in Count. The +Inf
		// bucket (the count) must not be below a finite one.
		count = max(count, b.Count)
	}
	m, err := prometheus.NewConstHistogram(d, count, l.Sum.Seconds(), buckets)
	if err != nil {
		return prometheus.NewInvalidMetric(d, err)
	}
	return m
}

func boolFloat(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
