// Package cbt tracks which blocks of a disk changed, so that incremental
// backups read only what changed (VMware's changed block tracking).
//
// # Model
//
// A Tracker divides a disk into blocks (64 KiB by default) and keeps, for
// each epoch, the set of blocks written during it. Epochs are numbered from
// 1; Snapshot ends the current epoch and returns its change ID, "UUID/seq",
// where UUID identifies this tracker's history and seq the epoch that just
// ended. Changed(since, until) reports the blocks written after the since
// ID and up to the until ID (the current state when until is ""): the
// union of the epochs in between. The change ID "*" means everything;
// ChangedAllocated labels each changed range with the disk's extent flags,
// and "*" yields a thin full backup.
//
// The tracker also knows which changed blocks now read as zeros: a
// zeroing, trim or unmap of whole blocks (MarkZeroed) that no data write
// overlapped. Changed reports those with the Zero flag, so that an
// incremental reads only data (trims and unmaps do not inflate it: the
// VDDK 6.7 unmap issue) yet records the ranges that became zero, with no
// look at the disk's allocation: a query costs time in proportion to the
// changes, not to the disk.
//
// Sets are kept per 2 GiB chunk as sorted block lists that turn into
// bitmaps when dense, so memory follows the changed area, not the disk
// size: 1% of a 2 TiB disk changed in scattered blocks costs about 700 KB
// per epoch. At most MaxEpochs epochs are kept; older ones are merged,
// which can only over-report.
//
// # Persistence and crashes
//
// The state lives in one file, written whole (temporary file, sync, rename)
// at checkpoints (Flush, FlushAfter, Snapshot's caller, Close), with a
// CRC-32C over it. Between checkpoints a write-intent map (intent.go) names
// the coarse regions that may have changed since the last one; a write
// into a region not yet named waits until the map naming it is synced. A
// state file found "in use" at Open (an unclean stop: SIGKILL, power loss)
// is completed from the intent map: every block of the named regions is
// marked changed, and every change ID stays valid. Only when nothing says
// where the lost changes can be (no valid intent map for this history) does
// the tracker rotate its UUID: every older change ID becomes unknown
// (ErrNotFound, the caller takes a full backup). The tracker may
// over-report; it never under-reports.
//
// # Concurrency
//
// All methods are safe for concurrent use. BeginWrite is on the write
// path: it takes one mutex and allocates only when a chunk is first
// touched in an epoch; it syncs the intent map only for the first write
// into a region after a checkpoint.
package cbt

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"hash/crc32"
	"math/bits"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/vdisk-project/vdisk/disk"
)

const (
	// DefaultBlockSize is the tracking granularity in bytes.
	DefaultBlockSize = 64 << 10
	// MaxEpochs bounds the epochs kept; older ones are merged.
	MaxEpochs = 64
	// chunkBlocks is the number of blocks one container covers.
	chunkBlocks = 1 << 15
	// denseAt is the list length at which a container becomes a bitmap.
	denseAt = chunkBlocks / 16 / 2
)

// container is the set of changed blocks of one chunk: a sorted list, or a
// bitmap once dense.
type container struct {
	list []uint16
	bits []uint64
}

func (c *container) add(b uint16) {
	if c.bits != nil {
		c.bits[b/64] |= 1 << (b % 64)
		return
	}
	i, found := slices.BinarySearch(c.list, b)
	if found {
		return
	}
	if len(c.list) >= denseAt {
		c.bits = make([]uint64, chunkBlocks/64)
		for _, x := range c.list {
			c.bits[x/64] |= 1 << (x % 64)
		}
		c.bits[b/64] |= 1 << (b % 64)
		c.list = nil
		return
	}
	c.list = slices.Insert(c.list, i, b)
}

// remove takes block b out of the container.
func (c *container) remove(b uint16) {
	if c.bits != nil {
		c.bits[b/64] &^= 1 << (b % 64)
		return
	}
	if i, found := slices.BinarySearch(c.list, b); found {
		c.list = slices.Delete(c.list, i, i+1)
	}
}

// orInto sets the container's blocks in bm.
func (c *container) orInto(bm []uint64) {
	if c.bits != nil {
		for i, w := range c.bits {
			bm[i] |= w
		}
		return
	}
	for _, x := range c.list {
		bm[x/64] |= 1 << (x % 64)
	}
}

