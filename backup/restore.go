package backup

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/vdisk-project/vdisk/disk"
)

// RestoreOptions tune Restore.
type RestoreOptions struct {
	// Existing says the target holds data already (an older state of the
	// disk): each chunk of the target is read and compared with the point,
	// and only chunks that differ are written; hole and zero chunks are
	// zeroed. Without it the target must read as zeros everywhere (just
	// created): only data chunks are written.
	Existing bool
	// Changed, with Existing, limits the restore to chunks touching these
	// ranges (what changed on the target since the point).
	Changed []disk.Extent
	// Concurrency is the number of chunks in flight. Default 4.
	Concurrency int
	// Progress, when set, is called after each chunk with the bytes dealt
	// with and the disk size. Calls are serialized.
	Progress func(done, total int64)
}

// RestoreStats report what Restore did, in bytes.
type RestoreStats struct {
	Total     int64 // disk size
	Written   int64 // data written to the target
	Zeroed    int64 // zeroed on the target
	Unchanged int64 // compared equal on an existing target, not written
	Skipped   int64 // holes and zeros left alone on a new target, and chunks outside Changed
	Duration  time.Duration
}

// Restore writes the disk diskName of point p into target, which must be
// at least as large. See RestoreOptions for new and existing targets. The
// target is flushed at the end but not closed.
func (r *Repository) Restore(ctx context.Context, p *Point, diskName string, target disk.Disk, opts RestoreOptions) (RestoreStats, error) {
	start := time.Now()
	pd := p.Disk(diskName)
	if pd == nil {
		return RestoreStats{}, &disk.Error{Op: "backup: restore", Path: diskName, Off: -1, Code: disk.ErrNotFound, Err: fmt.Errorf("point %s has no disk %q", p.ID, diskName)}
	}
	m, err := r.loadMap(ctx, pd)
	if err != nil {
		return RestoreStats{}, err
	}
	st := RestoreStats{Total: m.size}
	if target.Size() < m.size {
		return st, disk.Errorf(disk.ErrInvalid, "backup: restore: target of %d bytes is smaller than the disk's %d", target.Size(), m.size)
	}
	if opts.Concurrency <= 0 {
		opts.Concurrency = 4
	}
	n := int64(len(m.ids))
	var only []bool
	if opts.Existing && opts.Changed != nil {
		only = make([]bool, n)
		for _, e := range opts.Changed {
			off, end := max(e.Off, 0), min(e.End(), m.size)
			if e.Len <= 0 || off >= end {
				continue
			}
			for c := off / m.chunkSize; c <= (end-1)/m.chunkSize; c++ {
				only[c] = true
			}
		}
	}
	var written, zeroed, unchanged, skipped, done atomic.Int64
	var progMu sync.Mutex
	report := func(k int64) {
		d := done.Add(k)
		if opts.Progress != nil {
			progMu.Lock()
			opts.Progress(d, m.size)
			progMu.Unlock()
		}
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(opts.Concurrency)
	cs := int(m.chunkSize)
	for i := range n {
		if gctx.Err() != nil {
			break
		}
		id, off, ln := m.ids[i], i*m.chunkSize, m.chunkLen(i)
		marker := id == holeID || id == zeroID
		if (only != nil && !only[i]) || (!opts.Existing && marker) {
			skipped.Add(ln)
			report(ln)
			continue
		}
		g.Go(func() error {
			bb := getBufs(cs)
			defer putBufs(cs, bb)
			if opts.Existing {
				cur := bb.data[:ln]
				if k, err := target.ReadAt(cur, off); err != nil && !(errors.Is(err, io.EOF) && int64(k) == ln) {
					return disk.Wrap(err, "backup: restore: read target", "", off)
				}
				same := false
				if marker {
					same = disk.IsZero(cur)
				} else {
					same = !disk.IsZero(cur) && r.c.id(cur) == id
				}
				if same {
					unchanged.Add(ln)
					report(ln)
					return nil
				}
				if marker {
					if err := disk.WriteZeroes(target, off, ln, 0); err != nil {
						return disk.Wrap(err, "backup: restore: zero", "", off)
					}
					zeroed.Add(ln)
					report(ln)
					return nil
				}
			}
			data, err := r.readChunk(gctx, id, bb.z[:0], bb.sealed[:cap(bb.sealed)])
			if err != nil {
				return disk.Wrap(err, "backup: restore: read "+diskName, "", off)
			}
			bb.z = data[:0]
			if opts.Existing {
				if _, err := target.WriteAt(data, off); err != nil {
					return disk.Wrap(err, "backup: restore: write", "", off)
				}
				written.Add(ln)
			} else {
				// A new target reads as zeros: the zero blocks inside a
				// chunk (the unallocated parts of a partly used chunk)
				// stay holes, so a thin disk restores thin.
				n, err := writeNonZero(target, data, off)
				if err != nil {
					return disk.Wrap(err, "backup: restore: write", "", off)
				}
				written.Add(n)
				skipped.Add(ln - n)
			}
			report(ln)
			return nil
		})
	}
	err = g.Wait()
	if err == nil {
		err = ctx.Err()
	}
	if err == nil {
		if ferr := target.Flush(); ferr != nil {
			err = disk.Wrap(ferr, "backup: restore: flush", "", -1)
		}
	}
	st.Written, st.Zeroed, st.Unchanged, st.Skipped = written.Load(), zeroed.Load(), unchanged.Load(), skipped.Load()
	st.Duration = time.Since(start)
	return st, err
}

// sparseBlock is the granularity at which a restore into a new target
// leaves zeros unwritten (qemu-img convert's default -S).
const sparseBlock = 4096

// writeNonZero writes the runs of data that are not whole zero blocks of
// sparseBlock bytes at off, and returns the bytes written.
func writeNonZero(target disk.Disk, data []byte, off int64) (int64, error) {
	var n int64
	for p := 0; p < len(data); {
		for p < len(data) && disk.IsZero(data[p:min(p+sparseBlock, len(data))]) {
			p += sparseBlock
		}
		q := p
		for q < len(data) && !disk.IsZero(data[q:min(q+sparseBlock, len(data))]) {
			q += sparseBlock
		}
		q = min(q, len(data))
		if q > p {
			if _, err := target.WriteAt(data[p:q], off+int64(p)); err != nil {
				return n, err
			}
			n += int64(q - p)
		}
		p = q
	}
	return n, nil
}
