package datastore

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/vdisk-project/vdisk/disk"
	"github.com/vdisk-project/vdisk/hostapi"
)

func jsonUnmarshal(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	return dec.Decode(v)
}

// vmState is vms/NAME.json.
type vmState struct {
	Name         string            `json:"name"`
	Created      time.Time         `json:"created"`
	Disks        map[string]string `json:"disks"` // controller key → disk name
	NextSnapshot int               `json:"nextSnapshot"`
	Snapshots    []vmSnapshot      `json:"snapshots,omitempty"`
}

type vmSnapshot struct {
	ID          string    `json:"id"`
	Name        string    `json:"name,omitempty"`
	Description string    `json:"description,omitempty"`
	Created     time.Time `json:"created"`
	Owner       string    `json:"owner,omitempty"`
}

// VMInfo is [hostapi.VMInfo].
type VMInfo = hostapi.VMInfo

// Lease is [hostapi.Lease].
type Lease = hostapi.Lease

func (s *Store) vmPath(name string) string { return filepath.Join(s.root, "vms", name+".json") }

func (s *Store) loadVM(name string) (*vmState, error) {
	b, err := readSmall(s.vmPath(name))
	if err != nil {
		return nil, err
	}
	var v vmState
	if err := jsonUnmarshal(b, &v); err != nil || v.Name != name {
		return nil, disk.Errorf(disk.ErrCorrupt, "datastore: %s: invalid VM file", s.vmPath(name))
	}
	if v.Disks == nil {
		v.Disks = map[string]string{}
	}
	// vm.json is the truth on ownership; disk.json follows (a crash may
	// have come between the two writes).
	for key, dn := range v.Disks {
		d := s.disks[dn]
		if d == nil {
			s.log.Warn("VM names a missing disk; dropping it", "vm", name, "key", key, "disk", dn)
			delete(v.Disks, key)
			continue
		}
		d.setOwner(name, key)
	}
	if s.reconcileVM(&v) {
		if err := writeJSON(s.vmPath(name), &v); err != nil {
			return nil, err
		}
	}
	return &v, nil
}

// reconcileVM completes what a crash during SnapshotVM left (the VM's ID
// is spent first, then the disks record the snapshot one by one, then the
// VM lists it), and reports whether v changed. A snapshot the VM does not
// list but every disk holds was made whole: it is listed. One only some
// disks hold was cut short: it is dropped from them (its layers
// consolidate later). A listed snapshot some disks lack was being removed
// (the disks drop it first): the removal is finished. (Disks are attached
// and detached only while the VM has no snapshots, so all its disks hold
// the same ones.)
func (s *Store) reconcileVM(v *vmState) bool {
	var ds []*Disk
	for _, dn := range v.Disks {
		if d := s.disks[dn]; d != nil {
			ds = append(ds, d)
		}
	}
	listed := map[string]bool{}
	for _, sn := range v.Snapshots {
		listed[sn.ID] = true
	}
	held := map[string]int{}
	recs := map[string]snapshotRec{}
	for _, d := range ds {
		d.mu.Lock()
		for _, r := range d.st.Snapshots {
			if !listed[r.ID] {
				held[r.ID]++
				recs[r.ID] = r
			}
		}
		d.mu.Unlock()
	}
	changed := false
	for _, sn := range slices.Clone(v.Snapshots) {
		n := 0
		for _, d := range ds {
			d.mu.Lock()
			if r, _ := d.st.snapshot(sn.ID); r != nil {
				n++
			}
			d.mu.Unlock()
		}
		if n == len(ds) {
			continue
		}
		s.log.Warn("a VM snapshot some of its disks no longer hold (a crash while it was removed); finishing the removal", "vm", v.Name, "snapshot", sn.ID)
		for _, d := range ds {
			if err := d.dropSnapshot(sn.ID); err != nil && disk.CodeOf(err) != disk.ErrNotFound {
				s.log.Warn("dropping a VM snapshot", "disk", d.name, "snapshot", sn.ID, "err", err)
			}
		}
		v.Snapshots = slices.DeleteFunc(v.Snapshots, func(x vmSnapshot) bool { return x.ID == sn.ID })
		changed = true
	}
	ids := make([]string, 0, len(held))
	for id := range held {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		if held[id] == len(ds) {
			r := recs[id]
			s.log.Warn("a VM snapshot its disks hold was not listed (a crash while it was made); listing it", "vm", v.Name, "snapshot", id)
			v.Snapshots = append(v.Snapshots, vmSnapshot{ID: id, Name: r.Name, Description: r.Description, Created: r.Created, Owner: r.Owner})
			changed = true
			continue
		}
		s.log.Warn("a VM snapshot only some of its disks hold (a crash while it was made); dropping it", "vm", v.Name, "snapshot", id)
		for _, d := range ds {
			if err := d.dropSnapshot(id); err != nil && disk.CodeOf(err) != disk.ErrNotFound {
				s.log.Warn("dropping a partial VM snapshot", "disk", d.name, "snapshot", id, "err", err)
			}
		}
	}
	slices.SortFunc(v.Snapshots, func(a, b vmSnapshot) int { return a.Created.Compare(b.Created) })
	return changed
}

