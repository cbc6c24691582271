package replogtest_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/replog/replog"
	"github.com/replog/replog/replogtest"
)

// TestBatteryShare runs the battery's nemesis against a share group: the
// battery's idempotent writers on every node write unique values to "t"
// while share consumers on every node acquire them, accept most, release
// some (to be delivered again, after a delay) and keep failing the
// "poison" ones until they reach MaxDeliveries and go to the dead-letter
// topic. After healing, the members drain what is left. The checker:
// every acknowledged value was accepted or dead-lettered (none lost), no
// value was accepted twice, no poison value was accepted, and no value
// was held by two members at once while locked (a delivery's lock window
// overlapping another delivery of it that its member did not give up).
func TestBatteryShare(t *testing.T) {
	runShareBattery(t, *batterySeed, *batteryDuration)
}

const (
	shareMembersPerNode = 2
	shareMaxDeliveries  = 3
	shareLock           = 2 * time.Second
)

// sharePoison tells the values the members never accept: one in 16.
func sharePoison(v string) bool { return strings.HasSuffix(v, "7") && strings.Contains(v, "5") }

// shareEvent is one delivery and what became of it.
type shareEvent struct {
	member    string
	value     string
	got, lock time.Time // when Poll returned it, and its lock deadline
	outcome   string    // accepted, released, or failed: the error
	ackStart  time.Time // when the member began to acknowledge it
	ackedAt   time.Time
}

func runShareBattery(t *testing.T, seed uint64, duration time.Duration) {
	rng := rand.New(rand.NewPCG(seed, seed^0x3c6ef372fe94f82b))
	c := replogtest.NewClusterWithOptions(t, batteryNodes, &replogtest.Options{Base: replog.Options{SnapshotEntries: 200}})
	ctx, cancel := context.WithTimeout(context.Background(), duration+3*time.Minute)
	defer cancel()
	_, err := c.Log(0).CreateTopic(ctx, "t", replog.TopicConfig{Partitions: batteryPartitions, Replicas: batteryNodes})
	require.NoError(t, err)
	_, err = c.Log(0).CreateTopic(ctx, "dlq", replog.TopicConfig{Partitions: 1, Replicas: batteryNodes})
	require.NoError(t, err)

	var stats batteryStats
	var mu sync.Mutex
	var ops []op
	var events []shareEvent
	stopWriters, stopMembers := make(chan struct{}), make(chan struct{})
	var writers, members sync.WaitGroup
	var lastAck atomic.Int64
	b := &nemesis{t: t, c: c, rng: rng}
	b.startWriters = func(node int) {
		writers.Add(1)
		go func() {
			defer writers.Done()
			mine := writerWith(c, node, fmt.Sprintf("n%dw", node), stopWriters, &stats, func() bool { return b.removed(node) }, plainMessage)
			mu.Lock()
			ops = append(ops, mine...)
			mu.Unlock()
		}()
		for m := range shareMembersPerNode {
			members.Add(1)
			go func() {
				defer members.Done()
				mine := shareMember(c, node, fmt.Sprintf("n%dm%d", node, m), stopMembers, func() bool { return b.removed(node) }, &lastAck)
				mu.Lock()
				events = append(events, mine...)
				mu.Unlock()
			}()
		}
	}
	for node := range batteryNodes {
		b.live = append(b.live, node)
		b.startWriters(node)
	}
	require.Eventually(t, func() bool { return stats.acked.Load() >= 100 && lastAck.Load() > 0 }, 60*time.Second, 5*time.Millisecond,
		"records written and accepted before any fault")

	faults := injectFaults(t, b, rng, duration)
	close(stopWriters)
	writers.Wait()
	// The members drain what is left: every record is accepted or dead
	// lettered, which takes a few locks' time for records held by members
	// that crashed, and MaxDeliveries releases for the poison ones.
	quiet := func() bool { return time.Since(time.Unix(0, lastAck.Load())) > 3*shareLock }
	for end := time.Now().Add(90 * time.Second); !quiet() && time.Now().Before(end); {
		time.Sleep(100 * time.Millisecond)
	}
	close(stopMembers)
	members.Wait()

	dead := drainDeadLetters(t, c, b.live[0])
	a := checkShare(ops, events, dead)
	t.Logf("seed %d: %d faults %v; produce attempts %d, acked %d; deliveries %d; dead letters %d",
		seed, len(faults), summarize(faults), stats.attempted.Load(), stats.acked.Load(), len(events), len(dead))
	t.Logf("seed %d share anomalies: %+v", seed, a)
	require.Positive(t, a.accepted)
	require.Zero(t, a.lost, "acknowledged records neither accepted nor dead-lettered: %v", a.examples)
	require.Zero(t, a.acceptedTwice, "records accepted twice: %v", a.examples)
	require.Zero(t, a.poisonAccepted, "poison records accepted: %v", a.examples)
	require.Zero(t, a.overlapping, "records held by two members at once: %v", a.examples)
	require.Zero(t, a.phantom, "values never written: %v", a.examples)
}

