package datastore

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"github.com/vdisk-project/vdisk/disk"
	"github.com/vdisk-project/vdisk/format/vmdk"
	"github.com/vdisk-project/vdisk/internal/cbt"
)

// SnapshotSpec describes a new snapshot.
type SnapshotSpec struct {
	Name        string
	Description string
	// Owner marks the snapshot temporary, made by this session: Cleanup
	// removes it once the session is gone.
	Owner string
}

// newLeaf makes a new layer on top of the leaf and switches the live chain
// to it. The caller holds d.ops and d.gate exclusively; the state is not
// committed. It returns the new layer's ID.
func (d *Disk) newLeaf(ctx context.Context, parent int) (int, error) {
	d.mu.Lock()
	id := d.st.NextLayer
	d.mu.Unlock()
	dir := d.dataDir()
	if err := removeLayer(dir, d.name, id); err != nil {
		return 0, err
	}
	// Deltas of disks of 2 TiB and more are SEsparse, split to fit the
	// filesystem's file size limit.
	sf := layerType(d.st.Capacity)
	v, err := vmdk.Create(ctx, d.layerPath(id), 0, &vmdk.CreateOptions{Subformat: sf, Parent: d.layerPath(parent), IgnoreCID: true,
		Adapter: d.st.Adapter, HWVersion: 14, ZeroedGrain: sf == vmdk.MonolithicSparse, ForceShare: true, MaxFileSize: fileLimit(dir)})
	if err != nil {
		return 0, err
	}
	if err := v.Close(); err != nil {
		removeLayer(dir, d.name, id)
		return 0, err
	}
	return id, nil
}

// closeLive flushes and closes the live chain. The caller holds d.gate
// exclusively.
func (d *Disk) closeLive() error {
	if d.live == nil {
		return nil
	}
	err := d.live.Close()
	d.live = nil
	if err == nil {
		d.unmarkWriting(d.liveID) // closed cleanly: no leaks left
	}
	return err
}

// reopenLive reopens the live chain after a switch; on failure the disk
// is left closed (I/O fails cleanly) and the error returned.
func (d *Disk) reopenLive(ctx context.Context) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.openLive(ctx, false)
}

// Snapshot freezes the disk's current state: later writes go to a new
// leaf, and the snapshot reads the frozen chain.
func (d *Disk) Snapshot(ctx context.Context, spec SnapshotSpec) (SnapshotInfo, error) {
	d.ops.Lock()
	defer d.ops.Unlock()
	if d.owner() != "" {
		return SnapshotInfo{}, disk.Errorf(disk.ErrInvalid, "datastore: disk %s belongs to VM %s; snapshot the VM", d.name, d.owner())
	}
	if err := spec.validate(); err != nil {
		return SnapshotInfo{}, err
	}
	// The ID is spent before the snapshot is made, so a crash in between
	// cannot hand it out twice.
	// (A state an older version left after such a crash names the next
	// ID already: skip it.)
	d.mu.Lock()
	id := fmt.Sprintf("snapshot-%d", d.st.NextSnapshot)
	for rec, _ := d.st.snapshot(id); rec != nil; rec, _ = d.st.snapshot(id) {
		d.st.NextSnapshot++
		id = fmt.Sprintf("snapshot-%d", d.st.NextSnapshot)
	}
	d.st.NextSnapshot++
	err := d.commit()
	d.mu.Unlock()
	if err != nil {
		return SnapshotInfo{}, err
	}
	recs, err := snapshotDisks(ctx, []*Disk{d}, id, spec)
	if err != nil {
		return SnapshotInfo{}, err
	}
	return recs[0].info(), nil
}

