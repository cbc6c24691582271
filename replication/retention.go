package replication

import (
	"context"
	"maps"
	"math"
	"time"

	"github.com/replog/replog/storage"
)

// DefaultRetentionInterval is how often a partition's leader checks its
// topic's retention limits when Config.RetentionInterval is zero. A check
// costs one seek and proposes nothing unless a batch is due, so a batch
// goes at most this long (plus a proposal) after it becomes eligible,
// well within Kafka's 5-minute check.
const DefaultRetentionInterval = 5 * time.Second

// retentionLoop applies the topics' retention limits to the partitions
// this node leads, every RetentionInterval.
//
// Only the leader proposes, and the proposal carries its clock and the
// topic's limits: the state machine decides from them and the stored
// batches alone, so every replica deletes the same batches. A leader
// whose clock runs ahead deletes early; that is the one wall clock the
// decision depends on, and it is the same for every replica.
func (n *Node) retentionLoop() {
	defer n.wg.Done()
	tick := time.NewTicker(n.cfg.RetentionInterval)
	defer tick.Stop()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { // the loop waits for its proposals; end them on close
		defer close(done)
		select {
		case <-n.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	defer func() {
		cancel()
		<-done
	}()
	for {
		select {
		case <-n.stop:
			return
		case <-tick.C:
		}
		n.applyRetention(ctx)
		n.snapshotIdle(n.cfg.RetentionInterval)
		n.compactRaftLogs(n.cfg.RetentionInterval)
	}
}

func (n *Node) applyRetention(ctx context.Context) {
	meta := n.Metadata()
	n.mu.Lock()
	parts := maps.Clone(n.mu.parts)
	n.mu.Unlock()
	for _, t := range meta.Topics {
		if !t.Deletes() || t.Retention == 0 && t.RetentionBytes == 0 {
			continue
		}
		for i, pm := range t.Partitions {
			p := parts[pm.Shard]
			if p == nil || p.Err() != nil || n.Leader(pm.Shard) != p.replicaID {
				continue
			}
			s := p.store.Load()
			if s == nil {
				continue // not open yet
			}
			began := time.Now()
			now := began.UnixNano()
			due, err := s.RetentionDue(now, t.Retention, t.RetentionBytes)
			if err != nil || !due {
				continue
			}
			stored, m := s.StoredBytes(), s.Meta() // in this order: see freedBytes
			actx, cancel := context.WithTimeout(ctx, n.cfg.AttemptTimeout)
			logStart, err := p.Retain(actx, now, t.Retention, t.RetentionBytes)
			cancel()
			switch {
			case err != nil && ctx.Err() == nil:
				// The next check tries again.
				n.log.Debug("replog: retention proposal failed", "topic", t.Name, "partition", i, "shard", pm.Shard, "err", err)
			case err == nil && logStart > m.LogStart:
				// Retain returns once this replica, the leader, applied it.
				n.log.Info("replog: retention deleted records", "topic", t.Name, "partition", i,
					"log_start", logStart, "prev_log_start", m.LogStart, "freed_bytes", freedBytes(s, stored, m.NextOffset),
					"took", time.Since(began), "node", n.cfg.NodeID, "shard", pm.Shard)
			}
		}
	}
}

// freedBytes is how many stored bytes an operation on s freed (retention,
// a compaction pass) that began when s stored stored bytes up to offset hw,
// read in that order: the drop in stored bytes, plus what was appended
// meanwhile, read back from the store. It is for a log line, not exact:
// the state is read one field at a time, so a batch appended between the
// two reads of a pair is missed (the figure falls short by it), and on a
// topic both compacted and deleted, what a retention run and a compaction
// pass running at the same time free counts for both.
func freedBytes(s *storage.Partition, stored, hw int64) int64 {
	now := s.Meta().NextOffset
	after := s.StoredBytes()
	var appended int64
	_ = s.ReadBatches(hw, now, math.MaxInt, func(b []byte) bool {
		// The first batch passed may be the one before hw.
		if h, err := storage.ParseHeader(b); err == nil && h.BaseOffset >= hw {
			appended += int64(len(b))
		}
		return true
	})
	return max(0, stored+appended-after)
}
