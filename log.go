package replog

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/replog/replog/internal/dirlock"
	"github.com/replog/replog/internal/expert"
	"github.com/replog/replog/replication"
)

// Options configures [Open]. The zero value (or nil) runs a single durable
// node that opens no network port.
type Options struct {
	// InMemory keeps the log and the Raft state in memory (Pebble's and
	// dragonboat's in-memory file systems): for tests and ephemeral queues.
	// Everything is lost on Close. Default false.
	InMemory bool

	// Logger receives replog's, dragonboat's and Pebble's messages. Nil
	// (the default) discards them. dragonboat has one process-wide logger,
	// so its messages go to the Logger of the Log opened last. Warn and
	// Error are for what needs a human. Info is for the changes an operator
	// follows, with the attributes topic, partition, group and node: Open,
	// each leader this node sees elected, a group member's partitions
	// changing, retention and compaction that removed records; dragonboat's
	// election chatter (votes, campaigns) is Debug. One exception escapes
	// the Logger: with InMemory, the Pebble bundled in dragonboat writes
	// "background error: vfs: not supported" to the standard library's
	// logger once per Open (its in-memory file system has no disk usage,
	// and it offers no logger option).
	Logger *slog.Logger

	// NodeID is this node's id in the cluster, >= 1. Default 1.
	NodeID uint64
	// Peers maps every initial node id to its Raft address (host:port for
	// TCP), this node included. Nil (the default) runs a single node.
	Peers map[uint64]string
	// Join starts a node that joins a running cluster instead of forming a
	// new one: Peers holds at least this node's address, and a member of the
	// cluster must add it with [Log.AddNode] (before or while it opens).
	Join bool
	// ListenAddress is where this node listens for Raft traffic, when it
	// differs from its address in Peers (for example 0.0.0.0:port).
	ListenAddress string
	// TLS enables mutual TLS between nodes; a cluster over TCP needs it
	// (see InsecurePlaintext). With it:
	//   - only a peer whose certificate the CA signed completes a
	//     connection, and only if its certificate speaks for the address it
	//     acts as (see [TLSOptions]): the one it was dialled at, and the
	//     source address of every batch it sends;
	//   - Raft frames are capped before anything is allocated for them
	//     (65 MiB for a batch of messages, 4 MiB for a snapshot chunk), so
	//     a frame that claims more, or does not decode, closes only that
	//     peer's connection and never crashes the node;
	//   - with ClusterID, nodes of another cluster under the same CA are
	//     not heard.
	// What it does not do: a node that holds its own valid certificate is
	// trusted to follow Raft; its messages are not checked further.
	TLS *TLSOptions
	// InsecurePlaintext allows a cluster over TCP without TLS, only when
	// every address in Peers (and ListenAddress) is on loopback.
	InsecurePlaintext bool
	// ClusterID names the cluster. Nodes drop Raft messages and snapshots
	// from nodes of another cluster, so clusters whose certificates share
	// a CA never talk. It is hashed into dragonboat's deployment id, which
	// a node's data directory records: it cannot change once the node has
	// started. Required for a cluster over TCP (no default could be shared
	// by every node: Peers differ on joining nodes and grow over time);
	// optional otherwise.
	ClusterID string

	// RTT is the Raft tick: the expected round trip between nodes including
	// queuing. Default [DefaultRTT] (100ms, etcd's heartbeat) for a
	// cluster, [DefaultSingleRTT] (10ms) for a single node.
	//
	// Every replica of every partition is ticked once per RTT whether or
	// not it has work, and that is most of what an idle node costs:
	// 1,000 idle partitions on one node took 0.27 cores at 10ms, 0.06 at
	// 100ms and 0.03 at 500ms (replog-bench -records 0 -topics 10
	// -partitions 100 -idle 15s -rtt D). The tick does not pace produce or
	// fetch (proposals and replication are sent at once); it paces
	// heartbeats and election timeouts, and so how soon a new group elects
	// its leader: a single node's groups wait one or two election timeouts
	// after Open and CreateTopic. That is why a single node keeps a short
	// tick by default; one that hosts hundreds of partitions saves most of
	// their idle CPU with RTT 100ms or more, for a slower start.
	RTT time.Duration
	// ElectionTicks is the election timeout in RTTs. Default: a second for
	// a cluster (10 ticks with the default RTT; shorter timeouts caused
	// leader churn under load on 2-core machines), and for a single node,
	// which has no one to lose a vote to, 100ms, at least 3 ticks.
	ElectionTicks int
	// HeartbeatTicks is the heartbeat interval in RTTs. Default
	// ElectionTicks/10 (at least 1).
	HeartbeatTicks int
	// SnapshotEntries is how many Raft entries pass between snapshots,
	// after which the Raft log is compacted. Default 10000.
	SnapshotEntries int
	// StartTimeout bounds how long Open waits for the metadata group (a
	// quorum of the cluster). Default 60s.
	StartTimeout time.Duration
	// RequestTimeout bounds one attempt of a request to a Raft group (the
	// proposal of a produced batch, a linearizable read, a metadata
	// change) before it is sent again, as Kafka's request.timeout.ms does.
	// The whole call stays bounded by its ctx, or for produced records by
	// [ProducerOptions.DeliveryTimeout]. An attempt also ends, and is sent
	// again, as soon as the group's leader changes. Default: four election
	// timeouts (4 x ElectionTicks x RTT: 4s with the defaults for a
	// cluster, 400ms for a single node), at least
	// 200ms; at least 2 RTTs.
	RequestTimeout time.Duration
	// CompactionMemory bounds the key index of one key compaction pass
	// (Kafka's log.cleaner.dedupe.buffer.size), in bytes: about 48 bytes
	// per distinct key plus the key. A partition whose dirty section has
	// more keys is compacted in several passes. Default MemoryBytes/8 (32
	// MiB with the default MemoryBytes); negative is invalid.
	CompactionMemory int64
	// MemoryBytes is the node's memory budget, in bytes, from which the
	// memory pools of the node and the defaults of its handles are sized.
	// Default [DefaultMemoryBytes] (256 MiB); at least 16 MiB. Of it:
	//   - 1/2: the Raft log's write buffers (dragonboat's Pebble): up to
	//     four memtables of MemoryBytes/8, which are also the size of its
	//     write-ahead log file (preallocated at 1.1 times);
	//   - 1/8: the record store's memtables (Pebble), up to four of
	//     MemoryBytes/32, and 1/16 its block cache;
	//   - 1/8: CompactionMemory's default (while a pass runs);
	//   - the rest: what records in flight cost: the default
	//     [ProducerOptions.MaxBufferedBytes] is MemoryBytes/64 per producer
	//     (Raft holds copies of what it buffers: count three times that),
	//     and the default [ConsumerOptions.ReadAheadBytes] MemoryBytes/128
	//     per partition of a consumer.
	// It also caps, per partition replica, the unapplied Raft log kept in
	// memory (MemoryBytes/4, at least 64 MiB: a lagging replica slows the
	// leader's proposals past it) and the Raft messages queued to or from
	// one node (MemoryBytes/8, at least 32 MiB: further ones are dropped
	// and sent again).
	//
	// Not covered: each producer, consumer and partition adds its own
	// share, and dragonboat allocates about 370 KiB of queues per partition
	// replica whatever the budget. Nor does it bound the Go heap: Go's
	// garbage collector lets the heap grow to twice what is live before
	// collecting (GOGC=100), so the process's resident memory is the
	// Pebble memory above plus about twice the live Go heap. A process
	// that must stay under a limit sets GOMEMLIMIT (or
	// [runtime/debug.SetMemoryLimit]) a little below it; replog changes no
	// process-wide setting itself.
	MemoryBytes int64
	// Hooks watch every producer and consumer of the Log (see [Hook]).
	Hooks []Hook

	// expert holds test plumbing, set through internal/expert by
	// replogtest and cmd/replog-bench.
	expert expert.Options
}

