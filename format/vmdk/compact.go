package vmdk

import (
	"context"
	"os"
	"path/filepath"

	"github.com/vdisk-project/vdisk/disk"
)

// Compact shrinks and defragments a hosted sparse disk without a parent
// (monolithicSparse, or each extent of twoGbMaxExtentSparse): every sparse
// file is rewritten holding only the grains that contain non-zero data, in
// disk order, with the same descriptor (CID included, so children stay
// valid); the new file is synced and renamed over the old one. Unreferenced
// (leaked) grains and grains of zeros are dropped. The disk must not be open
// elsewhere.
func Compact(ctx context.Context, path string, o *OpenOptions) (CompactStats, error) {
	var st CompactStats
	var opts OpenOptions
	if o != nil {
		opts = *o
	}
	opts.ReadOnly, opts.SingleLink = true, true
	d, err := Open(ctx, path, &opts)
	if err != nil {
		return st, err
	}
	l := d.links[0]
	ct := l.desc.get("createType")
	hint := l.desc.get("parentFileNameHint")
	type job struct {
		path string
		desc []byte
		h    sparseHeader
	}
	var jobs []job
	for i, e := range l.extents {
		se, ok := unwrapExtent(e).(*sparseExtent)
		if !ok || se.cowd != nil {
			continue
		}
		j := job{path: se.name, h: *se.h}
		if l.selfContained && i == 0 {
			j.desc = l.desc.bytes()
		}
		jobs = append(jobs, j)
	}
	d.Close()
	switch {
	case ct != string(MonolithicSparse) && ct != string(TwoGbMaxExtentSparse):
		return st, disk.Errorf(disk.ErrNotSupported, "vmdk: %s: compact supports monolithicSparse and twoGbMaxExtentSparse disks; convert other subformats", path)
	case hint != "":
		return st, disk.Errorf(disk.ErrNotSupported, "vmdk: %s: compacting a child disk is not supported", path)
	}
	fsys := opts.fs()
	for _, j := range jobs {
		if err := ctx.Err(); err != nil {
			return st, err
		}
		before, after, err := compactFile(ctx, fsys, j.path, j.desc, &j.h)
		if err != nil {
			return st, err
		}
		st.BytesBefore += before
		st.BytesAfter += after
		st.Grains += int(max(0, (before-after)/j.h.grainBytes()))
	}
	return st, nil
}

// compactFile rewrites one hosted sparse file.
func compactFile(ctx context.Context, fsys disk.FS, path string, desc []byte, h *sparseHeader) (before, after int64, err error) {
	before = fileSize(fsys, path)
	srcFS := fsys
	src, err := Open(ctx, path, &OpenOptions{ReadOnly: true, SingleLink: true, FS: srcFS})
	if err != nil {
		return 0, 0, err
	}
	defer src.Close()
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".compact")
	fsys.Remove(tmp)
	f, err := fsys.OpenFile(tmp, os.O_CREATE|os.O_EXCL|os.O_RDWR, 0o644)
	if err != nil {
		return 0, 0, disk.Wrap(err, "vmdk: compact", tmp, -1)
	}
	if err := writeSparseFile(f, h.Capacity, desc, h.Flags&flagZeroedGrainGTE != 0); err != nil {
		fsys.Remove(tmp)
		return 0, 0, disk.Wrap(err, "vmdk: compact", tmp, -1)
	}
	dst, err := Open(ctx, tmp, &OpenOptions{FS: fsys, SingleLink: true})
	if err != nil {
		fsys.Remove(tmp)
		return 0, 0, err
	}
	dst.rotated = true // the content is the same: keep the CID
	_, err = disk.Copy(ctx, dst, src, &disk.CopyOptions{DstZeroed: true})
	if cerr := dst.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = fsys.Rename(tmp, path)
	}
	if err != nil {
		fsys.Remove(tmp)
		return 0, 0, disk.Wrap(err, "vmdk: compact", path, -1)
	}
	return before, fileSize(fsys, path), nil
}
