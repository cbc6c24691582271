// Command quickstart opens replog on the embedded default (one node, durable
// on disk, no network port), creates a topic, produces a few typed records
// and consumes them back.
package main

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"time"

	"github.com/replog/replog"
)

type Order struct {
	ID       int     `json:"id"`
	Customer string  `json:"customer"`
	Amount   float64 `json:"amount"`
}

func main() {
	if err := run(); err != nil {
		log.Fatal(err)
	}
}

func run() error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	dir, err := os.MkdirTemp("", "replog-quickstart-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	l, err := replog.Open(dir, nil)
	if err != nil {
		return err
	}
	defer l.Close()

	topic, err := l.CreateTopic(ctx, "orders", replog.TopicConfig{Partitions: 4})
	if err != nil {
		return err
	}
	p, err := replog.NewProducer(topic, replog.JSON[Order](), nil)
	if err != nil {
		return err
	}
	defer p.Close()

	orders := []Order{
		{1, "ada", 12.5}, {2, "grace", 99}, {3, "ada", 7.25}, {4, "linus", 42}, {5, "grace", 1},
	}
	for _, o := range orders {
		// Records with the same key (the customer) land on the same
		// partition, in order.
		pos, err := p.Produce(ctx, replog.Message[Order]{Key: []byte(o.Customer), Value: o})
		if err != nil {
			return err
		}
		fmt.Printf("produced order %d for %-5s -> partition %d offset %d\n", o.ID, o.Customer, pos.Partition, pos.Offset)
	}

	c, err := replog.NewConsumer(topic, replog.JSON[Order](), nil)
	if err != nil {
		return err
	}
	defer c.Close()
	read := 0
	for rec, err := range c.Records(ctx) {
		if err != nil {
			return err
		}
		fmt.Printf("consumed partition %d offset %d: order %d, %s, %.2f\n",
			rec.Partition, rec.Offset, rec.Value.ID, rec.Value.Customer, rec.Value.Amount)
		if read++; read == len(orders) {
			break
		}
	}
	if read != len(orders) {
		return errors.New("quickstart: not every order came back")
	}
	return nil
}
