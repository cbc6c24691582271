package replogweb

import (
	"strings"
	"testing"
	"time"

	"github.com/replog/replog"
)

// TestSamplerEndsWithLog: the sampler goroutine returns once the Log
// closes, and it sampled meanwhile.
func TestSamplerEndsWithLog(t *testing.T) {
	l, err := replog.Open("", &replog.Options{InMemory: true})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	h := newHandler(l, 4)
	go h.sample(5 * time.Millisecond)
	deadline := time.Now().Add(10 * time.Second)
	for len(h.history()) < 3 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if n := len(h.history()); n < 3 || n > 4 {
		t.Fatalf("%d samples in a ring of 4", n)
	}
	select {
	case <-h.stopped:
		t.Fatal("sampler ended before Close")
	default:
	}
	l.Close()
	select {
	case <-h.stopped:
	case <-time.After(10 * time.Second):
		t.Fatal("sampler still running 10s after Close")
	}
}

func stats(produced, fetched uint64, lag map[string]int64) replog.Stats {
	s := replog.Stats{Node: replog.NodeStats{ProducedRecords: produced, ProducedBytes: 10 * produced,
		FetchedRecords: fetched, FetchedBytes: 10 * fetched}}
	for g, n := range lag {
		s.Groups = append(s.Groups, replog.GroupStats{Group: g, Lag: n})
	}
	return s
}

func TestHistoryRates(t *testing.T) {
	t0 := time.Unix(1000, 0)
	h := newHistory(3)
	h.add(t0, stats(100, 0, nil))
	if got := h.all(); len(got) != 0 {
		t.Fatalf("first Stats gave %d samples; a rate needs two", len(got))
	}
	h.add(t0.Add(time.Second), stats(150, 20, map[string]int64{"a": 5}))
	h.add(t0.Add(3*time.Second), stats(250, 20, map[string]int64{"a": 7, "b": 1}))
	h.add(t0.Add(3*time.Second), stats(300, 20, nil)) // no time passed: no rate
	h.add(t0.Add(4*time.Second), stats(300, 20, nil))
	h.add(t0.Add(5*time.Second), stats(290, 30, nil)) // a counter that shrank reads 0
	got := h.all()
	want := []struct {
		at                int64
		produced, fetched float64
		lagA              int64
	}{
		{1003, 50, 0, 7},
		{1004, 0, 0, 0},
		{1005, 0, 10, 0},
	}
	if len(got) != len(want) {
		t.Fatalf("%d samples, want %d (the ring's size)", len(got), len(want))
	}
	for i, w := range want {
		g := got[i]
		if g.Time.Unix() != w.at || g.ProducedRecordsPerSec != w.produced || g.FetchedRecordsPerSec != w.fetched ||
			g.Lag["a"] != w.lagA || g.ProducedBytesPerSec != 10*w.produced {
			t.Errorf("sample %d = %+v, want %+v", i, g, w)
		}
	}
}

func TestPlots(t *testing.T) {
	t0 := time.Unix(1000, 0)
	var hist []sample
	for i := range 120 {
		lag := map[string]int64{"billing": int64(i)}
		if i >= 60 {
			lag["audit"] = 3 // a group that appeared midway
		}
		hist = append(hist, sample{Time: t0.Add(time.Duration(i) * time.Second),
			ProducedRecordsPerSec: float64(i * 10), FetchedRecordsPerSec: 7, Lag: lag})
	}
	ps := plots(hist)
	if len(ps) != 3 {
		t.Fatalf("%d plots", len(ps))
	}
	prod, lag := ps[0], ps[2]
	if prod.Empty != "" || prod.Current != "1,190" || len(prod.Lines) != 1 || prod.Lines[0].Area == "" {
		t.Errorf("produced plot: %+v", prod)
	}
	if top := prod.YTicks[2].Label; top != "1.2k" {
		t.Errorf("y axis top %q, want 1.2k", top)
	}
	if l := prod.XTicks[0].Label; l != "−1m59s" {
		t.Errorf("x axis start %q", l)
	}
	if len(lag.Lines) != 2 || lag.Lines[0].Name != "billing" || lag.Current != "122" {
		t.Errorf("lag plot: %+v", lag)
	}
	// audit's line starts midway: one subpath, beginning at x = the middle.
	if d := lag.Lines[1].D; strings.Count(d, "M") != 1 || !strings.HasPrefix(d, "M") {
		t.Errorf("audit path %q", d)
	}

	if ps := plots(hist[:1]); ps[0].Empty == "" || len(ps[0].Lines) != 0 {
		t.Errorf("one sample drew %+v", ps[0])
	}
	noGroups := []sample{{Time: t0}, {Time: t0.Add(time.Second)}}
	if ps := plots(noGroups); ps[2].Empty != "no consumer groups" || ps[0].Empty != "" {
		t.Errorf("without groups: %+v", ps)
	}
}

func TestFormat(t *testing.T) {
	for _, c := range []struct{ got, want string }{
		{formatCount(int64(1234567)), "1,234,567"},
		{formatCount(-1234), "-1,234"},
		{formatCount(uint64(999)), "999"},
		{formatBytes(512), "512 B"},
		{formatBytes(3 << 20), "3.0 MiB"},
		{formatShort(2500), "2.5k"},
		{formatShort(0.5), "0.5"},
		{formatAge(90 * time.Second), "1m30s"},
		{formatAge(50 * time.Hour), "2d2h"},
		{formatAge(7 * 24 * time.Hour), "7d"},
		{formatAge(time.Hour + 30*time.Second), "1h"},
		{formatOffset(-1), "–"},
		{formatLatency(replog.Latency{Count: 1, P50: 1024 * time.Microsecond}, "p50"), "1.02ms"},
		{formatLatency(replog.Latency{}, "p99"), "–"},
		{formatLatency(replog.Latency{Count: 1, P99: 98775 * time.Nanosecond}, "p99"), "98.8µs"},
		{formatLatency(replog.Latency{Count: 1, P99: 2*time.Second + 345*time.Millisecond}, "p99"), "2.35s"},
	} {
		if c.got != c.want {
			t.Errorf("got %q, want %q", c.got, c.want)
		}
	}
	for v, want := range map[float64]float64{0: 1, 0.3: 1, 7: 8, 11: 12, 240: 250, 1190: 1200, 5000: 5000, 5001: 6000} {
		if got := niceCeil(v); got != want {
			t.Errorf("niceCeil(%v) = %v, want %v", v, got, want)
		}
	}
}
