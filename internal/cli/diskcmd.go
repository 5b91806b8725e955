package cli

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/url"
	"slices"

	"github.com/vdisk-project/vdisk/internal/datastore"
	"github.com/vdisk-project/vdisk/internal/hostclient"
)

// cmdDisk manages the host's disks (detached ones and VMs' alike).
func cmdDisk(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	verb, args, err := subcommand("disk", args, "list", "create", "show", "delete", "grow", "cbt", "relocate", "meta")
	if err != nil {
		return err
	}
	fs := flag.NewFlagSet("disk "+verb, flag.ContinueOnError)
	switch verb {
	case "list":
		c, h, _, err := hostCommand(ctx, fs, args, 0, "vdisk disk list")
		if err != nil {
			return err
		}
		ds, err := c.Disks(ctx)
		if err != nil {
			return err
		}
		return h.emit(stdout, nonNil(ds), func(w io.Writer) {
			fmt.Fprintln(w, "NAME\tVM\tKEY\tCAPACITY\tSTORED\tTYPE\tCBT\tSNAPSHOTS\tSESSIONS")
			for _, d := range ds {
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%v\t%d\t%d\n", d.Name, dash(d.VM), dash(d.Key), humanSize(d.Capacity),
					humanSize(d.FileBytes), d.Type, d.CBT, len(d.Snapshots), d.Sessions)
			}
		})
	case "create":
		typ := fs.String("type", "", "base layer type (default monolithicSparse)")
		adapter := fs.String("adapter", "", "adapter type (default lsilogic)")
		cbt := fs.Bool("cbt", false, "track changed blocks")
		block := fs.String("cbt-block-size", "", "change tracking granularity (default by size: 4K up to 256G)")
		c, h, pos, err := hostCommand(ctx, fs, args, 2, "vdisk disk create [--type T] [--cbt] NAME SIZE")
		if err != nil {
			return err
		}
		size, err := parseSize(pos[1])
		if err != nil {
			return err
		}
		var bs int64
		if *block != "" {
			if bs, err = parseSize(*block); err != nil {
				return err
			}
		}
		var d datastore.DiskInfo
		if err := c.Do(ctx, "POST", "/api/v1/disks", hostclient.DiskRequest{Name: pos[0], Capacity: size, Type: *typ,
			Adapter: *adapter, CBT: *cbt, CBTBlockSize: bs}, &d); err != nil {
			return err
		}
		return h.emit(stdout, d, func(w io.Writer) { printDisk(w, d) })
	case "show":
		c, h, pos, err := hostCommand(ctx, fs, args, 1, "vdisk disk show NAME")
		if err != nil {
			return err
		}
		d, err := c.Disk(ctx, pos[0])
		if err != nil {
			return err
		}
		return h.emit(stdout, d, func(w io.Writer) { printDisk(w, d) })
	case "delete":
		c, _, pos, err := hostCommand(ctx, fs, args, 1, "vdisk disk delete NAME")
		if err != nil {
			return err
		}
		return c.Do(ctx, "DELETE", "/api/v1/disks/"+hostclient.Esc(pos[0]), nil, nil)
	case "grow":
		c, _, pos, err := hostCommand(ctx, fs, args, 2, "vdisk disk grow NAME SIZE")
		if err != nil {
			return err
		}
		size, err := parseSize(pos[1])
		if err != nil {
			return err
		}
		return c.Do(ctx, "PATCH", "/api/v1/disks/"+hostclient.Esc(pos[0]), map[string]any{"capacity": size}, nil)
	case "cbt":
		c, _, pos, err := hostCommand(ctx, fs, args, 2, "vdisk disk cbt NAME on|off")
		if err != nil {
			return err
		}
		if pos[1] != "on" && pos[1] != "off" {
			return usagef("vdisk disk cbt NAME on|off")
		}
		return c.Do(ctx, "PATCH", "/api/v1/disks/"+hostclient.Esc(pos[0]), map[string]any{"cbt": pos[1] == "on"}, nil)
	case "relocate":
		c, _, pos, err := hostCommand(ctx, fs, args, 2, "vdisk disk relocate NAME DATASTORE")
		if err != nil {
			return err
		}
		return c.Do(ctx, "POST", "/api/v1/disks/"+hostclient.Esc(pos[0])+"/relocate", map[string]string{"datastore": pos[1]}, nil)
	case "meta":
		snap := fs.String("snapshot", "", "read a snapshot's metadata")
		c, h, pos, err := hostCommand(ctx, fs, args, -1, "vdisk disk meta [--snapshot S] NAME [KEY [VALUE]]")
		if err != nil {
			return err
		}
		if len(pos) < 1 || len(pos) > 3 {
			return usagef("vdisk disk meta [--snapshot S] NAME [KEY [VALUE]]")
		}
		if len(pos) == 3 {
			return c.SetMetadata(ctx, pos[0], pos[1], pos[2])
		}
		m, err := c.Metadata(ctx, pos[0], *snap)
		if err != nil {
			return err
		}
		if len(pos) == 2 {
			v, ok := m[pos[1]]
			if !ok {
				return usagef("no metadata key %q", pos[1])
			}
			return h.emit(stdout, map[string]string{pos[1]: v}, func(w io.Writer) { fmt.Fprintln(w, v) })
		}
		return h.emit(stdout, m, func(w io.Writer) {
			keys := make([]string, 0, len(m))
			for k := range m {
				keys = append(keys, k)
			}
			slices.Sort(keys)
			for _, k := range keys {
				fmt.Fprintf(w, "%s\t%s\n", k, m[k])
			}
		})
	}
	return nil
}

