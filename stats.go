package replog

import (
	"cmp"
	"io/fs"
	"maps"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/replog/replog/internal/metrics"
	"github.com/replog/replog/replication"
	"github.com/replog/replog/storage"
)

// Stats is a snapshot of what this node knows: its partitions, its
// groups, and counters since [Open]. [Log.Stats] takes one without a round
// trip to other nodes; it is cheap enough to call every second.
//
// Counters only grow. They count this node's handles: the records its
// producers wrote and its consumers read. Figures that other nodes decide
// (the leader, the high watermark, committed offsets) are as this node has
// applied them, a moment behind the leader at most.
type Stats struct {
	Node NodeStats
	// Partitions has one entry per partition replica hosted on this node,
	// by topic and partition.
	Partitions []PartitionStats
	// Groups are the consumer groups, by name, with their lag as this node
	// sees the high watermarks.
	Groups []GroupStats
	// ShareGroups are the share groups, by name, as this node's replica of
	// the share coordinator holds them (a moment behind its leader at
	// most), with their lag as this node sees the high watermarks.
	ShareGroups []ShareGroupStats
}

// NodeStats describes this node.
type NodeStats struct {
	ID      uint64
	Dir     string // "" for an in-memory node
	Started time.Time
	// StoreBytes and RaftBytes are the disk used by the record store and
	// by the Raft logs and snapshots (0 for an in-memory node), measured at
	// most a second ago.
	StoreBytes, RaftBytes int64
	// BufferedBytes is the memory held in producers' buffers and
	// consumers' read-ahead.
	BufferedBytes int64
	// Producers and Consumers are the open handles (share consumers
	// among the consumers); a transactional
	// session counts as one producer, with the producers joined to it.
	Producers, Consumers int

	// Counters since Open, over every partition. Bytes are the records'
	// keys, values and headers, uncompressed, except that FetchedBytes
	// counts a batch that a Kafka client fetched by its records section
	// as stored (the listener sends it without decompressing it).
	ProducedRecords, ProducedBytes, ProducedBatches uint64
	ProduceErrors                                   uint64 // batches that failed
	FetchedRecords, FetchedBytes                    uint64
	// Elections counts the leaders this node saw elected (all Raft
	// groups); Retries the requests to a Raft group sent again.
	Elections, Retries uint64
	// Share group counters since Open, over every partition: what the
	// share group members on this node did, [ShareConsumer]s and Kafka
	// clients alike (see [PartitionStats]).
	ShareAcquired, ShareAccepted, ShareReleased, ShareRejected, ShareDeadLettered uint64
	// Apply is how long applying committed entries to the record store
	// takes; Sync how long making it durable (an fsync) takes.
	Apply, Sync Latency
}

// Latency summarizes a latency distribution since Open.
type Latency struct {
	Count uint64
	Sum   time.Duration
	// P50 and P99 are bucket bounds: at most twice the true quantile.
	P50, P99, Max time.Duration
	// Buckets are cumulative: Count of the observations below UpperBound,
	// for histograms (Prometheus's le buckets). Always the same bounds,
	// powers of two from 1µs; the last, about 6 days, counts everything.
	Buckets []LatencyBucket
}

// LatencyBucket is one bucket of a [Latency].
type LatencyBucket struct {
	UpperBound time.Duration
	Count      uint64
}

func latency(h *metrics.Histogram) Latency {
	s := h.Summary()
	l := Latency{Count: s.Count, Sum: s.Sum, P50: s.P50, P99: s.P99, Max: s.Max}
	l.Buckets = make([]LatencyBucket, len(s.Buckets))
	for i, c := range s.Buckets {
		l.Buckets[i] = LatencyBucket{UpperBound: metrics.Bounds[i], Count: c}
	}
	return l
}

