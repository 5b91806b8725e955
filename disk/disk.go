package disk

import (
	"context"
	"io"
)

// SectorSize is the 512-byte unit of VMDK metadata and VDDK's API. Offsets
// and lengths in vdisk's API are bytes; sectors appear only at format edges.
const SectorSize = 512

// Disk is a virtual disk: a fixed-size array of bytes that can be read and
// written at any offset.
//
// ReadAt and WriteAt follow io.ReaderAt and io.WriterAt: they may be called
// concurrently from several goroutines on non-overlapping ranges (the result
// of concurrent overlapping writes is one of the writes, per range), a read
// that reaches past Size returns the bytes before Size and io.EOF, and a write
// past Size fails with ErrInvalid. Neither keeps p after returning. Unallocated
// ranges read as zeros.
//
// Flush makes every completed write durable. Close flushes, releases the disk
// and returns the first error; it must be called exactly once, and after it
// no other method may be called. Errors carry a [Code] (see [CodeOf]).
type Disk interface {
	io.ReaderAt
	io.WriterAt
	// Size returns the virtual size in bytes.
	Size() int64
	// Flush makes all completed writes durable.
	Flush() error
	// Close flushes and releases the disk.
	Close() error
}

// ExtentFlags describe a range of a disk. The bits are those of NBD's
// base:allocation context so that they cross the wire unchanged.
type ExtentFlags uint32

const (
	// Hole marks a range with no storage allocated to it: in a chain, not
	// allocated in any link. A thin copy skips it.
	Hole ExtentFlags = 1 << 0
	// Zero marks a range that reads as zeros. A range that is Zero but not
	// Hole is allocated but known to be zero (a zeroed grain, a written-zero
	// block).
	Zero ExtentFlags = 1 << 1
)

// Data reports whether the flags describe data that must be read (neither a
// hole nor known zeros).
func (f ExtentFlags) Data() bool { return f&(Hole|Zero) == 0 }

// String returns "data", "zero", "hole" or "hole,zero".
func (f ExtentFlags) String() string {
	switch f & (Hole | Zero) {
	case 0:
		return "data"
	case Zero:
		return "zero"
	case Hole:
		return "hole"
	}
	return "hole,zero"
}

// Extent is a range of a disk with uniform flags.
type Extent struct {
	Off   int64 // bytes from the start of the disk
	Len   int64 // bytes
	Flags ExtentFlags
}

// End returns Off+Len.
func (e Extent) End() int64 { return e.Off + e.Len }

// Extenter is a Disk that knows which of its ranges hold data. It is the
// engine of allocated-block queries, NBD base:allocation and thin copies.
type Extenter interface {
	// Extents calls fn with consecutive extents that together cover exactly
	// [off, off+n) ∩ [0, Size()), in ascending order. Neighbouring extents
	// may share flags. It stops at the first error fn returns and returns
	// it. It must not allocate memory in proportion to n. Safe for
	// concurrent use with reads and writes; extents of ranges being written
	// concurrently may be reported either way.
	Extents(ctx context.Context, off, n int64, fn func(Extent) error) error
}

// ZeroFlags modify WriteZeroes.
type ZeroFlags uint8

const (
	// ZeroNoHole asks that the zeroed range stay allocated (NBD's NO_HOLE).
	// Without it the disk may deallocate the range.
	ZeroNoHole ZeroFlags = 1 << iota
	// ZeroFast asks WriteZeroes to fail with ErrNotSupported rather than
	// write zeros slowly (NBD's FAST_ZERO).
	ZeroFast
)

// Zeroer is a Disk that can make a range read as zeros without the caller
// sending zero bytes.
type Zeroer interface {
	// WriteZeroes makes [off, off+n) read as zeros. Same range rules as
	// WriteAt.
	WriteZeroes(off, n int64, flags ZeroFlags) error
}

// Trimmer is a Disk that can release the storage behind a range. Trim is
// advisory: afterwards the range reads either as before or as zeros (for a
// chain link, as its parent).
type Trimmer interface {
	Trim(off, n int64) error
}

// Resizer is a Disk whose virtual size can change. Shrinking discards the
// data past the new size; growing adds a range that reads as zeros.
type Resizer interface {
	Resize(ctx context.Context, size int64) error
}

// ReadOnlyReporter is a Disk that can tell whether it was opened read-only.
type ReadOnlyReporter interface {
	ReadOnly() bool
}

// IsReadOnly reports whether d reports itself read-only.
func IsReadOnly(d Disk) bool {
	r, ok := d.(ReadOnlyReporter)
	return ok && r.ReadOnly()
}

// Extents reports the extents of d over [off, off+n) through fn. A disk that
// is not an Extenter is reported as one data extent.
func Extents(ctx context.Context, d Disk, off, n int64, fn func(Extent) error) error {
	size := d.Size()
	if off < 0 || n < 0 {
		return Errorf(ErrInvalid, "extents: negative range %d+%d", off, n)
	}
	if off >= size || n == 0 {
		return nil
	}
	if n > size-off {
		n = size - off
	}
	if e, ok := d.(Extenter); ok {
		return e.Extents(ctx, off, n, fn)
	}
	return fn(Extent{Off: off, Len: n})
}

// WriteZeroes makes [off, off+n) of d read as zeros, with the disk's own
// method when it is a Zeroer and by writing zero bytes otherwise (unless
// ZeroFast is set, which then fails with ErrNotSupported).
func WriteZeroes(d Disk, off, n int64, flags ZeroFlags) error {
	if z, ok := d.(Zeroer); ok {
		return z.WriteZeroes(off, n, flags)
	}
	if flags&ZeroFast != 0 {
		return Errorf(ErrNotSupported, "fast zeroing not supported")
	}
	if err := CheckRange(off, n, d.Size()); err != nil {
		return err
	}
	return FillZeros(d, off, n)
}

// Trim releases the storage behind [off, off+n) of d if d is a Trimmer and
// does nothing otherwise (trim is advisory).
func Trim(d Disk, off, n int64) error {
	if err := CheckRange(off, n, d.Size()); err != nil {
		return err
	}
	if t, ok := d.(Trimmer); ok {
		return t.Trim(off, n)
	}
	return nil
}

// Resize changes the virtual size of d, or fails with ErrNotSupported when d
// is not a Resizer.
func Resize(ctx context.Context, d Disk, size int64) error {
	if r, ok := d.(Resizer); ok {
		return r.Resize(ctx, size)
	}
	return Errorf(ErrNotSupported, "resize not supported")
}

// CheckRange returns an ErrInvalid error unless [off, off+n) lies within
// [0, size).
func CheckRange(off, n, size int64) error {
	if off < 0 || n < 0 || off > size || n > size-off {
		return Errorf(ErrInvalid, "range %d+%d outside disk of %d bytes", off, n, size)
	}
	return nil
}

// ReadAtClipped implements the io.ReaderAt end-of-disk rule for a disk of the
// given size: it returns the part of p that lies before size (nil when off is
// at or past it) and the error to return with a short read (io.EOF) or nil.
// A negative off gives ErrInvalid.
func ReadAtClipped(p []byte, off, size int64) ([]byte, error) {
	if off < 0 {
		return nil, Errorf(ErrInvalid, "negative offset %d", off)
	}
	if off >= size {
		if len(p) == 0 {
			return p, nil
		}
		return nil, io.EOF
	}
	if int64(len(p)) > size-off {
		return p[:size-off], io.EOF
	}
	return p, nil
}
