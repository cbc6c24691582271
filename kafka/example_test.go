package replogkafka_test

import (
	"context"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/replog/replog"
	replogkafka "github.com/replog/replog/kafka"
)

// A Kafka client (here franz-go) produces to and consumes from an
// embedded replog node.
func ExampleListen() {
	l, err := replog.Open("", &replog.Options{InMemory: true})
	if err != nil {
		panic(err)
	}
	defer l.Close()
	srv, err := replogkafka.Listen(l, "127.0.0.1:0", nil) // a free port
	if err != nil {
		panic(err)
	}
	defer srv.Close()

	cl, err := kgo.NewClient(
		kgo.SeedBrokers(srv.Addr().String()),
		kgo.DefaultProduceTopic("greetings"),
		kgo.ConsumeTopics("greetings"),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
	)
	if err != nil {
		panic(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	if _, err := kadm.NewClient(cl).CreateTopic(ctx, 1, -1, nil, "greetings"); err != nil {
		panic(err)
	}
	if err := cl.ProduceSync(ctx, kgo.StringRecord("hello"), kgo.StringRecord("world")).FirstErr(); err != nil {
		panic(err)
	}
	for n := 0; n < 2 && ctx.Err() == nil; {
		for _, r := range cl.PollFetches(ctx).Records() {
			fmt.Println(r.Offset, string(r.Value))
			n++
		}
	}
	// Output:
	// 0 hello
	// 1 world
}
