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
}
