package backup

import (
	"container/list"
	"context"
	"fmt"
	"sync"

	"github.com/vdisk-project/vdisk/disk"
)

// DefaultCacheChunks is how many decoded chunks a Disk keeps by default.
const DefaultCacheChunks = 8

// Disk is one disk of a point, opened for reading. It implements disk.Disk
// (read-only: WriteAt, WriteZeroes and Trim fail with disk.ErrPermission)
// and disk.Extenter (hole chunks are holes, zero chunks zeros). ReadAt is
// safe for concurrent use; it decrypts and decompresses whole chunks
// through a small cache. Close cancels reads in progress.
type Disk struct {
	r      *Repository
	name   string
	m      *chunkMap
	ctx    context.Context // lives until Close: ReadAt has no ctx of its own
	cancel context.CancelFunc

	mu      sync.Mutex
	cache   map[int64]*list.Element // chunk index → element holding *cached
	lru     *list.List
	max     int
	loading map[int64]*load
}

type cached struct {
	i    int64
	data []byte
}

type load struct {
	done chan struct{}
	data []byte
	err  error
}

// OpenDisk opens the disk named diskName of point p for reading. An unknown
// disk gives disk.ErrNotFound and a damaged map disk.ErrCorrupt. The Disk
// must be closed.
func (r *Repository) OpenDisk(ctx context.Context, p *Point, diskName string) (*Disk, error) {
	pd := p.Disk(diskName)
	if pd == nil {
		return nil, &disk.Error{Op: "backup: open disk", Path: diskName, Off: -1, Code: disk.ErrNotFound, Err: fmt.Errorf("point %s has no disk %q", p.ID, diskName)}
	}
	m, err := r.loadMap(ctx, pd)
	if err != nil {
		return nil, err
	}
	n := DefaultCacheChunks
	dctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	return &Disk{r: r, name: diskName, m: m, ctx: dctx, cancel: cancel, cache: map[int64]*list.Element{},
		lru: list.New(), max: n, loading: map[int64]*load{}}, nil
}

// Size returns the disk's size in bytes.
func (d *Disk) Size() int64 { return d.m.size }

// ChunkSize returns the size of the point's chunks.
func (d *Disk) ChunkSize() int64 { return d.m.chunkSize }

// ReadOnly reports true.
func (d *Disk) ReadOnly() bool { return true }

// ReadAt implements io.ReaderAt. A damaged chunk gives an error matching
// disk.ErrCorrupt, a missing pack disk.ErrNotFound.
func (d *Disk) ReadAt(p []byte, off int64) (int, error) {
	q, eof := disk.ReadAtClipped(p, off, d.m.size)
	if q == nil {
		return 0, eof
	}
	cs := d.m.chunkSize
	for done := 0; done < len(q); {
		pos := off + int64(done)
		i := pos / cs
		co := pos - i*cs
		n := min(int64(len(q)-done), cs-co)
		id := d.m.ids[i]
		if id == holeID || id == zeroID {
			clear(q[done : done+int(n)])
		} else {
			data, err := d.chunk(i, id)
			if err != nil {
				return done, disk.Wrap(err, "backup: read", d.name, pos)
			}
			copy(q[done:], data[co:co+n])
		}
		done += int(n)
	}
	return len(q), eof
}

// chunk returns chunk i's data from the cache or the repository. The
// returned slice must not be modified.
func (d *Disk) chunk(i int64, id chunkID) ([]byte, error) {
	d.mu.Lock()
	if e, ok := d.cache[i]; ok {
		d.lru.MoveToFront(e)
		data := e.Value.(*cached).data
		d.mu.Unlock()
		return data, nil
	}
	if l, ok := d.loading[i]; ok {
		d.mu.Unlock()
		<-l.done
		return l.data, l.err
	}
	l := &load{done: make(chan struct{})}
	d.loading[i] = l
	d.mu.Unlock()

	l.data, l.err = d.r.readChunk(d.ctx, id, nil, nil)
	d.mu.Lock()
	delete(d.loading, i)
	if l.err == nil {
		d.cache[i] = d.lru.PushFront(&cached{i, l.data})
		for d.lru.Len() > d.max {
			e := d.lru.Back()
			d.lru.Remove(e)
			delete(d.cache, e.Value.(*cached).i)
		}
	}
	d.mu.Unlock()
	close(l.done)
	return l.data, l.err
}

// readChunk finds and reads a chunk by ID.
func (r *Repository) readChunk(ctx context.Context, id chunkID, dst, scratch []byte) ([]byte, error) {
	p, ref, ok := r.idx.lookup(id, false)
	if !ok {
		// Written by another writer since this Repository loaded the index.
		if _, err := r.refresh(ctx); err != nil {
			return nil, err
		}
		p, ref, ok = r.idx.lookup(id, false)
		if !ok {
			if err := r.adoptCondemned(ctx); err != nil {
				return nil, err
			}
			p, ref, ok = r.idx.lookup(id, false)
		}
	}
	if !ok {
		return nil, &disk.Error{Op: "backup: read chunk", Path: id.String(), Off: -1, Code: disk.ErrNotFound, Err: fmt.Errorf("chunk not in the index")}
	}
	return r.readBlob(ctx, p, ref, id, dst, scratch)
}

// Extents implements disk.Extenter from the chunk map.
func (d *Disk) Extents(ctx context.Context, off, n int64, fn func(disk.Extent) error) error {
	if off < 0 || n < 0 {
		return disk.Errorf(disk.ErrInvalid, "backup: extents: negative range")
	}
	end := min(off+n, d.m.size)
	cs := d.m.chunkSize
	var cur disk.Extent
	for pos := off; pos < end; {
		if err := ctx.Err(); err != nil {
			return err
		}
		i := pos / cs
		next := min((i+1)*cs, end)
		var f disk.ExtentFlags
		switch d.m.ids[i] {
		case holeID:
			f = disk.Hole | disk.Zero
		case zeroID:
			f = disk.Zero
		}
		if cur.Len > 0 && cur.Flags == f {
			cur.Len += next - pos
		} else {
			if cur.Len > 0 {
				if err := fn(cur); err != nil {
					return err
				}
			}
			cur = disk.Extent{Off: pos, Len: next - pos, Flags: f}
		}
		pos = next
	}
	if cur.Len > 0 {
		return fn(cur)
	}
	return nil
}

var errReadOnly = disk.Errorf(disk.ErrPermission, "backup: a backup point is read-only")

// WriteAt fails with disk.ErrPermission: a point is read-only.
func (d *Disk) WriteAt(p []byte, off int64) (int, error) { return 0, errReadOnly }

// WriteZeroes fails with disk.ErrPermission.
func (d *Disk) WriteZeroes(off, n int64, flags disk.ZeroFlags) error { return errReadOnly }

// Trim fails with disk.ErrPermission.
func (d *Disk) Trim(off, n int64) error { return errReadOnly }

// Flush does nothing.
func (d *Disk) Flush() error { return nil }

// Close releases the cache and cancels reads in progress.
func (d *Disk) Close() error {
	d.cancel()
	d.mu.Lock()
	d.cache, d.lru = map[int64]*list.Element{}, list.New()
	d.mu.Unlock()
	return nil
}

var (
	_ disk.Disk     = (*Disk)(nil)
	_ disk.Extenter = (*Disk)(nil)
)
