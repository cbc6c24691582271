package replication

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"net"
	"sync"
	"testing"
	"time"

	pb "github.com/lni/dragonboat/v4/raftpb"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/replog/replog/internal/certs"
)

// inbox records what a transport hands to dragonboat.
type inbox struct {
	mu      sync.Mutex
	batches []pb.MessageBatch
	chunks  []pb.Chunk
}

func (in *inbox) batch(b pb.MessageBatch) {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.batches = append(in.batches, b)
}

func (in *inbox) chunk(c pb.Chunk) bool {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.chunks = append(in.chunks, c)
	return true
}

func (in *inbox) counts() (int, int) {
	in.mu.Lock()
	defer in.mu.Unlock()
	return len(in.batches), len(in.chunks)
}

// freeAddr returns a loopback address with a port free a moment ago.
func freeAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	return l.Addr().String()
}

// testPKI issues certificates from one CA for transport tests.
type testPKI struct {
	t  *testing.T
	ca *certs.CA
}

func newTestPKI(t *testing.T) *testPKI {
	ca, err := certs.NewCA(t.TempDir(), "test")
	require.NoError(t, err)
	return &testPKI{t: t, ca: ca}
}

// node issues a certificate bound to the node at addr and loads it.
func (p *testPKI) node(name, addr string) *tlsConfig {
	f, err := p.ca.IssueNode(name, addr)
	require.NoError(p.t, err)
	return p.load(f)
}

// hosts issues a certificate for hosts (any port) and loads it.
func (p *testPKI) hosts(name string, hosts ...string) *tlsConfig {
	f, err := p.ca.Issue(name, hosts...)
	require.NoError(p.t, err)
	return p.load(f)
}

func (p *testPKI) load(f certs.Files) *tlsConfig {
	c, err := loadTLS(&TLSFiles{CA: f.CA, Cert: f.Cert, Key: f.Key}, "")
	require.NoError(p.t, err)
	return c
}

// startTransport starts a transport listening on addr.
func startTransport(t *testing.T, addr string, opts tcpOptions) (*tcpTransport, *inbox) {
	in := &inbox{}
	tr := newTCPTransport(addr, opts, in.batch, in.chunk)
	require.NoError(t, tr.Start())
	t.Cleanup(func() { tr.Close() })
	return tr, in
}

