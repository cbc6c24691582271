package replog_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/replog/replog"
	"github.com/replog/replog/replogtest"
)

func openTxnLog(t *testing.T, ctx context.Context, topics map[string]int) (*replog.Log, map[string]*replog.Topic) {
	t.Helper()
	l, err := replog.Open("", &replog.Options{InMemory: true})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, l.Close()) })
	out := map[string]*replog.Topic{}
	for name, n := range topics {
		tp, err := l.CreateTopic(ctx, name, replog.TopicConfig{Partitions: n})
		require.NoError(t, err)
		out[name] = tp
	}
	return l, out
}

func joined(t *testing.T, tp *replog.Topic, s *replog.TransactionalProducer) *replog.Producer[string] {
	t.Helper()
	p, err := replog.NewProducer(tp, replog.String(), &replog.ProducerOptions{Transactional: s})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, p.Close()) })
	return p
}

func consumer(t *testing.T, tp *replog.Topic, iso replog.IsolationLevel) *replog.Consumer[string] {
	t.Helper()
	c, err := replog.NewConsumer(tp, replog.String(), &replog.ConsumerOptions{Isolation: iso})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, c.Close()) })
	return c
}

// txnValues polls until n records came and returns their values, sorted.
func txnValues(t *testing.T, ctx context.Context, c *replog.Consumer[string], n int) []string {
	t.Helper()
	var out []string
	for _, r := range readN(t, ctx, c, n) {
		out = append(out, r.Value)
	}
	slices.Sort(out)
	return out
}

// nothingWithin checks that c reads no record within d.
func nothingWithin(t *testing.T, ctx context.Context, c *replog.Consumer[string], d time.Duration) {
	t.Helper()
	pctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	recs, err := c.Poll(pctx)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.Empty(t, recs)
}

// TestTxnCommitAcrossTopicsWithOffsets is consume-transform-produce: a
// group member reads an input topic, writes to three topics in one
// transaction and sends its positions with it. Read-committed consumers
// see nothing until the commit, then everything; the group's offsets move
// with the commit.
func TestTxnCommitAcrossTopicsWithOffsets(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	l, topics := openTxnLog(t, ctx, map[string]int{"in": 2, "out-a": 2, "out-b": 1, "out-c": 3})
	produceStrings(t, ctx, topics["in"], 6, "in")

	opts := groupOpts("etl")
	opts.Isolation = replog.ReadCommitted
	in, err := replog.NewConsumer(topics["in"], replog.String(), opts)
	require.NoError(t, err)
	defer in.Close()
	recs := readN(t, ctx, in, 6)

	s, err := l.NewTransactionalProducer(ctx, "etl-1", &replog.TransactionalOptions{Timeout: time.Minute})
	require.NoError(t, err)
	defer func() { require.NoError(t, s.Close()) }()
	outs := []string{"out-a", "out-b", "out-c"}
	var ps []*replog.Producer[string]
	for _, name := range outs {
		ps = append(ps, joined(t, topics[name], s))
	}
	rc := map[string]*replog.Consumer[string]{}
	for _, name := range outs {
		rc[name] = consumer(t, topics[name], replog.ReadCommitted)
	}
	ru := consumer(t, topics["out-b"], replog.ReadUncommitted)

	require.NoError(t, s.Begin())
	var want []string
	for _, r := range recs {
		v := "t-" + r.Value
		want = append(want, v)
		for _, p := range ps {
			_, err := p.Produce(ctx, replog.Message[string]{Key: []byte(r.Value), Value: v})
			require.NoError(t, err)
		}
	}
	slices.Sort(want)
	require.NoError(t, s.SendOffsets(ctx, in))

	// Open: read-uncommitted consumers read it, read-committed ones wait.
	require.Equal(t, want, txnValues(t, ctx, ru, len(want)))
	for _, name := range outs {
		nothingWithin(t, ctx, rc[name], 200*time.Millisecond)
	}
	off, err := topics["out-b"].Offsets(ctx, 0)
	require.NoError(t, err)
	require.Equal(t, int64(0), off.LastStable, "the open transaction holds the last stable offset")
	require.Equal(t, int64(len(want)), off.HighWatermark)
	g, err := l.DescribeGroup(ctx, "etl")
	require.NoError(t, err)
	for _, p := range g.Partitions {
		require.Equal(t, int64(-1), p.Committed, "offsets wait for the commit")
	}

	require.NoError(t, s.Commit(ctx))
	for _, name := range outs {
		require.Equal(t, want, txnValues(t, ctx, rc[name], len(want)), name)
	}
	g, err = l.DescribeGroup(ctx, "etl")
	require.NoError(t, err)
	committed := map[int]int64{}
	for _, p := range g.Partitions {
		committed[p.Partition] = p.Committed
	}
	for _, p := range in.Assignment() {
		pos, err := in.Position(p)
		require.NoError(t, err)
		require.Equal(t, pos, committed[p], "partition %d", p)
	}
}

