//go:build unix

package disk

import (
	"errors"
	"os"

	"golang.org/x/sys/unix"
)

// LockExclusive takes an exclusive advisory lock (flock) on the whole of f
// without waiting. The lock belongs to f's open file description: another
// open of the same file, in this process or another, cannot take it until
// f is closed or unlocked. A lock held elsewhere gives ErrBusy. Where the
// system has no such locks it does nothing.
func LockExclusive(f *os.File) error {
	for attempt := 0; ; {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		switch {
		case err == nil:
			return nil
		case errors.Is(err, unix.EINTR):
			continue
		case errors.Is(err, unix.EWOULDBLOCK) && attempt < forkRechecks:
			waitForks(attempt) // a lock just released may linger in a child
			attempt++
			continue
		case errors.Is(err, unix.EWOULDBLOCK):
			return Errorf(ErrBusy, "%s is locked by another process", f.Name())
		}
		return Wrap(err, "lock", f.Name(), -1)
	}
}