func checkLeaks(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting: %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestTCPTransportCarriesBatchesAndSnapshots(t *testing.T) {
	checkLeaks(t)
	for _, secure := range []bool{true, false} {
		t.Run(map[bool]string{true: "tls", false: "plaintext"}[secure], func(t *testing.T) {
			pki := newTestPKI(t)
			addrA, addrB := freeAddr(t), freeAddr(t)
			optsA, optsB := tcpOptions{}, tcpOptions{}
			if secure {
				optsA.tls, optsB.tls = pki.node("a", addrA), pki.node("b", addrB)
			}
			a, _ := startTransport(t, addrA, optsA)
			_, inB := startTransport(t, addrB, optsB)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()

			conn, err := a.GetConnection(ctx, addrB)
			require.NoError(t, err)
			defer conn.Close()
			big := bytes.Repeat([]byte("x"), 3<<20) // larger than the reusable send buffer
			sent := []pb.MessageBatch{
				{SourceAddress: addrA, BinVer: 1, Requests: []pb.Message{{Type: pb.Heartbeat, ShardID: 1, From: 1, To: 2, Term: 3}}},
				{SourceAddress: addrA, BinVer: 1, Requests: []pb.Message{{Type: pb.Replicate, ShardID: 7, From: 1, To: 2, Entries: []pb.Entry{{Index: 9, Term: 3, Cmd: big}}}}},
			}
			for _, b := range sent {
				require.NoError(t, conn.SendMessageBatch(b))
			}
			waitFor(t, "both batches", func() bool { n, _ := inB.counts(); return n == 2 })
			inB.mu.Lock()
			require.Equal(t, sent[0].Requests[0].Term, inB.batches[0].Requests[0].Term)
			require.Equal(t, big, inB.batches[1].Requests[0].Entries[0].Cmd)
			inB.mu.Unlock()

			snap, err := a.GetSnapshotConnection(ctx, addrB)
			require.NoError(t, err)
			data := bytes.Repeat([]byte("s"), 2<<20)
			for i := range uint64(3) {
				require.NoError(t, snap.SendChunk(pb.Chunk{ShardID: 7, ReplicaID: 2, From: 1, ChunkId: i, ChunkCount: 3, Data: data}))
			}
			// Close returns once the receiver confirmed every chunk.
			snap.Close()
			_, chunks := inB.counts()
			require.Equal(t, 3, chunks)
		})
	}
}

// rawFrame builds a frame as a peer could, announcing size bytes (normally
// len(payload)) and with the payload's CRC.
func rawFrame(method uint16, size uint64, payload []byte) []byte {
	b := make([]byte, 2+frameHeaderLen, 2+frameHeaderLen+len(payload))
	copy(b, frameMagic[:])
	h := b[2:]
	binary.BigEndian.PutUint16(h, method)
	binary.BigEndian.PutUint64(h[2:], size)
	binary.BigEndian.PutUint32(h[14:], crc32.ChecksumIEEE(payload))
	binary.BigEndian.PutUint32(h[10:], crc32.ChecksumIEEE(h))
	return append(b, payload...)
}

func marshalBatch(t testing.TB, b pb.MessageBatch) []byte {
	p, err := b.Marshal()
	require.NoError(t, err)
	return p
}

// dialRaw connects to addr as a peer with cfg (nil: plaintext).
func dialRaw(t *testing.T, addr string, cfg *tlsConfig) net.Conn {
	c, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	if cfg != nil {
		cc, err := cfg.client(addr)
		require.NoError(t, err)
		tc := tls.Client(c, cc)
		require.NoError(t, tc.Handshake())
		c = tc
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// requireDropped checks that the transport closes c at once.
func requireDropped(t *testing.T, c net.Conn) {
	t.Helper()
	require.NoError(t, c.SetReadDeadline(time.Now().Add(3*time.Second)))
	_, err := c.Read(make([]byte, 1))
	require.Error(t, err)
	var ne net.Error
	require.False(t, errors.As(err, &ne) && ne.Timeout(), "connection kept open: %v", err)
}

// Every frame a peer could forge closes that peer's connection only, hands
// nothing to dragonboat, and never panics; the transport keeps serving.
func TestTCPTransportRefusesBadFrames(t *testing.T) {
	checkLeaks(t)
	const maxMessage = 1 << 20
	ok := func(addr string) pb.MessageBatch {
		return pb.MessageBatch{SourceAddress: addr, BinVer: 1, Requests: []pb.Message{{Type: pb.Heartbeat, ShardID: 1, From: 1, To: 2}}}
	}
	for _, secure := range []bool{true, false} {
		t.Run(map[bool]string{true: "tls", false: "plaintext"}[secure], func(t *testing.T) {
			pki := newTestPKI(t)
			addr, peerAddr := freeAddr(t), freeAddr(t)
			opts := tcpOptions{maxMessage: maxMessage}
			var peer *tlsConfig
			if secure {
				opts.tls, peer = pki.node("server", addr), pki.node("peer", peerAddr)
			}
			_, in := startTransport(t, addr, opts)
			good := marshalBatch(t, ok(peerAddr))
			badCRC := rawFrame(methodBatch, uint64(len(good)), good)
			badCRC[2+14] ^= 0xff // the payload CRC

			cases := []struct {
				name  string
				frame []byte
			}{
				{"batch over the cap", rawFrame(methodBatch, maxMessage+1, nil)},
				{"1 TiB batch", rawFrame(methodBatch, 1<<40, nil)},
				{"chunk over the cap", rawFrame(methodChunk, maxChunkBytes+1, nil)},
				{"bad magic", append([]byte{0x12, 0x34}, rawFrame(methodBatch, uint64(len(good)), good)[2:]...)},
				{"bad header checksum", func() []byte {
					f := rawFrame(methodBatch, uint64(len(good)), good)
					f[5] ^= 1
					return f
				}()},
				{"unknown method", rawFrame(7, uint64(len(good)), good)},
				{"empty payload", rawFrame(methodBatch, 0, nil)},
				// dragonboat's batch decoder indexes past the end of this.
				{"truncated length in batch", rawFrame(methodBatch, 4, []byte{0x0a, 0x00, 0x0a, 0x80})},
				{"garbage chunk", rawFrame(methodChunk, 3, []byte{0xff, 0xff, 0xff})},
				{"source address without port", rawFrame(methodBatch, 0, nil)},
				{"message to replica 0", nil},
				{"InstallSnapshot from the network", nil},
			}
			// Frames that need a marshalled batch.
			set := func(name string, b pb.MessageBatch) {
				p := marshalBatch(t, b)
				for i := range cases {
					if cases[i].name == name {
						cases[i].frame = rawFrame(methodBatch, uint64(len(p)), p)
					}
				}
			}
			b := ok(peerAddr)
			b.SourceAddress = "no-port"
			set("source address without port", b)
			b = ok(peerAddr)
			b.Requests[0].To = 0
			set("message to replica 0", b)
			b = ok(peerAddr)
			b.Requests[0].Type = pb.InstallSnapshot
			b.Requests[0].Snapshot = pb.Snapshot{Filepath: "/etc/passwd", Index: 1, Term: 1}
			set("InstallSnapshot from the network", b)
			if !secure {
				cases = append(cases, struct {
					name  string
					frame []byte
				}{"bad payload checksum", badCRC})
			}

			for _, tc := range cases {
				t.Run(tc.name, func(t *testing.T) {
					c := dialRaw(t, addr, peer)
					_, err := c.Write(tc.frame)
					require.NoError(t, err)
					requireDropped(t, c)
				})
			}
			n, chunks := in.counts()
			require.Zero(t, n+chunks, "nothing reached dragonboat")

			c := dialRaw(t, addr, peer)
			_, err := c.Write(rawFrame(methodBatch, uint64(len(good)), good))
			require.NoError(t, err)
			waitFor(t, "a good batch after the bad ones", func() bool { n, _ := in.counts(); return n == 1 })
		})
	}
}

// Node 2's certificate cannot pass for node 3, which shares its host: not
// to a node that dials node 3's address, nor to a node it sends batches to
// in node 3's name.
func TestTCPTransportCertificateBoundToAddress(t *testing.T) {
	checkLeaks(t)
	pki := newTestPKI(t)
	addr1, addr2, addr3 := freeAddr(t), freeAddr(t), freeAddr(t)
	node1, in1 := startTransport(t, addr1, tcpOptions{tls: pki.node("node1", addr1)})
	cert2 := pki.node("node2", addr2)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	t.Run("dialler refuses", func(t *testing.T) {
		// A process at node 3's address holding node 2's certificate.
		startTransport(t, addr3, tcpOptions{tls: cert2})
		_, err := node1.GetConnection(ctx, addr3)
		require.ErrorIs(t, err, ErrPeerIdentity)
		_, err = node1.GetSnapshotConnection(ctx, addr3)
		require.ErrorIs(t, err, ErrPeerIdentity)
	})

	t.Run("listener refuses", func(t *testing.T) {
		addr, in := addr1, in1
		batch := func(src string) []byte {
			p := marshalBatch(t, pb.MessageBatch{SourceAddress: src, Requests: []pb.Message{{Type: pb.Heartbeat, ShardID: 1, From: 2, To: 1}}})
			return rawFrame(methodBatch, uint64(len(p)), p)
		}
		c := dialRaw(t, addr, cert2)
		_, err := c.Write(batch(addr3))
		require.NoError(t, err)
		requireDropped(t, c)

		// In its own name it is heard; switching names mid-connection is not.
		c = dialRaw(t, addr, cert2)
		_, err = c.Write(batch(addr2))
		require.NoError(t, err)
		waitFor(t, "node 2's batch", func() bool { n, _ := in.counts(); return n == 1 })
		_, err = c.Write(batch(addr3))
		require.NoError(t, err)
		requireDropped(t, c)
		n, _ := in.counts()
		require.Equal(t, 1, n)
	})
}

func TestCertSpeaksFor(t *testing.T) {
	pki := newTestPKI(t)
	leaf := func(c *tlsConfig) *x509.Certificate { return c.cert.Leaf }
	node := leaf(pki.node("n", "127.0.0.1:7001"))
	dns := leaf(pki.node("d", "node1.example:7001"))
	host := leaf(pki.hosts("h", "127.0.0.1", "node2.example"))
	for _, tc := range []struct {
		cert *x509.Certificate
		addr string
		ok   bool
	}{
		{node, "127.0.0.1:7001", true},
		{node, "127.0.0.1:7002", false}, // same host, another node
		{node, "10.0.0.1:7001", false},
		{dns, "node1.example:7001", true},
		{dns, "127.0.0.1:7001", false},
		{host, "127.0.0.1:7001", true}, // no replog URI: any port of its hosts
		{host, "node2.example:9", true},
		{host, "10.0.0.1:7001", false},
		{host, "no-port", false},
	} {
		err := certSpeaksFor(tc.cert, tc.addr)
		if tc.ok {
			require.NoError(t, err, "%s for %s", tc.cert.Subject.CommonName, tc.addr)
		} else {
			require.ErrorIs(t, err, ErrPeerIdentity, "%s for %s", tc.cert.Subject.CommonName, tc.addr)
		}
	}
	f, err := pki.ca.IssueNode("self", "127.0.0.1:7001")
	require.NoError(t, err)
	files := &TLSFiles{CA: f.CA, Cert: f.Cert, Key: f.Key}
	require.NoError(t, CheckTLS(files, "127.0.0.1:7001"))
	require.ErrorIs(t, CheckTLS(files, "127.0.0.1:7003"), ErrPeerIdentity)
}

func TestTCPTransportSenderRefusesOversizeBatch(t *testing.T) {
	checkLeaks(t)
	addr := freeAddr(t)
	opts := tcpOptions{maxMessage: 1 << 20}
	tr, in := startTransport(t, addr, opts)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	conn, err := tr.GetConnection(ctx, addr)
	require.NoError(t, err)
	defer conn.Close()
	b := pb.MessageBatch{SourceAddress: addr, Requests: []pb.Message{{Type: pb.Replicate, To: 1, Entries: []pb.Entry{{Cmd: make([]byte, 1<<20)}}}}}
	require.ErrorIs(t, conn.SendMessageBatch(b), ErrFrameTooLarge)
	n, _ := in.counts()
	require.Zero(t, n)
}

// A peer that stops reading must not hold a sender (and so the node's
// Close) for long: cancelling the dial context closes the connection.
func TestTCPTransportCancelUnblocksStalledSend(t *testing.T) {
	checkLeaks(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := l.Accept()
		if err == nil {
			accepted <- c
		}
	}()
	tr := newTCPTransport("127.0.0.1:0", tcpOptions{}, func(pb.MessageBatch) {}, func(pb.Chunk) bool { return true })
	ctx, cancel := context.WithCancel(context.Background())
	conn, err := tr.GetConnection(ctx, l.Addr().String())
	require.NoError(t, err)
	defer conn.Close()
	peer := <-accepted // never reads
	defer peer.Close()

	errc := make(chan error, 1)
	go func() {
		b := pb.MessageBatch{SourceAddress: "127.0.0.1:1", Requests: []pb.Message{{Type: pb.Replicate, To: 1, Entries: []pb.Entry{{Cmd: make([]byte, 32<<20)}}}}}
		errc <- conn.SendMessageBatch(b)
	}()
	time.Sleep(100 * time.Millisecond)
	cancel()
	select {
	case err := <-errc:
		require.Error(t, err)
	case <-time.After(2 * time.Second):
		t.Fatal("a cancelled send still blocks")
	}
}

// FuzzTCPFrame feeds arbitrary bytes to the receiving side: it must never
// panic, and never allocate for a frame over the cap.
func FuzzTCPFrame(f *testing.F) {
	b := pb.MessageBatch{SourceAddress: "127.0.0.1:7001", BinVer: 1, Requests: []pb.Message{{Type: pb.Replicate, ShardID: 3, From: 1, To: 2, Entries: []pb.Entry{{Index: 4, Cmd: []byte("rec")}}}}}
	p, _ := b.Marshal()
	f.Add(rawFrame(methodBatch, uint64(len(p)), p))
	c := pb.Chunk{ShardID: 3, ReplicaID: 2, From: 1, ChunkCount: 1, Data: []byte("snap")}
	p, _ = c.Marshal()
	f.Add(rawFrame(methodChunk, uint64(len(p)), p))
	f.Add(append(rawFrame(methodBatch, 4, []byte{0x0a, 0x00, 0x0a, 0x80}), 0, 0))
	f.Fuzz(func(t *testing.T, data []byte) {
		tr := newTCPTransport("", tcpOptions{maxMessage: 1 << 16}, func(pb.MessageBatch) {}, func(pb.Chunk) bool { return true })
		client, server := net.Pipe()
		go func() {
			_, _ = client.Write(data)
			client.Close()
		}()
		defer server.Close()
		fr := frameReader{conn: server, crc: true, maxMessage: tr.opts.maxMessage}
		for {
			method, payload, err := fr.next()
			if err != nil {
				return
			}
			if len(payload) > maxChunkBytes {
				t.Fatalf("%d-byte payload over the cap", len(payload))
			}
			_ = tr.deliver(method, payload, nil)
		}
	})
}