// TestTxnAbort: an aborted transaction's records are read by
// read-uncommitted consumers only, and its offsets are not committed; the
// session goes on with the next transaction.
func TestTxnAbort(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	l, topics := openTxnLog(t, ctx, map[string]int{"in": 1, "out": 2})
	produceStrings(t, ctx, topics["in"], 2, "in")
	in, err := replog.NewConsumer(topics["in"], replog.String(), groupOpts("abort"))
	require.NoError(t, err)
	defer in.Close()
	readN(t, ctx, in, 2)

	s, err := l.NewTransactionalProducer(ctx, "abort-1", nil)
	require.NoError(t, err)
	defer s.Close()
	p := joined(t, topics["out"], s)
	rc := consumer(t, topics["out"], replog.ReadCommitted)
	ru := consumer(t, topics["out"], replog.ReadUncommitted)

	require.NoError(t, s.Begin())
	for i := range 3 {
		_, err := p.Produce(ctx, replog.Message[string]{Key: fmt.Appendf(nil, "k%d", i), Value: fmt.Sprintf("aborted-%d", i)})
		require.NoError(t, err)
	}
	require.NoError(t, s.SendOffsets(ctx, in))
	require.NoError(t, s.Abort(ctx))
	g, err := l.DescribeGroup(ctx, "abort")
	require.NoError(t, err)
	require.Equal(t, int64(-1), g.Partitions[0].Committed, "an aborted transaction commits no offsets")

	require.NoError(t, s.Begin())
	_, err = p.Produce(ctx, replog.Message[string]{Key: []byte("k"), Value: "committed"})
	require.NoError(t, err)
	require.NoError(t, s.Commit(ctx))

	require.Equal(t, []string{"committed"}, txnValues(t, ctx, rc, 1))
	nothingWithin(t, ctx, rc, 200*time.Millisecond)
	require.Equal(t, []string{"aborted-0", "aborted-1", "aborted-2", "committed"}, txnValues(t, ctx, ru, 4))
	for p, lag := range rc.Lag() {
		require.Zero(t, lag, "partition %d: markers and aborted records are read past", p)
	}
}

// TestTxnZombieFenced: a second session of the same transactional id
// fences the first (Kafka's zombie fencing): its open transaction is
// aborted, and its produce and commit fail with ErrFenced for good.
func TestTxnZombieFenced(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	l, topics := openTxnLog(t, ctx, map[string]int{"out": 1})
	rc := consumer(t, topics["out"], replog.ReadCommitted)

	zombie, err := l.NewTransactionalProducer(ctx, "z", nil)
	require.NoError(t, err)
	defer zombie.Close()
	zp := joined(t, topics["out"], zombie)
	require.NoError(t, zombie.Begin())
	_, err = zp.Produce(ctx, replog.Message[string]{Value: "zombie"})
	require.NoError(t, err)

	s, err := l.NewTransactionalProducer(ctx, "z", nil)
	require.NoError(t, err)
	defer s.Close()

	_, err = zp.Produce(ctx, replog.Message[string]{Value: "zombie-2"})
	require.ErrorIs(t, err, replog.ErrFenced)
	require.ErrorIs(t, zombie.Commit(ctx), replog.ErrFenced)
	require.ErrorIs(t, zombie.Begin(), replog.ErrFenced)
	require.ErrorIs(t, zombie.Abort(ctx), replog.ErrFenced)

	p := joined(t, topics["out"], s)
	require.NoError(t, s.Begin())
	_, err = p.Produce(ctx, replog.Message[string]{Value: "new"})
	require.NoError(t, err)
	require.NoError(t, s.Commit(ctx))
	require.Equal(t, []string{"new"}, txnValues(t, ctx, rc, 1))
	nothingWithin(t, ctx, rc, 200*time.Millisecond)
}

