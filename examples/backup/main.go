// Command backup is the vdisk counterpart of VDDK's sample backup program:
// a small, complete incremental-forever backup of a VM's disks (or of one
// host disk, or of a local image file) into a directory of raw images.
//
//	backup -server HOST:PORT -thumbprint TP -user U -vm NAME -repo DIR
//	backup -server HOST:PORT -thumbprint TP -user U -disk NAME -repo DIR
//	backup -file IMAGE -repo DIR
//
// The password comes from $VDISK_PASSWORD. For a host it runs the
// canonical sequence: connect, PrepareForAccess, take a temporary snapshot,
// then for each disk copy either the areas changed since the change ID
// the previous run saved (an incremental) or, the first time or when the
// host refuses that change ID, every allocated area (a full backup); then
// remove the snapshot and end the access. Areas that now read as zeros are
// written as zeros without being read, so a trimmed disk costs nothing.
// Each repository image is a sparse raw file NAME.raw with NAME.changeid
// beside it. -transports picks the modes ("direct:nbdssl" by default).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"time"

	"github.com/vdisk-project/vdisk"
	"github.com/vdisk-project/vdisk/disk"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "backup:", vdisk.ErrorText(err))
		os.Exit(1)
	}
}

type options struct {
	server, thumbprint, user, password string
	vm, disk, file, repo, transports   string
}

