package ntfs

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vdisk-project/vdisk/disk"
	"github.com/vdisk-project/vdisk/volume/inode"
)

var (
	_ inode.FS      = (*FS)(nil)
	_ inode.XattrFS = (*FS)(nil)
	_ inode.File    = (*File)(nil)
)

var errNotDir = disk.Errorf(disk.ErrNotFound, "ntfs: not a directory")

// resolve finds name, following symbolic links in the middle of the path
// and, when follow is set, at its end. Links never leave the volume: an
// absolute target starts at the root and ".." stops there.
func (f *FS) resolve(op, name string, follow bool) (*node, string, error) {
	if !fs.ValidPath(name) {
		return nil, "", &fs.PathError{Op: op, Path: name, Err: fs.ErrInvalid}
	}
	root, err := f.node(rootRecordNumber, 0)
	if err != nil {
		return nil, "", &fs.PathError{Op: op, Path: name, Err: err}
	}
	var parts []string
	if name != "." {
		parts = strings.Split(name, "/")
	}
	stack := []*node{root}
	links := 0
	for len(parts) > 0 {
		p := parts[0]
		switch p {
		case "", ".":
			parts = parts[1:]
			continue
		case "..":
			if len(stack) > 1 {
				stack = stack[:len(stack)-1]
			}
			parts = parts[1:]
			continue
		}
		cur := stack[len(stack)-1]
		if !cur.dir {
			return nil, "", &fs.PathError{Op: op, Path: name, Err: errNotDir}
		}
		d, err := f.listDir(cur)
		if err != nil {
			return nil, "", &fs.PathError{Op: op, Path: name, Err: err}
		}
		e, ok := d.find(p)
		if !ok {
			return nil, "", &fs.PathError{Op: op, Path: name, Err: fs.ErrNotExist}
		}
		n, err := f.node(e.ino, e.seq)
		if err != nil {
			return nil, "", &fs.PathError{Op: op, Path: name, Err: err}
		}
		// A directory has one name, in the directory that lists it: this
		// keeps a damaged index from making a cycle.
		if n.dir && !n.link && (len(n.parents) != 1 || n.parents[0] != cur.num) {
			return nil, "", &fs.PathError{Op: op, Path: name, Err: disk.Errorf(disk.ErrCorrupt, "ntfs: directory record %d is listed in %d but named in %v", n.num, cur.num, n.parents)}
		}
		if n.link && (len(parts) > 1 || follow) {
			if links++; links > maxLinks {
				return nil, "", &fs.PathError{Op: op, Path: name, Err: disk.Errorf(disk.ErrCorrupt, "ntfs: more than %d symbolic links", maxLinks)}
			}
			if strings.HasPrefix(n.target, "/") {
				stack = stack[:1]
			}
			parts = append(strings.Split(n.target, "/"), parts[1:]...)
			continue
		}
		stack = append(stack, n)
		parts = parts[1:]
	}
	// The name is the one asked for, also when links led elsewhere.
	return stack[len(stack)-1], path.Base(name), nil
}

// Open opens name, following symbolic links. A regular file is a *File; a
// directory implements fs.ReadDirFile. Encrypted files, compressed data
// the reader cannot decode and data behind unsupported reparse points
// (deduplication, WOF compression) give errors matching
// disk.ErrNotSupported.
func (f *FS) Open(name string) (fs.File, error) {
	n, base, err := f.resolve("open", name, true)
	if err != nil {
		return nil, err
	}
	if n.dir {
		return &dir{f: f, n: n, name: base}, nil
	}
	s, err := f.dataStream(n)
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: name, Err: err}
	}
	return &File{f: f, n: n, name: base, s: s}, nil
}

func (f *FS) dataStream(n *node) (*stream, error) {
	switch {
	case n.fileAttrs&fileEncrypted != 0:
		return nil, disk.Errorf(disk.ErrNotSupported, "ntfs: encrypted (EFS) file")
	case n.reparseTag == tagDedup || n.reparseTag == tagWOF || n.reparseTag&0xffff0fff == 0x9000001a:
		return nil, disk.Errorf(disk.ErrNotSupported, "ntfs: data behind reparse tag 0x%08x", n.reparseTag)
	case n.data == nil:
		return &stream{f: f, a: &attr{resident: true}}, nil
	}
	return f.newStream(n.data)
}

