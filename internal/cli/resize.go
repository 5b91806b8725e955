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

func cmdResize(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("resize", flag.ContinueOnError)
	fmtName := fs.String("f", "", "image format (default: probe)")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 2 {
		return usagef("resize takes an image and a size")
	}
	return runResize(ctx, *fmtName, pos[0], pos[1], stdout)
}

func runResize(ctx context.Context, fmtName, name, sizeArg string, stdout io.Writer) error {
	d, _, err := openImage(ctx, name, fmtName, format.OpenOptions{})
	if err != nil {
		return err
	}
	rel := strings.HasPrefix(sizeArg, "+") || strings.HasPrefix(sizeArg, "-")
	n, err := parseSize(strings.TrimLeft(sizeArg, "+-"))
	if err != nil {
		d.Close()
		return err
	}
	size := n
	if rel {
		if sizeArg[0] == '-' {
			n = -n
		}
		size = d.Size() + n
	}
	if err := disk.Resize(ctx, d, size); err != nil {
		d.Close()
		return err
	}
	if err := d.Close(); err != nil {
		return err
	}
	fmt.Fprintln(stdout, "Image resized.")
	return nil
}