// TestTxnStateErrors: producing, sending offsets, committing or aborting
// with no transaction begun, and beginning twice, fail with
// ErrInvalidTxnState and write nothing.
func TestTxnStateErrors(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	l, topics := openTxnLog(t, ctx, map[string]int{"out": 1})
	s, err := l.NewTransactionalProducer(ctx, "states", nil)
	require.NoError(t, err)
	defer s.Close()
	p := joined(t, topics["out"], s)
	in, err := replog.NewConsumer(topics["out"], replog.String(), groupOpts("states"))
	require.NoError(t, err)
	defer in.Close()

	_, err = p.Produce(ctx, replog.Message[string]{Value: "x"})
	require.ErrorIs(t, err, replog.ErrInvalidTxnState)
	require.ErrorIs(t, s.SendOffsets(ctx, in), replog.ErrInvalidTxnState)
	require.ErrorIs(t, s.Commit(ctx), replog.ErrInvalidTxnState)
	require.ErrorIs(t, s.Abort(ctx), replog.ErrInvalidTxnState)
	require.NoError(t, s.Begin())
	require.ErrorIs(t, s.Begin(), replog.ErrInvalidTxnState)
	// An empty transaction commits without the coordinator.
	require.NoError(t, s.Commit(ctx))
	_, err = p.Produce(ctx, replog.Message[string]{Value: "x"})
	require.ErrorIs(t, err, replog.ErrInvalidTxnState, "the transaction is over")

	off, err := topics["out"].Offsets(ctx, 0)
	require.NoError(t, err)
	require.Equal(t, int64(0), off.HighWatermark, "nothing was written")
	require.Equal(t, 1, l.Stats().Node.Producers, "the session is one producer")

	// SendOffsets needs a group consumer.
	require.NoError(t, s.Begin())
	plain := consumer(t, topics["out"], replog.ReadUncommitted)
	require.ErrorIs(t, s.SendOffsets(ctx, plain), replog.ErrInvalidConfig)
	var none *replog.Consumer[string]
	require.ErrorIs(t, s.SendOffsets(ctx, none), replog.ErrInvalidConfig)
	require.ErrorIs(t, s.SendOffsets(ctx, nil), replog.ErrInvalidConfig)
	require.NoError(t, s.Abort(ctx))
}

// TestTxnBadOptions: bad options are refused before anything is asked
// of the coordinator.
func TestTxnBadOptions(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	l, topics := openTxnLog(t, ctx, map[string]int{"out": 1})
	for _, tc := range []struct {
		id   string
		opts *replog.TransactionalOptions
	}{
		{"", nil},
		{string(make([]byte, 1025)), nil},
		{"t", &replog.TransactionalOptions{Timeout: -time.Second}},
		{"t", &replog.TransactionalOptions{Timeout: 16 * time.Minute}},
		{"t", &replog.TransactionalOptions{Producer: replog.ProducerOptions{DisableIdempotence: true}}},
		{"t", &replog.TransactionalOptions{Producer: replog.ProducerOptions{Acks: replog.AcksNone}}},
	} {
		_, err := l.NewTransactionalProducer(ctx, tc.id, tc.opts)
		require.ErrorIs(t, err, replog.ErrInvalidConfig, "%+v", tc.opts)
	}
	s, err := l.NewTransactionalProducer(ctx, "t", nil)
	require.NoError(t, err)
	defer s.Close()
	_, err = replog.NewProducer(topics["out"], replog.String(), &replog.ProducerOptions{Transactional: s, Linger: time.Second})
	require.ErrorIs(t, err, replog.ErrInvalidConfig)

	// A done ctx: nothing is done, and the session is not fenced.
	done, cancelDone := context.WithCancel(ctx)
	cancelDone()
	_, err = l.NewTransactionalProducer(done, "t", nil)
	require.ErrorIs(t, err, context.Canceled)
	require.NoError(t, s.Begin())
	require.NoError(t, s.Abort(ctx))
}

