package replogkafka

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/replog/replog"
	"github.com/replog/replog/internal/kafkabridge"
	"github.com/replog/replog/replication"
)

// Options configures [Listen]. The zero value (or nil) is valid.
type Options struct {
	// Logger receives the listener's messages: connections refused or
	// dropped for a bad frame at Warn, connections coming and going at
	// Debug. Nil (the default): the Log's own logger
	// ([replog.Options.Logger]).
	Logger *slog.Logger
	// MaxRequestBytes caps one request, in bytes, as Kafka's
	// socket.request.max.bytes: a frame that claims more closes its
	// connection before anything is allocated for it. Default 100 MiB.
	MaxRequestBytes int32
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
}

// Default limits.
const (
	DefaultMaxRequestBytes = 100 << 20
	DefaultIdleTimeout     = 10 * time.Minute
	DefaultWriteTimeout    = 30 * time.Second
	DefaultMaxConnections  = 1000
	DefaultMaxInFlight     = 16
)

func (o *Options) withDefaults() (Options, error) {
	var c Options
	if o != nil {
		c = *o
	}
	if c.MaxRequestBytes == 0 {
		c.MaxRequestBytes = DefaultMaxRequestBytes
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
	if c.MaxRequestBytes < minRequestBytes || c.IdleTimeout < 0 || c.WriteTimeout < 0 || c.MaxConnections < 0 || c.MaxInFlight < 0 {
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
func Listen(l *replog.Log, addr string, opts *Options) (*Server, error) {
	if l == nil {
		return nil, fmt.Errorf("%w: nil Log", replog.ErrInvalidConfig)
	}
	o, err := opts.withDefaults()
	if err != nil {
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
	s := &Server{l: l, node: node, opts: o, log: logger, ln: ln, host: host, port: int32(port), groups: newCoordinator()}
	s.mu.conns = map[*conn]struct{}{}
	s.ctx, s.stop = context.WithCancel(context.Background())
	s.wg.Add(4)
	go s.acceptLoop()
	go s.register(adv)
	go s.watchCoordinator()
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
			c.nc.Close()
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
	c := &conn{s: s, nc: nc, queue: make(chan *pending, s.opts.MaxInFlight)}
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
	nc     net.Conn
	ctx    context.Context // ends when the connection or the server closes
	cancel context.CancelFunc
	queue  chan *pending // closed by readLoop when it stops
}

// pending is a request whose response is on its way.
type pending struct {
	corr     int32
	flexible bool // response header v1 (tagged fields)
	// reply waits for the response. A nil response means none is sent
	// (Produce with acks=0). It returns promptly once ctx ends.
	reply func(ctx context.Context) kmsg.Response
}

// shut drops the connection: the client sees it closed.
func (c *conn) shut() {
	c.cancel()
	c.nc.Close()
}

func (c *conn) readLoop() {
	defer c.s.wg.Done()
	defer close(c.queue)
	defer c.cancel() // the writer abandons what is pending
	var size [4]byte
	for {
		c.nc.SetReadDeadline(time.Now().Add(c.s.opts.IdleTimeout))
		if _, err := io.ReadFull(c.nc, size[:]); err != nil {
			c.dropped(err)
			return
		}
		n := int32(binary.BigEndian.Uint32(size[:]))
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
		if max := maxRequestBytes(int16(binary.BigEndian.Uint16(head[:])), c.s.opts.MaxRequestBytes); n > max {
			c.s.log.Warn("replogkafka: request too large for its API; closing the connection",
				"remote", c.remote(), "api_key", int16(binary.BigEndian.Uint16(head[:])), "size", n, "max", max)
			c.nc.Close()
			return
		}
		buf, err := readFrame(c.nc, head[:], int(n))
		if err != nil {
			c.dropped(err)
			return
		}
		p, err := c.s.decode(c, buf)
		if err != nil {
			c.s.log.Warn("replogkafka: bad request; closing the connection", "remote", c.remote(), "err", err)
			c.nc.Close()
			return
		}
		select {
		case c.queue <- p:
		case <-c.ctx.Done():
			return
		}
	}
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
	var buf []byte
	for p := range c.queue {
		resp := p.reply(c.ctx)
		if resp == nil || c.ctx.Err() != nil {
			continue // drain: readLoop closes the queue once it sees ctx end
		}
		buf = append(buf[:0], 0, 0, 0, 0)
		buf = binary.BigEndian.AppendUint32(buf, uint32(p.corr))
		if p.flexible {
			buf = append(buf, 0) // no tagged fields
		}
		buf = resp.AppendTo(buf)
		binary.BigEndian.PutUint32(buf, uint32(len(buf)-4))
		c.nc.SetWriteDeadline(time.Now().Add(c.s.opts.WriteTimeout))
		if _, err := c.nc.Write(buf); err != nil {
			c.dropped(err)
			c.shut()
		}
		if cap(buf) > 1<<20 {
			buf = nil // keep no large buffer per idle connection
		}
	}
}
