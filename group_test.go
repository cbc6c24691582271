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

func groupOpts(group string) *replog.ConsumerOptions {
	return &replog.ConsumerOptions{Group: group, GroupOptions: replog.GroupOptions{
		SessionTimeout: 2 * time.Second, HeartbeatInterval: 100 * time.Millisecond,
	}}
}

func produceStrings(t *testing.T, ctx context.Context, tp *replog.Topic, n int, prefix string) {
	t.Helper()
	p, err := replog.NewProducer(tp, replog.String(), nil)
	require.NoError(t, err)
	for i := range n {
		p.ProduceAsync(ctx, replog.Message[string]{Key: fmt.Appendf(nil, "k%d", i), Value: fmt.Sprintf("%s-%04d", prefix, i)}, nil)
	}
	require.NoError(t, p.Flush(ctx))
	require.NoError(t, p.Close())
}

// readN polls until n records arrived, and returns them.
func readN(t *testing.T, ctx context.Context, c *replog.Consumer[string], n int) []replog.Record[string] {
	t.Helper()
	var out []replog.Record[string]
	for len(out) < n {
		recs, err := c.Poll(ctx)
		require.NoError(t, err)
		out = append(out, recs...)
	}
	return out
}

// Fan-out: each group reads the whole topic; two members of one group split
// the partitions between them without overlap.
func TestGroupsFanOut(t *testing.T) {
	ctx := testCtx(t)
	l := openMem(t)
	tp, err := l.CreateTopic(ctx, "events", replog.TopicConfig{Partitions: 4})
	require.NoError(t, err)
	produceStrings(t, ctx, tp, 200, "e")

	for _, g := range []string{"billing", "audit"} {
		c, err := replog.NewConsumer(tp, replog.String(), groupOpts(g))
		require.NoError(t, err)
		recs := readN(t, ctx, c, 200)
		seen := map[string]bool{}
		for _, r := range recs {
			require.False(t, seen[r.Value], "group %s read %s twice", g, r.Value)
			seen[r.Value] = true
		}
		require.Len(t, seen, 200)
		require.NoError(t, c.Close())
	}

	// With auto-commit, a member commits before it gives a partition up,
	// so the member taking it over resumes there: each record once.
	ao := groupOpts("analytics")
	ao.AutoCommitInterval = 100 * time.Millisecond
	a, err := replog.NewConsumer(tp, replog.String(), ao)
	require.NoError(t, err)
	defer a.Close()
	b, err := replog.NewConsumer(tp, replog.String(), ao)
	require.NoError(t, err)
	defer b.Close()
	// Both members poll; the group settles at two partitions each.
	seen := map[string]int{}
	var mu sync.Mutex
	pollUntil := func(c *replog.Consumer[string], stop <-chan struct{}) {
		for {
			select {
			case <-stop:
				return
			default:
			}
			pctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
			recs, err := c.Poll(pctx)
			cancel()
			if err != nil && !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("poll: %v", err)
				return
			}
			mu.Lock()
			for _, r := range recs {
				seen[r.Value]++
			}
			mu.Unlock()
		}
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for _, c := range []*replog.Consumer[string]{a, b} {
		wg.Add(1)
		go func() { defer wg.Done(); pollUntil(c, stop) }()
	}
	require.Eventually(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(seen) == 200
	}, 15*time.Second, 20*time.Millisecond)
	require.Eventually(t, func() bool {
		return len(a.Assignment()) == 2 && len(b.Assignment()) == 2
	}, 10*time.Second, 20*time.Millisecond)
	close(stop)
	wg.Wait()
	require.Empty(t, intersect(a.Assignment(), b.Assignment()))
	for v, n := range seen {
		require.Equal(t, 1, n, "%s read %d times inside one group", v, n)
	}
}

func intersect(a, b []int) []int {
	var out []int
	for _, x := range a {
		if slices.Contains(b, x) {
			out = append(out, x)
		}
	}
	return out
}

