package replogkafka_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/kversion"

	"github.com/replog/replog"
	replogkafka "github.com/replog/replog/kafka"
)

// groupNode is a single durable node with a listener, as a user runs it.
func groupNode(t *testing.T) (*replog.Log, *replogkafka.Server) {
	t.Helper()
	l, err := replog.Open(t.TempDir(), nil)
	require.NoError(t, err)
	t.Cleanup(func() { l.Close() })
	return l, listen(t, l, nil)
}

// groupMember is a franz-go consumer group member that records the
// partitions it is assigned.
type groupMember struct {
	cl       *kgo.Client
	mu       sync.Mutex
	assigned map[string][]int32
}

func (m *groupMember) partitions() map[string][]int32 {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := map[string][]int32{}
	for t, ps := range m.assigned {
		out[t] = slices.Sorted(slices.Values(ps))
	}
	return out
}

func (m *groupMember) count() int {
	n := 0
	for _, ps := range m.partitions() {
		n += len(ps)
	}
	return n
}

// newMember starts a member of group consuming topics, from the start
// when nothing was committed, with timeouts short enough for tests.
func newMember(t *testing.T, srv *replogkafka.Server, group string, topics []string, opts ...kgo.Opt) *groupMember {
	t.Helper()
	m := &groupMember{assigned: map[string][]int32{}}
	m.cl = newClient(t, srv, append([]kgo.Opt{
		kgo.ConsumerGroup(group), kgo.ConsumeTopics(topics...),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.SessionTimeout(6 * time.Second), kgo.HeartbeatInterval(200 * time.Millisecond),
		kgo.RebalanceTimeout(10 * time.Second), kgo.FetchMaxWait(200 * time.Millisecond),
		kgo.OnPartitionsAssigned(func(_ context.Context, _ *kgo.Client, a map[string][]int32) {
			m.mu.Lock()
			defer m.mu.Unlock()
			for t, ps := range a {
				m.assigned[t] = append(m.assigned[t], ps...)
			}
		}),
		kgo.OnPartitionsRevoked(func(ctx context.Context, cl *kgo.Client, r map[string][]int32) {
			m.mu.Lock()
			for t, ps := range r {
				m.assigned[t] = slices.DeleteFunc(m.assigned[t], func(p int32) bool { return slices.Contains(ps, p) })
			}
			m.mu.Unlock()
		}),
		kgo.OnPartitionsLost(func(ctx context.Context, cl *kgo.Client, r map[string][]int32) {
			m.mu.Lock()
			for t, ps := range r {
				m.assigned[t] = slices.DeleteFunc(m.assigned[t], func(p int32) bool { return slices.Contains(ps, p) })
			}
			m.mu.Unlock()
		}),
	}, opts...)...)
	return m
}

// eventually polls cond (and every member, so that they take part in
// rebalances) until it holds.
func eventually(t *testing.T, ctx context.Context, what string, cond func() bool, members ...*groupMember) {
	t.Helper()
	for !cond() {
		if ctx.Err() != nil {
			t.Fatalf("timed out waiting for %s", what)
		}
		for _, m := range members {
			pctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
			m.cl.PollFetches(pctx)
			cancel()
		}
	}
}

func createTopics(t *testing.T, ctx context.Context, cl *kgo.Client, partitions int32, topics ...string) {
	t.Helper()
	resp, err := kadm.NewClient(cl).CreateTopics(ctx, partitions, -1, nil, topics...)
	require.NoError(t, err)
	require.NoError(t, resp.Error())
}

// produce writes n records to each partition of topic, values
// "topic/partition/i".
func produce(t *testing.T, ctx context.Context, cl *kgo.Client, topic string, partitions int32, n int) {
	t.Helper()
	var recs []*kgo.Record
	for p := range partitions {
		for i := range n {
			recs = append(recs, &kgo.Record{Topic: topic, Partition: p, Value: fmt.Appendf(nil, "%s/%d/%d", topic, p, i)})
		}
	}
	require.NoError(t, cl.ProduceSync(ctx, recs...).FirstErr())
}

