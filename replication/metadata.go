package replication

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net"
	"slices"
	"strconv"

	sm "github.com/lni/dragonboat/v4/statemachine"
	"github.com/replog/replog/storage"
)

// MetaShardID is the Raft shard that holds the cluster metadata (topics,
// partition placement, producer ids), as KRaft's metadata log does for Kafka.
// Partition shards are numbered from FirstPartitionShard.
const (
	MetaShardID         uint64 = 1
	FirstPartitionShard uint64 = 1024
	// MaxPartitions caps a topic's partitions.
	MaxPartitions = 4096
)

// Metadata is an immutable view of the replicated cluster metadata. A new
// value is published after every change; never modify one.
type Metadata struct {
	Topics       map[string]*TopicMeta `json:"topics"`
	NextShard    uint64                `json:"next_shard"`
	NextProducer uint64                `json:"next_producer"`
	NextReplica  uint64                `json:"next_replica"` // next Raft replica id for a reassigned replica
	// Nodes added to the cluster after it started (id -> Raft address);
	// the initial ones are in every node's Options.Peers.
	Nodes map[uint64]string `json:"nodes,omitempty"`
	// Removed nodes; their ids are never used again.
	Removed []uint64 `json:"removed,omitempty"`
	// KafkaBrokers are the addresses (host:port) that nodes running a
	// Kafka listener advertise to clients, by node id, so that every
	// node's Metadata answer lists every broker. A node registers its
	// address each time its listener starts and keeps it while it is down
	// (clients try it and move on, as with a Kafka broker that is down);
	// it goes with the node's removal. Metadata written before this field
	// existed lacks it: no node has registered.
	KafkaBrokers  map[uint64]string `json:"kafka_brokers,omitempty"`
	DeletedShards []uint64          `json:"deleted_shards,omitempty"`
	Index         uint64            `json:"index"` // last applied Raft index

	// byShard indexes the partitions by shard. Published metadata is
	// immutable and carries it (see index); a node's background loops
	// look partitions up by shard for every replica it runs, several
	// times a second, which a scan made quadratic in the partitions
	// hosted (a node of 1,000 partitions idled at a third of a core).
	byShard map[uint64]shardRef
}

// shardRef locates a partition in Metadata.Topics.
type shardRef struct {
	topic string
	index int
}

// index builds m.byShard; m must not change afterwards.
func (m *Metadata) index() {
	idx := make(map[uint64]shardRef)
	for name, t := range m.Topics {
		for i, pm := range t.Partitions {
			idx[pm.Shard] = shardRef{name, i}
		}
	}
	m.byShard = idx
}

// TopicMeta describes one topic. Immutable once published.
type TopicMeta struct {
	Name       string          `json:"name"`
	ID         uint64          `json:"id"` // unique for the cluster's life; a re-created topic gets a new one
	Partitions []PartitionMeta `json:"partitions"`
	Replicas   int             `json:"replicas"`
	TopicSettings
	Created int64 `json:"created"` // unix ns, from the proposer
}

// TopicSettings are the settings of a topic that alter_topic may change.
// Metadata written before a field existed lacks it, and reads it as zero,
// which keeps that metadata's meaning: no retention limit, delete policy,
// the default delete retention, the default largest batch.
type TopicSettings struct {
	Compression uint8 `json:"compression"`
	// Retention is the age (ns) after which records are deleted; 0 keeps
	// them forever.
	Retention int64 `json:"retention,omitempty"`
	// RetentionBytes bounds each partition's stored bytes; 0 is unbounded.
	RetentionBytes int64 `json:"retention_bytes,omitempty"`
	// Cleanup is the root package's cleanup policy bit set (1 delete, 2
	// compact); 0 means delete.
	Cleanup uint8 `json:"cleanup,omitempty"`
	// DeleteRetention (ns) is how long tombstones stay; 0 means the root
	// package's default.
	DeleteRetention int64 `json:"delete_retention,omitempty"`
	// MaxMessageBytes is the largest record batch the topic accepts, in
	// bytes as encoded (Kafka's max.message.bytes); 0 means the root
	// package's default. Producers check it before proposing; the state
	// machine does not, so lowering it never fails a batch already
	// proposed.
	MaxMessageBytes int32 `json:"max_message_bytes,omitempty"`
}

