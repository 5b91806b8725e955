package vdisk

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"

	"github.com/vdisk-project/vdisk/disk"
	"github.com/vdisk-project/vdisk/format"
	"github.com/vdisk-project/vdisk/format/vmdk"
	"github.com/vdisk-project/vdisk/hostapi"
	"github.com/vdisk-project/vdisk/internal/hostclient"
)

// CreateParams describe a new disk (VixDiskLibCreateParams).
type CreateParams struct {
	Capacity int64 // bytes
	// Type is a VMDK create type (monolithicSparse by default; for a local
	// file also streamOptimized, or "raw").
	Type      string
	Adapter   string // default lsilogic
	HWVersion int    // local VMDKs; default 14
	// CBT turns change tracking on (host disks); CBTBlockSize is its
	// granularity (0: 64 KiB).
	CBT          bool
	CBTBlockSize int64
}

// Create makes a new, empty disk (VixDiskLib_Create): a local file, a
// host's detached disk (Spec.Disk), or a disk added to a VM at Spec.Key.
func (c *Conn) Create(ctx context.Context, spec Spec, p CreateParams) error {
	if err := checkCreate(spec, p); err != nil {
		return err
	}
	if spec.Path != "" {
		d, err := createLocal(ctx, spec.Path, p)
		if err != nil {
			return err
		}
		return d.Close()
	}
	if c.api == nil {
		return disk.Errorf(disk.ErrInvalid, "vdisk: %s names no local file", spec)
	}
	req := map[string]any{"name": spec.Disk, "capacity": p.Capacity, "type": p.Type, "adapter": p.Adapter,
		"cbt": p.CBT, "cbtBlockSize": p.CBTBlockSize}
	if spec.VM != "" {
		req["key"] = spec.Key
		return c.api.Do(ctx, "POST", "/api/v1/vms/"+hostclient.Esc(spec.VM)+"/disks", req, nil)
	}
	return c.api.Do(ctx, "POST", "/api/v1/disks", req, nil)
}

// checkCreate refuses what no Create may make.
func checkCreate(spec Spec, p CreateParams) error {
	if p.Capacity <= 0 {
		return disk.Errorf(disk.ErrInvalid, "vdisk: capacity must be positive")
	}
	if spec.Snapshot != "" {
		return disk.Errorf(disk.ErrInvalid, "vdisk: a snapshot cannot be created with Create")
	}
	return nil
}

func createLocal(ctx context.Context, path string, p CreateParams) (disk.Disk, error) {
	if p.Type == "raw" {
		return format.Create(ctx, path, format.Raw, p.Capacity, nil)
	}
	o := vmdk.CreateOptions{Subformat: vmdk.Subformat(p.Type), Adapter: p.Adapter, HWVersion: p.HWVersion}
	if o.Adapter == "" {
		o.Adapter = "lsilogic"
	}
	if o.HWVersion == 0 {
		o.HWVersion = 14
	}
	return format.Create(ctx, path, format.VMDK, p.Capacity, &format.CreateOptions{VMDK: o})
}

// CloneOptions modify Clone.
type CloneOptions struct {
	// Create describes the destination; Capacity and Adapter default to
	// the source's.
	Create CreateParams
	// Progress is called as the copy advances (bytes of the source).
	Progress func(done, total int64)
	// Workers bounds the copy's parallelism; 0 means disk.Copy's default.
	Workers int
}