func manualPartitioner() kgo.Opt { return kgo.RecordPartitioner(kgo.ManualPartitioner()) }

// Two members split four partitions, and every record is read once.
func TestKafkaGroupSplitsPartitions(t *testing.T) {
	_, srv := groupNode(t)
	ctx := testCtx(t)
	prod := newClient(t, srv, manualPartitioner())
	createTopics(t, ctx, prod, 4, "orders")

	a := newMember(t, srv, "g", []string{"orders"})
	b := newMember(t, srv, "g", []string{"orders"})
	eventually(t, ctx, "two partitions each", func() bool { return a.count() == 2 && b.count() == 2 }, a, b)
	require.ElementsMatch(t, []int32{0, 1, 2, 3}, append(a.partitions()["orders"], b.partitions()["orders"]...))

	produce(t, ctx, prod, "orders", 4, 25)
	seen := map[string]int{}
	byMember := map[*groupMember]int{}
	eventually(t, ctx, "100 records", func() bool {
		for _, m := range []*groupMember{a, b} {
			pctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
			fs := m.cl.PollFetches(pctx)
			cancel()
			for _, r := range fs.Records() {
				seen[string(r.Value)]++
				byMember[m]++
				require.Contains(t, m.partitions()["orders"], r.Partition, "a record of a partition not assigned to its reader")
			}
		}
		return len(seen) >= 100
	})
	for v, n := range seen {
		require.Equal(t, 1, n, "record %s read %d times", v, n)
	}
	require.Len(t, seen, 100)
	require.Equal(t, 50, byMember[a])
	require.Equal(t, 50, byMember[b])
}

// pollN polls m until it read n records and returns them.
func pollN(t *testing.T, ctx context.Context, m *groupMember, n int) []*kgo.Record {
	t.Helper()
	var out []*kgo.Record
	for len(out) < n {
		require.NoError(t, ctx.Err(), "read %d records of %d", len(out), n)
		fs := m.cl.PollRecords(ctx, n-len(out))
		out = append(out, fs.Records()...)
	}
	return out
}

// A member commits, closes, and the next one resumes exactly after the
// committed offsets; replog's DescribeGroup shows them.
func TestKafkaGroupCommitResume(t *testing.T) {
	l, srv := groupNode(t)
	ctx := testCtx(t)
	prod := newClient(t, srv, manualPartitioner())
	createTopics(t, ctx, prod, 2, "events")
	produce(t, ctx, prod, "events", 2, 30)

	m := newMember(t, srv, "resume", []string{"events"}, kgo.DisableAutoCommit())
	first := pollN(t, ctx, m, 25)
	require.NoError(t, m.cl.CommitRecords(ctx, first...))
	next := map[int32]int64{0: 0, 1: 0}
	for _, r := range first {
		next[r.Partition] = max(next[r.Partition], r.Offset+1)
	}
	m.cl.Close()

	info, err := l.DescribeGroup(ctx, "resume")
	require.NoError(t, err)
	require.True(t, info.Kafka)
	for _, p := range info.Partitions {
		require.Equal(t, "events", p.Topic)
		require.Equal(t, next[int32(p.Partition)], p.Committed, "partition %d", p.Partition)
		require.Equal(t, int64(30), p.HighWatermark)
		require.Equal(t, 30-p.Committed, p.Lag)
	}

	m2 := newMember(t, srv, "resume", []string{"events"}, kgo.DisableAutoCommit())
	rest := pollN(t, ctx, m2, 60-25)
	firstSeen := map[int32]int64{}
	got := map[string]bool{}
	for _, r := range rest {
		if _, ok := firstSeen[r.Partition]; !ok {
			firstSeen[r.Partition] = r.Offset
		}
		got[string(r.Value)] = true
	}
	for p, off := range firstSeen {
		require.Equal(t, next[p], off, "partition %d resumed at %d, committed %d", p, off, next[p])
	}
	for _, r := range first {
		require.False(t, got[string(r.Value)], "%s read again after its commit", r.Value)
	}
	require.Len(t, got, 35)
}

