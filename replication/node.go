// Package replication runs replog's Raft groups on dragonboat: one metadata
// group for the cluster and one group per partition, whose on-disk state
// machine appends record batches to the node's Pebble store.
package replication

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lni/dragonboat/v4"
	"github.com/lni/dragonboat/v4/config"
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
	// ClusterID names the cluster; hashed into dragonboat's DeploymentID,
	// so nodes drop messages from other clusters. Empty: dragonboat's
	// default deployment id.
	ClusterID string
	// MaxMessageBytes caps one Raft message-batch frame received over TCP:
	// a larger one closes the connection before anything is allocated for
	// it. Zero: DefaultMaxMessageBytes.
	MaxMessageBytes int
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
	// SnapshotBytes: a partition also takes a snapshot once it has applied
	// this many bytes of entries since its last one. Zero: SnapshotBytes.
	SnapshotBytes int64
	// StartTimeout bounds how long Open waits for the metadata group.
	StartTimeout time.Duration
	// AttemptTimeout bounds one attempt of a request to a Raft group (a
	// proposal or a read index) before it is retried. Zero: derived from
	// the Raft timing (see DefaultAttemptTimeout).
	AttemptTimeout time.Duration
	// RetentionInterval is how often partition leaders check retention
	// limits. Zero: DefaultRetentionInterval.
	RetentionInterval time.Duration
	// CompactionMemory bounds the key index of one compaction pass, in
	// bytes. Zero: storage.DefaultCompactionMemory.
	CompactionMemory int64
	// MemoryBytes is the node's memory budget (see replog's
	// Options.MemoryBytes). Zero: DefaultMemoryBytes.
	MemoryBytes int64
	Logger      *slog.Logger

	// AfterTxnDecision, a test hook (see replogtest), is called on this
	// node right after EndTxn recorded a transaction's decision and
	// before the node writes its markers: a crash while it blocks leaves
	// the transaction decided and incomplete, for another node to
	// complete.
	AfterTxnDecision func(txnID string)

	// withoutTxnGroup, set by tests, runs the node as one of a version
	// before the transaction coordinator: it does not start that group.
	withoutTxnGroup bool
	// withoutShareGroup, set by tests, runs the node as one of a version
	// before the share coordinator: it does not start that group.
	withoutShareGroup bool
	// withoutTxnDriver, set by tests of the coordinator's state, leaves
	// decided transactions incomplete: no node writes their markers.
	withoutTxnDriver bool
}

// DefaultMemoryBytes is the default of [Config.MemoryBytes].
const DefaultMemoryBytes = 256 << 20

// The shares of Config.MemoryBytes (documented at replog's
// Options.MemoryBytes).
func raftLogBuffer(mem int64) uint64  { return uint64(max(mem/8, 1<<20)) } // x4 memtables
func storeMemTable(mem int64) int64   { return max(mem/32, 1<<20) }        // x4 memtables
func storeCache(mem int64) int64      { return max(mem/16, 1<<20) }
func raftQueueBytes(mem int64) uint64 { return uint64(max(mem/8, 2*storage.MaxBatchBytes)) }
func inMemLogBytes(mem int64) uint64  { return uint64(max(mem/4, 4*storage.MaxBatchBytes)) }

// TLSFiles are PEM file paths for mutual TLS.
type TLSFiles struct{ CA, Cert, Key string }

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
	// reconcilePause, set by tests, holds the reconciler before its next
	// pass until the channel is closed.
	reconcilePause atomic.Pointer[chan struct{}]
	log            *slog.Logger
	// meta is mu.meta, also readable without the lock; both are set
	// together in publishMeta.
	meta atomic.Pointer[Metadata]
	// metrics are the node's counters since it started.
	metrics Metrics
	// progress is what followers last acknowledged to this node as leader:
	// see observeProgress.
	progress sync.Map // progressKey -> uint64 (Raft log index)
	// txnDrive: the transactions this node completes as the
	// coordinator's leader (see driveTxns).
	txnDrive txnDriver

	// Lock order: mu before Partition.mu.
	mu struct {
		sync.Mutex
		meta        *Metadata
		metaChanged chan struct{}
		parts       map[uint64]*Partition
		partsCh     chan struct{}     // closed and replaced when parts changes
		leaders     map[uint64]uint64 // shard -> leader replica id (0: none known)
		leaderCh    chan struct{}
		// raftData holds, by partition shard, the replica ids whose Raft
		// data this node holds: what dragonboat's LogDB listed at Open,
		// plus the replicas started since, less those deleted. Deleting a
		// replica's Raft data is the last step of its cleanup, so this is
		// also the durable record of cleanups left to do.
		raftData map[uint64]map[uint64]bool
		// synced is set once Open has caught up with the metadata group.
		// Before, the metadata may be replaying history: placements that
		// no longer hold, replicas long moved away or deleted. Acting on
		// them would start (even bootstrap again) replicas only to delete
		// them, or delete data of replicas assigned since.
		synced    bool
		swept     bool           // removeLeftovers has checked for records left behind
		preferred map[uint64]int // shard -> times this node, the preferred replica, asked for leadership since it last led
		closed    bool
	}
	closeOnce sync.Once
	closeErr  error
}

