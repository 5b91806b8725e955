package vmdk

import (
	"encoding/binary"
	"io"
	"maps"
	"math/bits"
	"path/filepath"
	"slices"
	"sync"

	"github.com/vdisk-project/vdisk/disk"
)

// SEsparse extents (§5.3), the delta format of VMFS6 and of disks of 2 TiB
// and more: a constant header, a volatile header, a journal, a grain
// directory of u64 entries, grain tables of u64 entries typed by their top
// nibble, a free bitmap, a back map and the grains (4 KiB).
//
// VMware documents none of it beyond what qemu reads; doc.go ("SEsparse
// written by vdisk") says what vdisk writes and why a crash at any point
// leaves an image that opens and holds every flushed write. In short:
//
//   - Sections are laid out once, at creation, for a reserved capacity
//     (up to 16 times the capacity, at most 64 TiB): the grain table
//     section has a slot for every table, the free bitmap one bit and the
//     back map one u64 per grain of the reserved capacity; all of them
//     start as holes. The grains come last; grains_size is the high-water
//     mark of grains in use or freed.
//   - A flush writes, in order: new grain data (already written), the
//     free bitmap and back map pages, both headers; sync; the grain
//     tables; sync; the grain directory sectors that name new tables;
//     sync. A grain is thus durable before the table entry naming it, a
//     table before the directory entry naming it, and the high-water mark
//     before either.
//   - A grain freed by trim or zero is reused only after the table entry
//     that stopped naming it is durable, and only then is its free bit set
//     (in memory, written by the next flush). A set free bit on disk always
//     means "no durable table names this grain"; a crash at worst leaks
//     grains, which check -r leaks reclaims.
//   - The journal is never used: its header is zeros and replay_journal
//     stays 0, as qemu requires.

const (
	seConstMagic    = 0x00000000CAFEBABE
	seVolatileMagic = 0x00000000CAFECAFE
	seVersion       = 0x0000000200000001
	seGrainSectors  = 8
	seGTSectors     = 64
	seGTEntries     = seGTSectors * disk.SectorSize / 8 // 4096
	seMaxCapacity   = 1 << 37                           // sectors (64 TiB)
	seGTCache       = 1024                              // tables kept, 32 MiB
	seGDEAllocated  = 0x10000000 << 32
	seAlign         = 8    // sectors: sections start on 4 KiB (page) boundaries
	sePageSize      = 4096 // bytes of free bitmap or back map cached at once
	seMaxDirtyPages = 2048 // 8 MiB of dirty pages force a write-back
	seMaxFreeList   = 1 << 20
	seGrowReserve   = 16 // times the capacity reserved for growth
)

// GT entry types (top nibble).
const (
	seUnmapped = 1 << 60
	seZero     = 2 << 60
	seData     = 3 << 60
	seBackmap  = 1 << 60 // back map entry: in use, low bits the virtual grain
)

type seHeader struct {
	capacity                   uint64
	volatileOff, volatileSize  uint64
	journalOff, journalSize    uint64 // the journal header
	jOff, jSize                uint64 // the journal
	gdOff, gdSize              uint64
	gtOff, gtSize              uint64
	freeBitmapOff, freeBitmapN uint64
	backmapOff, backmapSize    uint64
	grainsOff, grainsSize      uint64
}

func (h *seHeader) marshal() []byte {
	b := make([]byte, disk.SectorSize)
	le := binary.LittleEndian
	for i, v := range []uint64{seConstMagic, seVersion, h.capacity, seGrainSectors, seGTSectors} {
		le.PutUint64(b[i*8:], v)
	}
	for i, v := range []uint64{h.volatileOff, h.volatileSize, h.journalOff, h.journalSize, h.jOff, h.jSize,
		h.gdOff, h.gdSize, h.gtOff, h.gtSize, h.freeBitmapOff, h.freeBitmapN, h.backmapOff, h.backmapSize,
		h.grainsOff, h.grainsSize} {
		le.PutUint64(b[80+i*8:], v)
	}
	return b
}

// reservedGrains is the number of grains the free bitmap and back map
// have room for.
func (h *seHeader) reservedGrains() uint64 {
	return min(h.freeBitmapN*disk.SectorSize*8, h.backmapSize*disk.SectorSize/8, h.gtSize/seGTSectors*seGTEntries)
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
		capacity: u(16), volatileOff: u(80), volatileSize: u(88), journalOff: u(96), journalSize: u(104),
		jOff: u(112), jSize: u(120), gdOff: u(128), gdSize: u(136), gtOff: u(144), gtSize: u(152),
		freeBitmapOff: u(160), freeBitmapN: u(168), backmapOff: u(176), backmapSize: u(184),
		grainsOff: u(192), grainsSize: u(200),
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
	if h.grainsOff > 1<<50 || h.grainsSize > 1<<50 {
		return bad("grain section at sector %d+%d out of range", h.grainsOff, h.grainsSize)
	}
	return h, nil
}

// errSEFull: every grain the maps have room for is in use or waits for a
// flush to be reused.
var errSEFull = disk.Errorf(disk.ErrNoSpace, "vmdk: SEsparse grain section full")

// seDir is a grain directory held by its allocated entries only, so that
// memory and scans follow the tables in use, not the capacity (a 64 TiB
// extent has 4 Mi entries).
type seDir struct {
	n   uint64            // entries
	m   map[uint64]uint64 // allocated entries
	idx []uint64          // their indexes, sorted
}

func (d *seDir) get(i uint64) uint64 { return d.m[i] }

func (d *seDir) set(i, v uint64) {
	if d.m == nil {
		d.m = map[uint64]uint64{}
	}
	if _, ok := d.m[i]; !ok {
		j, _ := slices.BinarySearch(d.idx, i)
		d.idx = slices.Insert(d.idx, j, i)
	}
	d.m[i] = v
}

// next returns the first allocated index at or after i, or d.n.
func (d *seDir) next(i uint64) uint64 {
	j, _ := slices.BinarySearch(d.idx, i)
	if j == len(d.idx) {
		return d.n
	}
	return d.idx[j]
}

type seTable struct {
	e      []uint64
	nz     [seGTEntries / 64]uint64 // bit j set: e[j] != 0
	dirty  bool
	pinned bool // being written back: not evictable
}