// epoch is the set of blocks written during one epoch (or, after merging,
// a range of epochs ending at seq). zero holds the blocks of chunks whose
// last change in the epoch made the whole block read as zeros.
type epoch struct {
	seq    uint64
	chunks map[uint64]*container
	zero   map[uint64]*container
	// index lists an ended epoch's chunks in order, with their containers,
	// for queries; built by the first one, reset when a merge changes the
	// epoch. The current epoch has none (writes add chunks).
	index []chunkRef
}

type chunkRef struct {
	k       uint64
	c, zero *container
}

// sortedChunks returns the epoch's chunks in order. The caller holds t.mu;
// cache is set for an ended epoch.
func (e *epoch) sortedChunks(cache bool) []chunkRef {
	if e.index != nil {
		return e.index
	}
	idx := make([]chunkRef, 0, len(e.chunks))
	for k, c := range e.chunks {
		idx = append(idx, chunkRef{k, c, e.zero[k]})
	}
	slices.SortFunc(idx, func(a, b chunkRef) int { return cmp.Compare(a.k, b.k) })
	if cache {
		e.index = idx
	}
	return idx
}

func newEpoch(seq uint64) *epoch {
	return &epoch{seq: seq, chunks: map[uint64]*container{}, zero: map[uint64]*container{}}
}

// Tracker records changed blocks of one disk. See the package doc.
type Tracker struct {
	fsys  disk.FS
	path  string
	mu    sync.Mutex
	uuid  [16]byte
	block int64
	size  int64
	floor uint64   // the oldest change ID seq still answerable
	cur   *epoch   // the epoch being written
	old   []*epoch // ended epochs, ascending seq
	// last speeds up MarkWritten for sequential writes.
	lastIdx uint64
	lastC   *container
	// The writes and zeroings in flight: a zeroing that a data write
	// overlapped while it ran is recorded as data (see BeginZero).
	nextOp uint64
	writes map[uint64]span
	zeros  map[uint64]*zeroOp
	dirty  bool
	closed bool

	in        intent           // the write-intent map (intent.go); guarded by mu
	imu       sync.Mutex       // serializes intent file writes and checkpoints
	recovered int64            // bytes marked changed from the intent map at Open
	saved     time.Time        // the last checkpoint
	now       func() time.Time // the clock
	afterSave func()           // tests: runs between a checkpoint's save and its clearing
}

type span struct{ off, end int64 }

func (a span) overlaps(b span) bool { return a.off < b.end && b.off < a.end }

type zeroOp struct {
	span
	tainted bool // a data write overlapped it while it ran
}

// Op is a write or zeroing in flight, from BeginWrite or BeginZero.
type Op struct{ id uint64 }

// ID is a parsed change ID.
type ID struct {
	UUID [16]byte
	Seq  uint64
}

