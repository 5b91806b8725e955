package main

import (
	"context"
	"strings"
	"sync"

	"github.com/vdisk-project/vdisk"
	"github.com/vdisk-project/vdisk/disk"
)

// params is a Go copy of VixDiskLibConnectParams.
type params struct {
	vmxSpec, serverName, thumbprint string
	credType                        int
	user, password                  string
	cookie, key                     string
	port, nfcHostPort               uint32
	// A first class disk (specType VIXDISKLIB_SPEC_VSTORAGE_OBJECT): its
	// ID, datastore and snapshot.
	fcdID, fcdDatastore, fcdSnapshot string
}

// connection is a VixDiskLibConnection.
type connection struct {
	p        params
	conn     *vdisk.Conn
	snapshot string // ConnectEx's snapshotRef
	vm       string // the VM vmxSpec names, "" for none
	fcd      string // the host disk a first class disk spec names, "" for none
	readOnly bool
	modes    string       // the kit's mode list
	cfg      vdisk.Config // the kit configuration it was made with

	mu      sync.Mutex
	handles map[*diskHandle]bool
}

func (c *connection) remote() bool { return c.conn.Remote() }

// close closes the connection's handles, then the connection.
func (c *connection) close() error {
	c.mu.Lock()
	hs := make([]*diskHandle, 0, len(c.handles))
	for h := range c.handles {
		hs = append(hs, h)
	}
	c.mu.Unlock()
	for _, h := range hs {
		h.close()
	}
	return c.conn.Close()
}

// vddkModes translates a VDDK transport list into the kit's: "hotadd" and
// "san" both mean vdisk's direct mode (the client reads the datastore's
// files itself), "file" a local file; modes vdisk does not know are
// dropped, as VDDK does not check them either. The order is kept and
// duplicates go.
func vddkModes(s string, remote bool) (string, []string) {
	if s == "" {
		if remote {
			return "nbdssl", nil
		}
		return vdisk.ModeFile, nil
	}
	var out, dropped []string
	seen := map[string]bool{}
	for _, m := range strings.Split(s, ":") {
		var k string
		switch strings.ToLower(strings.TrimSpace(m)) {
		case "file":
			k = vdisk.ModeFile
		case "hotadd", "san", "direct":
			k = vdisk.ModeDirect
		case "nbdssl":
			k = vdisk.ModeNBDSSL
		case "nbd":
			k = vdisk.ModeNBD
		default:
			dropped = append(dropped, m)
			continue
		}
		if !seen[k] {
			seen[k] = true
			out = append(out, k)
		}
	}
	if !remote {
		// Local disks are files whatever the list says (VDDK: "equals
		// Connect for local disks").
		return vdisk.ModeFile, dropped
	}
	var net []string
	for _, m := range out {
		if m != vdisk.ModeFile {
			net = append(net, m)
		}
	}
	if len(net) == 0 {
		// Like VDDK, fall back to nbdssl when only unusable modes were
		// asked for.
		net = []string{vdisk.ModeNBDSSL}
	}
	return strings.Join(net, ":"), dropped
}

// vddkModeName is the VDDK name of a kit mode, for GetTransportMode.
func vddkModeName(m string) string {
	switch m {
	case vdisk.ModeDirect:
		return "hotadd"
	case "":
		return "file"
	}
	return m
}

// connect is ConnectEx.
func connect(ctx context.Context, p params, readOnly bool, snapshot, modes string) (*connection, error) {
	remote := p.serverName != ""
	kmodes, dropped := vddkModes(modes, remote)
	if len(dropped) > 0 {
		logger.Warn("unknown transport modes ignored", "modes", strings.Join(dropped, ":"))
	}
	c := &connection{p: p, snapshot: snapshot, readOnly: readOnly, modes: kmodes, handles: map[*diskHandle]bool{}}
	cfg := lib.config()
	c.cfg = cfg
	kp := vdisk.ConnectParams{Transports: kmodes, ReadOnly: readOnly, Config: &cfg, Logger: logger}
	if remote {
		vm, err := parseVMXSpec(p.vmxSpec)
		if err != nil {
			return nil, err
		}
		c.vm = vm
		if p.fcdID != "" {
			// A first class disk: ConnectEx's snapshotRef is NULL, the
			// spec names the snapshot, and no VM is involved.
			if snapshot != "" {
				return nil, disk.Errorf(disk.ErrInvalid, "vixdisklib: a first class disk names its snapshot in spec.vStorageObjSpec.ssId; snapshotRef must be NULL")
			}
			c.vm, c.snapshot = "", p.fcdSnapshot
		}
		if snapshot != "" && vm == "" {
			return nil, disk.Errorf(disk.ErrInvalid, "vixdisklib: snapshotRef %q needs a vmxSpec naming the VM", snapshot)
		}
		kp.Server, err = serverAddr(p.serverName, p.port)
		if err != nil {
			return nil, err
		}
		switch p.credType {
		case credUID, 0:
			kp.User, kp.Password = p.user, p.password
		case credSessionID:
			kp.Token = p.cookie
		default:
			return nil, disk.Errorf(disk.ErrNotSupported, "vixdisklib: credential type %d is not supported; use VIXDISKLIB_CRED_UID or VIXDISKLIB_CRED_SESSIONID", p.credType)
		}
		if p.thumbprint == "" {
			return nil, disk.Errorf(disk.ErrPermission, "vixdisklib: a host connection needs the host certificate's thumbPrint; unverified TLS is refused")
		}
		pin, err := hostPin(ctx, kp.Server, p.thumbprint, cfg.Timeout)
		if err != nil {
			return nil, err
		}
		kp.Thumbprint = pin
	} else if snapshot != "" {
		logger.Warn("snapshotRef ignored on a local connection", "snapshot", snapshot)
		c.snapshot = ""
	}
	conn, err := vdisk.Connect(ctx, kp)
	if err != nil {
		return nil, err
	}
	c.conn = conn
	if p.fcdID != "" {
		in, err := conn.FirstClassDisk(ctx, p.fcdID)
		if err != nil {
			conn.Close()
			return nil, err
		}
		c.fcd = in.Name
	}
	return c, nil
}

// The credential types of VixDiskLibConnectParams.
const (
	credUID       = 1
	credSessionID = 2
)

// parseVMXSpec returns the VM a vmxSpec names: "moref=vm-N" (or
// "moid=vm-N") by its managed-object ID, or a VM name.
func parseVMXSpec(s string) (string, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return "", nil
	}
	for _, p := range []string{"moref=", "moid="} {
		if v, ok := strings.CutPrefix(s, p); ok {
			if v == "" {
				return "", disk.Errorf(disk.ErrInvalid, "vixdisklib: vmxSpec %q names no VM", s)
			}
			return v, nil
		}
	}
	if strings.ContainsAny(s, "?/") {
		return "", disk.Errorf(disk.ErrNotSupported, "vixdisklib: vmxSpec %q: vdisk hosts name VMs by \"moref=vm-N\"", s)
	}
	return s, nil
}
