// Package logadapt routes the logs of dragonboat and Pebble to a [slog.Logger].
//
// dragonboat keeps one process-wide logger factory that may be installed only
// once (a second install panics). Install therefore installs it at most once
// per process and forwards every dragonboat message to whichever
// *slog.Logger was set last with [SetDragonboat]; nil discards. This is the
// one piece of package-level mutable state in replog outside the in-memory
// transport, and it exists because dragonboat gives no per-NodeHost logger.
package logadapt

import (
	"context"
	"fmt"
	"log"
	"log/slog"
	"os"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/cockroachdb/pebble/v2"
	"github.com/lni/dragonboat/v4/logger"
)

var (
	installOnce sync.Once
	current     atomic.Pointer[slog.Logger]
)

// capnslogPkg is the package of the logger dragonboat uses by default. Its
// init takes over the standard library's logger: it sets the flags and the
// prefix to nothing and sends every line to its own writer.
const capnslogPkg = "github.com/lni/goutils/logutil/capnslog"

// init undoes the takeover of the standard logger by capnslog's init, so
// that importing replog changes no process-wide state. It runs after
// capnslog's (this package imports dragonboat's logger, which imports
// capnslog) and restores Go's defaults only while the writer is still
// capnslog's: a program that set its own writer since keeps it. What capnslog
// overwrote cannot be known, so Go's defaults are the best guess; a program
// configures the standard logger in main, after every init, anyway.
func init() {
	if w := log.Writer(); w != nil && reflect.TypeOf(w).PkgPath() == capnslogPkg {
		log.SetOutput(os.Stderr)
		log.SetFlags(log.LstdFlags)
		log.SetPrefix("")
	}
}

// SetDragonboat installs the forwarding factory (once per process) and makes
// l the destination of dragonboat's logs. A nil l discards them. If the
// program installed its own dragonboat logger factory first, that one stays.
func SetDragonboat(l *slog.Logger) {
	installOnce.Do(func() {
		defer func() { _ = recover() }() // the program set its own factory first: keep it.
		logger.SetLoggerFactory(func(pkg string) logger.ILogger {
			return &dbLogger{pkg: pkg, level: logger.INFO}
		})
	})
	if l != nil {
		current.Store(l)
	}
}

// level maps a dragonboat message to the slog level it is logged at.
// dragonboat logs routine Raft protocol events (pre-votes, votes, becoming
// a candidate, proposals dropped during an election, which replog retries)
// as warnings, and much bookkeeping (every snapshot, every replica started)
// as information. An embedded library's warnings should be worth a human's
// attention, so:
//
//   - dragonboat's DEBUG and INFO are Debug;
//   - its WARNING is Warn, but Debug for the Raft package (package "raft")
//     except when a leader lost its quorum, and Debug for the warning that
//     mutual TLS is off (replog warns itself when that matters: a TCP
//     transport without TLS; the in-process transport has no wire), and
//     for the advice that the election timeout be ten heartbeats (replog
//     gives it itself for a cluster: a single node's groups have no one
//     to send heartbeats to);
//   - when a connection to a peer fails, the transport logs the failed
//     connection and send (ERROR), the circuit breaker tripping (WARNING)
//     and the peer becoming unreachable (WARNING): the last alone stays,
//     at Warn;
//   - an automatic snapshot skipped because one is being taken is
//     routine (Debug);
//   - ERROR is Error; a panic is logged at Error before it is raised.
func level(pkg string, l logger.LogLevel, msg string) slog.Level {
	switch {
	case l >= logger.INFO:
		return slog.LevelDebug
	case pkg == "transport" && (strings.HasPrefix(msg, "send batch failed") || strings.HasPrefix(msg, "breaker ") ||
		strings.Contains(msg, "failed to get a connection to")):
		return slog.LevelDebug
	case pkg == "dragonboat" && strings.HasSuffix(msg, "taking snapshot, ignored new snapshot req"):
		return slog.LevelDebug
	case l == logger.WARNING && pkg == "raft" && !strings.Contains(msg, "lost quorum"):
		return slog.LevelDebug
	case l == logger.WARNING && pkg == "config" && (strings.HasPrefix(msg, "mutual TLS disabled") ||
		strings.HasPrefix(msg, "ElectionRTT is not a magnitude larger")):
		return slog.LevelDebug
	case l == logger.WARNING:
		return slog.LevelWarn
	}
	return slog.LevelError
}

