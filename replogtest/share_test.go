package replogtest_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/replog/replog"
	"github.com/replog/replog/replogtest"
)

// shareDelivery is one delivery a share group member saw: the window in
// which it believed it held the record, from the Poll that returned it
// to its lock deadline or the moment it acknowledged it, whichever came
// first.
type shareDelivery struct {
	member     string
	from, to   time.Time
	deliveries int
}

type shareHistory struct {
	mu         sync.Mutex
	deliveries map[[2]int64][]shareDelivery // (partition, offset) -> deliveries
	accepted   map[[2]int64]int             // acknowledged as accepted, the call returning nil
	maybe      map[[2]int64]bool            // accepts whose outcome is unknown (the node crashed)
	poison     map[[2]int64]bool
}

// TestShareGroupUnderCrashes is a Jepsen-flavoured check of share groups:
// members on every node of a three-node cluster work through two
// partitions while each node in turn crashes (the share coordinator's
// leader among them) and comes back, with snapshots every few entries so
// that restarted replicas recover the coordinator from one. Every record
// is accepted exactly once, or dead-lettered if it is poison; none is
// lost; and no two members ever hold a record at once while locked.
func TestShareGroupUnderCrashes(t *testing.T) {
	if testing.Short() {
		t.Skip("crash battery")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := replogtest.NewClusterWithOptions(t, 3, &replogtest.Options{Base: replog.Options{SnapshotEntries: 16}})
	const (
		n     = 400
		lock  = 700 * time.Millisecond
		group = "workers"
	)
	_, err := c.Log(0).CreateTopic(ctx, "work", replog.TopicConfig{Partitions: 2, Replicas: 3})
	require.NoError(t, err)
	_, err = c.Log(0).CreateTopic(ctx, "work.dlq", replog.TopicConfig{Partitions: 1, Replicas: 3})
	require.NoError(t, err)
	tp, err := c.Log(0).Topic("work")
	require.NoError(t, err)
	p, err := replog.NewProducer(tp, replog.String(), nil)
	require.NoError(t, err)
	h := &shareHistory{deliveries: map[[2]int64][]shareDelivery{}, accepted: map[[2]int64]int{},
		maybe: map[[2]int64]bool{}, poison: map[[2]int64]bool{}}
	for i := range n {
		v := fmt.Sprint("job-", i)
		if i%50 == 7 {
			v = "poison"
		}
		pos, err := p.Produce(ctx, replog.Message[string]{Key: []byte(strconv.Itoa(i)), Value: v})
		require.NoError(t, err)
		if v == "poison" {
			h.poison[[2]int64{int64(pos.Partition), pos.Offset}] = true
		}
	}
	require.NoError(t, p.Close())

	opts := &replog.ShareConsumerOptions{LockDuration: lock, MaxDeliveries: 3, DeadLetterTopic: "work.dlq", MaxRecords: 8}
	var wg sync.WaitGroup
	stop := make(chan struct{})
	startWorkers := func(node int) {
		tp, err := c.Log(node).Topic("work")
		require.NoError(t, err)
		for range 2 {
			sc, err := replog.NewShareConsumer(tp, group, replog.String(), opts)
			require.NoError(t, err)
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer sc.Close()
				shareWorker(ctx, sc, h, stop)
			}()
		}
	}
	for node := range 3 {
		startWorkers(node)
	}
	for round := range 4 {
		time.Sleep(600 * time.Millisecond)
		node := round % 3
		c.Crash(node)
		time.Sleep(time.Second)
		c.Restart(node)
		startWorkers(node)
	}
	require.Eventually(t, func() bool {
		h.mu.Lock()
		defer h.mu.Unlock()
		return len(h.accepted)+len(h.maybe) >= n-len(h.poison) && deadLettered(t, ctx, c, len(h.poison))
	}, 90*time.Second, 200*time.Millisecond, "every record accepted or dead-lettered")
	close(stop)
	wg.Wait()

	h.mu.Lock()
	defer h.mu.Unlock()
	total, again := 0, 0
	for _, ds := range h.deliveries {
		total += len(ds)
		again += len(ds) - 1
	}
	t.Logf("%d deliveries, %d of them again; %d accepted, %d accepts of unknown outcome", total, again, len(h.accepted), len(h.maybe))
	for off, k := range h.accepted {
		require.Equal(t, 1, k, "%v accepted %d times", off, k)
		require.False(t, h.poison[off], "poison %v accepted", off)
	}
	for off, ds := range h.deliveries {
		sort.Slice(ds, func(i, j int) bool { return ds[i].from.Before(ds[j].from) })
		for i := 1; i < len(ds); i++ {
			require.False(t, ds[i].from.Before(ds[i-1].to),
				"%v held by %s until %v and by %s from %v", off, ds[i-1].member, ds[i-1].to, ds[i].member, ds[i].from)
		}
	}
	// Nothing is left for a new member: every record is done.
	tp, err = c.Log(1).Topic("work")
	require.NoError(t, err)
	sc, err := replog.NewShareConsumer(tp, group, replog.String(), opts)
	require.NoError(t, err)
	defer sc.Close()
	pctx, pcancel := context.WithTimeout(ctx, 2*lock)
	defer pcancel()
	recs, err := sc.Poll(pctx)
	require.ErrorIs(t, err, context.DeadlineExceeded, "left over: %d records", len(recs))
}

