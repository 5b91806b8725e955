package ext4

import (
	"io/fs"
	"math"
	"time"

	"github.com/vdisk-project/vdisk/volume/inode"
)

// Inode flags (i_flags).
const (
	flagEncrypt    = 0x800
	flagIndex      = 0x1000
	flagHugeFile   = 0x40000
	flagExtents    = 0x80000
	flagEAInode    = 0x200000
	flagInlineData = 0x10000000
	flagCasefold   = 0x40000000
)

// File types in i_mode.
const (
	sIFMT   = 0xf000
	sIFIFO  = 0x1000
	sIFCHR  = 0x2000
	sIFDIR  = 0x4000
	sIFBLK  = 0x6000
	sIFREG  = 0x8000
	sIFLNK  = 0xa000
	sIFSOCK = 0xc000
)

// node is a parsed inode.
type node struct {
	ino      uint32
	raw      []byte // the whole on-disk inode (s_inode_size bytes)
	mode     uint16
	uid, gid uint32
	links    uint16
	size     int64
	blocks   int64 // bytes allocated
	flags    uint32
	fileACL  uint64
	extra    uint32 // i_extra_isize
	seed     uint32 // checksum seed of this inode (metadata_csum)
	atime    time.Time
	mtime    time.Time
	ctime    time.Time
	crtime   time.Time
}

func (n *node) typ() uint16          { return n.mode & sIFMT }
func (n *node) isDir() bool          { return n.typ() == sIFDIR }
func (n *node) iblock() []byte       { return n.raw[40:100] }
func (n *node) has(flag uint32) bool { return n.flags&flag != 0 }

// fits reports whether the inode's extra space holds the field that ends
// at byte end of the inode.
func (n *node) fits(end uint32) bool { return end <= 128+n.extra }

// node reads inode ino through the cache.
func (f *FS) node(ino uint32) (*node, error) {
	if n, ok := f.nodes.get(ino); ok {
		return n, nil
	}
	s := &f.sb
	if ino == 0 || ino > s.inodesCount {
		return nil, corrupt("inode number %d out of range 1..%d", ino, s.inodesCount)
	}
	g, idx := (ino-1)/s.inodesPerGroup, (ino-1)%s.inodesPerGroup
	gd, err := f.group(g)
	if err != nil {
		return nil, err
	}
	off := uint64(idx) * uint64(s.inodeSize)
	b, err := f.block(gd.inodeTable+off/uint64(s.blockSize), "inode table")
	if err != nil {
		return nil, err
	}
	within := off % uint64(s.blockSize)
	raw := make([]byte, s.inodeSize)
	copy(raw, b[within:])
	n, err := f.parseNode(ino, raw)
	if err != nil {
		return nil, err
	}
	f.nodes.add(ino, n, 1)
	return n, nil
}

func (f *FS) parseNode(ino uint32, raw []byte) (*node, error) {
	s := &f.sb
	n := &node{ino: ino, raw: raw}
	n.mode = le.Uint16(raw[0:])
	n.links = le.Uint16(raw[26:])
	n.flags = le.Uint32(raw[32:])
	if s.inodeSize > 128 {
		n.extra = uint32(le.Uint16(raw[128:]))
		if 128+n.extra > s.inodeSize || n.extra&3 != 0 {
			return nil, corrupt("inode %d: extra size %d", ino, n.extra)
		}
	}
	if s.csum() {
		inum := crc32cU32(s.csumSeed, ino)
		n.seed = crc32cU32(inum, le.Uint32(raw[100:]))
		c := crc32c(n.seed, raw[:124])
		c = crc32c(c, zero4[:2])
		c = crc32c(c, raw[126:128])
		want := uint32(le.Uint16(raw[124:]))
		if s.inodeSize > 128 {
			c = crc32c(c, raw[128:130])
			rest := raw[130:]
			if n.fits(132) {
				c = crc32c(c, zero4[:2])
				rest = raw[132:]
				want |= uint32(le.Uint16(raw[130:])) << 16
			}
			c = crc32c(c, rest)
		}
		if !n.fits(132) {
			c &= 0xffff
		}
		if c != want {
			return nil, corrupt("inode %d checksum %#x, computed %#x", ino, want, c)
		}
	}
	if n.links == 0 {
		return nil, corrupt("inode %d is deleted (no links) but referenced", ino)
	}
	switch n.typ() {
	case sIFIFO, sIFCHR, sIFDIR, sIFBLK, sIFREG, sIFLNK, sIFSOCK:
	default:
		return nil, corrupt("inode %d: unknown file type in mode %#o", ino, n.mode)
	}
	n.uid = uint32(le.Uint16(raw[2:])) | uint32(le.Uint16(raw[120:]))<<16
	n.gid = uint32(le.Uint16(raw[24:])) | uint32(le.Uint16(raw[122:]))<<16
	size := uint64(le.Uint32(raw[4:]))
	if n.typ() == sIFREG || s.has(incompatLargeDir) {
		size |= uint64(le.Uint32(raw[108:])) << 32
	}
	// Extents and block maps address at most 2^32 blocks.
	if size > uint64(s.blockSize)<<32 {
		return nil, corrupt("inode %d: size %d exceeds the format's limit", ino, size)
	}
	n.size = int64(size)
	blocks := uint64(le.Uint32(raw[28:]))
	unit := uint64(512)
	if s.rocompat&rocompatHugeFile != 0 {
		blocks |= uint64(le.Uint16(raw[116:])) << 32
		if n.has(flagHugeFile) {
			unit = uint64(s.blockSize)
		}
	}
	if blocks > math.MaxInt64/unit {
		return nil, corrupt("inode %d: %d blocks", ino, blocks)
	}
	n.blocks = int64(blocks * unit)
	n.fileACL = uint64(le.Uint32(raw[104:]))
	if s.s64() {
		n.fileACL |= uint64(le.Uint16(raw[118:])) << 32
	}
	n.ctime = n.time(12, 132)
	n.mtime = n.time(16, 136)
	n.atime = n.time(8, 140)
	if n.fits(148) {
		n.crtime = n.time(144, 148)
	}
	return n, nil
}

