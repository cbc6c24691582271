package replication

import (
	"bytes"
	"encoding/json"
	"testing"

	sm "github.com/lni/dragonboat/v4/statemachine"
	"github.com/stretchr/testify/require"
)

// newTestMetaSM returns a metadata state machine over a Node that only
// receives published metadata: enough to drive Update without Raft.
func newTestMetaSM() *metaSM {
	n := &Node{}
	n.mu.meta = newMetadata()
	n.mu.metaChanged = make(chan struct{})
	return &metaSM{n: n, state: newMetadata()}
}

func (s *metaSM) do(t *testing.T, c metaCmd) sm.Result {
	t.Helper()
	b, err := json.Marshal(c)
	require.NoError(t, err)
	r, err := s.Update(sm.Entry{Index: s.state.Index + 1, Cmd: b})
	require.NoError(t, err, "Update must never halt the group")
	return r
}

func TestMetaApply(t *testing.T) {
	s := newTestMetaSM()
	nodes := []uint64{1, 2, 3}

	r := s.do(t, metaCmd{Op: opCreateTopic, Name: "a", Partitions: 3, Replicas: 2, Nodes: nodes, Created: 7})
	require.Equal(t, metaOK, r.Value)
	var tm TopicMeta
	require.NoError(t, json.Unmarshal(r.Data, &tm))
	require.Len(t, tm.Partitions, 3)
	leaders := map[uint64]bool{}
	for _, pm := range tm.Partitions {
		require.Len(t, pm.Replicas, 2)
		require.NotEqual(t, pm.Replicas[0], pm.Replicas[1])
		leaders[pm.Replicas[0]] = true
	}
	require.Len(t, leaders, 3, "preferred leaders spread over the nodes")
	require.Same(t, s.state, s.n.Metadata(), "every apply is published")

	require.Equal(t, metaTopicExists, s.do(t, metaCmd{Op: opCreateTopic, Name: "a", Partitions: 1, Replicas: 1, Nodes: nodes}).Value)
	require.Equal(t, metaInvalid, s.do(t, metaCmd{Op: opCreateTopic, Name: "b", Partitions: 1, Replicas: 4, Nodes: nodes}).Value)

	// Producer ids are unique and increasing.
	p1 := s.do(t, metaCmd{Op: opAllocProducer})
	p2 := s.do(t, metaCmd{Op: opAllocProducer})
	require.Equal(t, "1", string(p1.Data))
	require.Equal(t, "2", string(p2.Data))

	// Reassign partition 0 to a new node: it gets a fresh replica id.
	require.Equal(t, metaOK, s.do(t, metaCmd{Op: opAddNode, Node: 4, Address: "n4"}).Value)
	before := s.state
	r = s.do(t, metaCmd{Op: opReassign, Name: "a", Partition: 0, Replicas2: []uint64{4, 1}, Nodes: []uint64{1, 2, 3, 4}})
	require.Equal(t, metaOK, r.Value)
	pm := s.state.Topics["a"].Partitions[0]
	require.True(t, pm.Moving)
	require.Equal(t, []uint64{4, 1}, pm.Replicas)
	require.GreaterOrEqual(t, pm.ReplicaID(4), uint64(firstAddedReplica))
	require.Equal(t, uint64(4), pm.NodeOf(pm.ReplicaID(4)))
	require.False(t, before.Topics["a"].Partitions[0].Moving, "published metadata is never modified")

	// A node that hosts a replica cannot be removed.
	require.Equal(t, metaNodeBusy, s.do(t, metaCmd{Op: opRemoveNode, Node: 4}).Value)
	require.Equal(t, metaOK, s.do(t, metaCmd{Op: opReassignDone, Name: "a", Partition: 0, Replicas2: []uint64{4, 1}}).Value)
	require.False(t, s.state.Topics["a"].Partitions[0].Moving)

	// An observer joins with a fresh replica id; observing twice is a no-op.
	require.Equal(t, metaOK, s.do(t, metaCmd{Op: opObserve, Name: "a", Partition: 1, Node: 4}).Value)
	rid := s.state.Topics["a"].Partitions[1].ReplicaID(4)
	require.Equal(t, metaOK, s.do(t, metaCmd{Op: opObserve, Name: "a", Partition: 1, Node: 4}).Value)
	require.Equal(t, rid, s.state.Topics["a"].Partitions[1].ReplicaID(4))

	require.Equal(t, metaOK, s.do(t, metaCmd{Op: opDeleteTopic, Name: "a"}).Value)
	require.Len(t, s.state.DeletedShards, 3)
	require.Equal(t, metaTopicNotFound, s.do(t, metaCmd{Op: opDeleteTopic, Name: "a"}).Value)
}

