package replication

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	sm "github.com/lni/dragonboat/v4/statemachine"
	"github.com/stretchr/testify/require"

	"github.com/replog/replog/storage"
)

// The groups state machine is tested here without Raft: commands go
// through Update as dragonboat would hand them over, encoded.

func newGroupsSM() *groupsSM { return &groupsSM{groups: map[string]*GroupState{}} }

// update applies c and returns the result code and the group's state, if the
// command returned one. Update must never fail: an error would halt the
// Raft group on every replica.
func update(t *testing.T, s *groupsSM, c groupCmd) (uint64, *GroupState) {
	t.Helper()
	b, err := json.Marshal(c)
	require.NoError(t, err)
	return updateRaw(t, s, b)
}

func updateRaw(t testing.TB, s *groupsSM, cmd []byte) (uint64, *GroupState) {
	t.Helper()
	r, err := s.Update(sm.Entry{Cmd: cmd})
	require.NoError(t, err, "Update returned an error: it would halt the Raft group")
	if len(r.Data) == 0 {
		return r.Value, nil
	}
	g := &GroupState{}
	require.NoError(t, json.Unmarshal(r.Data, g))
	return r.Value, g
}

func join(group, member string, partitions int, strategy string, now int64) groupCmd {
	return groupCmd{Op: gopJoin, Group: group, Topic: "t", TopicID: 7, Partitions: partitions,
		Strategy: strategy, Member: member, SessionTimeout: int64(time.Second), Now: now}
}

func heartbeat(group, member string, owned []int, now int64) groupCmd {
	return groupCmd{Op: gopHeartbeat, Group: group, Member: member, Owned: owned, Now: now}
}

// snapshot returns the state machine's snapshot bytes, to compare states.
func snapshot(t testing.TB, s *groupsSM) []byte {
	t.Helper()
	var buf bytes.Buffer
	require.NoError(t, s.SaveSnapshot(&buf, nil, nil))
	return buf.Bytes()
}

