// Package replication runs replog's Raft groups on dragonboat: one metadata
// group for the cluster and one group per partition, whose on-disk state
// machine appends record batches to the node's Pebble store.
package replication

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/lni/dragonboat/v4"
	"github.com/lni/dragonboat/v4/config"
	"github.com/lni/dragonboat/v4/raftio"
	sm "github.com/lni/dragonboat/v4/statemachine"
	lnivfs "github.com/lni/vfs"

	"github.com/replog/replog/internal/logadapt"
	"github.com/replog/replog/storage"
)

// Config configures a [Node]. The root package fills defaults and validates.
type Config struct {
	Dir      string
	InMemory bool
	NodeID   uint64
	// RaftAddress is this node's address; with InProcess any unique name.
	RaftAddress string
	// ListenAddress, if set, is where the TCP transport listens.
	ListenAddress string
	// TLS enables mutual TLS on the TCP transport.
	TLS *TLSFiles
	// Members maps every initial node id to its Raft address, self included
	// (with Join: the nodes this node knows of, self included).
	Members map[uint64]string
	// Join starts a node that joins a running cluster, which must add it
	// (AddNode) for it to start.
	Join bool
	// InProcess uses dragonboat's in-memory channel transport: no port is
	// opened and only nodes of the same process can talk.
	InProcess bool
	// Network, with InProcess, lets tests cut links. Optional.
	Network *Network
	// Storage, with InMemory, holds the node's files beyond Close. Optional.
	Storage *MemStorage
	RTT     time.Duration
	// ElectionTicks and HeartbeatTicks are in RTTs.
	ElectionTicks, HeartbeatTicks uint64
	// SnapshotEntries: take a snapshot (and compact the Raft log) every so
	// many entries.
	SnapshotEntries uint64
	// StartTimeout bounds how long Open waits for the metadata group.
	StartTimeout time.Duration
	Logger       *slog.Logger
}

// TLSFiles are PEM file paths for mutual TLS.
type TLSFiles struct{ CA, Cert, Key string }

// NewInProcessAddress returns a fresh address for the in-process transport.
// dragonboat's channel transport keeps a process-wide map of addresses, so
// every node of every test needs its own.
func NewInProcessAddress() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return "inproc-" + hex.EncodeToString(b[:])
}

// Node is one replog node: a dragonboat NodeHost and a Pebble store.
// Safe for concurrent use.
type Node struct {
	cfg   Config
	nh    *dragonboat.NodeHost
	store *storage.Store
	stop  chan struct{}
	wg    sync.WaitGroup
	// rebalance carries shards this node leads, for preferLeader.
	rebalance chan uint64
	log       *slog.Logger

	// Lock order: mu before Partition.mu.
	mu struct {
		sync.Mutex
		meta        *Metadata
		metaChanged chan struct{}
		parts       map[uint64]*Partition
		partsCh     chan struct{}     // closed and replaced when parts changes
		leaders     map[uint64]uint64 // shard -> leader replica id (0: none known)
		leaderCh    chan struct{}
		cleaned     map[uint64]bool // deleted shards already cleaned up
		preferred   map[uint64]int  // shard -> times leadership was offered to the preferred replica
		closed      bool
	}
	closeOnce sync.Once
	closeErr  error
}

