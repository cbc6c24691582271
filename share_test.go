package replog_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/replog/replog"
)

func newShare(t *testing.T, tp *replog.Topic, group string, o *replog.ShareConsumerOptions) *replog.ShareConsumer[string] {
	t.Helper()
	c, err := replog.NewShareConsumer(tp, group, replog.String(), o)
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// pollWithin polls until records come or d passes (then none).
func pollWithin(t *testing.T, c *replog.ShareConsumer[string], d time.Duration) []replog.ShareRecord[string] {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	recs, err := c.Poll(ctx)
	if errors.Is(err, context.DeadlineExceeded) {
		return nil
	}
	require.NoError(t, err)
	return recs
}

// TestShareMembersAllBusy: five members of one share group on a
// one-partition topic work at once, each on records no other holds, and
// every record is accepted exactly once.
func TestShareMembersAllBusy(t *testing.T) {
	ctx := testCtx(t)
	l := openMem(t)
	tp, err := l.CreateTopic(ctx, "jobs", replog.TopicConfig{Partitions: 1})
	require.NoError(t, err)
	const n = 300
	produceStrings(t, ctx, tp, n, "job")

	var mu sync.Mutex
	holder := map[int64]string{} // offset -> member holding it now
	done := map[int64]int{}      // offset -> times accepted
	perMember := map[string]int{}
	busy, maxBusy := 0, 0
	var wg sync.WaitGroup
	for range 5 {
		c := newShare(t, tp, "workers", &replog.ShareConsumerOptions{MaxRecords: 5})
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				mu.Lock()
				finished := len(done) == n
				mu.Unlock()
				if finished {
					return
				}
				recs := pollWithin(t, c, 200*time.Millisecond)
				if len(recs) == 0 {
					continue
				}
				mu.Lock()
				for _, r := range recs {
					if h, ok := holder[r.Offset]; ok {
						t.Errorf("offset %d delivered to %s while %s holds it", r.Offset, c.Member(), h)
					}
					holder[r.Offset] = c.Member()
				}
				busy++
				maxBusy = max(maxBusy, busy)
				perMember[c.Member()] += len(recs)
				mu.Unlock()
				time.Sleep(20 * time.Millisecond) // the work
				mu.Lock()
				busy--
				for _, r := range recs {
					delete(holder, r.Offset)
					done[r.Offset]++
				}
				mu.Unlock()
				for _, r := range recs {
					require.NoError(t, r.Ack(ctx))
				}
			}
		}()
	}
	wg.Wait()
	require.Len(t, done, n)
	for off, k := range done {
		require.Equal(t, 1, k, "offset %d accepted %d times", off, k)
	}
	require.Len(t, perMember, 5, "every member got records")
	require.Equal(t, 5, maxBusy, "all five members busy at once")
}

// TestShareLockExpiry: a member that dies holding records (it never
// acknowledges them) loses them when their lock expires; another member
// gets them, delivered a second time, and the dead one's late
// acknowledgement is refused.
func TestShareLockExpiry(t *testing.T) {
	ctx := testCtx(t)
	l := openMem(t)
	tp, err := l.CreateTopic(ctx, "jobs", replog.TopicConfig{Partitions: 1})
	require.NoError(t, err)
	produceStrings(t, ctx, tp, 3, "job")
	opts := &replog.ShareConsumerOptions{LockDuration: 500 * time.Millisecond}
	dead := newShare(t, tp, "g", opts)
	live := newShare(t, tp, "g", opts)

	held := pollWithin(t, dead, 5*time.Second)
	require.Len(t, held, 3)
	require.Equal(t, 1, held[0].Deliveries)
	require.WithinDuration(t, time.Now().Add(500*time.Millisecond), held[0].Deadline(), 400*time.Millisecond)
	require.Empty(t, pollWithin(t, live, 200*time.Millisecond), "locked")

	var again []replog.ShareRecord[string]
	for len(again) < 3 {
		again = append(again, pollWithin(t, live, 5*time.Second)...)
	}
	for i, r := range again {
		require.Equal(t, held[i].Offset, r.Offset)
		require.Equal(t, held[i].Value, r.Value)
		require.Equal(t, 2, r.Deliveries)
	}
	require.ErrorIs(t, held[0].Ack(ctx), replog.ErrNotAcquired)
	require.ErrorIs(t, held[1].Renew(ctx), replog.ErrNotAcquired)
	require.NoError(t, live.AckAll(ctx, again))
}

