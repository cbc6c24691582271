package replogwatermill

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/replog/replog"
)

// SubscriberConfig configures [NewSubscriber]. The zero value is valid:
// every subscription reads its whole topic from the earliest offset.
type SubscriberConfig struct {
	// ConsumerGroup makes subscriptions members of a consumer group: the
	// group reads every message of a topic once, each partition by one
	// member at a time, and a member resumes after the messages the group
	// acknowledged. Empty (the default): no group; each subscription
	// reads the whole topic from the earliest offset, and acknowledgements
	// are not stored.
	//
	// A replog group reads one topic, so a subscription to topic T joins
	// the replog group named ConsumerGroup + "/" + T (topic names cannot
	// hold "/"): one ConsumerGroup may read several topics, each with its
	// own offsets, and [replog.Log.DescribeGroup] lists it under that
	// name. The name must not exceed 249 bytes.
	ConsumerGroup string
	// GroupOptions configure the group membership (session timeout,
	// assignment strategy, static membership, callbacks): see
	// [replog.GroupOptions]. AutoCommitInterval must be zero: the
	// subscriber commits what was acknowledged, never what was only
	// delivered.
	GroupOptions replog.GroupOptions
	// Topic configures the topics that Subscribe and SubscribeInitialize
	// create when they do not exist; an existing topic is used as it is.
	// The zero value creates one partition, as [PublisherConfig.Topic].
	Topic replog.TopicConfig
	// ShareGroup makes subscriptions members of the replog share group of
	// that name ([replog.NewShareConsumer]; Kafka's share groups, a work
	// queue): any number of subscriptions, in any processes, read a topic
	// at once, each message going to one of them at a time, with no
	// partition ownership. Ack accepts the message; Nack releases it, to
	// be delivered again after NackResendSleep to any member, and the
	// subscription goes on with the next message meanwhile. Messages come
	// in no guaranteed order. See [Subscriber] for the rest.
	//
	// A share group reads any number of topics, each with its own state,
	// under the one name; it is unrelated to a consumer group of the same
	// name. At most 1024 bytes. ShareGroup excludes ConsumerGroup,
	// GroupOptions and CommitInterval.
	ShareGroup string
	// ShareOptions configure the share group members that subscriptions
	// make ([replog.ShareConsumerOptions]): LockDuration (how long a
	// delivered message is the subscription's before it is delivered
	// again; default 30s), MaxDeliveries (deliveries before a message is
	// given up; default 5), DeadLetterTopic (where messages given up are
	// written; Subscribe creates it with Topic if it does not exist),
	// Partitions, PollInterval. MaxRecords is how many messages a
	// subscription acquires at a time: default 1 here (replog's default
	// is 100), since it delivers one at a time and each acquired message
	// waits locked, its lock running, until those before it are
	// acknowledged. They need a ShareGroup.
	ShareOptions replog.ShareConsumerOptions
	// NackResendSleep is how long a nacked message waits before it is
	// delivered again. Default 100ms; negative means no wait. Without a
	// ShareGroup the subscription waits, and delivers it again; with one,
	// the message is released with this delay (at most 1h) and the
	// subscription goes on.
	NackResendSleep time.Duration
	// CommitInterval, with a ConsumerGroup, lets acknowledgements wait to
	// be committed together. Zero (the default): each Ack is committed
	// before the next message is delivered, one commit through Raft per
	// message (1.3ms each on a single node on disk in our tests: some 750
	// messages a second per subscription, where one without a group
	// delivers hundreds of thousands). Positive: acknowledged offsets
	// are committed at most CommitInterval after the first of them, and
	// always before the subscription fetches more records (so before a
	// rebalance can hand their partitions to another member) and when it
	// ends; a crash loses at most that long of acknowledgements, whose
	// messages are delivered again.
	CommitInterval time.Duration
}

// DefaultNackResendSleep is the default of
// [SubscriberConfig.NackResendSleep].
const DefaultNackResendSleep = 100 * time.Millisecond

