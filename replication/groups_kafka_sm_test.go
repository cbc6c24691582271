package replication

import (
	"bytes"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func kafkaCommit(group string, commits map[string]map[int]CommittedOffset) groupCmd {
	return groupCmd{Op: gopKafkaCommit, Group: group, Commits: commits}
}

// A Kafka group keeps offsets by topic and partition, spans topics, and
// shares no name with a replog group, whichever came first.
func TestGroupsSMKafkaGroups(t *testing.T) {
	s := newGroupsSM()
	code, g := update(t, s, groupCmd{Op: gopKafkaClaim, Group: "k"})
	require.Equal(t, gOK, code)
	require.Equal(t, GroupKindKafka, g.Kind)
	require.Empty(t, g.TopicOffsets)
	code, _ = update(t, s, groupCmd{Op: gopKafkaClaim, Group: "k"})
	require.Equal(t, gOK, code, "claiming twice is harmless")

	code, g = update(t, s, kafkaCommit("k", map[string]map[int]CommittedOffset{
		"a": {0: {Offset: 5}, 1: {Offset: 7, Metadata: "meta"}},
		"b": {3: {Offset: 1}},
	}))
	require.Equal(t, gOK, code)
	require.Equal(t, CommittedOffset{Offset: 1}, g.TopicOffsets["b"][3])
	code, g = update(t, s, kafkaCommit("k", map[string]map[int]CommittedOffset{"a": {0: {Offset: 9}}}))
	require.Equal(t, gOK, code)
	require.Equal(t, map[string]map[int]CommittedOffset{
		"a": {0: {Offset: 9}, 1: {Offset: 7, Metadata: "meta"}},
		"b": {3: {Offset: 1}},
	}, g.TopicOffsets)

	// A commit without a claim creates the group (a Kafka client may
	// commit without joining).
	code, g = update(t, s, kafkaCommit("fresh", map[string]map[int]CommittedOffset{"a": {0: {Offset: 1}}}))
	require.Equal(t, gOK, code)
	require.Equal(t, GroupKindKafka, g.Kind)

	// replog's commands refuse a Kafka group...
	for _, c := range []groupCmd{
		join("k", "m", 2, "", 1),
		{Op: gopCommit, Group: "k", Offsets: map[int]int64{0: 1}},
		{Op: gopReset, Group: "k"},
	} {
		code, _ = update(t, s, c)
		require.Equal(t, gGroupKind, code, "%+v", c)
	}
	code, _ = update(t, s, heartbeat("k", "m", nil, 1))
	require.Equal(t, gUnknownMember, code)
	code, _ = update(t, s, groupCmd{Op: gopLeave, Group: "k", Member: "m"})
	require.Equal(t, gUnknownMember, code)
	// ... and the Kafka commands a replog group.
	update(t, s, join("r", "m", 2, "", 1))
	for _, c := range []groupCmd{
		{Op: gopKafkaClaim, Group: "r"},
		kafkaCommit("r", map[string]map[int]CommittedOffset{"t": {0: {Offset: 1}}}),
		{Op: gopKafkaDeleteOffsets, Group: "r", Drop: map[string][]int{"t": {0}}},
	} {
		before := snapshot(t, s)
		code, _ = update(t, s, c)
		require.Equal(t, gGroupKind, code, "%+v", c)
		require.Equal(t, before, snapshot(t, s))
	}
	// Session expiry leaves Kafka groups alone.
	code, _ = update(t, s, groupCmd{Op: gopExpire, Now: 1 << 62})
	require.Equal(t, gOK, code)
	require.NotNil(t, s.groups["k"])

	code, g = update(t, s, groupCmd{Op: gopKafkaDeleteOffsets, Group: "k", Drop: map[string][]int{"b": {3}, "a": {1, 2}}})
	require.Equal(t, gOK, code)
	require.Equal(t, map[string]map[int]CommittedOffset{"a": {0: {Offset: 9}}}, g.TopicOffsets)

	code, _ = update(t, s, groupCmd{Op: gopDelete, Group: "k"})
	require.Equal(t, gOK, code)
	require.Nil(t, s.groups["k"])
	// The name is free again, for either kind.
	code, g = update(t, s, join("k", "m", 2, "", 1))
	require.Equal(t, gOK, code)
	require.Empty(t, g.Kind)
}

// Snapshots written before Kafka groups existed recover as replog groups
// and go on as before; snapshots with Kafka groups round-trip.
func TestGroupsSMKafkaSnapshotCompat(t *testing.T) {
	// The format of a snapshot before Kafka groups: no kind, no
	// topic_offsets.
	const old = `{"g":{"name":"g","topic":"t","topic_id":7,"partitions":2,"strategy":"range","generation":1,` +
		`"members":{"a":{"id":"a","static":false,"session_timeout":1000000000,"last_seen":0,"target":[0,1],"owned":[0,1]}},` +
		`"offsets":{"0":4,"1":8}}}` + "\n"
	s := newGroupsSM()
	require.NoError(t, s.RecoverFromSnapshot(strings.NewReader(old), nil, nil))
	g := s.groups["g"]
	require.Empty(t, g.Kind)
	require.Equal(t, map[int]int64{0: 4, 1: 8}, g.Topics["t"].Offsets)
	require.Equal(t, old, string(snapshot(t, s)), "a replog group's snapshot keeps its format")
	code, g := update(t, s, groupCmd{Op: gopCommit, Group: "g", Member: "a", Offsets: map[int]int64{1: 9}})
	require.Equal(t, gOK, code)
	require.Equal(t, map[int]int64{0: 4, 1: 9}, g.Topics["t"].Offsets)
	// An old command (no new fields) still applies.
	code, _ = updateRaw(t, s, []byte(`{"op":"join","group":"g","topic":"t","topic_id":7,"partitions":2,"member":"b","session_timeout":1000,"now":1}`))
	require.Equal(t, gOK, code)

	update(t, s, kafkaCommit("k", map[string]map[int]CommittedOffset{"a": {0: {Offset: 5, Metadata: "x"}}, "b": {1: {Offset: 2}}}))
	snap := snapshot(t, s)
	r := newGroupsSM()
	require.NoError(t, r.RecoverFromSnapshot(bytes.NewReader(snap), nil, nil))
	require.Equal(t, s.groups, r.groups)
	require.Equal(t, snap, snapshot(t, r))
	c1, g1 := update(t, s, kafkaCommit("k", map[string]map[int]CommittedOffset{"a": {1: {Offset: 1}}}))
	c2, g2 := update(t, r, kafkaCommit("k", map[string]map[int]CommittedOffset{"a": {1: {Offset: 1}}}))
	require.Equal(t, c1, c2)
	require.Equal(t, g1, g2)

	// Lookup hands out copies: changing one changes nothing stored.
	v, err := s.Lookup("k")
	require.NoError(t, err)
	v.(*GroupState).TopicOffsets["a"][0] = CommittedOffset{Offset: 1000}
	require.Equal(t, int64(5), s.groups["k"].TopicOffsets["a"][0].Offset)
}