// DefaultRTT and DefaultSingleRTT are the defaults of [Options.RTT], for a
// cluster and for a single node.
const (
	DefaultRTT       = 100 * time.Millisecond
	DefaultSingleRTT = 10 * time.Millisecond
)

// DefaultMemoryBytes is the default of [Options.MemoryBytes]: sized for a
// library embedded in a program, with one replica of a 2-million-record
// produce run peaking near 200 MiB resident and three nodes in one process
// near 420 MiB; the Raft log's write buffers keep the size that throughput
// needs (smaller ones cost up to a third of the 3-replica produce rate).
const DefaultMemoryBytes = replication.DefaultMemoryBytes

// minMemoryBytes is the smallest [Options.MemoryBytes] accepted.
const minMemoryBytes = 16 << 20

// TLSOptions names the PEM files for mutual TLS. Every node presents its
// certificate and accepts only peers whose certificate the CA signed and
// speaks for the peer's Raft address (as spelt in Peers):
//   - a certificate with URI SANs of the form replog://host:port speaks
//     exactly for those addresses. Use these when nodes share a host: they
//     keep node 2's certificate from passing for node 3. The certificate
//     also needs the host as a DNS or IP SAN, for ordinary TLS checks;
//   - a certificate without such a URI speaks for every port of the hosts
//     in its DNS and IP SANs: enough with one node per host.
//
// [Open] refuses a certificate that does not speak for the node's own
// address, since every peer would refuse it.
type TLSOptions struct {
	CAFile   string // the CA that signs every node's certificate
	CertFile string // this node's certificate, speaking for its address
	KeyFile  string // this node's private key
}

