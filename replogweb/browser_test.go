package replogweb_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"image/png"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/replog/replog"
	"github.com/replog/replog/replogweb"
)

// screenshotPath is the README's picture of the page, rewritten when
// REPLOG_UPDATE_SCREENSHOT=1.
const screenshotPath = "../docs/replogweb.png"

// browser returns the path of a Chromium or Chrome binary, "" if none is
// installed.
func browser() string {
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// TestBrowser loads the page in a headless Chromium while a producer and
// two consumer groups run, checks what the browser shows, and takes a
// screenshot of the whole page.
func TestBrowser(t *testing.T) {
	exe := browser()
	if exe == "" {
		t.Skip("browser test skipped: no chromium, chromium-browser or google-chrome in PATH (apt-get install chromium)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	l, err := replog.Open("", &replog.Options{InMemory: true})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	h := replogweb.Handler(l) // sampling starts now
	orders, err := l.CreateTopic(ctx, "orders", replog.TopicConfig{Partitions: 4})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.CreateTopic(ctx, "payments", replog.TopicConfig{Partitions: 2, Retention: 7 * 24 * time.Hour}); err != nil {
		t.Fatal(err)
	}
	stopTraffic := traffic(ctx, t, orders)
	defer stopTraffic()
	time.Sleep(6 * time.Second) // six samples for the plots

	mux := http.NewServeMux()
	mux.Handle("/debug/replog/", http.StripPrefix("/debug/replog", h))
	srv := httptest.NewServer(mux)
	defer srv.Close()

	actx, acancel := chromedp.NewExecAllocator(ctx, append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(exe), chromedp.Headless, chromedp.NoSandbox, chromedp.WindowSize(1280, 900))...)
	defer acancel()
	bctx, bcancel := chromedp.NewContext(actx)
	defer bcancel()

	if err := chromedp.Do(bctx,
		chromedp.Navigate(srv.URL+"/debug/replog/?refresh=0"),
		chromedp.WaitVisible(chromedp.CSS(`#plot-produced svg`)),
	); err != nil {
		t.Fatal(err)
	}
	type dom struct {
		Title     string   `json:"title"`
		Topics    []string `json:"topics"`
		OrderRows int      `json:"orderRows"`
		Groups    []string `json:"groups"`
		Produced  string   `json:"produced"`
		Lines     int      `json:"lines"`
		SVGWidth  float64  `json:"svgWidth"`
	}
	got, err := chromedp.Run(bctx, chromedp.Evaluate[dom](`(() => ({
		title: document.title,
		topics: [...document.querySelectorAll('#topics [data-topic]')].map(e => e.dataset.topic),
		orderRows: document.querySelectorAll('[data-topic="orders"] tbody tr').length,
		groups: [...document.querySelectorAll('#groups tr[data-group]')].map(e => e.dataset.group),
		produced: document.querySelector('#plot-produced path.series')?.getAttribute('d') ?? '',
		lines: document.querySelectorAll('#plot-lag path.series').length,
		svgWidth: document.querySelector('#plot-produced svg').getBoundingClientRect().width,
	}))()`))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("page as the browser shows it: %+v", got)
	if got.Title != "replog · node 1" || strings.Join(got.Topics, ",") != "orders,payments" || got.OrderRows != 4 {
		t.Errorf("title %q, topics %v, %d rows for orders (want 4)", got.Title, got.Topics, got.OrderRows)
	}
	if strings.Join(got.Groups, ",") != "analytics,audit" || got.Lines != 2 {
		t.Errorf("groups %v, %d lag lines (want analytics and audit)", got.Groups, got.Lines)
	}
	if !strings.HasPrefix(got.Produced, "M") || !strings.Contains(got.Produced, "L") || got.SVGWidth < 200 {
		t.Errorf("produced plot: path %q, %vpx wide", got.Produced, got.SVGWidth)
	}

	shot, err := chromedp.Run(bctx, chromedp.FullScreenshot(100)) // 100: PNG
	if err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(bytes.NewReader(shot))
	if err != nil {
		t.Fatalf("screenshot is no PNG: %v", err)
	}
	if b := img.Bounds(); b.Dx() < 1000 || b.Dy() < 800 || len(shot) < 20<<10 {
		t.Errorf("screenshot %dx%d, %d bytes: too small for the whole page", b.Dx(), b.Dy(), len(shot))
	}
	path := filepath.Join(t.TempDir(), "replogweb.png")
	if os.Getenv("REPLOG_UPDATE_SCREENSHOT") == "1" {
		path = screenshotPath
	}
	if err := os.WriteFile(path, shot, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot %dx%d (%d KiB) in %s", img.Bounds().Dx(), img.Bounds().Dy(), len(shot)>>10, path)
	stopTraffic()
}

// traffic produces to topic at a varying rate, with group analytics
// keeping up and group audit reading once and then falling behind, until
// the returned func is called (it waits for them; calling it again does
// nothing).
func traffic(ctx context.Context, t *testing.T, topic *replog.Topic) (stop func()) {
	t.Helper()
	p, err := replog.NewProducer(topic, replog.String(), nil)
	if err != nil {
		t.Fatal(err)
	}
	var consumers []*replog.Consumer[string]
	for _, g := range []string{"analytics", "audit"} {
		c, err := replog.NewConsumer(topic, replog.String(), &replog.ConsumerOptions{Group: g,
			GroupOptions: replog.GroupOptions{AutoCommitInterval: 200 * time.Millisecond}})
		if err != nil {
			t.Fatal(err)
		}
		consumers = append(consumers, c)
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	for i, c := range consumers {
		wg.Go(func() {
			for {
				pctx, pcancel := context.WithTimeout(ctx, 100*time.Millisecond)
				_, err := c.Poll(pctx)
				pcancel()
				if err != nil && !errors.Is(err, context.DeadlineExceeded) {
					t.Errorf("poll: %v", err)
					return
				}
				if i == 1 && err == nil {
					// audit: commit what it read, then stay a member
					// that reads no more.
					if err := c.Commit(ctx); err != nil {
						t.Errorf("commit: %v", err)
					}
					<-done
					return
				}
				select {
				case <-done:
					return
				default:
				}
			}
		})
	}
	wg.Go(func() {
		for i := 0; ; i++ {
			n := 5 + i%40 // a saw-tooth rate: 250 to 2,200 records/s
			for j := range n {
				p.ProduceAsync(ctx, replog.Message[string]{Key: fmt.Appendf(nil, "customer-%d", j%17), Value: "order"}, nil)
			}
			select {
			case <-done:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	})
	var once sync.Once
	return func() {
		once.Do(func() {
			close(done)
			wg.Wait()
			for _, c := range consumers {
				c.Close()
			}
			if err := p.Close(); err != nil {
				t.Errorf("producer: %v", err)
			}
		})
	}
}