// maxNackDelay bounds NackResendSleep with a share group: the longest
// delay [replog.ShareRecord.Release] takes.
const maxNackDelay = time.Hour

// Subscriber reads Watermill messages from replog topics. It is safe for
// concurrent use.
//
// Each Subscribe call reads with a [replog.Consumer] of its own (a
// [replog.ShareConsumer] with a ShareGroup) and delivers one message at a
// time: the next message comes once the previous one is acknowledged (or,
// with a ShareGroup, nacked). Delivery is at least once in every mode.
//
// Without a ShareGroup, messages of a partition come in offset order.
// Nack delivers the same message again (after NackResendSleep), and until
// it is acknowledged it holds back the messages after it: not only those
// of its partition but those of every partition the subscription reads
// (one partition, with the default topic config). A ShareGroup lets a
// nacked message wait without holding back the rest.
//
// With a ConsumerGroup, Ack commits the offset after the message before
// the next message is delivered (one commit through the group's Raft
// group per message), or within [SubscriberConfig.CommitInterval]. A
// commit that fails is logged, and covered by the next one that succeeds; the messages it covered are delivered again
// after a restart or rebalance. A message delivered and not acknowledged
// before Close, a crash or the loss of its partition is delivered again,
// and a member that holds a message unacknowledged for longer than
// [replog.GroupOptions.MaxPollInterval] (5 minutes by default) loses its
// partitions, which others then read from the last commit.
//
// With a ShareGroup, the group's subscriptions (of one Subscriber or of
// many, on any nodes of the cluster) read all of a topic's partitions at
// once, and each message is delivered to one of them at a time, locked
// to it for [replog.ShareConsumerOptions.LockDuration]. Ack accepts the
// message (one commit through the share coordinator's Raft group) before
// the next one is delivered; Nack releases it to be delivered again after
// NackResendSleep, to any subscription of the group, and the next message
// comes at once. A message's context ends when its lock expires, as it
// does at Ack and Nack: the message is then delivered again, maybe
// elsewhere, and an Ack after that fails ([replog.ErrNotAcquired], or
// [replog.ErrAlreadyAcknowledged] once the new delivery was acknowledged;
// logged), so handlers must finish within LockDuration; the subscription
// still waits for that Ack or Nack before it delivers its next message.
// An Ack that fails is logged, and its message delivered again once its
// lock expires. A message delivered MaxDeliveries times (5 by default)
// without being acknowledged is not delivered again: the share consumer
// writes it to the DeadLetterTopic, if any, with the original's payload,
// UUID and metadata, and the [replog.HeaderDLQReason] and other
// replog.dlq.* headers as metadata. Close releases the messages a
// subscription holds, which the group's other subscriptions get at once.
// Of Watermill's guarantees, these hold: at-least-once delivery, each
// message accepted once per share group (consumer-group semantics), and
// persistence; order does not, not even with one subscription (a nacked
// or expired message comes after later ones). [DeliveriesFromContext]
// tells a handler how many times its message was delivered.
//
// Close ends every subscription and closes their channels before it
// returns; it does not close the [replog.Log].
type Subscriber struct {
	l      *replog.Log
	cfg    SubscriberConfig
	logger watermill.LoggerAdapter
	// wg counts running subscriptions; Add happens under mu, while not
	// closed, so Close's Wait sees every one.
	wg sync.WaitGroup

	mu struct {
		sync.Mutex
		closed bool
		subs   map[*subscription]struct{}
	}
}