// A member that commits and leaves hands its partitions over; the next
// member resumes after the last commit (at least once, nothing skipped).
func TestGroupResumesAfterCommit(t *testing.T) {
	ctx := testCtx(t)
	l := openMem(t)
	tp, err := l.CreateTopic(ctx, "t", replog.TopicConfig{Partitions: 2})
	require.NoError(t, err)
	produceStrings(t, ctx, tp, 100, "v")

	c1, err := replog.NewConsumer(tp, replog.String(), groupOpts("g"))
	require.NoError(t, err)
	first := readN(t, ctx, c1, 30)
	require.NoError(t, c1.Commit(ctx))
	committed := map[int]int64{}
	for _, r := range first {
		committed[r.Partition] = max(committed[r.Partition], r.Offset+1)
	}
	require.NoError(t, c1.Close())

	info, err := l.DescribeGroup(ctx, "g")
	require.NoError(t, err)
	require.Empty(t, info.Members)
	for _, p := range info.Partitions {
		if off, ok := committed[p.Partition]; ok {
			require.Equal(t, off, p.Committed)
			require.Equal(t, p.HighWatermark-off, p.Lag)
		}
	}

	c2, err := replog.NewConsumer(tp, replog.String(), groupOpts("g"))
	require.NoError(t, err)
	defer c2.Close()
	rest := readN(t, ctx, c2, 100-len(first))
	all := map[string]bool{}
	for _, r := range append(first, rest...) {
		require.False(t, all[r.Value], "%s twice: the second member resumed before the commit", r.Value)
		all[r.Value] = true
	}
	require.Len(t, all, 100)
}

// Cooperative-sticky: when a second member joins, the first keeps reading
// the partitions it keeps, and gives up only those that move.
func TestCooperativeRebalanceKeepsUnaffectedPartitions(t *testing.T) {
	ctx := testCtx(t)
	l := openMem(t)
	tp, err := l.CreateTopic(ctx, "t", replog.TopicConfig{Partitions: 4})
	require.NoError(t, err)
	var revoked [][]int
	o := groupOpts("g")
	o.OnRevoked = func(ps []int) { revoked = append(revoked, ps) }
	a, err := replog.NewConsumer(tp, replog.String(), o)
	require.NoError(t, err)
	defer a.Close()
	produceStrings(t, ctx, tp, 40, "x")
	readN(t, ctx, a, 40)
	require.Equal(t, []int{0, 1, 2, 3}, a.Assignment())

	b, err := replog.NewConsumer(tp, replog.String(), groupOpts("g"))
	require.NoError(t, err)
	defer b.Close()
	require.Eventually(t, func() bool { // a's Poll applies the rebalance
		pctx, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
		a.Poll(pctx)
		b.Poll(pctx)
		cancel()
		return len(b.Assignment()) == 2
	}, 10*time.Second, time.Millisecond)
	require.Len(t, revoked, 1, "one revocation of the moving partitions")
	require.Len(t, revoked[0], 2)
	kept := a.Assignment()
	require.Len(t, kept, 2)
	require.Empty(t, intersect(kept, revoked[0]), "kept partitions were never revoked")
	require.ElementsMatch(t, revoked[0], b.Assignment())
}

func TestStaticMemberKeepsPartitionsAcrossRestart(t *testing.T) {
	ctx := testCtx(t)
	l := openMem(t)
	tp, err := l.CreateTopic(ctx, "t", replog.TopicConfig{Partitions: 4})
	require.NoError(t, err)
	oa := groupOpts("g")
	oa.InstanceID = "worker-a"
	a, err := replog.NewConsumer(tp, replog.String(), oa)
	require.NoError(t, err)
	b, err := replog.NewConsumer(tp, replog.String(), groupOpts("g"))
	require.NoError(t, err)
	defer b.Close()
	require.Eventually(t, func() bool {
		pctx, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
		a.Poll(pctx)
		b.Poll(pctx)
		cancel()
		return len(a.Assignment()) == 2 && len(b.Assignment()) == 2
	}, 10*time.Second, time.Millisecond)
	before := a.Assignment()
	info, err := l.DescribeGroup(ctx, "g")
	require.NoError(t, err)
	gen := info.Generation
	require.NoError(t, a.Close())

	a2, err := replog.NewConsumer(tp, replog.String(), oa)
	require.NoError(t, err)
	defer a2.Close()
	require.Eventually(t, func() bool {
		pctx, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
		a2.Poll(pctx)
		cancel()
		return len(a2.Assignment()) == 2
	}, 10*time.Second, time.Millisecond)
	require.Equal(t, before, a2.Assignment())
	info, err = l.DescribeGroup(ctx, "g")
	require.NoError(t, err)
	require.Equal(t, gen, info.Generation, "a static member's restart causes no rebalance")
}

