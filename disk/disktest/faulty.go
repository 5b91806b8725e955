package disktest

import (
	"context"
	"sync"
	"syscall"

	"github.com/vdisk-project/vdisk/disk"
)

// Op names an operation for FaultyDisk's fault rules.
type Op uint8

// Operations a FaultyDisk can fail.
const (
	OpRead Op = 1 << iota
	OpWrite
	OpFlush
	OpZero
	OpExtents
	OpAny = OpRead | OpWrite | OpFlush | OpZero | OpExtents
)

// Fault is one rule of a FaultyDisk: the Nth matching operation (counting
// from 1) and every later one while Sticky fails with Err. With Short set, a
// failing read or write first transfers half of its buffer.
type Fault struct {
	Ops    Op
	After  int   // fail the After-th matching operation (0 or 1: the first)
	Sticky bool  // keep failing after the first failure
	Err    error // default: EIO wrapped as disk.ErrAccess
	Short  bool
}

// FaultyDisk wraps a Disk and injects faults: failed or short reads and
// writes, ENOSPC, failed flushes. It passes every call it does not fail to
// the wrapped disk. Safe for concurrent use.
type FaultyDisk struct {
	disk.Disk
	mu     sync.Mutex
	faults []Fault
	counts []int
}

// NewFaultyDisk wraps d with the given fault rules.
func NewFaultyDisk(d disk.Disk, faults ...Fault) *FaultyDisk {
	return &FaultyDisk{Disk: d, faults: faults, counts: make([]int, len(faults))}
}

// ErrNoSpace is the error a Fault returns to simulate a full disk.
var ErrNoSpace error = syscall.ENOSPC

func (f *FaultyDisk) check(op Op) (error, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i, r := range f.faults {
		if r.Ops&op == 0 {
			continue
		}
		f.counts[i]++
		n := max(r.After, 1)
		if f.counts[i] == n || (r.Sticky && f.counts[i] > n) {
			err := r.Err
			if err == nil {
				err = disk.Errorf(disk.ErrAccess, "injected fault: %w", syscall.EIO)
			}
			return err, r.Short
		}
	}
	return nil, false
}

// ReadAt reads through the wrapped disk unless a fault fires.
func (f *FaultyDisk) ReadAt(p []byte, off int64) (int, error) {
	if err, short := f.check(OpRead); err != nil {
		if short && len(p) > 1 {
			n, _ := f.Disk.ReadAt(p[:len(p)/2], off)
			return n, err
		}
		return 0, err
	}
	return f.Disk.ReadAt(p, off)
}

// WriteAt writes through the wrapped disk unless a fault fires.
func (f *FaultyDisk) WriteAt(p []byte, off int64) (int, error) {
	if err, short := f.check(OpWrite); err != nil {
		if short && len(p) > 1 {
			n, _ := f.Disk.WriteAt(p[:len(p)/2], off)
			return n, err
		}
		return 0, err
	}
	return f.Disk.WriteAt(p, off)
}

// Flush flushes the wrapped disk unless a fault fires.
func (f *FaultyDisk) Flush() error {
	if err, _ := f.check(OpFlush); err != nil {
		return err
	}
	return f.Disk.Flush()
}

// WriteZeroes zeroes through the wrapped disk unless a fault fires.
func (f *FaultyDisk) WriteZeroes(off, n int64, flags disk.ZeroFlags) error {
	if err, _ := f.check(OpZero); err != nil {
		return err
	}
	return disk.WriteZeroes(f.Disk, off, n, flags)
}

// Extents reports the wrapped disk's extents unless a fault fires.
func (f *FaultyDisk) Extents(ctx context.Context, off, n int64, fn func(disk.Extent) error) error {
	if err, _ := f.check(OpExtents); err != nil {
		return err
	}
	return disk.Extents(ctx, f.Disk, off, n, fn)
}
