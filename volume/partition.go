package volume

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"
	"strings"
	"unicode/utf16"

	"github.com/vdisk-project/vdisk/disk"
)

// Scheme names a partition table scheme.
type Scheme string

// The schemes Partitions reads.
const (
	None Scheme = ""
	MBR  Scheme = "mbr"
	GPT  Scheme = "gpt"
)

// Partition is one entry of a partition table. Offsets and sizes are bytes.
type Partition struct {
	// Number is the partition's number as Linux names it (sda1…): MBR
	// primaries 1-4 by slot, logicals from 5 in chain order; GPT entries by
	// their index in the array, from 1.
	Number int
	Start  int64
	Size   int64
	// Type is the MBR type byte ("0x83") or the GPT type GUID, upper case.
	Type string
	// Kind is what the type says in words: "linux", "linux-lvm", "swap",
	// "efi", "ntfs", "fat32", "extended", … or "" when unknown.
	Kind string
	// GUID and Name are the GPT partition GUID and name.
	GUID, Name string
	// Bootable is the MBR active flag.
	Bootable bool
	// Logical marks an MBR partition inside the extended partition.
	Logical bool
}

// Table is a disk's partition table.
type Table struct {
	Scheme     Scheme
	SectorSize int64
	// DiskID is the MBR disk signature ("0x1234abcd") or the GPT disk GUID.
	DiskID     string
	Partitions []Partition
	// Backup is set when the GPT was read from its backup copy because the
	// primary is damaged; Problems says what was wrong.
	Backup   bool
	Problems []string
}

const (
	maxLogical    = 1024
	maxGPTEntries = 4096 // entries read at most (the usual array has 128)
	sector        = 512
)

// Partitions reads d's partition table. A disk with neither an MBR nor a
// GPT has Scheme None and no partitions. A table that is present but
// cannot be read is disk.ErrCorrupt.
func Partitions(ctx context.Context, d disk.Disk) (*Table, error) {
	if d.Size() < 2*sector {
		return &Table{}, nil
	}
	mbr := make([]byte, sector)
	if _, err := d.ReadAt(mbr, 0); err != nil && err != io.EOF {
		return nil, disk.Wrap(err, "volume: read MBR", "", 0)
	}
	if binary.LittleEndian.Uint16(mbr[510:]) != 0xaa55 {
		// No MBR; a GPT without a protective MBR is still a GPT.
		if t, err := readGPT(ctx, d, sector); err == nil {
			return t, nil
		}
		return &Table{}, nil
	}
	if !looksLikeMBR(mbr) {
		// A filesystem's boot sector (FAT, NTFS) on the whole disk also
		// ends in 55 AA.
		return &Table{}, nil
	}
	for i := range 4 {
		if mbr[446+i*16+4] == 0xee {
			return readGPT(ctx, d, sector)
		}
	}
	return readMBR(ctx, d, mbr)
}

// looksLikeMBR tells an MBR from a filesystem boot sector, as the kernel
// and blkid do: every entry's status is 0x00 or 0x80, and the sector does
// not name a FAT or NTFS filesystem.
func looksLikeMBR(b []byte) bool {
	for i := range 4 {
		if st := b[446+i*16]; st != 0 && st != 0x80 {
			return false
		}
	}
	if string(b[3:11]) == "NTFS    " || string(b[82:87]) == "FAT32" ||
		(string(b[54:57]) == "FAT" && (b[0] == 0xeb || b[0] == 0xe9)) {
		return false
	}
	return true
}

type mbrEntry struct {
	status   byte
	typ      byte
	lba, len uint32
}

func mbrEntries(b []byte) [4]mbrEntry {
	var e [4]mbrEntry
	for i := range e {
		p := b[446+i*16:]
		e[i] = mbrEntry{status: p[0], typ: p[4], lba: binary.LittleEndian.Uint32(p[8:]), len: binary.LittleEndian.Uint32(p[12:])}
	}
	return e
}

func isExtended(t byte) bool { return t == 0x05 || t == 0x0f || t == 0x85 }

