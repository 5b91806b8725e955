// Package source freezes what a backup reads: a local image, an NBD export
// (optionally with the dirty bitmap qemu and libvirt publish), or a disk or
// VM of a vdisk host (PrepareForAccess, a temporary snapshot, the changed
// areas since the previous point's change ID). It hands the backup engine
// disks that do not change while they are read, and which areas of each
// need reading, and undoes everything it set up on Close, also when the
// backup failed.
package source

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/vdisk-project/vdisk"
	"github.com/vdisk-project/vdisk/disk"
	"github.com/vdisk-project/vdisk/format"
	"github.com/vdisk-project/vdisk/nbd"
)

// Disk is one disk of a source, frozen for the backup.
type Disk struct {
	// Name identifies the disk within its source across backups: a VM's
	// controller key ("scsi0:0"), a host disk's name, or "disk" for an
	// image or export.
	Name string
	Disk disk.Disk
	// Changed lists the areas to read, in order, when the source knows
	// what changed since the previous point; Flags disk.Zero marks an area
	// that now reads as zeros (record it without reading). Nil means read
	// everything allocated: Full says why.
	Changed []disk.Extent
	Full    string
	// ChangeID is this instant's change ID (host disks with change
	// tracking): store it with the point and pass it back as
	// Options.Prev next time.
	ChangeID string
}

// Source is what one backup reads. Close it when done.
type Source struct {
	Spec  string
	Kind  string // "image", "nbd", "host-disk", "host-vm"
	Disks []Disk
	// Config is the VM's configuration as the host describes it
	// (hostapi.VMInfo in JSON), kept with the point; nil for others.
	Config []byte
	// Snapshot is the host snapshot read ("" for others).
	Snapshot string

	closers []func() error                // the disks
	undo    []func(context.Context) error // the host's snapshot and lease, undone last to first
}

// Options configure Open.
type Options struct {
	// Conn is the host connection for "vdisk:" specs.
	Conn *vdisk.Conn
	// Prev maps disk names to the change IDs the previous point stored.
	Prev map[string]string
	// Bitmap names the dirty bitmap of an NBD source whose dirty areas
	// are what changed since the previous point (qemu-nbd -B NAME, the
	// qemu:dirty-bitmap:NAME context). Empty: read everything allocated.
	Bitmap string
	// Incremental says a previous point exists: without it a bitmap is
	// not trusted (the first backup reads everything).
	Incremental bool
	// NBD configures NBD sources (TLS trust, connections).
	NBD *nbd.ClientOptions
	// Identity is who PrepareForAccess records ("vdisk backup" when empty).
	Identity string
}

// Open freezes spec: a local image path, an NBD URI ("nbd://…",
// "nbds://…", "nbd+unix://…"), "vdisk:disk/NAME" or "vdisk:vm/NAME".
// Whatever it set up is undone if it fails.
func Open(ctx context.Context, spec string, o Options) (s *Source, err error) {
	s = &Source{Spec: spec}
	defer func() {
		if err != nil {
			cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
			defer cancel()
			err = errors.Join(err, s.Close(cctx))
			s = nil
		}
	}()
	switch {
	case strings.HasPrefix(spec, "vdisk:"):
		err = s.openHost(ctx, strings.TrimPrefix(spec, "vdisk:"), o)
	case isURI(spec):
		err = s.openNBD(ctx, spec, o)
	default:
		s.Kind = "image"
		var d disk.Disk
		d, _, err = format.Open(ctx, spec, &format.OpenOptions{ReadOnly: true})
		if err == nil {
			s.add(d)
			s.Disks = append(s.Disks, Disk{Name: "disk", Disk: d, Full: "a local image has no change tracking: its allocated areas are read and only chunks that differ are stored"})
		}
	}
	return s, err
}

