package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
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
	compress   bool
	sparse     string // -S: "" is the default (64 KiB), "0" writes every byte
}

func cmdConvert(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var o convertOptions
	fs := flag.NewFlagSet("convert", flag.ContinueOnError)
	fs.BoolVar(&o.progress, "p", false, "show progress: a bar on a terminal, qemu-img's percentage records elsewhere")
	fs.StringVar(&o.inFormat, "f", "", "source format (default: probe)")
	forceShareFlags(fs, &o.forceShare)
	fs.StringVar(&o.outFormat, "O", "raw", "target format: raw or vmdk")
	fs.StringVar(&o.options, "o", "", "target format options, as for create")
	fs.IntVar(&o.workers, "m", 0, "parallel requests (default: 4 or the number of CPUs)")
	fs.StringVar(&o.cache, "t", "writeback", "target cache mode: writeback (durable: synced at the end) or unsafe (never synced)")
	fs.BoolVar(&o.noCreate, "n", false, "write into an existing target (a path, an NBD URI or vdisk:…) instead of creating it; every byte of it is written, zeros included")
	fs.BoolVar(&o.compress, "c", false, "compress the target: vmdk only, as subformat=streamOptimized")
	fs.StringVar(&o.sparse, "S", "", "sparse size: aligned blocks of SIZE bytes that are all zeros are not written (a multiple of 512 up to 16M; 0 writes every byte, fully allocating the target; default 64K)")
	fs.Bool("W", false, "allow out-of-order writes (accepted for qemu-img compatibility: vdisk writes in parallel except to streamOptimized targets)")
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

// parseSparse parses convert -S: a multiple of 512 bytes up to 16 MiB, as
// qemu-img accepts, or 0. It returns the zero-detection block for
// disk.CopyOptions (0 for the default, -1 for none) and the chunk size that
// block divides.
func parseSparse(s string) (block, chunk int, err error) {
	if s == "" {
		return 0, 0, nil
	}
	n, err := parseSize(s)
	if err != nil {
		return 0, 0, err
	}
	if n%512 != 0 || n > 16<<20 {
		return 0, 0, disk.Errorf(disk.ErrInvalid, "invalid sparse size %q: a multiple of 512 up to 16M, or 0 to write every byte", s)
	}
	if n == 0 {
		return -1, 0, nil
	}
	chunk = int(n * ((1<<20 + n - 1) / n)) // the multiple of n nearest above 1 MiB
	return int(n), chunk, nil
}

// allocating is a convert -S 0 target: zeros are written as allocated
// zeros, never left as holes.
type allocating struct{ disk.Disk }

func (a allocating) WriteZeroes(off, n int64, _ disk.ZeroFlags) error {
	return disk.WriteZeroes(a.Disk, off, n, disk.ZeroNoHole)
}

func runConvert(ctx context.Context, o convertOptions, src, dst string, stderr io.Writer) (err error) {
	block, chunk, err := parseSparse(o.sparse)
	if err != nil {
		return err
	}
	in, _, err := openImage(ctx, src, o.inFormat, format.OpenOptions{ReadOnly: true, ForceShare: o.forceShare})
	if err != nil {
		return err
	}
	defer in.Close()
	if o.noCreate {
		return convertInto(ctx, o, in, dst, block, chunk, stderr)
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
	if o.compress {
		switch {
		case f != format.VMDK:
			return disk.Errorf(disk.ErrNotSupported, "compression (-c) is not supported for %s images; use -O vmdk", f)
		case co.VMDK.Subformat == "":
			co.VMDK.Subformat = vmdk.StreamOptimized
		case co.VMDK.Subformat != vmdk.StreamOptimized:
			return disk.Errorf(disk.ErrNotSupported, "compression (-c) needs subformat=streamOptimized, not %s", co.VMDK.Subformat)
		}
	}
	out, err := createReplacing(ctx, dst, f, in.Size(), &co, in, src, "")
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
	var target disk.Disk = out
	if block < 0 {
		target = allocating{out}
	}
	_, err = disk.Copy(ctx, target, in, &disk.CopyOptions{
		Workers:    o.workers,
		ChunkSize:  chunk,
		ZeroBlock:  block,
		DstZeroed:  block >= 0,
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
func convertInto(ctx context.Context, o convertOptions, in disk.Disk, dst string, block, chunk int, stderr io.Writer) (err error) {
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
	var target disk.Disk = out
	if block < 0 {
		target = allocating{out}
	}
	_, err = disk.Copy(ctx, target, in, &disk.CopyOptions{Workers: o.workers, ChunkSize: chunk, ZeroBlock: block, Progress: update})
	if err == nil {
		err = out.Flush()
	}
	return err
}

// replaced holds the files of an image that a new one replaces, moved
// aside until the new image exists.
type replaced struct{ moved [][2]string } // {aside, original}

// restore puts the old image back (the new one could not be made).
func (r *replaced) restore() {
	for _, m := range r.moved {
		os.Rename(m[0], m[1])
	}
}

// drop deletes the old image, once the new one is made.
func (r *replaced) drop() error {
	var errs []error
	for _, m := range r.moved {
		if err := os.Remove(m[0]); err != nil {
			errs = append(errs, disk.Wrap(err, "replace: remove", m[0], -1))
		}
	}
	return errors.Join(errs...)
}

// createReplacing creates an image as qemu-img create and convert do:
// an existing image at path is replaced (every file of it), but refused,
// as qemu-img refuses it, when it is a file of src (the image being read,
// or a link of its chain) or the backing image named with -b. The old
// files are moved aside while the new image is created, so a create that
// fails (an invalid option, a name in the way) leaves them in place, and
// deleted before any data is copied. "File exists" is ErrInvalid.
func createReplacing(ctx context.Context, path string, f format.Format, size int64, co *format.CreateOptions, src disk.Disk, srcPath, backing string) (disk.Disk, error) {
	r, err := setAside(ctx, path, src, srcPath, backing)
	if err != nil {
		return nil, err
	}
	d, err := format.Create(ctx, path, f, size, co)
	if err != nil {
		r.restore()
		return nil, existsInvalid(err)
	}
	if err := r.drop(); err != nil {
		d.Close()
		removeFiles(imageFiles(d, path))
		return nil, err
	}
	return d, nil
}

// setAside checks that the image at dst may be replaced and moves its
// files to hidden names next to them.
func setAside(ctx context.Context, dst string, src disk.Disk, srcPath, backing string) (*replaced, error) {
	r := &replaced{}
	st, err := os.Stat(dst)
	if errors.Is(err, fs.ErrNotExist) {
		return r, nil
	}
	if err != nil {
		return nil, disk.Wrap(err, "stat", dst, -1)
	}
	if st.IsDir() {
		return nil, disk.Errorf(disk.ErrInvalid, "%s is a directory", dst)
	}
	if backing != "" && isSameFile(dst, backing) {
		return nil, disk.Errorf(disk.ErrInvalid, "%s is the backing file; an image cannot be created over its own backing file", dst)
	}
	if v, ok := src.(*vmdk.Disk); ok {
		for _, f := range v.Info().Files {
			if f.Kind != "ZERO" && isSameFile(dst, f.Path) {
				return nil, disk.Errorf(disk.ErrInvalid, "%s is a file of the source image; write into another file", dst)
			}
		}
	} else if isSameFile(dst, srcPath) {
		return nil, disk.Errorf(disk.ErrInvalid, "%s is the source image; write into another file", dst)
	}
	files := []string{dst}
	if old, _, err := format.Open(ctx, dst, &format.OpenOptions{ReadOnly: true, SingleLink: true}); err == nil {
		files = imageFiles(old, dst)
		old.Close()
	}
	for i, f := range files {
		aside := filepath.Join(filepath.Dir(f), fmt.Sprintf(".%s.%d-%d.replaced", filepath.Base(f), os.Getpid(), i))
		if err := os.Rename(f, aside); err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			r.restore()
			return nil, disk.Wrap(err, "replace", f, -1)
		}
		r.moved = append(r.moved, [2]string{aside, f})
	}
	return r, nil
}

// sameFile reports whether a and b name the same existing file.
func isSameFile(a, b string) bool {
	sa, err := os.Stat(a)
	if err != nil {
		return false
	}
	sb, err := os.Stat(b)
	return err == nil && os.SameFile(sa, sb)
}

// existsInvalid reclassifies "file exists" as the invalid argument it is
// (exit 65), not an I/O error: a new image needs a file name that a file
// outside the image it replaces already holds.
func existsInvalid(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) && errors.Is(err, fs.ErrExist) {
		return disk.Errorf(disk.ErrInvalid, "%s: %w, and is not a file of an image being replaced; remove it or choose another name", pe.Path, fs.ErrExist)
	}
	return err
}
