package cli

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/vdisk-project/vdisk/disk"
	"github.com/vdisk-project/vdisk/format/vmdk"
)

type commitOptions struct {
	drop     bool
	progress bool
	format   string
	base     string
}

func cmdCommit(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var o commitOptions
	fs := flag.NewFlagSet("commit", flag.ContinueOnError)
	fs.BoolVar(&o.drop, "d", false, "keep the image's data instead of emptying it afterwards")
	fs.BoolVar(&o.progress, "p", false, "show progress: a bar on a terminal, qemu-img's percentage records elsewhere")
	fs.StringVar(&o.format, "f", "", "image format (vmdk)")
	fs.StringVar(&o.base, "b", "", "commit into this image of the backing chain (default: the parent); implies -d")
	quiet := fs.Bool("q", false, "quiet: print nothing on success")
	fs.String("t", "", "cache mode (accepted for qemu-img compatibility)")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("commit takes one image")
	}
	if o.format != "" && o.format != "vmdk" {
		return disk.Errorf(disk.ErrNotSupported, "commit writes VMDK children into their parents only, not %s images", o.format)
	}
	if err := runCommit(ctx, o, pos[0], stderr); err != nil {
		return err
	}
	if !*quiet {
		fmt.Fprintln(stdout, "Image committed.")
	}
	return nil
}

// chainPaths returns the path of each link of the chain of the VMDK at
// name, the leaf first.
func chainPaths(ctx context.Context, name string) ([]string, vmdk.Info, error) {
	d, err := vmdk.Open(ctx, name, &vmdk.OpenOptions{ReadOnly: true})
	if err != nil {
		return nil, vmdk.Info{}, err
	}
	info := d.Info()
	if err := d.Close(); err != nil {
		return nil, info, err
	}
	paths := make([]string, info.Links)
	for _, f := range info.Files {
		if paths[f.Link] == "" && f.Path != "" {
			paths[f.Link] = f.Path
		}
	}
	return paths, info, nil
}

// runCommit writes what a VMDK child holds into its parent (or into base,
// further down its chain, with everything the links between hold), as
// qemu-img commit does. The child is then linked to the image committed
// into (its parentCID updated; with -b, the links between leave its
// chain), so it reads as before, and emptied unless -d or -b is given:
// made again as an empty child of the same subformat, adapter type,
// hardware version and ddb.uuid. It refuses when another image also has
// the target as its parent, since that image's contents would change.
func runCommit(ctx context.Context, o commitOptions, name string, stderr io.Writer) (err error) {
	if err := needVMDK(name, "commit"); err != nil {
		return err
	}
	paths, info, err := chainPaths(ctx, name)
	if err != nil {
		return err
	}
	if len(paths) < 2 {
		return disk.Errorf(disk.ErrInvalid, "%s has no backing file to commit into", name)
	}
	target := 1
	if o.base != "" {
		target = -1
		for i, p := range paths[1:] {
			if isSameFile(o.base, p) || isSameFile(filepath.Join(filepath.Dir(name), o.base), p) {
				target = i + 1
				break
			}
		}
		if target < 0 {
			return disk.Errorf(disk.ErrInvalid, "%s is not in the backing chain of %s", o.base, name)
		}
		o.drop = true // as qemu-img: -b implies -d
	}
	base := paths[target]
	if other := otherChild(ctx, paths[target-1], base); other != "" {
		return disk.Errorf(disk.ErrInvalid, "%s is also the parent of %s, whose contents a commit would change", base, other)
	}
	if !o.drop {
		switch info.CreateType {
		case vmdk.MonolithicSparse, vmdk.TwoGbMaxExtentSparse, vmdk.VMFSSparse:
		default:
			return disk.Errorf(disk.ErrNotSupported, "a %s child cannot be emptied after the commit; give -d to keep its data", info.CreateType)
		}
		// The child must be a leaf: emptying it changes what its own
		// children read.
		d, err := vmdk.Open(ctx, name, nil)
		if err != nil {
			return err
		}
		if err := d.Close(); err != nil {
			return err
		}
	}
	if err := commitLinks(ctx, o, paths[:target], base, stderr); err != nil {
		return err
	}
	if target == 1 {
		if _, _, err := vmdk.Relink(ctx, name, nil); err != nil {
			return err
		}
	} else if err := vmdk.SetParent(ctx, name, base, nil); err != nil {
		return err
	}
	if o.drop {
		return nil
	}
	return emptyChild(ctx, name, base, info)
}

