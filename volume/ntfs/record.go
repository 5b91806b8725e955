package ntfs

import (
	"encoding/binary"
	"fmt"
	"slices"
	"time"
	"unicode/utf16"

	"github.com/vdisk-project/vdisk/disk"
)

var le = binary.LittleEndian

// Attribute types (the $AttrDef numbers).
const (
	attrStandardInformation = 0x10
	attrAttributeList       = 0x20
	attrFileName            = 0x30
	attrVolumeName          = 0x60
	attrData                = 0x80
	attrIndexRoot           = 0x90
	attrIndexAllocation     = 0xa0
	attrBitmap              = 0xb0
	attrReparsePoint        = 0xc0
	attrEnd                 = 0xffffffff
)

// Attribute header flags.
const (
	flagCompressed = 0x0001
	flagEncrypted  = 0x4000
	flagSparse     = 0x8000
)

// File attribute flags ($STANDARD_INFORMATION and $FILE_NAME).
const (
	fileReadOnly     = 0x0001
	fileHidden       = 0x0002
	fileSystem       = 0x0004
	fileReparse      = 0x0400
	fileCompressed   = 0x0800
	fileEncrypted    = 0x4000
	fileDirIndex     = 0x10000000 // $FILE_NAME only: the file is a directory
	fileViewIndex    = 0x20000000
	recordInUse      = 0x0001
	recordDirectory  = 0x0002
	namespaceDOS     = 2
	maxExtensions    = 1024    // extension records one file may have
	maxAttrList      = 1 << 20 // bytes of $ATTRIBUTE_LIST
	maxAttrsPerFile  = 65536
	fixupStride      = 512
	firstUserRecord  = 16
	mftRecordNumber  = 0
	rootRecordNumber = 5
)

// attr is one attribute, or for a non-resident one split over several
// records, the pieces merged (runs concatenated in VCN order).
type attr struct {
	typ      uint32
	name     string
	flags    uint16
	resident bool
	value    []byte // resident value (a copy)

	// Non-resident.
	startVCN, lastVCN int64
	cuShift           uint8 // compression unit: 1<<cuShift clusters
	allocSize         int64
	size              int64
	initSize          int64
	runs              []run
	err               error // a runlist that breaks the format, reported on use
}

// record is one MFT record after its fixups are applied.
type record struct {
	num   uint64
	seq   uint16
	flags uint16
	links uint16
	base  uint64 // base record reference, 0 for a base record
	buf   []byte
}

// readRecord reads MFT record num through the $MFT data stream (or, while
// the volume is opened, at the raw offset off when off >= 0).
func (f *FS) readRecord(num uint64, off int64) (*record, error) {
	b := make([]byte, f.recordSize)
	if off < 0 {
		if num >= uint64(f.mft.size/f.recordSize) {
			return nil, disk.Errorf(disk.ErrCorrupt, "ntfs: mft record %d past the end of $MFT", num)
		}
		if err := f.mft.readFull(b, int64(num)*f.recordSize); err != nil {
			return nil, fmt.Errorf("ntfs: read mft record %d: %w", num, err)
		}
	} else if err := f.readFull(b, off); err != nil {
		return nil, fmt.Errorf("ntfs: read mft record %d: %w", num, err)
	}
	if string(b[:4]) != "FILE" {
		return nil, disk.Errorf(disk.ErrCorrupt, "ntfs: mft record %d: bad magic %q", num, b[:4])
	}
	if err := fixup(b); err != nil {
		return nil, fmt.Errorf("ntfs: mft record %d: %w", num, err)
	}
	r := &record{
		num:   num,
		seq:   le.Uint16(b[0x10:]),
		links: le.Uint16(b[0x12:]),
		flags: le.Uint16(b[0x16:]),
		base:  le.Uint64(b[0x20:]) & (1<<48 - 1),
		buf:   b,
	}
	used := le.Uint32(b[0x18:])
	if used > uint32(len(b)) || used < 0x30 {
		return nil, disk.Errorf(disk.ErrCorrupt, "ntfs: mft record %d: used size %d out of range", num, used)
	}
	r.buf = b[:used]
	return r, nil
}

