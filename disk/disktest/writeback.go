package disktest

import (
	"io/fs"
	"sync/atomic"

	"github.com/vdisk-project/vdisk/disk"
)

// WriteBackFS is an FS (the operating system's when FS is nil) whose files
// count the starts of their write-back (see disk.StartWriteBack) before
// doing them, so that tests can tell whether a writer wrote behind.
type WriteBackFS struct {
	FS     disk.FS
	starts atomic.Int64
}

// Starts returns how many times a file of the FS started its write-back.
func (w *WriteBackFS) Starts() int64 { return w.starts.Load() }

func (w *WriteBackFS) fs() disk.FS {
	if w.FS == nil {
		return disk.OSFS{}
	}
	return w.FS
}

// OpenFile opens a file whose StartWriteBack is counted. It has an Fd
// method when the underlying file has one.
func (w *WriteBackFS) OpenFile(name string, flag int, perm fs.FileMode) (disk.File, error) {
	f, err := w.fs().OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	c := &countingFile{File: f, n: &w.starts}
	if x, ok := f.(interface{ Fd() uintptr }); ok {
		return countingFdFile{countingFile: c, fd: x}, nil
	}
	return c, nil
}

// Remove removes name.
func (w *WriteBackFS) Remove(name string) error { return w.fs().Remove(name) }

// Stat stats name.
func (w *WriteBackFS) Stat(name string) (fs.FileInfo, error) { return w.fs().Stat(name) }

// Rename renames oldpath to newpath.
func (w *WriteBackFS) Rename(oldpath, newpath string) error { return w.fs().Rename(oldpath, newpath) }

// SyncDir syncs directory dir.
func (w *WriteBackFS) SyncDir(dir string) error { return w.fs().SyncDir(dir) }

type countingFile struct {
	disk.File
	n *atomic.Int64
}

// StartWriteBack counts the call and starts the underlying file's
// write-back.
func (f *countingFile) StartWriteBack() error {
	f.n.Add(1)
	return disk.StartWriteBack(f.File)
}

type countingFdFile struct {
	*countingFile
	fd interface{ Fd() uintptr }
}

func (f countingFdFile) Fd() uintptr { return f.fd.Fd() }
