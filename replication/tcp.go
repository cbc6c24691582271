package replication

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/lni/dragonboat/v4/config"
	"github.com/lni/dragonboat/v4/raftio"
	pb "github.com/lni/dragonboat/v4/raftpb"
)

// replog's TCP transport replaces dragonboat's stock one, which allocates
// whatever payload size a frame header claims (so any holder of a
// certificate from the CA could exhaust a node's memory), panics on some
// malformed batches, and cannot tie a certificate to a node.
//
// The framing is dragonboat's: a 2-byte magic, an 18-byte header (method,
// payload size, CRC of the header, CRC of the payload; the payload CRC is
// zero and unchecked under TLS, which authenticates every byte), then the
// payload, a marshalled pb.MessageBatch or pb.Chunk. Two zero bytes in place
// of the magic end a snapshot stream; the receiver answers with the same two
// bytes once it has handled every chunk before them.
//
// What this transport adds:
//   - the size in a header is checked against a cap before anything is
//     allocated, and a payload buffer grows only as bytes arrive;
//   - every read and write has a deadline, and an idle connection is closed;
//   - a frame that does not decode, a batch whose source address the peer's
//     certificate does not speak for, or a message that only the local node
//     may create closes that one connection; a panic in dragonboat while it
//     takes in a peer's frame is recovered and closes the connection too;
//   - with TLS, a dialled peer must present a certificate that speaks for
//     the address it was dialled at (see tls.go).

const (
	// DefaultMaxMessageBytes caps one received message-batch frame.
	// dragonboat fills a batch up to 64 MiB of Raft messages (entries are
	// replog record batches of at most 16 MiB each); the extra MiB covers
	// the messages' own fields.
	DefaultMaxMessageBytes = 65 << 20
	// maxChunkBytes caps one snapshot-chunk frame: dragonboat streams
	// snapshots in chunks of 2 MiB of data plus their metadata.
	maxChunkBytes = 4 << 20

	frameHeaderLen  = 18
	methodBatch     = 100
	methodChunk     = 200
	tcpTransportTag = "replog-tcp"

	dialTimeout      = 5 * time.Second
	handshakeTimeout = 10 * time.Second
	// ioTimeout bounds each read or write of up to ioPiece bytes once a
	// frame has started: a slow link is fine, a stalled one is not.
	ioTimeout = 10 * time.Second
	ioPiece   = 1 << 20
	// idleTimeout closes an inbound connection that sends no frame for this
	// long; dragonboat closes its idle sending connections after a minute.
	idleTimeout = 3 * time.Minute
	// closeAckTimeout bounds how long closing a snapshot stream waits for
	// the receiver to confirm it handled every chunk.
	closeAckTimeout = 30 * time.Second
	keepAlive       = 10 * time.Second
	sendBufferSize  = 2 << 20
)

var (
	frameMagic  = [2]byte{0xAE, 0x7D}
	streamEnd   = [2]byte{0, 0}
	crcTable    = crc32.IEEETable
	errEndFrame = errors.New("end of snapshot stream")
	// errChunkRefused: dragonboat refused a snapshot chunk (out of date, too
	// many streams...) and wants the stream closed; not the peer's fault.
	errChunkRefused = errors.New("snapshot chunk refused")

	// ErrFrameTooLarge reports a Raft frame over the transport's cap, sent
	// or received.
	ErrFrameTooLarge = errors.New("replog: raft frame too large")
	// ErrBadFrame reports a Raft frame that does not decode or carries what
	// no peer may send.
	ErrBadFrame = errors.New("replog: malformed raft frame")
)

// tcpOptions configure a [tcpTransport].
type tcpOptions struct {
	// tls is nil for plaintext (allowed by package replog on loopback only).
	tls *tlsConfig
	// maxMessage caps a received message-batch frame (and a sent one, which
	// the peer would refuse).
	maxMessage int
	log        *slog.Logger
}

// tcpTransportFactory plugs [tcpTransport] into dragonboat
// (config.ExpertConfig.TransportFactory).
type tcpTransportFactory struct {
	opts    tcpOptions
	observe func(pb.MessageBatch)
}

