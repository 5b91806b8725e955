package vmdk

import (
	"encoding/binary"
	"fmt"
	"math/bits"

	"github.com/vdisk-project/vdisk/disk"
)

// The hosted sparse ("KDMV") extent header, reference/vmdk-format.md §3.1.
// All fields are little-endian and packed; sizes and offsets are in sectors.

const (
	sparseMagic = 0x564D444B // "KDMV" as a little-endian u32
	cowdMagic   = 0x44574F43 // "COWD"

	// gdAtEnd in gdOffset means the grain directory is found through the
	// footer (streamOptimized).
	gdAtEnd = ^uint64(0)

	headerSize = 512
)

// Header flags, §3.2. Bits 0-15 are compatible (unknown ones are ignored);
// bits 16-31 are incompatible (unknown ones are refused).
const (
	flagNewlineDetector = 1 << 0  // bytes 73-76 hold the newline check
	flagRedundantGD     = 1 << 1  // a redundant GD/GT copy exists
	flagZeroedGrainGTE  = 1 << 2  // GTE 1 means a zeroed grain
	flagCompressed      = 1 << 16 // grains are compressed
	flagMarkers         = 1 << 17 // grains and metadata carry markers

	knownIncompatibleFlags = flagCompressed | flagMarkers
)

// Compression algorithms in the header's compressAlgorithm field.
const (
	compressNone    = 0
	compressDeflate = 1
)

// Limits applied to untrusted headers before anything is allocated.
const (
	maxGrainSectors = 1 << 21 // 1 GiB grains (qemu's "invalid granularity" bound)
	maxGTEsPerGT    = 512     // VMware disklib supports only 512
	// maxExtentSectors is the largest sector number a 32-bit GDE or GTE can
	// hold: a hosted sparse extent file cannot exceed 2 TiB (§3.7). The
	// limit is on file offsets, not on capacity: a thinly written extent of
	// a larger capacity is valid (qemu creates them), and only placing a
	// grain or a table past this sector fails.
	maxExtentSectors = 1 << 32
	// maxCapacitySectors bounds the capacity of a sparse extent so that byte
	// offsets (capacity × 512 plus one grain table's coverage) fit an int64.
	maxCapacitySectors = 1 << 53
	// maxDescriptorSectors bounds an embedded descriptor (VBox refuses more
	// than 128 KiB of descriptor text).
	maxDescriptorSectors = 256
)

// sparseHeader is a decoded KDMV header.
type sparseHeader struct {
	Version          uint32
	Flags            uint32
	Capacity         uint64 // sectors
	GrainSize        uint64 // sectors
	DescriptorOffset uint64 // sectors
	DescriptorSize   uint64 // sectors
	NumGTEsPerGT     uint32
	RGDOffset        uint64 // sectors
	GDOffset         uint64 // sectors, or gdAtEnd
	OverHead         uint64 // sectors
	UncleanShutdown  bool
	// The newline check bytes, §3.6.
	SingleEndLineChar  byte
	NonEndLineChar     byte
	DoubleEndLineChar1 byte
	DoubleEndLineChar2 byte
	CompressAlgorithm  uint16
}

// parseSparseHeader decodes a 512-byte KDMV header. It checks the magic only;
// validate checks the rest.
func parseSparseHeader(b []byte) (*sparseHeader, error) {
	if len(b) < headerSize {
		return nil, disk.Errorf(disk.ErrCorrupt, "vmdk: sparse header truncated to %d bytes", len(b))
	}
	le := binary.LittleEndian
	if m := le.Uint32(b[0:]); m != sparseMagic {
		return nil, disk.Errorf(disk.ErrCorrupt, "vmdk: bad sparse header magic %#08x", m)
	}
	return &sparseHeader{
		Version:            le.Uint32(b[4:]),
		Flags:              le.Uint32(b[8:]),
		Capacity:           le.Uint64(b[12:]),
		GrainSize:          le.Uint64(b[20:]),
		DescriptorOffset:   le.Uint64(b[28:]),
		DescriptorSize:     le.Uint64(b[36:]),
		NumGTEsPerGT:       le.Uint32(b[44:]),
		RGDOffset:          le.Uint64(b[48:]),
		GDOffset:           le.Uint64(b[56:]),
		OverHead:           le.Uint64(b[64:]),
		UncleanShutdown:    b[72] != 0,
		SingleEndLineChar:  b[73],
		NonEndLineChar:     b[74],
		DoubleEndLineChar1: b[75],
		DoubleEndLineChar2: b[76],
		CompressAlgorithm:  le.Uint16(b[77:]),
	}, nil
}

