package replogkafka

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"
	"golang.org/x/sync/semaphore"

	"github.com/replog/replog"
	"github.com/replog/replog/internal/kafkabridge"
	"github.com/replog/replog/replication"
)

// Options configures [Listen]. The zero value (or nil) is valid on a
// loopback address; elsewhere TLS and client authentication are required
// (see the package doc's Security).
type Options struct {
	// Logger receives the listener's messages: connections refused or
	// dropped for a bad frame, a failed TLS handshake or a failed SASL
	// authentication at Warn, connections coming and going and the
	// identity they authenticated with at Debug. Nil (the default): the
	// Log's own logger ([replog.Options.Logger]).
	Logger *slog.Logger
	// MaxRequestBytes caps one request, in bytes, as Kafka's
	// socket.request.max.bytes: a frame that claims more closes its
	// connection before anything is allocated for it. Default 100 MiB.
	MaxRequestBytes int32
	// MaxQueuedBytes caps the bytes of requests read from all
	// connections together and not yet answered, as Kafka's
	// queued.max.request.bytes: a connection whose next request would
	// pass it waits, first come first served, before reading that
	// request (TCP then pushes back on the client). It bounds the
	// listener's request memory across connections; a decoded request
	// costs up to a few times its bytes, and responses are not counted.
	// Default 256 MiB; at least MaxRequestBytes.
	MaxQueuedBytes int64
	// MaxFetchBytes caps the record bytes one Fetch response carries,
	// whatever the client asks (Kafka's fetch.max.bytes); as in Kafka,
	// the first batch found is sent whole even past it, so a client always
	// makes progress. Default 55 MiB.
	MaxFetchBytes int32
	// IdleTimeout closes a connection on which no request arrived for this
	// long, as Kafka's connections.max.idle.ms; it also bounds the time a
	// request may take to arrive once its first bytes did. Default 10
	// minutes.
	IdleTimeout time.Duration
	// WriteTimeout closes a connection whose client does not take a
	// response within this time. Default 30 seconds.
	WriteTimeout time.Duration
	// MaxConnections caps the open client connections; a connection past
	// it is closed as soon as it is accepted. Default 1000.
	MaxConnections int
	// MaxInFlight caps the requests of one connection read ahead of their
	// responses (responses are always written in request order): Produce
	// requests of one client pipeline up to it. Default 16.
	MaxInFlight int
	// AutoCreateTopics creates a topic (with one partition) when a
	// Metadata request names one that does not exist and allows it, as
	// Kafka's auto.create.topics.enable. Default false.
	AutoCreateTopics bool
	// AdvertisedAddress is the host:port that Metadata tells clients to
	// connect to, on every node of the cluster: the listener registers it
	// in the cluster metadata under this node's id. Default: the address
	// the listener is bound to.
	AdvertisedAddress string

	// TLS serves every connection over TLS with this configuration
	// (cloned; [ServerTLSConfig] makes one from PEM files). With
	// ClientAuth tls.RequireAndVerifyClientCert and ClientCAs, a client
	// must present a certificate the CA signed (mutual TLS). Nil (the
	// default): plaintext, which Listen allows only on a loopback
	// address (see InsecureAllowOpenNetwork).
	TLS *tls.Config
	// SASL makes clients authenticate with SASL (SCRAM-SHA-256,
	// SCRAM-SHA-512, or PLAIN over TLS) before any request but
	// ApiVersions. Nil (the default): no SASL; a client is then known
	// only by its certificate, with mutual TLS.
	SASL *SASLOptions
	// HandshakeTimeout bounds the TLS handshake, and the time from
	// connecting to being authenticated with SASL: a connection that
	// takes longer is closed. Default 10 seconds.
	HandshakeTimeout time.Duration
	// InsecureAllowOpenNetwork lets Listen serve a non-loopback address
	// (another machine's clients, 0.0.0.0, or an empty host) without TLS,
	// or with TLS but without client authentication (neither mutual TLS
	// nor SASL). Then anyone who can reach the port can read, write and
	// delete every topic, and with plaintext read the traffic: only for
	// a network secured by other means. Listen refuses such an address
	// with [ErrInsecureListener] unless this is set, and logs a warning
	// when it is used. Default false. Loopback addresses (127.0.0.0/8,
	// ::1, localhost) never need it.
	InsecureAllowOpenNetwork bool
}

