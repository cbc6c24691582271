package replogkafka_test

import (
	"testing"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/replog/replog"
)

// A replog group whose member reads two topics shows, through Kafka's
// admin APIs, its member's assignment in both topics and its committed
// offsets of both (OffsetFetch).
func TestKafkaAdminSeesReplogGroupOfTwoTopics(t *testing.T) {
	l, srv := groupNode(t)
	ctx := testCtx(t)
	prod := newClient(t, srv, manualPartitioner())
	adm := kadm.NewClient(prod)
	createTopics(t, ctx, prod, 2, "a", "b")
	produce(t, ctx, prod, "a", 2, 4)
	produce(t, ctx, prod, "b", 2, 6)

	a, err := l.Topic("a")
	require.NoError(t, err)
	b, err := l.Topic("b")
	require.NoError(t, err)
	c, err := replog.NewMultiTopicConsumer([]*replog.Topic{a, b}, replog.Bytes(), &replog.ConsumerOptions{Group: "rg"})
	require.NoError(t, err)
	defer c.Close()
	n := 0
	for n < 20 { // 4 and 6 records per partition
		recs, err := c.Poll(ctx)
		require.NoError(t, err)
		n += len(recs)
	}
	require.NoError(t, c.Commit(ctx))

	described, err := adm.DescribeGroups(ctx, "rg")
	require.NoError(t, err)
	rg := described["rg"]
	require.NoError(t, rg.Err)
	require.Len(t, rg.Members, 1)
	// Encoded as a Kafka consumer's assignment, under protocol type
	// "replog", which kadm leaves raw.
	raw, ok := rg.Members[0].Assigned.Raw()
	require.True(t, ok)
	var ma kmsg.ConsumerMemberAssignment
	require.NoError(t, ma.ReadFrom(raw))
	got := map[string][]int32{}
	for _, at := range ma.Topics {
		got[at.Topic] = at.Partitions
	}
	require.Equal(t, map[string][]int32{"a": {0, 1}, "b": {0, 1}}, got)

	offs, err := adm.FetchOffsets(ctx, "rg")
	require.NoError(t, err)
	sums := map[string]int64{}
	offs.Each(func(o kadm.OffsetResponse) {
		require.NoError(t, o.Err)
		sums[o.Topic] += o.At
	})
	require.Equal(t, map[string]int64{"a": 8, "b": 12}, sums)
}
