// Package mount serves filesystems read by package volume's readers as a
// read-only FUSE filesystem, one top-level directory per volume, through
// hanwen/go-fuse. It needs /dev/fuse and either root (it calls mount(2)
// itself) or fusermount3; it needs no loop device, no kernel filesystem
// module and no device-mapper.
package mount

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"sort"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/vdisk-project/vdisk/disk"
	"github.com/vdisk-project/vdisk/volume/inode"
)

// Volume is one filesystem to serve under Name (a single path element).
type Volume struct {
	Name string
	FS   inode.FS
}

// Options tune a mount.
type Options struct {
	// FsName is what mount(8) and df show as the source ("vdisk" when empty).
	FsName string
	// AllowOther lets users other than the one mounting read the tree
	// (the kernel still checks each file's mode and owner).
	AllowOther bool
	// Debug logs every FUSE request.
	Debug bool
}

// Server is a live mount.
type Server struct {
	srv *fuse.Server
	dir string
}

// Mount serves vols under dir, read-only. Names must be distinct, valid
// single path elements. The mount is live when Mount returns.
func Mount(dir string, vols []Volume, opts Options) (*Server, error) {
	seen := map[string]bool{}
	for _, v := range vols {
		if v.Name == "" || v.Name == "." || v.Name == ".." || !fs.ValidPath(v.Name) || path.Base(v.Name) != v.Name {
			return nil, &disk.Error{Op: "mount", Path: v.Name, Code: disk.ErrInvalid, Err: errors.New("mount: a volume name must be one path element")}
		}
		if seen[v.Name] {
			return nil, &disk.Error{Op: "mount", Path: v.Name, Code: disk.ErrInvalid, Err: errors.New("mount: two volumes have the same name")}
		}
		seen[v.Name] = true
	}
	root := &top{vols: vols}
	long := time.Hour // the tree never changes under us
	fsName := opts.FsName
	if fsName == "" {
		fsName = "vdisk"
	}
	o := &gofs.Options{
		EntryTimeout:    &long,
		AttrTimeout:     &long,
		NegativeTimeout: &long,
		MountOptions: fuse.MountOptions{
			FsName:       fsName,
			Name:         "vdisk",
			Options:      []string{"ro", "default_permissions"},
			AllowOther:   opts.AllowOther,
			DirectMount:  true,
			MaxReadAhead: 1 << 20,
			MaxWrite:     1 << 20,
			Debug:        opts.Debug,
		},
		NullPermissions: true,
	}
	srv, err := gofs.Mount(dir, root, o)
	if err != nil {
		return nil, fmt.Errorf("mount: %s: %w", dir, err)
	}
	return &Server{srv: srv, dir: dir}, nil
}

// Wait blocks until the filesystem is unmounted (by Unmount, `vdisk
// umount`, fusermount3 -u or umount(8)).
func (s *Server) Wait() { s.srv.Wait() }

// Unmount detaches the mount. It fails with an error matching
// disk.ErrBusy while a process has a file open or its working directory
// inside it.
func (s *Server) Unmount() error {
	if err := s.srv.Unmount(); err != nil {
		if errors.Is(err, syscall.EBUSY) {
			return &disk.Error{Op: "unmount", Path: s.dir, Code: disk.ErrBusy, Err: err}
		}
		return fmt.Errorf("mount: unmount %s: %w", s.dir, err)
	}
	return nil
}

// top is the root directory: one entry per volume.
type top struct {
	gofs.Inode
	vols []Volume
}

var (
	_ gofs.NodeOnAdder   = (*top)(nil)
	_ gofs.NodeGetattrer = (*top)(nil)
	_ gofs.NodeStatfser  = (*top)(nil)
)

func (t *top) OnAdd(ctx context.Context) {
	for i, v := range t.vols {
		n := &node{fsys: v.FS, name: ".", vol: uint64(i + 1)}
		ch := t.NewPersistentInode(ctx, n, gofs.StableAttr{Mode: syscall.S_IFDIR, Ino: n.ino(rootIno(v.FS))})
		t.AddChild(v.Name, ch, false)
	}
}

func rootIno(f inode.FS) uint64 {
	fi, err := f.Stat(".")
	if err != nil {
		return 0
	}
	if st, ok := fi.Sys().(*inode.Stat); ok {
		return st.Ino
	}
	return 0
}

func (t *top) Getattr(ctx context.Context, fh gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	out.Mode = syscall.S_IFDIR | 0o555
	out.Nlink = uint32(2 + len(t.vols))
	return 0
}