// time decodes a timestamp: seconds since 1970 (signed 32 bits) at off and,
// when the inode has room for it, an extra word at extraOff whose low two
// bits extend the seconds (the epoch bits) and whose rest is nanoseconds.
func (n *node) time(off, extraOff uint32) time.Time {
	sec := int64(int32(le.Uint32(n.raw[off:])))
	var nsec int64
	if n.fits(extraOff + 4) {
		x := le.Uint32(n.raw[extraOff:])
		sec += int64(x&3) << 32
		nsec = int64(x >> 2)
	}
	return time.Unix(sec, nsec)
}

// fileMode converts i_mode to an fs.FileMode.
func fileMode(m uint16) fs.FileMode {
	mode := fs.FileMode(m & 0o777)
	if m&0o4000 != 0 {
		mode |= fs.ModeSetuid
	}
	if m&0o2000 != 0 {
		mode |= fs.ModeSetgid
	}
	if m&0o1000 != 0 {
		mode |= fs.ModeSticky
	}
	switch m & sIFMT {
	case sIFDIR:
		mode |= fs.ModeDir
	case sIFLNK:
		mode |= fs.ModeSymlink
	case sIFCHR:
		mode |= fs.ModeDevice | fs.ModeCharDevice
	case sIFBLK:
		mode |= fs.ModeDevice
	case sIFIFO:
		mode |= fs.ModeNamedPipe
	case sIFSOCK:
		mode |= fs.ModeSocket
	case sIFREG:
	default:
		mode |= fs.ModeIrregular
	}
	return mode
}

// rdev decodes a device node's number from i_block (the old 8:8 encoding
// in the first word, or the new one in the second) into Linux's dev_t
// layout (as stat(2) and unix.Mkdev give it).
func (n *node) rdev() uint64 {
	var major, minor uint64
	b := n.iblock()
	if old := le.Uint32(b[0:]); old != 0 {
		major, minor = uint64(old>>8&0xff), uint64(old&0xff)
	} else {
		d := uint64(le.Uint32(b[4:]))
		major, minor = d&0xfff00>>8, d&0xff|d>>12&0xfff00
	}
	return major&0xfffff000<<32 | major&0xfff<<8 | minor&0xffffff00<<12 | minor&0xff
}

// stat builds the inode.Stat of n, reading a symbolic link's target.
func (f *FS) stat(n *node) (inode.Stat, error) {
	st := inode.Stat{
		Ino:    uint64(n.ino),
		Mode:   fileMode(n.mode),
		Nlink:  uint32(n.links),
		UID:    n.uid,
		GID:    n.gid,
		Size:   n.size,
		Blocks: n.blocks,
		Atime:  n.atime,
		Mtime:  n.mtime,
		Ctime:  n.ctime,
		Btime:  n.crtime,
	}
	switch n.typ() {
	case sIFCHR, sIFBLK:
		st.Rdev = n.rdev()
	case sIFLNK:
		if !n.has(flagEncrypt) {
			t, err := f.readlink(n)
			if err != nil {
				return inode.Stat{}, err
			}
			st.Target = t
		}
	}
	return st, nil
}

// readlink returns a symbolic link's target: in i_block for a fast link,
// else in its data (a block, or inline data).
func (f *FS) readlink(n *node) (string, error) {
	if n.has(flagEncrypt) {
		return "", unsupported("inode %d: encrypted symbolic link", n.ino)
	}
	if n.size == 0 || n.size > int64(f.sb.blockSize) || n.size > 4096 {
		return "", corrupt("inode %d: symbolic link of %d bytes", n.ino, n.size)
	}
	if f.fastSymlink(n) {
		return string(n.iblock()[:n.size]), nil
	}
	b := make([]byte, n.size)
	if _, err := f.readData(n, b, 0); err != nil {
		return "", err
	}
	return string(b), nil
}

// fastSymlink reports whether a link's target is in i_block, by the
// kernel's rule (ext4_inode_is_fast_symlink): not inline data, and no
// blocks allocated but an xattr block (with ea_inode: a target shorter
// than i_block).
func (f *FS) fastSymlink(n *node) bool {
	if n.has(flagInlineData) {
		return false
	}
	if f.sb.has(incompatEAInode) {
		return n.size < 60
	}
	var ea int64
	if n.fileACL != 0 {
		ea = int64(f.sb.clusterSize)
	}
	return n.blocks == ea && n.size < 60
}
