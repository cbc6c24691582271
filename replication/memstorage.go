package replication

import (
	"sync"

	pvfs "github.com/cockroachdb/pebble/v2/vfs"
	lnivfs "github.com/lni/vfs"
)

// MemStorage is a node's in-memory storage that outlives the node, so it can
// be reopened, and that can lose what was not synced, as a crash does.
// Safe for concurrent use.
//
// A node keeps two file systems: dragonboat's Raft log and the record store.
// A crash must cut both at one instant, or the simulation can produce a
// state no real crash can, such as a store that applied entries its Raft
// log lost. See [MemStorage.Crash].
type MemStorage struct {
	mu     sync.Mutex
	raftFS *lnivfs.MemFS // dragonboat's Raft log and snapshots
	dataFS *pvfs.MemFS   // the record store
	// syncs is held for reading by every sync of the record store, and for
	// writing while Crash takes its cut.
	syncs sync.RWMutex
	// duringCut, if set, runs inside Crash's cut (tests widen it).
	duringCut func()
}

// NewMemStorage returns empty storage.
func NewMemStorage() *MemStorage {
	return &MemStorage{raftFS: lnivfs.NewStrictMem(), dataFS: pvfs.NewCrashableMem()}
}

func (m *MemStorage) fs() (*lnivfs.MemFS, pvfs.FS) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.raftFS, &gatedFS{FS: m.dataFS, syncs: &m.syncs}
}

// Crash stops durability at once, runs stop (which must close the node
// using this storage), then drops every write that was not synced before
// the crash.
//
// The cut: while Crash holds syncs, no sync of the store is under way or
// can start, so the store's synced state is fixed; the Raft log stops
// syncing (SetIgnoreSyncs) inside that window, and the store's synced
// state is cloned. Every store sync depends on Raft syncs that finished
// before it (an entry is applied, and the store flushed, only after it was
// persisted), and every Raft log compaction on a store sync (dragonboat
// syncs the state machine before compacting), so the pair is a state a
// power loss at that instant leaves behind.
func (m *MemStorage) Crash(stop func()) {
	m.mu.Lock()
	m.syncs.Lock()
	m.raftFS.SetIgnoreSyncs(true)
	if m.duringCut != nil {
		m.duringCut()
	}
	clone := m.dataFS.CrashClone(pvfs.CrashCloneCfg{})
	m.syncs.Unlock()
	m.mu.Unlock()
	stop()
	m.mu.Lock()
	m.raftFS.ResetToSyncedState()
	m.raftFS.SetIgnoreSyncs(false)
	m.dataFS = clone
	m.mu.Unlock()
}

// gatedFS holds MemStorage.syncs for reading around every sync.
type gatedFS struct {
	pvfs.FS
	syncs *sync.RWMutex
}

func (g *gatedFS) wrap(f pvfs.File, err error) (pvfs.File, error) {
	if err != nil {
		return nil, err
	}
	return &gatedFile{File: f, syncs: g.syncs}, nil
}

func (g *gatedFS) Create(name string, c pvfs.DiskWriteCategory) (pvfs.File, error) {
	return g.wrap(g.FS.Create(name, c))
}

func (g *gatedFS) Open(name string, opts ...pvfs.OpenOption) (pvfs.File, error) {
	return g.wrap(g.FS.Open(name, opts...))
}

func (g *gatedFS) OpenReadWrite(name string, c pvfs.DiskWriteCategory, opts ...pvfs.OpenOption) (pvfs.File, error) {
	return g.wrap(g.FS.OpenReadWrite(name, c, opts...))
}

func (g *gatedFS) OpenDir(name string) (pvfs.File, error) { return g.wrap(g.FS.OpenDir(name)) }

func (g *gatedFS) ReuseForWrite(old, new string, c pvfs.DiskWriteCategory) (pvfs.File, error) {
	return g.wrap(g.FS.ReuseForWrite(old, new, c))
}

type gatedFile struct {
	pvfs.File
	syncs *sync.RWMutex
}

func (f *gatedFile) Sync() error {
	f.syncs.RLock()
	defer f.syncs.RUnlock()
	return f.File.Sync()
}

func (f *gatedFile) SyncData() error {
	f.syncs.RLock()
	defer f.syncs.RUnlock()
	return f.File.SyncData()
}

func (f *gatedFile) SyncTo(length int64) (bool, error) {
	f.syncs.RLock()
	defer f.syncs.RUnlock()
	return f.File.SyncTo(length)
}