// CleanupDeleteBit and CleanupCompactBit are the bits of
// TopicSettings.Cleanup.
const (
	CleanupDeleteBit  uint8 = 1
	CleanupCompactBit uint8 = 2
)

// Deletes reports whether retention limits apply (the delete policy is
// on, alone or with compaction).
func (s TopicSettings) Deletes() bool { return s.Cleanup == 0 || s.Cleanup&CleanupDeleteBit != 0 }

func (s TopicSettings) valid() bool {
	return s.Retention >= 0 && s.RetentionBytes >= 0 && s.DeleteRetention >= 0 && s.MaxMessageBytes >= 0 &&
		s.Cleanup&^(CleanupDeleteBit|CleanupCompactBit) == 0 && storage.Compression(s.Compression).Valid()
}

// PartitionMeta places one partition.
type PartitionMeta struct {
	Shard    uint64   `json:"shard"`
	Replicas []uint64 `json:"replicas"` // node ids; the first is the preferred leader
	// Initial are the nodes the Raft group was created on: they start as
	// its bootstrap members with their node id as replica id.
	Initial []uint64 `json:"initial,omitempty"`
	// ReplicaIDs are the Raft replica ids of nodes added by a reassignment:
	// dragonboat never reuses a removed replica id, so each addition gets a
	// fresh one.
	ReplicaIDs map[uint64]uint64 `json:"replica_ids,omitempty"`
	// Moving is set by a reassignment until the group's leader has made
	// the Raft membership match Replicas; replicas that left are deleted
	// only then.
	Moving bool `json:"moving,omitempty"`
	// Observers are nodes that host a non-voting replica so they can serve
	// the partition without holding a vote: a node asked for a partition it
	// does not host joins its group this way. Raft forwards their writes to
	// the leader and feeds them the log, so they read locally.
	Observers []uint64 `json:"observers,omitempty"`
}

// ReplicaID is node's Raft replica id in the partition's group.
func (p PartitionMeta) ReplicaID(node uint64) uint64 {
	if id, ok := p.ReplicaIDs[node]; ok {
		return id
	}
	return node
}

// NodeOf maps a Raft replica id back to its node (0 for none).
func (p PartitionMeta) NodeOf(replica uint64) uint64 {
	if replica == 0 {
		return 0
	}
	for n, id := range p.ReplicaIDs {
		if id == replica {
			return n
		}
	}
	return replica
}

// bootstrap reports whether node starts the group as an initial member
// (rather than joining it).
func (p PartitionMeta) bootstrap(node uint64) bool {
	_, added := p.ReplicaIDs[node]
	return !added && slices.Contains(p.initial(), node)
}

func (p PartitionMeta) initial() []uint64 {
	if p.Initial == nil {
		return p.Replicas
	}
	return p.Initial
}

// Hosts reports whether node hosts a voting replica of the partition.
func (p PartitionMeta) Hosts(node uint64) bool { return slices.Contains(p.Replicas, node) }

// Serves reports whether node hosts a voting or non-voting replica.
func (p PartitionMeta) Serves(node uint64) bool {
	return p.Hosts(node) || slices.Contains(p.Observers, node)
}

func newMetadata() *Metadata {
	return &Metadata{Topics: map[string]*TopicMeta{}, NextShard: FirstPartitionShard, NextProducer: 1, NextReplica: firstAddedReplica}
}

