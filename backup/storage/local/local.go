//go:build unix

// Package local is a Storage in a directory of the local filesystem: the
// default home of a backup repository.
//
// # Layout
//
// An object named "data/3f/3f9a…" is the file data/3f/3f9a… under the
// directory; the slashes of a name are directories, created on demand, so
// the fan-out of a repository is the caller's naming choice. Directories
// are created with mode 0700 and files with mode 0600. A Put writes a
// temporary file "tmp~…" next to the object (a name no object can have,
// since '~' is not allowed in names), syncs it, renames it over the name
// and syncs the directory: after a crash the object is there whole or not
// at all, and a temporary file may be left behind. List ignores those;
// [Storage.Cleanup] removes the old ones.
//
// # Safety
//
// Every path is resolved one element at a time from the directory with
// openat and O_NOFOLLOW, so no name reaches outside the directory. A
// symbolic link planted anywhere inside (in place of an object or of a
// directory on the way) is refused with an error matching
// disk.ErrPermission, as is any other file that is not a regular file or a
// directory. List skips such entries.
//
// # Errors
//
// Besides the codes package storage documents, a full filesystem (ENOSPC,
// EDQUOT) gives disk.ErrNoSpace and a refused permission (EACCES, EPERM, a
// read-only filesystem) disk.ErrPermission. Local errors are never
// storage.Transient.
//
// The package builds on Unix systems.
package local

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vdisk-project/vdisk/backup/storage"
	"github.com/vdisk-project/vdisk/disk"
)

const (
	dirMode  = 0o700
	fileMode = 0o600
	// tmpPrefix starts the names of temporary files. '~' is not allowed in
	// object names, so no object is ever mistaken for one.
	tmpPrefix = "tmp~"
	// chunk bounds the bytes written or read between looks at ctx.
	chunk = 8 << 20
)

// Storage is a repository directory. It is safe for concurrent use.
type Storage struct {
	dir    string
	closed atomic.Bool
}

var _ storage.Storage = (*Storage)(nil)

// Open opens the existing repository directory dir. It fails with
// disk.ErrNotFound if dir does not exist and disk.ErrInvalid if it is not
// a directory.
func Open(dir string) (*Storage, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, &disk.Error{Op: "local: open", Path: dir, Off: -1, Code: disk.ErrInvalid, Err: err}
	}
	s := &Storage{dir: abs}
	fd, err := s.openRoot()
	if err != nil {
		if errors.Is(err, unix.ENOTDIR) {
			return nil, &disk.Error{Op: "local: open", Path: dir, Off: -1, Code: disk.ErrInvalid, Err: errors.New("local: not a directory")}
		}
		return nil, fail("open", dir, err)
	}
	unix.Close(fd)
	return s, nil
}

// Create makes the repository directory dir with mode 0700, and its
// missing parents, and opens it. An existing directory is opened as it is;
// whether it already holds a repository is for the caller to find out.
func Create(dir string) (*Storage, error) {
	if err := os.MkdirAll(dir, dirMode); err != nil {
		return nil, fail("create", dir, err)
	}
	// Make the new directory's entry durable.
	if err := syncPath(filepath.Dir(filepath.Clean(dir))); err != nil {
		return nil, fail("create", dir, err)
	}
	return Open(dir)
}

// Dir returns the repository directory as an absolute path.
func (s *Storage) Dir() string { return s.dir }

func (s *Storage) String() string { return s.dir }

// openRoot opens the repository directory. Each operation opens it anew,
// so Close need not wait for operations in flight.
func (s *Storage) openRoot() (int, error) {
	if s.closed.Load() {
		return -1, errClosed
	}
	fd, err := unix.Open(s.dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("open %s: %w", s.dir, err)
	}
	return fd, nil
}

var errClosed = &disk.Error{Off: -1, Code: disk.ErrInvalid, Err: errors.New("local: storage is closed")}

// errLink refuses symbolic links and special files inside the repository.
type errLink struct{ elem string }

func (e *errLink) Error() string {
	return fmt.Sprintf("local: %s is a symbolic link or special file, not a file or directory of the repository", e.elem)
}