// Clone copies a disk into a new one (VixDiskLib_Clone), between any two
// connections: local to host, host to local, host to host or local to
// local. Only data is read and written, so thin stays thin. The source is
// read through the connection's transports (a snapshot for a consistent
// copy of a running disk).
func Clone(ctx context.Context, dst *Conn, dstSpec Spec, src *Conn, srcSpec Spec, o *CloneOptions) (disk.CopyStats, error) {
	var opts CloneOptions
	if o != nil {
		opts = *o
	}
	s, err := src.Open(ctx, srcSpec, OpenReadOnly)
	if err != nil {
		return disk.CopyStats{}, err
	}
	defer s.Close()
	p := opts.Create
	if p.Capacity == 0 {
		p.Capacity = s.Size()
	}
	if p.Capacity < s.Size() {
		return disk.CopyStats{}, disk.Errorf(disk.ErrInvalid, "vdisk: a clone of %d bytes cannot hold its source's %d", p.Capacity, s.Size())
	}
	if p.Adapter == "" {
		if in, err := s.Info(ctx); err == nil && in.Adapter != "" {
			p.Adapter = in.Adapter
		}
	}
	copyOpts := &disk.CopyOptions{DstZeroed: true, Workers: opts.Workers,
		Sequential: p.Type == string(vmdk.StreamOptimized), Progress: opts.Progress}
	if dstSpec.Path == "" {
		if err := dst.Create(ctx, dstSpec, p); err != nil {
			return disk.CopyStats{}, err
		}
		d, err := dst.Open(ctx, dstSpec, 0)
		if err != nil {
			return disk.CopyStats{}, err
		}
		st, err := disk.Copy(ctx, d, s, copyOpts)
		if cerr := d.Close(); err == nil {
			err = cerr
		}
		return st, err
	}
	// A local destination is written through the disk its creation
	// returns: a streamOptimized file can be written only then, as a
	// stream. A clone that fails removes what it created, so that a
	// retry does not meet a half-copied file.
	if err := checkCreate(dstSpec, p); err != nil {
		return disk.CopyStats{}, err
	}
	d, err := createLocal(ctx, dstSpec.Path, p)
	if err != nil {
		return disk.CopyStats{}, err
	}
	st, err := disk.Copy(ctx, d, s, copyOpts)
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		if uerr := dst.Unlink(context.WithoutCancel(ctx), dstSpec); uerr != nil && !errors.Is(uerr, os.ErrNotExist) {
			err = fmt.Errorf("%w (and removing the partial clone: %v)", err, uerr)
		}
	}
	return st, err
}

// Grow enlarges a disk to capacity bytes (VixDiskLib_Grow): a local file
// (not open elsewhere) or a host disk without snapshots.
func (c *Conn) Grow(ctx context.Context, spec Spec, capacity int64) error {
	if spec.Path != "" {
		d, _, err := format.Open(ctx, spec.Path, nil)
		if err != nil {
			return err
		}
		err = disk.Resize(ctx, d, capacity)
		if cerr := d.Close(); err == nil {
			err = cerr
		}
		return err
	}
	if c.api == nil {
		return disk.Errorf(disk.ErrInvalid, "vdisk: %s names no local file", spec)
	}
	name, err := c.api.ResolveDisk(ctx, spec.Disk, spec.VM, spec.Key)
	if err != nil {
		return err
	}
	return c.api.Do(ctx, "PATCH", "/api/v1/disks/"+hostclient.Esc(name), map[string]any{"capacity": capacity}, nil)
}

// Shrink reclaims the space of a local sparse VMDK: grains that read as
// zeros or that nothing references go, the capacity stays
// (VixDiskLib_Shrink and VixDiskLib_Defragment, which vdisk's compaction
// does in one pass). Host disks are compacted by their host.
func (c *Conn) Shrink(ctx context.Context, spec Spec) (vmdk.CompactStats, error) {
	if spec.Path == "" {
		return vmdk.CompactStats{}, disk.Errorf(disk.ErrNotSupported, "vdisk: shrinking works on local files")
	}
	return vmdk.Compact(ctx, spec.Path, nil)
}

// Defragment is Shrink (VixDiskLib_Defragment).
func (c *Conn) Defragment(ctx context.Context, spec Spec) (vmdk.CompactStats, error) {
	return c.Shrink(ctx, spec)
}

// CheckRepair checks a local VMDK and, with repair, fixes what it can
// (VixDiskLib_CheckRepair). The report says what was found; a nil error
// means the check ran, not that the disk is clean. Host disks are checked
// by their host when it opens them.
func (c *Conn) CheckRepair(ctx context.Context, spec Spec, repair bool) (*vmdk.CheckReport, error) {
	if spec.Path == "" {
		return nil, disk.Errorf(disk.ErrNotSupported, "vdisk: checking works on local files; the host checks its own disks")
	}
	mode := vmdk.RepairNone
	if repair {
		mode = vmdk.RepairAll
	}
	return vmdk.Check(ctx, spec.Path, &vmdk.CheckOptions{Repair: mode})
}