func (t *top) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	var total, free int64
	for _, v := range t.vols {
		if s, err := v.FS.Statfs(); err == nil {
			total += s.TotalBytes
			free += s.FreeBytes
		}
	}
	out.Bsize = 4096
	out.Frsize = 4096
	out.Blocks = uint64(total / 4096)
	out.Bfree = uint64(free / 4096)
	out.Bavail = out.Bfree
	out.NameLen = 255
	return 0
}

// node is a file, directory or link inside one volume.
type node struct {
	gofs.Inode
	fsys inode.FS
	name string // fs name inside the volume
	vol  uint64 // 1-based volume index, to keep inode numbers distinct
}

var (
	_ gofs.NodeLookuper    = (*node)(nil)
	_ gofs.NodeReaddirer   = (*node)(nil)
	_ gofs.NodeGetattrer   = (*node)(nil)
	_ gofs.NodeOpener      = (*node)(nil)
	_ gofs.NodeReader      = (*node)(nil)
	_ gofs.NodeReadlinker  = (*node)(nil)
	_ gofs.NodeGetxattrer  = (*node)(nil)
	_ gofs.NodeListxattrer = (*node)(nil)
	_ gofs.NodeStatfser    = (*node)(nil)
	_ gofs.NodeReleaser    = (*node)(nil)
)

// ino gives a volume's inode number a range of its own (0 lets go-fuse
// number it: filesystems such as FAT have no inode numbers).
func (n *node) ino(i uint64) uint64 {
	if i == 0 || i >= 1<<48 {
		return 0
	}
	return n.vol<<48 | i
}

func (n *node) child(name string) string {
	if n.name == "." {
		return name
	}
	return n.name + "/" + name
}

// errno maps a reader's error to what the kernel passes to the process.
func errno(err error) syscall.Errno {
	var en syscall.Errno
	switch {
	case err == nil:
		return 0
	case errors.As(err, &en):
		return en
	case errors.Is(err, fs.ErrNotExist):
		return syscall.ENOENT
	case errors.Is(err, fs.ErrInvalid):
		return syscall.EINVAL
	case errors.Is(err, disk.ErrNotSupported):
		return syscall.EOPNOTSUPP
	case errors.Is(err, fs.ErrPermission):
		return syscall.EACCES
	case errors.Is(err, disk.ErrOutOfMemory):
		return syscall.ENOMEM
	case errors.Is(err, context.Canceled):
		return syscall.EINTR
	}
	return syscall.EIO // corrupt structures and failed reads alike
}

func modeBits(m fs.FileMode) uint32 {
	b := uint32(m.Perm())
	if m&fs.ModeSetuid != 0 {
		b |= syscall.S_ISUID
	}
	if m&fs.ModeSetgid != 0 {
		b |= syscall.S_ISGID
	}
	if m&fs.ModeSticky != 0 {
		b |= syscall.S_ISVTX
	}
	switch {
	case m.IsDir():
		b |= syscall.S_IFDIR
	case m&fs.ModeSymlink != 0:
		b |= syscall.S_IFLNK
	case m&fs.ModeNamedPipe != 0:
		b |= syscall.S_IFIFO
	case m&fs.ModeSocket != 0:
		b |= syscall.S_IFSOCK
	case m&fs.ModeCharDevice != 0:
		b |= syscall.S_IFCHR
	case m&fs.ModeDevice != 0:
		b |= syscall.S_IFBLK
	default:
		b |= syscall.S_IFREG
	}
	return b
}

func (n *node) fill(fi fs.FileInfo, a *fuse.Attr) {
	a.Mode = modeBits(fi.Mode())
	a.Size = uint64(max(fi.Size(), 0))
	a.Nlink = 1
	if fi.IsDir() {
		a.Nlink = 2
	}
	mt := fi.ModTime()
	a.SetTimes(&mt, &mt, &mt)
	st, ok := fi.Sys().(*inode.Stat)
	if !ok {
		a.Blocks = (a.Size + 511) / 512
		return
	}
	a.Ino = n.ino(st.Ino)
	if st.Nlink > 0 {
		a.Nlink = st.Nlink
	}
	a.Uid, a.Gid = st.UID, st.GID
	a.Blocks = uint64(max(st.Blocks, 0)+511) / 512
	a.Rdev = uint32(st.Rdev)
	at, ct := st.Atime, st.Ctime
	if at.IsZero() {
		at = mt
	}
	if ct.IsZero() {
		ct = mt
	}
	a.SetTimes(&at, &mt, &ct)
	a.Blksize = 4096
}

