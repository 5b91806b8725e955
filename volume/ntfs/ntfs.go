package ntfs

import (
	"container/list"
	"fmt"
	"io"
	"io/fs"
	"math/bits"
	"strings"
	"sync"
	"time"

	"github.com/vdisk-project/vdisk/disk"
	"github.com/vdisk-project/vdisk/volume/inode"
)

// Cache sizes.
const (
	cacheNodes   = 4096    // parsed MFT records
	cacheDirCost = 1 << 19 // directory entries kept across cached listings (about 50 MB)
	maxLinks     = 40      // symbolic links followed in one lookup
	maxLinkData  = 16 << 10
	maxXattr     = 64 << 20 // bytes of one alternate data stream returned by Xattrs
	bitmapChunk  = 1 << 20
)

// Reparse tags.
const (
	tagMountPoint = 0xa0000003
	tagSymlink    = 0xa000000c
	tagDedup      = 0x80000013
	tagWOF        = 0x80000017
)

// FS is a read-only NTFS volume. It is safe for concurrent use.
type FS struct {
	r           io.ReaderAt
	size        int64
	clusterSize int64
	clusters    int64
	recordSize  int64
	serial      uint64
	label       string
	mft         *stream

	nodes *lru[uint64, *node]
	dirs  *lru[uint64, *dirList]

	statMu sync.Mutex
	statfs *inode.Statfs // kept once computed
}

// node is what one file's MFT record (with its extension records) says.
type node struct {
	num       uint64
	seq       uint16
	dir       bool
	fileAttrs uint32
	btime     time.Time
	mtime     time.Time
	ctime     time.Time
	atime     time.Time
	nlink     uint32
	parents   []uint64 // the directories its (non-DOS) names are in

	data       *attr   // unnamed $DATA, nil when absent
	streams    []*attr // named $DATA (alternate data streams)
	indexRoot  *attr
	indexAlloc *attr
	reparseTag uint32
	link       bool   // a symbolic link or junction
	target     string // its target, slash-separated
}

// Open opens the NTFS volume held in the size bytes of r. It reads the
// boot sector, bootstraps $MFT from its own record and reads the label
// from $Volume. r must be safe for concurrent ReadAt calls.
func Open(r io.ReaderAt, size int64) (*FS, error) {
	f := &FS{
		r:     r,
		size:  size,
		nodes: newLRU[uint64, *node](cacheNodes),
		dirs:  newLRU[uint64, *dirList](cacheDirCost),
	}
	if err := f.boot(); err != nil {
		return nil, err
	}
	root, err := f.node(rootRecordNumber, 0)
	if err != nil {
		return nil, fmt.Errorf("ntfs: root directory: %w", err)
	}
	if !root.dir {
		return nil, disk.Errorf(disk.ErrCorrupt, "ntfs: root record is not a directory")
	}
	if err := f.readLabel(); err != nil {
		return nil, err
	}
	return f, nil
}