func TestGroupsSMMembership(t *testing.T) {
	s := newGroupsSM()
	code, g := update(t, s, join("g", "a", 4, StrategyCooperativeSticky, 1))
	require.Equal(t, gOK, code)
	require.Equal(t, int64(1), g.Generation)
	require.Equal(t, []int{0, 1, 2, 3}, g.Members["a"].Target["t"])
	require.Equal(t, []int{0, 1, 2, 3}, g.Granted("a")["t"])

	// a claims what it was granted; a claim outside its target is dropped.
	code, g = update(t, s, heartbeat("g", "a", []int{0, 1, 2, 3, 9, -1}, 2))
	require.Equal(t, gOK, code)
	require.Equal(t, []int{0, 1, 2, 3}, g.Members["a"].Owned["t"])
	require.Equal(t, int64(2), g.Members["a"].LastSeen)

	// b joins: half of a's partitions move, but b gets them only once a
	// has given them up.
	code, g = update(t, s, join("g", "b", 4, StrategyCooperativeSticky, 3))
	require.Equal(t, gOK, code)
	require.Equal(t, int64(2), g.Generation)
	require.Equal(t, []int{0, 1}, g.Members["a"].Target["t"])
	require.Equal(t, []int{2, 3}, g.Members["b"].Target["t"])
	require.Empty(t, g.Granted("b"), "a still owns 2 and 3")
	code, g = update(t, s, heartbeat("g", "b", []int{2, 3}, 4))
	require.Equal(t, gOK, code)
	require.Empty(t, g.Members["b"].Owned, "a claim on a partition another member owns is refused")
	// a keeps what it owns until it says so, even outside its target.
	_, g = update(t, s, heartbeat("g", "a", []int{0, 1, 2, 3}, 5))
	require.Equal(t, []int{0, 1, 2, 3}, g.Members["a"].Owned["t"])
	_, g = update(t, s, heartbeat("g", "a", []int{0, 1}, 6))
	require.Equal(t, []int{2, 3}, g.Granted("b")["t"])
	_, g = update(t, s, heartbeat("g", "b", []int{2, 3, 3}, 7))
	require.Equal(t, []int{2, 3}, g.Members["b"].Owned["t"])

	// Commits: only for partitions the member owns or is granted.
	code, g = update(t, s, groupCmd{Op: gopCommit, Group: "g", Member: "a", Offsets: map[int]int64{0: 10, 1: 11}, Now: 8})
	require.Equal(t, gOK, code)
	require.Equal(t, map[int]int64{0: 10, 1: 11}, g.Topics["t"].Offsets)
	code, _ = update(t, s, groupCmd{Op: gopCommit, Group: "g", Member: "a", Offsets: map[int]int64{0: 12, 2: 5}, Now: 9})
	require.Equal(t, gNotAssigned, code)
	code, _ = update(t, s, groupCmd{Op: gopCommit, Group: "g", Member: "zz", Offsets: map[int]int64{0: 1}, Now: 9})
	require.Equal(t, gUnknownMember, code)
	code, _ = update(t, s, groupCmd{Op: gopCommit, Group: "nope", Member: "a", Offsets: map[int]int64{0: 1}, Now: 9})
	require.Equal(t, gGroupNotFound, code)
	_, g = update(t, s, groupCmd{Op: gopCommit, Group: "g", Member: "a", Offsets: map[int]int64{}, Now: 9})
	require.Equal(t, map[int]int64{0: 10, 1: 11}, g.Topics["t"].Offsets, "a refused commit changed nothing")

	// Unknown members and groups.
	code, _ = update(t, s, heartbeat("g", "zz", nil, 9))
	require.Equal(t, gUnknownMember, code)
	code, _ = update(t, s, heartbeat("nope", "a", nil, 9))
	require.Equal(t, gUnknownMember, code)

	// A group with members can be neither reset nor deleted.
	code, _ = update(t, s, groupCmd{Op: gopReset, Group: "g", Offsets: map[int]int64{0: 0}})
	require.Equal(t, gGroupNotEmpty, code)
	code, _ = update(t, s, groupCmd{Op: gopDelete, Group: "g"})
	require.Equal(t, gGroupNotEmpty, code)

	// a leaves: b's target becomes everything; 0 and 1 are free at once.
	code, g = update(t, s, groupCmd{Op: gopLeave, Group: "g", Member: "a"})
	require.Equal(t, gOK, code)
	require.Equal(t, int64(3), g.Generation)
	require.Equal(t, []int{0, 1, 2, 3}, g.Members["b"].Target["t"])
	require.Equal(t, []int{0, 1, 2, 3}, g.Granted("b")["t"])
	code, _ = update(t, s, groupCmd{Op: gopLeave, Group: "g", Member: "a"})
	require.Equal(t, gUnknownMember, code)
	code, _ = update(t, s, groupCmd{Op: gopLeave, Group: "g", Member: "b"})
	require.Equal(t, gOK, code)

	code, g = update(t, s, groupCmd{Op: gopReset, Group: "g", Offsets: map[int]int64{0: 1, 3: 4}})
	require.Equal(t, gOK, code)
	require.Equal(t, map[int]int64{0: 1, 3: 4}, g.Topics["t"].Offsets)
	code, _ = update(t, s, groupCmd{Op: gopReset, Group: "nope"})
	require.Equal(t, gGroupNotFound, code)
	code, _ = update(t, s, groupCmd{Op: gopDelete, Group: "g"})
	require.Equal(t, gOK, code)
	require.Empty(t, s.groups)
	code, _ = update(t, s, groupCmd{Op: gopDelete, Group: "g"})
	require.Equal(t, gGroupNotFound, code)
}