// Default limits.
const (
	DefaultMaxRequestBytes  = 100 << 20
	DefaultMaxQueuedBytes   = 256 << 20
	DefaultMaxFetchBytes    = 55 << 20
	DefaultIdleTimeout      = 10 * time.Minute
	DefaultWriteTimeout     = 30 * time.Second
	DefaultMaxConnections   = 1000
	DefaultMaxInFlight      = 16
	DefaultHandshakeTimeout = 10 * time.Second
)

func (o *Options) withDefaults() (Options, error) {
	var c Options
	if o != nil {
		c = *o
	}
	if c.MaxRequestBytes == 0 {
		c.MaxRequestBytes = DefaultMaxRequestBytes
	}
	if c.MaxFetchBytes == 0 {
		c.MaxFetchBytes = DefaultMaxFetchBytes
	}
	if c.MaxQueuedBytes == 0 {
		c.MaxQueuedBytes = max(DefaultMaxQueuedBytes, int64(c.MaxRequestBytes))
	}
	if c.IdleTimeout == 0 {
		c.IdleTimeout = DefaultIdleTimeout
	}
	if c.WriteTimeout == 0 {
		c.WriteTimeout = DefaultWriteTimeout
	}
	if c.MaxConnections == 0 {
		c.MaxConnections = DefaultMaxConnections
	}
	if c.MaxInFlight == 0 {
		c.MaxInFlight = DefaultMaxInFlight
	}
	if c.HandshakeTimeout == 0 {
		c.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if c.MaxRequestBytes < minRequestBytes || c.MaxFetchBytes < 0 || c.MaxQueuedBytes < int64(c.MaxRequestBytes) || c.IdleTimeout < 0 || c.WriteTimeout < 0 || c.MaxConnections < 0 || c.MaxInFlight < 0 || c.HandshakeTimeout < 0 {
		return c, fmt.Errorf("%w: listener options %+v", replog.ErrInvalidConfig, c)
	}
	return c, nil
}

// minRequestBytes is the smallest request header: api key, version and
// correlation id.
const minRequestBytes = 8

// Server is a Kafka listener serving one [replog.Log]. Safe for concurrent
// use; Close may be called twice.
type Server struct {
	l     *replog.Log
	node  *replication.Node
	opts  Options
	log   *slog.Logger
	ln    net.Listener
	host  string // advertised in Metadata
	port  int32
	ctx   context.Context // ends on Close
	stop  context.CancelFunc
	wg    sync.WaitGroup
	once  sync.Once
	lnErr error // from closing ln, set once

	// groups holds the Kafka consumer groups (see groups.go).
	groups *coordinator
	// txns caches the transaction coordinator's view of transactional
	// ids for produce checks (see txn_produce.go).
	txns *txnCache
	// shares holds the members of the share groups this node
	// coordinates (share_group.go), shareSessions the members' share
	// sessions here (share_fetch.go).
	shares        *shareGroups
	shareSessions *shareSessions
	// shareIDs caches Kafka topic ids by metadata, and remembers the
	// share partitions fetched through this node.
	shareIDs struct {
		sync.Mutex
		meta  *replication.Metadata
		ids   map[[16]byte]*replication.TopicMeta
		known map[replication.SharePartitionKey]bool
	}
	// queued holds MaxQueuedBytes: each request read takes its size
	// until its response is written; queuedBytes mirrors what is held.
	queued      *semaphore.Weighted
	queuedBytes atomic.Int64
	// fakeKey salts the SCRAM exchange of unknown users (see
	// scramServer).
	fakeKey []byte

	mu struct {
		sync.Mutex
		closed bool
		conns  map[*conn]struct{}
	}
}

// Listen serves Kafka clients for l on addr (host:port; port 0 picks a
// free one, see [Server.Addr]) until [Server.Close] or the Log closes.
// replog opens no port unless asked: this is the asking. The listener
// registers its advertised address in the cluster's metadata in the
// background, retrying until the metadata group takes it (see the package
// doc's Clusters).
//
// On an address other than loopback, Listen requires [Options.TLS] and a
// way to authenticate clients (mutual TLS or [Options.SASL]), and
// otherwise returns an error matching [ErrInsecureListener] (and
// [replog.ErrInvalidConfig]), unless [Options.InsecureAllowOpenNetwork].
func Listen(l *replog.Log, addr string, opts *Options) (*Server, error) {
	if l == nil {
		return nil, fmt.Errorf("%w: nil Log", replog.ErrInvalidConfig)
	}
	o, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	if err := o.checkSecurity(addr); err != nil {
		return nil, err
	}
	node := kafkabridge.Node(l)
	logger := o.Logger
	if logger == nil {
		logger = node.Logger()
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("replogkafka: listen: %w", err)
	}
	if err := o.checkBound(ln, addr, logger); err != nil {
		ln.Close()
		return nil, err
	}
	adv := o.AdvertisedAddress
	if adv == "" {
		adv = ln.Addr().String()
	}
	host, portStr, err := net.SplitHostPort(adv)
	port, perr := strconv.ParseUint(portStr, 10, 16)
	if err != nil || perr != nil {
		ln.Close()
		return nil, fmt.Errorf("%w: advertised address %q is not host:port", replog.ErrInvalidConfig, adv)
	}
	s := &Server{l: l, node: node, opts: o, log: logger, ln: ln, host: host, port: int32(port), groups: newCoordinator(), txns: newTxnCache(), fakeKey: make([]byte, 32),
		queued: semaphore.NewWeighted(o.MaxQueuedBytes), shares: newShareGroups(), shareSessions: newShareSessions()}
	s.shareIDs.known = map[replication.SharePartitionKey]bool{}
	rand.Read(s.fakeKey)
	s.mu.conns = map[*conn]struct{}{}
	s.ctx, s.stop = context.WithCancel(context.Background())
	s.wg.Add(5)
	go s.acceptLoop()
	go s.register(adv)
	go s.watchCoordinator()
	go s.expireShareMembers()
	go func() {
		// The listener goes with its Log.
		defer s.wg.Done()
		select {
		case <-l.Done():
			s.shutdown()
		case <-s.ctx.Done():
		}
	}()
	s.log.Info("replogkafka: listening", "addr", ln.Addr().String(), "advertised", adv)
	return s, nil
}

// Addr is the address the listener is bound to.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Close stops accepting, closes every connection (requests under way are
// abandoned: a produce may still be stored, as when a broker stops) and
// waits for the listener's goroutines. It may be called twice.
func (s *Server) Close() error {
	s.shutdown()
	s.wg.Wait()
	if errors.Is(s.lnErr, net.ErrClosed) {
		return nil
	}
	return s.lnErr
}

// shutdown stops the listener and its connections without waiting.
func (s *Server) shutdown() {
	s.once.Do(func() {
		s.mu.Lock()
		s.mu.closed = true
		for c := range s.mu.conns {
			c.tcp.Close() // not c.nc: TLS's close_notify could block
		}
		s.mu.Unlock()
		s.stop()
		s.groups.close()
		s.lnErr = s.ln.Close()
	})
}

func (s *Server) acceptLoop() {
	defer s.wg.Done()
	var backoff time.Duration
	for {
		nc, err := s.ln.Accept()
		if err != nil {
			if s.ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors and the like: back off as
			// net/http does, rather than spin.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			s.log.Warn("replogkafka: accept failed", "err", err, "retry_in", backoff)
			t := time.NewTimer(backoff)
			select {
			case <-t.C:
			case <-s.ctx.Done():
				t.Stop()
				return
			}
			continue
		}
		backoff = 0
		s.admit(nc)
	}
}

// admit starts serving nc, unless the server is closed or full.
func (s *Server) admit(nc net.Conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.mu.closed {
		nc.Close()
		return
	}
	if len(s.mu.conns) >= s.opts.MaxConnections {
		nc.Close()
		s.log.Warn("replogkafka: connection refused: MaxConnections reached", "remote", nc.RemoteAddr().String(), "max", s.opts.MaxConnections)
		return
	}
	c := &conn{s: s, nc: nc, tcp: nc, queue: make(chan *pending, s.opts.MaxInFlight)}
	if s.opts.TLS != nil {
		c.nc = tls.Server(nc, s.opts.TLS)
	}
	c.ctx, c.cancel = context.WithCancel(s.ctx)
	s.mu.conns[c] = struct{}{}
	s.log.Debug("replogkafka: connection opened", "remote", nc.RemoteAddr().String())
	s.wg.Add(2)
	go c.readLoop()
	go c.writeLoop()
}

func (s *Server) forget(c *conn) {
	s.mu.Lock()
	delete(s.mu.conns, c)
	s.mu.Unlock()
}

// conn is one client connection: readLoop reads and decodes requests and
// starts their work in order; writeLoop waits for each one's response in
// the same order and writes it.
type conn struct {
	s      *Server
	nc     net.Conn // a *tls.Conn over tcp with Options.TLS, else tcp
	tcp    net.Conn
	ctx    context.Context // ends when the connection or the server closes
	cancel context.CancelFunc
	queue  chan *pending // closed by readLoop when it stops

	// Owned by readLoop (decode runs there).
	sasl saslState
	// closeAfterReply: the request just decoded is the last; the
	// connection closes once its response is written (a failed SASL
	// authentication).
	closeAfterReply bool
	authed          atomic.Bool // SASL authentication done
}

// pending is a request whose response is on its way.
type pending struct {
	corr     int32
	flexible bool // response header v1 (tagged fields)
	// reply waits for the response. A nil response means none is sent
	// (Produce with acks=0). It returns promptly once ctx ends.
	reply func(ctx context.Context) kmsg.Response
	// raw, if not nil, is sent instead: a raw SASL token (after
	// SaslHandshake v0), with its size and no header.
	raw []byte
	// held is what the request holds of MaxQueuedBytes, given back
	// once its response is written or abandoned.
	held int64
}

// hold takes n bytes of MaxQueuedBytes for a request about to be read,
// waiting while other requests hold too much; it fails once ctx ends.
func (s *Server) hold(ctx context.Context, n int64) error {
	if err := s.queued.Acquire(ctx, n); err != nil {
		return err
	}
	s.queuedBytes.Add(n)
	return nil
}

// unhold gives back what hold took.
func (s *Server) unhold(n int64) {
	if n > 0 {
		s.queuedBytes.Add(-n)
		s.queued.Release(n)
	}
}

// shut drops the connection: the client sees it closed.
func (c *conn) shut() {
	c.cancel()
	c.tcp.Close()
}

func (c *conn) readLoop() {
	defer c.s.wg.Done()
	defer close(c.queue)
	last := false
	defer func() {
		if !last {
			c.cancel() // the writer abandons what is pending
		}
	}()
	if c.s.opts.SASL != nil {
		defer c.startAuthTimer().Stop()
	}
	if !c.tlsHandshake() {
		return
	}
	var size [4]byte
	for {
		c.nc.SetReadDeadline(time.Now().Add(c.s.opts.IdleTimeout))
		if _, err := io.ReadFull(c.nc, size[:]); err != nil {
			c.dropped(err)
			return
		}
		n := int32(binary.BigEndian.Uint32(size[:]))
		if c.sasl.raw {
			p, err := c.rawToken(n)
			if err != nil {
				c.s.log.Warn("replogkafka: raw SASL token refused; closing the connection", "remote", c.remote(), "err", err)
				c.nc.Close()
				return
			}
			select {
			case c.queue <- p:
			case <-c.ctx.Done():
				return
			}
			continue
		}
		if n < minRequestBytes || n > c.s.opts.MaxRequestBytes {
			c.s.log.Warn("replogkafka: request size out of bounds; closing the connection",
				"remote", c.remote(), "size", n, "max", c.s.opts.MaxRequestBytes)
			c.nc.Close()
			return
		}
		var head [minRequestBytes]byte
		if _, err := io.ReadFull(c.nc, head[:]); err != nil {
			c.dropped(err)
			return
		}
		key := int16(binary.BigEndian.Uint16(head[:]))
		if !c.authenticated() && !preAuthAPI(key) {
			// Kafka closes such a connection too; nothing of the
			// request is read.
			c.s.log.Warn("replogkafka: request before SASL authentication; closing the connection",
				"remote", c.remote(), "api_key", key)
			c.nc.Close()
			return
		}
		max := maxRequestBytes(key, c.s.opts.MaxRequestBytes)
		if !c.authenticated() {
			max = min(max, maxPreAuthBytes)
		}
		if n > max {
			c.s.log.Warn("replogkafka: request too large for its API; closing the connection",
				"remote", c.remote(), "api_key", key, "size", n, "max", max)
			c.nc.Close()
			return
		}
		if err := c.s.hold(c.ctx, int64(n)); err != nil {
			return // the connection or the server is closing
		}
		buf, err := readFrame(c.nc, head[:], int(n))
		if err != nil {
			c.s.unhold(int64(n))
			c.dropped(err)
			return
		}
		p, err := c.s.decode(c, buf)
		if err != nil {
			c.s.unhold(int64(n))
			c.s.log.Warn("replogkafka: bad request; closing the connection", "remote", c.remote(), "err", err)
			c.nc.Close()
			return
		}
		p.held = int64(n)
		select {
		case c.queue <- p:
		case <-c.ctx.Done():
			c.s.unhold(p.held)
			return
		}
		if c.closeAfterReply {
			// The writer sends what is queued, then closes.
			last = true
			return
		}
	}
}

// rawToken reads a raw SASL token of n bytes (after SaslHandshake v0)
// and answers it; an error closes the connection, as Kafka does.
func (c *conn) rawToken(n int32) (*pending, error) {
	if n < 0 || n > maxPreAuthBytes {
		return nil, fmt.Errorf("%w: %d bytes", errRawToken, n)
	}
	tok, err := readFrame(c.nc, nil, int(n))
	if err != nil {
		return nil, err
	}
	resp, err := c.s.saslRaw(c, tok)
	if err != nil {
		return nil, err
	}
	return &pending{raw: resp}, nil
}

// readFrame reads the rest of an n-byte frame that starts with head,
// allocating as bytes arrive rather than all n at once, so that a client
// claiming a large frame and sending nothing costs little.
func readFrame(r io.Reader, head []byte, n int) ([]byte, error) {
	buf := append(make([]byte, 0, min(n, 64<<10)), head...)
	for len(buf) < n {
		if len(buf) == cap(buf) {
			buf = append(buf, make([]byte, min(n-len(buf), len(buf)))...)[:len(buf)]
		}
		k, err := r.Read(buf[len(buf):min(n, cap(buf))])
		buf = buf[:len(buf)+k]
		if err != nil && len(buf) < n {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
	}
	return buf, nil
}

func (c *conn) dropped(err error) {
	if c.ctx.Err() == nil && !errors.Is(err, io.EOF) {
		c.s.log.Debug("replogkafka: connection closed", "remote", c.remote(), "err", err)
	}
}

func (c *conn) remote() string { return c.nc.RemoteAddr().String() }

func (c *conn) writeLoop() {
	defer c.s.wg.Done()
	defer c.s.forget(c)
	defer c.nc.Close()
	defer c.cancel()
	var buf []byte
	for p := range c.queue {
		if p.raw != nil {
			buf = append(append(buf[:0], 0, 0, 0, 0), p.raw...)
		} else {
			resp := p.reply(c.ctx)
			if resp == nil || c.ctx.Err() != nil {
				c.s.unhold(p.held)
				continue // drain: readLoop closes the queue once it sees ctx end
			}
			buf = append(buf[:0], 0, 0, 0, 0)
			buf = binary.BigEndian.AppendUint32(buf, uint32(p.corr))
			if p.flexible {
				buf = append(buf, 0) // no tagged fields
			}
			buf = resp.AppendTo(buf)
		}
		binary.BigEndian.PutUint32(buf, uint32(len(buf)-4))
		c.nc.SetWriteDeadline(time.Now().Add(c.s.opts.WriteTimeout))
		_, err := c.nc.Write(buf)
		c.s.unhold(p.held)
		if err != nil {
			c.dropped(err)
			c.shut()
		}
		if cap(buf) > 1<<20 {
			buf = nil // keep no large buffer per idle connection
		}
	}
}
