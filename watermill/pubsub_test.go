package replogwatermill_test

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/tests"
	"github.com/replog/replog"
	"github.com/replog/replog/replogtest"
	replogwatermill "github.com/replog/replog/watermill"
)

// features are what the adapter promises, for Watermill's conformance
// suite. ExactlyOnceDelivery is false: delivery is at least once.
// RestartServiceCommand is empty, so the suite's TestReconnect skips:
// replog runs inside the process, and its own fault tests cover crashes.
var features = tests.Features{
	ConsumerGroups:                      true,
	Persistent:                          true,
	GuaranteedOrder:                     true,
	GuaranteedOrderWithSingleSubscriber: true,
	NewSubscriberReceivesOldMessages:    true,
}

// suiteNackSleep keeps the suite's hundreds of Nacks (TestContinueAfterErrors)
// quick; the default is 100ms.
const suiteNackSleep = time.Millisecond

// pubSubOn returns constructors for the suite; each call asks logs for
// the Log of its publisher and the Log of its subscriber.
func pubSubOn(logs func() (pub, sub *replog.Log)) (tests.PubSubConstructor, tests.ConsumerGroupPubSubConstructor) {
	group := func(t *testing.T, consumerGroup string) (message.Publisher, message.Subscriber) {
		pubLog, subLog := logs()
		pub, err := replogwatermill.NewPublisher(pubLog, replogwatermill.PublisherConfig{}, nil)
		if err != nil {
			t.Fatal(err)
		}
		sub, err := replogwatermill.NewSubscriber(subLog, replogwatermill.SubscriberConfig{
			ConsumerGroup:   consumerGroup,
			NackResendSleep: suiteNackSleep,
		}, nil)
		if err != nil {
			t.Fatal(err)
		}
		return pub, sub
	}
	plain := func(t *testing.T) (message.Publisher, message.Subscriber) { return group(t, "") }
	return plain, group
}

// TestPubSub runs Watermill's conformance suite on one in-memory node.
func TestPubSub(t *testing.T) {
	l, err := replog.Open("", &replog.Options{InMemory: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	plain, group := pubSubOn(func() (*replog.Log, *replog.Log) { return l, l })
	tests.TestPubSub(t, features, plain, group)
}

// TestPubSubCluster runs the suite on a 3-node cluster, with every
// publisher and its subscriber on different nodes (rotating over the
// three).
func TestPubSubCluster(t *testing.T) {
	c := replogtest.NewCluster(t, 3)
	var n atomic.Int64
	plain, group := pubSubOn(func() (*replog.Log, *replog.Log) {
		i := int(n.Add(1))
		return c.Log(i % 3), c.Log((i + 1) % 3)
	})
	tests.TestPubSub(t, features, plain, group)
}