// deadLettered reports whether the dead-letter topic holds want distinct
// records.
func deadLettered(t *testing.T, ctx context.Context, c *replogtest.Cluster, want int) bool {
	tp, err := c.Log(1).Topic("work.dlq")
	if err != nil {
		return false
	}
	off, err := tp.Offsets(ctx, 0)
	if err != nil || off.HighWatermark < int64(want) {
		return false
	}
	dc, err := replog.NewConsumer(tp, replog.String(), nil)
	require.NoError(t, err)
	defer dc.Close()
	seen := map[string]bool{}
	for read := int64(0); read < off.HighWatermark; {
		recs, err := dc.Poll(ctx)
		require.NoError(t, err)
		for _, r := range recs {
			read++
			require.Equal(t, "poison", r.Value)
			for _, hd := range r.Headers {
				if hd.Key == replog.HeaderDLQOffset {
					seen[string(r.Key)] = true
				}
			}
		}
	}
	return len(seen) >= want
}

// shareWorker polls, holds each record for a while, and accepts it, or
// releases it if it is poison, recording every delivery in h.
func shareWorker(ctx context.Context, sc *replog.ShareConsumer[string], h *shareHistory, stop chan struct{}) {
	for {
		select {
		case <-stop:
			return
		default:
		}
		pctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		recs, err := sc.Poll(pctx)
		cancel()
		got := time.Now()
		if errors.Is(err, replog.ErrClosed) || ctx.Err() != nil {
			return
		}
		if err != nil {
			continue
		}
		for _, r := range recs {
			key := [2]int64{int64(r.Partition), r.Offset}
			time.Sleep(time.Duration(rand.IntN(5)) * time.Millisecond) // the work
			release := r.Value == "poison"
			end := time.Now()
			var err error
			if release {
				err = r.Release(ctx, 0)
			} else {
				err = r.Ack(ctx)
			}
			h.mu.Lock()
			if dl := r.Deadline(); dl.Before(end) {
				end = dl
			}
			h.deliveries[key] = append(h.deliveries[key], shareDelivery{member: sc.Member(), from: got,
				to: end, deliveries: r.Deliveries})
			switch {
			case release:
			case err == nil:
				h.accepted[key]++
			case !errors.Is(err, replog.ErrNotAcquired):
				h.maybe[key] = true // the node crashed: applied or not
			}
			h.mu.Unlock()
		}
	}
}

