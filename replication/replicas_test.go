package replication

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// recorder keeps log records as "LEVEL message component=...". It gets
// dragonboat's too when its node was opened last (dragonboat's logger is
// process-wide).
type recorder struct {
	mu   sync.Mutex
	msgs []string
}

func (r *recorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *recorder) Handle(_ context.Context, rec slog.Record) error {
	line := rec.Level.String() + " " + rec.Message
	rec.Attrs(func(a slog.Attr) bool {
		line += " " + a.String()
		return true
	})
	r.mu.Lock()
	r.msgs = append(r.msgs, line)
	r.mu.Unlock()
	return nil
}
func (r *recorder) WithAttrs([]slog.Attr) slog.Handler { return r }
func (r *recorder) WithGroup(string) slog.Handler      { return r }

func (r *recorder) matching(substr string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, m := range r.msgs {
		if strings.Contains(m, substr) {
			out = append(out, m)
		}
	}
	return out
}

// testCluster is in-memory nodes over the in-process transport.
type testCluster struct {
	// retention, if set before nodes start, is their RetentionInterval.
	retention time.Duration
	t         *testing.T
	net       *Network
	peers     map[uint64]string
	stores    map[uint64]*MemStorage
	nodes     map[uint64]*Node
	logs      map[uint64]*recorder
}

func newTestCluster(t *testing.T, n int) *testCluster {
	return newTestClusterRetaining(t, n, 0)
}

// newTestClusterRetaining is newTestCluster with the nodes' retention loop
// (retention, quiet snapshots, Raft log compaction) every retention.
func newTestClusterRetaining(t *testing.T, n int, retention time.Duration) *testCluster {
	return newTestClusterWith(t, n, retention, nil)
}

// newTestClusterWith is newTestClusterRetaining with each node's
// configuration changed by edit, if set, when it first starts.
func newTestClusterWith(t *testing.T, n int, retention time.Duration, edit func(*Config)) *testCluster {
	c := &testCluster{retention: retention, t: t, net: &Network{}, peers: map[uint64]string{}, stores: map[uint64]*MemStorage{},
		nodes: map[uint64]*Node{}, logs: map[uint64]*recorder{}}
	for id := uint64(1); id <= uint64(n); id++ {
		c.peers[id] = NewInProcessAddress()
		c.stores[id] = NewMemStorage()
	}
	t.Cleanup(func() {
		for _, n := range c.nodes {
			n.Close()
		}
	})
	c.startAll(edit)
	return c
}

// startAll opens every node of c at once (each Open waits for the metadata
// group's quorum), with their configuration changed by edit if set.
func (c *testCluster) startAll(edit func(*Config)) {
	c.t.Helper()
	var wg sync.WaitGroup
	var mu sync.Mutex
	for id := range c.peers {
		wg.Go(func() {
			n, rec, err := c.startWith(id, edit)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				c.t.Errorf("open node %d: %v", id, err)
				return
			}
			c.nodes[id], c.logs[id] = n, rec
		})
	}
	wg.Wait()
	if c.t.Failed() {
		c.t.FailNow()
	}
}

func (c *testCluster) start(id uint64) (*Node, *recorder, error) { return c.startWith(id, nil) }

// startWith is start with the node's configuration changed by edit, if set.
func (c *testCluster) startWith(id uint64, edit func(*Config)) (*Node, *recorder, error) {
	rec := &recorder{}
	cfg := Config{
		InMemory: true, NodeID: id, RaftAddress: c.peers[id], Members: c.peers,
		InProcess: true, Network: c.net, Storage: c.stores[id],
		RTT: 10 * time.Millisecond, ElectionTicks: 30, HeartbeatTicks: 3,
		SnapshotEntries: 10000, StartTimeout: 30 * time.Second,
		RetentionInterval: c.retention,
		Logger:            slog.New(rec),
	}
	if edit != nil {
		edit(&cfg)
	}
	n, err := Open(cfg)
	return n, rec, err
}

func (c *testCluster) stop(id uint64) {
	c.t.Helper()
	if err := c.nodes[id].Close(); err != nil {
		c.t.Fatalf("close node %d: %v", id, err)
	}
	delete(c.nodes, id)
}

func (c *testCluster) restart(id uint64) {
	c.t.Helper()
	n, rec, err := c.start(id)
	if err != nil {
		c.t.Fatalf("restart node %d: %v", id, err)
	}
	c.nodes[id], c.logs[id] = n, rec
}