func (f *FS) boot() error {
	b := make([]byte, 512)
	if f.size < int64(len(b)) {
		return disk.Errorf(disk.ErrCorrupt, "ntfs: volume of %d bytes too small", f.size)
	}
	if err := f.readFull(b, 0); err != nil {
		return err
	}
	if string(b[3:11]) != "NTFS    " {
		return disk.Errorf(disk.ErrCorrupt, "ntfs: no NTFS boot sector")
	}
	bps := int64(le.Uint16(b[0x0b:]))
	if bps < 256 || bps > 4096 || bps&(bps-1) != 0 {
		return disk.Errorf(disk.ErrCorrupt, "ntfs: %d bytes per sector out of range", bps)
	}
	spc := int64(b[0x0d])
	if spc > 0x80 {
		if 256-spc > 12 {
			return disk.Errorf(disk.ErrCorrupt, "ntfs: sectors per cluster 0x%x out of range", b[0x0d])
		}
		spc = 1 << (256 - spc)
	}
	if spc == 0 || spc&(spc-1) != 0 || bps*spc > 2<<20 {
		return disk.Errorf(disk.ErrCorrupt, "ntfs: %d sectors per cluster out of range", spc)
	}
	f.clusterSize = bps * spc
	sectors := le.Uint64(b[0x28:])
	// A volume cut short (a truncated image) still opens: reads past its
	// end fail for the files concerned.
	if sectors == 0 || sectors > (1<<62)/uint64(bps) {
		return disk.Errorf(disk.ErrCorrupt, "ntfs: %d sectors out of range", sectors)
	}
	f.clusters = int64(sectors) / spc
	mftLCN := le.Uint64(b[0x30:])
	f.recordSize = sizeField(int8(b[0x40]), f.clusterSize)
	if f.recordSize < 1024 || f.recordSize > 64<<10 || f.recordSize&(f.recordSize-1) != 0 {
		return disk.Errorf(disk.ErrCorrupt, "ntfs: mft record size %d out of range", f.recordSize)
	}
	if mftLCN >= uint64(f.clusters) || int64(mftLCN)*f.clusterSize+f.recordSize > f.size {
		return disk.Errorf(disk.ErrCorrupt, "ntfs: $MFT at cluster %d past the end of the volume", mftLCN)
	}
	f.serial = le.Uint64(b[0x48:])

	// $MFT's first record maps $MFT; with an attribute list it may need
	// records that record maps to find the rest.
	r, err := f.readRecord(mftRecordNumber, int64(mftLCN)*f.clusterSize)
	if err != nil {
		return err
	}
	as, err := f.recordAttrs(r, nil)
	if err != nil {
		return err
	}
	if as, err = mergeAttrs(as); err != nil {
		return err
	}
	if err := f.setMFT(as); err != nil {
		return err
	}
	if as, err = f.fileAttrs(r); err != nil {
		return err
	}
	return f.setMFT(as)
}

func (f *FS) setMFT(as []*attr) error {
	for _, a := range as {
		if a.typ == attrData && a.name == "" {
			if a.resident {
				return disk.Errorf(disk.ErrCorrupt, "ntfs: resident $MFT data")
			}
			if a.err != nil {
				return fmt.Errorf("ntfs: $MFT: %w", a.err)
			}
			if a.size < firstUserRecord*f.recordSize {
				return disk.Errorf(disk.ErrCorrupt, "ntfs: $MFT of %d bytes too small", a.size)
			}
			s, err := f.newStream(a)
			if err != nil {
				return fmt.Errorf("ntfs: $MFT: %w", err)
			}
			// Only the part the runlist maps is readable yet, and $MFT
			// is never larger than the volume.
			s.size = min(s.size, (a.lastVCN+1)*f.clusterSize, f.size)
			f.mft = s
			return nil
		}
	}
	return disk.Errorf(disk.ErrCorrupt, "ntfs: $MFT has no data attribute")
}

// sizeField decodes a boot sector size given in clusters, or when
// negative as a power of two in bytes.
func sizeField(v int8, clusterSize int64) int64 {
	if v < 0 {
		if v < -30 {
			return 0
		}
		return 1 << -v
	}
	return int64(v) * clusterSize
}

func (f *FS) readLabel() error {
	r, err := f.readRecord(3, -1)
	if err != nil {
		return fmt.Errorf("ntfs: $Volume: %w", err)
	}
	as, err := f.recordAttrs(r, nil)
	if err != nil {
		return fmt.Errorf("ntfs: $Volume: %w", err)
	}
	for _, a := range as {
		if a.typ == attrVolumeName && a.resident {
			f.label = utf16String(a.value)
		}
	}
	return nil
}

// readFull reads len(b) bytes of the volume at off.
func (f *FS) readFull(b []byte, off int64) error {
	if off < 0 || off > f.size || int64(len(b)) > f.size-off {
		return disk.Errorf(disk.ErrCorrupt, "ntfs: %d bytes at %d past the end of the %d-byte volume", len(b), off, f.size)
	}
	n, err := f.r.ReadAt(b, off)
	if n == len(b) {
		return nil
	}
	if err == nil || err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return disk.Wrap(err, "ntfs: read", "", off)
}

