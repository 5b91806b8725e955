// Package raw reads and writes raw disk images: a plain file holding the
// disk's bytes. Holes in the file are reported as unallocated (SEEK_DATA
// and SEEK_HOLE), zeroing and trimming punch holes, so thin images stay
// thin.
package raw

import (
	"context"
	"os"
	"path/filepath"
	"sync"

	"github.com/vdisk-project/vdisk/disk"
)

// Options modify Open and Create. A nil *Options means defaults.
type Options struct {
	ReadOnly bool
	// Unbuffered opens the file with O_DIRECT: buffers, offsets and lengths
	// must then be multiples of 512 bytes (misaligned ones fail with
	// ErrInvalid).
	Unbuffered bool
	// FS is the filesystem; nil means disk.OSFS.
	FS disk.FS
	// ForceShare opens the image without taking image locks (qemu-img's
	// -U). By default Open locks the file as qemu does (see
	// disk.LockImage): a writer excludes other writers and readers, a
	// reader excludes writers, and a conflict is disk.ErrBusy. Only a
	// read-only open should force sharing.
	ForceShare bool
}

// Disk is a raw image. It implements disk.Disk, disk.Extenter,
// disk.Zeroer, disk.Trimmer, disk.Resizer and disk.WriteBehinder, and is
// safe for concurrent use (Resize excepted).
//
// A disk being filled is written behind (see disk.WriteBehind) while it is
// Copy's destination or after SetWriteBehind(true): its final Flush then
// finds little left to write.
type Disk struct {
	f          disk.File
	wb         disk.WriteBehind
	name       string
	ro         bool
	unbuffered bool
	mu         sync.RWMutex // guards size against Resize
	size       int64
}

func (o *Options) fs() disk.FS {
	if o == nil || o.FS == nil {
		return disk.OSFS{}
	}
	return o.FS
}

func flags(o *Options, base int) int {
	if o != nil && o.Unbuffered {
		base |= disk.ODirect
	}
	return base
}

// Open opens an existing raw image.
func Open(_ context.Context, path string, o *Options) (*Disk, error) {
	mode := os.O_RDWR
	ro := o != nil && o.ReadOnly
	if ro {
		mode = os.O_RDONLY
	}
	if o != nil && o.Unbuffered && disk.ODirect == 0 {
		return nil, disk.Errorf(disk.ErrNotSupported, "raw: %s: unbuffered I/O not supported on this system", path)
	}
	f, err := o.fs().OpenFile(path, flags(o, mode), 0)
	if err != nil {
		return nil, disk.Wrap(err, "raw: open", path, -1)
	}
	if o == nil || !o.ForceShare {
		if err := disk.LockImage(f, disk.ImageLock{Write: !ro}); err != nil {
			f.Close()
			return nil, disk.Wrap(err, "raw: lock", path, -1)
		}
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, disk.Wrap(err, "raw: stat", path, -1)
	}
	d := &Disk{f: f, name: path, ro: ro, unbuffered: o != nil && o.Unbuffered, size: st.Size()}
	if !ro && !d.unbuffered {
		d.f = d.wb.File(f) // O_DIRECT leaves no dirty pages to write behind
	}
	return d, nil
}

// Create makes a new sparse raw image of size bytes; it never overwrites an
// existing file.
func Create(ctx context.Context, path string, size int64, o *Options) (*Disk, error) {
	if size < 0 {
		return nil, disk.Errorf(disk.ErrInvalid, "raw: invalid size %d", size)
	}
	f, err := o.fs().OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_RDWR, 0o644)
	if err != nil {
		return nil, disk.Wrap(err, "raw: create", path, -1)
	}
	err = f.Truncate(size)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = o.fs().SyncDir(filepath.Dir(path)) // the new name is durable only then
	}
	if err != nil {
		o.fs().Remove(path)
		return nil, disk.Wrap(err, "raw: create", path, -1)
	}
	var opts Options
	if o != nil {
		opts = *o
	}
	opts.ReadOnly = false
	return Open(ctx, path, &opts)
}

// SetWriteBehind turns write-behind on or off (see disk.WriteBehinder) and
// returns whether it was on.
func (d *Disk) SetWriteBehind(on bool) bool { return d.wb.Set(on) }

// Size returns the image size in bytes.
func (d *Disk) Size() int64 {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return d.size
}

