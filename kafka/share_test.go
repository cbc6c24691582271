package replogkafka_test

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/replog/replog"
)

// shareEarliest starts share group group at the log start of topic, as
// share.auto.offset.reset=earliest would.
func shareEarliest(t *testing.T, ctx context.Context, l *replog.Log, group, topic string) {
	t.Helper()
	require.NoError(t, l.ResetShareGroup(ctx, group, replog.OffsetReset{Topic: topic, Start: replog.Earliest}))
}

// TestKafkaShareGroup: franz-go share consumers of one group read two
// partitions together; records released are delivered again with a higher
// delivery count, rejected ones never again, and every record is accepted.
func TestKafkaShareGroup(t *testing.T) {
	l, srv := groupNode(t)
	ctx := testCtx(t)
	admin := newClient(t, srv, manualPartitioner())
	createTopics(t, ctx, admin, 2, "jobs")
	shareEarliest(t, ctx, l, "workers", "jobs")
	const n = 150
	var recs []*kgo.Record
	for i := range 2 * n {
		recs = append(recs, &kgo.Record{Topic: "jobs", Partition: int32(i % 2), Key: []byte(strconv.Itoa(i))})
	}
	require.NoError(t, admin.ProduceSync(ctx, recs...).FirstErr())

	var mu sync.Mutex
	accepted := map[int]int{}
	released := map[int]bool{}
	rejected := map[int]bool{}
	maxDC := int32(0)
	var wg sync.WaitGroup
	cctx, cancel := context.WithCancel(ctx)
	for c := range 3 {
		cl := newClient(t, srv, kgo.ConsumeTopics("jobs"), kgo.ShareGroup("workers"), kgo.FetchMaxWait(200*time.Millisecond))
		wg.Add(1)
		go func() {
			defer wg.Done()
			for cctx.Err() == nil {
				fs := cl.PollRecords(cctx, 20)
				for _, r := range fs.Records() {
					k, err := strconv.Atoi(string(r.Key))
					require.NoError(t, err)
					mu.Lock()
					maxDC = max(maxDC, r.DeliveryCount())
					switch {
					case k%10 == 0 && !released[k]:
						released[k] = true
						r.Ack(kgo.AckRelease)
					case k%25 == 1:
						require.False(t, rejected[k], "record %d delivered after it was rejected", k)
						rejected[k] = true
						r.Ack(kgo.AckReject)
					default:
						accepted[k]++
						r.Ack(kgo.AckAccept)
					}
					mu.Unlock()
				}
				if err := cl.FlushAcks(cctx); err != nil && cctx.Err() == nil {
					t.Errorf("consumer %d: flush acks: %v", c, err)
				}
			}
		}()
	}
	for {
		mu.Lock()
		done := len(accepted)+len(rejected) == 2*n
		mu.Unlock()
		if done {
			break
		}
		require.NoError(t, ctx.Err(), "every record accepted or rejected")
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	wg.Wait()
	for k, c := range accepted {
		require.Equal(t, 1, c, "record %d accepted %d times", k, c)
	}
	require.GreaterOrEqual(t, maxDC, int32(2), "released records come back with their delivery count")

	info, err := l.DescribeShareGroup(ctx, "workers")
	require.NoError(t, err)
	for _, p := range info.Partitions {
		require.Equal(t, int64(n), p.Start, "%+v", p)
	}
}

// TestKafkaShareGroupWithGoMember: a Go share consumer and a franz-go one
// in the same group split the records between them.
func TestKafkaShareGroupWithGoMember(t *testing.T) {
	l, srv := groupNode(t)
	ctx := testCtx(t)
	admin := newClient(t, srv)
	createTopics(t, ctx, admin, 1, "mixed")
	shareEarliest(t, ctx, l, "both", "mixed")
	produce(t, ctx, admin, "mixed", 1, 400)

	topic, err := l.Topic("mixed")
	require.NoError(t, err)
	gm, err := replog.NewShareConsumer(topic, "both", replog.Bytes(), &replog.ShareConsumerOptions{MaxRecords: 10})
	require.NoError(t, err)
	defer gm.Close()
	cl := newClient(t, srv, kgo.ConsumeTopics("mixed"), kgo.ShareGroup("both"), kgo.FetchMaxWait(100*time.Millisecond))

	var mu sync.Mutex
	seen := map[string]string{}
	note := func(who, v string) {
		mu.Lock()
		defer mu.Unlock()
		require.Empty(t, seen[v], "%s accepted by %s and %s", v, seen[v], who)
		seen[v] = who
	}
	count := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(seen)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for count() < 400 && ctx.Err() == nil {
			pctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
			recs, _ := gm.Poll(pctx)
			cancel()
			for _, r := range recs {
				require.NoError(t, r.Ack(ctx))
				note("go", string(r.Value))
			}
		}
	}()
	for count() < 400 && ctx.Err() == nil {
		pctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
		fs := cl.PollRecords(pctx, 10)
		cancel()
		for _, r := range fs.Records() {
			r.Ack(kgo.AckAccept)
			note("kafka", string(r.Value))
		}
		require.NoError(t, cl.FlushAcks(ctx))
	}
	<-done
	require.Equal(t, 400, count())
	by := map[string]int{}
	for _, who := range seen {
		by[who]++
	}
	require.Positive(t, by["go"], "%v", by)
	require.Positive(t, by["kafka"], "%v", by)
}