func TestGroupsSMExpire(t *testing.T) {
	s := newGroupsSM()
	sec := int64(time.Second)
	update(t, s, join("g", "a", 2, StrategyRange, 0))
	update(t, s, join("g", "b", 2, StrategyRange, 0))
	update(t, s, heartbeat("g", "a", []int{0}, sec/2))
	update(t, s, join("h", "c", 1, StrategyRange, 0))

	// At exactly the session timeout nobody expires yet.
	code, g := update(t, s, groupCmd{Op: gopExpire, Now: sec})
	require.Equal(t, gOK, code)
	require.Nil(t, g, "expire spans all groups and returns none")
	require.Len(t, s.groups["g"].Members, 2)
	require.Equal(t, int64(2), s.groups["g"].Generation)

	// Past it, b (last seen at 0) expires and a gets its partition; a, seen
	// later, stays. In group h, c expires too.
	update(t, s, groupCmd{Op: gopExpire, Now: sec + 1})
	g = s.groups["g"]
	require.Equal(t, []string{"a"}, slices.Sorted(maps.Keys(g.Members)))
	require.Equal(t, int64(3), g.Generation)
	require.Equal(t, []int{0, 1}, g.Members["a"].Target["t"])
	require.Empty(t, s.groups["h"].Members)
	require.Equal(t, int64(2), s.groups["h"].Generation)

	// An expire with nothing to expire starts no generation.
	update(t, s, groupCmd{Op: gopExpire, Now: sec + 2})
	require.Equal(t, int64(3), s.groups["g"].Generation)

	// A commit counts as a sign of life, like a heartbeat.
	update(t, s, groupCmd{Op: gopCommit, Group: "g", Member: "a", Offsets: map[int]int64{0: 3}, Now: 3 * sec})
	update(t, s, groupCmd{Op: gopExpire, Now: 3*sec + sec})
	require.Contains(t, s.groups["g"].Members, "a")
}

func TestGroupsSMStaticMemberRejoins(t *testing.T) {
	s := newGroupsSM()
	a := join("g", "a", 4, StrategyCooperativeSticky, 0)
	a.Static = true
	update(t, s, a)
	update(t, s, join("g", "b", 4, StrategyCooperativeSticky, 0))
	update(t, s, heartbeat("g", "a", []int{0, 1}, 1))
	before := s.groups["g"].clone()

	// a restarts: it keeps its target, starts with nothing owned, and the
	// group keeps its generation (no rebalance).
	a.Now, a.SessionTimeout = 5, int64(2*time.Second)
	code, g := update(t, s, a)
	require.Equal(t, gOK, code)
	require.Equal(t, before.Generation, g.Generation)
	require.Equal(t, before.Members["a"].Target["t"], g.Members["a"].Target["t"])
	require.Empty(t, g.Members["a"].Owned["t"])
	require.Equal(t, int64(5), g.Members["a"].LastSeen)
	require.Equal(t, int64(2*time.Second), g.Members["a"].SessionTimeout)
	require.Equal(t, before.Members["b"], g.Members["b"])

	// A dynamic member joining again under its id starts afresh.
	b := join("g", "b", 4, StrategyCooperativeSticky, 6)
	code, g = update(t, s, b)
	require.Equal(t, gOK, code)
	require.Equal(t, before.Generation+1, g.Generation)
}

func TestGroupsSMTopicChange(t *testing.T) {
	s := newGroupsSM()
	update(t, s, join("g", "a", 2, StrategyRange, 0))
	update(t, s, heartbeat("g", "a", []int{0, 1}, 0))
	update(t, s, groupCmd{Op: gopCommit, Group: "g", Member: "a", Offsets: map[int]int64{0: 5}})

	other := join("g", "b", 3, StrategyRange, 0)
	other.Topic, other.TopicID = "u", 8
	code, _ := update(t, s, other)
	require.Equal(t, gGroupTopic, code, "a group with members reads one topic")

	// Once empty, the group may move to another topic (one recreated under
	// the same name gets a new id); the old offsets go.
	update(t, s, groupCmd{Op: gopLeave, Group: "g", Member: "a"})
	code, g := update(t, s, other)
	require.Equal(t, gOK, code)
	require.Equal(t, map[string]*GroupTopic{"u": {ID: 8, Partitions: 3, Offsets: map[int]int64{}}}, g.Topics)
}

// assignment returns each member's target partitions.
func assignment(g *GroupState) map[string][]int {
	out := map[string][]int{}
	for id, m := range g.Members {
		out[id] = m.Target["t"]
	}
	return out
}