// attrBytes returns an attribute's whole value, refusing one over limit.
func (f *FS) attrBytes(a *attr, limit int64) ([]byte, error) {
	if a.resident {
		return a.value, nil
	}
	if a.size > limit {
		return nil, disk.Errorf(disk.ErrCorrupt, "ntfs: attribute 0x%x of %d bytes larger than %d", a.typ, a.size, limit)
	}
	s, err := f.newStream(a)
	if err != nil {
		return nil, err
	}
	b := make([]byte, a.size)
	if err := s.readFull(b, 0); err != nil {
		return nil, err
	}
	return b, nil
}

// node loads file record num; seq, when not 0, must match its sequence
// number (a directory entry's reference).
func (f *FS) node(num uint64, seq uint16) (*node, error) {
	if n, ok := f.nodes.get(num); ok {
		if seq != 0 && n.seq != seq {
			return nil, disk.Errorf(disk.ErrCorrupt, "ntfs: stale reference to mft record %d (sequence %d, record has %d)", num, seq, n.seq)
		}
		return n, nil
	}
	r, err := f.readRecord(num, -1)
	if err != nil {
		return nil, err
	}
	switch {
	case r.flags&recordInUse == 0:
		return nil, disk.Errorf(disk.ErrCorrupt, "ntfs: mft record %d is not in use", num)
	case r.base != 0:
		return nil, disk.Errorf(disk.ErrCorrupt, "ntfs: mft record %d is an extension of %d", num, r.base)
	case seq != 0 && r.seq != seq:
		return nil, disk.Errorf(disk.ErrCorrupt, "ntfs: stale reference to mft record %d (sequence %d, record has %d)", num, seq, r.seq)
	}
	as, err := f.fileAttrs(r)
	if err != nil {
		return nil, err
	}
	n := &node{num: num, seq: r.seq, dir: r.flags&recordDirectory != 0}
	for _, a := range as {
		switch {
		case a.typ == attrStandardInformation && a.resident:
			if v := a.value; len(v) >= 0x24 {
				n.btime = filetime(le.Uint64(v))
				n.mtime = filetime(le.Uint64(v[8:]))
				n.ctime = filetime(le.Uint64(v[16:]))
				n.atime = filetime(le.Uint64(v[24:]))
				n.fileAttrs = le.Uint32(v[0x20:])
			}
		case a.typ == attrFileName && a.resident:
			if len(a.value) > 0x41 && a.value[0x41] != namespaceDOS {
				n.nlink++
				n.parents = append(n.parents, le.Uint64(a.value)&(1<<48-1))
			}
		case a.typ == attrData && a.name == "":
			n.data = a
		case a.typ == attrData:
			n.streams = append(n.streams, a)
		case a.typ == attrIndexRoot && a.name == "$I30" && a.resident:
			n.indexRoot = a
		case a.typ == attrIndexAllocation && a.name == "$I30":
			n.indexAlloc = a
		case a.typ == attrReparsePoint:
			v, err := f.attrBytes(a, maxLinkData)
			if err != nil {
				return nil, fmt.Errorf("ntfs: mft record %d: reparse point: %w", num, err)
			}
			if err := n.reparse(v); err != nil {
				return nil, fmt.Errorf("ntfs: mft record %d: %w", num, err)
			}
		}
	}
	if n.nlink == 0 {
		n.nlink = 1
	}
	if n.dir && n.indexRoot == nil {
		return nil, disk.Errorf(disk.ErrCorrupt, "ntfs: directory record %d has no $I30 index", num)
	}
	if !n.dir && !n.link && n.fileAttrs&fileSystem != 0 && n.data != nil && n.data.size >= 8 && n.data.size <= maxLinkData {
		if err := f.interix(n); err != nil {
			return nil, fmt.Errorf("ntfs: mft record %d: %w", num, err)
		}
	}
	f.nodes.add(num, n, 1)
	return n, nil
}