// fixup checks and undoes the update sequence array of a multi-sector
// record (FILE or INDX): the last two bytes of every 512-byte stride hold
// the update sequence number and the array holds the original bytes.
func fixup(b []byte) error {
	off, n := int(le.Uint16(b[4:])), int(le.Uint16(b[6:]))
	if n < 2 || n-1 != len(b)/fixupStride || off < 8 || off+2*n > len(b) || off&1 != 0 {
		return disk.Errorf(disk.ErrCorrupt, "bad update sequence array (offset %d, count %d)", off, n)
	}
	usn := b[off : off+2]
	for i := 1; i < n; i++ {
		end := i*fixupStride - 2
		if b[end] != usn[0] || b[end+1] != usn[1] {
			return disk.Errorf(disk.ErrCorrupt, "fixup mismatch in sector %d", i-1)
		}
		b[end], b[end+1] = b[off+2*i], b[off+2*i+1]
	}
	return nil
}

// attrs parses the attributes stored in one record.
func (f *FS) recordAttrs(r *record, out []*attr) ([]*attr, error) {
	b := r.buf
	off := int(le.Uint16(b[0x14:]))
	for {
		if off+8 > len(b) || off < 0x18 {
			return nil, disk.Errorf(disk.ErrCorrupt, "ntfs: mft record %d: attribute at %d past the record", r.num, off)
		}
		typ := le.Uint32(b[off:])
		if typ == attrEnd {
			return out, nil
		}
		n := int(le.Uint32(b[off+4:]))
		if n < 0x18 || n > len(b)-off || n&7 != 0 {
			return nil, disk.Errorf(disk.ErrCorrupt, "ntfs: mft record %d: attribute 0x%x length %d out of range", r.num, typ, n)
		}
		a, err := f.parseAttr(b[off : off+n])
		if err != nil {
			return nil, fmt.Errorf("ntfs: mft record %d: attribute 0x%x: %w", r.num, typ, err)
		}
		if len(out) >= maxAttrsPerFile {
			return nil, disk.Errorf(disk.ErrCorrupt, "ntfs: mft record %d: too many attributes", r.num)
		}
		out = append(out, a)
		off += n
	}
}

func (f *FS) parseAttr(b []byte) (*attr, error) {
	a := &attr{typ: le.Uint32(b), resident: b[8] == 0, flags: le.Uint16(b[0xc:])}
	if nl, no := int(b[9]), int(le.Uint16(b[0xa:])); nl > 0 {
		if no+2*nl > len(b) {
			return nil, disk.Errorf(disk.ErrCorrupt, "name past the attribute")
		}
		a.name = utf16String(b[no : no+2*nl])
	}
	if a.resident {
		vl, vo := int(le.Uint32(b[0x10:])), int(le.Uint16(b[0x14:]))
		if vo > len(b) || vl > len(b)-vo {
			return nil, disk.Errorf(disk.ErrCorrupt, "resident value past the attribute")
		}
		a.value = slices.Clone(b[vo : vo+vl])
		a.size, a.initSize = int64(vl), int64(vl)
		return a, nil
	}
	if len(b) < 0x40 {
		return nil, disk.Errorf(disk.ErrCorrupt, "non-resident header too short")
	}
	a.startVCN = int64(le.Uint64(b[0x10:]))
	a.lastVCN = int64(le.Uint64(b[0x18:]))
	ro := int(le.Uint16(b[0x20:]))
	cu := le.Uint16(b[0x22:])
	a.allocSize = int64(le.Uint64(b[0x28:]))
	a.size = int64(le.Uint64(b[0x30:]))
	a.initSize = int64(le.Uint64(b[0x38:]))
	if a.startVCN < 0 || a.lastVCN < a.startVCN-1 || a.lastVCN >= (1<<62)/f.clusterSize {
		return nil, disk.Errorf(disk.ErrCorrupt, "vcn range %d..%d out of range", a.startVCN, a.lastVCN)
	}
	if a.startVCN == 0 && (a.size < 0 || a.allocSize < 0 || a.initSize < 0 || a.initSize > a.size) {
		return nil, disk.Errorf(disk.ErrCorrupt, "sizes out of range (data %d, initialized %d, allocated %d)", a.size, a.initSize, a.allocSize)
	}
	if cu > 16 {
		return nil, disk.Errorf(disk.ErrCorrupt, "compression unit %d out of range", cu)
	}
	a.cuShift = uint8(cu)
	if ro > len(b) {
		return nil, disk.Errorf(disk.ErrCorrupt, "runlist offset %d past the attribute", ro)
	}
	a.runs, a.err = decodeRuns(b[ro:], a.startVCN, a.lastVCN, f.clusters)
	return a, nil
}