// A member leaving hands its partitions to the other at once.
func TestKafkaGroupMemberLeaves(t *testing.T) {
	_, srv := groupNode(t)
	ctx := testCtx(t)
	prod := newClient(t, srv, manualPartitioner())
	createTopics(t, ctx, prod, 4, "jobs")

	a := newMember(t, srv, "leave", []string{"jobs"})
	b := newMember(t, srv, "leave", []string{"jobs"})
	eventually(t, ctx, "two partitions each", func() bool { return a.count() == 2 && b.count() == 2 }, a, b)
	start := time.Now()
	a.cl.Close() // LeaveGroup
	eventually(t, ctx, "b owns every partition", func() bool { return b.count() == 4 }, b)
	require.Less(t, time.Since(start), 6*time.Second, "the rebalance waited for the session to expire")

	produce(t, ctx, prod, "jobs", 4, 5)
	recs := pollN(t, ctx, b, 20)
	parts := map[int32]bool{}
	for _, r := range recs {
		parts[r.Partition] = true
	}
	require.Len(t, parts, 4)
}

// A group reads two topics; its offsets are kept by topic and partition.
func TestKafkaGroupSpansTopics(t *testing.T) {
	l, srv := groupNode(t)
	ctx := testCtx(t)
	prod := newClient(t, srv, manualPartitioner())
	createTopics(t, ctx, prod, 2, "left", "right")
	produce(t, ctx, prod, "left", 2, 3)
	produce(t, ctx, prod, "right", 2, 4)

	m := newMember(t, srv, "both", []string{"left", "right"}, kgo.DisableAutoCommit())
	recs := pollN(t, ctx, m, 2*3+2*4)
	require.NoError(t, m.cl.CommitRecords(ctx, recs...))

	offs, err := kadm.NewClient(prod).FetchOffsets(ctx, "both")
	require.NoError(t, err)
	require.NoError(t, offs.Error())
	for _, tc := range []struct {
		topic string
		want  int64
	}{{"left", 3}, {"right", 4}} {
		for p := range int32(2) {
			o, ok := offs.Lookup(tc.topic, p)
			require.True(t, ok, "%s/%d", tc.topic, p)
			require.Equal(t, tc.want, o.At, "%s/%d", tc.topic, p)
		}
	}
	info, err := l.DescribeGroup(ctx, "both")
	require.NoError(t, err)
	require.True(t, info.Kafka)
	var got []string
	for _, p := range info.Partitions {
		got = append(got, fmt.Sprintf("%s/%d@%d", p.Topic, p.Partition, p.Committed))
	}
	require.Equal(t, []string{"left/0@3", "left/1@3", "right/0@4", "right/1@4"}, got)
	groups, err := l.ListGroups(ctx)
	require.NoError(t, err)
	require.Len(t, groups, 1)
	require.Equal(t, "both", groups[0].Name)
}