// PrepareForAccess tells the host a backup or restore is about to use a
// VM's disks (Spec.VM without Key) or a disk (Spec.Disk): until EndAccess
// the host refuses to relocate or delete them. identity says who (free
// text, shown to operators). It returns the lease to pass to EndAccess. A
// relocation in progress is ErrBusy; Connect's retries wait it out.
func (c *Conn) PrepareForAccess(ctx context.Context, target Spec, identity string) (string, error) {
	if c.api == nil {
		return "", nil // local files: nothing to coordinate
	}
	path, err := target.apiTarget()
	if err != nil {
		return "", err
	}
	var l hostapi.Lease
	for try := 0; ; try++ {
		err = c.api.Do(ctx, "POST", path+"/access", map[string]string{"reason": identity}, &l)
		if err == nil || disk.CodeOf(err) != disk.ErrBusy || try >= c.cfg.Retries {
			return l.ID, err
		}
		if werr := hostclient.Backoff(ctx, try+1); werr != nil {
			return "", err
		}
	}
}

// EndAccess releases a PrepareForAccess lease.
func (c *Conn) EndAccess(ctx context.Context, lease string) error {
	if c.api == nil || lease == "" {
		return nil
	}
	return c.api.Do(ctx, "DELETE", "/api/v1/access/"+hostclient.Esc(lease), nil, nil)
}

// SnapshotInfo describes a snapshot.
type SnapshotInfo = hostapi.SnapshotInfo

// CreateSnapshot snapshots a VM (all its disks at one instant) or a
// detached disk. A temporary snapshot is removed by Cleanup once this
// session is gone, so a crashed backup leaves nothing behind.
func (c *Conn) CreateSnapshot(ctx context.Context, target Spec, name string, temporary bool) (SnapshotInfo, error) {
	var sn SnapshotInfo
	if c.api == nil {
		return sn, disk.Errorf(disk.ErrNotSupported, "vdisk: snapshots are taken by a host")
	}
	path, err := target.apiTarget()
	if err != nil {
		return sn, err
	}
	err = c.api.Do(ctx, "POST", path+"/snapshots", map[string]any{"name": name, "temporary": temporary}, &sn)
	return sn, err
}

// RemoveSnapshot deletes a snapshot; the host consolidates it online.
func (c *Conn) RemoveSnapshot(ctx context.Context, target Spec, id string) error {
	if c.api == nil {
		return disk.Errorf(disk.ErrNotSupported, "vdisk: snapshots are taken by a host")
	}
	path, err := target.apiTarget()
	if err != nil {
		return err
	}
	return c.api.Do(ctx, "DELETE", path+"/snapshots/"+hostclient.Esc(id), nil, nil)
}

// ChangeID returns the change ID a snapshot recorded for a disk of the
// target, the starting point of the next incremental.
func (c *Conn) ChangeID(ctx context.Context, disk Spec, snapshot string) (string, error) {
	if c.api == nil {
		return "", errNoHost()
	}
	name, err := c.api.ResolveDisk(ctx, disk.Disk, disk.VM, disk.Key)
	if err != nil {
		return "", err
	}
	in, err := c.api.Disk(ctx, name)
	if err != nil {
		return "", err
	}
	for _, s := range in.Snapshots {
		if s.ID == snapshot {
			return s.ChangeID, nil
		}
	}
	return "", notFound("vdisk: disk %s has no snapshot %s", name, snapshot)
}

// SetChangeTracking turns change tracking of a host disk on or off.
func (c *Conn) SetChangeTracking(ctx context.Context, spec Spec, on bool) error {
	if c.api == nil {
		return errNoHost()
	}
	name, err := c.api.ResolveDisk(ctx, spec.Disk, spec.VM, spec.Key)
	if err != nil {
		return err
	}
	return c.api.Do(ctx, "PATCH", "/api/v1/disks/"+hostclient.Esc(name), map[string]any{"cbt": on}, nil)
}

// CleanupReport says what Cleanup removed.
type CleanupReport = hostapi.CleanupReport

// Cleanup removes what crashed clients left on the host: temporary
// snapshots, access and direct leases of sessions that are gone, expired
// tickets (VixDiskLib_Cleanup). With endOtherSessions it first ends the
// other sessions of this user, so that what a crashed predecessor left
// goes now rather than when its session times out; do not use it while
// other jobs of the same user run. Local connections have nothing to
// clean.
func (c *Conn) Cleanup(ctx context.Context, endOtherSessions bool) (CleanupReport, error) {
	var rep CleanupReport
	if c.api == nil {
		return rep, nil
	}
	p := "/api/v1/cleanup"
	if endOtherSessions {
		p += "?endOtherSessions=true"
	}
	err := c.api.Do(ctx, "POST", p, nil, &rep)
	return rep, err
}

func errNoHost() error {
	return disk.Errorf(disk.ErrNotSupported, "vdisk: this needs a host connection")
}

