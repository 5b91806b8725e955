package lvm

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"

	"github.com/vdisk-project/vdisk/disk"
)

// On-disk layout, from LVM2's format_text/layout.h and label.h:
//
// A PV carries a 512-byte label in one of its first four sectors. The
// label header is "LABELONE", the sector number the label sits in (u64),
// a CRC (u32) of the rest of the sector from the next field on, the
// offset of the PV header within the sector (u32) and the label type
// "LVM2 001". The PV header holds the PV's UUID (32 characters without
// dashes), the device size in bytes (u64) and two lists of disk locations
// (offset and size in bytes, u64 each), each ended by a zero entry: the
// data areas, then the metadata areas. Every integer is little-endian.
//
// A metadata area begins with a 512-byte header: a CRC (u32) of the rest
// of the header, the magic " LVM2 x[5A%r0N*>", a version (1), the area's
// absolute start and size in bytes (u64), and a list of raw locations
// ended by a zero entry: offset from the area's start and size of a
// metadata text (u64), the text's CRC (u32) and flags (u32). The first
// location is the committed metadata. The rest of the area is a circular
// buffer: a text that runs past the area's end goes on right after the
// header.

const (
	labelSize     = 512
	labelSectors  = 4
	mdaHeaderSize = 512
	mdaMagic      = " LVM2 x[5A%r0N*>"
	initialCRC    = 0xf597a6cf
	maxAreas      = 8 // disk locations of each kind in one PV header

	rawLocnIgnored = 1
)

// crc is LVM's checksum: the CRC-32 (IEEE polynomial, reflected) of b
// started from initial, with neither the initial nor the final inversion
// that crc32.ChecksumIEEE applies.
func crc(initial uint32, b []byte) uint32 {
	return ^crc32.Update(^initial, crc32.IEEETable, b)
}

// Area is a range of a PV, in bytes from the PV's start.
type Area struct {
	Offset, Size int64
}

// Label is what a PV's label says.
type Label struct {
	// Sector is the sector (0-3) the label was found in.
	Sector int
	// UUID is the PV's UUID as LVM prints it (6-4-4-4-4-4-6 characters).
	UUID string
	// DeviceSize is the PV's size in bytes as the PV header records it.
	DeviceSize int64
	// Data lists the data areas (usually one, from pe_start to the end, or
	// of size 0 meaning "to the end"); Metadata lists the metadata areas.
	Data, Metadata []Area
}

// ReadLabel reads the LVM label of the device r of size bytes. A device
// without one gives an error matching disk.ErrNotFound; a label whose
// checksum or layout is wrong gives disk.ErrCorrupt.
func ReadLabel(r io.ReaderAt, size int64) (*Label, error) {
	n := min(size, labelSectors*labelSize)
	if n < labelSize {
		return nil, disk.Errorf(disk.ErrNotFound, "lvm: no label")
	}
	b := make([]byte, n)
	if _, err := r.ReadAt(b, 0); err != nil && err != io.EOF {
		return nil, disk.Wrap(err, "lvm: read label", "", 0)
	}
	le := binary.LittleEndian
	for s := 0; (s+1)*labelSize <= len(b); s++ {
		h := b[s*labelSize : (s+1)*labelSize]
		if string(h[:8]) != "LABELONE" {
			continue
		}
		if got := le.Uint64(h[8:]); got != uint64(s) {
			return nil, disk.Errorf(disk.ErrCorrupt, "lvm: label in sector %d says it is in sector %d", s, got)
		}
		if want, got := le.Uint32(h[16:]), crc(initialCRC, h[20:]); want != got {
			return nil, disk.Errorf(disk.ErrCorrupt, "lvm: label in sector %d: checksum %#x, want %#x", s, got, want)
		}
		if string(h[24:32]) != "LVM2 001" {
			return nil, disk.Errorf(disk.ErrNotSupported, "lvm: label type %q", bytes.TrimRight(h[24:32], "\x00 "))
		}
		off := le.Uint32(h[20:])
		if off < 32 || off > labelSize-32-8-16 {
			return nil, disk.Errorf(disk.ErrCorrupt, "lvm: PV header at offset %d of the label", off)
		}
		ph := h[off:]
		l := &Label{Sector: s, UUID: FormatUUID(string(ph[:32])), DeviceSize: int64(le.Uint64(ph[32:]))}
		if l.DeviceSize < 0 {
			return nil, disk.Errorf(disk.ErrCorrupt, "lvm: device size %d", le.Uint64(ph[32:]))
		}
		p := ph[40:]
		for list := 0; list < 2; list++ {
			for i := 0; ; i++ {
				if len(p) < 16 {
					return nil, disk.Errorf(disk.ErrCorrupt, "lvm: PV header's area lists run past the label")
				}
				a := Area{Offset: int64(le.Uint64(p)), Size: int64(le.Uint64(p[8:]))}
				p = p[16:]
				if a.Offset == 0 && a.Size == 0 {
					break
				}
				if i >= maxAreas {
					return nil, disk.Errorf(disk.ErrCorrupt, "lvm: more than %d areas in the PV header", maxAreas)
				}
				if a.Offset < 0 || a.Size < 0 || a.Offset > size || a.Size > size-a.Offset {
					return nil, disk.Errorf(disk.ErrCorrupt, "lvm: area %d+%d outside the device of %d bytes", a.Offset, a.Size, size)
				}
				if list == 0 {
					l.Data = append(l.Data, a)
				} else {
					l.Metadata = append(l.Metadata, a)
				}
			}
		}
		return l, nil
	}
	return nil, disk.Errorf(disk.ErrNotFound, "lvm: no label")
}

