package vmdk

import (
	"encoding/binary"
	"io"
	"sync"

	"github.com/vdisk-project/vdisk/disk"
)

// Grain table cache bounds: 8192 tables of 512 entries are 16 MiB and cover
// 256 GiB of a disk with 64 KiB grains. Dirty tables are written back on
// Flush, or earlier when too many accumulate.
const (
	maxCachedGTs = 8192
	maxDirtyGTs  = 2048
	allocStripes = 64
)

// sparseExtent is a hosted sparse (KDMV) extent: monolithicSparse, one
// extent of twoGbMaxExtentSparse, or a hosted snapshot delta (§3).
//
// Crash safety: new grains are written at the end of the file and their
// grain table entries are kept in memory until Flush, which first syncs the
// data, then writes both grain table copies, then syncs again. A crash
// before Flush leaves the old tables, which do not reference the new grains:
// the space leaks (check -r leaks reclaims it) and nothing that was flushed
// is lost.
type sparseExtent struct {
	f     disk.File
	df    disk.File // data file: f, or an O_DIRECT handle when unbuffered
	name  string
	h     *sparseHeader
	ro    bool
	size_ int64 // virtual bytes
	grain int64 // bytes
	gtCov int64 // bytes covered by one grain table
	gtLen int   // entries per grain table

	zero []uint32 // the shared all-zero grain table: never written to
	gd   []uint32 // primary grain directory (sectors of grain tables)
	rgd  []uint32 // redundant grain directory, nil when absent

	mu      sync.Mutex
	cache   map[uint32][]uint32 // grain directory index -> table
	dirty   map[uint32]bool
	pinned  map[uint32]bool // being written back by flush: not evictable
	end     int64           // next free grain-aligned byte offset
	fileLen int64           // length of the file as opened (for range checks)
	marked  bool            // the unclean-shutdown mark is set by us
	budget  *gtBudget       // shared by the extents of one disk; nil: none
	cowd    *cowdHeader     // set for vmfsSparse (COWD) extents
	gdDirty bool            // the grain directory changed (COWD table allocation)

	stripes [allocStripes]sync.Mutex // serialize allocation per grain

	commit groupCommit // serializes write-back (see groupCommit)
}

// openSparseExtent opens a KDMV extent whose header is h.
//
// A header whose gdOffset is GD_AT_END is replaced by its footer (§4.1), as
// qemu does for uncompressed extents too. Such an extent opens read-only:
// new grains go at the end of the file, after the footer, where no reader
// would find the footer again.
func openSparseExtent(f disk.File, name string, h *sparseHeader, fileSize int64, ro bool) (*sparseExtent, error) {
	if h.GDOffset == gdAtEnd && !h.compressed() {
		ft, err := resolveFooter(f, h, fileSize)
		if err != nil {
			return nil, err
		}
		if ft.compressed() {
			return nil, disk.Errorf(disk.ErrCorrupt, "vmdk: %s: the footer says compressed, the header does not", name)
		}
		if !ro {
			return nil, disk.Errorf(disk.ErrPermission, "vmdk: %s: sparse extents with the grain directory at the end of the file can only be opened read-only", name)
		}
		h = ft
	}
	if err := h.validate(fileSize); err != nil {
		return nil, err
	}
	if h.compressed() {
		return nil, disk.Errorf(disk.ErrNotSupported, "vmdk: %s: compressed (streamOptimized) extents are opened by the stream reader", name)
	}
	if h.Version == 3 && !ro {
		// §3.3: uncompressed version 3 is a CBT-era format qemu opens only
		// read-only; do the same.
		return nil, disk.Errorf(disk.ErrPermission, "vmdk: %s: sparse version 3 extents can only be opened read-only", name)
	}
	e := &sparseExtent{
		f: f, name: name, h: h, ro: ro,
		size_:   int64(h.Capacity) * disk.SectorSize,
		grain:   h.grainBytes(),
		gtCov:   h.gtCoverage(),
		gtLen:   int(h.NumGTEsPerGT),
		cache:   make(map[uint32][]uint32),
		dirty:   make(map[uint32]bool),
		pinned:  make(map[uint32]bool),
		fileLen: fileSize,
		zero:    make([]uint32, h.NumGTEsPerGT),
	}
	n := int(h.numGDEntries())
	var err error
	if e.gd, err = e.readDir(h.GDOffset, n); err != nil {
		return nil, err
	}
	if h.Flags&flagRedundantGD != 0 && h.RGDOffset != 0 {
		if e.rgd, err = e.readDir(h.RGDOffset, n); err != nil {
			return nil, err
		}
	}
	e.end = (fileSize + e.grain - 1) / e.grain * e.grain
	if over := int64(h.OverHead) * disk.SectorSize; e.end < over {
		e.end = over
	}
	if !ro {
		if !h.UncleanShutdown {
			h.UncleanShutdown = true
			if err := e.writeHeader(); err != nil {
				return nil, err
			}
			e.marked = true
		}
	}
	return e, nil
}

