package replog

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/lni/dragonboat/v4"

	"github.com/replog/replog/replication"
)

// No replication or dragonboat error reaches a user unmapped: each comes out
// of mapErr matching a public sentinel (or a context error), with the
// original kept in the chain.
func TestMapErrReachesPublicSentinels(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want error
	}{
		{replication.ErrClosed, ErrClosed},
		{replication.ErrTopicNotFound, ErrTopicNotFound},
		{replication.ErrTopicExists, ErrTopicExists},
		{replication.ErrNotReplica, ErrNoLocalReplica},
		{replication.ErrInvalid, ErrInvalidConfig},
		{replication.ErrNodeBusy, ErrInvalidConfig},
		{replication.ErrGroupNotFound, ErrGroupNotFound},
		{replication.ErrGroupNotEmpty, ErrGroupNotEmpty},
		{replication.ErrGroupTopic, ErrGroupTopic},
		{replication.ErrGroupTooLarge, ErrInvalidConfig},
		{replication.ErrNotAssigned, ErrNotAssigned},
		{replication.ErrUnknownMember, ErrUnknownMember},
		{replication.ErrUnavailable, ErrUnavailable},
		{replication.ErrAmbiguous, ErrAmbiguous},
		{replication.ErrLeaderChanged, ErrAmbiguous},
		{replication.ErrTooLarge, ErrRecordTooLarge},
		{replication.ErrFenced, ErrFenced},
		{replication.ErrUnknownTransactionalID, ErrFenced},
		{replication.ErrInvalidTxnState, ErrInvalidTxnState},
		{replication.ErrTxnTooLarge, ErrTxnTooLarge},
		{replication.ErrInvalidTxnTimeout, ErrInvalidConfig},
		{replication.ErrConcurrentTransactions, ErrUnavailable},
		// A proposal whose replica stopped while it was pending.
		{fmt.Errorf("%w: %w", replication.ErrAmbiguous, replication.MapError(dragonboat.ErrShardClosed)), ErrAmbiguous},

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
		{dragonboat.ErrPayloadTooBig, ErrRecordTooLarge},
		{dragonboat.ErrInvalidOperation, ErrInvalidConfig},
		{dragonboat.ErrInvalidOption, ErrInvalidConfig},
		{dragonboat.ErrInvalidAddress, ErrInvalidConfig},
		{dragonboat.ErrInvalidSession, ErrInvalidConfig},
		{dragonboat.ErrInvalidTarget, ErrInvalidConfig},
		{dragonboat.ErrInvalidShardSettings, ErrInvalidConfig},
		{dragonboat.ErrInvalidRange, ErrInvalidConfig},
		{dragonboat.ErrDirNotExist, ErrInvalidConfig},
	} {
		got := mapErr(fmt.Errorf("op: %w", tc.err))
		if !errors.Is(got, tc.want) {
			t.Errorf("mapErr(%v) = %v, want it to match %v", tc.err, got, tc.want)
		}
		if !errors.Is(got, tc.err) {
			t.Errorf("mapErr(%v) = %v lost the original", tc.err, got)
		}
	}
}

func TestIsRetriable(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{mapErr(dragonboat.ErrShardNotReady), true},
		{mapErr(dragonboat.ErrSystemBusy), true},
		{ErrUnavailable, true},
		{context.DeadlineExceeded, true},
		{fmt.Errorf("%w: %w", ErrAmbiguous, context.DeadlineExceeded), false},
		{mapErr(replication.ErrLeaderChanged), false},
		{ErrClosed, false},
		{ErrTopicNotFound, false},
		{ErrRecordTooLarge, false},
		{context.Canceled, false},
	} {
		if got := IsRetriable(tc.err); got != tc.want {
			t.Errorf("IsRetriable(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}