func (f *tcpTransportFactory) Create(nhc config.NodeHostConfig, onBatch raftio.MessageHandler, onChunk raftio.ChunkHandler) raftio.ITransport {
	return newTCPTransport(nhc.GetListenAddress(), f.opts, observed(onBatch, f.observe), onChunk)
}

// Validate reports whether addr is a host:port address. dragonboat's node
// registry panics on an address Validate refuses, so the transport checks
// every source address a peer claims with it too.
func (*tcpTransportFactory) Validate(addr string) bool { return validAddress(addr) }

func validAddress(addr string) bool {
	host, port, err := net.SplitHostPort(addr)
	if err != nil || host == "" {
		return false
	}
	p, err := strconv.ParseUint(port, 10, 16)
	return err == nil && p > 0
}

// tcpTransport carries Raft messages and snapshot chunks over TCP,
// optionally with mutual TLS. Safe for concurrent use: dragonboat sends on
// many connections at once, each used by one goroutine at a time.
type tcpTransport struct {
	listenAddr string
	opts       tcpOptions
	onBatch    raftio.MessageHandler
	onChunk    raftio.ChunkHandler
	log        *slog.Logger
	done       chan struct{} // closed by Close
	wg         sync.WaitGroup

	mu struct {
		sync.Mutex
		ln     net.Listener
		conns  map[net.Conn]struct{} // inbound, closed by Close
		closed bool
	}
}

func newTCPTransport(listenAddr string, opts tcpOptions, onBatch raftio.MessageHandler, onChunk raftio.ChunkHandler) *tcpTransport {
	if opts.maxMessage <= 0 {
		opts.maxMessage = DefaultMaxMessageBytes
	}
	t := &tcpTransport{listenAddr: listenAddr, opts: opts, onBatch: onBatch, onChunk: onChunk, log: opts.log, done: make(chan struct{})}
	if t.log == nil {
		t.log = slog.New(slog.DiscardHandler)
	}
	t.mu.conns = map[net.Conn]struct{}{}
	return t
}

func (t *tcpTransport) Name() string { return tcpTransportTag }

