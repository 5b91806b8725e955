package cli

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"strings"

	"github.com/vdisk-project/vdisk/disk"
	"github.com/vdisk-project/vdisk/format"
	"github.com/vdisk-project/vdisk/format/vmdk"
)

// overlayKey is the ddb key an overlay records its base in, so that it is
// never laid over another disk.
const overlayKey = "vdisk.overlay.base"

// overlay lays a writable sparse VMDK over a read-only base (a backup
// point served for instant restore): writes, zeroes and trims go to the
// overlay; what the overlay does not hold is read from the base. Zeroes
// are recorded as zeroed grains, so they hide the base's data.
type overlay struct {
	top  *vmdk.Disk
	base disk.Disk
}

// openOverlay opens the overlay file over base, or creates it. baseName
// identifies the base (the point and disk); an existing overlay made over
// another base is refused. The overlay is opened with base as its
// vmdk.OpenOptions.Base, so that a write of part of a grain keeps the
// base's data in the rest of the grain.
func openOverlay(ctx context.Context, path string, base disk.Disk, baseName string) (*overlay, error) {
	if _, serr := os.Stat(path); errors.Is(serr, fs.ErrNotExist) {
		top, err := format.Create(ctx, path, format.VMDK, base.Size(), &format.CreateOptions{VMDK: vmdk.CreateOptions{ZeroedGrain: true}})
		if err != nil {
			return nil, err
		}
		err = top.(*vmdk.Disk).SetMetadata(overlayKey, baseName)
		if err == nil {
			err = top.Flush()
		}
		if err = errors.Join(err, top.Close()); err != nil {
			return nil, err
		}
	}
	v, err := vmdk.Open(ctx, path, &vmdk.OpenOptions{Base: base})
	if err != nil {
		return nil, err
	}
	if len(v.Chain()) != 1 || v.Info().CreateType != vmdk.MonolithicSparse {
		v.Close()
		return nil, disk.Errorf(disk.ErrInvalid, "%s: an overlay must be a monolithicSparse VMDK of its own, not a %s of %d links", path, v.Info().CreateType, len(v.Chain()))
	}
	if b, merr := v.Metadata(overlayKey); merr != nil || b != baseName {
		v.Close()
		return nil, disk.Errorf(disk.ErrInvalid, "%s is not an overlay of %s (it records %q)", path, baseName, b)
	}
	if v.Size() != base.Size() {
		v.Close()
		return nil, disk.Errorf(disk.ErrInvalid, "%s is %d bytes, its base %d", path, v.Size(), base.Size())
	}
	return &overlay{top: v, base: base}, nil
}

func (o *overlay) Size() int64 { return o.base.Size() }

// ReadAt reads the overlay's grains and the base where the overlay holds
// nothing.
func (o *overlay) ReadAt(p []byte, off int64) (int, error) {
	if err := disk.CheckRange(off, int64(len(p)), o.Size()); err != nil {
		return 0, err
	}
	err := o.top.Extents(context.Background(), off, int64(len(p)), func(e disk.Extent) error {
		q := p[e.Off-off : e.End()-off]
		var err error
		if e.Flags&disk.Hole != 0 {
			_, err = o.base.ReadAt(q, e.Off)
		} else {
			_, err = o.top.ReadAt(q, e.Off)
		}
		return err
	})
	if err != nil {
		return 0, err
	}
	return len(p), nil
}

func (o *overlay) WriteAt(p []byte, off int64) (int, error) { return o.top.WriteAt(p, off) }

// WriteZeroes records zeroed grains in the overlay (never holes: a hole
// would show the base again).
func (o *overlay) WriteZeroes(off, n int64, flags disk.ZeroFlags) error {
	return o.top.WriteZeroes(off, n, flags|disk.ZeroNoHole)
}

// Trim zeroes: a trimmed range may read as anything, zeros included, and
// the base's data must not show through.
func (o *overlay) Trim(off, n int64) error { return o.WriteZeroes(off, n, 0) }

// Extents reports the overlay's grains and, where it holds none, the
// base's extents.
func (o *overlay) Extents(ctx context.Context, off, n int64, fn func(disk.Extent) error) error {
	return o.top.Extents(ctx, off, n, func(e disk.Extent) error {
		if e.Flags&disk.Hole == 0 {
			return fn(e)
		}
		return disk.Extents(ctx, o.base, e.Off, e.Len, fn)
	})
}

func (o *overlay) Flush() error { return o.top.Flush() }

func (o *overlay) Close() error {
	return errors.Join(o.top.Close(), o.base.Close())
}

// overlayBaseName is what an overlay records of its base: a point's full
// ID and disk (so that "latest" still names the same point later), or the
// image name.
func overlayBaseName(name string) string {
	ref, ok := strings.CutPrefix(name, "point:")
	if !ok {
		return name
	}
	rf := repoFlags{}
	repo, err := rf.open(context.Background(), os.Stderr)
	if err != nil {
		return name
	}
	defer repo.Close()
	id, dn := splitPointRef(ref)
	p, err := findPoint(context.Background(), repo, id)
	if err != nil {
		return name
	}
	if dn, err = pointDisk(p, dn); err != nil {
		return name
	}
	return "point:" + p.ID + "/" + dn
}

// applyOverlay writes what an overlay holds (data and zeroed grains) into
// target, which holds the overlay's base already: the writes made during
// an instant restore, carried into the restored disk.
func applyOverlay(ctx context.Context, path, baseName string, target disk.Disk) (int64, error) {
	v, err := openOverlayFile(ctx, path, baseName)
	if err != nil {
		return 0, err
	}
	defer v.Close()
	var n int64
	buf := make([]byte, 1<<20)
	err = v.Extents(ctx, 0, v.Size(), func(e disk.Extent) error {
		switch {
		case e.Flags&disk.Hole != 0:
			return nil
		case e.Flags&disk.Zero != 0:
			n += e.Len
			return disk.WriteZeroes(target, e.Off, e.Len, 0)
		}
		for off := e.Off; off < e.End(); {
			k := min(int64(len(buf)), e.End()-off)
			if _, err := v.ReadAt(buf[:k], off); err != nil {
				return err
			}
			if _, err := target.WriteAt(buf[:k], off); err != nil {
				return err
			}
			off += k
			n += k
		}
		return nil
	})
	if err != nil {
		return n, err
	}
	return n, target.Flush()
}

// openOverlayFile opens an overlay read-only, checking that it was made
// over baseName.
func openOverlayFile(ctx context.Context, path, baseName string) (*vmdk.Disk, error) {
	top, _, err := format.Open(ctx, path, &format.OpenOptions{Format: format.VMDK, ReadOnly: true})
	if err != nil {
		return nil, err
	}
	v, ok := top.(*vmdk.Disk)
	if !ok {
		top.Close()
		return nil, disk.Errorf(disk.ErrInvalid, "%s: an overlay must be a sparse VMDK", path)
	}
	if b, err := v.Metadata(overlayKey); err != nil || b != baseName {
		v.Close()
		return nil, disk.Errorf(disk.ErrInvalid, "%s is not an overlay of %s (it records %q)", path, baseName, b)
	}
	return v, nil
}
