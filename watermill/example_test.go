package replogwatermill_test

import (
	"context"
	"fmt"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/replog/replog"
	replogwatermill "github.com/replog/replog/watermill"
)

// A publisher and a group subscriber over one in-memory Log.
func Example() {
	l, err := replog.Open("", &replog.Options{InMemory: true})
	if err != nil {
		panic(err)
	}
	defer l.Close() // the adapter never closes the Log

	pub, err := replogwatermill.NewPublisher(l, replogwatermill.PublisherConfig{}, nil)
	if err != nil {
		panic(err)
	}
	defer pub.Close()
	sub, err := replogwatermill.NewSubscriber(l, replogwatermill.SubscriberConfig{ConsumerGroup: "billing"}, nil)
	if err != nil {
		panic(err)
	}
	defer sub.Close()

	for _, id := range []string{"order-1", "order-2"} {
		msg := message.NewMessage(id, []byte("paid"))
		msg.Metadata.Set("currency", "EUR")
		if err := pub.Publish("orders", msg); err != nil { // creates the topic: one partition
			panic(err)
		}
	}

	msgs, err := sub.Subscribe(context.Background(), "orders")
	if err != nil {
		panic(err)
	}
	for range 2 {
		msg := <-msgs
		pos, _ := replogwatermill.PositionFromContext(msg.Context())
		fmt.Println(msg.UUID, string(msg.Payload), msg.Metadata.Get("currency"), "at offset", pos.Offset)
		msg.Ack() // commits the offset for the group "billing" (replog group "billing/orders")
	}
	// Output:
	// order-1 paid EUR at offset 0
	// order-2 paid EUR at offset 1
}