// Start listens on the listen address and serves peers until Close.
func (t *tcpTransport) Start() error {
	ln, err := (&net.ListenConfig{KeepAlive: keepAlive}).Listen(context.Background(), "tcp", t.listenAddr)
	if err != nil {
		return fmt.Errorf("replog: listen for raft traffic: %w", err)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.mu.closed {
		ln.Close()
		return net.ErrClosed
	}
	t.mu.ln = ln
	t.wg.Add(1)
	go t.accept(ln)
	return nil
}

// Close stops listening, closes every inbound connection and waits for
// their goroutines. Outbound connections end when dragonboat closes them or
// cancels the context it dialled them with. Safe to call twice.
func (t *tcpTransport) Close() error {
	t.mu.Lock()
	if !t.mu.closed {
		t.mu.closed = true
		close(t.done)
		if t.mu.ln != nil {
			t.mu.ln.Close()
		}
		for c := range t.mu.conns {
			c.Close()
		}
	}
	t.mu.Unlock()
	t.wg.Wait()
	return nil
}

func (t *tcpTransport) accept(ln net.Listener) {
	defer t.wg.Done()
	backoff := 5 * time.Millisecond
	for {
		c, err := ln.Accept()
		if err != nil {
			select {
			case <-t.done:
				return
			default:
			}
			// Out of file descriptors, say: wait instead of spinning (the
			// stock transport panicked here).
			t.log.Warn("raft transport: accept", "err", err)
			select {
			case <-t.done:
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, time.Second)
			continue
		}
		backoff = 5 * time.Millisecond
		t.mu.Lock()
		if t.mu.closed {
			t.mu.Unlock()
			c.Close()
			return
		}
		t.mu.conns[c] = struct{}{}
		t.wg.Add(1)
		t.mu.Unlock()
		go t.serve(c)
	}
}

// serve reads frames from one inbound connection until it ends or
// misbehaves; only that connection is closed.
func (t *tcpTransport) serve(raw net.Conn) {
	defer t.wg.Done()
	defer func() {
		t.mu.Lock()
		delete(t.mu.conns, raw)
		t.mu.Unlock()
		raw.Close()
	}()
	log := t.log.With("peer", raw.RemoteAddr().String())
	var c net.Conn = raw
	var peer *peerIdentity
	if t.opts.tls != nil {
		tc := tls.Server(raw, t.opts.tls.server)
		_ = tc.SetDeadline(time.Now().Add(handshakeTimeout))
		if err := tc.Handshake(); err != nil {
			log.Debug("raft transport: TLS handshake refused", "err", err)
			return
		}
		peer = &peerIdentity{cert: tc.ConnectionState().PeerCertificates[0]}
		c = tc
	}
	fr := frameReader{conn: c, crc: t.opts.tls == nil, maxMessage: t.opts.maxMessage}
	for {
		method, payload, err := fr.next()
		switch {
		case errors.Is(err, errEndFrame):
			_ = c.SetWriteDeadline(time.Now().Add(ioTimeout))
			_, _ = c.Write(streamEnd[:])
			return
		case errors.Is(err, ErrFrameTooLarge), errors.Is(err, ErrBadFrame):
			log.Warn("raft transport: peer refused", "err", err)
			return
		case err != nil:
			log.Debug("raft transport: connection ended", "err", err)
			return
		}
		if err := t.deliver(method, payload, peer); errors.Is(err, errChunkRefused) {
			log.Debug("raft transport: snapshot stream ended", "err", err)
			return
		} else if err != nil {
			log.Warn("raft transport: peer refused", "err", err)
			return
		}
	}
}

// deliver decodes one frame and hands it to dragonboat.
func (t *tcpTransport) deliver(method uint16, payload []byte, peer *peerIdentity) (err error) {
	// dragonboat's decoders and handlers panic on some inputs a peer
	// controls: a batch whose trailing bytes hold a truncated length (the
	// batch decoder indexes past the end), or a replica id already known at
	// another address (its node registry panics). Such a frame is the
	// peer's fault, not the node's: refuse it and keep running.
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: dragonboat panicked on it: %v", ErrBadFrame, r)
		}
	}()
	if method == methodChunk {
		var c pb.Chunk
		if err := c.Unmarshal(payload); err != nil {
			return fmt.Errorf("%w: chunk: %v", ErrBadFrame, err)
		}
		if !t.onChunk(c) {
			return fmt.Errorf("%w: chunk %d of shard %d", errChunkRefused, c.ChunkId, c.ShardID)
		}
		return nil
	}
	var b pb.MessageBatch
	if err := b.Unmarshal(payload); err != nil {
		return fmt.Errorf("%w: batch: %v", ErrBadFrame, err)
	}
	if err := checkBatch(&b, peer); err != nil {
		return err
	}
	t.onBatch(b)
	return nil
}

// checkBatch refuses a batch that dragonboat would panic on, that carries a
// message only the local node may create, or (with TLS; peer is nil
// without) whose source address the peer's certificate does not speak for.
func checkBatch(b *pb.MessageBatch, peer *peerIdentity) error {
	if !validAddress(b.SourceAddress) {
		return fmt.Errorf("%w: source address %q", ErrBadFrame, b.SourceAddress)
	}
	if peer != nil {
		if err := peer.check(b.SourceAddress); err != nil {
			return err
		}
	}
	for _, m := range b.Requests {
		switch {
		case m.To == 0:
			return fmt.Errorf("%w: %s message to replica 0", ErrBadFrame, m.Type)
		case m.Type == pb.InstallSnapshot:
			// Made locally from streamed chunks; from the wire it would
			// name a snapshot file on this node's disk.
			return fmt.Errorf("%w: InstallSnapshot message from the network", ErrBadFrame)
		}
	}
	return nil
}

// frameReader reads frames from one connection, refusing oversized ones
// before allocating. Not safe for concurrent use.
type frameReader struct {
	conn       net.Conn
	crc        bool // check payload CRCs (plaintext only)
	maxMessage int
	head       [2 + frameHeaderLen]byte
}