func (e *sparseExtent) readDir(sector uint64, n int) ([]uint32, error) {
	b := make([]byte, n*4)
	if _, err := e.f.ReadAt(b, int64(sector)*disk.SectorSize); err != nil {
		return nil, disk.Errorf(disk.ErrCorrupt, "vmdk: %s: read grain directory at sector %d: %w", e.name, sector, err)
	}
	dir := make([]uint32, n)
	for i := range dir {
		dir[i] = binary.LittleEndian.Uint32(b[i*4:])
	}
	return dir, nil
}

func (e *sparseExtent) writeHeader() error {
	b := e.h.marshal()
	if e.cowd != nil {
		e.mu.Lock()
		e.cowd.freeSector = uint32(e.end / disk.SectorSize)
		b = e.cowd.marshal()
		e.mu.Unlock()
	}
	if _, err := e.f.WriteAt(b, 0); err != nil {
		return disk.Wrap(err, "vmdk: write header", e.name, 0)
	}
	return e.f.Sync()
}

func (e *sparseExtent) size() int64 { return e.size_ }

// data returns the handle for grain data.
func (e *sparseExtent) data() disk.File {
	if e.df != nil {
		return e.df
	}
	return e.f
}

// table returns grain table gi, loading it (and some following tables in
// the same read) when not cached. It returns nil when the directory entry
// is 0. The caller must not hold e.mu.
func (e *sparseExtent) table(gi uint32) ([]uint32, error) {
	if int(gi) >= len(e.gd) {
		return nil, disk.Errorf(disk.ErrCorrupt, "vmdk: %s: grain directory index %d out of range", e.name, gi)
	}
	// Read a run of tables whose directory entries are consecutive in the
	// file, up to 64 at a time: preallocated tables are contiguous, so a
	// full scan of a large disk costs few system calls.
	gtBytes := int64(e.gtLen) * 4
	gtSec := uint32(gtBytes / disk.SectorSize)
	e.mu.Lock()
	if t, ok := e.cache[gi]; ok {
		e.mu.Unlock()
		return t, nil
	}
	sec := e.gd[gi]
	run := 1
	for sec != 0 && int(gi)+run < len(e.gd) && run < 64 && e.gd[int(gi)+run] == sec+uint32(run)*gtSec {
		run++
	}
	e.mu.Unlock()
	if sec == 0 {
		return nil, nil
	}
	off := int64(sec) * disk.SectorSize
	if off+gtBytes*int64(run) > e.fileLen {
		run = 1
		if off+gtBytes > e.fileLen {
			return nil, disk.Errorf(disk.ErrCorrupt, "vmdk: %s: grain table %d at sector %d past end of file", e.name, gi, sec)
		}
	}
	// Tables in a hole of the file (a new thin disk) are all zeros and
	// need not be read.
	var b []byte
	if data, hole, err := disk.FileRun(e.f, off, gtBytes*int64(run)); err == nil && !data && hole >= gtBytes {
		run = int(hole / gtBytes)
	} else {
		b = make([]byte, gtBytes*int64(run))
		if _, err := e.f.ReadAt(b, off); err != nil {
			return nil, disk.Errorf(disk.ErrAccess, "vmdk: %s: read grain table %d: %w", e.name, gi, err)
		}
	}
	e.mu.Lock()
	added := 0
	defer func() {
		e.mu.Unlock()
		e.budget.add(e, added)
	}()
	if len(e.cache) >= maxCachedGTs {
		added -= e.evictLocked(run)
	}
	var first []uint32
	for r := range run {
		idx := gi + uint32(r)
		if t, ok := e.cache[idx]; ok { // loaded meanwhile, maybe dirty
			if r == 0 {
				first = t
			}
			continue
		}
		t := e.zero
		if b != nil && !disk.IsZero(b[int64(r)*gtBytes:int64(r+1)*gtBytes]) {
			t = make([]uint32, e.gtLen)
			for i := range t {
				t[i] = binary.LittleEndian.Uint32(b[int64(r)*gtBytes+int64(i)*4:])
			}
			added++
		}
		e.cache[idx] = t
		if r == 0 {
			first = t
		}
	}
	return first, nil
}

