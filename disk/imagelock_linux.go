package disk

import (
	"errors"

	"golang.org/x/sys/unix"
)

// lockImageFd publishes use and unshare on fd's lock bytes, then tests the
// counterpart bytes for other holders, as qemu's raw_apply_lock_bytes and
// raw_check_lock_bytes do. On a conflict it releases what it took.
func lockImageFd(fd uintptr, use, unshare perm) error {
	err := func() error {
		for i := range numPerms {
			if use&(1<<i) != 0 {
				if err := ofdLock(fd, lockPermBase+int64(i), unix.F_RDLCK); err != nil {
					return lockError(err, "", i)
				}
			}
		}
		for i := range numPerms {
			if unshare&(1<<i) != 0 {
				if err := ofdLock(fd, lockSharedBase+int64(i), unix.F_RDLCK); err != nil {
					return lockError(err, "shared ", i)
				}
			}
		}
		for attempt := 0; ; attempt++ {
			err := checkLockBytes(fd, use, unshare)
			if CodeOf(err) != ErrBusy || attempt == forkRechecks {
				return err
			}
			waitForks(attempt)
		}
	}()
	if err != nil {
		ofdUnlockAll(fd)
	}
	return err
}

// checkLockBytes tests the bytes that conflict with use and unshare.
func checkLockBytes(fd uintptr, use, unshare perm) error {
	for i := range numPerms {
		if use&(1<<i) != 0 {
			if held, err := ofdHeld(fd, lockSharedBase+int64(i)); err != nil || held {
				return lockError(err, "", i)
			}
		}
	}
	for i := range numPerms {
		if unshare&(1<<i) != 0 {
			if held, err := ofdHeld(fd, lockPermBase+int64(i)); err != nil || held {
				return lockError(err, "shared ", i)
			}
		}
	}
	return nil
}

func lockError(err error, what string, p int) error {
	if err == nil || errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EACCES) {
		return lockConflict(what, p)
	}
	if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOTSUP) || errors.Is(err, unix.ENOLCK) {
		// The filesystem cannot lock (qemu's locking=auto gives up the
		// same way only where OFD locks are missing altogether).
		return Errorf(ErrNotSupported, "image locking not supported here (%w); open with ForceShare (-U) to go without", err)
	}
	return Wrap(err, "lock", "", -1)
}

func ofdLock(fd uintptr, off int64, typ int16) error {
	lk := unix.Flock_t{Type: typ, Whence: 0, Start: off, Len: 1}
	for {
		err := unix.FcntlFlock(fd, unix.F_OFD_SETLK, &lk)
		if !errors.Is(err, unix.EINTR) {
			return err
		}
	}
}

// ofdHeld reports whether another open file description holds a lock on
// the byte at off.
func ofdHeld(fd uintptr, off int64) (bool, error) {
	lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: 0, Start: off, Len: 1}
	if err := unix.FcntlFlock(fd, unix.F_OFD_GETLK, &lk); err != nil {
		return false, err
	}
	return lk.Type != unix.F_UNLCK, nil
}

func ofdUnlockAll(fd uintptr) {
	for _, base := range []int64{lockPermBase, lockSharedBase} {
		lk := unix.Flock_t{Type: unix.F_UNLCK, Whence: 0, Start: base, Len: numPerms}
		unix.FcntlFlock(fd, unix.F_OFD_SETLK, &lk)
	}
}