// TestShareRenew: renewing keeps a record past its first deadline.
func TestShareRenew(t *testing.T) {
	ctx := testCtx(t)
	l := openMem(t)
	tp, err := l.CreateTopic(ctx, "jobs", replog.TopicConfig{Partitions: 1})
	require.NoError(t, err)
	produceStrings(t, ctx, tp, 1, "job")
	opts := &replog.ShareConsumerOptions{LockDuration: 400 * time.Millisecond}
	a, b := newShare(t, tp, "g", opts), newShare(t, tp, "g", opts)
	recs := pollWithin(t, a, 5*time.Second)
	require.Len(t, recs, 1)
	first := recs[0].Deadline()
	for range 4 {
		time.Sleep(200 * time.Millisecond)
		require.NoError(t, recs[0].Renew(ctx))
	}
	require.True(t, recs[0].Deadline().After(first.Add(500*time.Millisecond)))
	require.Empty(t, pollWithin(t, b, 100*time.Millisecond))
	require.NoError(t, recs[0].Ack(ctx))
}

// TestShareReleaseDelay: a released record comes back after its delay,
// to any member, counted as a second delivery.
func TestShareReleaseDelay(t *testing.T) {
	ctx := testCtx(t)
	l := openMem(t)
	tp, err := l.CreateTopic(ctx, "jobs", replog.TopicConfig{Partitions: 1})
	require.NoError(t, err)
	produceStrings(t, ctx, tp, 1, "job")
	a, b := newShare(t, tp, "g", nil), newShare(t, tp, "g", nil)
	recs := pollWithin(t, a, 5*time.Second)
	require.Len(t, recs, 1)
	require.ErrorIs(t, recs[0].Release(ctx, -time.Second), replog.ErrInvalidConfig)
	released := time.Now()
	require.NoError(t, recs[0].Release(ctx, 700*time.Millisecond))
	require.ErrorIs(t, recs[0].Ack(ctx), replog.ErrAlreadyAcknowledged)
	require.Empty(t, pollWithin(t, b, 300*time.Millisecond))
	again := pollWithin(t, b, 5*time.Second)
	require.Len(t, again, 1)
	require.GreaterOrEqual(t, time.Since(released), 700*time.Millisecond)
	require.Equal(t, recs[0].Offset, again[0].Offset)
	require.Equal(t, 2, again[0].Deliveries)
	require.NoError(t, again[0].Reject(ctx))
	require.Empty(t, pollWithin(t, a, 300*time.Millisecond), "rejected: done")
}

// TestShareDeadLetter: a record released MaxDeliveries times goes to the
// dead-letter topic with headers saying why, and is not delivered again;
// so does a record the codec cannot decode. Without a dead-letter topic
// such records are rejected.
func TestShareDeadLetter(t *testing.T) {
	ctx := testCtx(t)
	l := openMem(t)
	tp, err := l.CreateTopic(ctx, "jobs", replog.TopicConfig{Partitions: 1})
	require.NoError(t, err)
	dlq, err := l.CreateTopic(ctx, "jobs.dlq", replog.TopicConfig{Partitions: 1})
	require.NoError(t, err)
	raw, err := replog.NewProducer(tp, replog.Bytes(), nil)
	require.NoError(t, err)
	for _, v := range []string{"1", "666", "2", "not json"} {
		_, err := raw.Produce(ctx, replog.Message[[]byte]{Key: []byte("k" + v), Value: []byte(v),
			Headers: []replog.Header{{Key: "trace", Value: []byte("t-" + v)}}})
		require.NoError(t, err)
	}
	require.NoError(t, raw.Close())

	c, err := replog.NewShareConsumer(tp, "g", replog.JSON[int](), &replog.ShareConsumerOptions{
		MaxDeliveries: 3, DeadLetterTopic: "jobs.dlq"})
	require.NoError(t, err)
	defer c.Close()
	accepted := map[int]bool{}
	poisonSeen := 0
	for deadline := time.Now().Add(20 * time.Second); len(accepted) < 2 || poisonSeen < 3; {
		require.True(t, time.Now().Before(deadline), "accepted %v, poison seen %d", accepted, poisonSeen)
		pctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		recs, err := c.Poll(pctx)
		cancel()
		var de *replog.DecodeError
		if errors.As(err, &de) {
			require.Equal(t, int64(3), de.Offset)
		} else if !errors.Is(err, context.DeadlineExceeded) {
			require.NoError(t, err)
		}
		for _, r := range recs {
			if r.Value == 666 {
				poisonSeen++
				require.Equal(t, poisonSeen, r.Deliveries)
				require.NoError(t, r.Release(ctx, 0))
				continue
			}
			require.False(t, accepted[r.Value], "accepted twice")
			accepted[r.Value] = true
			require.NoError(t, r.Ack(ctx))
		}
	}
	require.Empty(t, pollWithin2(t, c, 500*time.Millisecond), "poison given up")

	dc, err := replog.NewConsumer(dlq, replog.Bytes(), nil)
	require.NoError(t, err)
	defer dc.Close()
	var dead []replog.Record[[]byte]
	for len(dead) < 2 {
		recs, err := dc.Poll(ctx)
		require.NoError(t, err)
		dead = append(dead, recs...)
	}
	byReason := map[string]replog.Record[[]byte]{}
	for _, r := range dead {
		hs := map[string]string{}
		for _, h := range r.Headers {
			hs[h.Key] = string(h.Value)
		}
		require.Equal(t, "jobs", hs[replog.HeaderDLQTopic])
		require.Equal(t, "0", hs[replog.HeaderDLQPartition])
		require.Equal(t, "g", hs[replog.HeaderDLQGroup])
		require.Equal(t, "t-"+string(r.Value), hs["trace"])
		byReason[hs[replog.HeaderDLQReason]] = r
		switch hs[replog.HeaderDLQReason] {
		case "max-deliveries":
			require.Equal(t, "666", string(r.Value))
			require.Equal(t, "1", hs[replog.HeaderDLQOffset])
			require.Equal(t, "3", hs[replog.HeaderDLQDeliveries])
		case "decode":
			require.Equal(t, "not json", string(r.Value))
			require.Equal(t, "3", hs[replog.HeaderDLQOffset])
			require.Equal(t, "1", hs[replog.HeaderDLQDeliveries])
		}
		require.Equal(t, "k"+string(r.Value), string(r.Key))
	}
	require.Len(t, byReason, 2)
}

