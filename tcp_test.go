package replog_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"net"
	"os"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/replog/replog"
	"github.com/replog/replog/internal/certs"
)

func freePorts(t *testing.T, n int) []string {
	var addrs []string
	var ls []net.Listener
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		ls = append(ls, l)
		addrs = append(addrs, l.Addr().String())
	}
	for _, l := range ls {
		l.Close()
	}
	return addrs
}

// openTCPCluster starts n nodes in this process talking Raft over TCP on
// loopback with mutual TLS, each with a certificate bound to its address.
// Options other than NodeID, Peers and TLS come from base (ClusterID
// "test" if unset).
func openTCPCluster(t *testing.T, n int, base replog.Options) ([]*replog.Log, []string, *certs.CA, []certs.Files) {
	if base.ClusterID == "" {
		base.ClusterID = "test"
	}
	dir := t.TempDir()
	ca, err := certs.NewCA(dir, "replog-test")
	require.NoError(t, err)
	addrs := freePorts(t, n)
	peers := map[uint64]string{}
	for i, a := range addrs {
		peers[uint64(i+1)] = a
	}
	logs := make([]*replog.Log, n)
	errs := make([]error, n)
	files := make([]certs.Files, n)
	var wg sync.WaitGroup
	for i := range n {
		f, err := ca.IssueNode(fmt.Sprintf("node%d", i+1), addrs[i])
		require.NoError(t, err)
		files[i] = f
		wg.Add(1)
		go func() {
			defer wg.Done()
			o := base
			o.NodeID, o.Peers = uint64(i+1), peers
			o.TLS = &replog.TLSOptions{CAFile: f.CA, CertFile: f.Cert, KeyFile: f.Key}
			logs[i], errs[i] = replog.Open(fmt.Sprintf("%s/node%d", dir, i+1), &o)
		}()
	}
	wg.Wait()
	t.Cleanup(func() {
		for _, l := range logs {
			if l != nil {
				l.Close()
			}
		}
	})
	for _, err := range errs {
		require.NoError(t, err)
	}
	return logs, addrs, ca, files
}

func TestTCPClusterWithMutualTLS(t *testing.T) {
	ctx := testCtx(t)
	logs, addrs, _, _ := openTCPCluster(t, 3, replog.Options{RTT: 10 * time.Millisecond, ElectionTicks: 30, HeartbeatTicks: 3})
	tp, err := logs[0].CreateTopic(ctx, "t", replog.TopicConfig{Partitions: 2, Replicas: 3})
	require.NoError(t, err)
	_ = tp
	t1, err := logs[1].Topic("t")
	require.NoError(t, err)
	p, err := replog.NewProducer(t1, replog.String(), nil)
	require.NoError(t, err)
	for i := range 20 {
		_, err := p.Produce(ctx, replog.Message[string]{Key: []byte{byte(i)}, Value: fmt.Sprint(i)})
		require.NoError(t, err)
	}
	t2, err := logs[2].Topic("t")
	require.NoError(t, err)
	c, err := replog.NewConsumer(t2, replog.String(), nil)
	require.NoError(t, err)
	n := 0
	for _, err := range c.Records(ctx) {
		require.NoError(t, err)
		if n++; n == 20 {
			break
		}
	}

	// A stranger speaking plaintext, with a forged frame header claiming a
	// huge payload, is refused at the TLS handshake: nothing is allocated
	// for it and the node keeps serving.
	conn, err := net.Dial("tcp", addrs[0])
	require.NoError(t, err)
	frame := make([]byte, 18)
	binary.BigEndian.PutUint16(frame[0:], 0xAE7D) // dragonboat's request magic
	binary.BigEndian.PutUint64(frame[2:], 1<<40)  // 1 TiB payload
	_, _ = conn.Write(frame)
	require.NoError(t, conn.SetReadDeadline(time.Now().Add(5*time.Second)))
	_, err = conn.Read(make([]byte, 1))
	require.Error(t, err, "the node closes a plaintext connection")
	conn.Close()

	// A peer whose certificate another CA signed is refused too.
	other, err := certs.NewCA(t.TempDir(), "other")
	require.NoError(t, err)
	f, err := other.Issue("intruder", "127.0.0.1")
	require.NoError(t, err)
	cert, err := tls.LoadX509KeyPair(f.Cert, f.Key)
	require.NoError(t, err)
	pool := x509.NewCertPool()
	pem, err := os.ReadFile(f.CA)
	require.NoError(t, err)
	pool.AppendCertsFromPEM(pem)
	tc, err := tls.Dial("tcp", addrs[0], &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: pool, ServerName: "127.0.0.1"})
	if err == nil {
		// With TLS 1.3 the server's refusal of the client certificate
		// arrives after the client's handshake: it shows on the first read.
		_ = tc.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err = tc.Read(make([]byte, 1))
		tc.Close()
	}
	require.Error(t, err, "a certificate from another CA is refused")

	_, err = p.Produce(ctx, replog.Message[string]{Value: "still serving"})
	require.NoError(t, err)
	require.NoError(t, p.Close())
}

