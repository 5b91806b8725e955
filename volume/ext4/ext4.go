package ext4

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"math"
	"strings"

	"github.com/vdisk-project/vdisk/disk"
	"github.com/vdisk-project/vdisk/volume/inode"
)

var le = binary.LittleEndian

// Feature flags (s_feature_compat, s_feature_incompat, s_feature_ro_compat).
const (
	compatHasJournal = 0x4

	incompatCompression = 0x1
	incompatFiletype    = 0x2
	incompatRecover     = 0x4
	incompatJournalDev  = 0x8
	incompatMetaBG      = 0x10
	incompatExtents     = 0x40
	incompat64Bit       = 0x80
	incompatMMP         = 0x100
	incompatFlexBG      = 0x200
	incompatEAInode     = 0x400
	incompatDirData     = 0x1000
	incompatCsumSeed    = 0x2000
	incompatLargeDir    = 0x4000
	incompatInlineData  = 0x8000
	incompatEncrypt     = 0x10000
	incompatCasefold    = 0x20000

	rocompatSparseSuper  = 0x1
	rocompatLargeFile    = 0x2
	rocompatBtreeDir     = 0x4
	rocompatHugeFile     = 0x8
	rocompatGdtCsum      = 0x10
	rocompatBigalloc     = 0x200
	rocompatMetadataCsum = 0x400

	compatSparseSuper2 = 0x200
)

// incompatNames names every INCOMPAT feature e2fsprogs knows; those in
// incompatOK are the ones this reader implements.
var incompatNames = []struct {
	bit  uint32
	name string
}{
	{incompatCompression, "compression"},
	{incompatFiletype, "filetype"},
	{incompatRecover, "needs_recovery"},
	{incompatJournalDev, "journal_dev"},
	{incompatMetaBG, "meta_bg"},
	{incompatExtents, "extent"},
	{incompat64Bit, "64bit"},
	{incompatMMP, "mmp"},
	{incompatFlexBG, "flex_bg"},
	{incompatEAInode, "ea_inode"},
	{incompatDirData, "dirdata"},
	{incompatCsumSeed, "metadata_csum_seed"},
	{incompatLargeDir, "large_dir"},
	{incompatInlineData, "inline_data"},
	{incompatEncrypt, "encrypt"},
	{incompatCasefold, "casefold"},
}

const incompatOK = incompatFiletype | incompatRecover | incompatMetaBG | incompatExtents |
	incompat64Bit | incompatMMP | incompatFlexBG | incompatEAInode | incompatCsumSeed |
	incompatLargeDir | incompatInlineData | incompatEncrypt | incompatCasefold

const (
	superOff  = 1024
	rootIno   = 2
	maxDepth  = 5  // extent tree depth the kernel accepts
	maxLinks  = 40 // symbolic links followed per lookup
	cacheSize = 16 << 20
)

// super is what the reader keeps of the superblock.
type super struct {
	inodesCount    uint32
	blocksCount    uint64
	freeBlocks     uint64
	freeInodes     uint32
	firstDataBlock uint32
	blockSize      uint32
	clusterSize    uint32
	blocksPerGroup uint32
	inodesPerGroup uint32
	inodeSize      uint32
	compat         uint32
	incompat       uint32
	rocompat       uint32
	uuid           [16]byte
	label          string
	descSize       uint32
	firstMetaBG    uint32
	groups         uint32
	csumSeed       uint32
	journalInum    uint32
	backupBGs      [2]uint32
	itableBlocks   uint32 // blocks of one group's inode table
}

func (s *super) has(incompat uint32) bool { return s.incompat&incompat != 0 }
func (s *super) csum() bool               { return s.rocompat&rocompatMetadataCsum != 0 }

// FS is an ext2, ext3 or ext4 filesystem opened read-only. It implements
// [inode.FS] and [inode.XattrFS] and is safe for concurrent use.
type FS struct {
	r    io.ReaderAt
	size int64
	sb   super
	typ  string

	blocks *lru[uint64, []byte]   // metadata blocks, by physical number
	nodes  *lru[uint32, *node]    // parsed inodes
	dirs   *lru[uint32, dirIndex] // name lookup tables of directories

	// journal maps a filesystem block to the journal block that holds
	// its newest committed copy (nil when there is nothing to replay).
	// It is built by Open and read-only afterwards.
	journal map[uint64]jblock
	jnode   *node // the journal inode, when journal is set
}

var (
	_ inode.FS      = (*FS)(nil)
	_ inode.XattrFS = (*FS)(nil)
)

func corrupt(format string, a ...any) error {
	return disk.Errorf(disk.ErrCorrupt, "ext4: "+format, a...)
}