// Open starts a node and waits until the metadata group answers a
// linearizable read (so every topic is visible) or StartTimeout passes.
func Open(cfg Config) (*Node, error) {
	logadapt.SetDragonboat(cfg.Logger)
	n := &Node{cfg: cfg, stop: make(chan struct{}), log: cfg.Logger}
	if n.log == nil {
		n.log = slog.New(slog.DiscardHandler)
	}
	n.mu.meta = newMetadata()
	n.mu.metaChanged = make(chan struct{})
	n.mu.parts = map[uint64]*Partition{}
	n.mu.partsCh = make(chan struct{})
	n.mu.leaders = map[uint64]uint64{}
	n.mu.leaderCh = make(chan struct{})
	n.mu.cleaned = map[uint64]bool{}
	n.mu.preferred = map[uint64]int{}
	n.rebalance = make(chan uint64, 64)

	dir := cfg.Dir
	if cfg.InMemory && dir == "" {
		dir = "mem"
	}
	so := storage.StoreOptions{InMemory: cfg.InMemory, Logger: cfg.Logger}
	var raftFS *lnivfs.MemFS
	if cfg.Storage != nil {
		raftFS, so.FS = cfg.Storage.fs()
	}
	store, err := storage.OpenStore(filepath.Join(dir, "data"), so)
	if err != nil {
		return nil, err
	}
	n.store = store

	nhc := config.NodeHostConfig{
		NodeHostDir:       filepath.Join(dir, "raft"),
		RTTMillisecond:    uint64(max(cfg.RTT/time.Millisecond, 1)),
		RaftAddress:       cfg.RaftAddress,
		RaftEventListener: (*leaderListener)(n),
		Expert: config.ExpertConfig{
			LogDB:  config.GetTinyMemLogDBConfig(),
			Engine: config.GetDefaultEngineConfig(),
		},
	}
	// One LogDB shard: a single Pebble instance holds every group's Raft log,
	// so one fsync covers all groups of a step (16 by default is built for
	// machines with many disks and cores).
	nhc.Expert.LogDB.Shards = 1
	if !cfg.InMemory {
		// Raft entries are record batches of up to 1 MiB: a 4 MiB memtable
		// flushed every few entries and kept the Raft log's Pebble busy
		// compacting (a quarter of the CPU in a 3-replica profile).
		nhc.Expert.LogDB.KVWriteBufferSize = 32 << 20
		nhc.Expert.LogDB.KVMaxWriteBufferNumber = 4
	}
	if cfg.InMemory {
		// dragonboat accepts only lni/vfs's own MemFS here. Its GetDiskUsage
		// is unsupported, so dragonboat's Pebble prints one "background
		// error: vfs: not supported" line to the standard logger per node.
		nhc.Expert.FS = lnivfs.NewMem()
		if raftFS != nil {
			nhc.Expert.FS = raftFS
		}
	}
	if cfg.InProcess {
		nhc.Expert.TransportFactory = &inProcessTransport{net: cfg.Network}
	} else {
		nhc.ListenAddress = cfg.ListenAddress
		if cfg.TLS != nil {
			nhc.MutualTLS = true
			nhc.CAFile, nhc.CertFile, nhc.KeyFile = cfg.TLS.CA, cfg.TLS.Cert, cfg.TLS.Key
		}
	}
	nh, err := dragonboat.NewNodeHost(nhc)
	if err == nil && nh == nil {
		// NewNodeHost recovers a panic whose value is not an error and then
		// returns neither a NodeHost nor an error.
		err = errors.New("dragonboat failed to start (see the log)")
	}
	if err != nil {
		store.Close()
		return nil, fmt.Errorf("replog: start raft node: %w", err)
	}
	n.nh = nh

	// The members only bootstrap a new group. A restarting node passes
	// none: its Peers may have grown since (nodes added later), and
	// dragonboat refuses a member list that differs from the recorded one.
	members := map[uint64]string{}
	if !cfg.Join && !nh.HasNodeInfo(MetaShardID, cfg.NodeID) {
		maps.Copy(members, cfg.Members)
	}
	err = nh.StartReplica(members, cfg.Join, func(uint64, uint64) sm.IStateMachine {
		return &metaSM{n: n, state: newMetadata()}
	}, n.raftConfig(MetaShardID, n.cfg.NodeID))
	if err != nil {
		n.Close()
		return nil, fmt.Errorf("replog: start metadata group: %w", err)
	}
	err = nh.StartReplica(members, cfg.Join, func(uint64, uint64) sm.IStateMachine {
		return &groupsSM{groups: map[string]*GroupState{}}
	}, n.raftConfig(GroupsShardID, n.cfg.NodeID))
	if err != nil {
		n.Close()
		return nil, fmt.Errorf("replog: start groups group: %w", err)
	}
	n.wg.Add(2)
	go n.reconcileLoop()
	go n.expireLoop()

	ctx, cancel := context.WithTimeout(context.Background(), cfg.StartTimeout)
	defer cancel()
	if err := n.SyncMetadata(ctx); err != nil {
		n.Close()
		return nil, fmt.Errorf("replog: metadata group not available after %v: %w", cfg.StartTimeout, err)
	}
	return n, nil
}