func init() {
	// See package internal/expert for why these hooks exist.
	expert.Attach = func(opts any, x expert.Options) { opts.(*Options).expert = x }
	expert.Abort = func(l any) { l.(*Log).cancel() }
}

func (o *Options) withDefaults() (Options, error) {
	var c Options
	if o != nil {
		c = *o
		c.Peers = maps.Clone(o.Peers)
	}
	if c.NodeID == 0 {
		c.NodeID = 1
	}
	single := len(c.Peers) == 0
	if single {
		// The address is filled in by Open: dragonboat ties a data
		// directory to the address it was created with.
		c.Peers = map[uint64]string{c.NodeID: ""}
		c.expert.InProcessTransport = true
	}
	if _, ok := c.Peers[c.NodeID]; !ok {
		return c, fmt.Errorf("%w: Peers has no address for NodeID %d", ErrInvalidConfig, c.NodeID)
	}
	if !c.expert.InProcessTransport {
		if err := c.checkTCP(); err != nil {
			return c, err
		}
	}
	if c.RTT == 0 {
		c.RTT = DefaultRTT
		if single {
			c.RTT = DefaultSingleRTT
		}
	}
	if c.ElectionTicks == 0 && c.RTT > 0 {
		election := time.Second
		if single {
			election = 100 * time.Millisecond
		}
		c.ElectionTicks = max(3, int((election+c.RTT-1)/c.RTT))
	}
	if c.HeartbeatTicks == 0 {
		c.HeartbeatTicks = max(1, c.ElectionTicks/10)
	}
	if c.SnapshotEntries == 0 {
		c.SnapshotEntries = 10000
	}
	if c.StartTimeout == 0 {
		c.StartTimeout = 60 * time.Second
	}
	if c.RequestTimeout == 0 {
		c.RequestTimeout = replication.DefaultAttemptTimeout(c.RTT, uint64(c.ElectionTicks))
	}
	if c.MemoryBytes == 0 {
		c.MemoryBytes = DefaultMemoryBytes
	}
	if c.CompactionMemory == 0 && c.MemoryBytes >= minMemoryBytes {
		c.CompactionMemory = c.MemoryBytes / 8
	}
	switch {
	case c.RTT < time.Millisecond:
		return c, fmt.Errorf("%w: RTT %v below 1ms", ErrInvalidConfig, c.RTT)
	case c.HeartbeatTicks < 1 || c.ElectionTicks <= 2*c.HeartbeatTicks:
		return c, fmt.Errorf("%w: ElectionTicks (%d) must exceed twice HeartbeatTicks (%d)", ErrInvalidConfig, c.ElectionTicks, c.HeartbeatTicks)
	case c.SnapshotEntries < 0 || c.StartTimeout < 0:
		return c, fmt.Errorf("%w: negative SnapshotEntries or StartTimeout", ErrInvalidConfig)
	case c.RequestTimeout < 2*c.RTT:
		return c, fmt.Errorf("%w: RequestTimeout %v below 2 RTTs (%v)", ErrInvalidConfig, c.RequestTimeout, 2*c.RTT)
	case c.CompactionMemory < 0:
		return c, fmt.Errorf("%w: negative CompactionMemory %d", ErrInvalidConfig, c.CompactionMemory)
	case c.MemoryBytes < minMemoryBytes:
		return c, fmt.Errorf("%w: MemoryBytes %d below %d (16 MiB)", ErrInvalidConfig, c.MemoryBytes, minMemoryBytes)
	}
	return c, nil
}

