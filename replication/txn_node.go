package replication

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/replog/replog/storage"
)

// The transaction coordinator's API on a node: each request is one command
// to the coordinator's Raft group (TxnShardID), proposed through
// syncPropose, which retries through leader changes.

// txnError is the error of a result code.
func txnError(code uint64) error {
	switch code {
	case tOK:
		return nil
	case tUnknownID:
		return ErrUnknownTransactionalID
	case tFenced:
		return ErrFenced
	case tConcurrent:
		return ErrConcurrentTransactions
	case tInvalidState:
		return ErrInvalidTxnState
	case tTooLarge:
		return ErrTxnTooLarge
	case tInvalidTimeout:
		return ErrInvalidTxnTimeout
	}
	return ErrInvalid
}

// proposeTxn proposes a command to the coordinator and returns the
// transactional id's producer after it. Every command is safe to apply twice
// (syncPropose may): a repeated InitProducerID bumps the epoch once more and
// hands out the later one; adding partitions, groups and offsets sets them;
// a repeated decision or completion finds it taken.
//
// A command refused because the id's previous transaction is still
// completing (ErrConcurrentTransactions) first helps it complete, writing
// its markers from here, and is proposed once more: a Kafka client would
// retry it after a backoff, and the markers are safe to write twice.
func (n *Node) proposeTxn(ctx context.Context, c txnCmd) (txnResult, error) {
	r, err := n.proposeTxnOnce(ctx, c)
	if !errors.Is(err, ErrConcurrentTransactions) || n.cfg.withoutTxnDriver {
		return r, err
	}
	if err := n.finishPrepared(ctx, c.ID); err != nil {
		return txnResult{}, err
	}
	return n.proposeTxnOnce(ctx, c)
}

func (n *Node) proposeTxnOnce(ctx context.Context, c txnCmd) (txnResult, error) {
	c.Now = time.Now().UnixNano()
	cmd, err := json.Marshal(c)
	if err != nil {
		return txnResult{}, err
	}
	r, _, err := n.syncPropose(ctx, TxnShardID, cmd)
	if err != nil {
		return txnResult{}, err
	}
	if r.Value == tNeedProducerID {
		return txnResult{}, errNeedProducerID
	}
	if err := txnError(r.Value); err != nil {
		return txnResult{}, err
	}
	var res txnResult
	if err := json.Unmarshal(r.Data, &res); err != nil {
		return txnResult{}, fmt.Errorf("%w: transaction result: %w", storage.ErrCorrupt, err)
	}
	return res, nil
}

var errNeedProducerID = errors.New("transactional id needs a new producer id")

func checkTxnID(id string) error {
	if !validTxnName(id) {
		return fmt.Errorf("%w: transactional id of %d bytes (1 to %d)", ErrInvalid, len(id), MaxTransactionalIDLength)
	}
	return nil
}

// InitProducerID gives the transactional id txnID its producer id and epoch
// (Kafka's InitProducerId): a new id gets a new producer id at epoch 0, an
// existing one its epoch bumped, which fences the previous producer (its
// later requests fail with ErrFenced); when the epoch is exhausted it gets
// a new producer id. A transaction the previous producer left Ongoing is
// aborted, and InitProducerID fails with ErrConcurrentTransactions until
// its markers are written: retry. timeout is the transaction timeout, in
// (0, MaxTxnTimeout].
func (n *Node) InitProducerID(ctx context.Context, txnID string, timeout time.Duration) (TxnProducer, error) {
	if err := checkTxnID(txnID); err != nil {
		return TxnProducer{}, err
	}
	if timeout <= 0 || timeout > MaxTxnTimeout {
		return TxnProducer{}, fmt.Errorf("%w: %v (at most %v)", ErrInvalidTxnTimeout, timeout, MaxTxnTimeout)
	}
	c := txnCmd{Op: txopInit, ID: txnID, Timeout: int64(timeout)}
	r, err := n.proposeTxn(ctx, c)
	if !errors.Is(err, errNeedProducerID) {
		return r.TxnProducer, err
	}
	// Allocated only when needed: most calls bump an epoch. If another
	// call got there first, this id is left unused, which costs nothing.
	if c.NewProducerID, err = n.AllocProducerID(ctx); err != nil {
		return TxnProducer{}, err
	}
	r, err = n.proposeTxn(ctx, c)
	if errors.Is(err, errNeedProducerID) {
		err = ErrInvalid // the command carried an id: not reached
	}
	return r.TxnProducer, err
}

