package replogwatermill_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/replog/replog"
	replogwatermill "github.com/replog/replog/watermill"
)

func deliveries(t *testing.T, msg *message.Message) int {
	t.Helper()
	n, ok := replogwatermill.DeliveriesFromContext(msg.Context())
	if !ok {
		t.Fatalf("message %s has no delivery count", msg.UUID)
	}
	return n
}

// A nacked message does not hold back the next one, and comes back after
// NackResendSleep with its delivery counted.
func TestShareNackDoesNotHoldBack(t *testing.T) {
	l := openLog(t)
	ids := publishN(t, newPublisher(t, l, replogwatermill.PublisherConfig{}), "jobs", 3)
	s := newSubscriber(t, l, replogwatermill.SubscriberConfig{ShareGroup: "workers", NackResendSleep: 300 * time.Millisecond})
	ch, err := s.Subscribe(context.Background(), "jobs")
	if err != nil {
		t.Fatal(err)
	}
	first := receive(t, ch)
	if first.UUID != ids[0] || deliveries(t, first) != 1 {
		t.Fatalf("got %s, delivery %d; want %s, 1", first.UUID, deliveries(t, first), ids[0])
	}
	nacked := time.Now()
	first.Nack()
	select {
	case <-first.Context().Done():
	case <-time.After(time.Second):
		t.Fatal("a nacked message's context is not done")
	}
	for _, want := range ids[1:] {
		msg := receive(t, ch)
		if msg.UUID != want {
			t.Fatalf("after the nack: got %s, want %s (the nacked one held nothing back)", msg.UUID, want)
		}
		msg.Ack()
	}
	again := receive(t, ch)
	if again.UUID != ids[0] || deliveries(t, again) != 2 {
		t.Fatalf("got %s, delivery %d; want %s again, delivery 2", again.UUID, deliveries(t, again), ids[0])
	}
	if d := time.Since(nacked); d < 300*time.Millisecond {
		t.Fatalf("the nacked message came back after %v, before NackResendSleep", d)
	}
	again.Ack()
	nothing(t, ch)
}

// Two subscribers of one share group hold distinct messages of a single
// partition at once (a consumer group gives the partition to one of them),
// and between them read every message once.
func TestShareTwoSubscribersAtOnce(t *testing.T) {
	l := openLog(t)
	p := newPublisher(t, l, replogwatermill.PublisherConfig{})
	ids := publishN(t, p, "work", 20)
	cfg := replogwatermill.SubscriberConfig{ShareGroup: "workers"}
	var chans [2]<-chan *message.Message
	for i := range chans {
		ch, err := newSubscriber(t, l, cfg).Subscribe(context.Background(), "work")
		if err != nil {
			t.Fatal(err)
		}
		chans[i] = ch
	}
	a, b := receive(t, chans[0]), receive(t, chans[1]) // both held, neither acked
	if a.UUID == b.UUID {
		t.Fatalf("both subscribers hold %s", a.UUID)
	}
	got := map[string]int{a.UUID: 1, b.UUID: 1}
	per := [2]int{1, 1}
	a.Ack()
	b.Ack()
	for len(got) < len(ids) {
		select {
		case msg := <-chans[0]:
			got[msg.UUID]++
			per[0]++
			msg.Ack()
		case msg := <-chans[1]:
			got[msg.UUID]++
			per[1]++
			msg.Ack()
		case <-time.After(10 * time.Second):
			t.Fatalf("got %d of %d messages", len(got), len(ids))
		}
	}
	for _, ch := range chans {
		nothing(t, ch)
	}
	for _, id := range ids {
		if got[id] != 1 {
			t.Errorf("%s delivered %d times", id, got[id])
		}
	}
	t.Logf("messages per subscriber: %v", per)
}

// A message whose lock expires is delivered again, to another subscriber;
// its context ended at the expiry, and its late Ack is refused and logged.
func TestShareLockExpires(t *testing.T) {
	l := openLog(t)
	ids := publishN(t, newPublisher(t, l, replogwatermill.PublisherConfig{}), "slow", 1)
	cfg := replogwatermill.SubscriberConfig{ShareGroup: "workers",
		ShareOptions: replog.ShareConsumerOptions{LockDuration: 300 * time.Millisecond}}
	logs := watermill.NewCaptureLogger()
	s1, err := replogwatermill.NewSubscriber(l, cfg, logs)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s1.Close() })
	ch1, err := s1.Subscribe(context.Background(), "slow")
	if err != nil {
		t.Fatal(err)
	}
	held := receive(t, ch1)
	select {
	case <-held.Context().Done():
		if !errors.Is(held.Context().Err(), context.DeadlineExceeded) {
			t.Fatalf("context ended with %v, want the lock's deadline", held.Context().Err())
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the context of a message held past its lock did not end")
	}
	ch2, err := newSubscriber(t, l, cfg).Subscribe(context.Background(), "slow")
	if err != nil {
		t.Fatal(err)
	}
	again := receive(t, ch2)
	if again.UUID != ids[0] || deliveries(t, again) != 2 {
		t.Fatalf("got %s, delivery %d; want %s, delivery 2", again.UUID, deliveries(t, again), ids[0])
	}
	again.Ack()
	held.Ack() // too late: refused, logged, and nothing comes again
	nothing(t, ch1)
	nothing(t, ch2)
	logged := false
	for _, m := range logs.Captured()[watermill.ErrorLogLevel] {
		// Already acknowledged: the other delivery's Ack came first.
		logged = logged || errors.Is(m.Err, replog.ErrNotAcquired) || errors.Is(m.Err, replog.ErrAlreadyAcknowledged)
	}
	if !logged {
		t.Fatalf("the late Ack's refusal was not logged: %v", logs.Captured())
	}
}