func TestGroupsSMStrategies(t *testing.T) {
	for _, tc := range []struct {
		strategy   string
		partitions int
		members    []string
		want       map[string][]int
	}{
		{StrategyRange, 5, []string{"a", "b"}, map[string][]int{"a": {0, 1, 2}, "b": {3, 4}}},
		{StrategyRange, 2, []string{"a", "b", "c"}, map[string][]int{"a": {0}, "b": {1}, "c": nil}},
		{StrategyRange, 0, []string{"a"}, map[string][]int{"a": nil}},
		{StrategyRoundRobin, 5, []string{"a", "b"}, map[string][]int{"a": {0, 2, 4}, "b": {1, 3}}},
		{StrategyRoundRobin, 4, []string{"c", "a", "b"}, map[string][]int{"a": {0, 3}, "b": {1}, "c": {2}}},
		// Cooperative-sticky: each join moves only what the newcomer needs.
		{StrategyCooperativeSticky, 4, []string{"a", "b"}, map[string][]int{"a": {0, 1}, "b": {2, 3}}},
		{StrategyCooperativeSticky, 4, []string{"a", "b", "c"}, map[string][]int{"a": {0, 1}, "b": {2}, "c": {3}}},
		{StrategyCooperativeSticky, 6, []string{"a", "b", "c"}, map[string][]int{"a": {0, 1}, "b": {3, 4}, "c": {2, 5}}},
	} {
		t.Run(fmt.Sprintf("%s/%d/%d", tc.strategy, tc.partitions, len(tc.members)), func(t *testing.T) {
			s := newGroupsSM()
			var g *GroupState
			for _, id := range tc.members {
				var code uint64
				code, g = update(t, s, join("g", id, tc.partitions, tc.strategy, 0))
				require.Equal(t, gOK, code)
			}
			require.Equal(t, tc.want, assignment(g))
		})
	}
}

// Whatever the sequence of joins and leaves, every strategy assigns each
// partition to exactly one member and balances the counts to within one;
// cooperative-sticky moves no partition that could have stayed.
func TestGroupsSMRebalanceProperties(t *testing.T) {
	for _, strategy := range []string{StrategyRange, StrategyRoundRobin, StrategyCooperativeSticky} {
		t.Run(strategy, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(1, 2))
			for range 200 {
				s := newGroupsSM()
				partitions := rng.IntN(13)
				var live []string
				for step := range 12 {
					before := map[string][]int{}
					if g := s.groups["g"]; g != nil {
						before = assignment(g)
					}
					if len(live) > 0 && rng.IntN(3) == 0 {
						i := rng.IntN(len(live))
						code, _ := update(t, s, groupCmd{Op: gopLeave, Group: "g", Member: live[i]})
						require.Equal(t, gOK, code)
						live = slices.Delete(live, i, i+1)
					} else {
						id := fmt.Sprintf("m%d", step)
						code, _ := update(t, s, join("g", id, partitions, strategy, 0))
						require.Equal(t, gOK, code)
						live = append(live, id)
					}
					g := s.groups["g"]
					require.Len(t, g.Members, len(live))
					if len(live) == 0 {
						continue
					}
					seen := map[int]string{}
					lo, hi := partitions, 0
					for id, m := range g.Members {
						for _, p := range m.Target["t"] {
							require.True(t, p >= 0 && p < partitions, "partition %d out of range", p)
							require.Empty(t, seen[p], "partition %d given to %s and %s", p, seen[p], id)
							seen[p] = id
						}
						lo, hi = min(lo, len(m.Target["t"])), max(hi, len(m.Target["t"]))
					}
					require.Len(t, seen, partitions)
					require.LessOrEqual(t, hi-lo, 1, "unbalanced: %v", assignment(g))
					if strategy != StrategyCooperativeSticky {
						continue
					}
					// A member keeps min(what it had, its new count) of its
					// partitions: nothing moves that did not have to.
					for id, m := range g.Members {
						kept := 0
						for _, p := range before[id] {
							if slices.Contains(m.Target["t"], p) {
								kept++
							}
						}
						require.Equal(t, min(len(before[id]), len(m.Target["t"])), kept,
							"%s had %v, now %v", id, before[id], m.Target["t"])
					}
				}
			}
		})
	}
}