// kadm's group APIs see Kafka groups and replog groups alike, and the
// two kinds never share a name.
func TestKafkaGroupAdmin(t *testing.T) {
	l, srv := groupNode(t)
	ctx := testCtx(t)
	prod := newClient(t, srv, manualPartitioner())
	adm := kadm.NewClient(prod)
	createTopics(t, ctx, prod, 2, "t")
	produce(t, ctx, prod, "t", 2, 2)

	m := newMember(t, srv, "kg", []string{"t"}, kgo.DisableAutoCommit())
	recs := pollN(t, ctx, m, 4)
	require.NoError(t, m.cl.CommitRecords(ctx, recs...))

	// A replog consumer group next to it.
	topic, err := l.Topic("t")
	require.NoError(t, err)
	rc, err := replog.NewConsumer(topic, replog.Bytes(), &replog.ConsumerOptions{Group: "rg"})
	require.NoError(t, err)
	defer rc.Close()

	listed, err := adm.ListGroups(ctx)
	require.NoError(t, err)
	require.ElementsMatch(t, []string{"kg", "rg"}, listed.Groups())
	require.Equal(t, "Stable", listed["kg"].State)
	require.Equal(t, "consumer", listed["kg"].ProtocolType)

	described, err := adm.DescribeGroups(ctx, "kg", "rg")
	require.NoError(t, err)
	kg := described["kg"]
	require.NoError(t, kg.Err)
	require.Equal(t, "Stable", kg.State)
	require.Len(t, kg.Members, 1)
	ma, ok := kg.Members[0].Assigned.AsConsumer()
	require.True(t, ok)
	require.Len(t, ma.Topics, 1)
	require.ElementsMatch(t, []int32{0, 1}, ma.Topics[0].Partitions)
	require.Equal(t, "replog", described["rg"].ProtocolType)

	offs, err := adm.FetchOffsets(ctx, "kg")
	require.NoError(t, err)
	o, ok := offs.Lookup("t", 1)
	require.True(t, ok)
	require.Equal(t, int64(2), o.At)

	// Mixing kinds is refused, both ways.
	mixed := newClient(t, srv, kgo.ConsumerGroup("rg"), kgo.ConsumeTopics("t"))
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	var gerr error
	for gerr == nil && pctx.Err() == nil {
		mixed.PollFetches(pctx).EachError(func(_ string, _ int32, err error) {
			if errors.Is(err, kerr.InconsistentGroupProtocol) {
				gerr = err
			}
		})
	}
	cancel()
	require.ErrorIs(t, gerr, kerr.InconsistentGroupProtocol)
	mixed.Close()
	_, err = replog.NewConsumer(topic, replog.Bytes(), &replog.ConsumerOptions{Group: "kg"})
	require.ErrorIs(t, err, replog.ErrGroupKind)

	// A group with members is not deleted; an empty one is, offsets too.
	del, err := adm.DeleteGroups(ctx, "kg")
	require.NoError(t, err)
	require.ErrorIs(t, del["kg"].Err, kerr.NonEmptyGroup)
	m.cl.Close()
	del, err = adm.DeleteGroups(ctx, "kg")
	require.NoError(t, err)
	require.NoError(t, del["kg"].Err)
	_, err = l.DescribeGroup(ctx, "kg")
	require.ErrorIs(t, err, replog.ErrGroupNotFound)
	offs, err = adm.FetchOffsets(ctx, "kg")
	require.NoError(t, err)
	_, ok = offs.Lookup("t", 1)
	require.False(t, ok)
}