func (n *Node) raftConfig(shard, replicaID uint64) config.Config {
	snapEvery := n.cfg.SnapshotEntries
	if shard != MetaShardID && shard != GroupsShardID {
		// A partition's entries are whole record batches, so its Raft log is
		// compacted sooner; its snapshots are cheap (the state is already in
		// Pebble: only a sync and the applied index).
		snapEvery = max(1, snapEvery/10)
	}
	return config.Config{
		ShardID:            shard,
		ReplicaID:          replicaID,
		ElectionRTT:        n.cfg.ElectionTicks,
		HeartbeatRTT:       n.cfg.HeartbeatTicks,
		CheckQuorum:        true,
		PreVote:            true,
		SnapshotEntries:    snapEvery,
		CompactionOverhead: snapEvery / 2,
		// Raft entries are record batches the producer already compressed.
		EntryCompressionType: config.NoCompression,
	}
}

// ID is this node's id.
func (n *Node) ID() uint64 { return n.cfg.NodeID }

// NodeIDs lists the cluster's nodes: the initial ones and those added
// later, less those removed.
func (n *Node) NodeIDs() []uint64 {
	m := n.Metadata()
	ids := map[uint64]bool{}
	for id := range n.cfg.Members {
		ids[id] = true
	}
	for id := range m.Nodes {
		ids[id] = true
	}
	for _, id := range m.Removed {
		delete(ids, id)
	}
	return slices.Sorted(maps.Keys(ids))
}

// addr returns a node's Raft address.
func (n *Node) addr(id uint64) string {
	if a, ok := n.Metadata().Nodes[id]; ok {
		return a
	}
	return n.cfg.Members[id]
}

// AddNode adds a node to the cluster: to the metadata (so placement and
// partition groups can use it) and to the metadata and groups Raft groups.
// The node is started with Join; it catches up through Raft.
func (n *Node) AddNode(ctx context.Context, id uint64, addr string) error {
	r, _, err := n.proposeMeta(ctx, metaCmd{Op: opAddNode, Node: id, Address: addr})
	if err != nil {
		return err
	}
	if r.Value != metaOK {
		return ErrInvalid
	}
	for _, shard := range []uint64{MetaShardID, GroupsShardID} {
		if err := n.changeMember(ctx, shard, id, addr, true); err != nil {
			return err
		}
	}
	return nil
}

// RemoveNode removes a node that hosts no partition replica (reassign them
// first) from the cluster.
func (n *Node) RemoveNode(ctx context.Context, id uint64) error {
	r, _, err := n.proposeMeta(ctx, metaCmd{Op: opRemoveNode, Node: id})
	if err != nil {
		return err
	}
	switch r.Value {
	case metaOK:
	case metaNodeBusy:
		return ErrNodeBusy
	default:
		return ErrInvalid
	}
	for _, shard := range []uint64{GroupsShardID, MetaShardID} {
		if err := n.changeMember(ctx, shard, id, "", false); err != nil {
			return err
		}
	}
	return nil
}

// changeMember adds (or removes) a replica of a cluster-wide group, unless
// the membership already says so, retrying through leader changes.
func (n *Node) changeMember(ctx context.Context, shard, id uint64, addr string, add bool) error {
	return retry(ctx, n.stop, func() error {
		actx, cancel := attemptCtx(ctx)
		defer cancel()
		m, err := n.nh.SyncGetShardMembership(actx, shard)
		if err != nil {
			return err
		}
		_, present := m.Nodes[id]
		switch {
		case add && !present:
			err = n.nh.SyncRequestAddReplica(actx, shard, id, addr, m.ConfigChangeID)
		case !add && present:
			err = n.nh.SyncRequestDeleteReplica(actx, shard, id, m.ConfigChangeID)
		}
		if errors.Is(err, dragonboat.ErrRejected) {
			err = errBusy // a concurrent membership change: read it and try again
		}
		return err
	})
}

// Close stops every Raft group and closes the store. Safe to call twice.
func (n *Node) Close() error {
	n.closeOnce.Do(func() {
		n.mu.Lock()
		n.mu.closed = true
		n.mu.Unlock()
		close(n.stop)
		n.wg.Wait()
		if n.nh != nil {
			n.nh.Close()
		}
		n.closeErr = n.store.Close()
	})
	return n.closeErr
}

