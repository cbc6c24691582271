package replication

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"sync"
	"time"

	"github.com/replog/replog/storage"
)

// DefaultDeleteRetention is how long tombstones stay after compaction
// first reaches them in a topic whose metadata has no DeleteRetention
// (written before it existed).
const DefaultDeleteRetention = 24 * time.Hour

// Compacts reports whether key compaction applies (the compact policy is
// on, alone or with delete).
func (s TopicSettings) Compacts() bool { return s.Cleanup&CleanupCompactBit != 0 }

// TombstoneRetention is DeleteRetention with its default filled in.
func (s TopicSettings) TombstoneRetention() time.Duration {
	if s.DeleteRetention == 0 {
		return DefaultDeleteRetention
	}
	return time.Duration(s.DeleteRetention)
}

// compactionLoop compacts the partitions of compacted topics that this
// node leads, every RetentionInterval, when [storage.Partition.CompactionDue]
// says a pass is worth it. One pass at a time per node: the work is
// bounded (one key index, one reader) whatever the number of partitions.
// It runs apart from retention so that a long pass does not hold
// retention back.
func (n *Node) compactionLoop() {
	defer n.wg.Done()
	tick := time.NewTicker(n.cfg.RetentionInterval)
	defer tick.Stop()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-n.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	for {
		select {
		case <-n.stop:
			return
		case <-tick.C:
		}
		n.compactDue(ctx)
	}
}

func (n *Node) compactDue(ctx context.Context) {
	meta := n.Metadata()
	n.mu.Lock()
	parts := maps.Clone(n.mu.parts)
	n.mu.Unlock()
	for _, t := range meta.Topics {
		if !t.Compacts() {
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
			dr := t.TombstoneRetention()
			due, err := s.CompactionDue(time.Now().UnixNano(), int64(dr))
			if err != nil || !due {
				continue
			}
			if !p.compactMu.TryLock() {
				continue // a Compact call is at it
			}
			_, err = p.compactPass(ctx, dr)
			p.compactMu.Unlock()
			switch {
			case ctx.Err() != nil:
				return
			case err != nil:
				// The next check tries again, from the last finished pass.
				n.log.Info("replog: compaction pass stopped", "topic", t.Name, "partition", i, "shard", pm.Shard, "err", err)
			}
		}
	}
}

// Compact runs compaction passes over the partition, planned from this
// node's replica once it has caught up, until one reaches the head (the
// newest batch, which stays as it is). Tombstones first reached by an
// earlier pass at least deleteRetention ago go.
func (p *Partition) Compact(ctx context.Context, deleteRetention time.Duration) error {
	if err := p.CatchUp(ctx); err != nil {
		return err
	}
	if err := p.Err(); err != nil {
		return err
	}
	// Hold the node open: the pass reads the store, which Close closes
	// once every holder is done; a closing node ends the pass.
	if !p.n.hold() {
		return ErrClosed
	}
	defer p.n.wg.Done()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-p.n.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	p.compactMu.Lock()
	defer p.compactMu.Unlock()
	for {
		st, err := p.compactPass(ctx, deleteRetention)
		if err != nil {
			select {
			case <-p.n.stop:
				return ErrClosed // what ended the pass, not the caller's ctx
			default:
			}
			return err
		}
		if st.Done {
			return nil
		}
	}
}

// compactInFlight is how many compaction commands of a pass may be in
// flight at once: under produce load each waits for a Raft round trip
// behind the records, and one at a time left compaction far behind.
const compactInFlight = 4

// compactPass runs one pass, proposing up to compactInFlight of its
// commands at once, and the final one after all the others applied. It
// logs what a finished pass did: at Info when it removed records, at Debug
// otherwise.
func (p *Partition) compactPass(ctx context.Context, deleteRetention time.Duration) (storage.CompactStats, error) {
	began := time.Now()
	o := storage.CompactOptions{
		Now:             began.UnixNano(),
		DeleteRetention: int64(deleteRetention),
		KeyMemory:       p.n.cfg.CompactionMemory,
	}
	one := func(cmd []byte) error {
		if err := p.Err(); err != nil {
			return err
		}
		// A retried command may apply twice, or late: harmless, since
		// each removes records for good and the pass's final command is
		// proposed only once every other one has applied.
		r, _, err := p.n.syncPropose(ctx, p.Shard, cmd)
		if err != nil {
			return err
		}
		if res := decodeResult(r.Value); res.Status != storage.StatusOK {
			return fmt.Errorf("%w: shard %d: compaction command %v", storage.ErrCorrupt, p.Shard, res.Status)
		}
		return nil
	}
	var (
		wg     sync.WaitGroup
		sem    = make(chan struct{}, compactInFlight)
		mu     sync.Mutex
		failed error
	)
	firstErr := func() error {
		mu.Lock()
		defer mu.Unlock()
		return failed
	}
	defer wg.Wait()
	sp := p.store.Load()
	stored, hw := sp.StoredBytes(), sp.Meta().NextOffset // in this order: see freedBytes
	st, err := sp.RunCompaction(ctx, o, func(cmd []byte, final bool) error {
		if err := firstErr(); err != nil {
			return err
		}
		if final {
			wg.Wait()
			if err := firstErr(); err != nil {
				return err
			}
			return one(cmd)
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			return ctx.Err()
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if err := one(cmd); err != nil {
				mu.Lock()
				if failed == nil {
					failed = err
				}
				mu.Unlock()
			}
		}()
		return nil
	})
	if err == nil {
		wg.Wait() // done already: the final command waited for the others
		p.logCompaction(st, freedBytes(sp, stored, hw), time.Since(began))
	}
	return st, err
}

// logCompaction logs a finished compaction pass.
func (p *Partition) logCompaction(st storage.CompactStats, freed int64, took time.Duration) {
	level, msg := slog.LevelDebug, "replog: compaction pass"
	if st.Removed > 0 {
		level, msg = slog.LevelInfo, "replog: compaction removed records"
	}
	ctx := context.Background()
	if !p.n.log.Enabled(ctx, level) {
		return
	}
	var attrs []slog.Attr
	if name, idx, _, ok := p.n.Metadata().partitionOf(p.Shard); ok {
		attrs = append(attrs, slog.String("topic", name), slog.Int("partition", idx))
	}
	attrs = append(attrs, slog.Int("removed", st.Removed), slog.Int64("freed_bytes", freed),
		slog.Int64("end", st.End), slog.Int64("scanned_bytes", st.Scanned), slog.Int("commands", st.Commands),
		slog.Duration("took", took), slog.Uint64("node", p.n.cfg.NodeID), slog.Uint64("shard", p.Shard))
	p.n.log.LogAttrs(ctx, level, msg, attrs...)
}

// hold keeps Close from closing the store until the caller calls
// n.wg.Done; it reports false if the node is closing.
func (n *Node) hold() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.mu.closed {
		return false
	}
	n.wg.Add(1)
	return true
}
