package replication

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lni/dragonboat/v4"
	sm "github.com/lni/dragonboat/v4/statemachine"

	"github.com/replog/replog/storage"
)

// Partition is this node's replica of one partition. Reads are served from
// the local store up to the locally applied high watermark; appends are
// proposed through Raft. Safe for concurrent use.
type Partition struct {
	Shard     uint64
	replicaID uint64 // this node's replica id in the group
	n         *Node

	// opened is closed once the state machine has loaded the store and
	// applied every command the Raft log held as committed when the
	// replica started (see setReplayTo): a partition reopened after a
	// crash replays what its store had not flushed, and until then its
	// high watermark is below what was acknowledged.
	opened chan struct{}
	store  atomic.Pointer[storage.Partition]
	// loaded is set by the state machine's Open; applied is the store's
	// last applied Raft index; replayTo is the index to reach before
	// opened closes, valid once replaySet.
	loaded    atomic.Bool
	applied   atomic.Uint64
	replayTo  atomic.Uint64
	replaySet atomic.Bool

	hw       atomic.Int64 // next offset to be assigned, as applied here
	logStart atomic.Int64
	lso      atomic.Int64 // last stable offset, as applied here

	// failed holds the error that took this replica out of service: its
	// store is damaged. See [Partition.Err].
	failed atomic.Pointer[error]

	mu     sync.Mutex
	notify chan struct{} // closed and replaced after each apply

	// compactMu lets one compaction planner at a time run on this node.
	compactMu sync.Mutex
	// snapshotting is set while a snapshot this replica asked for is
	// pending (see requestSnapshot); unsnapshotted counts the bytes of
	// entries applied since the last snapshot, lastApply is when the last
	// entries were applied (unix ns).
	snapshotting  atomic.Bool
	unsnapshotted atomic.Int64
	snapshots     atomic.Int64 // requested snapshots taken
	lastApply     atomic.Int64
	// lastLogCompaction is when this replica last asked dragonboat to
	// compact its Raft log storage (unix ns; see compactRaftLogs).
	lastLogCompaction atomic.Int64
	logCompactions    atomic.Int64 // compactions requested that had work
}

// Err returns the error that took this replica out of service (matching
// storage.ErrCorrupt), or nil. A failed replica serves no reads and
// applies nothing to its store; the partition's other replicas are not
// affected. Its Raft log is still written, so it still counts for
// durability, but the node must be repaired (its data wiped, or the
// partition reassigned away) before it serves the partition again.
func (p *Partition) Err() error {
	if e := p.failed.Load(); e != nil {
		return *e
	}
	return nil
}

// fail takes the replica out of service with err, once, and wakes readers.
func (p *Partition) fail(err error) {
	if !p.failed.CompareAndSwap(nil, &err) {
		return
	}
	p.n.log.Error("replog: partition replica out of service: its store is damaged; wipe this node's data or reassign the partition away",
		"shard", p.Shard, "err", err)
	p.markOpen()
	p.mu.Lock()
	close(p.notify)
	p.notify = make(chan struct{})
	p.mu.Unlock()
}

// setReplayTo records the last committed command the replica must apply
// before it reads as open.
func (p *Partition) setReplayTo(index uint64) {
	p.replayTo.Store(index)
	p.replaySet.Store(true)
	p.maybeOpen()
}

// maybeOpen marks the partition open once its store is loaded and has
// applied up to replayTo.
func (p *Partition) maybeOpen() {
	if p.loaded.Load() && p.replaySet.Load() && p.applied.Load() >= p.replayTo.Load() {
		p.markOpen()
	}
}

func (p *Partition) markOpen() {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.opened:
	default:
		close(p.opened)
	}
}

func newPartition(n *Node, shard uint64) *Partition {
	return &Partition{Shard: shard, n: n, opened: make(chan struct{}), notify: make(chan struct{})}
}

// Changed returns a channel closed at the next apply (or on node close).
func (p *Partition) Changed() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.notify
}