func TestMetaBadInput(t *testing.T) {
	nodes := []uint64{1, 2, 3}
	for name, c := range map[string]metaCmd{
		"unknown op":              {Op: "nope"},
		"no partitions":           {Op: opCreateTopic, Name: "x", Partitions: 0, Replicas: 1, Nodes: nodes},
		"negative partitions":     {Op: opCreateTopic, Name: "x", Partitions: -5, Replicas: 1, Nodes: nodes},
		"huge partitions":         {Op: opCreateTopic, Name: "x", Partitions: 1 << 40, Replicas: 1, Nodes: nodes},
		"no nodes":                {Op: opCreateTopic, Name: "x", Partitions: 1, Replicas: 1},
		"node zero":               {Op: opCreateTopic, Name: "x", Partitions: 1, Replicas: 2, Nodes: []uint64{0, 1}},
		"repeated nodes":          {Op: opCreateTopic, Name: "x", Partitions: 1, Replicas: 2, Nodes: []uint64{1, 1}},
		"empty name":              {Op: opCreateTopic, Name: "", Partitions: 1, Replicas: 1, Nodes: nodes},
		"reassign bad partition":  {Op: opReassign, Name: "t", Partition: 9, Replicas2: []uint64{1}, Nodes: nodes},
		"reassign negative":       {Op: opReassign, Name: "t", Partition: -1, Replicas2: []uint64{1}, Nodes: nodes},
		"reassign unknown node":   {Op: opReassign, Name: "t", Partition: 0, Replicas2: []uint64{9}, Nodes: nodes},
		"reassign repeated node":  {Op: opReassign, Name: "t", Partition: 0, Replicas2: []uint64{1, 1}, Nodes: nodes},
		"observe node zero":       {Op: opObserve, Name: "t", Partition: 0, Node: 0},
		"observe bad partition":   {Op: opObserve, Name: "t", Partition: 5, Node: 3},
		"add node zero":           {Op: opAddNode, Node: 0, Address: "x"},
		"add node no address":     {Op: opAddNode, Node: 9},
		"remove node zero":        {Op: opRemoveNode, Node: 0},
		"reassign_done bad index": {Op: opReassignDone, Name: "t", Partition: -3},
		"kafka broker node zero":  {Op: opKafkaBroker, Node: 0, Address: "h:9092"},
		"kafka broker no port":    {Op: opKafkaBroker, Node: 1, Address: "h"},
		"kafka broker port zero":  {Op: opKafkaBroker, Node: 1, Address: "h:0"},
		"kafka broker no host":    {Op: opKafkaBroker, Node: 1, Address: ":9092"},
	} {
		t.Run(name, func(t *testing.T) {
			s := newTestMetaSM()
			require.Equal(t, metaOK, s.do(t, metaCmd{Op: opCreateTopic, Name: "t", Partitions: 1, Replicas: 1, Nodes: nodes}).Value)
			want, _ := json.Marshal(s.state.Topics)
			r := s.do(t, c)
			require.NotEqual(t, metaOK, r.Value)
			got, _ := json.Marshal(s.state.Topics)
			require.JSONEq(t, string(want), string(got), "a refused command changes no topic")
		})
	}

	s := newTestMetaSM()
	for _, garbage := range [][]byte{nil, {}, []byte("{"), []byte(`{"op":7}`), []byte(`[1,2]`), {0xff, 0}} {
		r, err := s.Update(sm.Entry{Index: 1, Cmd: garbage})
		require.NoError(t, err)
		require.Equal(t, metaInvalid, r.Value)
	}
}

