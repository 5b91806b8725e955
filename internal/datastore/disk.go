package datastore

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vdisk-project/vdisk/disk"
	"github.com/vdisk-project/vdisk/format/vmdk"
	"github.com/vdisk-project/vdisk/hostapi"
	"github.com/vdisk-project/vdisk/internal/cbt"
)

// layer is one VMDK link of a disk's tree.
type layer struct {
	ID     int `json:"id"`
	Parent int `json:"parent"` // -1 for the base
}

// snapshotRec is a snapshot as disk.json keeps it.
type snapshotRec struct {
	ID          string    `json:"id"`
	Name        string    `json:"name,omitempty"`
	Description string    `json:"description,omitempty"`
	Created     time.Time `json:"created"`
	Layer       int       `json:"layer"`
	Capacity    int64     `json:"capacity"`
	ChangeID    string    `json:"changeId,omitempty"`
	// Owner is the session that made a temporary snapshot; Cleanup removes
	// it once that session is gone.
	Owner string `json:"owner,omitempty"`
}

// pendingOp is an operation that must be finished if a crash stops it.
type pendingOp struct {
	Kind   string `json:"kind"` // "merge" or "relocate"
	From   int    `json:"from,omitempty"`
	Into   int    `json:"into,omitempty"`
	Target string `json:"target,omitempty"`
}

// diskState is disk.json.
type diskState struct {
	Name         string         `json:"name"`
	VM           string         `json:"vm,omitempty"`
	Key          string         `json:"key,omitempty"`
	Datastore    string         `json:"datastore,omitempty"`
	Capacity     int64          `json:"capacity"`
	Type         vmdk.Subformat `json:"type"`
	Adapter      string         `json:"adapter"`
	Created      time.Time      `json:"created"`
	Layers       []layer        `json:"layers"`
	Leaf         int            `json:"leaf"`
	NextLayer    int            `json:"nextLayer"`
	NextSnapshot int            `json:"nextSnapshot"`
	Snapshots    []snapshotRec  `json:"snapshots,omitempty"`
	CBT          bool           `json:"cbt,omitempty"`
	CBTBlockSize int64          `json:"cbtBlockSize,omitempty"`
	Leases       []Lease        `json:"leases,omitempty"`
	Direct       []DirectLease  `json:"direct,omitempty"`
	Op           *pendingOp     `json:"op,omitempty"`
}

func (st *diskState) layer(id int) *layer {
	for i := range st.Layers {
		if st.Layers[i].ID == id {
			return &st.Layers[i]
		}
	}
	return nil
}

func (st *diskState) children(id int) []int {
	var out []int
	for _, l := range st.Layers {
		if l.Parent == id {
			out = append(out, l.ID)
		}
	}
	return out
}

func (st *diskState) pinned(id int) bool {
	return slices.ContainsFunc(st.Snapshots, func(s snapshotRec) bool { return s.Layer == id })
}

// path returns the layer IDs from id down to the base.
func (st *diskState) path(id int) []int {
	var out []int
	for l := st.layer(id); l != nil && len(out) <= len(st.Layers); l = st.layer(l.Parent) {
		out = append(out, l.ID)
	}
	return out
}

func (st *diskState) snapshot(id string) (*snapshotRec, int) {
	for i := range st.Snapshots {
		if st.Snapshots[i].ID == id {
			return &st.Snapshots[i], i
		}
	}
	return nil, -1
}

// Disk is one disk of the datastore, open while the Store is.
type Disk struct {
	s    *Store
	name string
	dir  string // ROOT/disks/NAME: disk.json and cbt.state

	ops  sync.Mutex   // serializes snapshot, merge, revert, grow, relocation
	gate sync.RWMutex // I/O shared; layer switches exclusive

	mu      sync.Mutex // guards the fields below
	st      diskState
	live    *vmdk.Disk // the leaf chain; replaced only with gate held exclusively
	tracker *cbt.Tracker
	handles int            // open live handles
	readers map[string]int // open snapshot handles by snapshot ID
	moving  bool           // a relocation is running
	retired bool
	liveID  int   // the layer d.live tops
	writing []int // SEsparse layers open for writing, as writing.json names them
	// reclaimed counts the leaked grains reclaimed at load (tests).
	reclaimed int
}

