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

// readAt and writeAt are the kit's ReadAt and WriteAt, through a bounce
// buffer when the handle is unbuffered and p is not aligned.
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
