// Package replogtest runs replog clusters inside one process for tests, as
// net/http/httptest runs servers: every node keeps its data in memory and
// the nodes talk over dragonboat's in-process transport, so no port is
// opened and a cluster starts in about a second. Tests can crash and
// restart nodes and partition the network.
package replogtest

import (
	"context"
	"maps"
	"sync"
	"testing"
	"time"

	"github.com/replog/replog/internal/expert"
	"github.com/replog/replog/replication"

	"github.com/replog/replog"
)

// Options configures [NewClusterWithOptions]. The zero value is valid.
type Options struct {
	// ElectionTicks and HeartbeatTicks default to 30 and 3, in RTTs of
	// 10ms unless Base.RTT says otherwise: elections quicker than
	// production's (a second) keep tests short, while still holding
	// leaders steady on a loaded 2-core machine under -race.
	ElectionTicks, HeartbeatTicks int
	// RetentionInterval is how often partition leaders check retention
	// limits. Default (0) as in production, 5s.
	RetentionInterval time.Duration
	// Base is applied to every node (Logger, SnapshotEntries, ...); the
	// cluster sets InMemory, NodeID, Peers and the in-process transport.
	Base replog.Options
	// AfterTxnDecision, if set, is called on node when it has recorded
	// the decision (commit or abort) of transactional id txnID's
	// transaction and before it writes the transaction's markers: a fault
	// injected while it blocks leaves the transaction decided and
	// incomplete, which the transaction coordinator's leader must then
	// complete. It must return once the node crashed (see
	// [Cluster.Crash]).
	AfterTxnDecision func(node int, txnID string)
}

// Cluster is n replog nodes in one process. Its methods are safe for
// concurrent use; they fail the test (t.Fatal) on errors, so call them from
// the test's goroutine.
type Cluster struct {
	tb    testing.TB
	opts  Options
	peers map[uint64]string
	net   *replication.Network
	store []*replication.MemStorage

	initial int // nodes that formed the cluster; later ones joined

	mu   sync.Mutex
	logs []*replog.Log // nil while crashed
	once sync.Once
}

// NewCluster starts an n-node in-memory cluster and registers its Close
// with t.Cleanup. It fails the test if the cluster does not start.
func NewCluster(tb testing.TB, n int) *Cluster {
	tb.Helper()
	return NewClusterWithOptions(tb, n, nil)
}

// NewClusterWithOptions is [NewCluster] with options.
func NewClusterWithOptions(tb testing.TB, n int, o *Options) *Cluster {
	tb.Helper()
	if n < 1 {
		tb.Fatalf("replogtest: cluster of %d nodes", n)
	}
	c := &Cluster{tb: tb, peers: map[uint64]string{}, net: &replication.Network{}, logs: make([]*replog.Log, n)}
	if o != nil {
		c.opts = *o
	}
	if c.opts.ElectionTicks == 0 {
		c.opts.ElectionTicks = 30
	}
	if c.opts.HeartbeatTicks == 0 {
		c.opts.HeartbeatTicks = 3
	}
	for i := range n {
		c.peers[uint64(i+1)] = replication.NewInProcessAddress()
		c.store = append(c.store, replication.NewMemStorage())
	}
	c.initial = n
	tb.Cleanup(c.Close)
	// Nodes start together: each Open waits for the metadata group, which
	// needs a quorum of them.
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l, err := c.open(i)
			c.mu.Lock()
			c.logs[i], errs[i] = l, err
			c.mu.Unlock()
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			tb.Fatalf("replogtest: start node %d: %v", i, err)
		}
	}
	return c
}

func (c *Cluster) open(i int) (*replog.Log, error) {
	no := c.opts.Base
	no.Join = i >= c.initial
	no.InMemory = true
	no.NodeID = uint64(i + 1)
	c.mu.Lock()
	no.Peers = maps.Clone(c.peers)
	storage := c.store[i]
	c.mu.Unlock()
	if no.RTT == 0 {
		no.RTT = 10 * time.Millisecond // nodes in one process: no network to wait for
	}
	no.ElectionTicks = c.opts.ElectionTicks
	no.HeartbeatTicks = c.opts.HeartbeatTicks
	x := expert.Options{InProcessTransport: true, Network: c.net, Storage: storage, RetentionInterval: c.opts.RetentionInterval}
	if h := c.opts.AfterTxnDecision; h != nil {
		x.AfterTxnDecision = func(txnID string) { h(i, txnID) }
	}
	expert.Attach(&no, x)
	if no.StartTimeout == 0 {
		no.StartTimeout = 30 * time.Second
	}
	return replog.Open("", &no)
}

// Size is the number of nodes.
func (c *Cluster) Size() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.store)
}

// AddNode starts a new node that joins the cluster (added through node
// via, a running node) and returns its index.
func (c *Cluster) AddNode(via int) int {
	c.tb.Helper()
	c.mu.Lock()
	i := len(c.store)
	addr := replication.NewInProcessAddress()
	c.peers[uint64(i+1)] = addr
	c.store = append(c.store, replication.NewMemStorage())
	c.logs = append(c.logs, nil)
	c.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := c.Log(via).AddNode(ctx, uint64(i+1), addr); err != nil {
		c.tb.Fatalf("replogtest: add node %d: %v", i, err)
	}
	l, err := c.open(i)
	if err != nil {
		c.tb.Fatalf("replogtest: start node %d: %v", i, err)
	}
	c.mu.Lock()
	c.logs[i] = l
	c.mu.Unlock()
	return i
}