func (m *Metadata) clone() *Metadata {
	c := *m
	c.Topics = maps.Clone(m.Topics)
	c.DeletedShards = slices.Clone(m.DeletedShards)
	c.Nodes = maps.Clone(m.Nodes)
	c.Removed = slices.Clone(m.Removed)
	c.KafkaBrokers = maps.Clone(m.KafkaBrokers)
	c.byShard = nil // the copy is changed before it is published
	return &c
}

// firstAddedReplica starts the replica ids of reassigned replicas, far above
// any node id, so they never collide with the initial members' ids.
const firstAddedReplica = 1 << 32

// TopicByID finds a live topic by id.
func (m *Metadata) TopicByID(id uint64) *TopicMeta {
	for _, t := range m.Topics {
		if t.ID == id {
			return t
		}
	}
	return nil
}

func (m *Metadata) partition(shard uint64) (PartitionMeta, bool) {
	_, _, pm, ok := m.partitionOf(shard)
	return pm, ok
}

// partitionOf finds a partition by shard, with its topic and index.
func (m *Metadata) partitionOf(shard uint64) (string, int, PartitionMeta, bool) {
	if m.byShard != nil {
		ref, ok := m.byShard[shard]
		if !ok {
			return "", 0, PartitionMeta{}, false
		}
		return ref.topic, ref.index, m.Topics[ref.topic].Partitions[ref.index], true
	}
	for name, t := range m.Topics {
		for i, pm := range t.Partitions {
			if pm.Shard == shard {
				return name, i, pm, true
			}
		}
	}
	return "", 0, PartitionMeta{}, false
}

// metaCmd is one command of the metadata state machine, JSON-encoded: the
// metadata log is small and rarely written, so clarity beats compactness.
type metaCmd struct {
	Op         string `json:"op"`
	Name       string `json:"name,omitempty"`
	Partitions int    `json:"partitions,omitempty"`
	Replicas   int    `json:"replicas,omitempty"`
	// TopicSettings: create_topic's, and alter_topic's new ones.
	TopicSettings
	Nodes     []uint64 `json:"nodes,omitempty"` // voting members when proposed, for placement
	Created   int64    `json:"created,omitempty"`
	Partition int      `json:"partition,omitempty"`
	Node      uint64   `json:"node,omitempty"`
	Observers []uint64 `json:"observers,omitempty"` // reassign_done: the observers converged
	Address   string   `json:"address,omitempty"`
	Replicas2 []uint64 `json:"new_replicas,omitempty"` // reassign: the new replica set
	// ID, when set, names the topic alter_topic expects (a re-created
	// topic of the same name is not altered).
	ID uint64 `json:"id,omitempty"`
}

const (
	opCreateTopic   = "create_topic"
	opAlterTopic    = "alter_topic"
	opDeleteTopic   = "delete_topic"
	opAllocProducer = "alloc_producer"
	opReassign      = "reassign"
	opReassignDone  = "reassign_done"
	opAddNode       = "add_node"
	opRemoveNode    = "remove_node"
	opObserve       = "observe"
	// opKafkaBroker registers Node's Kafka listener at Address (see
	// Metadata.KafkaBrokers). Nodes that predate it refuse it as an
	// unknown command (metaInvalid) and change nothing: a cluster being
	// upgraded learns the addresses as its nodes are.
	opKafkaBroker = "kafka_broker"
)

// maxKafkaAddress bounds a registered Kafka address (a host name is at
// most 253 bytes; a port and brackets add a few).
const maxKafkaAddress = 300

// Result codes of metadata commands (sm.Result.Value).
const (
	metaOK uint64 = iota
	metaTopicExists
	metaTopicNotFound
	metaInvalid
	metaNodeBusy
)

// metaSM is the metadata state machine. dragonboat keeps it in memory and
// rebuilds it from its snapshots and Raft log on restart.
type metaSM struct {
	n     *Node
	state *Metadata
}

