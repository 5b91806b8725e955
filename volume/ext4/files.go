package ext4

import (
	"io"
	"io/fs"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/vdisk-project/vdisk/disk"
	"github.com/vdisk-project/vdisk/volume/inode"
)

// resolve finds the inode of name, following symbolic links in the middle
// of the path, and at its end when follow is set. ".." in a link's target
// goes up the directories actually walked through, never above the root;
// an absolute target starts again from the root.
func (f *FS) resolve(op, name string, follow bool) (*node, error) {
	if !fs.ValidPath(name) {
		return nil, &fs.PathError{Op: op, Path: name, Err: fs.ErrInvalid}
	}
	n, err := f.walk(name, follow)
	if err != nil {
		return nil, &fs.PathError{Op: op, Path: name, Err: err}
	}
	return n, nil
}

func (f *FS) walk(name string, follow bool) (*node, error) {
	root, err := f.node(rootIno)
	if err != nil {
		return nil, err
	}
	if !root.isDir() {
		return nil, corrupt("the root inode is not a directory")
	}
	stack := []*node{root}
	var rest []string // components still to walk, last first
	if name != "." {
		rest = strings.Split(name, "/")
		slices.Reverse(rest)
	}
	links := 0
	for len(rest) > 0 {
		c := rest[len(rest)-1]
		rest = rest[:len(rest)-1]
		switch c {
		case "", ".":
			continue
		case "..":
			if len(stack) > 1 {
				stack = stack[:len(stack)-1]
			}
			continue
		}
		dir := stack[len(stack)-1]
		if !dir.isDir() {
			return nil, disk.Errorf(disk.ErrNotFound, "not a directory")
		}
		e, err := f.lookup(dir, c)
		if err != nil {
			return nil, err
		}
		n, err := f.node(e.ino)
		if err != nil {
			return nil, err
		}
		if n.typ() == sIFLNK && (len(rest) > 0 || follow) {
			if links++; links > maxLinks {
				return nil, corrupt("more than %d symbolic links in a path", maxLinks)
			}
			t, err := f.readlink(n)
			if err != nil {
				return nil, err
			}
			if strings.HasPrefix(t, "/") {
				stack = stack[:1]
			}
			parts := strings.Split(t, "/")
			slices.Reverse(parts)
			rest = append(rest, parts...)
			continue
		}
		if n.isDir() {
			// A directory walked through must name dir as its
			// parent (see checkChild); the last one may be damaged
			// and still be stat'ed.
			if err := f.checkChild(dir, n, len(rest) > 0); err != nil {
				return nil, err
			}
		}
		stack = append(stack, n)
	}
	return stack[len(stack)-1], nil
}

// fileInfo is an fs.FileInfo whose Sys is an *inode.Stat.
type fileInfo struct {
	name string
	st   inode.Stat
}

func (fi *fileInfo) Name() string       { return fi.name }
func (fi *fileInfo) Size() int64        { return fi.st.Size }
func (fi *fileInfo) Mode() fs.FileMode  { return fi.st.Mode }
func (fi *fileInfo) ModTime() time.Time { return fi.st.Mtime }
func (fi *fileInfo) IsDir() bool        { return fi.st.Mode.IsDir() }
func (fi *fileInfo) Sys() any           { st := fi.st; return &st }

func (f *FS) info(name string, n *node) (*fileInfo, error) {
	st, err := f.stat(n)
	if err != nil {
		return nil, err
	}
	return &fileInfo{name: name, st: st}, nil
}

func baseName(name string) string {
	if name == "." {
		return "."
	}
	return path.Base(name)
}

// Stat returns the file information of name, following symbolic links.
func (f *FS) Stat(name string) (fs.FileInfo, error) { return f.statName("stat", name, true) }

// Lstat returns the file information of name without following a final
// symbolic link.
func (f *FS) Lstat(name string) (fs.FileInfo, error) { return f.statName("lstat", name, false) }