// isZero reports whether t is the shared all-zero table.
func (e *sparseExtent) isZero(t []uint32) bool {
	return len(t) > 0 && len(e.zero) > 0 && &t[0] == &e.zero[0]
}

// evictLocked drops clean tables until there is room for n more, and
// returns how many real (not shared-zero) tables it dropped.
func (e *sparseExtent) evictLocked(n int) int {
	freed := 0
	for k, t := range e.cache {
		if len(e.cache)+n <= maxCachedGTs {
			break
		}
		if !e.dirty[k] && !e.pinned[k] {
			if !e.isZero(t) {
				freed++
			}
			delete(e.cache, k)
		}
	}
	return freed
}

// dropClean drops every clean cached table and returns how many real ones
// it dropped (for the shared budget).
func (e *sparseExtent) dropClean() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	freed := 0
	for k, t := range e.cache {
		if !e.dirty[k] && !e.pinned[k] {
			if !e.isZero(t) {
				freed++
			}
			delete(e.cache, k)
		}
	}
	return freed
}

// gtBudget bounds the grain tables cached by all the sparse extents of one
// disk: a split disk has up to 1,025 extents, each with its own cache. When
// the budget is exceeded, the extents that cached tables longest ago drop
// their clean tables.
type gtBudget struct {
	mu    sync.Mutex
	held  int64 // bytes of real tables cached
	max   int64
	users []*sparseExtent
	known map[*sparseExtent]bool
}

func newGTBudget(max int64) *gtBudget {
	return &gtBudget{max: max, known: map[*sparseExtent]bool{}}
}

// add accounts n tables (negative: dropped) cached by e and evicts from
// other extents when over budget. The caller must not hold e.mu.
func (b *gtBudget) add(e *sparseExtent, n int) {
	if b == nil || n == 0 {
		return
	}
	b.mu.Lock()
	b.held += int64(n) * int64(e.gtLen) * 4
	if !b.known[e] {
		b.known[e] = true
		b.users = append(b.users, e)
	}
	var victims []*sparseExtent
	if b.held > b.max {
		for _, u := range b.users {
			if u != e {
				victims = append(victims, u)
			}
		}
		victims = append(victims, e) // the caller's own tables go last
	}
	b.mu.Unlock()
	for _, v := range victims {
		freed := v.dropClean()
		b.mu.Lock()
		b.held -= int64(freed) * int64(v.gtLen) * 4
		over := b.held > b.max
		b.mu.Unlock()
		if !over {
			return
		}
	}
}

// gte returns the grain table entry of the grain holding off, and whether
// its grain table exists.
func (e *sparseExtent) gte(off int64) (uint32, bool, error) {
	gi := uint32(off / e.gtCov)
	t, err := e.table(gi)
	if err != nil || t == nil {
		return 0, false, err
	}
	e.mu.Lock()
	v := t[(off%e.gtCov)/e.grain]
	e.mu.Unlock()
	return v, true, nil
}

func (e *sparseExtent) stateOf(v uint32) blockState {
	switch {
	case v == 0:
		return stateAbsent
	case v == 1:
		// A zeroed grain; without the flag it is a corruption that Check
		// reports, and reads give zeros either way (§3.5).
		return stateZero
	}
	return stateData
}

