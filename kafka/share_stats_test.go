package replogkafka_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/replog/replog"
)

// TestKafkaShareStats: a franz-go share member's acquisitions and
// acknowledgements count in the Log's share counters, as a Go share
// consumer's do, and the share group shows in Stats once done.
func TestKafkaShareStats(t *testing.T) {
	l, srv := groupNode(t)
	ctx := testCtx(t)
	admin := newClient(t, srv)
	createTopics(t, ctx, admin, 1, "counted")
	shareEarliest(t, ctx, l, "g", "counted")
	const n = 20
	produce(t, ctx, admin, "counted", 1, n)

	cl := newClient(t, srv, kgo.ConsumeTopics("counted"), kgo.ShareGroup("g"), kgo.FetchMaxWait(100*time.Millisecond))
	var acquired, accepted, released, rejected uint64
	done := map[int64]bool{}
	for len(done) < n {
		require.NoError(t, ctx.Err(), "every record accepted or rejected")
		pctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
		fs := cl.PollRecords(pctx, 10)
		cancel()
		for _, r := range fs.Records() {
			acquired++
			switch {
			case r.Offset%5 == 0 && r.DeliveryCount() == 1:
				released++
				r.Ack(kgo.AckRelease)
			case r.Offset%7 == 3:
				rejected++
				done[r.Offset] = true
				r.Ack(kgo.AckReject)
			default:
				accepted++
				done[r.Offset] = true
				r.Ack(kgo.AckAccept)
			}
		}
		require.NoError(t, cl.FlushAcks(ctx))
	}
	require.Equal(t, uint64(n), accepted+rejected)
	require.Equal(t, uint64(4), released)

	s := l.Stats()
	require.Equal(t, [5]uint64{acquired, accepted, released, rejected, 0},
		[5]uint64{s.Node.ShareAcquired, s.Node.ShareAccepted, s.Node.ShareReleased, s.Node.ShareRejected, s.Node.ShareDeadLettered})
	for _, p := range s.Partitions {
		if p.Topic == "counted" {
			require.Equal(t, [4]uint64{acquired, accepted, released, rejected},
				[4]uint64{p.ShareAcquired, p.ShareAccepted, p.ShareReleased, p.ShareRejected})
		}
	}
	require.Equal(t, []replog.ShareGroupStats{{Group: "g", Partitions: []replog.SharePartitionStats{
		{Topic: "counted", Partition: 0, Start: n}}}}, s.ShareGroups)
}