func TestGroupsSMSnapshotRoundTrip(t *testing.T) {
	s := newGroupsSM()
	a := join("g", "a", 4, StrategyCooperativeSticky, 1)
	a.Static = true
	update(t, s, a)
	update(t, s, join("g", "b", 4, StrategyCooperativeSticky, 2))
	update(t, s, heartbeat("g", "a", []int{0, 1}, 3))
	update(t, s, heartbeat("g", "b", []int{2, 3}, 3))
	update(t, s, groupCmd{Op: gopCommit, Group: "g", Member: "b", Offsets: map[int]int64{2: 40, 3: 1 << 50}, Now: 4})
	update(t, s, join("empty", "c", 1, StrategyRange, 0))
	update(t, s, groupCmd{Op: gopLeave, Group: "empty", Member: "c"})
	update(t, s, groupCmd{Op: gopReset, Group: "empty", Offsets: map[int]int64{0: 9}})

	snap := snapshot(t, s)
	r := newGroupsSM()
	require.NoError(t, r.RecoverFromSnapshot(bytes.NewReader(snap), nil, nil))
	require.Equal(t, s.groups, r.groups)
	require.Equal(t, snap, snapshot(t, r))

	// The recovered replica goes on exactly as the original.
	for _, c := range []groupCmd{
		join("g", "d", 4, "", 5),
		heartbeat("g", "a", []int{0}, 6),
		{Op: gopExpire, Now: int64(time.Hour)},
		join("g", "e", 4, StrategyRange, int64(time.Hour)),
	} {
		c1, g1 := update(t, s, c)
		c2, g2 := update(t, r, c)
		require.Equal(t, c1, c2)
		require.Equal(t, g1, g2)
	}
	require.Equal(t, snapshot(t, s), snapshot(t, r))

	// A join may lower the partition count under members that own more
	// (the root package never sends one): the snapshot still recovers.
	_, g := update(t, s, join("g", "e", 1, StrategyRange, int64(time.Hour)))
	require.Equal(t, 1, g.Topics["t"].Partitions)
	require.NoError(t, newGroupsSM().RecoverFromSnapshot(bytes.NewReader(snapshot(t, s)), nil, nil))

	// An empty state machine round-trips too.
	r2 := newGroupsSM()
	require.NoError(t, r2.RecoverFromSnapshot(bytes.NewReader(snapshot(t, newGroupsSM())), nil, nil))
	require.Empty(t, r2.groups)
	require.NotNil(t, r2.groups)
	update(t, r2, join("g", "a", 1, "", 0))
}

// A snapshot that is not one we wrote is refused with an error wrapping
// ErrCorrupt (never a panic), and the state machine keeps its state.
func TestGroupsSMRecoverGarbage(t *testing.T) {
	valid := func() map[string]any {
		s := newGroupsSM()
		update(t, s, join("g", "a", 2, StrategyRange, 0))
		var m map[string]any
		require.NoError(t, json.Unmarshal(snapshot(t, s), &m))
		return m
	}
	mutate := func(f func(g map[string]any)) string {
		m := valid()
		f(m["g"].(map[string]any))
		b, err := json.Marshal(m)
		require.NoError(t, err)
		return string(b)
	}
	member := func(g map[string]any) map[string]any {
		return g["members"].(map[string]any)["a"].(map[string]any)
	}
	for name, in := range map[string]string{
		"empty":             "",
		"garbage":           "\x00\xffgarbage",
		"truncated":         mutate(func(map[string]any) {})[:20],
		"array":             "[1,2]",
		"null":              "null",
		"null group":        `{"g":null}`,
		"null member":       `{"g":{"name":"g","partitions":1,"members":{"a":null}}}`,
		"group name":        mutate(func(g map[string]any) { g["name"] = "other" }),
		"member id":         mutate(func(g map[string]any) { member(g)["id"] = "b" }),
		"negative count":    mutate(func(g map[string]any) { g["partitions"] = -1 }),
		"huge count":        mutate(func(g map[string]any) { g["partitions"] = 1 << 40 }),
		"target range":      mutate(func(g map[string]any) { member(g)["target"] = []int{0, MaxPartitions} }),
		"owned negative":    mutate(func(g map[string]any) { member(g)["owned"] = []int{-1} }),
		"offset partition":  mutate(func(g map[string]any) { g["offsets"] = map[string]int64{"-3": 1} }),
		"negative offset":   mutate(func(g map[string]any) { g["offsets"] = map[string]int64{"0": -1} }),
		"strategy":          mutate(func(g map[string]any) { g["strategy"] = "zigzag" }),
		"offset key":        mutate(func(g map[string]any) { g["offsets"] = map[string]int64{"x": 1} }),
		"wrong member type": mutate(func(g map[string]any) { g["members"] = []int{1} }),
		"kind":              mutate(func(g map[string]any) { g["kind"] = "zookeeper" }),
		"replog group with Kafka offsets": mutate(func(g map[string]any) {
			g["topic_offsets"] = map[string]any{"t": map[string]any{"0": map[string]any{"offset": 1}}}
		}),
		"Kafka group with members": mutate(func(g map[string]any) { g["kind"] = GroupKindKafka }),
		"Kafka negative offset":    `{"k":{"name":"k","kind":"kafka","topic_offsets":{"t":{"0":{"offset":-2}}}}}`,
		"Kafka empty topic":        `{"k":{"name":"k","kind":"kafka","topic_offsets":{"":{"0":{"offset":2}}}}}`,
		"Kafka partition":          `{"k":{"name":"k","kind":"kafka","topic_offsets":{"t":{"-1":{"offset":2}}}}}`,
	} {
		t.Run(name, func(t *testing.T) {
			s := newGroupsSM()
			update(t, s, join("keep", "k", 1, "", 0))
			before := snapshot(t, s)
			var err error
			require.NotPanics(t, func() {
				err = s.RecoverFromSnapshot(strings.NewReader(in), nil, nil)
			})
			require.ErrorIs(t, err, storage.ErrCorrupt)
			require.Equal(t, before, snapshot(t, s), "a refused snapshot changes nothing")
		})
	}

	// Missing maps are filled in: commands on the recovered state work.
	s := newGroupsSM()
	require.NoError(t, s.RecoverFromSnapshot(strings.NewReader(`{"g":{"name":"g","partitions":2}}`), nil, nil))
	code, _ := update(t, s, join("g", "a", 2, "", 0))
	require.Equal(t, gOK, code)
	code, _ = update(t, s, groupCmd{Op: gopCommit, Group: "g", Member: "a", Offsets: map[int]int64{0: 1}})
	require.Equal(t, gOK, code)
}