// TestTxnCancelledCommitDoesNothing: Commit with a ctx already done
// leaves the transaction open: records can still join it, and a later
// Commit commits them all.
func TestTxnCancelledCommitDoesNothing(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	l, topics := openTxnLog(t, ctx, map[string]int{"out": 1})
	rc := consumer(t, topics["out"], replog.ReadCommitted)
	s, err := l.NewTransactionalProducer(ctx, "cancel", nil)
	require.NoError(t, err)
	defer s.Close()
	p := joined(t, topics["out"], s)
	require.NoError(t, s.Begin())
	_, err = p.Produce(ctx, replog.Message[string]{Value: "a"})
	require.NoError(t, err)

	done, cancelDone := context.WithCancel(ctx)
	cancelDone()
	require.ErrorIs(t, s.Commit(done), context.Canceled)
	require.ErrorIs(t, s.Abort(done), context.Canceled)
	_, err = p.Produce(ctx, replog.Message[string]{Value: "b"})
	require.NoError(t, err, "the transaction is still open")
	nothingWithin(t, ctx, rc, 200*time.Millisecond)
	require.NoError(t, s.Commit(ctx))
	require.Equal(t, []string{"a", "b"}, txnValues(t, ctx, rc, 2))
}

// TestTxnTimeoutAborts: a transaction left open past its Timeout is
// aborted by the coordinator, which frees the read-committed consumers
// and fences the session.
func TestTxnTimeoutAborts(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	l, topics := openTxnLog(t, ctx, map[string]int{"out": 1})
	rc := consumer(t, topics["out"], replog.ReadCommitted)
	s, err := l.NewTransactionalProducer(ctx, "slow", &replog.TransactionalOptions{Timeout: time.Second})
	require.NoError(t, err)
	defer s.Close()
	p := joined(t, topics["out"], s)
	require.NoError(t, s.Begin())
	_, err = p.Produce(ctx, replog.Message[string]{Value: "late"})
	require.NoError(t, err)
	plain, err := replog.NewProducer(topics["out"], replog.String(), nil)
	require.NoError(t, err)
	defer plain.Close()
	_, err = plain.Produce(ctx, replog.Message[string]{Value: "after"})
	require.NoError(t, err)

	// The open transaction holds "after" back until the coordinator
	// aborts it.
	start := time.Now()
	require.Equal(t, []string{"after"}, txnValues(t, ctx, rc, 1))
	require.GreaterOrEqual(t, time.Since(start), 500*time.Millisecond)
	require.ErrorIs(t, s.Commit(ctx), replog.ErrFenced)
	_, err = p.Produce(ctx, replog.Message[string]{Value: "x"})
	require.ErrorIs(t, err, replog.ErrFenced)
}

// TestTxnCloseAbortsOpenTransaction: closing a session with a transaction
// open aborts it, so a new session of the id starts at once.
func TestTxnCloseAbortsOpenTransaction(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	l, topics := openTxnLog(t, ctx, map[string]int{"out": 1})
	rc := consumer(t, topics["out"], replog.ReadCommitted)
	s, err := l.NewTransactionalProducer(ctx, "close", nil)
	require.NoError(t, err)
	p := joined(t, topics["out"], s)
	require.NoError(t, s.Begin())
	_, err = p.Produce(ctx, replog.Message[string]{Value: "open"})
	require.NoError(t, err)
	require.NoError(t, s.Close())
	require.NoError(t, s.Close())
	_, err = p.Produce(ctx, replog.Message[string]{Value: "x"})
	require.ErrorIs(t, err, replog.ErrClosed)

	s2, err := l.NewTransactionalProducer(ctx, "close", nil)
	require.NoError(t, err)
	defer s2.Close()
	p2 := joined(t, topics["out"], s2)
	require.NoError(t, s2.Begin())
	_, err = p2.Produce(ctx, replog.Message[string]{Value: "next"})
	require.NoError(t, err)
	require.NoError(t, s2.Commit(ctx))
	require.Equal(t, []string{"next"}, txnValues(t, ctx, rc, 1))
}

// TestTxnFailedRecordForcesAbort: a record that fails once buffered (here
// larger than the topic's MaxMessageBytes) dooms its transaction: Commit
// refuses, reporting the record's error, and Abort ends it; the next
// transaction commits.
func TestTxnFailedRecordForcesAbort(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	l, err := replog.Open("", &replog.Options{InMemory: true})
	require.NoError(t, err)
	defer func() { require.NoError(t, l.Close()) }()
	out, err := l.CreateTopic(ctx, "small", replog.TopicConfig{Partitions: 1, MaxMessageBytes: 1024})
	require.NoError(t, err)
	rc := consumer(t, out, replog.ReadCommitted)
	s, err := l.NewTransactionalProducer(ctx, "fail", nil)
	require.NoError(t, err)
	defer s.Close()
	p := joined(t, out, s)

	require.NoError(t, s.Begin())
	_, err = p.Produce(ctx, replog.Message[string]{Value: "ok"})
	require.NoError(t, err)
	_, err = p.Produce(ctx, replog.Message[string]{Value: string(make([]byte, 4096))})
	require.ErrorIs(t, err, replog.ErrRecordTooLarge)
	err = s.Commit(ctx)
	require.ErrorIs(t, err, replog.ErrRecordTooLarge)
	require.ErrorIs(t, s.Commit(ctx), replog.ErrRecordTooLarge, "still refused")
	require.NoError(t, s.Abort(ctx))

	require.NoError(t, s.Begin())
	_, err = p.Produce(ctx, replog.Message[string]{Value: "next"})
	require.NoError(t, err)
	require.NoError(t, s.Commit(ctx))
	require.Equal(t, []string{"next"}, txnValues(t, ctx, rc, 1))
}