// reparse reads a reparse point: symbolic links and junctions (mount
// points) become links; other tags are kept for Open to judge.
func (n *node) reparse(v []byte) error {
	if len(v) < 8 {
		return disk.Errorf(disk.ErrCorrupt, "reparse point of %d bytes too short", len(v))
	}
	n.reparseTag = le.Uint32(v)
	data := v[8:]
	if dl := int(le.Uint16(v[4:])); dl < len(data) {
		data = data[:dl]
	}
	var buf []byte
	relative := false
	switch n.reparseTag {
	case tagSymlink:
		if len(data) < 12 {
			return disk.Errorf(disk.ErrCorrupt, "symbolic link reparse data too short")
		}
		relative = le.Uint32(data[8:])&1 != 0
		buf = data[12:]
	case tagMountPoint:
		if len(data) < 8 {
			return disk.Errorf(disk.ErrCorrupt, "junction reparse data too short")
		}
		buf = data[8:]
	default:
		return nil
	}
	subOff, subLen := int(le.Uint16(data)), int(le.Uint16(data[2:]))
	printOff, printLen := int(le.Uint16(data[4:])), int(le.Uint16(data[6:]))
	off, l := subOff, subLen
	if l == 0 {
		off, l = printOff, printLen
	}
	if off+l > len(buf) {
		return disk.Errorf(disk.ErrCorrupt, "reparse target past the reparse data")
	}
	n.link = true
	n.target = windowsTarget(utf16String(buf[off:off+l]), relative)
	return nil
}

