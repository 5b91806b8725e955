//go:build linux || freebsd || netbsd || dragonfly

package raw

import "syscall"

// oDirect is the open flag for unbuffered I/O.
const oDirect = syscall.O_DIRECT