func run(ctx context.Context, args []string, out io.Writer) error {
	var o options
	fs := flag.NewFlagSet("backup", flag.ContinueOnError)
	fs.StringVar(&o.server, "server", "", "host control API address (host:port)")
	fs.StringVar(&o.thumbprint, "thumbprint", "", "SHA-256 thumbprint of the host certificate")
	fs.StringVar(&o.user, "user", "", "user name (password from $VDISK_PASSWORD)")
	fs.StringVar(&o.vm, "vm", "", "back up every disk of this VM")
	fs.StringVar(&o.disk, "disk", "", "back up this host disk")
	fs.StringVar(&o.file, "file", "", "back up this local image file")
	fs.StringVar(&o.repo, "repo", "", "repository directory")
	fs.StringVar(&o.transports, "transports", "", "transport modes to try, colon-separated (default direct:nbdssl)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	o.password = os.Getenv("VDISK_PASSWORD")
	n := 0
	for _, x := range []string{o.vm, o.disk, o.file} {
		if x != "" {
			n++
		}
	}
	if o.repo == "" || n != 1 {
		return fmt.Errorf("give -repo and one of -vm, -disk or -file")
	}
	if err := os.MkdirAll(o.repo, 0o750); err != nil {
		return err
	}
	if o.file != "" {
		c, err := vdisk.Connect(ctx, vdisk.ConnectParams{})
		if err != nil {
			return err
		}
		defer c.Close()
		name := strings.TrimSuffix(filepath.Base(o.file), filepath.Ext(o.file))
		return backupDisk(ctx, c, vdisk.Spec{Path: o.file}, name, "", o.repo, out)
	}
	c, err := vdisk.Connect(ctx, vdisk.ConnectParams{Server: o.server, Thumbprint: o.thumbprint,
		User: o.user, Password: o.password, Transports: o.transports})
	if err != nil {
		return err
	}
	defer func() {
		// The session this program logged in with ends with it (its
		// tickets and leases too), rather than waiting to expire.
		lctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		c.Logout(lctx)
		cancel()
		c.Close()
	}()
	target := vdisk.Spec{VM: o.vm, Disk: o.disk}

	// 1. Keep the host from moving or deleting the disks meanwhile.
	lease, err := c.PrepareForAccess(ctx, target, "example backup")
	if err != nil {
		return err
	}
	defer c.EndAccess(context.WithoutCancel(ctx), lease)

	// 2. A consistent point in time. Temporary: if this program dies, the
	// host's Cleanup removes it.
	sn, err := c.CreateSnapshot(ctx, target, "backup "+time.Now().UTC().Format(time.RFC3339), true)
	if err != nil {
		return err
	}
	defer c.RemoveSnapshot(context.WithoutCancel(ctx), target, sn.ID)

	// 3. Copy each disk.
	var disks []vdisk.Spec
	if o.vm != "" {
		vm, err := c.VM(ctx, o.vm)
		if err != nil {
			return err
		}
		for _, d := range vm.Disks {
			disks = append(disks, vdisk.Spec{Disk: d.Name, Snapshot: sn.ID})
		}
	} else {
		disks = []vdisk.Spec{{Disk: o.disk, Snapshot: sn.ID}}
	}
	for _, d := range disks {
		cid, err := c.ChangeID(ctx, vdisk.Spec{Disk: d.Disk}, sn.ID)
		if err != nil {
			return err
		}
		if err := backupDisk(ctx, c, d, d.Disk, cid, o.repo, out); err != nil {
			return fmt.Errorf("disk %s: %w", d.Disk, err)
		}
	}
	// 4. The deferred calls remove the snapshot and end the access.
	return nil
}

// backupDisk copies one disk into repo/name.raw: the areas changed since
// the saved change ID, or everything allocated.
func backupDisk(ctx context.Context, c *vdisk.Conn, spec vdisk.Spec, name, newCID, repo string, out io.Writer) error {
	h, err := c.Open(ctx, spec, vdisk.OpenReadOnly)
	if err != nil {
		return err
	}
	defer h.Close()
	img := filepath.Join(repo, name+".raw")
	cidFile := filepath.Join(repo, name+".changeid")
	prev, _ := os.ReadFile(cidFile)

	var areas []vdisk.Area
	kind := "incremental"
	collect := func(a vdisk.Area) error { areas = append(areas, a); return nil }
	if len(prev) > 0 && newCID != "" {
		_, err = h.ChangedAreas(ctx, strings.TrimSpace(string(prev)), 0, collect)
	}
	if len(prev) == 0 || newCID == "" || errors.Is(err, vdisk.ErrNotFound) {
		// First run, a local file, or the host no longer knows the change
		// ID (its tracker restarted): a full backup of allocated data.
		kind, areas, err = "full", nil, nil
		var blocks []vdisk.Block
		size := h.Size()
		chunk := int64(vdisk.MinChunkSize)
		if blocks, err = h.QueryAllocatedBlocks(ctx, 0, (size+chunk-1)/chunk*chunk, chunk); err == nil {
			for _, b := range blocks {
				areas = append(areas, vdisk.Area{Start: b.Offset, Length: min(b.Length, size-b.Offset)})
			}
		}
		os.Remove(img)
	}
	if err != nil {
		return err
	}
	f, err := os.OpenFile(img, os.O_CREATE|os.O_RDWR, 0o640)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Truncate(h.Size()); err != nil {
		return err
	}
	// Reads are pipelined: up to 8 MiB in flight.
	const piece = 1 << 20
	type job struct {
		buf []byte
		off int64
		fut *vdisk.Future
	}
	var q []job
	var read int64
	drain := func(keep int) error {
		for len(q) > keep {
			j := q[0]
			q = q[1:]
			if err := j.fut.Wait(ctx); err != nil {
				return err
			}
			if disk.IsZero(j.buf) {
				// Leave a hole, but clear what an older backup held.
				if err := disk.ZeroFile(f, j.off, int64(len(j.buf))); err != nil {
					return err
				}
				continue
			}
			if _, err := f.WriteAt(j.buf, j.off); err != nil {
				return err
			}
		}
		return nil
	}
	for _, a := range areas {
		if a.Zero {
			if err := disk.ZeroFile(f, a.Start, a.Length); err != nil {
				return err
			}
			continue
		}
		for off := a.Start; off < a.Start+a.Length; off += piece {
			n := min(piece, a.Start+a.Length-off)
			buf := make([]byte, n)
			q = append(q, job{buf, off, h.ReadAsync(buf, off)})
			read += n
			if err := drain(8); err != nil {
				return err
			}
		}
	}
	if err := drain(0); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if newCID != "" {
		if err := os.WriteFile(cidFile, []byte(newCID+"\n"), 0o640); err != nil {
			return err
		}
	}
	fmt.Fprintf(out, "%s: %s backup over %s, %d areas, %d bytes read\n", name, kind, h.TransportMode(), len(areas), read)
	return nil
}
