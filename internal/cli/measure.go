package cli

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/vdisk-project/vdisk/disk"
	"github.com/vdisk-project/vdisk/format"
	"github.com/vdisk-project/vdisk/format/vmdk"
)

type measureOptions struct {
	output    string
	inFormat  string
	outFormat string
	options   string
	size      string
}

func cmdMeasure(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var o measureOptions
	fs := flag.NewFlagSet("measure", flag.ContinueOnError)
	fs.StringVar(&o.output, "output", "human", "output format: human or json")
	fs.StringVar(&o.inFormat, "f", "", "source format (default: probe)")
	fs.StringVar(&o.outFormat, "O", "raw", "format of the image to measure for: raw or vmdk")
	fs.StringVar(&o.options, "o", "", "its options, as for create (subformat=…, split_size=…)")
	fs.StringVar(&o.size, "size", "", "measure a new empty image of this size instead of a conversion of SRC")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	switch {
	case len(pos) > 1:
		return usagef("measure takes one source image")
	case len(pos) == 1 && o.size != "":
		return usagef("--size cannot be used together with a source image")
	case len(pos) == 0 && o.size == "":
		return usagef("measure needs --size SIZE or a source image")
	}
	if o.output != "human" && o.output != "json" {
		return usagef("unknown output format %q (human or json)", o.output)
	}
	src := ""
	if len(pos) == 1 {
		src = pos[0]
	}
	return runMeasure(ctx, o, src, stdout)
}

// measurement is qemu-img measure's answer, with its JSON keys: the bytes
// of storage a new image needs for the data it will hold (required), and
// when every byte of it is written (fully-allocated).
type measurement struct {
	Required       int64 `json:"required"`
	FullyAllocated int64 `json:"fully-allocated"`
}

// runMeasure measures what a conversion of src (or a new image of
// o.size bytes, when src is "") needs in the target format: for raw,
// qemu-img's answer (the virtual size, both times); for VMDK, the file
// sizes vdisk convert makes, its metadata included.
func runMeasure(ctx context.Context, o measureOptions, src string, stdout io.Writer) error {
	f, err := checkFormat(o.outFormat)
	if err != nil {
		return err
	}
	opts, _ := parseOptions(o.options)
	var vo vmdk.CreateOptions
	if f == format.VMDK {
		if vo, err = vmdkOptions(opts); err != nil {
			return err
		}
	} else if len(opts) > 0 {
		return usagef("raw images take no options")
	}
	var (
		size int64
		in   disk.Disk
	)
	if src == "" {
		if size, err = parseSize(o.size); err != nil {
			return err
		}
		size = (size + disk.SectorSize - 1) / disk.SectorSize * disk.SectorSize
	} else {
		if in, _, err = openImage(ctx, src, o.inFormat, format.OpenOptions{ReadOnly: true}); err != nil {
			return err
		}
		defer in.Close()
		size = in.Size()
	}
	m := measurement{Required: size, FullyAllocated: size}
	if f == format.VMDK {
		if m, err = measureVMDK(ctx, in, size, vo); err != nil {
			return err
		}
	}
	if o.output == "json" {
		return writeJSON(stdout, m)
	}
	fmt.Fprintf(stdout, "required size: %d\nfully allocated size: %d\n", m.Required, m.FullyAllocated)
	return nil
}

// VMDK facts measureVMDK counts with: vdisk writes sparse extents in
// 64 KiB grains, one 512-entry grain table for every 32 MiB (VMDK spec,
// hosted sparse extents). A streamOptimized grain is a 12-byte marker and
// its deflated data padded to a sector, which for data that does not
// compress is at most streamGrainBound; each grain table there is a
// marker sector and its 2 KiB.
const (
	grainBytes       = 64 << 10
	grainTableSpan   = 512 * grainBytes
	streamGrainBound = 129 * disk.SectorSize
	streamTableBytes = disk.SectorSize + 512*4
)

