package replogtest_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/replog/replog"
	"github.com/replog/replog/replogtest"
)

// TestBatteryTransactions runs the battery's nemesis against transactional
// writers, which write to two topics per transaction and commit or abort,
// and read-committed readers, which poll all along. It checks for what
// Jepsen found in Kafka-compatible transactions (Redpanda 2022, Bufstream
// 2024; see shared/ANCHORS.md): aborted reads (a read-committed reader, or
// the final log, showing a record of an aborted transaction), lost or
// duplicated committed records, transactions visible in part, reads that
// move backwards, and transactions left hanging (the last stable offset
// held below the high watermark for good).
func TestBatteryTransactions(t *testing.T) {
	runTxnBattery(t, *batterySeed, *batteryDuration)
}

var txnTopics = []struct {
	name       string
	partitions int
}{{"t", batteryPartitions}, {"u", 2}}

// txnOutcome is what a writer knows of how its transaction ended.
type txnOutcome int

const (
	txnCommitted txnOutcome = iota // Commit returned nil
	txnAborted                     // Abort returned nil
	txnUnknown                     // an error: either, but all or nothing
)

// txnOp is one transaction: the values it produced, by topic.
type txnOp struct {
	id      string
	values  map[string]string // value -> topic
	outcome txnOutcome
}

// txnRead is what a reader saw: a record, in the order it saw them.
type txnRead struct {
	reader    string
	topic     string
	partition int
	offset    int64
	value     string
}

type txnStats struct {
	committed, aborted, unknown, sessions atomic.Int64
}

func runTxnBattery(t *testing.T, seed uint64, duration time.Duration) {
	rng := rand.New(rand.NewPCG(seed, seed^0x51ed270b7f4a7c15))
	c := replogtest.NewClusterWithOptions(t, batteryNodes, &replogtest.Options{Base: replog.Options{SnapshotEntries: 200}})
	ctx, cancel := context.WithTimeout(context.Background(), duration+3*time.Minute)
	defer cancel()
	for _, tt := range txnTopics {
		_, err := c.Log(0).CreateTopic(ctx, tt.name, replog.TopicConfig{Partitions: tt.partitions, Replicas: batteryNodes})
		require.NoError(t, err)
	}

	var stats txnStats
	var mu sync.Mutex
	var ops []txnOp
	var reads []txnRead
	var backwards []string
	stop := make(chan struct{})
	var wg sync.WaitGroup
	b := &nemesis{t: t, c: c, rng: rng}
	b.startWriters = func(node int) {
		wg.Add(2)
		go func() {
			defer wg.Done()
			mine := txnWriter(c, node, fmt.Sprintf("n%d", node), stop, &stats, func() bool { return b.removed(node) })
			mu.Lock()
			ops = append(ops, mine...)
			mu.Unlock()
		}()
		go func() {
			defer wg.Done()
			seen, back := txnReader(c, node, fmt.Sprintf("r%d", node), stop, func() bool { return b.removed(node) })
			mu.Lock()
			reads, backwards = append(reads, seen...), append(backwards, back...)
			mu.Unlock()
		}()
	}
	for node := range batteryNodes {
		b.live = append(b.live, node)
		b.startWriters(node)
	}
	require.Eventually(t, func() bool { return stats.committed.Load() >= 10 }, 60*time.Second, 5*time.Millisecond,
		"transactions commit before any fault")

	faults := injectFaults(t, b, rng, duration)
	close(stop)
	wg.Wait()

	// No transaction stays open: each one left open by a writer that
	// crashed is aborted by its timeout, or by the next session of its
	// id. Then the last stable offset reaches the high watermark
	// everywhere, and the replicas agree on both.
	ends := map[string][]int64{}
	var hanging []string
	for _, tt := range txnTopics {
		ends[tt.name] = make([]int64, tt.partitions)
		for p := range tt.partitions {
			ok := assertEventually(60*time.Second, func() bool {
				var first replog.PartitionOffsets
				for i, n := range b.live {
					tp, err := c.Log(n).Topic(tt.name)
					if err != nil {
						return false
					}
					o, err := tp.Offsets(ctx, p)
					if err != nil || o.LastStable != o.HighWatermark || (i > 0 && o != first) {
						return false
					}
					first = o
				}
				ends[tt.name][p] = first.HighWatermark
				return true
			})
			if !ok {
				hanging = append(hanging, fmt.Sprintf("%s/%d", tt.name, p))
			}
		}
	}

	// Final drain, read-committed, on every live node.
	var logs []map[string]txnRead // node -> value -> where
	var dups []string
	for _, n := range b.live {
		l, d := drainCommitted(t, c, n, ends)
		logs, dups = append(logs, l), append(dups, d...)
	}
	a := checkTxn(ops, reads, logs)
	for _, d := range dups {
		a.add(&a.duplicated, "%s", d)
	}
	a.backwards = len(backwards)
	a.hanging = len(hanging)
	a.examples = append(a.examples, head(backwards)...)
	a.examples = append(a.examples, hanging...)
	t.Logf("seed %d: %d faults %v; sessions %d; transactions committed %d, aborted %d, unknown %d; reads %d; records checked %d",
		seed, len(faults), summarize(faults), stats.sessions.Load(), stats.committed.Load(), stats.aborted.Load(), stats.unknown.Load(), len(reads), a.checked)
	t.Logf("seed %d anomalies: %+v", seed, a)
	require.Positive(t, stats.committed.Load())
	require.Positive(t, stats.aborted.Load())
	require.Zero(t, a.abortedRead, "records of aborted transactions read: %v", a.examples)
	require.Zero(t, a.lost, "committed records lost: %v", a.examples)
	require.Zero(t, a.duplicated, "duplicates: %v", a.examples)
	require.Zero(t, a.partial, "transactions visible in part: %v", a.examples)
	require.Zero(t, a.phantom, "values never produced: %v", a.examples)
	require.Zero(t, a.divergent, "replicas differ: %v", a.examples)
	require.Zero(t, a.uncommittedRead, "reads of records that never committed: %v", a.examples)
	require.Zero(t, a.backwards, "read-committed reads that moved backwards: %v", a.examples)
	require.Zero(t, a.hanging, "partitions whose last stable offset stayed behind: %v", a.examples)
}