// TestShareStateThroughSnapshotAndCrash: a node that was down while the
// share coordinator moved on (snapshots every 8 entries, so it catches up
// from one) serves the share state after the node that made it crashes:
// records accepted stay done, those the crashed member held come back
// after their lock, delivered a second time.
func TestShareStateThroughSnapshotAndCrash(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := replogtest.NewClusterWithOptions(t, 3, &replogtest.Options{Base: replog.Options{SnapshotEntries: 8}})
	_, err := c.Log(0).CreateTopic(ctx, "jobs", replog.TopicConfig{Partitions: 1, Replicas: 3})
	require.NoError(t, err)
	tp, err := c.Log(0).Topic("jobs")
	require.NoError(t, err)
	p, err := replog.NewProducer(tp, replog.String(), nil)
	require.NoError(t, err)
	for i := range 20 {
		_, err := p.Produce(ctx, replog.Message[string]{Value: fmt.Sprint("job-", i)})
		require.NoError(t, err)
	}
	require.NoError(t, p.Close())

	c.Crash(2)
	opts := &replog.ShareConsumerOptions{LockDuration: 2 * time.Second, MaxRecords: 3}
	a, err := replog.NewShareConsumer(tp, "g", replog.String(), opts)
	require.NoError(t, err)
	var held []replog.ShareRecord[string]
	for len(held) < 20 {
		recs, err := a.Poll(ctx)
		require.NoError(t, err)
		held = append(held, recs...)
	}
	for _, r := range held {
		if r.Offset%2 == 0 {
			require.NoError(t, r.Ack(ctx)) // one proposal each
		}
	}
	c.Restart(2)
	c.Crash(0) // a dies with it, holding the odd offsets

	tp2, err := c.Log(2).Topic("jobs")
	require.NoError(t, err)
	b, err := replog.NewShareConsumer(tp2, "g", replog.String(), opts)
	require.NoError(t, err)
	defer b.Close()
	got := map[int64]int{}
	for len(got) < 10 {
		recs, err := b.Poll(ctx)
		require.NoError(t, err)
		for _, r := range recs {
			require.Equal(t, int64(1), r.Offset%2, "offset %d was accepted", r.Offset)
			require.Equal(t, 2, r.Deliveries)
			got[r.Offset]++
			require.NoError(t, r.Ack(ctx))
		}
	}
	pctx, pcancel := context.WithTimeout(ctx, 3*time.Second)
	defer pcancel()
	_, err = b.Poll(pctx)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	c.Restart(0)
}

// TestShareMemberFollowsReassignment: a member whose node's replica of
// the partition moves away goes on reading through the replica the node
// serves instead.
func TestShareMemberFollowsReassignment(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := replogtest.NewCluster(t, 2)
	tp, err := c.Log(0).CreateTopic(ctx, "jobs", replog.TopicConfig{Partitions: 1, Replicas: 1})
	require.NoError(t, err)
	here := int(tp.Info().PartitionReplicas[0][0]) - 1
	tp, err = c.Log(here).Topic("jobs")
	require.NoError(t, err)
	p, err := replog.NewProducer(tp, replog.String(), nil)
	require.NoError(t, err)
	defer p.Close()
	produce := func(from, to int) {
		for i := from; i < to; i++ {
			_, err := p.Produce(ctx, replog.Message[string]{Value: fmt.Sprint("job-", i)})
			require.NoError(t, err)
		}
	}
	produce(0, 5)
	sc, err := replog.NewShareConsumer(tp, "g", replog.String(), nil)
	require.NoError(t, err)
	defer sc.Close()
	take := func(n int) {
		t.Helper()
		for got := 0; got < n; {
			recs, err := sc.Poll(ctx)
			require.NoError(t, err)
			require.NoError(t, sc.AckAll(ctx, recs))
			got += len(recs)
		}
	}
	take(5)
	require.NoError(t, c.Log(0).ReassignPartition(ctx, "jobs", 0, []uint64{uint64(2 - here)}))
	produce(5, 10)
	take(5)
}
