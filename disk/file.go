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

// WriteFileAtomic replaces the file name with b: it writes a temporary file
// beside it, syncs it and renames it over name, so that a crash leaves
// either the old content or the new. fsys nil means OSFS.
func WriteFileAtomic(fsys FS, name string, b []byte) error {
	if fsys == nil {
		fsys = OSFS{}
	}
	tmp := name + ".tmp"
	f, err := fsys.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_RDWR, 0o644)
	if err != nil {
		return err
	}
	_, err = f.WriteAt(b, 0)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = fsys.Rename(tmp, name)
	}
	if err != nil {
		fsys.Remove(tmp)
	}
	return err
}