// badCommands are commands the root package never sends; each must be
// refused with gInvalid (or the code named) and change nothing.
var badCommands = []struct {
	name string
	cmd  string
	code uint64
}{
	{"garbage", "\x00\x01garbage", gInvalid},
	{"empty", "", gInvalid},
	{"null", "null", gInvalid},
	{"empty object", "{}", gInvalid},
	{"unknown op", `{"op":"explode","group":"g","member":"a"}`, gInvalid},
	{"op type", `{"op":1}`, gInvalid},
	{"offset key", `{"op":"commit","group":"g","member":"a","offsets":{"x":1}}`, gInvalid},
	{"join without group", `{"op":"join","member":"x","partitions":1,"session_timeout":1000}`, gInvalid},
	{"join without member", `{"op":"join","group":"g","topic_id":7,"partitions":1,"session_timeout":1000}`, gInvalid},
	{"join negative partitions", `{"op":"join","group":"g","topic_id":7,"member":"x","partitions":-4,"session_timeout":1000}`, gInvalid},
	{"join huge partitions", `{"op":"join","group":"g","topic_id":7,"member":"x","partitions":1099511627776,"session_timeout":1000}`, gInvalid},
	{"join huge partitions new group", `{"op":"join","group":"new","member":"x","partitions":9223372036854775807,"session_timeout":1000}`, gInvalid},
	{"join strategy", `{"op":"join","group":"g","topic_id":7,"member":"x","partitions":4,"strategy":"zigzag","session_timeout":1000}`, gInvalid},
	{"join session timeout", `{"op":"join","group":"g","topic_id":7,"member":"x","partitions":4,"session_timeout":-1}`, gInvalid},
	{"heartbeat huge owned", fmt.Sprintf(`{"op":"heartbeat","group":"g","member":"a","owned":[%s0]}`, strings.Repeat("1,", 3*MaxPartitions)), gInvalid},
	{"commit negative offset", `{"op":"commit","group":"g","member":"a","offsets":{"0":-1}}`, gInvalid},
	{"commit negative partition", `{"op":"commit","group":"g","offsets":{"-1":5}}`, gInvalid},
	{"commit partition out of range", `{"op":"commit","group":"g","offsets":{"4":5}}`, gInvalid},
	{"reset negative partition", `{"op":"reset","group":"empty","offsets":{"-1":0}}`, gInvalid},
	{"reset negative offset", `{"op":"reset","group":"empty","offsets":{"0":-7}}`, gInvalid},
	{"reset partition out of range", `{"op":"reset","group":"empty","offsets":{"100000":0}}`, gInvalid},
	{"delete without group", `{"op":"delete"}`, gInvalid},
	{"kafka claim without group", `{"op":"kafka-claim"}`, gInvalid},
	{"kafka claim of a replog group", `{"op":"kafka-claim","group":"g"}`, gGroupKind},
	{"kafka commit of a replog group", `{"op":"kafka-commit","group":"empty","commits":{"t":{"0":{"offset":1}}}}`, gGroupKind},
	{"kafka commit without group", `{"op":"kafka-commit","commits":{"t":{"0":{"offset":1}}}}`, gInvalid},
	{"kafka commit negative offset", `{"op":"kafka-commit","group":"k","commits":{"t":{"0":{"offset":-1}}}}`, gInvalid},
	{"kafka commit negative partition", `{"op":"kafka-commit","group":"k","commits":{"t":{"-1":{"offset":1}}}}`, gInvalid},
	{"kafka commit huge partition", `{"op":"kafka-commit","group":"k","commits":{"t":{"1099511627776":{"offset":1}}}}`, gInvalid},
	{"kafka commit empty topic", `{"op":"kafka-commit","group":"k","commits":{"":{"0":{"offset":1}}}}`, gInvalid},
	{"kafka commit long topic", `{"op":"kafka-commit","group":"k","commits":{"` + strings.Repeat("t", 250) + `":{"0":{"offset":1}}}}`, gInvalid},
	{"kafka commit long metadata", `{"op":"kafka-commit","group":"k","commits":{"t":{"0":{"offset":1,"metadata":"` + strings.Repeat("m", MaxOffsetMetadata+1) + `"}}}}`, gInvalid},
	{"kafka delete offsets of a replog group", `{"op":"kafka-delete-offsets","group":"empty","drop":{"t":[0]}}`, gGroupKind},
	{"kafka delete offsets negative partition", `{"op":"kafka-delete-offsets","group":"k","drop":{"t":[-1]}}`, gInvalid},
	{"join-topics without topics", `{"op":"join-topics","group":"g","member":"x","session_timeout":1000}`, gInvalid},
	{"join-topics empty topic", `{"op":"join-topics","group":"g","member":"x","session_timeout":1000,"topics":[{"name":"","partitions":1}]}`, gInvalid},
	{"join-topics twice a topic", `{"op":"join-topics","group":"g","member":"x","session_timeout":1000,"topics":[{"name":"a","partitions":1},{"name":"a","partitions":1}]}`, gInvalid},
	{"join-topics huge partitions", `{"op":"join-topics","group":"g","member":"x","session_timeout":1000,"topics":[{"name":"a","partitions":4097}]}`, gInvalid},
	{"join-topics recreated topic", `{"op":"join-topics","group":"g","member":"x","session_timeout":1000,"topics":[{"name":"t","id":8,"partitions":4}]}`, gGroupTopic},
	{"join-topics of a Kafka group", `{"op":"join-topics","group":"k","member":"x","session_timeout":1000,"topics":[{"name":"t","id":7,"partitions":4}]}`, gGroupKind},
	{"heartbeat-topics empty topic", `{"op":"heartbeat-topics","group":"g","member":"a","claims":{"":[0]}}`, gInvalid},
	{"commit-topics negative offset", `{"op":"commit-topics","group":"g","member":"a","topic_commits":{"t":{"0":-1}}}`, gInvalid},
	{"commit-topics unknown topic", `{"op":"commit-topics","group":"g","topic_commits":{"u":{"0":1}}}`, gInvalid},
	{"commit-topics not assigned", `{"op":"commit-topics","group":"g","member":"a","topic_commits":{"t":{"3":1}}}`, gNotAssigned},
	{"reset-topics of a group with members", `{"op":"reset-topics","group":"g","topic":"t","topic_id":7,"partitions":4}`, gGroupNotEmpty},
	{"reset-topics partition out of range", `{"op":"reset-topics","group":"empty","topic":"t","topic_id":7,"partitions":1,"offsets":{"1":0}}`, gInvalid},
	{"reset-topics without topic", `{"op":"reset-topics","group":"empty","partitions":1}`, gInvalid},
	{"kafka delete offsets of no group", `{"op":"kafka-delete-offsets","group":"nope","drop":{"t":[0]}}`, gGroupNotFound},
}

