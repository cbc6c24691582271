package replogweb

import (
	"bytes"
	"encoding/json"
	"net/http"
	"path"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/replog/replog"
)

const (
	// interval is how often the sampler takes [replog.Log.Stats].
	interval = time.Second
	// samples is the ring's size: 10 minutes at 1s.
	samples = 600
	// defaultRefresh is how often the page reloads itself, in seconds.
	defaultRefresh = 5
)

// Handler returns the status page of l and its JSON endpoints (see the
// package documentation), and starts the goroutine that samples l every
// second until l closes.
func Handler(l *replog.Log) http.Handler {
	h := newHandler(l, samples)
	go h.sample(interval)
	return h
}

type handler struct {
	l *replog.Log
	// stopped is closed when the sampler returns.
	stopped chan struct{}

	mu struct {
		sync.Mutex
		hist history
	}
}

func newHandler(l *replog.Log, size int) *handler {
	h := &handler{l: l, stopped: make(chan struct{})}
	h.mu.hist = newHistory(size)
	return h
}

// sample records l's Stats every d until l closes.
func (h *handler) sample(d time.Duration) {
	defer close(h.stopped)
	t := time.NewTicker(d)
	defer t.Stop()
	h.record(time.Now())
	for {
		select {
		case <-h.l.Done():
			return
		case now := <-t.C:
			h.record(now)
		}
	}
}

func (h *handler) record(now time.Time) {
	s := h.l.Stats()
	h.mu.Lock()
	h.mu.hist.add(now, s)
	h.mu.Unlock()
}

func (h *handler) history() []sample {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.mu.hist.all()
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed: this page is read-only", http.StatusMethodNotAllowed)
		return
	}
	hd := w.Header()
	hd.Set("Cache-Control", "no-store")
	hd.Set("X-Content-Type-Options", "nosniff")
	switch r.URL.Path {
	case "", "/":
		// Under a prefix stripped without its trailing slash, the page's
		// relative links need one: redirect /replog to replog/, which the
		// client resolves against the URL it asked for, whatever the
		// prefix.
		if p := requestPath(r); r.URL.Path == "" && p != "" && !strings.HasSuffix(p, "/") {
			hd.Set("Location", path.Base(p)+"/")
			w.WriteHeader(http.StatusMovedPermanently)
			return
		}
		h.servePage(w, r)
	case "/stats.json":
		writeJSON(w, h.l.Stats())
	case "/history.json":
		writeJSON(w, historyDoc{IntervalSeconds: interval.Seconds(), Samples: h.history()})
	default:
		http.NotFound(w, r)
	}
}

// requestPath is the path the client asked for, before any StripPrefix.
func requestPath(r *http.Request) string {
	p, _, _ := strings.Cut(r.RequestURI, "?")
	return p
}

func (h *handler) servePage(w http.ResponseWriter, r *http.Request) {
	refresh := defaultRefresh
	if v := r.URL.Query().Get("refresh"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 || n > 3600 {
			http.Error(w, "refresh: seconds from 0 (off) to 3600", http.StatusBadRequest)
			return
		}
		refresh = n
	}
	data := buildPage(time.Now(), h.l, h.l.Stats(), h.history(), refresh)
	var buf bytes.Buffer
	if err := pageTemplate.Execute(&buf, data); err != nil {
		http.Error(w, "replogweb: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	if refresh > 0 {
		w.Header().Set("Refresh", strconv.Itoa(refresh))
	}
	// No script on the page; inline styles only.
	w.Header().Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'")
	_, _ = w.Write(buf.Bytes())
}

func writeJSON(w http.ResponseWriter, v any) {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		http.Error(w, "replogweb: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(append(b, '\n'))
}

// historyDoc is history.json.
type historyDoc struct {
	IntervalSeconds float64
	Samples         []sample
}

// sample is one point of the history: rates since the previous sample.
type sample struct {
	Time                                       time.Time
	ProducedRecordsPerSec, ProducedBytesPerSec float64
	FetchedRecordsPerSec, FetchedBytesPerSec   float64
	// Lag is each group's lag, by group name.
	Lag map[string]int64
}

// history is a fixed ring of samples, and the counters of the last Stats
// to take rates from.
type history struct {
	ring []sample
	next int // where the next sample goes
	full bool

	prev    time.Time
	counted [4]uint64 // produced records, bytes; fetched records, bytes
}

func newHistory(size int) history { return history{ring: make([]sample, size)} }

// add takes a sample of s at now. The first Stats only sets the counters'
// base: a rate needs two.
func (h *history) add(now time.Time, s replog.Stats) {
	n := s.Node
	counted := [4]uint64{n.ProducedRecords, n.ProducedBytes, n.FetchedRecords, n.FetchedBytes}
	prev, base := h.prev, h.counted
	h.prev, h.counted = now, counted
	dt := now.Sub(prev).Seconds()
	if prev.IsZero() || dt <= 0 {
		return
	}
	var rates [4]float64
	for i := range rates {
		if counted[i] >= base[i] { // they only grow; guard anyway
			rates[i] = float64(counted[i]-base[i]) / dt
		}
	}
	lag := make(map[string]int64, len(s.Groups))
	for _, g := range s.Groups {
		lag[g.Group] = g.Lag
	}
	h.ring[h.next] = sample{Time: now, ProducedRecordsPerSec: rates[0], ProducedBytesPerSec: rates[1],
		FetchedRecordsPerSec: rates[2], FetchedBytesPerSec: rates[3], Lag: lag}
	h.next++
	if h.next == len(h.ring) {
		h.next, h.full = 0, true
	}
}

// all returns the samples, oldest first, in a new slice (the samples' Lag
// maps are shared: never written after add).
func (h *history) all() []sample {
	if !h.full {
		return append([]sample{}, h.ring[:h.next]...)
	}
	return append(append(make([]sample, 0, len(h.ring)), h.ring[h.next:]...), h.ring[:h.next]...)
}
