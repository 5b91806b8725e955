package disk

import (
	"encoding/binary"
)

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