// measureVMDK measures a VMDK of the subformat vo names. The metadata is
// measured exactly, by creating the empty image in a temporary directory
// (flat extents are sparse files there, a vmfs one made thin); the data is
// counted from in's allocated ranges in whole grains (all of them when in is
// nil, for fully-allocated).
func measureVMDK(ctx context.Context, in disk.Disk, size int64, vo vmdk.CreateOptions) (measurement, error) {
	sub := vo.Subformat
	if sub == "" {
		sub = vmdk.MonolithicSparse
	}
	switch sub {
	case vmdk.MonolithicSparse, vmdk.TwoGbMaxExtentSparse, vmdk.StreamOptimized,
		vmdk.MonolithicFlat, vmdk.TwoGbMaxExtentFlat, vmdk.VMFS, vmdk.VMFSThin:
	default:
		return measurement{}, disk.Errorf(disk.ErrNotSupported, "measure: subformat %s is not a conversion target", sub)
	}
	if sub == vmdk.VMFS {
		vo.Subformat = vmdk.VMFSThin // the same files, not preallocated
	}
	empty, err := emptyImageBytes(ctx, size, vo)
	if err != nil {
		return measurement{}, err
	}
	grains, tables := (size+grainBytes-1)/grainBytes, (size+grainTableSpan-1)/grainTableSpan
	full := measurement{}
	switch sub {
	case vmdk.MonolithicFlat, vmdk.TwoGbMaxExtentFlat, vmdk.VMFS, vmdk.VMFSThin:
		return measurement{Required: empty, FullyAllocated: empty}, nil // the flat extents have their full size
	case vmdk.StreamOptimized:
		full.FullyAllocated = empty + grains*streamGrainBound + tables*streamTableBytes
	default:
		full.FullyAllocated = empty + grains*grainBytes
	}
	if in == nil {
		full.Required = empty
		return full, nil
	}
	used, usedTables, err := allocatedGrains(ctx, in)
	if err != nil {
		return measurement{}, err
	}
	if sub == vmdk.StreamOptimized {
		full.Required = empty + used*streamGrainBound + usedTables*streamTableBytes
	} else {
		full.Required = empty + used*grainBytes
	}
	return full, nil
}

// emptyImageBytes returns the bytes of the files of a new empty image.
func emptyImageBytes(ctx context.Context, size int64, vo vmdk.CreateOptions) (int64, error) {
	dir, err := os.MkdirTemp("", "vdisk-measure-")
	if err != nil {
		return 0, disk.Wrap(err, "measure", "", -1)
	}
	defer os.RemoveAll(dir)
	d, err := vmdk.Create(ctx, filepath.Join(dir, "m.vmdk"), size, &vo)
	if err != nil {
		return 0, err
	}
	if err := d.Close(); err != nil {
		return 0, err
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return 0, disk.Wrap(err, "measure", dir, -1)
	}
	var n int64
	for _, e := range entries {
		st, err := e.Info()
		if err != nil {
			return 0, disk.Wrap(err, "measure", e.Name(), -1)
		}
		n += st.Size()
	}
	return n, nil
}

// allocatedGrains counts the 64 KiB grains and the 32 MiB grain-table
// spans that hold data in d.
func allocatedGrains(ctx context.Context, d disk.Disk) (grains, tables int64, err error) {
	lastGrain, lastTable := int64(-1), int64(-1)
	err = disk.Extents(ctx, d, 0, d.Size(), func(e disk.Extent) error {
		if !e.Flags.Data() {
			return nil
		}
		first, last := e.Off/grainBytes, (e.End()-1)/grainBytes
		first = max(first, lastGrain+1)
		if last >= first {
			grains += last - first + 1
			lastGrain = last
		}
		ft, lt := e.Off/grainTableSpan, (e.End()-1)/grainTableSpan
		ft = max(ft, lastTable+1)
		if lt >= ft {
			tables += lt - ft + 1
			lastTable = lt
		}
		return nil
	})
	return grains, tables, err
}
