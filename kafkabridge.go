package replog

import (
	"context"

	"github.com/replog/replog/internal/kafkabridge"
	"github.com/replog/replog/replication"
)

func init() {
	// See package internal/kafkabridge for why these hooks exist.
	kafkabridge.Node = func(l any) *replication.Node { return l.(*Log).node }
	kafkabridge.Partition = func(ctx context.Context, t any, i int) (*replication.Partition, error) {
		return t.(*Topic).partition(ctx, i)
	}
	kafkabridge.MapErr = mapErr
	kafkabridge.Produced = func(t any, i int, records, bytes int, err error) {
		tp := t.(*Topic)
		c := tp.l.counters.part(tp.meta.Name, i)
		if err != nil {
			c.produceErrors.Add(1)
			return
		}
		c.producedBatches.Add(1)
		c.producedRecords.Add(uint64(records))
		c.producedBytes.Add(uint64(bytes))
	}
	kafkabridge.Fetched = func(t any, i int, records, bytes int) {
		tp := t.(*Topic)
		c := tp.l.counters.part(tp.meta.Name, i)
		c.fetchedRecords.Add(uint64(records))
		c.fetchedBytes.Add(uint64(bytes))
	}
	kafkabridge.ShareCounted = func(l any, topic string, i int, kind kafkabridge.ShareKind, n int) {
		c := l.(*Log).counters.part(topic, i)
		switch kind {
		case kafkabridge.ShareAcquired:
			c.shareAcquired.Add(uint64(n))
		case kafkabridge.ShareAccepted:
			c.shareAcked(replication.ShareAccept, n)
		case kafkabridge.ShareReleased:
			c.shareAcked(replication.ShareRelease, n)
		case kafkabridge.ShareRejected:
			c.shareAcked(replication.ShareReject, n)
		}
	}
}