// marshal encodes h into a 512-byte sector.
func (h *sparseHeader) marshal() []byte {
	b := make([]byte, headerSize)
	le := binary.LittleEndian
	le.PutUint32(b[0:], sparseMagic)
	le.PutUint32(b[4:], h.Version)
	le.PutUint32(b[8:], h.Flags)
	le.PutUint64(b[12:], h.Capacity)
	le.PutUint64(b[20:], h.GrainSize)
	le.PutUint64(b[28:], h.DescriptorOffset)
	le.PutUint64(b[36:], h.DescriptorSize)
	le.PutUint32(b[44:], h.NumGTEsPerGT)
	le.PutUint64(b[48:], h.RGDOffset)
	le.PutUint64(b[56:], h.GDOffset)
	le.PutUint64(b[64:], h.OverHead)
	if h.UncleanShutdown {
		b[72] = 1
	}
	b[73] = h.SingleEndLineChar
	b[74] = h.NonEndLineChar
	b[75] = h.DoubleEndLineChar1
	b[76] = h.DoubleEndLineChar2
	le.PutUint16(b[77:], h.CompressAlgorithm)
	return b
}

// setNewlineChars fills the newline check bytes with their proper values.
func (h *sparseHeader) setNewlineChars() {
	h.SingleEndLineChar, h.NonEndLineChar, h.DoubleEndLineChar1, h.DoubleEndLineChar2 = '\n', ' ', '\r', '\n'
}

func (h *sparseHeader) compressed() bool { return h.Flags&flagCompressed != 0 }
func (h *sparseHeader) markers() bool    { return h.Flags&flagMarkers != 0 }

// grainBytes returns the grain size in bytes.
func (h *sparseHeader) grainBytes() int64 { return int64(h.GrainSize) * disk.SectorSize }

// gtCoverage returns the bytes of virtual disk one grain table covers.
func (h *sparseHeader) gtCoverage() int64 { return int64(h.NumGTEsPerGT) * h.grainBytes() }

// numGDEntries returns the number of grain directory entries (grain tables)
// needed for the capacity: ceil(ceil(capacity/grain)/numGTEsPerGT).
func (h *sparseHeader) numGDEntries() uint64 {
	grains := divRoundUp(h.Capacity, h.GrainSize)
	return divRoundUp(grains, uint64(h.NumGTEsPerGT))
}

// validate checks a header read from a file of fileSize bytes against the
// rules of §3.8, so that nothing later allocates or seeks by an absurd value.
func (h *sparseHeader) validate(fileSize int64) error {
	bad := func(format string, args ...any) error {
		return disk.Errorf(disk.ErrCorrupt, "vmdk: "+format, args...)
	}
	if h.Version < 1 || h.Version > 3 {
		return disk.Errorf(disk.ErrNotSupported, "vmdk: unsupported sparse header version %d", h.Version)
	}
	if unknown := h.Flags &^ 0xFFFF &^ knownIncompatibleFlags; unknown != 0 {
		return disk.Errorf(disk.ErrNotSupported, "vmdk: unknown incompatible header flags %#x", unknown)
	}
	if h.markers() && !h.compressed() {
		return bad("header has grain markers without compression")
	}
	if h.compressed() && h.CompressAlgorithm != compressDeflate {
		return disk.Errorf(disk.ErrNotSupported, "vmdk: unsupported compression algorithm %d", h.CompressAlgorithm)
	}
	if h.Flags&flagNewlineDetector != 0 && (h.SingleEndLineChar != '\n' || h.NonEndLineChar != ' ' ||
		h.DoubleEndLineChar1 != '\r' || h.DoubleEndLineChar2 != '\n') {
		return bad("newline check bytes changed: the file was corrupted by a text-mode transfer")
	}
	if h.GrainSize == 0 || h.GrainSize > maxGrainSectors || bits.OnesCount64(h.GrainSize) != 1 {
		return bad("invalid grain size of %d sectors", h.GrainSize)
	}
	if h.NumGTEsPerGT == 0 || h.NumGTEsPerGT > maxGTEsPerGT || bits.OnesCount32(h.NumGTEsPerGT) != 1 {
		return bad("invalid grain table size of %d entries", h.NumGTEsPerGT)
	}
	if h.DescriptorOffset != 0 && (h.DescriptorSize == 0 || h.DescriptorSize > maxDescriptorSectors) {
		return bad("invalid embedded descriptor size of %d sectors", h.DescriptorSize)
	}
	if h.Capacity > maxCapacitySectors {
		return bad("capacity of %d sectors is too large", h.Capacity)
	}
	fileSectors := uint64(fileSize) / disk.SectorSize
	if h.DescriptorOffset != 0 && h.DescriptorOffset+h.DescriptorSize > fileSectors {
		return bad("embedded descriptor at sector %d+%d past end of file", h.DescriptorOffset, h.DescriptorSize)
	}
	// The grain directory must fit in the file: 4 bytes per entry.
	if gd := h.numGDEntries(); gd > fileSectors*disk.SectorSize/4+1 || gd > 1<<25 {
		return bad("grain directory of %d entries cannot fit a file of %d bytes", gd, fileSize)
	}
	if !h.compressed() {
		if h.GDOffset == gdAtEnd {
			// The caller must have replaced the header by its footer
			// (resolveFooter).
			return bad("grain directory at end of file, but no footer was read")
		}
		if h.OverHead > fileSectors {
			return bad("file truncated, expecting at least %d bytes", h.OverHead*disk.SectorSize)
		}
	}
	if h.GDOffset != gdAtEnd && h.GDOffset >= fileSectors {
		return bad("grain directory offset %d past end of file", h.GDOffset)
	}
	if h.Flags&flagRedundantGD != 0 && h.RGDOffset >= fileSectors {
		return bad("redundant grain directory offset %d past end of file", h.RGDOffset)
	}
	return nil
}

