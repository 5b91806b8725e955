package disk

import "unsafe"

// DirectAlign is the buffer alignment unbuffered (O_DIRECT) I/O needs.
const DirectAlign = 4096

// AlignedBuffer reports whether p starts at a multiple of SectorSize, as
// unbuffered I/O requires.
func AlignedBuffer(p []byte) bool {
	if len(p) == 0 {
		return true
	}
	return uintptr(unsafe.Pointer(unsafe.SliceData(p)))%SectorSize == 0
}

// AlignedBytes returns a zeroed buffer of n bytes aligned to DirectAlign,
// for unbuffered I/O.
func AlignedBytes(n int64) []byte {
	b := make([]byte, n+DirectAlign)
	skip := int64(0)
	if r := uintptr(unsafe.Pointer(unsafe.SliceData(b))) % DirectAlign; r != 0 {
		skip = int64(DirectAlign - r)
	}
	return b[skip : skip+n : skip+n]
}
