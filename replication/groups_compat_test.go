package replication

import (
	"bufio"
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"testing"
	"time"

	sm "github.com/lni/dragonboat/v4/statemachine"
	"github.com/stretchr/testify/require"
)

var updateGroupsFixture = flag.Bool("update-groups-fixture", false,
	"rewrite testdata/groups_v1 with this version's groups state machine (only ever with the version that wrote the format)")

// fixtureResult is what Update answered to one entry of the fixture.
type fixtureResult struct {
	Code uint64          `json:"code"`
	Data json.RawMessage `json:"data,omitempty"`
}

// groupsV1Setup builds the state of the fixture's snapshot; groupsV1Entries
// are the entries applied after it. Both are commands as the version that
// wrote testdata/groups_v1 (single-topic replog groups) proposed them.
func groupsV1Setup() []groupCmd {
	sec := int64(time.Second)
	static := join("s", "st", 3, StrategyRoundRobin, 0)
	static.Static = true
	static.Topic, static.TopicID = "u", 9
	return []groupCmd{
		join("g", "a", 4, StrategyCooperativeSticky, 0),
		heartbeat("g", "a", []int{0, 1, 2, 3}, 0),
		join("g", "b", 4, "", 1),
		heartbeat("g", "a", []int{0, 1}, 2),
		heartbeat("g", "b", []int{2, 3}, 2),
		{Op: gopCommit, Group: "g", Member: "a", Offsets: map[int]int64{0: 10, 1: 11}, Now: 3},
		{Op: gopCommit, Group: "g", Member: "b", Offsets: map[int]int64{2: 20}, Now: 3},
		join("r", "x", 5, StrategyRange, 0),
		join("r", "y", 5, StrategyRange, 0),
		heartbeat("r", "x", []int{0, 1, 2}, sec),
		static,
		heartbeat("s", "st", []int{0, 1, 2}, 1),
		join("empty", "c", 2, StrategyRange, 0),
		heartbeat("empty", "c", []int{0, 1}, 0),
		{Op: gopCommit, Group: "empty", Member: "c", Offsets: map[int]int64{1: 7}, Now: 1},
		{Op: gopLeave, Group: "empty", Member: "c"},
		{Op: gopKafkaCommit, Group: "k", Commits: map[string]map[int]CommittedOffset{"t": {0: {Offset: 5, Metadata: "m"}}, "u": {2: {Offset: 1}}}},
	}
}

func groupsV1Entries() []groupCmd {
	sec := int64(time.Second)
	other := join("g", "z", 3, StrategyRange, 10)
	other.Topic, other.TopicID = "u", 9
	moved := join("empty", "d", 3, "", 11)
	moved.Topic, moved.TopicID = "t", 8 // the topic recreated: a new id
	static := join("s", "st", 3, StrategyRoundRobin, 12)
	static.Static = true
	static.Topic, static.TopicID = "u", 9
	return []groupCmd{
		other, // refused: g's members read t
		join("g", "c", 4, StrategyCooperativeSticky, 10),
		heartbeat("g", "c", []int{0, 1, 2, 3}, 10),
		heartbeat("g", "b", []int{2}, 10),
		heartbeat("g", "c", []int{0, 3}, 10),
		{Op: gopCommit, Group: "g", Member: "c", Offsets: map[int]int64{3: 30}, Now: 11},
		{Op: gopCommit, Group: "g", Member: "c", Offsets: map[int]int64{0: 1}, Now: 11}, // a still owns 0
		{Op: gopCommit, Group: "g", Member: "nobody", Offsets: map[int]int64{0: 1}, Now: 11},
		{Op: gopCommit, Group: "g", Offsets: map[int]int64{1: 12}, Now: 11}, // a transaction's offsets
		{Op: gopCommit, Group: "g", Offsets: map[int]int64{9: 12}, Now: 11},
		moved, // an empty group moves topic: its offsets go
		{Op: gopLeave, Group: "empty", Member: "d"},
		{Op: gopReset, Group: "empty", Offsets: map[int]int64{0: 3, 2: 4}},
		{Op: gopReset, Group: "g", Offsets: map[int]int64{0: 3}},
		static, // a static member back: no rebalance
		heartbeat("s", "st", []int{2}, 13),
		join("r", "x", 2, StrategyRange, 14), // a lower count under owned partitions
		{Op: gopExpire, Now: 3 * sec},        // r's y, s's st and g's members all expire
		{Op: gopLeave, Group: "r", Member: "x"},
		heartbeat("r", "x", nil, 4*sec),
		{Op: gopDelete, Group: "r"},
		{Op: gopDelete, Group: "r"},
		{Op: gopKafkaClaim, Group: "g"},
		join("k", "m", 1, "", 4*sec),
		{Op: gopKafkaDeleteOffsets, Group: "k", Drop: map[string][]int{"t": {0}}},
		{Op: gopDelete, Group: "k"},
		join("g", "a", 4, StrategyRoundRobin, 5*sec),
	}
}