// Metadata returns the latest locally applied metadata.
func (n *Node) Metadata() *Metadata {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.mu.meta
}

// SyncMetadata waits until every metadata change committed before the call
// is applied locally (a linearizable read through the metadata group).
func (n *Node) SyncMetadata(ctx context.Context) error {
	return retry(ctx, n.stop, func() error {
		if err := n.waitLeader(ctx, MetaShardID); err != nil {
			return err
		}
		actx, cancel := attemptCtx(ctx)
		defer cancel()
		_, err := n.nh.SyncRead(actx, MetaShardID, nil)
		return err
	})
}

var (
	errTimeout = dragonboat.ErrTimeout
	errBusy    = dragonboat.ErrSystemBusy
)

// metaAttemptTimeout bounds one metadata request: a read index or proposal
// lost in a leader change is retried instead of waited on until ctx ends.
const metaAttemptTimeout = 2 * time.Second

func attemptCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, metaAttemptTimeout)
}

// retry calls f until it succeeds, fails with an error that is not
// retriable, or ctx ends; it backs off between attempts.
func retry(ctx context.Context, stop <-chan struct{}, f func() error) error {
	backoff := 2 * time.Millisecond
	for {
		err := f()
		if err == nil || !IsRetriable(err) || ctx.Err() != nil {
			return mapError(err)
		}
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			return mapError(err)
		case <-stop:
			return ErrClosed
		}
		backoff = min(2*backoff, 200*time.Millisecond)
	}
}

func (n *Node) publishMeta(m *Metadata) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.mu.meta = m
	close(n.mu.metaChanged)
	n.mu.metaChanged = make(chan struct{})
}

// proposeMeta proposes a metadata command, retrying retriable failures; it
// also returns whether it was proposed more than once. Retrying is safe: a
// repeated create finds its own topic (the callers check), a repeated delete
// finds the topic gone, and a repeated alloc_producer only skips an id.
func (n *Node) proposeMeta(ctx context.Context, c metaCmd) (sm.Result, bool, error) {
	cmd, err := json.Marshal(c)
	if err != nil {
		return sm.Result{}, false, err
	}
	var r sm.Result
	attempts := 0
	err = retry(ctx, n.stop, func() error {
		if err := n.waitLeader(ctx, MetaShardID); err != nil {
			return err
		}
		attempts++
		actx, cancel := attemptCtx(ctx)
		defer cancel()
		var err error
		r, err = n.nh.SyncPropose(actx, n.nh.GetNoOPSession(MetaShardID), cmd)
		if errors.Is(err, errTimeout) && ctx.Err() == nil {
			err = errBusy // this attempt's own deadline: retriable
		}
		return err
	})
	return r, attempts > 1, err
}

// Errors of metadata operations, mapped to the public ones by the caller.
var (
	ErrTopicExists   = errors.New("topic exists")
	ErrTopicNotFound = errors.New("topic not found")
	ErrInvalid       = errors.New("invalid request")
	ErrClosed        = errors.New("node closed")
	ErrNotReplica    = errors.New("no local replica")
	ErrNodeBusy      = errors.New("node hosts partition replicas")
	// ErrLeaderChanged: the group's leader changed while a proposal was
	// pending; it may or may not have been committed. Retriable.
	ErrLeaderChanged = errors.New("leader changed during proposal")
)

// CreateTopic creates a topic and waits until this node's replicas of its
// partitions have a leader.
func (n *Node) CreateTopic(ctx context.Context, name string, partitions, replicas int, compression uint8) (*TopicMeta, error) {
	created := time.Now().UnixNano()
	r, retried, err := n.proposeMeta(ctx, metaCmd{
		Op: opCreateTopic, Name: name, Partitions: partitions, Replicas: replicas,
		Compression: compression, Nodes: n.NodeIDs(), Created: created,
	})
	if err != nil {
		return nil, err
	}
	switch r.Value {
	case metaOK:
	case metaTopicExists:
		if t := n.Metadata().Topics[name]; retried && t != nil && t.Created == created {
			r.Data, _ = json.Marshal(t) // an earlier attempt created it
			break
		}
		return nil, ErrTopicExists
	default:
		return nil, ErrInvalid
	}
	t := &TopicMeta{}
	if err := json.Unmarshal(r.Data, t); err != nil {
		return nil, err
	}
	for _, p := range t.Partitions {
		if p.Hosts(n.cfg.NodeID) {
			if err := n.waitLeader(ctx, p.Shard); err != nil {
				return nil, err
			}
		}
	}
	return t, nil
}

