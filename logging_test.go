package replog_test

import (
	"bytes"
	"context"
	"fmt"
	"log"
	"log/slog"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/replog/replog"
)

// captureHandler keeps every record it is given.
type captureHandler struct {
	mu   sync.Mutex
	recs []slog.Record
}

func (h *captureHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *captureHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	h.recs = append(h.recs, r.Clone())
	h.mu.Unlock()
	return nil
}
func (h *captureHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *captureHandler) WithGroup(string) slog.Handler      { return h }

// atLeast lists the captured records at level or above, as text.
func (h *captureHandler) atLeast(level slog.Level) []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []string
	for _, r := range h.recs {
		if r.Level >= level {
			line := fmt.Sprintf("%v %s", r.Level, r.Message)
			r.Attrs(func(a slog.Attr) bool {
				line += fmt.Sprintf(" %s=%v", a.Key, a.Value)
				return true
			})
			out = append(out, line)
		}
	}
	return out
}

// problems lists the captured records at Warn or above, leaving out
// dragonboat's report that a node's Raft ticks piled up ("had N LocalTick
// msgs in one batch"): that warning is honest, it says the machine was too
// busy to run the node for half an election timeout, which happens on a
// loaded 2-core machine under the race detector without anything failing.
func (h *captureHandler) problems() []string {
	var out []string
	for _, line := range h.atLeast(slog.LevelWarn) {
		if !strings.Contains(line, "LocalTick msgs in one batch") {
			out = append(out, line)
		}
	}
	return out
}

// TestLogsGoToLogger opens a single node, creates a topic and produces: no
// message needs a human (nothing at Warn or above) and nothing is written
// to the standard logger.
func TestLogsGoToLogger(t *testing.T) {
	for _, inMemory := range []bool{false, true} {
		t.Run(fmt.Sprintf("InMemory=%v", inMemory), func(t *testing.T) {
			var std bytes.Buffer
			w := log.Writer()
			log.SetOutput(&std)
			defer log.SetOutput(w)

			h := &captureHandler{}
			dir := ""
			if !inMemory {
				dir = t.TempDir()
			}
			l, err := replog.Open(dir, &replog.Options{InMemory: inMemory, Logger: slog.New(h)})
			require.NoError(t, err)
			ctx := testCtx(t)
			tp, err := l.CreateTopic(ctx, "events", replog.TopicConfig{Partitions: 2})
			require.NoError(t, err)
			p, err := replog.NewProducer(tp, replog.String(), nil)
			require.NoError(t, err)
			for i := range 20 {
				_, err := p.Produce(ctx, replog.Message[string]{Key: []byte{byte(i)}, Value: "v"})
				require.NoError(t, err)
			}
			require.NoError(t, l.Close())

			require.Empty(t, h.problems(), "records at Warn or above")
			stdout := std.String()
			if inMemory {
				// Known and documented (Options.Logger): dragonboat's bundled
				// Pebble cannot ask lni/vfs's MemFS for the disk usage and
				// reports it through Go's standard logger, once per node.
				stdout = regexp.MustCompile(`(?m)^.*background error: vfs: not supported\n`).ReplaceAllString(stdout, "")
			}
			require.Empty(t, stdout, "written to the standard logger")
			require.NotEmpty(t, h.atLeast(slog.LevelDebug), "nothing reached the Logger")
		})
	}
}

// TestStdLogUntouched checks that importing and opening replog leave the
// standard logger as Go sets it up. It runs in a fresh process (the test
// binary run again), where nothing but package initialisation ran before.
func TestStdLogUntouched(t *testing.T) {
	if os.Getenv(childEnv) != "stdlog" {
		out, err := childCmd(t, "TestStdLogUntouched", childEnv+"=stdlog").CombinedOutput()
		require.NoError(t, err, "child:\n%s", out)
		require.Contains(t, string(out), "--- PASS: TestStdLogUntouched")
		return
	}
	check := func(when string) {
		t.Helper()
		require.Equal(t, log.LstdFlags, log.Flags(), "log flags %s", when)
		require.Equal(t, "", log.Prefix(), "log prefix %s", when)
		require.Equal(t, os.Stderr, log.Writer(), "log writer %s", when)
	}
	check("after importing replog")
	l, err := replog.Open(t.TempDir(), nil)
	require.NoError(t, err)
	check("after Open")
	require.NoError(t, l.Close())
	check("after Close")
}
