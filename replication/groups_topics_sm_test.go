package replication

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// joinTopics joins member to group reading topics, given as name:partitions
// (ids: 100 + the name's first byte).
func joinTopics(group, member, strategy string, now int64, topics ...string) groupCmd {
	c := groupCmd{Op: GroupOpJoin, Group: group, Member: member, Strategy: strategy,
		SessionTimeout: int64(time.Second), Now: now}
	for _, t := range topics {
		var name string
		var n int
		fmt.Sscanf(strings.Replace(t, ":", " ", 1), "%s %d", &name, &n)
		c.Topics = append(c.Topics, TopicRef{Name: name, ID: 100 + uint64(name[0]), Partitions: n})
	}
	return c
}

func claim(group, member string, claims map[string][]int, now int64) groupCmd {
	return groupCmd{Op: GroupOpHeartbeat, Group: group, Member: member, Claims: claims, Now: now}
}

// A group's members read several topics, and each gets only partitions of
// the topics it reads; offsets are kept by topic.
func TestGroupsSMTopics(t *testing.T) {
	s := newGroupsSM()
	code, g := update(t, s, joinTopics("g", "a", StrategyCooperativeSticky, 1, "a:2", "b:2"))
	require.Equal(t, gOK, code)
	require.Equal(t, map[string][]int{"a": {0, 1}, "b": {0, 1}}, g.Members["a"].Target)
	_, g = update(t, s, claim("g", "a", map[string][]int{"a": {0, 1}, "b": {0, 1}, "c": {0}}, 2))
	require.Equal(t, map[string][]int{"a": {0, 1}, "b": {0, 1}}, g.Members["a"].Owned)

	// b reads only b: it gets b, none of a; a keeps a (balanced, and as
	// sticky as the subscriptions allow).
	code, g = update(t, s, joinTopics("g", "b", "", 3, "b:2"))
	require.Equal(t, gOK, code)
	require.Equal(t, map[string][]int{"a": {0, 1}}, g.Members["a"].Target)
	require.Equal(t, map[string][]int{"b": {0, 1}}, g.Members["b"].Target)
	require.Empty(t, g.Granted("b"), "a still owns b")
	_, g = update(t, s, claim("g", "a", map[string][]int{"a": {0, 1}, "b": {1}}, 4))
	require.Equal(t, map[string][]int{"b": {0}}, g.Granted("b"))
	_, g = update(t, s, claim("g", "b", map[string][]int{"b": {0, 1}}, 4))
	require.Equal(t, map[string][]int{"b": {0}}, g.Members["b"].Owned, "a still owns b/1")

	// Commits by topic: a member commits only what it owns or is granted.
	code, g = update(t, s, groupCmd{Op: GroupOpCommit, Group: "g", Member: "a",
		TopicCommits: map[string]map[int]int64{"a": {0: 5}, "b": {1: 6}}, Now: 5})
	require.Equal(t, gOK, code)
	require.Equal(t, map[int]int64{0: 5}, g.Topics["a"].Offsets)
	require.Equal(t, map[int]int64{1: 6}, g.Topics["b"].Offsets)
	_, g = update(t, s, claim("g", "a", map[string][]int{"a": {0, 1}}, 5))
	require.Equal(t, map[string][]int{"b": {0, 1}}, g.Granted("b"))
	for _, c := range []groupCmd{
		{Op: GroupOpCommit, Group: "g", Member: "a", TopicCommits: map[string]map[int]int64{"b": {0: 1}}},
		{Op: GroupOpCommit, Group: "g", Member: "b", TopicCommits: map[string]map[int]int64{"a": {1: 1}}},
		{Op: GroupOpCommit, Group: "g", Member: "b", TopicCommits: map[string]map[int]int64{"zz": {}}},
	} {
		code, _ = update(t, s, c)
		require.Equal(t, gNotAssigned, code, "%+v", c)
	}
	code, _ = update(t, s, groupCmd{Op: GroupOpCommit, Group: "g", Member: "b", TopicCommits: map[string]map[int]int64{"b": {0: 6}}})
	require.Equal(t, gOK, code, "granted, not yet claimed")
	// The commands of one topic: a member reading one topic may use them,
	// one reading several may not.
	code, g = update(t, s, groupCmd{Op: gopCommit, Group: "g", Member: "b", Offsets: map[int]int64{1: 9}})
	require.Equal(t, gOK, code)
	require.Equal(t, map[int]int64{0: 6, 1: 9}, g.Topics["b"].Offsets)
	for _, c := range []groupCmd{
		{Op: gopCommit, Group: "g", Member: "a", Offsets: map[int]int64{0: 1}},
		{Op: gopCommit, Group: "g", Offsets: map[int]int64{0: 1}},
		heartbeat("g", "a", []int{0}, 6),
		join("g", "c", 2, "", 6),
	} {
		before := snapshot(t, s)
		code, _ = update(t, s, c)
		require.Equal(t, gGroupTopic, code, "%+v", c)
		require.Equal(t, string(before), string(snapshot(t, s)))
	}
	// A transaction's offsets (no member): any of the group's topics.
	code, _ = update(t, s, groupCmd{Op: GroupOpCommit, Group: "g", TopicCommits: map[string]map[int]int64{"a": {1: 3}}})
	require.Equal(t, gOK, code)
	code, _ = update(t, s, groupCmd{Op: GroupOpCommit, Group: "g", TopicCommits: map[string]map[int]int64{"a": {2: 3}}})
	require.Equal(t, gInvalid, code)
	code, _ = update(t, s, groupCmd{Op: GroupOpCommit, Group: "g", TopicCommits: map[string]map[int]int64{"x": {0: 3}}})
	require.Equal(t, gInvalid, code)

	// A group with several topics is written in v2, and round-trips.
	snap := snapshot(t, s)
	require.Contains(t, string(snap), `"format":2`)
	r := newGroupsSM()
	require.NoError(t, r.RecoverFromSnapshot(bytes.NewReader(snap), nil, nil))
	require.Equal(t, s.groups, r.groups)
	require.Equal(t, string(snap), string(snapshot(t, r)))

	// Both leave; the offsets of both topics stay, and a member reading
	// only a finds a's.
	update(t, s, groupCmd{Op: gopLeave, Group: "g", Member: "a"})
	update(t, s, groupCmd{Op: gopLeave, Group: "g", Member: "b"})
	code, g = update(t, s, joinTopics("g", "c", "", 7, "a:2"))
	require.Equal(t, gOK, code)
	require.Equal(t, map[int]int64{0: 5, 1: 3}, g.Topics["a"].Offsets)
	require.Equal(t, map[int]int64{0: 6, 1: 9}, g.Topics["b"].Offsets, "offsets of a topic no member reads stay")
	// A group of one topic and its members is written in v1 again.
	update(t, s, groupCmd{Op: gopLeave, Group: "g", Member: "c"})
	code, _ = update(t, s, groupCmd{Op: GroupOpReset, Group: "g", Topic: "b", TopicID: 100 + 'b', Partitions: 2})
	require.Equal(t, gOK, code)
	code, g = update(t, s, joinTopics("g", "c", "", 8, "a:2"))
	require.Equal(t, gOK, code)
	require.Equal(t, []string{"a"}, slices.Collect(func(yield func(string) bool) {
		for k := range g.Topics {
			yield(k)
		}
	}), "b, without offsets or readers, went")
	require.NotContains(t, string(snapshot(t, s)), `"format"`)
}