func unsupported(format string, a ...any) error {
	return disk.Errorf(disk.ErrNotSupported, "ext4: "+format, a...)
}

// Open reads the ext2/3/4 filesystem in r, a volume of size bytes. It
// checks the superblock (and, with metadata_csum, its checksum) and, when
// the filesystem was not cleanly unmounted, replays its journal in memory.
// Unknown INCOMPAT features give an error matching disk.ErrNotSupported
// that names them.
func Open(r io.ReaderAt, size int64) (*FS, error) {
	if size < superOff+1024 {
		return nil, corrupt("volume of %d bytes is too small for a superblock", size)
	}
	f := &FS{r: r, size: size}
	b := make([]byte, 1024)
	if err := f.readAt(b, superOff); err != nil {
		return nil, err
	}
	if err := f.parseSuper(b); err != nil {
		return nil, err
	}
	nb := max(cacheSize/int(f.sb.blockSize), 64)
	f.blocks = newLRU[uint64, []byte](nb)
	f.nodes = newLRU[uint32, *node](8192)
	f.dirs = newLRU[uint32, dirIndex](maxIndexed * 2)
	if f.sb.has(incompatRecover) {
		if err := f.replay(); err != nil {
			return nil, err
		}
	}
	return f, nil
}

func (f *FS) parseSuper(b []byte) error {
	if le.Uint16(b[56:]) != 0xef53 {
		return corrupt("no ext2/3/4 superblock (bad magic)")
	}
	s := &f.sb
	s.inodesCount = le.Uint32(b[0:])
	s.blocksCount = uint64(le.Uint32(b[4:]))
	s.freeBlocks = uint64(le.Uint32(b[12:]))
	s.freeInodes = le.Uint32(b[16:])
	s.firstDataBlock = le.Uint32(b[20:])
	logBlock, logCluster := le.Uint32(b[24:]), le.Uint32(b[28:])
	s.blocksPerGroup = le.Uint32(b[32:])
	s.inodesPerGroup = le.Uint32(b[40:])
	rev := le.Uint32(b[76:])
	s.inodeSize = 128
	if rev >= 1 {
		s.inodeSize = uint32(le.Uint16(b[88:]))
		s.compat, s.incompat, s.rocompat = le.Uint32(b[92:]), le.Uint32(b[96:]), le.Uint32(b[100:])
	}
	copy(s.uuid[:], b[104:120])
	s.label = cstring(b[120:136])
	s.journalInum = le.Uint32(b[224:])
	s.descSize = 32
	if s.has(incompat64Bit) {
		s.descSize = uint32(le.Uint16(b[254:]))
		s.blocksCount |= uint64(le.Uint32(b[336:])) << 32
		s.freeBlocks |= uint64(le.Uint32(b[344:])) << 32
	}
	s.firstMetaBG = le.Uint32(b[260:])
	s.backupBGs = [2]uint32{le.Uint32(b[588:]), le.Uint32(b[592:])}

	if s.incompat&incompatJournalDev != 0 {
		return unsupported("this is an external journal device, not a filesystem")
	}
	if bad := s.incompat &^ incompatOK; bad != 0 {
		return unsupported("unsupported INCOMPAT feature %s", featureNames(bad))
	}
	if s.csum() {
		if b[373] != 1 {
			return unsupported("unknown metadata checksum type %d", b[373])
		}
		if got, want := crc32c(^uint32(0), b[:1020]), le.Uint32(b[1020:]); got != want {
			return corrupt("superblock checksum %#08x, computed %#08x", want, got)
		}
		if s.has(incompatCsumSeed) {
			s.csumSeed = le.Uint32(b[624:])
		} else {
			s.csumSeed = crc32c(^uint32(0), s.uuid[:])
		}
	}

	// Geometry.
	if logBlock > 6 {
		return corrupt("block size 2^%d KiB", logBlock)
	}
	s.blockSize = 1024 << logBlock
	s.clusterSize = s.blockSize
	if s.rocompat&rocompatBigalloc != 0 {
		if logCluster < logBlock || logCluster > 16+6 {
			return corrupt("cluster size 2^%d KiB", logCluster)
		}
		s.clusterSize = 1024 << logCluster
	}
	bs := uint64(s.blockSize)
	switch {
	case s.inodeSize < 128 || s.inodeSize > s.blockSize || s.inodeSize&(s.inodeSize-1) != 0:
		return corrupt("inode size %d", s.inodeSize)
	case s.blocksPerGroup == 0 || s.inodesPerGroup == 0 || s.inodesPerGroup > 8*s.blockSize:
		return corrupt("%d blocks and %d inodes per group", s.blocksPerGroup, s.inodesPerGroup)
	case s.s64() && (s.descSize < 64 || s.descSize > 1024 || s.descSize&(s.descSize-1) != 0):
		return corrupt("group descriptor size %d", s.descSize)
	case s.blocksCount <= uint64(s.firstDataBlock) || s.blocksCount > math.MaxInt64/bs:
		return corrupt("%d blocks, the first at %d", s.blocksCount, s.firstDataBlock)
	case s.firstDataBlock > 1:
		return corrupt("first data block %d", s.firstDataBlock)
	}
	groups := (s.blocksCount - uint64(s.firstDataBlock) + uint64(s.blocksPerGroup) - 1) / uint64(s.blocksPerGroup)
	if groups > math.MaxUint32 || groups*uint64(s.inodesPerGroup) != uint64(s.inodesCount) {
		return corrupt("%d groups of %d inodes, but %d inodes", groups, s.inodesPerGroup, s.inodesCount)
	}
	s.groups = uint32(groups)
	s.itableBlocks = uint32((uint64(s.inodesPerGroup)*uint64(s.inodeSize) + bs - 1) / bs)

	f.typ = "ext4"
	const ext2RO = rocompatSparseSuper | rocompatLargeFile | rocompatBtreeDir
	switch {
	case s.compat&compatHasJournal == 0 && s.rocompat&^ext2RO == 0 && s.incompat&^(incompatFiletype|incompatMetaBG) == 0:
		f.typ = "ext2"
	case s.compat&compatHasJournal != 0 && s.rocompat&^ext2RO == 0 && s.incompat&^(incompatFiletype|incompatMetaBG|incompatRecover) == 0:
		f.typ = "ext3"
	}
	return nil
}

