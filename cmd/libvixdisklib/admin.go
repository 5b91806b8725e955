package main

/*
#include "shim.h"
*/
import "C"

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"strings"
	"sync"
	"unsafe"

	"github.com/vdisk-project/vdisk"
	"github.com/vdisk-project/vdisk/disk"
	"github.com/vdisk-project/vdisk/format/vmdk"
)

// diskTypes maps VixDiskLibDiskType to the VMDK variant vdisk writes.
var diskTypes = map[C.VixDiskLibDiskType]vmdk.Subformat{
	C.VIXDISKLIB_DISK_MONOLITHIC_SPARSE: vmdk.MonolithicSparse,
	C.VIXDISKLIB_DISK_MONOLITHIC_FLAT:   vmdk.MonolithicFlat,
	C.VIXDISKLIB_DISK_SPLIT_SPARSE:      vmdk.TwoGbMaxExtentSparse,
	C.VIXDISKLIB_DISK_SPLIT_FLAT:        vmdk.TwoGbMaxExtentFlat,
	C.VIXDISKLIB_DISK_VMFS_FLAT:         vmdk.VMFS,
	C.VIXDISKLIB_DISK_STREAM_OPTIMIZED:  vmdk.StreamOptimized,
	C.VIXDISKLIB_DISK_VMFS_THIN:         vmdk.VMFSThin,
	C.VIXDISKLIB_DISK_VMFS_SPARSE:       vmdk.VMFSSparse,
}

// subformat returns the variant of a disk type for a new base disk.
func subformat(t C.VixDiskLibDiskType) (vmdk.Subformat, error) {
	s, ok := diskTypes[t]
	switch {
	case !ok:
		return "", disk.Errorf(disk.ErrInvalid, "vixdisklib: unknown disk type %d", int(t))
	case s == vmdk.VMFSSparse:
		// A VMFS sparse disk is a redo log (COWD, or SEsparse on VMFS 6):
		// vdisk writes it only as the child of a parent (CreateChild).
		return "", disk.Errorf(disk.ErrNotSupported, "vixdisklib: VIXDISKLIB_DISK_VMFS_SPARSE is a redo log: vdisk writes it only as a child (VixDiskLib_CreateChild); a base disk cannot be one")
	}
	return s, nil
}

// adapterNames maps VixDiskLibAdapterType to vdisk's adapter names.
var adapterNames = map[C.VixDiskLibAdapterType]string{
	C.VIXDISKLIB_ADAPTER_IDE:           "ide",
	C.VIXDISKLIB_ADAPTER_SCSI_BUSLOGIC: "buslogic",
	C.VIXDISKLIB_ADAPTER_SCSI_LSILOGIC: "lsilogic",
}

// createParams converts VixDiskLibCreateParams. For a clone, a capacity
// of 0 and an unknown adapter mean the source's.
func createParams(p *C.VixDiskLibCreateParams, clone bool) (vdisk.CreateParams, error) {
	var out vdisk.CreateParams
	if p == nil {
		return out, disk.Errorf(disk.ErrInvalid, "vixdisklib: no create parameters")
	}
	st, err := subformat(p.diskType)
	if err != nil {
		return out, err
	}
	out.Type = string(st)
	switch a := p.adapterType; {
	case clone && (a == C.VIXDISKLIB_ADAPTER_UNKNOWN || a == 0):
		// A clone keeps the source's adapter.
	case a == C.VIXDISKLIB_ADAPTER_UNKNOWN || a == 0:
		out.Adapter = "lsilogic"
	default:
		n, ok := adapterNames[a]
		if !ok {
			return out, disk.Errorf(disk.ErrInvalid, "vixdisklib: unknown adapter type %d", int(a))
		}
		out.Adapter = n
	}
	out.HWVersion = int(p.hwVersion)
	switch {
	case clone && p.capacity == 0:
		// A clone's capacity is the source's unless given.
	case p.capacity == 0 || uint64(p.capacity) > 1<<53/disk.SectorSize:
		return out, disk.Errorf(disk.ErrInvalid, "vixdisklib: bad capacity %d sectors", uint64(p.capacity))
	}
	out.Capacity = int64(p.capacity) * disk.SectorSize
	for _, s := range []C.uint32{p.logicalSectorSize, p.physicalSectorSize} {
		if s != 0 && s != disk.SectorSize {
			return out, disk.Errorf(disk.ErrNotSupported, "vixdisklib: sector size %d: vdisk writes 512-byte sectors", uint32(s))
		}
	}
	return out, nil
}