// set sets entry j.
func (t *seTable) set(j, v uint64) {
	t.e[j] = v
	if v != 0 {
		t.nz[j/64] |= 1 << (j % 64)
	} else {
		t.nz[j/64] &^= 1 << (j % 64)
	}
}

// nextSet returns the first entry at or after j that is not 0
// (unallocated), or seGTEntries: walks skip the unallocated entries of a
// table 64 at a time, so a scan costs what the table holds.
func (t *seTable) nextSet(j uint64) uint64 {
	for w := j / 64; w < uint64(len(t.nz)); w++ {
		x := t.nz[w]
		if w == j/64 {
			x &^= 1<<(j%64) - 1
		}
		if x != 0 {
			return w*64 + uint64(bits.TrailingZeros64(x))
		}
	}
	return seGTEntries
}

type sePage struct {
	b     []byte
	dirty bool
}

type seSparseExtent struct {
	f    disk.File
	name string
	ro   bool
	// writable: the free bitmap, back map and grain table sections are
	// laid out as vdisk writes them (else the extent opens read-only).
	h seHeader

	mu       sync.Mutex
	gd       seDir               // grain directory entries for the capacity
	cache    map[uint64]*seTable // GD index -> table
	gdDirty  map[uint64]bool     // GD indices whose entry changed
	freeGT   uint64              // next grain table slot
	nDirty   int                 // dirty tables in cache
	pendFree []uint64            // grains freed in memory, reusable after a write-back

	amu      sync.Mutex         // allocation state; taken after mu, never before
	hw       uint64             // grains in use or freed (grains_size / 8)
	free     []uint64           // grains known free on disk, reusable now
	scanned  uint64             // free bitmap scanned up to this grain
	bitmap   map[uint64]*sePage // free bitmap pages
	backmap  map[uint64]*sePage // back map pages
	hdrDirty bool
	txn      uint64

	stripes [allocStripes]sync.Mutex

	budget *seBudget // shared by the extents of one disk; nil: none

	commit groupCommit // serializes write-back (see groupCommit)
}

// openSESparse opens an SEsparse extent.
func openSESparse(f disk.File, path string, size int64, ro bool) (*seSparseExtent, error) {
	return openSESparseWarm(f, path, size, ro, nil, nil)
}

// openSESparseWarm opens an SEsparse extent whose tables count against
// budget. warm, when not nil, is the same file open elsewhere and no
// longer written (OpenOptions.Warm): a read-only extent takes its grain
// directory and clean tables instead of reading them.
func openSESparseWarm(f disk.File, path string, size int64, ro bool, budget *seBudget, warm *seSparseExtent) (*seSparseExtent, error) {
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
	e := &seSparseExtent{f: f, name: path, h: h, ro: ro, cache: make(map[uint64]*seTable), gdDirty: map[uint64]bool{},
		bitmap: map[uint64]*sePage{}, backmap: map[uint64]*sePage{}, freeGT: le.Uint64(b[8:]), txn: le.Uint64(b[16:]),
		hw: h.grainsSize / seGrainSectors, budget: budget}
	if !ro || warm == nil || !e.seedFrom(warm) {
		if err := e.loadGD(0, divRoundUp(h.capacity, seGrainSectors*seGTEntries)); err != nil {
			return nil, err
		}
	}
	for _, v := range e.gd.m {
		e.freeGT = max(e.freeGT, v&0xffffffff+1)
	}
	if !ro {
		if err := e.checkWritable(size); err != nil {
			return nil, err
		}
		if err := e.scanFree(); err != nil {
			return nil, err
		}
	}
	return e, nil
}

// seedFrom takes the grain directory and the tables of src, the same
// file open for writing elsewhere, when src holds nothing unwritten and
// describes the same sections as the header e read from the file. The
// tables' entries are shared, not copied: src gets no more writes (the
// caller's promise, OpenOptions.Warm) and e never writes them. It reports
// whether it took them.
func (e *seSparseExtent) seedFrom(src *seSparseExtent) bool {
	src.mu.Lock()
	defer src.mu.Unlock()
	src.amu.Lock()
	same := src.hw == e.hw && src.h.capacity == e.h.capacity && src.h.gdOff == e.h.gdOff && src.h.gtOff == e.h.gtOff && src.h.gtSize == e.h.gtSize
	src.amu.Unlock()
	if !same || len(src.gdDirty) > 0 || src.nDirty > 0 || src.gd.n != divRoundUp(e.h.capacity, seGrainSectors*seGTEntries) {
		return false
	}
	e.gd = seDir{n: src.gd.n, m: maps.Clone(src.gd.m), idx: slices.Clone(src.gd.idx)}
	for i, t := range src.cache {
		if t.dirty || t.pinned {
			continue
		}
		if e.budget.add(e, 1) {
			e.budget.add(e, -1)
			break
		}
		e.cache[i] = &seTable{e: t.e, nz: t.nz}
	}
	return true
}

// seExtent returns the SEsparse extent of file name open in d, or nil.
func (d *Disk) seExtent(name string) *seSparseExtent {
	if d == nil {
		return nil
	}
	for _, l := range d.links {
		for _, x := range l.extents {
			if se, ok := unwrapExtent(x).(*seSparseExtent); ok && filepath.Clean(se.name) == filepath.Clean(name) {
				return se
			}
		}
	}
	return nil
}

// loadGD reads grain directory entries from..n-1 into e.gd (holes of the
// file are skipped unread) and sets its size to n.
func (e *seSparseExtent) loadGD(from, n uint64) error {
	const chunk = 1 << 20
	var buf []byte
	base := int64(e.h.gdOff) * disk.SectorSize
	for i := from; i < n; {
		c := min(uint64(chunk/8), n-i)
		off := base + int64(i*8)
		if data, run, err := disk.FileRun(e.f, off, int64(c*8)); err == nil && run >= disk.SectorSize {
			if !data {
				i += uint64(run) / 8
				continue
			}
			c = min(c, uint64(run)/8) // read only the data run
		}
		if uint64(cap(buf)) < c*8 {
			buf = make([]byte, c*8)
		}
		b := buf[:c*8]
		if _, err := e.f.ReadAt(b, off); err != nil {
			return disk.Errorf(disk.ErrCorrupt, "vmdk: %s: cannot read SEsparse grain directory: %w", e.name, err)
		}
		for k := uint64(0); k < c; k += disk.SectorSize / 8 {
			sec := b[k*8 : min(c, k+disk.SectorSize/8)*8]
			if disk.IsZero(sec) {
				continue
			}
			for j := range uint64(len(sec) / 8) {
				if v := binary.LittleEndian.Uint64(sec[j*8:]); v != 0 {
					e.gd.set(i+k+j, v)
				}
			}
		}
		i += c
	}
	e.gd.n = n
	return nil
}