func notFound(format string, args ...any) error {
	return disk.Errorf(disk.ErrNotFound, "%s", fmt.Sprintf(format, args...))
}

// VMInfo describes a VM of the host.
type VMInfo = hostapi.VMInfo

// DiskInfo describes a disk of the host.
type DiskInfo = hostapi.DiskInfo

// VM describes a VM of the host: its disks by controller key and its
// snapshots.
func (c *Conn) VM(ctx context.Context, name string) (VMInfo, error) {
	var vm VMInfo
	if c.api == nil {
		return vm, errNoHost()
	}
	return vm, c.api.Do(ctx, "GET", "/api/v1/vms/"+hostclient.Esc(name), nil, &vm)
}

// Disk describes a disk of the host.
func (c *Conn) Disk(ctx context.Context, spec Spec) (DiskInfo, error) {
	if c.api == nil {
		return DiskInfo{}, errNoHost()
	}
	name, err := c.api.ResolveDisk(ctx, spec.Disk, spec.VM, spec.Key)
	if err != nil {
		return DiskInfo{}, err
	}
	return c.api.Disk(ctx, name)
}

// CreateChild makes a local sparse child (delta) of a local disk
// (VixDiskLib_CreateChild): reads fall through to the parent, writes go
// to the child. The parent must not be written afterwards.
func (c *Conn) CreateChild(ctx context.Context, parent, child Spec) error {
	if parent.Path == "" || child.Path == "" {
		return disk.Errorf(disk.ErrNotSupported, "vdisk: children are made of local files; a host takes snapshots instead")
	}
	d, err := vmdk.Create(ctx, child.Path, 0, &vmdk.CreateOptions{Parent: parent.Path})
	if err != nil {
		return err
	}
	return d.Close()
}

// IsAttachPossible reports whether the local child can be attached to the
// local parent (VixDiskLib_IsAttachPossible): same capacity, and the child
// a sparse delta.
func (c *Conn) IsAttachPossible(ctx context.Context, parent, child Spec) error {
	if parent.Path == "" || child.Path == "" {
		return disk.Errorf(disk.ErrNotSupported, "vdisk: attaching works on local files")
	}
	p, err := vmdk.Open(ctx, parent.Path, &vmdk.OpenOptions{ReadOnly: true})
	if err != nil {
		return err
	}
	defer p.Close()
	ch, err := vmdk.Open(ctx, child.Path, &vmdk.OpenOptions{ReadOnly: true, SingleLink: true})
	if err != nil {
		return err
	}
	defer ch.Close()
	if p.Size() != ch.Size() {
		return disk.Errorf(disk.ErrInvalid, "vdisk: the child holds %d bytes, the parent %d", ch.Size(), p.Size())
	}
	switch ch.Info().CreateType {
	case vmdk.MonolithicSparse, vmdk.TwoGbMaxExtentSparse, vmdk.VMFSSparse, vmdk.SESparse:
		return nil
	}
	return disk.Errorf(disk.ErrInvalid, "vdisk: a %s disk cannot be a child", ch.Info().CreateType)
}

// Attach makes the local child a child of the local parent
// (VixDiskLib_Attach): its parent hint and parent CID are set so that
// opening the child opens the combined chain.
func (c *Conn) Attach(ctx context.Context, parent, child Spec) error {
	if err := c.IsAttachPossible(ctx, parent, child); err != nil {
		return err
	}
	return vmdk.SetParent(ctx, child.Path, parent.Path, nil)
}

// Unlink deletes every file of a local disk link (VixDiskLib_Unlink): its
// descriptor and extents. A child of it is orphaned.
func (c *Conn) Unlink(ctx context.Context, spec Spec) error {
	if spec.Path == "" {
		return disk.Errorf(disk.ErrNotSupported, "vdisk: unlink works on local files; delete host disks through the host")
	}
	files := []string{spec.Path}
	if v, err := vmdk.Open(ctx, spec.Path, &vmdk.OpenOptions{ReadOnly: true, SingleLink: true}); err == nil {
		files = nil
		for _, f := range v.Info().Files {
			if f.Link == 0 {
				files = append(files, f.Path)
			}
		}
		v.Close()
	}
	var errs []error
	seen := map[string]bool{}
	for _, f := range files {
		if !seen[f] {
			seen[f] = true
			errs = append(errs, os.Remove(f))
		}
	}
	return errors.Join(errs...)
}

