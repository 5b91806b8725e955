package xfs

import (
	"io/fs"
	"slices"
	"time"
)

// Fork formats (di_format, di_aformat).
const (
	fmtDev     = 0
	fmtLocal   = 1
	fmtExtents = 2
	fmtBtree   = 3
)

// Inode flags.
const (
	diflagRealtime  = 0x1
	diflag2Bigtime  = 1 << 3
	diflag2Nrext64  = 1 << 4
	bigtimeEpochSec = 1 << 31 // bigtime counts from -2^31 s
)

// dinode is a decoded inode core with its forks' raw bytes.
type dinode struct {
	ino       uint64
	mode      uint16
	format    byte
	aformat   byte
	uid, gid  uint32
	nlink     uint32
	size      int64
	nblocks   uint64
	atime     time.Time
	mtime     time.Time
	ctime     time.Time
	btime     time.Time
	flags     uint16
	nextents  uint64
	anextents uint64
	rdev      uint32
	dfork     []byte // data fork area
	afork     []byte // attribute fork area, nil when there is none
}

// Unix file types (the S_IFMT bits of di_mode).
const (
	sIFMT   = 0o170000
	sIFSOCK = 0o140000
	sIFLNK  = 0o120000
	sIFREG  = 0o100000
	sIFBLK  = 0o060000
	sIFDIR  = 0o040000
	sIFCHR  = 0o020000
	sIFIFO  = 0o010000
)

func (n *dinode) isDir() bool  { return n.mode&sIFMT == sIFDIR }
func (n *dinode) isLink() bool { return n.mode&sIFMT == sIFLNK }
func (n *dinode) isReg() bool  { return n.mode&sIFMT == sIFREG }

// fileMode converts di_mode to an fs.FileMode.
func (n *dinode) fileMode() fs.FileMode {
	m := fs.FileMode(n.mode & 0o777)
	switch n.mode & sIFMT {
	case sIFDIR:
		m |= fs.ModeDir
	case sIFLNK:
		m |= fs.ModeSymlink
	case sIFBLK:
		m |= fs.ModeDevice
	case sIFCHR:
		m |= fs.ModeDevice | fs.ModeCharDevice
	case sIFIFO:
		m |= fs.ModeNamedPipe
	case sIFSOCK:
		m |= fs.ModeSocket
	}
	if n.mode&0o4000 != 0 {
		m |= fs.ModeSetuid
	}
	if n.mode&0o2000 != 0 {
		m |= fs.ModeSetgid
	}
	if n.mode&0o1000 != 0 {
		m |= fs.ModeSticky
	}
	return m
}

// inodeOff checks an inode number and returns its byte offset.
func (f *FS) inodeOff(ino uint64) (int64, error) {
	agShift := f.agBlkLog + f.inoPBLog
	ag := ino >> agShift
	agb := ino >> f.inoPBLog & (1<<f.agBlkLog - 1)
	if ino>>agShift>>32 != 0 || ag >= f.agCount || agb >= f.agBlocks {
		return 0, corrupt("inode %d out of range", ino)
	}
	off, err := f.blockOff(ag<<f.agBlkLog|agb, 1)
	if err != nil {
		return 0, corrupt("inode %d out of range", ino)
	}
	return off + int64(ino&(1<<f.inoPBLog-1))*f.inodeSize, nil
}

// inode reads inode ino through the bounded cache.
func (f *FS) inode(ino uint64) (*dinode, error) {
	f.mu.Lock()
	n, ok := f.inodes[ino]
	f.mu.Unlock()
	if ok {
		return n, nil
	}
	n, err := f.readInode(ino)
	if err != nil {
		return nil, err
	}
	f.mu.Lock()
	if len(f.inodes) >= maxInodeCache {
		for k := range f.inodes {
			delete(f.inodes, k)
			if len(f.inodes) < maxInodeCache*3/4 {
				break
			}
		}
	}
	f.inodes[ino] = n
	f.mu.Unlock()
	return n, nil
}

// inodeChunk is the unit in which inodes are read: the inodes allocated
// together (64 at a time) lie together, so a walk of a directory reads
// each chunk once rather than each inode.
const (
	inodeChunk     = 16 << 10
	maxInodeChunks = 64
)