func (s *metaSM) Update(e sm.Entry) (sm.Result, error) {
	var c metaCmd
	if err := json.Unmarshal(e.Cmd, &c); err != nil {
		return sm.Result{Value: metaInvalid}, nil
	}
	next := s.state.clone()
	next.Index = e.Index
	res := next.apply(c)
	s.state = next
	s.n.publishMeta(next)
	return res, nil
}

// apply changes m (a private clone) by one command. It must be
// deterministic: every replica applies the same commands in the same order.
func (m *Metadata) apply(c metaCmd) sm.Result {
	switch c.Op {
	case opCreateTopic:
		if _, ok := m.Topics[c.Name]; ok {
			return sm.Result{Value: metaTopicExists}
		}
		c.Nodes = m.present(c.Nodes)
		// The root package validates before proposing; the state machine
		// checks again, since a command is input like any other.
		if c.Name == "" || c.Partitions < 1 || c.Partitions > MaxPartitions || c.Replicas < 1 || c.Replicas > len(c.Nodes) || !validNodes(c.Nodes) || !c.TopicSettings.valid() {
			return sm.Result{Value: metaInvalid}
		}
		t := &TopicMeta{Name: c.Name, ID: m.NextShard, Replicas: c.Replicas, TopicSettings: c.TopicSettings, Created: c.Created}
		m.addPartitions(t, c.Partitions, c.Nodes)
		m.Topics[c.Name] = t
		data, _ := json.Marshal(t)
		return sm.Result{Value: metaOK, Data: data}
	case opAlterTopic:
		t, ok := m.Topics[c.Name]
		if !ok || c.ID != 0 && t.ID != c.ID {
			return sm.Result{Value: metaTopicNotFound}
		}
		c.Nodes = m.present(c.Nodes)
		// Partitions only grow; setting the current count again (a
		// retried proposal) changes nothing.
		if c.Partitions < len(t.Partitions) || c.Partitions > MaxPartitions || !c.TopicSettings.valid() ||
			c.Partitions > len(t.Partitions) && (t.Replicas > len(c.Nodes) || !validNodes(c.Nodes)) {
			return sm.Result{Value: metaInvalid}
		}
		nt := *t // published values are immutable: change a copy
		nt.Partitions = slices.Clone(t.Partitions)
		nt.TopicSettings = c.TopicSettings
		m.addPartitions(&nt, c.Partitions-len(t.Partitions), c.Nodes)
		m.Topics[c.Name] = &nt
		data, _ := json.Marshal(&nt)
		return sm.Result{Value: metaOK, Data: data}
	case opDeleteTopic:
		t, ok := m.Topics[c.Name]
		if !ok {
			return sm.Result{Value: metaTopicNotFound}
		}
		delete(m.Topics, c.Name)
		for _, p := range t.Partitions {
			m.DeletedShards = append(m.DeletedShards, p.Shard)
		}
		return sm.Result{Value: metaOK}
	case opReassign:
		t, ok := m.Topics[c.Name]
		if !ok {
			return sm.Result{Value: metaTopicNotFound}
		}
		if c.Partition < 0 || c.Partition >= len(t.Partitions) || len(c.Replicas2) == 0 {
			return sm.Result{Value: metaInvalid}
		}
		seen := map[uint64]bool{}
		for _, n := range c.Replicas2 {
			if seen[n] || !slices.Contains(c.Nodes, n) {
				return sm.Result{Value: metaInvalid}
			}
			seen[n] = true
		}
		// Published values are immutable: change copies.
		nt := *t
		nt.Partitions = slices.Clone(t.Partitions)
		pm := nt.Partitions[c.Partition]
		pm.Initial = slices.Clone(pm.initial())
		ids := maps.Clone(pm.ReplicaIDs)
		if ids == nil {
			ids = map[uint64]uint64{}
		}
		for _, n := range c.Replicas2 {
			switch {
			case slices.Contains(pm.Replicas, n):
			case slices.Contains(pm.Observers, n):
				// A non-voting replica is promoted under its replica id.
				pm.Observers = slices.DeleteFunc(slices.Clone(pm.Observers), func(o uint64) bool { return o == n })
			default:
				ids[n] = m.NextReplica // joins as a new replica
				m.NextReplica++
			}
		}
		pm.ReplicaIDs = ids
		pm.Replicas = slices.Clone(c.Replicas2)
		pm.Moving = true
		nt.Partitions[c.Partition] = pm
		nt.Replicas = len(pm.Replicas)
		m.Topics[c.Name] = &nt
		return sm.Result{Value: metaOK}
	case opReassignDone:
		t, ok := m.Topics[c.Name]
		if !ok || c.Partition < 0 || c.Partition >= len(t.Partitions) {
			return sm.Result{Value: metaTopicNotFound}
		}
		if pm := t.Partitions[c.Partition]; pm.Moving && slices.Equal(pm.Replicas, c.Replicas2) && slices.Equal(pm.Observers, c.Observers) {
			nt := *t
			nt.Partitions = slices.Clone(t.Partitions)
			nt.Partitions[c.Partition].Moving = false
			m.Topics[c.Name] = &nt
		}
		return sm.Result{Value: metaOK}
	case opObserve:
		t, ok := m.Topics[c.Name]
		if !ok {
			return sm.Result{Value: metaTopicNotFound}
		}
		if c.Partition < 0 || c.Partition >= len(t.Partitions) || c.Node == 0 {
			return sm.Result{Value: metaInvalid}
		}
		pm := t.Partitions[c.Partition]
		if pm.Serves(c.Node) {
			return sm.Result{Value: metaOK}
		}
		nt := *t
		nt.Partitions = slices.Clone(t.Partitions)
		pm.Initial = slices.Clone(pm.initial())
		pm.ReplicaIDs = maps.Clone(pm.ReplicaIDs)
		if pm.ReplicaIDs == nil {
			pm.ReplicaIDs = map[uint64]uint64{}
		}
		pm.ReplicaIDs[c.Node] = m.NextReplica
		m.NextReplica++
		pm.Observers = append(slices.Clone(pm.Observers), c.Node)
		pm.Moving = true
		nt.Partitions[c.Partition] = pm
		m.Topics[c.Name] = &nt
		return sm.Result{Value: metaOK}
	case opAddNode:
		if c.Node == 0 || c.Address == "" || slices.Contains(m.Removed, c.Node) {
			return sm.Result{Value: metaInvalid}
		}
		if m.Nodes == nil {
			m.Nodes = map[uint64]string{}
		}
		m.Nodes[c.Node] = c.Address
		return sm.Result{Value: metaOK}
	case opRemoveNode:
		if c.Node == 0 {
			return sm.Result{Value: metaInvalid}
		}
		for _, t := range m.Topics {
			for _, pm := range t.Partitions {
				if pm.Hosts(c.Node) {
					return sm.Result{Value: metaNodeBusy}
				}
			}
		}
		if !slices.Contains(m.Removed, c.Node) {
			m.Removed = append(m.Removed, c.Node)
		}
		delete(m.Nodes, c.Node)
		delete(m.KafkaBrokers, c.Node)
		return sm.Result{Value: metaOK}
	case opKafkaBroker:
		if c.Node == 0 || slices.Contains(m.Removed, c.Node) || !validKafkaAddress(c.Address) {
			return sm.Result{Value: metaInvalid}
		}
		if m.KafkaBrokers == nil {
			m.KafkaBrokers = map[uint64]string{}
		}
		m.KafkaBrokers[c.Node] = c.Address
		return sm.Result{Value: metaOK}
	case opAllocProducer:
		id := m.NextProducer
		m.NextProducer++
		return sm.Result{Value: metaOK, Data: fmt.Appendf(nil, "%d", id)}
	}
	return sm.Result{Value: metaInvalid}
}