// DeleteTopic deletes a topic; its partitions are stopped and their data
// removed on every node.
func (n *Node) DeleteTopic(ctx context.Context, name string) error {
	r, retried, err := n.proposeMeta(ctx, metaCmd{Op: opDeleteTopic, Name: name})
	if err != nil {
		return err
	}
	if r.Value == metaTopicNotFound && !retried {
		return ErrTopicNotFound
	}
	return nil
}

// AllocProducerID issues a cluster-unique idempotent producer id.
func (n *Node) AllocProducerID(ctx context.Context) (uint64, error) {
	r, _, err := n.proposeMeta(ctx, metaCmd{Op: opAllocProducer})
	if err != nil {
		return 0, err
	}
	return strconv.ParseUint(string(r.Data), 10, 64)
}

// Partition returns this node's replica of a partition: ErrNotReplica if
// this node hosts none, ErrTopicNotFound if its topic is gone. A replica the
// node should host but has not started yet is waited for.
func (n *Node) Partition(ctx context.Context, shard uint64) (*Partition, error) {
	for {
		n.mu.Lock()
		p, ok := n.mu.parts[shard]
		closed, changed, meta := n.mu.closed, n.mu.partsCh, n.mu.meta
		n.mu.Unlock()
		switch {
		case closed:
			return nil, ErrClosed
		case ok:
			return p, nil
		}
		name, idx, pm, found := meta.partitionOf(shard)
		switch {
		case !found:
			return nil, ErrTopicNotFound
		case !pm.Serves(n.cfg.NodeID):
			// Serve it anyway: join its group as a non-voting replica.
			r, _, err := n.proposeMeta(ctx, metaCmd{Op: opObserve, Name: name, Partition: idx, Node: n.cfg.NodeID})
			if err != nil {
				return nil, err
			}
			if r.Value != metaOK {
				return nil, ErrNotReplica
			}
			p, err := n.Partition(ctx, shard)
			if err != nil {
				return nil, err
			}
			// A new replica starts empty: catch up with the group before
			// serving, so offsets and the high watermark are current.
			return p, p.CatchUp(ctx)
		}
		select { // the reconciler is about to start it
		case <-changed:
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-n.stop:
			return nil, ErrClosed
		}
	}
}

// Leader returns the known leader of a shard's group as a Raft replica id
// (0 if none).
func (n *Node) Leader(shard uint64) uint64 {
	l, _ := n.leaderState(shard)
	return l
}

// LeaderNode returns the node leading a partition's group (0 if none known).
func (n *Node) LeaderNode(shard uint64) uint64 {
	l := n.Leader(shard)
	if pm, ok := n.Metadata().partition(shard); ok {
		return pm.NodeOf(l)
	}
	return l
}

// TransferLeader asks a shard's group to hand leadership to node and waits
// until this node sees the change.
func (n *Node) TransferLeader(ctx context.Context, shard, node uint64) error {
	if pm, ok := n.Metadata().partition(shard); ok {
		node = pm.ReplicaID(node)
	}
	for {
		n.mu.Lock()
		l, ch := n.mu.leaders[shard], n.mu.leaderCh
		n.mu.Unlock()
		if l == node {
			return nil
		}
		if l != 0 {
			// Only the leader acts on a transfer request; asking again after
			// each change covers a request lost in an election.
			if err := n.nh.RequestLeaderTransfer(shard, node); err != nil && !errors.Is(err, dragonboat.ErrShardNotFound) {
				return mapError(err)
			}
		}
		select {
		case <-ch:
		case <-time.After(100 * time.Millisecond):
		case <-ctx.Done():
			return ctx.Err()
		case <-n.stop:
			return ErrClosed
		}
	}
}