// Open starts a node and waits until the metadata group answers a
// linearizable read (so every topic is visible) or StartTimeout passes.
func Open(cfg Config) (*Node, error) {
	logadapt.SetDragonboat(cfg.Logger)
	if cfg.AttemptTimeout <= 0 {
		cfg.AttemptTimeout = DefaultAttemptTimeout(cfg.RTT, cfg.ElectionTicks)
	}
	if cfg.RetentionInterval <= 0 {
		cfg.RetentionInterval = DefaultRetentionInterval
	}
	if cfg.MemoryBytes <= 0 {
		cfg.MemoryBytes = DefaultMemoryBytes
	}
	if cfg.SnapshotBytes <= 0 {
		cfg.SnapshotBytes = SnapshotBytes
	}
	n := &Node{cfg: cfg, stop: make(chan struct{}), log: cfg.Logger}
	if n.log == nil {
		n.log = slog.New(slog.DiscardHandler)
	}
	if !cfg.InProcess && cfg.TLS == nil {
		// dragonboat's own warning about this is logged at Debug (see
		// package logadapt): it cannot tell the in-process transport, which
		// has no wire, from TCP.
		n.log.Info("replog: Raft traffic between nodes is neither encrypted nor authenticated (plaintext TCP on loopback)")
	}
	n.mu.meta = newMetadata()
	n.mu.metaChanged = make(chan struct{})
	n.mu.parts = map[uint64]*Partition{}
	n.mu.partsCh = make(chan struct{})
	n.mu.leaders = map[uint64]uint64{}
	n.mu.leaderCh = make(chan struct{})
	n.mu.raftData = map[uint64]map[uint64]bool{}
	n.mu.preferred = map[uint64]int{}
	n.rebalance = make(chan uint64, 64)

	dir := cfg.Dir
	if cfg.InMemory && dir == "" {
		dir = "mem"
	}
	so := storage.StoreOptions{
		InMemory:     cfg.InMemory,
		Logger:       cfg.Logger,
		MemTableSize: storeMemTable(cfg.MemoryBytes),
		CacheSize:    storeCache(cfg.MemoryBytes),
	}
	var raftFS *lnivfs.MemFS
	if cfg.Storage != nil {
		raftFS, so.FS = cfg.Storage.fs()
	}
	if !cfg.InMemory {
		if err := checkRaftLog(filepath.Join(dir, "raft"), cfg.Logger); err != nil {
			return nil, err
		}
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
		// Replication messages queued to one node, or received by one
		// replica, beyond this are dropped (Raft sends them again): a
		// bound on memory should a peer or a replica fall behind.
		MaxSendQueueSize:    raftQueueBytes(cfg.MemoryBytes),
		MaxReceiveQueueSize: raftQueueBytes(cfg.MemoryBytes),
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
		// compacting (a quarter of the CPU in a 3-replica profile). With
		// the default budget, 32 MiB: 8 MiB cost a 3-replica run 15-20%
		// more CPU per record, 3 MiB 35%. Pebble preallocates each WAL
		// file at 1.1 times this size (see trimRaftWAL). Four memtables,
		// no fewer: dragonboat pauses proposals while the memtables
		// fill 95% of all four, and with two that happened in normal
		// runs and once never ended (its busy flag is recomputed only
		// on Pebble events, by racing goroutines).
		nhc.Expert.LogDB.KVWriteBufferSize = raftLogBuffer(cfg.MemoryBytes)
		nhc.Expert.LogDB.KVMaxWriteBufferNumber = 4
	}
	if cfg.InMemory {
		// dragonboat accepts only lni/vfs's own MemFS here. Its GetDiskUsage
		// is unsupported, so dragonboat's Pebble prints a "background
		// error: vfs: not supported" line to the standard logger each time
		// it deletes an obsolete file (it asks for the disk usage then).
		// dragonboat's tan LogDB would not, but in-memory nodes (every
		// test) would then run another Raft log engine than disk nodes,
		// and tan is marked experimental.
		nhc.Expert.FS = lnivfs.NewMem()
		if raftFS != nil {
			nhc.Expert.FS = raftFS
		}
	}
	if cfg.InProcess {
		nhc.Expert.TransportFactory = &inProcessTransport{net: cfg.Network, observe: n.observeProgress}
	} else {
		nhc.ListenAddress = cfg.ListenAddress
		opts := tcpOptions{maxMessage: cfg.MaxMessageBytes, log: n.log}
		if cfg.TLS != nil {
			if opts.tls, err = loadTLS(cfg.TLS, cfg.RaftAddress); err != nil {
				store.Close()
				return nil, err
			}
			// Only our transport reads the files; set so that dragonboat
			// does not warn that communication is insecure.
			nhc.MutualTLS = true
			nhc.CAFile, nhc.CertFile, nhc.KeyFile = cfg.TLS.CA, cfg.TLS.Cert, cfg.TLS.Key
		}
		nhc.Expert.TransportFactory = &tcpTransportFactory{opts: opts, observe: n.observeProgress}
	}
	nhc.DeploymentID = deploymentID(cfg.ClusterID)
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
	for _, ni := range nh.GetNodeHostInfo(dragonboat.NodeHostInfoOption{}).LogInfo {
		if ni.ShardID >= FirstPartitionShard {
			n.holdRaftData(ni.ShardID, ni.ReplicaID, true)
		}
	}

	// The members only bootstrap a new group. A restarting node passes
	// none: its Peers may have grown since (nodes added later), and
	// dragonboat refuses a member list that differs from the recorded one.
	members := map[uint64]string{}
	hadMeta := nh.HasNodeInfo(MetaShardID, cfg.NodeID)
	if !cfg.Join && !hadMeta {
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
	// The transaction coordinator came after the other two groups. A node
	// whose metadata group predates it (an upgraded cluster) starts it once
	// it has caught up with the metadata group: see startUpgradedGroup.
	upgrade := hadMeta && !nh.HasNodeInfo(TxnShardID, cfg.NodeID) && !cfg.withoutTxnGroup
	if !upgrade && !cfg.withoutTxnGroup {
		if err := n.startTxnGroup(members, cfg.Join); err != nil {
			n.Close()
			return nil, err
		}
	}
	// So did the share coordinator, after the transaction coordinator.
	upgradeShare := hadMeta && !nh.HasNodeInfo(ShareShardID, cfg.NodeID) && !cfg.withoutShareGroup
	if !upgradeShare && !cfg.withoutShareGroup {
		if err := n.startShareGroup(members, cfg.Join); err != nil {
			n.Close()
			return nil, err
		}
	}
	n.wg.Add(4)
	go n.reconcileLoop()
	go n.expireLoop()
	go n.retentionLoop()
	go n.compactionLoop()
	n.wg.Add(1)
	go n.shareLoop()

	ctx, cancel := context.WithTimeout(context.Background(), cfg.StartTimeout)
	defer cancel()
	if err := n.SyncMetadata(ctx); err != nil {
		n.Close()
		return nil, fmt.Errorf("replog: metadata group not available after %v: %w", cfg.StartTimeout, err)
	}
	if upgrade {
		if err := n.startUpgradedGroup(ctx, "transaction coordinator", n.startTxnGroup); err != nil {
			n.Close()
			return nil, err
		}
	}
	if upgradeShare {
		if err := n.startUpgradedGroup(ctx, "share coordinator", n.startShareGroup); err != nil {
			n.Close()
			return nil, err
		}
	}
	n.mu.Lock()
	n.mu.synced = true
	n.mu.Unlock()
	n.publishMeta(n.Metadata()) // wake the reconciler
	return n, nil
}

// startTxnGroup starts this node's replica of the transaction coordinator,
// bootstrapping the group with members if it is new (none: the group
// exists, or the node joins it).
func (n *Node) startTxnGroup(members map[uint64]string, join bool) error {
	err := n.nh.StartReplica(members, join, func(uint64, uint64) sm.IStateMachine {
		return newTxnSM()
	}, n.raftConfig(TxnShardID, n.cfg.NodeID))
	if err != nil {
		return fmt.Errorf("replog: start transaction coordinator group: %w", err)
	}
	return nil
}

// startUpgradedGroup starts a cluster-wide group that came after the
// cluster did (the transaction or the share coordinator, named what) on a
// node of a cluster that ran without it, with start (startTxnGroup,
// startShareGroup). It bootstraps the group with the metadata group's
// members, read linearizably: those are the cluster's nodes now, which the
// configured members may no longer be (nodes added or removed since, and a
// node that joined knows only some of them), and every node reads the
// same, so they all bootstrap the same group. A node that is not among
// them waits to be added, as a joining node does.
func (n *Node) startUpgradedGroup(ctx context.Context, what string, start func(members map[uint64]string, join bool) error) error {
	var m *dragonboat.Membership
	err := n.request(ctx, MetaShardID, func(actx context.Context) error {
		var err error
		m, err = n.nh.SyncGetShardMembership(actx, MetaShardID)
		return err
	})
	if err != nil {
		return fmt.Errorf("replog: read the cluster's members to start the %s: %w", what, err)
	}
	if _, ok := m.Nodes[n.cfg.NodeID]; !ok {
		return start(nil, true)
	}
	return start(m.Nodes, false)
}

// holdRaftData records whether this node holds Raft data of a replica.
func (n *Node) holdRaftData(shard, replica uint64, held bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	switch {
	case held && n.mu.raftData[shard] == nil:
		n.mu.raftData[shard] = map[uint64]bool{replica: true}
	case held:
		n.mu.raftData[shard][replica] = true
	default:
		delete(n.mu.raftData[shard], replica)
		if len(n.mu.raftData[shard]) == 0 {
			delete(n.mu.raftData, shard)
		}
	}
}

// trimRaftWAL gives back the disk space that the Raft log's Pebble
// preallocated past the end of its write-ahead log files, once dragonboat
// has closed them. Pebble preallocates each WAL file at 1.1 times the
// memtable size, 35 MiB with the default budget, and keeps a few old ones
// to reuse: a new node took 36 MB on disk, one with 10,000 small records
// 106 MiB. Truncating a file to its own length leaves its content as it is
// (Pebble finds the same bytes when it reopens or reuses it) and frees only
// the blocks past its end. A node's footprint while it runs is unchanged.
func trimRaftWAL(dir string, log *slog.Logger) {
	_ = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(d.Name(), ".log") ||
			!strings.HasPrefix(filepath.Base(filepath.Dir(path)), "logdb-") {
			return nil
		}
		info, err := d.Info()
		if err == nil {
			err = os.Truncate(path, info.Size())
		}
		if err != nil {
			log.Debug("replog: trim Raft log file", "file", path, "err", err)
		}
		return nil
	})
}