func (d *Disk) setOwner(vm, key string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.st.VM == vm && d.st.Key == key {
		return nil
	}
	d.st.VM, d.st.Key = vm, key
	return d.commit()
}

// CreateVM makes an empty VM.
func (s *Store) CreateVM(name string) (VMInfo, error) {
	if err := CheckName("VM", name); err != nil {
		return VMInfo{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.vms[name]; ok {
		return VMInfo{}, disk.Errorf(disk.ErrInvalid, "datastore: VM %s exists", name)
	}
	v := &vmState{Name: name, Created: s.o.Now().UTC(), Disks: map[string]string{}, NextSnapshot: 1}
	if err := writeJSON(s.vmPath(name), v); err != nil {
		return VMInfo{}, err
	}
	s.vms[name] = v
	s.log.Info("VM created", "vm", name)
	return s.vmInfoLocked(v), nil
}

func (s *Store) vmInfoLocked(v *vmState) VMInfo {
	in := VMInfo{Name: v.Name, Created: v.Created, Disks: []DiskInfo{}, Snapshots: []SnapshotInfo{}}
	for _, key := range slices.Sorted(maps.Keys(v.Disks)) {
		if d := s.disks[v.Disks[key]]; d != nil {
			in.Disks = append(in.Disks, d.Info())
		}
	}
	for _, sn := range v.Snapshots {
		in.Snapshots = append(in.Snapshots, SnapshotInfo{ID: sn.ID, Name: sn.Name, Description: sn.Description,
			Created: sn.Created, Temporary: sn.Owner != "", Owner: sn.Owner})
	}
	return in
}

func (s *Store) vm(name string) (*vmState, error) {
	if err := CheckName("VM", name); err != nil {
		return nil, err
	}
	v := s.vms[name]
	if v == nil {
		if err := s.failed["vm:"+name]; err != nil {
			return nil, &disk.Error{Op: "datastore: VM " + name + " failed to open at startup", Off: -1, Code: disk.ErrCorrupt, Err: err}
		}
		return nil, disk.Errorf(disk.ErrNotFound, "datastore: no VM %s", name)
	}
	return v, nil
}

// VM describes one VM.
func (s *Store) VM(name string) (VMInfo, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, err := s.vm(name)
	if err != nil {
		return VMInfo{}, err
	}
	return s.vmInfoLocked(v), nil
}

// VMs lists the VMs by name.
func (s *Store) VMs() []VMInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []VMInfo
	for _, n := range slices.Sorted(maps.Keys(s.vms)) {
		out = append(out, s.vmInfoLocked(s.vms[n]))
	}
	return out
}

// VMDisk resolves a VM's controller key to its disk.
func (s *Store) VMDisk(vm, key string) (*Disk, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, err := s.vm(vm)
	if err != nil {
		return nil, err
	}
	if err := CheckKey(key); err != nil {
		return nil, err
	}
	d := s.disks[v.Disks[key]]
	if d == nil {
		return nil, disk.Errorf(disk.ErrNotFound, "datastore: VM %s has no disk at %s", vm, key)
	}
	return d, nil
}

// vmDisks returns a VM's disks sorted by name. The caller holds s.mu.
func (s *Store) vmDisksLocked(v *vmState) []*Disk {
	var ds []*Disk
	for _, dn := range v.Disks {
		if d := s.disks[dn]; d != nil {
			ds = append(ds, d)
		}
	}
	slices.SortFunc(ds, func(a, b *Disk) int { return strings.Compare(a.name, b.name) })
	return ds
}

// DeleteVM removes a VM. Its disks are deleted with it, or kept as
// detached disks when keepDisks is set. A VM whose disks are in use or
// leased is refused with ErrBusy.
func (s *Store) DeleteVM(ctx context.Context, name string, keepDisks bool) error {
	s.mu.Lock()
	v, err := s.vm(name)
	if err != nil {
		s.mu.Unlock()
		return err
	}
	ds := s.vmDisksLocked(v)
	if !keepDisks {
		for _, d := range ds {
			if err := d.retire(); err != nil {
				for _, r := range ds {
					r.unretire(ctx)
				}
				s.mu.Unlock()
				return err
			}
		}
		for _, d := range ds {
			delete(s.disks, d.name)
		}
	}
	if err := os.Remove(s.vmPath(name)); err != nil {
		s.mu.Unlock()
		return disk.Wrap(err, "datastore: delete VM", s.vmPath(name), -1)
	}
	delete(s.vms, name)
	s.mu.Unlock()
	var errs []error
	for _, d := range ds {
		if keepDisks {
			errs = append(errs, d.setOwner("", ""))
		} else {
			errs = append(errs, d.removeFiles())
		}
	}
	s.log.Info("VM deleted", "vm", name, "kept_disks", keepDisks)
	return errors.Join(errs...)
}

// unretire reopens a disk retire closed, when a group deletion fails.
func (d *Disk) unretire(ctx context.Context) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.retired {
		return
	}
	d.retired = false
	if d.live == nil {
		d.openLive(ctx, false)
	}
}