// NewSubscriber returns a subscriber reading the topics of l. A nil
// logger discards logs.
func NewSubscriber(l *replog.Log, cfg SubscriberConfig, logger watermill.LoggerAdapter) (*Subscriber, error) {
	if l == nil {
		return nil, fmt.Errorf("%w: nil Log", replog.ErrInvalidConfig)
	}
	if cfg.GroupOptions.AutoCommitInterval != 0 {
		return nil, fmt.Errorf("%w: SubscriberConfig.GroupOptions.AutoCommitInterval must be zero: acknowledgements commit", replog.ErrInvalidConfig)
	}
	if g := cfg.GroupOptions; cfg.ConsumerGroup == "" && (g.InstanceID != "" || g.Strategy != "" || g.SessionTimeout != 0 ||
		g.HeartbeatInterval != 0 || g.MaxPollInterval != 0 || g.OnAssigned != nil || g.OnRevoked != nil || cfg.CommitInterval != 0) {
		return nil, fmt.Errorf("%w: SubscriberConfig.GroupOptions and CommitInterval need a ConsumerGroup", replog.ErrInvalidConfig)
	}
	if cfg.ShareGroup != "" && (cfg.ConsumerGroup != "" || cfg.CommitInterval != 0) {
		return nil, fmt.Errorf("%w: SubscriberConfig.ShareGroup excludes ConsumerGroup and CommitInterval", replog.ErrInvalidConfig)
	}
	if o := cfg.ShareOptions; cfg.ShareGroup == "" && (o.LockDuration != 0 || o.MaxDeliveries != 0 || o.DeadLetterTopic != "" ||
		o.MaxRecords != 0 || o.Partitions != nil || o.PollInterval != 0) {
		return nil, fmt.Errorf("%w: SubscriberConfig.ShareOptions need a ShareGroup", replog.ErrInvalidConfig)
	}
	if cfg.ShareGroup != "" && cfg.NackResendSleep > maxNackDelay {
		return nil, fmt.Errorf("%w: SubscriberConfig.NackResendSleep %v with a ShareGroup (at most %v)",
			replog.ErrInvalidConfig, cfg.NackResendSleep, maxNackDelay)
	}
	if cfg.ShareGroup != "" && cfg.ShareOptions.MaxRecords == 0 {
		cfg.ShareOptions.MaxRecords = 1
	}
	if cfg.CommitInterval < 0 {
		return nil, fmt.Errorf("%w: negative SubscriberConfig.CommitInterval", replog.ErrInvalidConfig)
	}
	if cfg.NackResendSleep == 0 {
		cfg.NackResendSleep = DefaultNackResendSleep
	}
	if logger == nil {
		logger = watermill.NopLogger{}
	}
	s := &Subscriber{l: l, cfg: cfg, logger: logger}
	s.mu.subs = map[*subscription]struct{}{}
	return s, nil
}

// GroupName returns the replog consumer group that subscriptions to topic
// join (see [SubscriberConfig.ConsumerGroup]), or "" without a
// ConsumerGroup. (A share group is named ShareGroup whatever the topic.)
func (s *Subscriber) GroupName(topic string) string {
	if s.cfg.ConsumerGroup == "" {
		return ""
	}
	return s.cfg.ConsumerGroup + "/" + topic
}

// SubscribeInitialize creates topic if it does not exist (see
// [SubscriberConfig.Topic]). Subscribe does it too.
func (s *Subscriber) SubscribeInitialize(topic string) error {
	if s.isClosed() {
		return fmt.Errorf("%w: subscriber", replog.ErrClosed)
	}
	_, err := s.l.EnsureTopic(context.Background(), topic, s.cfg.Topic)
	if err != nil {
		return fmt.Errorf("replogwatermill: topic %q: %w", topic, err)
	}
	return nil
}

