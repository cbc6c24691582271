package replogkafka_test

import (
	"context"
	"flag"
	"math/rand/v2"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/replog/replog"
)

var shareSoak = flag.Duration("share.soak", 4*time.Second,
	"how long TestClusterShareFaults crashes nodes under Kafka share members")

// TestClusterShareFaults: franz-go share members on a 3-node cluster
// accept records a franz-go producer writes, while nodes crash and come
// back one at a time (-share.soak long). Every record the producer had
// acknowledged is accepted (at least once: a member's acknowledgements
// lost with a node are redelivered after the lock), none that was never
// produced, and at the end the share group's start offsets reach the high
// watermarks: nothing left in flight.
func TestClusterShareFaults(t *testing.T) {
	kc := newKafkaCluster(t, 3)
	kc.createTopic("t")
	ctx, cancel := context.WithTimeout(t.Context(), *shareSoak+90*time.Second)
	defer cancel()
	require.NoError(t, kc.c.Log(0).SetShareGroupConfig(ctx, "g", replog.ShareGroupConfig{
		AutoOffsetReset: replog.ShareOffsetEarliest, LockDuration: 2 * time.Second}))
	common := []kgo.Opt{
		kgo.SeedBrokers(kc.addrs...),
		kgo.MetadataMinAge(50 * time.Millisecond),
		kgo.RetryBackoffFn(func(int) time.Duration { return 50 * time.Millisecond }),
		kgo.DialTimeout(time.Second),
		kgo.RequestTimeoutOverhead(2 * time.Second),
	}

	var mu sync.Mutex
	produced := map[string]bool{} // acknowledged to the producer
	sent := map[string]bool{}     // whatever the outcome
	accepted := map[string]int{}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	prod, err := kgo.NewClient(append(common, kgo.DefaultProduceTopic("t"), kgo.RequiredAcks(kgo.AllISRAcks()))...)
	require.NoError(t, err)
	defer prod.Close()
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
			v := strconv.Itoa(i)
			mu.Lock()
			sent[v] = true
			mu.Unlock()
			prod.Produce(ctx, kgo.StringRecord(v), func(_ *kgo.Record, err error) {
				if err == nil {
					mu.Lock()
					produced[v] = true
					mu.Unlock()
				}
			})
		}
	}()
	cctx, stopMembers := context.WithCancel(ctx)
	defer stopMembers()
	var members sync.WaitGroup
	for range 3 {
		cl, err := kgo.NewClient(append(common, kgo.ConsumeTopics("t"), kgo.ShareGroup("g"),
			kgo.FetchMaxWait(200*time.Millisecond))...)
		require.NoError(t, err)
		members.Add(1)
		go func() {
			defer members.Done()
			defer cl.Close()
			for cctx.Err() == nil {
				for _, r := range cl.PollRecords(cctx, 50).Records() {
					r.Ack(kgo.AckAccept)
					mu.Lock()
					accepted[string(r.Value)]++
					mu.Unlock()
				}
				actx, cancel := context.WithTimeout(cctx, 3*time.Second)
				_ = cl.FlushAcks(actx) // may fail with a node: the records come back
				cancel()
			}
		}()
	}

	faults := 0
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 14))
	for end := time.Now().Add(*shareSoak); time.Now().Before(end); {
		time.Sleep(time.Duration(300+rng.IntN(700)) * time.Millisecond)
		i := rng.IntN(3)
		kc.crash(i)
		faults++
		time.Sleep(time.Duration(200+rng.IntN(800)) * time.Millisecond)
		kc.restart(i)
	}
	close(stop)
	wg.Wait()
	fctx, cancelFlush := context.WithTimeout(ctx, 30*time.Second)
	require.NoError(t, prod.Flush(fctx))
	cancelFlush()

	missing := func() []string {
		mu.Lock()
		defer mu.Unlock()
		var out []string
		for v := range produced {
			if accepted[v] == 0 {
				out = append(out, v)
			}
		}
		return out
	}
	deadline := time.Now().Add(60 * time.Second)
	for m := missing(); len(m) > 0; m = missing() {
		require.True(t, time.Now().Before(deadline), "%d acknowledged records never accepted, e.g. %v", len(m), m[:min(len(m), 10)])
		time.Sleep(100 * time.Millisecond)
	}
	// Let in-flight acknowledgements land, then check nothing is left.
	l := kc.c.Log(0)
	tp, err := l.Topic("t")
	require.NoError(t, err)
	for {
		info, err := l.DescribeShareGroup(ctx, "g")
		require.NoError(t, err)
		done := 0
		for _, p := range info.Partitions {
			o, err := tp.Offsets(ctx, p.Partition)
			require.NoError(t, err)
			if p.Start == o.HighWatermark {
				done++
			}
		}
		if done == tp.Partitions() {
			break
		}
		require.NoError(t, ctx.Err(), "share group not done: %+v", info.Partitions)
		time.Sleep(100 * time.Millisecond)
	}
	stopMembers()
	members.Wait()

	mu.Lock()
	defer mu.Unlock()
	dups := 0
	for v, n := range accepted {
		require.True(t, sent[v], "accepted %q, which was never produced", v)
		if n > 1 {
			dups++
		}
	}
	t.Logf("%d faults; %d records produced and acknowledged, %d accepted, %d of them more than once", faults, len(produced), len(accepted), dups)
}
