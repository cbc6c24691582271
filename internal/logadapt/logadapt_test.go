package logadapt

import (
	"log/slog"
	"testing"

	"github.com/lni/dragonboat/v4/logger"
)

func TestLevel(t *testing.T) {
	for _, c := range []struct {
		pkg    string
		l      logger.LogLevel
		format string
		want   slog.Level
	}{
		{"raft", logger.WARNING, "%s became PreVote candidate", slog.LevelDebug},
		{"raft", logger.WARNING, "%s received %s from %s", slog.LevelDebug},
		{"raft", logger.WARNING, "%s dropped proposal, no leader", slog.LevelDebug},
		{"raft", logger.WARNING, "%s has lost quorum", slog.LevelWarn},
		{"raft", logger.INFO, "%s became leader", slog.LevelDebug},
		{"raft", logger.ERROR, "%s something broke", slog.LevelError},
		{"config", logger.WARNING, "mutual TLS disabled, communication is insecure", slog.LevelDebug},
		{"config", logger.WARNING, "ElectionRTT is not a magnitude larger than HeartbeatRTT", slog.LevelDebug},
		{"config", logger.WARNING, "some other configuration advice", slog.LevelWarn},
		{"transport", logger.WARNING, "%s became unreachable, affected %d nodes", slog.LevelWarn},
		{"transport", logger.ERROR, "send batch failed, target %s (%v), %d", slog.LevelDebug},
		{"transport", logger.WARNING, "breaker %s to %s failed, connect and process failed: %s", slog.LevelDebug},
		{"transport", logger.ERROR, "Nodehost %s failed to get a connection to %s, %v", slog.LevelDebug},
		{"transport", logger.ERROR, "some other transport failure %s", slog.LevelError},
		{"dragonboat", logger.WARNING, "%s taking snapshot, ignored new snapshot req", slog.LevelDebug},
		{"dragonboat", logger.INFO, "NodeHost ID: %s", slog.LevelDebug},
		{"dragonboat", logger.DEBUG, "x", slog.LevelDebug},
		{"rsm", logger.CRITICAL, "x", slog.LevelError},
	} {
		if got := level(c.pkg, c.l, c.format); got != c.want {
			t.Errorf("level(%q, %d, %q) = %v, want %v", c.pkg, c.l, c.format, got, c.want)
		}
	}
}