func (e *sparseExtent) lookup(off, n int64) (blockState, int64, error) {
	gi := uint32(off / e.gtCov)
	gtEnd := min(int64(gi+1)*e.gtCov, off+n)
	t, err := e.table(gi)
	if err != nil {
		return 0, 0, err
	}
	if t == nil || e.isZero(t) {
		return stateAbsent, gtEnd - off, nil
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	i := (off % e.gtCov) / e.grain
	st := e.stateOf(t[i])
	pos := (off/e.grain + 1) * e.grain
	for i++; pos < gtEnd && int(i) < len(t) && e.stateOf(t[i]) == st; i++ {
		pos += e.grain
	}
	return st, min(pos, gtEnd) - off, nil
}

func (e *sparseExtent) readAt(p []byte, off int64) error {
	for len(p) > 0 {
		in := off % e.grain
		c := min(int64(len(p)), e.grain-in)
		v, _, err := e.gte(off)
		if err != nil {
			return err
		}
		if v > 1 {
			// Grains laid out one after another in the file (as convert
			// writes them) are read with one call.
			for c < int64(len(p)) {
				nv, _, err := e.gte(off + c)
				if err != nil || int64(nv) != int64(v)+(in+c)/disk.SectorSize {
					break
				}
				c = min(int64(len(p)), c+e.grain)
			}
			if err := e.readGrain(p[:c], v, in, off); err != nil {
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

// readGrain reads c bytes at offset in inside the grain at sector v.
func (e *sparseExtent) readGrain(p []byte, v uint32, in, off int64) error {
	if uint64(v) < e.h.OverHead {
		return disk.Errorf(disk.ErrCorrupt, "vmdk: %s: grain of offset %d points into metadata (sector %d)", e.name, off, v)
	}
	pos := int64(v)*disk.SectorSize + in
	n, err := e.data().ReadAt(p, pos)
	if err == io.EOF && n < len(p) {
		// A grain that ends past the end of the file: the last grain of
		// a file that was cut short. Zeros beyond the end, but say so if
		// the grain starts past it.
		if int64(v)*disk.SectorSize >= e.fileLen && n == 0 {
			return disk.Errorf(disk.ErrCorrupt, "vmdk: %s: grain of offset %d points past end of file (sector %d)", e.name, off, v)
		}
		clear(p[n:])
		return nil
	}
	if err != nil {
		return disk.Wrap(err, "vmdk: read", e.name, pos)
	}
	return nil
}

// setGTE updates a grain table entry in memory; Flush writes it out.
func (e *sparseExtent) setGTE(off int64, v uint32) error {
	gi := uint32(off / e.gtCov)
	t, err := e.table(gi)
	if err != nil {
		return err
	}
	if t == nil {
		return disk.Errorf(disk.ErrNotSupported, "vmdk: %s: no grain table allocated for offset %d", e.name, off)
	}
	e.mu.Lock()
	if cur, ok := e.cache[gi]; ok {
		t = cur
	}
	grew := 0
	if e.isZero(t) {
		t = make([]uint32, e.gtLen) // copy on write of the shared zero table
		grew = 1
	}
	t[(off%e.gtCov)/e.grain] = v
	e.cache[gi] = t // a table evicted meanwhile comes back dirty
	e.dirty[gi] = true
	tooMany := len(e.dirty) >= maxDirtyGTs
	e.mu.Unlock()
	e.budget.add(e, grew)
	if tooMany {
		return e.flush()
	}
	return nil
}

func (e *sparseExtent) writeAt(p []byte, off int64, parent io.ReaderAt) error {
	if e.ro {
		return disk.Errorf(disk.ErrPermission, "vmdk: %s: opened read-only", e.name)
	}
	for len(p) > 0 {
		in := off % e.grain
		c := min(int64(len(p)), e.grain-in)
		if err := e.writeGrain(p[:c], off, in, parent); err != nil {
			return err
		}
		p = p[c:]
		off += c
	}
	return nil
}

func (e *sparseExtent) writeGrain(p []byte, off, in int64, parent io.ReaderAt) error {
	v, ok, err := e.gte(off)
	if err != nil {
		return err
	}
	if !ok {
		if e.cowd == nil {
			return disk.Errorf(disk.ErrNotSupported, "vmdk: %s: no grain table allocated for offset %d", e.name, off)
		}
		if err := e.allocTable(uint32(off / e.gtCov)); err != nil {
			return err
		}
	}
	if v > 1 {
		return e.writeInPlace(p, v, in, off)
	}
	gstart := off - in
	lk := &e.stripes[(gstart/e.grain)%allocStripes]
	lk.Lock()
	defer lk.Unlock()
	if v, _, err = e.gte(off); err != nil {
		return err
	}
	if v > 1 { // allocated by another writer meanwhile
		return e.writeInPlace(p, v, in, off)
	}
	buf := p
	if int64(len(p)) != e.grain {
		buf = disk.AlignedBytes(e.grain)
		if v == 0 && parent != nil {
			n := min(e.grain, e.size_-gstart)
			if _, err := parent.ReadAt(buf[:n], gstart); err != nil && err != io.EOF {
				return disk.Wrap(err, "vmdk: copy-on-write read", e.name, gstart)
			}
		}
		copy(buf[in:], p)
	}
	e.mu.Lock()
	pos := e.end
	e.end += e.grain
	e.mu.Unlock()
	if pos/disk.SectorSize+e.grain/disk.SectorSize > maxExtentSectors {
		return disk.Errorf(disk.ErrNoSpace, "vmdk: %s: extent file would exceed 2 TiB", e.name)
	}
	if _, err := e.data().WriteAt(buf, pos); err != nil {
		return disk.Wrap(err, "vmdk: write", e.name, pos)
	}
	return e.setGTE(off, uint32(pos/disk.SectorSize))
}

func (e *sparseExtent) writeInPlace(p []byte, v uint32, in, off int64) error {
	if uint64(v) < e.h.OverHead {
		return disk.Errorf(disk.ErrCorrupt, "vmdk: %s: grain of offset %d points into metadata (sector %d)", e.name, off, v)
	}
	pos := int64(v)*disk.SectorSize + in
	if _, err := e.data().WriteAt(p, pos); err != nil {
		return disk.Wrap(err, "vmdk: write", e.name, pos)
	}
	return nil
}

// zeroAt makes a range read as zeros: allocated grains are zeroed in
// place, unallocated grains without a parent are left alone, and whole
// grains over a parent become zeroed-grain entries when the header allows
// them (else they are written).
func (e *sparseExtent) zeroAt(off, n int64, parent io.ReaderAt) error {
	hasParent := parent != nil
	if e.ro {
		return disk.Errorf(disk.ErrPermission, "vmdk: %s: opened read-only", e.name)
	}
	zeroedOK := e.h.Flags&flagZeroedGrainGTE != 0
	var zeros []byte
	for end := off + n; off < end; {
		in := off % e.grain
		c := min(end-off, e.grain-in)
		v, ok, err := e.gte(off)
		if err != nil {
			return err
		}
		switch {
		case v == 1 || (ok && v == 0 && !hasParent):
			// Already reads as zeros.
		case v == 0 && zeroedOK && c == e.grain:
			if err := e.setGTE(off, 1); err != nil {
				return err
			}
		default:
			if zeros == nil {
				zeros = disk.AlignedBytes(e.grain)
			}
			if err := e.writeGrain(zeros[:c], off, in, parent); err != nil {
				return err
			}
		}
		off += c
	}
	return nil
}

// flush makes every write completed before it was called durable: it syncs
// data, writes the dirty grain tables (primary, then redundant) and syncs
// again.
func (e *sparseExtent) flush() error {
	if e.ro {
		return nil
	}
	return e.commit.flush(e.writeBack)
}

// writeBack is one flush. The caller holds e.commit.mu.
func (e *sparseExtent) writeBack() error {
	e.mu.Lock()
	var gd []byte
	if e.gdDirty {
		gd = make([]byte, len(e.gd)*4)
		for i, v := range e.gd {
			binary.LittleEndian.PutUint32(gd[i*4:], v)
		}
		e.gdDirty = false
	}
	var out []gtWrite
	for gi := range e.dirty {
		t := e.cache[gi]
		w := gtWrite{gi: gi, b: make([]byte, len(t)*4)}
		for i, v := range t {
			binary.LittleEndian.PutUint32(w.b[i*4:], v)
		}
		for _, dir := range [][]uint32{e.gd, e.rgd} {
			if dir != nil && dir[gi] != 0 {
				w.pos = append(w.pos, int64(dir[gi])*disk.SectorSize)
			}
		}
		out = append(out, w)
		e.pinned[gi] = true
	}
	clear(e.dirty)
	e.mu.Unlock()
	defer func() {
		e.mu.Lock()
		for _, w := range out {
			delete(e.pinned, w.gi)
		}
		e.mu.Unlock()
	}()
	if len(out) == 0 && gd == nil {
		return disk.Wrap(e.f.Sync(), "vmdk: sync", e.name, -1)
	}
	fail := func(err error) error {
		e.redirty(out, gd != nil)
		return err
	}
	if err := e.f.Sync(); err != nil {
		return fail(disk.Wrap(err, "vmdk: sync", e.name, -1))
	}
	for _, w := range out {
		for _, pos := range w.pos {
			if _, err := e.f.WriteAt(w.b, pos); err != nil {
				return fail(disk.Wrap(err, "vmdk: write grain table", e.name, pos))
			}
		}
	}
	if gd != nil {
		// New tables are in place: publish them in the directory, and
		// record the new free sector.
		if _, err := e.f.WriteAt(gd, int64(e.h.GDOffset)*disk.SectorSize); err != nil {
			return fail(disk.Wrap(err, "vmdk: write grain directory", e.name, -1))
		}
		if err := e.writeHeader(); err != nil {
			return fail(err)
		}
	}
	if err := e.f.Sync(); err != nil {
		return fail(disk.Wrap(err, "vmdk: sync", e.name, -1))
	}
	return nil
}

type gtWrite struct {
	gi  uint32
	b   []byte
	pos []int64 // where the table's copies go
}

// redirty marks tables (and the directory) whose write-back failed as
// dirty again.
func (e *sparseExtent) redirty(out []gtWrite, gd bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, w := range out {
		if _, ok := e.cache[w.gi]; ok {
			e.dirty[w.gi] = true
		}
	}
	e.gdDirty = e.gdDirty || gd
}

func (e *sparseExtent) close() error {
	err := e.flush()
	if err == nil && e.marked {
		e.h.UncleanShutdown = false
		if e.cowd != nil {
			e.cowd.unclean = false
		}
		err = e.writeHeader()
	}
	if e.df != nil {
		if cerr := e.df.Close(); err == nil {
			err = cerr
		}
	}
	if cerr := e.f.Close(); err == nil {
		err = cerr
	}
	return err
}

// grow raises the extent's capacity to capacity sectors. When the grain
// directory is too small it writes a larger directory (and redundant
// directory) and the new grain tables at the end of the file, then switches
// to them by rewriting the header: a crash before that leaves the old,
// consistent extent (with leaked space).
func (e *sparseExtent) grow(capacity uint64) error {
	if e.ro {
		return disk.Errorf(disk.ErrPermission, "vmdk: %s: opened read-only", e.name)
	}
	if capacity >= maxExtentSectors {
		// Like Create: VMware opens no sparse extent of 2 TiB or more.
		return disk.Errorf(disk.ErrNotSupported, "vmdk: %s: a sparse extent must stay below 2 TiB; convert to twoGbMaxExtentSparse or a flat format", e.name)
	}
	e.commit.mu.Lock() // no write-back while the directory moves
	defer e.commit.mu.Unlock()
	if err := e.writeBack(); err != nil {
		return err
	}
	h := *e.h
	h.Capacity = capacity
	newN := int(h.numGDEntries())
	e.mu.Lock()
	defer e.mu.Unlock()
	if newN > len(e.gd) {
		gtSectors := divRoundUp(uint64(e.gtLen)*4, disk.SectorSize)
		gdSectors := divRoundUp(uint64(newN)*4, disk.SectorSize)
		pos := uint64(e.end / disk.SectorSize)
		dirs := [][]uint32{e.gd}
		if e.rgd != nil {
			dirs = append(dirs, e.rgd)
		}
		var offs []uint64
		var newDirs [][]uint32
		for _, old := range dirs {
			d := make([]uint32, newN)
			copy(d, old)
			offs = append(offs, pos)
			pos += gdSectors
			for i := len(old); i < newN; i++ {
				d[i] = uint32(pos)
				pos += gtSectors
			}
			newDirs = append(newDirs, d)
		}
		if pos > maxExtentSectors {
			// Directory entries are 32-bit sector numbers (§3.7).
			return disk.Errorf(disk.ErrNoSpace, "vmdk: %s: the grain tables for the new size would lie past the 2 TiB offset limit of the extent file", e.name)
		}
		end := int64(roundUp(pos, uint64(h.GrainSize))) * disk.SectorSize
		if err := e.f.Truncate(end); err != nil { // new tables are zeros
			return disk.Wrap(err, "vmdk: grow", e.name, -1)
		}
		for i, d := range newDirs {
			b := make([]byte, gdSectors*disk.SectorSize)
			for j, v := range d {
				binary.LittleEndian.PutUint32(b[j*4:], v)
			}
			if _, err := e.f.WriteAt(b, int64(offs[i])*disk.SectorSize); err != nil {
				return disk.Wrap(err, "vmdk: grow", e.name, -1)
			}
		}
		if err := e.f.Sync(); err != nil {
			return disk.Wrap(err, "vmdk: grow", e.name, -1)
		}
		h.GDOffset = offs[0]
		if len(offs) > 1 {
			h.GDOffset, h.RGDOffset = offs[1], offs[0]
			newDirs[0], newDirs[1] = newDirs[1], newDirs[0]
		}
		e.gd = newDirs[0]
		if len(newDirs) > 1 {
			e.rgd = newDirs[1]
		}
		e.end = end
		e.fileLen = end
	}
	*e.h = h
	e.size_ = int64(capacity) * disk.SectorSize
	if _, err := e.f.WriteAt(e.h.marshal(), 0); err != nil {
		return disk.Wrap(err, "vmdk: grow", e.name, 0)
	}
	return e.f.Sync()
}
