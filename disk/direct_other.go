//go:build !(linux || freebsd || netbsd || dragonfly)

package disk

// ODirect is 0 where the system has no O_DIRECT: Unbuffered opens fail
// with ErrNotSupported there.
const ODirect = 0