func (f *FS) statName(op, name string, follow bool) (fs.FileInfo, error) {
	n, err := f.resolve(op, name, follow)
	if err != nil {
		return nil, err
	}
	fi, err := f.info(baseName(name), n)
	if err != nil {
		return nil, &fs.PathError{Op: op, Path: name, Err: err}
	}
	return fi, nil
}

// ReadLink returns the target of the symbolic link name, as stored.
func (f *FS) ReadLink(name string) (string, error) {
	n, err := f.resolve("readlink", name, false)
	if err != nil {
		return "", err
	}
	if n.typ() != sIFLNK {
		return "", &fs.PathError{Op: "readlink", Path: name, Err: disk.Errorf(disk.ErrInvalid, "not a symbolic link")}
	}
	t, err := f.readlink(n)
	if err != nil {
		return "", &fs.PathError{Op: "readlink", Path: name, Err: err}
	}
	return t, nil
}

// ReadDir lists the directory name, sorted by file name.
func (f *FS) ReadDir(name string) ([]fs.DirEntry, error) {
	n, err := f.resolve("readdir", name, true)
	if err != nil {
		return nil, err
	}
	d := &dir{f: f, n: n, name: name}
	ents, err := d.ReadDir(-1)
	if err != nil {
		return nil, err
	}
	slices.SortFunc(ents, func(a, b fs.DirEntry) int { return strings.Compare(a.Name(), b.Name()) })
	return ents, nil
}

// Open opens name (following symbolic links): a directory gives an
// fs.ReadDirFile, anything else an [inode.File] (device nodes, fifos and
// sockets read as empty). An encrypted file or directory gives an error
// matching disk.ErrNotSupported.
func (f *FS) Open(name string) (fs.File, error) {
	n, err := f.resolve("open", name, true)
	if err != nil {
		return nil, err
	}
	fi, err := f.info(baseName(name), n)
	if err == nil && n.has(flagEncrypt) {
		err = unsupported("inode %d is encrypted", n.ino)
	}
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: name, Err: err}
	}
	if n.isDir() {
		return &dir{f: f, n: n, name: name, fi: fi}, nil
	}
	return &file{f: f, n: n, name: name, fi: fi}, nil
}

// file is an open file.
type file struct {
	f    *FS
	n    *node
	name string
	fi   *fileInfo
	off  int64 // for Read and Seek

	rbuf    []byte // what the last small Read read ahead, from rbufOff
	rbufOff int64
}

var _ inode.File = (*file)(nil)

func (fl *file) Stat() (fs.FileInfo, error) { return fl.fi, nil }
func (fl *file) Close() error               { return nil }

func (fl *file) wrap(err error) error {
	if err == nil || err == io.EOF {
		return err
	}
	return &fs.PathError{Op: "read", Path: fl.name, Err: err}
}

// ReadAt reads the file's bytes at off. It is safe for concurrent use.
func (fl *file) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, &fs.PathError{Op: "read", Path: fl.name, Err: disk.Errorf(disk.ErrInvalid, "negative offset")}
	}
	if fl.n.typ() != sIFREG {
		return 0, io.EOF
	}
	n, err := fl.f.readData(fl.n, p, off)
	return n, fl.wrap(err)
}

// readAhead is how much a small Read reads at once, for the Reads that
// follow.
const readAhead = 64 << 10

func (fl *file) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if len(p) < readAhead && fl.n.typ() == sIFREG {
		if fl.off < fl.rbufOff || fl.off >= fl.rbufOff+int64(len(fl.rbuf)) {
			if fl.rbuf == nil {
				fl.rbuf = make([]byte, readAhead)
			}
			n, err := fl.ReadAt(fl.rbuf[:cap(fl.rbuf)], fl.off)
			fl.rbuf, fl.rbufOff = fl.rbuf[:n], fl.off
			if n == 0 {
				return 0, err
			}
		}
		n := copy(p, fl.rbuf[fl.off-fl.rbufOff:])
		fl.off += int64(n)
		return n, nil
	}
	n, err := fl.ReadAt(p, fl.off)
	fl.off += int64(n)
	if err == io.EOF && n > 0 {
		err = nil
	}
	return n, err
}