// The groups state machine reads snapshots and applies entries written by
// the version before groups spanned topics exactly as that version did:
// same result codes, same answers, same state, byte for byte. The fixture
// in testdata/groups_v1 was written by that version (-update-groups-fixture).
func TestGroupsSMV1Fixture(t *testing.T) {
	dir := filepath.Join("testdata", "groups_v1")
	if *updateGroupsFixture {
		writeGroupsV1Fixture(t, dir)
	}
	snap, err := os.ReadFile(filepath.Join(dir, "snapshot.json"))
	require.NoError(t, err)
	final, err := os.ReadFile(filepath.Join(dir, "final.json"))
	require.NoError(t, err)
	entries := readLines(t, filepath.Join(dir, "entries.jsonl"))
	results := readLines(t, filepath.Join(dir, "results.jsonl"))
	require.Len(t, results, len(entries))

	s := newGroupsSM()
	require.NoError(t, s.RecoverFromSnapshot(bytes.NewReader(snap), nil, nil))
	require.Equal(t, string(snap), string(snapshot(t, s)), "a v1 snapshot is written back as it was")
	for i, e := range entries {
		r, err := s.Update(smEntry(e))
		require.NoError(t, err)
		var want fixtureResult
		require.NoError(t, json.Unmarshal(results[i], &want))
		require.Equal(t, want.Code, r.Value, "entry %d: %s", i, e)
		require.Equal(t, string(want.Data), string(r.Data), "entry %d: %s", i, e)
	}
	require.Equal(t, string(final), string(snapshot(t, s)), "state after the entries")
}

func writeGroupsV1Fixture(t *testing.T, dir string) {
	s := newGroupsSM()
	for _, c := range groupsV1Setup() {
		code, _ := update(t, s, c)
		require.Equal(t, gOK, code, "%+v", c)
	}
	require.NoError(t, os.WriteFile(filepath.Join(dir, "snapshot.json"), snapshot(t, s), 0o644))
	var entries, results bytes.Buffer
	for _, c := range groupsV1Entries() {
		b, err := json.Marshal(c)
		require.NoError(t, err)
		r, err := s.Update(smEntry(b))
		require.NoError(t, err)
		rb, err := json.Marshal(fixtureResult{Code: r.Value, Data: r.Data})
		require.NoError(t, err)
		entries.Write(append(b, '\n'))
		results.Write(append(rb, '\n'))
	}
	require.NoError(t, os.WriteFile(filepath.Join(dir, "entries.jsonl"), entries.Bytes(), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "results.jsonl"), results.Bytes(), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "final.json"), snapshot(t, s), 0o644))
}

func readLines(t *testing.T, path string) [][]byte {
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	var out [][]byte
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		out = append(out, bytes.Clone(sc.Bytes()))
	}
	require.NoError(t, sc.Err())
	return out
}

func smEntry(cmd []byte) sm.Entry { return sm.Entry{Cmd: cmd} }
