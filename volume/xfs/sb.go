package xfs

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"hash/crc32"
	"io"
	"strings"
	"sync"

	"github.com/vdisk-project/vdisk/disk"
)

var be = binary.BigEndian

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Superblock version bits (sb_versionnum) and features2 bits.
const (
	versionDirV2   = 0x2000
	versionMoreBit = 0x8000
	features2CRC   = 0x100
	features2FType = 0x200
)

// Incompatible features of v5 superblocks (sb_features_incompat).
const (
	incompatFType      = 0x1
	incompatSpinodes   = 0x2
	incompatMetaUUID   = 0x4
	incompatBigtime    = 0x8
	incompatNeedsRepar = 0x10
	incompatNrext64    = 0x20
	incompatExchRange  = 0x40
	incompatParent     = 0x80
	incompatMetadir    = 0x100
	incompatZoned      = 0x200
	// incompatKnown are the features this reader handles.
	incompatKnown = incompatFType | incompatSpinodes | incompatMetaUUID | incompatBigtime |
		incompatNrext64 | incompatExchRange | incompatParent
)

var incompatNames = map[uint32]string{
	incompatNeedsRepar: "needsrepair",
	incompatMetadir:    "metadir",
	incompatZoned:      "zoned",
}

// Limits keeping what a crafted filesystem can cost bounded.
const (
	maxExtents    = 1 << 22 // extents held for one fork (128 MiB of records)
	maxBtreeDepth = 9
	maxDirBytes   = 256 << 20 // directory data read for one directory
	maxInodeCache = 4096
	maxDirCache   = 1 << 20 // directory entries cached
	maxLinkLen    = 1024
	maxAttrValue  = 64 << 10
)

// FS is an XFS filesystem, read-only. It implements [inode.FS] and
// [inode.XattrFS] and is safe for concurrent use.
type FS struct {
	r    io.ReaderAt
	size int64

	version    int // 4 or 5
	blockSize  int64
	dblocks    uint64
	agBlocks   uint64
	agCount    uint64
	agBlkLog   uint
	inoPBLog   uint
	inodeSize  int64
	dirBlkSize int64
	ftype      bool
	nrext64    bool
	rootIno    uint64
	uuid       [16]byte
	label      string
	icount     uint64
	ifree      uint64
	fdblocks   uint64

	mu         sync.Mutex
	inodes     map[uint64]*dinode
	dirs       map[uint64]*directory
	dirEntries int
	chunks     map[int64][]byte // inode chunks, see inodeBytes
}

func corrupt(format string, args ...any) error {
	return disk.Errorf(disk.ErrCorrupt, "xfs: "+format, args...)
}

func notSupported(format string, args ...any) error {
	return disk.Errorf(disk.ErrNotSupported, "xfs: "+format, args...)
}

func readFull(r io.ReaderAt, b []byte, off int64) error {
	n, err := r.ReadAt(b, off)
	if n == len(b) {
		return nil
	}
	if err == nil || err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return disk.Wrap(err, "xfs: read", "", off)
}

