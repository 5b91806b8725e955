package disk

import (
	"io"
	"io/fs"
	"os"
)

// File is the storage an image format keeps its bytes in. *os.File satisfies
// it; disktest.CrashFS provides files that lose unsynced writes.
type File interface {
	io.ReaderAt
	io.WriterAt
	io.Closer
	Sync() error
	Truncate(size int64) error
	Stat() (fs.FileInfo, error)
}

// FS opens the files of an image. Formats take one in their options so that
// tests can substitute a crash-simulating or fault-injecting filesystem; nil
// means OSFS.
type FS interface {
	OpenFile(name string, flag int, perm fs.FileMode) (File, error)
	Remove(name string) error
	Stat(name string) (fs.FileInfo, error)
	// Rename atomically replaces newpath with oldpath.
	Rename(oldpath, newpath string) error
}

// OSFS is the operating system's filesystem.
type OSFS struct{}

// OpenFile opens name with os.OpenFile.
func (OSFS) OpenFile(name string, flag int, perm fs.FileMode) (File, error) {
	f, err := os.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err // *os.File(nil) must not become a non-nil File
	}
	return f, nil
}

// Remove removes name with os.Remove.
func (OSFS) Remove(name string) error { return os.Remove(name) }

// Stat returns os.Stat(name).
func (OSFS) Stat(name string) (fs.FileInfo, error) { return os.Stat(name) }

// Rename renames with os.Rename.
func (OSFS) Rename(oldpath, newpath string) error { return os.Rename(oldpath, newpath) }