// next returns the next frame's method and payload, or errEndFrame at the
// end of a snapshot stream.
func (r *frameReader) next() (uint16, []byte, error) {
	// Wait for the magic as long as an idle peer may stay silent; once it
	// arrives, the rest must follow promptly.
	if err := r.conn.SetReadDeadline(time.Now().Add(idleTimeout)); err != nil {
		return 0, nil, err
	}
	if _, err := io.ReadFull(r.conn, r.head[:2]); err != nil {
		return 0, nil, err
	}
	switch [2]byte(r.head[:2]) {
	case frameMagic:
	case streamEnd:
		return 0, nil, errEndFrame
	default:
		return 0, nil, fmt.Errorf("%w: bad magic %x", ErrBadFrame, r.head[:2])
	}
	if err := r.conn.SetReadDeadline(time.Now().Add(ioTimeout)); err != nil {
		return 0, nil, err
	}
	h := r.head[2:]
	if _, err := io.ReadFull(r.conn, h); err != nil {
		return 0, nil, err
	}
	method, size, payloadCRC, err := decodeFrameHeader(h)
	if err != nil {
		return 0, nil, err
	}
	limit := uint64(r.maxMessage)
	if method == methodChunk {
		limit = maxChunkBytes
	}
	if size > limit {
		return 0, nil, fmt.Errorf("%w: %d bytes announced, the limit is %d", ErrFrameTooLarge, size, limit)
	}
	payload, err := readPayload(r.conn, int(size))
	if err != nil {
		return 0, nil, err
	}
	if r.crc && crc32.Checksum(payload, crcTable) != payloadCRC {
		return 0, nil, fmt.Errorf("%w: payload checksum", ErrBadFrame)
	}
	return method, payload, nil
}

// decodeFrameHeader checks a frame header's CRC and method. h is restored
// before it returns.
func decodeFrameHeader(h []byte) (method uint16, size uint64, payloadCRC uint32, err error) {
	got := binary.BigEndian.Uint32(h[10:])
	binary.BigEndian.PutUint32(h[10:], 0)
	want := crc32.Checksum(h, crcTable)
	binary.BigEndian.PutUint32(h[10:], got)
	if got != want {
		return 0, 0, 0, fmt.Errorf("%w: header checksum", ErrBadFrame)
	}
	method = binary.BigEndian.Uint16(h)
	size = binary.BigEndian.Uint64(h[2:])
	if method != methodBatch && method != methodChunk {
		return 0, 0, 0, fmt.Errorf("%w: method %d", ErrBadFrame, method)
	}
	if size == 0 {
		return 0, 0, 0, fmt.Errorf("%w: empty payload", ErrBadFrame)
	}
	return method, size, binary.BigEndian.Uint32(h[14:]), nil
}

// readPayload reads n bytes in pieces, each with its own deadline, growing
// the buffer as they arrive: a peer that announces a large frame and
// stalls costs little memory.
func readPayload(c net.Conn, n int) ([]byte, error) {
	var buf []byte
	for len(buf) < n {
		piece := min(n-len(buf), ioPiece)
		if cap(buf)-len(buf) < piece {
			nb := make([]byte, len(buf), min(n, max(2*cap(buf), len(buf)+piece)))
			copy(nb, buf)
			buf = nb
		}
		if err := c.SetReadDeadline(time.Now().Add(ioTimeout)); err != nil {
			return nil, err
		}
		m, err := io.ReadFull(c, buf[len(buf):len(buf)+piece])
		buf = buf[:len(buf)+m]
		if err != nil {
			return nil, err
		}
	}
	return buf, nil
}

// writeFrame writes buf, whose first 2+frameHeaderLen bytes are left for the
// magic and header, as one frame.
func writeFrame(c net.Conn, method uint16, buf []byte, crc bool) error {
	payload := buf[2+frameHeaderLen:]
	copy(buf, frameMagic[:])
	h := buf[2 : 2+frameHeaderLen]
	binary.BigEndian.PutUint16(h, method)
	binary.BigEndian.PutUint64(h[2:], uint64(len(payload)))
	binary.BigEndian.PutUint32(h[10:], 0)
	var pc uint32
	if crc {
		pc = crc32.Checksum(payload, crcTable)
	}
	binary.BigEndian.PutUint32(h[14:], pc)
	binary.BigEndian.PutUint32(h[10:], crc32.Checksum(h, crcTable))
	for len(buf) > 0 {
		if err := c.SetWriteDeadline(time.Now().Add(ioTimeout)); err != nil {
			return err
		}
		n, err := c.Write(buf[:min(len(buf), ioPiece)])
		if err != nil {
			return err
		}
		buf = buf[n:]
	}
	return nil
}

