package replogtest_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/replog/replog"
	"github.com/replog/replog/replogtest"
)

// BenchmarkFailover crashes the leader of a partition of a 3-node in-memory
// cluster once per iteration while a producer on another node is idle, and
// measures how long the first Produce issued after the crash takes to be
// acknowledged, from the moment the crash began (so the crash itself counts),
// and how long the surviving nodes took to elect a new leader. Each
// iteration then restarts the crashed node. Run about ten crashes:
//
//	go test -run '^$' -bench Failover -benchtime 10x ./replogtest/
//
// The figures are the median and maximum over the iterations, in ms;
// ns/op is not meaningful (it includes the restart) and is reported as 0.
// With "new", the producer is created after the crash, so its producer id
// comes from the metadata group, which may have lost its leader too.
func BenchmarkFailover(b *testing.B) {
	for _, fresh := range []bool{false, true} {
		name := "producer=existing"
		if fresh {
			name = "producer=new"
		}
		b.Run(name, func(b *testing.B) { benchFailover(b, fresh) })
	}
}

func benchFailover(b *testing.B, fresh bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	c := replogtest.NewCluster(b, 3)
	const home = 0 // the producer's node, never crashed
	tp, err := c.Log(home).CreateTopic(ctx, "t", replog.TopicConfig{Partitions: 1, Replicas: 3})
	if err != nil {
		b.Fatal(err)
	}
	p, err := replog.NewProducer(tp, replog.String(), nil)
	if err != nil {
		b.Fatal(err)
	}
	defer func() { p.Close() }()
	produce := func(p *replog.Producer[string], v string) {
		pctx, pcancel := context.WithTimeout(ctx, 30*time.Second)
		defer pcancel()
		if _, err := p.Produce(pctx, replog.Message[string]{Value: v}); err != nil {
			b.Fatalf("produce %s: %v", v, err)
		}
	}
	produce(p, "warm-up")

	var acks, elections []time.Duration
	i := 0
	for b.Loop() {
		i++
		leader := c.WaitLeader("t", 0, 30*time.Second)
		if leader == home {
			tctx, tcancel := context.WithTimeout(ctx, 10*time.Second)
			err := tp.TransferLeader(tctx, 0, uint64(home+2)) // node index 1
			tcancel()
			if err != nil {
				b.Fatalf("transfer leader: %v", err)
			}
			leader = c.WaitLeader("t", 0, 30*time.Second)
		}
		produce(p, fmt.Sprintf("before-%d", i))

		elected := make(chan time.Duration, 1)
		start := time.Now()
		go func() {
			for time.Since(start) < 30*time.Second {
				if id, err := tp.Leader(ctx, 0); err == nil && id != 0 && int(id)-1 != leader {
					elected <- time.Since(start)
					return
				}
				time.Sleep(2 * time.Millisecond)
			}
			elected <- -1
		}()
		c.Crash(leader)
		q := p
		if fresh {
			q, err = replog.NewProducer(tp, replog.String(), nil)
			if err != nil {
				b.Fatal(err)
			}
		}
		produce(q, fmt.Sprintf("after-%d", i))
		acks = append(acks, time.Since(start))
		if fresh {
			q.Close()
		}
		elections = append(elections, <-elected)
		b.Logf("crash %d of node %d: election %v, first ack %v", i, leader, elections[len(elections)-1], acks[len(acks)-1])

		c.Restart(leader)
		// Let the restarted node catch up before the next crash, so each
		// crash leaves a majority that can elect a leader.
		for time.Since(start) < time.Minute {
			t, err := c.Log(leader).Topic("t")
			if err == nil {
				want, err1 := tp.Offsets(ctx, 0)
				got, err2 := t.Offsets(ctx, 0)
				if err1 == nil && err2 == nil && got.HighWatermark == want.HighWatermark {
					break
				}
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	ms := func(ds []time.Duration, q float64) float64 {
		s := slices.Clone(ds)
		slices.Sort(s)
		return float64(s[int(q*float64(len(s)-1)+0.5)]) / float64(time.Millisecond)
	}
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(ms(acks, 0.5), "ack-median-ms")
	b.ReportMetric(ms(acks, 1), "ack-max-ms")
	b.ReportMetric(ms(elections, 0.5), "election-median-ms")
	b.ReportMetric(ms(elections, 1), "election-max-ms")
}
