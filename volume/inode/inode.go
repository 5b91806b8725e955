// Package inode is the contract between package volume and the filesystem
// readers below it (volume/ext4, volume/xfs, volume/fat, volume/ntfs): the
// interface each reader's filesystem implements and the stat information
// its files carry.
//
// A reader opens a filesystem from an io.ReaderAt (a volume's byte range)
// and returns a value implementing [FS]. It imports only package disk (for
// error codes) and this package.
package inode

import (
	"io"
	"io/fs"
	"time"
)

// FS is a read-only filesystem inside a volume.
//
// Names are io/fs names: slash-separated, unrooted, "." for the root,
// validated with fs.ValidPath (an invalid name gives fs.ErrInvalid inside a
// *fs.PathError). Open and Stat follow symbolic links, also in the middle
// of a path (at most 40 links per lookup, then an error wrapping
// disk.ErrCorrupt); ReadLink and Lstat do not follow the last element.
// A link pointing outside the filesystem (an absolute target is taken
// relative to the filesystem's root) resolves inside it, never outside.
//
// Every fs.FileInfo returned (by Stat, Lstat, ReadDir's DirEntry.Info and
// File.Stat) has Sys() of type *Stat.
//
// Files returned by Open implement [File]. Directories returned by Open
// implement fs.ReadDirFile.
//
// Errors: a missing name gives an error matching fs.ErrNotExist; on-disk
// structures that break the format give an error matching disk.ErrCorrupt
// (for the one file or directory concerned; the rest stays usable); a
// feature the reader does not implement (an encrypted or compressed file
// it cannot decode, say) matches disk.ErrNotSupported; a failed read of
// the underlying volume matches disk.ErrAccess. Readers never panic on
// input and never allocate memory sized by an on-disk claim without
// checking it against the volume's size or a fixed limit.
//
// An FS is safe for concurrent use by multiple goroutines, and so is each
// File's ReadAt.
type FS interface {
	fs.FS
	fs.ReadDirFS
	fs.StatFS
	fs.ReadLinkFS
	// Type is blkid's name for the filesystem: "ext4", "xfs", "vfat", "ntfs".
	Type() string
	// Label and UUID are as blkid prints them ("" when absent).
	Label() string
	UUID() string
	// Statfs reports the filesystem's size and free space in bytes.
	Statfs() (Statfs, error)
}

// XattrFS is implemented by readers of filesystems with extended
// attributes. Xattrs lists name's attributes (not following a final
// symbolic link) as "namespace.name" keys, as getfattr prints them
// ("user.comment", "security.selinux", "trusted.x", "system.posix_acl_access").
// A file without attributes gives an empty, non-nil map.
type XattrFS interface {
	Xattrs(name string) (map[string][]byte, error)
}

// File is an open regular file. ReadAt follows io.ReaderAt's contract and
// is safe for concurrent use; Read and Seek share one offset and are not.
type File interface {
	fs.File
	io.ReaderAt
	io.Seeker
}

// Stat is what a filesystem records about one inode. Zero values mean the
// filesystem does not record that attribute.
type Stat struct {
	Ino   uint64 // inode number (ext4, XFS), MFT record number (NTFS), 0 on FAT
	Mode  fs.FileMode
	Nlink uint32
	UID   uint32
	GID   uint32
	Size  int64
	// Blocks is the bytes allocated on disk for the file's data (less
	// than Size for a sparse file, 0 for data stored inline).
	Blocks int64
	Atime  time.Time
	Mtime  time.Time
	Ctime  time.Time // inode change time; on FAT and NTFS as close as the filesystem has
	Btime  time.Time // creation (birth) time when recorded
	// Rdev is the device number of a character or block device node.
	Rdev uint64
	// Target is a symbolic link's target, as stored.
	Target string
}

// Statfs is a filesystem's size and usage.
type Statfs struct {
	BlockSize   int64
	TotalBytes  int64
	FreeBytes   int64
	TotalInodes int64 // 0 when the filesystem has no fixed inode count
	FreeInodes  int64
}

// SeekOffset is the offset io.Seeker's Seek(offset, whence) moves to from
// cur in a file of size bytes, for the readers' File.Seek. ok is false for
// an unknown whence or a negative result.
func SeekOffset(cur, size, offset int64, whence int) (int64, bool) {
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		offset += cur
	case io.SeekEnd:
		offset += size
	default:
		return 0, false
	}
	return offset, offset >= 0
}
