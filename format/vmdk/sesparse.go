package vmdk

import (
	"encoding/binary"
	"io"
	"sync"

	"github.com/vdisk-project/vdisk/disk"
)

// SEsparse extents (§5.3), the delta format of VMFS6 and of disks of 2 TiB
// and more: a constant header, a volatile header, a journal, a grain
// directory of u64 entries, grain tables of u64 entries typed by their top
// nibble, a free bitmap, a back map and the grains (4 KiB). vdisk reads
// them; the allocation structures (free bitmap, back map, journal) are not
// documented, so writing is refused.

const (
	seConstMagic    = 0x00000000CAFEBABE
	seVolatileMagic = 0x00000000CAFECAFE
	seVersion       = 0x0000000200000001
	seGrainSectors  = 8
	seGTSectors     = 64
	seGTEntries     = seGTSectors * disk.SectorSize / 8 // 4096
	seMaxCapacity   = 1 << 37                           // sectors (64 TiB)
	seGTCache       = 1024                              // tables kept, 32 MiB
)

type seHeader struct {
	capacity                  uint64
	volatileOff               uint64
	gdOff, gdSize             uint64
	gtOff, gtSize             uint64
	grainsOff, grainsSize     uint64
	journalOff, journalSize   uint64
	freeBitmapOff, backmapOff uint64
}

type seSparseExtent struct {
	f    disk.File
	name string
	h    seHeader
	gd   []uint64

	mu    sync.Mutex
	cache map[uint64][]uint64 // GT index -> entries
}

func parseSEHeader(b []byte, fileSize int64) (seHeader, error) {
	le := binary.LittleEndian
	bad := func(format string, args ...any) (seHeader, error) {
		return seHeader{}, disk.Errorf(disk.ErrCorrupt, "vmdk: SEsparse header: "+format, args...)
	}
	u := func(off int) uint64 { return le.Uint64(b[off:]) }
	if len(b) < disk.SectorSize {
		return bad("truncated")
	}
	if u(0) != seConstMagic {
		return bad("bad magic %#x", u(0))
	}
	if u(8) != seVersion {
		return seHeader{}, disk.Errorf(disk.ErrNotSupported, "vmdk: unsupported SEsparse version %#x", u(8))
	}
	if u(24) != seGrainSectors || u(32) != seGTSectors {
		return seHeader{}, disk.Errorf(disk.ErrNotSupported, "vmdk: unsupported SEsparse grain size %d or table size %d", u(24), u(32))
	}
	if u(40) != 0 {
		return seHeader{}, disk.Errorf(disk.ErrNotSupported, "vmdk: unsupported SEsparse flags %#x", u(40))
	}
	for off := 48; off < 80; off += 8 {
		if u(off) != 0 {
			return bad("reserved field at %d is not zero", off)
		}
	}
	if !disk.IsZero(b[208:512]) {
		return bad("padding is not zero")
	}
	h := seHeader{
		capacity: u(16), volatileOff: u(80), journalOff: u(96), journalSize: u(104),
		gdOff: u(128), gdSize: u(136), gtOff: u(144), gtSize: u(152),
		freeBitmapOff: u(160), backmapOff: u(176), grainsOff: u(192), grainsSize: u(200),
	}
	fileSectors := uint64(fileSize) / disk.SectorSize
	if h.capacity == 0 || h.capacity > seMaxCapacity {
		return bad("capacity of %d sectors out of range", h.capacity)
	}
	for _, r := range [][2]uint64{{h.volatileOff, 1}, {h.gdOff, h.gdSize}, {h.gtOff, h.gtSize}} {
		if r[0] == 0 || r[1] > fileSectors || r[0] > fileSectors-r[1] {
			return bad("section at sector %d+%d lies outside the file", r[0], r[1])
		}
	}
	if h.gdSize*disk.SectorSize/8 < divRoundUp(h.capacity, seGrainSectors*seGTEntries) {
		return bad("grain directory too small for the capacity")
	}
	return h, nil
}

// openSESparse opens an SEsparse extent, read-only.
func openSESparse(f disk.File, path string, size int64, ro bool) (extent, error) {
	if !ro {
		return nil, disk.Errorf(disk.ErrNotSupported, "vmdk: %s: writing seSparse deltas is not supported (their allocation maps are undocumented); open read-only or convert", path)
	}
	b := make([]byte, disk.SectorSize)
	if _, err := f.ReadAt(b, 0); err != nil {
		return nil, disk.Errorf(disk.ErrCorrupt, "vmdk: %s: cannot read SEsparse header: %w", path, err)
	}
	h, err := parseSEHeader(b, size)
	if err != nil {
		return nil, disk.Wrap(err, "", path, -1)
	}
	if _, err := f.ReadAt(b, int64(h.volatileOff)*disk.SectorSize); err != nil {
		return nil, disk.Errorf(disk.ErrCorrupt, "vmdk: %s: cannot read SEsparse volatile header: %w", path, err)
	}
	le := binary.LittleEndian
	if le.Uint64(b) != seVolatileMagic {
		return nil, disk.Errorf(disk.ErrCorrupt, "vmdk: %s: bad SEsparse volatile header magic", path)
	}
	if le.Uint64(b[24:]) != 0 {
		return nil, disk.Errorf(disk.ErrNotSupported, "vmdk: %s: SEsparse image is dirty and its journal replay is not supported; let ESXi consolidate it first", path)
	}
	n := divRoundUp(h.capacity, seGrainSectors*seGTEntries)
	raw := make([]byte, n*8)
	if _, err := f.ReadAt(raw, int64(h.gdOff)*disk.SectorSize); err != nil {
		return nil, disk.Errorf(disk.ErrCorrupt, "vmdk: %s: cannot read SEsparse grain directory: %w", path, err)
	}
	e := &seSparseExtent{f: f, name: path, h: h, gd: make([]uint64, n), cache: make(map[uint64][]uint64)}
	for i := range e.gd {
		e.gd[i] = le.Uint64(raw[i*8:])
	}
	return e, nil
}