// injectFaults runs the nemesis for duration, one fault at a time, each
// healed after 1.2-2 s and followed by leaders for "t", and returns the
// faults' names.
func injectFaults(t *testing.T, b *nemesis, rng *rand.Rand, duration time.Duration) []string {
	var faults []string
	deadline := time.Now().Add(duration)
	for time.Now().Before(deadline) {
		name, heal := b.inject()
		faults = append(faults, name)
		t.Logf("fault %s", name)
		time.Sleep(time.Duration(1200+rng.IntN(800)) * time.Millisecond)
		heal()
		for p := range batteryPartitions {
			b.c.WaitLeader("t", p, 10*time.Second)
		}
		time.Sleep(time.Duration(100+rng.IntN(200)) * time.Millisecond)
	}
	return faults
}

func head(s []string) []string { return s[:min(len(s), 5)] }

// assertEventually polls cond until it holds or d passes.
func assertEventually(d time.Duration, cond func() bool) bool {
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		if cond() {
			return true
		}
	}
	return false
}

// txnWriter runs transactions through node's Log until stop: each writes
// 1-5 values across both topics and commits, or aborts one time in four.
// Its session (transactional id name-tx) is started again when the node
// crashes or the session is fenced, which fences the previous one.
func txnWriter(c *replogtest.Cluster, node int, name string, stop <-chan struct{}, stats *txnStats, gone func() bool) []txnOp {
	rng := rand.New(rand.NewPCG(uint64(node), 7))
	var ops []txnOp
	var tp *replog.TransactionalProducer
	var prods map[string]*replog.Producer[string]
	var pl *replog.Log
	reset := func() {
		for _, p := range prods {
			p.Close()
		}
		if tp != nil {
			tp.Close()
		}
		tp, prods = nil, nil
	}
	defer reset()
	for seq := 0; ; {
		select {
		case <-stop:
			return ops
		default:
		}
		if gone() {
			return ops
		}
		l := c.Log(node)
		if l == nil {
			time.Sleep(20 * time.Millisecond)
			continue
		}
		if l != pl || tp == nil {
			reset()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			var err error
			tp, err = l.NewTransactionalProducer(ctx, name+"-tx", &replog.TransactionalOptions{Timeout: 5 * time.Second})
			cancel()
			if err != nil {
				tp = nil
				time.Sleep(20 * time.Millisecond)
				continue
			}
			stats.sessions.Add(1)
			prods = map[string]*replog.Producer[string]{}
			for _, tt := range txnTopics {
				topic, err := l.Topic(tt.name)
				if err == nil {
					prods[tt.name], err = replog.NewProducer(topic, replog.String(), &replog.ProducerOptions{Transactional: tp})
				}
				if err != nil {
					break
				}
			}
			if len(prods) != len(txnTopics) {
				reset()
				time.Sleep(20 * time.Millisecond)
				continue
			}
			pl = l
		}
		if err := tp.Begin(); err != nil {
			reset()
			continue
		}
		o := txnOp{id: fmt.Sprintf("%s-%06d", name, seq), values: map[string]string{}, outcome: txnUnknown}
		seq++
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		failed := false
		for i := range 1 + rng.IntN(5) {
			topic := txnTopics[rng.IntN(len(txnTopics))].name
			v := fmt.Sprintf("%s.%d", o.id, i)
			o.values[v] = topic
			if _, err := prods[topic].Produce(ctx, replog.Message[string]{Key: []byte(v), Value: v}); err != nil {
				failed = true
				break
			}
		}
		var err error
		if failed || rng.IntN(4) == 0 {
			if err = tp.Abort(ctx); err == nil {
				o.outcome = txnAborted
				stats.aborted.Add(1)
			}
		} else if err = tp.Commit(ctx); err == nil {
			o.outcome = txnCommitted
			stats.committed.Add(1)
		}
		cancel()
		if err != nil {
			stats.unknown.Add(1)
			if errors.Is(err, replog.ErrFenced) || errors.Is(err, replog.ErrClosed) {
				reset()
			} else {
				actx, acancel := context.WithTimeout(context.Background(), 5*time.Second)
				if tp.Abort(actx) != nil {
					reset() // a new session aborts what this one left open
				}
				acancel()
			}
		}
		ops = append(ops, o)
	}
}