// checkTCP validates the options of a cluster over TCP.
func (c *Options) checkTCP() error {
	addrs := slices.Collect(maps.Values(c.Peers))
	if c.ListenAddress != "" {
		addrs = append(addrs, c.ListenAddress)
	}
	for _, a := range addrs {
		if _, _, err := net.SplitHostPort(a); err != nil {
			return fmt.Errorf("%w: address %q: %v", ErrInvalidConfig, a, err)
		}
	}
	if c.ClusterID == "" {
		return fmt.Errorf("%w: a cluster over TCP needs a ClusterID", ErrInvalidConfig)
	}
	switch {
	case c.TLS != nil:
		if c.TLS.CAFile == "" || c.TLS.CertFile == "" || c.TLS.KeyFile == "" {
			return fmt.Errorf("%w: TLS needs CAFile, CertFile and KeyFile", ErrInvalidConfig)
		}
		for _, f := range []string{c.TLS.CAFile, c.TLS.CertFile, c.TLS.KeyFile} {
			if _, err := os.Stat(f); err != nil {
				return fmt.Errorf("%w: TLS file: %v", ErrInvalidConfig, err)
			}
		}
		if err := replication.CheckTLS(tlsFiles(c.TLS), c.Peers[c.NodeID]); err != nil {
			return fmt.Errorf("%w: %w", ErrInvalidConfig, err)
		}
	case !c.InsecurePlaintext:
		return fmt.Errorf("%w: a cluster over TCP needs TLS (set Options.TLS)", ErrInvalidConfig)
	default:
		for _, a := range addrs {
			if !isLoopback(a) {
				return fmt.Errorf("%w: InsecurePlaintext is allowed only on loopback, not %q", ErrInvalidConfig, a)
			}
		}
	}
	return nil
}

func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Log is a replog node: the topics it knows and the partitions it hosts.
// Safe for concurrent use. Close it to release its files and goroutines.
type Log struct {
	opts     Options
	dir      string
	node     *replication.Node
	counters counters
	lock     io.Closer // holds the directory; nil InMemory
	closed   chan struct{}
	// ctx ends when the Log closes; background work derives from it.
	ctx    context.Context
	cancel context.CancelFunc

	mu struct {
		sync.Mutex
		handles map[closer]struct{} // open producers and consumers, closed with the Log
	}
	closeOnce sync.Once
	closeErr  error
}

type closer interface{ Close() error }

// Open opens the log stored in dir, creating it if needed, and returns when
// its topics are readable. With nil options it runs a single node, durable
// on disk, with no network port. Reopening a directory brings back every
// topic and record.
//
// A directory is one Log's at a time: Open fails with [ErrLocked] while
// another Log, of this process or another, has it open. It refuses, with
// [ErrNotReplogDir] and without touching it, a directory that is not empty
// and holds no log. Damaged files fail it with [ErrCorrupt].
func Open(dir string, opts *Options) (*Log, error) {
	began := time.Now()
	o, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	if dir == "" && !o.InMemory {
		return nil, fmt.Errorf("%w: empty directory", ErrInvalidConfig)
	}
	if o.expert.Storage != nil && !o.InMemory {
		return nil, fmt.Errorf("%w: in-memory storage needs InMemory", ErrInvalidConfig)
	}
	var lock io.Closer
	if !o.InMemory {
		if lock, err = lockDir(dir); err != nil {
			return nil, err
		}
	}
	// unlock releases the directory when Open fails.
	unlock := func() {
		if lock != nil {
			lock.Close()
		}
	}
	if len(o.Peers) == 1 && o.Peers[o.NodeID] == "" {
		addr, err := singleNodeAddress(dir, o.InMemory)
		if err != nil {
			unlock()
			return nil, err
		}
		o.Peers[o.NodeID] = addr
	}
	node, err := replication.Open(replication.Config{
		Dir:             dir,
		InMemory:        o.InMemory,
		NodeID:          o.NodeID,
		RaftAddress:     o.Peers[o.NodeID],
		ListenAddress:   o.ListenAddress,
		TLS:             tlsFiles(o.TLS),
		ClusterID:       o.ClusterID,
		Members:         o.Peers,
		Join:            o.Join,
		InProcess:       o.expert.InProcessTransport,
		Network:         o.expert.Network,
		Storage:         o.expert.Storage,
		RTT:             o.RTT,
		ElectionTicks:   uint64(o.ElectionTicks),
		HeartbeatTicks:  uint64(o.HeartbeatTicks),
		SnapshotEntries: uint64(o.SnapshotEntries),
		StartTimeout:    o.StartTimeout,
		AttemptTimeout:  o.RequestTimeout,
		Logger:          o.Logger,

		RetentionInterval: o.expert.RetentionInterval,
		AfterTxnDecision:  o.expert.AfterTxnDecision,
		CompactionMemory:  o.CompactionMemory,
		MemoryBytes:       o.MemoryBytes,
	})
	if err != nil {
		unlock()
		return nil, err
	}
	if !o.InMemory {
		// The store and dragonboat create data/ and raft/ here and sync
		// what is inside; the entries for them are dir's to sync, before
		// Open acknowledges anything.
		if err := syncDir(vfs.Default, dir); err != nil {
			node.Close()
			unlock()
			return nil, fmt.Errorf("replog: %w", err)
		}
	}
	l := &Log{opts: o, dir: dir, node: node, lock: lock, closed: make(chan struct{})}
	l.counters.started = time.Now()
	l.ctx, l.cancel = context.WithCancel(context.Background())
	l.mu.handles = map[closer]struct{}{}
	// replication.Open returned once the metadata group answered a
	// linearizable read: every topic is readable from here.
	logDir := dir
	if o.InMemory {
		logDir = ""
	}
	node.Logger().Info("replog: opened", "node", o.NodeID, "dir", logDir,
		"topics", len(node.Metadata().Topics), "took", time.Since(began))
	if len(o.Peers) > 1 && o.ElectionTicks < 10*o.HeartbeatTicks {
		node.Logger().Warn("replog: election timeout shorter than ten heartbeats: leaders may change under load",
			"election_ticks", o.ElectionTicks, "heartbeat_ticks", o.HeartbeatTicks)
	}
	return l, nil
}

