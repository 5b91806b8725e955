package cli

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/vdisk-project/vdisk/disk"
	"github.com/vdisk-project/vdisk/format"
	"github.com/vdisk-project/vdisk/format/vmdk"
)

type infoOptions struct {
	output     string
	format     string
	forceShare bool
}

// imageInfo is info's JSON output; field names follow qemu-img's.
type imageInfo struct {
	Filename    string    `json:"filename"`
	Format      string    `json:"format"`
	VirtualSize int64     `json:"virtual-size"`
	ActualSize  int64     `json:"actual-size,omitempty"`
	Allocated   int64     `json:"allocated-size"`
	VMDK        *vmdkInfo `json:"vmdk,omitempty"`
}

type vmdkInfo struct {
	CreateType string          `json:"create-type"`
	Adapter    string          `json:"adapter-type,omitempty"`
	HWVersion  string          `json:"hw-version,omitempty"`
	Geometry   vmdk.Geometry   `json:"geometry"`
	CID        string          `json:"cid"`
	ParentCID  string          `json:"parent-cid"`
	ParentHint string          `json:"parent-filename-hint,omitempty"`
	UUID       string          `json:"uuid,omitempty"`
	Links      int             `json:"links"`
	Unclean    bool            `json:"unclean-shutdown"`
	Files      []vmdk.FileInfo `json:"files"`
}

func cmdInfo(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var o infoOptions
	fs := flag.NewFlagSet("info", flag.ContinueOnError)
	fs.StringVar(&o.output, "output", "human", "output format: human or json")
	fs.StringVar(&o.format, "f", "", "image format (default: probe)")
	forceShareFlags(fs, &o.forceShare)
	fs.Bool("backing-chain", false, "accepted for qemu-img compatibility; the chain is always described")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("info takes one image")
	}
	return runInfo(ctx, o, pos[0], stdout)
}

func runInfo(ctx context.Context, o infoOptions, name string, stdout io.Writer) error {
	d, f, err := openImage(ctx, name, o.format, format.OpenOptions{ReadOnly: true, IgnoreCID: true, ForceShare: o.forceShare})
	if err != nil {
		return err
	}
	defer d.Close()
	in := imageInfo{Filename: name, Format: string(f), VirtualSize: d.Size()}
	if st, err := os.Stat(name); err == nil {
		in.ActualSize = allocatedOnDisk(st)
	}
	if err := disk.Extents(ctx, d, 0, d.Size(), func(e disk.Extent) error {
		if e.Flags.Data() {
			in.Allocated += e.Len
		}
		return nil
	}); err != nil {
		return err
	}
	if vd, ok := d.(*vmdk.Disk); ok {
		vi := vd.Info()
		in.VMDK = &vmdkInfo{CreateType: string(vi.CreateType), Adapter: vi.Adapter, HWVersion: vi.HWVersion,
			Geometry: vi.Geometry, CID: fmt.Sprintf("%08x", vi.CID), ParentCID: fmt.Sprintf("%08x", vi.ParentCID),
			ParentHint: vi.ParentHint, UUID: vi.UUID, Links: vi.Links, Unclean: vi.Unclean, Files: vi.Files}
		var total int64
		for _, fi := range vi.Files {
			if fi.FileSize > 0 {
				total += fi.FileSize
			}
		}
		in.ActualSize = total
	}
	if o.output == "json" {
		return writeJSON(stdout, in)
	}
	fmt.Fprintf(stdout, "image: %s\nfile format: %s\nvirtual size: %s (%d bytes)\n", name, f, humanSize(in.VirtualSize), in.VirtualSize)
	fmt.Fprintf(stdout, "disk size: %s\nallocated: %s\n", humanSize(in.ActualSize), humanSize(in.Allocated))
	if v := in.VMDK; v != nil {
		fmt.Fprintf(stdout, "Format specific information:\n    create type: %s\n    adapter type: %s\n    hardware version: %s\n", v.CreateType, v.Adapter, v.HWVersion)
		fmt.Fprintf(stdout, "    geometry: %d/%d/%d\n    cid: %s\n    parent cid: %s\n", v.Geometry.Cylinders, v.Geometry.Heads, v.Geometry.Sectors, v.CID, v.ParentCID)
		if v.ParentHint != "" {
			fmt.Fprintf(stdout, "    parent: %s\n", v.ParentHint)
		}
		if v.UUID != "" {
			fmt.Fprintf(stdout, "    uuid: %s\n", v.UUID)
		}
		fmt.Fprintf(stdout, "    links: %d\n", v.Links)
		if v.Unclean {
			fmt.Fprintf(stdout, "    unclean shutdown: yes (run 'vdisk check')\n")
		}
		fmt.Fprintf(stdout, "    files:\n")
		for _, fi := range v.Files {
			if fi.Kind == "descriptor" {
				fmt.Fprintf(stdout, "        [link %d] descriptor %s\n", fi.Link, fi.Path)
				continue
			}
			fmt.Fprintf(stdout, "        [link %d] %s %s %s at %d, %s", fi.Link, fi.Access, fi.Kind, fi.Path, fi.Offset, humanSize(fi.Size))
			if fi.Compressed {
				fmt.Fprint(stdout, ", compressed")
			}
			fmt.Fprintln(stdout)
		}
	}
	return nil
}
