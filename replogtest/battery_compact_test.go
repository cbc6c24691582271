package replogtest_test

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/replog/replog"
	"github.com/replog/replog/replogtest"
)

// TestBatteryWithCompaction runs the battery on a compacted topic: every
// writer rewrites a few keys of its own, some writes are tombstones, and
// compaction runs all along, faults included, in the background
// (RetentionInterval) and through Log.Compact on random nodes. Besides the
// checks of the other batteries (every record read back was produced, at
// the position it was acknowledged at, once, in its writer's order, and
// every replica holds the same records at the same offsets), no key loses
// its last acknowledged record, unless a tombstone of the key deleted it,
// and no tombstone goes while an older value of its key stays.
func TestBatteryWithCompaction(t *testing.T) {
	runBattery(t, *batterySeed, *batteryDuration, batteryCompaction)
}

const (
	compactKeys            = 8  // keys per writer: a key is rewritten every 8 writes
	compactTombstoneEvery  = 10 // every 10th write of a key is a tombstone
	compactUniqueEvery     = 5  // every 5th write has a key of its own
	compactDeleteRetention = 200 * time.Millisecond
	compactInterval        = 200 * time.Millisecond // between Log.Compact calls
	// valueHeader carries a tombstone's value (it has none): the unique
	// string that names the write.
	valueHeader = "v"
)

// compactRecord is the key of value v, the seq-th of its writer, and
// whether it is written as a tombstone: key w/(seq%8) of writer w, and a
// tombstone every 10th time the key is written; but every 5th write gets
// a key of its own, w/u<seq>, which compaction must never remove, so that
// the records around the ones it removes are checked as the other
// batteries check every record.
func compactRecord(v string) (key string, tombstone bool) {
	w, seq := splitValue(v)
	if seq%compactUniqueEvery == compactUniqueEvery-1 {
		return w + "/u" + strconv.Itoa(seq), false
	}
	return w + "/" + strconv.Itoa(seq%compactKeys), (seq/compactKeys)%compactTombstoneEvery == compactTombstoneEvery-1
}

// compactMessage is the record of value v (the seq-th of its writer) on a
// compacted topic; a tombstone carries v in a header.
func compactMessage(v string, seq int) replog.Message[string] {
	key, tomb := compactRecord(v)
	if tomb {
		return replog.Message[string]{Key: []byte(key), Tombstone: true, Headers: []replog.Header{{Key: valueHeader, Value: []byte(v)}}}
	}
	return replog.Message[string]{Key: []byte(key), Value: v}
}

// compactValue names the write rec is: its value, or its header for a
// tombstone. A record whose key or tombstone flag differs from the write's
// gets a name no writer produced (a phantom).
func compactValue(rec replog.Record[string]) string {
	v := rec.Value
	if rec.Tombstone {
		v = ""
		for _, h := range rec.Headers {
			if h.Key == valueHeader {
				v = string(h.Value)
			}
		}
	}
	if !strings.Contains(v, "-") {
		return fmt.Sprintf("phantom-%q(key %q, tombstone %v)", v, rec.Key, rec.Tombstone)
	}
	if key, tomb := compactRecord(v); key != string(rec.Key) || tomb != rec.Tombstone {
		return fmt.Sprintf("phantom-%q(key %q, tombstone %v)", v, rec.Key, rec.Tombstone)
	}
	return v
}

// compactor calls Log.Compact on a random live node every ~200ms until
// stop; errors (a crashed node, a partition without leader) are counted.
type compactor struct {
	ok, failed atomic.Int64
	done       chan struct{}
	errs       []string // the first few errors, read after done
}