func (s *Store) diskDir(name string) string { return filepath.Join(s.root, "disks", name) }

// dataDir returns the directory holding the disk's layers.
func (d *Disk) dataDir() string {
	dir, err := d.s.targetDir(d.st.Datastore)
	if err != nil {
		dir = d.s.root
	}
	return filepath.Join(dir, "disks", d.name)
}

func layerFile(name string, id int) string { return fmt.Sprintf("%s-%06d.vmdk", name, id) }

func (d *Disk) layerPath(id int) string { return filepath.Join(d.dataDir(), layerFile(d.name, id)) }

// layerID parses a layer file name of this disk ("NAME-000007.vmdk" or one
// of its extent files "NAME-000007-flat.vmdk", "NAME-000007-s001.vmdk").
func layerID(disk, file string) (int, bool) {
	rest, ok := strings.CutPrefix(file, disk+"-")
	if !ok || len(rest) < 6+len(".vmdk") || !strings.HasSuffix(rest, ".vmdk") {
		return 0, false
	}
	id, err := strconv.Atoi(rest[:6])
	if err != nil || id < 0 {
		return 0, false
	}
	if tail := rest[6:]; tail != ".vmdk" && !strings.HasPrefix(tail, "-") {
		return 0, false
	}
	return id, true
}

// layerFiles lists the files of layer id in dir.
func layerFiles(dir, name string, id int) []string {
	ents, _ := os.ReadDir(dir)
	var out []string
	for _, e := range ents {
		if x, ok := layerID(name, e.Name()); ok && x == id {
			out = append(out, filepath.Join(dir, e.Name()))
		}
	}
	return out
}

