package replog_test

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/replog/replog"
)

// lsR lists every file under dir with its size, mode and time.
func lsR(dir string) []string {
	var out []string
	filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err == nil {
			info, _ := d.Info()
			out = append(out, fmt.Sprintf("%s %d %v %v", path, info.Size(), info.Mode(), info.ModTime()))
		}
		return nil
	})
	return out
}

// TestOpenLockedInProcess opens a directory twice in one process.
func TestOpenLockedInProcess(t *testing.T) {
	dir := t.TempDir()
	l, err := replog.Open(dir, nil)
	require.NoError(t, err)
	_, err = replog.Open(dir, nil)
	require.ErrorIs(t, err, replog.ErrLocked)
	// Another name for the same directory is the same directory.
	link := filepath.Join(t.TempDir(), "link")
	require.NoError(t, os.Symlink(dir, link))
	_, err = replog.Open(link, nil)
	require.ErrorIs(t, err, replog.ErrLocked)
	// The failed opens took nothing from the first.
	_, err = l.CreateTopic(testCtx(t), "t", replog.TopicConfig{})
	require.NoError(t, err)
	require.NoError(t, l.Close())
	l, err = replog.Open(dir, nil)
	require.NoError(t, err)
	require.Len(t, l.Topics(), 1)
	require.NoError(t, l.Close())
}

// TestOpenLockedOtherProcess opens a directory that a child process holds
// open.
func TestOpenLockedOtherProcess(t *testing.T) {
	if dir := os.Getenv("REPLOG_TEST_LOCKED_DIR"); os.Getenv(childEnv) == "locked" {
		// The child: hold dir open until stdin closes.
		l, err := replog.Open(dir, nil)
		require.NoError(t, err)
		fmt.Println("OPEN")
		_, _ = io.Copy(io.Discard, os.Stdin)
		require.NoError(t, l.Close())
		return
	}
	dir := t.TempDir()
	cmd := childCmd(t, "TestOpenLockedOtherProcess", childEnv+"=locked", "REPLOG_TEST_LOCKED_DIR="+dir)
	stdin, err := cmd.StdinPipe()
	require.NoError(t, err)
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	cmd.Stderr = os.Stderr
	require.NoError(t, cmd.Start())
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	sc := bufio.NewScanner(stdout)
	opened := false
	for !opened && sc.Scan() {
		opened = sc.Text() == "OPEN"
	}
	require.True(t, opened, "the child did not open the log")

	_, err = replog.Open(dir, nil)
	require.ErrorIs(t, err, replog.ErrLocked)

	require.NoError(t, stdin.Close())
	go func() { _, _ = io.Copy(io.Discard, stdout) }()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(30 * time.Second):
		t.Fatal("the child did not exit")
	}
	l, err := replog.Open(dir, nil)
	require.NoError(t, err)
	require.NoError(t, l.Close())
}

// TestOpenCorruptNodeAddress damages a single node's recorded address.
func TestOpenCorruptNodeAddress(t *testing.T) {
	for name, content := range map[string]string{
		"junk":      "\x00\xff\x13garbage",
		"truncated": "inproc-0123",
		"empty":     "",
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			l, err := replog.Open(dir, nil)
			require.NoError(t, err)
			require.NoError(t, l.Close())
			require.NoError(t, os.WriteFile(filepath.Join(dir, "NODE_ADDRESS"), []byte(content), 0o644))
			_, err = replog.Open(dir, nil)
			require.ErrorIs(t, err, replog.ErrCorrupt)
		})
	}
}

// TestOpenForeignDir refuses a directory that holds other data, and
// leaves it as it was.
func TestOpenForeignDir(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("mine"), 0o644))
	require.NoError(t, os.Mkdir(filepath.Join(dir, "data"), 0o755))
	before := lsR(dir)
	_, err := replog.Open(dir, nil)
	require.ErrorIs(t, err, replog.ErrNotReplogDir)
	require.Equal(t, before, lsR(dir), "Open changed the directory")

	// An empty directory, or one that does not exist yet, is a new log.
	for _, d := range []string{t.TempDir(), filepath.Join(t.TempDir(), "new", "log")} {
		l, err := replog.Open(d, nil)
		require.NoError(t, err)
		require.NoError(t, l.Close())
		l, err = replog.Open(d, nil)
		require.NoError(t, err, "reopen")
		require.NoError(t, l.Close())
	}
}
