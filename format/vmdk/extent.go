package vmdk

import (
	"io"
)

// blockState says where the bytes of a range of one link come from.
type blockState uint8

const (
	// stateAbsent: the link holds nothing for the range; reads fall through
	// to the parent link (zeros when there is none).
	stateAbsent blockState = iota
	// stateZero: the range reads as zeros and does not fall through (a
	// zeroed grain, a ZERO extent, an SEsparse unmapped or zero grain).
	stateZero
	// stateData: the bytes live in this extent.
	stateData
)

// extent is the data container behind one extent line of a descriptor: a
// hosted sparse (KDMV) file, a streamOptimized file, a flat or VMFS file, a
// COWD (vmfsSparse) file, an SEsparse file or a ZERO extent. Offsets and
// lengths are bytes relative to the start of the extent. A link (one
// descriptor) is a sequence of extents; a chain is a sequence of links. The
// chain code in this package does fall-through, copy-on-write, locking
// between overlapping writes and range checks; implementations may assume
// every call lies inside [0, size()).
//
// Implementations must be safe for concurrent calls on non-overlapping
// ranges (reads may overlap anything).
type extent interface {
	// size returns the extent's length in bytes (its extent line's sector
	// count × 512).
	size() int64
	// lookup reports the state of the byte at off and the length of the run
	// from off that shares it, at least 1 and at most n. It does no data I/O
	// beyond metadata (grain tables) and must be cheap: allocation maps of
	// terabyte disks are built from it.
	lookup(off, n int64) (blockState, int64, error)
	// readAt fills p with the bytes at off. Ranges that are not stateData
	// read as zeros; the caller fills absent ranges from the parent.
	readAt(p []byte, off int64) error
	// writeAt stores p at off. For a sparse extent, a write that covers
	// only part of an unallocated grain fills the rest of the grain from
	// parent (which reads the chain below this link), or with zeros when
	// parent is nil or the grain was a zeroed grain. Read-only extents
	// return ErrPermission (opened read-only) or ErrNotSupported (format
	// cannot be written in place).
	writeAt(p []byte, off int64, parent io.ReaderAt) error
	// flush makes completed writes durable (data, then grain tables, then
	// the file).
	flush() error
	// close flushes, clears the unclean-shutdown mark if it set one, and
	// releases the file.
	close() error
}

// zeroer is an extent that can make a range read as zeros without writing
// data: a whole-grain zero may become a zeroed-grain GTE (flag bit 2) or an
// unallocated GTE when there is no parent to show through.
type zeroer interface {
	// zeroAt makes [off, off+n) read as zeros. parent, when not nil, is
	// what an unallocated grain shows (the rest of a partly zeroed grain
	// is copied from it).
	zeroAt(off, n int64, parent io.ReaderAt) error
}

// trimmer is an extent that can release the storage of whole grains
// (SEsparse unmap). Partial grains are left alone: trim is advisory.
type trimmer interface {
	trimAt(off, n int64, parent io.ReaderAt) error
}
