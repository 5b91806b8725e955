package vmdk

import (
	"context"
	"os"

	"github.com/vdisk-project/vdisk/disk"
)

// Compact shrinks and defragments a monolithicSparse disk without a parent:
// it writes a new file holding only the grains that contain non-zero data,
// in disk order, with the same descriptor (CID included, so children stay
// valid), syncs it, and renames it over the original. Unreferenced (leaked)
// grains and grains of zeros are dropped. The disk must not be open
// elsewhere.
func Compact(ctx context.Context, path string, o *OpenOptions) (CompactStats, error) {
	var st CompactStats
	var opts OpenOptions
	if o != nil {
		opts = *o
	}
	opts.ReadOnly = true
	opts.SingleLink = true
	src, err := Open(ctx, path, &opts)
	if err != nil {
		return st, err
	}
	defer src.Close()
	l := src.links[0]
	se := l.embedded
	if se == nil || len(l.extents) != 1 || l.desc.get("createType") != string(MonolithicSparse) {
		return st, disk.Errorf(disk.ErrNotSupported, "vmdk: %s: compact supports monolithicSparse disks; convert other subformats", path)
	}
	if l.desc.get("parentFileNameHint") != "" {
		return st, disk.Errorf(disk.ErrNotSupported, "vmdk: %s: compacting a child disk is not supported", path)
	}
	fsys := opts.fs()
	st.BytesBefore = fileSize(fsys, path)
	tmp := path + ".compact"
	fsys.Remove(tmp)
	f, err := fsys.OpenFile(tmp, os.O_CREATE|os.O_EXCL|os.O_RDWR, 0o644)
	if err != nil {
		return st, disk.Wrap(err, "vmdk: compact", tmp, -1)
	}
	if err := writeSparseFile(f, se.h.Capacity, l.desc.bytes(), se.h.Flags&flagZeroedGrainGTE != 0); err != nil {
		fsys.Remove(tmp)
		return st, disk.Wrap(err, "vmdk: compact", tmp, -1)
	}
	dst, err := Open(ctx, tmp, &OpenOptions{FS: fsys})
	if err != nil {
		fsys.Remove(tmp)
		return st, err
	}
	dst.rotated = true // the content is the same: keep the CID
	var before int64
	_, err = disk.Copy(ctx, dst, src, &disk.CopyOptions{DstZeroed: true})
	if cerr := dst.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = fsys.Rename(tmp, path)
	}
	if err != nil {
		fsys.Remove(tmp)
		return st, disk.Wrap(err, "vmdk: compact", path, -1)
	}
	st.BytesAfter = fileSize(fsys, path)
	before = (st.BytesBefore - int64(se.h.OverHead)*disk.SectorSize) / se.grain
	after := (st.BytesAfter - int64(se.h.OverHead)*disk.SectorSize) / se.grain
	st.Grains = int(max(0, before-after))
	return st, nil
}