func TestGroupBadInputAndAdmin(t *testing.T) {
	ctx := testCtx(t)
	l := openMem(t)
	tp, err := l.CreateTopic(ctx, "t", replog.TopicConfig{Partitions: 2})
	require.NoError(t, err)
	produceStrings(t, ctx, tp, 10, "v")

	_, err = l.DescribeGroup(ctx, "nope")
	require.ErrorIs(t, err, replog.ErrGroupNotFound)
	bad := groupOpts("g")
	bad.Strategy = "zigzag"
	_, err = replog.NewConsumer(tp, replog.String(), bad)
	require.ErrorIs(t, err, replog.ErrInvalidConfig)
	_, err = replog.NewConsumer(tp, replog.String(), &replog.ConsumerOptions{Group: "g", Partitions: []int{0}})
	require.ErrorIs(t, err, replog.ErrInvalidConfig)
	bad = groupOpts("g")
	bad.MaxPollInterval = -time.Second
	_, err = replog.NewConsumer(tp, replog.String(), bad)
	require.ErrorIs(t, err, replog.ErrInvalidConfig)

	c, err := replog.NewConsumer(tp, replog.String(), groupOpts("g"))
	require.NoError(t, err)
	readN(t, ctx, c, 10)
	var oor *replog.OffsetOutOfRangeError
	require.True(t, errors.As(c.CommitOffsets(ctx, map[int]int64{0: 1 << 40}), &oor), "beyond the high watermark")
	require.ErrorIs(t, c.CommitOffsets(ctx, map[int]int64{7: 0}), replog.ErrNotAssigned)
	require.NoError(t, c.CommitOffsets(ctx, map[int]int64{0: 1}))
	require.ErrorIs(t, l.DeleteGroup(ctx, "g"), replog.ErrGroupNotEmpty)
	require.ErrorIs(t, l.ResetGroupOffsets(ctx, "g", replog.OffsetReset{}), replog.ErrGroupNotEmpty)

	noGroup, err := replog.NewConsumer(tp, replog.String(), nil)
	require.NoError(t, err)
	require.ErrorIs(t, noGroup.Commit(ctx), replog.ErrInvalidConfig)
	require.NoError(t, noGroup.Close())

	require.NoError(t, c.Close())
	_, err = c.Poll(ctx)
	require.ErrorIs(t, err, replog.ErrClosed)

	groups, err := l.ListGroups(ctx)
	require.NoError(t, err)
	require.Len(t, groups, 1)
	require.Equal(t, "g", groups[0].Name)
	require.Equal(t, "t", groups[0].Topic)

	require.NoError(t, l.ResetGroupOffsets(ctx, "g", replog.OffsetReset{Start: replog.Latest}))
	info, err := l.DescribeGroup(ctx, "g")
	require.NoError(t, err)
	for _, p := range info.Partitions {
		require.Equal(t, p.HighWatermark, p.Committed)
		require.Zero(t, p.Lag)
	}
	require.NoError(t, l.ResetGroupOffsets(ctx, "g", replog.OffsetReset{Offsets: map[int]int64{0: 0, 1: 0}}))
	c, err = replog.NewConsumer(tp, replog.String(), groupOpts("g"))
	require.NoError(t, err)
	require.Len(t, readN(t, ctx, c, 10), 10, "reset to 0 reads everything again")
	require.NoError(t, c.Close())
	require.NoError(t, l.DeleteGroup(ctx, "g"))
	_, err = l.DescribeGroup(ctx, "g")
	require.ErrorIs(t, err, replog.ErrGroupNotFound)
}