func TestMetaSnapshotRoundTrip(t *testing.T) {
	s := newTestMetaSM()
	s.do(t, metaCmd{Op: opCreateTopic, Name: "a", Partitions: 2, Replicas: 2, Nodes: []uint64{1, 2, 3}})
	s.do(t, metaCmd{Op: opAddNode, Node: 4, Address: "n4"})
	s.do(t, metaCmd{Op: opObserve, Name: "a", Partition: 0, Node: 4})
	s.do(t, metaCmd{Op: opKafkaBroker, Node: 2, Address: "127.0.0.1:9092"})
	s.do(t, metaCmd{Op: opAllocProducer})
	s.do(t, metaCmd{Op: opCreateTopic, Name: "b", Partitions: 1, Replicas: 1, Nodes: []uint64{1}})
	s.do(t, metaCmd{Op: opDeleteTopic, Name: "b"})

	var buf bytes.Buffer
	require.NoError(t, s.SaveSnapshot(&buf, nil, nil))
	r := newTestMetaSM()
	require.NoError(t, r.RecoverFromSnapshot(bytes.NewReader(buf.Bytes()), nil, nil))
	require.Equal(t, s.state, r.state)
	require.Same(t, r.state, r.n.Metadata())

	// Both apply the next command identically.
	c := metaCmd{Op: opCreateTopic, Name: "c", Partitions: 2, Replicas: 3, Nodes: []uint64{1, 2, 3, 4}}
	require.Equal(t, s.do(t, c), r.do(t, c))
	require.Equal(t, s.state, r.state)

	for _, garbage := range []string{"", "{", `{"topics":7}`, "null x", "null", `{"topics":{"a":null}}`, `{"topics":{"a":{"name":"b","partitions":[{"shard":1024,"replicas":[1]}]}}}`, `{"next_shard":2000,"topics":{"a":{"name":"a","partitions":[{"shard":1024,"replicas":[]}]}}}`} {
		require.Error(t, newTestMetaSM().RecoverFromSnapshot(bytes.NewReader([]byte(garbage)), nil, nil), "%q", garbage)
	}
}

// FuzzMetaUpdate: no command, however malformed, panics or halts the
// metadata group.
func FuzzMetaUpdate(f *testing.F) {
	for _, c := range []metaCmd{
		{Op: opCreateTopic, Name: "t", Partitions: 2, Replicas: 2, Nodes: []uint64{1, 2, 3}},
		{Op: opReassign, Name: "t", Partition: 0, Replicas2: []uint64{3}, Nodes: []uint64{1, 2, 3}},
		{Op: opObserve, Name: "t", Partition: 1, Node: 3},
		{Op: opAddNode, Node: 4, Address: "a"},
		{Op: opRemoveNode, Node: 4},
		{Op: opAlterTopic, Name: "t", Partitions: 3, Nodes: []uint64{1, 2, 3}, TopicSettings: TopicSettings{Retention: 1, Cleanup: 3}},
	} {
		b, _ := json.Marshal(c)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, cmd []byte) {
		s := newTestMetaSM()
		s.do(t, metaCmd{Op: opCreateTopic, Name: "t", Partitions: 2, Replicas: 2, Nodes: []uint64{1, 2, 3}})
		if _, err := s.Update(sm.Entry{Index: 2, Cmd: cmd}); err != nil {
			t.Fatal(err)
		}
	})
}

func TestMetaAlterTopic(t *testing.T) {
	s := newTestMetaSM()
	nodes := []uint64{1, 2, 3}
	require.Equal(t, metaOK, s.do(t, metaCmd{Op: opCreateTopic, Name: "a", Partitions: 2, Replicas: 2, Nodes: nodes}).Value)
	a := s.state.Topics["a"]
	set := TopicSettings{Retention: 5, RetentionBytes: 6, Cleanup: CleanupDeleteBit | CleanupCompactBit, DeleteRetention: 7, MaxMessageBytes: 8}

	for _, bad := range []metaCmd{
		{Op: opAlterTopic, Name: "a", Partitions: 1, Nodes: nodes},                                // shrink
		{Op: opAlterTopic, Name: "a", Partitions: 2, TopicSettings: TopicSettings{Retention: -1}}, // negative
		{Op: opAlterTopic, Name: "a", Partitions: 2, TopicSettings: TopicSettings{Cleanup: 4}},    // unknown bit
		{Op: opAlterTopic, Name: "a", Partitions: 2, TopicSettings: TopicSettings{MaxMessageBytes: -1}},
		{Op: opAlterTopic, Name: "a", Partitions: 3, Nodes: []uint64{1}},           // too few nodes
		{Op: opAlterTopic, Name: "a", Partitions: MaxPartitions + 1, Nodes: nodes}, // too many
		{Op: opCreateTopic, Name: "b", Partitions: 1, Replicas: 1, Nodes: nodes, TopicSettings: TopicSettings{RetentionBytes: -1}},
	} {
		require.Equal(t, metaInvalid, s.do(t, bad).Value, "%+v", bad)
	}
	require.Same(t, a, s.state.Topics["a"], "nothing changed")
	require.Equal(t, metaTopicNotFound, s.do(t, metaCmd{Op: opAlterTopic, Name: "a", ID: a.ID + 1, Partitions: 2}).Value)

	next := s.state.NextShard
	cmd := metaCmd{Op: opAlterTopic, Name: "a", ID: a.ID, Partitions: 4, TopicSettings: set, Nodes: nodes}
	require.Equal(t, metaOK, s.do(t, cmd).Value)
	got := s.state.Topics["a"]
	require.Equal(t, set, got.TopicSettings)
	require.Len(t, got.Partitions, 4)
	require.Equal(t, a.Partitions, got.Partitions[:2], "existing partitions untouched")
	require.Equal(t, next, got.Partitions[2].Shard)
	require.Equal(t, next+1, got.Partitions[3].Shard)
	require.Len(t, got.Partitions[3].Replicas, 2)
	require.Len(t, a.Partitions, 2, "published values are immutable")

	// A retried proposal changes nothing more.
	require.Equal(t, metaOK, s.do(t, cmd).Value)
	require.Len(t, s.state.Topics["a"].Partitions, 4)
	require.Equal(t, next+2, s.state.NextShard)
}

