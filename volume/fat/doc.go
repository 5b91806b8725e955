// Package fat reads FAT12, FAT16 and FAT32 filesystems (what blkid calls
// "vfat"), read-only, implementing [inode.FS].
//
// # Overview
//
// [Open] checks the boot sector's BIOS parameter block (sector size,
// cluster size, reserved sectors, FAT count and size, the root directory)
// and picks the variant as Linux does: a zero 16-bit FAT size means FAT32,
// otherwise fewer than 4,085 clusters mean FAT12, else FAT16. FAT32's
// FSInfo sector gives the free cluster count when its signatures hold and
// its count is in range; otherwise [FS.Statfs] counts free clusters in the
// FAT.
//
// # Names
//
// VFAT long file names (UTF-16, decoded to UTF-8) are used when their
// sequence numbers run in order and their checksum matches the short entry
// that follows; otherwise the 8.3 name shows, with the case flags of the
// NT reserved byte (0x08 lowercase base, 0x10 lowercase extension) applied
// and bytes above 0x7f read as code page 437, as Linux's vfat shows them
// with its default codepage. Lookups try the exact name, then any case, as
// vfat does. Names that cannot be io/fs path elements (containing "/" or
// NUL) are skipped, and so is a second entry with a name already listed.
//
// The label is the root directory's volume label entry, else the boot
// sector's ("NO NAME" meaning none), and the UUID is the volume serial
// number as XXXX-XXXX, both as blkid prints them.
//
// # Attributes
//
// FAT records no owners or permissions. Files and directories show as
// Linux's vfat shows them with its defaults (uid and gid 0, fmask and dmask
// from a umask of 022): mode 0755, and 0555 for a file with the read-only
// attribute (directories keep their write bits, as without the rodir
// option). Times are read in UTC, as vfat does without a tz option: the
// modification time (2 s resolution) is also the change time, the creation
// time has 10 ms resolution, and the access time is a date. The root
// directory has no times (the Unix epoch, as Linux shows it). A
// directory's link count is 2 plus its subdirectories, as Linux counts it.
// Hidden, system and archive attributes are not shown. There are no
// symbolic links: Lstat is Stat and ReadLink fails with fs.ErrInvalid.
//
// # Hostile input
//
// Every cluster number is checked against the data area, and the data
// area against the volume's size (a truncated volume is read as far as it
// goes). Cluster chains are bounded by the number of clusters and loops are
// found with Brent's cycle detection; a chain that reaches a free or bad
// cluster is corrupt, and so is a file whose chain is shorter than its
// size. Directories are bounded to 2 MiB (65,536 entries, the limit of the
// FAT specification and of Linux), and a subdirectory that is its
// own ancestor is corrupt. Such damage gives an error matching
// disk.ErrCorrupt for the file or directory concerned; the rest stays
// readable. Caches of the FAT (16 MiB) and of directories (about a million
// entries) are bounded.
//
// # Concurrency
//
// An FS is safe for concurrent use, and so is each File's ReadAt; reads of
// a file go to the volume one run of consecutive clusters at a time.
//
// # Testing
//
// Images are made by mkfs.vfat (FAT12, FAT16, FAT32) and populated by
// mtools (mcopy -s -m, mmd, mdel for a fragmented file, mattrib, mlabel);
// names, bytes and modification times are compared with the source tree,
// and the label, serial and free space with mdir and blkid. When the
// kernel has vfat and the test runs as root, a loop mount is a second
// oracle. FuzzOpen walks mutated seed images (testdata).
package fat