func readMBR(ctx context.Context, d disk.Disk, mbr []byte) (*Table, error) {
	t := &Table{Scheme: MBR, SectorSize: sector, DiskID: fmt.Sprintf("0x%08x", binary.LittleEndian.Uint32(mbr[440:]))}
	size := d.Size()
	var ext *mbrEntry
	for i, e := range mbrEntries(mbr) {
		if e.typ == 0 || e.len == 0 {
			continue
		}
		p := Partition{Number: i + 1, Start: int64(e.lba) * sector, Size: int64(e.len) * sector,
			Type: fmt.Sprintf("0x%02x", e.typ), Kind: mbrKind(e.typ), Bootable: e.status == 0x80}
		if p.Start+p.Size > size {
			t.Problems = append(t.Problems, fmt.Sprintf("partition %d ends at byte %d, past the disk's end (%d)", p.Number, p.Start+p.Size, size))
		}
		t.Partitions = append(t.Partitions, p)
		if isExtended(e.typ) && ext == nil {
			ext = &e
		}
	}
	if ext == nil {
		return t, nil
	}
	// The extended partition holds a chain of EBRs: each names one logical
	// partition (relative to itself) and the next EBR (relative to the
	// extended partition's start).
	extStart, extEnd := int64(ext.lba), int64(ext.lba)+int64(ext.len)
	seen := map[int64]bool{}
	ebr := make([]byte, sector)
	next := extStart
	for n := 5; ; n++ {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if n-5 >= maxLogical {
			return nil, disk.Errorf(disk.ErrCorrupt, "volume: more than %d logical partitions", maxLogical)
		}
		if seen[next] || next < extStart || next >= extEnd || next*sector >= size {
			return nil, disk.Errorf(disk.ErrCorrupt, "volume: the extended partition's chain loops or leaves it (EBR at sector %d)", next)
		}
		seen[next] = true
		if _, err := d.ReadAt(ebr, next*sector); err != nil && err != io.EOF {
			return nil, disk.Wrap(err, "volume: read EBR", "", next*sector)
		}
		if binary.LittleEndian.Uint16(ebr[510:]) != 0xaa55 {
			return nil, disk.Errorf(disk.ErrCorrupt, "volume: EBR at sector %d has no signature", next)
		}
		es := mbrEntries(ebr)
		if l := es[0]; l.typ != 0 && l.len != 0 {
			p := Partition{Number: n, Start: (next + int64(l.lba)) * sector, Size: int64(l.len) * sector,
				Type: fmt.Sprintf("0x%02x", l.typ), Kind: mbrKind(l.typ), Bootable: l.status == 0x80, Logical: true}
			if p.Start+p.Size > extEnd*sector {
				t.Problems = append(t.Problems, fmt.Sprintf("logical partition %d leaves the extended partition", n))
			}
			t.Partitions = append(t.Partitions, p)
		} else {
			n-- // an empty EBR (sfdisk writes one for an empty chain)
		}
		l := es[1]
		if !isExtended(l.typ) || l.len == 0 {
			return t, nil
		}
		next = extStart + int64(l.lba)
	}
}

func mbrKind(t byte) string {
	switch t {
	case 0x83:
		return "linux"
	case 0x82:
		return "swap"
	case 0x8e:
		return "linux-lvm"
	case 0xfd:
		return "linux-raid"
	case 0x07:
		return "ntfs" // or exFAT, HPFS: the filesystem says which
	case 0x0b, 0x0c:
		return "fat32"
	case 0x04, 0x06, 0x0e:
		return "fat16"
	case 0x01:
		return "fat12"
	case 0xef:
		return "efi"
	case 0x05, 0x0f, 0x85:
		return "extended"
	case 0x42:
		return "windows-dynamic"
	}
	return ""
}

// readGPT reads the primary GPT at LBA 1, or the backup at the disk's last
// sector when the primary is damaged.
func readGPT(ctx context.Context, d disk.Disk, ss int64) (*Table, error) {
	last := d.Size()/ss - 1
	t, perr := readGPTAt(ctx, d, ss, 1, last)
	if perr == nil {
		return t, nil
	}
	t, berr := readGPTAt(ctx, d, ss, last, last)
	if berr != nil {
		return nil, disk.Errorf(disk.ErrCorrupt, "volume: GPT: primary %v; backup %v", perr, berr)
	}
	t.Backup = true
	t.Problems = append(t.Problems, "the primary GPT is damaged ("+perr.Error()+"); read from the backup")
	return t, nil
}

