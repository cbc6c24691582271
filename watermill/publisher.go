package replogwatermill

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/replog/replog"
)

// PublisherConfig configures [NewPublisher]. The zero value is valid.
type PublisherConfig struct {
	// Topic configures the topics that Publish creates when they do not
	// exist ([replog.Log.EnsureTopic]); an existing topic is used as it
	// is. The zero value creates one partition, which keeps every
	// message in publish order (see Key); replicas default as in
	// [replog.TopicConfig].
	Topic replog.TopicConfig
	// Key returns the record key of a message: records with equal keys go
	// to the same partition, in publish order. Nil (the default): records
	// have no key, and on a topic of several partitions the producer's
	// partitioner spreads them, so only messages that land in the same
	// partition keep their order. Key may return nil for no key.
	Key func(topic string, msg *message.Message) []byte
	// Producer configures the replog producer made for each topic. Nil
	// (the default): replog's defaults, idempotent, acknowledged by a
	// quorum. Its Transactional field must be nil.
	Producer *replog.ProducerOptions
}

// Publisher publishes Watermill messages to replog topics, one
// [replog.Producer] per topic, made on first use. It is safe for
// concurrent use.
//
// Publish is synchronous: it returns once every message it was given is
// stored (committed by a quorum of the partition's replicas with the
// default producer options), or with the first error. Messages of one
// Publish call to one partition are stored in their order.
//
// Close closes the publisher's producers, not the [replog.Log].
type Publisher struct {
	l      *replog.Log
	cfg    PublisherConfig
	logger watermill.LoggerAdapter

	mu struct {
		sync.Mutex
		closed    bool
		producers map[string]*topicProducer
	}
}

// topicProducer is the producer of one topic, made once: mu is held while
// it is made, so a slow topic creation holds back only its own topic.
type topicProducer struct {
	mu sync.Mutex
	p  *replog.Producer[[]byte]
}

// NewPublisher returns a publisher writing to the topics of l. A nil
// logger discards logs.
func NewPublisher(l *replog.Log, cfg PublisherConfig, logger watermill.LoggerAdapter) (*Publisher, error) {
	if l == nil {
		return nil, fmt.Errorf("%w: nil Log", replog.ErrInvalidConfig)
	}
	if cfg.Producer != nil && cfg.Producer.Transactional != nil {
		return nil, fmt.Errorf("%w: PublisherConfig.Producer.Transactional must be nil", replog.ErrInvalidConfig)
	}
	if logger == nil {
		logger = watermill.NopLogger{}
	}
	p := &Publisher{l: l, cfg: cfg, logger: logger}
	p.mu.producers = map[string]*topicProducer{}
	return p, nil
}

// Publish stores messages in topic, creating the topic if it does not
// exist (see [PublisherConfig.Topic]). Each message's context bounds the
// wait for room in the producer's buffer; once buffered, delivery is bounded
// by [replog.ProducerOptions.DeliveryTimeout] (2 minutes by default).
//
// Every message is checked before any is sent: a message with metadata
// under [UUIDHeader] fails the call with [ErrReservedMetadata] and nothing
// is published. Later failures (a record too large, a timeout) may leave
// some messages of the call stored and others not; the first error is
// returned.
func (p *Publisher) Publish(topic string, messages ...*message.Message) error {
	recs := make([]replog.Message[[]byte], len(messages))
	for i, msg := range messages {
		var key []byte
		if p.cfg.Key != nil {
			key = p.cfg.Key(topic, msg)
		}
		r, err := toRecord(msg, key)
		if err != nil {
			return err
		}
		recs[i] = r
	}
	prod, err := p.producer(topic)
	if err != nil {
		return err
	}
	var (
		wg       sync.WaitGroup
		errMu    sync.Mutex
		firstErr error
	)
	wg.Add(len(recs))
	for i, r := range recs {
		prod.ProduceAsync(messages[i].Context(), r, func(_ replog.Position, err error) {
			if err != nil {
				errMu.Lock()
				if firstErr == nil {
					firstErr = fmt.Errorf("replogwatermill: publish message %s to %q: %w", messages[i].UUID, topic, err)
				}
				errMu.Unlock()
			}
			wg.Done()
		})
	}
	wg.Wait()
	if errors.Is(firstErr, replog.ErrTopicNotFound) {
		// The topic was deleted under the producer: the next Publish
		// makes a new producer, creating the topic again.
		p.forget(topic, prod)
	}
	return firstErr
}

// producer returns topic's producer, making it (and the topic) if needed.
func (p *Publisher) producer(topic string) (*replog.Producer[[]byte], error) {
	p.mu.Lock()
	if p.mu.closed {
		p.mu.Unlock()
		return nil, fmt.Errorf("%w: publisher", replog.ErrClosed)
	}
	tp := p.mu.producers[topic]
	if tp == nil {
		tp = &topicProducer{}
		p.mu.producers[topic] = tp
	}
	p.mu.Unlock()

	tp.mu.Lock()
	defer tp.mu.Unlock()
	if tp.p != nil {
		return tp.p, nil
	}
	t, err := p.l.EnsureTopic(context.Background(), topic, p.cfg.Topic)
	if err != nil {
		return nil, fmt.Errorf("replogwatermill: topic %q: %w", topic, err)
	}
	prod, err := replog.NewProducer(t, replog.Bytes(), p.cfg.Producer)
	if err != nil {
		return nil, fmt.Errorf("replogwatermill: producer for %q: %w", topic, err)
	}
	// Close may have run while the topic was made: it did not see this
	// producer, so close it here.
	p.mu.Lock()
	closed := p.mu.closed
	p.mu.Unlock()
	if closed {
		_ = prod.Close()
		return nil, fmt.Errorf("%w: publisher", replog.ErrClosed)
	}
	tp.p = prod
	p.logger.Debug("replogwatermill: producer ready", watermill.LogFields{"topic": topic, "partitions": t.Partitions()})
	return prod, nil
}

// forget drops topic's producer if it is still prod.
func (p *Publisher) forget(topic string, prod *replog.Producer[[]byte]) {
	p.mu.Lock()
	tp := p.mu.producers[topic]
	p.mu.Unlock()
	if tp == nil {
		return
	}
	tp.mu.Lock()
	defer tp.mu.Unlock()
	if tp.p == prod {
		tp.p = nil
		_ = prod.Close()
	}
}

// Close closes the producers, sending what they buffered, and does not
// close the [replog.Log]. Later Publish calls fail with [replog.ErrClosed].
// Safe to call twice.
func (p *Publisher) Close() error {
	p.mu.Lock()
	if p.mu.closed {
		p.mu.Unlock()
		return nil
	}
	p.mu.closed = true
	producers := p.mu.producers
	p.mu.producers = nil
	p.mu.Unlock()
	var errs []error
	for _, tp := range producers {
		tp.mu.Lock()
		if tp.p != nil {
			if err := tp.p.Close(); err != nil {
				errs = append(errs, err)
			}
			tp.p = nil
		}
		tp.mu.Unlock()
	}
	return errors.Join(errs...)
}
