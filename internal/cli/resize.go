package cli

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/vdisk-project/vdisk/disk"
	"github.com/vdisk-project/vdisk/format"
)

type resizeOptions struct {
	format string
	shrink bool
}

func cmdResize(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var o resizeOptions
	fs := flag.NewFlagSet("resize", flag.ContinueOnError)
	fs.StringVar(&o.format, "f", "", "image format (default: probe)")
	fs.BoolVar(&o.shrink, "shrink", false, "allow shrinking, which discards the data past the new size (raw images; VMDK cannot shrink)")
	fs.Bool("q", false, "quiet (accepted for qemu-img compatibility)")
	// A size such as -10G is an argument, not a flag.
	var sizes, rest []string
	for _, a := range args {
		if len(a) > 1 && a[0] == '-' && a[1] >= '0' && a[1] <= '9' {
			sizes = append(sizes, a)
		} else {
			rest = append(rest, a)
		}
	}
	pos, err := parse(fs, rest)
	if err != nil {
		return err
	}
	pos = append(pos, sizes...)
	if len(pos) != 2 {
		return usagef("resize takes an image and a size")
	}
	return runResize(ctx, o, pos[0], pos[1], stdout, stderr)
}

// runResize sets an image's size, or changes it by +SIZE or -SIZE, like
// qemu-img resize: a shrink needs --shrink (without it, ErrInvalid).
func runResize(ctx context.Context, o resizeOptions, name, sizeArg string, stdout, stderr io.Writer) (err error) {
	d, _, err := openImage(ctx, name, o.format, format.OpenOptions{})
	if err != nil {
		return err
	}
	defer func() {
		if cerr := d.Close(); err == nil {
			err = cerr
		}
	}()
	rel := strings.HasPrefix(sizeArg, "+") || strings.HasPrefix(sizeArg, "-")
	n, err := parseSize(strings.TrimLeft(sizeArg, "+-"))
	if err != nil {
		return err
	}
	size := n
	if rel {
		if sizeArg[0] == '-' {
			n = -n
		}
		size = d.Size() + n
	}
	if size < 0 {
		return disk.Errorf(disk.ErrInvalid, "%s holds %d bytes; it cannot shrink by %s", name, d.Size(), sizeArg[1:])
	}
	if size < d.Size() {
		if !o.shrink {
			return disk.Errorf(disk.ErrInvalid, "shrinking %s from %d to %d bytes discards data; use --shrink to do it", name, d.Size(), size)
		}
		fmt.Fprintln(stderr, "vdisk resize: warning: shrinking an image discards all data past its new end")
	}
	if err := disk.Resize(ctx, d, size); err != nil {
		return err
	}
	fmt.Fprintln(stdout, "Image resized.")
	return nil
}