func readGPTAt(ctx context.Context, d disk.Disk, ss, lba, last int64) (*Table, error) {
	h := make([]byte, ss)
	if _, err := d.ReadAt(h, lba*ss); err != nil && err != io.EOF {
		return nil, err
	}
	le := binary.LittleEndian
	if string(h[:8]) != "EFI PART" {
		return nil, fmt.Errorf("no header at LBA %d", lba)
	}
	hsize := le.Uint32(h[12:])
	if hsize < 92 || int64(hsize) > ss {
		return nil, fmt.Errorf("header size %d", hsize)
	}
	hdr := bytes.Clone(h[:hsize])
	want := le.Uint32(hdr[16:])
	clear(hdr[16:20])
	if crc32.ChecksumIEEE(hdr) != want {
		return nil, fmt.Errorf("header CRC mismatch at LBA %d", lba)
	}
	if int64(le.Uint64(h[24:])) != lba {
		return nil, fmt.Errorf("header at LBA %d says it is at %d", lba, le.Uint64(h[24:]))
	}
	first, lastUsable := int64(le.Uint64(h[40:])), int64(le.Uint64(h[48:]))
	entriesLBA := int64(le.Uint64(h[72:]))
	n, esize := le.Uint32(h[80:]), le.Uint32(h[84:])
	if esize < 128 || esize%8 != 0 || esize > 4096 || n == 0 || n > maxGPTEntries ||
		entriesLBA < 2 || entriesLBA > last || first > lastUsable || lastUsable > last {
		return nil, fmt.Errorf("bad geometry (entries at LBA %d: %d of %d bytes; usable %d-%d)", entriesLBA, n, esize, first, lastUsable)
	}
	if int64(n)*int64(esize) > 1<<20 {
		return nil, fmt.Errorf("entry array of %d bytes is larger than 1 MiB", int64(n)*int64(esize))
	}
	arr := make([]byte, int64(n)*int64(esize))
	if entriesLBA*ss+int64(len(arr)) > d.Size() {
		return nil, fmt.Errorf("entry array past the disk's end")
	}
	if _, err := d.ReadAt(arr, entriesLBA*ss); err != nil && err != io.EOF {
		return nil, err
	}
	if crc32.ChecksumIEEE(arr) != le.Uint32(h[88:]) {
		return nil, fmt.Errorf("entry array CRC mismatch")
	}
	t := &Table{Scheme: GPT, SectorSize: ss, DiskID: guid(h[56:72])}
	for i := range int(n) {
		if i%256 == 0 {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
		}
		e := arr[i*int(esize):]
		if allZero(e[:16]) {
			continue
		}
		lo, hi := int64(le.Uint64(e[32:])), int64(le.Uint64(e[40:]))
		p := Partition{Number: i + 1, Type: guid(e[:16]), GUID: guid(e[16:32]), Name: utf16Name(e[56:128])}
		p.Kind = gptKinds[p.Type]
		if lo > hi || lo < first || hi > lastUsable {
			t.Problems = append(t.Problems, fmt.Sprintf("partition %d spans LBA %d-%d, outside the usable %d-%d", i+1, lo, hi, first, lastUsable))
			if lo > hi || hi > last {
				continue // no sensible range to report
			}
		}
		p.Start, p.Size = lo*ss, (hi-lo+1)*ss
		t.Partitions = append(t.Partitions, p)
	}
	return t, nil
}

func allZero(b []byte) bool {
	for _, x := range b {
		if x != 0 {
			return false
		}
	}
	return true
}

// guid formats a GPT GUID (the first three fields little-endian).
func guid(b []byte) string {
	le := binary.LittleEndian
	return strings.ToUpper(fmt.Sprintf("%08x-%04x-%04x-%x-%x", le.Uint32(b), le.Uint16(b[4:]), le.Uint16(b[6:]), b[8:10], b[10:16]))
}

func utf16Name(b []byte) string {
	u := make([]uint16, 0, len(b)/2)
	for i := 0; i+1 < len(b); i += 2 {
		c := binary.LittleEndian.Uint16(b[i:])
		if c == 0 {
			break
		}
		u = append(u, c)
	}
	return string(utf16.Decode(u))
}

// gptKinds names the GPT type GUIDs vdisk meets most.
var gptKinds = map[string]string{
	"0FC63DAF-8483-4772-8E79-3D69D8477DE4": "linux",
	"E6D6D379-F507-44C2-A23C-238F2A3DF928": "linux-lvm",
	"0657FD6D-A4AB-43C4-84E5-0933C84B4F4F": "swap",
	"A19D880F-05FC-4D3B-A006-743F0F84911E": "linux-raid",
	"4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709": "linux-root-x86-64",
	"933AC7E1-2EB4-4F13-B844-0E14E2AEF915": "linux-home",
	"C12A7328-F81F-11D2-BA4B-00A0C93EC93B": "efi",
	"21686148-6449-6E6F-744E-656564454649": "bios-boot",
	"EBD0A0A2-B9E5-4433-87C0-68B6B72699C7": "windows-data",
	"E3C9E316-0B5C-4DB8-817D-F92DF00215AE": "windows-reserved",
	"DE94BBA4-06D1-4D40-A16A-BFD50179D6AC": "windows-recovery",
	"5808C8AA-7E8F-42E0-85D2-E1E90434CFB3": "windows-ldm-metadata",
	"AF9B60A0-1431-4F62-BC68-3311714A69AD": "windows-ldm-data",
	"E75CAF8F-F680-4CEE-AFA3-B001E56EFC2D": "windows-storage-spaces",
	"6A898CC3-1DD2-11B2-99A6-080020736631": "zfs",
}