// snapshotDisks takes one snapshot of several disks at the same instant:
// every gate is held while the leaves are switched. The callers hold each
// disk's ops lock.
func snapshotDisks(ctx context.Context, ds []*Disk, id string, spec SnapshotSpec) ([]snapshotRec, error) {
	for _, d := range ds {
		d.gate.Lock()
		defer d.gate.Unlock()
	}
	// Phase 1: flush and make each new leaf. Nothing is committed, so a
	// failure removes what was made.
	leaves := make([]int, len(ds))
	for i, d := range ds {
		if d.live == nil {
			return nil, disk.Errorf(disk.ErrBusy, "datastore: disk %s is not open (a direct restore holds it?)", d.name)
		}
		if rec, _ := d.st.snapshot(id); rec != nil {
			return nil, disk.Errorf(disk.ErrBusy, "datastore: disk %s already has a snapshot %s", d.name, id)
		}
		if len(d.st.Snapshots) >= MaxSnapshots {
			return nil, disk.Errorf(disk.ErrNoSpace, "datastore: disk %s has %d snapshots, the most it keeps; remove some first", d.name, MaxSnapshots)
		}
		err := d.live.Flush()
		if err == nil {
			leaves[i], err = d.newLeaf(ctx, d.st.Leaf)
		}
		if err != nil {
			for j := range i {
				removeLayer(ds[j].dataDir(), ds[j].name, leaves[j])
			}
			return nil, err
		}
	}
	// Phase 2: switch and commit.
	recs := make([]snapshotRec, len(ds))
	var errs []error
	for i, d := range ds {
		d.mu.Lock()
		rec := snapshotRec{ID: id, Name: spec.Name, Description: spec.Description, Created: d.s.o.Now().UTC(),
			Layer: d.st.Leaf, Capacity: d.live.Size(), Owner: spec.Owner}
		recs[i] = rec
		if d.tracker != nil {
			// The change ID the snapshot records must exist after a
			// crash: the tracker's state goes first. If it cannot be
			// saved the snapshot is not made (the ended epoch only makes
			// later answers over-report).
			recs[i].ChangeID = d.tracker.Snapshot()
			if err := d.tracker.Flush(); err != nil {
				removeLayer(d.dataDir(), d.name, leaves[i])
				errs = append(errs, err)
				d.mu.Unlock()
				continue
			}
		}
		warm := d.warmView(ctx) // the snapshot's chain, before the leaf closes
		if err := d.closeLive(); err != nil {
			// The leaf's write-back failed: the disk goes offline (I/O
			// fails cleanly) rather than switch over data not on disk.
			if warm != nil {
				warm.Close()
			}
			removeLayer(d.dataDir(), d.name, leaves[i])
			errs = append(errs, err)
			d.mu.Unlock()
			continue
		}
		old := d.st
		d.st.Layers = append(slices.Clone(d.st.Layers), layer{ID: leaves[i], Parent: d.st.Leaf})
		d.st.Leaf = leaves[i]
		d.st.NextLayer = leaves[i] + 1
		d.st.Snapshots = append(slices.Clone(d.st.Snapshots), recs[i])
		if err := d.commit(); err != nil {
			// Not recorded: back on the old leaf, which closed cleanly.
			if warm != nil {
				warm.Close()
			}
			d.st = old
			removeLayer(d.dataDir(), d.name, leaves[i])
			errs = append(errs, err, d.openLive(ctx, false))
			d.mu.Unlock()
			continue
		}
		if warm != nil {
			d.cacheView(&d.st.Snapshots[len(d.st.Snapshots)-1], warm, 0)
		}
		errs = append(errs, d.openLive(ctx, false))
		d.mu.Unlock()
		d.s.log.Info("snapshot created", "disk", d.name, "snapshot", id, "change_id", recs[i].ChangeID)
	}
	return recs, errors.Join(errs...)
}

// Snapshots lists the disk's snapshots, oldest first.
func (d *Disk) Snapshots() []SnapshotInfo { return d.Info().Snapshots }

// RemoveSnapshot deletes a snapshot and consolidates its data into the
// disk while the disk stays online. A snapshot open for reading is busy.
func (d *Disk) RemoveSnapshot(ctx context.Context, id string) error {
	d.ops.Lock()
	defer d.ops.Unlock()
	if err := d.dropSnapshot(id); err != nil {
		return err
	}
	return d.consolidate(ctx)
}

