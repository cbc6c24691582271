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
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/cockroachdb/pebble/v2"
	"github.com/lni/dragonboat/v4/logger"
)

var (
	installOnce sync.Once
	current     atomic.Pointer[slog.Logger]
)

// SetDragonboat installs the forwarding factory (once per process) and makes
// l the destination of dragonboat's logs. A nil l discards them. If the
// program installed its own dragonboat logger factory first, that one stays.
func SetDragonboat(l *slog.Logger) {
	installOnce.Do(func() {
		defer func() { _ = recover() }() // the program set its own factory first: keep it.
		logger.SetLoggerFactory(func(pkg string) logger.ILogger {
			return &dbLogger{pkg: pkg, level: logger.WARNING}
		})
	})
	if l != nil {
		current.Store(l)
	}
}

// dbLogger adapts dragonboat's ILogger to slog. Messages below WARNING are
// dropped before formatting: dragonboat logs every election and snapshot at
// INFO, which is noise for an embedded library.
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

func (d *dbLogger) log(l logger.LogLevel, sl slog.Level, format string, args []any) {
	d.mu.Lock()
	lv := d.level
	d.mu.Unlock()
	if l > lv {
		return
	}
	dst := current.Load()
	if dst == nil || !dst.Enabled(context.Background(), sl) {
		return
	}
	dst.Log(context.Background(), sl, fmt.Sprintf(format, args...), "component", "dragonboat/"+d.pkg)
}

func (d *dbLogger) Debugf(format string, args ...any) {
	d.log(logger.DEBUG, slog.LevelDebug, format, args)
}
func (d *dbLogger) Infof(format string, args ...any) {
	d.log(logger.INFO, slog.LevelInfo, format, args)
}
func (d *dbLogger) Warningf(format string, args ...any) {
	d.log(logger.WARNING, slog.LevelWarn, format, args)
}
func (d *dbLogger) Errorf(format string, args ...any) {
	d.log(logger.ERROR, slog.LevelError, format, args)
}

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