// txnReader reads both topics read-committed through node's Log until
// stop, starting again from the earliest offsets when the node comes
// back. It returns what it read, and the reads whose offset did not
// follow the previous one's in the same consumer and partition.
func txnReader(c *replogtest.Cluster, node int, name string, stop <-chan struct{}, gone func() bool) ([]txnRead, []string) {
	var reads []txnRead
	var back []string
	var pl *replog.Log
	var cons []*replog.Consumer[string]
	var last map[string]int64
	closeAll := func() {
		for _, cs := range cons {
			cs.Close()
		}
		cons = nil
	}
	defer closeAll()
	for {
		select {
		case <-stop:
			return reads, back
		default:
		}
		if gone() {
			return reads, back
		}
		l := c.Log(node)
		if l == nil {
			time.Sleep(20 * time.Millisecond)
			continue
		}
		if l != pl || cons == nil {
			closeAll()
			last = map[string]int64{}
			for _, tt := range txnTopics {
				topic, err := l.Topic(tt.name)
				if err != nil {
					break
				}
				cs, err := replog.NewConsumer(topic, replog.String(), &replog.ConsumerOptions{Isolation: replog.ReadCommitted})
				if err != nil {
					break
				}
				cons = append(cons, cs)
			}
			if len(cons) != len(txnTopics) {
				closeAll()
				time.Sleep(20 * time.Millisecond)
				continue
			}
			pl = l
		}
		for i, cs := range cons {
			ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
			recs, err := cs.Poll(ctx)
			cancel()
			if err != nil && !errors.Is(err, context.DeadlineExceeded) {
				closeAll()
				break
			}
			topic := txnTopics[i].name
			for _, r := range recs {
				k := fmt.Sprintf("%s/%d", topic, r.Partition)
				if prev, ok := last[k]; ok && r.Offset <= prev {
					back = append(back, fmt.Sprintf("%s: %s at %d after %d", name, k, r.Offset, prev))
				}
				last[k] = r.Offset
				reads = append(reads, txnRead{reader: name, topic: topic, partition: r.Partition, offset: r.Offset, value: r.Value})
			}
		}
	}
}