func tlsFiles(t *TLSOptions) *replication.TLSFiles {
	if t == nil {
		return nil
	}
	return &replication.TLSFiles{CA: t.CAFile, Cert: t.CertFile, Key: t.KeyFile}
}

// singleNodeAddress returns the in-process address of a single node: the one
// recorded in dir, or a new one recorded there. dragonboat refuses to reopen
// a directory under another address, and the in-process transport needs
// addresses unique in the process, so a fixed name would not do.
func singleNodeAddress(dir string, inMemory bool) (string, error) {
	if inMemory {
		return replication.NewInProcessAddress(), nil
	}
	path := filepath.Join(dir, nodeAddressFile)
	b, err := os.ReadFile(path)
	switch {
	case err == nil && !isInProcessAddress(string(b)):
		return "", &corruptError{fmt.Sprintf("%s: %q is not a node address", path, b[:min(len(b), 64)])}
	case err == nil:
		return string(b), nil
	case !errors.Is(err, os.ErrNotExist):
		return "", fmt.Errorf("replog: %w", err)
	}
	addr := replication.NewInProcessAddress()
	if err := writeFileSync(vfs.Default, path, []byte(addr)); err != nil {
		return "", fmt.Errorf("replog: %w", err)
	}
	return addr, nil
}

// isInProcessAddress reports whether s is an address that
// [replication.NewInProcessAddress] returns: "inproc-" and 16 hex digits.
func isInProcessAddress(s string) bool {
	h, ok := strings.CutPrefix(s, "inproc-")
	if !ok || len(h) != 16 {
		return false
	}
	_, err := hex.DecodeString(h)
	return err == nil
}

// The files Open keeps in dir, besides the store (data) and dragonboat's
// directory (raft).
const (
	// lockFile is locked by the Log that has the directory open. It is the
	// first file Open creates, so it also marks the directory as a log's.
	lockFile = "REPLOG_LOCK"
	// nodeAddressFile holds a single node's in-process address.
	nodeAddressFile = "NODE_ADDRESS"
)

// lockDir locks dir for one Log, creating it if needed. A directory that
// is not empty and holds none of the files a log starts with is refused,
// untouched: taking it over would mix a log's files with someone else's.
// Logs created before the lock file existed have NODE_ADDRESS (a single
// node) or dragonboat's NODEHOST.ID.
func lockDir(dir string) (io.Closer, error) {
	entries, err := os.ReadDir(dir)
	switch {
	case errors.Is(err, os.ErrNotExist):
		if err := createDir(vfs.Default, dir); err != nil {
			return nil, fmt.Errorf("replog: %w", err)
		}
	case err != nil:
		return nil, fmt.Errorf("replog: %w", err)
	case len(entries) > 0 && !holdsLog(dir):
		return nil, fmt.Errorf("%w: %s (open a new or empty directory, or one a Log created)", ErrNotReplogDir, dir)
	}
	l, err := dirlock.Lock(filepath.Join(dir, lockFile))
	switch {
	case errors.Is(err, dirlock.ErrLocked):
		return nil, fmt.Errorf("%w: %s", ErrLocked, dir)
	case err != nil:
		return nil, fmt.Errorf("replog: %w", err)
	}
	return l, nil
}