func TestTCPOptionsValidation(t *testing.T) {
	cases := []replog.Options{
		{Peers: map[uint64]string{1: "127.0.0.1:7001"}, ClusterID: "c"},                                              // no TLS
		{Peers: map[uint64]string{1: "10.1.2.3:7001"}, ClusterID: "c", InsecurePlaintext: true},                      // not loopback
		{Peers: map[uint64]string{1: "127.0.0.1:7001", 2: "10.1.2.3:7001"}, ClusterID: "c", InsecurePlaintext: true}, // one peer not loopback
		{Peers: map[uint64]string{1: "no-port"}, ClusterID: "c", InsecurePlaintext: true},
		{Peers: map[uint64]string{1: "127.0.0.1:7001"}, ClusterID: "c", TLS: &replog.TLSOptions{CAFile: "/nonexistent"}},
		{Peers: map[uint64]string{2: "127.0.0.1:7001"}, ClusterID: "c"},          // no address for node 1
		{Peers: map[uint64]string{1: "127.0.0.1:7001"}, InsecurePlaintext: true}, // no ClusterID
	}
	for _, o := range cases {
		_, err := replog.Open(t.TempDir(), &o)
		require.ErrorIs(t, err, replog.ErrInvalidConfig, "%+v", o)
	}
	// Plaintext on loopback is allowed when asked for explicitly.
	addr := freePorts(t, 1)[0]
	l, err := replog.Open(t.TempDir(), &replog.Options{Peers: map[uint64]string{1: addr}, ClusterID: "c", InsecurePlaintext: true})
	require.NoError(t, err)
	_, err = l.CreateTopic(context.Background(), "t", replog.TopicConfig{})
	require.NoError(t, err)
	require.NoError(t, l.Close())
}

// dialCertified connects to addr with the certificate in f, as any holder of
// a certificate from the cluster's CA could.
func dialCertified(t *testing.T, addr string, f certs.Files) *tls.Conn {
	t.Helper()
	cert, err := tls.LoadX509KeyPair(f.Cert, f.Key)
	require.NoError(t, err)
	pem, err := os.ReadFile(f.CA)
	require.NoError(t, err)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	host, _, err := net.SplitHostPort(addr)
	require.NoError(t, err)
	c, err := tls.Dial("tcp", addr, &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: pool, ServerName: host})
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	return c
}

// raftFrame is a frame of dragonboat's TCP framing (which replog's
// transport keeps) announcing size bytes: a 2-byte magic, then an 18-byte
// header (method, payload size, header CRC, payload CRC; the header CRC is
// over the header with its own field zeroed), then the payload.
func raftFrame(size uint64, payload []byte) []byte {
	b := make([]byte, 20, 20+len(payload))
	b[0], b[1] = 0xAE, 0x7D
	h := b[2:]
	binary.BigEndian.PutUint16(h[0:], 100) // a message batch
	binary.BigEndian.PutUint64(h[2:], size)
	binary.BigEndian.PutUint32(h[14:], crc32.ChecksumIEEE(payload))
	binary.BigEndian.PutUint32(h[10:], crc32.ChecksumIEEE(h))
	return append(b, payload...)
}

// A peer with a certificate from the cluster's CA forges frames. The node
// must refuse each one (dragonboat's stock transport allocated the size a
// header claimed, and its batch decoder panics on a truncated length),
// drop only that connection, and keep serving.
func TestTCPForgedFramesFromCertifiedPeer(t *testing.T) {
	ctx := testCtx(t)
	logs, addrs, ca, _ := openTCPCluster(t, 3, replog.Options{RTT: 10 * time.Millisecond, ElectionTicks: 30, HeartbeatTicks: 3})
	tp, err := logs[0].CreateTopic(ctx, "t", replog.TopicConfig{Partitions: 1, Replicas: 3})
	require.NoError(t, err)
	p, err := replog.NewProducer(tp, replog.String(), nil)
	require.NoError(t, err)
	defer p.Close()
	_, err = p.Produce(ctx, replog.Message[string]{Value: "before"})
	require.NoError(t, err)
	f, err := ca.Issue("certified-stranger", "127.0.0.1")
	require.NoError(t, err)

	for _, tc := range []struct {
		name  string
		frame []byte
	}{
		{"1 GiB announced", raftFrame(1<<30, nil)},
		{"truncated length in a batch", raftFrame(4, []byte{0x0a, 0x00, 0x0a, 0x80})},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dialCertified(t, addrs[0], f)
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			_, err = c.Write(tc.frame)
			require.NoError(t, err)
			require.NoError(t, c.SetReadDeadline(time.Now().Add(3*time.Second)))
			_, err = c.Read(make([]byte, 1))
			require.Error(t, err)
			var ne net.Error
			require.False(t, errors.As(err, &ne) && ne.Timeout(), "the node must drop the connection at once: %v", err)
			runtime.ReadMemStats(&after)
			require.Less(t, after.TotalAlloc-before.TotalAlloc, uint64(256<<20), "bytes allocated while the forged frame was read")
		})
	}

	_, err = p.Produce(ctx, replog.Message[string]{Value: "after"})
	require.NoError(t, err)
}