// leaderState returns a shard's known leader and a channel closed at the
// next leader change of any shard.
func (n *Node) leaderState(shard uint64) (uint64, <-chan struct{}) {
	n.mu.Lock()
	l, ch := n.mu.leaders[shard], n.mu.leaderCh
	n.mu.Unlock()
	if l == 0 {
		// dragonboat reports leader changes as events, but a replica that
		// restarts into a stable term may learn its leader without one:
		// ask it directly.
		if id, _, ok, err := n.nh.GetLeaderID(shard); err == nil && ok && id != 0 {
			n.mu.Lock()
			if n.mu.leaders[shard] == 0 {
				n.mu.leaders[shard] = id
			}
			n.mu.Unlock()
			l = id
		}
	}
	return l, ch
}

// waitLeader waits until the shard has a known leader.
func (n *Node) waitLeader(ctx context.Context, shard uint64) error {
	for {
		n.mu.Lock()
		closed := n.mu.closed
		n.mu.Unlock()
		if closed {
			return ErrClosed
		}
		l, ch := n.leaderState(shard)
		if l != 0 {
			return nil
		}
		select {
		case <-ch:
		case <-time.After(50 * time.Millisecond): // see leaderState
		case <-ctx.Done():
			return fmt.Errorf("no leader for raft group %d: %w", shard, ctx.Err())
		case <-n.stop:
			return ErrClosed
		}
	}
}

type leaderListener Node

func (l *leaderListener) LeaderUpdated(info raftio.LeaderInfo) {
	n := (*Node)(l)
	n.mu.Lock()
	n.mu.leaders[info.ShardID] = info.LeaderID
	close(n.mu.leaderCh)
	n.mu.leaderCh = make(chan struct{})
	n.mu.Unlock()
	if info.LeaderID == info.ReplicaID && info.ShardID != MetaShardID && info.ShardID != GroupsShardID {
		select { // the reconciler hands leadership to the preferred replica
		case n.rebalance <- info.ShardID:
		default:
		}
	}
}

// preferLeader hands a partition's leadership to its preferred replica (the
// first in its placement, which placement rotates across nodes) when this
// node finds itself leading it, so leaders spread over the cluster as
// replicas do (Kafka's preferred leader election). A transfer asked for
// right after an election can be ignored while the target catches up, so
// it is asked again a few times.
func (n *Node) preferLeader(shard uint64) {
	pm, ok := n.Metadata().partition(shard)
	if !ok || len(pm.Replicas) == 0 || pm.Replicas[0] == n.cfg.NodeID {
		return
	}
	if l, _ := n.leaderState(shard); l != pm.ReplicaID(n.cfg.NodeID) {
		return
	}
	n.mu.Lock()
	n.mu.preferred[shard]++
	tries := n.mu.preferred[shard]
	n.mu.Unlock()
	if tries > preferLeaderTries {
		return
	}
	_ = n.nh.RequestLeaderTransfer(shard, pm.ReplicaID(pm.Replicas[0])) // best effort
	time.AfterFunc(200*time.Millisecond, func() {
		select {
		case n.rebalance <- shard:
		default:
		}
	})
}

const preferLeaderTries = 10

// reconcileLoop starts the replicas this node should host and stops those of
// deleted topics, whenever the metadata changes.
func (n *Node) reconcileLoop() {
	defer n.wg.Done()
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		n.mu.Lock()
		meta, changed := n.mu.meta, n.mu.metaChanged
		n.mu.Unlock()
		n.reconcile(meta)
		select {
		case <-changed:
		case <-tick.C: // a move in progress advances one step per pass
		case shard := <-n.rebalance:
			n.preferLeader(shard)
		case <-n.stop:
			return
		}
	}
}