// AddDisk creates a disk and attaches it to a VM at key. The disk's name
// defaults to VM-KEY (with ':' as '-').
func (s *Store) AddDisk(ctx context.Context, vm, key string, spec DiskSpec) (DiskInfo, error) {
	if err := CheckKey(key); err != nil {
		return DiskInfo{}, err
	}
	if spec.Name == "" {
		spec.Name = vm + "-" + strings.ReplaceAll(key, ":", "-")
	}
	s.mu.Lock()
	_, err := s.vm(vm)
	s.mu.Unlock()
	if err != nil {
		return DiskInfo{}, err
	}
	if _, err := s.CreateDisk(ctx, spec); err != nil {
		return DiskInfo{}, err
	}
	if err := s.Attach(vm, key, spec.Name); err != nil {
		s.DeleteDisk(ctx, spec.Name)
		return DiskInfo{}, err
	}
	d, err := s.disk(spec.Name)
	if err != nil {
		return DiskInfo{}, err
	}
	return d.Info(), nil
}

// Attach attaches a detached disk to a VM at a free controller key. Disks
// or VMs with snapshots cannot be attached (their snapshot histories
// would not match).
func (s *Store) Attach(vm, key, name string) error {
	if err := CheckKey(key); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	v, err := s.vm(vm)
	if err != nil {
		return err
	}
	d := s.disks[name]
	if d == nil {
		return disk.Errorf(disk.ErrNotFound, "datastore: no disk %s", name)
	}
	if _, used := v.Disks[key]; used {
		return disk.Errorf(disk.ErrInvalid, "datastore: VM %s already has a disk at %s", vm, key)
	}
	if owner := d.owner(); owner != "" {
		return disk.Errorf(disk.ErrBusy, "datastore: disk %s is attached to VM %s", name, owner)
	}
	if len(v.Snapshots) > 0 || len(d.Info().Snapshots) > 0 {
		return disk.Errorf(disk.ErrBusy, "datastore: remove the snapshots of VM %s and disk %s before attaching", vm, name)
	}
	v.Disks[key] = name
	if err := writeJSON(s.vmPath(vm), v); err != nil {
		delete(v.Disks, key)
		return err
	}
	return d.setOwner(vm, key)
}

