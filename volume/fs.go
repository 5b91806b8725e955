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
)

// Filesystem is what a volume's first bytes say it holds.
type Filesystem struct {
	// Type is blkid's name for it: "ext2", "ext3", "ext4", "xfs", "vfat",
	// "swap", or "" when nothing known was found.
	Type  string
	UUID  string // as blkid prints it
	Label string
}

// Volume is a range of a disk that may hold a filesystem: a partition, or
// the whole disk when it has no partition table.
type Volume struct {
	Start, Size int64
	// Partition is the table entry, nil for a whole disk.
	Partition *Partition
	Filesystem
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
		size := min(p.Size, d.Size()-p.Start)
		v := Volume{Start: p.Start, Size: size, Partition: p}
		if size > 0 {
			if v.Filesystem, err = Probe(d, p.Start, size); err != nil {
				return nil, nil, err
			}
		}
		vs = append(vs, v)
	}
	return t, vs, nil
}

// probeLen is how much of a volume Probe reads: every superblock it knows
// lies in the first 8 KiB.
const probeLen = 8 << 10

// Probe says which filesystem the volume of size bytes at off holds, by
// its superblock's magic, with its UUID and label.
func Probe(d disk.Disk, off, size int64) (Filesystem, error) {
	b := make([]byte, min(probeLen, size))
	if _, err := d.ReadAt(b, off); err != nil && err != io.EOF {
		return Filesystem{}, disk.Wrap(err, "volume: read superblock", "", off)
	}
	le := binary.LittleEndian
	switch {
	case len(b) >= 2048 && le.Uint16(b[1024+56:]) == 0xef53:
		return ext(b[1024:]), nil
	case len(b) >= 512 && string(b[:4]) == "XFSB":
		return Filesystem{Type: "xfs", UUID: uuid(b[32:48]), Label: cstring(b[108:120])}, nil
	case len(b) >= 4096 && string(b[4086:4096]) == "SWAPSPACE2":
		return Filesystem{Type: "swap", UUID: uuid(b[1024+12 : 1024+28]), Label: cstring(b[1024+28 : 1024+44])}, nil
	case len(b) >= 512 && le.Uint16(b[510:]) == 0xaa55 && (string(b[82:87]) == "FAT32" || string(b[54:57]) == "FAT"):
		return fat(b), nil
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