// shareMember polls the share group through node's Log until stop,
// accepting values, releasing one in eight with a short delay, and
// releasing the poison ones until they are dead-lettered. It records
// every delivery.
func shareMember(c *replogtest.Cluster, node int, name string, stop <-chan struct{}, gone func() bool, lastAck *atomic.Int64) []shareEvent {
	rng := rand.New(rand.NewPCG(uint64(node), uint64(len(name))))
	var events []shareEvent
	var sc *replog.ShareConsumer[string]
	var pl *replog.Log
	defer func() {
		if sc != nil {
			sc.Close()
		}
	}()
	for {
		select {
		case <-stop:
			return events
		default:
		}
		if gone() {
			return events
		}
		l := c.Log(node)
		if l == nil {
			time.Sleep(20 * time.Millisecond)
			continue
		}
		if l != pl || sc == nil {
			if sc != nil {
				sc.Close()
				sc = nil
			}
			tp, err := l.Topic("t")
			if err == nil {
				sc, err = replog.NewShareConsumer(tp, "workers", replog.String(), &replog.ShareConsumerOptions{
					LockDuration: shareLock, MaxDeliveries: shareMaxDeliveries, DeadLetterTopic: "dlq",
					MaxRecords: 20, PollInterval: 20 * time.Millisecond,
				})
			}
			if err != nil {
				sc = nil
				time.Sleep(20 * time.Millisecond)
				continue
			}
			pl = l
		}
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		recs, err := sc.Poll(ctx)
		cancel()
		got := time.Now()
		if err != nil && !errors.Is(err, context.DeadlineExceeded) {
			var de *replog.DecodeError
			if !errors.As(err, &de) {
				sc.Close()
				sc = nil
			}
		}
		for _, r := range recs {
			e := shareEvent{member: name, value: r.Value, got: got, lock: r.Deadline(), ackStart: time.Now()}
			actx, acancel := context.WithTimeout(context.Background(), 2*time.Second)
			var err error
			switch {
			case sharePoison(r.Value):
				e.outcome = "released"
				err = r.Release(actx, 0)
			case rng.IntN(8) == 0:
				e.outcome = "released"
				err = r.Release(actx, 50*time.Millisecond)
			default:
				e.outcome = "accepted"
				err = r.Ack(actx)
			}
			acancel()
			e.ackedAt = time.Now()
			if err != nil {
				e.outcome = "failed: " + err.Error()
			} else if e.outcome == "accepted" {
				lastAck.Store(time.Now().UnixNano())
			}
			events = append(events, e)
		}
	}
}

// drainDeadLetters reads the dead-letter topic on node n.
func drainDeadLetters(t *testing.T, c *replogtest.Cluster, n int) []string {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	tp, err := c.Log(n).Topic("dlq")
	require.NoError(t, err)
	o, err := tp.Offsets(ctx, 0)
	require.NoError(t, err)
	cs, err := replog.NewConsumer(tp, replog.String(), nil)
	require.NoError(t, err)
	defer cs.Close()
	var out []string
	for {
		pos, err := cs.Position(0)
		require.NoError(t, err)
		if pos >= o.HighWatermark {
			return out
		}
		recs, err := cs.Poll(ctx)
		require.NoError(t, err)
		for _, r := range recs {
			out = append(out, r.Value)
		}
	}
}

type shareAnomalies struct {
	accepted, deadLettered, redelivered                       int
	lost, acceptedTwice, poisonAccepted, overlapping, phantom int
	examples                                                  []string
}

func (a *shareAnomalies) add(n *int, format string, args ...any) {
	*n++
	if len(a.examples) < 10 {
		a.examples = append(a.examples, fmt.Sprintf(format, args...))
	}
}

func checkShare(ops []op, events []shareEvent, dead []string) shareAnomalies {
	var a shareAnomalies
	written := map[string]bool{}
	for _, o := range ops {
		written[o.value] = true
	}
	isDead := map[string]bool{}
	for _, v := range dead {
		isDead[v] = true
		if !written[v] {
			a.add(&a.phantom, "dead letter %q was never written", v)
		}
	}
	byValue := map[string][]shareEvent{}
	for _, e := range events {
		byValue[e.value] = append(byValue[e.value], e)
		if !written[e.value] {
			a.add(&a.phantom, "%s got %q, never written", e.member, e.value)
		}
	}
	for v, es := range byValue {
		accepted := 0
		for _, e := range es {
			if e.outcome == "accepted" {
				accepted++
			}
		}
		switch {
		case accepted > 1:
			a.add(&a.acceptedTwice, "%q accepted %d times", v, accepted)
		case accepted == 1 && sharePoison(v):
			a.add(&a.poisonAccepted, "poison %q accepted", v)
		}
		if len(es) > 1 {
			a.redelivered++
		}
		// Two deliveries overlap if, when the later one's Poll returned
		// with a lock still valid, the earlier one's lock was valid too
		// and its member had not begun to acknowledge it. Both
		// acquisitions were applied by then, and the coordinator hands a
		// record out again only once the holder's lock expired (by the
		// acquiring command's time, at most the Poll's return) or its
		// acknowledgement was applied (after it began). A delivery whose
		// lock had expired when Poll returned it holds nothing.
		for _, e := range es {
			for _, f := range es {
				if e.got.Before(f.got) && f.lock.After(f.got) && f.got.Before(e.lock) && f.got.Before(e.ackStart) {
					a.add(&a.overlapping, "%q: %s got it at %v, lock until %v, acknowledging from %v (%s); %s got it at %v", v,
						e.member, e.got.Format("15:04:05.000"), e.lock.Format("15:04:05.000"), e.ackStart.Format("15:04:05.000"), e.outcome,
						f.member, f.got.Format("15:04:05.000"))
				}
			}
		}
	}
	for _, o := range ops {
		if !o.ok {
			continue
		}
		accepted := false
		for _, e := range byValue[o.value] {
			accepted = accepted || e.outcome == "accepted" || strings.HasPrefix(e.outcome, "failed")
		}
		switch {
		case isDead[o.value]:
			a.deadLettered++
		case accepted:
			a.accepted++
		default:
			a.add(&a.lost, "%q acknowledged at %+v: %d deliveries, never accepted nor dead-lettered", o.value, o.pos, len(byValue[o.value]))
		}
	}
	return a
}