func holdsLog(dir string) bool {
	for _, name := range []string{lockFile, nodeAddressFile, filepath.Join("raft", "NODEHOST.ID")} {
		if _, err := os.Lstat(filepath.Join(dir, name)); err == nil {
			return true
		}
	}
	return false
}

// corruptError reports a damaged file. It matches [ErrCorrupt].
type corruptError struct{ msg string }

func (e *corruptError) Error() string        { return "replog: corrupt " + e.msg }
func (e *corruptError) Is(target error) bool { return target == ErrCorrupt }

// writeFileSync replaces the file at path with data, durably and
// atomically: a crash leaves the old content or the new one. The rename is
// a change to the directory, which takes a sync of its own.
func writeFileSync(fs vfs.FS, path string, data []byte) error {
	tmp := path + ".tmp"
	f, err := fs.Create(tmp, vfs.WriteCategoryUnspecified)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := fs.Rename(tmp, path); err != nil {
		return err
	}
	return syncDir(fs, filepath.Dir(path))
}

// createDir creates dir and its missing parents, durably: each new
// directory's entry in its parent is synced, or a crash could take the
// whole log with it.
func createDir(fs vfs.FS, dir string) error {
	var created []string
	for d := filepath.Clean(dir); ; d = filepath.Dir(d) {
		if _, err := fs.Stat(d); err == nil {
			break
		} else if !errors.Is(err, os.ErrNotExist) {
			return err
		}
		created = append(created, d)
		if filepath.Dir(d) == d {
			break
		}
	}
	if err := fs.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for _, d := range created {
		if err := syncDir(fs, filepath.Dir(d)); err != nil {
			return err
		}
	}
	return nil
}

func syncDir(fs vfs.FS, dir string) error {
	d, err := fs.OpenDir(dir)
	if err != nil {
		return err
	}
	return errors.Join(d.Sync(), d.Close())
}

// Close closes every producer (sending what they buffered) and consumer
// opened on the Log, then stops the node. Safe to call twice; afterwards
// every method returns [ErrClosed].
func (l *Log) Close() error {
	l.closeOnce.Do(func() {
		l.mu.Lock()
		hs := slices.Collect(maps.Keys(l.mu.handles))
		l.mu.handles = nil
		l.mu.Unlock()
		var errs []error
		for _, h := range hs {
			if err := h.Close(); err != nil && !errors.Is(err, ErrClosed) {
				errs = append(errs, err)
			}
		}
		close(l.closed)
		l.cancel()
		errs = append(errs, l.node.Close())
		if l.lock != nil {
			errs = append(errs, l.lock.Close())
		}
		l.closeErr = errors.Join(errs...)
	})
	return l.closeErr
}

// Done returns a channel closed when the Log closes, for goroutines that
// watch it (a metrics sampler, a status page) to end with it.
func (l *Log) Done() <-chan struct{} { return l.closed }

func (l *Log) isClosed() bool {
	select {
	case <-l.closed:
		return true
	default:
		return false
	}
}

func (l *Log) track(h closer) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.mu.handles == nil {
		return ErrClosed
	}
	l.mu.handles[h] = struct{}{}
	return nil
}

func (l *Log) untrack(h closer) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.mu.handles, h)
}

// defaultTimeout is applied to calls whose ctx has no deadline: dragonboat
// refuses requests without one.
const defaultTimeout = 30 * time.Second

func withDefaultDeadline(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, d)
}

// CreateTopic creates a topic and returns once this node's replicas of its
// partitions have leaders. A ctx without deadline gets 30s.
func (l *Log) CreateTopic(ctx context.Context, name string, cfg TopicConfig) (*Topic, error) {
	if l.isClosed() {
		return nil, ErrClosed
	}
	nodes := len(l.node.NodeIDs())
	c, err := cfg.withDefaults(nodes)
	if err != nil {
		return nil, err
	}
	if err := ValidateTopicName(name); err != nil {
		return nil, err
	}
	ctx, cancel := withDefaultDeadline(ctx, defaultTimeout)
	defer cancel()
	tm, err := l.node.CreateTopic(ctx, name, c.Partitions, c.Replicas, c.settings())
	if err != nil {
		if errors.Is(err, replication.ErrTopicExists) {
			return nil, fmt.Errorf("%w: %q", ErrTopicExists, name)
		}
		return nil, mapErr(err)
	}
	return &Topic{l: l, meta: tm}, nil
}

