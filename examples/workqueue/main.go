// Command workqueue is a durable in-process work queue: jobs are records
// of a topic, and several workers in one consumer group share them. The
// program stops half way (as a restart would) and opens the same directory
// again: the workers resume after the last job they committed, and every
// job is done.
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

const jobs = 30

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
	done := map[int]int{} // job -> times done
	var mu sync.Mutex

	// First run: enqueue every job, work until half are done, stop.
	if err := session(dir, true, jobs/2, done, &mu); err != nil {
		return err
	}
	fmt.Printf("first run: %d jobs done, program stops\n", len(done))
	// Second run on the same directory: the rest.
	if err := session(dir, false, jobs, done, &mu); err != nil {
		return err
	}
	twice := 0
	for _, n := range done {
		if n > 1 {
			twice++
		}
	}
	fmt.Printf("second run: all %d jobs done, %d done twice, none lost\n", len(done), twice)
	if len(done) != jobs {
		return errors.New("workqueue: jobs lost")
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
		if topic, err = l.CreateTopic(ctx, "jobs", replog.TopicConfig{Partitions: 3}); err != nil {
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
	for w := range 3 {
		c, err := replog.NewConsumer(topic, replog.JSON[Job](), &replog.ConsumerOptions{Group: "workers", MaxPollRecords: 1})
		if err != nil {
			stop()
			return err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Close() // leaves the group; the others take its partitions
			for {
				recs, err := c.Poll(wctx)
				if err != nil {
					return
				}
				for _, r := range recs {
					time.Sleep(5 * time.Millisecond) // the work
					mu.Lock()
					done[r.Value.ID]++
					n := len(done)
					mu.Unlock()
					fmt.Printf("worker %d did job %2d (partition %d offset %d)\n", w, r.Value.ID, r.Partition, r.Offset)
					if n >= until {
						stop()
					}
				}
				// Commit after the work: a job is done at least once, and
				// only a job in progress at a crash is done again.
				if err := c.Commit(ctx); err != nil && !errors.Is(err, replog.ErrClosed) {
					log.Print(err)
				}
			}
		}()
	}
	<-wctx.Done()
	wg.Wait()
	return nil
}
