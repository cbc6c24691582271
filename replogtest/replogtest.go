// Package replogtest runs replog clusters inside one process for tests, as
// net/http/httptest runs servers: every node keeps its data in memory and
// the nodes talk over dragonboat's in-process transport, so no port is
// opened and a cluster starts in about a second.
package replogtest

import (
	"fmt"
	"maps"
	"sync"
	"testing"
	"time"

	"github.com/replog/replog"
)

// Options configures [NewClusterWithOptions]. The zero value is valid.
type Options struct {
	// ElectionTicks and HeartbeatTicks (in 10ms RTTs) default to 30 and 3:
	// quicker elections than production's 50 keep tests short, while still
	// holding leaders steady on a loaded 2-core machine under -race.
	ElectionTicks, HeartbeatTicks int
	// Logger, when set, receives the nodes' logs (replog.Options.Logger).
	Base replog.Options
}

// Cluster is n replog nodes in one process. Its methods are safe for
// concurrent use.
type Cluster struct {
	tb    testing.TB
	peers map[uint64]string
	logs  []*replog.Log
	once  sync.Once
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
	var opts Options
	if o != nil {
		opts = *o
	}
	if opts.ElectionTicks == 0 {
		opts.ElectionTicks = 30
	}
	if opts.HeartbeatTicks == 0 {
		opts.HeartbeatTicks = 3
	}
	c := &Cluster{tb: tb, peers: map[uint64]string{}, logs: make([]*replog.Log, n)}
	for i := range n {
		c.peers[uint64(i+1)] = replog.NewInProcessAddress()
	}
	// Nodes start together: each Open waits for the metadata group, which
	// needs a quorum of them.
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			no := opts.Base
			no.InMemory = true
			no.NodeID = uint64(i + 1)
			no.Peers = maps.Clone(c.peers)
			no.ElectionTicks = opts.ElectionTicks
			no.HeartbeatTicks = opts.HeartbeatTicks
			no.Expert.InProcessTransport = true
			if no.StartTimeout == 0 {
				no.StartTimeout = 30 * time.Second
			}
			c.logs[i], errs[i] = replog.Open("", &no)
		}()
	}
	wg.Wait()
	tb.Cleanup(c.Close)
	for i, err := range errs {
		if err != nil {
			c.Close()
			tb.Fatalf("replogtest: start node %d: %v", i+1, err)
		}
	}
	return c
}

// Size is the number of nodes.
func (c *Cluster) Size() int { return len(c.logs) }

// Log returns node i (0-based; its node id is i+1).
func (c *Cluster) Log(i int) *replog.Log {
	if i < 0 || i >= len(c.logs) {
		panic(fmt.Sprintf("replogtest: node %d of %d", i, len(c.logs)))
	}
	return c.logs[i]
}

// Close stops every node. Safe to call twice; t.Cleanup calls it.
func (c *Cluster) Close() {
	c.once.Do(func() {
		var wg sync.WaitGroup
		for _, l := range c.logs {
			if l == nil {
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := l.Close(); err != nil {
					c.tb.Errorf("replogtest: close: %v", err)
				}
			}()
		}
		wg.Wait()
	})
}