// reassign moves a partition to nodes and waits until the move is done.
func (c *testCluster) reassign(ctx context.Context, via uint64, topic string, nodes ...uint64) PartitionMeta {
	c.t.Helper()
	n := c.nodes[via]
	if err := n.Reassign(ctx, topic, 0, nodes); err != nil {
		c.t.Fatalf("reassign %s to %v: %v", topic, nodes, err)
	}
	for {
		pm := n.Metadata().Topics[topic].Partitions[0]
		if !pm.Moving && slices.Equal(pm.Replicas, nodes) {
			return pm
		}
		select {
		case <-ctx.Done():
			c.t.Fatalf("move of %s to %v not done: %+v", topic, nodes, pm)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// eventually waits for cond, failing the test after 20s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting: %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestReplicaDataRemoved checks that a node deletes the Raft data of
// replicas it no longer hosts, under their own replica ids, also when the
// change happened while it was down, and that a restart has nothing left
// to redo.
func TestReplicaDataRemoved(t *testing.T) {
	// Cleanups run last first: this one after the cluster's.
	opt := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, opt) })
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := newTestCluster(t, 3)

	// "moved": on every node, then moved off node 3 while it is down.
	tm, err := c.nodes[1].CreateTopic(ctx, "moved", 1, 3, TopicSettings{})
	if err != nil {
		t.Fatal(err)
	}
	moved := tm.Partitions[0].Shard
	eventually(t, "node 3 hosts moved", func() bool { return c.nodes[3].nh.HasNodeInfo(moved, 3) })

	// "deleted": node 3 joins it by a reassignment, under a fresh replica
	// id, then the topic is deleted while node 3 is down.
	tm, err = c.nodes[1].CreateTopic(ctx, "deleted", 1, 2, TopicSettings{})
	if err != nil {
		t.Fatal(err)
	}
	if slices.Contains(tm.Partitions[0].Replicas, 3) {
		c.reassign(ctx, 1, "deleted", 1, 2)
	}
	pm := c.reassign(ctx, 1, "deleted", 1, 2, 3)
	deleted, rid := pm.Shard, pm.ReplicaID(3)
	if rid == 3 {
		t.Fatalf("node 3 joined deleted under its node id")
	}
	eventually(t, "node 3 hosts deleted", func() bool { return c.nodes[3].nh.HasNodeInfo(deleted, rid) })

	c.stop(3)
	c.reassign(ctx, 1, "moved", 1, 2)
	if err := c.nodes[1].DeleteTopic(ctx, "deleted"); err != nil {
		t.Fatal(err)
	}
	// Node 3 replays its metadata log from the start, through placements
	// that are no longer true: it must not start (and so bootstrap again)
	// the replicas it no longer hosts, but delete their data.
	c.restart(3)
	nh := c.nodes[3].nh
	eventually(t, "node 3 deletes the Raft data of the replica moved away", func() bool { return !nh.HasNodeInfo(moved, 3) })
	eventually(t, "node 3 deletes the Raft data of the deleted topic's replica", func() bool { return !nh.HasNodeInfo(deleted, rid) })
	if got := c.logs[3].matching("deleted a replica"); len(got) != 2 {
		t.Errorf("node 3 logged %q, want two deletions", got)
	}
	started := func() []string {
		// dragonboat logs "[SHARD:REPLICA] created, ..." when a replica
		// starts; it logs to the node opened last, node 3.
		return append(c.logs[3].matching(fmt.Sprintf("[%05d:%05d] created", moved, 3)),
			c.logs[3].matching(fmt.Sprintf("[%05d:%05d] created", deleted, rid))...)
	}
	if got := started(); len(got) != 0 {
		t.Errorf("node 3 started replicas it no longer hosts: %q", got)
	}

	// A restart finds nothing to clean up.
	c.stop(3)
	c.restart(3)
	time.Sleep(time.Second) // a few reconciler passes
	if got := c.logs[3].matching("deleted a replica"); len(got) != 0 {
		t.Errorf("after a restart, node 3 logged %q", got)
	}
	if got := started(); len(got) != 0 {
		t.Errorf("after a restart, node 3 started replicas it no longer hosts: %q", got)
	}
	if nh := c.nodes[3].nh; nh.HasNodeInfo(moved, 3) || nh.HasNodeInfo(deleted, rid) {
		t.Errorf("after a restart, node 3 holds Raft data of replicas it no longer hosts")
	}
	if got := c.logs[3].matching("ERROR replog:"); len(got) != 0 {
		t.Errorf("after a restart, node 3 logged %q", got)
	}
}

// TestReplicaBackUnderNewID: a node moved off a partition and back on
// before it saw the first move (its reconciler paused, as on a loaded
// machine) runs a replica under an id the group no longer has; it must
// replace it with one under its new id, which then catches up.
func TestReplicaBackUnderNewID(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := newTestCluster(t, 3)
	tm, err := c.nodes[1].CreateTopic(ctx, "flip", 1, 3, TopicSettings{})
	if err != nil {
		t.Fatal(err)
	}
	shard := tm.Partitions[0].Shard
	eventually(t, "node 3 runs its replica", func() bool { return c.nodes[3].nh.HasNodeInfo(shard, 3) })
	// Node 1 leads (and is the preferred leader), so the moves converge
	// while node 3's reconciler waits.
	c.reassign(ctx, 1, "flip", 1, 2, 3)
	eventually(t, "node 1 leads", func() bool {
		if c.nodes[1].LeaderNode(shard) == 1 {
			return true
		}
		_ = c.nodes[1].nh.RequestLeaderTransfer(shard, 1)
		return false
	})

	pause := make(chan struct{})
	c.nodes[3].reconcilePause.Store(&pause)
	time.Sleep(500 * time.Millisecond) // a pass under way ends
	c.reassign(ctx, 1, "flip", 1, 2)
	pm := c.reassign(ctx, 1, "flip", 1, 2, 3)
	rid := pm.ReplicaID(3)
	if rid == 3 {
		t.Fatalf("node 3 rejoined under its old id")
	}
	c.nodes[3].reconcilePause.Store(nil)
	close(pause)

	eventually(t, "node 3 runs a replica under its new id", func() bool { return c.nodes[3].nh.HasNodeInfo(shard, rid) })
	eventually(t, "node 3 dropped the old replica", func() bool { return !c.nodes[3].nh.HasNodeInfo(shard, 3) })
	p, err := c.nodes[1].Partition(ctx, shard)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.nodes[1].syncPropose(ctx, p.Shard, partCmd(t, 0, 0, 0, "after")); err != nil {
		t.Fatal(err)
	}
	eventually(t, "node 3's new replica applies new records", func() bool {
		p3, err := c.nodes[3].Partition(ctx, shard)
		return err == nil && p3.replicaID == rid && p3.HighWatermark() == 1
	})
}
