//go:build unix

package datastore

import (
	"os"
	"syscall"
)

// allocatedBytes returns the bytes a file occupies on storage.
func allocatedBytes(st os.FileInfo) int64 {
	if s, ok := st.Sys().(*syscall.Stat_t); ok {
		return s.Blocks * 512
	}
	return st.Size()
}