// EnsureTopic returns the topic name, creating it with cfg if it does not
// exist. An existing topic is returned as it is, whatever its config: as
// for Kafka's tools, "exists" is success, and cfg is only used for
// creating. Compare [Topic.Info] with what you need, and change it with
// [Log.AlterTopic]. cfg is validated either way. A ctx without deadline
// gets 30s.
func (l *Log) EnsureTopic(ctx context.Context, name string, cfg TopicConfig) (*Topic, error) {
	if l.isClosed() {
		return nil, ErrClosed
	}
	if _, err := cfg.withDefaults(len(l.node.NodeIDs())); err != nil {
		return nil, err
	}
	if err := ValidateTopicName(name); err != nil {
		return nil, err
	}
	for {
		if t, err := l.Topic(name); err == nil || !errors.Is(err, ErrTopicNotFound) {
			return t, err
		}
		t, err := l.CreateTopic(ctx, name, cfg)
		if !errors.Is(err, ErrTopicExists) {
			return t, err
		}
		// Created by someone else meanwhile (and maybe deleted again).
		if err := ctx.Err(); err != nil {
			return nil, err
		}
	}
}

// AlterTopic changes a topic's settings to cfg's, as a whole: Retention,
// RetentionBytes, Cleanup, DeleteRetention, MaxMessageBytes and
// Compression take cfg's values (zero values mean their defaults, as in
// [Log.CreateTopic]: no retention limit, [CleanupDelete], 24h,
// [DefaultMaxMessageBytes], no compression), and the topic
// grows to cfg.Partitions partitions, placed over the nodes as at
// creation (0 keeps the count; fewer than now fails with
// [ErrInvalidConfig], nothing changed). Replicas is ignored: move
// replicas with [Log.ReassignPartition]. New retention limits take effect
// at the partitions' next retention check, within seconds. Producers,
// consumers and [Topic] handles made before the topic grew keep using the
// old partitions; make new ones to use the new. It returns once this
// node's replicas of new partitions have leaders. A ctx without deadline
// gets 30s.
func (l *Log) AlterTopic(ctx context.Context, name string, cfg TopicConfig) error {
	if l.isClosed() {
		return ErrClosed
	}
	t, err := l.Topic(name)
	if err != nil {
		return err
	}
	c, err := cfg.settingsDefaults()
	if err != nil {
		return err
	}
	switch {
	case c.Partitions == 0:
		c.Partitions = t.Partitions()
	case c.Partitions < t.Partitions():
		return fmt.Errorf("%w: %q has %d partitions; partitions can only grow, not to %d", ErrInvalidConfig, name, t.Partitions(), c.Partitions)
	case c.Partitions > MaxPartitions:
		return fmt.Errorf("%w: %d partitions (want at most %d)", ErrInvalidConfig, c.Partitions, MaxPartitions)
	case c.Partitions > t.Partitions() && t.meta.Replicas > len(l.node.NodeIDs()):
		return fmt.Errorf("%w: new partitions need %d replicas but there are %d nodes", ErrInvalidConfig, t.meta.Replicas, len(l.node.NodeIDs()))
	}
	ctx, cancel := withDefaultDeadline(ctx, defaultTimeout)
	defer cancel()
	_, err = l.node.AlterTopic(ctx, name, t.meta.ID, c.Partitions, c.settings())
	switch {
	case errors.Is(err, replication.ErrTopicNotFound):
		return fmt.Errorf("%w: %q", ErrTopicNotFound, name)
	case errors.Is(err, replication.ErrInvalid):
		// Another AlterTopic grew the topic past cfg.Partitions meanwhile.
		return fmt.Errorf("%w: %q: partitions can only grow, not to %d", ErrInvalidConfig, name, c.Partitions)
	}
	return mapErr(err)
}

