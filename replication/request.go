package replication

import (
	"context"
	"errors"
	"fmt"
	"sync"
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
// deadline (Config.AttemptTimeout), and it ends early if the group's leader
// changes: a read index or proposal forwarded to a leader that crashed or
// lost its leadership can vanish without an answer, and is retried instead
// of waited on. This is the one home of the wait-for-leader, retry, propose
// loop; every request to a Raft group goes through it.
func (n *Node) request(ctx context.Context, shard uint64, op func(actx context.Context) error) error {
	attempts := 0
	return retry(ctx, n.stop, func() error {
		if attempts++; attempts > 1 {
			n.metrics.Retries.Add(1)
		}
		if shard >= FirstPartitionShard {
			if _, ok := n.Metadata().partition(shard); !ok {
				return ErrTopicNotFound // deleted: no attempt can succeed
			}
		}
		if err := n.waitLeader(ctx, shard); err != nil {
			return err
		}
		actx, cancel := n.attemptContext(ctx, shard)
		defer cancel()
		err := op(actx)
		if err != nil && ctx.Err() == nil && (errors.Is(err, errTimeout) || errors.Is(err, dragonboat.ErrCanceled) || errors.Is(err, context.Canceled)) {
			err = errBusy // this attempt's own deadline or leader change, not the caller's: retriable
		}
		return err
	})
}

// attemptContext returns the context of one attempt: it ends with ctx,
// after Config.AttemptTimeout, or when the shard's leader changes.
func (n *Node) attemptContext(ctx context.Context, shard uint64) (context.Context, context.CancelFunc) {
	actx, cancel := context.WithTimeout(ctx, n.cfg.AttemptTimeout)
	leader, changed := n.leaderState(shard)
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-changed:
				var now uint64
				if now, changed = n.leaderState(shard); now != leader {
					cancel()
					return
				}
			case <-actx.Done():
				return
			case <-done:
				return
			}
		}
	}()
	return actx, func() {
		cancel()
		close(done)
		wg.Wait()
	}
}

// syncRead waits until the shard's replica here has applied everything its
// group committed before the call (a linearizable read), then queries it.
// A nil query only waits: the state machine is not asked (its Lookup may
// run concurrently with its updates, and a caller that only catches up
// has no use for an answer).
func (n *Node) syncRead(ctx context.Context, shard uint64, query any) (any, error) {
	var v any
	err := n.request(ctx, shard, func(actx context.Context) error {
		if query == nil {
			return n.readIndex(actx, shard)
		}
		var err error
		v, err = n.nh.SyncRead(actx, shard, query)
		return err
	})
	return v, err
}

// readIndex waits until the shard's replica here has applied everything its
// group committed before the call.
func (n *Node) readIndex(ctx context.Context, shard uint64) error {
	deadline, ok := ctx.Deadline()
	if !ok {
		return dragonboat.ErrDeadlineNotSet
	}
	rs, err := n.nh.ReadIndex(shard, time.Until(deadline))
	if err != nil {
		return err
	}
	select {
	case r := <-rs.ResultC():
		defer rs.Release()
		switch {
		case r.Completed():
			return nil
		case r.Dropped():
			return dragonboat.ErrShardNotReady
		case r.Timeout():
			return dragonboat.ErrTimeout
		case r.Terminated():
			return dragonboat.ErrShardClosed
		case r.Rejected():
			return dragonboat.ErrRejected
		}
		return dragonboat.ErrAborted
	case <-ctx.Done():
		if ctx.Err() == context.Canceled {
			return dragonboat.ErrCanceled
		}
		return dragonboat.ErrTimeout
	}
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
		err := mapError(f())
		if err == nil || !IsRetriable(err) {
			return err
		}
		if ctx.Err() != nil {
			return fmt.Errorf("%w (last attempt: %w)", ctx.Err(), err)
		}
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			return fmt.Errorf("%w (last attempt: %w)", ctx.Err(), err)
		case <-stop:
			return ErrClosed
		}
		backoff = min(2*backoff, 200*time.Millisecond)
	}
}

// Errors of replication, mapped to the public ones by the root package.
// Every error from dragonboat leaves this package wrapped in one of these
// (or in a context error); see mapError.
var (
	ErrTopicExists   = errors.New("topic exists")
	ErrTopicNotFound = errors.New("topic not found")
	ErrInvalid       = errors.New("invalid request")
	ErrClosed        = errors.New("node closed")
	ErrNotReplica    = errors.New("no local replica")
	ErrNodeBusy      = errors.New("node hosts partition replicas")
	// ErrUnavailable: the group could not take the request, which did not
	// reach its log: no leader is known, the local replica is starting,
	// stopping or was moved off this node, or the node is overloaded.
	// Retriable.
	ErrUnavailable = errors.New("raft group unavailable")
	// ErrAmbiguous: a proposal ended without a known outcome (it timed out,
	// or its replica stopped while it was pending): it may still commit.
	// Retriable only by callers whose commands are safe to apply twice.
	ErrAmbiguous = errors.New("proposal outcome unknown")
	// ErrLeaderChanged: the group's leader changed while a proposal was
	// pending; it may or may not commit (it is also ambiguous). Retriable
	// as ErrAmbiguous is.
	ErrLeaderChanged = errors.New("leader changed during proposal")
	// ErrTooLarge: the command exceeds what the group accepts.
	ErrTooLarge = errors.New("command too large")
)

