// Package ntfs reads NTFS volumes, read-only, for file-level restore: it
// implements [inode.FS] and [inode.XattrFS] over an io.ReaderAt holding
// the volume's bytes. [Open] reads the boot sector, bootstraps $MFT from
// its own record (following its $ATTRIBUTE_LIST when $MFT is
// fragmented) and reads the label from $Volume.
//
// The reader is written for this package from the on-disk format. The
// go-ntfs parser (www.velocidex.com/golang/go-ntfs v0.2.1) was considered
// and not used: it is a forensic tool that drops errors (corrupt
// structures read as empty rather than as errors), assumes 4 KiB index
// blocks and scans every index block instead of following the B+ tree, so
// stale entries in unused blocks would show as files.
//
// # Supported
//
//   - $MFT records of 1 to 64 KiB with update sequence (fixup) checks, and
//     extension records reached through $ATTRIBUTE_LIST, split
//     non-resident attributes joined in VCN order.
//   - Resident and non-resident data; runlists; sparse files (holes and
//     bytes past the initialized size read as zeros; Stat.Blocks is the
//     bytes of allocated clusters); LZNT1-compressed files (compression
//     units of up to 64 KiB with clusters of up to 4 KiB, as NTFS makes).
//   - Directories: the $I30 B+ tree, from $INDEX_ROOT into the
//     $INDEX_ALLOCATION blocks it points to (each block's fixups, magic
//     and VCN checked). Listings are sorted by name.
//   - Names: Win32 and POSIX names are shown; DOS (8.3) duplicates are
//     neither listed nor found. Lookups are case-sensitive, as in
//     ntfs-3g. The metafiles (records 0 to 15: $MFT, $Bitmap, $Extend…)
//     are hidden, as ntfs-3g hides them.
//   - Hard links: every name of a file is listed; Nlink counts the file's
//     names that are shown (ntfs-3g's st_nlink also counts a separate DOS
//     name).
//   - Symbolic links and junctions (reparse tags IO_REPARSE_TAG_SYMLINK
//     and IO_REPARSE_TAG_MOUNT_POINT) and the symbolic links ntfs-3g
//     writes (system files holding "IntxLNK\x01" and the target) are
//     fs.ModeSymlink with Stat.Target. Backslashes become slashes; a
//     relative target is kept as it is; an absolute one ("\??\C:\dir",
//     "C:\dir") is taken relative to this volume's root ("/dir"), since
//     which volume a drive letter names is not known here.
//   - Times from $STANDARD_INFORMATION (100 ns units): creation is Btime,
//     modification Mtime, MFT change Ctime, access Atime.
//   - Mode: 0777 for files and directories, as ntfs-3g shows them by
//     default, except that a file with the read-only attribute has no
//     write bits (0555; ntfs-3g shows 0777 there too). Hidden and system
//     attributes do not change the mode. UID and GID are 0.
//   - Alternate data streams (named $DATA attributes) are returned by
//     Xattrs as "user.NAME", the names ntfs-3g gives them with
//     streams_interface=xattr, so extracting onto Linux and copying back
//     through ntfs-3g recreates them. A stream over 64 MiB is refused
//     with disk.ErrOutOfMemory.
//   - Statfs: cluster size, the volume's clusters and those $Bitmap marks
//     free; inodes are $MFT's records and those its $BITMAP marks free.
//   - Label from $Volume's $VOLUME_NAME; UUID is the 64-bit serial number
//     as blkid prints it (16 upper-case hex digits).
//
// # Refused
//
// Opening the data of these files gives an error matching
// disk.ErrNotSupported (Stat and ReadDir still work): EFS-encrypted
// files; compressed data with an unusual compression unit or clusters
// over 4 KiB; data behind deduplication, WOF ("compact OS") and cloud
// file reparse points, whose bytes are not in the unnamed $DATA. Other
// reparse points read as the plain files they are. $EA extended
// attributes, security descriptors, object IDs, quotas, $UsnJrnl and
// $LogFile are not read (a volume that Windows did not shut down cleanly
// reads as its metadata stands, without replaying the log).
//
// # Hostile input
//
// Every number read from the volume is checked before use: record and
// attribute lengths, resident value and name bounds, VCN ranges, runs
// against the volume's clusters, index entry lengths, index block sizes
// (512 bytes to 64 KiB), subnode VCNs (each block visited once, at most
// 64 levels), $ATTRIBUTE_LIST size (1 MiB) and the extension records it
// names (1,024), LZNT1 back references. A directory must name the
// directory that lists it, so a damaged index cannot make a cycle.
// Structures that break the format give errors matching disk.ErrCorrupt
// for the file or directory concerned; the rest of the volume stays
// readable. A volume cut short (a truncated image) opens, and the files
// whose clusters lie past its end give such errors. The reader has no recover: it is fuzzed (FuzzOpen, FuzzRuns,
// FuzzLZNT1) so that it does not panic.
//
// # Concurrency and caches
//
// An FS is safe for concurrent use, and so is each File's ReadAt. Parsed
// records (4,096) and directory listings (524,288 entries in all, about
// 50 MB; a directory of over 262,144 entries is listed again on each
// lookup) are kept in LRU caches. A read is served with one ReadAt of the volume per
// run it covers; a compressed file keeps its last decompressed unit.
//
// # Testing
//
// The tests build volumes with mkntfs, fill them through an ntfs-3g FUSE
// mount (skipped unless root with /dev/fuse) and compare every name's
// type, size, link count, times, link target, bytes and streams with a
// read-only ntfs-3g mount of the same image, and each directory with
// ntfsls. testdata/seed.img.gz (regenerate with go test -run SeedImage
// -update) is the fuzzer's starting volume.
package ntfs