func removeLayer(dir, name string, id int) error {
	var errs []error
	for _, f := range layerFiles(dir, name, id) {
		if err := os.Remove(f); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// commit writes disk.json. The caller holds d.mu.
func (d *Disk) commit() error {
	if f := d.s.failCommit; f != nil {
		if err := f(); err != nil {
			return err
		}
	}
	d.pruneViews(false)
	return writeJSON(filepath.Join(d.dir, "disk.json"), &d.st)
}

func (s *Store) createDisk(ctx context.Context, spec DiskSpec) (*Disk, error) {
	dir := s.diskDir(spec.Name)
	if err := os.Mkdir(dir, 0o750); err != nil && !errors.Is(err, fs.ErrExist) {
		return nil, disk.Wrap(err, "datastore: create", dir, -1)
	}
	if err := checkDir(dir); err != nil {
		return nil, err
	}
	// Leftovers of a creation a crash interrupted.
	if _, err := os.Lstat(filepath.Join(dir, "disk.json")); err == nil {
		return nil, disk.Errorf(disk.ErrInvalid, "datastore: disk %s exists", spec.Name)
	}
	removeLayer(dir, spec.Name, 0)
	os.Remove(filepath.Join(dir, "cbt.state"))
	os.Remove(cbt.IntentPath(filepath.Join(dir, "cbt.state")))
	d := &Disk{s: s, name: spec.Name, dir: dir, readers: map[string]int{},
		st: diskState{Name: spec.Name, Capacity: spec.Capacity, Type: spec.Type, Adapter: spec.Adapter,
			Created: s.o.Now().UTC(), Layers: []layer{{ID: 0, Parent: -1}}, Leaf: 0, NextLayer: 1, NextSnapshot: 1, CBT: spec.CBT,
			CBTBlockSize: spec.CBTBlockSize}}
	// Sparse layers record zeroed grains in their tables (header version
	// 2), so zeroing and trimming write no data.
	// Files are made to fit the filesystem's size limit, or refused
	// naming it.
	zg := spec.Type == vmdk.MonolithicSparse || spec.Type == vmdk.TwoGbMaxExtentSparse
	v, err := vmdk.Create(ctx, d.layerPath(0), spec.Capacity, &vmdk.CreateOptions{Subformat: spec.Type, Adapter: spec.Adapter, HWVersion: 14,
		ZeroedGrain: zg, ForceShare: true, MaxFileSize: fileLimit(d.dataDir())})
	if err != nil {
		return nil, err
	}
	// Recorded before the first write, as openLive does (writing.go).
	if err := d.markWriting(0, v); err != nil {
		v.Close()
		removeLayer(dir, spec.Name, 0)
		return nil, err
	}
	d.live, d.liveID = v, 0
	if spec.CBT {
		if d.tracker, err = cbt.Create(nil, filepath.Join(dir, "cbt.state"), v.Size(), spec.CBTBlockSize); err != nil {
			v.Close()
			removeLayer(dir, spec.Name, 0)
			return nil, err
		}
	}
	d.st.Capacity = v.Size()
	d.mu.Lock()
	err = d.commit()
	d.mu.Unlock()
	if err != nil {
		d.close()
		removeLayer(dir, spec.Name, 0)
		return nil, err
	}
	return d, nil
}

func (s *Store) loadDisk(ctx context.Context, name string) (*Disk, error) {
	dir := s.diskDir(name)
	if err := checkDir(dir); err != nil {
		return nil, err
	}
	b, err := readSmall(filepath.Join(dir, "disk.json"))
	if err != nil {
		return nil, err
	}
	d := &Disk{s: s, name: name, dir: dir, readers: map[string]int{}}
	disk.RemoveAtomicLeftovers(dir) // state writes a crash cut short
	if err := jsonUnmarshal(b, &d.st); err != nil {
		return nil, disk.Errorf(disk.ErrCorrupt, "datastore: %s/disk.json: %v", dir, err)
	}
	if d.st.Name != name || d.st.layer(d.st.Leaf) == nil || d.st.Capacity <= 0 {
		return nil, disk.Errorf(disk.ErrCorrupt, "datastore: %s/disk.json is inconsistent", dir)
	}
	if _, err := s.targetDir(d.st.Datastore); err != nil {
		return nil, err
	}
	if err := checkDir(d.dataDir()); err != nil {
		return nil, err
	}
	if d.st.CBT {
		t, rotated, err := cbt.Open(nil, filepath.Join(dir, "cbt.state"))
		if errors.Is(err, fs.ErrNotExist) {
			// Enabled but never saved: start afresh (clients see an unknown
			// change ID and take a full backup).
			t, err = cbt.Create(nil, filepath.Join(dir, "cbt.state"), d.st.Capacity, d.st.CBTBlockSize)
			rotated = true
		}
		if err != nil {
			return nil, err
		}
		// The seal is spent at open: a crash from here on must not leave
		// an old seal that the next clean open would trust.
		if !rotated && d.sealBroken() {
			s.log.Warn("the disk's files changed while the host was down; change tracking starts a new history", "disk", name)
			if err := t.Rotate(); err != nil {
				t.Close()
				return nil, err
			}
			rotated = true
		}
		os.Remove(d.sealPath())
		d.tracker = t
		switch {
		case rotated:
			s.log.Warn("change tracking restarted after an unclean stop with no usable intent map; earlier change IDs are void", "disk", name, "change_id", t.ChangeID())
		case t.Recovered() > 0:
			s.log.Warn("change tracking completed after an unclean stop from its intent map", "disk", name, "marked_bytes", t.Recovered())
		}
	}
	// Leaks an unclean stop left in SEsparse layers, before anything
	// writes them again.
	if err := d.reclaimLeaks(ctx); err != nil {
		d.close()
		return nil, err
	}
	if op := d.st.Op; op != nil {
		s.log.Warn("finishing an interrupted operation", "disk", name, "op", op.Kind)
		if err := d.recover(ctx); err != nil {
			d.close()
			return nil, err
		}
	}
	d.sweep()
	if l := d.st.writeLease(); l != nil {
		s.log.Warn("disk is leased for a direct restore; it stays closed until the lease ends (vdisk cleanup)", "disk", name, "lease", l.ID)
		return d, nil
	}
	if err := d.openLive(ctx, true); err != nil {
		d.close()
		return nil, err
	}
	return d, nil
}

// sweep removes layer files no state names (a crash between making or
// retiring a layer and committing disk.json).
func (d *Disk) sweep() {
	dir := d.dataDir()
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		id, ok := layerID(d.name, e.Name())
		if ok && d.st.layer(id) == nil {
			d.s.log.Info("removing a stray layer file", "disk", d.name, "file", e.Name())
			os.Remove(filepath.Join(dir, e.Name()))
		}
	}
}

// openLive opens the leaf chain for writing. check runs a leak repair
// first when the leaf was not closed cleanly.
func (d *Disk) openLive(ctx context.Context, check bool) error {
	path := d.layerPath(d.st.Leaf)
	o := &vmdk.OpenOptions{IgnoreCID: true, ForceShare: true, MaxFileSize: fileLimit(d.dataDir())}
	v, err := vmdk.Open(ctx, path, o)
	if err != nil {
		return err
	}
	if check && v.Info().Unclean {
		v.Close()
		rep, err := vmdk.Check(ctx, path, &vmdk.CheckOptions{Repair: vmdk.RepairLeaks, IgnoreCID: true})
		if err != nil {
			return err
		}
		d.s.log.Warn("repaired a layer that was not closed cleanly", "disk", d.name, "leaks", rep.Leaks, "errors", rep.Errors)
		if v, err = vmdk.Open(ctx, path, o); err != nil {
			return err
		}
	}
	if err := d.checkChain(v, d.st.Leaf); err != nil {
		v.Close()
		return err
	}
	// Recorded before anything can write the leaf (see writing.go).
	if err := d.markWriting(d.st.Leaf, v); err != nil {
		v.Close()
		return err
	}
	d.live, d.liveID = v, d.st.Leaf
	return nil
}

// checkChain verifies that an opened chain is the one the state names and
// that every file lies in the disk's directory.
func (d *Disk) checkChain(v *vmdk.Disk, top int) error {
	info := v.Info()
	want := d.st.path(top)
	if info.Links != len(want) {
		return disk.Errorf(disk.ErrCorrupt, "datastore: disk %s: layer %d opens a chain of %d links, the state says %d", d.name, top, info.Links, len(want))
	}
	dir := d.dataDir()
	for _, f := range info.Files {
		abs, err := filepath.Abs(f.Path)
		if err != nil || filepath.Dir(abs) != dir {
			return disk.Errorf(disk.ErrPermission, "datastore: disk %s: file %s lies outside its directory", d.name, f.Path)
		}
		if st, err := os.Lstat(abs); err != nil || !st.Mode().IsRegular() {
			return disk.Errorf(disk.ErrPermission, "datastore: disk %s: %s is not a regular file", d.name, f.Path)
		}
	}
	return nil
}

// close closes the live chain and the tracker cleanly.
func (d *Disk) close() error {
	d.gate.Lock()
	defer d.gate.Unlock()
	d.mu.Lock()
	defer d.mu.Unlock()
	d.pruneViews(true)
	var errs []error
	sealed := false
	if d.live != nil {
		err := d.live.Close()
		errs = append(errs, err)
		d.live = nil
		if err == nil {
			d.unmarkWriting(d.liveID)
			errs = append(errs, d.clearWriting())
		}
		if err == nil && d.tracker != nil {
			// The seal first: a tracker closed clean without one would be
			// trusted even if the files changed while the host was down.
			err = d.writeSeal()
			errs = append(errs, err)
			sealed = err == nil
		}
	}
	if d.tracker != nil {
		if sealed {
			errs = append(errs, d.tracker.Close())
		} else {
			errs = append(errs, d.tracker.Abandon())
		}
		d.tracker = nil
	}
	return errors.Join(errs...)
}

// retire closes a disk about to be deleted; it fails with ErrBusy while
// handles, leases or snapshots readers hold it. The caller holds s.mu.
func (d *Disk) retire() error {
	d.mu.Lock()
	busy := d.handles > 0 || len(d.st.Leases) > 0 || len(d.st.Direct) > 0 || d.moving || len(d.readers) > 0
	if !busy {
		for _, n := range d.readers {
			busy = busy || n > 0
		}
	}
	if busy {
		d.mu.Unlock()
		return disk.Errorf(disk.ErrBusy, "datastore: disk %s is in use (open sessions, access leases or a relocation)", d.name)
	}
	d.retired = true
	d.mu.Unlock()
	return d.close()
}

func (d *Disk) removeFiles() error {
	data := d.dataDir()
	err := os.RemoveAll(data)
	if data != d.dir {
		err = errors.Join(err, os.RemoveAll(d.dir))
	}
	return disk.Wrap(err, "datastore: remove", d.dir, -1)
}

func (d *Disk) owner() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.st.VM
}