// Detach detaches the disk at key from a VM; it becomes a detached disk.
func (s *Store) Detach(vm, key string) (string, error) {
	if err := CheckKey(key); err != nil {
		return "", err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	v, err := s.vm(vm)
	if err != nil {
		return "", err
	}
	name, ok := v.Disks[key]
	if !ok {
		return "", disk.Errorf(disk.ErrNotFound, "datastore: VM %s has no disk at %s", vm, key)
	}
	if len(v.Snapshots) > 0 {
		return "", disk.Errorf(disk.ErrBusy, "datastore: remove the snapshots of VM %s before detaching a disk", vm)
	}
	delete(v.Disks, key)
	if err := writeJSON(s.vmPath(vm), v); err != nil {
		v.Disks[key] = name
		return "", err
	}
	if d := s.disks[name]; d != nil {
		return name, d.setOwner("", "")
	}
	return name, nil
}

// vmOps locks the ops of every disk of a VM and returns them with an
// unlock func.
func (s *Store) vmOps(vm string) (*vmState, []*Disk, func(), error) {
	s.mu.Lock()
	v, err := s.vm(vm)
	if err != nil {
		s.mu.Unlock()
		return nil, nil, nil, err
	}
	for _, dn := range v.Disks {
		if err := s.failed[dn]; err != nil {
			s.mu.Unlock()
			return nil, nil, nil, s.failedErr(dn, err)
		}
	}
	ds := s.vmDisksLocked(v)
	s.mu.Unlock()
	for _, d := range ds {
		d.ops.Lock()
	}
	return v, ds, func() {
		for _, d := range ds {
			d.ops.Unlock()
		}
	}, nil
}

// SnapshotVM snapshots every disk of a VM at one instant.
func (s *Store) SnapshotVM(ctx context.Context, vm string, spec SnapshotSpec) (SnapshotInfo, error) {
	if err := spec.validate(); err != nil {
		return SnapshotInfo{}, err
	}
	v, ds, unlock, err := s.vmOps(vm)
	if err != nil {
		return SnapshotInfo{}, err
	}
	defer unlock()
	s.mu.Lock()
	id := fmt.Sprintf("snapshot-%d", v.NextSnapshot)
	v.NextSnapshot++
	err = writeJSON(s.vmPath(vm), v)
	s.mu.Unlock()
	if err != nil {
		return SnapshotInfo{}, err
	}
	if _, err := snapshotDisks(ctx, ds, id, spec); err != nil {
		return SnapshotInfo{}, err
	}
	sn := vmSnapshot{ID: id, Name: spec.Name, Description: spec.Description, Created: s.o.Now().UTC(), Owner: spec.Owner}
	s.mu.Lock()
	v.Snapshots = append(v.Snapshots, sn)
	err = writeJSON(s.vmPath(vm), v)
	s.mu.Unlock()
	return SnapshotInfo{ID: id, Name: sn.Name, Description: sn.Description, Created: sn.Created, Temporary: sn.Owner != "", Owner: sn.Owner}, err
}

// RemoveVMSnapshot removes a VM snapshot from every disk, consolidating
// each while the VM keeps running.
func (s *Store) RemoveVMSnapshot(ctx context.Context, vm, id string) error {
	v, ds, unlock, err := s.vmOps(vm)
	if err != nil {
		return err
	}
	defer unlock()
	s.mu.Lock()
	i := slices.IndexFunc(v.Snapshots, func(sn vmSnapshot) bool { return sn.ID == id })
	s.mu.Unlock()
	if i < 0 {
		return disk.Errorf(disk.ErrNotFound, "datastore: VM %s has no snapshot %s", vm, id)
	}
	for _, d := range ds {
		d.mu.Lock()
		busy := d.readers[id] > 0
		d.mu.Unlock()
		if busy {
			return disk.Errorf(disk.ErrBusy, "datastore: snapshot %s of disk %s is being read", id, d.name)
		}
	}
	var errs []error
	for _, d := range ds {
		if err := d.dropSnapshot(id); err != nil && disk.CodeOf(err) != disk.ErrNotFound {
			errs = append(errs, err)
		}
	}
	if len(errs) == 0 {
		s.mu.Lock()
		v.Snapshots = slices.DeleteFunc(v.Snapshots, func(sn vmSnapshot) bool { return sn.ID == id })
		errs = append(errs, writeJSON(s.vmPath(vm), v))
		s.mu.Unlock()
	}
	for _, d := range ds {
		errs = append(errs, d.consolidate(ctx))
	}
	return errors.Join(errs...)
}

// RevertVM reverts every disk of a VM to a snapshot.
func (s *Store) RevertVM(ctx context.Context, vm, id string) error {
	v, ds, unlock, err := s.vmOps(vm)
	if err != nil {
		return err
	}
	defer unlock()
	s.mu.Lock()
	ok := slices.ContainsFunc(v.Snapshots, func(sn vmSnapshot) bool { return sn.ID == id })
	s.mu.Unlock()
	if !ok {
		return disk.Errorf(disk.ErrNotFound, "datastore: VM %s has no snapshot %s", vm, id)
	}
	if err := revertDisks(ctx, ds, id); err != nil {
		return err
	}
	var errs []error
	for _, d := range ds {
		errs = append(errs, d.consolidate(ctx))
	}
	return errors.Join(errs...)
}

func newID(prefix string) string {
	var b [8]byte
	rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}

// PrepareForAccess takes a lease on disks (a VM's or one detached disk's)
// for a backup or restore session: while it is held, relocating or
// deleting them is refused. It fails with ErrBusy while a relocation runs.
func (s *Store) PrepareForAccess(ds []*Disk, holder, user, reason string) (Lease, error) {
	if err := checkText("access reason", reason, MaxReasonLen, false); err != nil {
		return Lease{}, err
	}
	l := Lease{ID: newID("lease-"), Holder: holder, User: user, Reason: reason, Created: s.o.Now().UTC()}
	for _, d := range ds {
		d.mu.Lock()
		moving := d.moving
		d.mu.Unlock()
		if moving {
			return Lease{}, disk.Errorf(disk.ErrBusy, "datastore: disk %s is being relocated; retry when it is done", d.name)
		}
	}
	for i, d := range ds {
		if err := d.addLease(l); err != nil {
			for _, r := range ds[:i] {
				r.endLease(l.ID)
			}
			return Lease{}, err
		}
	}
	s.log.Info("access prepared", "lease", l.ID, "user", user, "reason", reason)
	return l, nil
}

func (d *Disk) addLease(l Lease) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.moving {
		return disk.Errorf(disk.ErrBusy, "datastore: disk %s is being relocated; retry when it is done", d.name)
	}
	if len(d.st.Leases) >= MaxLeases {
		return disk.Errorf(disk.ErrBusy, "datastore: disk %s holds %d access leases, the most it takes; end some first", d.name, MaxLeases)
	}
	d.st.Leases = append(d.st.Leases, l)
	if err := d.commit(); err != nil {
		d.st.Leases = d.st.Leases[:len(d.st.Leases)-1]
		return err
	}
	return nil
}