// fail wraps err with the operation and the object name. The code comes
// from err (an errno classifies itself); a path element that is a file
// where a directory should be means the object does not exist.
func fail(op, name string, err error) error {
	var d *disk.Error
	if errors.As(err, &d) && d.Op == "" && d.Path == "" {
		return &disk.Error{Op: "local: " + op, Path: name, Off: -1, Code: d.Code, Err: d.Err}
	}
	code := disk.CodeOf(err)
	var l *errLink
	switch {
	case errors.As(err, &l):
		code = disk.ErrPermission
	case errors.Is(err, unix.ENOTDIR):
		code = disk.ErrNotFound
	}
	return &disk.Error{Op: "local: " + op, Path: name, Off: -1, Code: code, Err: err}
}

func check(op, name string) error {
	if !storage.ValidName(name) {
		return &disk.Error{Op: "local: " + op, Path: name, Off: -1, Code: disk.ErrInvalid, Err: errors.New("local: invalid object name")}
	}
	return nil
}

// split separates a valid name into its directory elements and its last
// element.
func split(name string) ([]string, string) {
	elems := strings.Split(name, "/")
	return elems[:len(elems)-1], elems[len(elems)-1]
}

// openDir opens the directory elems below the directory fd root, element
// by element, refusing symbolic links. With create, missing directories
// are made (mode 0700) and their parents synced so that the new entries
// are durable. The caller closes the returned descriptor.
func openDir(root int, elems []string, create bool) (int, error) {
	fd, err := unix.Openat(root, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("openat .: %w", err)
	}
	for i, e := range elems {
		next, err := openSubdir(fd, e)
		if errors.Is(err, unix.ENOENT) && create {
			err = unix.Mkdirat(fd, e, dirMode)
			if err == nil {
				err = unix.Fsync(fd)
			} else if errors.Is(err, unix.EEXIST) {
				err = nil // made meanwhile by another Put
			}
			if err == nil {
				next, err = openSubdir(fd, e)
			}
		}
		unix.Close(fd)
		if err != nil {
			var l *errLink
			if errors.As(err, &l) {
				return -1, &errLink{strings.Join(elems[:i+1], "/")}
			}
			return -1, fmt.Errorf("open directory %s: %w", strings.Join(elems[:i+1], "/"), err)
		}
		fd = next
	}
	return fd, nil
}

