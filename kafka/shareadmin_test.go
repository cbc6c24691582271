package replogkafka_test

import (
	"testing"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/replog/replog"
)

// TestShareGroupOffsetsAdmin: as franz-go's test of the same name, and
// the errors around it: start offsets are set on an empty group, creating
// its state, described by topic or for all, and deleted; refused while a
// member holds a lock.
func TestShareGroupOffsetsAdmin(t *testing.T) {
	l := openLog(t)
	srv := listen(t, l, nil)
	cl := newClient(t, srv, manualPartitioner())
	adm := kadm.NewClient(cl)
	ctx := testCtx(t)
	createTopics(t, ctx, cl, 1, "t")
	produce(t, ctx, cl, "t", 1, 20)

	altered, err := adm.AlterShareGroupOffsets(ctx, "sg", kadm.Offsets{"t": {0: {At: 8}}})
	require.NoError(t, err)
	require.NoError(t, altered.Error())

	described, err := adm.DescribeShareGroupOffsets(ctx, "sg")
	require.NoError(t, err)
	require.NoError(t, described.Error())
	o := described["sg"].Offsets["t"][0]
	require.Equal(t, int64(8), o.StartOffset)
	require.Equal(t, int64(12), o.Lag)
	require.NotEqual(t, kadm.TopicID{}, o.TopicID)

	// Named partitions: one without state, and a topic that does not
	// exist, answer -1.
	req := kmsg.NewPtrDescribeShareGroupOffsetsRequest()
	rg := kmsg.NewDescribeShareGroupOffsetsRequestGroup()
	rg.GroupID = "sg"
	for _, name := range []string{"t", "missing"} {
		rt := kmsg.NewDescribeShareGroupOffsetsRequestGroupTopic()
		rt.Topic, rt.Partitions = name, []int32{0, 1}
		rg.Topics = append(rg.Topics, rt)
	}
	req.Groups = append(req.Groups, rg)
	resp, err := req.RequestWith(ctx, cl)
	require.NoError(t, err)
	require.Len(t, resp.Groups, 1)
	starts := map[string][]int64{}
	for _, rt := range resp.Groups[0].Topics {
		for _, rp := range rt.Partitions {
			starts[rt.Topic] = append(starts[rt.Topic], rp.StartOffset)
		}
	}
	require.Equal(t, map[string][]int64{"t": {8, -1}, "missing": {-1, -1}}, starts)

	// An unknown group has no state: no error, no topics.
	described, err = adm.DescribeShareGroupOffsets(ctx, "nobody")
	require.NoError(t, err)
	require.NoError(t, described.Error())
	require.Empty(t, described["nobody"].Offsets)

	altered, err = adm.AlterShareGroupOffsets(ctx, "sg", kadm.Offsets{"missing": {0: {At: 1}}, "t": {5: {At: 1}}})
	require.NoError(t, err)
	e, _ := altered.Lookup("missing", 0)
	require.ErrorIs(t, e, kerr.UnknownTopicOrPartition)
	e, _ = altered.Lookup("t", 5)
	require.ErrorIs(t, e, kerr.UnknownTopicOrPartition)

	// A member holding a record: the group is not empty.
	topic, err := l.Topic("t")
	require.NoError(t, err)
	sc, err := replog.NewShareConsumer(topic, "sg", replog.Bytes(), &replog.ShareConsumerOptions{MaxRecords: 1})
	require.NoError(t, err)
	defer sc.Close()
	recs, err := sc.Poll(ctx)
	require.NoError(t, err)
	require.Equal(t, int64(8), recs[0].Offset)
	_, err = adm.AlterShareGroupOffsets(ctx, "sg", kadm.Offsets{"t": {0: {At: 0}}})
	require.ErrorIs(t, err, kerr.NonEmptyGroup)
	_, err = adm.DeleteShareGroupOffsets(ctx, "sg", "t")
	require.ErrorIs(t, err, kerr.NonEmptyGroup)
	require.NoError(t, sc.AckAll(ctx, recs))

	deleted, err := adm.DeleteShareGroupOffsets(ctx, "sg", "t", "missing")
	require.NoError(t, err)
	require.NoError(t, deleted["t"])
	require.ErrorIs(t, deleted["missing"], kerr.UnknownTopicOrPartition)
	described, err = adm.DescribeShareGroupOffsets(ctx, "sg")
	require.NoError(t, err)
	require.Empty(t, described["sg"].Offsets)
	_, err = adm.DeleteShareGroupOffsets(ctx, "nobody", "t")
	require.ErrorIs(t, err, kerr.GroupIDNotFound)
	_, err = adm.DeleteShareGroupOffsets(ctx, "sg", "t")
	require.ErrorIs(t, err, kerr.GroupIDNotFound, "no state left")
}