// endLease drops a lease; it reports whether the disk held it.
func (d *Disk) endLease(id string) (bool, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	n := len(d.st.Leases)
	d.st.Leases = slices.DeleteFunc(d.st.Leases, func(l Lease) bool { return l.ID == id })
	if len(d.st.Leases) == n {
		return false, nil
	}
	return true, d.commit()
}

// EndAccess releases a lease. An unknown lease is ErrNotFound.
// EndLeases ends the access leases and direct read leases whose holder (a
// session) is not alive, on every disk, and returns their IDs. The host
// calls it when a session ends, and at start (no session outlives the
// host), so such a lease lasts no longer than the session that took it.
// Direct write leases stay: their holder may still be writing the files,
// and the disk stays closed until Cleanup or EndDirect ends them.
func (s *Store) EndLeases(ctx context.Context, alive func(session string) bool) ([]string, error) {
	return s.endLeases(ctx, alive, false)
}

func (s *Store) endLeases(ctx context.Context, alive func(string) bool, writes bool) ([]string, error) {
	var ids []string
	var errs []error
	for _, in := range s.Disks() {
		d, err := s.disk(in.Name)
		if err != nil {
			continue
		}
		ended, err := d.endLeases(ctx, in, alive, writes)
		errs = append(errs, err)
		for _, id := range ended {
			if !slices.Contains(ids, id) {
				ids = append(ids, id)
			}
		}
	}
	return ids, errors.Join(errs...)
}