// PartitionStats describes one partition replica on this node.
type PartitionStats struct {
	Topic     string
	Partition int
	// Replicas are the nodes that hold the partition; Leader the one that
	// leads it (0 if none is known); IsLeader whether it is this node.
	Replicas []uint64
	Leader   uint64
	IsLeader bool
	// LogStart, HighWatermark and StoredBytes are as this replica has
	// applied them.
	LogStart, HighWatermark, StoredBytes int64
	// ReplicaLag, on the leader only, is how many Raft entries (record
	// batches, and a few control entries) each other replica's log is
	// behind the leader's, by node id, as the replica's last
	// acknowledgement to this leader says (Kafka's replica lag, in
	// batches). A replica that has acknowledged nothing since this node
	// became leader shows the whole log.
	ReplicaLag map[uint64]uint64
	// Counters since Open, of this node's producers and consumers.
	ProducedRecords, ProducedBytes, ProducedBatches uint64
	ProduceErrors                                   uint64 // batches that failed
	FetchedRecords, FetchedBytes                    uint64
	// Share group counters since Open, of the share group members on this
	// node: records of the partition handed to them (ShareAcquired: Poll
	// returned them, or a Kafka ShareFetch answered them), and records
	// they acknowledged, as the share coordinator applied it: accepted,
	// released or rejected. ShareRejected also counts the records a
	// member gave up (delivered MaxDeliveries times, or, for a
	// [ShareConsumer], undecodable); ShareDeadLettered counts those of
	// them written to a dead-letter topic. Offsets never handed to a
	// member (without a record, or of an aborted transaction for a
	// read-committed member) are not counted, but a Kafka client's
	// acknowledgement of a gap counts as accepted. Records released by a
	// member's Close (or a Kafka member's share session ending), and
	// records whose lock expired, are not counted either: the share
	// coordinator decides those.
	ShareAcquired, ShareAccepted, ShareReleased, ShareRejected, ShareDeadLettered uint64
}

// GroupStats describes a consumer group, with the partitions of its
// topics that exist (a group whose topics were all deleted is left out).
type GroupStats struct {
	// Topic is the group's topic, empty if it has several (each partition
	// then names its topic).
	Group, Topic string
	Generation   int64
	Members      int
	// Lag is the sum of the partitions' lags.
	Lag        int64
	Partitions []GroupPartitionStats
}

// GroupPartitionStats is one partition of a group.
type GroupPartitionStats struct {
	Topic     string
	Partition int
	// Committed is the next offset the group reads, -1 if it committed
	// nothing.
	Committed int64
	// Lag is the records between Committed (the log start if nothing was
	// committed) and the high watermark, as this node sees it; -1 if this
	// node hosts no replica of the partition.
	Lag int64
}

// ShareGroupStats describes a share group (see [ShareConsumer]), with the
// share partitions of its topics that exist (a share group whose topics
// were all deleted is left out).
type ShareGroupStats struct {
	Group string
	// Members counts the members holding a record under an unexpired lock:
	// a share group has no membership, and members that hold nothing are
	// unknown to the share coordinator.
	Members int
	// Lag is the sum of the partitions' lags.
	Lag        int64
	Partitions []SharePartitionStats
}

// SharePartitionStats is one share partition of a share group (see
// [SharePartitionInfo]).
type SharePartitionStats struct {
	Topic     string
	Partition int
	// Start is the share-partition start offset: every record before it
	// is done.
	Start int64
	// Lag is the records from Start (or the log start) to the high
	// watermark, as this node sees it, that are not done, acquired ones
	// included; -1 if this node hosts no replica of the partition.
	Lag int64
	// Acquired counts the records under an unexpired lock; Available the
	// records in flight waiting to be delivered again (released, or their
	// lock expired).
	Acquired, Available int
}

// payloadBytes is what the byte counters count of a record: its key,
// value and headers, uncompressed.
func payloadBytes(r *storage.Record) int {
	n := len(r.Key) + len(r.Value)
	for _, h := range r.Headers {
		n += len(h.Key) + len(h.Value)
	}
	return n
}

// partKey names a partition for the counters: they outlive replicas (a
// reassignment) and follow a topic's name.
type partKey struct {
	topic string
	part  int
}

// partCounters are one partition's counters. Updated with atomics: no
// lock, no allocation.
type partCounters struct {
	producedRecords, producedBytes, producedBatches, produceErrors atomic.Uint64
	fetchedRecords, fetchedBytes                                   atomic.Uint64
	shareAcquired, shareAccepted, shareReleased, shareRejected     atomic.Uint64
	shareDeadLettered                                              atomic.Uint64
}

// shareAcked counts n records acknowledged with a.
func (c *partCounters) shareAcked(a replication.ShareAck, n int) {
	switch a {
	case replication.ShareAccept:
		c.shareAccepted.Add(uint64(n))
	case replication.ShareRelease:
		c.shareReleased.Add(uint64(n))
	case replication.ShareReject:
		c.shareRejected.Add(uint64(n))
	}
}

// counters are a Log's counters, created on first use per partition.
type counters struct {
	parts   sync.Map // partKey -> *partCounters
	started time.Time

	diskMu sync.Mutex
	diskAt time.Time
	store  int64
	raft   int64
}

