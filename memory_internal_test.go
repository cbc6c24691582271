package replog

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/replog/replog/replication"
)

// The memory budget sizes the defaults of the handles and of
// CompactionMemory; explicit values win.
func TestMemoryBudgetDefaults(t *testing.T) {
	o, err := (*Options)(nil).withDefaults()
	require.NoError(t, err)
	require.EqualValues(t, DefaultMemoryBytes, o.MemoryBytes)
	require.EqualValues(t, 32<<20, o.CompactionMemory, "CompactionMemory's default is unchanged by the budget's default")

	topic := func(o Options) *Topic {
		return &Topic{l: &Log{opts: o}, meta: &replication.TopicMeta{Name: "t"}}
	}
	po, err := (*ProducerOptions)(nil).withDefaults(topic(o))
	require.NoError(t, err)
	require.Equal(t, 4<<20, po.MaxBufferedBytes)

	small, err := (&Options{MemoryBytes: 16 << 20, CompactionMemory: 1 << 20}).withDefaults()
	require.NoError(t, err)
	require.EqualValues(t, 1<<20, small.CompactionMemory)
	po, err = (*ProducerOptions)(nil).withDefaults(topic(small))
	require.NoError(t, err)
	require.Equal(t, po.BatchBytes, po.MaxBufferedBytes, "at least one batch")
	po, err = (&ProducerOptions{MaxBufferedBytes: 64 << 20}).withDefaults(topic(small))
	require.NoError(t, err)
	require.Equal(t, 64<<20, po.MaxBufferedBytes)

	_, err = (&Options{MemoryBytes: 1 << 20}).withDefaults()
	require.ErrorIs(t, err, ErrInvalidConfig)
	_, err = (&Options{MemoryBytes: -1}).withDefaults()
	require.ErrorIs(t, err, ErrInvalidConfig)
}