// drainCommitted reads every partition of both topics on node n,
// read-committed, up to ends, and returns where each value was read, and
// the values read twice.
func drainCommitted(t *testing.T, c *replogtest.Cluster, n int, ends map[string][]int64) (map[string]txnRead, []string) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out := map[string]txnRead{}
	var dups []string
	for _, tt := range txnTopics {
		topic, err := c.Log(n).Topic(tt.name)
		require.NoError(t, err)
		for p := range tt.partitions {
			end := ends[tt.name][p]
			cs, err := replog.NewConsumer(topic, replog.String(), &replog.ConsumerOptions{Partitions: []int{p}, Isolation: replog.ReadCommitted})
			require.NoError(t, err)
			for {
				pos, err := cs.Position(p)
				require.NoError(t, err)
				if pos >= end {
					break
				}
				recs, err := cs.Poll(ctx)
				require.NoError(t, err, "node %d %s/%d drained", n, tt.name, p)
				for _, r := range recs {
					if prev, ok := out[r.Value]; ok {
						dups = append(dups, fmt.Sprintf("node %d: %q at %s/%d@%d and %+v", n, r.Value, tt.name, p, r.Offset, prev))
						continue
					}
					out[r.Value] = txnRead{topic: tt.name, partition: p, offset: r.Offset, value: r.Value}
				}
			}
			cs.Close()
		}
	}
	return out, dups
}

type txnAnomalies struct {
	checked                                         int
	abortedRead, lost, duplicated, partial, phantom int
	divergent, uncommittedRead, backwards, hanging  int
	examples                                        []string
}

func (a *txnAnomalies) add(n *int, format string, args ...any) {
	*n++
	if len(a.examples) < 10 {
		a.examples = append(a.examples, fmt.Sprintf(format, args...))
	}
}

// checkTxn compares the transactions' outcomes with the final logs (one
// per node, value -> where) and with what the readers saw on the way.
func checkTxn(ops []txnOp, reads []txnRead, logs []map[string]txnRead) txnAnomalies {
	var a txnAnomalies
	final := logs[0]
	for i, l := range logs[1:] {
		if len(l) != len(final) {
			a.add(&a.divergent, "node #%d holds %d committed values, node #0 %d", i+1, len(l), len(final))
		}
		for v, r := range l {
			if final[v] != r {
				a.add(&a.divergent, "node #%d has %q at %+v, node #0 at %+v", i+1, v, r, final[v])
			}
		}
	}
	owner := map[string]*txnOp{}
	for i := range ops {
		for v := range ops[i].values {
			owner[v] = &ops[i]
		}
	}
	for v, r := range final {
		a.checked++
		o := owner[v]
		switch {
		case o == nil:
			a.add(&a.phantom, "%q at %+v was never produced", v, r)
		case o.outcome == txnAborted:
			a.add(&a.abortedRead, "%q of aborted transaction %s at %+v", v, o.id, r)
		case o.values[v] != r.topic:
			a.add(&a.phantom, "%q produced to %s, read in %s", v, o.values[v], r.topic)
		}
	}
	for _, o := range ops {
		present := 0
		for v := range o.values {
			if _, ok := final[v]; ok {
				present++
			}
		}
		switch {
		case o.outcome == txnCommitted && present < len(o.values):
			a.add(&a.lost, "transaction %s committed %d values, %d read", o.id, len(o.values), present)
		case o.outcome == txnUnknown && present > 0 && present < len(o.values):
			a.add(&a.partial, "transaction %s: %d of %d values read", o.id, present, len(o.values))
		}
	}
	for _, r := range reads {
		o := owner[r.value]
		switch {
		case o == nil:
			a.add(&a.phantom, "%s read %q, never produced", r.reader, r.value)
		case o.outcome == txnAborted:
			a.add(&a.abortedRead, "%s read %q of aborted transaction %s at %s/%d@%d", r.reader, r.value, o.id, r.topic, r.partition, r.offset)
		default:
			if f, ok := final[r.value]; !ok {
				a.add(&a.uncommittedRead, "%s read %q at %s/%d@%d, which the final log lacks", r.reader, r.value, r.topic, r.partition, r.offset)
			} else if f.topic != r.topic || f.partition != r.partition || f.offset != r.offset {
				a.add(&a.divergent, "%s read %q at %s/%d@%d, the final log has it at %+v", r.reader, r.value, r.topic, r.partition, r.offset, f)
			}
		}
	}
	return a
}