// checkWritable refuses to write an extent whose sections vdisk cannot
// keep consistent: every section must be in place and large enough for
// the capacity, and the grains must come last.
func (e *seSparseExtent) checkWritable(size int64) error {
	h := e.h
	no := func(what string) error {
		return disk.Errorf(disk.ErrNotSupported, "vmdk: %s: this SEsparse extent cannot be written (%s); open it read-only or convert it", e.name, what)
	}
	// Only the layout vdisk writes is written to: the maps of other
	// writers are not documented.
	want := seLayout(h.capacity, h.reservedGrains()*seGrainSectors)
	want.grainsSize = h.grainsSize
	switch {
	case h.reservedGrains() < divRoundUp(h.capacity, seGrainSectors) || h != want:
		return no("its sections are not laid out as vdisk lays them out")
	case e.hw > h.reservedGrains():
		return no("its grain section is larger than its maps")
	case e.freeGT > h.gtSize/seGTSectors:
		return no("the grain table section is full")
	}
	if uint64(size) < h.grainsOff*disk.SectorSize {
		return no("the file ends before the grains")
	}
	return nil
}

// scanFree collects reusable grains from the free bitmap, up to
// seMaxFreeList at a time.
func (e *seSparseExtent) scanFree() error {
	e.amu.Lock()
	defer e.amu.Unlock()
	return e.scanFreeLocked()
}

func (e *seSparseExtent) scanFreeLocked() error {
	const chunk = 1 << 20 // bytes of bitmap per read: 8M grains
	var buf []byte
	for e.scanned < e.hw && len(e.free) < seMaxFreeList {
		first := e.scanned / 8 * 8
		n := min(uint64(chunk), divRoundUp(e.hw-first, 8))
		off := int64(e.h.freeBitmapOff)*disk.SectorSize + int64(first/8)
		if uint64(cap(buf)) < n {
			buf = make([]byte, n)
		}
		b := buf[:n]
		if data, hole, err := disk.FileRun(e.f, off, int64(n)); err == nil && !data && hole > 0 {
			e.scanned = first + uint64(hole)*8
			continue
		}
		if err := e.readZeroPadded(b, off); err != nil {
			return err
		}
		e.overlayPages(b, first/8)
		for i, x := range b {
			for x != 0 && len(e.free) < seMaxFreeList {
				j := uint64(bits.TrailingZeros8(x))
				x &^= 1 << j
				if g := first + uint64(i)*8 + j; g >= e.scanned && g < e.hw {
					e.free = append(e.free, g)
				}
			}
			if len(e.free) >= seMaxFreeList {
				e.scanned = first + uint64(i+1)*8
				return nil
			}
		}
		e.scanned = first + n*8
	}
	return nil
}

// overlayPages replaces, in b (bitmap bytes from byte offset at), the
// bytes of cached pages, which may be newer than the file.
func (e *seSparseExtent) overlayPages(b []byte, at uint64) {
	for p, pg := range e.bitmap {
		lo, hi := p*sePageSize, (p+1)*sePageSize
		if hi <= at || lo >= at+uint64(len(b)) {
			continue
		}
		s, t := max(lo, at), min(hi, at+uint64(len(b)))
		copy(b[s-at:t-at], pg.b[s-lo:t-lo])
	}
}

func (e *seSparseExtent) readZeroPadded(b []byte, off int64) error {
	n, err := e.f.ReadAt(b, off)
	if err == io.EOF {
		clear(b[n:])
		return nil
	}
	if err != nil {
		return disk.Wrap(err, "vmdk: read", e.name, off)
	}
	return nil
}

func (e *seSparseExtent) size() int64 { return int64(e.h.capacity) * disk.SectorSize }

const seGrainBytes = seGrainSectors * disk.SectorSize

// seTableBufs holds the buffers grain tables are read into.
var seTableBufs = sync.Pool{New: func() any { return new([seGTEntries * 8]byte) }}

// table returns grain table i, or nil when unallocated. The caller holds
// e.mu; the lock is released while the table is read.
func (e *seSparseExtent) tableLocked(i uint64) (*seTable, error) {
	if i >= e.gd.n {
		return nil, disk.Errorf(disk.ErrCorrupt, "vmdk: %s: grain directory index %d out of range", e.name, i)
	}
	for {
		if t, ok := e.cache[i]; ok {
			return t, nil
		}
		gde := e.gd.get(i)
		if gde == 0 {
			return nil, nil
		}
		if gde>>32 != seGDEAllocated>>32 {
			return nil, disk.Errorf(disk.ErrCorrupt, "vmdk: %s: invalid SEsparse grain directory entry %d: %#x", e.name, i, gde)
		}
		idx := gde & 0xffffffff
		if (idx+1)*seGTSectors > e.h.gtSize {
			return nil, disk.Errorf(disk.ErrCorrupt, "vmdk: %s: SEsparse grain table %d lies outside its section", e.name, idx)
		}
		e.mu.Unlock()
		bp := seTableBufs.Get().(*[seGTEntries * 8]byte)
		b := bp[:]
		err := e.readZeroPadded(b, int64(e.h.gtOff+idx*seGTSectors)*disk.SectorSize)
		e.mu.Lock()
		if err != nil {
			seTableBufs.Put(bp)
			return nil, disk.Errorf(disk.ErrCorrupt, "vmdk: %s: cannot read SEsparse grain table %d: %w", e.name, idx, err)
		}
		if _, ok := e.cache[i]; ok || e.gd.get(i) != gde {
			seTableBufs.Put(bp)
			continue // loaded or changed meanwhile
		}
		t := &seTable{e: make([]uint64, seGTEntries)}
		for s := uint64(0); s < seGTEntries*8; s += disk.SectorSize {
			if disk.IsZero(b[s : s+disk.SectorSize]) {
				continue // most of a table is unallocated entries
			}
			for j := s / 8; j < (s+disk.SectorSize)/8; j++ {
				if v := binary.LittleEndian.Uint64(b[j*8:]); v != 0 {
					t.set(j, v)
				}
			}
		}
		seTableBufs.Put(bp)
		if over := e.budget.add(e, 1); over || len(e.cache) >= seGTCache {
			e.evictLocked()
		}
		e.cache[i] = t
		return t, nil
	}
}