func (n *Node) reconcile(meta *Metadata) {
	for _, t := range meta.Topics {
		for _, pm := range t.Partitions {
			if !pm.Serves(n.cfg.NodeID) {
				continue
			}
			n.mu.Lock()
			_, running := n.mu.parts[pm.Shard]
			n.mu.Unlock()
			if running {
				continue
			}
			if err := n.startPartition(pm); err != nil {
				n.log.Error("replog: start partition replica", "shard", pm.Shard, "err", err)
			}
		}
	}
	n.mu.Lock()
	running := maps.Clone(n.mu.parts)
	n.mu.Unlock()
	for shard, p := range running {
		name, idx, pm, ok := meta.partitionOf(shard)
		if !ok {
			continue // deleted: handled below
		}
		if l, _ := n.leaderState(shard); l == p.replicaID && (pm.Moving || !pm.Hosts(n.cfg.NodeID)) {
			n.converge(name, idx, pm, p.replicaID)
		}
		// A replica that left the placement is deleted once the move is
		// complete: the group no longer counts on it.
		if !pm.Serves(n.cfg.NodeID) && !pm.Moving {
			if err := n.removePartition(shard, p, true); err != nil {
				n.log.Error("replog: remove moved replica", "shard", shard, "err", err)
				continue
			}
			n.setPart(shard, nil)
		}
	}
	for _, shard := range meta.DeletedShards {
		n.mu.Lock()
		p, running := n.mu.parts[shard]
		done := n.mu.cleaned[shard]
		n.mu.Unlock()
		if done {
			continue
		}
		if err := n.removePartition(shard, p, running); err != nil {
			n.log.Error("replog: remove partition replica", "shard", shard, "err", err)
			continue
		}
		n.mu.Lock()
		n.mu.cleaned[shard] = true
		n.mu.Unlock()
		n.setPart(shard, nil)
	}
}

// converge makes a partition's Raft membership match its placement, one
// change per call (the reconciler calls again): first add missing replicas,
// then hand leadership away if this replica is leaving, then remove the
// replicas that left; when they match, it marks the move complete.
func (n *Node) converge(topic string, idx int, pm PartitionMeta, self uint64) {
	ctx, cancel := context.WithTimeout(context.Background(), metaAttemptTimeout)
	defer cancel()
	m, err := n.nh.SyncGetShardMembership(ctx, pm.Shard)
	if err != nil {
		return
	}
	desired := map[uint64]string{}
	for _, node := range pm.Replicas {
		desired[pm.ReplicaID(node)] = n.addr(node)
	}
	observers := map[uint64]string{}
	for _, node := range pm.Observers {
		observers[pm.ReplicaID(node)] = n.addr(node)
	}
	for _, rid := range slices.Sorted(maps.Keys(desired)) {
		if _, ok := m.Nodes[rid]; !ok {
			// Adds a voter, or promotes a non-voting replica with this id.
			if err := n.nh.SyncRequestAddReplica(ctx, pm.Shard, rid, desired[rid], m.ConfigChangeID); err != nil {
				n.log.Warn("replog: add replica", "shard", pm.Shard, "replica", rid, "err", err)
			}
			return
		}
	}
	for _, rid := range slices.Sorted(maps.Keys(observers)) {
		if _, ok := m.NonVotings[rid]; !ok {
			if err := n.nh.SyncRequestAddNonVoting(ctx, pm.Shard, rid, observers[rid], m.ConfigChangeID); err != nil {
				n.log.Warn("replog: add non-voting replica", "shard", pm.Shard, "replica", rid, "err", err)
			}
			return
		}
	}
	for _, rid := range slices.Sorted(maps.Keys(m.NonVotings)) {
		if _, ok := observers[rid]; !ok {
			if _, voter := desired[rid]; !voter {
				_ = n.nh.SyncRequestDeleteReplica(ctx, pm.Shard, rid, m.ConfigChangeID)
				return
			}
		}
	}
	for _, rid := range slices.Sorted(maps.Keys(m.Nodes)) {
		if _, ok := desired[rid]; ok {
			continue
		}
		if rid == self {
			_ = n.nh.RequestLeaderTransfer(pm.Shard, pm.ReplicaID(pm.Replicas[0]))
			return
		}
		if err := n.nh.SyncRequestDeleteReplica(ctx, pm.Shard, rid, m.ConfigChangeID); err != nil {
			n.log.Warn("replog: remove replica", "shard", pm.Shard, "replica", rid, "err", err)
		}
		return
	}
	if pm.Moving {
		_, _, _ = n.proposeMeta(ctx, metaCmd{Op: opReassignDone, Name: topic, Partition: idx, Replicas2: pm.Replicas, Observers: pm.Observers})
	}
}