// dropSnapshot removes the record of a snapshot. The caller holds d.ops.
func (d *Disk) dropSnapshot(id string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	rec, i := d.st.snapshot(id)
	if rec == nil {
		return disk.Errorf(disk.ErrNotFound, "datastore: disk %s has no snapshot %s", d.name, id)
	}
	if d.readers[id] > 0 {
		return disk.Errorf(disk.ErrBusy, "datastore: snapshot %s of disk %s is being read (%d sessions)", id, d.name, d.readers[id])
	}
	if slices.ContainsFunc(d.st.Direct, func(l DirectLease) bool { return l.Snapshot == id }) {
		return disk.Errorf(disk.ErrBusy, "datastore: snapshot %s of disk %s is leased for direct reading", id, d.name)
	}
	d.st.Snapshots = slices.Delete(d.st.Snapshots, i, i+1)
	if err := d.commit(); err != nil {
		d.st.Snapshots = slices.Insert(d.st.Snapshots, i, *rec)
		return err
	}
	d.s.log.Info("snapshot removed", "disk", d.name, "snapshot", id)
	return nil
}

// consolidate merges or deletes layers no snapshot needs, until none is
// left. The caller holds d.ops.
func (d *Disk) consolidate(ctx context.Context) error {
	for round := 0; ; round++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		d.mu.Lock()
		// Direct readers have the files of their snapshot's chain open by
		// path: those layers wait until the leases end; the rest goes on.
		leased := map[int]bool{}
		for _, dl := range d.st.Direct {
			if rec, _ := d.st.snapshot(dl.Snapshot); rec != nil {
				for _, x := range d.st.path(rec.Layer) {
					leased[x] = true
				}
			}
		}
		from, into, drop := -1, -1, -1
		for _, l := range d.st.Layers {
			if l.ID == d.st.Leaf || d.st.pinned(l.ID) || leased[l.ID] {
				continue
			}
			switch kids := d.st.children(l.ID); len(kids) {
			case 0:
				drop = l.ID
			case 1:
				from, into = kids[0], l.ID
			}
			if drop >= 0 || from >= 0 {
				break
			}
		}
		leaf := d.st.Leaf
		d.mu.Unlock()
		switch {
		case drop >= 0:
			if err := d.dropLayer(drop); err != nil {
				return err
			}
		case from < 0:
			return nil
		case from != leaf:
			if err := d.merge(ctx, from, into); err != nil {
				return err
			}
		case d.layerBytes(from) > d.s.o.LockedMergeMax && round < 8:
			// Freeze the big leaf under a helper layer so writes go on
			// while it merges; the next round merges it.
			d.gate.Lock()
			err := d.pushLeaf(ctx)
			d.gate.Unlock()
			if err != nil {
				return err
			}
		default:
			d.gate.Lock()
			err := d.merge(ctx, from, into)
			d.gate.Unlock()
			if err != nil {
				return err
			}
		}
	}
}

// layerBytes is the storage a layer's files take: blocks allocated, not
// lengths (an SEsparse file is mostly holes).
func (d *Disk) layerBytes(id int) int64 {
	var n int64
	for _, f := range layerFiles(d.dataDir(), d.name, id) {
		if st, err := os.Stat(f); err == nil {
			n += allocatedBytes(st)
		}
	}
	return n
}

// pushLeaf puts a new, empty leaf on top of the current one. The caller
// holds d.ops and d.gate exclusively.
func (d *Disk) pushLeaf(ctx context.Context) error {
	if err := d.live.Flush(); err != nil {
		return err
	}
	id, err := d.newLeaf(ctx, d.st.Leaf)
	if err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.closeLive(); err != nil {
		removeLayer(d.dataDir(), d.name, id)
		return err // the leaf's write-back failed: offline, as for a snapshot
	}
	old := d.st
	d.st.Layers = append(slices.Clone(d.st.Layers), layer{ID: id, Parent: d.st.Leaf})
	d.st.Leaf, d.st.NextLayer = id, id+1
	if err := d.commit(); err != nil {
		// Not recorded: back on the old leaf, which closed cleanly.
		d.st = old
		removeLayer(d.dataDir(), d.name, id)
		return errors.Join(err, d.openLive(ctx, false))
	}
	return d.openLive(ctx, false)
}

