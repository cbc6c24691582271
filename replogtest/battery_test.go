package replogtest_test

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/replog/replog"
	"github.com/replog/replog/replogtest"
)

// The battery follows Jepsen's analyses of Kafka, Redpanda and NATS (see
// shared/ANCHORS.md): producers write unique values while a nemesis crashes
// leaders and followers, the whole cluster, and partitions the network;
// after healing a final drain reads everything back and a checker counts
// anomalies, each of which must be zero. CI runs a short version per seed;
// a soak: go test ./replogtest -run Battery -battery.duration=10m -v
var (
	batteryDuration = flag.Duration("battery.duration", 5*time.Second, "how long each battery seed injects faults")
	batterySeeds    = flag.Int("battery.seeds", 3, "how many seeds the battery runs")
	batterySeed     = flag.Uint64("battery.seed", 1, "first seed of the battery")
)

func TestBattery(t *testing.T) {
	for s := range *batterySeeds {
		seed := *batterySeed + uint64(s)
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) { runBattery(t, seed, *batteryDuration, batteryPlain) })
	}
}

// TestBatteryWithRetention runs the battery with size retention deleting
// records all along, faults included: no acknowledged record at or above
// the final log start is lost, and the replicas agree on the log start and
// on every record after it.
func TestBatteryWithRetention(t *testing.T) {
	runBattery(t, *batterySeed, *batteryDuration, batteryRetention)
}

// batteryMode is what the battery's topic does with old records.
type batteryMode int

const (
	batteryPlain      batteryMode = iota // keeps them
	batteryRetention                     // deletes them by size
	batteryCompaction                    // compacts them by key; see battery_compact_test.go
)

const (
	batteryNodes      = 3
	batteryPartitions = 3
	writersPerNode    = 2
)

// op is one produce attempt.
type op struct {
	value string
	ok    bool
	pos   replog.Position
}

type batteryStats struct {
	attempted, acked, failed atomic.Int64
	faults                   []string
	ackedDuringFault         []int64
}