// Subscribe creates topic if it does not exist and returns a channel of
// its messages, read as the type's doc says. The channel is closed when
// ctx ends or the subscriber is closed; each message's context derives
// from ctx and ends when the message is acknowledged or nacked. A ctx
// without deadline gets 30s for creating the topic and joining the group.
//
// The subscription also ends, its channel closed and the error logged,
// if its topic is deleted or reading fails for good; errors that
// [replog.IsRetriable] accepts are logged and retried.
func (s *Subscriber) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	if s.isClosed() {
		return nil, fmt.Errorf("%w: subscriber", replog.ErrClosed)
	}
	group := s.GroupName(topic)
	if len(group) > 249 {
		return nil, fmt.Errorf("%w: group %q and topic %q make a group name of %d bytes (at most 249)",
			replog.ErrInvalidConfig, s.cfg.ConsumerGroup, topic, len(group))
	}
	t, err := s.l.EnsureTopic(ctx, topic, s.cfg.Topic)
	if err != nil {
		return nil, fmt.Errorf("replogwatermill: topic %q: %w", topic, err)
	}
	sctx, cancel := context.WithCancel(ctx)
	sub := &subscription{s: s, out: make(chan *message.Message), ctx: sctx, cancel: cancel}
	if s.cfg.ShareGroup != "" {
		sub.logger = s.logger.With(watermill.LogFields{"topic": topic, "share_group": s.cfg.ShareGroup})
		sub.share, err = s.newShareConsumer(ctx, t)
	} else {
		sub.logger = s.logger.With(watermill.LogFields{"topic": topic, "consumer_group": group})
		sub.c, err = replog.NewConsumer(t, replog.Bytes(), &replog.ConsumerOptions{Group: group, GroupOptions: s.cfg.GroupOptions})
	}
	if err != nil {
		cancel()
		return nil, fmt.Errorf("replogwatermill: subscribe to %q: %w", topic, err)
	}

	s.mu.Lock()
	if s.mu.closed {
		s.mu.Unlock()
		cancel()
		sub.closeConsumer()
		return nil, fmt.Errorf("%w: subscriber", replog.ErrClosed)
	}
	s.mu.subs[sub] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()

	go sub.run()
	return sub.out, nil
}

func (s *Subscriber) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.mu.closed
}

// Close ends every subscription, closes their channels and consumers, and
// returns once they are closed. Messages delivered and not acknowledged
// are delivered again to the group's next reader. It does not close the
// [replog.Log]. Later Subscribe calls fail with [replog.ErrClosed]. Safe
// to call twice.
func (s *Subscriber) Close() error {
	s.mu.Lock()
	s.mu.closed = true
	subs := make([]*subscription, 0, len(s.mu.subs))
	for sub := range s.mu.subs {
		subs = append(subs, sub)
	}
	s.mu.Unlock()
	for _, sub := range subs {
		sub.cancel()
	}
	s.wg.Wait()
	return nil
}

// subscription is one Subscribe call: its goroutine (run) owns the
// consumer, which is not safe for concurrent use.
type subscription struct {
	s *Subscriber
	// Exactly one of c and share is set.
	c      *replog.Consumer[[]byte]
	share  *replog.ShareConsumer[[]byte]
	out    chan *message.Message
	ctx    context.Context
	cancel context.CancelFunc
	logger watermill.LoggerAdapter
	// pending are acknowledged offsets not yet committed (with a
	// CommitInterval), and timer fires when they are due; nil when none.
	pending map[int]int64
	timer   *time.Timer
}

// commitTimeout bounds one commit of an acknowledged offset.
const commitTimeout = 10 * time.Second

func (sub *subscription) run() {
	defer func() {
		sub.cancel()
		sub.flush()
		sub.closeConsumer()
		close(sub.out)
		sub.s.mu.Lock()
		delete(sub.s.mu.subs, sub)
		sub.s.mu.Unlock()
		sub.s.wg.Done()
	}()
	if sub.share != nil {
		sub.readShare()
	} else {
		sub.read()
	}
}

// closeConsumer closes the subscription's consumer, logging an error.
func (sub *subscription) closeConsumer() {
	var err error
	if sub.share != nil {
		err = sub.share.Close()
	} else {
		err = sub.c.Close()
	}
	if err != nil {
		sub.logger.Error("replogwatermill: close consumer", err, nil)
	}
}