// String formats a change ID the way vSphere does: the UUID as 16 spaced
// hex bytes with a dash in the middle, "/", the sequence number.
func (id ID) String() string {
	var b strings.Builder
	for i, x := range id.UUID {
		switch {
		case i == 8:
			b.WriteByte('-')
		case i > 0:
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%02x", x)
	}
	return b.String() + "/" + strconv.FormatUint(id.Seq, 10)
}

// ParseID parses a change ID (with or without spaces in the UUID).
func ParseID(s string) (ID, error) {
	var id ID
	u, seq, ok := strings.Cut(s, "/")
	if !ok {
		return id, disk.Errorf(disk.ErrInvalid, "cbt: malformed change ID %q", s)
	}
	hx := strings.NewReplacer(" ", "", "-", "").Replace(u)
	b, err := hex.DecodeString(hx)
	if err != nil || len(b) != 16 {
		return id, disk.Errorf(disk.ErrInvalid, "cbt: malformed change ID %q", s)
	}
	copy(id.UUID[:], b)
	if id.Seq, err = strconv.ParseUint(seq, 10, 64); err != nil {
		return id, disk.Errorf(disk.ErrInvalid, "cbt: malformed change ID %q", s)
	}
	return id, nil
}

func newUUID() [16]byte {
	var u [16]byte
	rand.Read(u[:])
	u[6] = u[6]&0x0f | 0x40
	u[8] = u[8]&0x3f | 0x80
	return u
}

// Create starts tracking a disk of size bytes in a new state file at path
// (blockSize 0 means DefaultBlockSize). The file is marked in use.
func Create(fsys disk.FS, path string, size, blockSize int64) (*Tracker, error) {
	if fsys == nil {
		fsys = disk.OSFS{}
	}
	if blockSize == 0 {
		blockSize = DefaultBlockSize
	}
	if blockSize < 512 || blockSize&(blockSize-1) != 0 || blockSize > 64<<20 {
		return nil, disk.Errorf(disk.ErrInvalid, "cbt: block size %d must be a power of two between 512 bytes and 64 MiB", blockSize)
	}
	if size < 0 {
		return nil, disk.Errorf(disk.ErrInvalid, "cbt: invalid size %d", size)
	}
	if _, err := fsys.Stat(path); err == nil {
		return nil, disk.Errorf(disk.ErrInvalid, "cbt: %s exists", path)
	}
	t := &Tracker{fsys: fsys, path: path, uuid: newUUID(), block: blockSize, size: size,
		floor: 0, cur: newEpoch(1)}
	t.init()
	if err := t.save(false); err != nil {
		return nil, err
	}
	if err := t.openIntent(); err != nil {
		return nil, err
	}
	return t, nil
}

func (t *Tracker) init() {
	t.now = time.Now
	t.saved = t.now()
	t.writes = map[uint64]span{}
	t.zeros = map[uint64]*zeroOp{}
}

// Open loads a tracker. If it was not closed cleanly it completes the
// state from the intent map; only when there is no valid intent map for
// this history does it rotate its UUID (see the package doc) and report
// rotated.
func Open(fsys disk.FS, path string) (t *Tracker, rotated bool, err error) {
	if fsys == nil {
		fsys = disk.OSFS{}
	}
	// A state file that is a link is refused: the host would otherwise
	// trust (and later rewrite) whatever it points to.
	f, err := fsys.OpenFile(path, os.O_RDONLY|disk.ONoFollow, 0)
	if err != nil {
		return nil, false, disk.Wrap(err, "cbt: open", path, -1)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, false, disk.Wrap(err, "cbt: open", path, -1)
	}
	if !st.Mode().IsRegular() {
		f.Close()
		return nil, false, disk.Errorf(disk.ErrPermission, "cbt: %s is not a regular file", path)
	}
	if st.Size() > maxFile {
		f.Close()
		return nil, false, disk.Errorf(disk.ErrCorrupt, "cbt: %s: state file of %d bytes is too large", path, st.Size())
	}
	b := make([]byte, st.Size())
	_, err = f.ReadAt(b, 0)
	f.Close()
	if err != nil {
		return nil, false, disk.Wrap(err, "cbt: read", path, 0)
	}
	t, clean, err := decode(b)
	if err != nil {
		return nil, false, disk.Wrap(err, "cbt: load", path, -1)
	}
	t.fsys, t.path = fsys, path
	t.init()
	if !clean {
		// Writes may have reached the disk after the last checkpoint; the
		// intent map names the regions they can be in.
		regions, shift, err := readIntent(fsys, t.intentPath(), t.uuid, t.size, t.block)
		if err == nil {
			t.recovered = t.markRegions(regions, shift)
		} else {
			// Nothing says where: start a new history.
			t.newHistory()
			rotated = true
		}
	}
	// The state (with what the intent map added) is durable before the
	// map is cleared.
	if err := t.save(false); err != nil {
		return nil, false, err
	}
	if err := t.openIntent(); err != nil {
		return nil, false, err
	}
	return t, rotated, nil
}

// Rotate starts a new history, as Open does when nothing says which changes
// a crash lost: every older change ID becomes unknown (ErrNotFound, the
// caller takes a full backup). The caller uses it when the disk changed
// outside its knowledge.
func (t *Tracker) Rotate() error {
	t.imu.Lock()
	defer t.imu.Unlock()
	t.mu.Lock()
	defer t.mu.Unlock()
	t.newHistory()
	if err := t.saveLocked(false); err != nil {
		return err
	}
	if t.in.f != nil {
		return t.resetIntentLocked()
	}
	return nil
}

// newHistory gives the tracker a new UUID and forgets the epochs. The
// caller holds t.mu or has the tracker alone.
func (t *Tracker) newHistory() {
	t.uuid = newUUID()
	t.floor = t.cur.seq
	t.old = nil
	t.cur = newEpoch(t.cur.seq + 1)
	t.lastC = nil
	t.dirty = true
}

// Abandon closes the tracker's files without marking its state clean: the
// next Open completes it from the intent map, as after a crash. For a disk
// whose files may change while it is closed in a way only the caller
// accounts for.
func (t *Tracker) Abandon() error {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return disk.Errorf(disk.ErrInvalid, "cbt: closed twice")
	}
	t.closed = true
	t.mu.Unlock()
	if t.in.f != nil {
		return disk.Wrap(t.in.f.Close(), "cbt: close intent map", t.intentPath(), -1)
	}
	return nil
}