// Name returns the disk's name.
func (d *Disk) Name() string { return d.name }

// DiskInfo is [hostapi.DiskInfo].
type DiskInfo = hostapi.DiskInfo

// SnapshotInfo is [hostapi.SnapshotInfo].
type SnapshotInfo = hostapi.SnapshotInfo

func (r snapshotRec) info() SnapshotInfo {
	return SnapshotInfo{ID: r.ID, Name: r.Name, Description: r.Description, Created: r.Created,
		Capacity: r.Capacity, ChangeID: r.ChangeID, Temporary: r.Owner != "", Owner: r.Owner}
}

// Info describes the disk.
func (d *Disk) Info() DiskInfo {
	d.mu.Lock()
	defer d.mu.Unlock()
	ds := d.st.Datastore
	if ds == "" {
		ds = "default"
	}
	in := DiskInfo{Name: d.name, VM: d.st.VM, Key: d.st.Key, Datastore: ds, Capacity: d.st.Capacity,
		Type: string(d.st.Type), Adapter: d.st.Adapter, Created: d.st.Created, CBT: d.st.CBT, CBTBlockSize: d.st.CBTBlockSize, Layers: len(d.st.Layers),
		Links: len(d.st.path(d.st.Leaf)), Sessions: d.handles, Snapshots: []SnapshotInfo{}}
	for _, n := range d.readers {
		in.Sessions += n
	}
	if d.tracker != nil {
		in.ChangeID = d.tracker.ChangeID()
	}
	for _, s := range d.st.Snapshots {
		in.Snapshots = append(in.Snapshots, s.info())
	}
	in.Leases = slices.Clone(d.st.Leases)
	for _, l := range d.st.Direct {
		// Where the files are, and the proof, are for the holder only
		// (OpenDirect's answer).
		l.Path, l.Proof, l.Nonce = "", "", ""
		in.Direct = append(in.Direct, l)
	}
	if d.live != nil {
		vi := d.live.Info()
		in.Geometry = hostapi.Geometry(vi.Geometry)
		in.UUID, in.ParentHint = vi.UUID, vi.ParentHint
	}
	ents, _ := os.ReadDir(d.dataDir())
	for _, e := range ents {
		if _, ok := layerID(d.name, e.Name()); ok {
			if fi, err := e.Info(); err == nil {
				in.FileBytes += allocatedBytes(fi) // SEsparse files are mostly holes
			}
		}
	}
	return in
}

