package replogwatermill_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/replog/replog"
	replogwatermill "github.com/replog/replog/watermill"
)

func openLog(t *testing.T) *replog.Log {
	t.Helper()
	l, err := replog.Open("", &replog.Options{InMemory: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	return l
}

func newPublisher(t *testing.T, l *replog.Log, cfg replogwatermill.PublisherConfig) *replogwatermill.Publisher {
	t.Helper()
	p, err := replogwatermill.NewPublisher(l, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p
}

func newSubscriber(t *testing.T, l *replog.Log, cfg replogwatermill.SubscriberConfig) *replogwatermill.Subscriber {
	t.Helper()
	s, err := replogwatermill.NewSubscriber(l, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// publishN publishes messages with payloads "0".."n-1" and returns their
// UUIDs.
func publishN(t *testing.T, p *replogwatermill.Publisher, topic string, n int) []string {
	t.Helper()
	var ids []string
	for i := range n {
		msg := message.NewMessage(fmt.Sprintf("%s-%d", topic, i), []byte(strconv.Itoa(i)))
		if err := p.Publish(topic, msg); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, msg.UUID)
	}
	return ids
}

func receive(t *testing.T, ch <-chan *message.Message) *message.Message {
	t.Helper()
	select {
	case msg, ok := <-ch:
		if !ok {
			t.Fatal("channel closed")
		}
		return msg
	case <-time.After(10 * time.Second):
		t.Fatal("no message within 10s")
	}
	return nil
}

// nothing checks that ch delivers nothing for a while.
func nothing(t *testing.T, ch <-chan *message.Message) {
	t.Helper()
	select {
	case msg := <-ch:
		t.Fatalf("unexpected message %s (%q)", msg.UUID, msg.Payload)
	case <-time.After(200 * time.Millisecond):
	}
}

// A group resumes after what it acknowledged: a message delivered and not
// acknowledged before Close comes again, the acknowledged ones do not.
func TestGroupResumesAfterAck(t *testing.T) {
	l := openLog(t)
	p := newPublisher(t, l, replogwatermill.PublisherConfig{})
	ids := publishN(t, p, "orders", 10)
	cfg := replogwatermill.SubscriberConfig{ConsumerGroup: "billing"}

	s1 := newSubscriber(t, l, cfg)
	ch, err := s1.Subscribe(context.Background(), "orders")
	if err != nil {
		t.Fatal(err)
	}
	for i := range 4 {
		msg := receive(t, ch)
		if msg.UUID != ids[i] {
			t.Fatalf("message %d: got %s, want %s", i, msg.UUID, ids[i])
		}
		msg.Ack()
	}
	held := receive(t, ch) // delivered, never acknowledged
	if held.UUID != ids[4] {
		t.Fatalf("got %s, want %s", held.UUID, ids[4])
	}
	if err := s1.Close(); err != nil {
		t.Fatal(err)
	}
	if _, ok := <-ch; ok {
		t.Fatal("channel open after Close")
	}
	select {
	case <-held.Context().Done():
	default:
		t.Fatal("the unacknowledged message's context is not done after Close")
	}

	info, err := l.DescribeGroup(context.Background(), "billing/orders")
	if err != nil {
		t.Fatal(err)
	}
	if len(info.Partitions) != 1 || info.Partitions[0].Committed != 4 || info.Topic != "orders" {
		t.Fatalf("group billing/orders: %+v, want offset 4 of orders/0 committed", info)
	}

	s2 := newSubscriber(t, l, cfg)
	ch, err = s2.Subscribe(context.Background(), "orders")
	if err != nil {
		t.Fatal(err)
	}
	for i := 4; i < 10; i++ {
		msg := receive(t, ch)
		if msg.UUID != ids[i] {
			t.Fatalf("after reopening: got %s, want %s", msg.UUID, ids[i])
		}
		msg.Ack()
	}
	nothing(t, ch)

	// Another group reads everything.
	s3 := newSubscriber(t, l, replogwatermill.SubscriberConfig{ConsumerGroup: "audit"})
	ch, err = s3.Subscribe(context.Background(), "orders")
	if err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		if msg := receive(t, ch); msg.UUID != ids[i] {
			t.Fatalf("audit: got %s, want %s", msg.UUID, ids[i])
		} else {
			msg.Ack()
		}
	}
}

// One ConsumerGroup reads two topics, with separate offsets: replog groups
// read one topic each, so the subscriber joins one per topic.
func TestGroupTwoTopics(t *testing.T) {
	l := openLog(t)
	p := newPublisher(t, l, replogwatermill.PublisherConfig{})
	a := publishN(t, p, "a", 3)
	b := publishN(t, p, "b", 3)

	cfg := replogwatermill.SubscriberConfig{ConsumerGroup: "g"}
	s := newSubscriber(t, l, cfg)
	cha, err := s.Subscribe(context.Background(), "a")
	if err != nil {
		t.Fatal(err)
	}
	chb, err := s.Subscribe(context.Background(), "b")
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if msg := receive(t, cha); msg.UUID != a[i] {
			t.Fatalf("a: got %s, want %s", msg.UUID, a[i])
		} else {
			msg.Ack()
		}
	}
	msg := receive(t, chb) // acknowledge only the first of b
	if msg.UUID != b[0] {
		t.Fatalf("b: got %s, want %s", msg.UUID, b[0])
	}
	msg.Ack()
	receive(t, chb) // b[1], not acknowledged
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	if got := s.GroupName("a"); got != "g/a" {
		t.Fatalf("GroupName(a) = %q", got)
	}
	groups, err := l.ListGroups(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, g := range groups {
		names = append(names, g.Name)
	}
	if !slices.Contains(names, "g/a") || !slices.Contains(names, "g/b") {
		t.Fatalf("groups %v, want g/a and g/b", names)
	}

	s = newSubscriber(t, l, cfg)
	cha, err = s.Subscribe(context.Background(), "a")
	if err != nil {
		t.Fatal(err)
	}
	chb, err = s.Subscribe(context.Background(), "b")
	if err != nil {
		t.Fatal(err)
	}
	nothing(t, cha)
	for i := 1; i < 3; i++ {
		if msg := receive(t, chb); msg.UUID != b[i] {
			t.Fatalf("b after reopening: got %s, want %s", msg.UUID, b[i])
		} else {
			msg.Ack()
		}
	}
}

// Nack delivers the same message again, and nothing after it meanwhile.
func TestNackRedelivers(t *testing.T) {
	l := openLog(t)
	p := newPublisher(t, l, replogwatermill.PublisherConfig{})
	ids := publishN(t, p, "jobs", 2)
	s := newSubscriber(t, l, replogwatermill.SubscriberConfig{ConsumerGroup: "workers", NackResendSleep: time.Millisecond})
	ch, err := s.Subscribe(context.Background(), "jobs")
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		msg := receive(t, ch)
		if msg.UUID != ids[0] {
			t.Fatalf("got %s, want %s again", msg.UUID, ids[0])
		}
		msg.Nack()
		select {
		case <-msg.Context().Done():
		case <-time.After(time.Second):
			t.Fatal("a nacked message's context is not done")
		}
	}
	msg := receive(t, ch)
	if msg.UUID != ids[0] {
		t.Fatalf("got %s, want %s", msg.UUID, ids[0])
	}
	msg.Ack()
	msg = receive(t, ch)
	if msg.UUID != ids[1] {
		t.Fatalf("got %s, want %s", msg.UUID, ids[1])
	}
	pos, ok := replogwatermill.PositionFromContext(msg.Context())
	if !ok || pos != (replogwatermill.Position{Topic: "jobs", Partition: 0, Offset: 1}) {
		t.Fatalf("PositionFromContext = %+v, %v", pos, ok)
	}
}

// A message is one record: payload as value, UUID and metadata as headers,
// and the key from PublisherConfig.Key.
func TestMessageMapping(t *testing.T) {
	l := openLog(t)
	p := newPublisher(t, l, replogwatermill.PublisherConfig{
		Topic: replog.TopicConfig{Partitions: 4},
		Key:   func(_ string, msg *message.Message) []byte { return []byte(msg.Metadata.Get("customer")) },
	})
	var sent []*message.Message
	for i := range 40 {
		msg := message.NewMessage(fmt.Sprintf("id-%d", i), []byte(fmt.Sprintf("payload %d", i)))
		msg.Metadata.Set("customer", fmt.Sprintf("c%d", i%5))
		msg.Metadata.Set("n", strconv.Itoa(i))
		sent = append(sent, msg)
	}
	if err := p.Publish("m", sent...); err != nil {
		t.Fatal(err)
	}

	// Read the records with a plain replog consumer.
	topic, err := l.Topic("m")
	if err != nil {
		t.Fatal(err)
	}
	if topic.Partitions() != 4 {
		t.Fatalf("%d partitions, want 4", topic.Partitions())
	}
	c, err := replog.NewConsumer(topic, replog.Bytes(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	partOf := map[string]int{}
	for got := 0; got < len(sent); {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		recs, err := c.Poll(ctx)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range recs {
			i, _ := strconv.Atoi(header(r, "n"))
			want := sent[i]
			if string(r.Value) != string(want.Payload) || header(r, replogwatermill.UUIDHeader) != want.UUID ||
				string(r.Key) != want.Metadata.Get("customer") || header(r, "customer") != want.Metadata.Get("customer") {
				t.Fatalf("record %+v for message %s", r, want.UUID)
			}
			if p, ok := partOf[string(r.Key)]; ok && p != r.Partition {
				t.Fatalf("key %s in partitions %d and %d", r.Key, p, r.Partition)
			}
			partOf[string(r.Key)] = r.Partition
			got++
		}
	}

	// And through a subscriber: each key's messages in publish order.
	s := newSubscriber(t, l, replogwatermill.SubscriberConfig{})
	ch, err := s.Subscribe(context.Background(), "m")
	if err != nil {
		t.Fatal(err)
	}
	last := map[string]int{}
	for range sent {
		msg := receive(t, ch)
		i, _ := strconv.Atoi(msg.Metadata.Get("n"))
		if !msg.Equals(sent[i]) {
			t.Fatalf("received %s %q %v, sent %s %q %v", msg.UUID, msg.Payload, msg.Metadata, sent[i].UUID, sent[i].Payload, sent[i].Metadata)
		}
		cust := msg.Metadata.Get("customer")
		if prev, ok := last[cust]; ok && prev > i {
			t.Fatalf("customer %s: message %d after %d", cust, i, prev)
		}
		last[cust] = i
		msg.Ack()
	}
}

func header(r replog.Record[[]byte], key string) string {
	for _, h := range r.Headers {
		if h.Key == key {
			return string(h.Value)
		}
	}
	return ""
}

// A record written without a Publisher is delivered with the UUID
// "topic/partition/offset".
func TestForeignRecord(t *testing.T) {
	l := openLog(t)
	topic, err := l.CreateTopic(context.Background(), "foreign", replog.TopicConfig{})
	if err != nil {
		t.Fatal(err)
	}
	prod, err := replog.NewProducer(topic, replog.Bytes(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	if _, err := prod.Produce(context.Background(), replog.Message[[]byte]{Value: []byte("v"), Headers: []replog.Header{{Key: "k", Value: []byte("x")}}}); err != nil {
		t.Fatal(err)
	}
	s := newSubscriber(t, l, replogwatermill.SubscriberConfig{})
	ch, err := s.Subscribe(context.Background(), "foreign")
	if err != nil {
		t.Fatal(err)
	}
	msg := receive(t, ch)
	if msg.UUID != "foreign/0/0" || string(msg.Payload) != "v" || msg.Metadata.Get("k") != "x" {
		t.Fatalf("got %s %q %v", msg.UUID, msg.Payload, msg.Metadata)
	}
}

func TestReservedMetadata(t *testing.T) {
	l := openLog(t)
	p := newPublisher(t, l, replogwatermill.PublisherConfig{})
	ok := message.NewMessage("ok", []byte("x"))
	bad := message.NewMessage("bad", []byte("x"))
	bad.Metadata.Set(replogwatermill.UUIDHeader, "forged")
	if err := p.Publish("r", ok, bad); !errors.Is(err, replogwatermill.ErrReservedMetadata) {
		t.Fatalf("Publish: %v, want ErrReservedMetadata", err)
	}
	if _, err := l.Topic("r"); !errors.Is(err, replog.ErrTopicNotFound) {
		t.Fatalf("topic made, or records written, by a refused Publish: %v", err)
	}
}

// Close ends the handles, not the Log; both may be called twice; later
// calls fail with ErrClosed.
func TestClose(t *testing.T) {
	l := openLog(t)
	p := newPublisher(t, l, replogwatermill.PublisherConfig{})
	s := newSubscriber(t, l, replogwatermill.SubscriberConfig{ConsumerGroup: "g"})
	publishN(t, p, "c", 1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch, err := s.Subscribe(ctx, "c")
	if err != nil {
		t.Fatal(err)
	}
	receive(t, ch)
	for range 2 {
		if err := p.Close(); err != nil {
			t.Fatal(err)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if _, ok := <-ch; ok {
		t.Fatal("channel open after Close")
	}
	if err := p.Publish("c", message.NewMessage("x", nil)); !errors.Is(err, replog.ErrClosed) {
		t.Fatalf("Publish after Close: %v", err)
	}
	if _, err := s.Subscribe(ctx, "c"); !errors.Is(err, replog.ErrClosed) {
		t.Fatalf("Subscribe after Close: %v", err)
	}
	if err := s.SubscribeInitialize("c"); !errors.Is(err, replog.ErrClosed) {
		t.Fatalf("SubscribeInitialize after Close: %v", err)
	}
	if _, err := l.CreateTopic(ctx, "still-open", replog.TopicConfig{}); err != nil {
		t.Fatalf("the Log after the adapter's Close: %v", err)
	}
}

// Cancelling Subscribe's ctx closes that channel only.
func TestSubscribeCtxEndsOneSubscription(t *testing.T) {
	l := openLog(t)
	p := newPublisher(t, l, replogwatermill.PublisherConfig{})
	s := newSubscriber(t, l, replogwatermill.SubscriberConfig{})
	ctx, cancel := context.WithCancel(context.Background())
	ch1, err := s.Subscribe(ctx, "t")
	if err != nil {
		t.Fatal(err)
	}
	ch2, err := s.Subscribe(context.Background(), "t")
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	select {
	case _, ok := <-ch1:
		if ok {
			t.Fatal("message on a cancelled subscription")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("channel of a cancelled subscription still open")
	}
	ids := publishN(t, p, "t", 1)
	if msg := receive(t, ch2); msg.UUID != ids[0] {
		t.Fatalf("got %s", msg.UUID)
	}
}

func TestConfigErrors(t *testing.T) {
	l := openLog(t)
	for name, f := range map[string]func() error{
		"publisher nil log": func() error {
			_, err := replogwatermill.NewPublisher(nil, replogwatermill.PublisherConfig{}, nil)
			return err
		},
		"subscriber nil log": func() error {
			_, err := replogwatermill.NewSubscriber(nil, replogwatermill.SubscriberConfig{}, nil)
			return err
		},
		"auto-commit": func() error {
			_, err := replogwatermill.NewSubscriber(l, replogwatermill.SubscriberConfig{ConsumerGroup: "g",
				GroupOptions: replog.GroupOptions{AutoCommitInterval: time.Second}}, nil)
			return err
		},
		"group options without group": func() error {
			_, err := replogwatermill.NewSubscriber(l, replogwatermill.SubscriberConfig{
				GroupOptions: replog.GroupOptions{InstanceID: "i"}}, nil)
			return err
		},
		"commit interval without group": func() error {
			_, err := replogwatermill.NewSubscriber(l, replogwatermill.SubscriberConfig{CommitInterval: time.Second}, nil)
			return err
		},
		"negative commit interval": func() error {
			_, err := replogwatermill.NewSubscriber(l, replogwatermill.SubscriberConfig{ConsumerGroup: "g", CommitInterval: -1}, nil)
			return err
		},
		"group name too long": func() error {
			s, err := replogwatermill.NewSubscriber(l, replogwatermill.SubscriberConfig{ConsumerGroup: strings.Repeat("g", 249)}, nil)
			if err != nil {
				return err
			}
			defer s.Close()
			_, err = s.Subscribe(context.Background(), "t")
			return err
		},
		"bad topic name": func() error {
			p, err := replogwatermill.NewPublisher(l, replogwatermill.PublisherConfig{}, nil)
			if err != nil {
				return err
			}
			defer p.Close()
			return p.Publish("no/slash", message.NewMessage("x", nil))
		},
	} {
		if err := f(); !errors.Is(err, replog.ErrInvalidConfig) {
			t.Errorf("%s: %v, want ErrInvalidConfig", name, err)
		}
	}
}

// Two subscriptions of one group share a topic's partitions: each message
// is delivered once, to one of them.
func TestGroupMembersSharePartitions(t *testing.T) {
	l := openLog(t)
	four := replog.TopicConfig{Partitions: 4}
	p := newPublisher(t, l, replogwatermill.PublisherConfig{
		Topic: four,
		Key:   func(_ string, msg *message.Message) []byte { return []byte(msg.UUID) },
	})
	cfg := replogwatermill.SubscriberConfig{ConsumerGroup: "g", Topic: four}
	chans := []<-chan *message.Message{}
	for range 2 {
		ch, err := newSubscriber(t, l, cfg).Subscribe(context.Background(), "shared")
		if err != nil {
			t.Fatal(err)
		}
		chans = append(chans, ch)
	}
	// Wait until each member reads some partitions.
	deadline := time.Now().Add(20 * time.Second)
	for {
		info, err := l.DescribeGroup(context.Background(), "g/shared")
		if err != nil {
			t.Fatal(err)
		}
		if len(info.Members) == 2 && len(info.Members[0].Owned) > 0 && len(info.Members[1].Owned) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("partitions not shared: %+v", info)
		}
		time.Sleep(20 * time.Millisecond)
	}

	ids := publishN(t, p, "shared", 40)
	got := map[string]int{}
	perMember := [2]int{}
	for len(got) < len(ids) {
		select {
		case msg := <-chans[0]:
			got[msg.UUID]++
			perMember[0]++
			msg.Ack()
		case msg := <-chans[1]:
			got[msg.UUID]++
			perMember[1]++
			msg.Ack()
		case <-time.After(10 * time.Second):
			t.Fatalf("got %d of %d messages", len(got), len(ids))
		}
	}
	for _, ch := range chans {
		nothing(t, ch)
	}
	for id, n := range got {
		if n != 1 {
			t.Errorf("%s delivered %d times", id, n)
		}
	}
	if perMember[0] == 0 || perMember[1] == 0 {
		t.Errorf("messages per member: %v", perMember)
	}
}

// Closing the Log under the adapter ends its subscriptions and fails its
// publishes with ErrClosed; the handles still close cleanly.
func TestLogClosedUnderneath(t *testing.T) {
	l, err := replog.Open("", &replog.Options{InMemory: true})
	if err != nil {
		t.Fatal(err)
	}
	p := newPublisher(t, l, replogwatermill.PublisherConfig{})
	s := newSubscriber(t, l, replogwatermill.SubscriberConfig{ConsumerGroup: "g"})
	publishN(t, p, "gone", 1)
	ch, err := s.Subscribe(context.Background(), "gone")
	if err != nil {
		t.Fatal(err)
	}
	receive(t, ch).Ack()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case msg, ok := <-ch:
		if ok {
			t.Fatalf("message %s after the Log closed", msg.UUID)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("channel still open 10s after the Log closed")
	}
	if err := p.Publish("gone", message.NewMessage("x", nil)); !errors.Is(err, replog.ErrClosed) {
		t.Fatalf("Publish on a closed Log: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
}

// committed returns the group's committed offset of partition 0.
func committed(t *testing.T, l *replog.Log, group string) int64 {
	t.Helper()
	info, err := l.DescribeGroup(context.Background(), group)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range info.Partitions {
		if p.Partition == 0 {
			return p.Committed
		}
	}
	t.Fatalf("group %s has no partition 0: %+v", group, info)
	return 0
}

// With a CommitInterval, acknowledgements are committed when due, and at
// the latest when the subscription ends.
func TestCommitInterval(t *testing.T) {
	for _, tc := range []struct {
		name     string
		interval time.Duration
	}{
		{"due while a message is held", 50 * time.Millisecond},
		{"not due before Close", time.Hour},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := openLog(t)
			ids := publishN(t, newPublisher(t, l, replogwatermill.PublisherConfig{}), "ci", 5)
			cfg := replogwatermill.SubscriberConfig{ConsumerGroup: "g", CommitInterval: tc.interval}
			s := newSubscriber(t, l, cfg)
			ch, err := s.Subscribe(context.Background(), "ci")
			if err != nil {
				t.Fatal(err)
			}
			for range 3 {
				receive(t, ch).Ack()
			}
			receive(t, ch) // held
			if tc.interval == time.Hour {
				time.Sleep(200 * time.Millisecond)
				if got := committed(t, l, "g/ci"); got != -1 {
					t.Fatalf("committed %d before the interval and before Close", got)
				}
			} else {
				deadline := time.Now().Add(10 * time.Second)
				for committed(t, l, "g/ci") != 3 {
					if time.Now().After(deadline) {
						t.Fatalf("committed %d, want 3 while the 4th message is held", committed(t, l, "g/ci"))
					}
					time.Sleep(10 * time.Millisecond)
				}
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			if got := committed(t, l, "g/ci"); got != 3 {
				t.Fatalf("committed %d after Close, want 3", got)
			}
			ch, err = newSubscriber(t, l, cfg).Subscribe(context.Background(), "ci")
			if err != nil {
				t.Fatal(err)
			}
			if msg := receive(t, ch); msg.UUID != ids[3] {
				t.Fatalf("resumed at %s, want %s", msg.UUID, ids[3])
			}
		})
	}
}

// An Ack just before Close is committed: the next subscriber of the group
// does not get that message again.
func TestAckThenClose(t *testing.T) {
	l := openLog(t)
	const n = 20
	ids := publishN(t, newPublisher(t, l, replogwatermill.PublisherConfig{}), "atc", n)
	for i := range n {
		s := newSubscriber(t, l, replogwatermill.SubscriberConfig{ConsumerGroup: "g"})
		ch, err := s.Subscribe(context.Background(), "atc")
		if err != nil {
			t.Fatal(err)
		}
		msg := receive(t, ch)
		if msg.UUID != ids[i] {
			t.Fatalf("subscriber %d got %s, want %s: an acknowledged message came again", i, msg.UUID, ids[i])
		}
		msg.Ack()
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
}