// TestKafkaShareCloseReleases: records a franz-go member holds go to the
// next member at once when it closes, without waiting for their locks.
func TestKafkaShareCloseReleases(t *testing.T) {
	l, srv := groupNode(t)
	ctx := testCtx(t)
	admin := newClient(t, srv)
	createTopics(t, ctx, admin, 1, "held")
	shareEarliest(t, ctx, l, "g", "held")
	produce(t, ctx, admin, "held", 1, 20)

	first, err := kgo.NewClient(kgo.SeedBrokers(srv.Addr().String()), kgo.ConsumeTopics("held"), kgo.ShareGroup("g"))
	require.NoError(t, err)
	var got int
	for got == 0 {
		got = len(first.PollFetches(ctx).Records())
		require.NoError(t, ctx.Err())
	}
	first.Close() // holds got records, unacknowledged

	second := newClient(t, srv, kgo.ConsumeTopics("held"), kgo.ShareGroup("g"))
	start := time.Now()
	seen := map[string]int32{}
	for len(seen) < 20 {
		for _, r := range second.PollFetches(ctx).Records() {
			seen[string(r.Value)] = r.DeliveryCount()
			r.Ack(kgo.AckAccept)
		}
		require.NoError(t, ctx.Err())
	}
	require.Less(t, time.Since(start), 20*time.Second, "released at close, not after the 30s lock")
	redelivered := 0
	for _, dc := range seen {
		if dc > 1 {
			redelivered++
		}
	}
	require.Equal(t, got, redelivered)
}

// heartbeat sends a ShareGroupHeartbeat.
func heartbeat(t *testing.T, ctx context.Context, cl *kgo.Client, group, member string, epoch int32, topics ...string) *kmsg.ShareGroupHeartbeatResponse {
	t.Helper()
	req := kmsg.NewPtrShareGroupHeartbeatRequest()
	req.GroupID, req.MemberID, req.MemberEpoch = group, member, epoch
	req.SubscribedTopicNames = topics
	resp, err := req.RequestWith(ctx, cl)
	require.NoError(t, err)
	return resp
}