// SpaceNeededForClone estimates the bytes a clone of the open disk takes
// (VixDiskLib_SpaceNeededForClone): its allocated data plus the sparse
// metadata of the type (monolithicSparse by default; "raw" and flat types
// need the full capacity).
func (h *Handle) SpaceNeededForClone(ctx context.Context, typ string) (int64, error) {
	switch vmdk.Subformat(typ) {
	case vmdk.MonolithicFlat, vmdk.TwoGbMaxExtentFlat, vmdk.VMFS:
		return h.Size(), nil
	}
	if typ == "raw" {
		return h.Size(), nil
	}
	var data int64
	err := h.Extents(ctx, 0, h.Size(), func(e disk.Extent) error {
		if e.Flags.Data() {
			data += e.Len
		}
		return nil
	})
	// Grain tables: 4 bytes per 64 KiB grain, twice (redundant copy), plus
	// the header and descriptor.
	meta := 2*(h.Size()/(64<<10))*4 + 64<<10
	return data + meta, err
}

// apiTarget is the API path of a VM or a disk.
func (s Spec) apiTarget() (string, error) {
	switch {
	case s.VM != "" && s.Key == "":
		return "/api/v1/vms/" + hostclient.Esc(s.VM), nil
	case s.Disk != "":
		return "/api/v1/disks/" + hostclient.Esc(s.Disk), nil
	}
	return "", disk.Errorf(disk.ErrInvalid, "vdisk: name a VM (without Key) or a Disk")
}

// DatastoreDisk finds a host disk by its datastore path, the way vSphere
// names disk files: "[datastore1] web01/web01.vmdk" (DiskInfo.DatastorePath).
// vm, when set, is the VM that must own the disk, by name or by its
// managed-object ID ("vm-N", VMInfo.MoRef). An unknown path, or a disk of
// another VM, is ErrNotFound.
func (c *Conn) DatastoreDisk(ctx context.Context, vm, path string) (DiskInfo, error) {
	var ds []DiskInfo
	if c.api == nil {
		return DiskInfo{}, errNoHost()
	}
	path = canonicalDatastorePath(path)
	q := "/api/v1/disks?datastorePath=" + url.QueryEscape(path)
	if vm != "" {
		q += "&vm=" + url.QueryEscape(vm)
	}
	if err := c.api.Do(ctx, "GET", q, nil, &ds); err != nil {
		return DiskInfo{}, err
	}
	for _, d := range ds {
		if d.DatastorePath == path {
			return d, nil
		}
	}
	if vm != "" {
		return DiskInfo{}, notFound("vdisk: VM %s has no disk %s", vm, path)
	}
	return DiskInfo{}, notFound("vdisk: no disk %s", path)
}

// FirstClassDisk finds the detached disk a VDDK first class disk ID names
// (VixDiskLib's spec.vStorageObjSpec.id): the host's detached disks play
// vSphere's first class disks, and the ID is the disk's name or its UUID
// (ddb.uuid, compared without spaces, dashes or case). A disk attached to
// a VM is not one.
func (c *Conn) FirstClassDisk(ctx context.Context, id string) (DiskInfo, error) {
	if c.api == nil {
		return DiskInfo{}, errNoHost()
	}
	if id == "" {
		return DiskInfo{}, disk.Errorf(disk.ErrInvalid, "vdisk: no first class disk ID")
	}
	if in, err := c.api.Disk(ctx, id); err == nil && in.VM == "" {
		return in, nil
	}
	ds, err := c.api.Disks(ctx)
	if err != nil {
		return DiskInfo{}, err
	}
	want := uuidKey(id)
	for _, d := range ds {
		if d.VM == "" && d.UUID != "" && uuidKey(d.UUID) == want {
			return d, nil
		}
	}
	return DiskInfo{}, notFound("vdisk: no detached disk has the first class disk ID %s", id)
}

// uuidKey is a UUID's hex digits in lower case.
func uuidKey(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= '0' && r <= '9', r >= 'a' && r <= 'f':
			return r
		case r >= 'A' && r <= 'F':
			return r + 'a' - 'A'
		}
		return -1
	}, s)
}

// canonicalDatastorePath writes a datastore path the way the host names
// disks, "[datastore] dir/file.vmdk": programs also pass it without the
// space after the bracket, or with more than one, as vSphere accepts.
func canonicalDatastorePath(p string) string {
	p = strings.TrimSpace(p)
	i := strings.IndexByte(p, ']')
	if !strings.HasPrefix(p, "[") || i < 0 {
		return p
	}
	return p[:i+1] + " " + strings.TrimLeft(p[i+1:], " ")
}