func (s *super) s64() bool { return s.has(incompat64Bit) }

func featureNames(bits uint32) string {
	var names []string
	for _, n := range incompatNames {
		if bits&n.bit != 0 {
			names = append(names, n.name)
			bits &^= n.bit
		}
	}
	if bits != 0 {
		names = append(names, fmt.Sprintf("%#x", bits))
	}
	return strings.Join(names, ", ")
}

func cstring(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return strings.ToValidUTF8(string(b), "\uFFFD")
}

// Type is blkid's name for the filesystem: "ext2", "ext3" or "ext4".
func (f *FS) Type() string { return f.typ }

// Label is the volume name, as blkid prints it.
func (f *FS) Label() string { return f.sb.label }

// UUID is the filesystem UUID, as blkid prints it.
func (f *FS) UUID() string {
	h := hex.EncodeToString(f.sb.uuid[:])
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// Statfs reports the size and free space the superblock records.
func (f *FS) Statfs() (inode.Statfs, error) {
	s := &f.sb
	free := min(s.freeBlocks, s.blocksCount) // in blocks, even with bigalloc
	return inode.Statfs{
		BlockSize:   int64(s.blockSize),
		TotalBytes:  int64(s.blocksCount) * int64(s.blockSize),
		FreeBytes:   int64(free) * int64(s.blockSize),
		TotalInodes: int64(s.inodesCount),
		FreeInodes:  int64(min(s.freeInodes, s.inodesCount)),
	}, nil
}

// readAt reads len(p) bytes of the volume at off: a range past the
// volume's end is corrupt (the filesystem points outside its volume), a
// failed read keeps its code (disk.ErrAccess for a plain I/O error).
func (f *FS) readAt(p []byte, off int64) error {
	if off < 0 || off > f.size || int64(len(p)) > f.size-off {
		return corrupt("read of %d bytes at %d is past the end of the %d-byte volume", len(p), off, f.size)
	}
	n, err := f.r.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if err == nil || err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return disk.Wrap(err, "ext4: read", "", off)
}

// checkBlocks verifies that the n blocks from blk lie inside the
// filesystem.
func (f *FS) checkBlocks(blk, n uint64, what string) error {
	if blk == 0 || blk >= f.sb.blocksCount || n > f.sb.blocksCount-blk {
		return corrupt("%s at block %d (+%d) is outside the filesystem's %d blocks", what, blk, n, f.sb.blocksCount)
	}
	return nil
}

// block returns physical block blk, a metadata block, through the cache
// (and the journal). The slice is shared: callers must not modify it.
func (f *FS) block(blk uint64, what string) ([]byte, error) {
	if err := f.checkBlocks(blk, 1, what); err != nil {
		return nil, err
	}
	if b, ok := f.blocks.get(blk); ok {
		return b, nil
	}
	b := make([]byte, f.sb.blockSize)
	if err := f.readBlocks(b, blk); err != nil {
		return nil, err
	}
	f.blocks.add(blk, b, 1)
	return b, nil
}

// readBlocks reads len(p) bytes (at most to the end of the filesystem)
// from the start of physical block blk, with the journal's newer copies
// of blocks replacing theirs.
func (f *FS) readBlocks(p []byte, blk uint64) error {
	bs := int(f.sb.blockSize)
	if f.journal == nil {
		return f.readAt(p, int64(blk)*int64(bs))
	}
	for len(p) > 0 {
		// Read up to the next journalled block in one request.
		n := 0
		for n < len(p) {
			if _, ok := f.journal[blk+uint64(n/bs)]; ok {
				break
			}
			n += bs
		}
		n = min(n, len(p))
		if n > 0 {
			if err := f.readAt(p[:n], int64(blk)*int64(bs)); err != nil {
				return err
			}
		} else {
			n = min(bs, len(p))
			if err := f.journalBlock(p[:n], f.journal[blk]); err != nil {
				return err
			}
		}
		p = p[n:]
		blk += uint64((n + bs - 1) / bs)
	}
	return nil
}

// group is what the reader needs of a group descriptor.
type group struct {
	inodeTable uint64
}

// hasSuper reports whether group g holds a superblock backup (and so a
// copy of the group descriptors).
func (s *super) hasSuper(g uint32) bool {
	if g == 0 {
		return true
	}
	if s.compat&compatSparseSuper2 != 0 {
		return g == s.backupBGs[0] || g == s.backupBGs[1]
	}
	if s.rocompat&rocompatSparseSuper == 0 || g == 1 {
		return true
	}
	if g&1 == 0 {
		return false
	}
	for _, p := range []uint32{3, 5, 7} {
		x := uint64(p)
		for x < uint64(g) {
			x *= uint64(p)
		}
		if x == uint64(g) {
			return true
		}
	}
	return false
}

// descBlock is where the descriptors of meta group m (the groups whose
// descriptors share one block) are: after the superblock, or with meta_bg
// in the first group of m.
func (s *super) descBlock(m uint32) uint64 {
	descPerBlock := s.blockSize / s.descSize
	if !s.has(incompatMetaBG) || m < s.firstMetaBG {
		// Right after the superblock's block (block 1 with 1 KiB
		// blocks even when the first data block is 0, as with bigalloc).
		return uint64(superOff/s.blockSize) + 1 + uint64(m)
	}
	g := m * descPerBlock
	var extra uint64
	if s.hasSuper(g) {
		extra = 1
	}
	if s.blockSize == 1024 && m == 0 && s.firstDataBlock == 0 {
		extra++
	}
	return uint64(g)*uint64(s.blocksPerGroup) + uint64(s.firstDataBlock) + extra
}

func (f *FS) group(g uint32) (group, error) {
	s := &f.sb
	if g >= s.groups {
		return group{}, corrupt("group %d of %d", g, s.groups)
	}
	descPerBlock := s.blockSize / s.descSize
	b, err := f.block(s.descBlock(g/descPerBlock), "group descriptor")
	if err != nil {
		return group{}, err
	}
	off := (g % descPerBlock) * s.descSize
	d := b[off : off+s.descSize]
	if err := f.checkDesc(g, d); err != nil {
		return group{}, err
	}
	gd := group{inodeTable: uint64(le.Uint32(d[8:]))}
	if s.s64() {
		gd.inodeTable |= uint64(le.Uint32(d[40:])) << 32
	}
	if err := f.checkBlocks(gd.inodeTable, uint64(s.itableBlocks), fmt.Sprintf("group %d's inode table", g)); err != nil {
		return group{}, err
	}
	return gd, nil
}

func (f *FS) checkDesc(g uint32, d []byte) error {
	s := &f.sb
	var want, got uint16
	switch {
	case s.csum():
		c := crc32cU32(s.csumSeed, g)
		c = crc32c(c, d[:30])
		c = crc32c(c, zero4[:2])
		c = crc32c(c, d[32:])
		want, got = le.Uint16(d[30:]), uint16(c)
	case s.rocompat&rocompatGdtCsum != 0:
		var gb [4]byte
		le.PutUint32(gb[:], g)
		c := crc16(0xffff, s.uuid[:])
		c = crc16(c, gb[:])
		c = crc16(c, d[:30])
		if s.s64() {
			c = crc16(c, d[32:])
		}
		want, got = le.Uint16(d[30:]), c
	default:
		return nil
	}
	if want != got {
		return corrupt("group %d descriptor checksum %#04x, computed %#04x", g, want, got)
	}
	return nil
}
