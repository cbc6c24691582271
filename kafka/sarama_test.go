package replogkafka_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/IBM/sarama"

	"github.com/replog/replog"
	replogkafka "github.com/replog/replog/kafka"
)

// saramaNode is a durable single node on dir with a listener on a free
// loopback port. Stop closes both, as a broker restart does.
type saramaNode struct {
	l   *replog.Log
	srv *replogkafka.Server
}

func startSaramaNode(t *testing.T, dir string) *saramaNode {
	t.Helper()
	l, err := replog.Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := replogkafka.Listen(l, "127.0.0.1:0", nil)
	if err != nil {
		l.Close()
		t.Fatal(err)
	}
	n := &saramaNode{l: l, srv: srv}
	t.Cleanup(n.stop)
	return n
}

func (n *saramaNode) addrs() []string { return []string{n.srv.Addr().String()} }

// stop closes the listener, then the Log; it may be called twice.
func (n *saramaNode) stop() {
	n.srv.Close()
	n.l.Close()
}

// saramaConfig is a client of Kafka version v with an idempotent producer
// and a group consumer starting from the earliest offset.
func saramaConfig(v sarama.KafkaVersion) *sarama.Config {
	c := sarama.NewConfig()
	c.Version = v
	c.ClientID = "replog-sarama-test"
	c.Producer.Idempotent = true
	c.Producer.RequiredAcks = sarama.WaitForAll
	c.Producer.Return.Successes = true
	c.Producer.Retry.Max = 5
	c.Net.MaxOpenRequests = 1
	c.Consumer.Offsets.Initial = sarama.OffsetOldest
	c.Consumer.Return.Errors = true
	// Short waits keep the test fast; the defaults are for real clusters.
	c.Consumer.MaxWaitTime = 100 * time.Millisecond
	c.Consumer.Group.Rebalance.Timeout = 10 * time.Second
	c.Metadata.Retry.Backoff = 50 * time.Millisecond
	c.Producer.Retry.Backoff = 50 * time.Millisecond
	return c
}

// saramaRecord is a record as sarama produced or consumed it.
type saramaRecord struct {
	offset     int64
	key, value string
}

// markingHandler consumes with a sarama ConsumerGroup, keeping and marking
// (for commit) the first limit records it sees across its partitions,
// then marking none: the committed offsets of each partition are then
// exactly the records kept. Safe for concurrent use (sarama calls
// ConsumeClaim once per partition, concurrently).
type markingHandler struct {
	limit int
	full  chan struct{} // closed when limit records are kept

	mu struct {
		sync.Mutex
		kept map[int32][]saramaRecord
		n    int
	}
}

func newMarkingHandler(limit int) *markingHandler {
	h := &markingHandler{limit: limit, full: make(chan struct{})}
	h.mu.kept = map[int32][]saramaRecord{}
	return h
}

func (h *markingHandler) Setup(sarama.ConsumerGroupSession) error { return nil }

// Cleanup commits what was marked before the session ends, rather than
// relying on autocommit's interval.
func (h *markingHandler) Cleanup(sess sarama.ConsumerGroupSession) error {
	sess.Commit()
	return nil
}

func (h *markingHandler) ConsumeClaim(sess sarama.ConsumerGroupSession, claim sarama.ConsumerGroupClaim) error {
	for {
		select {
		case m, ok := <-claim.Messages():
			if !ok {
				return nil
			}
			h.keep(sess, m)
		case <-sess.Context().Done():
			return nil
		}
	}
}

func (h *markingHandler) keep(sess sarama.ConsumerGroupSession, m *sarama.ConsumerMessage) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.mu.n == h.limit {
		return // past the limit: seen by the next run, so not marked
	}
	h.mu.kept[m.Partition] = append(h.mu.kept[m.Partition], saramaRecord{m.Offset, string(m.Key), string(m.Value)})
	sess.MarkMessage(m, "")
	h.mu.n++
	if h.mu.n == h.limit {
		close(h.full)
	}
}