func runBattery(t *testing.T, seed uint64, duration time.Duration, mode batteryMode) {
	retain, compact := mode == batteryRetention, mode == batteryCompaction
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	base := replog.Options{SnapshotEntries: 200}
	if path := os.Getenv("REPLOG_TEST_LOG"); path != "" { // dragonboat's and replog's warnings, for debugging
		f, err := os.OpenFile(path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
		require.NoError(t, err)
		defer f.Close()
		base.Logger = slog.New(slog.NewTextHandler(f, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	o := &replogtest.Options{Base: base}
	cfg := replog.TopicConfig{Partitions: batteryPartitions, Replicas: batteryNodes}
	if retain {
		o.RetentionInterval = 100 * time.Millisecond
		// About 115 of the battery's records (a CI run on a loaded
		// machine stored 150-170 per partition, under the 16 KiB this
		// was, and retention rightly deleted nothing).
		cfg.RetentionBytes = 4 << 10
	}
	msg := plainMessage
	if compact {
		o.RetentionInterval = 100 * time.Millisecond // background passes too
		cfg.Cleanup = replog.CleanupCompact | replog.CleanupDelete
		cfg.DeleteRetention = compactDeleteRetention
		msg = compactMessage
	}
	c := replogtest.NewClusterWithOptions(t, batteryNodes, o)
	ctx, cancel := context.WithTimeout(context.Background(), duration+2*time.Minute)
	defer cancel()
	_, err := c.Log(0).CreateTopic(ctx, "t", cfg)
	require.NoError(t, err)

	var stats batteryStats
	var opsMu sync.Mutex
	var ops []op
	stop := make(chan struct{})
	var wg sync.WaitGroup
	b := &nemesis{t: t, c: c, rng: rng}
	b.startWriters = func(node int) {
		for w := range writersPerNode {
			wg.Add(1)
			go func() {
				defer wg.Done()
				name := fmt.Sprintf("n%dw%d", node, w)
				mine := writerWith(c, node, name, stop, &stats, func() bool { return b.removed(node) }, msg)
				opsMu.Lock()
				ops = append(ops, mine...)
				opsMu.Unlock()
			}()
		}
	}
	for node := range batteryNodes {
		b.live = append(b.live, node)
		b.startWriters(node)
	}

	// Faults start once writes flow (producer ids issued, leaders known).
	require.Eventually(t, func() bool { return stats.acked.Load() >= 100 }, 30*time.Second, 5*time.Millisecond)
	var compactor *compactor
	if compact {
		compactor = startCompactor(c, b, seed, stop)
	}

	// The nemesis: one fault at a time, each healed before the next.
	deadline := time.Now().Add(duration)
	for time.Now().Before(deadline) {
		before := stats.acked.Load()
		name, heal := b.inject()
		stats.faults = append(stats.faults, name)
		t.Logf("fault %s", name)
		// Well past an election (a follower waits 300-600ms without
		// heartbeats, then campaigns), so a minority fault shows whether the
		// majority goes on.
		time.Sleep(time.Duration(1200+rng.IntN(800)) * time.Millisecond)
		if name != "crash-all" {
			// On a loaded 2-core machine an election can outlast the window;
			// the fault then lasts until the majority completes a write (at
			// most 5s more), and a majority that stays stuck fails below.
			for end := time.Now().Add(5 * time.Second); stats.acked.Load() == before && time.Now().Before(end); {
				time.Sleep(10 * time.Millisecond)
			}
		}
		heal()
		stats.ackedDuringFault = append(stats.ackedDuringFault, stats.acked.Load()-before)
		for p := range batteryPartitions {
			c.WaitLeader("t", p, 10*time.Second) // a leader within seconds of healing
		}
		time.Sleep(time.Duration(100+rng.IntN(200)) * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	if compact {
		compactor.wait()
		quiesceCompaction(t, ctx, c, b.live)
	}

	if retain {
		// Retention stops, so that the log start holds still for the drain
		// (a check already under way may still move it: the convergence
		// below waits for that).
		cfg.RetentionBytes = 0
		require.NoError(t, c.Log(b.live[0]).AlterTopic(ctx, "t", cfg))
		time.Sleep(time.Second)
	}
	// Final drain: every node reads every partition from the log start up
	// to the high watermark, both of which all of them agree on.
	start, hw := convergedOffsets(t, ctx, c, b.live, batteryPartitions)
	var logs [][]map[int64]string // live node -> partition -> offset -> value
	if compact {
		logs = drainCompacted(t, c, b.live, start, hw)
	} else {
		for _, n := range b.live {
			logs = append(logs, drainFrom(t, c, n, start, hw, batteryPartitions))
		}
	}
	if retain {
		t.Logf("seed %d: log starts %v, high watermarks %v", seed, start, hw)
		for p := range batteryPartitions {
			require.Positive(t, start[p], "retention deleted records of partition %d", p)
		}
	}

	var a anomalies
	if compact {
		var ca compactAnomalies
		ca, a = checkCompacted(ops, logs, start, hw)
		t.Logf("seed %d: log starts %v, high watermarks %v", seed, start, hw)
		t.Logf("seed %d compaction: %+v; Compact calls ok %d, failed %d %q", seed, ca, compactor.ok.Load(), compactor.failed.Load(), compactor.errs)
		require.Zero(t, ca.resurrected, "keys whose tombstone went while an older value stayed: %v", a.examples)
		require.Positive(t, ca.removed, "compaction removed no record")
		if ca.tombstonesWritten >= 2*batteryNodes*writersPerNode {
			// A slow run (a loaded machine) may write too few for a key to
			// reach its tombstone, then this would say nothing.
			require.Positive(t, ca.tombstonesRemoved, "compaction removed no tombstone")
		}
	} else {
		a = checkRetained(ops, logs, start)
	}
	t.Logf("seed %d: %d faults %v; produce attempts %d, acked %d, failed %d; records checked %d",
		seed, len(stats.faults), summarize(stats.faults), stats.attempted.Load(), stats.acked.Load(), stats.failed.Load(), a.checked)
	t.Logf("seed %d anomalies: %+v", seed, a)
	require.Zero(t, a.lost, "acknowledged records lost: %v", a.examples)
	require.Zero(t, a.duplicated, "duplicates: %v", a.examples)
	require.Zero(t, a.inconsistent, "offsets holding two values: %v", a.examples)
	require.Zero(t, a.reordered, "reordered: %v", a.examples)
	require.Zero(t, a.phantom, "phantom values: %v", a.examples)
	require.Zero(t, a.divergent, "diverging replicas: %v", a.examples)
	require.Zero(t, a.misplaced, "acknowledged at another position: %v", a.examples)
	for i, n := range stats.ackedDuringFault {
		if stats.faults[i] != "crash-all" { // every other fault leaves a majority up
			require.Positive(t, n, "no write completed during minority fault %d (%s)", i, stats.faults[i])
		}
	}
}

// writer produces unique values through node's Log until stop, recreating
// its producer when the node crashes and comes back.
func writer(c *replogtest.Cluster, node int, name string, stop <-chan struct{}, stats *batteryStats, gone func() bool) []op {
	return writerWith(c, node, name, stop, stats, gone, plainMessage)
}

// plainMessage is the record of value v, the seq-th of its writer: keyed
// by the value itself.
func plainMessage(v string, seq int) replog.Message[string] {
	return replog.Message[string]{Key: []byte(v), Value: v}
}

// writerWith is writer producing msg(v, seq) for the seq-th value v.
func writerWith(c *replogtest.Cluster, node int, name string, stop <-chan struct{}, stats *batteryStats, gone func() bool,
	msg func(v string, seq int) replog.Message[string]) []op {
	var ops []op
	var p *replog.Producer[string]
	var pl *replog.Log
	defer func() {
		if p != nil {
			p.Close()
		}
	}()
	for seq := 0; ; {
		select {
		case <-stop:
			return ops
		default:
		}
		if gone() {
			return ops // the node was wiped and replaced
		}
		l := c.Log(node)
		if l == nil {
			time.Sleep(20 * time.Millisecond) // the node is down
			continue
		}
		if l != pl || p == nil {
			tp, err := l.Topic("t")
			if err != nil {
				time.Sleep(20 * time.Millisecond)
				continue
			}
			if p, err = replog.NewProducer(tp, replog.String(), nil); err != nil {
				time.Sleep(20 * time.Millisecond)
				continue
			}
			pl = l
		}
		v := fmt.Sprintf("%s-%06d", name, seq)
		m := msg(v, seq)
		seq++
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		stats.attempted.Add(1)
		pos, err := p.Produce(ctx, m)
		cancel()
		ops = append(ops, op{value: v, ok: err == nil, pos: pos})
		if err == nil {
			stats.acked.Add(1)
		} else {
			stats.failed.Add(1)
			if errors.Is(err, replog.ErrClosed) {
				p = nil // its node crashed
			}
		}
	}
}

// nemesis injects faults into the nodes that are still members (live).
type nemesis struct {
	t            *testing.T
	c            *replogtest.Cluster
	rng          *rand.Rand
	startWriters func(node int)

	mu   sync.Mutex
	live []int
	gone []int
}

func (b *nemesis) removed(node int) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Contains(b.gone, node)
}

func (b *nemesis) pick() int { return b.live[b.rng.IntN(len(b.live))] }

// others lists the live nodes but n.
func (b *nemesis) others(n int) []int {
	var out []int
	for _, i := range b.live {
		if i != n {
			out = append(out, i)
		}
	}
	return out
}

// inject starts one fault and returns its name and how to heal it.
func (b *nemesis) inject() (string, func()) {
	c := b.c
	leader := func() int { return c.WaitLeader("t", b.rng.IntN(batteryPartitions), 10*time.Second) }
	switch k := b.rng.IntN(6); k {
	case 0: // crash the leader of a partition
		l := leader()
		c.Crash(l)
		return "crash-leader", func() { c.Restart(l) }
	case 1: // crash a follower (any node that is not that leader)
		l := leader()
		o := b.others(l)
		f := o[b.rng.IntN(len(o))]
		c.Crash(f)
		return "crash-follower", func() { c.Restart(f) }
	case 2: // isolate a leader from the majority
		l := leader()
		c.Partition([]int{l}, b.others(l))
		return "partition-leader", c.Heal
	case 3: // isolate a random node
		n := b.pick()
		c.Partition([]int{n}, b.others(n))
		return "partition-node", c.Heal
	case 4: // a node loses its data directory: it comes back as a new node
		victim := b.pick()
		c.Crash(victim)
		return "wipe-rejoin", func() { b.replace(victim) }
	default: // crash every node at once, then restart them all
		live := slices.Clone(b.live)
		for _, i := range live {
			c.Crash(i)
		}
		return "crash-all", func() {
			var wg sync.WaitGroup
			for _, i := range live {
				wg.Add(1)
				go func() { defer wg.Done(); c.Restart(i) }()
			}
			wg.Wait()
		}
	}
}

// replace brings a wiped node back the only safe way, under a new id (a
// replica that lost its Raft log cannot rejoin under its old one): add a
// node, move the victim's replicas to it, remove the victim.
func (b *nemesis) replace(victim int) {
	t, c := b.t, b.c
	via := b.others(victim)[0]
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	fresh := c.AddNode(via)
	for _, info := range c.Log(via).Topics() {
		for p, reps := range info.PartitionReplicas {
			next := slices.Clone(reps)
			for i, r := range next {
				if r == uint64(victim+1) {
					next[i] = uint64(fresh + 1)
				}
			}
			require.NoError(t, c.Log(via).ReassignPartition(ctx, info.Name, p, next))
		}
	}
	c.RemoveNode(victim, via)
	b.mu.Lock()
	b.live = append(b.others(victim), fresh)
	b.gone = append(b.gone, victim)
	b.mu.Unlock()
	b.startWriters(fresh)
}

// convergedHW waits until the nodes report the same high watermark for each
// partition, and returns them.
func convergedHW(t *testing.T, ctx context.Context, c *replogtest.Cluster, nodes []int, partitions int) []int64 {
	_, hw := convergedOffsets(t, ctx, c, nodes, partitions)
	return hw
}

// convergedOffsets waits until nodes agree on every partition's log start
// and high watermark, and returns them.
func convergedOffsets(t *testing.T, ctx context.Context, c *replogtest.Cluster, nodes []int, partitions int) (start, hw []int64) {
	start, hw = make([]int64, partitions), make([]int64, partitions)
	require.Eventually(t, func() bool {
		for p := range partitions {
			var marks []replog.PartitionOffsets
			for _, n := range nodes {
				tp, err := c.Log(n).Topic("t")
				if err != nil {
					return false
				}
				o, err := tp.Offsets(ctx, p)
				if err != nil {
					return false
				}
				marks = append(marks, o)
			}
			for _, m := range marks[1:] {
				if m != marks[0] {
					return false
				}
			}
			start[p], hw[p] = marks[0].LogStart, marks[0].HighWatermark
		}
		return true
	}, 30*time.Second, 20*time.Millisecond, "replicas did not converge on one log start and high watermark")
	return start, hw
}

func drainN(t *testing.T, c *replogtest.Cluster, n int, hw []int64, partitions int) []map[int64]string {
	return drainFrom(t, c, n, make([]int64, partitions), hw, partitions)
}

// drainFrom reads every partition p of node n from start[p], its log
// start, up to hw[p].
func drainFrom(t *testing.T, c *replogtest.Cluster, n int, start, hw []int64, partitions int) []map[int64]string {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	tp, err := c.Log(n).Topic("t")
	require.NoError(t, err)
	out := make([]map[int64]string, partitions)
	for p := range partitions {
		out[p] = map[int64]string{}
		if hw[p] == start[p] {
			continue
		}
		cons, err := replog.NewConsumer(tp, replog.String(), &replog.ConsumerOptions{Partitions: []int{p}})
		require.NoError(t, err)
		next := start[p]
		for rec, err := range cons.Records(ctx) {
			require.NoError(t, err)
			require.Equal(t, next, rec.Offset, "node %d partition %d: consumer skipped or went back", n, p)
			next++
			out[p][rec.Offset] = rec.Value
			if next == hw[p] {
				break
			}
		}
		cons.Close()
		require.Equal(t, hw[p], next, "node %d partition %d drained", n, p)
	}
	return out
}

type anomalies struct {
	checked                                                                  int
	lost, duplicated, inconsistent, reordered, phantom, divergent, misplaced int
	examples                                                                 []string
}

func (a *anomalies) add(n *int, format string, args ...any) {
	*n++
	if len(a.examples) < 10 {
		a.examples = append(a.examples, fmt.Sprintf(format, args...))
	}
}

// check counts the anomalies of shared/ANCHORS.md; linear in the records.
func check(ops []op, logs [][]map[int64]string) anomalies { return checkRetained(ops, logs, nil) }

// checkRetained is check for logs that start at start[p] (nil: 0): an
// acknowledged record below its partition's log start was deleted by
// retention, not lost.
func checkRetained(ops []op, logs [][]map[int64]string, start []int64) anomalies {
	a, where := checkPresent(ops, logs)
	for _, o := range ops {
		if !o.ok {
			continue
		}
		got, ok := where[o.value]
		switch {
		case !ok && start != nil && o.pos.Offset < start[o.pos.Partition]:
			// Deleted by retention.
		case !ok:
			a.add(&a.lost, "acknowledged %q at %+v not read back", o.value, o.pos)
		case got != o.pos:
			a.add(&a.misplaced, "%q acknowledged at %+v, read at %+v", o.value, o.pos, got)
		}
	}
	return a
}

// checkPresent counts the anomalies of the records read back, whatever is
// missing: replicas that differ, values never produced, duplicates, and a
// writer's values out of order in a partition. It returns where each value
// was read (on the first replica, which the others must equal).
func checkPresent(ops []op, logs [][]map[int64]string) (anomalies, map[string]replog.Position) {
	var a anomalies
	attempted := map[string]op{}
	for _, o := range ops {
		attempted[o.value] = o
	}
	ref := logs[0]
	for n := 1; n < len(logs); n++ {
		for p := range ref {
			if len(logs[n][p]) != len(ref[p]) {
				a.add(&a.divergent, "node %d partition %d has %d records, node 0 %d", n, p, len(logs[n][p]), len(ref[p]))
			}
			for off, v := range ref[p] {
				if w := logs[n][p][off]; w != v {
					a.add(&a.inconsistent, "partition %d offset %d: node 0 %q, node %d %q", p, off, v, n, w)
				}
			}
		}
	}
	where := map[string]replog.Position{}
	for p, part := range ref {
		offs := make([]int64, 0, len(part))
		for off := range part {
			offs = append(offs, off)
		}
		sort.Slice(offs, func(i, j int) bool { return offs[i] < offs[j] })
		last := map[string]int{} // writer -> last sequence seen in this partition
		for _, off := range offs {
			v := part[off]
			a.checked++
			if _, ok := attempted[v]; !ok {
				a.add(&a.phantom, "partition %d offset %d: %q was never produced", p, off, v)
			}
			if prev, dup := where[v]; dup {
				a.add(&a.duplicated, "%q at %v and %d/%d", v, prev, p, off)
			}
			where[v] = replog.Position{Partition: p, Offset: off}
			w, seq := splitValue(v)
			if s, ok := last[w]; ok && seq <= s {
				a.add(&a.reordered, "partition %d: %s seq %d after %d", p, w, seq, s)
			}
			last[w] = seq
		}
	}
	return a, where
}

func splitValue(v string) (string, int) {
	i := strings.LastIndexByte(v, '-')
	n, _ := strconv.Atoi(v[i+1:])
	return v[:i], n
}

func summarize(faults []string) map[string]int {
	m := map[string]int{}
	for _, f := range faults {
		m[f]++
	}
	return m
}
