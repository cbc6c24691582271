package replog_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/replog/replog"
)

// Consume, transform and produce exactly once: a group member's positions
// commit with the records written from what it read, or neither does.
func ExampleLog_NewTransactionalProducer() {
	l, _ := replog.Open("", &replog.Options{InMemory: true})
	defer l.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	in, _ := l.CreateTopic(ctx, "words", replog.TopicConfig{})
	out, _ := l.CreateTopic(ctx, "shouts", replog.TopicConfig{})
	p, _ := replog.NewProducer(in, replog.String(), nil)
	for _, w := range []string{"hello", "world"} {
		p.Produce(ctx, replog.Message[string]{Value: w})
	}
	p.Close()

	c, _ := replog.NewConsumer(in, replog.String(), &replog.ConsumerOptions{Group: "shouter", Isolation: replog.ReadCommitted})
	defer c.Close()
	s, err := l.NewTransactionalProducer(ctx, "shouter-1", nil) // fences earlier "shouter-1" sessions
	if err != nil {
		panic(err)
	}
	defer s.Close()
	shouts, _ := replog.NewProducer(out, replog.String(), &replog.ProducerOptions{Transactional: s})

	var recs []replog.Record[string]
	for len(recs) < 2 {
		more, _ := c.Poll(ctx)
		recs = append(recs, more...)
	}
	if err := s.Begin(); err != nil {
		panic(err)
	}
	for _, r := range recs {
		shouts.ProduceAsync(ctx, replog.Message[string]{Value: strings.ToUpper(r.Value)}, nil)
	}
	err = s.SendOffsets(ctx, c)
	if err == nil {
		err = s.Commit(ctx) // flushes; fails if any record failed
	}
	switch {
	case errors.Is(err, replog.ErrFenced):
		return // a newer instance took over
	case err != nil:
		_ = s.Abort(ctx) // and read again from the group's offsets
		return
	}

	r, _ := replog.NewConsumer(out, replog.String(), &replog.ConsumerOptions{Isolation: replog.ReadCommitted})
	defer r.Close()
	for n := 0; n < 2; {
		got, _ := r.Poll(ctx)
		for _, rec := range got {
			fmt.Println(rec.Value)
			n++
		}
	}
	g, _ := l.DescribeGroup(ctx, "shouter")
	fmt.Println("shouter's offset:", g.Partitions[0].Committed)
	// Output:
	// HELLO
	// WORLD
	// shouter's offset: 2
}