// Recovered returns how many bytes Open marked changed because the intent
// map named them after an unclean stop.
func (t *Tracker) Recovered() int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.recovered
}

// ChangeID returns the ID of the current state: changes made after this
// call are reported by Changed(ChangeID(), …).
func (t *Tracker) ChangeID() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return ID{t.uuid, t.cur.seq - 1}.String()
}

// Snapshot ends the current epoch and returns its change ID, which a
// snapshot records: Changed(x, id) then reports the changes up to this
// point.
func (t *Tracker) Snapshot() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	id := ID{t.uuid, t.cur.seq}.String()
	t.old = append(t.old, t.cur)
	t.cur = newEpoch(t.cur.seq + 1)
	t.lastC = nil
	if len(t.old) > MaxEpochs {
		// Merge the two oldest: a query between them over-reports. A
		// block stays zero if its last change (b's, else a's) zeroed it.
		a, b := t.old[0], t.old[1]
		for k, c := range a.zero {
			bm := make([]uint64, chunkBlocks/64)
			c.orInto(bm)
			if d, ok := b.chunks[k]; ok {
				var changed [chunkBlocks / 64]uint64
				d.orInto(changed[:])
				for i := range bm {
					bm[i] &^= changed[i]
				}
			}
			if d, ok := b.zero[k]; ok {
				d.orInto(bm)
			}
			b.zero[k] = fromBitmap(bm)
		}
		for k, c := range a.chunks {
			bm := make([]uint64, chunkBlocks/64)
			c.orInto(bm)
			if d, ok := b.chunks[k]; ok {
				d.orInto(bm)
			}
			b.chunks[k] = fromBitmap(bm)
		}
		b.index = nil
		t.old = t.old[1:]
	}
	t.dirty = true
	return id
}

func fromBitmap(bm []uint64) *container {
	c := &container{}
	n := 0
	for _, w := range bm {
		n += bits.OnesCount64(w)
	}
	if n >= denseAt {
		c.bits = bm
		return c
	}
	for i, w := range bm {
		for w != 0 {
			j := bits.TrailingZeros64(w)
			c.list = append(c.list, uint16(i*64+j))
			w &= w - 1
		}
	}
	return c
}

// MarkWritten records that [off, off+n) changed in the current epoch and
// may hold data. Call it before the change can reach the disk; for writes
// and zeroings in flight use BeginWrite and BeginZero instead. It returns
// once the change is recorded durably enough to survive a crash (the
// intent map, intent.go); an error means it is not, and the change must
// not be made.
func (t *Tracker) MarkWritten(off, n int64) error {
	if n <= 0 || off < 0 {
		return nil
	}
	t.mu.Lock()
	seq := t.markLocked(off, n)
	t.mu.Unlock()
	return t.syncIntent(seq)
}

// markLocked records a change in the current epoch and the intent map,
// and returns the intent sequence number that must be durable before the
// change is made (0: already). The caller holds t.mu.
func (t *Tracker) markLocked(off, n int64) uint64 {
	first, last := uint64(off/t.block), uint64((off+n-1)/t.block)
	if len(t.cur.zero) > 0 {
		for b := first; b <= last; b++ {
			if z := t.cur.zero[b/chunkBlocks]; z != nil {
				z.remove(uint16(b % chunkBlocks))
			}
		}
	}
	for b := first; b <= last; b++ {
		idx := b / chunkBlocks
		c := t.lastC
		if c == nil || idx != t.lastIdx {
			c = t.cur.chunks[idx]
			if c == nil {
				c = &container{}
				t.cur.chunks[idx] = c
			}
			t.lastIdx, t.lastC = idx, c
		}
		c.add(uint16(b % chunkBlocks))
	}
	t.dirty = true
	return t.in.mark(off, n)
}

