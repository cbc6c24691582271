//go:build !(darwin || dragonfly || freebsd || linux || netbsd || openbsd)

package dirlock

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// Lock creates the file at path if needed and locks it; closing the
// returned Closer unlocks it, and so does the end of the process.
//
// Without flock(2), Pebble's lock is used: it conflicts across processes
// and, through a process-wide table keyed by path, within one.
func Lock(path string) (io.Closer, error) {
	l, err := vfs.Default.Lock(path)
	switch {
	case err == nil:
		return l, nil
	case errors.Is(err, os.ErrPermission), errors.Is(err, os.ErrNotExist):
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return nil, fmt.Errorf("%w: %s: %v", ErrLocked, path, err)
}
