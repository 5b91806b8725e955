package vmdk

// This file holds the public types of package vmdk: the contract the CLI,
// the format registry and the host code against.

import (
	"io"

	"github.com/vdisk-project/vdisk/disk"
)

// Subformat is a VMDK createType (reference §0).
type Subformat string

// The subformats vdisk reads and creates.
const (
	MonolithicSparse     Subformat = "monolithicSparse"
	MonolithicFlat       Subformat = "monolithicFlat"
	TwoGbMaxExtentSparse Subformat = "twoGbMaxExtentSparse"
	TwoGbMaxExtentFlat   Subformat = "twoGbMaxExtentFlat"
	StreamOptimized      Subformat = "streamOptimized"
	VMFS                 Subformat = "vmfs"     // VMFS flat (thick)
	VMFSThin             Subformat = "vmfsThin" // written as createType "vmfs" with ddb.thinProvisioned
	VMFSSparse           Subformat = "vmfsSparse"
	SESparse             Subformat = "seSparse"
)

// Adapter types accepted for new disks (ddb.adapterType). legacyESX is read
// but refused for new disks.
var Adapters = []string{"ide", "buslogic", "lsilogic", "lsisas1068", "pvscsi"}

// Geometry is a disk's cylinders/heads/sectors (ddb.geometry.*).
type Geometry struct {
	Cylinders uint64
	Heads     uint32
	Sectors   uint32
}

// CreateOptions describe a new disk. The zero value makes a monolithicSparse
// disk for an ide adapter, hardware version 4, like qemu-img's defaults.
type CreateOptions struct {
	Subformat    Subformat // default MonolithicSparse
	Adapter      string    // one of Adapters; default "ide"
	HWVersion    int       // ddb.virtualHWVersion; default 4
	ToolsVersion string    // ddb.toolsVersion; default "2147483647"
	// Parent, when set, makes the new disk a child (delta or linked clone)
	// of the disk at this path: same capacity, parentCID and
	// parentFileNameHint set. The path is stored relative to the child when
	// possible. Only sparse subformats can have a parent.
	Parent string
	// SplitSize is the size in bytes of each extent of the split
	// (twoGbMaxExtent*) subformats. Default 2047 MiB (VMware's); qemu uses
	// 2 GiB.
	SplitSize int64
	// MaxFileSize, when set, is the largest file the target filesystem
	// holds (ext4: 16 TiB). An seSparse disk is then split into several
	// SESPARSE extents, each of whose files stays below it even when every
	// grain is written; a subformat whose file could outgrow it is refused
	// with ErrNoSpace naming the limit.
	MaxFileSize int64
	// IgnoreCID accepts a Parent chain whose CIDs do not match (see
	// OpenOptions.IgnoreCID); the new child records the parent's current CID.
	IgnoreCID bool
	// ZeroedGrain enables zeroed-grain GTEs (sparse header version 2).
	ZeroedGrain bool
	// Workers is the number of compressing goroutines for
	// streamOptimized. Default GOMAXPROCS.
	Workers int
	// ForceShare opens the parent and the new disk without image locks
	// (see OpenOptions.ForceShare), for a caller that coordinates its
	// opens itself. By default the parent must not be in use by a writer.
	ForceShare bool
	// FS is the filesystem to create files in; nil means disk.OSFS.
	FS disk.FS
}