// mapError wraps dragonboat's errors in this package's sentinels (or in a
// context error), keeping the original in the chain. An error that is not
// dragonboat's passes through.
func mapError(err error) error {
	wrap := func(sentinel error) error { return fmt.Errorf("%w: %w", sentinel, err) }
	switch {
	case err == nil:
		return nil
	case errors.Is(err, ErrTopicExists), errors.Is(err, ErrTopicNotFound), errors.Is(err, ErrInvalid),
		errors.Is(err, ErrClosed), errors.Is(err, ErrNotReplica), errors.Is(err, ErrNodeBusy),
		errors.Is(err, ErrUnavailable), errors.Is(err, ErrAmbiguous), errors.Is(err, ErrLeaderChanged),
		errors.Is(err, ErrTooLarge), errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return err // mapped already
	case errors.Is(err, dragonboat.ErrClosed), errors.Is(err, dragonboat.ErrLogDBNotCreatedOrClosed):
		return wrap(ErrClosed)
	case errors.Is(err, dragonboat.ErrTimeout), errors.Is(err, dragonboat.ErrInvalidDeadline),
		errors.Is(err, dragonboat.ErrDeadlineNotSet), errors.Is(err, dragonboat.ErrTimeoutTooSmall):
		// The caller's deadline passed, or left too little time to try.
		return wrap(context.DeadlineExceeded)
	case errors.Is(err, dragonboat.ErrCanceled):
		return wrap(context.Canceled)
	case errors.Is(err, dragonboat.ErrShardClosed), errors.Is(err, dragonboat.ErrShardNotFound),
		errors.Is(err, dragonboat.ErrShardNotReady), errors.Is(err, dragonboat.ErrShardNotInitialized),
		errors.Is(err, dragonboat.ErrSystemBusy), errors.Is(err, dragonboat.ErrRejected),
		errors.Is(err, dragonboat.ErrAborted), errors.Is(err, dragonboat.ErrReplicaRemoved),
		errors.Is(err, dragonboat.ErrShardNotStopped), errors.Is(err, dragonboat.ErrShardAlreadyExist),
		errors.Is(err, dragonboat.ErrShardNotBootstrapped), errors.Is(err, dragonboat.ErrNoSnapshot):
		// A replica stopping because its node closes is reported as
		// ErrClosed by the caller, which knows the node's state.
		return wrap(ErrUnavailable)
	case errors.Is(err, dragonboat.ErrPayloadTooBig):
		return wrap(ErrTooLarge)
	case errors.Is(err, dragonboat.ErrInvalidOperation), errors.Is(err, dragonboat.ErrInvalidOption),
		errors.Is(err, dragonboat.ErrInvalidAddress), errors.Is(err, dragonboat.ErrInvalidSession),
		errors.Is(err, dragonboat.ErrInvalidTarget), errors.Is(err, dragonboat.ErrInvalidShardSettings),
		errors.Is(err, dragonboat.ErrInvalidRange), errors.Is(err, dragonboat.ErrDirNotExist):
		return wrap(ErrInvalid)
	}
	return err
}

// MapError is mapError for the root package, which maps the sentinels of
// this package to its public ones.
func MapError(err error) error { return mapError(err) }

// IsRetriable reports whether a request that failed with err may succeed
// when retried. An ambiguous failure ([IsAmbiguous]) is retriable only for
// commands that are safe to apply twice.
func IsRetriable(err error) bool {
	err = mapError(err)
	return errors.Is(err, ErrUnavailable) || errors.Is(err, ErrAmbiguous) || errors.Is(err, ErrLeaderChanged)
}

// IsAmbiguous reports whether err leaves a proposal's outcome unknown: it
// may have committed, or may still commit.
func IsAmbiguous(err error) bool {
	return errors.Is(err, ErrAmbiguous) || errors.Is(err, ErrLeaderChanged)
}

// AttemptTimeout is the deadline of one attempt of a request to a Raft
// group ([Config.AttemptTimeout], or its default).
func (n *Node) AttemptTimeout() time.Duration { return n.cfg.AttemptTimeout }