// seBudget bounds the grain tables cached by the SEsparse extents of one
// open disk together (a 62 TiB disk has several extents per link and
// several links): max tables, 32 KiB each.
type seBudget struct {
	mu    sync.Mutex
	held  int
	max   int
	users []*seSparseExtent
}

// add accounts n tables (negative: dropped) cached by e and reports
// whether the budget is exceeded. A nil budget is never exceeded.
func (b *seBudget) add(e *seSparseExtent, n int) bool {
	if b == nil {
		return false
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if n > 0 && !slices.Contains(b.users, e) {
		b.users = append(b.users, e)
	}
	b.held += n
	return b.held > b.max
}

func (b *seBudget) others(e *seSparseExtent) []*seSparseExtent {
	if b == nil {
		return nil
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.DeleteFunc(slices.Clone(b.users), func(x *seSparseExtent) bool { return x == e })
}

// evictLocked drops clean tables until the extent's cache is under its own
// limit and the shared budget is kept: from this extent first, then from
// the disk's other SEsparse extents not busy right now. Dirty and pinned
// tables stay (they wait for a write-back). The caller holds e.mu.
func (e *seSparseExtent) evictLocked() {
	over := true
	for k, v := range e.cache {
		if v.dirty || v.pinned {
			continue
		}
		delete(e.cache, k)
		if over = e.budget.add(e, -1); !over && len(e.cache) < seGTCache {
			return
		}
	}
	if !over {
		return
	}
	for _, x := range e.budget.others(e) {
		if !x.mu.TryLock() { // lock order: never wait for another extent
			continue
		}
		for k, v := range x.cache {
			if v.dirty || v.pinned {
				continue
			}
			delete(x.cache, k)
			if over = x.budget.add(x, -1); !over {
				break
			}
		}
		x.mu.Unlock()
		if !over {
			return
		}
	}
}

// gte returns the grain table entry of grain g (0 when its table is
// unallocated).
func (e *seSparseExtent) gte(g uint64) (uint64, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	t, err := e.tableLocked(g / seGTEntries)
	if err != nil || t == nil {
		return 0, err
	}
	return t.e[g%seGTEntries], nil
}

// decode returns the state of entry v and, for data, its grain index.
func (e *seSparseExtent) decode(v uint64) (blockState, uint64, error) {
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
		if gi >= e.h.grainsSize/seGrainSectors && gi >= e.curHW() { // h.grainsSize: as opened
			return 0, 0, disk.Errorf(disk.ErrCorrupt, "vmdk: %s: SEsparse grain %d lies outside the grain section", e.name, gi)
		}
		return stateData, gi, nil
	}
	return 0, 0, disk.Errorf(disk.ErrCorrupt, "vmdk: %s: invalid SEsparse grain table entry %#x", e.name, v)
}

func (e *seSparseExtent) curHW() uint64 {
	if e.ro {
		return 0
	}
	e.amu.Lock()
	defer e.amu.Unlock()
	return e.hw
}

func encodeSEData(gi uint64) uint64 { return seData | (gi&0xfff)<<48 | gi>>12 }

func (e *seSparseExtent) grainPos(gi uint64) int64 {
	return int64(e.h.grainsOff+gi*seGrainSectors) * disk.SectorSize
}

// entry returns the state of the grain holding off and, for data, the
// byte offset of the grain in the file.
func (e *seSparseExtent) entry(off int64) (blockState, int64, error) {
	v, err := e.gte(uint64(off / seGrainBytes))
	if err != nil {
		return 0, 0, err
	}
	st, gi, err := e.decode(v)
	if err != nil || st != stateData {
		return st, 0, err
	}
	return st, e.grainPos(gi), nil
}

func (e *seSparseExtent) lookup(off, n int64) (blockState, int64, error) {
	const cover = seGrainBytes * seGTEntries
	end := off + n
	e.mu.Lock()
	defer e.mu.Unlock()
	var st blockState
	pos := off
	for first := true; pos < end; first = false {
		i := uint64(pos / cover)
		t, err := e.tableLocked(i)
		if err != nil {
			if first {
				return 0, 0, err
			}
			break
		}
		if t == nil {
			if !first && st != stateAbsent {
				break
			}
			st = stateAbsent
			// Skip every unallocated table at once (a table is in the
			// cache only once its directory entry is set).
			i = e.gd.next(i + 1)
			pos = int64(i) * cover
			continue
		}
		for j := uint64(pos/seGrainBytes) % seGTEntries; j < seGTEntries && pos < end; j++ {
			if t.e[j] == 0 {
				// A run of unallocated entries, skipped at once.
				if pos == off {
					st = stateAbsent
				} else if st != stateAbsent {
					return st, min(pos, end) - off, nil
				}
				j = t.nextSet(j)
				pos = int64(i)*cover + int64(j)*seGrainBytes
				j--
				continue
			}
			s, _, err := e.decode(t.e[j])
			if err != nil {
				if first && pos == off {
					return 0, 0, err
				}
				return st, min(pos, end) - off, nil
			}
			if first && pos == off {
				st = s
			} else if s != st {
				return st, min(pos, end) - off, nil
			}
			pos = (pos/seGrainBytes + 1) * seGrainBytes
		}
	}
	return st, min(pos, end) - off, nil
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
			// Grains that follow one another in the file are read at once.
			for c < int64(len(p)) {
				s2, p2, err := e.entry(off + c)
				if err != nil || s2 != stateData || p2 != pos+in+c-(off+c)%seGrainBytes {
					break
				}
				c = min(int64(len(p)), c+seGrainBytes)
			}
			if err := e.readZeroPadded(p[:c], pos+in); err != nil {
				return err
			}
		} else {
			clear(p[:c])
		}
		p = p[c:]
		off += c
	}
	return nil
}

