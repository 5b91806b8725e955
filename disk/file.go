package disk

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
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
//
// Creating, renaming and removing a name changes its directory, and such a
// change is durable only once SyncDir has been called on that directory.
type FS interface {
	OpenFile(name string, flag int, perm fs.FileMode) (File, error)
	Remove(name string) error
	Stat(name string) (fs.FileInfo, error)
	// Rename atomically replaces newpath with oldpath.
	Rename(oldpath, newpath string) error
	// SyncDir makes the entries of directory dir (names created, renamed
	// and removed in it) durable, as fsync on the directory does.
	SyncDir(dir string) error
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

// SyncDir opens directory dir and fsyncs it. Filesystems that cannot sync
// a directory (EINVAL) are taken to make entries durable by themselves.
func (OSFS) SyncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = f.Sync()
	if errors.Is(err, syscall.EINVAL) {
		err = nil
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// maxTempTries bounds the random temporary names WriteFileAtomic tries.
const maxTempTries = 100

// WriteFileAtomic replaces the file name with b, durably, so that a crash
// leaves either the old content or the new and a return without error
// means the new content survives one. It creates a temporary file with a
// random name in name's directory (exclusively, so it never follows or
// reuses a file or symbolic link planted there), gives it mode perm
// (exactly: the umask does not apply), writes and syncs it, renames it
// over name and then syncs the directory. fsys nil means OSFS.
//
// A crash can leave the temporary file behind; its name starts with "."
// followed by name's base name and ends in ".tmp".
func WriteFileAtomic(fsys FS, name string, b []byte, perm fs.FileMode) error {
	if fsys == nil {
		fsys = OSFS{}
	}
	dir, base := filepath.Split(name)
	if dir == "" {
		dir = "."
	}
	var (
		tmp string
		f   File
		err error
	)
	for range maxTempTries {
		var rnd [8]byte
		rand.Read(rnd[:])
		tmp = filepath.Join(dir, "."+base+"."+hex.EncodeToString(rnd[:])+".tmp")
		f, err = fsys.OpenFile(tmp, os.O_CREATE|os.O_EXCL|os.O_WRONLY|oNoFollow, perm)
		if !errors.Is(err, fs.ErrExist) {
			break
		}
	}
	if err != nil {
		return err
	}
	if c, ok := f.(interface{ Chmod(fs.FileMode) error }); ok {
		err = c.Chmod(perm)
	}
	if err == nil {
		_, err = f.WriteAt(b, 0)
	}
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
		return err
	}
	return fsys.SyncDir(dir)
}

// ReadFileNoFollow reads the regular file name, at most max bytes of it.
// It refuses a symbolic link (O_NOFOLLOW: the final component is never
// followed) and anything but a regular file with ErrPermission, and a file
// larger than max with ErrCorrupt. A missing file gives ErrNotFound (and
// matches fs.ErrNotExist). Use it for state files, which an attacker who
// can write their directory could otherwise point anywhere.
func ReadFileNoFollow(name string, max int64) ([]byte, error) {
	f, err := OpenFileNoFollow(name, os.O_RDONLY|oNonBlock, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, Wrap(err, "", "", -1)
	}
	if !st.Mode().IsRegular() {
		return nil, Errorf(ErrPermission, "%s is not a regular file", name)
	}
	if st.Size() > max {
		return nil, Errorf(ErrCorrupt, "%s is larger than %d bytes", name, max)
	}
	b := make([]byte, 0, st.Size()+1)
	b, err = readAllLimit(f, b, max)
	if err != nil {
		return nil, Wrap(err, "read", name, -1)
	}
	return b, nil
}

// OpenFileNoFollow is os.OpenFile that refuses, with ErrPermission, to
// open a symbolic link in place of name's last component (O_NOFOLLOW).
// Other errors carry their code (see CodeOf).
func OpenFileNoFollow(name string, flag int, perm fs.FileMode) (*os.File, error) {
	f, err := os.OpenFile(name, flag|oNoFollow, perm)
	if errors.Is(err, syscall.ELOOP) {
		return nil, Errorf(ErrPermission, "%s is a symbolic link", name)
	}
	if err != nil {
		return nil, Wrap(err, "", "", -1)
	}
	if oNoFollow == 0 {
		if st, lerr := os.Lstat(name); lerr == nil && st.Mode()&fs.ModeSymlink != 0 {
			f.Close()
			return nil, Errorf(ErrPermission, "%s is a symbolic link", name)
		}
	}
	return f, nil
}

// readAllLimit appends what r holds to b, failing with ErrCorrupt past max
// bytes (the file may grow after Stat).
func readAllLimit(r io.Reader, b []byte, max int64) ([]byte, error) {
	for {
		if int64(len(b)) > max {
			return nil, Errorf(ErrCorrupt, "larger than %d bytes", max)
		}
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
		n, err := r.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if err == io.EOF {
			if int64(len(b)) > max {
				return nil, Errorf(ErrCorrupt, "larger than %d bytes", max)
			}
			return b, nil
		}
		if err != nil {
			return nil, err
		}
	}
}

// ONoFollow is the open flag that refuses a symbolic link as the last
// component of the name (O_NOFOLLOW), or 0 where the platform has none.
// State files are opened with it through an [FS].
const ONoFollow = oNoFollow

// RemoveAtomicLeftovers removes, in dir, the temporary files that
// WriteFileAtomic calls interrupted by a crash left (".NAME.RANDOM.tmp"),
// and returns how many it removed. Call it where nothing writes dir.
func RemoveAtomicLeftovers(dir string) int {
	ents, _ := os.ReadDir(dir)
	n := 0
	for _, e := range ents {
		name := e.Name()
		if !e.Type().IsRegular() || !strings.HasPrefix(name, ".") || !strings.HasSuffix(name, ".tmp") {
			continue
		}
		// The random part is 16 hex digits before ".tmp".
		rest := strings.TrimSuffix(name, ".tmp")
		i := strings.LastIndexByte(rest, '.')
		if i < 1 || len(rest)-i-1 != 16 {
			continue
		}
		if _, err := hex.DecodeString(rest[i+1:]); err != nil {
			continue
		}
		if os.Remove(filepath.Join(dir, name)) == nil {
			n++
		}
	}
	return n
}
