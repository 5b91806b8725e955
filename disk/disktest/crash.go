package disktest

import (
	"bytes"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path"
	"sort"
	"sync"
	"syscall"
	"time"

	"github.com/vdisk-project/vdisk/disk"
)

// CrashFS is an in-memory disk.FS that remembers which writes were made
// durable by Sync. Crash returns the filesystem as a power cut could leave
// it: every synced byte, plus an arbitrary subset of the unsynced writes,
// torn at 512-byte sector granularity and applied in any combination. Use it
// to prove that a format survives a crash at any point. Safe for concurrent
// use. Files are keyed by cleaned path; directories are implicit.
//
// Directory entries are modelled as well: creating, renaming and removing
// a name changes its directory, and such changes survive a crash only once
// SyncDir has been called on that directory. Until then a crash image
// keeps some prefix (possibly empty) of each directory's unsynced changes,
// in order, so it may still bind a name to its old file, or to none. File
// content belongs to the file, not the name: it survives under whatever
// name the crash image binds to the file.
type CrashFS struct {
	mu    sync.Mutex
	files map[string]*crashFile // the current names
	// synced binds the names as of each directory's last SyncDir; dirOps
	// holds each directory's changes since, in order.
	synced map[string]*crashFile
	dirOps map[string][]dirOp
	// Budget, when positive, is the number of bytes of file content the
	// filesystem holds before writes fail with ENOSPC.
	Budget int64

	ops      int        // mutating operations so far
	crashAt  int        // take a crash image after this many, when > 0
	crashRng *rand.Rand // decides what the crash image keeps
	crashed  *CrashFS
}

// CrashAfter arranges for a crash image to be taken right after the nth
// mutating operation (write, truncate, sync, and the creation, renaming or
// removal of a name, and SyncDir) from now; Crashed returns it.
// This simulates a power cut in the middle of a multi-step operation such
// as a metadata flush.
func (c *CrashFS) CrashAfter(n int, rng *rand.Rand) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.crashAt, c.crashRng, c.crashed = c.ops+n, rng, nil
}

// Crashed returns the image taken by CrashAfter, or nil if fewer
// operations have happened.
func (c *CrashFS) Crashed() *CrashFS {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.crashed
}

// tick counts a mutating operation; the caller holds c.mu.
func (c *CrashFS) tick() {
	c.ops++
	if c.crashAt > 0 && c.ops == c.crashAt {
		c.crashed = c.crashLocked(c.crashRng)
	}
}

// dirOp is one atomic change to a directory: each name in names becomes
// bound to the file at the same index, or unbound where that is nil.
type dirOp struct {
	names []string
	files []*crashFile
}

type crashOp struct {
	off  int64 // -1 for a truncate
	data []byte
	size int64 // truncate size
}

type crashFile struct {
	durable []byte
	current []byte
	pending []crashOp
	mtime   time.Time
}

// NewCrashFS returns an empty CrashFS.
func NewCrashFS() *CrashFS {
	return &CrashFS{files: make(map[string]*crashFile), synced: make(map[string]*crashFile), dirOps: make(map[string][]dirOp)}
}

// bindLocked records that the names become bound to files (nil: unbound)
// in one atomic directory change per directory; the caller holds c.mu.
func (c *CrashFS) bindLocked(names []string, files []*crashFile) {
	byDir := map[string]*dirOp{}
	var dirs []string
	for i, n := range names {
		if files[i] == nil {
			delete(c.files, n)
		} else {
			c.files[n] = files[i]
		}
		d := path.Dir(n)
		op := byDir[d]
		if op == nil {
			op = &dirOp{}
			byDir[d] = op
			dirs = append(dirs, d)
		}
		op.names = append(op.names, n)
		op.files = append(op.files, files[i])
	}
	for _, d := range dirs {
		c.dirOps[d] = append(c.dirOps[d], *byDir[d])
	}
	c.tick()
}

// SyncDir makes the entries of directory dir durable.
func (c *CrashFS) SyncDir(dir string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	dir = path.Clean(dir)
	for _, op := range c.dirOps[dir] {
		applyDirOp(c.synced, op)
	}
	delete(c.dirOps, dir)
	c.tick()
	return nil
}

func applyDirOp(names map[string]*crashFile, op dirOp) {
	for i, n := range op.names {
		if op.files[i] == nil {
			delete(names, n)
		} else {
			names[n] = op.files[i]
		}
	}
}

// UnsyncedDirs returns the directories holding entry changes that no
// SyncDir has made durable yet, sorted.
func (c *CrashFS) UnsyncedDirs() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var dirs []string
	for d, ops := range c.dirOps {
		if len(ops) > 0 {
			dirs = append(dirs, d)
		}
	}
	sort.Strings(dirs)
	return dirs
}