// GetConnection dials target for Raft messages.
func (t *tcpTransport) GetConnection(ctx context.Context, target string) (raftio.IConnection, error) {
	c, stop, err := t.dial(ctx, target)
	if err != nil {
		return nil, err
	}
	return &tcpConn{c: c, stop: stop, crc: t.opts.tls == nil, max: t.opts.maxMessage, buf: make([]byte, sendBufferSize)}, nil
}

// GetSnapshotConnection dials target for a snapshot stream.
func (t *tcpTransport) GetSnapshotConnection(ctx context.Context, target string) (raftio.ISnapshotConnection, error) {
	c, stop, err := t.dial(ctx, target)
	if err != nil {
		return nil, err
	}
	return &tcpSnapshotConn{c: c, stop: stop, crc: t.opts.tls == nil}, nil
}

// dial connects to target and, with TLS, checks that its certificate
// speaks for target. The connection is closed when ctx ends (dragonboat
// cancels it when the node closes), which unblocks a stalled write at
// once; stop undoes that.
func (t *tcpTransport) dial(ctx context.Context, target string) (net.Conn, func() bool, error) {
	d := net.Dialer{Timeout: dialTimeout, KeepAlive: keepAlive}
	c, err := d.DialContext(ctx, "tcp", target)
	if err != nil {
		return nil, nil, err
	}
	if t.opts.tls != nil {
		cfg, err := t.opts.tls.client(target)
		if err != nil {
			c.Close()
			return nil, nil, err
		}
		tc := tls.Client(c, cfg)
		hctx, cancel := context.WithTimeout(ctx, handshakeTimeout)
		err = tc.HandshakeContext(hctx)
		cancel()
		if err != nil {
			c.Close()
			return nil, nil, fmt.Errorf("replog: TLS handshake with %s: %w", target, err)
		}
		c = tc
	}
	stop := context.AfterFunc(ctx, func() { c.Close() })
	return c, stop, nil
}

// tcpConn sends message batches. Used by one goroutine at a time.
type tcpConn struct {
	c    net.Conn
	stop func() bool
	crc  bool
	max  int
	buf  []byte // reused for batches up to sendBufferSize
}

func (c *tcpConn) Close() {
	c.stop()
	c.c.Close()
}

func (c *tcpConn) SendMessageBatch(b pb.MessageBatch) error {
	sz := 2 + frameHeaderLen + b.SizeUpperLimit()
	buf := c.buf
	if sz > len(buf) {
		buf = make([]byte, sz)
	}
	n, err := b.MarshalTo(buf[2+frameHeaderLen:])
	if err != nil {
		return err
	}
	if n > c.max {
		return fmt.Errorf("%w: %d-byte message batch, the limit is %d", ErrFrameTooLarge, n, c.max)
	}
	return writeFrame(c.c, methodBatch, buf[:2+frameHeaderLen+n], c.crc)
}

// tcpSnapshotConn sends one snapshot stream. Used by one goroutine at a
// time.
type tcpSnapshotConn struct {
	c    net.Conn
	stop func() bool
	crc  bool
}

// Close ends the stream and waits (at most closeAckTimeout) until the
// receiver confirms it handled every chunk, so that closing cannot discard
// chunks still in flight.
func (c *tcpSnapshotConn) Close() {
	defer c.c.Close()
	defer c.stop()
	if err := c.c.SetWriteDeadline(time.Now().Add(ioTimeout)); err != nil {
		return
	}
	if _, err := c.c.Write(streamEnd[:]); err != nil {
		return
	}
	if err := c.c.SetReadDeadline(time.Now().Add(closeAckTimeout)); err != nil {
		return
	}
	var ack [2]byte
	_, _ = io.ReadFull(c.c, ack[:])
}

func (c *tcpSnapshotConn) SendChunk(ch pb.Chunk) error {
	buf := make([]byte, 2+frameHeaderLen+ch.Size())
	n, err := ch.MarshalTo(buf[2+frameHeaderLen:])
	if err != nil {
		return err
	}
	if n > maxChunkBytes {
		return fmt.Errorf("%w: %d-byte snapshot chunk, the limit is %d", ErrFrameTooLarge, n, maxChunkBytes)
	}
	return writeFrame(c.c, methodChunk, buf[:2+frameHeaderLen+n], c.crc)
}