// Handle is an open disk: the live leaf (read-write or read-only) or a
// frozen snapshot (read-only). It is a disk.Disk with extents, zeroing and
// trim, safe for concurrent use. Writes are recorded by change tracking
// before they reach the disk.
type Handle struct {
	d      *Disk
	snap   string     // snapshot ID, "" for the live disk
	frozen *vmdk.Disk // the snapshot's chain
	ro     bool
	closed atomic.Bool
}

// OpenLive opens the live disk. Any number of handles may be open at once;
// they share one chain, so writes through one are seen by all (NBD
// multi-conn is consistent).
func (d *Disk) OpenLive(readOnly bool) (*Handle, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.retired {
		return nil, disk.Errorf(disk.ErrNotFound, "datastore: disk %s is gone", d.name)
	}
	if l := d.st.writeLease(); l != nil {
		return nil, disk.Errorf(disk.ErrBusy, "datastore: disk %s is being restored directly (lease %s)", d.name, l.ID)
	}
	if d.live == nil {
		return nil, disk.Errorf(disk.ErrBusy, "datastore: disk %s is not open", d.name)
	}
	d.handles++
	return &Handle{d: d, ro: readOnly}, nil
}

// OpenSnapshot opens a snapshot read-only. While it is open the snapshot
// cannot be removed or reverted to (ErrBusy).
func (d *Disk) OpenSnapshot(ctx context.Context, id string) (*Handle, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.retired {
		return nil, disk.Errorf(disk.ErrNotFound, "datastore: disk %s is gone", d.name)
	}
	rec, _ := d.st.snapshot(id)
	if rec == nil {
		return nil, disk.Errorf(disk.ErrNotFound, "datastore: disk %s has no snapshot %s", d.name, id)
	}
	v, err := d.openFrozen(ctx, rec.Layer, nil)
	if err != nil {
		return nil, err
	}
	d.readers[id]++
	return &Handle{d: d, snap: id, frozen: v, ro: true}, nil
}

