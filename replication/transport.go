package replication

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"sync"

	"github.com/lni/dragonboat/v4/config"
	chantransport "github.com/lni/dragonboat/v4/plugin/chan"
	"github.com/lni/dragonboat/v4/raftio"
	pb "github.com/lni/dragonboat/v4/raftpb"
)

// inProcessTransport is dragonboat's channel transport with a Validate that
// accepts any address (the plugin's own Validate panics, and in-process
// addresses are names, not host:port pairs) and, when a Network is set,
// links that tests can cut.
type inProcessTransport struct {
	chantransport.ChanTransportFactory
	net     *Network
	observe func(pb.MessageBatch)
}

func (*inProcessTransport) Validate(string) bool { return true }

func (f *inProcessTransport) Create(c config.NodeHostConfig, h raftio.MessageHandler, ch raftio.ChunkHandler) raftio.ITransport {
	t := f.ChanTransportFactory.Create(c, observed(h, f.observe), ch)
	if f.net == nil {
		return t
	}
	return &cuttableTransport{ITransport: t, self: c.RaftAddress, net: f.net}
}

// Network is the in-process network of a test cluster: it can split the
// nodes into groups that cannot reach each other. Safe for concurrent use.
type Network struct {
	mu    sync.RWMutex
	group map[string]int  // address -> group; nil means fully connected
	down  map[string]bool // addresses cut off from everyone
	links map[[2]string]bool
}

// Links replaces the groups with explicit links: only the listed pairs of
// addresses (either way round) can talk. For partitions that groups cannot
// express, such as a ring.
func (n *Network) Links(pairs [][2]string) {
	l := map[[2]string]bool{}
	for _, p := range pairs {
		l[p] = true
		l[[2]string{p[1], p[0]}] = true
	}
	n.mu.Lock()
	n.links, n.group = l, nil
	n.mu.Unlock()
}

// SetDown cuts addr off from every other node (down) or reconnects it.
func (n *Network) SetDown(addr string, down bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.down == nil {
		n.down = map[string]bool{}
	}
	if down {
		n.down[addr] = true
	} else {
		delete(n.down, addr)
	}
}

// Partition splits the network: nodes in different groups (by Raft
// address) cannot talk; an address in no group is cut off from everyone.
func (n *Network) Partition(groups ...[]string) {
	g := map[string]int{}
	for i, addrs := range groups {
		for _, a := range addrs {
			g[a] = i + 1
		}
	}
	n.mu.Lock()
	n.group, n.links = g, nil
	n.mu.Unlock()
}

// Heal reconnects every node (but those set down).
func (n *Network) Heal() {
	n.mu.Lock()
	n.group, n.links = nil, nil
	n.mu.Unlock()
}

func (n *Network) cut(a, b string) bool {
	n.mu.RLock()
	defer n.mu.RUnlock()
	if n.down[a] || n.down[b] {
		return true
	}
	if n.links != nil {
		return !n.links[[2]string{a, b}]
	}
	if n.group == nil {
		return false
	}
	ga, gb := n.group[a], n.group[b]
	return ga == 0 || gb == 0 || ga != gb
}

var errLinkCut = errors.New("replog: link cut by the test network")

type cuttableTransport struct {
	raftio.ITransport
	self string
	net  *Network
}

func (t *cuttableTransport) GetConnection(ctx context.Context, target string) (raftio.IConnection, error) {
	if t.net.cut(t.self, target) {
		return nil, errLinkCut
	}
	c, err := t.ITransport.GetConnection(ctx, target)
	if err != nil {
		return nil, err
	}
	return &cuttableConn{IConnection: c, t: t, target: target}, nil
}

func (t *cuttableTransport) GetSnapshotConnection(ctx context.Context, target string) (raftio.ISnapshotConnection, error) {
	if t.net.cut(t.self, target) {
		return nil, errLinkCut
	}
	c, err := t.ITransport.GetSnapshotConnection(ctx, target)
	if err != nil {
		return nil, err
	}
	return &cuttableSnapConn{ISnapshotConnection: c, t: t, target: target}, nil
}

type cuttableConn struct {
	raftio.IConnection
	t      *cuttableTransport
	target string
}

func (c *cuttableConn) SendMessageBatch(b pb.MessageBatch) error {
	if c.t.net.cut(c.t.self, c.target) {
		return errLinkCut
	}
	return c.IConnection.SendMessageBatch(b)
}

type cuttableSnapConn struct {
	raftio.ISnapshotConnection
	t      *cuttableTransport
	target string
}

func (c *cuttableSnapConn) SendChunk(ch pb.Chunk) error {
	if c.t.net.cut(c.t.self, c.target) {
		return errLinkCut
	}
	return c.ISnapshotConnection.SendChunk(ch)
}

// NewInProcessAddress returns a fresh address for the in-process transport.
// dragonboat's channel transport keeps a process-wide map of addresses, so
// every node of every test needs its own.
func NewInProcessAddress() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return "inproc-" + hex.EncodeToString(b[:])
}

// observed wraps a transport's message handler so that observe sees each
// batch received first.
func observed(h raftio.MessageHandler, observe func(pb.MessageBatch)) raftio.MessageHandler {
	if observe == nil {
		return h
	}
	return func(b pb.MessageBatch) {
		observe(b)
		h(b)
	}
}