func (p *Partition) publish(m storage.Meta) {
	// The high watermark before the last stable offset: a reader that
	// loads the LSO first, then the high watermark, never finds the LSO
	// above it.
	p.hw.Store(m.NextOffset)
	p.lso.Store(m.LastStable)
	p.logStart.Store(m.LogStart)
	p.applied.Store(m.AppliedIndex)
	p.mu.Lock()
	close(p.notify)
	p.notify = make(chan struct{})
	p.mu.Unlock()
	p.maybeOpen()
}

// HighWatermark is the offset the next record will get, as applied locally.
func (p *Partition) HighWatermark() int64 { return p.hw.Load() }

// LogStart is the first retained offset.
func (p *Partition) LogStart() int64 { return p.logStart.Load() }

// LastStable is the last stable offset, as applied locally: the first
// offset of the oldest open transaction, or the high watermark if none is
// open (see [storage.Meta]). Read-committed readers read below it. Read
// it before [Partition.HighWatermark] to find it at or below that.
func (p *Partition) LastStable() int64 { return p.lso.Load() }

// AbortedTxns returns the aborted transactions overlapping offsets
// [from, to); see [storage.Partition.AbortedTxns].
func (p *Partition) AbortedTxns(ctx context.Context, from, to int64) ([]storage.AbortedTxn, error) {
	if err := p.WaitOpen(ctx); err != nil {
		return nil, err
	}
	if err := p.Err(); err != nil {
		return nil, err
	}
	return p.store.Load().AbortedTxns(from, to)
}

// WaitOpen blocks until the local state machine has loaded its store and
// applied what the replica's Raft log held as committed when it started, so
// that a node reopened after a crash never reports less than it had
// acknowledged.
func (p *Partition) WaitOpen(ctx context.Context) error {
	select {
	case <-p.opened:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-p.n.stop:
		return ErrClosed
	}
}

// CatchUp waits until this replica has applied everything the group had
// committed when it was called (a linearizable read through the leader).
func (p *Partition) CatchUp(ctx context.Context) error {
	if err := p.WaitOpen(ctx); err != nil {
		return err
	}
	_, err := p.n.syncRead(ctx, p.Shard, nil)
	return err
}

// ReadBatches passes stored batches holding offsets from `from` up to the
// local high watermark; see [storage.Partition.ReadBatches].
func (p *Partition) ReadBatches(ctx context.Context, from int64, maxBytes int, fn func([]byte) bool) error {
	if err := p.WaitOpen(ctx); err != nil {
		return err
	}
	if err := p.Err(); err != nil {
		return err
	}
	return p.store.Load().ReadBatches(from, p.hw.Load(), maxBytes, fn)
}

// OffsetForTime returns the first offset with a timestamp at or after t.
func (p *Partition) OffsetForTime(ctx context.Context, t int64) (int64, error) {
	if err := p.WaitOpen(ctx); err != nil {
		return 0, err
	}
	if err := p.Err(); err != nil {
		return 0, err
	}
	off, err := p.store.Load().OffsetForTime(t, p.hw.Load())
	// A batch straddling the log start is still indexed.
	return max(off, p.logStart.Load()), err
}

// Trim moves the partition's log start to offset through Raft (see
// [storage.TrimCommand]) and returns the log start after it. An offset
// beyond the high watermark fails with ErrInvalid. Retrying is safe: the
// command sets an absolute position.
func (p *Partition) Trim(ctx context.Context, offset int64) (int64, error) {
	return p.control(ctx, storage.TrimCommand(offset))
}

// Retain applies retention limits as of now through Raft (see
// [storage.RetainCommand]) and returns the log start after it.
func (p *Partition) Retain(ctx context.Context, now, age, maxBytes int64) (int64, error) {
	return p.control(ctx, storage.RetainCommand(now, age, maxBytes))
}

func (p *Partition) control(ctx context.Context, cmd []byte) (int64, error) {
	if err := p.Err(); err != nil {
		return 0, err
	}
	r, _, err := p.n.syncPropose(ctx, p.Shard, cmd)
	if err != nil {
		return 0, err
	}
	switch res := decodeResult(r.Value); res.Status {
	case storage.StatusOK:
		return res.BaseOffset, nil
	case storage.StatusInvalid:
		return 0, ErrInvalid
	default:
		return 0, fmt.Errorf("%w: shard %d: %v", storage.ErrCorrupt, p.Shard, res.Status)
	}
}