// openFrozen opens the chain topped by a pinned layer read-only, taking
// what it can from warm (see vmdk.OpenOptions.Warm) when not nil. The
// caller holds d.mu.
func (d *Disk) openFrozen(ctx context.Context, top int, warm *vmdk.Disk) (*vmdk.Disk, error) {
	v, err := vmdk.Open(ctx, d.layerPath(top), &vmdk.OpenOptions{ReadOnly: true, IgnoreCID: true, ForceShare: true, Warm: warm})
	if err != nil {
		return nil, err
	}
	if err := d.checkChain(v, top); err != nil {
		v.Close()
		return nil, err
	}
	return v, nil
}

// Snapshot returns the snapshot ID the handle reads, "" for the live disk.
func (h *Handle) Snapshot() string { return h.snap }

// Disk returns the disk the handle belongs to.
func (h *Handle) Disk() *Disk { return h.d }

func (h *Handle) errClosed() error {
	return disk.Errorf(disk.ErrInvalid, "datastore: disk %s: handle closed", h.d.name)
}

// ReadAt reads from the live disk or the snapshot.
func (h *Handle) ReadAt(p []byte, off int64) (int, error) {
	if h.closed.Load() {
		return 0, h.errClosed()
	}
	if h.frozen != nil {
		return h.frozen.ReadAt(p, off)
	}
	h.d.gate.RLock()
	defer h.d.gate.RUnlock()
	if h.d.live == nil {
		return 0, h.errClosed()
	}
	return h.d.live.ReadAt(p, off)
}

func (h *Handle) writable(off, n int64) error {
	if h.closed.Load() {
		return h.errClosed()
	}
	if h.ro {
		return disk.Errorf(disk.ErrPermission, "datastore: disk %s: opened read-only", h.d.name)
	}
	if h.d.live == nil {
		return h.errClosed()
	}
	return disk.CheckRange(off, n, h.d.live.Size())
}

// WriteAt writes to the live disk, recording the change first.
func (h *Handle) WriteAt(p []byte, off int64) (int, error) {
	h.d.gate.RLock()
	defer h.d.gate.RUnlock()
	if err := h.writable(off, int64(len(p))); err != nil {
		return 0, err
	}
	if t := h.d.tracker; t != nil {
		op, err := t.BeginWrite(off, int64(len(p)))
		if err != nil {
			return 0, err
		}
		defer t.End(op)
	}
	return h.d.live.WriteAt(p, off)
}

