package replogtest_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/replog/replog"
	"github.com/replog/replog/replogtest"
)

// TestTxnCrashBetweenDecisionAndMarkers crashes the node ending a
// transaction after it recorded the decision and before it wrote any
// marker (the coordinator's prepare step done, the markers not): the
// decision stands, and another node completes the transaction. A commit
// becomes visible on every partition of two topics with the group's
// offsets; an abort leaves no record visible to read-committed consumers
// and no transaction hanging.
func TestTxnCrashBetweenDecisionAndMarkers(t *testing.T) {
	for _, commit := range []bool{true, false} {
		t.Run(fmt.Sprintf("commit=%v", commit), func(t *testing.T) { crashBetweenDecisionAndMarkers(t, commit) })
	}
}

func crashBetweenDecisionAndMarkers(t *testing.T, commit bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var armed atomic.Bool
	decided, hold := make(chan int, 1), make(chan struct{})
	c := replogtest.NewClusterWithOptions(t, 3, &replogtest.Options{
		AfterTxnDecision: func(node int, txnID string) {
			if txnID == "etl" && armed.CompareAndSwap(true, false) {
				decided <- node
				<-hold
			}
		},
	})
	const writer, reader = 0, 1
	topics := map[string]int{"in": 1, "out-a": 2, "out-b": 1}
	for name, n := range topics {
		_, err := c.Log(writer).CreateTopic(ctx, name, replog.TopicConfig{Partitions: n, Replicas: 3})
		require.NoError(t, err)
	}
	topic := func(node int, name string) *replog.Topic {
		tp, err := c.Log(node).Topic(name)
		require.NoError(t, err)
		return tp
	}
	p, err := replog.NewProducer(topic(writer, "in"), replog.String(), nil)
	require.NoError(t, err)
	for i := range 5 {
		_, err := p.Produce(ctx, replog.Message[string]{Value: fmt.Sprint("in-", i)})
		require.NoError(t, err)
	}
	require.NoError(t, p.Close())
	in, err := replog.NewConsumer(topic(writer, "in"), replog.String(), &replog.ConsumerOptions{
		Group: "g", Isolation: replog.ReadCommitted,
		GroupOptions: replog.GroupOptions{SessionTimeout: 2 * time.Second, HeartbeatInterval: 100 * time.Millisecond},
	})
	require.NoError(t, err)
	var inputs []replog.Record[string]
	for len(inputs) < 5 {
		recs, err := in.Poll(ctx)
		require.NoError(t, err)
		inputs = append(inputs, recs...)
	}

	tp, err := c.Log(writer).NewTransactionalProducer(ctx, "etl", nil)
	require.NoError(t, err)
	outA, err := replog.NewProducer(topic(writer, "out-a"), replog.String(), &replog.ProducerOptions{Transactional: tp})
	require.NoError(t, err)
	outB, err := replog.NewProducer(topic(writer, "out-b"), replog.String(), &replog.ProducerOptions{Transactional: tp})
	require.NoError(t, err)
	require.NoError(t, tp.Begin())
	for i, r := range inputs {
		out := outA
		if i%2 == 1 {
			out = outB
		}
		_, err := out.Produce(ctx, replog.Message[string]{Key: []byte(r.Value), Value: "out-" + r.Value})
		require.NoError(t, err)
	}
	require.NoError(t, tp.SendOffsets(ctx, in))

	armed.Store(true)
	ended := make(chan error, 1)
	go func() {
		if commit {
			ended <- tp.Commit(ctx)
		} else {
			ended <- tp.Abort(ctx)
		}
	}()
	var node int
	select {
	case node = <-decided:
	case <-ctx.Done():
		t.Fatal("no decision recorded")
	}
	require.Equal(t, writer, node, "the writer's node decides")
	crashed := make(chan struct{})
	go func() {
		defer close(crashed)
		c.Crash(node)
	}()
	// The network is cut first: the node cannot write a marker once
	// released.
	time.Sleep(200 * time.Millisecond)
	close(hold)
	<-crashed
	err = <-ended
	t.Logf("the crashed node's Commit/Abort: %v", err)

	// The other nodes complete the transaction: every partition's last
	// stable offset reaches its high watermark.
	for name, n := range topics {
		for i := range n {
			require.Eventually(t, func() bool {
				o, err := topic(reader, name).Offsets(ctx, i)
				return err == nil && o.LastStable == o.HighWatermark
			}, 30*time.Second, 20*time.Millisecond, "%s/%d: transaction left open", name, i)
		}
	}
	var got []string
	for _, name := range []string{"out-a", "out-b"} {
		rc, err := replog.NewConsumer(topic(reader, name), replog.String(), &replog.ConsumerOptions{Isolation: replog.ReadCommitted})
		require.NoError(t, err)
		pctx, pcancel := context.WithTimeout(ctx, time.Second)
		for rec, err := range rc.Records(pctx) {
			if err != nil {
				break
			}
			got = append(got, rec.Value)
		}
		pcancel()
		require.NoError(t, rc.Close())
	}
	g, err := c.Log(reader).DescribeGroup(ctx, "g")
	require.NoError(t, err)
	if commit {
		require.ElementsMatch(t, []string{"out-in-0", "out-in-1", "out-in-2", "out-in-3", "out-in-4"}, got)
		require.Equal(t, int64(5), g.Partitions[0].Committed, "the offsets committed with the transaction")
	} else {
		require.Empty(t, got)
		require.Equal(t, int64(-1), g.Partitions[0].Committed)
	}

	// The crashed node comes back; a new session of the id goes on.
	c.Restart(node)
	tp2, err := c.Log(reader).NewTransactionalProducer(ctx, "etl", nil)
	require.NoError(t, err)
	require.NoError(t, tp2.Close())
}