// setGTE sets the entry of grain g, allocating its table when needed, and
// queues the grain it named, if any, to be freed. It returns the old entry.
func (e *seSparseExtent) setGTE(g, v uint64) (uint64, error) {
	e.mu.Lock()
	i := g / seGTEntries
	t, err := e.tableLocked(i)
	if err != nil {
		e.mu.Unlock()
		return 0, err
	}
	if t == nil {
		if v == 0 {
			e.mu.Unlock()
			return 0, nil
		}
		if (e.freeGT+1)*seGTSectors > e.h.gtSize {
			e.mu.Unlock()
			return 0, disk.Errorf(disk.ErrNoSpace, "vmdk: %s: the SEsparse grain table section is full", e.name)
		}
		t = &seTable{e: make([]uint64, seGTEntries)}
		e.gd.set(i, seGDEAllocated|e.freeGT)
		e.freeGT++
		e.gdDirty[i] = true
		e.cache[i] = t
		e.budget.add(e, 1) // dirty: evicted after its write-back, if need be
		e.amu.Lock()
		e.hdrDirty = true
		e.amu.Unlock()
	}
	old := t.e[g%seGTEntries]
	t.set(g%seGTEntries, v)
	if !t.dirty {
		t.dirty = true
		e.nDirty++
	}
	if old>>60 == 3 {
		if _, gi, err := e.decode(old); err == nil {
			e.pendFree = append(e.pendFree, gi)
		}
	}
	tooMany := e.nDirty >= seGTCache/2
	e.mu.Unlock()
	if tooMany {
		return old, e.flush()
	}
	return old, nil
}

func (e *seSparseExtent) writeAt(p []byte, off int64, parent io.ReaderAt) error {
	if e.ro {
		return disk.Errorf(disk.ErrPermission, "vmdk: %s: opened read-only", e.name)
	}
	for len(p) > 0 {
		in := off % seGrainBytes
		if in == 0 && len(p) >= 2*seGrainBytes {
			c := min(int64(len(p))/seGrainBytes, seBatch) * seGrainBytes
			if err := e.writeWhole(p[:c], off); err != nil {
				return err
			}
			p = p[c:]
			off += c
			continue
		}
		c := min(int64(len(p)), seGrainBytes-in)
		if err := e.writeGrain(p[:c], off, in, parent); err != nil {
			return err
		}
		p = p[c:]
		off += c
	}
	return nil
}

// seBatch is the number of whole grains written in one go.
const seBatch = 16

// writeWhole writes whole grains at grain-aligned off: grains already
// allocated in place, new ones allocated together and written with one
// call where they lie next to each other in the file.
func (e *seSparseExtent) writeWhole(p []byte, off int64) error {
	g0 := uint64(off / seGrainBytes)
	n := uint64(len(p) / seGrainBytes)
	// Lock the grains' stripes in ascending stripe order: no deadlock
	// with another batch.
	var locks []int
	for g := g0; g < g0+n; g++ {
		locks = append(locks, int(g%allocStripes))
	}
	slices.Sort(locks)
	locks = slices.Compact(locks)
	for _, i := range locks {
		e.stripes[i].Lock()
	}
	defer func() {
		for _, i := range locks {
			e.stripes[i].Unlock()
		}
	}()
	type alloc struct{ g, gi uint64 }
	var news []alloc
	flush := false
	for k := range n {
		g := g0 + k
		v, err := e.gte(g)
		if err != nil {
			return err
		}
		q := p[k*seGrainBytes : (k+1)*seGrainBytes]
		if v>>60 == 3 {
			if err := e.writeInPlace(q, v, 0); err != nil {
				return err
			}
			continue
		}
		gi, full, err := e.allocGrain(g)
		if err == errSEFull {
			break // the rest goes grain by grain, which flushes to reuse
		}
		if err != nil {
			return err
		}
		flush = flush || full
		news = append(news, alloc{g, gi})
	}
	for i := 0; i < len(news); {
		j := i + 1
		for j < len(news) && news[j].gi == news[j-1].gi+1 && news[j].g == news[j-1].g+1 {
			j++
		}
		pos := e.grainPos(news[i].gi)
		k := news[i].g - g0
		if _, err := e.f.WriteAt(p[k*seGrainBytes:(k+uint64(j-i))*seGrainBytes], pos); err != nil {
			return disk.Wrap(err, "vmdk: write", e.name, pos) // the grains leak until check -r leaks
		}
		i = j
	}
	for _, a := range news {
		if _, err := e.setGTE(a.g, encodeSEData(a.gi)); err != nil {
			return err
		}
	}
	done := uint64(len(news))
	for k := range n {
		if v, err := e.gte(g0 + k); err != nil || v>>60 != 3 {
			done = k
			break
		}
		done = k + 1
	}
	if done < n {
		// Stopped at a full grain section: finish grain by grain.
		for _, i := range locks {
			e.stripes[i].Unlock()
		}
		locks = nil
		for k := done; k < n; k++ {
			if err := e.writeGrain(p[k*seGrainBytes:(k+1)*seGrainBytes], off+int64(k)*seGrainBytes, 0, nil); err != nil {
				return err
			}
		}
	}
	if flush {
		return e.flush()
	}
	return nil
}

