package replogkafka_test

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"go.uber.org/goleak"

	"github.com/replog/replog"
	replogkafka "github.com/replog/replog/kafka"
)

func TestMain(m *testing.M) {
	// sarama's metrics library (rcrowley/go-metrics) starts one ticker
	// goroutine for the process, the first time a meter is made, and never
	// stops it.
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("github.com/rcrowley/go-metrics.(*meterArbiter).tick"))
}

// openLog opens an in-memory single node, closed at the end of the test.
func openLog(t *testing.T) *replog.Log {
	t.Helper()
	l, err := replog.Open("", &replog.Options{InMemory: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// listen starts a listener for l on a free loopback port, closed at the
// end of the test (before l).
func listen(t *testing.T, l *replog.Log, opts *replogkafka.Options) *replogkafka.Server {
	t.Helper()
	srv, err := replogkafka.Listen(l, "127.0.0.1:0", opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := srv.Close(); err != nil {
			t.Error(err)
		}
	})
	return srv
}

// newClient returns a franz-go client of srv, closed at the end of the
// test.
func newClient(t *testing.T, srv *replogkafka.Server, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(srv.Addr().String())}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// frame encodes a request as a client would: size, header v1 or v2, body.
func frame(req kmsg.Request, corr int32) []byte {
	b := make([]byte, 4, 64)
	b = binary.BigEndian.AppendUint16(b, uint16(req.Key()))
	b = binary.BigEndian.AppendUint16(b, uint16(req.GetVersion()))
	b = binary.BigEndian.AppendUint32(b, uint32(corr))
	b = binary.BigEndian.AppendUint16(b, 4)
	b = append(b, "test"...)
	if req.IsFlexible() {
		b = append(b, 0)
	}
	b = req.AppendTo(b)
	binary.BigEndian.PutUint32(b, uint32(len(b)-4))
	return b
}

// readResponse reads one response frame and returns its correlation id and
// the body after a v0 header.
func readResponse(t *testing.T, c net.Conn) (int32, []byte) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	var size [4]byte
	if _, err := io.ReadFull(c, size[:]); err != nil {
		t.Fatalf("reading a response: %v", err)
	}
	body := make([]byte, binary.BigEndian.Uint32(size[:]))
	if _, err := io.ReadFull(c, body); err != nil {
		t.Fatalf("reading a response: %v", err)
	}
	return int32(binary.BigEndian.Uint32(body)), body[4:]
}

func dial(t *testing.T, srv *replogkafka.Server) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", srv.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// closedByServer reports whether the server closed c (a read sees EOF or a
// reset) within a few seconds.
func closedByServer(t *testing.T, c net.Conn) bool {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	var b [1]byte
	_, err := c.Read(b[:])
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return false
	}
	return err != nil
}

// checkAlive makes a full round trip through a franz-go client.
func checkAlive(t *testing.T, cl *kgo.Client) {
	t.Helper()
	req := kmsg.NewPtrApiVersionsRequest()
	resp, err := req.RequestWith(testCtx(t), cl)
	if err != nil {
		t.Fatalf("the other client's request failed: %v", err)
	}
	if resp.ErrorCode != 0 || len(resp.ApiKeys) == 0 {
		t.Fatalf("ApiVersions: error %d, %d keys", resp.ErrorCode, len(resp.ApiKeys))
	}
}

func TestApiVersions(t *testing.T) {
	srv := listen(t, openLog(t), nil)
	c := dial(t, srv)
	for _, v := range []int16{0, 3} {
		req := kmsg.NewPtrApiVersionsRequest()
		req.Version = v
		req.ClientSoftwareName, req.ClientSoftwareVersion = "test", "1"
		c.Write(frame(req, 7+int32(v)))
		corr, body := readResponse(t, c)
		resp := kmsg.NewPtrApiVersionsResponse()
		resp.Version = v
		if err := resp.ReadFrom(body); err != nil {
			t.Fatalf("v%d: %v", v, err)
		}
		if corr != 7+int32(v) || resp.ErrorCode != 0 || len(resp.ApiKeys) == 0 {
			t.Fatalf("v%d: correlation %d, error %d, keys %v", v, corr, resp.ErrorCode, resp.ApiKeys)
		}
	}
	// checkAlive goes through franz-go, which asks with a newer version
	// than served first: KIP-511's answer makes it retry.
	checkAlive(t, newClient(t, srv))
}