// groupsFixture is a state machine with a group "g" of members a and b on
// topic t (four partitions), a group "multi" whose members read topics a
// and b, a Kafka group "k", and an empty group "empty".
func groupsFixture(t testing.TB) *groupsSM {
	s := newGroupsSM()
	for _, c := range []groupCmd{
		join("g", "a", 4, StrategyCooperativeSticky, 0),
		heartbeat("g", "a", []int{0, 1, 2, 3}, 0),
		join("g", "b", 4, StrategyCooperativeSticky, 0),
		heartbeat("g", "a", []int{0, 1}, 0),
		heartbeat("g", "b", []int{2, 3}, 0),
		join("empty", "c", 1, StrategyRange, 0),
		{Op: gopLeave, Group: "empty", Member: "c"},
		{Op: gopKafkaClaim, Group: "k"},
		joinTopics("multi", "m", "", 0, "a:2", "b:3"),
		joinTopics("multi", "n", "", 0, "b:3"),
	} {
		b, _ := json.Marshal(c)
		code, _ := updateRaw(t, s, b)
		require.Equal(t, gOK, code, "%+v", c)
	}
	return s
}

func TestGroupsSMBadInput(t *testing.T) {
	for _, tc := range badCommands {
		t.Run(tc.name, func(t *testing.T) {
			s := groupsFixture(t)
			before := snapshot(t, s)
			var code uint64
			require.NotPanics(t, func() { code, _ = updateRaw(t, s, []byte(tc.cmd)) })
			require.Equal(t, tc.code, code)
			require.Equal(t, string(before), string(snapshot(t, s)), "a refused command changes nothing")
		})
	}
}

