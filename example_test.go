package replog_test

import (
	"context"
	"fmt"
	"time"

	"github.com/replog/replog"
)

func ExampleOpen() {
	// InMemory keeps everything in memory; replog.Open(dir, nil) is the
	// durable default.
	l, err := replog.Open("", &replog.Options{InMemory: true})
	if err != nil {
		panic(err)
	}
	defer l.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := l.CreateTopic(ctx, "orders", replog.TopicConfig{Partitions: 3}); err != nil {
		panic(err)
	}
	for _, t := range l.Topics() {
		fmt.Println(t.Name, t.Partitions, t.Replicas)
	}
	// Output: orders 3 1
}

func ExampleNewProducer() {
	l, _ := replog.Open("", &replog.Options{InMemory: true})
	defer l.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	t, _ := l.CreateTopic(ctx, "greetings", replog.TopicConfig{})

	p, err := replog.NewProducer(t, replog.String(), nil)
	if err != nil {
		panic(err)
	}
	defer p.Close()
	for _, s := range []string{"hello", "world"} {
		pos, err := p.Produce(ctx, replog.Message[string]{Value: s})
		if err != nil {
			panic(err)
		}
		fmt.Println(s, "at offset", pos.Offset)
	}
	// Output:
	// hello at offset 0
	// world at offset 1
}

func ExampleNewConsumer() {
	type Event struct {
		Kind string `json:"kind"`
	}
	l, _ := replog.Open("", &replog.Options{InMemory: true})
	defer l.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	t, _ := l.CreateTopic(ctx, "events", replog.TopicConfig{})
	p, _ := replog.NewProducer(t, replog.JSON[Event](), nil)
	defer p.Close()
	for _, k := range []string{"signup", "login", "logout"} {
		p.Produce(ctx, replog.Message[Event]{Key: []byte("user-1"), Value: Event{Kind: k}})
	}

	c, err := replog.NewConsumer(t, replog.JSON[Event](), nil)
	if err != nil {
		panic(err)
	}
	defer c.Close()
	n := 0
	for rec, err := range c.Records(ctx) {
		if err != nil {
			panic(err)
		}
		fmt.Println(rec.Offset, string(rec.Key), rec.Value.Kind)
		if n++; n == 3 {
			break
		}
	}
	// Output:
	// 0 user-1 signup
	// 1 user-1 login
	// 2 user-1 logout
}

func ExampleMessage_tombstone() {
	l, _ := replog.Open("", &replog.Options{InMemory: true})
	defer l.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	t, _ := l.CreateTopic(ctx, "accounts", replog.TopicConfig{})
	p, _ := replog.NewProducer(t, replog.String(), nil)
	defer p.Close()
	p.Produce(ctx, replog.Message[string]{Key: []byte("alice"), Value: "10 EUR"})
	// A tombstone deletes its key: it has no value, and needs a key.
	p.Produce(ctx, replog.Message[string]{Key: []byte("alice"), Tombstone: true})
	if _, err := p.Produce(ctx, replog.Message[string]{Tombstone: true}); err != nil {
		fmt.Println(err)
	}

	c, _ := replog.NewConsumer(t, replog.String(), nil)
	defer c.Close()
	n := 0
	for rec, err := range c.Records(ctx) {
		if err != nil {
			panic(err)
		}
		if rec.Tombstone {
			fmt.Println(string(rec.Key), "deleted")
		} else {
			fmt.Println(string(rec.Key), "=", rec.Value)
		}
		if n++; n == 2 {
			break
		}
	}
	// Output:
	// replog: invalid configuration: a tombstone needs a key
	// alice = 10 EUR
	// alice deleted
}

func ExampleLog_DeleteRecords() {
	l, _ := replog.Open("", &replog.Options{InMemory: true})
	defer l.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	t, err := l.EnsureTopic(ctx, "events", replog.TopicConfig{Retention: 7 * 24 * time.Hour})
	if err != nil {
		panic(err)
	}
	p, _ := replog.NewProducer(t, replog.String(), nil)
	defer p.Close()
	for _, s := range []string{"a", "b", "c", "d"} {
		if _, err := p.Produce(ctx, replog.Message[string]{Value: s}); err != nil {
			panic(err)
		}
	}
	// Kafka's DeleteRecords: records below offset 2 go.
	if err := l.DeleteRecords(ctx, "events", map[int]int64{0: 2}); err != nil {
		panic(err)
	}
	o, _ := t.Offsets(ctx, 0)
	fmt.Println("log start", o.LogStart, "high watermark", o.HighWatermark)

	c, _ := replog.NewConsumer(t, replog.String(), nil) // Earliest: from the log start
	defer c.Close()
	recs, _ := c.Poll(ctx)
	for _, r := range recs {
		fmt.Println(r.Offset, r.Value)
	}
	// Output:
	// log start 2 high watermark 4
	// 2 c
	// 3 d
}
