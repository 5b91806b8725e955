package fat

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/vdisk-project/vdisk/disk"
	"github.com/vdisk-project/vdisk/volume/inode"
)

var _ inode.FS = (*FS)(nil)

// Type returns "vfat", blkid's name for every FAT variant.
func (f *FS) Type() string { return "vfat" }

// Variant returns the FAT's entry width: FAT12, FAT16 or FAT32.
func (f *FS) Variant() Variant { return f.variant }

// Label returns the volume label as blkid prints it: the root directory's
// label entry, else the boot sector's, "" for "NO NAME".
func (f *FS) Label() string { return f.label }

// UUID returns the volume serial number as blkid prints it (XXXX-XXXX).
func (f *FS) UUID() string { return fmt.Sprintf("%04X-%04X", f.serial>>16, f.serial&0xffff) }

// Statfs reports the data area's size and free space, in clusters
// (BlockSize is the cluster size). The free count is FAT32's FSInfo when
// valid, else counted in the FAT.
func (f *FS) Statfs() (inode.Statfs, error) {
	free, err := f.countFree()
	if err != nil {
		return inode.Statfs{}, err
	}
	return inode.Statfs{
		BlockSize:  f.clusterSize,
		TotalBytes: int64(f.clusters) * f.clusterSize,
		FreeBytes:  free * f.clusterSize,
	}, nil
}

func pathErr(op, name string, err error) error {
	return &fs.PathError{Op: op, Path: name, Err: err}
}

// rootEntry stands for the root directory.
var rootEntry = entry{name: ".", attr: attrDir}

// lookup finds name's entry. Directories along the way must not repeat
// (a subdirectory pointing to an ancestor is corrupt).
func (f *FS) lookup(op, name string) (entry, error) {
	if !fs.ValidPath(name) {
		return entry{}, pathErr(op, name, fs.ErrInvalid)
	}
	e := rootEntry
	if name == "." {
		return e, nil
	}
	var seen []uint32
	for elem := range strings.SplitSeq(name, "/") {
		if !e.isDir() {
			return entry{}, pathErr(op, name, disk.Errorf(disk.ErrNotFound, "fat: %s: not a directory", e.name))
		}
		es, err := f.readDir(e.cluster)
		if err != nil {
			return entry{}, pathErr(op, name, err)
		}
		seen = append(seen, e.cluster)
		i := slices.IndexFunc(es, func(x entry) bool { return x.attr != 0xff && x.name == elem })
		if i < 0 {
			// vfat looks names up without regard to case.
			i = slices.IndexFunc(es, func(x entry) bool { return x.attr != 0xff && strings.EqualFold(x.name, elem) })
		}
		if i < 0 {
			return entry{}, pathErr(op, name, fs.ErrNotExist)
		}
		e = es[i]
		if e.isDir() {
			if !f.valid(e.cluster) {
				return entry{}, pathErr(op, name, corrupt("directory %q at cluster %d out of range", e.name, e.cluster))
			}
			if slices.Contains(seen, e.cluster) || e.cluster == f.rootCluster {
				return entry{}, pathErr(op, name, corrupt("directory %q at cluster %d is its own ancestor", e.name, e.cluster))
			}
		}
	}
	return e, nil
}

// Open opens name: a [inode.File] for a regular file, an
// fs.ReadDirFile for a directory.
func (f *FS) Open(name string) (fs.File, error) {
	e, err := f.lookup("open", name)
	if err != nil {
		return nil, err
	}
	base := name
	if i := strings.LastIndexByte(name, '/'); i >= 0 {
		base = name[i+1:]
	}
	if e.isDir() {
		es, err := f.readDir(e.cluster)
		if err != nil {
			return nil, pathErr("open", name, err)
		}
		return &dir{info: f.info(e, base, es), entries: listed(f, es)}, nil
	}
	file := &File{fs: f, name: name, info: f.info(e, base, nil), size: e.size}
	if e.size > 0 {
		need := (e.size + f.clusterSize - 1) / f.clusterSize
		runs, n, err := f.chain(e.cluster, need)
		if err != nil {
			return nil, pathErr("open", name, err)
		}
		if n < need {
			return nil, pathErr("open", name, corrupt("cluster chain of %d clusters too short for %d bytes", n, e.size))
		}
		file.runs = runs
		file.starts = make([]int64, len(runs))
		var o int64
		for i, r := range runs {
			file.starts[i] = o
			o += int64(r.n) * f.clusterSize
		}
	}
	return file, nil
}

// Stat returns name's information (FAT has no symbolic links).
func (f *FS) Stat(name string) (fs.FileInfo, error) {
	e, err := f.lookup("stat", name)
	if err != nil {
		return nil, err
	}
	base := name
	if i := strings.LastIndexByte(name, '/'); i >= 0 {
		base = name[i+1:]
	}
	var es []entry
	if e.isDir() {
		if es, err = f.readDir(e.cluster); err != nil {
			return nil, pathErr("stat", name, err)
		}
	}
	return f.info(e, base, es), nil
}

// Lstat is Stat: FAT has no symbolic links.
func (f *FS) Lstat(name string) (fs.FileInfo, error) { return f.Stat(name) }

// ReadLink fails: FAT has no symbolic links, so an existing name gives
// an error matching fs.ErrInvalid.
func (f *FS) ReadLink(name string) (string, error) {
	if _, err := f.lookup("readlink", name); err != nil {
		return "", err
	}
	return "", pathErr("readlink", name, fs.ErrInvalid)
}

