package replogweb_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/replog/replog"
	"github.com/replog/replog/replogweb"
)

// TestMain checks that no test leaves a goroutine behind: the sampler of
// every Handler ends with its Log.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// openLog opens an in-memory Log with topic "orders" (3 partitions), 30
// records, and group "billing" that read 10 of them and committed.
func openLog(t *testing.T) *replog.Log {
	t.Helper()
	l, err := replog.Open("", &replog.Options{InMemory: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	topic, err := l.CreateTopic(ctx, "orders", replog.TopicConfig{Partitions: 3})
	if err != nil {
		t.Fatal(err)
	}
	p, err := replog.NewProducer(topic, replog.String(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	for i := range 30 {
		p.ProduceAsync(ctx, replog.Message[string]{Key: fmt.Appendf(nil, "k%d", i), Value: "v"}, nil)
	}
	if err := p.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	c, err := replog.NewConsumer(topic, replog.String(), &replog.ConsumerOptions{Group: "billing"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for n := 0; n < 10; {
		recs, err := c.Poll(ctx)
		if err != nil {
			t.Fatal(err)
		}
		n += len(recs)
	}
	if err := c.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	return l
}

func get(t *testing.T, h http.Handler, method, target string) *http.Response {
	t.Helper()
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest(method, target, nil))
	return w.Result()
}

func body(t *testing.T, r *http.Response) string {
	t.Helper()
	b, err := io.ReadAll(r.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestHandler(t *testing.T) {
	l := openLog(t)
	h := replogweb.Handler(l)

	t.Run("page", func(t *testing.T) {
		r := get(t, h, "GET", "/")
		if r.StatusCode != 200 {
			t.Fatalf("status %d: %s", r.StatusCode, body(t, r))
		}
		if ct := r.Header.Get("Content-Type"); ct != "text/html; charset=utf-8" {
			t.Errorf("Content-Type %q", ct)
		}
		if r.Header.Get("Refresh") != "5" {
			t.Errorf("Refresh %q, want 5", r.Header.Get("Refresh"))
		}
		page := body(t, r)
		for _, want := range []string{
			`data-topic="orders"`, "<svg", `id="plot-produced"`, `id="plot-lag"`,
			`data-group="billing"`, `href="stats.json"`, `href="history.json"`,
			"<b>billing</b>", "in memory",
		} {
			if !strings.Contains(page, want) {
				t.Errorf("page lacks %q", want)
			}
		}
		// One row per partition of orders.
		if n := strings.Count(page, `<td class="n">`+"0</td>") + strings.Count(page, `<td class="n">`+"1</td>"); n < 2 {
			t.Errorf("partition rows missing")
		}
		for _, bad := range []string{"<script", "http://", "https://", "ZgotmplZ"} {
			if strings.Contains(page, bad) {
				t.Errorf("page contains %q", bad)
			}
		}
	})

	t.Run("refresh", func(t *testing.T) {
		if r := get(t, h, "GET", "/?refresh=0"); r.StatusCode != 200 || r.Header.Get("Refresh") != "" {
			t.Errorf("refresh=0: status %d, Refresh %q", r.StatusCode, r.Header.Get("Refresh"))
		}
		if r := get(t, h, "GET", "/?refresh=x"); r.StatusCode != 400 {
			t.Errorf("refresh=x: status %d, want 400", r.StatusCode)
		}
	})

	t.Run("stats.json", func(t *testing.T) {
		r := get(t, h, "GET", "/stats.json")
		if r.StatusCode != 200 || r.Header.Get("Content-Type") != "application/json" {
			t.Fatalf("status %d, Content-Type %q", r.StatusCode, r.Header.Get("Content-Type"))
		}
		var s replog.Stats
		if err := json.NewDecoder(r.Body).Decode(&s); err != nil {
			t.Fatal(err)
		}
		if len(s.Partitions) != 3 || s.Partitions[0].Topic != "orders" || s.Node.ProducedRecords != 30 {
			t.Errorf("partitions %+v, produced %d", s.Partitions, s.Node.ProducedRecords)
		}
		if len(s.Groups) != 1 || s.Groups[0].Group != "billing" || s.Groups[0].Lag >= 30 {
			t.Errorf("groups %+v", s.Groups)
		}
	})

	t.Run("history.json", func(t *testing.T) {
		r := get(t, h, "GET", "/history.json")
		if r.StatusCode != 200 {
			t.Fatalf("status %d", r.StatusCode)
		}
		var doc struct {
			IntervalSeconds float64
			Samples         []struct {
				Time                  time.Time
				ProducedRecordsPerSec float64
				FetchedRecordsPerSec  float64
				Lag                   map[string]int64
			}
		}
		if err := json.NewDecoder(r.Body).Decode(&doc); err != nil {
			t.Fatal(err)
		}
		// A fresh handler has no rate yet (that takes two samples), but
		// the list is there: [], not null.
		if doc.IntervalSeconds != 1 || doc.Samples == nil {
			t.Errorf("history %+v", doc)
		}
	})

	t.Run("read-only", func(t *testing.T) {
		for _, m := range []string{"POST", "PUT", "DELETE", "PATCH"} {
			r := get(t, h, m, "/")
			if r.StatusCode != http.StatusMethodNotAllowed || r.Header.Get("Allow") != "GET, HEAD" {
				t.Errorf("%s: status %d, Allow %q", m, r.StatusCode, r.Header.Get("Allow"))
			}
		}
		if r := get(t, h, "HEAD", "/stats.json"); r.StatusCode != 200 {
			t.Errorf("HEAD: status %d", r.StatusCode)
		}
		if r := get(t, h, "GET", "/nothing"); r.StatusCode != 404 {
			t.Errorf("unknown path: status %d", r.StatusCode)
		}
	})
}

// TestPrefix mounts the handler under a prefix, as the package doc does,
// and follows the page's relative links.
func TestPrefix(t *testing.T) {
	l := openLog(t)
	h := replogweb.Handler(l)
	mux := http.NewServeMux()
	mux.Handle("/ops/replog/", http.StripPrefix("/ops/replog", h))
	mux.Handle("/bare", http.StripPrefix("/bare", h)) // no trailing slash
	srv := httptest.NewServer(mux)
	defer srv.Close()
	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

	r, err := http.Get(srv.URL + "/ops/replog/")
	if err != nil {
		t.Fatal(err)
	}
	page := body(t, r)
	r.Body.Close()
	if r.StatusCode != 200 || !strings.Contains(page, `data-topic="orders"`) {
		t.Fatalf("page: status %d", r.StatusCode)
	}
	for _, link := range []string{"stats.json", "history.json"} {
		if !strings.Contains(page, `href="`+link+`"`) {
			t.Fatalf("page has no relative link to %s", link)
		}
		u, _ := r.Request.URL.Parse(link)
		lr, err := http.Get(u.String())
		if err != nil {
			t.Fatal(err)
		}
		var v any
		err = json.NewDecoder(lr.Body).Decode(&v)
		lr.Body.Close()
		if lr.StatusCode != 200 || err != nil {
			t.Errorf("%s: status %d, %v", u, lr.StatusCode, err)
		}
	}

	// The mount point without its slash redirects to a URL the relative
	// links work from.
	r, err = noFollow.Get(srv.URL + "/bare")
	if err != nil {
		t.Fatal(err)
	}
	r.Body.Close()
	loc, _ := r.Location()
	if r.StatusCode != http.StatusMovedPermanently || loc == nil || loc.Path != "/bare/" {
		t.Errorf("/bare: status %d, Location %v", r.StatusCode, loc)
	}
}

// TestClosedLog: the page still renders for a closed Log, which says so.
func TestClosedLog(t *testing.T) {
	l := openLog(t)
	h := replogweb.Handler(l)
	if err := l.Close(); err != nil && !errors.Is(err, replog.ErrClosed) {
		t.Fatal(err)
	}
	r := get(t, h, "GET", "/")
	if page := body(t, r); r.StatusCode != 200 || !strings.Contains(page, "closed") {
		t.Errorf("status %d", r.StatusCode)
	}
}

// TestShareGroupsOnPage: a share group appears on the page, with its
// partitions' start offset, lag, acquired and available records; without
// one the section is absent.
func TestShareGroupsOnPage(t *testing.T) {
	l := openLog(t)
	h := replogweb.Handler(l)
	if page := body(t, get(t, h, "GET", "/")); strings.Contains(page, "Share groups") {
		t.Error("share groups section without a share group")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	topic, err := l.Topic("orders")
	if err != nil {
		t.Fatal(err)
	}
	c, err := replog.NewShareConsumer(topic, "workers", replog.String(), &replog.ShareConsumerOptions{Partitions: []int{0}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Poll(ctx); err != nil {
		t.Fatal(err)
	}
	page := body(t, get(t, h, "GET", "/"))
	for _, want := range []string{`data-share-group="workers"`, "<b>workers</b>", "orders/0: 0 "} {
		if !strings.Contains(page, want) {
			t.Errorf("page lacks %q", want)
		}
	}
}