// read delivers what the consumer reads until the subscription ends.
func (sub *subscription) read() {
	backoff := 10 * time.Millisecond
	for {
		// Commit before Poll: it may give partitions up to other members.
		sub.flush()
		recs, err := sub.c.Poll(sub.ctx)
		switch {
		case sub.ctx.Err() != nil || errors.Is(err, replog.ErrClosed):
			return
		case err != nil && (replog.IsRetriable(err) || errors.Is(err, replog.ErrUnknownMember)):
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
		for _, rec := range recs {
			if !sub.deliver(rec) {
				return
			}
		}
	}
}

// deliver sends rec until it is acknowledged, then commits it with a
// group. It reports false when the subscription ends first.
func (sub *subscription) deliver(rec replog.Record[[]byte]) bool {
	for {
		msg := toMessage(rec)
		ctx, cancel := context.WithCancel(context.WithValue(sub.ctx, positionKey{},
			Position{Topic: rec.Topic, Partition: rec.Partition, Offset: rec.Offset}))
		msg.SetContext(ctx)
		select {
		case sub.out <- msg:
		case <-sub.ctx.Done():
			cancel()
			return false
		}
	waiting:
		for {
			select {
			case <-msg.Acked():
				cancel()
				sub.acked(rec)
				return true
			case <-msg.Nacked():
				cancel()
				if !sub.sleep(sub.s.cfg.NackResendSleep) {
					return false
				}
				break waiting // deliver it again
			case <-sub.due():
				sub.flush()
			case <-sub.ctx.Done():
				cancel()
				// An Ack racing with Close still counts: run's
				// deferred flush commits it.
				select {
				case <-msg.Acked():
					sub.acked(rec)
				default:
				}
				return false
			}
		}
	}
}

// acked records rec's acknowledgement for a group: the offset after it is
// committed now, or with a CommitInterval when due.
func (sub *subscription) acked(rec replog.Record[[]byte]) {
	if sub.s.cfg.ConsumerGroup == "" {
		return
	}
	if sub.pending == nil {
		sub.pending = map[int]int64{}
	}
	sub.pending[rec.Partition] = rec.Offset + 1
	if sub.s.cfg.CommitInterval == 0 {
		sub.flush()
	} else if sub.timer == nil {
		sub.timer = time.NewTimer(sub.s.cfg.CommitInterval)
	}
}

// due fires when pending offsets are due; nil (never) when none are.
func (sub *subscription) due() <-chan time.Time {
	if sub.timer == nil {
		return nil
	}
	return sub.timer.C
}

// flush commits the pending offsets. It outlives the subscription's ctx by
// up to commitTimeout, so that an Ack just before Close is not lost. A
// failed commit is logged and not retried: a later one covers it, and if
// the partition has moved on, its new reader redelivers.
func (sub *subscription) flush() {
	if sub.timer != nil {
		sub.timer.Stop()
		sub.timer = nil
	}
	if len(sub.pending) == 0 {
		return
	}
	offsets := sub.pending
	sub.pending = nil
	ctx, cancel := context.WithTimeout(context.WithoutCancel(sub.ctx), commitTimeout)
	defer cancel()
	if err := sub.c.CommitOffsets(ctx, offsets); err != nil {
		sub.logger.Error("replogwatermill: commit", err, watermill.LogFields{"offsets": fmt.Sprint(offsets)})
	}
}

// sleep waits d, or less if the subscription ends; it reports whether the
// subscription goes on.
func (sub *subscription) sleep(d time.Duration) bool {
	if d <= 0 {
		return sub.ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-sub.ctx.Done():
		return false
	}
}

// Position is where a delivered message is stored.
type Position struct {
	Topic     string
	Partition int
	Offset    int64
}

type positionKey struct{}

// PositionFromContext returns the position of the message whose context
// (message.Message.Context) ctx is, or derives from.
func PositionFromContext(ctx context.Context) (Position, bool) {
	p, ok := ctx.Value(positionKey{}).(Position)
	return p, ok
}