func (e *seSparseExtent) writeGrain(p []byte, off, in int64, parent io.ReaderAt) error {
	g := uint64(off / seGrainBytes)
	v, err := e.gte(g)
	if err != nil {
		return err
	}
	if v>>60 == 3 {
		return e.writeInPlace(p, v, in)
	}
	lk := &e.stripes[g%allocStripes]
	lk.Lock()
	defer lk.Unlock()
	if v, err = e.gte(g); err != nil {
		return err
	}
	if v>>60 == 3 { // allocated by another writer meanwhile
		return e.writeInPlace(p, v, in)
	}
	buf := p
	gstart := off - in
	if int64(len(p)) != seGrainBytes {
		buf = disk.AlignedBytes(seGrainBytes)
		if v == 0 && parent != nil {
			n := min(seGrainBytes, e.size()-gstart)
			if _, err := parent.ReadAt(buf[:n], gstart); err != nil && err != io.EOF {
				return disk.Wrap(err, "vmdk: copy-on-write read", e.name, gstart)
			}
		}
		copy(buf[in:], p)
	}
	gi, full, err := e.allocGrain(g)
	if err == errSEFull {
		// Grains freed since the last flush become reusable once it is
		// done.
		if err := e.flush(); err != nil {
			return err
		}
		gi, full, err = e.allocGrain(g)
		if err == errSEFull {
			err = disk.Errorf(disk.ErrNoSpace, "vmdk: %s: SEsparse grain section is full", e.name)
		}
	}
	if err != nil {
		return err
	}
	pos := e.grainPos(gi)
	if _, err := e.f.WriteAt(buf, pos); err != nil {
		// The grain stays marked in use and leaks until check -r leaks.
		return disk.Wrap(err, "vmdk: write", e.name, pos)
	}
	if _, err = e.setGTE(g, encodeSEData(gi)); err != nil || !full {
		return err
	}
	return e.flush() // bounds the dirty free bitmap and back map pages
}

func (e *seSparseExtent) writeInPlace(p []byte, v uint64, in int64) error {
	_, gi, err := e.decode(v)
	if err != nil {
		return err
	}
	pos := e.grainPos(gi) + in
	if _, err := e.f.WriteAt(p, pos); err != nil {
		return disk.Wrap(err, "vmdk: write", e.name, pos)
	}
	return nil
}

// page returns the cached page at byte p*sePageSize of a section, loading it.
// The caller holds e.amu.
func (e *seSparseExtent) page(m map[uint64]*sePage, sectionOff, p uint64) (*sePage, error) {
	if pg, ok := m[p]; ok {
		return pg, nil
	}
	pg := &sePage{b: make([]byte, sePageSize)}
	if err := e.readZeroPadded(pg.b, int64(sectionOff)*disk.SectorSize+int64(p*sePageSize)); err != nil {
		return nil, err
	}
	m[p] = pg
	return pg, nil
}

// setBackmap records that grain gi holds virtual grain g (none when v is
// false). The caller holds e.amu.
func (e *seSparseExtent) setBackmap(gi, g uint64, v bool) error {
	pg, err := e.page(e.backmap, e.h.backmapOff, gi*8/sePageSize)
	if err != nil {
		return err
	}
	var x uint64
	if v {
		x = seBackmap | g
	}
	binary.LittleEndian.PutUint64(pg.b[gi*8%sePageSize:], x)
	pg.dirty = true
	return nil
}

// setFree sets or clears the free bit of grain gi. The caller holds e.amu.
func (e *seSparseExtent) setFree(gi uint64, free bool) error {
	pg, err := e.page(e.bitmap, e.h.freeBitmapOff, gi/8/sePageSize)
	if err != nil {
		return err
	}
	b := &pg.b[gi/8%sePageSize]
	if free {
		*b |= 1 << (gi % 8)
	} else {
		*b &^= 1 << (gi % 8)
	}
	pg.dirty = true
	return nil
}

// allocGrain returns a grain for virtual grain g: a freed one, or a new
// one past the high-water mark, and whether so many map pages are dirty
// that the caller should flush.
func (e *seSparseExtent) allocGrain(g uint64) (uint64, bool, error) {
	e.amu.Lock()
	defer e.amu.Unlock()
	if len(e.free) == 0 && e.scanned < e.hw {
		if err := e.scanFreeLocked(); err != nil {
			return 0, false, err
		}
	}
	var gi uint64
	if n := len(e.free); n > 0 {
		gi = e.free[n-1]
		e.free = e.free[:n-1]
		if err := e.setFree(gi, false); err != nil {
			e.free = append(e.free, gi)
			return 0, false, err
		}
	} else {
		if e.hw >= e.h.reservedGrains() {
			return 0, false, errSEFull
		}
		gi = e.hw
		e.hw++
		if e.scanned == gi {
			e.scanned = e.hw // a new grain is not free: nothing to scan
		}
		e.hdrDirty = true
	}
	if err := e.setBackmap(gi, g, true); err != nil {
		return 0, false, err
	}
	return gi, len(e.bitmap)+len(e.backmap) > seMaxDirtyPages, nil
}

// zeroAt makes a range read as zeros: whole grains become zero entries
// (or unallocated ones without a parent), freeing their grains; partial
// grains are written.
func (e *seSparseExtent) zeroAt(off, n int64, parent io.ReaderAt) error {
	return e.clearRange(off, n, parent, seZero, true)
}

// trimAt unmaps the whole grains of a range: they read as zeros (or, with
// no parent, become unallocated) and their grains are freed for reuse.
// Partial grains are left alone (trim is advisory).
func (e *seSparseExtent) trimAt(off, n int64, parent io.ReaderAt) error {
	return e.clearRange(off, n, parent, seUnmapped, false)
}

func (e *seSparseExtent) clearRange(off, n int64, parent io.ReaderAt, marker uint64, partial bool) error {
	if e.ro {
		return disk.Errorf(disk.ErrPermission, "vmdk: %s: opened read-only", e.name)
	}
	if parent == nil {
		marker = 0
	}
	var zeros []byte
	for end := off + n; off < end; {
		in := off % seGrainBytes
		c := min(end-off, seGrainBytes-in)
		if c < seGrainBytes && c < e.size()-(off-in) {
			if partial {
				st, _, err := e.entry(off)
				if err != nil {
					return err
				}
				if st == stateData || (st == stateAbsent && parent != nil) {
					if zeros == nil {
						zeros = make([]byte, seGrainBytes)
					}
					if err := e.writeGrain(zeros[:c], off, in, parent); err != nil {
						return err
					}
				}
			}
			off += c
			continue
		}
		g := uint64(off / seGrainBytes)
		if marker == 0 || !partial {
			// Skip tables that do not exist: nothing to clear there.
			e.mu.Lock()
			empty := e.gd.get(g/seGTEntries) == 0 && e.cache[g/seGTEntries] == nil
			e.mu.Unlock()
			if empty {
				off = min(end, int64(g/seGTEntries+1)*seGTEntries*seGrainBytes)
				continue
			}
		}
		lk := &e.stripes[g%allocStripes]
		lk.Lock()
		v, err := e.gte(g)
		// A trim leaves unallocated grains alone: they read as before.
		if err == nil && v != marker && (partial || v != 0) {
			_, err = e.setGTE(g, marker)
		}
		lk.Unlock()
		if err != nil {
			return err
		}
		off += c
	}
	return nil
}

