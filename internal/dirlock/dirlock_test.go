package dirlock

import (
	"errors"
	"path/filepath"
	"testing"
)

func TestLock(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "LOCK")
	l, err := Lock(path)
	if err != nil {
		t.Fatal(err)
	}
	// Within one process, under another spelling too.
	for _, p := range []string{path, filepath.Join(dir, ".", "LOCK")} {
		if _, err := Lock(p); !errors.Is(err, ErrLocked) {
			t.Fatalf("second Lock(%s): %v, want ErrLocked", p, err)
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l, err = Lock(path)
	if err != nil {
		t.Fatalf("Lock after Close: %v", err)
	}
	l.Close()
	if _, err := Lock(filepath.Join(dir, "missing", "LOCK")); err == nil || errors.Is(err, ErrLocked) {
		t.Fatalf("Lock in a missing directory: %v", err)
	}
}