// inodeBytes returns a copy of the inode at byte off, reading the
// 16 KiB around it through a small cache.
func (f *FS) inodeBytes(off int64) ([]byte, error) {
	ci := off / inodeChunk
	f.mu.Lock()
	c, ok := f.chunks[ci]
	f.mu.Unlock()
	if !ok {
		n := min(inodeChunk, f.size-ci*inodeChunk)
		c = make([]byte, n)
		if err := readFull(f.r, c, ci*inodeChunk); err != nil {
			return nil, err
		}
		f.mu.Lock()
		if len(f.chunks) >= maxInodeChunks {
			for k := range f.chunks {
				delete(f.chunks, k)
				break
			}
		}
		f.chunks[ci] = c
		f.mu.Unlock()
	}
	o := off % inodeChunk
	if o+f.inodeSize > int64(len(c)) {
		return nil, corrupt("inode at byte %d past the end of the volume", off)
	}
	return append([]byte(nil), c[o:o+f.inodeSize]...), nil
}

func (f *FS) readInode(ino uint64) (*dinode, error) {
	off, err := f.inodeOff(ino)
	if err != nil {
		return nil, err
	}
	b, err := f.inodeBytes(off)
	if err != nil {
		return nil, err
	}
	if b[0] != 'I' || b[1] != 'N' {
		return nil, corrupt("inode %d: bad magic %q", ino, b[:2])
	}
	n := &dinode{ino: ino, mode: be.Uint16(b[2:]), format: b[5], uid: be.Uint32(b[8:]), gid: be.Uint32(b[12:])}
	version := b[4]
	core := 100
	switch {
	case version == 3 && f.version == 5:
		core = 176
		if got, want := crcOf(b, 100), le32(b[100:]); got != want {
			return nil, corrupt("inode %d: CRC %#x, want %#x", ino, got, want)
		}
		if be.Uint64(b[152:]) != ino {
			return nil, corrupt("inode %d records number %d", ino, be.Uint64(b[152:]))
		}
	case version == 1 || version == 2 && f.version == 4:
	default:
		return nil, corrupt("inode %d: version %d in a version %d filesystem", ino, version, f.version)
	}
	if version == 1 {
		n.nlink = uint32(be.Uint16(b[6:]))
	} else {
		n.nlink = be.Uint32(b[16:])
	}
	var flags2 uint64
	if version == 3 {
		flags2 = be.Uint64(b[120:])
	}
	big := flags2&diflag2Bigtime != 0
	n.atime = timestamp(b[32:], big)
	n.mtime = timestamp(b[40:], big)
	n.ctime = timestamp(b[48:], big)
	if version == 3 {
		n.btime = timestamp(b[144:], big)
	}
	size := be.Uint64(b[56:])
	if size > 1<<63-1 {
		return nil, corrupt("inode %d: size %d", ino, size)
	}
	n.size = int64(size)
	n.nblocks = be.Uint64(b[64:])
	if flags2&diflag2Nrext64 != 0 {
		n.nextents = be.Uint64(b[24:])
		n.anextents = uint64(be.Uint32(b[76:]))
	} else {
		n.nextents = uint64(be.Uint32(b[76:]))
		n.anextents = uint64(be.Uint16(b[80:]))
	}
	forkOff := int(b[82]) * 8
	n.aformat = b[83]
	n.flags = be.Uint16(b[90:])
	lit := b[core:]
	switch {
	case forkOff == 0:
		n.dfork = lit
	case forkOff >= len(lit):
		return nil, corrupt("inode %d: attribute fork offset %d past the inode", ino, forkOff)
	default:
		n.dfork, n.afork = lit[:forkOff], lit[forkOff:]
	}
	if n.flags&diflagRealtime != 0 && n.isReg() {
		return nil, notSupported("inode %d: realtime file", ino)
	}
	switch n.mode & sIFMT {
	case sIFCHR, sIFBLK:
		if n.format != fmtDev || len(n.dfork) < 4 {
			return nil, corrupt("inode %d: device node in fork format %d", ino, n.format)
		}
		n.rdev = be.Uint32(n.dfork)
	case sIFIFO, sIFSOCK:
	case sIFREG, sIFDIR, sIFLNK:
		if n.format != fmtLocal && n.format != fmtExtents && n.format != fmtBtree {
			return nil, corrupt("inode %d: data fork format %d", ino, n.format)
		}
		if n.format == fmtLocal && n.size > int64(len(n.dfork)) {
			return nil, corrupt("inode %d: %d bytes inline in a fork of %d", ino, n.size, len(n.dfork))
		}
		if n.format == fmtLocal && n.isReg() && n.size > 0 {
			return nil, corrupt("inode %d: regular file with inline data", ino)
		}
	default:
		return nil, corrupt("inode %d: file type %#o", ino, n.mode&sIFMT)
	}
	return n, nil
}