// TestTxnSendOffsetsNeedsMembership: a member that lost its partitions
// (no Poll within MaxPollInterval) cannot send its positions: the error
// is the group's ErrUnknownMember, and the transaction must abort.
func TestTxnSendOffsetsNeedsMembership(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	l, topics := openTxnLog(t, ctx, map[string]int{"in": 1, "out": 1})
	produceStrings(t, ctx, topics["in"], 3, "in")
	o := groupOpts("lost")
	o.MaxPollInterval = 300 * time.Millisecond
	in, err := replog.NewConsumer(topics["in"], replog.String(), o)
	require.NoError(t, err)
	defer in.Close()
	readN(t, ctx, in, 3)
	s, err := l.NewTransactionalProducer(ctx, "lost-1", nil)
	require.NoError(t, err)
	defer s.Close()

	require.NoError(t, s.Begin())
	require.Eventually(t, func() bool { return len(in.Assignment()) == 0 }, 10*time.Second, 20*time.Millisecond)
	require.ErrorIs(t, s.SendOffsets(ctx, in), replog.ErrUnknownMember)
	require.ErrorIs(t, s.Commit(ctx), replog.ErrUnknownMember)
	require.NoError(t, s.Abort(ctx))
	g, err := l.DescribeGroup(ctx, "lost")
	require.NoError(t, err)
	require.Equal(t, int64(-1), g.Partitions[0].Committed)
}

// TestTxnConcurrentProduceAndCommit: records produced from many
// goroutines while transactions begin and commit are each either in a
// transaction that commits or refused with ErrInvalidTxnState; none is
// lost or left behind a transaction's end.
func TestTxnConcurrentProduceAndCommit(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	l, topics := openTxnLog(t, ctx, map[string]int{"a": 3, "b": 2})
	s, err := l.NewTransactionalProducer(ctx, "busy", nil)
	require.NoError(t, err)
	defer s.Close()
	pa, pb := joined(t, topics["a"], s), joined(t, topics["b"], s)
	pa2 := joined(t, topics["a"], s) // a second producer on the same topic shares its writers

	var mu sync.Mutex
	acked, refused := 0, 0
	done := func(pos replog.Position, err error) {
		mu.Lock()
		defer mu.Unlock()
		switch {
		case err == nil:
			acked++
		case errors.Is(err, replog.ErrInvalidTxnState):
			refused++
		default:
			t.Errorf("record failed: %v", err)
		}
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i, p := range []*replog.Producer[string]{pa, pb, pa2, pa, pb} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				p.ProduceAsync(ctx, replog.Message[string]{Key: fmt.Appendf(nil, "%d-%d", i, n), Value: "v"}, done)
				if n%50 == 0 {
					time.Sleep(time.Millisecond)
				}
			}
		}()
	}
	for range 5 {
		require.NoError(t, s.Begin())
		time.Sleep(30 * time.Millisecond)
		require.NoError(t, s.Commit(ctx))
	}
	close(stop)
	wg.Wait()
	for _, p := range []*replog.Producer[string]{pa, pb} {
		require.NoError(t, p.Flush(ctx))
	}
	mu.Lock()
	want, refused := acked, refused
	mu.Unlock()
	require.Positive(t, want)
	t.Logf("%d records acknowledged, %d refused", want, refused)
	got := 0
	for _, name := range []string{"a", "b"} {
		rc := consumer(t, topics[name], replog.ReadCommitted)
		var n int
		for lag := int64(1); lag > 0; {
			pctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
			recs, _ := rc.Poll(pctx)
			cancel()
			n += len(recs)
			lag = 0
			for _, l := range rc.Lag() {
				lag += l
			}
		}
		got += n
	}
	require.Equal(t, want, got, "every acknowledged record committed, and only those (%d refused)", refused)
}