// FormatUUID puts LVM's dashes into a 32-character UUID
// (6-4-4-4-4-4-6). Other strings are returned unchanged.
func FormatUUID(s string) string {
	if len(s) != 32 {
		return s
	}
	return s[:6] + "-" + s[6:10] + "-" + s[10:14] + "-" + s[14:18] + "-" + s[18:22] + "-" + s[22:26] + "-" + s[26:]
}

// MetadataCopy is the committed metadata text of one metadata area.
type MetadataCopy struct {
	Area Area
	// Offset is where the text starts, from the area's start; a text that
	// wraps around the circular buffer has Wrapped set.
	Offset  int64
	Wrapped bool
	Text    []byte
}

// ReadMetadata reads the committed metadata text of the metadata area a
// of the device r of size bytes, checking the area header's checksum and
// magic and the text's checksum. An area whose committed location is
// empty or marked ignored gives an error matching disk.ErrNotFound; a
// damaged header or text gives disk.ErrCorrupt. The text is at most
// MaxTextSize bytes.
func ReadMetadata(r io.ReaderAt, size int64, a Area) (*MetadataCopy, error) {
	if a.Size < 2*mdaHeaderSize || a.Offset < 0 || a.Offset > size || a.Size > size-a.Offset {
		return nil, disk.Errorf(disk.ErrCorrupt, "lvm: metadata area %d+%d outside the device or too small", a.Offset, a.Size)
	}
	h := make([]byte, mdaHeaderSize)
	if _, err := r.ReadAt(h, a.Offset); err != nil && err != io.EOF {
		return nil, disk.Wrap(err, "lvm: read metadata area header", "", a.Offset)
	}
	le := binary.LittleEndian
	if string(h[4:20]) != mdaMagic {
		return nil, disk.Errorf(disk.ErrCorrupt, "lvm: metadata area at %d: bad magic", a.Offset)
	}
	if want, got := le.Uint32(h), crc(initialCRC, h[4:]); want != got {
		return nil, disk.Errorf(disk.ErrCorrupt, "lvm: metadata area at %d: header checksum %#x, want %#x", a.Offset, got, want)
	}
	if v := le.Uint32(h[20:]); v != 1 {
		return nil, disk.Errorf(disk.ErrNotSupported, "lvm: metadata area at %d: version %d", a.Offset, v)
	}
	if start, sz := int64(le.Uint64(h[24:])), int64(le.Uint64(h[32:])); start != a.Offset || sz != a.Size {
		return nil, disk.Errorf(disk.ErrCorrupt, "lvm: metadata area at %d says it is %d+%d, the PV header %d+%d", a.Offset, start, sz, a.Offset, a.Size)
	}
	loc := h[40:]
	off, n := int64(le.Uint64(loc)), int64(le.Uint64(loc[8:]))
	sum, flags := le.Uint32(loc[16:]), le.Uint32(loc[20:])
	if n == 0 || flags&rawLocnIgnored != 0 {
		return nil, disk.Errorf(disk.ErrNotFound, "lvm: metadata area at %d holds no metadata", a.Offset)
	}
	if off < mdaHeaderSize || off >= a.Size || n < 0 || n > a.Size-mdaHeaderSize || n > MaxTextSize {
		return nil, disk.Errorf(disk.ErrCorrupt, "lvm: metadata area at %d: text %d+%d outside the area of %d bytes", a.Offset, off, n, a.Size)
	}
	c := &MetadataCopy{Area: a, Offset: off, Text: make([]byte, n)}
	first := min(n, a.Size-off)
	if _, err := r.ReadAt(c.Text[:first], a.Offset+off); err != nil && err != io.EOF {
		return nil, disk.Wrap(err, "lvm: read metadata", "", a.Offset+off)
	}
	if first < n {
		c.Wrapped = true
		if _, err := r.ReadAt(c.Text[first:], a.Offset+mdaHeaderSize); err != nil && err != io.EOF {
			return nil, disk.Wrap(err, "lvm: read metadata", "", a.Offset+mdaHeaderSize)
		}
	}
	if got := crc(initialCRC, c.Text); got != sum {
		return nil, disk.Errorf(disk.ErrCorrupt, "lvm: metadata area at %d: text checksum %#x, want %#x", a.Offset, got, sum)
	}
	return c, nil
}

func (a Area) String() string { return fmt.Sprintf("%d+%d", a.Offset, a.Size) }
