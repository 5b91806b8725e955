package cli

import (
	"context"
	"flag"
	"io"
	"os"
	"slices"

	"github.com/vdisk-project/vdisk/disk"
	"github.com/vdisk-project/vdisk/format"
	"github.com/vdisk-project/vdisk/format/vmdk"
)

type convertOptions struct {
	forceShare bool // -U
	progress   bool
	inFormat   string
	outFormat  string
	options    string
	workers    int
	cache      string
	noCreate   bool
}

func cmdConvert(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var o convertOptions
	fs := flag.NewFlagSet("convert", flag.ContinueOnError)
	fs.BoolVar(&o.progress, "p", false, "show progress (on a terminal)")
	fs.StringVar(&o.inFormat, "f", "", "source format (default: probe)")
	forceShareFlags(fs, &o.forceShare)
	fs.StringVar(&o.outFormat, "O", "raw", "target format: raw or vmdk")
	fs.StringVar(&o.options, "o", "", "target format options, as for create")
	fs.IntVar(&o.workers, "m", 0, "parallel requests (default: 4 or the number of CPUs)")
	fs.StringVar(&o.cache, "t", "writeback", "target cache mode: writeback (durable: synced at the end) or unsafe (never synced)")
	fs.BoolVar(&o.noCreate, "n", false, "write into an existing target (a path, an NBD URI or vdisk:…) instead of creating it; every byte of it is written, zeros included")
	fs.Bool("q", false, "quiet (accepted for qemu-img compatibility)")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 2 {
		return usagef("convert takes a source and a target")
	}
	return runConvert(ctx, o, pos[0], pos[1], stderr)
}

func runConvert(ctx context.Context, o convertOptions, src, dst string, stderr io.Writer) (err error) {
	in, _, err := openImage(ctx, src, o.inFormat, format.OpenOptions{ReadOnly: true, ForceShare: o.forceShare})
	if err != nil {
		return err
	}
	defer in.Close()
	if o.noCreate {
		return convertInto(ctx, o, in, dst, stderr)
	}
	f, err := checkFormat(o.outFormat)
	if err != nil {
		return err
	}
	opts, _ := parseOptions(o.options)
	var co format.CreateOptions
	if co.FS, err = cacheFS(o.cache); err != nil {
		return err
	}
	if f == format.VMDK {
		if co.VMDK, err = vmdkOptions(opts); err != nil {
			return err
		}
	} else if len(opts) > 0 {
		return usagef("raw images take no options")
	}
	out, err := format.Create(ctx, dst, f, in.Size(), &co)
	if err != nil {
		return err
	}
	made := imageFiles(out, dst)
	defer func() {
		if cerr := out.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			removeFiles(made)
		}
	}()
	update, finish := progress(stderr, o.progress, "converting")
	defer finish()
	_, err = disk.Copy(ctx, out, in, &disk.CopyOptions{
		Workers:    o.workers,
		DstZeroed:  true,
		Sequential: f == format.VMDK && co.VMDK.Subformat == vmdk.StreamOptimized,
		Progress:   update,
	})
	return err
}

// imageFiles lists every file of a new image: a multi-file VMDK (split
// extents, a flat extent, a delta) has more than its descriptor.
func imageFiles(d disk.Disk, name string) []string {
	v, ok := d.(*vmdk.Disk)
	if !ok {
		return []string{name}
	}
	var files []string
	for _, f := range v.Info().Files {
		if f.Link == 0 && f.Kind != "ZERO" && !slices.Contains(files, f.Path) {
			files = append(files, f.Path)
		}
	}
	if len(files) == 0 {
		return []string{name}
	}
	return files
}

// removeFiles deletes the files of a half-written target after a failed
// or interrupted convert.
func removeFiles(files []string) {
	for _, f := range files {
		os.Remove(f)
	}
}

// convertInto writes the source into an existing target (qemu-img
// convert -n): a restore into a host disk or an NBD export. The target
// is not known to be zero, so ranges that are zero in the source are
// zeroed in it (cheaply, with write-zeroes, where it can).
func convertInto(ctx context.Context, o convertOptions, in disk.Disk, dst string, stderr io.Writer) (err error) {
	out, _, err := openImage(ctx, dst, "", format.OpenOptions{})
	if err != nil {
		return err
	}
	defer func() {
		if cerr := out.Close(); err == nil {
			err = cerr
		}
	}()
	if out.Size() < in.Size() {
		return disk.Errorf(disk.ErrInvalid, "target %s holds %d bytes, the source %d", dst, out.Size(), in.Size())
	}
	update, finish := progress(stderr, o.progress, "converting")
	defer finish()
	_, err = disk.Copy(ctx, out, in, &disk.CopyOptions{Workers: o.workers, Progress: update})
	if err == nil {
		err = out.Flush()
	}
	return err
}