func TestApiVersionsUnsupported(t *testing.T) {
	srv := listen(t, openLog(t), nil)
	c := dial(t, srv)
	req := kmsg.NewPtrApiVersionsRequest()
	req.Version = 3 // encoded as v3, announced as v42
	f := frame(req, 99)
	binary.BigEndian.PutUint16(f[6:], 42)
	c.Write(f)
	corr, body := readResponse(t, c)
	resp := kmsg.NewPtrApiVersionsResponse() // v0, as KIP-511 says
	if err := resp.ReadFrom(body); err != nil {
		t.Fatal(err)
	}
	if corr != 99 || resp.ErrorCode != kerr.UnsupportedVersion.Code {
		t.Fatalf("correlation %d, error %d; want 99, UNSUPPORTED_VERSION", corr, resp.ErrorCode)
	}
	var found bool
	for _, k := range resp.ApiKeys {
		found = found || k.ApiKey == kmsg.ApiVersions.Int16() && k.MaxVersion == 3
	}
	if !found {
		t.Fatalf("ApiVersions missing from %+v", resp.ApiKeys)
	}
}

func TestBadFramesCloseOnlyTheirConnection(t *testing.T) {
	srv := listen(t, openLog(t), &replogkafka.Options{MaxRequestBytes: 4 << 20})
	other := newClient(t, srv)
	checkAlive(t, other)
	cases := []struct {
		name string
		data []byte
	}{
		{"oversize", binary.BigEndian.AppendUint32(nil, 4<<20+1)},
		{"oversize for its API", append(binary.BigEndian.AppendUint32(nil, 2<<20), 0, 3, 0, 0, 0, 0, 0, 1)}, // Metadata: past its 1 MiB
		{"negative size", binary.BigEndian.AppendUint32(nil, 0xffffff00)},
		{"shorter than a header", []byte{0, 0, 0, 3, 0, 18, 0}},
		{"unknown API", []byte{0, 0, 0, 8, 0x7f, 0, 0, 0, 0, 0, 0, 1}},
		{"unserved version", []byte{0, 0, 0, 8, 0, 3, 0x7f, 0, 0, 0, 0, 1}},                                                                            // Metadata v32512
		{"garbage body", append([]byte{0, 0, 0, 20, 0, 18, 0, 3, 0, 0, 0, 1}, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff)}, // ApiVersions v3
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := dial(t, srv)
			c.Write(tc.data)
			if !closedByServer(t, c) {
				t.Fatal("the connection stayed open")
			}
			checkAlive(t, other)
		})
	}
}

func TestMaxConnections(t *testing.T) {
	srv := listen(t, openLog(t), &replogkafka.Options{MaxConnections: 1})
	first := dial(t, srv)
	req := kmsg.NewPtrApiVersionsRequest()
	first.Write(frame(req, 1))
	readResponse(t, first) // the first is being served
	second := dial(t, srv)
	if !closedByServer(t, second) {
		t.Fatal("a connection past MaxConnections stayed open")
	}
	first.Write(frame(req, 2))
	if corr, _ := readResponse(t, first); corr != 2 {
		t.Fatalf("correlation %d", corr)
	}
}

func TestIdleTimeout(t *testing.T) {
	srv := listen(t, openLog(t), &replogkafka.Options{IdleTimeout: 200 * time.Millisecond})
	c := dial(t, srv)
	if !closedByServer(t, c) {
		t.Fatal("an idle connection stayed open")
	}
}

func TestResponsesInRequestOrder(t *testing.T) {
	srv := listen(t, openLog(t), nil)
	c := dial(t, srv)
	var all []byte
	for i := range 20 {
		req := kmsg.NewPtrApiVersionsRequest()
		req.Version = int16(i % 4)
		all = append(all, frame(req, int32(i))...)
	}
	c.Write(all) // pipelined
	for i := range 20 {
		if corr, _ := readResponse(t, c); corr != int32(i) {
			t.Fatalf("response %d has correlation %d", i, corr)
		}
	}
}

func TestCloseClosesConnections(t *testing.T) {
	l := openLog(t)
	srv, err := replogkafka.Listen(l, "127.0.0.1:0", nil)
	if err != nil {
		t.Fatal(err)
	}
	c := dial(t, srv)
	c.Write(frame(kmsg.NewPtrApiVersionsRequest(), 1))
	readResponse(t, c)
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	if err := srv.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if !closedByServer(t, c) {
		t.Fatal("Close left a connection open")
	}
	if _, err := net.Dial("tcp", srv.Addr().String()); err == nil {
		t.Fatal("Close left the listener accepting")
	}
}

func TestClosingTheLogClosesTheListener(t *testing.T) {
	l, err := replog.Open("", &replog.Options{InMemory: true})
	if err != nil {
		t.Fatal(err)
	}
	srv := listen(t, l, nil)
	c := dial(t, srv)
	l.Close()
	if !closedByServer(t, c) {
		t.Fatal("closing the Log left a connection open")
	}
}