// TestShareGroupsInGroupAPIs: ListGroups lists share groups with type
// "share" (filters honoured), DescribeGroups answers GROUP_ID_NOT_FOUND
// for one, DeleteGroups deletes one (state and configs) once no member
// holds a lock.
func TestShareGroupsInGroupAPIs(t *testing.T) {
	l := openLog(t)
	srv := listen(t, l, nil)
	cl := newClient(t, srv, manualPartitioner())
	adm := kadm.NewClient(cl)
	ctx := testCtx(t)
	createTopics(t, ctx, cl, 1, "t")
	produce(t, ctx, cl, "t", 1, 3)
	m := newMember(t, srv, "classic", []string{"t"})
	pollN(t, ctx, m, 3)

	topic, err := l.Topic("t")
	require.NoError(t, err)
	sc, err := replog.NewShareConsumer(topic, "sg", replog.Bytes(), &replog.ShareConsumerOptions{MaxRecords: 1})
	require.NoError(t, err)
	defer sc.Close()
	recs, err := sc.Poll(ctx)
	require.NoError(t, err)
	require.NoError(t, l.SetShareGroupConfig(ctx, "sg", replog.ShareGroupConfig{DeliveryCountLimit: 3}))

	listed, err := adm.ListGroups(ctx)
	require.NoError(t, err)
	require.ElementsMatch(t, []string{"classic", "sg"}, listed.Groups())
	require.Equal(t, "share", listed["sg"].ProtocolType)
	require.Equal(t, "Stable", listed["sg"].State)
	listed, err = adm.ListGroupsByType(ctx, []string{"share"})
	require.NoError(t, err)
	require.Equal(t, []string{"sg"}, listed.Groups())
	listed, err = adm.ListGroupsByType(ctx, []string{"classic"})
	require.NoError(t, err)
	require.Equal(t, []string{"classic"}, listed.Groups())

	dreq := kmsg.NewPtrDescribeGroupsRequest()
	dreq.Groups = []string{"sg"}
	dresp, err := dreq.RequestWith(ctx, cl)
	require.NoError(t, err)
	require.Equal(t, kerr.GroupIDNotFound.Code, dresp.Groups[0].ErrorCode)

	del, err := adm.DeleteGroups(ctx, "sg")
	require.NoError(t, err)
	require.ErrorIs(t, del["sg"].Err, kerr.NonEmptyGroup)
	require.NoError(t, sc.AckAll(ctx, recs))
	listed, err = adm.ListGroups(ctx, "Empty")
	require.NoError(t, err)
	require.Contains(t, listed.Groups(), "sg")

	del, err = adm.DeleteGroups(ctx, "sg")
	require.NoError(t, err)
	require.NoError(t, del["sg"].Err)
	_, err = l.DescribeShareGroup(ctx, "sg")
	require.ErrorIs(t, err, replog.ErrGroupNotFound)
	cfg, err := l.ShareGroupConfig(ctx, "sg")
	require.NoError(t, err)
	require.Equal(t, replog.ShareGroupConfig{}, cfg, "its configs deleted with it")
	del, err = adm.DeleteGroups(ctx, "sg", "never")
	require.NoError(t, err)
	require.ErrorIs(t, del["sg"].Err, kerr.GroupIDNotFound)
	require.ErrorIs(t, del["never"].Err, kerr.GroupIDNotFound)

	// A group with configs only (franz-go's tests set them first, and
	// delete the group whatever happened) is deleted too.
	code, msg := alterGroupConfigs(t, ctx, cl, "configured", false, "share.auto.offset.reset", opSet, "earliest")
	require.Zero(t, code, msg)
	del, err = adm.DeleteGroups(ctx, "configured")
	require.NoError(t, err)
	require.NoError(t, del["configured"].Err)
	require.Equal(t, "latest", *describeGroupConfigs(t, ctx, cl, "configured")["share.auto.offset.reset"].Value)
}

