// Command workqueue is a durable in-process work queue on a share group
// (Kafka's share groups, KIP-932): jobs are records of a topic with two
// partitions, and six workers, more than the partitions, take jobs from
// both at once, each job locked to one worker until it accepts it. One
// job always fails: each worker that gets it releases it, to be tried
// again after a delay, until it has been delivered MaxDeliveries times
// and lands in a dead-letter topic with headers saying why.
//
// The program stops half way (as a restart would) and opens the same
// directory again: the share group's state survives, the workers go on
// with the jobs left, and the failing job's delivery count carries over.
//
//	go run ./examples/workqueue
package main

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"sync"
	"time"

	"github.com/replog/replog"
)

type Job struct {
	ID   int    `json:"id"`
	Task string `json:"task"`
}

const (
	jobs   = 30
	poison = 13 // the job that always fails
)

var shareOpts = &replog.ShareConsumerOptions{
	LockDuration:    10 * time.Second,
	MaxDeliveries:   3,
	DeadLetterTopic: "jobs.dead",
	MaxRecords:      2,
}

func main() {
	if err := run(); err != nil {
		log.Fatal(err)
	}
}

func run() error {
	dir, err := os.MkdirTemp("", "replog-workqueue-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	done := map[int]int{} // job -> times accepted
	var mu sync.Mutex

	// First run: enqueue every job, work until half are done, stop.
	if err := session(dir, true, jobs/2, done, &mu); err != nil {
		return err
	}
	fmt.Printf("first run: %d jobs done, program stops\n", len(done))
	// Second run on the same directory: the rest.
	if err := session(dir, false, jobs-1, done, &mu); err != nil {
		return err
	}
	twice := 0
	for _, n := range done {
		if n > 1 {
			twice++
		}
	}
	fmt.Printf("second run: %d jobs done, %d done twice, none lost\n", len(done), twice)
	if len(done) != jobs-1 || twice > 0 {
		return errors.New("workqueue: jobs lost or done twice")
	}
	return nil
}

func session(dir string, enqueue bool, until int, done map[int]int, mu *sync.Mutex) error {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	l, err := replog.Open(dir, nil)
	if err != nil {
		return err
	}
	defer l.Close()
	var topic *replog.Topic
	if enqueue {
		if _, err := l.CreateTopic(ctx, "jobs.dead", replog.TopicConfig{Partitions: 1}); err != nil {
			return err
		}
		if topic, err = l.CreateTopic(ctx, "jobs", replog.TopicConfig{Partitions: 2}); err != nil {
			return err
		}
		p, err := replog.NewProducer(topic, replog.JSON[Job](), nil)
		if err != nil {
			return err
		}
		for i := range jobs {
			if _, err := p.Produce(ctx, replog.Message[Job]{Value: Job{ID: i, Task: fmt.Sprintf("resize image %d", i)}}); err != nil {
				return err
			}
		}
		p.Close()
	} else if topic, err = l.Topic("jobs"); err != nil {
		return err
	}

	wctx, stop := context.WithCancel(ctx)
	defer stop()
	var wg sync.WaitGroup
	for w := range 6 {
		c, err := replog.NewShareConsumer(topic, "workers", replog.JSON[Job](), shareOpts)
		if err != nil {
			stop()
			return err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Close() // releases the jobs it holds: the others get them
			for {
				recs, err := c.Poll(wctx)
				if err != nil {
					return
				}
				for _, r := range recs {
					if wctx.Err() != nil {
						break // not started: Close releases it
					}
					if r.Value.ID == poison {
						fmt.Printf("worker %d failed job %2d (delivery %d): try again later\n", w, r.Value.ID, r.Deliveries)
						if err := r.Release(ctx, 100*time.Millisecond); err != nil {
							log.Print(err)
						}
						continue
					}
					time.Sleep(5 * time.Millisecond) // the work
					if err := r.Ack(ctx); err != nil {
						log.Print(err) // the lock expired: it will be done again
						continue
					}
					mu.Lock()
					done[r.Value.ID]++
					n := len(done)
					mu.Unlock()
					fmt.Printf("worker %d did job %2d (partition %d offset %d)\n", w, r.Value.ID, r.Partition, r.Offset)
					if n >= until {
						stop()
					}
				}
			}
		}()
	}
	<-wctx.Done()
	wg.Wait()
	if enqueue {
		return nil
	}
	return readDeadLetters(ctx, l)
}

// readDeadLetters waits for the failing job in the dead-letter topic.
func readDeadLetters(ctx context.Context, l *replog.Log) error {
	dead, err := l.Topic("jobs.dead")
	if err != nil {
		return err
	}
	workers, err := l.Topic("jobs")
	if err != nil {
		return err
	}
	// A worker to drive the failing job to its last delivery, if the
	// others stopped first.
	c, err := replog.NewShareConsumer(workers, "workers", replog.JSON[Job](), shareOpts)
	if err != nil {
		return err
	}
	defer c.Close()
	dc, err := replog.NewConsumer(dead, replog.JSON[Job](), nil)
	if err != nil {
		return err
	}
	defer dc.Close()
	for {
		pctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
		recs, err := dc.Poll(pctx)
		cancel()
		for _, r := range recs {
			fmt.Printf("dead letter: job %d,", r.Value.ID)
			for _, h := range r.Headers {
				fmt.Printf(" %s=%s", h.Key, h.Value)
			}
			fmt.Println()
			return nil
		}
		if err != nil && !errors.Is(err, context.DeadlineExceeded) {
			return err
		}
		pctx, cancel = context.WithTimeout(ctx, 200*time.Millisecond)
		jobs, _ := c.Poll(pctx)
		cancel()
		for _, r := range jobs {
			fmt.Printf("failed job %2d again (delivery %d)\n", r.Value.ID, r.Deliveries)
			if err := r.Release(ctx, 100*time.Millisecond); err != nil {
				return err
			}
		}
	}
}
