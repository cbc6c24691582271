package replogkafka

import (
	"context"
	"errors"

	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/replog/replog"
)

// errorCode maps a replog error to the Kafka error code a client acts on:
// the retriable ones (NOT_LEADER_OR_FOLLOWER, REQUEST_TIMED_OUT) make it
// refresh its metadata and send again.
func errorCode(err error) int16 {
	switch {
	case err == nil:
		return 0
	case errors.Is(err, replog.ErrTopicNotFound), errors.Is(err, replog.ErrPartitionNotFound):
		return kerr.UnknownTopicOrPartition.Code
	case errors.Is(err, replog.ErrAmbiguous), errors.Is(err, context.DeadlineExceeded):
		// Before ErrUnavailable: an ambiguous error may wrap it.
		return kerr.RequestTimedOut.Code
	case errors.Is(err, errNotLeader), errors.Is(err, replog.ErrUnavailable), errors.Is(err, replog.ErrNoLocalReplica), errors.Is(err, replog.ErrClosed):
		return kerr.NotLeaderForPartition.Code
	case errors.Is(err, replog.ErrRecordTooLarge):
		return kerr.MessageTooLarge.Code
	case errors.Is(err, replog.ErrCorrupt):
		return kerr.CorruptMessage.Code
	case errors.Is(err, replog.ErrOutOfOrderSequence):
		return kerr.OutOfOrderSequenceNumber.Code
	case errors.Is(err, replog.ErrTopicExists):
		return kerr.TopicAlreadyExists.Code
	case errors.Is(err, replog.ErrInvalidConfig):
		return kerr.InvalidRequest.Code
	}
	var oor *replog.OffsetOutOfRangeError
	if errors.As(err, &oor) {
		return kerr.OffsetOutOfRange.Code
	}
	return kerr.UnknownServerError.Code
}

// errorMessage is the message of err for responses that carry one.
func errorMessage(err error) *string {
	if err == nil {
		return nil
	}
	m := err.Error()
	return &m
}
