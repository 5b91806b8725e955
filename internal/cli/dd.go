package cli

import (
	"context"
	"flag"
	"io"
	"strings"

	"github.com/vdisk-project/vdisk/disk"
	"github.com/vdisk-project/vdisk/format"
)

type ddOptions struct {
	forceShare bool // -U: read an input other programs write
	inFormat   string
	outFormat  string
	in, out    string
	bs         int64
	count      int64 // -1: to the end
	skip       int64
}

func cmdDD(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o := ddOptions{bs: 512, count: -1}
	fs := flag.NewFlagSet("dd", flag.ContinueOnError)
	fs.StringVar(&o.inFormat, "f", "", "input format (default: probe)")
	fs.StringVar(&o.outFormat, "O", "raw", "output format: raw or vmdk")
	forceShareFlags(fs, &o.forceShare)
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	for _, a := range pos {
		k, v, ok := strings.Cut(a, "=")
		if !ok {
			return usagef("dd takes KEY=VALUE operands (if=, of=, bs=, count=, skip=), not %q", a)
		}
		var err error
		switch k {
		case "if":
			o.in = v
		case "of":
			o.out = v
		case "bs":
			o.bs, err = parseSize(v)
			if err == nil && o.bs <= 0 {
				err = disk.Errorf(disk.ErrInvalid, "invalid block size %q", v)
			}
		case "count":
			o.count, err = parseSize(v)
		case "skip":
			o.skip, err = parseSize(v)
		default:
			return usagef("unknown dd operand %q (if=, of=, bs=, count=, skip=)", k)
		}
		if err != nil {
			return err
		}
	}
	if o.in == "" || o.out == "" {
		return usagef("dd needs if=INPUT and of=OUTPUT")
	}
	return runDD(ctx, o)
}

// runDD copies part of an image into a new one, as qemu-img dd does: the
// bytes from skip×bs up to count×bs (count, as in qemu-img, counts blocks
// from the start of the input, the skipped ones included), or to the end
// of the input without count. An existing output is replaced.
func runDD(ctx context.Context, o ddOptions) (err error) {
	f, err := checkFormat(o.outFormat)
	if err != nil {
		return err
	}
	in, _, err := openImage(ctx, o.in, o.inFormat, format.OpenOptions{ReadOnly: true, ForceShare: o.forceShare})
	if err != nil {
		return err
	}
	defer in.Close()
	end := in.Size()
	if o.count >= 0 && o.count <= end/o.bs {
		end = o.count * o.bs
	}
	if o.skip > end/o.bs {
		return disk.Errorf(disk.ErrInvalid, "%s: cannot skip %d blocks of %d bytes: past the end of the %d bytes copied", o.in, o.skip, o.bs, end)
	}
	start := o.skip * o.bs
	out, err := createReplacing(ctx, o.out, f, end-start, nil, in, o.in, "")
	if err != nil {
		return err
	}
	made := imageFiles(out, o.out)
	defer func() {
		if cerr := out.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			removeFiles(made)
		}
	}()
	_, err = disk.Copy(ctx, out, &window{d: in, off: start, n: end - start}, &disk.CopyOptions{DstZeroed: true})
	return err
}

// window is the read-only view of the bytes [off, off+n) of a disk.
type window struct {
	d      disk.Disk
	off, n int64
}

func (w *window) ReadAt(p []byte, off int64) (int, error) {
	q, eof := disk.ReadAtClipped(p, off, w.n)
	if q == nil {
		return 0, eof
	}
	n, err := w.d.ReadAt(q, w.off+off)
	if err == io.EOF && n == len(q) {
		err = nil
	}
	if err != nil {
		return n, err
	}
	return n, eof
}

func (w *window) WriteAt([]byte, int64) (int, error) {
	return 0, disk.Errorf(disk.ErrPermission, "dd: the input is read-only")
}

func (w *window) Size() int64  { return w.n }
func (w *window) Flush() error { return nil }
func (w *window) Close() error { return nil }

// Extents reports the disk's extents, moved to the window's offsets.
func (w *window) Extents(ctx context.Context, off, n int64, fn func(disk.Extent) error) error {
	return disk.Extents(ctx, w.d, w.off+off, n, func(e disk.Extent) error {
		e.Off -= w.off
		return fn(e)
	})
}
