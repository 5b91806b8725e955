// Package xfs reads XFS filesystems, read-only, implementing [inode.FS]
// and [inode.XattrFS].
//
// # Why our own reader
//
// github.com/masahiro331/go-xfs-filesystem (v0.0.0-20260422061116-d21e5e4481bb)
// was evaluated and not used: it has no extended attributes, no bigtime
// timestamps, no symbolic link targets, no link counts or owners in its
// file information, and it panics on crafted input; its allocations follow
// on-disk counts unchecked. This package is written from the XFS on-disk
// format as documented by the kernel's xfs_format.h and the XFS
// Algorithms & Data Structures book.
//
// # Supported
//
// Version 5 superblocks (CRCs, the mkfs.xfs default) and version 4
// (with version 2 directories); any number of allocation groups and block sizes from 512
// bytes to 64 KiB, with directory blocks larger than filesystem blocks.
// Inode versions 1, 2 and 3, with bigtime (nanosecond timestamps from 1901
// to 2486) and large extent counters (nrext64). Data forks in local,
// extents and btree format. Directories in short form, block, leaf and
// node form (with or without ftype): entries are read from the data
// blocks, and the hash indexes are not needed. Symbolic links inline and
// remote (v5 remote blocks' headers are checked). Sparse files: holes and
// unwritten extents read as zeros, and Stat.Blocks is the blocks
// allocated. Extended attributes in short form, leaf and node form, with
// remote values, named as getfattr names them ("user.", "trusted.",
// "security."; XFS's own ACL records, trusted.SGI_ACL_FILE and
// SGI_ACL_DEFAULT, are also listed as system.posix_acl_access and
// system.posix_acl_default in the Linux format, as Linux lists them;
// parent pointers are not listed). Hard links (Stat.Ino and Nlink), device nodes (Stat.Rdev as
// Linux's st_rdev encodes major and minor), FIFOs, sockets, and setuid,
// setgid and sticky bits. Incompatible features ftype, sparse inodes,
// meta_uuid, bigtime, nrext64, exchange-range and parent pointers.
//
// # Refused
//
// Open returns an error matching disk.ErrNotSupported for: superblock
// versions other than 4 and 5, version 1 directories, the needsrepair,
// metadir and zoned features and any unknown incompatible feature (named
// in the message), a realtime device (its files live on another device)
// and an external log. The log is never replayed: a filesystem that was
// not cleanly unmounted reads as its last written metadata shows it.
// Statfs reports the superblock's counters, which lag on such a
// filesystem.
//
// # Hostile input
//
// Every block and inode number is checked against its allocation group,
// the filesystem and the volume's size before it is read. Btrees are
// bounded in depth and in records (their leaves must hold the count of
// extents the inode claims), extents must be sorted and not overlap,
// directory blocks must carry their magic (and on v5 their owner), and a
// directory is read up to 256 MiB. On v5 the CRC32C of the superblock, of
// each inode and of every directory, btree, attribute and remote block
// read is checked, as Linux's verifiers do. Lookups follow at most 40
// symbolic links, and a directory that is its own ancestor is corrupt.
// Damage gives an error matching disk.ErrCorrupt for the file or directory
// concerned; the rest stays readable. The AG headers and the free-space
// and inode btrees are not read.
//
// # Concurrency
//
// An FS is safe for concurrent use, and so is each File's ReadAt. Caches
// of inodes (4,096 decoded, and 64 raw chunks of 16 KiB, so that a walk
// reads inodes a chunk at a time) and of directories (about a million
// entries) are bounded. A file's reads go to the volume one extent at a
// time, however large the request.
//
// # Testing
//
// Images are made by mkfs.xfs from protofiles (every variant: v4, v5,
// bigtime, no ftype, 512-byte and 1 KiB blocks, several AGs, large
// directory blocks), compared with the tree they were made from and with
// xfs_db's view of inodes (times, link counts, blocks) and of the
// superblock; attributes are added offline with xfs_db's attr_set. As
// root, images populated through Linux's XFS driver (hard links,
// attributes and ACLs, sparse, preallocated and btree-format files and
// directories, far-future times, sockets) are compared with what the
// kernel showed of every file. FuzzOpen walks mutated seed images
// (testdata).
package xfs