// ReadOnly reports whether the image was opened read-only.
func (d *Disk) ReadOnly() bool { return d.ro }

func (d *Disk) aligned(p []byte, off int64) error {
	if !d.unbuffered {
		return nil
	}
	if off%disk.SectorSize != 0 || len(p)%disk.SectorSize != 0 || !disk.AlignedBuffer(p) {
		return disk.Errorf(disk.ErrInvalid, "raw: %s: unbuffered I/O needs 512-byte aligned buffers, offsets and lengths", d.name)
	}
	return nil
}

// ReadAt implements io.ReaderAt.
func (d *Disk) ReadAt(p []byte, off int64) (int, error) {
	q, eof := disk.ReadAtClipped(p, off, d.Size())
	if q == nil {
		return 0, eof
	}
	if err := d.aligned(q, off); err != nil {
		return 0, err
	}
	n, err := d.f.ReadAt(q, off)
	if err != nil && n < len(q) {
		return n, disk.Wrap(err, "raw: read", d.name, off)
	}
	return len(q), eof
}

// WriteAt implements io.WriterAt; writes past the end fail with ErrInvalid.
func (d *Disk) WriteAt(p []byte, off int64) (int, error) {
	if d.ro {
		return 0, disk.Errorf(disk.ErrPermission, "raw: %s: opened read-only", d.name)
	}
	if err := disk.CheckRange(off, int64(len(p)), d.Size()); err != nil {
		return 0, err
	}
	if err := d.aligned(p, off); err != nil {
		return 0, err
	}
	n, err := d.f.WriteAt(p, off)
	if err != nil {
		return n, disk.Wrap(err, "raw: write", d.name, off)
	}
	return n, nil
}

// Extents reports file data as data and holes as Hole|Zero.
func (d *Disk) Extents(ctx context.Context, off, n int64, fn func(disk.Extent) error) error {
	end := min(off+n, d.Size())
	for off < end {
		if err := ctx.Err(); err != nil {
			return err
		}
		data, run, err := disk.FileRun(d.f, off, end-off)
		if err != nil {
			return disk.Wrap(err, "raw: seek", d.name, off)
		}
		flags := disk.Hole | disk.Zero
		if data {
			flags = 0
		}
		if err := fn(disk.Extent{Off: off, Len: run, Flags: flags}); err != nil {
			return err
		}
		off += run
	}
	return nil
}

// WriteZeroes punches a hole (or writes zeros with ZeroNoHole).
func (d *Disk) WriteZeroes(off, n int64, flags disk.ZeroFlags) error {
	if d.ro {
		return disk.Errorf(disk.ErrPermission, "raw: %s: opened read-only", d.name)
	}
	if err := disk.CheckRange(off, n, d.Size()); err != nil {
		return err
	}
	if flags&disk.ZeroNoHole != 0 {
		if flags&disk.ZeroFast != 0 {
			return disk.Errorf(disk.ErrNotSupported, "raw: fast zeroing without holes not supported")
		}
		return disk.Wrap(disk.FillZeros(d.f, off, n), "raw: zero", d.name, off)
	}
	return disk.Wrap(disk.ZeroFile(d.f, off, n), "raw: zero", d.name, off)
}

// Trim punches a hole.
func (d *Disk) Trim(off, n int64) error { return d.WriteZeroes(off, n, 0) }

// Resize truncates or extends the file.
func (d *Disk) Resize(_ context.Context, size int64) error {
	if d.ro {
		return disk.Errorf(disk.ErrPermission, "raw: %s: opened read-only", d.name)
	}
	if size < 0 {
		return disk.Errorf(disk.ErrInvalid, "raw: invalid size %d", size)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.f.Truncate(size); err != nil {
		return disk.Wrap(err, "raw: resize", d.name, -1)
	}
	d.size = size
	return nil
}

// Flush syncs the file.
func (d *Disk) Flush() error {
	if d.ro {
		return nil
	}
	return disk.Wrap(d.f.Sync(), "raw: sync", d.name, -1)
}

// Close syncs and closes the file.
func (d *Disk) Close() error {
	err := d.Flush()
	if cerr := d.f.Close(); err == nil && cerr != nil {
		err = disk.Wrap(cerr, "raw: close", d.name, -1)
	}
	return err
}