// TestKafkaShareGroupHeartbeat: joining gets every partition of the topics
// subscribed; a stale epoch is fenced, an unknown member told so; a topic
// created later is assigned at the next heartbeat; describe lists members.
func TestKafkaShareGroupHeartbeat(t *testing.T) {
	_, srv := groupNode(t)
	ctx := testCtx(t)
	cl := newClient(t, srv)
	createTopics(t, ctx, cl, 3, "a")

	resp := heartbeat(t, ctx, cl, "hb", "m1", 0, "a", "b")
	require.Zero(t, resp.ErrorCode)
	require.NotNil(t, resp.Assignment)
	require.Len(t, resp.Assignment.TopicPartitions, 1)
	require.Equal(t, []int32{0, 1, 2}, resp.Assignment.TopicPartitions[0].Partitions)
	e1 := resp.MemberEpoch
	require.Positive(t, e1)

	resp = heartbeat(t, ctx, cl, "hb", "m1", e1)
	require.Zero(t, resp.ErrorCode)
	require.Nil(t, resp.Assignment, "unchanged")
	require.Equal(t, kerr.FencedMemberEpoch.Code, heartbeat(t, ctx, cl, "hb", "m1", e1+5).ErrorCode)
	require.Equal(t, kerr.UnknownMemberID.Code, heartbeat(t, ctx, cl, "hb", "m2", 3).ErrorCode)
	require.Equal(t, kerr.InvalidRequest.Code, heartbeat(t, ctx, cl, "hb", "m2", 0).ErrorCode, "joining subscribes")
	require.Equal(t, kerr.InvalidRequest.Code, heartbeat(t, ctx, cl, "hb", "", 0, "a").ErrorCode)

	createTopics(t, ctx, cl, 1, "b")
	resp = heartbeat(t, ctx, cl, "hb", "m1", e1)
	require.Zero(t, resp.ErrorCode)
	require.NotNil(t, resp.Assignment)
	require.Len(t, resp.Assignment.TopicPartitions, 2)
	require.Greater(t, resp.MemberEpoch, e1)

	require.Zero(t, heartbeat(t, ctx, cl, "hb", "m2", 0, "b").ErrorCode)
	dreq := kmsg.NewPtrShareGroupDescribeRequest()
	dreq.GroupIDs = []string{"hb", "nope"}
	dresp, err := dreq.RequestWith(ctx, cl)
	require.NoError(t, err)
	require.Len(t, dresp.Groups, 2)
	g := dresp.Groups[0]
	require.Zero(t, g.ErrorCode)
	require.Equal(t, "Stable", g.GroupState)
	require.Len(t, g.Members, 2)
	require.Equal(t, "m1", g.Members[0].MemberID)
	require.Equal(t, []string{"a", "b"}, g.Members[0].SubscribedTopicNames)
	require.Equal(t, kerr.GroupIDNotFound.Code, dresp.Groups[1].ErrorCode)

	require.Equal(t, int32(-1), heartbeat(t, ctx, cl, "hb", "m1", -1).MemberEpoch)
	require.Equal(t, kerr.UnknownMemberID.Code, heartbeat(t, ctx, cl, "hb", "m1", e1).ErrorCode)
}

// shareFetchReq is a ShareFetch of one partition.
func shareFetchReq(group, member string, epoch int32, id [16]byte, acks ...kmsg.ShareFetchRequestTopicPartitionAcknowledgementBatch) *kmsg.ShareFetchRequest {
	req := kmsg.NewPtrShareFetchRequest()
	req.GroupID, req.MemberID, req.ShareSessionEpoch = kmsg.StringPtr(group), kmsg.StringPtr(member), epoch
	req.MaxWaitMillis, req.MaxRecords = 50, 100
	rt := kmsg.NewShareFetchRequestTopic()
	rt.TopicID = id
	rp := kmsg.NewShareFetchRequestTopicPartition()
	rp.AcknowledgementBatches = acks
	rt.Partitions = append(rt.Partitions, rp)
	req.Topics = append(req.Topics, rt)
	return req
}

func ackBatch(first, last int64, types ...int8) kmsg.ShareFetchRequestTopicPartitionAcknowledgementBatch {
	return kmsg.ShareFetchRequestTopicPartitionAcknowledgementBatch{FirstOffset: first, LastOffset: last, AcknowledgeTypes: types}
}