// OpenFile opens or creates a file. O_CREATE, O_EXCL and O_TRUNC are
// honoured; a new file's name is durable once its directory is synced.
func (c *CrashFS) OpenFile(name string, flag int, _ fs.FileMode) (disk.File, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	name = path.Clean(name)
	f, ok := c.files[name]
	switch {
	case !ok && flag&os.O_CREATE == 0:
		return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrNotExist}
	case ok && flag&os.O_CREATE != 0 && flag&os.O_EXCL != 0:
		return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrExist}
	case !ok:
		f = &crashFile{mtime: time.Unix(0, 0)}
		c.bindLocked([]string{name}, []*crashFile{f})
	}
	h := &crashHandle{fs: c, f: f, name: name, ro: flag&(os.O_WRONLY|os.O_RDWR) == 0}
	if flag&os.O_TRUNC != 0 && !h.ro {
		if err := h.truncateLocked(0); err != nil {
			return nil, err
		}
	}
	return h, nil
}

// Remove deletes a file; the removal is durable once its directory is
// synced.
func (c *CrashFS) Remove(name string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	name = path.Clean(name)
	if _, ok := c.files[name]; !ok {
		return &fs.PathError{Op: "remove", Path: name, Err: fs.ErrNotExist}
	}
	c.bindLocked([]string{name}, []*crashFile{nil})
	return nil
}

// Rename atomically replaces newpath with oldpath. Within one directory the
// change is atomic in crash images too, and durable once the directory is
// synced; across directories each directory's half is separate.
func (c *CrashFS) Rename(oldpath, newpath string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	oldpath, newpath = path.Clean(oldpath), path.Clean(newpath)
	f, ok := c.files[oldpath]
	if !ok {
		return &fs.PathError{Op: "rename", Path: oldpath, Err: fs.ErrNotExist}
	}
	if oldpath != newpath {
		c.bindLocked([]string{oldpath, newpath}, []*crashFile{nil, f})
	}
	return nil
}

// Stat describes a file.
func (c *CrashFS) Stat(name string) (fs.FileInfo, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	name = path.Clean(name)
	f, ok := c.files[name]
	if !ok {
		return nil, &fs.PathError{Op: "stat", Path: name, Err: fs.ErrNotExist}
	}
	return crashInfo{name: path.Base(name), size: int64(len(f.current)), mtime: f.mtime}, nil
}

// Names lists the files, sorted.
func (c *CrashFS) Names() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var names []string
	for n := range c.files {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Bytes returns a copy of a file's current content (nil if absent).
func (c *CrashFS) Bytes(name string) []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	if f, ok := c.files[path.Clean(name)]; ok {
		return bytes.Clone(f.current)
	}
	return nil
}

// Pending returns the number of unsynced write and truncate operations.
func (c *CrashFS) Pending() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, f := range c.files {
		n += len(f.pending)
	}
	return n
}

// Crash returns a new CrashFS holding what a power cut now could leave
// behind: the durable content of every file plus, for each unsynced write,
// each of its sectors kept or lost at random (rng decides), and each unsynced
// truncate kept or lost. The receiver is not changed.
func (c *CrashFS) Crash(rng *rand.Rand) *CrashFS {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.crashLocked(rng)
}

func (c *CrashFS) crashLocked(rng *rand.Rand) *CrashFS {
	out := NewCrashFS()
	names := make(map[string]*crashFile, len(c.synced))
	for n, f := range c.synced {
		names[n] = f
	}
	dirs := make([]string, 0, len(c.dirOps))
	for d := range c.dirOps {
		dirs = append(dirs, d)
	}
	sort.Strings(dirs) // the rng draws in a fixed order
	for _, d := range dirs {
		ops := c.dirOps[d]
		for _, op := range ops[:rng.IntN(len(ops)+1)] {
			applyDirOp(names, op)
		}
	}
	sorted := make([]string, 0, len(names))
	for n := range names {
		sorted = append(sorted, n)
	}
	sort.Strings(sorted)
	images := map[*crashFile]*crashFile{}
	for _, name := range sorted {
		f := names[name]
		if img, ok := images[f]; ok {
			out.files[name], out.synced[name] = img, img
			continue
		}
		b := bytes.Clone(f.durable)
		for _, op := range f.pending {
			if op.off < 0 {
				if rng.IntN(2) == 0 {
					b = resize(b, op.size)
				}
				continue
			}
			for s := int64(0); s < int64(len(op.data)); s += disk.SectorSize {
				if rng.IntN(2) == 0 {
					continue
				}
				e := min(s+disk.SectorSize, int64(len(op.data)))
				pos := op.off + s
				if int64(len(b)) < pos+(e-s) {
					b = resize(b, pos+(e-s))
				}
				copy(b[pos:], op.data[s:e])
			}
		}
		img := &crashFile{durable: b, current: bytes.Clone(b), mtime: f.mtime}
		images[f] = img
		out.files[name], out.synced[name] = img, img
	}
	return out
}

