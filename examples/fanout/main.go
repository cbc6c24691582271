// Command fanout shows one stream read by several consumer groups: billing,
// analytics and audit each read every record, and analytics has two members
// that split the partitions between them.
//
//	go run ./examples/fanout
package main

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/replog/replog"
)

type Order struct {
	ID     int     `json:"id"`
	Amount float64 `json:"amount"`
}

func main() {
	if err := run(); err != nil {
		log.Fatal(err)
	}
}

func run() error {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	dir, err := os.MkdirTemp("", "replog-fanout-")
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
	const n = 12
	for i := range n {
		p.ProduceAsync(ctx, replog.Message[Order]{Key: fmt.Appendf(nil, "customer-%d", i%5), Value: Order{ID: i, Amount: float64(10 * (i + 1))}}, nil)
	}
	if err := p.Flush(ctx); err != nil {
		return err
	}
	p.Close()

	type member struct{ group, name string }
	members := []member{{"billing", "billing-1"}, {"analytics", "analytics-1"}, {"analytics", "analytics-2"}, {"audit", "audit-1"}}
	got := map[member][]int{}
	parts := map[member][]int{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	perGroup := map[string]int{}
	done := make(chan struct{})
	for _, m := range members {
		c, err := replog.NewConsumer(topic, replog.JSON[Order](), &replog.ConsumerOptions{
			Group: m.group,
			// Commit before a partition moves, so the member taking it over
			// resumes where this one stopped.
			GroupOptions: replog.GroupOptions{AutoCommitInterval: 100 * time.Millisecond},
		})
		if err != nil {
			return err
		}
		defer c.Close()
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				pctx, pcancel := context.WithTimeout(ctx, 100*time.Millisecond)
				recs, err := c.Poll(pctx)
				pcancel()
				if err != nil && !errors.Is(err, context.DeadlineExceeded) {
					log.Print(err)
					return
				}
				mu.Lock()
				for _, r := range recs {
					got[m] = append(got[m], r.Value.ID)
					perGroup[m.group]++
				}
				parts[m] = c.Assignment()
				mu.Unlock()
				select {
				case <-done:
					return
				default:
				}
			}
		}()
	}
	// Wait until every group has everything and analytics' two members
	// hold two partitions each.
	for {
		mu.Lock()
		ready := perGroup["billing"] == n && perGroup["analytics"] == n && perGroup["audit"] == n &&
			len(parts[members[1]]) == 2 && len(parts[members[2]]) == 2
		mu.Unlock()
		if ready {
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	close(done)
	wg.Wait()
	for _, m := range members {
		ids := got[m]
		slices.Sort(ids)
		fmt.Printf("%-9s %-11s partitions %v received %2d orders %v\n", m.group, m.name, parts[m], len(ids), ids)
	}
	return nil
}