// flush makes every write completed before it was called durable (group
// commit as for hosted sparse extents).
func (e *seSparseExtent) flush() error {
	if e.ro {
		return nil
	}
	return e.commit.flush(e.writeBack)
}

type sePageWrite struct {
	off int64
	b   []byte
}

// writeBack is one flush; the caller holds e.commit.mu. See the comment at
// the top of the file for the order.
func (e *seSparseExtent) writeBack() error {
	le := binary.LittleEndian
	e.mu.Lock()
	type tw struct {
		i   uint64
		t   *seTable
		pos int64
		b   []byte
	}
	var tables []tw
	for i, t := range e.cache {
		if !t.dirty {
			continue
		}
		w := tw{i: i, t: t, pos: int64(e.h.gtOff+(e.gd.get(i)&0xffffffff)*seGTSectors) * disk.SectorSize, b: make([]byte, seGTEntries*8)}
		for j, v := range t.e {
			le.PutUint64(w.b[j*8:], v)
		}
		t.dirty, t.pinned = false, true
		e.nDirty--
		tables = append(tables, w)
	}
	var gdw []sePageWrite
	sectors := map[uint64]bool{}
	for i := range e.gdDirty {
		sectors[i*8/disk.SectorSize] = true
	}
	for s := range sectors {
		b := make([]byte, disk.SectorSize)
		for j := range uint64(disk.SectorSize / 8) {
			if k := s*disk.SectorSize/8 + j; k < e.gd.n {
				le.PutUint64(b[j*8:], e.gd.get(k))
			}
		}
		gdw = append(gdw, sePageWrite{off: int64(e.h.gdOff+s) * disk.SectorSize, b: b})
	}
	gdDirty := e.gdDirty
	e.gdDirty = map[uint64]bool{}
	freed := e.pendFree
	e.pendFree = nil
	freeGT := e.freeGT
	e.amu.Lock()
	var pages []sePageWrite
	for _, s := range []struct {
		m   map[uint64]*sePage
		off uint64
	}{{e.bitmap, e.h.freeBitmapOff}, {e.backmap, e.h.backmapOff}} {
		for p, pg := range s.m {
			if pg.dirty {
				pages = append(pages, sePageWrite{off: int64(s.off)*disk.SectorSize + int64(p*sePageSize), b: append([]byte(nil), pg.b...)})
				pg.dirty = false
			}
		}
	}
	hdr := e.hdrDirty || len(tables) > 0
	e.hdrDirty = false
	e.txn++
	h := e.h
	h.grainsSize = e.hw * seGrainSectors
	txn := e.txn
	e.amu.Unlock()
	e.mu.Unlock()

	fail := func(err error) error {
		e.mu.Lock()
		for _, w := range tables {
			if !w.t.dirty {
				e.nDirty++
			}
			w.t.dirty, w.t.pinned = true, false
		}
		for i := range gdDirty {
			e.gdDirty[i] = true
		}
		e.pendFree = append(e.pendFree, freed...)
		e.mu.Unlock()
		e.amu.Lock()
		e.hdrDirty = true
		for _, s := range []map[uint64]*sePage{e.bitmap, e.backmap} {
			for _, pg := range s {
				pg.dirty = true // conservative: rewrite every cached page
			}
		}
		e.amu.Unlock()
		return err
	}
	for _, w := range pages {
		if _, err := e.f.WriteAt(w.b, w.off); err != nil {
			return fail(disk.Wrap(err, "vmdk: write SEsparse map", e.name, w.off))
		}
	}
	if hdr {
		if _, err := e.f.WriteAt(h.marshal(), 0); err != nil {
			return fail(disk.Wrap(err, "vmdk: write SEsparse header", e.name, 0))
		}
		vol := make([]byte, disk.SectorSize)
		le.PutUint64(vol, seVolatileMagic)
		le.PutUint64(vol[8:], freeGT)
		le.PutUint64(vol[16:], txn)
		if _, err := e.f.WriteAt(vol, int64(h.volatileOff)*disk.SectorSize); err != nil {
			return fail(disk.Wrap(err, "vmdk: write SEsparse header", e.name, 0))
		}
	}
	if err := e.f.Sync(); err != nil {
		return fail(disk.Wrap(err, "vmdk: sync", e.name, -1))
	}
	if len(tables) > 0 {
		for _, w := range tables {
			if _, err := e.f.WriteAt(w.b, w.pos); err != nil {
				return fail(disk.Wrap(err, "vmdk: write grain table", e.name, w.pos))
			}
		}
		if err := e.f.Sync(); err != nil {
			return fail(disk.Wrap(err, "vmdk: sync", e.name, -1))
		}
	}
	if len(gdw) > 0 {
		for _, w := range gdw {
			if _, err := e.f.WriteAt(w.b, w.off); err != nil {
				return fail(disk.Wrap(err, "vmdk: write grain directory", e.name, w.off))
			}
		}
		if err := e.f.Sync(); err != nil {
			return fail(disk.Wrap(err, "vmdk: sync", e.name, -1))
		}
	}
	e.mu.Lock()
	for _, w := range tables {
		w.t.pinned = false
	}
	e.mu.Unlock()
	// The tables no longer naming the freed grains are durable: the grains
	// may be reused, and their free bits and back map entries written.
	e.amu.Lock()
	defer e.amu.Unlock()
	var err error
	for _, gi := range freed {
		if err = e.setFree(gi, true); err != nil {
			break
		}
		if err = e.setBackmap(gi, 0, false); err != nil {
			break
		}
		// Grains past the scan position are found by the next scan.
		if gi < e.scanned && len(e.free) < seMaxFreeList {
			e.free = append(e.free, gi)
		}
	}
	for _, s := range []map[uint64]*sePage{e.bitmap, e.backmap} {
		for p, pg := range s {
			if !pg.dirty {
				delete(s, p)
			}
		}
	}
	return err
}