// part returns the counters of a partition; handles keep the pointer.
func (c *counters) part(topic string, part int) *partCounters {
	k := partKey{topic, part}
	if v, ok := c.parts.Load(k); ok {
		return v.(*partCounters)
	}
	v, _ := c.parts.LoadOrStore(k, new(partCounters))
	return v.(*partCounters)
}

// disk returns the bytes under dir's data and raft directories, measured
// at most a second ago.
func (c *counters) disk(dir string) (store, raft int64) {
	if dir == "" {
		return 0, 0
	}
	c.diskMu.Lock()
	defer c.diskMu.Unlock()
	if time.Since(c.diskAt) >= time.Second {
		c.store, c.raft = dirSize(filepath.Join(dir, "data")), dirSize(filepath.Join(dir, "raft"))
		c.diskAt = time.Now()
	}
	return c.store, c.raft
}

func dirSize(dir string) int64 {
	var n int64
	_ = filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil // a file removed meanwhile
		}
		if d.Type().IsRegular() {
			if info, err := d.Info(); err == nil {
				n += info.Size()
			}
		}
		return nil
	})
	return n
}

// Stats returns a snapshot of this node (see [Stats]). It reads only this
// node's state: no Raft round trip, no lock held on a hot path. On a
// closed Log it returns what it can (counters, no partitions).
func (l *Log) Stats() Stats {
	var s Stats
	n := &s.Node
	n.ID = l.opts.NodeID
	if !l.opts.InMemory {
		n.Dir = l.dir
	}
	n.Started = l.counters.started
	n.StoreBytes, n.RaftBytes = l.counters.disk(n.Dir)

	l.mu.Lock()
	for h := range l.mu.handles {
		switch h := h.(type) {
		case *producer:
			n.Producers++
			n.BufferedBytes += h.bufferedBytes()
		case *consumer:
			n.Consumers++
			n.BufferedBytes += h.bufferedBytes()
		case *shareConsumer: // no read-ahead: it reads what it acquired
			n.Consumers++
		case *TransactionalProducer: // one producer, as in Kafka, whatever its topics
			n.Producers++
			n.BufferedBytes += h.bufferedBytes()
		}
	}
	l.mu.Unlock()

	m := l.node.Metrics()
	n.Elections, n.Retries = m.Elections.Load(), m.Retries.Load()
	n.Apply, n.Sync = latency(&m.Apply), latency(&m.Sync)
	l.counters.parts.Range(func(_, v any) bool {
		c := v.(*partCounters)
		n.ProducedRecords += c.producedRecords.Load()
		n.ProducedBytes += c.producedBytes.Load()
		n.ProducedBatches += c.producedBatches.Load()
		n.ProduceErrors += c.produceErrors.Load()
		n.FetchedRecords += c.fetchedRecords.Load()
		n.FetchedBytes += c.fetchedBytes.Load()
		n.ShareAcquired += c.shareAcquired.Load()
		n.ShareAccepted += c.shareAccepted.Load()
		n.ShareReleased += c.shareReleased.Load()
		n.ShareRejected += c.shareRejected.Load()
		n.ShareDeadLettered += c.shareDeadLettered.Load()
		return true
	})
	if l.isClosed() {
		return s
	}

	meta := l.node.Metadata()
	local := l.node.Local()
	hws := map[partKey]PartitionStats{}
	for _, t := range meta.Topics {
		for i, pm := range t.Partitions {
			rp := local[pm.Shard]
			if rp == nil {
				continue
			}
			ps := PartitionStats{
				Topic: t.Name, Partition: i, Replicas: slices.Clone(pm.Replicas),
				Leader: l.node.LeaderNode(pm.Shard), LogStart: rp.LogStart(), HighWatermark: rp.HighWatermark(),
				StoredBytes: rp.StoredBytes(),
			}
			ps.IsLeader = ps.Leader == n.ID && n.ID != 0
			if ps.IsLeader && len(pm.Replicas) > 1 {
				ids := make([]uint64, 0, len(pm.Replicas))
				for _, node := range pm.Replicas {
					ids = append(ids, pm.ReplicaID(node))
				}
				if lag := rp.ReplicaLag(ids); lag != nil {
					ps.ReplicaLag = make(map[uint64]uint64, len(lag))
					for id, l := range lag {
						ps.ReplicaLag[pm.NodeOf(id)] = l
					}
				}
			}
			if v, ok := l.counters.parts.Load(partKey{t.Name, i}); ok {
				c := v.(*partCounters)
				ps.ProducedRecords, ps.ProducedBytes, ps.ProducedBatches = c.producedRecords.Load(), c.producedBytes.Load(), c.producedBatches.Load()
				ps.ProduceErrors = c.produceErrors.Load()
				ps.FetchedRecords, ps.FetchedBytes = c.fetchedRecords.Load(), c.fetchedBytes.Load()
				ps.ShareAcquired, ps.ShareAccepted = c.shareAcquired.Load(), c.shareAccepted.Load()
				ps.ShareReleased, ps.ShareRejected = c.shareReleased.Load(), c.shareRejected.Load()
				ps.ShareDeadLettered = c.shareDeadLettered.Load()
			}
			s.Partitions = append(s.Partitions, ps)
			hws[partKey{t.Name, i}] = ps
		}
	}
	slices.SortFunc(s.Partitions, func(a, b PartitionStats) int {
		return cmp.Or(cmp.Compare(a.Topic, b.Topic), cmp.Compare(a.Partition, b.Partition))
	})

	s.Groups = l.groupStats(meta, hws)
	s.ShareGroups = l.shareGroupStats(meta, hws)
	return s
}