// footerSectors is the tail of a file whose header says GD_AT_END: a footer
// marker, the footer (a copy of the header with the real gdOffset) and an
// end-of-stream marker, one sector each (§4.1).
const footerSectors = 3

// resolveFooter returns the header that describes the extent: h itself, or,
// when h's gdOffset is GD_AT_END, the footer near the end of the file, which
// takes precedence over the header (§4.1). Streams and uncompressed extents
// use the same convention; for the latter the footer must be complete, as
// qemu requires: a footer marker (size 0, type 3) at EOF-1536, a KDMV
// header at EOF-1024 and an end-of-stream marker (all zero) at EOF-512.
func resolveFooter(f disk.File, h *sparseHeader, fileSize int64) (*sparseHeader, error) {
	if h.GDOffset != gdAtEnd {
		return h, nil
	}
	ft, err := readFooter(f, fileSize)
	if err != nil {
		return nil, disk.Errorf(disk.ErrCorrupt, "vmdk: grain directory at end of file, but %v", err)
	}
	eos := make([]byte, disk.SectorSize)
	if _, err := f.ReadAt(eos, fileSize-disk.SectorSize); err != nil {
		return nil, disk.Errorf(disk.ErrCorrupt, "vmdk: read end-of-stream marker: %v", err)
	}
	if le := binary.LittleEndian; le.Uint64(eos) != 0 || le.Uint32(eos[8:]) != 0 || le.Uint32(eos[12:]) != markerEOS {
		return nil, disk.Errorf(disk.ErrCorrupt, "vmdk: grain directory at end of file, but no end-of-stream marker follows the footer")
	}
	return ft, nil
}

// sparseLayout is the metadata placement of a new hosted sparse extent
// (§3.4): header, descriptor, redundant GD and GTs, GD and GTs, padding to a
// grain boundary.
type sparseLayout struct {
	gdEntries uint64
	gdSectors uint64 // sectors of one grain directory
	gtSectors uint64 // sectors of one grain table
	rgdOffset uint64
	gdOffset  uint64
	overHead  uint64
}

// newSparseLayout computes the layout for capacity and grain size (sectors)
// with the descriptor occupying descSectors sectors after the header.
func newSparseLayout(capacity, grain uint64, gtes uint32, descSectors uint64) sparseLayout {
	var l sparseLayout
	grains := divRoundUp(capacity, grain)
	l.gdEntries = divRoundUp(grains, uint64(gtes))
	l.gtSectors = divRoundUp(uint64(gtes)*4, disk.SectorSize)
	l.gdSectors = divRoundUp(l.gdEntries*4, disk.SectorSize)
	l.rgdOffset = 1 + descSectors
	l.gdOffset = l.rgdOffset + l.gdSectors + l.gdEntries*l.gtSectors
	l.overHead = roundUp(l.gdOffset+l.gdSectors+l.gdEntries*l.gtSectors, grain)
	return l
}

func divRoundUp(a, b uint64) uint64 { return (a + b - 1) / b }
func roundUp(a, b uint64) uint64    { return divRoundUp(a, b) * b }

func (h *sparseHeader) String() string {
	return fmt.Sprintf("KDMV v%d flags %#x capacity %d grain %d desc %d+%d gtes %d rgd %d gd %d overhead %d",
		h.Version, h.Flags, h.Capacity, h.GrainSize, h.DescriptorOffset, h.DescriptorSize,
		h.NumGTEsPerGT, h.RGDOffset, h.GDOffset, h.OverHead)
}