// dropLayer deletes a layer nothing uses (no pin, no child, not the leaf).
func (d *Disk) dropLayer(id int) error {
	d.mu.Lock()
	i := slices.IndexFunc(d.st.Layers, func(l layer) bool { return l.ID == id })
	old := d.st.Layers
	d.st.Layers = slices.Delete(slices.Clone(d.st.Layers), i, i+1)
	if err := d.commit(); err != nil {
		d.st.Layers = old
		d.mu.Unlock()
		return err
	}
	d.mu.Unlock()
	return removeLayer(d.dataDir(), d.name, id)
}

// merge writes layer from (the single child of into) into layer into,
// then gives into from's role: its pins, its children, being the leaf.
// When from is the leaf the caller holds d.gate exclusively; otherwise
// from is frozen and writes go on, and the gate is taken only to switch.
// The operation is recorded first, so a crash redoes it (see recover).
func (d *Disk) merge(ctx context.Context, from, into int) error {
	d.mu.Lock()
	leaf := d.st.Leaf == from
	d.st.Op = &pendingOp{Kind: "merge", From: from, Into: into}
	err := d.commit()
	if err == nil && leaf {
		if err = d.live.Flush(); err == nil {
			err = d.closeLive()
		}
	}
	d.mu.Unlock()
	if err != nil {
		if leaf {
			d.reopenLive(ctx)
		}
		return err
	}
	err = d.mergeLayer(ctx, from, into)
	merged := err == nil
	if merged && d.s.crashAfterMerge != nil && d.s.crashAfterMerge() {
		return errCrash
	}
	if merged {
		if !leaf {
			d.gate.Lock()
			defer d.gate.Unlock()
		}
		err = d.finishMerge(ctx)
	}
	if err != nil {
		// What was merged so far is also in from, which still overlays it,
		// so the old chain is intact: forget the op and stay on it.
		// (After a failed switch the op stays, and the next open redoes it.)
		d.mu.Lock()
		if !merged && d.st.Op != nil {
			d.st.Op = nil
			d.commit()
		}
		d.mu.Unlock()
		if d.live == nil {
			d.reopenLive(ctx)
		}
	}
	d.s.log.Info("layers consolidated", "disk", d.name, "from", from, "into", into, "err", err)
	return err
}

// finishMerge moves from's role to into, commits, and reopens the live
// chain. The caller holds d.gate exclusively; d.st.Op names the merge.
func (d *Disk) finishMerge(ctx context.Context) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	op := d.st.Op
	from, into := op.From, op.Into
	if err := d.closeLive(); err != nil {
		return err
	}
	for _, c := range d.st.children(from) {
		if err := vmdk.SetParent(ctx, d.layerPath(c), d.layerPath(into), nil); err != nil {
			return err
		}
	}
	st := d.st
	st.Layers = nil
	for _, l := range d.st.Layers {
		if l.ID == from {
			continue
		}
		if l.Parent == from {
			l.Parent = into
		}
		st.Layers = append(st.Layers, l)
	}
	st.Snapshots = slices.Clone(d.st.Snapshots)
	for i := range st.Snapshots {
		if st.Snapshots[i].Layer == from {
			st.Snapshots[i].Layer = into
		}
	}
	if st.Leaf == from {
		st.Leaf = into
	}
	st.Op = nil
	old := d.st
	d.st = st
	if err := d.commit(); err != nil {
		d.st = old
		return err
	}
	err := removeLayer(d.dataDir(), d.name, from)
	return errors.Join(err, d.openLive(ctx, false))
}