func (e *seSparseExtent) close() error {
	var err error
	if !e.ro {
		// Twice: the second writes the free bits of grains the first freed.
		if err = e.flush(); err == nil {
			e.amu.Lock()
			more := false
			for _, s := range []map[uint64]*sePage{e.bitmap, e.backmap} {
				for _, pg := range s {
					more = more || pg.dirty
				}
			}
			e.amu.Unlock()
			if more {
				err = e.flush()
			}
		}
	}
	if cerr := e.f.Close(); err == nil {
		err = cerr
	}
	e.mu.Lock()
	e.budget.add(e, -len(e.cache))
	e.cache = map[uint64]*seTable{}
	e.mu.Unlock()
	return err
}

// grow raises the capacity to capacity sectors within the reserved
// sections.
func (e *seSparseExtent) grow(capacity uint64) error {
	if e.ro {
		return disk.Errorf(disk.ErrPermission, "vmdk: %s: opened read-only", e.name)
	}
	grains := divRoundUp(capacity, seGrainSectors)
	if capacity > seMaxCapacity || grains > e.h.reservedGrains() ||
		divRoundUp(grains, seGTEntries)*8 > e.h.gdSize*disk.SectorSize {
		return disk.Errorf(disk.ErrNotSupported, "vmdk: %s: this SEsparse extent has room for %d bytes; convert it to grow beyond", e.name,
			min(e.h.reservedGrains(), e.h.gdSize*disk.SectorSize/8*seGTEntries)*seGrainBytes)
	}
	e.commit.mu.Lock()
	defer e.commit.mu.Unlock()
	if err := e.writeBack(); err != nil {
		return err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	oldN := e.gd.n
	if err := e.loadGD(oldN, divRoundUp(grains, seGTEntries)); err != nil {
		e.gd.n = oldN
		return err
	}
	for _, v := range e.gd.m {
		e.freeGT = max(e.freeGT, v&0xffffffff+1)
	}
	e.amu.Lock()
	e.h.capacity = capacity
	h := e.h
	h.grainsSize = e.hw * seGrainSectors
	b := h.marshal()
	e.amu.Unlock()
	if _, err := e.f.WriteAt(b, 0); err != nil {
		return disk.Wrap(err, "vmdk: grow", e.name, 0)
	}
	return disk.Wrap(e.f.Sync(), "vmdk: grow", e.name, -1)
}

// seLayout computes the sections of a new SEsparse extent of capacity
// sectors with room to grow to reserve sectors.
func seLayout(capacity, reserve uint64) seHeader {
	grains := divRoundUp(reserve, seGrainSectors)
	tables := divRoundUp(grains, seGTEntries)
	h := seHeader{capacity: capacity, volatileOff: 1, volatileSize: 1, journalOff: 2, journalSize: 1}
	pos := uint64(seAlign)
	next := func(n uint64) (uint64, uint64) {
		off := pos
		pos = roundUp(pos+n, seAlign)
		return off, n
	}
	h.jOff, h.jSize = next(seAlign)
	h.gdOff, h.gdSize = next(divRoundUp(tables*8, disk.SectorSize))
	h.gtOff, h.gtSize = next(tables * seGTSectors)
	h.freeBitmapOff, h.freeBitmapN = next(divRoundUp(grains, 8*disk.SectorSize))
	h.backmapOff, h.backmapSize = next(divRoundUp(grains*8, disk.SectorSize))
	h.grainsOff = pos
	return h
}

// seReserve is the capacity, in sectors, a new extent of capacity sectors
// reserves its sections for.
func seReserve(capacity uint64) uint64 {
	return max(capacity, min(seMaxCapacity, roundUp(capacity, seGrainSectors*seGTEntries)*seGrowReserve))
}

// seMaxFile is the size in bytes an SEsparse extent of capacity sectors,
// with sections for reserve sectors, reaches when every grain is written
// (grains freed and not yet reused included).
func seMaxFile(capacity, reserve uint64) uint64 {
	h := seLayout(capacity, reserve)
	return (h.grainsOff + h.reservedGrains()*seGrainSectors) * disk.SectorSize
}

// seSplit returns the capacities, in sectors, of the SEsparse extents of a
// disk of capacity sectors whose files must stay at or below maxFile bytes
// (0: no limit), and the capacity each reserves its sections for. One
// extent, with room to grow, when that fits.
func seSplit(capacity, maxFile uint64) (exts []uint64, reserve func(uint64) uint64, err error) {
	if maxFile == 0 || seMaxFile(capacity, seReserve(capacity)) <= maxFile {
		return []uint64{capacity}, seReserve, nil
	}
	exact := func(c uint64) uint64 { return c }
	const unit = seGrainSectors * seGTEntries // 16 MiB
	// The largest whole number of 16 MiB units whose extent fits.
	lo, hi := uint64(0), min(seMaxCapacity, capacity+unit)/unit
	for lo < hi {
		mid := (lo + hi + 1) / 2
		if seMaxFile(mid*unit, mid*unit) <= maxFile {
			lo = mid
		} else {
			hi = mid - 1
		}
	}
	if lo == 0 {
		return nil, nil, disk.Errorf(disk.ErrNoSpace, "vmdk: files on this filesystem hold at most %d bytes, too few for an SEsparse extent", maxFile)
	}
	for left := capacity; left > 0; {
		n := min(left, lo*unit)
		exts = append(exts, n)
		left -= n
	}
	return exts, exact, nil
}

// createSESparse writes a new, empty SEsparse extent of capacity sectors
// whose sections have room for reserve sectors. Every section but the
// headers is a hole.
func createSESparse(f disk.File, capacity, reserve uint64) error {
	if capacity == 0 || capacity > seMaxCapacity || reserve < capacity || reserve > seMaxCapacity {
		return disk.Errorf(disk.ErrNotSupported, "vmdk: an SEsparse extent holds at most 64 TiB")
	}
	h := seLayout(capacity, reserve)
	if err := f.Truncate(int64(h.grainsOff) * disk.SectorSize); err != nil {
		return err
	}
	b := make([]byte, 3*disk.SectorSize)
	copy(b, h.marshal())
	binary.LittleEndian.PutUint64(b[disk.SectorSize:], seVolatileMagic)
	if _, err := f.WriteAt(b, 0); err != nil {
		return err
	}
	return f.Sync()
}
