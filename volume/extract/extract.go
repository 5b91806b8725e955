// Package extract copies files and trees out of a filesystem read by one of
// package volume's readers into a host directory, as `cp -a` would: file
// contents with their holes, modes, times, owners (as root), symbolic
// links, hard links, device nodes and fifos (as root) and extended
// attributes.
//
// A filesystem inside a guest's disk is hostile input. Names that are not
// single path elements are refused, and every file is created relative to
// an open directory with O_NOFOLLOW|O_EXCL (openat, mkdirat, symlinkat…),
// so no entry of the image, whatever it holds, can make extract write
// outside DEST or through a link it made. One file that cannot be read is
// reported and the rest is extracted.
package extract

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vdisk-project/vdisk/disk"
	"github.com/vdisk-project/vdisk/volume/inode"
)

// Options tune an extraction.
type Options struct {
	// Owners restores each file's owner and group. It needs root; when
	// false, files belong to the caller.
	Owners bool
	// Xattrs restores extended attributes (the trusted and security
	// namespaces need root; failures to set them are reported per file).
	Xattrs bool
	// Devices creates device nodes (root only); otherwise they are
	// skipped and counted.
	Devices bool
	// Overwrite replaces existing files at DEST (an existing directory
	// is merged into). Without it an existing name is an error for that
	// file.
	Overwrite bool
	// Workers copies this many files at once (runtime.NumCPU()*2 when 0).
	Workers int
	// Progress, when set, is called from time to time and at the end.
	Progress func(Progress)
}

// Progress is how far an extraction is.
type Progress struct {
	Files, Bytes int64 // done so far
	TotalBytes   int64 // regular-file bytes found so far (grows while walking)
	Walking      bool  // the tree is still being walked
}

// Summary is what an extraction did.
type Summary struct {
	Files, Dirs, Symlinks, HardLinks, Special int64
	Bytes                                     int64 // file bytes written (holes excluded)
	Skipped                                   int64 // device nodes not created
	// Errors lists the files that failed, each a *fs.PathError naming the
	// file inside the filesystem. Extraction goes on past them.
	Errors []error
}

// Err is nil when nothing failed, else the failures joined.
func (s *Summary) Err() error { return errors.Join(s.Errors...) }

// maxErrors bounds Summary.Errors: a badly damaged filesystem could fail
// on every file.
const maxErrors = 1000

type job struct {
	name string
	fd   int
	fi   fs.FileInfo
}

type dirFix struct {
	fd   int
	name string
	fi   fs.FileInfo
}

type extractor struct {
	ctx  context.Context
	fsys inode.FS
	opts Options

	jobs chan job
	wg   sync.WaitGroup

	mu    sync.Mutex
	sum   Summary
	links map[uint64]linkSrc // inode → first extracted path, for hard links

	bytes, files, total atomic.Int64
	walking             atomic.Bool
	lastReport          atomic.Int64
}

type linkSrc struct {
	dirfd int // kept open until the end
	name  string
}

// Extract copies each name of fsys (a file, a link or a tree) into dest.
// When dest is an existing directory each name goes into it under its
// base name (like cp -a SRC… DIR); when dest does not exist and there is
// one name, dest becomes that file or tree. The error is for the whole
// operation (dest unusable, ctx canceled); failures of single files are in
// the Summary.
func Extract(ctx context.Context, fsys inode.FS, names []string, dest string, opts Options) (*Summary, error) {
	if len(names) == 0 {
		return nil, &disk.Error{Op: "extract", Code: disk.ErrInvalid, Err: errors.New("extract: no names given")}
	}
	if opts.Workers <= 0 {
		opts.Workers = runtime.NumCPU() * 2
	}
	e := &extractor{ctx: ctx, fsys: fsys, opts: opts, jobs: make(chan job, 64), links: map[uint64]linkSrc{}}
	e.walking.Store(true)
	for range opts.Workers {
		e.wg.Add(1)
		go e.worker()
	}
	var dirs []dirFix
	err := e.top(names, dest, &dirs)
	close(e.jobs)
	e.wg.Wait()
	e.walking.Store(false)
	// Directory modes and times last, deepest first: creating entries
	// changes a directory's mtime, and a read-only directory could not
	// receive them.
	for i := len(dirs) - 1; i >= 0; i-- {
		d := dirs[i]
		if x, ok := fsys.(inode.XattrFS); ok && opts.Xattrs {
			if xerr := e.xattrs(x, d.name, func(k string, v []byte) error { return unix.Fsetxattr(d.fd, k, v, 0) }); xerr != nil {
				e.fail(d.name, xerr)
			}
		}
		if ferr := e.finish(d.fd, -1, "", d.fi); ferr != nil {
			e.fail(d.name, ferr)
		}
		unix.Close(d.fd)
	}
	for _, l := range e.links {
		unix.Close(l.dirfd)
	}
	e.report(true)
	if err == nil {
		err = ctx.Err()
	}
	return &e.sum, err
}