// AddTxnPartitions adds partitions, by topic, to the producer's
// transaction, beginning one if none is under way (Kafka's
// AddPartitionsToTxn), and returns the transaction's serial, which its
// batches carry (storage.CmdAppendTxn). ErrConcurrentTransactions while
// the previous one is completing; ErrTxnTooLarge beyond MaxTxnPartitions.
func (n *Node) AddTxnPartitions(ctx context.Context, txnID string, p TxnProducer, partitions map[string][]int) (uint64, error) {
	if err := checkTxnID(txnID); err != nil {
		return 0, err
	}
	if n := countTxnPartitions(partitions); n > MaxTxnPartitions {
		return 0, fmt.Errorf("%w: %d partitions (at most %d)", ErrTxnTooLarge, n, MaxTxnPartitions)
	}
	if len(partitions) == 0 || !validTxnPartitions(partitions) {
		return 0, fmt.Errorf("%w: transaction partitions %v", ErrInvalid, partitions)
	}
	r, err := n.proposeTxn(ctx, txnCmd{Op: txopAddPartition, ID: txnID, TxnProducer: p, Partitions: partitions})
	return r.Serial, err
}

// AddTxnOffsets adds a group to the producer's transaction, whose offsets
// it will commit with TxnOffsetCommit (Kafka's AddOffsetsToTxn), beginning
// a transaction if none is under way.
func (n *Node) AddTxnOffsets(ctx context.Context, txnID string, p TxnProducer, group string) error {
	if err := checkTxnID(txnID); err != nil {
		return err
	}
	if !validTxnName(group) {
		return fmt.Errorf("%w: group name of %d bytes (1 to %d)", ErrInvalid, len(group), MaxTransactionalIDLength)
	}
	_, err := n.proposeTxn(ctx, txnCmd{Op: txopAddOffsets, ID: txnID, TxnProducer: p, Group: group})
	return err
}

// TxnOffsetCommit records offsets of group, by topic and partition, that
// commit with the producer's transaction (Kafka's TxnOffsetCommit); the
// group must have been added with AddTxnOffsets (else ErrInvalidTxnState).
// A later commit of a partition replaces an earlier one.
func (n *Node) TxnOffsetCommit(ctx context.Context, txnID string, p TxnProducer, group string, offsets map[string]map[int]TxnOffset) error {
	if err := checkTxnID(txnID); err != nil {
		return err
	}
	if n := countTxnOffsets(offsets); n > MaxTxnPartitions {
		return fmt.Errorf("%w: %d offsets (at most %d)", ErrTxnTooLarge, n, MaxTxnPartitions)
	}
	if !validTxnName(group) || !validTxnOffsets(offsets) {
		return fmt.Errorf("%w: transactional offsets of group %q", ErrInvalid, group)
	}
	_, err := n.proposeTxn(ctx, txnCmd{Op: txopOffsetCommit, ID: txnID, TxnProducer: p, Group: group, Offsets: offsets})
	return err
}

// EndTxn decides the producer's transaction (Kafka's EndTxn): it moves to
// PrepareCommit or PrepareAbort, and its markers are to be written to its
// partitions. Deciding again as decided returns nil (a retry); the other
// decision, or ending with no transaction under way, ErrInvalidTxnState.
//
// Once the decision is taken, EndTxn writes the markers (and, for a
// commit, the offsets) itself, so that the transaction is usually
// complete when it returns; if it cannot within ctx, it returns nil all
// the same, as the decision stands, and the coordinator's leader
// completes the transaction (see txnDriver). [Node.WaitTxn] waits for
// completion.
func (n *Node) EndTxn(ctx context.Context, txnID string, p TxnProducer, commit bool) error {
	if err := checkTxnID(txnID); err != nil {
		return err
	}
	if _, err := n.proposeTxnOnce(ctx, txnCmd{Op: txopEnd, ID: txnID, TxnProducer: p, Commit: commit}); err != nil {
		return err
	}
	if h := n.cfg.AfterTxnDecision; h != nil {
		h(txnID)
	}
	if !n.cfg.withoutTxnDriver {
		if err := n.finishPrepared(ctx, txnID); err != nil {
			n.log.Debug("transaction left to the coordinator's leader to complete", "transactional_id", txnID, "err", err)
		}
	}
	return nil
}

