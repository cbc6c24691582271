// Command kafka embeds replog with a Kafka listener and talks to it with
// franz-go, a Kafka client: the Go API and Kafka clients share one log.
//
// A replog producer writes orders; a franz-go consumer group reads them
// through the listener and commits its offsets, which replog's own
// DescribeGroup then shows. A franz-go producer writes receipts back, and
// replog's consumer reads them. Any Kafka client or tool (kcat, sarama,
// librdkafka) could take franz-go's place at the printed address.
package main

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/replog/replog"
	replogkafka "github.com/replog/replog/kafka"
)

func main() {
	if err := run(); err != nil {
		log.Fatal(err)
	}
}

func run() error {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	dir, err := os.MkdirTemp("", "replog-kafka-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	l, err := replog.Open(dir, nil)
	if err != nil {
		return err
	}
	defer l.Close()

	// Port 0: a free port. Close the listener before the Log (defers run
	// last first).
	srv, err := replogkafka.Listen(l, "127.0.0.1:0", nil)
	if err != nil {
		return err
	}
	defer srv.Close()
	addr := srv.Addr().String()
	fmt.Println("Kafka clients can connect to", addr)

	// 1. replog's Go API writes orders to a topic of 3 partitions, with
	// batches of at most 64 KiB (Kafka's max.message.bytes).
	orders, err := l.CreateTopic(ctx, "orders", replog.TopicConfig{Partitions: 3, MaxMessageBytes: 64 << 10})
	if err != nil {
		return err
	}
	p, err := replog.NewProducer(orders, replog.String(), nil)
	if err != nil {
		return err
	}
	defer p.Close()
	const n = 6
	for i := range n {
		customer := []string{"ada", "grace", "linus"}[i%3]
		if _, err := p.Produce(ctx, replog.Message[string]{Key: []byte(customer), Value: fmt.Sprintf("order %d for %s", i, customer)}); err != nil {
			return err
		}
	}

	// 2. A franz-go consumer group reads them through the listener and
	// commits what it read.
	group, err := kgo.NewClient(
		kgo.SeedBrokers(addr),
		kgo.ConsumerGroup("billing"),
		kgo.ConsumeTopics("orders"),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.DisableAutoCommit(),
	)
	if err != nil {
		return err
	}
	defer group.Close()
	var receipts []*kgo.Record
	for len(receipts) < n {
		fs := group.PollFetches(ctx)
		if err := fs.Err0(); err != nil {
			return fmt.Errorf("polling the group: %w", err)
		}
		fs.EachRecord(func(r *kgo.Record) {
			fmt.Printf("franz-go group read %s/%d@%d: %s\n", r.Topic, r.Partition, r.Offset, r.Value)
			receipts = append(receipts, &kgo.Record{Topic: "receipts", Key: r.Key, Value: fmt.Appendf(nil, "paid: %s", r.Value)})
		})
	}
	if err := group.CommitUncommittedOffsets(ctx); err != nil {
		return err
	}

	// The committed offsets went through Raft: replog's API sees them.
	info, err := l.DescribeGroup(ctx, "billing")
	if err != nil {
		return err
	}
	for _, gp := range info.Partitions {
		fmt.Printf("group %s: %s/%d committed %d, lag %d\n", info.Name, gp.Topic, gp.Partition, gp.Committed, gp.Lag)
	}

	// 3. A franz-go producer writes receipts; the listener creates the
	// topic on first use only if asked (Options.AutoCreateTopics), so
	// replog's API creates it here.
	receiptsTopic, err := l.CreateTopic(ctx, "receipts", replog.TopicConfig{})
	if err != nil {
		return err
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.ProducerBatchCompression(kgo.NoCompression()))
	if err != nil {
		return err
	}
	defer cl.Close()
	if err := cl.ProduceSync(ctx, receipts...).FirstErr(); err != nil {
		return err
	}
	// A batch above the topic's max.message.bytes is refused, as by Kafka.
	big := &kgo.Record{Topic: "orders", Value: make([]byte, 100<<10)}
	if err := cl.ProduceSync(ctx, big).FirstErr(); !errors.Is(err, kerr.MessageTooLarge) {
		return fmt.Errorf("a 100 KiB record: %v, want MESSAGE_TOO_LARGE", err)
	}
	fmt.Println("a 100 KiB record to orders: MESSAGE_TOO_LARGE")

	// 4. replog's consumer reads what franz-go wrote.
	c, err := replog.NewConsumer(receiptsTopic, replog.String(), nil)
	if err != nil {
		return err
	}
	defer c.Close()
	read := 0
	for rec, err := range c.Records(ctx) {
		if err != nil {
			return err
		}
		fmt.Printf("replog consumer read receipts@%d: %s\n", rec.Offset, rec.Value)
		if read++; read == n {
			break
		}
	}
	return nil
}
