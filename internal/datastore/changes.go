package datastore

import (
	"context"

	"github.com/vdisk-project/vdisk/disk"
	"github.com/vdisk-project/vdisk/hostapi"
	"github.com/vdisk-project/vdisk/internal/cbt"
)

// Area is [hostapi.Area].
type Area = hostapi.Area

// ChangeInfo is [hostapi.ChangeInfo].
type ChangeInfo = hostapi.ChangeInfo

// DefaultMaxAreas bounds one changed-area answer.
const DefaultMaxAreas = 1 << 20

// view opens what a query reads: the snapshot's frozen chain (kept open
// between queries, see views.go), or the live disk when snapshot is "". It
// returns the change ID that ends the query range ("" for now) and the
// function that ends the use of the view.
func (d *Disk) view(ctx context.Context, snapshot string) (disk.Disk, string, func(), error) {
	if snapshot == "" {
		h, err := d.OpenLive(true)
		if err != nil {
			return nil, "", nil, err
		}
		return h, "", func() { h.Close() }, nil
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	rec, err := d.queryRec(snapshot)
	if err != nil {
		return nil, "", nil, err
	}
	v, err := d.snapshotView(ctx, rec)
	if err != nil {
		return nil, "", nil, err
	}
	return v.v, rec.ChangeID, v.release, nil
}

// queryRec returns the record of a snapshot a query names. The caller
// holds d.mu.
func (d *Disk) queryRec(snapshot string) (*snapshotRec, error) {
	if d.retired {
		return nil, disk.Errorf(disk.ErrNotFound, "datastore: disk %s is gone", d.name)
	}
	rec, _ := d.st.snapshot(snapshot)
	if rec == nil {
		return nil, disk.Errorf(disk.ErrNotFound, "datastore: disk %s has no snapshot %s", d.name, snapshot)
	}
	if d.tracker != nil && rec.ChangeID == "" {
		return nil, disk.Errorf(disk.ErrNotFound, "datastore: snapshot %s of disk %s was taken before change tracking was on", snapshot, d.name)
	}
	return rec, nil
}

// Changes answers QueryChangedDiskAreas: the areas of the snapshot (or of
// the live disk when snapshot is "") that changed after changeID, from
// start on, at most maxAreas of them (0 means DefaultMaxAreas). changeID
// "*" reports every area of the snapshot that holds data (its
// allocation). Changed areas that now read as zeros (zeroed, trimmed or
// unmapped whole blocks) come with Zero set, so an incremental reads only
// data. An unknown or too old change ID
// is ErrNotFound (take a full backup); a disk without change tracking is
// ErrNotSupported.
func (d *Disk) Changes(ctx context.Context, snapshot, changeID string, start int64, maxAreas int) (ChangeInfo, error) {
	if maxAreas <= 0 {
		maxAreas = DefaultMaxAreas
	}
	d.mu.Lock()
	t := d.tracker
	d.mu.Unlock()
	if t == nil && changeID != "*" {
		return ChangeInfo{}, disk.Errorf(disk.ErrNotSupported, "datastore: disk %s does not track changes", d.name)
	}
	if changeID == "*" {
		return d.allocatedAreas(ctx, snapshot, start, maxAreas)
	}
	// The answer comes from the tracker alone: the chain is not opened, so
	// its cost does not depend on how large the disk's extents are.
	var until string
	var size int64
	if snapshot == "" {
		h, err := d.OpenLive(true)
		if err != nil {
			return ChangeInfo{}, err
		}
		size = h.Size()
		h.Close()
	} else {
		d.mu.Lock()
		rec, err := d.queryRec(snapshot)
		if rec != nil {
			until, size = rec.ChangeID, rec.Capacity
		}
		d.mu.Unlock()
		if err != nil {
			return ChangeInfo{}, err
		}
	}
	return changedAreas(ctx, t, changeID, until, size, start, maxAreas)
}

// allocatedAreas answers Changes with change ID "*": every area of the
// snapshot (or live disk) that holds data.
func (d *Disk) allocatedAreas(ctx context.Context, snapshot string, start int64, maxAreas int) (ChangeInfo, error) {
	d.mu.Lock()
	t := d.tracker
	d.mu.Unlock()
	v, until, release, err := d.view(ctx, snapshot)
	if err != nil {
		return ChangeInfo{}, err
	}
	defer release()
	ci, add, err := newChangeInfo(v.Size(), start, until, t, maxAreas)
	if err != nil {
		return ChangeInfo{}, err
	}
	err = disk.Extents(ctx, v, start, v.Size()-start, func(e disk.Extent) error {
		if !e.Flags.Data() {
			return nil
		}
		return add(e)
	})
	if err != nil && err != errStop {
		return ChangeInfo{}, err
	}
	return *ci, nil
}

// changedAreas answers Changes from the tracker t for a disk (or
// snapshot) of size bytes whose range of changes ends at until.
func changedAreas(ctx context.Context, t *cbt.Tracker, changeID, until string, size, start int64, maxAreas int) (ChangeInfo, error) {
	ci, add, err := newChangeInfo(size, start, until, t, maxAreas)
	if err != nil {
		return ChangeInfo{}, err
	}
	// The tracker knows which changed blocks were zeroed whole (trims,
	// unmaps, write-zeroes): they come back Zero and are not read. The
	// disk's allocation is not consulted, so the answer costs time in
	// proportion to the changes, not to the disk.
	err = t.Changed(ctx, changeID, until, start, size-start, add)
	if err != nil && err != errStop {
		return ChangeInfo{}, err
	}
	return *ci, nil
}

// newChangeInfo starts an answer for [start, size) and returns the
// function that adds an extent to it (errStop once maxAreas are in).
func newChangeInfo(size, start int64, until string, t *cbt.Tracker, maxAreas int) (*ChangeInfo, func(disk.Extent) error, error) {
	if start < 0 || start > size {
		return nil, nil, disk.Errorf(disk.ErrInvalid, "datastore: start offset %d outside the disk (%d bytes)", start, size)
	}
	ci := &ChangeInfo{StartOffset: start, Length: size - start, Capacity: size, ChangeID: until, Areas: []Area{}}
	if until == "" && t != nil {
		ci.ChangeID = t.ChangeID()
	}
	add := func(e disk.Extent) error {
		a := Area{Start: e.Off, Length: e.Len, Zero: !e.Flags.Data()}
		if n := len(ci.Areas); n > 0 && ci.Areas[n-1].Start+ci.Areas[n-1].Length == a.Start && ci.Areas[n-1].Zero == a.Zero {
			ci.Areas[n-1].Length += a.Length
			return nil
		}
		if len(ci.Areas) >= maxAreas {
			ci.Length = e.Off - start
			return errStop
		}
		ci.Areas = append(ci.Areas, a)
		return nil
	}
	return ci, add, nil
}

// ChangedRanges reports the raw tracked changes after changeID up to the
// snapshot (or now), without allocation: the NBD dirty-bitmap context
// serves these.
func (d *Disk) ChangedRanges(ctx context.Context, snapshot, changeID string, off, n int64, fn func(disk.Extent) error) error {
	d.mu.Lock()
	t := d.tracker
	until := ""
	if snapshot != "" {
		rec, _ := d.st.snapshot(snapshot)
		if rec == nil {
			d.mu.Unlock()
			return disk.Errorf(disk.ErrNotFound, "datastore: disk %s has no snapshot %s", d.name, snapshot)
		}
		until = rec.ChangeID
	}
	d.mu.Unlock()
	if t == nil {
		return disk.Errorf(disk.ErrNotSupported, "datastore: disk %s does not track changes", d.name)
	}
	return t.Changed(ctx, changeID, until, off, n, fn)
}

// ChangeIDs lists the change IDs a query may start from: those the
// snapshots recorded, oldest first.
func (d *Disk) ChangeIDs() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	var ids []string
	for _, s := range d.st.Snapshots {
		if s.ChangeID != "" {
			ids = append(ids, s.ChangeID)
		}
	}
	return ids
}

