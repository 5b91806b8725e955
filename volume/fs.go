package volume

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"strings"

	"github.com/vdisk-project/vdisk/disk"
	"github.com/vdisk-project/vdisk/volume/lvm"
)

// Filesystem is what a volume's first bytes say it holds.
type Filesystem struct {
	// Type is blkid's name for it: "ext2", "ext3", "ext4", "xfs", "vfat",
	// "ntfs", "swap", "LVM2_member", "crypto_LUKS", "linux_raid_member",
	// "BitLocker", or "" when nothing known was found.
	Type  string
	UUID  string // as blkid prints it
	Label string
	// Version is blkid's VERSION: "2" for LUKS2, "1.2" for an md
	// superblock, "LVM2 001" for a PV.
	Version string
}

// Volume is a range of a disk that may hold a filesystem: a partition, or
// the whole disk when it has no partition table, or (in a [Set]) an LVM
// logical volume.
type Volume struct {
	// ID names the volume, stable across runs on the same disks given in
	// the same order: "disk0" (a whole disk), "disk0/p1" (partition 1, as
	// Linux numbers it), "lvm/VG/LV". Set only by OpenSet.
	ID   string
	Kind Kind
	// Disk is the index in the set of the disk holding a partition or
	// whole disk (-1 for an LV); Disks lists every disk the volume has
	// bytes on.
	Disk  int
	Disks []int
	// Start is the partition's byte offset on its disk (0 for an LV);
	// Size is the volume's size in bytes.
	Start, Size int64
	// Partition is the table entry, nil for a whole disk or an LV.
	Partition *Partition
	// LV names an LVM logical volume, nil for other volumes.
	LV *LVInfo
	// Segments say where the volume's bytes lie on the disks: one for a
	// partition, an LV's segments in order.
	Segments []Segment
	Filesystem
	// Unsupported says why vdisk cannot read what the volume holds ("LUKS2
	// encrypted volume…", "thin LV in pool…", "PV uuid … missing"), or is
	// "" when it can (or holds nothing known).
	Unsupported string
	// MountPoint is where the guest mounts it, filled in by Set.OSInfo.
	MountPoint string

	set *Set
	r   io.ReaderAt // an LV's bytes
}

// Volumes lists the volumes of d: each partition (an MBR extended
// partition is a container, not a volume) with what it holds, or the whole
// disk when it has no partition table.
func Volumes(ctx context.Context, d disk.Disk) (*Table, []Volume, error) {
	t, err := Partitions(ctx, d)
	if err != nil {
		return nil, nil, err
	}
	var vs []Volume
	if t.Scheme == None {
		fs, err := Probe(d, 0, d.Size())
		if err != nil {
			return nil, nil, err
		}
		return t, []Volume{{Start: 0, Size: d.Size(), Filesystem: fs}}, nil
	}
	for i := range t.Partitions {
		p := &t.Partitions[i]
		if p.Kind == "extended" && !p.Logical {
			continue
		}
		size := max(0, min(p.Size, d.Size()-p.Start))
		v := Volume{Start: p.Start, Size: size, Partition: p}
		if size < p.Size {
			v.Unsupported = fmt.Sprintf("the partition ends at byte %d, past the disk's end (%d)", p.Start+p.Size, d.Size())
		}
		if size > 0 {
			if v.Filesystem, err = Probe(d, p.Start, size); err != nil {
				return nil, nil, err
			}
		}
		vs = append(vs, v)
	}
	return t, vs, nil
}

// probeLen is how much of a volume Probe reads at its start: every
// superblock it knows there lies in the first 8 KiB.
const probeLen = 8 << 10

// Probe says which filesystem (or container: an LVM PV, LUKS, an md RAID
// member, BitLocker) the volume of size bytes at off holds, by its
// superblock's magic, with its UUID and label as blkid prints them.
func Probe(d disk.Disk, off, size int64) (Filesystem, error) {
	return probe(d, off, size)
}

