package replogwatermill

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/replog/replog"
)

// newShareConsumer makes the share group member of a subscription to t,
// first creating its dead-letter topic (with SubscriberConfig.Topic) if it
// does not exist.
func (s *Subscriber) newShareConsumer(ctx context.Context, t *replog.Topic) (*replog.ShareConsumer[[]byte], error) {
	opts := s.cfg.ShareOptions
	if opts.DeadLetterTopic != "" {
		if _, err := s.l.EnsureTopic(ctx, opts.DeadLetterTopic, s.cfg.Topic); err != nil {
			return nil, fmt.Errorf("dead-letter topic %q: %w", opts.DeadLetterTopic, err)
		}
	}
	return replog.NewShareConsumer(t, s.cfg.ShareGroup, replog.Bytes(), &opts)
}

// readShare delivers what the share group member acquires until the
// subscription ends. Records acquired and not delivered when it ends are
// released by the member's Close.
func (sub *subscription) readShare() {
	backoff := 10 * time.Millisecond
	for {
		recs, err := sub.share.Poll(sub.ctx)
		var derr *replog.DecodeError
		switch {
		case sub.ctx.Err() != nil || errors.Is(err, replog.ErrClosed):
			return
		case errors.As(err, &derr):
			// Not with the Bytes codec; the record was dead-lettered or
			// rejected, and recs are the others.
			sub.logger.Error("replogwatermill: record not decoded", err, nil)
		case err != nil && replog.IsRetriable(err):
			sub.logger.Info("replogwatermill: poll failed, retrying", watermill.LogFields{"err": err.Error()})
			if !sub.sleep(backoff) {
				return
			}
			backoff = min(2*backoff, time.Second)
			continue
		case err != nil:
			sub.logger.Error("replogwatermill: subscription ends", err, nil)
			return
		}
		backoff = 10 * time.Millisecond
		for i := range recs {
			if !sub.deliverShare(&recs[i]) {
				return
			}
		}
	}
}

// deliverShare sends rec and waits for its Ack (then accepts it) or Nack
// (then releases it). A record whose lock expires before the channel takes
// it is not sent: it is, or will be, delivered again, and this delivery
// counts toward MaxDeliveries. It reports false when the subscription
// ends first.
func (sub *subscription) deliverShare(rec *replog.ShareRecord[[]byte]) bool {
	pos := Position{Topic: rec.Topic, Partition: rec.Partition, Offset: rec.Offset}
	msg := toMessage(rec.Record)
	ctx := context.WithValue(context.WithValue(sub.ctx, positionKey{}, pos), deliveriesKey{}, rec.Deliveries)
	ctx, cancel := context.WithDeadline(ctx, rec.Deadline())
	defer cancel()
	msg.SetContext(ctx)
	select {
	case sub.out <- msg:
	case <-ctx.Done():
		if sub.ctx.Err() != nil {
			return false
		}
		sub.logger.Info("replogwatermill: lock expired before the message was taken; it is delivered again",
			posFields(pos, rec.Deliveries))
		return true
	}
	select {
	case <-msg.Acked():
		cancel()
		sub.accept(rec, pos)
		return true
	case <-msg.Nacked():
		cancel()
		sub.release(rec, pos)
		return true
	case <-sub.ctx.Done():
		// An Ack racing with Close still counts; anything else is
		// released by the member's Close.
		select {
		case <-msg.Acked():
			sub.accept(rec, pos)
		default:
		}
		return false
	}
}

// accept acknowledges an acked message to the share group. It outlives the
// subscription's ctx by up to commitTimeout, as flush does.
func (sub *subscription) accept(rec *replog.ShareRecord[[]byte], pos Position) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(sub.ctx), commitTimeout)
	defer cancel()
	if err := rec.Ack(ctx); err != nil {
		sub.logger.Error("replogwatermill: ack not recorded; the message is delivered again", err,
			posFields(pos, rec.Deliveries))
	}
}

// release gives a nacked message back to the share group, to be delivered
// again after NackResendSleep. If that fails, its lock expiring does it.
func (sub *subscription) release(rec *replog.ShareRecord[[]byte], pos Position) {
	ctx, cancel := context.WithTimeout(sub.ctx, commitTimeout)
	defer cancel()
	if err := rec.Release(ctx, max(sub.s.cfg.NackResendSleep, 0)); err != nil && sub.ctx.Err() == nil {
		f := posFields(pos, rec.Deliveries)
		f["err"] = err.Error()
		sub.logger.Info("replogwatermill: nack not recorded; the message is delivered again when its lock expires", f)
	}
}

func posFields(pos Position, deliveries int) watermill.LogFields {
	return watermill.LogFields{"partition": pos.Partition, "offset": pos.Offset, "deliveries": deliveries}
}

type deliveriesKey struct{}

// DeliveriesFromContext returns how many times the message whose context
// (message.Message.Context) ctx is, or derives from, was delivered to its
// share group, this delivery included (1 the first time). It reports
// false for messages of subscriptions without a ShareGroup, whose
// deliveries are not counted.
func DeliveriesFromContext(ctx context.Context) (int, bool) {
	n, ok := ctx.Value(deliveriesKey{}).(int)
	return n, ok
}
