//go:build unix

package disk

import "syscall"

// oNoFollow makes open fail (ELOOP) on a symbolic link; oNonBlock keeps the
// open of a FIFO planted in place of a state file from blocking.
const (
	oNoFollow = syscall.O_NOFOLLOW
	oNonBlock = syscall.O_NONBLOCK
)