// Proposal is a command on its way through Raft. Not safe for concurrent
// use.
type Proposal struct {
	p        *Partition
	rs       *dragonboat.RequestState
	leader   uint64
	leaderCh <-chan struct{}
}

// ProposeAsync starts proposing cmd; the result arrives on [Proposal.Done]
// within timeout. Proposals made one after another from one goroutine reach
// the leader in that order. An error means cmd reached no log.
func (p *Partition) ProposeAsync(cmd []byte, timeout time.Duration) (*Proposal, error) {
	if err := p.Err(); err != nil {
		return nil, err
	}
	leader, ch := p.n.leaderState(p.Shard)
	rs, err := p.n.nh.Propose(p.n.nh.GetNoOPSession(p.Shard), cmd, timeout)
	if err != nil {
		return nil, mapError(err)
	}
	return &Proposal{p: p, rs: rs, leader: leader, leaderCh: ch}, nil
}

// LeaderState returns the known leader of the partition's group (a replica
// id, 0 while none is known) and a channel closed at the next leader change
// of any group on this node.
func (p *Partition) LeaderState() (uint64, <-chan struct{}) { return p.n.leaderState(p.Shard) }

// Done delivers the outcome once; pass it to [Proposal.Result].
func (pr *Proposal) Done() <-chan dragonboat.RequestResult { return pr.rs.ResultC() }

// LeaderChanged is closed when some group's leader changes; then
// [Proposal.LeaderMoved] tells whether this group's did.
func (pr *Proposal) LeaderChanged() <-chan struct{} { return pr.leaderCh }

// LeaderMoved reports whether the group's leader differs from the one when
// the proposal was made, and re-arms LeaderChanged. A proposal forwarded to a
// leader that lost its leadership can vanish without an answer: rather than
// wait for its timeout, callers whose commands are safe to apply twice
// propose again (the proposal stays pending and may still commit: it is
// ambiguous, see [ErrLeaderChanged]).
func (pr *Proposal) LeaderMoved() bool {
	now, ch := pr.p.n.leaderState(pr.p.Shard)
	pr.leaderCh = ch
	return now != pr.leader
}

// Result turns what Done delivered into the state machine's result or an
// error: [ErrUnavailable] when the command certainly reached no state
// machine (so sending it again cannot apply it twice), [ErrAmbiguous] when
// it may have committed or may still commit.
func (pr *Proposal) Result(r dragonboat.RequestResult) (storage.Result, error) {
	switch {
	case r.Completed():
		pr.rs.Release()
		return decodeResult(r.GetResult().Value), nil
	case r.Dropped():
		// The local replica dropped it before it reached any log: no
		// leader known, or a leadership transfer under way.
		return storage.Result{}, mapError(dragonboat.ErrShardNotReady)
	case r.Rejected():
		// Refused by the session check, never applied.
		return storage.Result{}, mapError(dragonboat.ErrRejected)
	case r.Timeout():
		return storage.Result{}, fmt.Errorf("%w: %w", ErrAmbiguous, mapError(dragonboat.ErrTimeout))
	case r.Terminated():
		// The replica stopped (its node closes, or it was moved away)
		// while the proposal was pending.
		return storage.Result{}, fmt.Errorf("%w: %w", ErrAmbiguous, mapError(dragonboat.ErrShardClosed))
	}
	return storage.Result{}, fmt.Errorf("%w: %w", ErrAmbiguous, mapError(dragonboat.ErrAborted))
}

// Results travel in sm.Result.Value: the status in the top byte, the base
// offset in the low 56 bits (2^56 records per partition is far beyond reach).
const offsetMask = 1<<56 - 1

func encodeResult(r storage.Result) uint64 {
	return uint64(r.Status)<<56 | uint64(r.BaseOffset)&offsetMask
}

func decodeResult(v uint64) storage.Result {
	st := storage.Status(v >> 56)
	off := int64(v & offsetMask)
	if st != storage.StatusOK && st != storage.StatusDuplicate {
		off = -1
	}
	return storage.Result{BaseOffset: off, Status: st}
}