// mergeLayer writes what layer from holds (data and zeroed grains) into
// the chain topped by layer into, which may have children. The caller does
// not hold d.mu.
func (d *Disk) mergeLayer(ctx context.Context, fromID, intoID int) error {
	src, err := vmdk.Open(ctx, d.layerPath(fromID), &vmdk.OpenOptions{ReadOnly: true, SingleLink: true, IgnoreCID: true, ForceShare: true})
	if err != nil {
		return err
	}
	defer src.Close()
	dst, err := vmdk.Open(ctx, d.layerPath(intoID), &vmdk.OpenOptions{IgnoreCID: true, AllowChildren: true, ForceShare: true})
	if err != nil {
		return err
	}
	d.mu.Lock()
	err = d.markWriting(intoID, dst)
	d.mu.Unlock()
	if err != nil {
		dst.Close()
		return err
	}
	if dst.Size() < src.Size() {
		if err := dst.Resize(ctx, src.Size()); err != nil {
			dst.Close()
			return err
		}
	}
	// Zeroed grains first: Copy below skips every zero range.
	err = src.Extents(ctx, 0, src.Size(), func(e disk.Extent) error {
		if e.Flags&disk.Zero != 0 && e.Flags&disk.Hole == 0 {
			return dst.WriteZeroes(e.Off, e.Len, 0)
		}
		return nil
	})
	if err == nil {
		_, err = disk.Copy(ctx, dst, src, &disk.CopyOptions{DstZeroed: true, ZeroBlock: -1})
	}
	if err == nil {
		err = dst.Flush()
	}
	if err = errors.Join(err, dst.Close()); err == nil {
		d.mu.Lock()
		d.unmarkWriting(intoID) // closed cleanly: no leaks left
		d.mu.Unlock()
	}
	return err
}

// recover finishes an operation recorded in disk.json. It runs at load,
// before the live chain is opened.
func (d *Disk) recover(ctx context.Context) error {
	op := d.st.Op
	switch op.Kind {
	case "merge":
		if d.st.layer(op.From) == nil || d.st.layer(op.Into) == nil {
			return disk.Errorf(disk.ErrCorrupt, "datastore: disk %s: interrupted merge names unknown layers", d.name)
		}
		if err := d.mergeLayer(ctx, op.From, op.Into); err != nil {
			return err
		}
		// finishMerge reopens the live chain.
		if err := d.finishMerge(ctx); err != nil {
			return err
		}
		return d.closeLive()
	case "relocate":
		// The copy never committed: drop it and stay where we are.
		if dir, err := d.s.targetDir(op.Target); err == nil && op.Target != d.st.Datastore {
			d.clearCopy(filepath.Join(dir, "disks", d.name))
		}
		d.mu.Lock()
		defer d.mu.Unlock()
		d.st.Op = nil
		return d.commit()
	}
	return disk.Errorf(disk.ErrCorrupt, "datastore: disk %s: unknown interrupted operation %q", d.name, op.Kind)
}

// Revert makes the disk read as the snapshot again: the current leaf is
// discarded and a new leaf starts on the snapshot's layer. The snapshot
// stays. With change tracking, every area that differs is recorded as
// changed.
func (d *Disk) Revert(ctx context.Context, id string) error {
	d.ops.Lock()
	defer d.ops.Unlock()
	if err := revertDisks(ctx, []*Disk{d}, id); err != nil {
		return err
	}
	return d.consolidate(ctx)
}

func revertDisks(ctx context.Context, ds []*Disk, id string) error {
	for _, d := range ds {
		d.gate.Lock()
		defer d.gate.Unlock()
	}
	var errs []error
	for _, d := range ds {
		d.mu.Lock()
		rec, _ := d.st.snapshot(id)
		d.mu.Unlock()
		if rec == nil {
			return disk.Errorf(disk.ErrNotFound, "datastore: disk %s has no snapshot %s", d.name, id)
		}
	}
	for _, d := range ds {
		errs = append(errs, d.revert(ctx, id))
	}
	return errors.Join(errs...)
}