// ReadDir lists the directory name, sorted by name.
func (f *FS) ReadDir(name string) ([]fs.DirEntry, error) {
	e, err := f.lookup("readdir", name)
	if err != nil {
		return nil, err
	}
	if !e.isDir() {
		return nil, pathErr("readdir", name, errors.New("fat: not a directory"))
	}
	es, err := f.readDir(e.cluster)
	if err != nil {
		return nil, pathErr("readdir", name, err)
	}
	l := listed(f, es)
	slices.SortFunc(l, func(a, b fs.DirEntry) int { return strings.Compare(a.Name(), b.Name()) })
	return l, nil
}

func listed(f *FS, es []entry) []fs.DirEntry {
	l := make([]fs.DirEntry, 0, len(es))
	for _, e := range es {
		if e.attr != 0xff {
			l = append(l, dirEntry{f: f, e: e})
		}
	}
	return l
}

// info builds a file's information; es are a directory's entries, for its
// link count.
func (f *FS) info(e entry, name string, es []entry) *fileInfo {
	st := &inode.Stat{Nlink: 1, Size: e.size, Mtime: e.mtime, Ctime: e.mtime, Atime: e.atime, Btime: e.btime}
	if e.name == "." && e.attr == attrDir && e.cluster == 0 {
		st.Mtime, st.Ctime = time.Unix(0, 0).UTC(), time.Unix(0, 0).UTC()
	}
	if e.isDir() {
		st.Mode = fs.ModeDir | 0o755
		st.Nlink = 2
		for _, x := range es {
			if x.attr != 0xff && x.isDir() {
				st.Nlink++
			}
		}
		st.Blocks = 0
	} else {
		st.Mode = 0o755
		if e.attr&attrReadOnly != 0 {
			st.Mode = 0o555
		}
		st.Blocks = (e.size + f.clusterSize - 1) / f.clusterSize * f.clusterSize
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

type dirEntry struct {
	f *FS
	e entry
}

func (d dirEntry) Name() string { return d.e.name }
func (d dirEntry) IsDir() bool  { return d.e.isDir() }
func (d dirEntry) Type() fs.FileMode {
	if d.e.isDir() {
		return fs.ModeDir
	}
	return 0
}

func (d dirEntry) Info() (fs.FileInfo, error) {
	var es []entry
	if d.e.isDir() && d.f.valid(d.e.cluster) {
		var err error
		if es, err = d.f.readDir(d.e.cluster); err != nil {
			return nil, pathErr("stat", d.e.name, err)
		}
	}
	return d.f.info(d.e, d.e.name, es), nil
}

// dir is an open directory.
type dir struct {
	info    *fileInfo
	entries []fs.DirEntry
	mu      sync.Mutex
	off     int
}

func (d *dir) Stat() (fs.FileInfo, error) { return d.info, nil }
func (d *dir) Close() error               { return nil }
func (d *dir) Read([]byte) (int, error) {
	return 0, pathErr("read", d.info.name, errors.New("fat: is a directory"))
}

// ReadDir returns the next n entries in directory order, as
// fs.ReadDirFile says.
func (d *dir) ReadDir(n int) ([]fs.DirEntry, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	rest := d.entries[d.off:]
	if n <= 0 {
		d.off = len(d.entries)
		return slices.Clone(rest), nil
	}
	if len(rest) == 0 {
		return nil, io.EOF
	}
	k := min(n, len(rest))
	d.off += k
	return slices.Clone(rest[:k]), nil
}

// File is an open regular file. ReadAt is safe for concurrent use; Read
// and Seek share one offset.
type File struct {
	fs     *FS
	name   string
	info   *fileInfo
	size   int64
	runs   []run
	starts []int64 // each run's offset in the file

	mu  sync.Mutex
	off int64
}

var _ inode.File = (*File)(nil)

// Stat returns the file's information.
func (f *File) Stat() (fs.FileInfo, error) { return f.info, nil }

// Close does nothing: a File holds no resources.
func (f *File) Close() error { return nil }

// ReadAt reads from the file's clusters, one request per run of
// consecutive clusters.
func (f *File) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, pathErr("read", f.name, disk.Errorf(disk.ErrInvalid, "fat: negative offset"))
	}
	if off >= f.size {
		return 0, io.EOF
	}
	want := len(p)
	if int64(want) > f.size-off {
		p = p[:f.size-off]
	}
	n := 0
	cs := f.fs.clusterSize
	// The run holding off: starts[i] is run i's file offset.
	i, found := slices.BinarySearch(f.starts, off)
	if !found {
		i--
	}
	for ; i < len(f.runs) && len(p) > 0; i++ {
		r, start := f.runs[i], f.starts[i]
		end := start + int64(r.n)*cs
		k := min(int64(len(p)), end-off)
		if err := f.fs.readData(p[:k], f.fs.clusterOff(r.first)+off-start); err != nil {
			return n, pathErr("read", f.name, err)
		}
		p, off, n = p[k:], off+k, n+int(k)
	}
	if n < want {
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
		return 0, pathErr("seek", f.name, disk.Errorf(disk.ErrInvalid, "fat: bad seek (whence %d)", whence))
	}
	f.off = offset
	return offset, nil
}
