package replog_test

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/replog/replog"
)

// A group consumer over two topics: records name their topic, commits are
// kept by topic and partition, and DescribeGroup lists both topics.
func ExampleNewMultiTopicConsumer() {
	l, _ := replog.Open("", &replog.Options{InMemory: true})
	defer l.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	orders, _ := l.CreateTopic(ctx, "orders", replog.TopicConfig{})
	refunds, _ := l.CreateTopic(ctx, "refunds", replog.TopicConfig{})
	for _, m := range []struct {
		t *replog.Topic
		v string
	}{{orders, "order-1"}, {refunds, "refund-1"}, {orders, "order-2"}} {
		p, _ := replog.NewProducer(m.t, replog.String(), nil)
		p.Produce(ctx, replog.Message[string]{Value: m.v})
		p.Close()
	}

	c, err := replog.NewMultiTopicConsumer([]*replog.Topic{orders, refunds}, replog.String(),
		&replog.ConsumerOptions{Group: "billing"})
	if err != nil {
		panic(err)
	}
	var got []string
	for rec, err := range c.Records(ctx) {
		if err != nil {
			panic(err)
		}
		got = append(got, fmt.Sprintf("%s/%d@%d %s", rec.Topic, rec.Partition, rec.Offset, rec.Value))
		if len(got) == 3 {
			break
		}
	}
	slices.Sort(got) // the order across partitions is not fixed
	for _, s := range got {
		fmt.Println(s)
	}
	if err := c.Commit(ctx); err != nil {
		panic(err)
	}
	c.Close()

	info, _ := l.DescribeGroup(ctx, "billing")
	fmt.Println(info.Topics)
	for _, p := range info.Partitions {
		fmt.Printf("%s/%d committed %d\n", p.Topic, p.Partition, p.Committed)
	}
	// Output:
	// orders/0@0 order-1
	// orders/0@1 order-2
	// refunds/0@0 refund-1
	// [orders refunds]
	// orders/0 committed 2
	// refunds/0 committed 1
}