// OpenOptions modify Open. The zero value opens the whole chain read-write.
type OpenOptions struct {
	ReadOnly bool
	// SingleLink opens only the named link, not its parents (VDDK's
	// OPEN_SINGLE_LINK): absent grains read as zeros. Implies nothing about
	// writability.
	SingleLink bool
	// IgnoreCID opens a chain whose parentCID does not match its parent's
	// CID. Without it a mismatch is an ErrCorrupt error.
	IgnoreCID bool
	// AllowChildren lets a link that other disks name as their parent be
	// opened for writing. Only a consolidation may do so: it writes into a
	// parent exactly the data its single child already holds, so the child's
	// view never changes.
	AllowChildren bool
	// Unbuffered opens files with O_DIRECT; buffers passed to ReadAt and
	// WriteAt must then be sector-aligned in address and length.
	Unbuffered bool
	// Salvage opens a damaged image read-only and serves what can be read
	// (for example the grains of a truncated stream found by a marker scan).
	Salvage bool
	// ForceShare opens the files without taking image locks (qemu-img's
	// -U). By default Open locks the descriptor and every extent file as
	// qemu does (see disk.LockImage): a writer excludes other writers and
	// readers, a reader excludes writers, parents are locked as read, and
	// a conflict is disk.ErrBusy. Only a read-only open should force
	// sharing.
	ForceShare bool
	// MaxFileSize, when set, is the largest file the filesystem holds
	// (see CreateOptions.MaxFileSize): Resize keeps every file it grows or
	// adds below it, or fails with ErrNoSpace naming it.
	MaxFileSize int64
	// FS is the filesystem to open files from; nil means disk.OSFS.
	FS disk.FS
	// Base, for a disk without a parent link, is what the disk lies over
	// when it is an overlay of something that is not a VMDK (a backup
	// point served for instant restore): a write of part of an
	// unallocated grain fills the rest of the grain from Base instead of
	// zeros, as a child fills it from its parent. Reads of unallocated
	// grains still return zeros (Extents reports them as holes), so the
	// caller reads Base there. Base must be at least the disk's size.
	Base io.ReaderAt
	// Warm, for a read-only open, is an open disk that holds some of the
	// same SEsparse files, flushed and getting no more writes (a
	// snapshot's chain opened as the live chain that wrote it is about to
	// close): their grain directories and grain tables are taken from it
	// instead of read again.
	Warm *Disk
}

// Info describes an open disk.
type Info struct {
	Capacity   int64     // virtual size in bytes
	CreateType Subformat // of the leaf link
	Adapter    string
	HWVersion  string
	Geometry   Geometry
	CID        uint32
	ParentCID  uint32 // 0xffffffff when there is no parent
	ParentHint string // parentFileNameHint of the leaf, "" when none
	UUID       string // ddb.uuid, "" when none
	Links      int    // number of links in the open chain
	Files      []FileInfo
	// Unclean is set when a link was found marked as not cleanly closed.
	Unclean bool
}

// FileInfo describes one file of an open disk.
type FileInfo struct {
	Path       string
	Link       int    // 0 is the leaf
	Kind       string // "descriptor", "SPARSE", "FLAT", "VMFS", "VMFSSPARSE", "SESPARSE", "ZERO"
	Access     string // "RW", "RDONLY", "NOACCESS"
	Offset     int64  // virtual offset of the extent, bytes
	Size       int64  // virtual size of the extent, bytes
	Compressed bool
	FileSize   int64 // bytes on storage
}

// LinkInfo describes one link of an open chain on its own: one descriptor
// and its extents, as qemu-img info describes one image of a chain.
type LinkInfo struct {
	Path       string // the descriptor file, or the sparse file embedding it
	CreateType string // the descriptor's createType, verbatim ("vmfs" for a vmfsThin disk)
	CID        uint32
	ParentCID  uint32 // 0xffffffff when the link has no parent
	ParentHint string // parentFileNameHint, "" when none
	Capacity   int64  // virtual size of the link in bytes
	// SelfContained is set when the descriptor is embedded in the link's
	// only extent file (monolithicSparse, streamOptimized).
	SelfContained bool
	Unclean       bool // the link was found marked as not cleanly closed
	Extents       []ExtentInfo
}

