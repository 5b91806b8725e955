//go:build unix

package cli

import (
	"os"
	"syscall"
)

// allocatedOnDisk returns the bytes a file occupies on storage.
func allocatedOnDisk(st os.FileInfo) int64 {
	if s, ok := st.Sys().(*syscall.Stat_t); ok {
		return s.Blocks * 512
	}
	return st.Size()
}