// copyBuf is how much WriteTo reads at a time.
const copyBuf = 1 << 20

// WriteTo copies the rest of the file to w in large reads (io.Copy uses
// it).
func (fl *file) WriteTo(w io.Writer) (int64, error) {
	if fl.off >= fl.n.size || fl.n.typ() != sIFREG {
		return 0, nil
	}
	buf := make([]byte, min(fl.n.size-fl.off, copyBuf))
	var total int64
	for {
		n, err := fl.ReadAt(buf, fl.off)
		if n > 0 {
			m, werr := w.Write(buf[:n])
			fl.off += int64(m)
			total += int64(m)
			if werr != nil {
				return total, werr
			}
		}
		if err == io.EOF {
			return total, nil
		}
		if err != nil {
			return total, err
		}
	}
}

func (fl *file) Seek(offset int64, whence int) (int64, error) {
	offset, ok := inode.SeekOffset(fl.off, fl.fi.st.Size, offset, whence)
	if !ok {
		return 0, &fs.PathError{Op: "seek", Path: fl.name, Err: disk.Errorf(disk.ErrInvalid, "bad seek")}
	}
	fl.off = offset
	return offset, nil
}

// dir is an open directory.
type dir struct {
	f    *FS
	n    *node
	name string
	fi   *fileInfo
	it   *dirIter
}

var _ fs.ReadDirFile = (*dir)(nil)

func (d *dir) Stat() (fs.FileInfo, error) { return d.fi, nil }
func (d *dir) Close() error               { return nil }

var errIsDir = disk.Errorf(disk.ErrInvalid, "is a directory")

func (d *dir) Read([]byte) (int, error) {
	return 0, &fs.PathError{Op: "read", Path: d.name, Err: errIsDir}
}

func (d *dir) ReadAt([]byte, int64) (int, error) { return d.Read(nil) }

// Seek to the start rewinds ReadDir; nothing else is allowed.
func (d *dir) Seek(offset int64, whence int) (int64, error) {
	if offset != 0 || whence != io.SeekStart {
		return 0, &fs.PathError{Op: "seek", Path: d.name, Err: errIsDir}
	}
	d.it = nil
	return 0, nil
}

// ReadDir returns the directory's next entries in on-disk order.
func (d *dir) ReadDir(count int) ([]fs.DirEntry, error) {
	if d.it == nil {
		it, err := d.f.openDir(d.n)
		if err != nil {
			return nil, &fs.PathError{Op: "readdir", Path: d.name, Err: err}
		}
		d.it = it
	}
	ents, err := d.it.next(count)
	out := make([]fs.DirEntry, 0, len(ents))
	for _, e := range ents {
		de := &dirEntry{f: d.f, d: e}
		if t, ok := direntMode(e.typ); ok {
			de.mode = t
		} else {
			// No file type in the entry: the inode has it.
			if n, nerr := d.f.node(e.ino); nerr == nil {
				de.mode = fileMode(n.mode).Type()
			} else {
				de.mode = fs.ModeIrregular
			}
		}
		out = append(out, de)
	}
	if err != nil {
		return out, &fs.PathError{Op: "readdir", Path: d.name, Err: err}
	}
	if count > 0 && len(out) == 0 {
		return out, io.EOF
	}
	return out, nil
}

// dirEntry is an fs.DirEntry; Info reads the inode.
type dirEntry struct {
	f    *FS
	d    dirent
	mode fs.FileMode
}

func (e *dirEntry) Name() string      { return e.d.name }
func (e *dirEntry) IsDir() bool       { return e.mode.IsDir() }
func (e *dirEntry) Type() fs.FileMode { return e.mode }

func (e *dirEntry) Info() (fs.FileInfo, error) {
	n, err := e.f.node(e.d.ino)
	if err == nil {
		var fi *fileInfo
		if fi, err = e.f.info(e.d.name, n); err == nil {
			return fi, nil
		}
	}
	return nil, &fs.PathError{Op: "stat", Path: e.d.name, Err: err}
}

func (e *dirEntry) String() string { return fs.FormatDirEntry(e) }