// TestKafkaShareSessions: the session epochs and acknowledgements a client
// can get wrong are answered with Kafka's errors, and change nothing.
func TestKafkaShareSessions(t *testing.T) {
	l, srv := groupNode(t)
	ctx := testCtx(t)
	cl := newClient(t, srv)
	createTopics(t, ctx, cl, 1, "s")
	shareEarliest(t, ctx, l, "g", "s")
	produce(t, ctx, cl, "s", 1, 10)
	mresp, err := kmsg.NewPtrMetadataRequest().RequestWith(ctx, cl)
	require.NoError(t, err)
	var id [16]byte
	for _, mt := range mresp.Topics {
		if *mt.Topic == "s" {
			id = mt.TopicID
		}
	}
	fetch := func(req *kmsg.ShareFetchRequest) *kmsg.ShareFetchResponse {
		t.Helper()
		resp, err := req.RequestWith(ctx, cl)
		require.NoError(t, err)
		return resp
	}
	require.Equal(t, kerr.ShareSessionNotFound.Code, fetch(shareFetchReq("g", "m", 1, id)).ErrorCode)
	require.Equal(t, kerr.InvalidRequest.Code, fetch(shareFetchReq("g", "m", 0, id, ackBatch(0, 0, 1))).ErrorCode)

	resp := fetch(shareFetchReq("g", "m", 0, id))
	require.Zero(t, resp.ErrorCode)
	require.Equal(t, int32(30000), resp.AcquisitionLockTimeoutMillis)
	require.Len(t, resp.Topics, 1)
	p := resp.Topics[0].Partitions[0]
	require.Equal(t, []kmsg.ShareFetchResponseTopicPartitionAcquiredRecord{{FirstOffset: 0, LastOffset: 9, DeliveryCount: 1}}, p.AcquiredRecords)
	require.NotEmpty(t, p.Records)

	require.Equal(t, kerr.InvalidShareSessionEpoch.Code, fetch(shareFetchReq("g", "m", 5, id)).ErrorCode)
	epoch := int32(1)
	// Out of order batches, a bad type, a type per offset of the wrong
	// count: the partition's acknowledgements are refused, none applied.
	for _, bad := range [][]kmsg.ShareFetchRequestTopicPartitionAcknowledgementBatch{
		{ackBatch(3, 4, 1), ackBatch(0, 1, 1)},
		{ackBatch(0, 0, 9)},
		{ackBatch(0, 2, 1, 1)},
		{ackBatch(0, 0, 4)}, // renew without IsRenewAck
		{ackBatch(5, 2, 1)},
		{ackBatch(0, 300, 1), ackBatch(301, 500, 1)}, // more than could be held
	} {
		resp := fetch(shareFetchReq("g", "m", epoch, id, bad...))
		epoch++ // a request refused moves the session on too
		require.Zero(t, resp.ErrorCode)
		require.Equal(t, kerr.InvalidRequest.Code, resp.Topics[0].Partitions[0].AcknowledgeErrorCode, "%+v", bad)
	}
	info, err := l.DescribeShareGroup(ctx, "g")
	require.NoError(t, err)
	require.Equal(t, int64(0), info.Partitions[0].Start, "nothing accepted")

	// Another member cannot acknowledge what m holds; m accepts 0-4 and
	// releases 5 by types per offset; 5 comes back with count 2.
	require.Zero(t, fetch(shareFetchReq("g", "other", 0, id)).ErrorCode)
	resp = fetch(shareFetchReq("g", "other", 1, id, ackBatch(0, 1, 1)))
	require.Equal(t, kerr.InvalidRecordState.Code, resp.Topics[0].Partitions[0].AcknowledgeErrorCode)
	resp = fetch(shareFetchReq("g", "m", epoch, id, ackBatch(0, 5, 1, 0, 1, 1, 1, 2)))
	require.Equal(t, kerr.InvalidShareSessionEpoch.Code, fetch(shareFetchReq("g", "m", epoch, id, ackBatch(0, 5, 1))).ErrorCode,
		"a request sent again is refused")
	require.Zero(t, resp.Topics[0].Partitions[0].AcknowledgeErrorCode)
	require.Equal(t, []kmsg.ShareFetchResponseTopicPartitionAcquiredRecord{{FirstOffset: 5, LastOffset: 5, DeliveryCount: 2}},
		resp.Topics[0].Partitions[0].AcquiredRecords)
	info, err = l.DescribeShareGroup(ctx, "g")
	require.NoError(t, err)
	require.Equal(t, int64(5), info.Partitions[0].Start)

	// Closing the session, accepting 9 on the way, releases what m
	// holds (5 to 8), for other at once.
	resp = fetch(shareFetchReq("g", "m", -1, id, ackBatch(9, 9, 1)))
	require.Zero(t, resp.ErrorCode)
	require.Len(t, resp.Topics, 1, "the acknowledgement's outcome is answered")
	require.Zero(t, resp.Topics[0].Partitions[0].AcknowledgeErrorCode)
	require.Empty(t, resp.Topics[0].Partitions[0].AcquiredRecords)
	resp = fetch(shareFetchReq("g", "other", 2, id))
	require.Equal(t, fmt.Sprint([]kmsg.ShareFetchResponseTopicPartitionAcquiredRecord{{FirstOffset: 5, LastOffset: 5, DeliveryCount: 3}, {FirstOffset: 6, LastOffset: 8, DeliveryCount: 2}}),
		fmt.Sprint(resp.Topics[0].Partitions[0].AcquiredRecords))

	// other opens a session again (its client reset it): what it held
	// in the old one comes back to it at once.
	resp = fetch(shareFetchReq("g", "other", 0, id))
	require.Equal(t, fmt.Sprint([]kmsg.ShareFetchResponseTopicPartitionAcquiredRecord{{FirstOffset: 5, LastOffset: 5, DeliveryCount: 4}, {FirstOffset: 6, LastOffset: 8, DeliveryCount: 3}}),
		fmt.Sprint(resp.Topics[0].Partitions[0].AcquiredRecords))

	// ShareAcknowledge: needs a session; acknowledges per partition.
	areq := kmsg.NewPtrShareAcknowledgeRequest()
	areq.GroupID, areq.MemberID, areq.ShareSessionEpoch = kmsg.StringPtr("g"), kmsg.StringPtr("other"), 0
	aresp, err := areq.RequestWith(ctx, cl)
	require.NoError(t, err)
	require.Equal(t, kerr.InvalidShareSessionEpoch.Code, aresp.ErrorCode)
	areq.ShareSessionEpoch = 1
	rt := kmsg.NewShareAcknowledgeRequestTopic()
	rt.TopicID = id
	rt.Partitions = []kmsg.ShareAcknowledgeRequestTopicPartition{{Partition: 0, AcknowledgementBatches: []kmsg.ShareAcknowledgeRequestTopicPartitionAcknowledgementBatch{
		{FirstOffset: 5, LastOffset: 8, AcknowledgeTypes: []int8{1}}}}}
	areq.Topics = append(areq.Topics, rt)
	aresp, err = areq.RequestWith(ctx, cl)
	require.NoError(t, err)
	require.Zero(t, aresp.ErrorCode)
	require.Zero(t, aresp.Topics[0].Partitions[0].ErrorCode)
	info, err = l.DescribeShareGroup(ctx, "g")
	require.NoError(t, err)
	require.Equal(t, int64(10), info.Partitions[0].Start, "everything done")
}