func startCompactor(c *replogtest.Cluster, b *nemesis, seed uint64, stop <-chan struct{}) *compactor {
	k := &compactor{done: make(chan struct{})}
	rng := rand.New(rand.NewPCG(seed, seed^0xc0ffee)) // the nemesis's is not shared
	go func() {
		defer close(k.done)
		for {
			select {
			case <-stop:
				return
			case <-time.After(compactInterval/2 + time.Duration(rng.Int64N(int64(compactInterval)))):
			}
			b.mu.Lock()
			n := b.live[rng.IntN(len(b.live))]
			b.mu.Unlock()
			l := c.Log(n)
			if l == nil { // crashed
				k.failed.Add(1)
				k.note(fmt.Sprintf("node %d down", n))
				continue
			}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			err := l.Compact(ctx, "t")
			cancel()
			if err != nil {
				k.failed.Add(1)
				k.note(fmt.Sprintf("node %d: %v", n, err))
			} else {
				k.ok.Add(1)
			}
		}
	}()
	return k
}

func (k *compactor) note(err string) {
	if len(k.errs) < 5 {
		k.errs = append(k.errs, err)
	}
}

func (k *compactor) wait() { <-k.done }

// quiesceCompaction compacts every partition up to its head twice,
// DeleteRetention apart, so that the second pass removes the tombstones the
// first reached: after it the background has nothing left to do (no dirty
// bytes, no tombstone left to expire) and the replicas hold still for the
// drain.
func quiesceCompaction(t *testing.T, ctx context.Context, c *replogtest.Cluster, live []int) {
	for round := range 2 {
		var err error
		for end := time.Now().Add(30 * time.Second); time.Now().Before(end); {
			cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			err = c.Log(live[round%len(live)]).Compact(cctx, "t")
			cancel()
			if err == nil {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		require.NoError(t, err, "final compaction, round %d", round)
		time.Sleep(compactDeleteRetention + 100*time.Millisecond)
	}
}

// drainCompacted drains every live node of a compacted topic. A replica
// may still be applying the last compaction commands: the drain is
// repeated (for up to 10s) until the replicas agree, and what they hold
// then is returned (the checker counts what still differs).
func drainCompacted(t *testing.T, c *replogtest.Cluster, live []int, start, hw []int64) [][]map[int64]string {
	for attempt := 0; ; attempt++ {
		var logs [][]map[int64]string
		for _, n := range live {
			logs = append(logs, drainGaps(t, c, n, start, hw))
		}
		same := true
		for _, l := range logs[1:] {
			same = same && slices.EqualFunc(l, logs[0], maps.Equal)
		}
		if same || attempt == 20 {
			if !same {
				t.Logf("replicas still differ after %d drains", attempt+1)
			} else if attempt > 0 {
				t.Logf("replicas agreed at drain %d", attempt+1)
			}
			return logs
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// drainGaps reads every partition p of node n from start[p] up to hw[p],
// stepping over the offsets compaction emptied. The last offset, hw[p]-1,
// is in the newest batch, which compaction never touches, so it is read.
func drainGaps(t *testing.T, c *replogtest.Cluster, n int, start, hw []int64) []map[int64]string {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	tp, err := c.Log(n).Topic("t")
	require.NoError(t, err)
	out := make([]map[int64]string, batteryPartitions)
	for p := range batteryPartitions {
		out[p] = map[int64]string{}
		if hw[p] == start[p] {
			continue
		}
		cons, err := replog.NewConsumer(tp, replog.String(), &replog.ConsumerOptions{Partitions: []int{p}})
		require.NoError(t, err)
		next := start[p] // the lowest offset the next record may have
		for rec, err := range cons.Records(ctx) {
			require.NoError(t, err, "node %d partition %d after offset %d", n, p, next-1)
			require.GreaterOrEqual(t, rec.Offset, next, "node %d partition %d: consumer went back", n, p)
			require.Less(t, rec.Offset, hw[p], "node %d partition %d: record past the high watermark", n, p)
			next = rec.Offset + 1
			out[p][rec.Offset] = compactValue(rec)
			if next == hw[p] {
				break
			}
		}
		cons.Close()
		require.Equal(t, hw[p], next, "node %d partition %d: the last offset (in the newest batch) not read", n, p)
	}
	return out
}

// compactAnomalies adds what compaction may get wrong, and what it did, to
// the battery's anomalies.
type compactAnomalies struct {
	// resurrected: a record of a key went with a tombstone of the key
	// (the record is one, or a later write of the key is) while an older
	// value of the key stayed, which then reads as the key's value.
	resurrected int
	// written: records acknowledged; present: records read back;
	// removed: offsets in [log start, high watermark) without a record;
	// tombstonesRemoved, valuesRemoved: acknowledged records absent.
	written, present, removed, tombstonesRemoved, valuesRemoved int
	tombstonesWritten                                           int // acknowledged
	// stale: records read back whose key has a later record read back in
	// their partition (not compacted yet: in or near the newest batch).
	stale int
}

// checkCompacted is checkRetained for a compacted topic: an acknowledged
// record may be absent if it is below the log start, if a later record of
// its key (acknowledged or not) is present, or if a tombstone of its key
// may have deleted it (it is one, or a later write of its key is; since
// each key has one writer, later means a higher sequence), provided no
// older value of the key stays.
func checkCompacted(ops []op, logs [][]map[int64]string, start, hw []int64) (compactAnomalies, anomalies) {
	var ca compactAnomalies
	a, where := checkPresent(ops, logs)
	attempted := map[string]bool{}
	for _, o := range ops {
		attempted[o.value] = true
	}

	// The newest record present of every key, per partition.
	type pkey struct {
		p   int
		key string
	}
	type newest struct {
		off   int64
		value string
		tomb  bool
	}
	last := map[pkey]newest{}
	for p, part := range logs[0] {
		ca.present += len(part)
		ca.removed += int(hw[p]-start[p]) - len(part)
		for off, v := range part {
			if !attempted[v] {
				continue // a phantom, counted
			}
			key, tomb := compactRecord(v)
			k := pkey{p, key}
			if n, ok := last[k]; ok {
				ca.stale++
				if n.off > off {
					continue
				}
			}
			last[k] = newest{off, v, tomb}
		}
	}

	// Whether the write or a later one of its key is a tombstone.
	sorted := slices.Clone(ops)
	slices.SortFunc(sorted, func(x, y op) int {
		wx, sx := splitValue(x.value)
		wy, sy := splitValue(y.value)
		return cmp.Or(strings.Compare(wx, wy), cmp.Compare(sx, sy))
	})
	tombAfter := make([]bool, len(sorted))
	seen := map[string]bool{}
	for i := len(sorted) - 1; i >= 0; i-- {
		key, tomb := compactRecord(sorted[i].value)
		seen[key] = seen[key] || tomb
		tombAfter[i] = seen[key]
	}

	for i, o := range sorted {
		if !o.ok {
			continue
		}
		ca.written++
		if _, tomb := compactRecord(o.value); tomb {
			ca.tombstonesWritten++
		}
		got, ok := where[o.value]
		if ok {
			if got != o.pos {
				a.add(&a.misplaced, "%q acknowledged at %+v, read at %+v", o.value, o.pos, got)
			}
			continue
		}
		p := o.pos.Partition
		if o.pos.Offset < start[p] {
			continue // deleted by retention
		}
		key, tomb := compactRecord(o.value)
		if tomb {
			ca.tombstonesRemoved++
		} else {
			ca.valuesRemoved++
		}
		n, some := last[pkey{p, key}]
		switch {
		case some && n.off > o.pos.Offset:
			// Superseded by a record still there.
		case tombAfter[i] && some && !n.tomb:
			a.add(&ca.resurrected, "%q (key %q, tombstone %v) acknowledged at %+v is gone with a tombstone of its key, but older value %q at offset %d stayed",
				o.value, key, tomb, o.pos, n.value, n.off)
		case tombAfter[i]:
			// Deleted by a tombstone of its key, itself gone after
			// DeleteRetention.
		case some:
			a.add(&a.lost, "acknowledged %q at %+v (key %q) not read back; the key's newest record read back is %q at offset %d",
				o.value, o.pos, key, n.value, n.off)
		default:
			a.add(&a.lost, "acknowledged %q at %+v (key %q) not read back, nor any record of its key", o.value, o.pos, key)
		}
	}
	return ca, a
}
