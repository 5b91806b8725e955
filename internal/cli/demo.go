package cli

import (
	"context"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"time"

	"github.com/vdisk-project/vdisk/disk"
	"github.com/vdisk-project/vdisk/format"
	"github.com/vdisk-project/vdisk/format/vmdk"
)

// cmdDemo runs the local disk engine end to end on an embedded default: a
// 1 GiB thin VMDK holding 64 MiB of scattered data is created, converted
// to raw and to a split VMDK, mapped, compared and checked.
func cmdDemo(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	size := fs.String("size", "1G", "virtual size of the demo disk")
	data := fs.String("data", "64M", "bytes of scattered data to write")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 1 {
		return usagef("demo takes at most one directory")
	}
	dir, where := "", ""
	if len(pos) == 1 {
		dir = pos[0]
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		where = "in " + dir
	} else {
		if dir, err = os.MkdirTemp("", "vdisk-demo-"); err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		where = "in a temporary directory, removed when it ends (name one to keep the images)"
	}
	vsize, err := parseSize(*size)
	if err != nil {
		return err
	}
	nbytes, err := parseSize(*data)
	if err != nil {
		return err
	}
	return runDemo(ctx, dir, where, vsize, nbytes, stdout, stderr)
}

func runDemo(ctx context.Context, dir, where string, size, data int64, stdout, stderr io.Writer) error {
	step := func(what string, start time.Time) {
		fmt.Fprintf(stdout, "  %-58s %8.1f ms\n", what, float64(time.Since(start).Microseconds())/1000)
	}
	fmt.Fprintf(stdout, "vdisk demo %s\n", where)
	src := filepath.Join(dir, "source.vmdk")
	t := time.Now()
	d, err := vmdk.Create(ctx, src, size, &vmdk.CreateOptions{Adapter: "lsilogic", HWVersion: 14})
	if err != nil {
		return err
	}
	rng := rand.New(rand.NewPCG(1, 2))
	buf := make([]byte, 256<<10)
	for written := int64(0); written < data; written += int64(len(buf)) {
		for i := range buf {
			buf[i] = byte(rng.Uint32())
		}
		off := rng.Int64N(size/int64(len(buf))) * int64(len(buf))
		if _, err := d.WriteAt(buf, off); err != nil {
			d.Close()
			return err
		}
	}
	if err := d.Close(); err != nil {
		return err
	}
	step(fmt.Sprintf("create a %s monolithicSparse disk, write %s", humanSize(size), humanSize(data)), t)
	t = time.Now()
	if err := runMap(ctx, mapOptions{chunkSize: "1M"}, src, io.Discard); err != nil {
		return err
	}
	step("allocation map (1 MiB chunks)", t)
	targets := []struct {
		name string
		conv convertOptions
	}{
		{"copy.raw", convertOptions{outFormat: "raw"}},
		{"copy-split.vmdk", convertOptions{outFormat: "vmdk", options: "subformat=twoGbMaxExtentSparse"}},
		{"copy-flat.vmdk", convertOptions{outFormat: "vmdk", options: "subformat=monolithicFlat"}},
	}
	for _, tg := range targets {
		dst := filepath.Join(dir, tg.name)
		t = time.Now()
		if err := runConvert(ctx, tg.conv, src, dst, stderr); err != nil {
			return err
		}
		step("convert to "+tg.name, t)
		t = time.Now()
		a, _, err := format.Open(ctx, src, &format.OpenOptions{ReadOnly: true})
		if err != nil {
			return err
		}
		b, _, err := format.Open(ctx, dst, &format.OpenOptions{ReadOnly: true})
		if err != nil {
			a.Close()
			return err
		}
		off, err := disk.Compare(ctx, a, b, nil)
		a.Close()
		b.Close()
		if err != nil {
			return err
		}
		if off >= 0 {
			return fmt.Errorf("demo: %s differs from the source at offset %d", tg.name, off)
		}
		step("compare "+tg.name+" with the source: identical", t)
	}
	t = time.Now()
	r, err := vmdk.Check(ctx, src, nil)
	if err != nil {
		return err
	}
	if !r.Clean() {
		return fmt.Errorf("demo: check found %d errors", r.Errors)
	}
	step(fmt.Sprintf("check the source: clean, %s allocated", humanSize(r.AllocatedBytes)), t)
	fmt.Fprintln(stdout, "\nimage information:")
	return runInfo(ctx, infoOptions{}, src, stdout, stderr)
}