// The protocol's error semantics, with the versions sarama pinned to
// Kafka 1.0 sends (JoinGroup v2) and franz-go's newest (KIP-394).
func TestKafkaGroupProtocolErrors(t *testing.T) {
	_, srv := groupNode(t)
	ctx := testCtx(t)
	old := newClient(t, srv, kgo.MaxVersions(kversion.V1_0_0()))
	proto := func() []kmsg.JoinGroupRequestProtocol {
		p := kmsg.NewJoinGroupRequestProtocol()
		p.Name, p.Metadata = "range", []byte("meta")
		return []kmsg.JoinGroupRequestProtocol{p}
	}
	join := kmsg.NewPtrJoinGroupRequest()
	join.Group, join.SessionTimeoutMillis, join.RebalanceTimeoutMillis = "p", 6000, 6000
	join.ProtocolType, join.Protocols = "consumer", proto()
	jr, err := join.RequestWith(ctx, old)
	require.NoError(t, err)
	require.Equal(t, int16(2), jr.Version)
	require.Zero(t, jr.ErrorCode, "v2 gets its member id at once")
	require.Equal(t, int32(1), jr.Generation)
	require.Equal(t, jr.MemberID, jr.LeaderID)
	require.Len(t, jr.Members, 1)
	a := jr.MemberID

	sync := kmsg.NewPtrSyncGroupRequest()
	sync.Group, sync.Generation, sync.MemberID = "p", 1, a
	as := kmsg.NewSyncGroupRequestGroupAssignment()
	as.MemberID, as.MemberAssignment = a, []byte("mine")
	sync.GroupAssignment = append(sync.GroupAssignment, as)
	sr, err := sync.RequestWith(ctx, old)
	require.NoError(t, err)
	require.Zero(t, sr.ErrorCode)
	require.Equal(t, "mine", string(sr.MemberAssignment))

	hb := func(member string, gen int32) int16 {
		req := kmsg.NewPtrHeartbeatRequest()
		req.Group, req.MemberID, req.Generation = "p", member, gen
		resp, err := req.RequestWith(ctx, old)
		require.NoError(t, err)
		return resp.ErrorCode
	}
	require.Zero(t, hb(a, 1))
	require.Equal(t, kerr.IllegalGeneration.Code, hb(a, 7))
	require.Equal(t, kerr.UnknownMemberID.Code, hb("nobody", 1))

	// A new client joins: KIP-394 first, then a rebalance that a's
	// heartbeat learns of; the join completes once a joins again.
	cur := newClient(t, srv)
	join2 := kmsg.NewPtrJoinGroupRequest()
	join2.Group, join2.SessionTimeoutMillis, join2.RebalanceTimeoutMillis = "p", 6000, 6000
	join2.ProtocolType, join2.Protocols = "consumer", proto()
	jr2, err := join2.RequestWith(ctx, cur)
	require.NoError(t, err)
	require.Equal(t, kerr.MemberIDRequired.Code, jr2.ErrorCode)
	require.NotEmpty(t, jr2.MemberID)
	join2.MemberID = jr2.MemberID
	done := make(chan *kmsg.JoinGroupResponse, 1)
	go func() {
		r, _ := join2.RequestWith(ctx, cur)
		done <- r
	}()
	require.Eventually(t, func() bool { return hb(a, 1) == kerr.RebalanceInProgress.Code }, 5*time.Second, 10*time.Millisecond)
	sync.Generation = 1
	sr, err = sync.RequestWith(ctx, old)
	require.NoError(t, err)
	require.Equal(t, kerr.RebalanceInProgress.Code, sr.ErrorCode)
	join.MemberID = a
	jr, err = join.RequestWith(ctx, old)
	require.NoError(t, err)
	require.Zero(t, jr.ErrorCode)
	require.Equal(t, int32(2), jr.Generation)
	require.Equal(t, a, jr.LeaderID, "the leader stays")
	require.Len(t, jr.Members, 2)
	jr2 = <-done
	require.NotNil(t, jr2)
	require.Zero(t, jr2.ErrorCode)
	require.Equal(t, int32(2), jr2.Generation)
	require.Empty(t, jr2.Members, "only the leader gets the members")

	// A commit of the old generation is refused; unknown groups have no
	// offsets and are Dead.
	commit := kmsg.NewPtrOffsetCommitRequest()
	commit.Group, commit.Generation, commit.MemberID = "p", 1, a
	ct := kmsg.NewOffsetCommitRequestTopic()
	ct.Topic = "none"
	cp := kmsg.NewOffsetCommitRequestTopicPartition()
	ct.Partitions = append(ct.Partitions, cp)
	commit.Topics = append(commit.Topics, ct)
	cr, err := commit.RequestWith(ctx, cur)
	require.NoError(t, err)
	require.Equal(t, kerr.IllegalGeneration.Code, cr.Topics[0].Partitions[0].ErrorCode)
	described, err := kadm.NewClient(cur).DescribeGroups(ctx, "nope")
	require.NoError(t, err)
	require.Equal(t, "Dead", described["nope"].State)
}
