// Package ext4 reads ext2, ext3 and ext4 filesystems, read-only: [Open]
// takes a volume's byte range (an io.ReaderAt and its size) and returns an
// [FS] that implements [inode.FS] and [inode.XattrFS], for package volume
// to list, read and extract files from virtual disks and backups.
//
// # Supported
//
//   - Superblock: revision 0 and 1; 1 to 64 KiB blocks; 32- and 64-bit
//     group descriptors (their crc16 or crc32c checksums verified);
//     sparse_super, sparse_super2, flex_bg, meta_bg, bigalloc, huge_file,
//     large_file, large_dir, mmp (ignored: nothing is written). With
//     metadata_csum (and metadata_csum_seed) the superblock checksum is
//     verified, and so are those of group descriptors, inodes, extent
//     blocks, directory leaf blocks and xattr blocks.
//   - Inodes of 128 bytes and more, with their extra fields: uid and gid
//     with their high 16 bits, i_size_high, i_blocks (in 512-byte units,
//     or blocks with the HUGE_FILE flag) as Stat.Blocks in bytes, atime,
//     mtime, ctime and crtime with nanoseconds and epoch bits.
//   - File data in extent trees (up to depth 5; uninitialized extents
//     read as zeros), in ext2/ext3 block maps (direct, single, double and
//     triple indirect), or inline (inline_data); holes read as zeros.
//   - Directories: linear and htree (whose blocks are read linearly: the
//     index blocks look empty to a linear reader), inline, with or without
//     the file type in their entries. Lookups go through a bounded cache
//     of name tables. Casefolded directories are listed as stored and
//     looked up as given, then ignoring case (Unicode simple folding,
//     which agrees with the kernel's utf8 casefolding for most names).
//   - Fast and slow symbolic links (the kernel's rule tells them apart),
//     hard links (Stat.Nlink), character and block devices (Stat.Rdev in
//     Linux's dev_t encoding, old and new on-disk encodings), fifos,
//     sockets, setuid, setgid and sticky bits.
//   - Extended attributes in the inode, in an xattr block and in an inode
//     of their own (ea_inode), listed as getfattr names them: user.,
//     trusted., security., gnu., system.posix_acl_access and
//     system.posix_acl_default. POSIX ACLs are converted from ext4's
//     compact form to the one getxattr(2) returns, so that a restore can
//     set them as they are. system.data (inline data) and encryption
//     contexts are not listed, as the kernel does not list them.
//   - The journal: a filesystem that was not cleanly unmounted (a
//     crash-consistent snapshot of a running VM, typically) has its jbd2
//     journal replayed in memory at Open: committed transactions, revoke
//     records, escaped blocks, 32- and 64-bit block numbers, checksum
//     versions 2 and 3 (checksums are not verified: a transaction counts
//     when its commit block is found). Nothing is written.
//   - Type, Label and UUID as blkid prints them; Statfs from the
//     superblock's counters.
//
// # Refused
//
// Open refuses an INCOMPAT feature it does not implement with an error
// matching disk.ErrNotSupported that names it (compression, dirdata, and
// any unknown bit), an external journal device, and a filesystem that
// needs recovery from an external journal. An encrypted file or directory
// (EXT4_ENCRYPT_FL) gives disk.ErrNotSupported for itself only: it can be
// stat'ed, not opened, listed or looked up in.
//
// Not done: the fast-commit area of the journal is not replayed (changes
// after the last full commit of a fast_commit filesystem are missing, as
// with a kernel that does not know fast commits); orphan inodes are not
// processed (a file being truncated at the crash keeps its old size);
// Statfs reports the superblock's counters, which the kernel updates
// lazily.
//
// # Differences from the kernel's view
//
// Stat.Blocks is i_blocks: the kernel's stat adds the size of inline data
// to st_blocks of regular files, this reader reports 0 for data stored
// inline, as [inode.Stat] asks.
//
// # Hostile input
//
// Every block number is checked against the filesystem's size before it
// is read, every record length, name length, entry count and offset
// against its block before it is used; extent trees are walked from the
// root down with each level's depth one less than its parent's (at most
// five), so they cannot loop; a directory's entries are read in bounded
// chunks, and holes in it are skipped at once. Path lookups go through a
// directory only if its ".." entry names the directory it was found in
// (and never back to the root), so every walk of the tree is a walk of a
// tree, however the entries loop; at most 40 symbolic links are followed
// per lookup. Allocations
// are bounded by fixed limits (a symbolic link's target is at most 4096
// bytes, an xattr value 64 KiB, a directory chunk 256 KiB) or by the
// volume's size. A structure that breaks the format gives an error
// matching disk.ErrCorrupt for the file or directory it belongs to; the
// rest stays readable. The metadata caches are LRUs of bounded size (16
// MiB of blocks, 8,192 inodes, 128 Ki directory entries).
//
// # Speed
//
// A read maps the file's blocks to runs (an extent, or contiguous
// pointers of an indirect block) and reads each run in one request of
// the caller's size, straight into the caller's buffer; File.WriteTo (and
// so io.Copy) reads 1 MiB at a time. Reading a large file goes as fast as
// the volume's reader (BenchmarkRead); walking and stating 100,000 files
// takes about 2 µs a file from a page-cached image (BenchmarkWalk).
//
// # Why not a library
//
// github.com/masahiro331/go-ext4-filesystem (at fe51f5b, April 2026)
// reads file data a block at a time through one shared Seek and Read
// (no ReadAt, not safe for concurrent use), builds a map of every block
// of a file before reading it (memory sized by the on-disk size), returns
// no Sys() and whole-second mtimes only (no atime, ctime, crtime, owners),
// and has no xattrs, inline data or journal; it also brings zap and
// struc. github.com/diskfs/go-diskfs's filesystem/ext4 is part of a large
// read-write disk library; in the sources reviewed its File has no ReadAt
// (Read and Seek share one offset), allocates a buffer per read and
// extent, and reads an offset in a hole from the next extent's disk
// position instead of returning zeros. Either would need as much work to
// fix as this package is, and neither was written for hostile images.
package ext4