// A member that stops calling Poll for longer than MaxPollInterval leaves
// the group, as Kafka's consumer does, although its heartbeats could go on:
// the other member takes its partitions over and reads them; a Commit of the
// member that left fails; its next Poll joins again, with a fresh
// assignment, and the group rebalances between the two once more.
func TestGroupMemberLeavesAfterMaxPollInterval(t *testing.T) {
	ctx := testCtx(t)
	l := openMem(t)
	tp, err := l.CreateTopic(ctx, "t", replog.TopicConfig{Partitions: 2})
	require.NoError(t, err)
	produceStrings(t, ctx, tp, 100, "v")

	// Everything polls on the test goroutine, which runs the callbacks.
	var events []string
	record := func(what string) func([]int) {
		return func(ps []int) { events = append(events, fmt.Sprint(what, ps)) }
	}
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		for deadline := time.Now().Add(15 * time.Second); !cond(); {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting until %s", what)
			}
		}
	}
	o := groupOpts("g")
	o.MaxPollInterval = 400 * time.Millisecond
	o.MaxPollRecords = 5 // leave records read ahead but not handed out
	o1 := *o
	o1.OnAssigned, o1.OnRevoked = record("assigned"), record("revoked")
	c1, err := replog.NewConsumer(tp, replog.String(), &o1)
	require.NoError(t, err)
	defer c1.Close()
	c2, err := replog.NewConsumer(tp, replog.String(), o)
	require.NoError(t, err)
	defer c2.Close()

	seen2 := map[string]bool{}
	poll := func(c *replog.Consumer[string]) []replog.Record[string] {
		pctx, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
		defer cancel()
		recs, err := c.Poll(pctx)
		if !errors.Is(err, context.DeadlineExceeded) {
			require.NoError(t, err)
		}
		for _, r := range recs {
			require.Contains(t, c.Assignment(), r.Partition, "a record of a partition the member does not hold")
		}
		return recs
	}
	poll2 := func() {
		for _, r := range poll(c2) {
			seen2[r.Value] = true
		}
	}
	waitFor("the members share the partitions", func() bool {
		poll(c1)
		poll2()
		return len(c1.Assignment()) == 1 && len(c2.Assignment()) == 1
	})
	lost := c1.Assignment()[0]
	events = nil

	// c1 hangs: c2 gets both partitions and reads every record, including
	// those of c1's partition from its (absent) committed offset.
	waitFor("c2 reads both partitions", func() bool {
		poll2()
		return slices.Equal(c2.Assignment(), []int{0, 1}) && len(seen2) == 100
	})
	info, err := l.DescribeGroup(ctx, "g")
	require.NoError(t, err)
	require.Len(t, info.Members, 1, "the hung member left")
	gen := info.Generation
	require.Empty(t, c1.Assignment())
	require.ErrorIs(t, c1.Commit(ctx), replog.ErrUnknownMember, "a member that left commits nothing")

	// c1 polls again: it joins, and the group splits the partitions anew.
	// Its first records of a partition start at the committed offset (none:
	// the beginning), never at what it had read ahead before it left.
	first1 := map[int]int64{}
	waitFor("c1 is back and the members share the partitions again", func() bool {
		for _, r := range poll(c1) {
			if _, ok := first1[r.Partition]; !ok {
				first1[r.Partition] = r.Offset
			}
		}
		poll2()
		return len(c1.Assignment()) == 1 && len(c2.Assignment()) == 1
	})
	for p, off := range first1 {
		require.Zero(t, off, "partition %d resumed at %d, not at its committed offset", p, off)
	}
	require.Empty(t, intersect(c1.Assignment(), c2.Assignment()))
	info, err = l.DescribeGroup(ctx, "g")
	require.NoError(t, err)
	require.Len(t, info.Members, 2)
	require.Greater(t, info.Generation, gen)
	require.Equal(t, []string{fmt.Sprint("revoked", []int{lost}), fmt.Sprint("assigned", c1.Assignment())}, events,
		"OnRevoked for the partition it lost, then OnAssigned for its new one")
	require.NoError(t, c1.Commit(ctx), "a member that joined again commits")
}