// partitionSM is the on-disk state machine of a partition: dragonboat hands
// it committed entries, it appends them to Pebble. See storage.Partition.Apply
// for why applying does not fsync and why that is safe.
type partitionSM struct {
	p       *Partition
	s       *storage.Partition
	entries []storage.Entry
	results []storage.Result
}

// SnapshotBytes is how many bytes of entries a partition applies before it
// asks for a snapshot, whatever SnapshotEntries says: the snapshot lets
// dragonboat drop the Raft log, which otherwise keeps a full copy of up to
// SnapshotEntries/10 record batches of up to 1 MiB each (a partition's
// whole data at rest in the benchmark). A partition that has gone quiet
// asks once IdleSnapshotBytes are unsnapshotted (see snapshotIdle).
const (
	SnapshotBytes     = 64 << 20
	IdleSnapshotBytes = 1 << 20
)

func (s *partitionSM) Open(<-chan struct{}) (uint64, error) {
	if s.s == nil { // startPartition normally loads the store first
		sp, err := s.p.n.store.Partition(s.p.Shard)
		if err != nil {
			return 0, err
		}
		s.s = sp
	}
	s.p.store.Store(s.s)
	s.p.loaded.Store(true)
	s.p.publish(s.s.Meta())
	return s.s.Meta().AppliedIndex, nil
}

// Update applies committed entries to the store. Bad commands get a status
// (storage validates each fully). dragonboat halts the process on any error
// returned here, so damage met while applying (a producer state that no
// longer reads back) takes this replica out of service instead: it answers
// StatusCorrupt and stores nothing from then on, and its store keeps the
// applied index of its last good write. Only a failed write (the disk
// refusing it) is still returned, since nothing is safe after that.
func (s *partitionSM) Update(es []sm.Entry) ([]sm.Entry, error) {
	if cap(s.results) < len(es) {
		s.results = make([]storage.Result, len(es))
	}
	s.results = s.results[:len(es)]
	if s.p.Err() == nil {
		s.entries = s.entries[:0]
		for _, e := range es {
			s.entries = append(s.entries, storage.Entry{Index: e.Index, Cmd: e.Cmd})
			s.p.unsnapshotted.Add(int64(len(e.Cmd)))
		}
		s.p.lastApply.Store(time.Now().UnixNano())
		if limit := s.p.n.cfg.SnapshotBytes; limit > 0 && s.p.unsnapshotted.Load() >= limit {
			s.p.requestSnapshot()
		}
		start := time.Now()
		err := s.s.Apply(s.entries, s.results)
		took := time.Since(start)
		s.p.n.metrics.Apply.Observe(took)
		if took >= SlowApply {
			s.p.n.log.Warn("replog: slow apply", "shard", s.p.Shard, "entries", len(es), "took", took)
		}
		switch {
		case errors.Is(err, storage.ErrCorrupt):
			s.p.fail(fmt.Errorf("shard %d: %w", s.p.Shard, err))
		case err != nil:
			return nil, err
		}
	}
	if s.p.Err() != nil {
		for i := range s.results {
			s.results[i] = storage.Result{BaseOffset: -1, Status: storage.StatusCorrupt}
		}
	}
	for i := range es {
		es[i].Result = sm.Result{Value: encodeResult(s.results[i])}
	}
	s.p.publish(s.s.Meta())
	return es, nil
}

func (s *partitionSM) Lookup(any) (any, error) { return s.s.Meta(), nil }

func (s *partitionSM) Sync() error {
	start := time.Now()
	err := s.p.n.store.Sync()
	took := time.Since(start)
	s.p.n.metrics.Sync.Observe(took)
	if took >= SlowSync {
		s.p.n.log.Warn("replog: slow store sync (fsync)", "shard", s.p.Shard, "took", took)
	}
	return err
}

func (s *partitionSM) PrepareSnapshot() (any, error) {
	return s.s.Snapshot(), nil
}

func (s *partitionSM) SaveSnapshot(ctx any, w io.Writer, _ <-chan struct{}) error {
	snap := ctx.(*storage.Snapshot)
	defer snap.Close()
	if err := s.p.Err(); err != nil {
		// The store stopped applying: it is not the state at the
		// snapshot's index.
		return fmt.Errorf("%w: %w", sm.ErrSnapshotAborted, err)
	}
	_, err := snap.WriteTo(w)
	if errors.Is(err, storage.ErrCorrupt) {
		// A damaged store file cannot be streamed. dragonboat halts the
		// process on any SaveSnapshot error but an abort, and the damage
		// is already logged and reported to this partition's readers.
		return fmt.Errorf("%w: %w", sm.ErrSnapshotAborted, err)
	}
	return err
}