// otherChild returns a VMDK in parent's directory, other than child, that
// names parent as its parent, or "".
func otherChild(ctx context.Context, child, parent string) string {
	dir := filepath.Dir(parent)
	entries, err := os.ReadDir(dir)
	if err != nil {
		return ""
	}
	for _, e := range entries {
		p := filepath.Join(dir, e.Name())
		if e.IsDir() || !strings.HasSuffix(strings.ToLower(e.Name()), ".vmdk") || isSameFile(p, child) || isSameFile(p, parent) {
			continue
		}
		d, err := vmdk.Open(ctx, p, &vmdk.OpenOptions{ReadOnly: true, SingleLink: true})
		if err != nil {
			continue
		}
		hint := d.Info().ParentHint
		d.Close()
		if hint != "" && (isSameFile(filepath.Join(dir, hint), parent) || isSameFile(hint, parent)) {
			return p
		}
	}
	return ""
}

// commitLinks writes the grains each link holds into base, the link
// nearest base first, so that the leaf's grains win.
func commitLinks(ctx context.Context, o commitOptions, links []string, base string, stderr io.Writer) (err error) {
	dst, err := vmdk.Open(ctx, base, &vmdk.OpenOptions{AllowChildren: true})
	if err != nil {
		return err
	}
	defer func() {
		if cerr := dst.Close(); err == nil {
			err = cerr
		}
	}()
	update, finish := progress(stderr, o.progress, "committing")
	defer finish()
	size := dst.Size()
	buf := make([]byte, 1<<20)
	for i := len(links) - 1; i >= 0; i-- {
		src, err := vmdk.Open(ctx, links[i], &vmdk.OpenOptions{ReadOnly: true, SingleLink: true})
		if err != nil {
			return err
		}
		if src.Size() > size {
			src.Close()
			return disk.Errorf(disk.ErrNotSupported, "%s is larger than %s", links[i], base)
		}
		done := int64(len(links)-1-i) * size
		err = disk.Extents(ctx, src, 0, src.Size(), func(e disk.Extent) error {
			if e.Flags&disk.Hole != 0 {
				return nil // not this link's: the data below shows through
			}
			if !e.Flags.Data() {
				return disk.WriteZeroes(dst, e.Off, e.Len, 0)
			}
			for off := e.Off; off < e.End(); {
				if err := ctx.Err(); err != nil {
					return err
				}
				n := min(e.End()-off, int64(len(buf)))
				if _, err := src.ReadAt(buf[:n], off); err != nil && err != io.EOF {
					return err
				}
				if _, err := dst.WriteAt(buf[:n], off); err != nil {
					return err
				}
				off += n
				if update != nil {
					update(done+off, int64(len(links))*size)
				}
			}
			return nil
		})
		if cerr := src.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
	}
	if update != nil {
		update(int64(len(links))*size, int64(len(links))*size)
	}
	return dst.Flush()
}

// emptyChild makes name again as an empty child of parent, keeping its
// subformat, adapter type, hardware version and ddb.uuid. Its data is
// already in parent, so a failure here loses nothing but the empty child.
func emptyChild(ctx context.Context, name, parent string, info vmdk.Info) error {
	for _, f := range info.Files {
		if f.Link == 0 && f.Path != "" {
			if err := os.Remove(f.Path); err != nil && !os.IsNotExist(err) {
				return disk.Wrap(err, "commit: empty", f.Path, -1)
			}
		}
	}
	hw, _ := strconv.Atoi(info.HWVersion)
	d, err := vmdk.Create(ctx, name, 0, &vmdk.CreateOptions{Subformat: info.CreateType, Parent: parent, Adapter: info.Adapter, HWVersion: hw})
	if err != nil {
		return fmt.Errorf("the data is committed into %s, but making %s again as its empty child failed: %w", parent, name, err)
	}
	if info.UUID != "" {
		if err := d.SetMetadata("ddb.uuid", info.UUID); err != nil {
			d.Close()
			return err
		}
	}
	return d.Close()
}