func isURI(s string) bool {
	for _, p := range []string{"nbd://", "nbds://", "nbd+unix://", "nbds+unix://", "nbd+tcp://", "nbds+tcp://"} {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}

// add closes d on Close.
func (s *Source) add(d disk.Disk) {
	s.closers = append(s.closers, d.Close)
}

func (s *Source) openNBD(ctx context.Context, uri string, o Options) error {
	s.Kind = "nbd"
	var co nbd.ClientOptions
	if o.NBD != nil {
		co = *o.NBD
	}
	if o.Bitmap != "" {
		co.MetaContext = "qemu:dirty-bitmap:" + o.Bitmap
	}
	c, err := nbd.Dial(ctx, uri, &co)
	if err != nil {
		return err
	}
	s.add(c)
	d := Disk{Name: "disk", Disk: c}
	switch {
	case o.Bitmap == "":
		d.Full = "no dirty bitmap named (--bitmap)"
	case !o.Incremental:
		d.Full = "first backup of this source"
	default:
		var ch []disk.Extent
		err := c.ContextExtents(ctx, 0, c.Size(), func(e disk.Extent) error {
			if e.Flags&1 == 0 {
				return nil
			}
			if k := len(ch); k > 0 && ch[k-1].End() == e.Off {
				ch[k-1].Len += e.Len
			} else {
				ch = append(ch, disk.Extent{Off: e.Off, Len: e.Len})
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("dirty bitmap %q: %w", o.Bitmap, err)
		}
		if ch == nil {
			ch = []disk.Extent{}
		}
		d.Changed = ch
	}
	s.Disks = append(s.Disks, d)
	return nil
}

func (s *Source) openHost(ctx context.Context, spec string, o Options) error {
	c := o.Conn
	if c == nil || !c.Remote() {
		return disk.Errorf(disk.ErrInvalid, "vdisk:%s needs a host connection (vdisk login)", spec)
	}
	identity := o.Identity
	if identity == "" {
		identity = "vdisk backup"
	}
	kind, name, ok := strings.Cut(spec, "/")
	if !ok || name == "" || strings.ContainsAny(name, "/@") {
		return disk.Errorf(disk.ErrInvalid, "vdisk:%s: a backup source is vdisk:vm/NAME or vdisk:disk/NAME", spec)
	}
	var target vdisk.Spec
	type member struct {
		name string
		spec vdisk.Spec
	}
	var members []member
	switch kind {
	case "vm":
		s.Kind = "host-vm"
		target = vdisk.Spec{VM: name}
		vm, err := c.VM(ctx, name)
		if err != nil {
			return err
		}
		if s.Config, err = json.Marshal(vm); err != nil {
			return err
		}
		if len(vm.Disks) == 0 {
			return disk.Errorf(disk.ErrInvalid, "VM %s has no disks", name)
		}
		for _, d := range vm.Disks {
			members = append(members, member{d.Key, vdisk.Spec{VM: name, Key: d.Key}})
		}
	case "disk":
		s.Kind = "host-disk"
		target = vdisk.Spec{Disk: name}
		members = []member{{name, target}}
	default:
		return disk.Errorf(disk.ErrInvalid, "vdisk:%s: a backup source is vdisk:vm/NAME or vdisk:disk/NAME", spec)
	}
	lease, err := c.PrepareForAccess(ctx, target, identity)
	if err != nil {
		return err
	}
	s.undo = append(s.undo, func(ctx context.Context) error { return c.EndAccess(ctx, lease) })
	snap, err := c.CreateSnapshot(ctx, target, "vdisk-backup-"+time.Now().UTC().Format("20060102T150405Z"), true)
	if err != nil {
		return err
	}
	s.Snapshot = snap.ID
	s.undo = append(s.undo, func(ctx context.Context) error { return removeSnapshot(ctx, c, target, snap.ID) })
	for _, m := range members {
		sp := m.spec
		sp.Snapshot = snap.ID
		h, err := c.Open(ctx, sp, vdisk.OpenReadOnly)
		if err != nil {
			return err
		}
		s.add(h)
		d := Disk{Name: m.name, Disk: h}
		d.ChangeID, err = c.ChangeID(ctx, m.spec, snap.ID)
		if err != nil && !errors.Is(err, disk.ErrNotFound) && !errors.Is(err, disk.ErrNotSupported) {
			return err
		}
		prev := o.Prev[m.name]
		switch {
		case d.ChangeID == "":
			d.Full = "change tracking is off for this disk"
		case prev == "":
			d.Full = "no previous change ID for this disk"
		default:
			ch := []disk.Extent{}
			_, err := h.ChangedAreas(ctx, prev, 0, func(a vdisk.Area) error {
				e := disk.Extent{Off: a.Start, Len: a.Length}
				if a.Zero {
					e.Flags = disk.Zero
				}
				ch = append(ch, e)
				return nil
			})
			switch {
			case err == nil:
				d.Changed = ch
			case errors.Is(err, disk.ErrNotFound) || errors.Is(err, disk.ErrInvalid):
				d.Full = fmt.Sprintf("the host refused the previous change ID (%v)", err)
			default:
				return err
			}
		}
		s.Disks = append(s.Disks, d)
	}
	return nil
}

// removeSnapshot removes the backup's snapshot, waiting while the host
// still counts the sessions that just closed (their disconnects reach it
// asynchronously).
func removeSnapshot(ctx context.Context, c *vdisk.Conn, target vdisk.Spec, id string) error {
	delay := 20 * time.Millisecond
	for {
		err := c.RemoveSnapshot(ctx, target, id)
		if !errors.Is(err, disk.ErrBusy) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(delay):
		}
		delay = min(2*delay, time.Second)
	}
}

// Close closes the disks, removes the temporary snapshot and ends the
// access lease, in that order, and reports every failure. It runs to the
// end even when ctx is done (with its own bounded time), so that an
// interrupted backup leaves nothing behind.
func (s *Source) Close(ctx context.Context) error {
	if s == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	defer cancel()
	var errs []error
	for _, f := range s.closers {
		errs = append(errs, f())
	}
	for i := len(s.undo) - 1; i >= 0; i-- {
		errs = append(errs, s.undo[i](ctx))
	}
	s.closers, s.undo = nil, nil
	return errors.Join(errs...)
}

// Label is a short name for the source, for listings: the image's base
// name, the export, or the host VM or disk.
func Label(spec string) string {
	if strings.HasPrefix(spec, "vdisk:") || isURI(spec) {
		return spec
	}
	abs, err := filepath.Abs(spec)
	if err != nil {
		return spec
	}
	return abs
}