// Topic returns a handle on an existing topic. When the topic is not in
// this node's view of the metadata it first catches up with the metadata
// group (waiting at most 5s), so a topic created on another node is found.
func (l *Log) Topic(name string) (*Topic, error) {
	if l.isClosed() {
		return nil, ErrClosed
	}
	if tm := l.node.Metadata().Topics[name]; tm != nil {
		return &Topic{l: l, meta: tm}, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := l.node.SyncMetadata(ctx); err != nil {
		return nil, fmt.Errorf("%w: %q (metadata not reachable: %w)", ErrTopicNotFound, name, err)
	}
	if tm := l.node.Metadata().Topics[name]; tm != nil {
		return &Topic{l: l, meta: tm}, nil
	}
	return nil, fmt.Errorf("%w: %q", ErrTopicNotFound, name)
}

// DeleteTopic deletes a topic and, on every node, its records. Handles on it
// then fail with [ErrTopicNotFound]. A ctx without deadline gets 30s.
func (l *Log) DeleteTopic(ctx context.Context, name string) error {
	if l.isClosed() {
		return ErrClosed
	}
	ctx, cancel := withDefaultDeadline(ctx, defaultTimeout)
	defer cancel()
	if err := l.node.DeleteTopic(ctx, name); err != nil {
		if errors.Is(err, replication.ErrTopicNotFound) {
			return fmt.Errorf("%w: %q", ErrTopicNotFound, name)
		}
		return mapErr(err)
	}
	return nil
}

// Topics lists the topics in this node's view of the metadata, by name.
func (l *Log) Topics() []TopicInfo {
	if l.isClosed() {
		return nil
	}
	m := l.node.Metadata()
	out := make([]TopicInfo, 0, len(m.Topics))
	for _, name := range slices.Sorted(maps.Keys(m.Topics)) {
		out = append(out, topicInfo(m.Topics[name]))
	}
	return out
}

// ReassignPartition moves partition's replicas to nodes (node ids; the
// first becomes the preferred leader), as Kafka's partition reassignment
// does, and returns when the move is complete: new replicas were added to
// the partition's Raft group and caught up through it, and replicas that
// left were removed from the group and then deleted. The partition stays
// available throughout. A ctx without deadline gets 30s; if it ends first,
// the move goes on in the background.
func (l *Log) ReassignPartition(ctx context.Context, topic string, partition int, nodes []uint64) error {
	if l.isClosed() {
		return ErrClosed
	}
	t, err := l.Topic(topic)
	if err != nil {
		return err
	}
	if partition < 0 || partition >= t.Partitions() {
		return fmt.Errorf("%w: %s/%d", ErrPartitionNotFound, topic, partition)
	}
	seen := map[uint64]bool{}
	known := l.node.NodeIDs()
	for _, n := range nodes {
		if !slices.Contains(known, n) || seen[n] {
			return fmt.Errorf("%w: replica nodes %v (unknown or repeated node %d)", ErrInvalidConfig, nodes, n)
		}
		seen[n] = true
	}
	if len(nodes) == 0 {
		return fmt.Errorf("%w: no replica nodes", ErrInvalidConfig)
	}
	ctx, cancel := withDefaultDeadline(ctx, defaultTimeout)
	defer cancel()
	return mapErr(l.node.Reassign(ctx, topic, partition, nodes))
}

// AddNode adds node id, reachable at addr (its Raft address), to the
// cluster; the node itself is opened with Options.Join. New topics may then
// place replicas on it, and [Log.ReassignPartition] can move partitions to
// it. A ctx without deadline gets 30s.
func (l *Log) AddNode(ctx context.Context, id uint64, addr string) error {
	if l.isClosed() {
		return ErrClosed
	}
	if id == 0 || addr == "" || slices.Contains(l.node.NodeIDs(), id) {
		return fmt.Errorf("%w: node %d at %q (ids are unique and never reused)", ErrInvalidConfig, id, addr)
	}
	ctx, cancel := withDefaultDeadline(ctx, defaultTimeout)
	defer cancel()
	return mapErr(l.node.AddNode(ctx, id, addr))
}

// RemoveNode removes node id from the cluster. It must host no partition
// replica: move them away first with [Log.ReassignPartition]. The removed
// node can then be shut down; its id is never used again.
func (l *Log) RemoveNode(ctx context.Context, id uint64) error {
	if l.isClosed() {
		return ErrClosed
	}
	if !slices.Contains(l.node.NodeIDs(), id) {
		return fmt.Errorf("%w: no node %d", ErrInvalidConfig, id)
	}
	ctx, cancel := withDefaultDeadline(ctx, defaultTimeout)
	defer cancel()
	err := l.node.RemoveNode(ctx, id)
	if errors.Is(err, replication.ErrNodeBusy) {
		return fmt.Errorf("%w: node %d still hosts partition replicas; reassign them first", ErrInvalidConfig, id)
	}
	return mapErr(err)
}

// Nodes lists the ids of the cluster's nodes.
func (l *Log) Nodes() []uint64 { return l.node.NodeIDs() }

// NodeID is this node's id.
func (l *Log) NodeID() uint64 { return l.opts.NodeID }
