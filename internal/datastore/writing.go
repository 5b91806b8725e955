package datastore

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/vdisk-project/vdisk/format/vmdk"
)

// SEsparse has no mark in its files that says "not closed cleanly" (a
// hosted sparse extent has one, and openLive repairs a leaf found so
// marked). A host that dies while writing an SEsparse layer can leave
// leaked grains: allocated below the high-water mark, named by no durable
// grain table, not marked free (format/vmdk doc.go, "SEsparse written by
// vdisk"). Nothing reuses them until a repair marks them free. So the
// datastore keeps the mark itself: ROOT/disks/NAME/writing.json names the
// SEsparse layers open for writing. A layer is named there, durably,
// before the first write reaches it (openLive, the target of a merge), and
// dropped from it once it closed cleanly. When a disk loads with layers
// named there, the host stopped uncleanly: each is checked and its leaks
// reclaimed (vmdk.Check with RepairLeaks, as `vdisk check -r leaks` does)
// before the disk is served, and the file is cleared only after every
// repair is done. A crash during a repair leaves the file, and the next
// load repairs again; the repair only marks free grains no table names, so
// redoing it is harmless.

// writingState is writing.json.
type writingState struct {
	Layers []int `json:"layers"`
}

func (d *Disk) writingPath() string { return filepath.Join(d.dir, "writing.json") }

// hasSESparse reports whether the leaf link of v has SEsparse extents.
func hasSESparse(v *vmdk.Disk) bool {
	for _, f := range v.Info().Files {
		if f.Link == 0 && f.Kind == "SESPARSE" {
			return true
		}
	}
	return false
}

// markWriting records, durably, that layer id is open for writing, when
// its leaf link v is SEsparse. The caller holds d.mu.
func (d *Disk) markWriting(id int, v *vmdk.Disk) error {
	if !hasSESparse(v) || slices.Contains(d.writing, id) {
		return nil
	}
	next := append(slices.Clone(d.writing), id)
	if err := writeJSON(d.writingPath(), &writingState{Layers: next}); err != nil {
		return err
	}
	d.writing = next
	return nil
}

// unmarkWriting forgets that layer id is open for writing, after it closed
// cleanly. The file is rewritten at the next mark or removed at the disk's
// clean close: a stale entry after a crash costs only a needless check.
// The caller holds d.mu.
func (d *Disk) unmarkWriting(id int) {
	d.writing = slices.DeleteFunc(d.writing, func(x int) bool { return x == id })
}

// clearWriting removes writing.json once no layer is open for writing.
// The caller holds d.mu.
func (d *Disk) clearWriting() error {
	if len(d.writing) > 0 {
		return nil
	}
	if err := os.Remove(d.writingPath()); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// reclaimLeaks repairs the leaks of every layer writing.json names (an
// unclean stop), before the disk is served. It runs at load.
func (d *Disk) reclaimLeaks(ctx context.Context) error {
	b, err := readSmall(d.writingPath())
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var ws writingState
	if err := jsonUnmarshal(b, &ws); err != nil {
		// Unreadable: every SEsparse layer might have been written.
		d.s.log.Warn("datastore: writing.json is unreadable; checking every layer", "disk", d.name, "err", err)
		ws.Layers = nil
		for _, l := range d.st.Layers {
			ws.Layers = append(ws.Layers, l.ID)
		}
	}
	for _, id := range ws.Layers {
		if d.st.layer(id) == nil {
			continue // gone since (a crash after a merge was committed)
		}
		if f := d.s.o.failReclaim; f != nil {
			if err := f(id); err != nil {
				return err
			}
		}
		start := time.Now()
		rep, err := vmdk.Check(ctx, d.layerPath(id), &vmdk.CheckOptions{Repair: vmdk.RepairLeaks, IgnoreCID: true})
		if err != nil {
			return err
		}
		d.s.log.Warn("reclaimed the leaked grains of an SEsparse layer written when the host stopped", "disk", d.name, "layer", id,
			"leaks", rep.Leaks, "leaked_bytes", rep.LeakedBytes, "errors", rep.Errors, "took", time.Since(start).Round(time.Millisecond))
		d.reclaimed += rep.Leaks
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.clearWriting()
}
