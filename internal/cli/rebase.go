package cli

import (
	"bytes"
	"context"
	"flag"
	"io"
	"path/filepath"

	"github.com/vdisk-project/vdisk/disk"
	"github.com/vdisk-project/vdisk/format"
	"github.com/vdisk-project/vdisk/format/vmdk"
)

type rebaseOptions struct {
	unsafe        bool
	progress      bool
	format        string
	backing       string
	backingSet    bool
	backingFormat string
}

func cmdRebase(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var o rebaseOptions
	fs := flag.NewFlagSet("rebase", flag.ContinueOnError)
	fs.BoolVar(&o.unsafe, "u", false, "unsafe: change only the backing file's name and CID, reading and writing no data")
	fs.BoolVar(&o.progress, "p", false, "show progress: a bar on a terminal, qemu-img's percentage records elsewhere")
	fs.StringVar(&o.format, "f", "", "image format (vmdk)")
	fs.Func("b", "new backing file, relative to the image's directory unless absolute; \"\" for none", func(s string) error {
		o.backing, o.backingSet = s, true
		return nil
	})
	fs.StringVar(&o.backingFormat, "F", "", "new backing file's format (vmdk)")
	fs.Bool("U", false, "accepted for qemu-img compatibility; rebase writes the image, so it takes its locks all the same")
	fs.Bool("q", false, "quiet (accepted for qemu-img compatibility)")
	fs.String("t", "", "cache mode (accepted for qemu-img compatibility)")
	fs.String("T", "", "source cache mode (accepted for qemu-img compatibility)")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 || !o.backingSet {
		return usagef("rebase takes -b BACKING (or -b \"\") and an image")
	}
	for _, f := range []string{o.format, o.backingFormat} {
		if f != "" && f != "vmdk" {
			return disk.Errorf(disk.ErrNotSupported, "rebase changes the backing file of VMDK images only, not %s", f)
		}
	}
	return runRebase(ctx, o, pos[0], stderr)
}

// runRebase gives a VMDK child a new parent (o.backing, or none), as
// qemu-img rebase does. In safe mode what the child shows stays the same:
// wherever the child holds no grain of its own and the old and the new
// backing differ, the old backing's data is first written into the child.
// Unsafe mode (-u) changes only parentFileNameHint and parentCID.
func runRebase(ctx context.Context, o rebaseOptions, name string, stderr io.Writer) error {
	if err := needVMDK(name, "rebase"); err != nil {
		return err
	}
	backing := o.backing
	if backing != "" && !filepath.IsAbs(backing) {
		backing = filepath.Join(filepath.Dir(name), backing)
	}
	if backing != "" {
		// The new backing's chain must not hold the image: that would
		// make a loop.
		links, _, err := chainPaths(ctx, backing)
		if err != nil {
			return disk.Wrap(err, "rebase: open new backing", backing, -1)
		}
		for _, l := range links {
			if isSameFile(l, name) {
				return disk.Errorf(disk.ErrInvalid, "%s cannot be the backing file of %s: its chain holds %s", backing, name, name)
			}
		}
	}
	if !o.unsafe {
		if err := mergeBackingDiff(ctx, o, name, backing, stderr); err != nil {
			return err
		}
	}
	if backing == "" {
		return vmdk.RemoveParent(ctx, name, nil)
	}
	return vmdk.SetParent(ctx, name, backing, nil)
}

// needVMDK refuses an image that is not a VMDK (raw images have no backing
// file): the verb is not supported for it.
func needVMDK(name, verb string) error {
	f, err := format.DetectFile(nil, name)
	if err != nil {
		return err
	}
	if f != format.VMDK {
		return disk.Errorf(disk.ErrNotSupported, "%s works on VMDK children; %s is a %s image, which has no backing file", verb, name, f)
	}
	return nil
}

// zeroDisk reads as zeros: the backing of an image that has none.
type zeroDisk struct{ size int64 }

func (z zeroDisk) ReadAt(p []byte, off int64) (int, error) {
	q, eof := disk.ReadAtClipped(p, off, z.size)
	clear(q)
	return len(q), eof
}
func (z zeroDisk) WriteAt([]byte, int64) (int, error) { return 0, disk.ErrPermission }
func (z zeroDisk) Size() int64                        { return z.size }
func (z zeroDisk) Flush() error                       { return nil }
func (z zeroDisk) Close() error                       { return nil }

// mergeBackingDiff writes into the child at name, wherever it holds no
// grain, the old backing's data that differs from the new backing's.
func mergeBackingDiff(ctx context.Context, o rebaseOptions, name, backing string, stderr io.Writer) (err error) {
	chain, err := vmdk.Open(ctx, name, &vmdk.OpenOptions{ReadOnly: true})
	if err != nil {
		return err
	}
	size, oldPath := chain.Size(), ""
	for _, f := range chain.Info().Files {
		if f.Link == 1 {
			oldPath = f.Path
			break
		}
	}
	if err := chain.Close(); err != nil {
		return err
	}
	var oldB, newB disk.Disk = zeroDisk{size}, zeroDisk{size}
	if oldPath != "" {
		d, err := vmdk.Open(ctx, oldPath, &vmdk.OpenOptions{ReadOnly: true})
		if err != nil {
			return disk.Wrap(err, "rebase: open old backing", oldPath, -1)
		}
		defer d.Close()
		oldB = d
	}
	if backing != "" {
		d, err := vmdk.Open(ctx, backing, &vmdk.OpenOptions{ReadOnly: true})
		if err != nil {
			return disk.Wrap(err, "rebase: open new backing", backing, -1)
		}
		defer d.Close()
		if d.Size() != size {
			return disk.Errorf(disk.ErrInvalid, "rebase: %s holds %d bytes, %s %d: a VMDK child and its parent have the same size", backing, d.Size(), name, size)
		}
		newB = d
	}
	// The ranges where the child holds no grain of its own, listed before
	// the child is opened for writing.
	own, err := vmdk.Open(ctx, name, &vmdk.OpenOptions{ReadOnly: true, SingleLink: true})
	if err != nil {
		return err
	}
	var holes []disk.Extent
	err = disk.Extents(ctx, own, 0, size, func(e disk.Extent) error {
		if e.Flags&disk.Hole != 0 {
			if n := len(holes); n > 0 && holes[n-1].End() == e.Off {
				holes[n-1].Len += e.Len
			} else {
				holes = append(holes, e)
			}
		}
		return nil
	})
	if cerr := own.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	child, err := vmdk.Open(ctx, name, nil)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := child.Close(); err == nil {
			err = cerr
		}
	}()
	update, finish := progress(stderr, o.progress, "rebasing")
	defer finish()
	const chunk = 1 << 20
	a, b := make([]byte, chunk), make([]byte, chunk)
	for _, e := range holes {
		for off := e.Off; off < e.End(); {
			if err := ctx.Err(); err != nil {
				return err
			}
			n := min(e.End()-off, chunk-off%chunk)
			if _, err := oldB.ReadAt(a[:n], off); err != nil && err != io.EOF {
				return disk.Wrap(err, "rebase: read old backing", oldPath, off)
			}
			if _, err := newB.ReadAt(b[:n], off); err != nil && err != io.EOF {
				return disk.Wrap(err, "rebase: read new backing", backing, off)
			}
			for s := int64(0); s < n; s += grainBytes {
				t := min(n, s+grainBytes)
				if !bytes.Equal(a[s:t], b[s:t]) {
					if _, err := child.WriteAt(a[s:t], off+s); err != nil {
						return err
					}
				}
			}
			off += n
			if update != nil {
				update(off, size)
			}
		}
	}
	return nil
}