// revert switches one disk to a new leaf on a snapshot's layer. The caller
// holds d.ops and d.gate exclusively.
func (d *Disk) revert(ctx context.Context, id string) error {
	d.mu.Lock()
	rec, _ := d.st.snapshot(id)
	target, oldLeaf := rec.Layer, d.st.Leaf
	// Layers that differ between the current state and the snapshot.
	cur, snap := d.st.path(oldLeaf), d.st.path(target)
	var diff []int
	for _, x := range cur {
		if !slices.Contains(snap, x) {
			diff = append(diff, x)
		}
	}
	for _, x := range snap {
		if !slices.Contains(cur, x) {
			diff = append(diff, x)
		}
	}
	d.mu.Unlock()
	if d.tracker != nil {
		for _, x := range diff {
			if err := markLayer(ctx, d.tracker, d.layerPath(x)); err != nil {
				return err
			}
		}
		if rec.Capacity != d.live.Size() {
			if err := d.tracker.Resize(rec.Capacity); err != nil {
				return err
			}
		}
		if err := d.tracker.Flush(); err != nil {
			return err
		}
	}
	nl, err := d.newLeaf(ctx, target)
	if err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.closeLive(); err != nil {
		d.s.log.Warn("closing the discarded leaf", "disk", d.name, "err", err)
	}
	old := d.st
	d.st.Layers = append(slices.Clone(d.st.Layers), layer{ID: nl, Parent: target})
	d.st.Leaf, d.st.NextLayer = nl, nl+1
	d.st.Capacity = rec.Capacity
	if err := d.commit(); err != nil {
		d.st = old
		return errors.Join(err, d.openLive(ctx, false))
	}
	d.s.log.Info("reverted to snapshot", "disk", d.name, "snapshot", id)
	// The old leaf (unpinned, childless) goes with the next consolidation.
	return d.openLive(ctx, false)
}

// markLayer records every range a single layer holds as changed.
func markLayer(ctx context.Context, t *cbt.Tracker, path string) error {
	v, err := vmdk.Open(ctx, path, &vmdk.OpenOptions{ReadOnly: true, SingleLink: true, IgnoreCID: true, ForceShare: true})
	if err != nil {
		return err
	}
	defer v.Close()
	return v.Extents(ctx, 0, v.Size(), func(e disk.Extent) error {
		if e.Flags&disk.Hole == 0 {
			return t.MarkWritten(e.Off, e.Len)
		}
		return nil
	})
}

// Grow enlarges the disk to size bytes. Snapshots keep their capacity.
func (d *Disk) Grow(ctx context.Context, size int64) error {
	d.ops.Lock()
	defer d.ops.Unlock()
	d.gate.Lock()
	defer d.gate.Unlock()
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.live == nil {
		return disk.Errorf(disk.ErrNotFound, "datastore: disk %s is gone", d.name)
	}
	if size < d.live.Size() {
		return disk.Errorf(disk.ErrNotSupported, "datastore: disk %s: shrinking from %d to %d bytes is not supported", d.name, d.live.Size(), size)
	}
	if size == d.live.Size() {
		return nil
	}
	if err := checkCapacity(size); err != nil {
		return err
	}
	if len(d.st.Layers) > 1 {
		return disk.Errorf(disk.ErrNotSupported, "datastore: disk %s has snapshots; remove them before growing it", d.name)
	}
	if d.tracker != nil {
		// Record first: a crash after the resize must not hide the new area.
		if err := d.tracker.Resize(size); err != nil {
			return err
		}
	}
	if err := d.live.Resize(ctx, size); err != nil {
		return err
	}
	d.st.Capacity = d.live.Size()
	return d.commit()
}

// SetCBT turns change tracking on or off. Turning it on starts a new
// history (earlier change IDs are unknown); turning it off forgets it.
func (d *Disk) SetCBT(enabled bool) error {
	d.ops.Lock()
	defer d.ops.Unlock()
	d.gate.Lock()
	defer d.gate.Unlock()
	d.mu.Lock()
	defer d.mu.Unlock()
	if enabled == d.st.CBT {
		return nil
	}
	path := filepath.Join(d.dir, "cbt.state")
	if enabled {
		os.Remove(path)
		os.Remove(cbt.IntentPath(path))
		t, err := cbt.Create(nil, path, d.live.Size(), d.st.CBTBlockSize)
		if err != nil {
			return err
		}
		d.st.CBT = true
		if err := d.commit(); err != nil {
			t.Close()
			os.Remove(path)
			d.st.CBT = false
			return err
		}
		d.tracker = t
		return nil
	}
	d.st.CBT = false
	if err := d.commit(); err != nil {
		d.st.CBT = true
		return err
	}
	d.tracker.Close()
	d.tracker = nil
	os.Remove(cbt.IntentPath(path))
	return disk.Wrap(os.Remove(path), "datastore: remove", path, -1)
}