func probe(r io.ReaderAt, off, size int64) (Filesystem, error) {
	b := make([]byte, min(probeLen, size))
	if _, err := r.ReadAt(b, off); err != nil && err != io.EOF {
		return Filesystem{}, disk.Wrap(err, "volume: read superblock", "", off)
	}
	le := binary.LittleEndian
	switch {
	case len(b) >= 512 && (string(b[:6]) == "LUKS\xba\xbe"):
		return luks(b), nil
	case len(b) >= 2048 && hasLVMLabel(b):
		if l, err := lvm.ReadLabel(bytes.NewReader(b), size); err == nil {
			return Filesystem{Type: "LVM2_member", UUID: l.UUID, Version: "LVM2 001"}, nil
		}
	case len(b) >= 256 && le.Uint32(b) == mdMagic && le.Uint32(b[4:]) == 1 && le.Uint64(b[144:]) == 0:
		return md1(b, "1.1"), nil
	case len(b) >= 4096+256 && le.Uint32(b[4096:]) == mdMagic && le.Uint32(b[4100:]) == 1 && le.Uint64(b[4096+144:]) == 8:
		return md1(b[4096:], "1.2"), nil
	}
	// An md superblock at the end wins over a filesystem at the start, as
	// in blkid: a RAID1 member holds its array's filesystem there.
	if f, err := mdAtEnd(r, off, size); err != nil || f.Type != "" {
		return f, err
	}
	switch {
	case len(b) >= 2048 && le.Uint16(b[1024+56:]) == 0xef53:
		return ext(b[1024:]), nil
	case len(b) >= 512 && string(b[:4]) == "XFSB":
		return Filesystem{Type: "xfs", UUID: uuid(b[32:48]), Label: cstring(b[108:120])}, nil
	case len(b) >= 4096 && string(b[4086:4096]) == "SWAPSPACE2":
		return Filesystem{Type: "swap", UUID: uuid(b[1024+12 : 1024+28]), Label: cstring(b[1024+28 : 1024+44])}, nil
	case len(b) >= 512 && string(b[3:11]) == "NTFS    " && le.Uint16(b[510:]) == 0xaa55:
		return Filesystem{Type: "ntfs", UUID: fmt.Sprintf("%016X", le.Uint64(b[0x48:])), Label: ntfsLabel(r, off, size, b)}, nil
	case len(b) >= 512 && string(b[3:11]) == "-FVE-FS-":
		return Filesystem{Type: "BitLocker"}, nil
	case len(b) >= 512 && le.Uint16(b[510:]) == 0xaa55 && (string(b[82:87]) == "FAT32" || string(b[54:57]) == "FAT"):
		return fat(b), nil
	}
	return Filesystem{}, nil
}

// ntfsLabel reads an NTFS volume's label: the $VOLUME_NAME attribute of
// MFT record 3 ($Volume), found through the boot sector's geometry. Any
// inconsistency gives "" (the filesystem reader reports labels too).
func ntfsLabel(r io.ReaderAt, off, size int64, boot []byte) string {
	le := binary.LittleEndian
	bps := int64(le.Uint16(boot[0x0b:]))
	spc := int64(boot[0x0d])
	if spc > 0x80 {
		spc = 1 << (256 - spc)
	}
	if bps < 256 || bps > 4096 || bps&(bps-1) != 0 || spc == 0 || spc > 1<<16 {
		return ""
	}
	cluster := bps * spc
	rec := int64(int8(boot[0x40]))
	if rec < 0 {
		if -rec > 16 {
			return ""
		}
		rec = 1 << -rec
	} else {
		rec *= cluster
	}
	mft := le.Uint64(boot[0x30:])
	if rec < bps || rec > 64<<10 || mft == 0 || mft > uint64(size/cluster) {
		return ""
	}
	at := int64(mft)*cluster + 3*rec
	if at+rec > size {
		return ""
	}
	b := make([]byte, rec)
	if _, err := r.ReadAt(b, off+at); err != nil && err != io.EOF {
		return ""
	}
	if string(b[:4]) != "FILE" {
		return ""
	}
	// The update sequence array: the last two bytes of each sector were
	// replaced by the sequence number and are kept in the array.
	usa, n := int64(le.Uint16(b[4:])), int64(le.Uint16(b[6:]))
	if n < 1 || usa+2*n > rec || (n-1)*bps > rec {
		return ""
	}
	for i := int64(1); i < n; i++ {
		end := i*bps - 2
		if le.Uint16(b[end:]) != le.Uint16(b[usa:]) {
			return ""
		}
		copy(b[end:end+2], b[usa+2*i:])
	}
	for a := int64(le.Uint16(b[0x14:])); a+24 <= rec; {
		typ, alen := le.Uint32(b[a:]), int64(le.Uint32(b[a+4:]))
		if typ == 0xffffffff || alen < 24 || a+alen > rec {
			return ""
		}
		if typ == 0x60 && b[a+8] == 0 { // $VOLUME_NAME, resident
			vlen, voff := int64(le.Uint32(b[a+0x10:])), int64(le.Uint16(b[a+0x14:]))
			if voff+vlen > alen {
				return ""
			}
			return utf16Name(b[a+voff : a+voff+vlen])
		}
		a += alen
	}
	return ""
}