func pollWithin2[T any](t *testing.T, c *replog.ShareConsumer[T], d time.Duration) []replog.ShareRecord[T] {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	recs, err := c.Poll(ctx)
	if errors.Is(err, context.DeadlineExceeded) {
		return nil
	}
	require.NoError(t, err)
	return recs
}

// TestShareCloseReleases: Close gives a member's records back at once.
func TestShareCloseReleases(t *testing.T) {
	ctx := testCtx(t)
	l := openMem(t)
	tp, err := l.CreateTopic(ctx, "jobs", replog.TopicConfig{Partitions: 2})
	require.NoError(t, err)
	produceStrings(t, ctx, tp, 10, "job")
	a := newShare(t, tp, "g", nil)
	b := newShare(t, tp, "g", nil)
	var held []replog.ShareRecord[string]
	for len(held) < 10 {
		held = append(held, pollWithin(t, a, 5*time.Second)...)
	}
	require.NoError(t, a.Close())
	require.NoError(t, a.Close())
	require.ErrorIs(t, held[0].Ack(ctx), replog.ErrClosed)
	_, err = a.Poll(ctx)
	require.ErrorIs(t, err, replog.ErrClosed)
	var got []replog.ShareRecord[string]
	for len(got) < 10 {
		got = append(got, pollWithin(t, b, 2*time.Second)...)
	}
	for _, r := range got {
		require.Equal(t, 2, r.Deliveries)
	}
	require.NoError(t, b.AckAll(ctx, got))
}

