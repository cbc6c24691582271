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
	// NackResendSleep is how long a subscription waits before delivering
	// a nacked message again. Default 100ms; negative means no wait.
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

// Subscriber reads Watermill messages from replog topics. It is safe for
// concurrent use.
//
// Each Subscribe call reads with a [replog.Consumer] of its own and
// delivers one message at a time: the next message comes once the
// previous one is acknowledged. Messages of a partition come in offset
// order. Nack delivers the same message again (after NackResendSleep),
// and until it is acknowledged it holds back the messages after it: not
// only those of its partition but those of every partition the
// subscription reads (one partition, with the default topic config).
// Share groups, once replog has them, will let a nacked message wait
// without holding back the rest.
//
// With a ConsumerGroup, Ack commits the offset after the message before
// the next message is delivered (one commit through the group's Raft
// group per message), or within [SubscriberConfig.CommitInterval]. A
// commit that fails is logged, and covered by the next one that succeeds; the messages it covered are delivered again
// after a restart or rebalance. Delivery is at least once: a message
// delivered and not acknowledged before Close, a crash or the loss of
// its partition is delivered again, and a member that holds a message
// unacknowledged for longer than [replog.GroupOptions.MaxPollInterval] (5
// minutes by default) loses its partitions, which others then read from
// the last commit.
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
// join (see [SubscriberConfig.ConsumerGroup]), or "" without a group.
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
	c, err := replog.NewConsumer(t, replog.Bytes(), &replog.ConsumerOptions{Group: group, GroupOptions: s.cfg.GroupOptions})
	if err != nil {
		return nil, fmt.Errorf("replogwatermill: subscribe to %q: %w", topic, err)
	}
	sctx, cancel := context.WithCancel(ctx)
	sub := &subscription{s: s, c: c, out: make(chan *message.Message), ctx: sctx, cancel: cancel,
		logger: s.logger.With(watermill.LogFields{"topic": topic, "consumer_group": group})}

	s.mu.Lock()
	if s.mu.closed {
		s.mu.Unlock()
		cancel()
		_ = c.Close()
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
	s      *Subscriber
	c      *replog.Consumer[[]byte]
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
		if err := sub.c.Close(); err != nil {
			sub.logger.Error("replogwatermill: close consumer", err, nil)
		}
		close(sub.out)
		sub.s.mu.Lock()
		delete(sub.s.mu.subs, sub)
		sub.s.mu.Unlock()
		sub.s.wg.Done()
	}()
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