// windowsTarget turns a Windows link target into a slash path: a relative
// one keeps its form, an absolute one ("\??\C:\dir", "C:\dir") is taken
// relative to this volume's root, since which volume a drive letter names
// is not known here.
func windowsTarget(t string, relative bool) string {
	t = strings.ReplaceAll(t, `\`, "/")
	if relative {
		return t
	}
	t = strings.TrimPrefix(t, "/??/")
	if len(t) >= 2 && t[1] == ':' {
		t = t[2:]
	}
	if !strings.HasPrefix(t, "/") {
		t = "/" + t
	}
	return t
}

// interix recognises the symbolic links ntfs-3g (and Interix/SFU) write:
// a system file whose data is "IntxLNK\x01" and the UTF-16 target.
func (f *FS) interix(n *node) error {
	s, err := f.newStream(n.data)
	if err != nil {
		return nil // read errors show when the file is opened
	}
	b := make([]byte, n.data.size)
	if err := s.readFull(b, 0); err != nil {
		return err
	}
	if string(b[:8]) == "IntxLNK\x01" {
		n.link = true
		n.target = utf16String(b[8:])
	}
	return nil
}

func (n *node) mode() fs.FileMode {
	switch {
	case n.link:
		return fs.ModeSymlink | 0o777
	case n.dir:
		return fs.ModeDir | 0o777
	case n.fileAttrs&fileReadOnly != 0:
		return 0o555
	}
	return 0o777
}

func (f *FS) stat(n *node) *inode.Stat {
	st := &inode.Stat{
		Ino:   n.num,
		Mode:  n.mode(),
		Nlink: n.nlink,
		Btime: n.btime,
		Mtime: n.mtime,
		Ctime: n.ctime,
		Atime: n.atime,
	}
	switch {
	case n.link:
		st.Target = n.target
		st.Size = int64(len(n.target))
	case n.dir:
		if n.indexAlloc != nil {
			st.Blocks = n.indexAlloc.allocated(f.clusterSize)
		}
	case n.data != nil:
		st.Size = n.data.size
		if !n.data.resident {
			st.Blocks = n.data.allocated(f.clusterSize)
		}
	}
	return st
}

// Type returns "ntfs".
func (f *FS) Type() string { return "ntfs" }

// Label returns the volume name from $Volume.
func (f *FS) Label() string { return f.label }

// UUID returns the volume serial number as blkid prints it: 16 upper-case
// hexadecimal digits.
func (f *FS) UUID() string { return fmt.Sprintf("%016X", f.serial) }

// Statfs reports the volume's size and the clusters $Bitmap marks free;
// inodes are $MFT's records and those its $BITMAP marks free.
func (f *FS) Statfs() (inode.Statfs, error) {
	f.statMu.Lock()
	defer f.statMu.Unlock()
	if f.statfs != nil {
		return *f.statfs, nil
	}
	st, err := f.computeStatfs()
	if err == nil {
		f.statfs = &st
	}
	return st, err
}

func (f *FS) computeStatfs() (inode.Statfs, error) {
	st := inode.Statfs{BlockSize: f.clusterSize, TotalBytes: f.clusters * f.clusterSize}
	bm, err := f.node(6, 0)
	if err != nil {
		return st, fmt.Errorf("ntfs: $Bitmap: %w", err)
	}
	if bm.data == nil {
		return st, disk.Errorf(disk.ErrCorrupt, "ntfs: $Bitmap has no data")
	}
	used, err := f.countBits(bm.data, f.clusters)
	if err != nil {
		return st, fmt.Errorf("ntfs: $Bitmap: %w", err)
	}
	st.FreeBytes = (f.clusters - used) * f.clusterSize
	records := f.mft.size / f.recordSize
	st.TotalInodes = records
	r, err := f.readRecord(mftRecordNumber, -1)
	if err != nil {
		return st, err
	}
	as, err := f.fileAttrs(r)
	if err != nil {
		return st, err
	}
	for _, a := range as {
		if a.typ == attrBitmap && a.name == "" {
			used, err := f.countBits(a, records)
			if err != nil {
				return st, fmt.Errorf("ntfs: $MFT bitmap: %w", err)
			}
			st.FreeInodes = records - used
		}
	}
	return st, nil
}

// countBits counts the set bits among the first n bits of a bitmap
// attribute, reading it in bounded chunks.
func (f *FS) countBits(a *attr, n int64) (int64, error) {
	s, err := f.newStream(a)
	if err != nil {
		return 0, err
	}
	if s.size*8 < n {
		return 0, disk.Errorf(disk.ErrCorrupt, "ntfs: bitmap of %d bytes covers less than %d bits", s.size, n)
	}
	buf := make([]byte, min(bitmapChunk, (n+7)/8))
	var set int64
	for off := int64(0); off*8 < n; off += int64(len(buf)) {
		b := buf[:min(int64(len(buf)), (n+7)/8-off)]
		if err := s.readFull(b, off); err != nil {
			return 0, err
		}
		if rest := n - off*8; rest < int64(len(b))*8 {
			b[len(b)-1] &= byte(1<<(rest%8) - 1)
		}
		for _, c := range b {
			set += int64(bits.OnesCount8(c))
		}
	}
	return set, nil
}

// lru is a small cost-bounded least-recently-used cache, safe for
// concurrent use.
type lru[K comparable, V any] struct {
	mu    sync.Mutex
	limit int
	cost  int
	ll    *list.List
	items map[K]*list.Element
}

type lruItem[K comparable, V any] struct {
	k    K
	v    V
	cost int
}

func newLRU[K comparable, V any](limit int) *lru[K, V] {
	return &lru[K, V]{limit: limit, ll: list.New(), items: map[K]*list.Element{}}
}

func (c *lru[K, V]) get(k K) (V, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.items[k]; ok {
		c.ll.MoveToFront(e)
		return e.Value.(*lruItem[K, V]).v, true
	}
	var zero V
	return zero, false
}

func (c *lru[K, V]) add(k K, v V, cost int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.items[k]; ok {
		c.cost -= e.Value.(*lruItem[K, V]).cost
		c.ll.Remove(e)
	}
	c.items[k] = c.ll.PushFront(&lruItem[K, V]{k, v, cost})
	c.cost += cost
	for c.cost > c.limit && c.ll.Len() > 1 {
		e := c.ll.Back()
		it := e.Value.(*lruItem[K, V])
		c.ll.Remove(e)
		delete(c.items, it.k)
		c.cost -= it.cost
	}
}
