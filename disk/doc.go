// Package disk is the contract every vdisk image, transport and test
// double meets, and the tools that work on any of them.
//
// # The contract
//
// A [Disk] is small: io.ReaderAt, io.WriterAt, Size, Flush and Close, with
// offsets and lengths in bytes. Further powers are optional interfaces,
// found by type assertion: [Extenter] (which ranges hold data, read as
// zeros, or are holes: the engine of allocated-block queries, NBD
// base:allocation and thin copies), [Zeroer], [Trimmer], [Resizer],
// [ReadOnlyReporter] and [WriteBehinder]. The helpers in this package use them when present
// and fall back when not, so callers need not care.
//
// # Errors
//
// One vocabulary serves every layer: the [Code] constants (ErrNotFound,
// ErrBusy, ErrOutOfMemory, ErrPermission, ErrAccess, ErrNotSupported,
// ErrCorrupt, ErrInvalid, ErrNoSpace) are errors themselves, work with
// errors.Is, match the standard library's fs and errors sentinels, and map
// to VDDK's VIX error numbers. [Error] adds the operation, path and offset.
// [CodeOf] classifies any error, OS errors included.
//
// # Tools
//
// [Copy] copies one disk to another, extent-aware and in parallel with
// bounded memory, keeping thin images thin; [Compare] compares two. [FS]
// and [File] are the seam through which formats reach storage, so that
// tests can put a crash-simulating filesystem (disktest.CrashFS) under
// them; [WriteFileAtomic] replaces small state files durably, and
// [ReadFileNoFollow] reads them without following a planted link.
// [LockImage] takes qemu-compatible image locks on a file, and
// [LockExclusive] an exclusive lock (a host's data directory).
// [WriteBehind] starts the write-back of a file being filled while it is
// written, so that the sync at the end of a bulk copy has little left to
// do: formats wrap the data files of a disk being filled in one, and Copy
// turns it on for its destination.
//
// # Concurrency
//
// Implementations document their own rules; every one in vdisk is safe for
// concurrent ReadAt and WriteAt on non-overlapping ranges, and Flush makes
// every write that completed before it was called durable.
package disk