func (e *extractor) top(names []string, dest string, dirs *[]dirFix) error {
	fi, err := os.Stat(dest)
	into := err == nil && fi.IsDir()
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("extract: %w", err)
	}
	if !into && len(names) > 1 {
		return &disk.Error{Op: "extract", Path: dest, Code: disk.ErrInvalid, Err: errors.New("extract: several names need an existing directory as the destination")}
	}
	if !into && err == nil && !e.opts.Overwrite {
		return &disk.Error{Op: "extract", Path: dest, Code: disk.ErrInvalid, Err: errors.New("extract: the destination exists (use overwrite)")}
	}
	parent, base := dest, ""
	if !into {
		parent, base = path.Dir(dest), path.Base(dest)
	}
	pfd, err := unix.Open(parent, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("extract: open %s: %w", parent, err)
	}
	defer unix.Close(pfd)
	for _, n := range names {
		if err := e.ctx.Err(); err != nil {
			return err
		}
		n = strings.Trim(n, "/")
		if n == "" {
			n = "."
		}
		if !fs.ValidPath(n) {
			e.fail(n, fs.ErrInvalid)
			continue
		}
		fi, err := e.fsys.Lstat(n)
		if err != nil {
			e.fail(n, err)
			continue
		}
		b := base
		if b == "" {
			b = path.Base(n)
			if n == "." {
				b = "root"
			}
		}
		e.entry(pfd, b, n, fi, dirs)
	}
	return nil
}

