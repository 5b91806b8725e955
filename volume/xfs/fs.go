package xfs

import (
	"errors"
	"io"
	"io/fs"
	"path"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/vdisk-project/vdisk/disk"
	"github.com/vdisk-project/vdisk/volume/inode"
)

var (
	_ inode.FS      = (*FS)(nil)
	_ inode.XattrFS = (*FS)(nil)
)

// Type returns "xfs".
func (f *FS) Type() string { return "xfs" }

// Label returns the filesystem's label, "" when it has none.
func (f *FS) Label() string { return f.label }

// UUID returns the superblock's UUID as blkid prints it.
func (f *FS) UUID() string { return uuidString(f.uuid[:]) }

// Version returns the superblock version: 4, or 5 (with CRCs).
func (f *FS) Version() int { return f.version }

// Statfs reports the data device's size and the superblock's free block
// and inode counters. Those counters are updated lazily by the kernel and
// may lag behind a filesystem that was not cleanly unmounted. Inodes are
// allocated dynamically: TotalInodes counts those allocated.
func (f *FS) Statfs() (inode.Statfs, error) {
	return inode.Statfs{
		BlockSize:   f.blockSize,
		TotalBytes:  int64(f.dblocks) * f.blockSize,
		FreeBytes:   int64(f.fdblocks) * f.blockSize,
		TotalInodes: int64(f.icount),
		FreeInodes:  int64(f.ifree),
	}, nil
}

func pathErr(op, name string, err error) error {
	return &fs.PathError{Op: op, Path: name, Err: err}
}

// maxFollow is how many symbolic links one lookup follows.
const maxFollow = 40

// lookup resolves name to an inode, following symbolic links (the last
// one only when follow is set). Absolute link targets start again at the
// root, and ".." never climbs above it.
func (f *FS) lookup(op, name string, follow bool) (*dinode, error) {
	if !fs.ValidPath(name) {
		return nil, pathErr(op, name, fs.ErrInvalid)
	}
	stack := []uint64{f.rootIno} // the directories from the root down
	var rest []string
	if name != "." {
		rest = strings.Split(name, "/")
	}
	links := 0
	cur, err := f.inode(f.rootIno)
	if err != nil {
		return nil, pathErr(op, name, err)
	}
	if !cur.isDir() {
		return nil, pathErr(op, name, corrupt("root inode %d is not a directory", f.rootIno))
	}
	for len(rest) > 0 {
		elem := rest[0]
		rest = rest[1:]
		switch elem {
		case "", ".":
			continue
		case "..":
			if len(stack) > 1 {
				stack = stack[:len(stack)-1]
			}
			if cur, err = f.inode(stack[len(stack)-1]); err != nil {
				return nil, pathErr(op, name, err)
			}
			continue
		}
		if !cur.isDir() {
			return nil, pathErr(op, name, disk.Errorf(disk.ErrNotFound, "xfs: not a directory"))
		}
		d, err := f.readDir(cur)
		if err != nil {
			return nil, pathErr(op, name, err)
		}
		i, ok := d.byName[elem]
		if !ok {
			return nil, pathErr(op, name, fs.ErrNotExist)
		}
		ino := d.entries[i].ino
		child, err := f.inode(ino)
		if err != nil {
			return nil, pathErr(op, name, err)
		}
		if child.isLink() && (len(rest) > 0 || follow) {
			if links++; links > maxFollow {
				return nil, pathErr(op, name, corrupt("more than %d symbolic links", maxFollow))
			}
			target, err := f.readLink(child)
			if err != nil {
				return nil, pathErr(op, name, err)
			}
			if strings.HasPrefix(target, "/") {
				stack = stack[:1]
				if cur, err = f.inode(f.rootIno); err != nil {
					return nil, pathErr(op, name, err)
				}
			}
			rest = append(strings.Split(target, "/"), rest...)
			if len(rest) > 4096 {
				return nil, pathErr(op, name, corrupt("symbolic links expand to too long a path"))
			}
			continue
		}
		if child.isDir() {
			if slices.Contains(stack, ino) {
				return nil, pathErr(op, name, corrupt("directory inode %d is its own ancestor", ino))
			}
			stack = append(stack, ino)
		}
		cur = child
	}
	return cur, nil
}

