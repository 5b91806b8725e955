package main

import (
	"context"
	"strings"

	"github.com/vdisk-project/vdisk"
	"github.com/vdisk-project/vdisk/disk"
)

// spec turns Open's path into the kit's Spec: a local file on a local
// connection; on a host, a datastore path "[datastore] VM/disk.vmdk" (of
// the VM vmxSpec names, when it names one) or the kit's own
// "vm/NAME/KEY" and "disk/NAME" forms, at ConnectEx's snapshot.
func (c *connection) spec(ctx context.Context, path string) (vdisk.Spec, error) {
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
