package replog_test

import (
	"context"
	"fmt"
	"time"

	"github.com/replog/replog"
)

func ExampleNewShareConsumer() {
	l, _ := replog.Open("", &replog.Options{InMemory: true})
	defer l.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	t, _ := l.CreateTopic(ctx, "jobs", replog.TopicConfig{Partitions: 1})
	p, _ := replog.NewProducer(t, replog.String(), nil)
	for _, job := range []string{"resize", "poison", "thumbnail"} {
		p.Produce(ctx, replog.Message[string]{Value: job})
	}
	p.Close()

	// Any number of members may share the group's records; here one.
	c, err := replog.NewShareConsumer(t, "workers", replog.String(), &replog.ShareConsumerOptions{MaxDeliveries: 2})
	if err != nil {
		panic(err)
	}
	defer c.Close()
	for done := 0; done < 3; {
		recs, err := c.Poll(ctx)
		if err != nil {
			panic(err)
		}
		for _, r := range recs {
			switch r.Value {
			case "poison":
				fmt.Println("failed", r.Value, "delivery", r.Deliveries)
				if r.Deliveries < 2 {
					r.Release(ctx, 0) // try again
					continue
				}
				r.Reject(ctx) // give up
			default:
				fmt.Println("did", r.Value)
				r.Ack(ctx)
			}
			done++
		}
	}
	// Output:
	// did resize
	// failed poison delivery 1
	// did thumbnail
	// failed poison delivery 2
}
