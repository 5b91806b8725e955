package cli

import (
	"context"
	"flag"
	"fmt"
	"io"

	"github.com/vdisk-project/vdisk/format"
	"github.com/vdisk-project/vdisk/format/vmdk"
)

type checkOptions struct {
	forceShare        bool // -U
	repair            string
	output            string
	format            string
	relink            bool
	force             bool
	stripCBT          bool
	rebuildDescriptor bool
	parent            string
	adapter           string
}

func cmdCheck(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var o checkOptions
	fs := flag.NewFlagSet("check", flag.ContinueOnError)
	fs.StringVar(&o.repair, "r", "", "repair: leaks or all")
	fs.StringVar(&o.output, "output", "human", "output format: human or json")
	fs.StringVar(&o.format, "f", "", "image format (default: probe)")
	forceShareFlags(fs, &o.forceShare)
	fs.BoolVar(&o.relink, "relink", false, "with -r all and --force: accept a parent whose CID changed by setting the child's parentCID to it")
	fs.BoolVar(&o.force, "force", false, "confirm --relink (safe only if the parent's data did not change)")
	fs.BoolVar(&o.stripCBT, "strip-cbt", false, "with -r all: remove change tracking (changeTrackPath) from the descriptor")
	fs.BoolVar(&o.rebuildDescriptor, "rebuild-descriptor", false, "with -r all: write a lost descriptor IMG from the extent files beside it")
	fs.StringVar(&o.parent, "parent", "", "with --rebuild-descriptor: the parent of a delta")
	fs.StringVar(&o.adapter, "adapter", "", "with --rebuild-descriptor: the adapter type (default lsilogic)")
	fs.Bool("q", false, "quiet (accepted for qemu-img compatibility)")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("check takes one image")
	}
	if (o.relink || o.stripCBT || o.rebuildDescriptor) && o.repair != "all" {
		return usagef("--relink, --strip-cbt and --rebuild-descriptor need -r all")
	}
	if o.relink && !o.force {
		return usagef("--relink changes which parent data the child trusts; add --force if the parent's data did not change")
	}
	if o.rebuildDescriptor {
		if err := vmdk.RebuildDescriptor(ctx, pos[0], o.parent, o.adapter, nil); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "Rebuilt the descriptor %s.\n", pos[0])
	}
	if o.relink {
		old, cid, err := vmdk.Relink(ctx, pos[0], nil)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "Relinked: parentCID %08x -> %08x.\n", old, cid)
	}
	if o.stripCBT {
		found, err := vmdk.StripCBT(ctx, pos[0], nil)
		if err != nil {
			return err
		}
		if found {
			fmt.Fprintln(stdout, "Removed change tracking from the descriptor.")
		}
	}
	return runCheck(ctx, o, pos[0], stdout)
}

func runCheck(ctx context.Context, o checkOptions, name string, stdout io.Writer) error {
	var mode vmdk.RepairMode
	switch o.repair {
	case "":
	case "leaks":
		mode = vmdk.RepairLeaks
	case "all":
		mode = vmdk.RepairAll
	default:
		return usagef("-r takes leaks or all")
	}
	f := format.Format(o.format)
	if f == "" {
		var err error
		if f, err = format.DetectFile(nil, name); err != nil {
			return err
		}
	}
	if f != format.VMDK {
		// A raw image has no metadata to check; opening it proves it is
		// readable.
		d, _, err := openImage(ctx, name, string(f), format.OpenOptions{ReadOnly: true, ForceShare: o.forceShare})
		if err != nil {
			return err
		}
		d.Close()
		if o.output == "json" {
			return writeJSON(stdout, map[string]any{"filename": name, "format": f, "check-errors": 0})
		}
		fmt.Fprintln(stdout, "No errors were found on the image.")
		return nil
	}
	// Check opens the files itself, without image locks: hold the named
	// file's locks meanwhile, so that no qemu or vdisk writer is using it.
	if !o.forceShare || mode != 0 {
		unlock, err := lockFile(name, mode != 0)
		if err != nil {
			return err
		}
		defer unlock()
	}
	r, err := vmdk.Check(ctx, name, &vmdk.CheckOptions{Repair: mode})
	if err != nil {
		return err
	}
	if o.output == "json" {
		if err := writeJSON(stdout, map[string]any{"filename": name, "format": "vmdk", "check-errors": r.Errors,
			"leaks": r.Leaks, "leaked-bytes": r.LeakedBytes, "repaired": r.Repaired, "unrepaired": r.Unrepaired,
			"lost-bytes": r.LostBytes, "allocated-bytes": r.AllocatedBytes, "total-bytes": r.TotalBytes,
			"problems": r.Problems}); err != nil {
			return err
		}
	} else {
		for _, p := range r.Problems {
			state := ""
			if p.Repaired {
				state = " (repaired)"
			}
			fmt.Fprintf(stdout, "%s: %s: %s%s\n", p.Severity, p.Path, p.Message, state)
		}
		switch {
		case r.Errors == 0 && r.Leaks == 0:
			fmt.Fprintln(stdout, "No errors were found on the image.")
		default:
			if r.Errors > 0 {
				fmt.Fprintf(stdout, "%d errors were found on the image.\n", r.Errors)
			}
			if r.Leaks > 0 {
				fmt.Fprintf(stdout, "%d leaked grains (%s) were found on the image.\n", r.Leaks, humanSize(r.LeakedBytes))
			}
			if r.Repaired > 0 {
				fmt.Fprintf(stdout, "%d problems were repaired.\n", r.Repaired)
			}
			if r.LostBytes > 0 {
				fmt.Fprintf(stdout, "Repair dropped %s of data that could not be saved.\n", humanSize(r.LostBytes))
			}
		}
		if r.TotalBytes > 0 {
			fmt.Fprintf(stdout, "%s/%s (%.2f%%) allocated.\n", humanSize(r.AllocatedBytes), humanSize(r.TotalBytes),
				100*float64(r.AllocatedBytes)/float64(r.TotalBytes))
		}
	}
	switch {
	case r.Unrepaired > 0:
		return &exitError{code: ExitCorrupt}
	case r.Leaks > 0 && mode == vmdk.RepairNone:
		return &exitError{code: ExitLeaks}
	}
	return nil
}
