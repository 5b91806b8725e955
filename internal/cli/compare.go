package cli

import (
	"context"
	"flag"
	"fmt"
	"io"

	"github.com/vdisk-project/vdisk/disk"
	"github.com/vdisk-project/vdisk/format"
)

type compareOptions struct {
	forceShare bool // -U
	strict     bool
	progress   bool
	formatA    string
	formatB    string
}

func cmdCompare(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var o compareOptions
	fs := flag.NewFlagSet("compare", flag.ContinueOnError)
	fs.BoolVar(&o.strict, "s", false, "strict: images of different sizes differ")
	fs.BoolVar(&o.progress, "p", false, "show progress: a bar on a terminal, qemu-img's percentage records elsewhere")
	fs.StringVar(&o.formatA, "f", "", "first image's format (default: probe)")
	fs.StringVar(&o.formatB, "F", "", "second image's format (default: probe)")
	forceShareFlags(fs, &o.forceShare)
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 2 {
		return usagef("compare takes two images")
	}
	return runCompare(ctx, o, pos[0], pos[1], stdout, stderr)
}

func runCompare(ctx context.Context, o compareOptions, a, b string, stdout, stderr io.Writer) error {
	da, _, err := openImage(ctx, a, o.formatA, format.OpenOptions{ReadOnly: true, ForceShare: o.forceShare})
	if err != nil {
		return err
	}
	defer da.Close()
	db, _, err := openImage(ctx, b, o.formatB, format.OpenOptions{ReadOnly: true, ForceShare: o.forceShare})
	if err != nil {
		return err
	}
	defer db.Close()
	update, finish := progress(stderr, o.progress, "comparing")
	off, err := disk.Compare(ctx, da, db, &disk.CompareOptions{Strict: o.strict, Progress: update})
	finish()
	if err != nil {
		return err
	}
	if off < 0 {
		fmt.Fprintln(stdout, "Images are identical.")
		return nil
	}
	if o.strict && da.Size() != db.Size() {
		fmt.Fprintf(stdout, "Strict mode: Image size mismatch!\n")
	} else {
		fmt.Fprintf(stdout, "Content mismatch at offset %d!\n", off)
	}
	return &exitError{code: ExitDiffer}
}