// ExtentInfo describes one extent line of a link.
type ExtentInfo struct {
	Path       string // the extent's file, "" for a ZERO extent
	Type       string // "SPARSE", "FLAT", "VMFS", "VMFSSPARSE", "SESPARSE", "ZERO"
	Access     string // "RW", "RDONLY", "NOACCESS"
	Offset     int64  // virtual offset of the extent, bytes
	Size       int64  // virtual size of the extent, bytes
	GrainSize  int64  // bytes per grain; 0 for FLAT, VMFS and ZERO extents
	Compressed bool
}

// Mapping is one run of [Disk.Map]: a range of the virtual disk and where
// its bytes are stored.
type Mapping struct {
	Off, Len int64 // virtual range, bytes
	// Flags are those of [Disk.Extents]: Hole when no link holds the range
	// (it reads as zeros), Zero when it reads as zeros.
	Flags disk.ExtentFlags
	// Link is the link that holds the range (0 is the leaf). For a Hole it
	// is the last link looked at.
	Link int
	// File is the file that stores the range's bytes: a data grain, a
	// compressed grain or a range of a flat file (a hole in a flat file is
	// Zero and still has a File). It is "" for holes, zeroed grains and
	// ZERO extents.
	File string
	// FileOff is the byte offset of the range in File, -1 when the bytes
	// have no fixed place there (compressed grains) or there is no File.
	// Within one Mapping the bytes are contiguous in File.
	FileOff    int64
	Compressed bool
}

// RepairMode selects what Check may change.
type RepairMode int

// Repair modes, like qemu-img check -r.
const (
	RepairNone  RepairMode = iota // report only
	RepairLeaks                   // reclaim leaked grains and clear a stale unclean mark
	RepairAll                     // everything reference §11.4 lists
)

// CheckOptions modify Check.
type CheckOptions struct {
	Repair    RepairMode
	IgnoreCID bool
	FS        disk.FS
}

// Problem is one finding of Check.
type Problem struct {
	Path     string
	Severity string // "error", "warning", "leak"
	Message  string
	Repaired bool
}

// CheckReport is Check's result.
type CheckReport struct {
	Problems    []Problem
	Errors      int   // corruptions found
	Leaks       int   // leaked grains found
	LeakedBytes int64 // bytes in leaked grains
	Repaired    int   // problems repaired
	// Unrepaired counts errors left after repair; LostBytes is data that
	// repair had to drop (a GTE pointing past the end of file, say).
	Unrepaired int
	LostBytes  int64
	// AllocatedBytes and TotalBytes describe the image like qemu-img check's
	// "allocated clusters" line.
	AllocatedBytes int64
	TotalBytes     int64
}

// Clean reports whether the check found no errors left unrepaired.
func (r *CheckReport) Clean() bool {
	return r.Unrepaired == 0 && (r.Errors == 0 || r.Repaired >= r.Errors)
}

// CompactStats reports what Compact reclaimed.
type CompactStats struct {
	BytesBefore int64 // file bytes before
	BytesAfter  int64 // file bytes after
	Grains      int   // grains dropped (zero or unreferenced)
}

// The functions below complete the surface:
//
//	func Create(ctx context.Context, path string, size int64, o *CreateOptions) (*Disk, error)
//	func Open(ctx context.Context, path string, o *OpenOptions) (*Disk, error)
//	func Check(ctx context.Context, path string, o *CheckOptions) (*CheckReport, error)
//	func Compact(ctx context.Context, path string, o *OpenOptions) (CompactStats, error)
//	func (d *Disk) Info() Info
//	func (d *Disk) Chain() []LinkInfo
//	func (d *Disk) Map(ctx context.Context, off, n int64, fn func(Mapping) error) error
//	func (d *Disk) Metadata(key string) (string, error)   // ErrNotFound for an unknown key
//	func (d *Disk) SetMetadata(key, value string) error    // ddb.* keys; written to the leaf
//	func (d *Disk) MetadataKeys() []string                 // sorted, merged over the chain
//	ReadAt, WriteAt, Size, Flush, Close, Extents, WriteZeroes, Trim, Resize, ReadOnly
