//go:build !unix

package cli

import "os"

// allocatedOnDisk returns the bytes a file occupies on storage; without
// block counts it is the file's apparent size.
func allocatedOnDisk(st os.FileInfo) int64 { return st.Size() }