// sourceOnlyBatch is a marshalled Raft message batch with no messages that
// claims to come from src (protobuf field 3, SourceAddress).
func sourceOnlyBatch(src string) []byte {
	return append([]byte{0x1a, byte(len(src))}, src...)
}

// Node 2's certificate cannot pass for node 3 (they share a host, so only
// the address's port tells them apart): batches in node 3's name are
// refused, and a node cannot open as node 3 with it. (That a node dialling
// node 3's address refuses node 2's certificate is tested in replication.)
func TestTCPNodeCertificateCannotImpersonate(t *testing.T) {
	logs, addrs, _, files := openTCPCluster(t, 3, replog.Options{RTT: 10 * time.Millisecond, ElectionTicks: 30, HeartbeatTicks: 3})
	_ = logs

	c := dialCertified(t, addrs[0], files[1])
	b := sourceOnlyBatch(addrs[2])
	_, err := c.Write(raftFrame(uint64(len(b)), b))
	require.NoError(t, err)
	require.NoError(t, c.SetReadDeadline(time.Now().Add(3*time.Second)))
	_, err = c.Read(make([]byte, 1))
	var ne net.Error
	require.False(t, errors.As(err, &ne) && ne.Timeout(), "a batch in node 3's name from node 2's certificate must be refused at once: %v", err)

	// In its own name node 2's certificate is heard (the connection stays).
	c = dialCertified(t, addrs[0], files[1])
	b = sourceOnlyBatch(addrs[1])
	_, err = c.Write(raftFrame(uint64(len(b)), b))
	require.NoError(t, err)
	require.NoError(t, c.SetReadDeadline(time.Now().Add(time.Second)))
	_, err = c.Read(make([]byte, 1))
	require.True(t, errors.As(err, &ne) && ne.Timeout(), "node 2 in its own name: %v", err)

	// A node opened as node 3 with node 2's certificate is refused up
	// front: every peer would refuse it.
	peers := map[uint64]string{1: addrs[0], 2: addrs[1], 3: addrs[2]}
	_, err = replog.Open(t.TempDir(), &replog.Options{NodeID: 3, Peers: peers, ClusterID: "test", StartTimeout: 5 * time.Second,
		TLS: &replog.TLSOptions{CAFile: files[1].CA, CertFile: files[1].Cert, KeyFile: files[1].Key}})
	require.ErrorIs(t, err, replog.ErrInvalidConfig)
}

// Two clusters whose certificates share a CA do not talk: a node of cluster
// "b" that cluster "a" added (as if by a wrong address) drops cluster a's
// messages and never joins, while a node with cluster a's id joins at the
// same address. (SnapshotEntries is small so that the metadata log is
// compacted and the joiner is likely sent a snapshot over the transport.)
func TestTCPClusterIDSeparatesClusters(t *testing.T) {
	ctx := testCtx(t)
	logs, _, ca, _ := openTCPCluster(t, 3, replog.Options{ClusterID: "a", SnapshotEntries: 5, RTT: 10 * time.Millisecond, ElectionTicks: 30, HeartbeatTicks: 3})
	for i := range 4 { // enough metadata entries to compact the log past them
		_, err := logs[0].CreateTopic(ctx, fmt.Sprintf("t%d", i), replog.TopicConfig{Partitions: 1, Replicas: 3})
		require.NoError(t, err)
	}
	addr := freePorts(t, 1)[0]
	require.NoError(t, logs[0].AddNode(ctx, 4, addr))
	f, err := ca.IssueNode("node4", addr)
	require.NoError(t, err)
	open := func(clusterID string, timeout time.Duration) (*replog.Log, error) {
		return replog.Open(t.TempDir(), &replog.Options{
			NodeID: 4, Peers: map[uint64]string{4: addr}, Join: true, ClusterID: clusterID,
			StartTimeout: timeout, RTT: 10 * time.Millisecond, ElectionTicks: 30, HeartbeatTicks: 3,
			TLS: &replog.TLSOptions{CAFile: f.CA, CertFile: f.Cert, KeyFile: f.Key},
		})
	}

	l, err := open("b", 5*time.Second)
	if err == nil {
		l.Close()
	}
	require.Error(t, err, "a node of another cluster must not join")

	l, err = open("a", 30*time.Second)
	require.NoError(t, err)
	defer l.Close()
	_, err = l.Topic("t3")
	require.NoError(t, err, "the node of the same cluster sees every topic")
}
