package vmdk

import (
	"encoding/binary"

	"github.com/vdisk-project/vdisk/disk"
)

// vmfsSparse ("COWD") extents, the ESX redo log (§5.2): a 2048-byte
// header, a grain directory of u32 sectors right after it, and grain tables
// of 4096 u32 entries allocated on demand (directory entry 0: none). Data
// and tables are appended at freeSector. There is no redundant copy and no
// zeroed-grain entry.

const (
	cowdHeaderSize = 2048
	cowdGTEntries  = 4096
	cowdMaxGrain   = 2048 // sectors (1 MiB)
)

// Byte offsets of the COWD header fields that vdisk reads or writes.
const (
	cowdOffNumSectors = 12
	cowdOffGrainSize  = 16
	cowdOffGDOffset   = 20
	cowdOffGDEntries  = 24
	cowdOffFreeSector = 28
	cowdOffParent     = 32 // parentFileName[1024] in child deltas
	cowdOffGeneration = 1060
	cowdOffUnclean    = 1648
)

// cowdHeader is a decoded COWD header, kept whole so that fields vdisk does
// not interpret are written back unchanged.
type cowdHeader struct {
	raw        []byte
	numSectors uint32
	grainSize  uint32
	gdOffset   uint32
	gdEntries  uint32
	freeSector uint32
	unclean    bool
}

func parseCOWDHeader(b []byte, fileSize int64) (*cowdHeader, error) {
	bad := func(format string, args ...any) error {
		return disk.Errorf(disk.ErrCorrupt, "vmdk: COWD header: "+format, args...)
	}
	if len(b) < cowdHeaderSize {
		return nil, bad("truncated to %d bytes", len(b))
	}
	le := binary.LittleEndian
	if le.Uint32(b) != cowdMagic {
		return nil, bad("bad magic")
	}
	if v := le.Uint32(b[4:]); v != 1 {
		return nil, disk.Errorf(disk.ErrNotSupported, "vmdk: unsupported COWD version %d", v)
	}
	h := &cowdHeader{
		raw:        append([]byte(nil), b[:cowdHeaderSize]...),
		numSectors: le.Uint32(b[cowdOffNumSectors:]),
		grainSize:  le.Uint32(b[cowdOffGrainSize:]),
		gdOffset:   le.Uint32(b[cowdOffGDOffset:]),
		gdEntries:  le.Uint32(b[cowdOffGDEntries:]),
		freeSector: le.Uint32(b[cowdOffFreeSector:]),
		unclean:    le.Uint32(b[cowdOffUnclean:]) != 0,
	}
	fileSectors := uint64(fileSize) / disk.SectorSize
	switch {
	case h.grainSize == 0 || h.grainSize > cowdMaxGrain:
		return nil, bad("invalid grain size %d", h.grainSize)
	case h.gdOffset < cowdHeaderSize/disk.SectorSize || uint64(h.gdOffset) >= fileSectors:
		return nil, bad("grain directory offset %d out of range", h.gdOffset)
	case uint64(h.gdEntries) != divRoundUp(uint64(h.numSectors), uint64(cowdGTEntries)*uint64(h.grainSize)):
		return nil, bad("%d grain directory entries do not match %d sectors", h.gdEntries, h.numSectors)
	case uint64(h.gdOffset)+divRoundUp(uint64(h.gdEntries)*4, disk.SectorSize) > fileSectors:
		return nil, bad("grain directory runs past the end of the file")
	case uint64(h.freeSector) > fileSectors+1 || h.freeSector < h.gdOffset:
		return nil, bad("free sector %d out of range", h.freeSector)
	}
	return h, nil
}

func (h *cowdHeader) marshal() []byte {
	le := binary.LittleEndian
	b := append([]byte(nil), h.raw...)
	le.PutUint32(b[cowdOffFreeSector:], h.freeSector)
	var u uint32
	if h.unclean {
		u = 1
	}
	le.PutUint32(b[cowdOffUnclean:], u)
	return b
}