// RemoveNode removes node i from the cluster (through node via) and stops
// it. Its partitions must have been reassigned.
func (c *Cluster) RemoveNode(i, via int) {
	c.tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := c.Log(via).RemoveNode(ctx, uint64(i+1)); err != nil {
		c.tb.Fatalf("replogtest: remove node %d: %v", i, err)
	}
	c.mu.Lock()
	l := c.logs[i]
	c.logs[i] = nil
	c.mu.Unlock()
	if l != nil {
		l.Close()
	}
}

// Log returns node i (0-based; its node id is i+1), or nil while it is
// crashed.
func (c *Cluster) Log(i int) *replog.Log {
	c.check(i)
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.logs[i]
}

// Address is node i's Raft address.
func (c *Cluster) Address(i int) string {
	c.check(i)
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.peers[uint64(i+1)]
}

func (c *Cluster) check(i int) {
	if n := c.Size(); i < 0 || i >= n {
		c.tb.Fatalf("replogtest: node %d of %d", i, n)
	}
}

// Crash stops node i abruptly: it is cut off from the others first, its
// producers and consumers fail with replog.ErrClosed, and every write it
// had not fsynced is lost. Restart brings it back.
func (c *Cluster) Crash(i int) {
	c.tb.Helper()
	c.check(i)
	c.mu.Lock()
	l := c.logs[i]
	c.logs[i] = nil
	c.mu.Unlock()
	if l == nil {
		c.tb.Fatalf("replogtest: node %d is already down", i)
	}
	// Cut the node off before its storage stops syncing, so it cannot
	// take part in a commit its crash would then undo.
	c.net.SetDown(c.Address(i), true)
	c.mu.Lock()
	storage := c.store[i]
	c.mu.Unlock()
	storage.Crash(func() {
		expert.Abort(l) // producers stop sending at once
		if err := l.Close(); err != nil {
			c.tb.Logf("replogtest: crash node %d: %v", i, err)
		}
	})
}

// Restart reopens a crashed node from what it had synced, and waits until
// it has caught up with the cluster's metadata.
func (c *Cluster) Restart(i int) {
	c.tb.Helper()
	c.check(i)
	c.mu.Lock()
	up := c.logs[i] != nil
	c.mu.Unlock()
	if up {
		c.tb.Fatalf("replogtest: node %d is running", i)
	}
	c.net.SetDown(c.Address(i), false)
	l, err := c.open(i)
	if err != nil {
		c.tb.Fatalf("replogtest: restart node %d: %v", i, err)
	}
	c.mu.Lock()
	c.logs[i] = l
	c.mu.Unlock()
}

// Partition splits the nodes (by index) into groups that cannot reach each
// other; a node in no group is isolated.
func (c *Cluster) Partition(groups ...[]int) {
	var addrs [][]string
	for _, g := range groups {
		var a []string
		for _, i := range g {
			a = append(a, c.Address(i))
		}
		addrs = append(addrs, a)
	}
	c.net.Partition(addrs...)
}

// Ring lets each node talk only to its two neighbours in index order: the
// partition Jepsen uses to find leaders that keep a stale majority.
func (c *Cluster) Ring() {
	n := c.Size()
	var pairs [][2]string
	for i := range n {
		pairs = append(pairs, [2]string{c.Address(i), c.Address((i + 1) % n)})
	}
	c.net.Links(pairs)
}

// Heal reconnects every running node.
func (c *Cluster) Heal() { c.net.Heal() }

// Leader returns the index of the node leading the partition's Raft group,
// as seen by the first running node that hosts it, or -1 if none is known.
func (c *Cluster) Leader(topic string, partition int) int {
	for i := range c.Size() {
		l := c.Log(i)
		if l == nil {
			continue
		}
		t, err := l.Topic(topic)
		if err != nil {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		id, err := t.Leader(ctx, partition)
		cancel()
		if err == nil && id != 0 {
			return int(id) - 1
		}
	}
	return -1
}

// WaitLeader waits until the partition has a leader that the given running
// nodes agree on, and returns its index; it fails the test after timeout.
func (c *Cluster) WaitLeader(topic string, partition int, timeout time.Duration) int {
	c.tb.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if l := c.Leader(topic, partition); l >= 0 && c.Log(l) != nil {
			return l
		}
		time.Sleep(10 * time.Millisecond)
	}
	c.tb.Fatalf("replogtest: no leader for %s/%d within %v", topic, partition, timeout)
	return -1
}

// Close stops every running node. Safe to call twice; t.Cleanup calls it.
func (c *Cluster) Close() {
	c.once.Do(func() {
		c.mu.Lock()
		logs := c.logs
		c.mu.Unlock()
		var wg sync.WaitGroup
		for i, l := range logs {
			if l == nil {
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := l.Close(); err != nil {
					c.tb.Errorf("replogtest: close node %d: %v", i, err)
				}
			}()
		}
		wg.Wait()
	})
}