// Close releases what a subscription holds: another subscriber gets it at
// once, not after the lock (1h here) expires.
func TestShareCloseReleases(t *testing.T) {
	l := openLog(t)
	ids := publishN(t, newPublisher(t, l, replogwatermill.PublisherConfig{}), "c", 1)
	cfg := replogwatermill.SubscriberConfig{ShareGroup: "workers",
		ShareOptions: replog.ShareConsumerOptions{LockDuration: time.Hour}}
	s1 := newSubscriber(t, l, cfg)
	ch1, err := s1.Subscribe(context.Background(), "c")
	if err != nil {
		t.Fatal(err)
	}
	receive(t, ch1)
	if err := s1.Close(); err != nil {
		t.Fatal(err)
	}
	ch2, err := newSubscriber(t, l, cfg).Subscribe(context.Background(), "c")
	if err != nil {
		t.Fatal(err)
	}
	if msg := receive(t, ch2); msg.UUID != ids[0] {
		t.Fatalf("got %s, want %s", msg.UUID, ids[0])
	}
}

// A message nacked MaxDeliveries times goes to the dead-letter topic, which
// Subscribe created, with its UUID, payload and metadata, and the
// replog.dlq.* headers as metadata; it is not delivered again.
func TestShareDeadLetter(t *testing.T) {
	l := openLog(t)
	p := newPublisher(t, l, replogwatermill.PublisherConfig{})
	poison := message.NewMessage("poison", []byte("bad"))
	poison.Metadata.Set("tenant", "t1")
	if err := p.Publish("jobs", poison); err != nil {
		t.Fatal(err)
	}
	ids := publishN(t, p, "jobs", 1)
	s := newSubscriber(t, l, replogwatermill.SubscriberConfig{ShareGroup: "workers", NackResendSleep: -1,
		ShareOptions: replog.ShareConsumerOptions{MaxDeliveries: 2, DeadLetterTopic: "jobs.dead"}})
	ch, err := s.Subscribe(context.Background(), "jobs")
	if err != nil {
		t.Fatal(err)
	}
	nacks, acked := 0, false
	for nacks < 2 || !acked {
		msg := receive(t, ch)
		switch msg.UUID {
		case "poison":
			nacks++
			if nacks > 2 {
				t.Fatalf("poison delivered %d times, MaxDeliveries is 2", nacks)
			}
			msg.Nack()
		case ids[0]:
			acked = true
			msg.Ack()
		default:
			t.Fatalf("unexpected %s", msg.UUID)
		}
	}
	nothing(t, ch)

	dead, err := newSubscriber(t, l, replogwatermill.SubscriberConfig{}).Subscribe(context.Background(), "jobs.dead")
	if err != nil {
		t.Fatal(err)
	}
	msg := receive(t, dead)
	want := map[string]string{"tenant": "t1", replog.HeaderDLQReason: "max-deliveries", replog.HeaderDLQDeliveries: "2",
		replog.HeaderDLQTopic: "jobs", replog.HeaderDLQOffset: "0", replog.HeaderDLQGroup: "workers"}
	if msg.UUID != "poison" || string(msg.Payload) != "bad" {
		t.Fatalf("dead letter %s %q", msg.UUID, msg.Payload)
	}
	for k, v := range want {
		if msg.Metadata.Get(k) != v {
			t.Errorf("dead letter metadata %s = %q, want %q (all: %v)", k, msg.Metadata.Get(k), v, msg.Metadata)
		}
	}
	nothing(t, dead)
}

func TestShareConfigErrors(t *testing.T) {
	l := openLog(t)
	for name, cfg := range map[string]replogwatermill.SubscriberConfig{
		"share and consumer group":          {ShareGroup: "s", ConsumerGroup: "g"},
		"share and commit interval":         {ShareGroup: "s", CommitInterval: time.Second},
		"share options without share group": {ShareOptions: replog.ShareConsumerOptions{MaxDeliveries: 3}},
		"nack delay over 1h":                {ShareGroup: "s", NackResendSleep: 2 * time.Hour},
		"group options with share group":    {ShareGroup: "s", GroupOptions: replog.GroupOptions{InstanceID: "i"}},
	} {
		if _, err := replogwatermill.NewSubscriber(l, cfg, nil); !errors.Is(err, replog.ErrInvalidConfig) {
			t.Errorf("%s: %v, want ErrInvalidConfig", name, err)
		}
	}
	// Checked by replog when Subscribe makes the member.
	s := newSubscriber(t, l, replogwatermill.SubscriberConfig{ShareGroup: "s",
		ShareOptions: replog.ShareConsumerOptions{LockDuration: 2 * time.Hour}})
	if _, err := s.Subscribe(context.Background(), "t"); !errors.Is(err, replog.ErrInvalidConfig) {
		t.Errorf("lock of 2h: %v, want ErrInvalidConfig", err)
	}
}