// FuzzGroupsSMUpdate feeds arbitrary commands to a populated state machine:
// Update never panics or fails, and the state it leaves round-trips through
// a snapshot.
func FuzzGroupsSMUpdate(f *testing.F) {
	for _, c := range []groupCmd{
		join("g", "x", 4, StrategyRange, 1),
		join("g", "a", 4, "", 1),
		heartbeat("g", "b", []int{0, 1, 2, 3}, 1),
		{Op: gopCommit, Group: "g", Member: "b", Offsets: map[int]int64{2: 1}},
		{Op: gopLeave, Group: "g", Member: "a"},
		{Op: gopExpire, Now: int64(time.Hour)},
		{Op: gopReset, Group: "empty", Offsets: map[int]int64{0: 3}},
		{Op: gopDelete, Group: "empty"},
		{Op: gopKafkaClaim, Group: "k"},
		{Op: gopKafkaCommit, Group: "k", Commits: map[string]map[int]CommittedOffset{"t": {0: {Offset: 3, Metadata: "m"}}}},
		{Op: gopKafkaDeleteOffsets, Group: "k", Drop: map[string][]int{"t": {0}}},
		joinTopics("multi", "x", StrategyRoundRobin, 1, "a:2", "c:1"),
		joinTopics("g", "y", "", 1, "t:4", "a:1"),
		claim("multi", "m", map[string][]int{"a": {0, 1}, "b": {0, 1, 2}}, 1),
		{Op: GroupOpCommit, Group: "multi", Member: "m", TopicCommits: map[string]map[int]int64{"a": {0: 4}}},
		{Op: GroupOpCommit, Group: "multi", TopicCommits: map[string]map[int]int64{"b": {2: 4}}},
		{Op: GroupOpReset, Group: "empty", Topic: "u", TopicID: 3, Partitions: 2, Offsets: map[int]int64{1: 1}},
	} {
		b, _ := json.Marshal(c)
		f.Add(b)
	}
	for _, tc := range badCommands {
		f.Add([]byte(tc.cmd))
	}
	// Found by fuzzing: a join that lowers the partition count.
	f.Add([]byte(`{"op":"join","group":"g","topiC_id":7,"memBer":"0","session_timeout":1}`))
	f.Fuzz(func(t *testing.T, cmd []byte) {
		s := groupsFixture(t)
		updateRaw(t, s, cmd)
		updateRaw(t, s, cmd) // twice: a join then finds its member
		snap := snapshot(t, s)
		r := newGroupsSM()
		require.NoError(t, r.RecoverFromSnapshot(bytes.NewReader(snap), nil, nil))
		require.Equal(t, snap, snapshot(t, r))
	})
}