// Open reads the XFS filesystem in the size bytes of r. A superblock that
// breaks the format gives an error matching disk.ErrCorrupt; an
// incompatible feature this reader does not implement, a realtime device
// or an external log, disk.ErrNotSupported naming it; a failed read,
// disk.ErrAccess.
func Open(r io.ReaderAt, size int64) (*FS, error) {
	if size < 512 {
		return nil, corrupt("volume of %d bytes is too small", size)
	}
	sb := make([]byte, 512)
	if err := readFull(r, sb, 0); err != nil {
		return nil, err
	}
	if string(sb[:4]) != "XFSB" {
		return nil, corrupt("bad superblock magic %q", sb[:4])
	}
	f := &FS{r: r, size: size, inodes: map[uint64]*dinode{}, dirs: map[uint64]*directory{}, chunks: map[int64][]byte{}}
	vn := be.Uint16(sb[100:])
	f.version = int(vn & 0xf)
	f.blockSize = int64(be.Uint32(sb[4:]))
	sectSize := int64(be.Uint16(sb[102:]))
	f.inodeSize = int64(be.Uint16(sb[104:]))
	inoPB := int64(be.Uint16(sb[106:]))
	blockLog, inodeLog, inoPBLog, agBlkLog := uint(sb[120]), uint(sb[122]), uint(sb[123]), uint(sb[124])
	f.dblocks = be.Uint64(sb[8:])
	f.agBlocks = uint64(be.Uint32(sb[84:]))
	f.agCount = uint64(be.Uint32(sb[88:]))
	f.rootIno = be.Uint64(sb[56:])
	copy(f.uuid[:], sb[32:48])
	f.label = cstring(sb[108:120])
	f.icount, f.ifree, f.fdblocks = be.Uint64(sb[128:]), be.Uint64(sb[136:]), be.Uint64(sb[144:])
	switch {
	case f.version != 4 && f.version != 5:
		return nil, notSupported("superblock version %d", f.version)
	case blockLog < 9 || blockLog > 16 || f.blockSize != 1<<blockLog:
		return nil, corrupt("bad block size %d (log %d)", f.blockSize, blockLog)
	case sectSize < 512 || sectSize > f.blockSize || sectSize&(sectSize-1) != 0:
		return nil, corrupt("bad sector size %d", sectSize)
	case inodeLog < 8 || inodeLog > 11 || f.inodeSize != 1<<inodeLog || f.inodeSize > f.blockSize:
		return nil, corrupt("bad inode size %d", f.inodeSize)
	case inoPB != f.blockSize/f.inodeSize || inoPBLog != blockLog-inodeLog:
		return nil, corrupt("bad inodes per block %d", inoPB)
	case f.agCount == 0 || f.agBlocks < 5:
		return nil, corrupt("bad allocation groups: %d of %d blocks", f.agCount, f.agBlocks)
	case agBlkLog > 31 || f.agBlocks > 1<<agBlkLog || agBlkLog > 0 && f.agBlocks <= 1<<(agBlkLog-1):
		return nil, corrupt("bad AG block log %d for %d blocks", agBlkLog, f.agBlocks)
	case f.dblocks > f.agCount*f.agBlocks || f.dblocks <= (f.agCount-1)*f.agBlocks:
		return nil, corrupt("%d blocks do not fit %d AGs of %d", f.dblocks, f.agCount, f.agBlocks)
	case f.version == 4 && vn&versionDirV2 == 0:
		return nil, notSupported("version 1 directories")
	}
	f.agBlkLog, f.inoPBLog = agBlkLog, inoPBLog
	dirLog := uint(sb[192])
	if dirLog > 16-blockLog {
		return nil, corrupt("bad directory block log %d", dirLog)
	}
	f.dirBlkSize = f.blockSize << dirLog
	var features2 uint32
	if vn&versionMoreBit != 0 {
		features2 = be.Uint32(sb[200:])
	}
	if f.version == 5 {
		if features2&features2CRC == 0 {
			return nil, corrupt("version 5 superblock without CRCs")
		}
		if sectSize > 512 {
			b := make([]byte, sectSize)
			if err := readFull(r, b, 0); err != nil {
				return nil, err
			}
			sb = b
		}
		if got, want := crcOf(sb, 224), le32(sb[224:]); got != want {
			return nil, corrupt("superblock CRC %#x, want %#x", got, want)
		}
		incompat := be.Uint32(sb[216:])
		if u := incompat &^ incompatKnown; u != 0 {
			for bit := uint32(1); bit != 0; bit <<= 1 {
				if u&bit != 0 {
					if n, ok := incompatNames[bit]; ok {
						return nil, notSupported("incompatible feature %s", n)
					}
					return nil, notSupported("unknown incompatible feature %#x", bit)
				}
			}
		}
		f.ftype = incompat&incompatFType != 0
		f.nrext64 = incompat&incompatNrext64 != 0
	} else {
		f.ftype = features2&features2FType != 0
	}
	if be.Uint64(sb[16:]) != 0 || be.Uint64(sb[24:]) != 0 {
		return nil, notSupported("realtime device (%d blocks): its files live on another device", be.Uint64(sb[16:]))
	}
	if be.Uint64(sb[48:]) == 0 {
		return nil, notSupported("external log: its journal lives on another device")
	}
	if _, err := f.inode(f.rootIno); err != nil {
		return nil, err
	}
	return f, nil
}

// crcOf computes the CRC32C of b with the 4 bytes at off taken as zero,
// as XFS stores it (little-endian).
func crcOf(b []byte, off int) uint32 {
	c := crc32.Update(0, castagnoli, b[:off])
	c = crc32.Update(c, castagnoli, []byte{0, 0, 0, 0})
	return crc32.Update(c, castagnoli, b[off+4:])
}

func le32(b []byte) uint32 { return binary.LittleEndian.Uint32(b) }

// blockOff converts a filesystem block number (AG number in the high bits)
// to a byte offset, checking it and the n blocks after it against the AG
// and the volume.
func (f *FS) blockOff(fsb, n uint64) (int64, error) {
	ag, agb := fsb>>f.agBlkLog, fsb&(1<<f.agBlkLog-1)
	if ag >= f.agCount || agb >= f.agBlocks || n > f.agBlocks-agb {
		return 0, corrupt("block %d (AG %d block %d, %d blocks) out of range", fsb, ag, agb, n)
	}
	d := ag*f.agBlocks + agb
	if d+n > f.dblocks {
		return 0, corrupt("block %d past the filesystem", fsb)
	}
	off := int64(d) * f.blockSize
	if off+int64(n)*f.blockSize > f.size {
		return 0, corrupt("block %d past the end of the volume", fsb)
	}
	return off, nil
}

func uuidString(b []byte) string {
	h := hex.EncodeToString(b)
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

func cstring(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return strings.ToValidUTF8(string(b), "\uFFFD")
}