// Stat returns name's information, following symbolic links.
func (f *FS) Stat(name string) (fs.FileInfo, error) {
	n, base, err := f.resolve("stat", name, true)
	if err != nil {
		return nil, err
	}
	return f.info(n, base), nil
}

// Lstat returns name's information without following a final symbolic
// link.
func (f *FS) Lstat(name string) (fs.FileInfo, error) {
	n, base, err := f.resolve("lstat", name, false)
	if err != nil {
		return nil, err
	}
	return f.info(n, base), nil
}

// ReadLink returns a symbolic link's or junction's target as a slash path
// (see the package documentation for how Windows targets are converted).
func (f *FS) ReadLink(name string) (string, error) {
	n, _, err := f.resolve("readlink", name, false)
	if err != nil {
		return "", err
	}
	if !n.link {
		return "", &fs.PathError{Op: "readlink", Path: name, Err: fs.ErrInvalid}
	}
	return n.target, nil
}

// ReadDir lists directory name sorted by name.
func (f *FS) ReadDir(name string) ([]fs.DirEntry, error) {
	n, _, err := f.resolve("readdir", name, true)
	if err != nil {
		return nil, err
	}
	if !n.dir {
		return nil, &fs.PathError{Op: "readdir", Path: name, Err: errNotDir}
	}
	es, err := f.entries(n)
	if err != nil {
		return nil, &fs.PathError{Op: "readdir", Path: name, Err: err}
	}
	return es, nil
}

func (f *FS) entries(n *node) ([]fs.DirEntry, error) {
	d, err := f.listDir(n)
	if err != nil {
		return nil, err
	}
	out := make([]fs.DirEntry, len(d.entries))
	for i, e := range d.entries {
		out[i] = &dirEntry{f: f, e: e}
	}
	return out, nil
}

// Xattrs lists name's alternate data streams (not following a final
// symbolic link) as "user.STREAM" keys, the names ntfs-3g gives them with
// streams_interface=xattr. A stream over 64 MiB gives an error matching
// disk.ErrOutOfMemory.
func (f *FS) Xattrs(name string) (map[string][]byte, error) {
	n, _, err := f.resolve("xattrs", name, false)
	if err != nil {
		return nil, err
	}
	m := make(map[string][]byte, len(n.streams))
	for _, a := range n.streams {
		if a.size > maxXattr {
			return nil, &fs.PathError{Op: "xattrs", Path: name, Err: disk.Errorf(disk.ErrOutOfMemory, "ntfs: stream %q of %d bytes larger than %d", a.name, a.size, maxXattr)}
		}
		s, err := f.newStream(a)
		if err == nil {
			b := make([]byte, a.size)
			if err = s.readFull(b, 0); err == nil {
				m["user."+a.name] = b
				continue
			}
		}
		return nil, &fs.PathError{Op: "xattrs", Path: name, Err: fmt.Errorf("ntfs: stream %q: %w", a.name, err)}
	}
	return m, nil
}

type fileInfo struct {
	name string
	st   *inode.Stat
}

func (f *FS) info(n *node, name string) *fileInfo { return &fileInfo{name: name, st: f.stat(n)} }

func (i *fileInfo) Name() string       { return i.name }
func (i *fileInfo) Size() int64        { return i.st.Size }
func (i *fileInfo) Mode() fs.FileMode  { return i.st.Mode }
func (i *fileInfo) ModTime() time.Time { return i.st.Mtime }
func (i *fileInfo) IsDir() bool        { return i.st.Mode.IsDir() }
func (i *fileInfo) Sys() any           { return i.st }

type dirEntry struct {
	f *FS
	e dirent
}

func (d *dirEntry) Name() string { return d.e.name }

func (d *dirEntry) IsDir() bool { return d.Type().IsDir() }

