package replication

import (
	"cmp"
	"maps"
	"slices"
	"sort"
)

// topicPartition is one partition of one of a group's topics.
type topicPartition struct {
	topic string
	part  int
}

// rebalance recomputes every member's target partitions with the group's
// strategy and starts a new generation. Each member gets only partitions
// of the topics it reads (Kafka's rule).
//
// With one topic, or when every member reads the same topics, each
// strategy assigns as it did when groups read one topic, over the topics'
// partitions in (topic, partition) order; a group written by those
// versions so goes on exactly as before.
func (g *GroupState) rebalance() {
	g.Generation++
	ids := slices.Sorted(maps.Keys(g.Members))
	if len(ids) == 0 {
		return
	}
	// all: every partition some member reads, in (topic, partition) order.
	var all []topicPartition
	for _, topic := range slices.Sorted(maps.Keys(g.Topics)) {
		if !g.subscribed(topic, "") {
			continue
		}
		for p := range g.Topics[topic].Partitions {
			all = append(all, topicPartition{topic, p})
		}
	}
	reads := func(id string, tp topicPartition) bool {
		_, ok := slices.BinarySearch(g.Members[id].Topics, tp.topic)
		return ok
	}
	same := true
	for _, id := range ids[1:] {
		same = same && slices.Equal(g.Members[id].Topics, g.Members[ids[0]].Topics)
	}
	targets := map[string][]topicPartition{}
	switch g.Strategy {
	case StrategyRange:
		// Per topic, contiguous ranges over the members that read it.
		for i := 0; i < len(all); {
			j := i
			for j < len(all) && all[j].topic == all[i].topic {
				j++
			}
			var readers []string
			for _, id := range ids {
				if reads(id, all[i]) {
					readers = append(readers, id)
				}
			}
			n := j - i
			per, extra := n/len(readers), n%len(readers)
			k := i
			for r, id := range readers {
				c := per
				if r < extra {
					c++
				}
				targets[id] = append(targets[id], all[k:k+c]...)
				k += c
			}
			i = j
		}
	case StrategyRoundRobin:
		// Deal the partitions out to the members in turn, skipping those
		// that do not read the partition's topic.
		next := 0
		for _, tp := range all {
			for !reads(ids[next%len(ids)], tp) {
				next++
			}
			id := ids[next%len(ids)]
			targets[id] = append(targets[id], tp)
			next++
		}
	default:
		if same {
			g.stickySame(ids, all, targets)
		} else {
			g.stickyMixed(ids, all, reads, targets)
		}
	}
	for _, id := range ids {
		t := targets[id]
		m := g.Members[id]
		m.Target = nil
		slices.SortFunc(t, func(a, b topicPartition) int {
			return cmp.Or(cmp.Compare(a.topic, b.topic), cmp.Compare(a.part, b.part))
		})
		for _, tp := range t {
			if m.Target == nil {
				m.Target = map[string][]int{}
			}
			m.Target[tp.topic] = append(m.Target[tp.topic], tp.part)
		}
	}
}

// flatTarget is a member's target partitions in (topic, partition) order.
func (m *MemberState) flatTarget() []topicPartition {
	var out []topicPartition
	for _, topic := range slices.Sorted(maps.Keys(m.Target)) {
		for _, p := range m.Target[topic] {
			out = append(out, topicPartition{topic, p})
		}
	}
	return out
}

// stickySame is cooperative-sticky for members that all read the same
// topics: keep what stays balanced, move the rest.
func (g *GroupState) stickySame(ids []string, all []topicPartition, targets map[string][]topicPartition) {
	quota := func(i int) int {
		n := len(all) / len(ids)
		if i < len(all)%len(ids) {
			n++
		}
		return n
	}
	valid := make(map[topicPartition]bool, len(all))
	for _, tp := range all {
		valid[tp] = true
	}
	// Members that already hold more partitions get the larger quotas, so
	// fewer partitions move.
	order := slices.Clone(ids)
	count := func(id string) int {
		n := 0
		for _, ps := range g.Members[id].Target {
			n += len(ps)
		}
		return n
	}
	sort.SliceStable(order, func(a, b int) bool { return count(order[a]) > count(order[b]) })
	taken := map[topicPartition]bool{}
	for i, id := range order {
		for _, tp := range g.Members[id].flatTarget() {
			if valid[tp] && !taken[tp] && len(targets[id]) < quota(i) {
				targets[id] = append(targets[id], tp)
				taken[tp] = true
			}
		}
	}
	for _, tp := range all {
		if taken[tp] {
			continue
		}
		for i, id := range order {
			if len(targets[id]) < quota(i) {
				targets[id] = append(targets[id], tp)
				taken[tp] = true
				break
			}
		}
	}
}