// BeginWrite records a data write of [off, off+n) about to be made, as
// MarkWritten does, and that it is in flight until End. A zeroing that it
// overlaps while both run is recorded as data.
func (t *Tracker) BeginWrite(off, n int64) (Op, error) {
	if n <= 0 || off < 0 {
		return Op{}, nil
	}
	sp := span{off, off + n}
	t.mu.Lock()
	seq := t.markLocked(off, n)
	for _, z := range t.zeros {
		if z.overlaps(sp) {
			z.tainted = true
		}
	}
	t.nextOp++
	op := Op{t.nextOp}
	t.writes[op.id] = sp
	t.mu.Unlock()
	if err := t.syncIntent(seq); err != nil {
		t.End(op)
		return Op{}, err
	}
	return op, nil
}

// End ends a write begun with BeginWrite, whatever its outcome.
func (t *Tracker) End(op Op) {
	if op.id == 0 {
		return
	}
	t.mu.Lock()
	delete(t.writes, op.id)
	t.mu.Unlock()
}

// BeginZero records a zeroing, trim or unmap of [off, off+n) about to be
// made (as MarkWritten). EndZero then records the whole blocks it covers as
// reading zeros, unless a data write overlapping it was in flight at any
// moment while it ran: then the blocks may hold that write's data after
// all, and they stay recorded as data. It never under-reports: a block is
// Zero only if its last change in the epoch zeroed it whole.
func (t *Tracker) BeginZero(off, n int64) (Op, error) {
	if n <= 0 || off < 0 {
		return Op{}, nil
	}
	z := &zeroOp{span: span{off, off + n}}
	t.mu.Lock()
	seq := t.markLocked(off, n)
	for _, w := range t.writes {
		if w.overlaps(z.span) {
			z.tainted = true
			break
		}
	}
	t.nextOp++
	op := Op{t.nextOp}
	t.zeros[op.id] = z
	t.mu.Unlock()
	if err := t.syncIntent(seq); err != nil {
		t.EndZero(op, false)
		return Op{}, err
	}
	return op, nil
}