func printDisk(w io.Writer, d datastore.DiskInfo) {
	fmt.Fprintf(w, "disk\t%s\n", d.Name)
	if d.VM != "" {
		fmt.Fprintf(w, "vm\t%s at %s\n", d.VM, d.Key)
	}
	fmt.Fprintf(w, "capacity\t%s (%d bytes)\n", humanSize(d.Capacity), d.Capacity)
	fmt.Fprintf(w, "type\t%s, adapter %s\n", d.Type, d.Adapter)
	fmt.Fprintf(w, "stored\t%s in %s (datastore %s)\n", humanSize(d.FileBytes), count(d.Layers, "layer", "layers"), d.Datastore)
	cbt := "off"
	if d.CBT {
		cbt = fmt.Sprintf("on, %s blocks, change ID %s", humanSize(d.CBTBlockSize), d.ChangeID)
	}
	fmt.Fprintf(w, "cbt\t%s\n", cbt)
	fmt.Fprintf(w, "sessions\t%d\n", d.Sessions)
	for _, s := range d.Snapshots {
		fmt.Fprintf(w, "snapshot\t%s %s, %s, change ID %s\n", s.ID, dash(s.Name), ts(s.Created), dash(s.ChangeID))
	}
	for _, l := range d.Leases {
		fmt.Fprintf(w, "lease\t%s by %s (%s) since %s\n", l.ID, dash(l.User), dash(l.Reason), ts(l.Created))
	}
}

// cmdSnapshot manages snapshots of a VM (all its disks at once) or of a
// detached disk.
func cmdSnapshot(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	verb, args, err := subcommand("snapshot", args, "list", "create", "remove", "revert")
	if err != nil {
		return err
	}
	fs := flag.NewFlagSet("snapshot "+verb, flag.ContinueOnError)
	vm := fs.String("vm", "", "the VM")
	dsk := fs.String("disk", "", "the detached disk")
	name := fs.String("name", "", "create: the snapshot's name")
	desc := fs.String("description", "", "create: a description")
	temp := fs.Bool("temporary", false, "create: remove it at cleanup once this session is gone")
	n := 0
	if verb == "remove" || verb == "revert" {
		n = 1
	}
	c, h, pos, err := hostCommand(ctx, fs, args, n, "vdisk snapshot "+verb+" --vm VM | --disk DISK"+map[bool]string{true: " ID", false: ""}[n == 1])
	if err != nil {
		return err
	}
	if (*vm == "") == (*dsk == "") {
		return usagef("give --vm or --disk")
	}
	base := "/api/v1/vms/" + hostclient.Esc(*vm)
	if *dsk != "" {
		base = "/api/v1/disks/" + hostclient.Esc(*dsk)
	}
	switch verb {
	case "list":
		var ss []datastore.SnapshotInfo
		if err := c.Do(ctx, "GET", base+"/snapshots", nil, &ss); err != nil {
			return err
		}
		var vmInfo datastore.VMInfo
		if *vm != "" {
			// A VM snapshot has a change ID per disk: the VM says which.
			if err := c.Do(ctx, "GET", base, nil, &vmInfo); err != nil {
				return err
			}
		}
		return h.emit(stdout, nonNil(ss), func(w io.Writer) {
			if *vm != "" {
				printVMSnapshots(w, vmInfo)
				return
			}
			fmt.Fprintln(w, "ID\tNAME\tCREATED\tCHANGE ID\tTEMPORARY")
			for _, s := range ss {
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%v\n", s.ID, dash(s.Name), ts(s.Created), dash(s.ChangeID), s.Temporary)
			}
		})
	case "create":
		var s datastore.SnapshotInfo
		if err := c.Do(ctx, "POST", base+"/snapshots", map[string]any{"name": *name, "description": *desc, "temporary": *temp}, &s); err != nil {
			return err
		}
		return h.emit(stdout, s, func(w io.Writer) { fmt.Fprintf(w, "%s\n", s.ID) })
	case "remove":
		return c.Do(ctx, "DELETE", base+"/snapshots/"+hostclient.Esc(pos[0]), nil, nil)
	case "revert":
		return c.Do(ctx, "POST", base+"/snapshots/"+hostclient.Esc(pos[0])+"/revert", nil, nil)
	}
	return nil
}

