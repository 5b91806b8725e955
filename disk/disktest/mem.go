package disktest

import (
	"context"
	"slices"
	"sync"

	"github.com/vdisk-project/vdisk/disk"
)

// memBlock is the allocation unit of MemDisk.
const memBlock = 64 << 10

// MemDisk is a sparse in-memory disk. Storage is allocated in 64 KiB blocks
// on first write, so a MemDisk may be terabytes large. It implements every
// optional capability (Extenter, Zeroer, Trimmer, Resizer) and is safe for
// concurrent use.
type MemDisk struct {
	mu     sync.RWMutex
	size   int64
	blocks map[int64][]byte // block index -> memBlock bytes
	closed bool
}

// NewMemDisk returns an empty MemDisk of size bytes.
func NewMemDisk(size int64) *MemDisk {
	return &MemDisk{size: size, blocks: make(map[int64][]byte)}
}

// Size returns the virtual size.
func (m *MemDisk) Size() int64 {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.size
}

// ReadAt implements io.ReaderAt.
func (m *MemDisk) ReadAt(p []byte, off int64) (int, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.closed {
		return 0, disk.Errorf(disk.ErrInvalid, "memdisk: closed")
	}
	q, err := disk.ReadAtClipped(p, off, m.size)
	if q == nil {
		return 0, err
	}
	for done := 0; done < len(q); {
		pos := off + int64(done)
		bi, bo := pos/memBlock, int(pos%memBlock)
		n := min(len(q)-done, memBlock-bo)
		if b := m.blocks[bi]; b != nil {
			copy(q[done:done+n], b[bo:])
		} else {
			clear(q[done : done+n])
		}
		done += n
	}
	return len(q), err
}

// WriteAt implements io.WriterAt.
func (m *MemDisk) WriteAt(p []byte, off int64) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return 0, disk.Errorf(disk.ErrInvalid, "memdisk: closed")
	}
	if err := disk.CheckRange(off, int64(len(p)), m.size); err != nil {
		return 0, err
	}
	for done := 0; done < len(p); {
		pos := off + int64(done)
		bi, bo := pos/memBlock, int(pos%memBlock)
		n := min(len(p)-done, memBlock-bo)
		b := m.blocks[bi]
		if b == nil {
			b = make([]byte, memBlock)
			m.blocks[bi] = b
		}
		copy(b[bo:], p[done:done+n])
		done += n
	}
	return len(p), nil
}

// WriteZeroes zeroes a range; whole blocks are deallocated unless
// ZeroNoHole is set.
func (m *MemDisk) WriteZeroes(off, n int64, flags disk.ZeroFlags) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := disk.CheckRange(off, n, m.size); err != nil {
		return err
	}
	m.zero(off, n, flags&disk.ZeroNoHole == 0)
	return nil
}

// Trim deallocates the whole blocks inside a range and zeroes the rest.
func (m *MemDisk) Trim(off, n int64) error {
	return m.WriteZeroes(off, n, 0)
}

func (m *MemDisk) zero(off, n int64, punch bool) {
	for end := off + n; off < end; {
		bi, bo := off/memBlock, off%memBlock
		c := min(end-off, memBlock-bo)
		if b := m.blocks[bi]; b != nil {
			if punch && c == memBlock {
				delete(m.blocks, bi)
			} else {
				clear(b[bo : bo+c])
			}
		}
		off += c
	}
}

// Extents reports allocated blocks as data and the rest as holes.
func (m *MemDisk) Extents(ctx context.Context, off, n int64, fn func(disk.Extent) error) error {
	m.mu.RLock()
	size := m.size
	// Collect the allocated blocks in range, then report without the lock
	// so that fn may call back into the disk.
	first, last := off/memBlock, (off+n-1)/memBlock
	var idx []int64
	if last-first < int64(len(m.blocks)) {
		for bi := first; bi <= last; bi++ {
			if m.blocks[bi] != nil {
				idx = append(idx, bi)
			}
		}
	} else {
		for bi := range m.blocks {
			if bi >= first && bi <= last {
				idx = append(idx, bi)
			}
		}
		slices.Sort(idx)
	}
	m.mu.RUnlock()
	if off+n > size {
		n = size - off
	}
	end := off + n
	pos := off
	report := func(to int64, f disk.ExtentFlags) error {
		to = min(to, end)
		if to <= pos {
			return nil
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		e := disk.Extent{Off: pos, Len: to - pos, Flags: f}
		pos = to
		return fn(e)
	}
	for i := 0; i < len(idx); {
		j := i
		for j+1 < len(idx) && idx[j+1] == idx[j]+1 {
			j++
		}
		if err := report(idx[i]*memBlock, disk.Hole|disk.Zero); err != nil {
			return err
		}
		if err := report((idx[j]+1)*memBlock, 0); err != nil {
			return err
		}
		i = j + 1
	}
	return report(end, disk.Hole|disk.Zero)
}

// Resize changes the size; blocks past a smaller size are dropped.
func (m *MemDisk) Resize(_ context.Context, size int64) error {
	if size < 0 {
		return disk.Errorf(disk.ErrInvalid, "memdisk: negative size")
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if size < m.size {
		m.zero(size, m.size-size, true)
		if r := size % memBlock; r != 0 {
			if b := m.blocks[size/memBlock]; b != nil {
				clear(b[r:])
			}
		}
	}
	m.size = size
	return nil
}

// Allocated returns the number of bytes of storage in use.
func (m *MemDisk) Allocated() int64 {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return int64(len(m.blocks)) * memBlock
}

// Flush does nothing.
func (m *MemDisk) Flush() error { return nil }

// Close marks the disk closed.
func (m *MemDisk) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.closed = true
	return nil
}