// hasLVMLabel reports whether one of the first four sectors starts an
// LVM label.
func hasLVMLabel(b []byte) bool {
	for s := 0; s < 4; s++ {
		if string(b[s*512:s*512+8]) == "LABELONE" {
			return true
		}
	}
	return false
}

// luks reads a LUKS1 or LUKS2 header: the magic, a big-endian version, and
// the UUID as text at byte 168 in both; LUKS2 has a label at byte 24.
func luks(b []byte) Filesystem {
	v := binary.BigEndian.Uint16(b[6:])
	f := Filesystem{Type: "crypto_LUKS", Version: fmt.Sprint(v), UUID: cstring(b[168:208])}
	if v == 2 {
		f.Label = cstring(b[24:72])
	}
	return f
}

// The md RAID superblock magic, little-endian in v1 (and native, so
// little-endian on x86, in v0.90).
const mdMagic = 0xa92b4efc

// md1 reads an md v1 superblock: the array's UUID at byte 16 and its name
// at byte 32.
func md1(b []byte, version string) Filesystem {
	return Filesystem{Type: "linux_raid_member", Version: version, UUID: uuid(b[16:32]), Label: cstring(b[32:64])}
}

// mdAtEnd looks for the md superblocks kept near a device's end: v1.0 at
// 8 KiB before the end rounded down to 4 KiB, v0.90 in the last 64 KiB
// block (the size rounded down to 64 KiB, less 64 KiB).
func mdAtEnd(r io.ReaderAt, off, size int64) (Filesystem, error) {
	le := binary.LittleEndian
	b := make([]byte, 256)
	for _, c := range []struct {
		at      int64
		version string
	}{
		{(size - 8192) &^ 4095, "1.0"},
		{size&^(64<<10-1) - 64<<10, "0.90.0"},
	} {
		if c.at < probeLen || c.at+256 > size {
			continue
		}
		if _, err := r.ReadAt(b, off+c.at); err != nil && err != io.EOF {
			return Filesystem{}, disk.Wrap(err, "volume: read md superblock", "", off+c.at)
		}
		if c.version == "1.0" {
			if le.Uint32(b) == mdMagic && le.Uint32(b[4:]) == 1 && le.Uint64(b[144:]) == uint64(c.at/512) {
				return md1(b, c.version), nil
			}
			continue
		}
		// v0.90 is in the byte order of the host that wrote it. Its set
		// UUID is split (word 5, then words 13-15); blkid prints each
		// word most significant byte first.
		var order binary.ByteOrder
		switch {
		case le.Uint32(b) == mdMagic:
			order = le
		case binary.BigEndian.Uint32(b) == mdMagic:
			order = binary.BigEndian
		default:
			continue
		}
		if order.Uint32(b[4:]) != 0 || order.Uint32(b[8:]) < 90 {
			continue
		}
		u := make([]byte, 0, 16)
		for _, w := range []int{5, 13, 14, 15} {
			u = binary.BigEndian.AppendUint32(u, order.Uint32(b[w*4:]))
		}
		v := fmt.Sprintf("%d.%d.%d", order.Uint32(b[4:]), order.Uint32(b[8:]), order.Uint32(b[12:]))
		return Filesystem{Type: "linux_raid_member", Version: v, UUID: uuid(u)}, nil
	}
	return Filesystem{}, nil
}

// ext reads an ext2/3/4 superblock (at byte 1024 of the volume).
func ext(sb []byte) Filesystem {
	le := binary.LittleEndian
	compat, incompat := le.Uint32(sb[92:]), le.Uint32(sb[96:])
	typ := "ext2"
	switch {
	case incompat&(0x40|0x80|0x200|0x10000) != 0: // extents, 64bit, flex_bg, inline data
		typ = "ext4"
	case compat&0x4 != 0: // has_journal
		typ = "ext3"
	}
	return Filesystem{Type: typ, UUID: uuid(sb[104:120]), Label: cstring(sb[120:136])}
}

// fat reads a FAT boot sector: FAT32 keeps its serial and label further
// on than FAT12/16.
func fat(b []byte) Filesystem {
	serial, label := b[39:43], b[43:54]
	if string(b[82:87]) == "FAT32" {
		serial, label = b[67:71], b[71:82]
	}
	s := binary.LittleEndian.Uint32(serial)
	l := strings.TrimRight(string(label), " ")
	if l == "NO NAME" {
		l = ""
	}
	return Filesystem{Type: "vfat", UUID: fmt.Sprintf("%04X-%04X", s>>16, s&0xffff), Label: l}
}

func uuid(b []byte) string {
	h := hex.EncodeToString(b)
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

func cstring(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return strings.ToValidUTF8(string(b), "\uFFFD")
}