// timestamp decodes an inode time: seconds and nanoseconds (signed 32-bit
// seconds since 1970), or with bigtime nanoseconds since -2^31 s.
func timestamp(b []byte, big bool) time.Time {
	if big {
		ns := be.Uint64(b)
		return time.Unix(int64(ns/1e9)-bigtimeEpochSec, int64(ns%1e9)).UTC()
	}
	sec := int32(be.Uint32(b))
	nsec := be.Uint32(b[4:])
	if nsec >= 1e9 {
		nsec = 0
	}
	return time.Unix(int64(sec), int64(nsec)).UTC()
}

// extent maps count blocks of a fork from file block off to filesystem
// block start; unwritten extents read as zeros.
type extent struct {
	off, start, count uint64
	unwritten         bool
}

// decodeExtent unpacks a 16-byte extent record.
func decodeExtent(b []byte) extent {
	hi, lo := be.Uint64(b), be.Uint64(b[8:])
	return extent{
		unwritten: hi>>63 != 0,
		off:       hi >> 9 & (1<<54 - 1),
		start:     (hi&0x1ff)<<43 | lo>>21,
		count:     lo & (1<<21 - 1),
	}
}

// extents returns the extent list of a fork (data or attribute), sorted
// and checked: extents do not overlap and lie inside the filesystem.
func (f *FS) extents(n *dinode, attr bool) ([]extent, error) {
	format, fork, count := n.format, n.dfork, n.nextents
	if attr {
		format, fork, count = n.aformat, n.afork, n.anextents
	}
	if count > maxExtents || count > f.dblocks {
		return nil, corrupt("inode %d: %d extents", n.ino, count)
	}
	var es []extent
	switch format {
	case fmtExtents:
		if count*16 > uint64(len(fork)) {
			return nil, corrupt("inode %d: %d extents do not fit in the inode", n.ino, count)
		}
		es = make([]extent, 0, count)
		for i := range int(count) {
			es = append(es, decodeExtent(fork[i*16:]))
		}
	case fmtBtree:
		var err error
		if es, err = f.bmbt(n, fork, count); err != nil {
			return nil, err
		}
	default:
		return nil, corrupt("inode %d: fork format %d has no extents", n.ino, format)
	}
	var end uint64
	for i, e := range es {
		if e.count == 0 {
			return nil, corrupt("inode %d: empty extent", n.ino)
		}
		if i > 0 && e.off < end {
			return nil, corrupt("inode %d: extents overlap or are out of order at block %d", n.ino, e.off)
		}
		if e.off+e.count > 1<<54 || e.off+e.count > uint64(1<<63-1)/uint64(f.blockSize) {
			return nil, corrupt("inode %d: extent past the largest offset", n.ino)
		}
		if _, err := f.blockOff(e.start, e.count); err != nil {
			return nil, corrupt("inode %d: extent at file block %d: %w", n.ino, e.off, err)
		}
		end = e.off + e.count
	}
	return es, nil
}

