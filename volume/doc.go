// Package volume finds the volumes inside a set of disks: the VixMntapi
// counterpart. It reads any [disk.Disk] (a local image, an NBD export, a
// host disk or snapshot opened through the kit) and imports nothing of
// vdisk but package disk and its own sub-packages (volume/lvm,
// volume/inode and the filesystem readers).
//
// # Layers
//
//   - Partition tables: [Partitions] reads one disk's MBR or GPT.
//   - Probing: [Probe] names what a range holds by its magic, as blkid
//     does: a filesystem, or a container (an LVM PV, LUKS, an md member).
//   - Sets: [OpenSet] opens disks together (VixMntapi_OpenDisks) and lists
//     every [Volume] across them: partitions, whole disks, and the LVM
//     logical volumes of volume groups whose PVs lie on any of them
//     (package volume/lvm assembles those).
//   - Filesystems: [Volume.FS] hands a volume to the reader for its type,
//     giving an [inode.FS].
//   - Operating system: [Set.OSInfo] (VixMntapi_GetOsInfo) finds the root
//     filesystem, reads os-release and fstab, and gives each volume its
//     guest mount point.
//
// # Partition tables
//
// [Partitions] reads an MBR (primary partitions, and the logical ones in
// an extended partition's chain of EBRs) or a GPT (its primary header and
// entries, or the backup copy at the end of the disk when the primary is
// damaged). A disk without either has no partitions.
//
// # Filesystems and containers
//
// [Volumes] lists one disk's partitions (or the whole disk) with what
// [Probe] finds in each: ext2, ext3, ext4, XFS, FAT, NTFS and swap, with
// the UUID and label as blkid prints them (NTFS's label from its $Volume
// MFT record), and the containers: LVM2 PVs, LUKS1 and LUKS2
// headers, md RAID superblocks (v0.90 and v1.0 at the end, v1.1 at the
// start, v1.2 at 4 KiB) and BitLocker. A FAT or NTFS boot sector on a
// whole disk is not taken for an MBR.
//
// # Sets
//
// Volume IDs are stable across runs on the same disks given in the same
// order: "disk0" for a disk without a partition table, "disk0/p2" for a
// partition (numbered as Linux numbers it), "lvm/VG/LV" for an LV. Each
// Volume carries its disk indexes, byte ranges (an LV's segments and
// stripes), partition entry, probed filesystem and, once OSInfo ran, its
// mount point. [Volume.Open] gives its bytes; an LV's reader maps each
// read across its segments and stripes, on as many disks as it spans.
//
// What vdisk finds but cannot read is listed, with the reason in
// Volume.Unsupported, not hidden: LUKS and BitLocker volumes, md RAID
// members, Windows dynamic disk (LDM) and Storage Spaces partitions, thin
// pools and thin LVs, RAID and mirror LVs, snapshots, and LVs with a
// segment on a PV that is not in the set ("PV uuid … missing"). LVs whose
// segments all lie on present PVs open even when their VG lacks a PV.
//
// The disks of a set are wrapped read-only: a write fails with
// disk.ErrPermission. The set does not own them; the caller closes them.
//
// # Mount points
//
// OSInfo takes as the Linux root the first volume whose filesystem has
// etc/fstab and an os-release (etc/os-release, else usr/lib/os-release,
// else lib/os-release on the volume fstab mounts on /usr). Each fstab
// entry is matched to a volume by UUID=, LABEL=, PARTUUID= (a GPT
// partition GUID, or an MBR signature and partition number),
// PARTLABEL=, /dev/disk/by-{uuid,label,partuuid,partlabel}/…,
// /dev/disk/by-id/dm-name-… and dm-uuid-LVM-…, /dev/mapper/VG-LV (with
// dashes in names doubled), /dev/VG/LV, and kernel names by disk index
// and partition number (/dev/sda1, vdb2, xvdc, hdd, nvme0n1p3,
// mmcblk0p1). For Windows a registry reader is called through a hook.
//
// # Hostile input
//
// Every number read from the disk is checked before it is used: entries
// that point past the disk, overlapping or looping EBR chains, header and
// entry-array sizes and CRCs, LVM labels, metadata areas and texts (see
// volume/lvm). Reads are bounded (at most 1,024 logical partitions, 1 MiB
// of GPT entries, 4,096 LVs per set, 64 KiB of os-release and 1 MiB of
// fstab), so a crafted disk costs bounded work and gives an error, never
// a panic.
//
// # Concurrency
//
// A Set and its Volumes are safe for concurrent use when the disks'
// ReadAt are. OSInfo records mount points in the set; Volumes returns
// copies, so a Volume obtained earlier keeps its old MountPoint.
package volume
