package replog_test

import (
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/replog/replog"
	"github.com/replog/replog/internal/expert"
	"github.com/replog/replog/replogtest"
)

// find returns the captured records whose message is msg and whose
// attributes include every one of want (key -> value as text).
func (h *captureHandler) find(msg string, want map[string]string) []slog.Record {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []slog.Record
	for _, r := range h.recs {
		if r.Message != msg {
			continue
		}
		got := map[string]string{}
		r.Attrs(func(a slog.Attr) bool {
			got[a.Key] = a.Value.String()
			return true
		})
		ok := true
		for k, v := range want {
			if g, found := got[k]; !found || g != v {
				ok = false
			}
		}
		if ok {
			out = append(out, r)
		}
	}
	return out
}

// attrs returns a record's attributes by key, as text.
func attrs(r slog.Record) map[string]string {
	m := map[string]string{}
	r.Attrs(func(a slog.Attr) bool {
		m[a.Key] = a.Value.String()
		return true
	})
	return m
}

// TestLogsHealthyRun runs a node through what an operator wants to see in
// its log (Open, elections, a rebalance, retention, compaction) and checks
// each is reported at Info with its attributes, and that nothing in a
// healthy run is logged at Warn or above.
func TestLogsHealthyRun(t *testing.T) {
	ctx := testCtx(t)
	h := &captureHandler{}
	o := replog.Options{InMemory: true, Logger: slog.New(h)}
	expert.Attach(&o, expert.Options{RetentionInterval: 50 * time.Millisecond})
	l, err := replog.Open("", &o)
	require.NoError(t, err)
	closed := false
	defer func() {
		if !closed {
			l.Close()
		}
	}()

	// Open: one line with the node, the directory and the topics.
	opened := h.find("replog: opened", map[string]string{"node": "1", "dir": "", "topics": "0"})
	require.Len(t, opened, 1, "the Open line")
	took, ok := attrs(opened[0])["took"]
	require.True(t, ok, "took")
	_, err = time.ParseDuration(took)
	require.NoError(t, err, "took is a duration")
	// The metadata and groups groups elected this node.
	require.NotEmpty(t, h.find("replog: new leader", map[string]string{"group": "metadata", "leader": "1", "node": "1"}))

	// A topic: each partition reports its leader once.
	tp, err := l.CreateTopic(ctx, "events", replog.TopicConfig{Partitions: 2, Retention: time.Hour})
	require.NoError(t, err)
	p, err := replog.NewProducer(tp, replog.String(), nil)
	require.NoError(t, err)
	part := 0
	now := time.Now()
	for i, at := range []time.Time{now.Add(-3 * time.Hour), now.Add(-2 * time.Hour), now} {
		_, err := p.Produce(ctx, replog.Message[string]{Partition: &part, Value: fmt.Sprint(i), Time: at})
		require.NoError(t, err)
	}
	for i := range 2 {
		want := map[string]string{"topic": "events", "partition": fmt.Sprint(i), "leader": "1", "node": "1"}
		require.Len(t, h.find("replog: new leader", want), 1, "partition %d's leader, once", i)
	}

	// Retention deletes the two old batches.
	require.Eventually(t, func() bool { return mustOffsets(t, tp, 0).LogStart == 2 }, 10*time.Second, 10*time.Millisecond)
	require.Eventually(t, func() bool {
		return len(h.find("replog: retention deleted records", map[string]string{"topic": "events", "partition": "0", "log_start": "2", "node": "1"})) > 0
	}, 5*time.Second, 10*time.Millisecond, "the retention line")

	// A group member takes both partitions and reads what is left (after
	// retention: a member that had read the deleted records would warn).
	c, err := replog.NewConsumer(tp, replog.String(), groupOpts("billing"))
	require.NoError(t, err)
	require.Equal(t, "2", readN(t, ctx, c, 1)[0].Value)
	rebalance := h.find("replog: group member's partitions changed", map[string]string{"group": "billing", "topic": "events", "node": "1"})
	require.NotEmpty(t, rebalance, "the rebalance line")
	var added []int
	for _, r := range rebalance {
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == "added" {
				added = append(added, a.Value.Any().([]int)...)
			}
			return true
		})
		ra := attrs(r)
		require.Equal(t, "[]", ra["revoked"])
		require.Contains(t, ra, "generation")
		require.True(t, strings.HasPrefix(ra["member"], "member-1-"), ra["member"])
	}
	slices.Sort(added)
	require.Equal(t, []int{0, 1}, added, "the member was given both partitions")
	require.NoError(t, c.Close())

	// Compaction removes the overwritten values of a compacted topic.
	table, err := l.CreateTopic(ctx, "table", replog.TopicConfig{Cleanup: replog.CleanupCompact, DeleteRetention: time.Hour})
	require.NoError(t, err)
	tpr, err := replog.NewProducer(table, replog.String(), nil)
	require.NoError(t, err)
	put(t, tpr, "a", "1", "b", "1", "a", "2", "b", "2", "z", "1")
	require.NoError(t, tpr.Close())
	require.NoError(t, p.Close())
	require.NoError(t, l.Compact(ctx, "table"))
	compacted := h.find("replog: compaction removed records", map[string]string{"topic": "table", "partition": "0", "node": "1"})
	require.NotEmpty(t, compacted, "the compaction line")
	removed := 0
	for _, r := range compacted {
		var n int
		_, err := fmt.Sscan(attrs(r)["removed"], &n)
		require.NoError(t, err)
		removed += n
	}
	require.Equal(t, 2, removed, "a=1 and b=1")

	closed = true
	require.NoError(t, l.Close())
	require.Empty(t, h.problems(), "records at Warn or above")
	for _, line := range h.atLeast(slog.LevelInfo) {
		t.Log(line)
	}
}

