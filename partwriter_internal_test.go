package replog

import (
	"context"
	"math"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestProducerEpochPastKafkaBatch: a Kafka batch carries a 16-bit producer
// epoch. A partition writer that started more epochs than that writes
// legacy batches, which carry 32 bits, and its records are stored and read
// as before (with their nanoseconds, which legacy batches keep).
func TestProducerEpochPastKafkaBatch(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	l, err := Open("", &Options{InMemory: true})
	require.NoError(t, err)
	defer func() { require.NoError(t, l.Close()) }()
	tp, err := l.CreateTopic(ctx, "epochs", TopicConfig{Partitions: 1})
	require.NoError(t, err)
	p, err := NewProducer(tp, String(), nil)
	require.NoError(t, err)
	defer p.Close()
	// Set before the first record reaches the writer, which reads it
	// only then.
	p.p.parts[0].epoch = math.MaxInt16 + 1

	at := time.Unix(1_700_000_000, 123_456_789)
	for _, v := range []string{"a", "b"} {
		_, err := p.Produce(ctx, Message[string]{Value: v, Time: at})
		require.NoError(t, err)
	}
	c, err := NewConsumer(tp, String(), nil)
	require.NoError(t, err)
	defer c.Close()
	var got []string
	for rec, err := range c.Records(ctx) {
		require.NoError(t, err)
		require.True(t, rec.Time.Equal(at), "time %v", rec.Time)
		got = append(got, rec.Value)
		if len(got) == 2 {
			break
		}
	}
	require.Equal(t, []string{"a", "b"}, got)
}