// TestClusterShareGroup: franz-go share members bootstrapped from
// different nodes of a 3-node cluster read a 3-replica topic together
// while the group coordinator crashes: they find the new one and join
// there, and every record is accepted, none lost.
func TestClusterShareGroup(t *testing.T) {
	kc := newKafkaCluster(t, 3)
	kc.createTopic("t")
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	shareEarliest(t, ctx, kc.c.Log(0), "g", "t")
	prod, err := kgo.NewClient(kgo.SeedBrokers(kc.addrs...), kgo.DefaultProduceTopic("t"))
	require.NoError(t, err)
	defer prod.Close()
	const n = 300
	produceN := func(from, to int) {
		var recs []*kgo.Record
		for i := from; i < to; i++ {
			recs = append(recs, kgo.StringRecord(strconv.Itoa(i)))
		}
		require.NoError(t, prod.ProduceSync(ctx, recs...).FirstErr())
	}
	produceN(0, n/2)

	var mu sync.Mutex
	accepted := map[string]int{}
	var wg sync.WaitGroup
	cctx, stop := context.WithCancel(ctx)
	defer stop()
	for i := range 2 {
		cl, err := kgo.NewClient(kgo.SeedBrokers(kc.addrs[i]), kgo.ConsumeTopics("t"), kgo.ShareGroup("g"),
			kgo.FetchMaxWait(200*time.Millisecond), kgo.MetadataMinAge(50*time.Millisecond),
			kgo.RetryBackoffFn(func(int) time.Duration { return 50 * time.Millisecond }))
		require.NoError(t, err)
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer cl.Close()
			for cctx.Err() == nil {
				for _, r := range cl.PollRecords(cctx, 25).Records() {
					r.Ack(kgo.AckAccept)
					mu.Lock()
					accepted[string(r.Value)]++
					mu.Unlock()
				}
				actx, cancel := context.WithTimeout(cctx, 5*time.Second)
				_ = cl.FlushAcks(actx) // a crash fails some; their records come back
				cancel()
			}
		}()
	}
	count := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(accepted)
	}
	kc.eventually(func() bool { return count() >= n/4 }, "members accepting")
	req := kmsg.NewPtrFindCoordinatorRequest()
	req.Version, req.CoordinatorKey = 2, "g"
	resp := kmsg.NewPtrFindCoordinatorResponse()
	kc.request(0, req, resp)
	require.Zero(t, resp.ErrorCode)
	kc.crash(int(resp.NodeID) - 1)
	produceN(n/2, n)
	deadline := time.Now().Add(45 * time.Second)
	for count() < n {
		require.True(t, time.Now().Before(deadline), "accepted %d of %d", count(), n)
		time.Sleep(50 * time.Millisecond)
	}
	stop()
	wg.Wait()
}