// A topic deleted and created again under its name has a new id: the
// group's offsets of the old one do not carry over to it, and a member may
// not read it while others read the old one.
func TestGroupsSMTopicRecreated(t *testing.T) {
	s := newGroupsSM()
	update(t, s, joinTopics("g", "a", "", 1, "a:2", "b:2"))
	update(t, s, claim("g", "a", map[string][]int{"a": {0, 1}, "b": {0, 1}}, 1))
	update(t, s, groupCmd{Op: GroupOpCommit, Group: "g", Member: "a", TopicCommits: map[string]map[int]int64{"a": {0: 5}, "b": {0: 6}}})
	newB := joinTopics("g", "b", "", 2, "b:3")
	newB.Topics[0].ID = 999
	code, _ := update(t, s, newB)
	require.Equal(t, gGroupTopic, code, "a reads the old b")
	update(t, s, groupCmd{Op: gopLeave, Group: "g", Member: "a"})
	code, g := update(t, s, newB)
	require.Equal(t, gOK, code)
	require.Equal(t, &GroupTopic{ID: 999, Partitions: 3, Offsets: map[int]int64{}}, g.Topics["b"])
	require.Equal(t, map[int]int64{0: 5}, g.Topics["a"].Offsets, "the other topic keeps its offsets")
}

