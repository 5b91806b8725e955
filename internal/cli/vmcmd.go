package cli

import (
	"context"
	"flag"
	"fmt"
	"io"

	"github.com/vdisk-project/vdisk/internal/datastore"
	"github.com/vdisk-project/vdisk/internal/hostclient"
)

// cmdVM manages the host's VMs.
func cmdVM(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	verb, args, err := subcommand("vm", args, "list", "create", "show", "delete", "add-disk", "attach", "detach", "relocate")
	if err != nil {
		return err
	}
	fs := flag.NewFlagSet("vm "+verb, flag.ContinueOnError)
	switch verb {
	case "list":
		c, h, _, err := hostCommand(ctx, fs, args, 0, "vdisk vm list")
		if err != nil {
			return err
		}
		vms, err := c.VMs(ctx)
		if err != nil {
			return err
		}
		return h.emit(stdout, nonNil(vms), func(w io.Writer) {
			fmt.Fprintln(w, "NAME\tDISKS\tSNAPSHOTS\tCREATED")
			for _, v := range vms {
				fmt.Fprintf(w, "%s\t%d\t%d\t%s\n", v.Name, len(v.Disks), len(v.Snapshots), ts(v.Created))
			}
		})
	case "create", "show":
		c, h, pos, err := hostCommand(ctx, fs, args, 1, "vdisk vm "+verb+" NAME")
		if err != nil {
			return err
		}
		var vm datastore.VMInfo
		if verb == "create" {
			err = c.Do(ctx, "POST", "/api/v1/vms", map[string]string{"name": pos[0]}, &vm)
		} else {
			vm, err = c.VM(ctx, pos[0])
		}
		if err != nil {
			return err
		}
		return h.emit(stdout, vm, func(w io.Writer) { printVM(w, vm) })
	case "delete":
		keep := fs.Bool("keep-disks", false, "keep the VM's disks as detached disks")
		c, _, pos, err := hostCommand(ctx, fs, args, 1, "vdisk vm delete [--keep-disks] NAME")
		if err != nil {
			return err
		}
		q := ""
		if *keep {
			q = "?keepDisks=true"
		}
		return c.Do(ctx, "DELETE", "/api/v1/vms/"+hostclient.Esc(pos[0])+q, nil, nil)
	case "add-disk":
		name := fs.String("name", "", "disk name (default VM-KEY)")
		typ := fs.String("type", "", "base layer type (default monolithicSparse)")
		adapter := fs.String("adapter", "", "adapter type (default lsilogic)")
		cbt := fs.Bool("cbt", false, "track changed blocks")
		c, h, pos, err := hostCommand(ctx, fs, args, 3, "vdisk vm add-disk [--name N] [--type T] [--cbt] VM KEY SIZE")
		if err != nil {
			return err
		}
		size, err := parseSize(pos[2])
		if err != nil {
			return err
		}
		var d datastore.DiskInfo
		if err := c.Do(ctx, "POST", "/api/v1/vms/"+hostclient.Esc(pos[0])+"/disks",
			hostclient.DiskRequest{Key: pos[1], Name: *name, Capacity: size, Type: *typ, Adapter: *adapter, CBT: *cbt}, &d); err != nil {
			return err
		}
		return h.emit(stdout, d, func(w io.Writer) { printDisk(w, d) })
	case "attach":
		c, _, pos, err := hostCommand(ctx, fs, args, 3, "vdisk vm attach VM KEY DISK")
		if err != nil {
			return err
		}
		return c.Do(ctx, "POST", "/api/v1/vms/"+hostclient.Esc(pos[0])+"/attach", map[string]string{"key": pos[1], "disk": pos[2]}, nil)
	case "detach":
		c, h, pos, err := hostCommand(ctx, fs, args, 2, "vdisk vm detach VM KEY")
		if err != nil {
			return err
		}
		var out map[string]string
		if err := c.Do(ctx, "POST", "/api/v1/vms/"+hostclient.Esc(pos[0])+"/detach", map[string]string{"key": pos[1]}, &out); err != nil {
			return err
		}
		return h.emit(stdout, out, func(w io.Writer) { fmt.Fprintf(w, "detached %s; it is now a detached disk\n", out["disk"]) })
	case "relocate":
		c, _, pos, err := hostCommand(ctx, fs, args, 2, "vdisk vm relocate VM DATASTORE")
		if err != nil {
			return err
		}
		return c.Do(ctx, "POST", "/api/v1/vms/"+hostclient.Esc(pos[0])+"/relocate", map[string]string{"datastore": pos[1]}, nil)
	}
	return nil
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

func printVM(w io.Writer, vm datastore.VMInfo) {
	fmt.Fprintf(w, "VM %s, created %s\n", vm.Name, ts(vm.Created))
	fmt.Fprintln(w, "KEY\tDISK\tCAPACITY\tTYPE\tCBT\tDATASTORE")
	for _, d := range vm.Disks {
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%v\t%s\n", d.Key, d.Name, humanSize(d.Capacity), d.Type, d.CBT, d.Datastore)
	}
	if len(vm.Snapshots) > 0 {
		printVMSnapshots(w, vm)
	}
}

// printVMSnapshots lists a VM's snapshots with each disk's change ID (each
// disk tracks its own changes).
func printVMSnapshots(w io.Writer, vm datastore.VMInfo) {
	fmt.Fprintln(w, "SNAPSHOT\tNAME\tCREATED\tTEMPORARY\tKEY\tCHANGE ID")
	for _, s := range vm.Snapshots {
		fmt.Fprintf(w, "%s\t%s\t%s\t%v", s.ID, dash(s.Name), ts(s.Created), s.Temporary)
		first := true
		for _, d := range vm.Disks {
			for _, ds := range d.Snapshots {
				if ds.ID != s.ID {
					continue
				}
				if !first {
					fmt.Fprint(w, "\t\t\t")
				}
				fmt.Fprintf(w, "\t%s\t%s\n", d.Key, dash(ds.ChangeID))
				first = false
			}
		}
		if first {
			fmt.Fprintln(w, "\t-\t-")
		}
	}
}