// TestTxnAcrossNodes: on a three-node cluster a session commits from one
// node, read-committed consumers on another see the records, and a
// session of the same id on a third node fences the first.
func TestTxnAcrossNodes(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	c := replogtest.NewCluster(t, 3)
	_, err := c.Log(0).CreateTopic(ctx, "out", replog.TopicConfig{Partitions: 3, Replicas: 3})
	require.NoError(t, err)
	topic := func(i int) *replog.Topic {
		tp, err := c.Log(i).Topic("out")
		require.NoError(t, err)
		return tp
	}
	rc := consumer(t, topic(1), replog.ReadCommitted)

	s0, err := c.Log(0).NewTransactionalProducer(ctx, "spread", nil)
	require.NoError(t, err)
	defer s0.Close()
	p0 := joined(t, topic(0), s0)
	require.NoError(t, s0.Begin())
	var want []string
	for i := range 9 {
		v := fmt.Sprintf("v%d", i)
		want = append(want, v)
		_, err := p0.Produce(ctx, replog.Message[string]{Key: []byte(v), Value: v})
		require.NoError(t, err)
	}
	slices.Sort(want)
	nothingWithin(t, ctx, rc, 200*time.Millisecond)
	require.NoError(t, s0.Commit(ctx))
	require.Equal(t, want, txnValues(t, ctx, rc, len(want)))

	require.NoError(t, s0.Begin())
	_, err = p0.Produce(ctx, replog.Message[string]{Key: []byte("zombie"), Value: "zombie"})
	require.NoError(t, err)
	s2, err := c.Log(2).NewTransactionalProducer(ctx, "spread", nil)
	require.NoError(t, err)
	defer s2.Close()
	require.ErrorIs(t, s0.Commit(ctx), replog.ErrFenced)
	_, err = replog.NewProducer(topic(0), replog.String(), &replog.ProducerOptions{Transactional: s2})
	require.ErrorIs(t, err, replog.ErrInvalidConfig, "a topic of another node's Log")
	p2 := joined(t, topic(2), s2)
	require.NoError(t, s2.Begin())
	_, err = p2.Produce(ctx, replog.Message[string]{Key: []byte("k"), Value: "from-2"})
	require.NoError(t, err)
	require.NoError(t, s2.Commit(ctx))
	require.Equal(t, []string{"from-2"}, txnValues(t, ctx, rc, 1))
	nothingWithin(t, ctx, rc, 200*time.Millisecond)
}

// TestTxnGroupWaitsForPendingOffsets: a read-committed member that takes
// over a partition while a transaction commits offsets of its group waits
// for that transaction to end, then starts at the offsets it committed
// (KIP-447's stable offsets), rather than at the older ones and read again
// what the transaction consumed.
func TestTxnGroupWaitsForPendingOffsets(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	l, topics := openTxnLog(t, ctx, map[string]int{"in": 1, "out": 1})
	produceStrings(t, ctx, topics["in"], 6, "in")
	opts := groupOpts("etl")
	opts.Isolation = replog.ReadCommitted
	a, err := replog.NewConsumer(topics["in"], replog.String(), opts)
	require.NoError(t, err)
	readN(t, ctx, a, 6)

	s, err := l.NewTransactionalProducer(ctx, "etl-a", nil)
	require.NoError(t, err)
	defer func() { require.NoError(t, s.Close()) }()
	p := joined(t, topics["out"], s)
	require.NoError(t, s.Begin())
	_, err = p.Produce(ctx, replog.Message[string]{Value: "out"})
	require.NoError(t, err)
	require.NoError(t, s.SendOffsets(ctx, a))
	// The member leaves mid-transaction (a rebalance); another takes the
	// partition over while the offsets are pending.
	require.NoError(t, a.Close())
	b, err := replog.NewConsumer(topics["in"], replog.String(), opts)
	require.NoError(t, err)
	defer b.Close()
	first := make(chan int64, 1)
	go func() {
		recs, err := b.Poll(ctx)
		if err != nil || len(recs) == 0 {
			first <- -1
			return
		}
		first <- recs[0].Offset
	}()
	time.Sleep(300 * time.Millisecond)
	require.NoError(t, s.Commit(ctx))
	produceStrings(t, ctx, topics["in"], 1, "more")
	require.Equal(t, int64(6), <-first, "the new member starts after what the transaction consumed")
}
