//go:build !(linux || freebsd || netbsd || dragonfly)

package raw

// oDirect is 0 where the system has no O_DIRECT: Unbuffered opens fail
// with ErrNotSupported there.
const oDirect = 0