// stickyMixed is cooperative-sticky for members that read different
// topics. Partitions are placed greedily, from those of the topics the
// fewest members read, each with the least loaded member that reads its
// topic, its present member if that member is one of the least loaded;
// then balanced: a partition moves from a member to one with at least two
// fewer that reads its topic (one the member just got before one it
// had), until none can. Each member so ends within one partition of every
// other member that could take one of its partitions; the balancing is
// cut short after a bounded amount of work (maxBalanceSteps), which only
// groups far larger than their bounds allow could need.
func (g *GroupState) stickyMixed(ids []string, all []topicPartition, reads func(string, topicPartition) bool,
	targets map[string][]topicPartition) {
	// Members by index, so that the loops below index slices, not maps.
	index := make(map[string]int, len(ids))
	for i, id := range ids {
		index[id] = i
	}
	prev := map[topicPartition]int{}
	for i, id := range ids {
		for _, tp := range g.Members[id].flatTarget() {
			prev[tp] = i + 1 // 0: none
		}
	}
	readers := map[string][]int{}
	for _, tp := range all {
		if _, ok := readers[tp.topic]; ok {
			continue
		}
		readers[tp.topic] = []int{}
		for i, id := range ids {
			if reads(id, tp) {
				readers[tp.topic] = append(readers[tp.topic], i)
			}
		}
	}
	order := slices.Clone(all)
	slices.SortStableFunc(order, func(a, b topicPartition) int {
		return cmp.Compare(len(readers[a.topic]), len(readers[b.topic]))
	})
	got := make([][]topicPartition, len(ids))
	for _, tp := range order {
		rs := readers[tp.topic]
		best := rs[0]
		for _, i := range rs[1:] {
			if len(got[i]) < len(got[best]) {
				best = i
			}
		}
		if p := prev[tp] - 1; p >= 0 && p != best && slices.Contains(rs, p) && len(got[p]) == len(got[best]) {
			best = p
		}
		got[best] = append(got[best], tp)
	}
	balance(got, readers, prev)
	for i, id := range ids {
		targets[id] = got[i]
	}
}

// maxBalanceSteps bounds the work of balance, which every replica does.
const maxBalanceSteps = 1 << 24

// balance moves partitions from a member to a member with at least two
// fewer that reads the partition's topic, the most loaded members' first,
// and of those the partitions they did not have before (prev, the index
// of their previous member plus one) first, until no such move is left or
// maxBalanceSteps are spent. Each move lowers the sum of the squares of
// the counts, so it ends.
func balance(got [][]topicPartition, readers map[string][]int, prev map[topicPartition]int) {
	order := make([]int, len(got))
	for i := range order {
		order[i] = i
	}
	for steps := 0; steps < maxBalanceSteps; {
		slices.SortStableFunc(order, func(a, b int) int { return cmp.Compare(len(got[b]), len(got[a])) })
		moved := false
	search:
		for _, a := range order {
			if len(got[a]) <= len(got[order[len(order)-1]])+1 {
				break // no member has two fewer than a, or than any after it
			}
			for _, had := range []bool{false, true} {
				for i, tp := range got[a] {
					steps++
					if (prev[tp]-1 == a) != had {
						continue
					}
					rs := readers[tp.topic]
					steps += len(rs)
					best := -1
					for _, b := range rs {
						if b != a && (best < 0 || len(got[b]) < len(got[best])) {
							best = b
						}
					}
					if best >= 0 && len(got[a]) > len(got[best])+1 {
						got[a] = slices.Delete(got[a], i, i+1)
						got[best] = append(got[best], tp)
						moved = true
						break search
					}
				}
			}
		}
		if !moved {
			return
		}
	}
}