// endLeases ends the leases of in (the disk's Info) whose holder is not
// alive; direct write leases only when writes is set.
func (d *Disk) endLeases(ctx context.Context, in DiskInfo, alive func(string) bool, writes bool) ([]string, error) {
	var ids []string
	var errs []error
	for _, l := range in.Direct {
		if !alive(l.Holder) && (writes || !l.Write) {
			if err := d.EndDirect(ctx, l.ID); err != nil {
				errs = append(errs, err)
				continue
			}
			ids = append(ids, l.ID)
		}
	}
	for _, l := range in.Leases {
		if !alive(l.Holder) {
			if _, err := d.endLease(l.ID); err != nil {
				errs = append(errs, err)
				continue
			}
			ids = append(ids, l.ID)
		}
	}
	return ids, errors.Join(errs...)
}

func (s *Store) EndAccess(id string) error {
	found := false
	var errs []error
	for _, in := range s.Disks() {
		if d, err := s.disk(in.Name); err == nil {
			ok, err := d.endLease(id)
			found = found || ok
			errs = append(errs, err)
		}
	}
	if !found {
		return disk.Errorf(disk.ErrNotFound, "datastore: no lease %s", id)
	}
	s.log.Info("access ended", "lease", id)
	return errors.Join(errs...)
}

// Relocate moves a disk's files to another datastore directory while the
// disk stays online: the frozen layers are copied with writes flowing, the
// small remainder with writes paused. A leased disk is refused (ErrBusy).
func (d *Disk) Relocate(ctx context.Context, target string) error {
	dstRoot, err := d.s.targetDir(target)
	if err != nil {
		return err
	}
	if target == "default" {
		target = ""
	}
	d.ops.Lock()
	defer d.ops.Unlock()
	d.mu.Lock()
	if len(d.st.Leases) > 0 {
		d.mu.Unlock()
		return disk.Errorf(disk.ErrBusy, "datastore: disk %s is held for access (lease %s); end the access first", d.name, d.st.Leases[0].ID)
	}
	if len(d.st.Direct) > 0 {
		d.mu.Unlock()
		return disk.Errorf(disk.ErrBusy, "datastore: disk %s has direct access leases", d.name)
	}
	if d.st.Datastore == target {
		d.mu.Unlock()
		return nil
	}
	d.moving = true
	d.st.Op = &pendingOp{Kind: "relocate", Target: target}
	err = d.commit()
	d.mu.Unlock()
	defer func() {
		d.mu.Lock()
		d.moving = false
		d.mu.Unlock()
	}()
	if err != nil {
		return err
	}
	srcDir := d.dataDir()
	dstDir := filepath.Join(dstRoot, "disks", d.name)
	fail := func(err error) error {
		d.clearCopy(dstDir)
		d.mu.Lock()
		d.st.Op = nil
		d.commit()
		d.mu.Unlock()
		return err
	}
	d.clearCopy(dstDir)
	if err := os.MkdirAll(dstDir, 0o750); err != nil {
		return fail(disk.Wrap(err, "datastore: relocate", dstDir, -1))
	}
	// Freeze everything but a new, empty leaf and copy it online.
	d.gate.Lock()
	err = d.pushLeaf(ctx)
	d.gate.Unlock()
	if err != nil {
		return fail(err)
	}
	d.mu.Lock()
	leaf := d.st.Leaf
	var frozen []int
	for _, l := range d.st.Layers {
		if l.ID != leaf {
			frozen = append(frozen, l.ID)
		}
	}
	d.mu.Unlock()
	for _, id := range frozen {
		for _, f := range layerFiles(srcDir, d.name, id) {
			if err := copyFile(ctx, f, filepath.Join(dstDir, filepath.Base(f))); err != nil {
				return fail(err)
			}
		}
	}
	// Switch with writes paused: copy the leaf, commit, reopen there.
	d.gate.Lock()
	err = d.live.Flush()
	if err == nil {
		for _, f := range layerFiles(srcDir, d.name, leaf) {
			if err = copyFile(ctx, f, filepath.Join(dstDir, filepath.Base(f))); err != nil {
				break
			}
		}
	}
	if err != nil {
		d.gate.Unlock()
		return fail(err)
	}
	d.mu.Lock()
	err = d.closeLive()
	old := d.st
	d.st.Datastore, d.st.Op = target, nil
	if cerr := d.commit(); cerr != nil {
		d.st = old
		err = errors.Join(err, cerr, d.openLive(ctx, false))
		d.mu.Unlock()
		d.gate.Unlock()
		return fail(err)
	}
	err = errors.Join(err, d.openLive(ctx, false))
	d.mu.Unlock()
	d.gate.Unlock()
	d.clearCopy(srcDir)
	d.s.log.Info("disk relocated", "disk", d.name, "datastore", target)
	return errors.Join(err, d.consolidate(ctx))
}