// Type loads the entry's record, since an ntfs-3g symbolic link is told
// apart only by its data; a damaged record reads as a regular file here
// and gives its error from Info.
func (d *dirEntry) Type() fs.FileMode {
	n, err := d.f.node(d.e.ino, d.e.seq)
	if err != nil {
		if d.e.fileAttrs&fileDirIndex != 0 {
			return fs.ModeDir
		}
		return 0
	}
	return n.mode().Type()
}

func (d *dirEntry) Info() (fs.FileInfo, error) {
	n, err := d.f.node(d.e.ino, d.e.seq)
	if err != nil {
		return nil, &fs.PathError{Op: "stat", Path: d.e.name, Err: err}
	}
	return d.f.info(n, d.e.name), nil
}

func (d *dirEntry) String() string { return fs.FormatDirEntry(d) }

type dir struct {
	f    *FS
	n    *node
	name string

	mu      sync.Mutex
	entries []fs.DirEntry
	read    bool
	closed  bool
}

func (d *dir) Stat() (fs.FileInfo, error) { return d.f.info(d.n, d.name), nil }

func (d *dir) Read([]byte) (int, error) {
	return 0, &fs.PathError{Op: "read", Path: d.name, Err: disk.Errorf(disk.ErrInvalid, "ntfs: is a directory")}
}

func (d *dir) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return &fs.PathError{Op: "close", Path: d.name, Err: fs.ErrClosed}
	}
	d.closed = true
	return nil
}

// ReadDir follows fs.ReadDirFile: entries in name order, n at a time.
func (d *dir) ReadDir(n int) ([]fs.DirEntry, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil, &fs.PathError{Op: "readdir", Path: d.name, Err: fs.ErrClosed}
	}
	if !d.read {
		es, err := d.f.entries(d.n)
		if err != nil {
			return nil, &fs.PathError{Op: "readdir", Path: d.name, Err: err}
		}
		d.entries, d.read = es, true
	}
	if n <= 0 {
		es := d.entries
		d.entries = nil
		return es, nil
	}
	if len(d.entries) == 0 {
		return nil, io.EOF
	}
	k := min(n, len(d.entries))
	es := d.entries[:k:k]
	d.entries = d.entries[k:]
	return es, nil
}

// File is an open regular file (or the data of a symbolic link's final
// target). ReadAt is safe for concurrent use; Read and Seek share one
// offset and are not.
type File struct {
	f    *FS
	n    *node
	name string
	s    *stream

	off    int64
	closed atomic.Bool
}

// Stat returns the file's information.
func (fl *File) Stat() (fs.FileInfo, error) { return fl.f.info(fl.n, fl.name), nil }

// ReadAt reads len(b) bytes at off, like io.ReaderAt. Holes and bytes past
// the initialized size read as zeros.
func (fl *File) ReadAt(b []byte, off int64) (int, error) {
	if fl.closed.Load() {
		return 0, &fs.PathError{Op: "read", Path: fl.name, Err: fs.ErrClosed}
	}
	n, err := fl.s.ReadAt(b, off)
	if err != nil && !errors.Is(err, io.EOF) {
		return n, &fs.PathError{Op: "read", Path: fl.name, Err: err}
	}
	return n, err
}

// Read reads from the file's offset.
func (fl *File) Read(b []byte) (int, error) {
	if len(b) == 0 && !fl.closed.Load() {
		return 0, nil
	}
	n, err := fl.ReadAt(b, fl.off)
	fl.off += int64(n)
	if err == io.EOF && n > 0 {
		err = nil
	}
	return n, err
}

// Seek sets the offset for Read, like io.Seeker.
func (fl *File) Seek(off int64, whence int) (int64, error) {
	if fl.closed.Load() {
		return 0, &fs.PathError{Op: "seek", Path: fl.name, Err: fs.ErrClosed}
	}
	off, ok := inode.SeekOffset(fl.off, fl.s.size, off, whence)
	if !ok {
		return 0, &fs.PathError{Op: "seek", Path: fl.name, Err: fs.ErrInvalid}
	}
	fl.off = off
	return off, nil
}

// Close closes the file; a second Close gives fs.ErrClosed.
func (fl *File) Close() error {
	if fl.closed.Swap(true) {
		return &fs.PathError{Op: "close", Path: fl.name, Err: fs.ErrClosed}
	}
	return nil
}