// consumeGroup runs a sarama ConsumerGroup on topic until h is full, then
// closes it (committing what h marked) and returns what h kept.
func consumeGroup(t *testing.T, ctx context.Context, addrs []string, cfg *sarama.Config, group, topic string, h *markingHandler) map[int32][]saramaRecord {
	t.Helper()
	cg, err := sarama.NewConsumerGroup(addrs, group, cfg)
	if err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	var consumeErr error
	consumed := make(chan struct{})
	go func() {
		defer close(consumed)
		// Consume returns at each rebalance; join again until cancelled.
		for runCtx.Err() == nil {
			if err := cg.Consume(runCtx, []string{topic}, h); err != nil {
				consumeErr = err
				return
			}
		}
	}()
	var errs []error
	select {
	case <-h.full:
	case <-consumed:
	case <-ctx.Done():
		errs = append(errs, ctx.Err())
	}
	cancel()
	<-consumed
	select {
	case <-h.full:
	default:
		h.mu.Lock()
		errs = append(errs, fmt.Errorf("stopped after %d of %d records", h.mu.n, h.limit))
		h.mu.Unlock()
	}
	if consumeErr != nil {
		errs = append(errs, fmt.Errorf("consume: %w", consumeErr))
	}
	// Close leaves the group and returns the last error of the session.
	if err := cg.Close(); err != nil {
		errs = append(errs, fmt.Errorf("close: %w", err))
	}
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("group %s: %v", group, err)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.mu.kept
}

// TestSarama drives the listener with IBM/sarama, the second most used Go
// Kafka client: an idempotent producer writes keyed records to a topic of
// two partitions, a consumer group reads and commits half of them, the
// node restarts on the same directory, and the group resumes where it
// stopped, so that each record is consumed exactly once and in order per
// partition. Kafka 1.0 makes sarama send the old versions it still uses
// (Produce v5, Fetch v6, Metadata v5, JoinGroup v2); MaxVersion makes it
// send the newest it knows, starting with an ApiVersions version the
// listener answers as KIP-511 says.
func TestSarama(t *testing.T) {
	for _, tc := range []struct {
		name    string
		version sarama.KafkaVersion
	}{
		{"kafka-1.0", sarama.V1_0_0_0},
		{"max", sarama.MaxVersion},
	} {
		t.Run(tc.name, func(t *testing.T) { testSarama(t, tc.version) })
	}
}

func testSarama(t *testing.T, version sarama.KafkaVersion) {
	const (
		topic = "sarama"
		group = "sarama-group"
		n     = 100
		half  = n / 2
	)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	dir := t.TempDir()
	cfg := saramaConfig(version)
	node := startSaramaNode(t, dir)

	admin, err := sarama.NewClusterAdmin(node.addrs(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	err = admin.CreateTopic(topic, &sarama.TopicDetail{NumPartitions: 2, ReplicationFactor: 1}, false)
	admin.Close()
	if err != nil {
		t.Fatal(err)
	}

	producer, err := sarama.NewSyncProducer(node.addrs(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	produced := map[int32][]saramaRecord{}
	for i := range n {
		key, value := fmt.Sprintf("key-%d", i%7), fmt.Sprintf("value-%d", i)
		p, off, err := producer.SendMessage(&sarama.ProducerMessage{
			Topic: topic, Key: sarama.StringEncoder(key), Value: sarama.StringEncoder(value),
		})
		if err != nil {
			producer.Close()
			t.Fatalf("record %d: %v", i, err)
		}
		produced[p] = append(produced[p], saramaRecord{off, key, value})
	}
	if err := producer.Close(); err != nil {
		t.Fatal(err)
	}
	if len(produced) != 2 {
		t.Fatalf("keys went to partitions %v, want both of 2", slices.Collect(maps.Keys(produced)))
	}
	for p, recs := range produced {
		for i, r := range recs {
			if r.offset != int64(i) {
				t.Fatalf("partition %d: record %d acknowledged at offset %d, want %d", p, i, r.offset, i)
			}
		}
	}

	first := consumeGroup(t, ctx, node.addrs(), cfg, group, topic, newMarkingHandler(half))

	node.stop()
	node = startSaramaNode(t, dir)
	second := consumeGroup(t, ctx, node.addrs(), cfg, group, topic, newMarkingHandler(n-half))

	for p, want := range produced {
		got := append(slices.Clone(first[p]), second[p]...)
		if !slices.Equal(got, want) {
			t.Errorf("partition %d: consumed (first run %d, second %d)\n%v\nwant\n%v", p, len(first[p]), len(second[p]), got, want)
		}
	}
}