func (e *seSparseExtent) size() int64 { return int64(e.h.capacity) * disk.SectorSize }

const seGrainBytes = seGrainSectors * disk.SectorSize

// table returns grain table i, or nil when unallocated.
func (e *seSparseExtent) table(i uint64) ([]uint64, error) {
	gde := e.gd[i]
	if gde == 0 {
		return nil, nil
	}
	if gde>>32 != 0x10000000 {
		return nil, disk.Errorf(disk.ErrCorrupt, "vmdk: %s: invalid SEsparse grain directory entry %d: %#x", e.name, i, gde)
	}
	idx := gde & 0xffffffff
	e.mu.Lock()
	t, ok := e.cache[idx]
	e.mu.Unlock()
	if ok {
		return t, nil
	}
	if (idx+1)*seGTSectors > e.h.gtSize {
		return nil, disk.Errorf(disk.ErrCorrupt, "vmdk: %s: SEsparse grain table %d lies outside its section", e.name, idx)
	}
	b := make([]byte, seGTEntries*8)
	if _, err := e.f.ReadAt(b, int64(e.h.gtOff+idx*seGTSectors)*disk.SectorSize); err != nil {
		return nil, disk.Errorf(disk.ErrCorrupt, "vmdk: %s: cannot read SEsparse grain table %d: %w", e.name, idx, err)
	}
	t = make([]uint64, seGTEntries)
	for j := range t {
		t[j] = binary.LittleEndian.Uint64(b[j*8:])
	}
	e.mu.Lock()
	if len(e.cache) >= seGTCache {
		for k := range e.cache {
			delete(e.cache, k)
			break
		}
	}
	e.cache[idx] = t
	e.mu.Unlock()
	return t, nil
}

// entry returns the state of the grain holding off and, for data, the
// byte offset of the grain in the file.
func (e *seSparseExtent) entry(off int64) (blockState, int64, error) {
	g := uint64(off / seGrainBytes)
	t, err := e.table(g / seGTEntries)
	if err != nil || t == nil {
		return stateAbsent, 0, err
	}
	v := t[g%seGTEntries]
	switch v >> 60 {
	case 0:
		if v != 0 {
			return 0, 0, disk.Errorf(disk.ErrCorrupt, "vmdk: %s: invalid SEsparse unallocated entry %#x", e.name, v)
		}
		return stateAbsent, 0, nil
	case 1, 2: // unmapped, zero
		return stateZero, 0, nil
	case 3:
		gi := (v&0x0FFF000000000000)>>48 | (v&0x0000FFFFFFFFFFFF)<<12
		if gi >= e.h.grainsSize/seGrainSectors {
			return 0, 0, disk.Errorf(disk.ErrCorrupt, "vmdk: %s: SEsparse grain %d lies outside the grain section", e.name, gi)
		}
		return stateData, int64(e.h.grainsOff+gi*seGrainSectors) * disk.SectorSize, nil
	}
	return 0, 0, disk.Errorf(disk.ErrCorrupt, "vmdk: %s: invalid SEsparse grain table entry %#x", e.name, v)
}

func (e *seSparseExtent) lookup(off, n int64) (blockState, int64, error) {
	st, _, err := e.entry(off)
	if err != nil {
		return 0, 0, err
	}
	pos := (off/seGrainBytes + 1) * seGrainBytes
	for pos < off+n {
		// An unallocated table covers 16 MiB at once.
		if t, err := e.table(uint64(pos/seGrainBytes) / seGTEntries); err == nil && t == nil && st == stateAbsent {
			pos = (pos/(seGrainBytes*seGTEntries) + 1) * seGrainBytes * seGTEntries
			continue
		}
		s, _, err := e.entry(pos)
		if err != nil || s != st {
			break
		}
		pos += seGrainBytes
	}
	return st, min(pos, off+n) - off, nil
}

func (e *seSparseExtent) readAt(p []byte, off int64) error {
	for len(p) > 0 {
		in := off % seGrainBytes
		c := min(int64(len(p)), seGrainBytes-in)
		st, pos, err := e.entry(off)
		if err != nil {
			return err
		}
		if st == stateData {
			if _, err := e.f.ReadAt(p[:c], pos+in); err != nil {
				return disk.Wrap(err, "vmdk: read", e.name, pos+in)
			}
		} else {
			clear(p[:c])
		}
		p = p[c:]
		off += c
	}
	return nil
}

func (e *seSparseExtent) writeAt([]byte, int64, io.ReaderAt) error {
	return disk.Errorf(disk.ErrNotSupported, "vmdk: %s: writing seSparse deltas is not supported", e.name)
}

func (e *seSparseExtent) flush() error { return nil }
func (e *seSparseExtent) close() error { return e.f.Close() }