// WriteZeroes makes a range of the live disk read as zeros. Change
// tracking records the whole blocks zeroed as such, so incrementals do not
// read them.
func (h *Handle) WriteZeroes(off, n int64, flags disk.ZeroFlags) error {
	h.d.gate.RLock()
	defer h.d.gate.RUnlock()
	if err := h.writable(off, n); err != nil {
		return err
	}
	t := h.d.tracker
	if t == nil {
		return h.d.live.WriteZeroes(off, n, flags)
	}
	op, err := t.BeginZero(off, n)
	if err != nil {
		return err
	}
	err = h.d.live.WriteZeroes(off, n, flags)
	t.EndZero(op, err == nil)
	return err
}

// Trim releases a range of the live disk; it then reads as zeros (a layer
// above a parent cannot drop data without exposing the parent's).
func (h *Handle) Trim(off, n int64) error {
	return h.WriteZeroes(off, n, 0)
}

// Extents reports the allocation of the live disk or the snapshot.
func (h *Handle) Extents(ctx context.Context, off, n int64, fn func(disk.Extent) error) error {
	if h.closed.Load() {
		return h.errClosed()
	}
	if h.frozen != nil {
		return h.frozen.Extents(ctx, off, n, fn)
	}
	// Collect a batch under the gate, report it after (fn may block on the
	// network, and a snapshot must not wait for it), and go on from where
	// the batch ended until the range is covered.
	end := min(off+n, h.Size())
	ext := make([]disk.Extent, 0, 1024)
	for off < end {
		ext = ext[:0]
		h.d.gate.RLock()
		if h.d.live == nil {
			h.d.gate.RUnlock()
			return h.errClosed()
		}
		err := h.d.live.Extents(ctx, off, end-off, func(e disk.Extent) error {
			ext = append(ext, e)
			if len(ext) == cap(ext) {
				return errStop
			}
			return nil
		})
		h.d.gate.RUnlock()
		if err != nil && err != errStop {
			return err
		}
		if len(ext) == 0 {
			return nil
		}
		for _, e := range ext {
			if err := fn(e); err != nil {
				return err
			}
		}
		off = ext[len(ext)-1].End()
	}
	return nil
}

var errStop = errors.New("stop")

// Size returns the capacity of the live disk or the snapshot.
func (h *Handle) Size() int64 {
	if h.frozen != nil {
		return h.frozen.Size()
	}
	h.d.gate.RLock()
	defer h.d.gate.RUnlock()
	if h.d.live == nil {
		return 0
	}
	return h.d.live.Size()
}

// ReadOnly reports whether the handle refuses writes.
func (h *Handle) ReadOnly() bool { return h.ro }

// Flush makes completed writes durable, and the change record with them.
func (h *Handle) Flush() error {
	if h.closed.Load() {
		return h.errClosed()
	}
	if h.frozen != nil || h.ro {
		return nil
	}
	h.d.gate.RLock()
	defer h.d.gate.RUnlock()
	if h.d.live == nil {
		return h.errClosed()
	}
	err := h.d.live.Flush()
	if t := h.d.tracker; t != nil && err == nil {
		// The intent map keeps the tracker crash-safe; checkpoints only
		// bound what a crash makes it over-report.
		err = t.FlushAfter(h.d.s.o.CBTCheckpoint)
	}
	return err
}

// Close releases the handle; the disk stays open in the Store.
func (h *Handle) Close() error {
	var err error
	if !h.ro && h.frozen == nil && !h.closed.Load() {
		err = h.Flush()
	}
	if h.closed.Swap(true) {
		return nil
	}
	d := h.d
	if h.frozen != nil {
		err = h.frozen.Close()
	}
	d.mu.Lock()
	if h.snap != "" {
		if d.readers[h.snap]--; d.readers[h.snap] <= 0 {
			delete(d.readers, h.snap)
		}
	} else {
		d.handles--
	}
	d.mu.Unlock()
	return err
}
