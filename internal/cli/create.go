package cli

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strconv"

	"github.com/vdisk-project/vdisk/format"
	"github.com/vdisk-project/vdisk/format/vmdk"
)

type createOptions struct {
	format        string
	options       string
	backing       string
	backingFormat string
}

func cmdCreate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var o createOptions
	fs := flag.NewFlagSet("create", flag.ContinueOnError)
	fs.StringVar(&o.format, "f", "raw", "image format: raw or vmdk")
	fs.StringVar(&o.options, "o", "", "format options: subformat=…,adapter_type=…,hwversion=…,zeroed_grain=on,compat6,toolsversion=…")
	fs.StringVar(&o.backing, "b", "", "backing (parent) image: creates a child")
	fs.StringVar(&o.backingFormat, "F", "", "backing image format (vmdk)")
	fs.Bool("q", false, "quiet (accepted for qemu-img compatibility)")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) < 1 || len(pos) > 2 || (len(pos) == 1 && o.backing == "") {
		return usagef("create takes an image name and a size (or -b)")
	}
	var size int64
	if len(pos) == 2 {
		if size, err = parseSize(pos[1]); err != nil {
			return err
		}
	}
	return runCreate(ctx, o, pos[0], size, stdout)
}

// vmdkOptions turns qemu-img's -o options into vmdk.CreateOptions.
func vmdkOptions(opts map[string]string) (vmdk.CreateOptions, error) {
	var vo vmdk.CreateOptions
	for _, k := range sortedKeys(opts) {
		v := opts[k]
		switch k {
		case "subformat":
			vo.Subformat = vmdk.Subformat(v)
		case "adapter_type":
			vo.Adapter = v
		case "hwversion":
			n, err := strconv.Atoi(v)
			if err != nil {
				return vo, usagef("invalid hwversion %q", v)
			}
			vo.HWVersion = n
		case "compat6":
			if _, ok := opts["hwversion"]; ok {
				return vo, usagef("compat6 cannot be enabled with hwversion set")
			}
			vo.HWVersion = 6
		case "toolsversion":
			vo.ToolsVersion = v
		case "zeroed_grain":
			vo.ZeroedGrain = v == "on" || v == "true"
		case "split_size":
			n, err := parseSize(v)
			if err != nil {
				return vo, err
			}
			vo.SplitSize = n
		case "backing_file", "backing_fmt":
		default:
			return vo, usagef("unknown vmdk option %q", k)
		}
	}
	return vo, nil
}

func runCreate(ctx context.Context, o createOptions, name string, size int64, stdout io.Writer) error {
	f, err := checkFormat(o.format)
	if err != nil {
		return err
	}
	opts, _ := parseOptions(o.options)
	var co format.CreateOptions
	switch f {
	case format.VMDK:
		if co.VMDK, err = vmdkOptions(opts); err != nil {
			return err
		}
		if b := opts["backing_file"]; b != "" && o.backing == "" {
			o.backing = b
		}
		if o.backingFormat != "" && o.backingFormat != "vmdk" {
			return usagef("invalid backing file format %q: must be vmdk", o.backingFormat)
		}
		co.VMDK.Parent = o.backing
	default:
		if len(opts) > 0 || o.backing != "" {
			return usagef("raw images take no options and no backing file")
		}
	}
	d, err := createReplacing(ctx, name, f, size, &co, nil, "", o.backing)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "Formatting '%s', fmt=%s size=%d\n", name, f, d.Size())
	return d.Close()
}