// fileAttrs gathers every attribute of base record r, following its
// $ATTRIBUTE_LIST into extension records, with the pieces of split
// non-resident attributes merged.
func (f *FS) fileAttrs(r *record) ([]*attr, error) {
	as, err := f.recordAttrs(r, nil)
	if err != nil {
		return nil, err
	}
	var list *attr
	for _, a := range as {
		if a.typ == attrAttributeList {
			list = a
		}
	}
	if list == nil {
		return mergeAttrs(as)
	}
	lb, err := f.attrBytes(list, maxAttrList)
	if err != nil {
		return nil, fmt.Errorf("ntfs: mft record %d: $ATTRIBUTE_LIST: %w", r.num, err)
	}
	seen := map[uint64]bool{r.num: true}
	for off := 0; off+0x1a <= len(lb); {
		n := int(le.Uint16(lb[off+4:]))
		if n < 0x1a || n > len(lb)-off {
			return nil, disk.Errorf(disk.ErrCorrupt, "ntfs: mft record %d: $ATTRIBUTE_LIST entry length %d out of range", r.num, n)
		}
		ref := le.Uint64(lb[off+0x10:]) & (1<<48 - 1)
		off += n
		if seen[ref] {
			continue
		}
		if len(seen) > maxExtensions {
			return nil, disk.Errorf(disk.ErrCorrupt, "ntfs: mft record %d: more than %d extension records", r.num, maxExtensions)
		}
		seen[ref] = true
		x, err := f.readRecord(ref, -1)
		if err != nil {
			return nil, err
		}
		if x.base != r.num || x.flags&recordInUse == 0 {
			return nil, disk.Errorf(disk.ErrCorrupt, "ntfs: mft record %d: extension record %d belongs to %d", r.num, ref, x.base)
		}
		if as, err = f.recordAttrs(x, as); err != nil {
			return nil, err
		}
	}
	return mergeAttrs(as)
}

// mergeAttrs joins the pieces of each non-resident attribute (same type
// and name) in VCN order; the merged attribute takes the place of its
// first piece.
func mergeAttrs(as []*attr) ([]*attr, error) {
	type key struct {
		typ  uint32
		name string
	}
	pieces := map[key][]*attr{}
	for _, a := range as {
		if !a.resident {
			k := key{a.typ, a.name}
			pieces[k] = append(pieces[k], a)
		}
	}
	var out []*attr
	for _, a := range as {
		if a.resident {
			out = append(out, a)
			continue
		}
		k := key{a.typ, a.name}
		ps := pieces[k]
		if ps == nil {
			continue // already merged
		}
		delete(pieces, k)
		slices.SortStableFunc(ps, func(x, y *attr) int { return cmpInt(x.startVCN, y.startVCN) })
		m := *ps[0]
		if m.startVCN != 0 {
			m.err = disk.Errorf(disk.ErrCorrupt, "ntfs: attribute 0x%x %q has no piece at vcn 0", m.typ, m.name)
		}
		m.runs = slices.Clone(m.runs)
		for _, p := range ps[1:] {
			if p.startVCN != m.lastVCN+1 {
				m.err = disk.Errorf(disk.ErrCorrupt, "ntfs: attribute 0x%x %q: piece at vcn %d does not follow vcn %d", m.typ, m.name, p.startVCN, m.lastVCN)
				break
			}
			if p.err != nil && m.err == nil {
				m.err = p.err
			}
			m.runs = append(m.runs, p.runs...)
			m.lastVCN = p.lastVCN
		}
		out = append(out, &m)
	}
	return out, nil
}

func cmpInt(x, y int64) int {
	switch {
	case x < y:
		return -1
	case x > y:
		return 1
	}
	return 0
}

// filetime converts NTFS time (100 ns units since 1601-01-01 UTC).
func filetime(v uint64) time.Time {
	if v == 0 {
		return time.Time{}
	}
	const epochSeconds = 11644473600 // 1601 to 1970
	return time.Unix(int64(v/1e7)-epochSeconds, int64(v%1e7)*100).UTC()
}

func utf16String(b []byte) string {
	u := make([]uint16, len(b)/2)
	for i := range u {
		u[i] = le.Uint16(b[2*i:])
	}
	return string(utf16.Decode(u))
}