// addPartitions appends n partitions to t, on new shards, placed over
// nodes (the voting members when the command was proposed).
func (m *Metadata) addPartitions(t *TopicMeta, n int, nodes []uint64) {
	nodes = slices.Clone(nodes)
	slices.Sort(nodes)
	for range n {
		i := len(t.Partitions)
		shard := m.NextShard
		m.NextShard++
		// Round-robin placement, rotated per partition so replicas and
		// preferred leaders spread evenly over the nodes.
		reps := make([]uint64, t.Replicas)
		for r := range reps {
			reps[r] = nodes[(int(t.ID)+i+r)%len(nodes)]
		}
		t.Partitions = append(t.Partitions, PartitionMeta{Shard: shard, Replicas: reps, Initial: slices.Clone(reps)})
	}
}

// validNodes reports whether ids are node ids (non-zero) without repeats.
// present returns ids without the nodes removed from the cluster. The
// proposer lists the nodes as it knows them, and its metadata may not have
// applied a removal yet: placing a new partition on a removed node would
// leave it a replica short for good.
func (m *Metadata) present(ids []uint64) []uint64 {
	if len(m.Removed) == 0 {
		return ids
	}
	return slices.DeleteFunc(slices.Clone(ids), func(id uint64) bool { return slices.Contains(m.Removed, id) })
}

