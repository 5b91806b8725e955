package nbd

import (
	"errors"
	"net"
	"syscall"
	"time"
)

// Accept backoff, as net/http's Server does: a failing Accept is retried
// after 5 ms, doubling up to 1 s, for as long as it keeps failing.
const (
	acceptDelayMin = 5 * time.Millisecond
	acceptDelayMax = time.Second
)

// retryAccept reports whether an Accept error is a passing condition
// (out of file descriptors or buffers, an aborted handshake, a timeout)
// after which the listener still works.
func retryAccept(err error) bool {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return true
	}
	for _, e := range []syscall.Errno{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM,
		syscall.ECONNABORTED, syscall.ECONNRESET, syscall.EINTR, syscall.EAGAIN, syscall.EPROTO, syscall.EPERM} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}
