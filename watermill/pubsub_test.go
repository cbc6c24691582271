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

// shareFeatures are what share mode (SubscriberConfig.ShareGroup)
// promises. Order is not kept: a nacked message comes after later ones,
// and several subscriptions of a group process messages at once. The
// suite's plain constructor makes members of one share group, as its
// group constructor does of the named ones, so a new subscriber does not
// get the messages the group accepted: NewSubscriberReceivesOldMessages is
// false (a new share group reads from the earliest offset, which
// TestConsumerGroups checks).
var shareFeatures = tests.Features{
	ConsumerGroups: true,
	Persistent:     true,
}

// suiteShareGroup is the share group of the suite's plain constructor;
// each of its tests has topics of its own, so they do not meet.
const suiteShareGroup = "suite"

// suiteShareOptions let a message be nacked as often as the suite does
// (TestContinueAfterErrors nacks 300 times across 50 messages, and
// expects every message back): 100 deliveries, replog's most.
var suiteShareOptions = replog.ShareConsumerOptions{MaxDeliveries: 100}

// suiteShareNackDelay spreads those nacks: a released message is
// acquired again before later ones once its delay passes (a share group
// hands out the lowest offsets first), so with 1ms, and with 50ms on the
// cluster, the same messages came back to every poll and were given up
// after 100 deliveries.
const suiteShareNackDelay = 500 * time.Millisecond

// suiteNackSleep keeps the suite's hundreds of Nacks (TestContinueAfterErrors)
// quick; the default is 100ms.
const suiteNackSleep = time.Millisecond

// pubSubOn returns constructors for the suite; each call asks logs for
// the Log of its publisher and the Log of its subscriber. With share
// options, the subscribers are share group members: the plain constructor's of
// suiteShareGroup, the group constructor's of the group it is given.
func pubSubOn(share *replog.ShareConsumerOptions, logs func() (pub, sub *replog.Log)) (tests.PubSubConstructor, tests.ConsumerGroupPubSubConstructor) {
	group := func(t *testing.T, consumerGroup string) (message.Publisher, message.Subscriber) {
		pubLog, subLog := logs()
		pub, err := replogwatermill.NewPublisher(pubLog, replogwatermill.PublisherConfig{}, nil)
		if err != nil {
			t.Fatal(err)
		}
		cfg := replogwatermill.SubscriberConfig{ConsumerGroup: consumerGroup, NackResendSleep: suiteNackSleep}
		if share != nil {
			cfg.ConsumerGroup = ""
			cfg.ShareGroup = consumerGroup
			cfg.ShareOptions = *share
			cfg.NackResendSleep = suiteShareNackDelay
			if consumerGroup == "" {
				cfg.ShareGroup = suiteShareGroup
			}
		}
		sub, err := replogwatermill.NewSubscriber(subLog, cfg, nil)
		if err != nil {
			t.Fatal(err)
		}
		return pub, sub
	}
	plain := func(t *testing.T) (message.Publisher, message.Subscriber) { return group(t, "") }
	return plain, group
}

// TestPubSub runs Watermill's conformance suite on one in-memory node,
// without and with share groups.
func TestPubSub(t *testing.T) {
	for _, mode := range []struct {
		name     string
		share    *replog.ShareConsumerOptions
		features tests.Features
	}{{"groups", nil, features}, {"share", &suiteShareOptions, shareFeatures}} {
		t.Run(mode.name, func(t *testing.T) {
			t.Parallel()
			l, err := replog.Open("", &replog.Options{InMemory: true})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = l.Close() })
			plain, group := pubSubOn(mode.share, func() (*replog.Log, *replog.Log) { return l, l })
			tests.TestPubSub(t, mode.features, plain, group)
		})
	}
}

// TestPubSubCluster runs the suite on a 3-node cluster, without and with
// share groups, with every publisher and its subscriber on different
// nodes (rotating over the three).
//
// Share mode runs the suite's short counts (ForceShort): each message
// costs a share subscription two commits through the share coordinator,
// an acquisition and an Ack, 20 to 60ms together on this cluster with
// -race on 2 cores, and the full suite reads 5000 messages with one
// subscription at a time (TestContinueAfterSubscribeClose): minutes.
// Its subscriptions acquire up to 10 messages at a time (MaxRecords; 1 on
// one node), which halves the commits and tests the messages acquired
// ahead, released at Close.
func TestPubSubCluster(t *testing.T) {
	c := replogtest.NewCluster(t, 3)
	clusterShare := shareFeatures
	clusterShare.ForceShort = true
	clusterShareOptions := suiteShareOptions
	clusterShareOptions.MaxRecords = 10
	for _, mode := range []struct {
		name     string
		share    *replog.ShareConsumerOptions
		features tests.Features
	}{{"groups", nil, features}, {"share", &clusterShareOptions, clusterShare}} {
		t.Run(mode.name, func(t *testing.T) {
			t.Parallel()
			var n atomic.Int64
			plain, group := pubSubOn(mode.share, func() (*replog.Log, *replog.Log) {
				i := int(n.Add(1))
				return c.Log(i % 3), c.Log((i + 1) % 3)
			})
			tests.TestPubSub(t, mode.features, plain, group)
		})
	}
}