// entry creates one name under dirfd, recursing into directories.
func (e *extractor) entry(dirfd int, as, name string, fi fs.FileInfo, dirs *[]dirFix) {
	if e.ctx.Err() != nil {
		return
	}
	st, _ := fi.Sys().(*inode.Stat)
	if st == nil {
		st = &inode.Stat{Mode: fi.Mode(), Size: fi.Size(), Mtime: fi.ModTime()}
	}
	m := fi.Mode()
	// Hard links: a second name of an inode already extracted is linked.
	if !m.IsDir() && st.Nlink > 1 && st.Ino != 0 {
		e.mu.Lock()
		src, ok := e.links[st.Ino]
		e.mu.Unlock()
		if ok {
			e.replace(dirfd, as, false)
			if err := unix.Linkat(src.dirfd, src.name, dirfd, as, 0); err != nil {
				e.fail(name, err)
				return
			}
			e.count(func(s *Summary) { s.HardLinks++ })
			return
		}
	}
	switch {
	case m.IsDir():
		if err := unix.Mkdirat(dirfd, as, 0o700); err != nil {
			if !(errors.Is(err, unix.EEXIST) && e.opts.Overwrite) {
				e.fail(name, err)
				return
			}
		}
		fd, err := unix.Openat(dirfd, as, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			e.fail(name, err)
			return
		}
		*dirs = append(*dirs, dirFix{fd: fd, name: name, fi: fi})
		e.count(func(s *Summary) { s.Dirs++ })
		es, err := e.fsys.ReadDir(name)
		if err != nil {
			e.fail(name, err)
		}
		seen := make(map[string]bool, len(es))
		for _, de := range es {
			n := de.Name()
			if n == "" || n == "." || n == ".." || strings.ContainsAny(n, "/\x00") || seen[n] {
				e.fail(path.Join(name, n), &disk.Error{Op: "extract", Code: disk.ErrCorrupt, Err: fmt.Errorf("extract: directory entry %q is not a single, unique name", n)})
				continue
			}
			seen[n] = true
			child := n
			if name != "." {
				child = name + "/" + n
			}
			cfi, err := de.Info()
			if err != nil {
				e.fail(child, err)
				continue
			}
			e.entry(fd, n, child, cfi, dirs)
		}
	case m&fs.ModeSymlink != 0:
		target := st.Target
		if target == "" {
			t, err := e.fsys.ReadLink(name)
			if err != nil {
				e.fail(name, err)
				return
			}
			target = t
		}
		e.replace(dirfd, as, false)
		if err := unix.Symlinkat(target, dirfd, as); err != nil {
			e.fail(name, err)
			return
		}
		if err := e.finish(dirfd, -1, as, fi); err != nil {
			e.fail(name, err)
		}
		e.count(func(s *Summary) { s.Symlinks++ })
	case m.IsRegular():
		e.replace(dirfd, as, false)
		fd, err := unix.Openat(dirfd, as, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
		if err != nil {
			e.fail(name, err)
			return
		}
		if st.Nlink > 1 && st.Ino != 0 {
			if dup, err := unix.Dup(dirfd); err == nil {
				e.mu.Lock()
				e.links[st.Ino] = linkSrc{dirfd: dup, name: as}
				e.mu.Unlock()
			}
		}
		e.total.Add(fi.Size())
		e.jobs <- job{name: name, fd: fd, fi: fi}
	default: // devices, fifos, sockets
		var kind uint32
		switch {
		case m&fs.ModeNamedPipe != 0:
			kind = unix.S_IFIFO
		case m&fs.ModeSocket != 0:
			kind = unix.S_IFSOCK
		case m&fs.ModeCharDevice != 0:
			kind = unix.S_IFCHR
		case m&fs.ModeDevice != 0:
			kind = unix.S_IFBLK
		}
		if (kind == unix.S_IFCHR || kind == unix.S_IFBLK) && !e.opts.Devices {
			e.count(func(s *Summary) { s.Skipped++ })
			return
		}
		e.replace(dirfd, as, false)
		if err := unix.Mknodat(dirfd, as, kind|0o600, int(st.Rdev)); err != nil {
			e.fail(name, err)
			return
		}
		if err := e.finish(dirfd, -1, as, fi); err != nil {
			e.fail(name, err)
		}
		e.count(func(s *Summary) { s.Special++ })
	}
}

// replace removes an existing non-directory at as when overwriting.
func (e *extractor) replace(dirfd int, as string, dir bool) {
	if !e.opts.Overwrite || dir {
		return
	}
	var st unix.Stat_t
	if unix.Fstatat(dirfd, as, &st, unix.AT_SYMLINK_NOFOLLOW) == nil && st.Mode&unix.S_IFMT != unix.S_IFDIR {
		unix.Unlinkat(dirfd, as, 0)
	}
}

func (e *extractor) worker() {
	defer e.wg.Done()
	buf := make([]byte, 1<<20)
	for j := range e.jobs {
		if e.ctx.Err() != nil {
			unix.Close(j.fd)
			continue
		}
		if err := e.copyFile(j, buf); err != nil {
			e.fail(j.name, err)
		}
		unix.Close(j.fd)
		e.files.Add(1)
		e.count(func(s *Summary) { s.Files++ })
		e.report(false)
	}
}

var zero = make([]byte, 4096)

func isZero(b []byte) bool { return bytes.Equal(b, zero[:len(b)]) }

// copyFile writes j's contents, leaving zero 4 KiB blocks as holes, then its attributes.
func (e *extractor) copyFile(j job, buf []byte) error {
	f, err := e.fsys.Open(j.name)
	if err != nil {
		return err
	}
	defer f.Close()
	r, ok := f.(io.ReaderAt)
	if !ok {
		return &disk.Error{Op: "extract", Path: j.name, Code: disk.ErrNotSupported, Err: errors.New("extract: the reader's file has no ReadAt")}
	}
	size := j.fi.Size()
	var written int64
	for off := int64(0); off < size; {
		if err := e.ctx.Err(); err != nil {
			return err
		}
		n := int(min(int64(len(buf)), size-off))
		m, err := r.ReadAt(buf[:n], off)
		if m < n {
			if err == nil || errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return err
		}
		// Write runs of non-zero 4 KiB blocks; zero blocks stay holes.
		for p := 0; p < n; {
			for p < n && isZero(buf[p:min(p+4096, n)]) {
				p += 4096
			}
			q := p
			for q < n && !isZero(buf[q:min(q+4096, n)]) {
				q += 4096
			}
			q = min(q, n)
			if q > p {
				if _, err := unix.Pwrite(j.fd, buf[p:q], off+int64(p)); err != nil {
					return err
				}
				written += int64(q - p)
				e.bytes.Add(int64(q - p))
			}
			p = q
		}
		off += int64(n)
		e.report(false)
	}
	if err := unix.Ftruncate(j.fd, size); err != nil {
		return err
	}
	e.count(func(s *Summary) { s.Bytes += written })
	if x, ok := e.fsys.(inode.XattrFS); ok && e.opts.Xattrs {
		if err := e.xattrs(x, j.name, func(k string, v []byte) error { return unix.Fsetxattr(j.fd, k, v, 0) }); err != nil {
			return err
		}
	}
	return e.finish(-1, j.fd, "", j.fi)
}

func (e *extractor) xattrs(x inode.XattrFS, name string, set func(string, []byte) error) error {
	m, err := x.Xattrs(name)
	if err != nil {
		return err
	}
	var errs []error
	for k, v := range m {
		if err := set(k, v); err != nil {
			errs = append(errs, fmt.Errorf("xattr %s: %w", k, err))
		}
	}
	return errors.Join(errs...)
}

// finish sets owner, mode and times: on fd when it is open (files and
// directories), else on dirfd/as without following a link.
func (e *extractor) finish(dirfd, fd int, as string, fi fs.FileInfo) error {
	st, _ := fi.Sys().(*inode.Stat)
	m := fi.Mode()
	link := m&fs.ModeSymlink != 0
	if fd < 0 && !link && as != "" {
		// A special file: owner and mode by name (mknod made it, it is no link).
		if e.opts.Owners && st != nil {
			if err := unix.Fchownat(dirfd, as, int(st.UID), int(st.GID), unix.AT_SYMLINK_NOFOLLOW); err != nil {
				return err
			}
		}
		if err := unix.Fchmodat(dirfd, as, unixMode(m), 0); err != nil {
			return err
		}
	}
	if fd < 0 && as == "" {
		fd = dirfd // a directory's own descriptor
	}
	if fd >= 0 {
		if e.opts.Owners && st != nil {
			if err := unix.Fchown(fd, int(st.UID), int(st.GID)); err != nil {
				return err
			}
		}
		if err := unix.Fchmod(fd, unixMode(m)); err != nil {
			return err
		}
	} else if link && e.opts.Owners && st != nil {
		if err := unix.Fchownat(dirfd, as, int(st.UID), int(st.GID), unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return err
		}
	}
	mt := fi.ModTime()
	at := mt
	if st != nil && !st.Atime.IsZero() {
		at = st.Atime
	}
	ts := []unix.Timespec{ts(at), ts(mt)}
	if fd >= 0 {
		return unix.UtimesNanoAt(fd, "", ts, unix.AT_EMPTY_PATH)
	}
	return unix.UtimesNanoAt(dirfd, as, ts, unix.AT_SYMLINK_NOFOLLOW)
}

func ts(t time.Time) unix.Timespec { return unix.NsecToTimespec(t.UnixNano()) }

func unixMode(m fs.FileMode) uint32 {
	b := uint32(m.Perm())
	if m&fs.ModeSetuid != 0 {
		b |= unix.S_ISUID
	}
	if m&fs.ModeSetgid != 0 {
		b |= unix.S_ISGID
	}
	if m&fs.ModeSticky != 0 {
		b |= unix.S_ISVTX
	}
	return b
}

func (e *extractor) count(f func(*Summary)) {
	e.mu.Lock()
	f(&e.sum)
	e.mu.Unlock()
}

func (e *extractor) fail(name string, err error) {
	var pe *fs.PathError
	if !errors.As(err, &pe) {
		err = &fs.PathError{Op: "extract", Path: name, Err: err}
	}
	e.mu.Lock()
	if len(e.sum.Errors) < maxErrors {
		e.sum.Errors = append(e.sum.Errors, err)
	}
	e.mu.Unlock()
}

func (e *extractor) report(final bool) {
	if e.opts.Progress == nil {
		return
	}
	now := time.Now().UnixNano()
	last := e.lastReport.Load()
	if !final && (now-last < int64(100*time.Millisecond) || !e.lastReport.CompareAndSwap(last, now)) {
		return
	}
	p := Progress{Files: e.files.Load(), Bytes: e.bytes.Load(), TotalBytes: e.total.Load(), Walking: e.walking.Load()}
	e.mu.Lock()
	e.opts.Progress(p)
	e.mu.Unlock()
}