// TestShareAdminNotCoordinator: in a cluster, the share offsets APIs are
// the group coordinator's; other nodes answer NOT_COORDINATOR, and
// franz-go finds the coordinator. Group configs are served by any node.
func TestShareAdminNotCoordinator(t *testing.T) {
	kc := newKafkaCluster(t, 3)
	kc.createTopic("t")
	ctx := testCtx(t)
	cl := newClient(t, kc.srvs[0], kgo.SeedBrokers(kc.addrs...))
	adm := kadm.NewClient(cl)
	var coordinator int32
	kc.eventually(func() bool {
		cs := adm.FindGroupCoordinators(ctx, "sg")
		c, ok := cs["sg"]
		coordinator = c.NodeID
		return ok && c.Err == nil
	}, "a coordinator")

	altered, err := adm.AlterShareGroupOffsets(ctx, "sg", kadm.Offsets{"t": {1: {At: 0}}})
	require.NoError(t, err)
	require.NoError(t, altered.Error())
	for id := int32(1); id <= 3; id++ {
		req := kmsg.NewPtrDescribeShareGroupOffsetsRequest()
		rg := kmsg.NewDescribeShareGroupOffsetsRequestGroup()
		rg.GroupID = "sg"
		req.Groups = append(req.Groups, rg)
		kresp, err := cl.Broker(int(id)).Request(ctx, req)
		require.NoError(t, err)
		resp := kresp.(*kmsg.DescribeShareGroupOffsetsResponse)
		if id != coordinator {
			require.Equal(t, kerr.NotCoordinator.Code, resp.Groups[0].ErrorCode, "node %d", id)
			continue
		}
		require.Zero(t, resp.Groups[0].ErrorCode)
		require.Len(t, resp.Groups[0].Topics, 1)
		require.Equal(t, []kmsg.DescribeShareGroupOffsetsResponseGroupTopicPartition{{Partition: 1, StartOffset: 0, Lag: 0}},
			resp.Groups[0].Topics[0].Partitions)
	}

	for i := range 3 {
		ncl := newClient(t, kc.srvs[i])
		code, msg := alterGroupConfigs(t, ctx, ncl, "sg", false, "share.delivery.count.limit", opSet, "10")
		require.Zero(t, code, msg)
		require.Equal(t, "10", *describeGroupConfigs(t, ctx, ncl, "sg")["share.delivery.count.limit"].Value)
	}
}

// TestShareAdminWithMembers: a share group with a member (joined by
// ShareGroupHeartbeat, holding nothing) is listed Stable and is not
// altered, its offsets not deleted, nor itself, until the member leaves.
func TestShareAdminWithMembers(t *testing.T) {
	l := openLog(t)
	srv := listen(t, l, nil)
	cl := newClient(t, srv)
	adm := kadm.NewClient(cl)
	ctx := testCtx(t)
	createTopics(t, ctx, cl, 1, "t")
	require.NoError(t, l.ResetShareGroup(ctx, "sg", replog.OffsetReset{Topic: "t", Offsets: map[int]int64{0: 0}}))

	joined := heartbeat(t, ctx, cl, "sg", "m1", 0, "t")
	require.Zero(t, joined.ErrorCode)
	listed, err := adm.ListGroupsByType(ctx, []string{"share"})
	require.NoError(t, err)
	require.Equal(t, "Stable", listed["sg"].State)
	_, err = adm.AlterShareGroupOffsets(ctx, "sg", kadm.Offsets{"t": {0: {At: 0}}})
	require.ErrorIs(t, err, kerr.NonEmptyGroup)
	_, err = adm.DeleteShareGroupOffsets(ctx, "sg", "t")
	require.ErrorIs(t, err, kerr.NonEmptyGroup)
	del, err := adm.DeleteGroups(ctx, "sg")
	require.NoError(t, err)
	require.ErrorIs(t, del["sg"].Err, kerr.NonEmptyGroup)

	left := heartbeat(t, ctx, cl, "sg", *joined.MemberID, -1)
	require.Zero(t, left.ErrorCode)
	del, err = adm.DeleteGroups(ctx, "sg")
	require.NoError(t, err)
	require.NoError(t, del["sg"].Err)
}