func resize(b []byte, n int64) []byte {
	if int64(len(b)) >= n {
		return b[:n]
	}
	return append(b, make([]byte, n-int64(len(b)))...)
}

type crashHandle struct {
	fs     *CrashFS
	f      *crashFile
	name   string
	ro     bool
	closed bool
}

func (h *crashHandle) ReadAt(p []byte, off int64) (int, error) {
	h.fs.mu.Lock()
	defer h.fs.mu.Unlock()
	if h.closed {
		return 0, fs.ErrClosed
	}
	if off < 0 {
		return 0, &fs.PathError{Op: "read", Path: h.name, Err: fs.ErrInvalid}
	}
	if off >= int64(len(h.f.current)) {
		return 0, io.EOF
	}
	n := copy(p, h.f.current[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (h *crashHandle) WriteAt(p []byte, off int64) (int, error) {
	h.fs.mu.Lock()
	defer h.fs.mu.Unlock()
	if h.closed {
		return 0, fs.ErrClosed
	}
	if h.ro {
		return 0, &fs.PathError{Op: "write", Path: h.name, Err: syscall.EBADF}
	}
	if off < 0 {
		return 0, &fs.PathError{Op: "write", Path: h.name, Err: fs.ErrInvalid}
	}
	end := off + int64(len(p))
	if grow := end - int64(len(h.f.current)); grow > 0 && h.fs.Budget > 0 && h.fs.used()+grow > h.fs.Budget {
		return 0, &fs.PathError{Op: "write", Path: h.name, Err: syscall.ENOSPC}
	}
	if int64(len(h.f.current)) < end {
		h.f.current = resize(h.f.current, end)
	}
	copy(h.f.current[off:], p)
	h.f.pending = append(h.f.pending, crashOp{off: off, data: bytes.Clone(p)})
	h.fs.tick()
	return len(p), nil
}

func (c *CrashFS) used() int64 {
	var n int64
	for _, f := range c.files {
		n += int64(len(f.current))
	}
	return n
}

func (h *crashHandle) Truncate(size int64) error {
	h.fs.mu.Lock()
	defer h.fs.mu.Unlock()
	if h.closed {
		return fs.ErrClosed
	}
	if h.ro {
		return &fs.PathError{Op: "truncate", Path: h.name, Err: syscall.EBADF}
	}
	return h.truncateLocked(size)
}

func (h *crashHandle) truncateLocked(size int64) error {
	if size < 0 {
		return &fs.PathError{Op: "truncate", Path: h.name, Err: fs.ErrInvalid}
	}
	h.f.current = resize(h.f.current, size)
	h.f.pending = append(h.f.pending, crashOp{off: -1, size: size})
	h.fs.tick()
	return nil
}

func (h *crashHandle) Sync() error {
	h.fs.mu.Lock()
	defer h.fs.mu.Unlock()
	if h.closed {
		return fs.ErrClosed
	}
	for _, op := range h.f.pending {
		if op.off < 0 {
			h.f.durable = resize(h.f.durable, op.size)
			continue
		}
		if end := op.off + int64(len(op.data)); int64(len(h.f.durable)) < end {
			h.f.durable = resize(h.f.durable, end)
		}
		copy(h.f.durable[op.off:], op.data)
	}
	h.f.pending = nil
	h.fs.tick()
	return nil
}

func (h *crashHandle) Stat() (fs.FileInfo, error) {
	h.fs.mu.Lock()
	defer h.fs.mu.Unlock()
	return crashInfo{name: path.Base(h.name), size: int64(len(h.f.current)), mtime: h.f.mtime}, nil
}

func (h *crashHandle) Close() error {
	h.fs.mu.Lock()
	defer h.fs.mu.Unlock()
	if h.closed {
		return fs.ErrClosed
	}
	h.closed = true
	return nil
}

type crashInfo struct {
	name  string
	size  int64
	mtime time.Time
}

func (i crashInfo) Name() string       { return i.name }
func (i crashInfo) Size() int64        { return i.size }
func (i crashInfo) Mode() fs.FileMode  { return 0o644 }
func (i crashInfo) ModTime() time.Time { return i.mtime }
func (i crashInfo) IsDir() bool        { return false }
func (i crashInfo) Sys() any           { return nil }
