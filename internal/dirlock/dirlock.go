// Package dirlock gives a directory to one opener at a time, across
// processes and within one.
package dirlock

import "errors"

// ErrLocked reports that another opener, in this process or another, holds
// the lock.
var ErrLocked = errors.New("dirlock: locked")