// Open opens name, following symbolic links: a [inode.File] for a regular
// file, an fs.ReadDirFile for a directory, and for other files (devices,
// FIFOs, sockets) an [inode.File] whose reads fail with an error matching
// disk.ErrNotSupported.
func (f *FS) Open(name string) (fs.File, error) {
	n, err := f.lookup("open", name, true)
	if err != nil {
		return nil, err
	}
	info := f.info(n, path.Base(name))
	switch {
	case n.isDir():
		d, err := f.readDir(n)
		if err != nil {
			return nil, pathErr("open", name, err)
		}
		return &dir{fs: f, name: name, info: info, d: d}, nil
	case n.isReg():
		file := &File{fs: f, name: name, info: info, size: n.size}
		if n.format != fmtLocal {
			if file.ext, err = f.extents(n, false); err != nil {
				return nil, pathErr("open", name, err)
			}
		}
		return file, nil
	}
	return &special{name: name, info: info}, nil
}

// Stat returns name's information, following symbolic links.
func (f *FS) Stat(name string) (fs.FileInfo, error) {
	n, err := f.lookup("stat", name, true)
	if err != nil {
		return nil, err
	}
	return f.info(n, path.Base(name)), nil
}

// Lstat returns name's information without following a final link.
func (f *FS) Lstat(name string) (fs.FileInfo, error) {
	n, err := f.lookup("lstat", name, false)
	if err != nil {
		return nil, err
	}
	return f.info(n, path.Base(name)), nil
}

// ReadLink returns the target of the symbolic link name, as stored.
func (f *FS) ReadLink(name string) (string, error) {
	n, err := f.lookup("readlink", name, false)
	if err != nil {
		return "", err
	}
	if !n.isLink() {
		return "", pathErr("readlink", name, fs.ErrInvalid)
	}
	t, err := f.readLink(n)
	if err != nil {
		return "", pathErr("readlink", name, err)
	}
	return t, nil
}

// ReadDir lists the directory name, sorted by name.
func (f *FS) ReadDir(name string) ([]fs.DirEntry, error) {
	n, err := f.lookup("readdir", name, true)
	if err != nil {
		return nil, err
	}
	if !n.isDir() {
		return nil, pathErr("readdir", name, errors.New("xfs: not a directory"))
	}
	d, err := f.readDir(n)
	if err != nil {
		return nil, pathErr("readdir", name, err)
	}
	l := f.listed(d)
	slices.SortFunc(l, func(a, b fs.DirEntry) int { return strings.Compare(a.Name(), b.Name()) })
	return l, nil
}

// Xattrs lists name's extended attributes, not following a final link.
func (f *FS) Xattrs(name string) (map[string][]byte, error) {
	n, err := f.lookup("xattrs", name, false)
	if err != nil {
		return nil, err
	}
	m, err := f.xattrs(n)
	if err != nil {
		return nil, pathErr("xattrs", name, err)
	}
	return m, nil
}

func (f *FS) listed(d *directory) []fs.DirEntry {
	l := make([]fs.DirEntry, len(d.entries))
	for i, e := range d.entries {
		l[i] = &dirEntry{fs: f, e: e}
	}
	return l
}

// info builds a file's information.
func (f *FS) info(n *dinode, name string) *fileInfo {
	st := &inode.Stat{
		Ino:   n.ino,
		Mode:  n.fileMode(),
		Nlink: n.nlink,
		UID:   n.uid,
		GID:   n.gid,
		Size:  n.size,
		Atime: n.atime, Mtime: n.mtime, Ctime: n.ctime, Btime: n.btime,
	}
	if n.nblocks < 1<<40 {
		st.Blocks = int64(n.nblocks) * f.blockSize
	}
	if n.rdev != 0 {
		major, minor := uint64(n.rdev>>18&0x1ff), uint64(n.rdev&0x3ffff)
		st.Rdev = major&0xfff<<8 | major&^0xfff<<32 | minor&0xff | minor&^0xff<<12
	}
	if n.isLink() {
		st.Target, _ = f.readLink(n)
	}
	return &fileInfo{name: name, st: st}
}

type fileInfo struct {
	name string
	st   *inode.Stat
}

func (i *fileInfo) Name() string       { return i.name }
func (i *fileInfo) Size() int64        { return i.st.Size }
func (i *fileInfo) Mode() fs.FileMode  { return i.st.Mode }
func (i *fileInfo) ModTime() time.Time { return i.st.Mtime }
func (i *fileInfo) IsDir() bool        { return i.st.Mode.IsDir() }
func (i *fileInfo) Sys() any           { return i.st }