// clearCopy removes this disk's layer files from dir, a copy that a
// relocation left or made, and dir itself unless it is the disk's own
// directory (which holds disk.json and the change tracking state: it is
// never removed whole).
func (d *Disk) clearCopy(dir string) {
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if _, ok := layerID(d.name, e.Name()); ok {
			os.Remove(filepath.Join(dir, e.Name()))
		}
	}
	if filepath.Clean(dir) != filepath.Clean(d.dir) {
		os.Remove(dir) // only when empty
	}
}

// copyFile copies a file, leaving holes as holes, and syncs it.
func copyFile(ctx context.Context, src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return disk.Wrap(err, "datastore: copy", src, -1)
	}
	defer in.Close()
	st, err := in.Stat()
	if err != nil {
		return disk.Wrap(err, "datastore: copy", src, -1)
	}
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o640)
	if err != nil {
		return disk.Wrap(err, "datastore: copy", dst, -1)
	}
	buf := make([]byte, 1<<20)
	size := st.Size()
	for off := int64(0); off < size; {
		if err := ctx.Err(); err != nil {
			out.Close()
			return err
		}
		data, run, err := disk.FileRun(in, off, size-off)
		if err != nil || run <= 0 {
			data, run = true, size-off
		}
		if data {
			if _, err := io.CopyBuffer(io.NewOffsetWriter(out, off), io.NewSectionReader(in, off, run), buf); err != nil {
				out.Close()
				return disk.Wrap(err, "datastore: copy", dst, off)
			}
		}
		off += run
	}
	err = out.Truncate(size)
	if err == nil {
		err = out.Sync()
	}
	return disk.Wrap(errors.Join(err, out.Close()), "datastore: copy", dst, -1)
}

// CleanupReport is [hostapi.CleanupReport].
type CleanupReport = hostapi.CleanupReport

// Cleanup removes what clients that are gone left behind: temporary
// snapshots and access leases whose session alive reports dead, and
// directories of disks whose creation was interrupted.
func (s *Store) Cleanup(ctx context.Context, alive func(session string) bool) (CleanupReport, error) {
	rep := CleanupReport{Snapshots: []string{}, Leases: []string{}, Stray: []string{}}
	var errs []error
	for _, vm := range s.VMs() {
		for _, sn := range vm.Snapshots {
			if sn.Owner != "" && !alive(sn.Owner) {
				if err := s.RemoveVMSnapshot(ctx, vm.Name, sn.ID); err != nil {
					errs = append(errs, err)
					continue
				}
				rep.Snapshots = append(rep.Snapshots, vm.Name+"@"+sn.ID)
			}
		}
	}
	for _, in := range s.Disks() {
		d, err := s.disk(in.Name)
		if err != nil {
			continue
		}
		if in.VM == "" {
			for _, sn := range in.Snapshots {
				if sn.Owner != "" && !alive(sn.Owner) {
					if err := d.RemoveSnapshot(ctx, sn.ID); err != nil {
						errs = append(errs, err)
						continue
					}
					rep.Snapshots = append(rep.Snapshots, in.Name+"@"+sn.ID)
				}
			}
		}
		ended, err := d.endLeases(ctx, in, alive, true)
		errs = append(errs, err)
		for _, id := range ended {
			if !slices.Contains(rep.Leases, id) {
				rep.Leases = append(rep.Leases, id)
			}
		}
	}
	ents, _ := os.ReadDir(filepath.Join(s.root, "disks"))
	s.mu.Lock()
	for _, e := range ents {
		if _, known := s.disks[e.Name()]; known || !e.IsDir() || CheckName("disk", e.Name()) != nil {
			continue
		}
		dir := s.diskDir(e.Name())
		if _, err := os.Lstat(filepath.Join(dir, "disk.json")); err == nil {
			continue
		}
		if err := os.RemoveAll(dir); err != nil {
			errs = append(errs, err)
			continue
		}
		rep.Stray = append(rep.Stray, e.Name())
	}
	s.mu.Unlock()
	return rep, errors.Join(errs...)
}
