package replication

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/lni/dragonboat/v4"
	sm "github.com/lni/dragonboat/v4/statemachine"
)

var (
	errTimeout = dragonboat.ErrTimeout
	errBusy    = dragonboat.ErrSystemBusy
)

// DefaultAttemptTimeout derives the deadline of one request attempt from
// the Raft timing: four election timeouts (2s with the defaults), long
// enough for a healthy group to commit under load, short enough that a
// request lost with a crashed leader is sent again soon after the next
// election, which takes one to two election timeouts.
func DefaultAttemptTimeout(rtt time.Duration, electionTicks uint64) time.Duration {
	return max(4*time.Duration(electionTicks)*rtt, 200*time.Millisecond)
}

// request runs op against a shard's group, one attempt at a time, until it
// succeeds, fails with an error that is not retriable, or ctx ends. Each
// attempt first waits for the group to have a leader and gets its own
// deadline (Config.AttemptTimeout): a read index or proposal lost in a
// leader change is then retried instead of waited on until ctx ends. This
// is the one home of the wait-for-leader, retry, propose loop; every
// request to a Raft group goes through it.
func (n *Node) request(ctx context.Context, shard uint64, op func(actx context.Context) error) error {
	return retry(ctx, n.stop, func() error {
		if err := n.waitLeader(ctx, shard); err != nil {
			return err
		}
		actx, cancel := context.WithTimeout(ctx, n.cfg.AttemptTimeout)
		defer cancel()
		err := op(actx)
		if errors.Is(err, errTimeout) && ctx.Err() == nil {
			err = errBusy // this attempt's own deadline, not the caller's: retriable
		}
		return err
	})
}

// syncRead waits until the shard's replica here has applied everything its
// group committed before the call (a linearizable read), then queries it.
func (n *Node) syncRead(ctx context.Context, shard uint64, query any) (any, error) {
	var v any
	err := n.request(ctx, shard, func(actx context.Context) error {
		var err error
		v, err = n.nh.SyncRead(actx, shard, query)
		return err
	})
	return v, err
}

// syncPropose proposes cmd to the shard's group and returns the state
// machine's result, and how many attempts it took. Callers must make their
// commands safe to apply twice: an attempt that timed out may still commit.
func (n *Node) syncPropose(ctx context.Context, shard uint64, cmd []byte) (sm.Result, int, error) {
	var r sm.Result
	attempts := 0
	err := n.request(ctx, shard, func(actx context.Context) error {
		attempts++
		var err error
		r, err = n.nh.SyncPropose(actx, n.nh.GetNoOPSession(shard), cmd)
		return err
	})
	return r, attempts, err
}

// retry calls f until it succeeds, fails with an error that is not
// retriable, or ctx ends; it backs off between attempts.
func retry(ctx context.Context, stop <-chan struct{}, f func() error) error {
	backoff := 2 * time.Millisecond
	for {
		err := f()
		if err == nil || !IsRetriable(err) || ctx.Err() != nil {
			return mapError(err)
		}
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			return mapError(err)
		case <-stop:
			return ErrClosed
		}
		backoff = min(2*backoff, 200*time.Millisecond)
	}
}

// Errors of metadata operations, mapped to the public ones by the caller.
var (
	ErrTopicExists   = errors.New("topic exists")
	ErrTopicNotFound = errors.New("topic not found")
	ErrInvalid       = errors.New("invalid request")
	ErrClosed        = errors.New("node closed")
	ErrNotReplica    = errors.New("no local replica")
	ErrNodeBusy      = errors.New("node hosts partition replicas")
	// ErrLeaderChanged: the group's leader changed while a proposal was
	// pending; it may or may not have been committed. Retriable.
	ErrLeaderChanged = errors.New("leader changed during proposal")
)

// mapError turns dragonboat's errors into ones the root package maps to its
// sentinels; it keeps the original in the chain.
func mapError(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, dragonboat.ErrClosed), errors.Is(err, dragonboat.ErrShardClosed):
		return fmt.Errorf("%w: %w", ErrClosed, err)
	case errors.Is(err, dragonboat.ErrTimeout):
		return fmt.Errorf("%w: %w", context.DeadlineExceeded, err)
	}
	return err
}

// IsRetriable reports whether a proposal error may succeed when retried.
func IsRetriable(err error) bool {
	return errors.Is(err, ErrLeaderChanged) || errors.Is(err, dragonboat.ErrSystemBusy) || errors.Is(err, dragonboat.ErrShardNotReady) ||
		errors.Is(err, dragonboat.ErrTimeout) || errors.Is(err, dragonboat.ErrAborted) ||
		errors.Is(err, dragonboat.ErrShardNotInitialized) || errors.Is(err, dragonboat.ErrCanceled)
}