// openSubdir opens the directory name in dir without following a symbolic
// link.
func openSubdir(dir int, name string) (int, error) {
	for {
		fd, err := unix.Openat(dir, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		switch {
		case err == nil:
			return fd, nil
		case errors.Is(err, unix.EINTR):
			continue
		case errors.Is(err, unix.ELOOP):
			return -1, &errLink{name}
		case errors.Is(err, unix.ENOTDIR):
			// A file, or (on some systems) a symbolic link.
			var st unix.Stat_t
			if unix.Fstatat(dir, name, &st, unix.AT_SYMLINK_NOFOLLOW) == nil && st.Mode&unix.S_IFMT == unix.S_IFLNK {
				return -1, &errLink{name}
			}
		}
		return -1, err
	}
}

// openObject opens the object name for reading and returns it with its
// size.
func (s *Storage) openObject(name string) (*os.File, int64, error) {
	root, err := s.openRoot()
	if err != nil {
		return nil, 0, err
	}
	defer unix.Close(root)
	dirs, base := split(name)
	dfd, err := openDir(root, dirs, false)
	if err != nil {
		return nil, 0, err
	}
	defer unix.Close(dfd)
	var fd int
	for {
		// O_NONBLOCK: a FIFO planted in the repository must not block us.
		fd, err = unix.Openat(dfd, base, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
		if !errors.Is(err, unix.EINTR) {
			break
		}
	}
	if errors.Is(err, unix.ELOOP) {
		return nil, 0, &errLink{name}
	}
	if err != nil {
		return nil, 0, fmt.Errorf("open: %w", err)
	}
	f := os.NewFile(uintptr(fd), name)
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, err
	}
	switch {
	case fi.IsDir():
		f.Close()
		return nil, 0, &disk.Error{Off: -1, Code: disk.ErrNotFound, Err: errors.New("local: a directory of names, not an object")}
	case !fi.Mode().IsRegular():
		f.Close()
		return nil, 0, &errLink{name}
	}
	return f, fi.Size(), nil
}

// Put implements [storage.Storage]: a temporary file in the object's
// directory, written, synced, renamed over the name; then the directory is
// synced.
func (s *Storage) Put(ctx context.Context, name string, data []byte) error {
	if err := check("put", name); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := s.put(ctx, name, data); err != nil {
		if ctx.Err() != nil && errors.Is(err, ctx.Err()) {
			return err
		}
		if errors.Is(err, unix.ENOTDIR) || errors.Is(err, unix.EISDIR) || errors.Is(err, unix.EEXIST) || errors.Is(err, unix.ENOTEMPTY) {
			// "a" is an object and "a/b" is put, or the reverse.
			return &disk.Error{Op: "local: put", Path: name, Off: -1, Code: disk.ErrInvalid,
				Err: fmt.Errorf("local: the name collides with another object's path: %w", err)}
		}
		return fail("put", name, err)
	}
	return nil
}

func (s *Storage) put(ctx context.Context, name string, data []byte) (err error) {
	root, err := s.openRoot()
	if err != nil {
		return err
	}
	defer unix.Close(root)
	dirs, base := split(name)
	dfd, err := openDir(root, dirs, true)
	if err != nil {
		return err
	}
	defer unix.Close(dfd)

	var fd int
	var tmp string
	for range 10 {
		tmp = fmt.Sprintf("%s%016x", tmpPrefix, rand.Uint64())
		fd, err = unix.Openat(dfd, tmp, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, fileMode)
		if !errors.Is(err, unix.EEXIST) && !errors.Is(err, unix.EINTR) {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("create temporary file: %w", err)
	}
	f := os.NewFile(uintptr(fd), tmp)
	renamed := false
	defer func() {
		if !renamed {
			f.Close()
			unix.Unlinkat(dfd, tmp, 0)
		}
	}()
	for off := 0; off < len(data); off += chunk {
		if err := ctx.Err(); err != nil {
			return err
		}
		if _, err := f.Write(data[off:min(off+chunk, len(data))]); err != nil {
			return err
		}
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := unix.Renameat(dfd, tmp, dfd, base); err != nil {
		return fmt.Errorf("rename: %w", err)
	}
	renamed = true
	cerr := f.Close() // after a successful Sync, Close has nothing left to report
	if err := unix.Fsync(dfd); err != nil {
		return fmt.Errorf("sync directory: %w", err)
	}
	return cerr
}

// ReadAt implements [storage.Storage] with pread.
func (s *Storage) ReadAt(ctx context.Context, name string, p []byte, off int64) (int, error) {
	if err := check("read", name); err != nil {
		return 0, err
	}
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	if off < 0 {
		return 0, &disk.Error{Op: "local: read", Path: name, Off: off, Code: disk.ErrInvalid, Err: errors.New("local: negative offset")}
	}
	f, _, err := s.openObject(name)
	if err != nil {
		return 0, fail("read", name, err)
	}
	defer f.Close()
	n, err := f.ReadAt(p, off)
	if errors.Is(err, io.EOF) {
		return n, &disk.Error{Op: "local: read", Path: name, Off: off, Code: disk.ErrAccess,
			Err: fmt.Errorf("local: %d of %d bytes before the end: %w", n, len(p), io.ErrUnexpectedEOF)}
	}
	if err != nil {
		e := fail("read", name, err).(*disk.Error)
		e.Off = off
		return n, e
	}
	return n, nil
}

// Get implements [storage.Storage].
func (s *Storage) Get(ctx context.Context, name string, max int64) ([]byte, error) {
	if err := check("get", name); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	f, size, err := s.openObject(name)
	if err != nil {
		return nil, fail("get", name, err)
	}
	defer f.Close()
	if size > max {
		return nil, &disk.Error{Op: "local: get", Path: name, Off: -1, Code: disk.ErrOutOfMemory,
			Err: fmt.Errorf("local: object of %d bytes exceeds the limit of %d", size, max)}
	}
	b := make([]byte, size)
	for off := int64(0); off < size; off += chunk {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		end := min(off+chunk, size)
		if _, err := f.ReadAt(b[off:end], off); err != nil {
			if errors.Is(err, io.EOF) {
				err = fmt.Errorf("local: object shrank while read: %w", io.ErrUnexpectedEOF)
			}
			return nil, fail("get", name, err)
		}
	}
	return b, nil
}

// Stat implements [storage.Storage].
func (s *Storage) Stat(ctx context.Context, name string) (storage.Info, error) {
	if err := check("stat", name); err != nil {
		return storage.Info{}, err
	}
	if err := ctx.Err(); err != nil {
		return storage.Info{}, err
	}
	in, err := s.stat(name)
	if err != nil {
		return storage.Info{}, fail("stat", name, err)
	}
	return in, nil
}

func (s *Storage) stat(name string) (storage.Info, error) {
	root, err := s.openRoot()
	if err != nil {
		return storage.Info{}, err
	}
	defer unix.Close(root)
	dirs, base := split(name)
	dfd, err := openDir(root, dirs, false)
	if err != nil {
		return storage.Info{}, err
	}
	defer unix.Close(dfd)
	var st unix.Stat_t
	if err := unix.Fstatat(dfd, base, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return storage.Info{}, fmt.Errorf("stat: %w", err)
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		return info(name, &st), nil
	case unix.S_IFDIR:
		return storage.Info{}, &disk.Error{Off: -1, Code: disk.ErrNotFound, Err: errors.New("local: a directory of names, not an object")}
	}
	return storage.Info{}, &errLink{name}
}

func info(name string, st *unix.Stat_t) storage.Info {
	sec, nsec := st.Mtim.Unix()
	return storage.Info{Name: name, Size: st.Size, ModTime: time.Unix(sec, nsec)}
}

// List implements [storage.Storage]. It walks the directories that can
// hold names starting with prefix; temporary files, symbolic links and
// special files are skipped.
func (s *Storage) List(ctx context.Context, prefix string, fn func(storage.Info) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	root, err := s.openRoot()
	if err != nil {
		return fail("list", prefix, err)
	}
	defer unix.Close(root)
	// Start in the deepest directory the prefix names in full.
	start := ""
	if i := strings.LastIndexByte(prefix, '/'); i > 0 && storage.ValidName(prefix[:i]) {
		start = prefix[:i]
	}
	var elems []string
	if start != "" {
		elems = strings.Split(start, "/")
	}
	dfd, err := openDir(root, elems, false)
	if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) {
		return nil
	}
	if err != nil {
		return fail("list", prefix, err)
	}
	return s.walk(ctx, dfd, start, func(_ int, name string, st *unix.Stat_t) (descend bool, err error) {
		if st.Mode&unix.S_IFMT == unix.S_IFDIR {
			// Only directories that valid names pass through: a
			// foreign tree, however deep, is not walked.
			return storage.ValidName(name) && (strings.HasPrefix(name+"/", prefix) || strings.HasPrefix(prefix, name+"/")), nil
		}
		if st.Mode&unix.S_IFMT == unix.S_IFREG && strings.HasPrefix(name, prefix) && storage.ValidName(name) {
			return false, fn(info(name, st))
		}
		return false, nil
	}, func(name string) bool {
		// Worth a stat: a name that may be listed or lead to one.
		return strings.HasPrefix(name, prefix) || strings.HasPrefix(prefix, name+"/")
	})
}

// walk visits the entries below the directory dfd (named dir, "" for the
// root), which it closes. want filters by name before the stat; visit is
// called with the entry's directory, its name and its lstat, and says
// whether to descend into a directory.
func (s *Storage) walk(ctx context.Context, dfd int, dir string,
	visit func(dfd int, name string, st *unix.Stat_t) (bool, error), want func(name string) bool) error {
	f := os.NewFile(uintptr(dfd), dir)
	defer f.Close()
	for {
		names, rerr := f.Readdirnames(256)
		for _, n := range names {
			if err := ctx.Err(); err != nil {
				return err
			}
			full := n
			if dir != "" {
				full = dir + "/" + n
			}
			if !want(full) {
				continue
			}
			var st unix.Stat_t
			if err := unix.Fstatat(dfd, n, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
				if errors.Is(err, unix.ENOENT) {
					continue // deleted meanwhile
				}
				return fail("list", full, fmt.Errorf("stat: %w", err))
			}
			descend, err := visit(dfd, full, &st)
			if err != nil {
				return err
			}
			if !descend {
				continue
			}
			sub, err := openSubdir(dfd, n)
			if errors.Is(err, unix.ENOENT) {
				continue
			}
			if err != nil {
				return fail("list", full, err)
			}
			if err := s.walk(ctx, sub, full, visit, want); err != nil {
				return err
			}
		}
		if rerr == io.EOF {
			return nil
		}
		if rerr != nil {
			return fail("list", dir, rerr)
		}
	}
}

// Delete implements [storage.Storage]. Deleting is not synced to disk: an
// object deleted just before a crash may reappear, which prune, the only
// caller, tolerates. Deleting a name that is a directory of other names
// deletes nothing, like deleting a missing object.
func (s *Storage) Delete(ctx context.Context, name string) error {
	if err := check("delete", name); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	err := s.delete(name)
	if err == nil || errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) {
		return nil
	}
	if errors.Is(err, unix.EISDIR) || errors.Is(err, unix.EPERM) && s.isDir(name) {
		// A directory of names is no object: there is none to delete,
		// as on S3.
		return nil
	}
	return fail("delete", name, err)
}

func (s *Storage) delete(name string) error {
	root, err := s.openRoot()
	if err != nil {
		return err
	}
	defer unix.Close(root)
	dirs, base := split(name)
	dfd, err := openDir(root, dirs, false)
	if err != nil {
		return err
	}
	defer unix.Close(dfd)
	// Unlinking a symbolic link removes the link, never its target.
	if err := unix.Unlinkat(dfd, base, 0); err != nil {
		return fmt.Errorf("unlink: %w", err)
	}
	return nil
}

func (s *Storage) isDir(name string) bool {
	_, err := s.stat(name)
	return errors.Is(err, disk.ErrNotFound) && !errors.Is(err, unix.ENOENT)
}

// Cleanup removes the temporary files that interrupted Puts left behind
// and that were last modified more than age ago, and returns how many it
// removed. Choose an age well above the longest Put, since a Put in flight
// owns its temporary file.
func (s *Storage) Cleanup(ctx context.Context, age time.Duration) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	root, err := s.openRoot()
	if err != nil {
		return 0, fail("cleanup", "", err)
	}
	defer unix.Close(root)
	dfd, err := openDir(root, nil, false)
	if err != nil {
		return 0, fail("cleanup", "", err)
	}
	cutoff := time.Now().Add(-age)
	removed := 0
	err = s.walk(ctx, dfd, "", func(pfd int, name string, st *unix.Stat_t) (bool, error) {
		mode := st.Mode & unix.S_IFMT
		if mode == unix.S_IFDIR {
			return storage.ValidName(name), nil
		}
		_, base := split(name)
		if mode != unix.S_IFREG || !strings.HasPrefix(base, tmpPrefix) || !info(name, st).ModTime.Before(cutoff) {
			return false, nil
		}
		err := unix.Unlinkat(pfd, base, 0)
		if err == nil {
			removed++
		} else if !errors.Is(err, unix.ENOENT) {
			return false, fail("cleanup", name, fmt.Errorf("unlink: %w", err))
		}
		return false, nil
	}, func(string) bool { return true })
	return removed, err
}

// Close implements [storage.Storage]. Later calls fail with
// disk.ErrInvalid; calls in flight finish.
func (s *Storage) Close() error {
	s.closed.Store(true)
	return nil
}

// syncPath fsyncs the directory at path.
func syncPath(path string) error {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", path, err)
	}
	defer unix.Close(fd)
	if err := unix.Fsync(fd); err != nil {
		return fmt.Errorf("sync %s: %w", path, err)
	}
	return nil
}
