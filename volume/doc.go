// Package volume finds the volumes inside a disk: the VixMntapi
// counterpart's first layer. It reads any [disk.Disk] (a local image, an
// NBD export, a host disk or snapshot opened through the kit) and imports
// nothing of vdisk but package disk.
//
// # Partition tables
//
// [Partitions] reads an MBR (primary partitions, and the logical ones in
// an extended partition's chain of EBRs) or a GPT (its primary header and
// entries, or the backup copy at the end of the disk when the primary is
// damaged). A disk without either has no partitions.
//
// # Filesystems
//
// [Volumes] lists the partitions (or the whole disk) with what [Probe]
// finds in each: ext2, ext3, ext4, XFS, FAT and swap, with the UUID and
// label as blkid prints them. A FAT or NTFS boot sector on a whole disk is
// not taken for an MBR.
//
// # Hostile input
//
// Every number read from the disk is checked before it is used: entries
// that point past the disk, overlapping or looping EBR chains, header and
// entry-array sizes and CRCs. Reads are bounded (at most 1,024 logical
// partitions and 1 MiB of GPT entries), so a crafted disk costs bounded
// work and gives an error, never a panic.
package volume
