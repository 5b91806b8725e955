package datastore

import (
	"context"

	"github.com/vdisk-project/vdisk/disk"
	"github.com/vdisk-project/vdisk/hostapi"
)

// Area is [hostapi.Area].
type Area = hostapi.Area

// ChangeInfo is [hostapi.ChangeInfo].
type ChangeInfo = hostapi.ChangeInfo

// DefaultMaxAreas bounds one changed-area answer.
const DefaultMaxAreas = 1 << 20

// view opens what a query reads: the snapshot's frozen chain, or the live
// disk when snapshot is "". It returns the change ID that ends the query
// range ("" for now).
func (d *Disk) view(ctx context.Context, snapshot string) (disk.Disk, string, error) {
	if snapshot == "" {
		h, err := d.OpenLive(true)
		return h, "", err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	rec, _ := d.st.snapshot(snapshot)
	if rec == nil {
		return nil, "", disk.Errorf(disk.ErrNotFound, "datastore: disk %s has no snapshot %s", d.name, snapshot)
	}
	if d.tracker != nil && rec.ChangeID == "" {
		return nil, "", disk.Errorf(disk.ErrNotFound, "datastore: snapshot %s of disk %s was taken before change tracking was on", snapshot, d.name)
	}
	v, err := d.openFrozen(ctx, rec.Layer)
	return v, rec.ChangeID, err
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
	v, until, err := d.view(ctx, snapshot)
	if err != nil {
		return ChangeInfo{}, err
	}
	defer v.Close()
	size := v.Size()
	if start < 0 || start > size {
		return ChangeInfo{}, disk.Errorf(disk.ErrInvalid, "datastore: start offset %d outside the disk (%d bytes)", start, size)
	}
	ci := ChangeInfo{StartOffset: start, Length: size - start, Capacity: size, ChangeID: until, Areas: []Area{}}
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
	if changeID == "*" {
		err = disk.Extents(ctx, v, start, size-start, func(e disk.Extent) error {
			if !e.Flags.Data() {
				return nil
			}
			return add(e)
		})
	} else {
		// The tracker knows which changed blocks were zeroed whole (trims,
		// unmaps, write-zeroes): they come back Zero and are not read. The
		// disk's allocation is not consulted, so the answer costs time in
		// proportion to the changes, not to the disk.
		err = t.Changed(ctx, changeID, until, start, size-start, add)
	}
	if err != nil && err != errStop {
		return ChangeInfo{}, err
	}
	return ci, nil
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
	v, _, err := d.view(ctx, snapshot)
	if err != nil {
		return nil, err
	}
	defer v.Close()
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