// TestShareBadInput: options and arguments out of range are refused
// before anything is asked of the coordinator.
func TestShareBadInput(t *testing.T) {
	ctx := testCtx(t)
	l := openMem(t)
	tp, err := l.CreateTopic(ctx, "jobs", replog.TopicConfig{Partitions: 1})
	require.NoError(t, err)
	for name, o := range map[string]replog.ShareConsumerOptions{
		"negative lock":      {LockDuration: -1},
		"long lock":          {LockDuration: 2 * time.Hour},
		"negative max":       {MaxRecords: -1},
		"too many records":   {MaxRecords: replog.MaxShareInFlight + 1},
		"negative delivery":  {MaxDeliveries: -1},
		"too many delivery":  {MaxDeliveries: 1000},
		"missing partition":  {Partitions: []int{3}},
		"partition twice":    {Partitions: []int{0, 0}},
		"missing dead topic": {DeadLetterTopic: "nope"},
		"config, no topic":   {DeadLetterTopicConfig: &replog.TopicConfig{}},
		"bad dead config":    {DeadLetterTopic: "nope", DeadLetterTopicConfig: &replog.TopicConfig{Partitions: -1}},
	} {
		_, err := replog.NewShareConsumer(tp, "g", replog.String(), &o)
		require.Error(t, err, name)
		require.True(t, errors.Is(err, replog.ErrInvalidConfig) || errors.Is(err, replog.ErrPartitionNotFound) ||
			errors.Is(err, replog.ErrTopicNotFound), "%s: %v", name, err)
	}
	_, err = l.Topic("nope")
	require.ErrorIs(t, err, replog.ErrTopicNotFound, "nothing created by a refused consumer")
	// With a config, the dead-letter topic is created.
	dc := newShare(t, tp, "g", &replog.ShareConsumerOptions{DeadLetterTopic: "jobs.dead",
		DeadLetterTopicConfig: &replog.TopicConfig{Partitions: 2}})
	require.NoError(t, dc.Close())
	dead, err := l.Topic("jobs.dead")
	require.NoError(t, err)
	require.Equal(t, 2, dead.Partitions())
	_, err = replog.NewShareConsumer(tp, "", replog.String(), nil)
	require.ErrorIs(t, err, replog.ErrInvalidConfig)
	_, err = replog.NewShareConsumer[string](tp, "g", nil, nil)
	require.ErrorIs(t, err, replog.ErrInvalidConfig)
	var zero replog.ShareRecord[string]
	require.ErrorIs(t, zero.Ack(ctx), replog.ErrInvalidConfig)

	// A context done before the call does nothing: the record is still
	// held and can be accepted.
	produceStrings(t, ctx, tp, 1, "job")
	c := newShare(t, tp, "g", nil)
	recs := pollWithin(t, c, 5*time.Second)
	require.Len(t, recs, 1)
	done, cancel := context.WithCancel(ctx)
	cancel()
	require.ErrorIs(t, recs[0].Ack(done), context.Canceled)
	_, err = c.Poll(done)
	require.ErrorIs(t, err, context.Canceled)
	require.NoError(t, recs[0].Ack(ctx))
	require.ErrorIs(t, recs[0].Ack(ctx), replog.ErrAlreadyAcknowledged)
	require.ErrorIs(t, recs[0].Reject(ctx), replog.ErrAlreadyAcknowledged)
}

// TestShareReadCommitted: a read-committed share member gets no record of
// an open transaction until it commits, nor of an aborted one, ever; a
// read-uncommitted member of another group gets them all.
func TestShareReadCommitted(t *testing.T) {
	ctx := testCtx(t)
	l, topics := openTxnLog(t, ctx, map[string]int{"jobs": 1})
	tp := topics["jobs"]
	plain, err := replog.NewProducer(tp, replog.String(), nil)
	require.NoError(t, err)
	defer plain.Close()
	s, err := l.NewTransactionalProducer(ctx, "share-rc", nil)
	require.NoError(t, err)
	defer s.Close()
	p := joined(t, tp, s)

	_, err = plain.Produce(ctx, replog.Message[string]{Value: "plain-0"})
	require.NoError(t, err)
	require.NoError(t, s.Begin())
	_, err = p.Produce(ctx, replog.Message[string]{Value: "aborted"})
	require.NoError(t, err)
	require.NoError(t, s.Abort(ctx))
	require.NoError(t, s.Begin())
	_, err = p.Produce(ctx, replog.Message[string]{Value: "committed"})
	require.NoError(t, err)
	// Open: a plain record after it waits behind it too.
	_, err = plain.Produce(ctx, replog.Message[string]{Value: "plain-1"})
	require.NoError(t, err)

	values := func(c *replog.ShareConsumer[string], want int) []string {
		t.Helper()
		var out []string
		for len(out) < want {
			recs, err := c.Poll(ctx)
			require.NoError(t, err)
			for _, r := range recs {
				out = append(out, r.Value)
				require.NoError(t, r.Ack(ctx))
			}
		}
		return out
	}
	rc := newShare(t, tp, "rc", &replog.ShareConsumerOptions{Isolation: replog.ReadCommitted})
	require.Equal(t, []string{"plain-0"}, values(rc, 1))
	require.Empty(t, pollWithin(t, rc, 300*time.Millisecond), "the open transaction holds the rest back")
	ru := newShare(t, tp, "ru", nil)
	require.Equal(t, []string{"plain-0", "aborted", "committed", "plain-1"}, values(ru, 4))

	require.NoError(t, s.Commit(ctx))
	require.Equal(t, []string{"committed", "plain-1"}, values(rc, 2))
	require.Empty(t, pollWithin(t, rc, 200*time.Millisecond))
	info, err := l.DescribeShareGroup(ctx, "rc")
	require.NoError(t, err)
	hw, err := tp.Offsets(ctx, 0)
	require.NoError(t, err)
	require.Equal(t, hw.HighWatermark, info.Partitions[0].Start, "markers and the aborted record are done")

	_, err = replog.NewShareConsumer(tp, "bad", replog.String(), &replog.ShareConsumerOptions{Isolation: 7})
	require.ErrorIs(t, err, replog.ErrInvalidConfig)
}
