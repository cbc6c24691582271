package replication

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/replog/replog/storage"
)

// Completing decided transactions (Kafka's transaction markers, KIP-98).
//
// A transaction decided by EndTxn (or aborted by a new InitProducerID or a
// timeout) is completed in three steps, each safe to repeat, from any
// node, at any time, and by several nodes at once:
//
//  1. for a commit, its offsets are committed to their groups, first:
//     once the decision is taken they are the group's, and a consumer
//     that takes over a partition then starts after them rather than
//     read again what the transaction consumed;
//  2. a marker is written to each of its partitions, naming the
//     transaction by serial (storage.TxnMarkerCommand), which ends it
//     there and moves the partition's last stable offset;
//  3. CompleteTxn moves it to Complete*, and the transactional id may
//     begin another.
//
// The node that decides (EndTxn, or a command refused with
// ErrConcurrentTransactions) completes the transaction itself; the
// coordinator's leader completes, each second, those left prepared by a
// caller that gave up or a node that crashed, and those its timeouts
// aborted.

// maxMarkerWrites bounds the markers one transaction writes at once, and
// maxDriven the transactions the coordinator's leader completes at once
// (the others wait for the next second's pass): a burst of timeouts must
// not start a goroutine per transaction.
const (
	maxMarkerWrites = 16
	maxDriven       = 16
)

// txnDriver tracks the transactions this node's leader loop is completing.
type txnDriver struct {
	mu   sync.Mutex
	busy map[string]bool
}

// finishPrepared completes the transactional id's transaction if it is
// decided and incomplete.
func (n *Node) finishPrepared(ctx context.Context, txnID string) error {
	t, err := n.Transaction(ctx, txnID)
	if err != nil {
		return err
	}
	return n.finishTxn(ctx, t)
}

// finishTxn completes t, read in PrepareCommit or PrepareAbort (anything
// else is left alone).
func (n *Node) finishTxn(ctx context.Context, t *TxnState) error {
	if !t.Status.Prepared() {
		return nil
	}
	commit := t.Status == TxnPrepareCommit
	if commit {
		if err := n.commitTxnOffsets(ctx, t); err != nil {
			return err
		}
	}
	if err := n.writeTxnMarkers(ctx, t, commit); err != nil {
		return err
	}
	_, err := n.proposeTxnOnce(ctx, txnCmd{Op: txopComplete, ID: t.ID, TxnProducer: t.TxnProducer, Commit: commit})
	if errors.Is(err, ErrInvalidTxnState) || errors.Is(err, ErrFenced) {
		// Completed by another node, and the id moved on since.
		return nil
	}
	return err
}

// writeTxnMarkers writes t's marker to each of its partitions. A partition
// whose topic is gone needs none.
func (n *Node) writeTxnMarkers(ctx context.Context, t *TxnState, commit bool) error {
	meta := n.Metadata()
	cmd := storage.TxnMarkerCommand(t.ProducerID, uint32(t.Epoch), t.Serial, commit, 0, time.Now().UnixNano())
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(maxMarkerWrites)
	for _, topic := range slices.Sorted(maps.Keys(t.Partitions)) {
		tm := meta.Topics[topic]
		if tm == nil {
			continue
		}
		for _, i := range t.Partitions[topic] {
			if i < 0 || i >= len(tm.Partitions) {
				continue
			}
			shard := tm.Partitions[i].Shard
			g.Go(func() error {
				p, err := n.Partition(gctx, shard)
				if errors.Is(err, ErrTopicNotFound) {
					return nil
				}
				if err != nil {
					return fmt.Errorf("transaction %q: marker for %s/%d: %w", t.ID, topic, i, err)
				}
				if err := p.writeMarker(gctx, cmd); err != nil {
					return fmt.Errorf("transaction %q: marker for %s/%d: %w", t.ID, topic, i, err)
				}
				return nil
			})
		}
	}
	return g.Wait()
}

// writeMarker proposes a marker command. A fenced marker means the
// producer wrote at a later epoch here, which the coordinator hands out
// only once this transaction is complete: there is nothing left to do.
func (p *Partition) writeMarker(ctx context.Context, cmd []byte) error {
	if err := p.Err(); err != nil {
		return err
	}
	r, _, err := p.n.syncPropose(ctx, p.Shard, cmd)
	if err != nil {
		return err
	}
	switch res := decodeResult(r.Value); res.Status {
	case storage.StatusOK, storage.StatusFenced:
		return nil
	case storage.StatusInvalid:
		return ErrInvalid
	default:
		return fmt.Errorf("%w: shard %d: marker %v", storage.ErrCorrupt, p.Shard, res.Status)
	}
}