// Reassign moves a partition's replicas to nodes (the first is the
// preferred leader) and waits until the move is complete: the new replicas
// hold the data and the old ones left the group.
func (n *Node) Reassign(ctx context.Context, topic string, partition int, nodes []uint64) error {
	r, _, err := n.proposeMeta(ctx, metaCmd{Op: opReassign, Name: topic, Partition: partition, Replicas2: nodes, Nodes: n.NodeIDs()})
	if err != nil {
		return err
	}
	switch r.Value {
	case metaOK:
	case metaTopicNotFound:
		return ErrTopicNotFound
	default:
		return ErrInvalid
	}
	for {
		n.mu.Lock()
		meta, changed := n.mu.meta, n.mu.metaChanged
		n.mu.Unlock()
		t := meta.Topics[topic]
		if t == nil {
			return ErrTopicNotFound
		}
		if pm := t.Partitions[partition]; !pm.Moving || !slices.Equal(pm.Replicas, nodes) {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return ctx.Err()
		case <-n.stop:
			return ErrClosed
		}
	}
}

// setPart adds (p != nil) or removes a running replica and wakes waiters.
func (n *Node) setPart(shard uint64, p *Partition) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if p == nil {
		delete(n.mu.parts, shard)
	} else {
		n.mu.parts[shard] = p
	}
	close(n.mu.partsCh)
	n.mu.partsCh = make(chan struct{})
}

func (n *Node) startPartition(pm PartitionMeta) error {
	p := newPartition(n, pm.Shard)
	p.replicaID = pm.ReplicaID(n.cfg.NodeID)
	n.setPart(pm.Shard, p)
	// Initial members bootstrap the group together; a replica added by a
	// reassignment joins it (the leader adds it to the membership).
	join := !pm.bootstrap(n.cfg.NodeID)
	members := map[uint64]string{}
	if !join && !n.nh.HasNodeInfo(pm.Shard, p.replicaID) {
		for _, id := range pm.initial() {
			members[id] = n.addr(id)
		}
	}
	cfg := n.raftConfig(pm.Shard, p.replicaID)
	cfg.IsNonVoting = !pm.Hosts(n.cfg.NodeID) // an observer
	err := n.nh.StartOnDiskReplica(members, join, func(uint64, uint64) sm.IOnDiskStateMachine {
		return &partitionSM{p: p}
	}, cfg)
	if err != nil && !errors.Is(err, dragonboat.ErrShardAlreadyExist) {
		n.setPart(pm.Shard, nil)
		return err
	}
	return nil
}

// removePartition stops a deleted partition's group and deletes its data:
// the Raft log through dragonboat, the records from the store.
func (n *Node) removePartition(shard uint64, p *Partition, running bool) error {
	if running {
		if err := n.nh.StopShard(shard); err != nil && !errors.Is(err, dragonboat.ErrShardNotFound) {
			return err
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rid := n.cfg.NodeID
	if p != nil {
		rid = p.replicaID
	}
	if err := n.nh.SyncRemoveData(ctx, shard, rid); err != nil && !errors.Is(err, dragonboat.ErrShardNotFound) {
		return err
	}
	if p != nil {
		if s := p.store.Load(); s != nil {
			return s.Delete()
		}
	}
	sp, err := n.store.Partition(shard)
	if err != nil {
		return err
	}
	return sp.Delete()
}

// mapError turns dragonboat's errors into ones the root package maps to its
// sentinels; it keeps the original in the chain.
func mapError(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, dragonboat.ErrClosed), errors.Is(err, dragonboat.ErrShardClosed):
		return fmt.Errorf("%w: %w", ErrClosed, err)
	case errors.Is(err, dragonboat.ErrTimeout):
		return fmt.Errorf("%w: %w", context.DeadlineExceeded, err)
	}
	return err
}

// IsRetriable reports whether a proposal error may succeed when retried.
func IsRetriable(err error) bool {
	return errors.Is(err, ErrLeaderChanged) || errors.Is(err, dragonboat.ErrSystemBusy) || errors.Is(err, dragonboat.ErrShardNotReady) ||
		errors.Is(err, dragonboat.ErrTimeout) || errors.Is(err, dragonboat.ErrAborted) ||
		errors.Is(err, dragonboat.ErrShardNotInitialized) || errors.Is(err, dragonboat.ErrCanceled)
}