// groupStats reports the consumer groups, as this node's replica of the
// groups group holds them.
func (l *Log) groupStats(meta *replication.Metadata, hws map[partKey]PartitionStats) []GroupStats {
	groups, err := l.node.LocalGroups()
	if err != nil {
		return nil
	}
	var out []GroupStats
	for _, g := range groups {
		gs := GroupStats{Group: g.Name, Generation: g.Generation, Members: len(g.Members)}
		if one, _, single := g.Topic(); single {
			gs.Topic = one
		}
		live := false
		for _, topic := range slices.Sorted(maps.Keys(g.Topics)) {
			gt := g.Topics[topic]
			if tm := meta.Topics[topic]; tm == nil || tm.ID != gt.ID {
				continue // deleted (or deleted and created again)
			}
			live = true
			for p := range gt.Partitions {
				gp := GroupPartitionStats{Topic: topic, Partition: p, Committed: -1, Lag: -1}
				if off, ok := gt.Offsets[p]; ok {
					gp.Committed = off
				}
				if ps, ok := hws[partKey{topic, p}]; ok {
					from := gp.Committed
					if from < 0 {
						from = ps.LogStart
					}
					gp.Lag = max(0, ps.HighWatermark-max(from, ps.LogStart))
					gs.Lag += gp.Lag
				}
				gs.Partitions = append(gs.Partitions, gp)
			}
		}
		if live {
			out = append(out, gs)
		}
	}
	slices.SortFunc(out, func(a, b GroupStats) int { return cmp.Compare(a.Group, b.Group) })
	return out
}

// shareGroupStats reports the share groups, as this node's replica of the
// share coordinator holds them: a stale read, which never waits for a
// quorum.
func (l *Log) shareGroupStats(meta *replication.Metadata, hws map[partKey]PartitionStats) []ShareGroupStats {
	ps, err := l.node.LocalShareGroups() // sorted by group, topic, partition
	if err != nil {
		return nil
	}
	now := time.Now().UnixNano()
	var out []ShareGroupStats
	var held map[string]bool
	for _, p := range ps {
		if tm := meta.Topics[p.Topic]; tm == nil || tm.ID != p.TopicID || p.Partition >= len(tm.Partitions) {
			continue // deleted (or deleted and created again)
		}
		if len(out) == 0 || out[len(out)-1].Group != p.Group {
			if len(out) > 0 {
				out[len(out)-1].Members = len(held)
			}
			out = append(out, ShareGroupStats{Group: p.Group})
			held = map[string]bool{}
		}
		g := &out[len(out)-1]
		sp := SharePartitionStats{Topic: p.Topic, Partition: p.Partition, Start: p.Start, Lag: -1}
		sp.Acquired, sp.Available, _, _ = shareInFlight(p, now, held)
		if hw, ok := hws[partKey{p.Topic, p.Partition}]; ok {
			sp.Lag = shareLag(p, hw.LogStart, hw.HighWatermark)
			g.Lag += sp.Lag
		}
		g.Partitions = append(g.Partitions, sp)
	}
	if len(out) > 0 {
		out[len(out)-1].Members = len(held)
	}
	return out
}
