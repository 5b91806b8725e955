// Package inodetest gives tests an inode.FS over a host directory, so that
// the layers above the filesystem readers (mount, extract) can be tested
// against a tree the kernel describes.
package inodetest

import (
	"io"
	"io/fs"
	"os"
	"path"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vdisk-project/vdisk/volume/inode"
)

// DirFS is an inode.FS and inode.XattrFS over the host directory Root.
// Unlike os.DirFS, its FileInfo.Sys() is an *inode.Stat, symbolic links
// resolve inside Root, and its files implement inode.File.
type DirFS struct {
	Root string
	// FSType, FSLabel and FSUUID are what Type, Label and UUID return.
	FSType, FSLabel, FSUUID string
}

var (
	_ inode.FS      = (*DirFS)(nil)
	_ inode.XattrFS = (*DirFS)(nil)
)

// New returns a DirFS over dir of type "test".
func New(dir string) *DirFS { return &DirFS{Root: dir, FSType: "test"} }

func (d *DirFS) Type() string  { return d.FSType }
func (d *DirFS) Label() string { return d.FSLabel }
func (d *DirFS) UUID() string  { return d.FSUUID }

// Statfs implements inode.FS.
func (d *DirFS) Statfs() (inode.Statfs, error) {
	var s unix.Statfs_t
	if err := unix.Statfs(d.Root, &s); err != nil {
		return inode.Statfs{}, err
	}
	return inode.Statfs{
		BlockSize: s.Bsize, TotalBytes: int64(s.Blocks) * s.Bsize, FreeBytes: int64(s.Bfree) * s.Bsize,
		TotalInodes: int64(s.Files), FreeInodes: int64(s.Ffree),
	}, nil
}

// resolve turns an fs name into a host path, following symbolic links
// inside Root (all of them when follow, all but the last otherwise).
func (d *DirFS) resolve(op, name string, follow bool) (string, error) {
	if !fs.ValidPath(name) {
		return "", &fs.PathError{Op: op, Path: name, Err: fs.ErrInvalid}
	}
	parts := []string{}
	if name != "." {
		parts = strings.Split(name, "/")
	}
	cur := ""
	links := 0
	for len(parts) > 0 {
		p := parts[0]
		parts = parts[1:]
		switch p {
		case ".", "":
			continue
		case "..":
			cur = path.Dir(cur)
			if cur == "." {
				cur = ""
			}
			continue
		}
		next := path.Join(cur, p)
		if len(parts) == 0 && !follow {
			cur = next
			break
		}
		fi, err := os.Lstat(d.host(next))
		if err != nil {
			return "", &fs.PathError{Op: op, Path: name, Err: unwrap(err)}
		}
		if fi.Mode()&fs.ModeSymlink == 0 {
			cur = next
			continue
		}
		if links++; links > 40 {
			return "", &fs.PathError{Op: op, Path: name, Err: syscall.ELOOP}
		}
		t, err := os.Readlink(d.host(next))
		if err != nil {
			return "", &fs.PathError{Op: op, Path: name, Err: unwrap(err)}
		}
		if strings.HasPrefix(t, "/") {
			cur = ""
		}
		parts = append(strings.Split(t, "/"), parts...)
	}
	return d.host(cur), nil
}

func (d *DirFS) host(name string) string {
	if name == "" {
		return d.Root
	}
	return d.Root + "/" + name
}

func unwrap(err error) error {
	if pe, ok := err.(*fs.PathError); ok {
		return pe.Err
	}
	return err
}

type info struct {
	name string
	st   *inode.Stat
}

func (i *info) Name() string       { return i.name }
func (i *info) Size() int64        { return i.st.Size }
func (i *info) Mode() fs.FileMode  { return i.st.Mode }
func (i *info) ModTime() time.Time { return i.st.Mtime }
func (i *info) IsDir() bool        { return i.st.Mode.IsDir() }
func (i *info) Sys() any           { return i.st }

func stat(name, host string) (fs.FileInfo, error) {
	fi, err := os.Lstat(host)
	if err != nil {
		return nil, err
	}
	s := fi.Sys().(*syscall.Stat_t)
	st := &inode.Stat{
		Ino: s.Ino, Mode: fi.Mode(), Nlink: uint32(s.Nlink), UID: s.Uid, GID: s.Gid, Size: fi.Size(),
		Blocks: s.Blocks * 512,
		Atime:  time.Unix(s.Atim.Sec, s.Atim.Nsec), Mtime: time.Unix(s.Mtim.Sec, s.Mtim.Nsec),
		Ctime: time.Unix(s.Ctim.Sec, s.Ctim.Nsec), Rdev: s.Rdev,
	}
	if fi.Mode()&fs.ModeSymlink != 0 {
		st.Target, _ = os.Readlink(host)
	}
	if name == "." {
		name = path.Base(host)
	}
	return &info{name: path.Base(name), st: st}, nil
}