// A member whose session expires (its node was cut off) has lost its
// partitions: another member took them over. When it is back, it joins
// again by itself, and its next Poll treats them as lost: OnRevoked runs
// for them, and a partition the group gives it again is read from the
// committed offset, never from its stale position while the other member
// may still read it.
func TestGroupMemberWhoseSessionExpiredLosesItsPartitions(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	c := replogtest.NewCluster(t, 3)
	tp, err := c.Log(0).CreateTopic(ctx, "t", replog.TopicConfig{Partitions: 2, Replicas: 3})
	require.NoError(t, err)
	produceStrings(t, ctx, tp, 100, "v")

	opts := func() *replog.ConsumerOptions {
		return &replog.ConsumerOptions{Group: "g", MaxPollRecords: 5, GroupOptions: replog.GroupOptions{
			SessionTimeout: 2 * time.Second, HeartbeatInterval: 200 * time.Millisecond,
		}}
	}
	var events []string // a's callbacks, on the test goroutine
	oa := opts()
	oa.OnAssigned = func(ps []int) { events = append(events, fmt.Sprint("assigned", ps)) }
	oa.OnRevoked = func(ps []int) { events = append(events, fmt.Sprint("revoked", ps)) }
	b, err := replog.NewConsumer(tp, replog.String(), opts())
	require.NoError(t, err)
	defer b.Close()
	t2, err := c.Log(2).Topic("t")
	require.NoError(t, err)
	a, err := replog.NewConsumer(t2, replog.String(), oa)
	require.NoError(t, err)
	defer a.Close()

	poll := func(cs *replog.Consumer[string]) []replog.Record[string] {
		pctx, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
		defer cancel()
		recs, err := cs.Poll(pctx)
		if !errors.Is(err, context.DeadlineExceeded) {
			require.NoError(t, err)
		}
		return recs
	}
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		for deadline := time.Now().Add(30 * time.Second); !cond(); {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting until %s", what)
			}
		}
	}
	// b joined first: cooperative-sticky gives a partition 1, and gives it
	// partition 1 again when a joins anew.
	var readA int
	waitFor("a reads partition 1", func() bool {
		readA += len(poll(a))
		poll(b)
		return slices.Equal(a.Assignment(), []int{1}) && slices.Equal(b.Assignment(), []int{0}) && readA > 0
	})
	events = nil

	c.Partition([]int{0, 1}, []int{2})
	waitFor("b takes partition 1 over", func() bool {
		poll(b)
		return slices.Equal(b.Assignment(), []int{0, 1})
	})
	c.Heal()
	// Until a's heartbeat tells it that its session expired, a Poll may
	// still hand out records it read ahead (no client can know sooner);
	// from the Poll that runs OnRevoked on, it reads afresh.
	first := map[int]int64{}
	waitFor("a is back with partition 1", func() bool {
		recs := poll(a)
		for _, r := range recs {
			if _, ok := first[r.Partition]; !ok && len(events) > 0 {
				first[r.Partition] = r.Offset
			}
		}
		poll(b)
		return slices.Equal(a.Assignment(), []int{1}) && slices.Equal(b.Assignment(), []int{0}) && len(first) > 0
	})
	require.Equal(t, []string{"revoked[1]", "assigned[1]"}, events, "a lost partition 1, then got it anew")
	require.Equal(t, map[int]int64{1: 0}, first, "a read partition 1 again from its committed offset (none)")
}

// A member giving partitions up commits them first, whatever its Poll's
// ctx: a Poll whose ctx is done gives nothing up (the next one does), and
// the commit is not cut short by the Poll's deadline, so the next owner
// starts where this member stopped. (A Poll whose ctx ended during the
// commit gave the partitions up uncommitted: the other member read again
// what this one had returned.)
func TestGroupRevokeCommitsWhateverPollCtx(t *testing.T) {
	ctx := testCtx(t)
	l := openMem(t)
	tp, err := l.CreateTopic(ctx, "t", replog.TopicConfig{Partitions: 2})
	require.NoError(t, err)
	produceStrings(t, ctx, tp, 20, "v")
	o := groupOpts("g")
	o.AutoCommitInterval = time.Hour // commits as partitions are revoked, and on Close
	a, err := replog.NewConsumer(tp, replog.String(), o)
	require.NoError(t, err)
	defer a.Close()
	read := readN(t, ctx, a, 20)

	b, err := replog.NewConsumer(tp, replog.String(), groupOpts("g"))
	require.NoError(t, err)
	defer b.Close()
	done, cancel := context.WithCancel(ctx)
	cancel()
	deadline := time.Now().Add(time.Second)
	for time.Now().Before(deadline) {
		_, _ = a.Poll(done)
		require.Len(t, a.Assignment(), 2, "a Poll whose ctx is done gives nothing up")
		bctx, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
		recs, _ := b.Poll(bctx)
		cancel()
		require.Empty(t, recs)
	}
	for len(b.Assignment()) == 0 {
		pctx, cancel := context.WithTimeout(ctx, 2*time.Millisecond) // ends during the commit
		_, _ = a.Poll(pctx)
		cancel()
		pctx, cancel = context.WithTimeout(ctx, 20*time.Millisecond)
		recs, _ := b.Poll(pctx)
		cancel()
		read = append(read, recs...)
		require.NoError(t, ctx.Err())
	}
	pctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	recs, _ := b.Poll(pctx)
	cancel()
	read = append(read, recs...)
	require.Len(t, read, 20, "b starts where a stopped")
}
