package replogtest_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/replog/replog"
	"github.com/replog/replog/replogtest"
)

// asyncWriter streams unique values ("name-seq") through p with
// ProduceAsync until stop, so that several batches are in flight at once,
// and records every outcome. Failed records are not retried: any copy of a
// value beyond the first in the log is the producer's doing.
type asyncWriter struct {
	mu         sync.Mutex
	ops        []op
	definite   map[string]error // failed, and not with ErrAmbiguous: must not be in the log
	ambiguous  int
	lastFailed error
}

func (w *asyncWriter) run(p *replog.Producer[string], name string, stop <-chan struct{}) {
	w.definite = map[string]error{}
	for seq := 0; ; seq++ {
		select {
		case <-stop:
			return
		case <-time.After(time.Millisecond):
		}
		v := fmt.Sprintf("%s-%06d", name, seq)
		p.ProduceAsync(context.Background(), replog.Message[string]{Value: v}, func(pos replog.Position, err error) {
			w.mu.Lock()
			defer w.mu.Unlock()
			w.ops = append(w.ops, op{value: v, ok: err == nil, pos: pos})
			switch {
			case err == nil:
			case errors.Is(err, replog.ErrAmbiguous):
				w.ambiguous++
			default:
				w.definite[v] = err
				w.lastFailed = err
			}
		})
	}
}

// checkWriters checks the log read from every node against what the
// writers saw: no value twice, none out of order, every acknowledged one at
// its offset, and none whose produce failed without ErrAmbiguous.
func checkWriters(t *testing.T, ctx context.Context, c *replogtest.Cluster, writers []*asyncWriter) {
	t.Helper()
	var ops []op
	failed, ambiguous := 0, 0
	for _, w := range writers {
		for _, o := range w.ops {
			if !o.ok {
				failed++
			}
		}
		ambiguous += w.ambiguous
		ops = append(ops, w.ops...)
	}
	var nodes []int
	for n := range c.Size() {
		nodes = append(nodes, n)
	}
	hw := convergedHW(t, ctx, c, nodes, 1)
	var logs [][]map[int64]string
	for _, n := range nodes {
		logs = append(logs, drainN(t, c, n, hw, 1))
	}
	a := check(ops, logs)
	t.Logf("%d records produced, %d failed (%d ambiguous), %d in the log; anomalies %+v", len(ops), failed, ambiguous, hw[0], a)
	require.Zero(t, a.duplicated, "duplicates: %v", a.examples)
	require.Zero(t, a.lost+a.inconsistent+a.reordered+a.phantom+a.divergent+a.misplaced, "%v", a.examples)
	for off, v := range logs[0][0] {
		for _, w := range writers {
			if err, ok := w.definite[v]; ok {
				t.Fatalf("%s is at offset %d but its produce failed without ErrAmbiguous: %v", v, off, err)
			}
		}
	}
}

// The leader is isolated while two idempotent producers (one on the leader,
// one on a follower) stream records with MaxInFlight 5 and a delivery
// timeout shorter than the election: batches fail for good while later
// ones are in flight, and the producers start new epochs. A batch sent
// again under the new epoch while its first proposal could still commit
// would be stored twice. After healing, every value is in the log at most
// once, in produce order, and every acknowledged one at its offset.
func TestNoDuplicatesAfterEpochBump(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	c := replogtest.NewCluster(t, 3)
	_, err := c.Log(0).CreateTopic(ctx, "t", replog.TopicConfig{Partitions: 1, Replicas: 3})
	require.NoError(t, err)
	leader := c.WaitLeader("t", 0, 10*time.Second)
	follower := (leader + 1) % 3

	opts := &replog.ProducerOptions{DeliveryTimeout: 300 * time.Millisecond, MaxInFlight: 5, BatchBytes: 512}
	var writers []*asyncWriter
	var producers []*replog.Producer[string]
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for _, node := range []int{leader, follower} {
		tp, err := c.Log(node).Topic("t")
		require.NoError(t, err)
		p, err := replog.NewProducer(tp, replog.String(), opts)
		require.NoError(t, err)
		producers = append(producers, p)
		w := &asyncWriter{}
		writers = append(writers, w)
		wg.Add(1)
		go func() {
			defer wg.Done()
			w.run(p, fmt.Sprintf("n%d", node), stop)
		}()
	}
	time.Sleep(500 * time.Millisecond)
	c.Partition([]int{leader}, []int{(leader + 1) % 3, (leader + 2) % 3})
	time.Sleep(1500 * time.Millisecond)
	c.Heal()
	c.WaitLeader("t", 0, 10*time.Second)
	time.Sleep(time.Second)
	close(stop)
	wg.Wait()
	for _, p := range producers {
		require.NoError(t, p.Flush(ctx))
		require.NoError(t, p.Close())
	}

	checkWriters(t, ctx, c, writers)
	failed := 0
	for _, w := range writers {
		failed += len(w.definite) + w.ambiguous
	}
	require.Positive(t, failed, "the isolation must fail some deliveries, or the test shows nothing")
}

// Without idempotence a batch whose outcome is unknown is never sent again:
// leadership moves every few tens of milliseconds while a producer streams
// records, so proposals are often pending through a leader change (the
// old leader may commit them, or the new one). They fail with ErrAmbiguous
// (or wait for their result), and no value is stored twice.
func TestNonIdempotentProducerDoesNotResendAmbiguous(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	c := replogtest.NewCluster(t, 3)
	tp, err := c.Log(0).CreateTopic(ctx, "t", replog.TopicConfig{Partitions: 1, Replicas: 3})
	require.NoError(t, err)
	p, err := replog.NewProducer(tp, replog.String(), &replog.ProducerOptions{DisableIdempotence: true, BatchBytes: 512})
	require.NoError(t, err)
	w := &asyncWriter{}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		w.run(p, "n0", stop)
	}()
	transfers := 0
	for end := time.Now().Add(4 * time.Second); time.Now().Before(end); {
		time.Sleep(15 * time.Millisecond)
		target := uint64(transfers%3 + 1)
		tctx, tcancel := context.WithTimeout(ctx, 5*time.Second)
		if tp.TransferLeader(tctx, 0, target) == nil {
			transfers++
		}
		tcancel()
	}
	close(stop)
	wg.Wait()
	require.NoError(t, p.Flush(ctx))
	require.NoError(t, p.Close())
	require.GreaterOrEqual(t, transfers, 10, "leadership must move during the test")
	checkWriters(t, ctx, c, []*asyncWriter{w})
}
