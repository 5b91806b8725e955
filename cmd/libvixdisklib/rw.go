package main

import (
	"sync"

	"github.com/vdisk-project/vdisk"
	"github.com/vdisk-project/vdisk/disk"
)

// A handle opened with VIXDISKLIB_FLAG_OPEN_UNBUFFERED reads and writes
// its local files with O_DIRECT, which wants buffers at aligned
// addresses; a C program's buffers come from malloc (nbdkit's are 16 bytes
// past a page). Such a request goes through an aligned bounce buffer: one
// copy, where refusing it would fail every read (nbdkit's unbuffered=true
// did).

// bounceClasses are the pooled bounce buffer sizes; a larger request gets
// a buffer of its own.
var bounceClasses = [...]int{64 << 10, 256 << 10, 1 << 20, 4 << 20}

var bouncePools [len(bounceClasses)]sync.Pool

// getBounce returns an aligned buffer of at least n bytes, and its class
// (-1: not pooled).
func getBounce(n int) ([]byte, int) {
	for i, c := range bounceClasses {
		if n <= c {
			if b, ok := bouncePools[i].Get().(*[]byte); ok {
				return (*b)[:n], i
			}
			return disk.AlignedBytes(int64(c))[:n], i
		}
	}
	return disk.AlignedBytes(int64(n)), -1
}

func putBounce(b []byte, class int) {
	if class >= 0 {
		b = b[:cap(b)]
		bouncePools[class].Put(&b)
	}
}

// VixDiskLib has no call to zero a range, so programs write zeros: nbdkit
// turns every NBD zero request into a Write of a zero buffer, and nbdcopy
// zeroes each hole of its source. On a sparse disk (diskHandle.zeroes) a
// Write of zeros becomes the kit's WriteZeroes, which leaves unallocated
// grains unallocated (and marks a child's grains zeroed over its parent)
// and over NBD sends no payload: a restore of a thin disk through the
// library stays thin. Flat and raw disks, whose space may be allocated on
// purpose, get the zeros written.

// minZeroDetect is the smallest write checked for zeros.
const minZeroDetect = 4096

// sparseTypes are the disk types whose zeroed ranges need no storage.
var sparseTypes = map[string]bool{
	"monolithicSparse": true, "twoGbMaxExtentSparse": true, "vmfsSparse": true, "seSparse": true, "streamOptimized": true,
}

// readAt and writeAt are the kit's ReadAt and WriteAt, through a bounce
// buffer when the handle is unbuffered and p is not aligned; writeAt
// turns a write of zeros on a sparse disk into WriteZeroes.
func (h *diskHandle) readAt(p []byte, off int64) error {
	k, bounce := h.forIO(p)
	if !bounce {
		_, err := k.ReadAt(p, off)
		return err
	}
	b, class := getBounce(len(p))
	defer putBounce(b, class)
	_, err := k.ReadAt(b, off)
	copy(p, b)
	return err
}

func (h *diskHandle) writeAt(p []byte, off int64) error {
	k, bounce := h.forIO(p)
	if h.zeroes && len(p) >= minZeroDetect && disk.IsZero(p) {
		return k.WriteZeroes(off, int64(len(p)), 0)
	}
	if !bounce {
		_, err := k.WriteAt(p, off)
		return err
	}
	b, class := getBounce(len(p))
	defer putBounce(b, class)
	copy(b, p)
	_, err := k.WriteAt(b, off)
	return err
}

// forIO returns the kit handle, and whether p needs a bounce buffer on it.
func (h *diskHandle) forIO(p []byte) (*vdisk.Handle, bool) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return h.h, h.flags&vdisk.OpenUnbuffered != 0 && !disk.AlignedBuffer(p)
}
