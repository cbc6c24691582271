//go:build darwin || dragonfly || freebsd || linux || netbsd || openbsd

package dirlock

import (
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"
)

// Lock creates the file at path if needed and locks it; closing the
// returned Closer unlocks it, and so does the end of the process.
//
// The lock is flock(2): it belongs to the open file, so a second Lock in
// the same process fails as one in another process does, whatever the
// spelling of path, and no process-wide table of held locks is needed (an
// fcntl lock, as Pebble's, would not conflict within one process).
func Lock(path string) (io.Closer, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w: %s", ErrLocked, path)
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return lockFile{f}, nil
}

// lockFile hides the file's methods but Close.
type lockFile struct{ f *os.File }

func (l lockFile) Close() error { return l.f.Close() }
