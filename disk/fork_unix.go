//go:build unix

package disk

import (
	"syscall"
	"time"
)

// forkRechecks bounds how often a lock conflict is looked at again before
// it is reported (about 50 ms in all).
const forkRechecks = 6

// waitForks waits for child processes this process is starting to exec. A
// child forked while a locked file was open shares its open file
// description, and so its locks, until it execs and close-on-exec drops
// it: a file this process has just closed can look locked for that
// moment. Forks hold syscall.ForkLock for writing until the child has
// exec'd; the short sleep after covers the last instant of the exec, when
// the parent has resumed and the child's descriptors are not yet closed.
func waitForks(attempt int) {
	syscall.ForkLock.RLock()
	//lint:ignore SA2001 taking the lock is the wait: forks hold it until their child execs
	syscall.ForkLock.RUnlock()
	time.Sleep(time.Millisecond << min(attempt, 4))
}