// dirEntry is a directory entry; its type comes from the inode (read on
// first use), not from the entry's ftype byte, which v4 lacks.
type dirEntry struct {
	fs   *FS
	e    dirent
	once sync.Once
	n    *dinode
	err  error
}

func (d *dirEntry) load() (*dinode, error) {
	d.once.Do(func() { d.n, d.err = d.fs.inode(d.e.ino) })
	return d.n, d.err
}

func (d *dirEntry) Name() string { return d.e.name }
func (d *dirEntry) IsDir() bool  { return d.Type().IsDir() }

func (d *dirEntry) Type() fs.FileMode {
	n, err := d.load()
	if err != nil {
		return fs.ModeIrregular
	}
	return n.fileMode().Type()
}

func (d *dirEntry) Info() (fs.FileInfo, error) {
	n, err := d.load()
	if err != nil {
		return nil, pathErr("stat", d.e.name, err)
	}
	return d.fs.info(n, d.e.name), nil
}

// dir is an open directory.
type dir struct {
	fs   *FS
	name string
	info *fileInfo
	d    *directory
	mu   sync.Mutex
	off  int
}

func (d *dir) Stat() (fs.FileInfo, error) { return d.info, nil }
func (d *dir) Close() error               { return nil }
func (d *dir) Read([]byte) (int, error) {
	return 0, pathErr("read", d.name, errors.New("xfs: is a directory"))
}

// ReadDir returns the next n entries in directory order, as
// fs.ReadDirFile says.
func (d *dir) ReadDir(n int) ([]fs.DirEntry, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	rest := d.d.entries[d.off:]
	if n > 0 {
		if len(rest) == 0 {
			return nil, io.EOF
		}
		rest = rest[:min(n, len(rest))]
	}
	d.off += len(rest)
	l := make([]fs.DirEntry, len(rest))
	for i, e := range rest {
		l[i] = &dirEntry{fs: d.fs, e: e}
	}
	return l, nil
}

// special is an open device node, FIFO or socket: it has information but
// no data to read.
type special struct {
	name string
	info *fileInfo
}

func (s *special) Stat() (fs.FileInfo, error) { return s.info, nil }
func (s *special) Close() error               { return nil }
func (s *special) Read([]byte) (int, error) {
	return 0, pathErr("read", s.name, disk.Errorf(disk.ErrNotSupported, "xfs: not a regular file"))
}

func (s *special) ReadAt([]byte, int64) (int, error) { return s.Read(nil) }
func (s *special) Seek(int64, int) (int64, error)    { return 0, nil }

var _ inode.File = (*special)(nil)

// File is an open regular file. ReadAt is safe for concurrent use; Read
// and Seek share one offset.
type File struct {
	fs   *FS
	name string
	info *fileInfo
	size int64
	ext  []extent

	mu  sync.Mutex
	off int64
}

var _ inode.File = (*File)(nil)

// Stat returns the file's information.
func (f *File) Stat() (fs.FileInfo, error) { return f.info, nil }

// Close does nothing: a File holds no resources.
func (f *File) Close() error { return nil }

// ReadAt reads the file's data, one request per extent it covers; holes
// and unwritten extents read as zeros.
func (f *File) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, pathErr("read", f.name, disk.Errorf(disk.ErrInvalid, "xfs: negative offset"))
	}
	if off >= f.size {
		return 0, io.EOF
	}
	n := int(min(int64(len(p)), f.size-off))
	if err := f.fs.readFork(f.ext, p[:n], off); err != nil {
		return 0, pathErr("read", f.name, err)
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// Read reads from the file's offset.
func (f *File) Read(p []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	n, err := f.ReadAt(p, f.off)
	f.off += int64(n)
	if err == io.EOF && n > 0 {
		err = nil
	}
	return n, err
}

// Seek sets the offset for the next Read.
func (f *File) Seek(offset int64, whence int) (int64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	offset, ok := inode.SeekOffset(f.off, f.size, offset, whence)
	if !ok {
		return 0, pathErr("seek", f.name, disk.Errorf(disk.ErrInvalid, "xfs: bad seek (whence %d)", whence))
	}
	f.off = offset
	return offset, nil
}