// TestLogsHealthyCluster starts three nodes, creates a replicated topic
// and produces: nothing at Warn or above, dragonboat's messages included,
// and every node reports each partition's leader.
func TestLogsHealthyCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a cluster")
	}
	ctx := testCtx(t)
	h := &captureHandler{}
	c := replogtest.NewClusterWithOptions(t, 3, &replogtest.Options{Base: replog.Options{Logger: slog.New(h)}})
	tp, err := c.Log(0).CreateTopic(ctx, "events", replog.TopicConfig{Partitions: 2, Replicas: 3})
	require.NoError(t, err)
	produceStrings(t, ctx, tp, 50, "v")
	for i := range 2 {
		c.WaitLeader("events", i, 10*time.Second)
		for node := 1; node <= 3; node++ {
			require.Eventually(t, func() bool {
				return len(h.find("replog: new leader", map[string]string{"topic": "events", "partition": fmt.Sprint(i), "node": fmt.Sprint(node)})) > 0
			}, 10*time.Second, 10*time.Millisecond, "node %d reports partition %d's leader", node, i)
		}
	}
	require.Empty(t, h.problems(), "records at Warn or above")
	// The nodes close at once, so one may still send to a peer that has
	// closed: that peer becoming unreachable is the one warning allowed.
	c.Close()
	for _, p := range h.problems() {
		require.Contains(t, p, "became unreachable", "records at Warn or above while closing")
	}
	for _, line := range h.atLeast(slog.LevelInfo) {
		t.Log(line)
	}
	opened := h.find("replog: opened", nil)
	require.Len(t, opened, 3)
	var nodes []string
	for _, r := range opened {
		nodes = append(nodes, attrs(r)["node"])
	}
	slices.Sort(nodes)
	require.Equal(t, []string{"1", "2", "3"}, nodes)
}

// TestLogsShortElectionTimeout: a cluster whose election timeout is under
// ten heartbeats gets replog's warning (dragonboat's own is Debug, since
// it also fires for a single node, whose groups send no heartbeats).
func TestLogsShortElectionTimeout(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a cluster")
	}
	h := &captureHandler{}
	c := replogtest.NewClusterWithOptions(t, 3, &replogtest.Options{ElectionTicks: 20, HeartbeatTicks: 3, Base: replog.Options{Logger: slog.New(h)}})
	c.Close()
	require.Len(t, h.find("replog: election timeout shorter than ten heartbeats: leaders may change under load", nil), 3)

	h = &captureHandler{}
	l, err := replog.Open(t.TempDir(), &replog.Options{Logger: slog.New(h), RTT: 100 * time.Millisecond})
	require.NoError(t, err)
	require.NoError(t, l.Close())
	require.Empty(t, h.problems(), "a single node with a 3-tick election timeout")
}