// bmbt reads the extents of a fork in btree format: the root in the
// inode, then long-format btree blocks, checked for magic, level and
// owner, bounded in depth and in records.
func (f *FS) bmbt(n *dinode, root []byte, count uint64) ([]extent, error) {
	if len(root) < 4 {
		return nil, corrupt("inode %d: btree root too small", n.ino)
	}
	level, nrecs := int(be.Uint16(root)), int(be.Uint16(root[2:]))
	maxr := (len(root) - 4) / 16
	if level == 0 || level > maxBtreeDepth || nrecs == 0 || nrecs > maxr {
		return nil, corrupt("inode %d: btree root of level %d with %d records", n.ino, level, nrecs)
	}
	ptrs := make([]uint64, nrecs)
	for i := range ptrs {
		ptrs[i] = be.Uint64(root[4+maxr*8+i*8:])
	}
	es := make([]extent, 0, min(count, 1<<16))
	hdr := 24
	magic := "BMAP"
	if f.version == 5 {
		hdr, magic = 72, "BMA3"
	}
	b := make([]byte, f.blockSize)
	blocks := 0
	var walk func(ptr uint64, level int) error
	walk = func(ptr uint64, level int) error {
		// A btree of count records has at most count leaves and fewer
		// nodes than leaves: more blocks mean blocks are shared or loop.
		if blocks++; uint64(blocks) > 2*count+maxBtreeDepth {
			return corrupt("inode %d: btree has more blocks than its %d extents need", n.ino, count)
		}
		off, err := f.blockOff(ptr, 1)
		if err != nil {
			return corrupt("inode %d: btree block: %w", n.ino, err)
		}
		if err := readFull(f.r, b, off); err != nil {
			return err
		}
		if string(b[:4]) != magic || int(be.Uint16(b[4:])) != level {
			return corrupt("inode %d: btree block %d: bad magic or level", n.ino, ptr)
		}
		if f.version == 5 && be.Uint64(b[56:]) != n.ino {
			return corrupt("inode %d: btree block %d owned by inode %d", n.ino, ptr, be.Uint64(b[56:]))
		}
		if f.version == 5 && crcOf(b, 64) != le32(b[64:]) {
			return corrupt("inode %d: btree block %d: bad CRC", n.ino, ptr)
		}
		nr := int(be.Uint16(b[6:]))
		if level == 0 {
			if nr == 0 || nr > (len(b)-hdr)/16 || uint64(len(es)+nr) > count {
				return corrupt("inode %d: btree leaf %d holds %d records", n.ino, ptr, nr)
			}
			for i := range nr {
				es = append(es, decodeExtent(b[hdr+i*16:]))
			}
			return nil
		}
		mr := (len(b) - hdr) / 16
		if nr == 0 || nr > mr {
			return corrupt("inode %d: btree node %d holds %d records", n.ino, ptr, nr)
		}
		children := make([]uint64, nr)
		for i := range children {
			children[i] = be.Uint64(b[hdr+mr*8+i*8:])
		}
		for _, c := range children {
			if err := walk(c, level-1); err != nil {
				return err
			}
		}
		return nil
	}
	for _, p := range ptrs {
		if err := walk(p, level-1); err != nil {
			return nil, err
		}
	}
	if uint64(len(es)) != count {
		return nil, corrupt("inode %d: btree holds %d extents, the inode says %d", n.ino, len(es), count)
	}
	return es, nil
}

// readFork reads len(p) bytes of a fork from byte off: holes and
// unwritten extents read as zeros, and each extent's part is one request.
func (f *FS) readFork(es []extent, p []byte, off int64) error {
	bs := f.blockSize
	for len(p) > 0 {
		blk := uint64(off / bs)
		i, _ := slices.BinarySearchFunc(es, blk, func(e extent, b uint64) int {
			switch {
			case e.off+e.count <= b:
				return -1
			case e.off > b:
				return 1
			}
			return 0
		})
		var k int64
		if i == len(es) || es[i].off > blk {
			// A hole up to the next extent.
			k = int64(len(p))
			if i < len(es) {
				k = min(k, int64(es[i].off)*bs-off)
			}
			clear(p[:k])
		} else {
			e := es[i]
			k = min(int64(len(p)), int64(e.off+e.count)*bs-off)
			if e.unwritten {
				clear(p[:k])
			} else {
				base, err := f.blockOff(e.start, e.count)
				if err != nil {
					return err
				}
				if err := readFull(f.r, p[:k], base+off-int64(e.off)*bs); err != nil {
					return err
				}
			}
		}
		p, off = p[k:], off+k
	}
	return nil
}