// openCOWD opens a vmfsSparse extent. It is served by the hosted sparse
// code with COWD's geometry; grain tables are allocated on first write.
func openCOWD(f disk.File, path string, size int64, ro bool) (extent, error) {
	b := make([]byte, cowdHeaderSize)
	if _, err := f.ReadAt(b, 0); err != nil {
		return nil, disk.Errorf(disk.ErrCorrupt, "vmdk: %s: cannot read COWD header: %w", path, err)
	}
	ch, err := parseCOWDHeader(b, size)
	if err != nil {
		return nil, disk.Wrap(err, "", path, -1)
	}
	gdSectors := divRoundUp(uint64(ch.gdEntries)*4, disk.SectorSize)
	h := &sparseHeader{Version: 1, Capacity: uint64(ch.numSectors), GrainSize: uint64(ch.grainSize),
		NumGTEsPerGT: cowdGTEntries, GDOffset: uint64(ch.gdOffset), OverHead: uint64(ch.gdOffset) + gdSectors}
	e := &sparseExtent{
		f: f, name: path, h: h, ro: ro, cowd: ch,
		size_: int64(ch.numSectors) * disk.SectorSize, grain: int64(ch.grainSize) * disk.SectorSize,
		gtCov: int64(cowdGTEntries) * int64(ch.grainSize) * disk.SectorSize, gtLen: cowdGTEntries,
		cache: make(map[uint32][]uint32), dirty: make(map[uint32]bool), pinned: make(map[uint32]bool),
		fileLen: size, zero: make([]uint32, cowdGTEntries),
	}
	if e.gd, err = e.readDir(h.GDOffset, int(ch.gdEntries)); err != nil {
		return nil, err
	}
	e.end = max(int64(ch.freeSector)*disk.SectorSize, int64(h.OverHead)*disk.SectorSize)
	if !ro && !ch.unclean {
		ch.unclean = true
		if err := e.writeHeader(); err != nil {
			return nil, err
		}
		e.marked = true
	}
	return e, nil
}

// createCOWD writes a new, empty vmfsSparse delta of capacity bytes with
// grains of grainSectors sectors (ESX uses 1).
func createCOWD(f disk.File, capacity int64, grainSectors uint32) error {
	sectors := capacity / disk.SectorSize
	if sectors >= 1<<32 {
		return disk.Errorf(disk.ErrNotSupported, "vmdk: vmfsSparse deltas must be smaller than 2 TiB; use seSparse")
	}
	if grainSectors == 0 || grainSectors > cowdMaxGrain {
		return disk.Errorf(disk.ErrInvalid, "vmdk: invalid COWD grain size %d", grainSectors)
	}
	le := binary.LittleEndian
	gdEntries := uint32(divRoundUp(uint64(sectors), uint64(cowdGTEntries)*uint64(grainSectors)))
	gdSectors := uint32(divRoundUp(uint64(gdEntries)*4, disk.SectorSize))
	b := make([]byte, cowdHeaderSize+int(gdSectors)*disk.SectorSize)
	le.PutUint32(b, cowdMagic)
	le.PutUint32(b[4:], 1)
	le.PutUint32(b[8:], 3)
	le.PutUint32(b[cowdOffNumSectors:], uint32(sectors))
	le.PutUint32(b[cowdOffGrainSize:], grainSectors)
	le.PutUint32(b[cowdOffGDOffset:], cowdHeaderSize/disk.SectorSize)
	le.PutUint32(b[cowdOffGDEntries:], gdEntries)
	le.PutUint32(b[cowdOffFreeSector:], cowdHeaderSize/disk.SectorSize+gdSectors)
	le.PutUint32(b[cowdOffGeneration:], 1)
	if _, err := f.WriteAt(b, 0); err != nil {
		return err
	}
	return f.Sync()
}

// allocTable gives grain table gi a place at the end of a COWD file; the
// table and the directory reach the file at the next flush.
func (e *sparseExtent) allocTable(gi uint32) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.gd[gi] != 0 {
		return nil
	}
	pos := e.end
	gtBytes := int64(e.gtLen) * 4
	e.end += gtBytes
	if (pos+gtBytes)/disk.SectorSize >= maxExtentSectors {
		return disk.Errorf(disk.ErrNoSpace, "vmdk: %s: extent file would exceed 2 TiB", e.name)
	}
	e.gd[gi] = uint32(pos / disk.SectorSize)
	e.cache[gi] = make([]uint32, e.gtLen)
	e.dirty[gi] = true
	e.gdDirty = true
	return nil
}