func TestMetaTopicSettingsBackwardCompatible(t *testing.T) {
	// Metadata written before retention settings existed.
	old := `{"name":"a","id":1024,"partitions":[{"shard":1024,"replicas":[1]}],"replicas":1,"compression":2,"created":9}`
	var tm TopicMeta
	require.NoError(t, json.Unmarshal([]byte(old), &tm))
	require.Equal(t, TopicSettings{Compression: 2}, tm.TopicSettings)
	require.True(t, tm.Deletes())
	b, err := json.Marshal(&tm)
	require.NoError(t, err)
	require.JSONEq(t, old, string(b), "the same JSON when no new setting is set")
}

func TestMetaKafkaBrokers(t *testing.T) {
	s := newTestMetaSM()
	require.Equal(t, metaOK, s.do(t, metaCmd{Op: opKafkaBroker, Node: 1, Address: "10.0.0.1:9092"}).Value)
	require.Equal(t, metaOK, s.do(t, metaCmd{Op: opKafkaBroker, Node: 2, Address: "[::1]:9093"}).Value)
	before := s.state
	// A node that restarts elsewhere registers again: the new address wins.
	require.Equal(t, metaOK, s.do(t, metaCmd{Op: opKafkaBroker, Node: 1, Address: "10.0.0.9:9092"}).Value)
	require.Equal(t, map[uint64]string{1: "10.0.0.9:9092", 2: "[::1]:9093"}, s.state.KafkaBrokers)
	require.Equal(t, "10.0.0.1:9092", before.KafkaBrokers[1], "published metadata is never modified")
	for _, bad := range []string{"", "nohost", "h:", "h:70000", "h:-1", string(make([]byte, maxKafkaAddress+1)) + ":1"} {
		require.Equal(t, metaInvalid, s.do(t, metaCmd{Op: opKafkaBroker, Node: 3, Address: bad}).Value, "%q", bad)
	}
	require.NotContains(t, s.state.KafkaBrokers, uint64(3))

	// A removed node's address goes with it, and it cannot register again.
	require.Equal(t, metaOK, s.do(t, metaCmd{Op: opRemoveNode, Node: 2}).Value)
	require.NotContains(t, s.state.KafkaBrokers, uint64(2))
	require.Equal(t, metaInvalid, s.do(t, metaCmd{Op: opKafkaBroker, Node: 2, Address: "h:1"}).Value)

	// Snapshots keep the addresses, and refuse malformed ones.
	var buf bytes.Buffer
	require.NoError(t, s.SaveSnapshot(&buf, nil, nil))
	r := newTestMetaSM()
	require.NoError(t, r.RecoverFromSnapshot(bytes.NewReader(buf.Bytes()), nil, nil))
	require.Equal(t, s.state.KafkaBrokers, r.state.KafkaBrokers)
	for _, bad := range []string{`{"kafka_brokers":{"1":"nohost"}}`, `{"kafka_brokers":{"0":"h:1"}}`, `{"kafka_brokers":{"1":7}}`} {
		require.Error(t, newTestMetaSM().RecoverFromSnapshot(bytes.NewReader([]byte(bad)), nil, nil), "%q", bad)
	}
}