// EndZero ends a zeroing begun with BeginZero; ok says that it succeeded.
func (t *Tracker) EndZero(op Op, ok bool) {
	if op.id == 0 {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	z := t.zeros[op.id]
	delete(t.zeros, op.id)
	if z == nil || !ok || z.tainted {
		return
	}
	first := uint64((z.off + t.block - 1) / t.block)
	end := uint64(z.end / t.block)
	for b := first; b < end; b++ {
		idx := b / chunkBlocks
		if t.cur.chunks[idx] == nil {
			continue // not recorded as changed
		}
		zc := t.cur.zero[idx]
		if zc == nil {
			zc = &container{}
			t.cur.zero[idx] = zc
		}
		zc.add(uint16(b % chunkBlocks))
	}
	t.dirty = true
}

// Resize records a new disk size. Growing marks the new range changed (it
// reads as zeros, which a backup must also see); shrinking forgets nothing.
// The state is saved and the intent map laid out anew for the new size
// before it returns.
func (t *Tracker) Resize(size int64) error {
	t.imu.Lock()
	defer t.imu.Unlock()
	t.mu.Lock()
	defer t.mu.Unlock()
	old := t.size
	t.size = size
	t.dirty = true
	if size > old {
		t.markLocked(old, size-old)
	}
	if err := t.saveLocked(false); err != nil {
		return err
	}
	return t.resetIntentLocked()
}

// Changed reports the ranges changed after since and up to until ("" for
// now), within [off, off+n), ascending and coalesced, at block
// granularity. since "*" reports the whole range. An ID from another
// history (the tracker rotated), or older than what is kept, gives
// ErrNotFound: take a full backup.
func (t *Tracker) Changed(ctx context.Context, since, until string, off, n int64, fn func(disk.Extent) error) error {
	t.mu.Lock()
	size := t.size
	end := min(off+n, size)
	if off < 0 || n < 0 {
		t.mu.Unlock()
		return disk.Errorf(disk.ErrInvalid, "cbt: negative range")
	}
	if since == "*" {
		t.mu.Unlock()
		if off < end {
			return fn(disk.Extent{Off: off, Len: end - off})
		}
		return nil
	}
	lo, err := t.resolve(since)
	if err != nil {
		t.mu.Unlock()
		return err
	}
	hi := t.cur.seq
	if until != "" {
		if hi, err = t.resolve(until); err != nil {
			t.mu.Unlock()
			return err
		}
	}
	if lo < t.floor {
		t.mu.Unlock()
		return disk.Errorf(disk.ErrNotFound, "cbt: change ID %s is older than the kept history", since)
	}
	if lo > hi {
		t.mu.Unlock()
		return disk.Errorf(disk.ErrInvalid, "cbt: change ID %s is newer than %s: nothing can be answered for a reversed range", since, until)
	}
	// Collect the chunk indexes of the selected epochs (seq in (lo, hi]).
	// An epoch that older ones were merged into covers their sequence
	// numbers too: the one covering hi is taken whole (over-reporting,
	// never under).
	var sel []*epoch
	for _, e := range append(append([]*epoch(nil), t.old...), t.cur) {
		if e.seq > lo {
			sel = append(sel, e)
		}
		if e.seq >= hi {
			break
		}
	}
	var idx []uint64
	var one []chunkRef // a single epoch's chunks, in order
	if len(sel) == 1 {
		one = sel[0].sortedChunks(sel[0] != t.cur)
		idx = make([]uint64, len(one))
		for i, r := range one {
			idx[i] = r.k
		}
	} else {
		keys := map[uint64]bool{}
		for _, e := range sel {
			for k := range e.chunks {
				keys[k] = true
			}
		}
		idx = make([]uint64, 0, len(keys))
		for k := range keys {
			idx = append(idx, k)
		}
	}
	slices.Sort(idx)
	// Union per chunk under the lock, into private bitmaps; report after.
	// Epochs are visited newest first: a block's last change decides
	// whether it reads as zeros.
	type run struct {
		off, n int64
		zero   bool
	}
	var runs []run
	bm := make([]uint64, chunkBlocks/64)   // changed
	zb := make([]uint64, chunkBlocks/64)   // changed, last to zeros
	tmp := make([]uint64, chunkBlocks/64)  // one epoch's changes
	tmpz := make([]uint64, chunkBlocks/64) // one epoch's zeroed blocks
	cov := int64(chunkBlocks) * t.block
	var words []int                    // the words of bm and zb a chunk of lists touched
	cs := make([]*container, len(sel)) // the chunk's containers, by epoch
	zs := make([]*container, len(sel))
	runs = make([]run, 0, len(idx))
	for n, k := range idx {
		if int64(k)*cov >= end || int64(k+1)*cov <= off {
			continue
		}
		// A chunk every epoch holds as a short list is merged word by word,
		// touching only the words it names: a few blocks changed in each of
		// many chunks (a large disk) cost what they name, not 4 KiB each.
		sparse := true
		for x, e := range sel {
			if one != nil {
				cs[x], zs[x] = one[n].c, one[n].zero
			} else {
				cs[x], zs[x] = e.chunks[k], nil
				if cs[x] != nil {
					zs[x] = e.zero[k]
				}
			}
			if cs[x] != nil {
				sparse = sparse && cs[x].bits == nil && (zs[x] == nil || zs[x].bits == nil)
			}
		}
		words = words[:0]
		if sparse {
			for x := len(sel) - 1; x >= 0; x-- {
				c, z := cs[x], zs[x]
				if c == nil {
					continue
				}
				if z != nil {
					for _, b := range z.list {
						tmpz[b/64] |= 1 << (b % 64)
					}
				}
				for _, b := range c.list {
					w, m := int(b/64), uint64(1)<<(b%64)
					if bm[w]&m != 0 {
						continue // a newer epoch decided
					}
					if bm[w] == 0 {
						words = append(words, w)
					}
					bm[w] |= m
					zb[w] |= m & tmpz[w]
				}
				if z != nil {
					for _, b := range z.list {
						tmpz[b/64] = 0
					}
				}
			}
			slices.Sort(words)
		} else {
			clear(bm)
			clear(zb)
			for x := len(sel) - 1; x >= 0; x-- {
				c, z := cs[x], zs[x]
				if c == nil {
					continue
				}
				if z == nil {
					c.orInto(bm)
					continue
				}
				clear(tmp)
				clear(tmpz)
				c.orInto(tmp)
				z.orInto(tmpz)
				for i := range bm {
					zb[i] |= tmp[i] &^ bm[i] & tmpz[i]
					bm[i] |= tmp[i]
				}
			}
			clear(tmpz)
			for i := range bm {
				words = append(words, i)
			}
		}
		for _, i := range words {
			w := bm[i]
			for w != 0 {
				j := bits.TrailingZeros64(w)
				b := int64(k)*chunkBlocks + int64(i*64+j)
				o := b * t.block
				z := zb[i]&(1<<j) != 0
				if r := len(runs); r > 0 && runs[r-1].off+runs[r-1].n == o && runs[r-1].zero == z {
					runs[r-1].n += t.block
				} else {
					runs = append(runs, run{o, t.block, z})
				}
				w &= w - 1
			}
			bm[i], zb[i] = 0, 0
		}
	}
	t.mu.Unlock()
	for i, r := range runs {
		if i%4096 == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		a, b := max(r.off, off), min(r.off+r.n, end)
		if a < b {
			var f disk.ExtentFlags
			if r.zero {
				f = disk.Zero
			}
			if err := fn(disk.Extent{Off: a, Len: b - a, Flags: f}); err != nil {
				return err
			}
		}
	}
	return nil
}

// resolve checks that a change ID belongs to this history and returns its
// sequence number. The caller holds t.mu.
func (t *Tracker) resolve(s string) (uint64, error) {
	id, err := ParseID(s)
	if err != nil {
		return 0, err
	}
	if id.UUID != t.uuid || id.Seq >= t.cur.seq {
		return 0, disk.Errorf(disk.ErrNotFound, "cbt: unknown change ID %s; a full backup is needed", s)
	}
	return id.Seq, nil
}

// ChangedAllocated reports the changed ranges (as Changed) with the flags
// d gives them: data to copy, or ranges that now read as zeros (Zero, and
// Hole when deallocated, as after a trim or unmap), which an incremental
// backup records as zeros without reading them. So trims do not inflate
// the bytes an incremental reads (the VDDK 6.7 unmap issue), and a restore
// still zeroes what the guest zeroed. since "*" reports only the ranges
// holding data: a thin full backup onto a zeroed target.
func ChangedAllocated(ctx context.Context, t *Tracker, since, until string, d disk.Disk, off, n int64, fn func(disk.Extent) error) error {
	all := since == "*"
	return t.Changed(ctx, since, until, off, n, func(c disk.Extent) error {
		return disk.Extents(ctx, d, c.Off, c.Len, func(e disk.Extent) error {
			if all && !e.Flags.Data() {
				return nil
			}
			return fn(e)
		})
	})
}

// Close checkpoints and marks the state clean (the next Open trusts it
// without the intent map), and closes the tracker's files.
func (t *Tracker) Close() error {
	err := t.checkpoint(true)
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return disk.Errorf(disk.ErrInvalid, "cbt: closed twice")
	}
	t.closed = true
	t.mu.Unlock()
	if t.in.f != nil {
		if cerr := t.in.f.Close(); err == nil {
			err = disk.Wrap(cerr, "cbt: close intent map", t.intentPath(), -1)
		}
	}
	return err
}