// commitTxnOffsets commits the offsets t commits to their groups: a group
// of replog consumers gets those of its topics, any other (a Kafka group,
// or none yet, as a Kafka commit creates one) all of them. Offsets a group
// cannot take (of a topic it no longer has) are skipped and logged: the
// transaction's decision stands.
func (n *Node) commitTxnOffsets(ctx context.Context, t *TxnState) error {
	for _, group := range slices.Sorted(maps.Keys(t.Offsets)) {
		offsets := t.Offsets[group]
		if len(offsets) == 0 {
			continue
		}
		gs, err := n.Groups(ctx, group)
		switch {
		case errors.Is(err, ErrGroupNotFound):
		case err != nil:
			return err
		}
		if err == nil && len(gs) == 1 && gs[0].Kind == "" {
			g := gs[0]
			own, count := map[string]map[int]int64{}, 0
			for topic, ps := range offsets {
				gt := g.Topics[topic]
				if gt == nil {
					continue
				}
				for p, o := range ps {
					if p < gt.Partitions {
						if own[topic] == nil {
							own[topic] = map[int]int64{}
						}
						own[topic][p] = o.Offset
						count++
					}
				}
			}
			if count < countTxnOffsets(offsets) {
				n.log.Warn("transaction commits offsets of topics or partitions its replog group does not have; they are dropped",
					"transactional_id", t.ID, "group", group)
			}
			if count == 0 {
				continue
			}
			_, err := n.Group(ctx, GroupRequest{Op: GroupOpCommit, Group: group, TopicCommits: own})
			if err != nil && !errors.Is(err, ErrGroupNotFound) {
				if !IsRetriable(err) && !errors.Is(err, ErrClosed) && ctx.Err() == nil {
					n.log.Warn("transaction's offsets refused by their group; they are dropped",
						"transactional_id", t.ID, "group", group, "err", err)
					continue
				}
				return err
			}
			continue
		}
		commits := make(map[string]map[int]CommittedOffset, len(offsets))
		for topic, ps := range offsets {
			commits[topic] = make(map[int]CommittedOffset, len(ps))
			for p, o := range ps {
				commits[topic][p] = CommittedOffset{Offset: o.Offset, Metadata: o.Metadata}
			}
		}
		if _, err := n.CommitKafkaOffsets(ctx, group, commits); err != nil {
			if errors.Is(err, ErrGroupKind) || errors.Is(err, ErrInvalid) {
				n.log.Warn("transaction's offsets refused by their group; they are dropped",
					"transactional_id", t.ID, "group", group, "err", err)
				continue
			}
			return err
		}
	}
	return nil
}

// driveTxns completes, if this node leads the coordinator, the
// transactions left decided and incomplete, each in a goroutine of its own
// that the node's Close waits for.
func (n *Node) driveTxns() {
	if n.cfg.withoutTxnDriver {
		return
	}
	if l, _ := n.leaderState(TxnShardID); l != n.cfg.NodeID {
		return
	}
	v, err := n.nh.StaleRead(TxnShardID, txnPreparedQuery{})
	ts, _ := v.([]*TxnState)
	if err != nil || len(ts) == 0 {
		return
	}
	d := &n.txnDrive
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.busy == nil {
		d.busy = map[string]bool{}
	}
	for _, t := range ts {
		if len(d.busy) >= maxDriven {
			break
		}
		if d.busy[t.ID] {
			continue
		}
		d.busy[t.ID] = true
		n.wg.Add(1)
		go func(id string) {
			defer n.wg.Done()
			defer func() {
				d.mu.Lock()
				delete(d.busy, id)
				d.mu.Unlock()
			}()
			ctx, cancel := context.WithTimeout(context.Background(), 4*n.cfg.AttemptTimeout)
			defer cancel()
			go func() {
				select {
				case <-n.stop:
					cancel()
				case <-ctx.Done():
				}
			}()
			if err := n.finishPrepared(ctx, id); err != nil && !errors.Is(err, ErrClosed) {
				n.log.Warn("transaction not completed yet; retrying", "transactional_id", id, "err", err)
			}
		}(t.ID)
	}
}
