//go:build linux || freebsd || netbsd || dragonfly

package disk

import "syscall"

// ODirect is the open flag for unbuffered I/O (O_DIRECT).
const ODirect = syscall.O_DIRECT
