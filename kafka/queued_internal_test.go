package replogkafka

import (
	"encoding/binary"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/replog/replog"
)

// TestMaxQueuedBytesAcrossConnections: requests read and not answered hold
// MaxQueuedBytes whatever connection they came on; a connection whose next
// request would pass it waits before reading it, and goes on once another
// gives its share back.
func TestMaxQueuedBytesAcrossConnections(t *testing.T) {
	l, err := replog.Open("", &replog.Options{InMemory: true})
	require.NoError(t, err)
	defer l.Close()
	const mib = 1 << 20
	s, err := Listen(l, "127.0.0.1:0", &Options{MaxRequestBytes: mib, MaxQueuedBytes: mib + mib/2})
	require.NoError(t, err)
	defer s.Close()

	// claim starts a Produce request of size bytes and sends only its
	// header: the listener holds size bytes while it waits for the rest.
	claim := func(size int) net.Conn {
		c, err := net.Dial("tcp", s.Addr().String())
		require.NoError(t, err)
		var b []byte
		b = binary.BigEndian.AppendUint32(b, uint32(size))
		b = binary.BigEndian.AppendUint16(b, 0) // Produce
		b = binary.BigEndian.AppendUint16(b, 7)
		b = binary.BigEndian.AppendUint32(b, 1) // correlation id
		_, err = c.Write(b)
		require.NoError(t, err)
		return c
	}
	queued := func() int64 { return s.queuedBytes.Load() }

	a := claim(mib)
	require.Eventually(t, func() bool { return queued() == mib }, 10*time.Second, time.Millisecond)
	b := claim(mib/2 + 1) // one byte more than is left
	time.Sleep(200 * time.Millisecond)
	require.Equal(t, int64(mib), queued(), "the second request was read past the budget")

	a.Close() // a's request is abandoned: its share goes to b's
	require.Eventually(t, func() bool { return queued() == mib/2+1 }, 10*time.Second, time.Millisecond)
	b.Close()
	require.Eventually(t, func() bool { return queued() == 0 }, 10*time.Second, time.Millisecond)

	// Answered requests give their share back.
	_, err = l.CreateTopic(t.Context(), "q", replog.TopicConfig{Partitions: 2})
	require.NoError(t, err)
	cl, err := kgo.NewClient(kgo.SeedBrokers(s.Addr().String()), kgo.DefaultProduceTopic("q"),
		kgo.ConsumeTopics("q"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	require.NoError(t, err)
	for i := range 500 {
		cl.Produce(t.Context(), &kgo.Record{Value: fmt.Appendf(nil, "v%d", i)}, nil)
	}
	require.NoError(t, cl.Flush(t.Context()))
	for n := 0; n < 500; {
		f := cl.PollFetches(t.Context())
		require.NoError(t, f.Err())
		n += f.NumRecords()
	}
	cl.Close()
	require.Eventually(t, func() bool { return queued() == 0 }, 10*time.Second, time.Millisecond)
}

func TestMaxQueuedBytesBelowMaxRequestBytes(t *testing.T) {
	_, err := (&Options{MaxRequestBytes: 1 << 20, MaxQueuedBytes: 1 << 19}).withDefaults()
	require.ErrorIs(t, err, replog.ErrInvalidConfig)
	o, err := (&Options{MaxRequestBytes: 512 << 20}).withDefaults()
	require.NoError(t, err)
	require.Equal(t, int64(512<<20), o.MaxQueuedBytes, "the default grows to one largest request")
}