// Bounds: a join that would pass MaxGroupTopics or MaxGroupPartitions is
// refused and changes nothing.
func TestGroupsSMTopicBounds(t *testing.T) {
	s := newGroupsSM()
	var names []string
	for i := range MaxGroupTopics {
		names = append(names, fmt.Sprintf("t%03d:1", i))
	}
	c := joinTopics("g", "a", "", 1, names...)
	for i := range c.Topics {
		c.Topics[i].ID = uint64(i)
	}
	code, _ := update(t, s, c)
	require.Equal(t, gOK, code)
	before := snapshot(t, s)
	code, _ = update(t, s, joinTopics("g", "b", "", 1, "z:1"))
	require.Equal(t, gGroupTooLarge, code)
	require.Equal(t, before, snapshot(t, s))

	s = newGroupsSM()
	update(t, s, joinTopics("g", "a", "", 1, fmt.Sprintf("a:%d", MaxPartitions), fmt.Sprintf("b:%d", MaxPartitions),
		fmt.Sprintf("c:%d", MaxPartitions), fmt.Sprintf("d:%d", MaxPartitions)))
	code, _ = update(t, s, joinTopics("g", "b", "", 1, "e:1"))
	require.Equal(t, gGroupTooLarge, code)
}

// With members of different subscriptions, every strategy assigns each
// partition of a topic some member reads to exactly one member that reads
// it; range and round-robin as Kafka's; cooperative-sticky keeps each
// member within one partition of every member that could take one of its
// partitions.
func TestGroupsSMTopicsRebalanceProperties(t *testing.T) {
	topics := []string{"a:3", "b:5", "c:1", "d:0"}
	for _, strategy := range []string{StrategyRange, StrategyRoundRobin, StrategyCooperativeSticky} {
		t.Run(strategy, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(3, 4))
			for range 200 {
				s := newGroupsSM()
				var live []string
				for step := range 10 {
					if len(live) > 0 && rng.IntN(3) == 0 {
						i := rng.IntN(len(live))
						update(t, s, groupCmd{Op: gopLeave, Group: "g", Member: live[i]})
						live = slices.Delete(live, i, i+1)
					} else {
						var sub []string
						for _, tp := range topics {
							if rng.IntN(2) == 0 {
								sub = append(sub, tp)
							}
						}
						if len(sub) == 0 {
							sub = topics[:1]
						}
						id := fmt.Sprintf("m%d", step)
						code, _ := update(t, s, joinTopics("g", id, strategy, 0, sub...))
						require.Equal(t, gOK, code)
						live = append(live, id)
					}
					g := s.groups["g"]
					seen := map[topicPartition]string{}
					for id, m := range g.Members {
						for topic, ps := range m.Target {
							require.Contains(t, m.Topics, topic, "%s got a topic it does not read", id)
							for _, p := range ps {
								tp := topicPartition{topic, p}
								require.Less(t, p, g.Topics[topic].Partitions)
								require.Empty(t, seen[tp], "%v given to %s and %s", tp, seen[tp], id)
								seen[tp] = id
							}
						}
					}
					want := 0
					for name, gt := range g.Topics {
						if g.subscribed(name, "") {
							want += gt.Partitions
						}
					}
					require.Len(t, seen, want)
					if strategy != StrategyCooperativeSticky {
						continue
					}
					// Balanced: no member holds two more than another
					// that reads one of its partitions' topics.
					count := func(m *MemberState) int { return len(m.flatTarget()) }
					for ida, ma := range g.Members {
						for idb, mb := range g.Members {
							for topic := range ma.Target {
								if ida != idb && slices.Contains(mb.Topics, topic) {
									require.LessOrEqual(t, count(ma), count(mb)+1, "%s %v, %s %v", ida, ma.Target, idb, mb.Target)
								}
							}
						}
					}
				}
			}
		})
	}
}

// A rebalance of a group at its bounds, with members of different
// subscriptions, stays cheap: every replica runs it as it applies a join.
func TestGroupsSMTopicsRebalanceAtBounds(t *testing.T) {
	if testing.Short() {
		t.Skip("slow")
	}
	s := newGroupsSM()
	all := []string{"a:4096", "b:4096", "c:4096", "d:4096"}
	start := time.Now()
	for i := range 200 {
		sub := all[i%4 : i%4+1]
		if i%3 == 0 {
			sub = all[:1+i%4]
		}
		code, _ := update(t, s, joinTopics("g", fmt.Sprintf("m%03d", i), StrategyCooperativeSticky, 0, sub...))
		require.Equal(t, gOK, code)
	}
	t.Logf("200 joins of a group of %d partitions: %v", MaxGroupPartitions, time.Since(start))
}