func (t *Tracker) save(clean bool) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.saveLocked(clean)
}

func (t *Tracker) saveLocked(clean bool) error {
	if err := disk.WriteFileAtomic(t.fsys, t.path, t.encode(clean), 0o600); err != nil {
		return disk.Wrap(err, "cbt: save", t.path, -1)
	}
	t.dirty = false
	return nil
}

// The state file: magic, version (2), flags (bit 0: clean), UUID, block
// size, disk size, floor, number of epochs, then each epoch: seq, its
// changed chunks and (since version 2) its zeroed chunks, each as a count
// then per chunk index, kind, count, data; then a CRC-32C of
// everything before it. All integers little-endian.
const (
	fileMagic = "VDCBT\x00\x00\x01"
	maxFile   = 1 << 30
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func (t *Tracker) encode(clean bool) []byte {
	le := binary.LittleEndian
	b := []byte(fileMagic)
	b = le.AppendUint32(b, 2)
	var flags uint32
	if clean {
		flags = 1
	}
	b = le.AppendUint32(b, flags)
	b = append(b, t.uuid[:]...)
	b = le.AppendUint64(b, uint64(t.block))
	b = le.AppendUint64(b, uint64(t.size))
	b = le.AppendUint64(b, t.floor)
	eps := append(append([]*epoch(nil), t.old...), t.cur)
	b = le.AppendUint32(b, uint32(len(eps)))
	for _, e := range eps {
		b = le.AppendUint64(b, e.seq)
		b = appendChunks(b, e.chunks)
		b = appendChunks(b, e.zero)
	}
	return le.AppendUint32(b, crc32.Checksum(b, castagnoli))
}

// appendChunks encodes a set of containers: count, then each container
// (index, kind, count, data).
func appendChunks(b []byte, chunks map[uint64]*container) []byte {
	le := binary.LittleEndian
	{
		keys := make([]uint64, 0, len(chunks))
		for k := range chunks {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		b = le.AppendUint32(b, uint32(len(keys)))
		for _, k := range keys {
			c := chunks[k]
			b = le.AppendUint64(b, k)
			if c.bits != nil {
				b = append(b, 1)
				b = le.AppendUint32(b, uint32(len(c.bits)))
				for _, w := range c.bits {
					b = le.AppendUint64(b, w)
				}
			} else {
				b = append(b, 0)
				b = le.AppendUint32(b, uint32(len(c.list)))
				for _, x := range c.list {
					b = le.AppendUint16(b, x)
				}
			}
		}
	}
	return b
}

// decode parses a state file; every count is checked against the bytes
// left before anything is allocated.
func decode(b []byte) (*Tracker, bool, error) {
	bad := func(why string) (*Tracker, bool, error) {
		return nil, false, disk.Errorf(disk.ErrCorrupt, "cbt: state file %s", why)
	}
	le := binary.LittleEndian
	if len(b) < len(fileMagic)+8+16+24+4+4 || string(b[:len(fileMagic)]) != fileMagic {
		return bad("has a bad magic or is truncated")
	}
	body, sum := b[:len(b)-4], le.Uint32(b[len(b)-4:])
	if crc32.Checksum(body, castagnoli) != sum {
		return bad("fails its checksum")
	}
	p := body[len(fileMagic):]
	take := func(n int) []byte {
		if len(p) < n {
			return nil
		}
		x := p[:n]
		p = p[n:]
		return x
	}
	version := le.Uint32(take(4))
	if version != 1 && version != 2 {
		return nil, false, disk.Errorf(disk.ErrNotSupported, "cbt: state file version %d", version)
	}
	clean := le.Uint32(take(4))&1 != 0
	t := &Tracker{}
	copy(t.uuid[:], take(16))
	t.block = int64(le.Uint64(take(8)))
	t.size = int64(le.Uint64(take(8)))
	t.floor = le.Uint64(take(8))
	if t.block < 512 || t.block&(t.block-1) != 0 || t.block > 64<<20 || t.size < 0 {
		return bad("has an invalid block size or disk size")
	}
	ne := take(4)
	if ne == nil {
		return bad("is truncated")
	}
	n := le.Uint32(ne)
	if n == 0 || int(n) > MaxEpochs+1 {
		return bad("holds an invalid number of epochs")
	}
	var prev uint64
	for i := range n {
		h := take(8)
		if h == nil {
			return bad("is truncated")
		}
		e := newEpoch(le.Uint64(h))
		if e.seq <= prev {
			return bad("has epochs out of order")
		}
		prev = e.seq
		sets := []map[uint64]*container{e.chunks}
		if version >= 2 {
			sets = append(sets, e.zero) // zero sets came with version 2
		}
		for _, set := range sets {
			nb := take(4)
			if nb == nil {
				return bad("is truncated")
			}
			nc := le.Uint32(nb)
			if uint64(nc)*13 > uint64(len(p)) {
				return bad("is truncated")
			}
			for range nc {
				ch := take(13)
				if ch == nil {
					return bad("is truncated")
				}
				k, kind, cnt := le.Uint64(ch), ch[8], le.Uint32(ch[9:])
				c := &container{}
				switch {
				case kind == 1 && cnt == chunkBlocks/64:
					d := take(int(cnt) * 8)
					if d == nil {
						return bad("is truncated")
					}
					c.bits = make([]uint64, cnt)
					for j := range c.bits {
						c.bits[j] = le.Uint64(d[j*8:])
					}
				case kind == 0 && cnt <= chunkBlocks:
					d := take(int(cnt) * 2)
					if d == nil {
						return bad("is truncated")
					}
					c.list = make([]uint16, cnt)
					for j := range c.list {
						c.list[j] = le.Uint16(d[j*2:])
					}
					if !slices.IsSorted(c.list) {
						return bad("has an unsorted block list")
					}
				default:
					return bad("has an invalid chunk")
				}
				set[k] = c
			}
		}
		for k := range e.zero {
			if e.chunks[k] == nil {
				return bad("has zeroed blocks in an unchanged chunk")
			}
		}
		if i == n-1 {
			t.cur = e
		} else {
			t.old = append(t.old, e)
		}
	}
	if len(p) != 0 {
		return bad("has trailing bytes")
	}
	if t.floor >= t.cur.seq {
		return bad("has a floor past its current epoch")
	}
	return t, clean, nil
}