func (n *Node) raftConfig(shard, replicaID uint64) config.Config {
	// A partition also asks for a snapshot after SnapshotBytes of entries
	// (see partitionSM.Update), which bounds its Raft log when entries are
	// large batches. Its snapshots hold only the applied index, but each
	// flushes the record store and holds the partition's applies until
	// that is done: every 1,000 entries (as before) was a flush a second
	// for a partition taking a thousand synchronous Produce calls a
	// second, and the sync Produce p99 after a load.
	snapEvery := n.cfg.SnapshotEntries
	return config.Config{
		ShardID:         shard,
		ReplicaID:       replicaID,
		ElectionRTT:     n.cfg.ElectionTicks,
		HeartbeatRTT:    n.cfg.HeartbeatTicks,
		CheckQuorum:     true,
		PreVote:         true,
		SnapshotEntries: snapEvery,
		// dragonboat compacts a group's Raft log storage (a manual Pebble
		// compaction of the range it deleted) right after every snapshot.
		// A partition snapshots every 64 MiB under load, and those
		// compactions, on every replica at once, set the sync Produce p99
		// after a load (4-6 ms; 1.8-2.4 without them). Partitions request
		// it themselves once quiet, or a minute after the last (see
		// compactRaftLogs); the deleted range is dropped by Pebble's own
		// compactions meanwhile.
		DisableAutoCompactions: shard >= FirstPartitionShard,
		CompactionOverhead:     snapEvery / 2,
		// Raft entries are record batches the producer already compressed.
		EntryCompressionType: config.NoCompression,
		// Unapplied entries kept in memory, on this replica or (as the
		// leader hears) a follower, beyond which proposals wait: bounds
		// the memory of a replica whose apply falls behind. At least four
		// of the largest batches, which it must admit.
		MaxInMemLogSize: inMemLogBytes(n.cfg.MemoryBytes),
		// Quiesce stays off. A quiesced group (idle for twenty election
		// timeouts) stops heartbeating, but its followers then neither
		// notice a dead leader nor wake for a proposal, which they forward
		// to it: after a leader crashed, the partition had no leader and
		// took no writes until something else woke it (see
		// replogtest's TestIdlePartitionReplacesCrashedLeader). Nor does
		// it save much: dragonboat still ticks every replica every RTT,
		// and that tick is most of an idle node's CPU (1,000 partitions
		// on one node: 0.55 cores, 0.39 quiesced).
	}
}

// Logger is the node's logger (never nil).
func (n *Node) Logger() *slog.Logger { return n.log }

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
			if !n.cfg.InMemory {
				trimRaftWAL(filepath.Join(n.cfg.Dir, "raft"), n.log)
			}
		}
		n.closeErr = n.store.Close()
	})
	return n.closeErr
}

// Metadata returns the latest locally applied metadata.
//
// It takes no lock: producers consult it for every keyless record.
func (n *Node) Metadata() *Metadata {
	if m := n.meta.Load(); m != nil {
		return m
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.mu.meta
}

func (n *Node) publishMeta(m *Metadata) {
	if m.byShard == nil {
		m.index()
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	n.mu.meta = m
	n.meta.Store(m)
	close(n.mu.metaChanged)
	n.mu.metaChanged = make(chan struct{})
}
