// Package vmdk reads, writes, creates, checks and repairs VMware virtual
// disks in every variant: hosted sparse (monolithic and split),
// flat (monolithic, split and VMFS), streamOptimized, vmfsSparse (COWD) and
// SEsparse deltas, descriptors with several extents including ZERO, RDONLY
// and NOACCESS ones, and snapshot chains and linked clones.
//
// reference/vmdk-format.md (in the project's shared docs) is the format
// reference; section numbers in comments (§3.4) point into it.
//
// # SEsparse written by vdisk
//
// VMware does not document SEsparse; qemu reads it (§5.3) and nothing
// public writes it. vdisk writes it as follows, and writes only extents
// laid out this way (others open read-only).
//
// Create (createType "seSparse", extent type SESPARSE, file
// NAME-sesparse.vmdk, ddb.grain = "8", as ESXi names and describes its
// deltas) lays the file out for a reserved capacity R: the capacity
// times 16, at most 64 TiB, or exactly the capacity when the files must
// fit a size limit. Offsets and sizes are in sectors, every section
// starting on a 4 KiB boundary:
//
//	0        constant header (magic, version 0x200000001, capacity, grain 8, table 64)
//	1        volatile header: magic, free_gt_number (next table slot), next_txn_seq_number
//	         (counts write-backs), replay_journal 0
//	2        journal header: zeros; the journal (4 KiB) after it: zeros, never used
//	gd       one u64 per 16 MiB of R: 0, or 0x10000000<<32 | table slot
//	gt       one 32 KiB slot per 16 MiB of R, used in allocation order
//	bitmap   one bit per grain of R: set means the grain is free for reuse
//	backmap  one u64 per grain of R: 1<<60 | the virtual grain it holds, 0 when free
//	grains   grains_size / 8 grains: every grain in use or freed (the high-water mark)
//
// Everything after the headers starts as a hole. Grain table entries use
// the four types qemu reads: 0 unallocated, 1<<60 unmapped (a trimmed
// grain of a delta: reads as zeros), 2<<60 zero (a zeroed grain of a
// delta), 3<<60 data. A standalone disk writes 0 for both. Grains are
// allocated from the freed ones first, else at the high-water mark.
//
// Crash safety. A flush writes the dirty free-bitmap and back-map pages
// and both headers, syncs, writes the dirty grain tables, syncs, writes
// the grain directory sectors that name new tables, and syncs. Data is
// written before the flush. Hence a directory entry never names a table
// that is not durable, a table entry never names a grain whose data,
// back-map entry and cleared free bit are not durable, and grains_size
// covers every named grain. A grain freed by a trim or zero joins the free
// list, and has its free bit set in memory (written by the next flush),
// only once the table no longer naming it is durable: a set free bit on
// disk never hides a grain a durable table names. After a crash the image
// opens as it was at the last flush, plus possibly some later writes, with
// at worst leaked grains (below the high-water mark, named by no table,
// not marked free), which Check reports and repair marks free. The
// journal is not needed for any of this, and is left empty. The format
// has no mark for "not closed cleanly": a writer that wants leaks
// reclaimed after a crash must remember which extents it had open (the
// host's datastore does, in writing.json) and run Check with RepairLeaks
// on them. That repair only sets the free bits (and clears the back map
// entries) of grains no table names, so a crash during it leaves an image
// with the same data and at most the same leaks.
//
// Reading. The grain tables of the SEsparse extents of one open disk are
// cached together, at most 1024 (32 MiB); a table in memory knows which of
// its entries are allocated, so Extents skips unallocated ones 64 at a
// time and costs what the tables hold.
//
// Growing stays within R (the tables, bitmap and back map have room);
// beyond it Resize adds SESPARSE extents. A disk whose one file could
// outgrow CreateOptions.MaxFileSize is split into several extents.
package vmdk
