package replication

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"

	sm "github.com/lni/dragonboat/v4/statemachine"
)

// MetaShardID is the Raft shard that holds the cluster metadata (topics,
// partition placement, producer ids), as KRaft's metadata log does for Kafka.
// Partition shards are numbered from FirstPartitionShard.
const (
	MetaShardID         uint64 = 1
	FirstPartitionShard uint64 = 1024
)

// Metadata is an immutable view of the replicated cluster metadata. A new
// value is published after every change; never modify one.
type Metadata struct {
	Topics        map[string]*TopicMeta `json:"topics"`
	NextShard     uint64                `json:"next_shard"`
	NextProducer  uint64                `json:"next_producer"`
	DeletedShards []uint64              `json:"deleted_shards,omitempty"`
	Index         uint64                `json:"index"` // last applied Raft index
}

// TopicMeta describes one topic. Immutable once published.
type TopicMeta struct {
	Name        string          `json:"name"`
	ID          uint64          `json:"id"` // unique for the cluster's life; a re-created topic gets a new one
	Partitions  []PartitionMeta `json:"partitions"`
	Replicas    int             `json:"replicas"`
	Compression uint8           `json:"compression"`
	Created     int64           `json:"created"` // unix ns, from the proposer
}

// PartitionMeta places one partition.
type PartitionMeta struct {
	Shard    uint64   `json:"shard"`
	Replicas []uint64 `json:"replicas"` // node ids; the first is the preferred leader
}

// Hosts reports whether node hosts a replica of the partition.
func (p PartitionMeta) Hosts(node uint64) bool { return slices.Contains(p.Replicas, node) }

func newMetadata() *Metadata {
	return &Metadata{Topics: map[string]*TopicMeta{}, NextShard: FirstPartitionShard, NextProducer: 1}
}

func (m *Metadata) clone() *Metadata {
	c := *m
	c.Topics = maps.Clone(m.Topics)
	c.DeletedShards = slices.Clone(m.DeletedShards)
	return &c
}

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
	for _, t := range m.Topics {
		for _, pm := range t.Partitions {
			if pm.Shard == shard {
				return pm, true
			}
		}
	}
	return PartitionMeta{}, false
}

// metaCmd is one command of the metadata state machine, JSON-encoded: the
// metadata log is small and rarely written, so clarity beats compactness.
type metaCmd struct {
	Op          string   `json:"op"`
	Name        string   `json:"name,omitempty"`
	Partitions  int      `json:"partitions,omitempty"`
	Replicas    int      `json:"replicas,omitempty"`
	Compression uint8    `json:"compression,omitempty"`
	Nodes       []uint64 `json:"nodes,omitempty"` // voting members when proposed, for placement
	Created     int64    `json:"created,omitempty"`
}

const (
	opCreateTopic   = "create_topic"
	opDeleteTopic   = "delete_topic"
	opAllocProducer = "alloc_producer"
)

// Result codes of metadata commands (sm.Result.Value).
const (
	metaOK uint64 = iota
	metaTopicExists
	metaTopicNotFound
	metaInvalid
)

var errMetaInvalid = errors.New("invalid metadata command")

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
		if c.Partitions < 1 || c.Replicas < 1 || c.Replicas > len(c.Nodes) {
			return sm.Result{Value: metaInvalid}
		}
		nodes := slices.Clone(c.Nodes)
		slices.Sort(nodes)
		t := &TopicMeta{Name: c.Name, ID: m.NextShard, Replicas: c.Replicas, Compression: c.Compression, Created: c.Created}
		for i := range c.Partitions {
			shard := m.NextShard
			m.NextShard++
			// Round-robin placement, rotated per partition so replicas and
			// preferred leaders spread evenly over the nodes.
			reps := make([]uint64, c.Replicas)
			for r := range reps {
				reps[r] = nodes[(int(t.ID)+i+r)%len(nodes)]
			}
			t.Partitions = append(t.Partitions, PartitionMeta{Shard: shard, Replicas: reps})
		}
		m.Topics[c.Name] = t
		data, _ := json.Marshal(t)
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
	case opAllocProducer:
		id := m.NextProducer
		m.NextProducer++
		return sm.Result{Value: metaOK, Data: fmt.Appendf(nil, "%d", id)}
	}
	return sm.Result{Value: metaInvalid}
}

func (s *metaSM) Lookup(any) (any, error) { return s.state, nil }

func (s *metaSM) SaveSnapshot(w io.Writer, _ sm.ISnapshotFileCollection, _ <-chan struct{}) error {
	return json.NewEncoder(w).Encode(s.state)
}

func (s *metaSM) RecoverFromSnapshot(r io.Reader, _ []sm.SnapshotFile, _ <-chan struct{}) error {
	m := newMetadata()
	if err := json.NewDecoder(r).Decode(m); err != nil {
		return fmt.Errorf("replog: metadata snapshot: %w", err)
	}
	if m.Topics == nil {
		m.Topics = map[string]*TopicMeta{}
	}
	s.state = m
	s.n.publishMeta(m)
	return nil
}

func (s *metaSM) Close() error { return nil }
