package replication

import (
	"context"
	"maps"
	"time"
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
		for _, pm := range t.Partitions {
			p := parts[pm.Shard]
			if p == nil || p.Err() != nil || n.Leader(pm.Shard) != p.replicaID {
				continue
			}
			s := p.store.Load()
			if s == nil {
				continue // not open yet
			}
			now := time.Now().UnixNano()
			due, err := s.RetentionDue(now, t.Retention, t.RetentionBytes)
			if err != nil || !due {
				continue
			}
			actx, cancel := context.WithTimeout(ctx, n.cfg.AttemptTimeout)
			_, err = p.Retain(actx, now, t.Retention, t.RetentionBytes)
			cancel()
			if err != nil && ctx.Err() == nil {
				// The next check tries again.
				n.log.Debug("replog: retention proposal failed", "topic", t.Name, "shard", pm.Shard, "err", err)
			}
		}
	}
}