// dbLogger adapts dragonboat's ILogger to slog. Messages below the level
// set with SetLevel (INFO by default: Debugf calls are dropped) are dropped
// before formatting, and so are messages the destination does not enable.
type dbLogger struct {
	pkg   string
	mu    sync.Mutex
	level logger.LogLevel
}

func (d *dbLogger) SetLevel(l logger.LogLevel) {
	d.mu.Lock()
	d.level = l
	d.mu.Unlock()
}

func (d *dbLogger) log(l logger.LogLevel, format string, args []any) {
	d.mu.Lock()
	lv := d.level
	d.mu.Unlock()
	if l > lv {
		return
	}
	dst := current.Load()
	if dst == nil {
		return
	}
	ctx := context.Background()
	// level looks at the format, not the formatted message, so a message
	// that ends at Debug costs no formatting when Debug is off.
	sl := level(d.pkg, l, format)
	if !dst.Enabled(ctx, sl) {
		return
	}
	dst.Log(ctx, sl, fmt.Sprintf(format, args...), "component", "dragonboat/"+d.pkg)
}

func (d *dbLogger) Debugf(format string, args ...any)   { d.log(logger.DEBUG, format, args) }
func (d *dbLogger) Infof(format string, args ...any)    { d.log(logger.INFO, format, args) }
func (d *dbLogger) Warningf(format string, args ...any) { d.log(logger.WARNING, format, args) }
func (d *dbLogger) Errorf(format string, args ...any)   { d.log(logger.ERROR, format, args) }

// Panicf keeps dragonboat's contract (it panics) but logs first, so the
// message is not lost when the panic is recovered higher up.
func (d *dbLogger) Panicf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	if dst := current.Load(); dst != nil {
		dst.Error(msg, "component", "dragonboat/"+d.pkg)
	}
	panic(msg)
}

// Pebble adapts a *slog.Logger to Pebble's Logger interface. A nil logger
// discards.
//
// Fatalf is reported at error level and then panics, as Pebble expects it
// not to return. Pebble calls it on broken invariants and on failed writes
// of its own metadata (MANIFEST, commit pipeline), after which its in-memory
// state cannot be trusted. It also calls it, by default, for on-disk
// corruption met while reading; that path, the one damaged files reach,
// goes to [Pebble.DataCorruption] instead, which Pebble options must install
// through [Pebble.EventListener].
type Pebble struct{ L *slog.Logger }

func (p Pebble) Infof(format string, args ...any) {
	if p.L != nil {
		p.L.Debug(fmt.Sprintf(format, args...), "component", "pebble")
	}
}
func (p Pebble) Errorf(format string, args ...any) {
	if p.L != nil {
		p.L.Error(fmt.Sprintf(format, args...), "component", "pebble")
	}
}
func (p Pebble) Fatalf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	if p.L != nil {
		p.L.Error(msg, "component", "pebble")
	}
	panic(msg)
}

// DataCorruption logs on-disk corruption at error level and returns. Pebble
// calls it synchronously on the read path before returning the corruption
// error to the reader (an iterator's Error, Get), so the reader, not the
// process, deals with it; Pebble's own state is unaffected by a failed read.
func (p Pebble) DataCorruption(info pebble.DataCorruptionInfo) {
	if p.L != nil {
		p.L.Error("on-disk corruption", "component", "pebble", "path", info.Path, "details", info.Details)
	}
}

// EventListener returns the Pebble event listener replog installs: Pebble's
// defaults for everything but DataCorruption, whose default calls
// Logger.Fatalf, which panics.
func (p Pebble) EventListener() *pebble.EventListener {
	return &pebble.EventListener{DataCorruption: p.DataCorruption}
}
