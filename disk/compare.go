package disk

import (
	"bytes"
	"context"
	"errors"
)

// CompareOptions tune Compare. A nil *CompareOptions means the defaults.
type CompareOptions struct {
	// Strict makes disks of different sizes unequal (at the smaller size),
	// like qemu-img compare -s. Otherwise the larger disk's extra bytes must
	// read as zeros.
	Strict bool
	// ChunkSize is the read size in bytes. Default 1 MiB.
	ChunkSize int
	// Progress, when set, is called with the bytes compared so far.
	Progress func(done, total int64)
}

// Compare reports the first offset at which a and b differ, or -1 when their
// contents are equal. Ranges that both disks report as holes or zeros are
// not read. Like qemu-img compare, disks of different sizes are equal when
// the larger one reads as zeros past the smaller one's end, unless Strict.
func Compare(ctx context.Context, a, b Disk, opts *CompareOptions) (int64, error) {
	var o CompareOptions
	if opts != nil {
		o = *opts
	}
	if o.ChunkSize <= 0 {
		o.ChunkSize = 1 << 20
	}
	common := min(a.Size(), b.Size())
	if o.Strict && a.Size() != b.Size() {
		return common, nil
	}
	total := max(a.Size(), b.Size())
	bufA := make([]byte, o.ChunkSize)
	bufB := make([]byte, o.ChunkSize)
	done := int64(0)
	progress := func(n int64) {
		done += n
		if o.Progress != nil {
			o.Progress(done, total)
		}
	}

	// Walk a's extents; within each, walk b's. A range that is not data in
	// either disk is skipped.
	for off := int64(0); off < common; {
		if err := ctx.Err(); err != nil {
			return -1, err
		}
		ea, err := firstExtent(ctx, a, off, common-off)
		if err != nil {
			return -1, err
		}
		eb, err := firstExtent(ctx, b, off, ea.Len)
		if err != nil {
			return -1, err
		}
		n := min(ea.Len, eb.Len)
		if !ea.Flags.Data() && !eb.Flags.Data() {
			progress(n)
			off += n
			continue
		}
		for end := off + n; off < end; {
			c := min(end-off, int64(o.ChunkSize))
			if _, err := a.ReadAt(bufA[:c], off); err != nil {
				return -1, Wrap(err, "compare: read", "", off)
			}
			if ea.Flags.Data() == eb.Flags.Data() || eb.Flags.Data() {
				if _, err := b.ReadAt(bufB[:c], off); err != nil {
					return -1, Wrap(err, "compare: read", "", off)
				}
			} else {
				clear(bufB[:c])
			}
			if !bytes.Equal(bufA[:c], bufB[:c]) {
				for i := range c {
					if bufA[i] != bufB[i] {
						return off + (i/SectorSize)*SectorSize, nil
					}
				}
			}
			progress(c)
			off += c
		}
	}
	// The tail of the larger disk must read as zeros.
	longer := a
	if b.Size() > a.Size() {
		longer = b
	}
	for off := common; off < total; {
		e, err := firstExtent(ctx, longer, off, total-off)
		if err != nil {
			return -1, err
		}
		if !e.Flags.Data() {
			progress(e.Len)
			off = e.End()
			continue
		}
		for end := e.End(); off < end; {
			c := min(end-off, int64(o.ChunkSize))
			if _, err := longer.ReadAt(bufA[:c], off); err != nil {
				return -1, Wrap(err, "compare: read", "", off)
			}
			for i := range c {
				if bufA[i] != 0 {
					return off + (i/SectorSize)*SectorSize, nil
				}
			}
			progress(c)
			off += c
		}
	}
	return -1, nil
}

// firstExtent returns the first extent of d at off, clipped to n bytes.
func firstExtent(ctx context.Context, d Disk, off, n int64) (Extent, error) {
	var first Extent
	found := false
	err := Extents(ctx, d, off, n, func(e Extent) error {
		if !found {
			first, found = e, true
			return nil
		}
		// Merge neighbours with the same data-ness, then stop.
		if e.Flags.Data() == first.Flags.Data() && e.Off == first.End() {
			first.Len += e.Len
			return nil
		}
		return errStop
	})
	if err != nil && !errors.Is(err, errStop) {
		return Extent{}, err
	}
	if !found {
		return Extent{Off: off, Len: n}, nil
	}
	return first, nil
}

// errStop ends an Extents walk early; it never escapes this package.
var errStop = Errorf(ErrInvalid, "stop")