// progress calls a VixDiskLibProgressFunc as a copy advances, once per
// percent at most.
type progress struct {
	fn   C.VixDiskLibProgressFunc
	data unsafe.Pointer
	mu   sync.Mutex
	last int
}

func newProgress(fn C.VixDiskLibProgressFunc, data unsafe.Pointer) *progress {
	return &progress{fn: fn, data: data, last: -1}
}

func (p *progress) report(done, total int64) {
	if p.fn == nil {
		return
	}
	pct := 100
	if total > 0 {
		pct = int(done * 100 / total)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if pct <= p.last {
		return
	}
	p.last = pct
	C.vixlib_progress(p.fn, p.data, C.int(pct))
}

func localOnly(c *connection, what string) error {
	if c.remote() {
		return disk.Errorf(disk.ErrNotSupported, "vixdisklib: %s works on local files only (as in VDDK)", what)
	}
	return nil
}

//export VixDiskLib_Create
func VixDiskLib_Create(conn C.VixDiskLibConnection, path *C.char, cp *C.VixDiskLibCreateParams, fn C.VixDiskLibProgressFunc, data unsafe.Pointer) (ret C.VixError) {
	defer guard(&ret)
	c, e := connOf(conn)
	if e != vixOK {
		return e
	}
	if err := localOnly(c, "Create"); err != nil {
		return fail(err, true)
	}
	p, err := createParams(cp, false)
	if err != nil {
		return fail(err, false)
	}
	pr := newProgress(fn, data)
	pr.report(0, 1)
	if err := c.conn.Create(context.Background(), vdisk.Spec{Path: goString(path)}, p); err != nil {
		if errors.Is(err, fs.ErrExist) {
			record(vixFileAlreadyExists, err, true)
			return vixFileAlreadyExists
		}
		return fail(err, false)
	}
	pr.report(1, 1)
	return vixOK
}

//export VixDiskLib_CreateChild
func VixDiskLib_CreateChild(hp C.VixDiskLibHandle, childPath *C.char, t C.VixDiskLibDiskType, fn C.VixDiskLibProgressFunc, data unsafe.Pointer) (ret C.VixError) {
	defer guard(&ret)
	h, e := handleOf(hp)
	if e != vixOK {
		return e
	}
	if err := localOnly(h.c, "CreateChild (a host takes snapshots instead)"); err != nil {
		return fail(err, true)
	}
	var st vmdk.Subformat
	switch t {
	case C.VIXDISKLIB_DISK_MONOLITHIC_SPARSE:
		st = vmdk.MonolithicSparse
	case C.VIXDISKLIB_DISK_SPLIT_SPARSE:
		st = vmdk.TwoGbMaxExtentSparse
	case C.VIXDISKLIB_DISK_VMFS_SPARSE:
		st = vmdk.VMFSSparse
	default:
		return invalid("CreateChild: a child is MONOLITHIC_SPARSE, SPLIT_SPARSE or VMFS_SPARSE, not type %d", int(t))
	}
	pr := newProgress(fn, data)
	pr.report(0, 1)
	create := func() error {
		d, err := vmdk.Create(context.Background(), goString(childPath), 0, &vmdk.CreateOptions{Parent: h.spec.Path, Subformat: st})
		if err != nil {
			return err
		}
		return d.Close()
	}
	var err error
	if h.kit().ReadOnly() {
		err = create()
	} else {
		// The parent's write lock is let go while the child is made; the
		// parent is read-only from then on (only a chain's leaf is
		// written).
		err = h.reopenFlags(context.Background(), h.spec, vdisk.OpenReadOnly, create)
	}
	if err != nil {
		return fail(err, false)
	}
	pr.report(1, 1)
	return vixOK
}

//export VixDiskLib_Clone
func VixDiskLib_Clone(dstConn C.VixDiskLibConnection, dstPath *C.char, srcConn C.VixDiskLibConnection, srcPath *C.char,
	cp *C.VixDiskLibCreateParams, fn C.VixDiskLibProgressFunc, data unsafe.Pointer, overWrite C.Bool) (ret C.VixError) {
	defer guard(&ret)
	dst, e := connOf(dstConn)
	if e != vixOK {
		return e
	}
	src, e := connOf(srcConn)
	if e != vixOK {
		return e
	}
	ctx := context.Background()
	var opts vdisk.CloneOptions
	if cp != nil {
		p, err := createParams(cp, true)
		if err != nil {
			return fail(err, false)
		}
		if dst.remote() {
			// VDDK ignores createParams for a remote destination: the
			// host decides the type; size and adapter follow the source.
			p = vdisk.CreateParams{}
		}
		opts.Create = p
	}
	srcSpec, err := src.spec(ctx, goString(srcPath))
	if err != nil {
		return fail(err, src.remote())
	}
	dstSpec, err := dst.spec(ctx, goString(dstPath))
	if err != nil {
		return fail(err, dst.remote())
	}
	if dstSpec.Path != "" {
		if _, err := os.Lstat(dstSpec.Path); err == nil {
			if overWrite == 0 {
				record(vixFileAlreadyExists, disk.Errorf(disk.ErrInvalid, "vixdisklib: %s exists", dstSpec.Path), true)
				return vixFileAlreadyExists
			}
			if err := dst.conn.Unlink(ctx, dstSpec); err != nil {
				return fail(err, false)
			}
		}
	}
	pr := newProgress(fn, data)
	opts.Progress = pr.report
	pr.report(0, 1)
	if _, err := vdisk.Clone(ctx, dst.conn, dstSpec, src.conn, srcSpec, &opts); err != nil {
		return fail(err, dst.remote() || src.remote())
	}
	pr.report(1, 1)
	return vixOK
}

//export VixDiskLib_Grow
func VixDiskLib_Grow(conn C.VixDiskLibConnection, path *C.char, capacity C.VixDiskLibSectorType, updateGeometry C.Bool, fn C.VixDiskLibProgressFunc, data unsafe.Pointer) (ret C.VixError) {
	defer guard(&ret)
	c, e := connOf(conn)
	if e != vixOK {
		return e
	}
	if uint64(capacity) > 1<<53/disk.SectorSize {
		return invalid("Grow: bad capacity %d sectors", uint64(capacity))
	}
	ctx := context.Background()
	spec, err := c.spec(ctx, goString(path))
	if err != nil {
		return fail(err, c.remote())
	}
	pr := newProgress(fn, data)
	pr.report(0, 1)
	if err := c.conn.Grow(ctx, spec, int64(capacity)*disk.SectorSize); err != nil {
		return fail(err, c.remote())
	}
	pr.report(1, 1)
	return vixOK
}

// compact is Shrink and Defragment: vdisk's compaction does both in one
// pass, on the closed files of a local sparse disk.
func compact(hp C.VixDiskLibHandle, fn C.VixDiskLibProgressFunc, data unsafe.Pointer, what string) C.VixError {
	h, e := handleOf(hp)
	if e != vixOK {
		return e
	}
	if err := localOnly(h.c, what); err != nil {
		return fail(err, true)
	}
	if h.kit().ReadOnly() {
		return fail(disk.Errorf(disk.ErrPermission, "vixdisklib: %s: %s is open read-only", what, h.path), false)
	}
	in, err := h.kit().Info(context.Background())
	if err != nil {
		return fail(err, false)
	}
	switch vmdk.Subformat(in.Type) {
	case vmdk.MonolithicSparse, vmdk.TwoGbMaxExtentSparse, vmdk.StreamOptimized:
	default:
		return fail(disk.Errorf(disk.ErrNotSupported, "vixdisklib: %s works on hosted sparse disks, not %s", what, in.Type), false)
	}
	pr := newProgress(fn, data)
	pr.report(0, 1)
	ctx := context.Background()
	err = h.reopen(ctx, h.spec, func() error {
		_, err := h.c.conn.Shrink(ctx, h.spec)
		return err
	})
	if err != nil {
		return fail(err, false)
	}
	pr.report(1, 1)
	return vixOK
}

//export VixDiskLib_Shrink
func VixDiskLib_Shrink(hp C.VixDiskLibHandle, fn C.VixDiskLibProgressFunc, data unsafe.Pointer) (ret C.VixError) {
	defer guard(&ret)
	return compact(hp, fn, data, "Shrink")
}

//export VixDiskLib_Defragment
func VixDiskLib_Defragment(hp C.VixDiskLibHandle, fn C.VixDiskLibProgressFunc, data unsafe.Pointer) (ret C.VixError) {
	defer guard(&ret)
	return compact(hp, fn, data, "Defragment")
}

//export VixDiskLib_SpaceNeededForClone
func VixDiskLib_SpaceNeededForClone(hp C.VixDiskLibHandle, t C.VixDiskLibDiskType, out *C.uint64) (ret C.VixError) {
	defer guard(&ret)
	h, e := handleOf(hp)
	if e != vixOK {
		return e
	}
	if out == nil {
		return invalid("SpaceNeededForClone: no result pointer")
	}
	ctx := context.Background()
	var typ string
	if t == C.VIXDISKLIB_DISK_UNKNOWN {
		in, err := h.kit().Info(ctx)
		if err != nil {
			return fail(err, h.remote())
		}
		typ = in.Type
	} else {
		st, ok := diskTypes[t]
		if !ok {
			return invalid("SpaceNeededForClone: unknown disk type %d", int(t))
		}
		typ = string(st)
	}
	n, err := h.kit().SpaceNeededForClone(ctx, typ)
	if err != nil {
		return fail(err, h.remote())
	}
	*out = C.uint64(n)
	return vixOK
}

//export VixDiskLib_CheckRepair
func VixDiskLib_CheckRepair(conn C.VixDiskLibConnection, filename *C.char, repair C.Bool) (ret C.VixError) {
	defer guard(&ret)
	c, e := connOf(conn)
	if e != vixOK {
		return e
	}
	if err := localOnly(c, "CheckRepair (a host checks its disks when it opens them)"); err != nil {
		return fail(err, true)
	}
	path := goString(filename)
	rep, err := c.conn.CheckRepair(context.Background(), vdisk.Spec{Path: path}, repair != 0)
	if err != nil {
		return fail(err, false)
	}
	for _, p := range rep.Problems {
		logger.Warn("check found a problem", "disk", path, "problem", p.Severity+": "+p.Message)
	}
	logger.Info("checked", "disk", path, "errors", rep.Errors, "leaks", rep.Leaks, "repaired", rep.Repaired, "unrepaired", rep.Unrepaired)
	if !rep.Clean() {
		// VDDK's VIX_OK means only that the check ran; vdisk also says
		// when the disk is still damaged, which is what callers ask.
		err := disk.Errorf(disk.ErrCorrupt, "vixdisklib: %s: %d errors, %d repaired, %d left", path, rep.Errors, rep.Repaired, rep.Unrepaired)
		code := uint64(vixDiskNeedsRepair)
		if repair != 0 {
			code = vixDiskCantRepair
		}
		record(code, err, true)
		return C.VixError(code)
	}
	return vixOK
}

//export VixDiskLib_IsAttachPossible
func VixDiskLib_IsAttachPossible(parent, child C.VixDiskLibHandle) (ret C.VixError) {
	defer guard(&ret)
	_, _, e := attachPair(parent, child)
	return e
}

// attachPair resolves the handles of an attach and checks that the child
// can be attached to the parent.
func attachPair(parent, child C.VixDiskLibHandle) (*diskHandle, *diskHandle, C.VixError) {
	p, e := handleOf(parent)
	if e != vixOK {
		return nil, nil, e
	}
	ch, e := handleOf(child)
	if e != vixOK {
		return nil, nil, e
	}
	if code, err := attachable(p, ch); err != nil {
		record(code, err, true)
		return nil, nil, C.VixError(code)
	}
	return p, ch, vixOK
}

// attachable checks, on the open handles, that the child can be attached
// to the parent: local disks, the same capacity, the child a sparse delta
// (the kit's rule, which it checks on the files).
func attachable(p, ch *diskHandle) (uint64, error) {
	if p.remote() || ch.remote() {
		return vixNotSupported, disk.Errorf(disk.ErrNotSupported, "vixdisklib: Attach works on local files; a host builds its chains itself")
	}
	if p == ch || p.spec.Path == ch.spec.Path {
		return vixInvalidArg, disk.Errorf(disk.ErrInvalid, "vixdisklib: a disk cannot be attached to itself")
	}
	ctx := context.Background()
	pi, err := p.kit().Info(ctx)
	if err != nil {
		return vixCode(err, false), err
	}
	ci, err := ch.kit().Info(ctx)
	if err != nil {
		return vixCode(err, false), err
	}
	if pi.Capacity != ci.Capacity {
		return vixDiskCapacityMismatch, disk.Errorf(disk.ErrInvalid, "vixdisklib: the child holds %d bytes, the parent %d", ci.Capacity, pi.Capacity)
	}
	switch vmdk.Subformat(ci.Type) {
	case vmdk.MonolithicSparse, vmdk.TwoGbMaxExtentSparse, vmdk.VMFSSparse, vmdk.SESparse:
	default:
		return vixDiskParentNotAllowed, disk.Errorf(disk.ErrInvalid, "vixdisklib: a %s disk cannot be a child", ci.Type)
	}
	return vixOK, nil
}

//export VixDiskLib_Attach
func VixDiskLib_Attach(parent, child C.VixDiskLibHandle) (ret C.VixError) {
	defer guard(&ret)
	p, ch, e := attachPair(parent, child)
	if e != vixOK {
		return e
	}
	ctx := context.Background()
	// The child is reopened as the combined chain; the parent handle ends,
	// as in VDDK (the chain now owns the parent's files).
	if err := p.close(); err != nil {
		return fail(err, false)
	}
	reg.remove(uintptr(C.vixlib_p2u(unsafe.Pointer(parent))))
	err := ch.reopen(ctx, ch.spec, func() error {
		return ch.c.conn.Attach(ctx, p.spec, ch.spec)
	})
	if err != nil {
		return fail(err, false)
	}
	return vixOK
}

// rename renames a local disk: a one-file image with os.Rename, a
// multi-file one by a copy of the same type and an unlink, so that no
// descriptor is rewritten in place.
func rename(ctx context.Context, src, dst string) error {
	if src == "" || dst == "" {
		return disk.Errorf(disk.ErrInvalid, "vixdisklib: Rename needs two paths")
	}
	if _, err := os.Lstat(dst); err == nil {
		return disk.Errorf(disk.ErrInvalid, "vixdisklib: %s exists: %w", dst, fs.ErrExist)
	}
	v, err := vmdk.Open(ctx, src, &vmdk.OpenOptions{ReadOnly: true, SingleLink: true})
	if err != nil {
		return err
	}
	info := v.Info()
	thin, _ := v.Metadata("thinProvisioned")
	v.Close()
	files := 0
	for _, f := range info.Files {
		if f.Link == 0 {
			files++
		}
	}
	if files <= 1 {
		if err := os.Rename(src, dst); err != nil {
			return disk.Wrap(err, "vixdisklib: rename", src, -1)
		}
		return nil
	}
	if info.Links > 1 {
		return disk.Errorf(disk.ErrNotSupported, "vixdisklib: %s is a child in a chain and made of %d files; rename its files with its tools", src, files)
	}
	local, err := vdisk.Connect(ctx, vdisk.ConnectParams{Logger: logger})
	if err != nil {
		return err
	}
	defer local.Close()
	typ := string(info.CreateType)
	if strings.EqualFold(typ, "vmfs") && thin == "1" {
		typ = string(vmdk.VMFSThin)
	}
	if _, err := vdisk.Clone(ctx, local, vdisk.Spec{Path: dst}, local, vdisk.Spec{Path: src},
		&vdisk.CloneOptions{Create: vdisk.CreateParams{Type: typ, Adapter: info.Adapter}}); err != nil {
		return err
	}
	return local.Unlink(ctx, vdisk.Spec{Path: src})
}