func (n *node) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	p := n.child(name)
	fi, err := n.fsys.Lstat(p)
	if err != nil {
		return nil, errno(err)
	}
	ch := &node{fsys: n.fsys, name: p, vol: n.vol}
	ch.fill(fi, &out.Attr)
	return n.NewInode(ctx, ch, gofs.StableAttr{Mode: modeBits(fi.Mode()) & syscall.S_IFMT, Ino: out.Attr.Ino}), 0
}

func (n *node) Getattr(ctx context.Context, fh gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	fi, err := n.fsys.Lstat(n.name)
	if err != nil {
		return errno(err)
	}
	n.fill(fi, &out.Attr)
	return 0
}

func (n *node) Readdir(ctx context.Context) (gofs.DirStream, syscall.Errno) {
	es, err := n.fsys.ReadDir(n.name)
	if err != nil {
		return nil, errno(err)
	}
	list := make([]fuse.DirEntry, 0, len(es))
	for _, e := range es {
		de := fuse.DirEntry{Name: e.Name(), Mode: modeBits(e.Type())}
		if fi, err := e.Info(); err == nil {
			de.Mode = modeBits(fi.Mode())
			if st, ok := fi.Sys().(*inode.Stat); ok {
				de.Ino = n.ino(st.Ino)
			}
		}
		list = append(list, de)
	}
	sort.Slice(list, func(i, j int) bool { return list[i].Name < list[j].Name })
	return gofs.NewListDirStream(list), 0
}

func (n *node) Readlink(ctx context.Context) ([]byte, syscall.Errno) {
	t, err := n.fsys.ReadLink(n.name)
	if err != nil {
		return nil, errno(err)
	}
	return []byte(t), 0
}

// handle is an open file.
type handle struct{ f inode.File }

func (n *node) Open(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	if flags&(syscall.O_WRONLY|syscall.O_RDWR|syscall.O_TRUNC|syscall.O_APPEND) != 0 {
		return nil, 0, syscall.EROFS
	}
	f, err := n.fsys.Open(n.name)
	if err != nil {
		return nil, 0, errno(err)
	}
	r, ok := f.(inode.File)
	if !ok {
		f.Close()
		return nil, 0, syscall.EISDIR
	}
	return &handle{f: r}, fuse.FOPEN_KEEP_CACHE, 0
}

func (n *node) Read(ctx context.Context, fh gofs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	h, ok := fh.(*handle)
	if !ok {
		return nil, syscall.EBADF
	}
	m, err := h.f.ReadAt(dest, off)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, errno(err)
	}
	return fuse.ReadResultData(dest[:m]), 0
}

func (n *node) Release(ctx context.Context, fh gofs.FileHandle) syscall.Errno {
	if h, ok := fh.(*handle); ok {
		h.f.Close()
	}
	return 0
}

func (n *node) xattrs() (map[string][]byte, syscall.Errno) {
	x, ok := n.fsys.(inode.XattrFS)
	if !ok {
		return nil, 0
	}
	m, err := x.Xattrs(n.name)
	if err != nil {
		return nil, errno(err)
	}
	return m, 0
}

func (n *node) Getxattr(ctx context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	m, e := n.xattrs()
	if e != 0 {
		return 0, e
	}
	v, ok := m[attr]
	if !ok {
		return 0, syscall.ENODATA
	}
	if len(dest) < len(v) {
		return uint32(len(v)), syscall.ERANGE
	}
	return uint32(copy(dest, v)), 0
}

func (n *node) Listxattr(ctx context.Context, dest []byte) (uint32, syscall.Errno) {
	m, e := n.xattrs()
	if e != 0 {
		return 0, e
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b []byte
	for _, k := range keys {
		b = append(b, k...)
		b = append(b, 0)
	}
	if len(dest) < len(b) {
		return uint32(len(b)), syscall.ERANGE
	}
	return uint32(copy(dest, b)), 0
}

func (n *node) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	s, err := n.fsys.Statfs()
	if err != nil {
		return errno(err)
	}
	bs := max(s.BlockSize, 512)
	out.Bsize = uint32(bs)
	out.Frsize = uint32(bs)
	out.Blocks = uint64(s.TotalBytes / bs)
	out.Bfree = uint64(s.FreeBytes / bs)
	out.Bavail = out.Bfree
	out.Files = uint64(s.TotalInodes)
	out.Ffree = uint64(s.FreeInodes)
	out.NameLen = 255
	return 0
}