// Stat implements fs.StatFS.
func (d *DirFS) Stat(name string) (fs.FileInfo, error) {
	h, err := d.resolve("stat", name, true)
	if err != nil {
		return nil, err
	}
	fi, err := stat(name, h)
	if err != nil {
		return nil, &fs.PathError{Op: "stat", Path: name, Err: unwrap(err)}
	}
	return fi, nil
}

// Lstat implements fs.ReadLinkFS.
func (d *DirFS) Lstat(name string) (fs.FileInfo, error) {
	h, err := d.resolve("lstat", name, false)
	if err != nil {
		return nil, err
	}
	fi, err := stat(name, h)
	if err != nil {
		return nil, &fs.PathError{Op: "lstat", Path: name, Err: unwrap(err)}
	}
	return fi, nil
}

// ReadLink implements fs.ReadLinkFS.
func (d *DirFS) ReadLink(name string) (string, error) {
	h, err := d.resolve("readlink", name, false)
	if err != nil {
		return "", err
	}
	t, err := os.Readlink(h)
	if err != nil {
		return "", &fs.PathError{Op: "readlink", Path: name, Err: unwrap(err)}
	}
	return t, nil
}

// ReadDir implements fs.ReadDirFS, in the host's order.
func (d *DirFS) ReadDir(name string) ([]fs.DirEntry, error) {
	h, err := d.resolve("readdir", name, true)
	if err != nil {
		return nil, err
	}
	es, err := os.ReadDir(h)
	if err != nil {
		return nil, &fs.PathError{Op: "readdir", Path: name, Err: unwrap(err)}
	}
	out := make([]fs.DirEntry, 0, len(es))
	for _, e := range es {
		fi, err := stat(e.Name(), h+"/"+e.Name())
		if err != nil {
			return nil, &fs.PathError{Op: "readdir", Path: name, Err: unwrap(err)}
		}
		out = append(out, fs.FileInfoToDirEntry(fi))
	}
	return out, nil
}

// Xattrs implements inode.XattrFS.
func (d *DirFS) Xattrs(name string) (map[string][]byte, error) {
	h, err := d.resolve("xattrs", name, false)
	if err != nil {
		return nil, err
	}
	m := map[string][]byte{}
	buf := make([]byte, 64<<10)
	n, err := unix.Llistxattr(h, buf)
	if err != nil {
		return nil, &fs.PathError{Op: "xattrs", Path: name, Err: err}
	}
	for _, k := range strings.Split(string(buf[:n]), "\x00") {
		if k == "" {
			continue
		}
		v := make([]byte, 64<<10)
		vn, err := unix.Lgetxattr(h, k, v)
		if err != nil {
			return nil, &fs.PathError{Op: "xattrs", Path: name, Err: err}
		}
		m[k] = v[:vn]
	}
	return m, nil
}

// Open implements fs.FS.
func (d *DirFS) Open(name string) (fs.File, error) {
	h, err := d.resolve("open", name, true)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(h)
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: name, Err: unwrap(err)}
	}
	fi, err := stat(name, h)
	if err != nil {
		f.Close()
		return nil, &fs.PathError{Op: "open", Path: name, Err: unwrap(err)}
	}
	if fi.IsDir() {
		return &dir{File: f, d: d, name: name, fi: fi}, nil
	}
	return &file{File: f, fi: fi}, nil
}

type file struct {
	*os.File
	fi fs.FileInfo
}

func (f *file) Stat() (fs.FileInfo, error) { return f.fi, nil }

var _ inode.File = (*file)(nil)
var _ io.ReaderAt = (*file)(nil)

type dir struct {
	*os.File
	d    *DirFS
	name string
	fi   fs.FileInfo
	left []fs.DirEntry
	read bool
}

func (f *dir) Stat() (fs.FileInfo, error) { return f.fi, nil }

func (f *dir) ReadDir(n int) ([]fs.DirEntry, error) {
	if !f.read {
		es, err := f.d.ReadDir(f.name)
		if err != nil {
			return nil, err
		}
		f.left, f.read = es, true
	}
	if n <= 0 {
		es := f.left
		f.left = nil
		return es, nil
	}
	if len(f.left) == 0 {
		return nil, io.EOF
	}
	n = min(n, len(f.left))
	es := f.left[:n]
	f.left = f.left[n:]
	return es, nil
}
