package main

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync"

	"github.com/vdisk-project/vdisk"
	"github.com/vdisk-project/vdisk/disk"
)

// spec turns Open's path into the kit's Spec: a local file on a local
// connection; on a host, a datastore path "[datastore] VM/disk.vmdk" (of
// the VM vmxSpec names, when it names one) or the kit's own
// "vm/NAME/KEY" and "disk/NAME" forms, at ConnectEx's snapshot.
func (c *connection) spec(ctx context.Context, path string) (vdisk.Spec, error) {
	if c.fcd != "" {
		// A first class disk connection opens its disk whatever the path
		// (VDDK ignores it; it may be NULL or the disk's ID).
		return vdisk.Spec{Disk: c.fcd, Snapshot: c.snapshot}, nil
	}
	if path == "" {
		return vdisk.Spec{}, disk.Errorf(disk.ErrInvalid, "vixdisklib: no disk path")
	}
	if !c.remote() {
		return vdisk.Spec{Path: path}, nil
	}
	var s vdisk.Spec
	switch {
	case strings.HasPrefix(path, "["):
		in, err := c.conn.DatastoreDisk(ctx, c.vm, path)
		if err != nil {
			return s, err
		}
		s = vdisk.Spec{Disk: in.Name}
	case strings.HasPrefix(path, "vm/"), strings.HasPrefix(path, "disk/"):
		s = vdisk.ParseSpec(path)
	default:
		return s, disk.Errorf(disk.ErrInvalid, "vixdisklib: %q is not a datastore path such as \"[datastore1] vm/disk.vmdk\"", path)
	}
	if c.snapshot != "" {
		if s.Snapshot != "" && s.Snapshot != c.snapshot {
			return s, disk.Errorf(disk.ErrInvalid, "vixdisklib: %q names snapshot %s, the connection %s", path, s.Snapshot, c.snapshot)
		}
		s.Snapshot = c.snapshot
	}
	return s, nil
}

// accessLeases holds the PrepareForAccess leases of this process, by
// server, VM and identity, with the connection (the host session) that
// took them: a lease ends with its session, so the session is kept until
// EndAccess.
var accessLeases = struct {
	sync.Mutex
	m map[string]accessLease
}{m: map[string]accessLease{}}

type accessLease struct {
	c     *connection
	lease string
}

func accessKey(p params, identity string) string {
	return p.serverName + "\x00" + strconv.FormatUint(uint64(p.port), 10) + "\x00" + p.vmxSpec + "\x00" + p.fcdID + "\x00" + identity
}

// prepareForAccess is PrepareForAccess: the host keeps the VM from being
// relocated or deleted until EndAccess.
func prepareForAccess(ctx context.Context, p params, identity string) error {
	if p.serverName == "" {
		return nil // local files: nothing to coordinate, as in VDDK
	}
	if len(identity) > 50 {
		return disk.Errorf(disk.ErrInvalid, "vixdisklib: identity %q is longer than 50 characters", identity)
	}
	c, err := connect(ctx, p, true, "", "")
	if err != nil {
		return err
	}
	target := vdisk.Spec{VM: c.vm}
	switch {
	case c.fcd != "":
		target = vdisk.Spec{Disk: c.fcd}
	case c.vm == "":
		c.close()
		return disk.Errorf(disk.ErrInvalid, "vixdisklib: PrepareForAccess needs a vmxSpec naming one VM, or a first class disk")
	}
	lease, err := c.conn.PrepareForAccess(ctx, target, identity)
	if err != nil {
		c.close()
		return err
	}
	k := accessKey(p, identity)
	accessLeases.Lock()
	old, had := accessLeases.m[k]
	accessLeases.m[k] = accessLease{c: c, lease: lease}
	accessLeases.Unlock()
	if had {
		endLease(ctx, old)
	}
	return nil
}

func endLease(ctx context.Context, l accessLease) error {
	err := l.c.conn.EndAccess(ctx, l.lease)
	return errors.Join(err, l.c.close())
}

// endAccess is EndAccess: it ends the lease PrepareForAccess took in this
// process, or else (after a crash) the leases of the VM's disks whose
// reason is identity.
func endAccess(ctx context.Context, p params, identity string) error {
	if p.serverName == "" {
		return nil
	}
	k := accessKey(p, identity)
	accessLeases.Lock()
	l, ok := accessLeases.m[k]
	delete(accessLeases.m, k)
	accessLeases.Unlock()
	if ok {
		return endLease(ctx, l)
	}
	c, err := connect(ctx, p, true, "", "")
	if err != nil {
		return err
	}
	defer c.close()
	var names []string
	switch {
	case c.fcd != "":
		names = []string{c.fcd}
	case c.vm == "":
		return disk.Errorf(disk.ErrInvalid, "vixdisklib: EndAccess needs a vmxSpec naming one VM, or a first class disk")
	default:
		vm, err := c.conn.VM(ctx, c.vm)
		if err != nil {
			return err
		}
		for _, d := range vm.Disks {
			names = append(names, d.Name)
		}
	}
	var errs []error
	seen := map[string]bool{}
	for _, name := range names {
		in, err := c.conn.Disk(ctx, vdisk.Spec{Disk: name})
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, l := range in.Leases {
			if l.Reason == identity && !seen[l.ID] {
				seen[l.ID] = true
				errs = append(errs, c.conn.EndAccess(ctx, l.ID))
			}
		}
	}
	return errors.Join(errs...)
}