// Allocated answers QueryAllocatedBlocks: the chunk-aligned blocks of the
// snapshot (or live disk) within [start, start+length) that hold data.
// chunk must be a power of two of at least 512 bytes.
func (d *Disk) Allocated(ctx context.Context, snapshot string, start, length, chunk int64) ([]Area, error) {
	if chunk < 512 || chunk&(chunk-1) != 0 || start%chunk != 0 || length%chunk != 0 || start < 0 || length < 0 {
		return nil, disk.Errorf(disk.ErrInvalid, "datastore: chunk size %d must be a power of two ≥ 512 dividing start %d and length %d", chunk, start, length)
	}
	v, _, release, err := d.view(ctx, snapshot)
	if err != nil {
		return nil, err
	}
	defer release()
	end := min(start+length, v.Size())
	out := []Area{}
	if start >= end {
		return out, nil
	}
	err = disk.Extents(ctx, v, start, end-start, func(e disk.Extent) error {
		if !e.Flags.Data() {
			return nil
		}
		a := e.Off &^ (chunk - 1)
		b := min((e.End()+chunk-1)&^(chunk-1), end)
		if n := len(out); n > 0 && out[n-1].Start+out[n-1].Length >= a {
			out[n-1].Length = max(out[n-1].Length, b-out[n-1].Start)
			return nil
		}
		if len(out) >= DefaultMaxAreas {
			return disk.Errorf(disk.ErrInvalid, "datastore: more than %d allocated blocks; ask for a smaller range", DefaultMaxAreas)
		}
		out = append(out, Area{Start: a, Length: b - a})
		return nil
	})
	return out, err
}