// WaitTxn waits until the transactional id's transaction is no longer
// decided and incomplete (PrepareCommit, PrepareAbort), helping it
// complete, and returns its state then.
func (n *Node) WaitTxn(ctx context.Context, txnID string) (*TxnState, error) {
	backoff := 2 * time.Millisecond
	for {
		t, err := n.Transaction(ctx, txnID)
		if err != nil || !t.Status.Prepared() {
			return t, err
		}
		if !n.cfg.withoutTxnDriver {
			if err := n.finishTxn(ctx, t); err == nil {
				continue
			}
		}
		select {
		case <-time.After(backoff):
			backoff = min(2*backoff, 100*time.Millisecond)
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-n.stop:
			return nil, ErrClosed
		}
	}
}

// PendingTxnOffsets returns, linearizably, the partitions by topic whose
// offsets of group transactions that are not complete commit (nil if
// none): Kafka answers an offset fetch that requires stable offsets with
// UNSTABLE_OFFSET_COMMIT for them (KIP-447), so that a consumer taking
// over a partition does not start from an offset a transaction is about
// to move.
func (n *Node) PendingTxnOffsets(ctx context.Context, group string) (map[string][]int, error) {
	v, err := n.syncRead(ctx, TxnShardID, txnPendingOffsetsQuery{group: group})
	if err != nil {
		return nil, err
	}
	pending, ok := v.(map[string][]int)
	if !ok {
		return nil, ErrInvalid
	}
	return pending, nil
}

// CompleteTxn records that the markers of a decided transaction are written
// to all its partitions (and, for a commit, its offsets to its groups): it
// moves from Prepare* to Complete*, and the transactional id may begin
// another. p is the producer of the Prepare* state. Completing again
// returns nil; but if the producer began its next transaction meanwhile, a
// retried CompleteTxn finds it and fails with ErrInvalidTxnState.
func (n *Node) CompleteTxn(ctx context.Context, txnID string, p TxnProducer, commit bool) error {
	if err := checkTxnID(txnID); err != nil {
		return err
	}
	_, err := n.proposeTxn(ctx, txnCmd{Op: txopComplete, ID: txnID, TxnProducer: p, Commit: commit})
	return err
}

// Transaction reads a transactional id's state, linearizably;
// ErrUnknownTransactionalID if the coordinator holds none.
func (n *Node) Transaction(ctx context.Context, txnID string) (*TxnState, error) {
	if err := checkTxnID(txnID); err != nil {
		return nil, err
	}
	v, err := n.syncRead(ctx, TxnShardID, txnID)
	if err != nil {
		return nil, err
	}
	t, ok := v.(*TxnState)
	switch {
	case !ok:
		return nil, ErrInvalid
	case t == nil:
		return nil, ErrUnknownTransactionalID
	}
	return t, nil
}

// PreparedTransactions lists, linearizably and by id, the transactions
// decided and not yet complete (PrepareCommit, PrepareAbort): those whose
// markers are to be written, which a new coordinator leader resumes.
func (n *Node) PreparedTransactions(ctx context.Context) ([]*TxnState, error) {
	v, err := n.syncRead(ctx, TxnShardID, txnPreparedQuery{})
	if err != nil {
		return nil, err
	}
	ts, ok := v.([]*TxnState)
	if !ok {
		return nil, ErrInvalid
	}
	return ts, nil
}

// expireTxns aborts timed-out transactions and forgets idle transactional
// ids, if this node leads the coordinator and there is any (a local read
// first, so that an idle coordinator's log does not grow each second).
// The time travels in the command.
func (n *Node) expireTxns() {
	if l, _ := n.leaderState(TxnShardID); l != n.cfg.NodeID {
		return
	}
	now := time.Now().UnixNano()
	q := txnExpirableQuery{now: now, idExpiration: int64(TransactionalIDExpiration)}
	v, err := n.nh.StaleRead(TxnShardID, q)
	if due, _ := v.(bool); err != nil || !due {
		return
	}
	cmd, _ := json.Marshal(txnCmd{Op: txopExpire, Now: now, IDExpiration: int64(TransactionalIDExpiration)})
	ctx, cancel := context.WithTimeout(context.Background(), n.cfg.AttemptTimeout)
	_, _ = n.nh.SyncPropose(ctx, n.nh.GetNoOPSession(TxnShardID), cmd)
	cancel()
}
