//go:build !unix

package disk

import "os"

// LockExclusive does nothing on this system, which has no advisory locks
// vdisk uses.
func LockExclusive(*os.File) error { return nil }
