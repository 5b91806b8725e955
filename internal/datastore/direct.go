package datastore

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"path/filepath"
	"slices"

	"github.com/vdisk-project/vdisk/disk"
	"github.com/vdisk-project/vdisk/format/vmdk"
	"github.com/vdisk-project/vdisk/hostapi"
)

// DirectLease is [hostapi.DirectLease].
type DirectLease = hostapi.DirectLease

// OpenDirect grants a direct lease on a snapshot (write false) or on the
// live disk for a restore (write true, snapshot ""). A write lease needs
// the disk idle: no open handle and no snapshot (ErrBusy otherwise).
func (d *Disk) OpenDirect(ctx context.Context, snapshot string, write bool, holder string) (DirectLease, error) {
	if write && snapshot != "" {
		return DirectLease{}, disk.Errorf(disk.ErrPermission, "datastore: snapshots are read-only")
	}
	if !write && snapshot == "" {
		return DirectLease{}, disk.Errorf(disk.ErrInvalid, "datastore: direct reads need a snapshot (the live disk changes under a reader)")
	}
	d.ops.Lock()
	defer d.ops.Unlock()
	var nb [16]byte
	rand.Read(nb[:])
	l := DirectLease{ID: newID("direct-"), Holder: holder, Snapshot: snapshot, Write: write,
		Nonce: hex.EncodeToString(nb[:]), Created: d.s.o.Now().UTC()}
	if write {
		d.gate.Lock()
		defer d.gate.Unlock()
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.retired || d.moving {
		return DirectLease{}, disk.Errorf(disk.ErrBusy, "datastore: disk %s is being moved or deleted", d.name)
	}
	if d.st.writeLease() != nil {
		return DirectLease{}, disk.Errorf(disk.ErrBusy, "datastore: disk %s is leased for a direct restore", d.name)
	}
	if write {
		if d.handles > 0 || len(d.readers) > 0 || len(d.st.Direct) > 0 {
			return DirectLease{}, disk.Errorf(disk.ErrBusy, "datastore: disk %s is in use (%d sessions); a direct restore needs it idle", d.name, d.handles+len(d.readers)+len(d.st.Direct))
		}
		if len(d.st.Layers) > 1 {
			return DirectLease{}, disk.Errorf(disk.ErrBusy, "datastore: disk %s has snapshots; a direct restore needs a disk without them", d.name)
		}
		if err := d.live.Flush(); err != nil {
			return DirectLease{}, err
		}
		l.Path, l.Capacity = d.layerPath(d.st.Leaf), d.live.Size()
	} else {
		rec, _ := d.st.snapshot(snapshot)
		if rec == nil {
			return DirectLease{}, disk.Errorf(disk.ErrNotFound, "datastore: disk %s has no snapshot %s", d.name, snapshot)
		}
		l.Path, l.Capacity = d.layerPath(rec.Layer), rec.Capacity
	}
	l.Proof = filepath.Join(d.dataDir(), "."+l.ID)
	if err := disk.WriteFileAtomic(nil, l.Proof, []byte(l.Nonce), 0o600); err != nil {
		return DirectLease{}, err
	}
	d.st.Direct = append(d.st.Direct, l)
	if err := d.commit(); err != nil {
		d.st.Direct = d.st.Direct[:len(d.st.Direct)-1]
		os.Remove(l.Proof)
		return DirectLease{}, err
	}
	if write {
		// The client writes the files now: close the host's chain.
		if err := d.closeLive(); err != nil {
			d.s.log.Warn("closing the live chain for a direct restore", "disk", d.name, "err", err)
		}
	}
	d.s.log.Info("direct lease granted", "disk", d.name, "lease", l.ID, "snapshot", snapshot, "write", write)
	return l, nil
}

func (st *diskState) writeLease() *DirectLease {
	for i := range st.Direct {
		if st.Direct[i].Write {
			return &st.Direct[i]
		}
	}
	return nil
}

// EndDirect ends a direct lease. After a write lease the host checks the
// disk (repairing what a crashed writer left), reopens it, and records
// every block as changed.
func (d *Disk) EndDirect(ctx context.Context, id string) error {
	d.ops.Lock()
	defer d.ops.Unlock()
	if err := d.endDirect(ctx, id); err != nil {
		return err
	}
	// Consolidations deferred while the lease was held.
	return d.consolidate(ctx)
}

func (d *Disk) endDirect(ctx context.Context, id string) error {
	d.gate.Lock()
	defer d.gate.Unlock()
	d.mu.Lock()
	defer d.mu.Unlock()
	i := slices.IndexFunc(d.st.Direct, func(l DirectLease) bool { return l.ID == id })
	if i < 0 {
		return disk.Errorf(disk.ErrNotFound, "datastore: disk %s has no direct lease %s", d.name, id)
	}
	l := d.st.Direct[i]
	if l.Write {
		rep, err := vmdk.Check(ctx, d.layerPath(d.st.Leaf), &vmdk.CheckOptions{Repair: vmdk.RepairLeaks, IgnoreCID: true})
		if err != nil {
			return err
		}
		if rep.Errors > 0 {
			d.s.log.Warn("the disk written directly has errors", "disk", d.name, "errors", rep.Errors)
		}
		if err := d.openLive(ctx, false); err != nil {
			return err
		}
		if d.tracker != nil {
			// Recorded durably before the lease (which keeps the disk
			// closed after a crash) is dropped.
			err := d.tracker.MarkWritten(0, d.live.Size())
			if err == nil {
				err = d.tracker.Flush()
			}
			if err != nil {
				return err
			}
		}
	}
	d.st.Direct = slices.Delete(d.st.Direct, i, i+1)
	if err := d.commit(); err != nil {
		return err
	}
	os.Remove(l.Proof)
	d.s.log.Info("direct lease ended", "disk", d.name, "lease", id)
	return nil
}

// Metadata returns the disk database (ddb.*) of the live disk or of a
// snapshot, keyed without the "ddb." prefix as VixDiskLib shows them.
func (d *Disk) Metadata(ctx context.Context, snapshot string) (map[string]string, error) {
	v, _, release, err := d.view(ctx, snapshot)
	if err != nil {
		return nil, err
	}
	defer release()
	var md interface {
		MetadataKeys() []string
		Metadata(string) (string, error)
	}
	switch x := v.(type) {
	case *Handle:
		d.gate.RLock()
		defer d.gate.RUnlock()
		if d.live == nil {
			return nil, disk.Errorf(disk.ErrBusy, "datastore: disk %s is not open", d.name)
		}
		md = d.live
	case *vmdk.Disk:
		md = x
	}
	out := map[string]string{}
	for _, k := range md.MetadataKeys() {
		v, err := md.Metadata(k)
		if err != nil {
			return nil, err
		}
		out[trimDDB(k)] = v
	}
	return out, nil
}

func trimDDB(k string) string {
	if len(k) > 4 && (k[:4] == "ddb." || k[:4] == "DDB.") {
		return k[4:]
	}
	return k
}

// SetMetadata writes a disk database key to the live disk's leaf.
func (d *Disk) SetMetadata(key, value string) error {
	d.gate.Lock()
	defer d.gate.Unlock()
	if d.live == nil {
		return disk.Errorf(disk.ErrBusy, "datastore: disk %s is not open", d.name)
	}
	return d.live.SetMetadata(key, value)
}
