package disk

import (
	"encoding/binary"
	"io"
)

// zeroChunk is the size of the zero buffer used when zeros must be written.
const zeroChunk = 1 << 20

// FillZeros writes n zero bytes at off through w, a chunk at a time, from a
// buffer aligned for unbuffered I/O. It is the fallback of every zeroing
// path that cannot deallocate.
func FillZeros(w io.WriterAt, off, n int64) error {
	buf := AlignedBytes(min(n, zeroChunk))
	for n > 0 {
		c := min(n, int64(len(buf)))
		if _, err := w.WriteAt(buf[:c], off); err != nil {
			return err
		}
		off += c
		n -= c
	}
	return nil
}

// IsZero reports whether every byte of p is zero. It is the hot path of thin
// copies and zero detection, so it compares eight bytes at a time.
func IsZero(p []byte) bool {
	for len(p) >= 64 {
		if binary.LittleEndian.Uint64(p)|binary.LittleEndian.Uint64(p[8:])|
			binary.LittleEndian.Uint64(p[16:])|binary.LittleEndian.Uint64(p[24:])|
			binary.LittleEndian.Uint64(p[32:])|binary.LittleEndian.Uint64(p[40:])|
			binary.LittleEndian.Uint64(p[48:])|binary.LittleEndian.Uint64(p[56:]) != 0 {
			return false
		}
		p = p[64:]
	}
	for _, b := range p {
		if b != 0 {
			return false
		}
	}
	return true
}