// Metadata snapshots written before Kafka brokers were registered load, and
// are written back as they were while no node registers.
func TestMetaKafkaBrokersBackwardCompatible(t *testing.T) {
	old := `{"topics":{"a":{"name":"a","id":1024,"partitions":[{"shard":1024,"replicas":[1,2]}],"replicas":2,"compression":0,"created":9}},` +
		`"next_shard":1025,"next_producer":3,"next_replica":4294967296,"nodes":{"4":"n4"},"index":12}`
	s := newTestMetaSM()
	require.NoError(t, s.RecoverFromSnapshot(bytes.NewReader([]byte(old)), nil, nil))
	require.Nil(t, s.state.KafkaBrokers)
	var buf bytes.Buffer
	require.NoError(t, s.SaveSnapshot(&buf, nil, nil))
	require.JSONEq(t, old, buf.String(), "the same snapshot when no node registered")

	// The old metadata applies the new command.
	require.Equal(t, metaOK, s.do(t, metaCmd{Op: opKafkaBroker, Node: 1, Address: "h:9092"}).Value)
	require.Equal(t, map[uint64]string{1: "h:9092"}, s.state.KafkaBrokers)
	require.Len(t, s.state.Topics["a"].Partitions, 1)
}

// A proposer whose metadata has not applied a node's removal yet still
// lists it: new partitions are placed on the nodes still present.
func TestMetaPlacementSkipsRemovedNodes(t *testing.T) {
	s := newTestMetaSM()
	require.Equal(t, metaOK, s.do(t, metaCmd{Op: opAddNode, Node: 4, Address: "n4"}).Value)
	require.Equal(t, metaOK, s.do(t, metaCmd{Op: opRemoveNode, Node: 1}).Value)
	stale := []uint64{1, 2, 3, 4}
	r := s.do(t, metaCmd{Op: opCreateTopic, Name: "a", Partitions: 3, Replicas: 3, Nodes: stale})
	require.Equal(t, metaOK, r.Value)
	for _, pm := range s.state.Topics["a"].Partitions {
		require.ElementsMatch(t, []uint64{2, 3, 4}, pm.Replicas)
	}
	require.Equal(t, metaOK, s.do(t, metaCmd{Op: opAlterTopic, Name: "a", Partitions: 5, Nodes: stale}).Value)
	for _, pm := range s.state.Topics["a"].Partitions[3:] {
		require.ElementsMatch(t, []uint64{2, 3, 4}, pm.Replicas)
	}
	// Too few nodes once the removed one is left out.
	require.Equal(t, metaInvalid, s.do(t, metaCmd{Op: opCreateTopic, Name: "b", Partitions: 1, Replicas: 4, Nodes: stale}).Value)
}

// TestMetaShardIndex checks the published metadata's shard index against
// a scan, through topic creation, growth and deletion.
func TestMetaShardIndex(t *testing.T) {
	s := newTestMetaSM()
	nodes := []uint64{1, 2, 3}
	check := func() {
		t.Helper()
		pub := s.n.Metadata()
		require.NotNil(t, pub.byShard, "published metadata is indexed")
		scan := *pub
		scan.byShard = nil
		for shard := uint64(0); shard < pub.NextShard+2; shard++ {
			name, i, pm, ok := pub.partitionOf(shard)
			wname, wi, wpm, wok := scan.partitionOf(shard)
			require.Equal(t, wok, ok, "shard %d", shard)
			require.Equal(t, wname, name, "shard %d", shard)
			require.Equal(t, wi, i, "shard %d", shard)
			require.Equal(t, wpm, pm, "shard %d", shard)
		}
	}
	require.Equal(t, metaOK, s.do(t, metaCmd{Op: opCreateTopic, Name: "a", Partitions: 3, Replicas: 2, Nodes: nodes}).Value)
	check()
	require.Equal(t, metaOK, s.do(t, metaCmd{Op: opCreateTopic, Name: "b", Partitions: 2, Replicas: 3, Nodes: nodes}).Value)
	check()
	require.Equal(t, metaOK, s.do(t, metaCmd{Op: opDeleteTopic, Name: "a"}).Value)
	check()
	_, _, _, ok := s.n.Metadata().partitionOf(FirstPartitionShard)
	require.False(t, ok, "a deleted topic's shard is not found")
}
