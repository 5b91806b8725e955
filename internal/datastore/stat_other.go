//go:build !unix

package datastore

import "os"

// allocatedBytes returns the bytes a file occupies on storage.
func allocatedBytes(st os.FileInfo) int64 { return st.Size() }