// cmdChanges prints QueryChangedDiskAreas.
func cmdChanges(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("changes", flag.ContinueOnError)
	snap := fs.String("snapshot", "", "the snapshot the changes run up to (default: now)")
	cid := fs.String("change-id", "", "the change ID they start after, or '*' for every allocated area")
	start := fs.Int64("start", 0, "start offset in bytes")
	c, h, pos, err := hostCommand(ctx, fs, args, 1, "vdisk changes --change-id ID|'*' [--snapshot S] [--start N] DISK")
	if err != nil {
		return err
	}
	if *cid == "" {
		return usagef("--change-id is required")
	}
	var areas []datastore.Area
	ci, err := c.Changes(ctx, pos[0], *snap, *cid, *start, func(a datastore.Area) error { areas = append(areas, a); return nil })
	if err != nil {
		return err
	}
	ci.Areas = nonNil(areas)
	return h.emit(stdout, ci, func(w io.Writer) {
		var data, zero int64
		fmt.Fprintln(w, "START\tLENGTH\tKIND")
		for _, a := range areas {
			kind := "data"
			if a.Zero {
				kind, zero = "zero", zero+a.Length
			} else {
				data += a.Length
			}
			fmt.Fprintf(w, "%d\t%d\t%s\n", a.Start, a.Length, kind)
		}
		fmt.Fprintf(w, "# %s up to change ID %s: %s of data to read, %s now zero\n", count(len(areas), "area", "areas"), ci.ChangeID, humanSize(data), humanSize(zero))
	})
}

// cmdAllocated prints QueryAllocatedBlocks of a host disk.
func cmdAllocated(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("allocated", flag.ContinueOnError)
	snap := fs.String("snapshot", "", "query a snapshot")
	chunk := fs.String("chunk-size", "64K", "chunk size")
	c, h, pos, err := hostCommand(ctx, fs, args, 1, "vdisk allocated [--snapshot S] [--chunk-size N] DISK")
	if err != nil {
		return err
	}
	cs, err := parseSize(*chunk)
	if err != nil {
		return err
	}
	q := url.Values{"chunk": {fmt.Sprint(cs)}}
	if *snap != "" {
		q.Set("snapshot", *snap)
	}
	var out struct {
		Start, Length, Chunk int64
		Areas                []datastore.Area
	}
	if err := c.Do(ctx, "GET", "/api/v1/disks/"+hostclient.Esc(pos[0])+"/allocated?"+q.Encode(), nil, &out); err != nil {
		return err
	}
	return h.emit(stdout, out, func(w io.Writer) {
		var n int64
		fmt.Fprintln(w, "START\tLENGTH")
		for _, a := range out.Areas {
			fmt.Fprintf(w, "%d\t%d\n", a.Start, a.Length)
			n += a.Length
		}
		fmt.Fprintf(w, "# %s, %s allocated\n", count(len(out.Areas), "block", "blocks"), humanSize(n))
	})
}
