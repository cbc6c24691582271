package replication

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/lni/dragonboat/v4"
)

// Every error dragonboat's package declares leaves replication wrapped in
// one of its sentinels or in a context error, with the original still in
// the chain; the root package maps those to its public sentinels.
func TestMapErrorCoversEveryDragonboatError(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want error
	}{
		{dragonboat.ErrClosed, ErrClosed},
		{dragonboat.ErrLogDBNotCreatedOrClosed, ErrClosed},
		{dragonboat.ErrTimeout, context.DeadlineExceeded},
		{dragonboat.ErrInvalidDeadline, context.DeadlineExceeded},
		{dragonboat.ErrDeadlineNotSet, context.DeadlineExceeded},
		{dragonboat.ErrTimeoutTooSmall, context.DeadlineExceeded},
		{dragonboat.ErrCanceled, context.Canceled},
		{dragonboat.ErrShardClosed, ErrUnavailable},
		{dragonboat.ErrShardNotFound, ErrUnavailable},
		{dragonboat.ErrShardNotReady, ErrUnavailable},
		{dragonboat.ErrShardNotInitialized, ErrUnavailable},
		{dragonboat.ErrSystemBusy, ErrUnavailable},
		{dragonboat.ErrRejected, ErrUnavailable},
		{dragonboat.ErrAborted, ErrUnavailable},
		{dragonboat.ErrReplicaRemoved, ErrUnavailable},
		{dragonboat.ErrShardNotStopped, ErrUnavailable},
		{dragonboat.ErrShardAlreadyExist, ErrUnavailable},
		{dragonboat.ErrShardNotBootstrapped, ErrUnavailable},
		{dragonboat.ErrNoSnapshot, ErrUnavailable},
		{dragonboat.ErrPayloadTooBig, ErrTooLarge},
		{dragonboat.ErrInvalidOperation, ErrInvalid},
		{dragonboat.ErrInvalidOption, ErrInvalid},
		{dragonboat.ErrInvalidAddress, ErrInvalid},
		{dragonboat.ErrInvalidSession, ErrInvalid},
		{dragonboat.ErrInvalidTarget, ErrInvalid},
		{dragonboat.ErrInvalidShardSettings, ErrInvalid},
		{dragonboat.ErrInvalidRange, ErrInvalid},
		{dragonboat.ErrDirNotExist, ErrInvalid},
	} {
		wrapped := fmt.Errorf("op: %w", tc.err)
		got := mapError(wrapped)
		if !errors.Is(got, tc.want) {
			t.Errorf("mapError(%v) = %v, want it to match %v", tc.err, got, tc.want)
		}
		if !errors.Is(got, tc.err) {
			t.Errorf("mapError(%v) = %v lost the original", tc.err, got)
		}
		if again := mapError(got); again != got {
			t.Errorf("mapError is not idempotent for %v: %v", tc.err, again)
		}
	}
	if mapError(nil) != nil {
		t.Error("mapError(nil) != nil")
	}
}

func TestRetriableAndAmbiguous(t *testing.T) {
	for _, tc := range []struct {
		err                  error
		retriable, ambiguous bool
	}{
		{dragonboat.ErrShardNotReady, true, false}, // dropped: reached no log
		{dragonboat.ErrSystemBusy, true, false},
		{dragonboat.ErrShardNotFound, true, false}, // replica moved away: resolve again
		{fmt.Errorf("%w: %w", ErrAmbiguous, mapError(dragonboat.ErrTimeout)), true, true},
		{ErrLeaderChanged, true, true},
		{dragonboat.ErrTimeout, false, false}, // the caller's deadline
		{dragonboat.ErrClosed, false, false},
		{dragonboat.ErrPayloadTooBig, false, false},
		{ErrTopicNotFound, false, false},
	} {
		if got := IsRetriable(tc.err); got != tc.retriable {
			t.Errorf("IsRetriable(%v) = %v", tc.err, got)
		}
		if got := IsAmbiguous(tc.err); got != tc.ambiguous {
			t.Errorf("IsAmbiguous(%v) = %v", tc.err, got)
		}
	}
}