// validKafkaAddress reports whether addr is host:port with a port a Kafka
// client can dial (1 to 65535).
func validKafkaAddress(addr string) bool {
	if len(addr) > maxKafkaAddress {
		return false
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil || host == "" {
		return false
	}
	p, err := strconv.ParseUint(port, 10, 16)
	return err == nil && p > 0
}

func validNodes(ids []uint64) bool {
	seen := make(map[uint64]bool, len(ids))
	for _, id := range ids {
		if id == 0 || seen[id] {
			return false
		}
		seen[id] = true
	}
	return true
}

func (s *metaSM) Lookup(any) (any, error) { return s.state, nil }

func (s *metaSM) SaveSnapshot(w io.Writer, _ sm.ISnapshotFileCollection, _ <-chan struct{}) error {
	return json.NewEncoder(w).Encode(s.state)
}

func (s *metaSM) RecoverFromSnapshot(r io.Reader, _ []sm.SnapshotFile, _ <-chan struct{}) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	m := newMetadata()
	if b = bytes.TrimSpace(b); len(b) == 0 || b[0] != '{' {
		return fmt.Errorf("%w: metadata snapshot is not a JSON object", storage.ErrCorrupt)
	}
	if err := json.Unmarshal(b, m); err != nil {
		return fmt.Errorf("%w: metadata snapshot: %w", storage.ErrCorrupt, err)
	}
	if err := m.validate(); err != nil {
		return fmt.Errorf("%w: metadata snapshot: %w", storage.ErrCorrupt, err)
	}
	s.state = m
	s.n.publishMeta(m)
	return nil
}

// validate checks what the rest of the package relies on, so a damaged
// snapshot is refused instead of panicking a reader later.
func (m *Metadata) validate() error {
	if m.Topics == nil {
		m.Topics = map[string]*TopicMeta{}
	}
	shards := map[uint64]bool{}
	for name, t := range m.Topics {
		if t == nil || t.Name != name || len(t.Partitions) < 1 || len(t.Partitions) > MaxPartitions {
			return fmt.Errorf("topic %q malformed", name)
		}
		for _, pm := range t.Partitions {
			if pm.Shard < FirstPartitionShard || pm.Shard >= m.NextShard || shards[pm.Shard] || len(pm.Replicas) == 0 || !validNodes(pm.Replicas) {
				return fmt.Errorf("topic %q: partition on shard %d malformed", name, pm.Shard)
			}
			shards[pm.Shard] = true
		}
	}
	for id, addr := range m.KafkaBrokers {
		if id == 0 || !validKafkaAddress(addr) {
			return fmt.Errorf("kafka broker %d at %q malformed", id, addr)
		}
	}
	return nil
}

func (s *metaSM) Close() error { return nil }