func (s *partitionSM) RecoverFromSnapshot(r io.Reader, _ <-chan struct{}) error {
	if err := s.s.Restore(r); err != nil {
		return err
	}
	s.p.publish(s.s.Meta())
	return nil
}

func (s *partitionSM) Close() error { return nil }

// requestSnapshot asks dragonboat for a snapshot of the partition, once at
// a time, in the background (the state machine must not wait for it), and
// has the Raft log compacted up to it but for a few entries that let a
// follower just behind catch up without one.
func (p *Partition) requestSnapshot() {
	if !p.snapshotting.CompareAndSwap(false, true) {
		return
	}
	if !p.n.hold() {
		p.snapshotting.Store(false)
		return
	}
	// The snapshot covers at least what was applied by now. dragonboat
	// calls no method of an on-disk state machine for its own snapshots
	// (PrepareSnapshot is for streaming one to a follower), so the count
	// is settled here once it is taken.
	covered := p.unsnapshotted.Load()
	go func() {
		defer p.n.wg.Done()
		defer p.snapshotting.Store(false)
		rs, err := p.n.nh.RequestSnapshot(p.Shard, dragonboat.SnapshotOption{
			OverrideCompactionOverhead: true, CompactionOverhead: 16,
		}, p.n.cfg.AttemptTimeout)
		if err != nil {
			return // one is being taken, or the replica stopped: the next apply asks again
		}
		defer rs.Release()
		select {
		case r := <-rs.ResultC():
			if r.Completed() {
				p.snapshots.Add(1)
				p.unsnapshotted.Add(-covered)
			}
		case <-p.n.stop:
		}
	}()
}

// snapshotIdle asks for a snapshot of each local partition that has been
// quiet for a while with at least IdleSnapshotBytes applied since its last
// one, so that a log at rest is not stored twice (in the Raft log and the
// store). Called from the retention loop.
func (n *Node) snapshotIdle(quiet time.Duration) {
	now := time.Now().UnixNano()
	for _, p := range n.Local() {
		if p.Err() != nil || now-p.lastApply.Load() < int64(quiet) {
			continue
		}
		if p.unsnapshotted.Load() < IdleSnapshotBytes {
			// Entries applied before this node last started are not
			// counted: look at the log itself.
			r, err := n.nh.GetLogReader(p.Shard)
			if err != nil {
				continue
			}
			if first, last := r.GetRange(); last < first+idleSnapshotEntries {
				continue
			}
		}
		p.requestSnapshot()
	}
}

// compactRaftLogs asks dragonboat to compact the Raft log storage of each
// local partition that has gone quiet, or whose last compaction is
// maxLogCompactionDelay old, so that the space of entries that snapshots
// made unneeded comes back without a compaction on every replica while
// they are busy. dragonboat answers at once (ErrRejected) when nothing was
// removed since the last one. Called from the retention loop.
func (n *Node) compactRaftLogs(quiet time.Duration) {
	now := time.Now().UnixNano()
	for _, p := range n.Local() {
		if now-p.lastApply.Load() < int64(quiet) && now-p.lastLogCompaction.Load() < int64(maxLogCompactionDelay) {
			continue
		}
		p.lastLogCompaction.Store(now)
		switch _, err := n.nh.RequestCompaction(p.Shard, p.replicaID); {
		case err == nil:
			p.logCompactions.Add(1)
		case !errors.Is(err, dragonboat.ErrRejected): // rejected: nothing new to reclaim
			n.log.Debug("replog: compact Raft log", "shard", p.Shard, "err", err)
		}
	}
}

// maxLogCompactionDelay bounds how long a busy partition's Raft log
// storage waits for a compaction.
const maxLogCompactionDelay = time.Minute

// idleSnapshotEntries is how many Raft entries a quiet partition keeps
// without asking for a snapshot, when it cannot tell their size.
const idleSnapshotEntries = 64
