package vmdk

import (
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/vdisk-project/vdisk/disk"
)

// Relink makes the child at path accept its parent again by setting the
// child's parentCID to the parent's current CID (reference §6, §11.4). This
// is only safe when the parent's data really did not change since the child
// was made (for example when only its descriptor was rewritten); the caller
// must have asked for it explicitly. It returns the old and new parentCID.
func Relink(ctx context.Context, path string, fsys disk.FS) (old, cid uint32, err error) {
	if fsys == nil {
		fsys = disk.OSFS{}
	}
	d, err := Open(ctx, path, &OpenOptions{ReadOnly: true, IgnoreCID: true, FS: fsys})
	if err != nil {
		return 0, 0, err
	}
	if len(d.links) < 2 {
		d.Close()
		return 0, 0, disk.Errorf(disk.ErrInvalid, "vmdk: %s has no parent", path)
	}
	old, cid = d.links[0].parentCID, d.links[1].cid
	d.Close()
	if old == cid {
		return old, cid, nil
	}
	return old, cid, editDescriptor(ctx, path, fsys, func(desc *descriptor) { desc.set("parentCID", formatCID(cid)) })
}

// SetParent makes the child at path a child of parent: its
// parentFileNameHint names parent (relative to the child's directory when
// both are in the same tree) and its parentCID is parent's current CID. A
// consolidation uses it to move a child onto the link its old parent was
// merged into; the caller guarantees that the data the child sees does not
// change.
func SetParent(ctx context.Context, path, parent string, fsys disk.FS) error {
	if fsys == nil {
		fsys = disk.OSFS{}
	}
	p, err := Open(ctx, parent, &OpenOptions{ReadOnly: true, SingleLink: true, FS: fsys})
	if err != nil {
		return disk.Wrap(err, "vmdk: open parent", parent, -1)
	}
	cid := p.links[0].cid
	p.Close()
	hint := parent
	if rel, err := filepath.Rel(filepath.Dir(path), parent); err == nil && filepath.IsAbs(parent) == filepath.IsAbs(path) {
		hint = rel
	}
	return editDescriptor(ctx, path, fsys, func(desc *descriptor) {
		desc.set("parentFileNameHint", hint)
		desc.set("parentCID", formatCID(cid))
	})
}

// StripCBT removes change tracking from a descriptor: the changeTrackPath
// line goes and the descriptor version returns to 1 (reference §7). The
// -ctk.vmdk file itself is left alone.
func StripCBT(ctx context.Context, path string, fsys disk.FS) (bool, error) {
	if fsys == nil {
		fsys = disk.OSFS{}
	}
	found := false
	err := editDescriptor(ctx, path, fsys, func(desc *descriptor) {
		found = desc.remove("changeTrackPath")
		if v := desc.get("version"); v != "1" && found {
			desc.set("version", "1")
		}
	})
	return found, err
}

// editDescriptor applies edit to a link's descriptor and writes it back
// (embedded or as a file).
func editDescriptor(ctx context.Context, path string, fsys disk.FS, edit func(*descriptor)) error {
	d := &Disk{fsys: fsys, opts: OpenOptions{FS: fsys}}
	l, err := d.openLink(path, false)
	if err != nil {
		return err
	}
	d.links = []*link{l}
	edit(l.desc)
	err = d.writeDescriptor(l)
	if cerr := d.closeLinks(); err == nil {
		err = cerr
	}
	return err
}

// RebuildDescriptor writes a new descriptor at path for extent files that
// lost theirs (the VMware KB recipe): it finds the extents by VMware's and
// qemu's naming (NAME-flat.vmdk, NAME-f001.vmdk…, NAME-s001.vmdk…,
// NAME-delta.vmdk, NAME-sesparse.vmdk, NAME-sesparse-001.vmdk…), takes
// capacities from the sparse headers or file sizes, and, for a delta, links
// it to parent (whose current CID it records; an seSparse disk without a
// parent is standalone). The adapter type is written as given ("" for
// lsilogic).
func RebuildDescriptor(ctx context.Context, path, parent, adapter string, fsys disk.FS) error {
	if fsys == nil {
		fsys = disk.OSFS{}
	}
	if _, err := fsys.Stat(path); err == nil {
		return disk.Errorf(disk.ErrInvalid, "vmdk: %s exists; rebuilding would overwrite it", path)
	}
	if adapter == "" {
		adapter = "lsilogic"
	}
	dir := filepath.Dir(path)
	base := strings.TrimSuffix(filepath.Base(path), filepath.Ext(path))
	entries, err := os.ReadDir(dir)
	if err != nil {
		return disk.Wrap(err, "vmdk: rebuild descriptor", dir, -1)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	sort.Strings(names)
	var ext []extentLine
	createType := ""
	add := func(name, typ string, sectors int64) {
		ext = append(ext, extentLine{Access: "RW", Sectors: sectors, Type: typ, File: name})
	}
	sizeOf := func(name string) (int64, error) {
		st, err := fsys.Stat(filepath.Join(dir, name))
		if err != nil {
			return 0, err
		}
		return st.Size() / disk.SectorSize, nil
	}
	head := func(name string) ([]byte, error) {
		f, err := fsys.OpenFile(filepath.Join(dir, name), os.O_RDONLY, 0)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		b := make([]byte, cowdHeaderSize)
		n, err := f.ReadAt(b, 0)
		if n < headerSize {
			return nil, err
		}
		return b[:n], nil
	}
	switch {
	case contains(names, base+"-flat.vmdk"):
		n, err := sizeOf(base + "-flat.vmdk")
		if err != nil {
			return err
		}
		createType = "vmfs"
		add(base+"-flat.vmdk", "VMFS", n)
	case contains(names, base+"-delta.vmdk"):
		b, err := head(base + "-delta.vmdk")
		if err != nil || len(b) < cowdHeaderSize || binary.LittleEndian.Uint32(b) != cowdMagic {
			return disk.Errorf(disk.ErrCorrupt, "vmdk: %s-delta.vmdk is not a COWD extent", base)
		}
		createType = "vmfsSparse"
		add(base+"-delta.vmdk", "VMFSSPARSE", int64(binary.LittleEndian.Uint32(b[cowdOffNumSectors:])))
	case contains(names, base+"-sesparse.vmdk") || contains(names, base+"-sesparse-001.vmdk"):
		// One extent, or several when vdisk split the disk to fit a file
		// size limit.
		files := []string{base + "-sesparse.vmdk"}
		if !contains(names, files[0]) {
			files = nil
			for i := 1; contains(names, fmt.Sprintf("%s-sesparse-%03d.vmdk", base, i)); i++ {
				files = append(files, fmt.Sprintf("%s-sesparse-%03d.vmdk", base, i))
			}
		}
		for _, name := range files {
			b, err := head(name)
			if err != nil || len(b) < 24 || binary.LittleEndian.Uint64(b) != seConstMagic {
				return disk.Errorf(disk.ErrCorrupt, "vmdk: %s is not an SEsparse extent", name)
			}
			add(name, "SESPARSE", int64(binary.LittleEndian.Uint64(b[16:])))
		}
		createType = "seSparse"
	default:
		for i := 1; ; i++ {
			f, s := fmt.Sprintf("%s-f%03d.vmdk", base, i), fmt.Sprintf("%s-s%03d.vmdk", base, i)
			switch {
			case contains(names, f):
				n, err := sizeOf(f)
				if err != nil {
					return err
				}
				createType = string(TwoGbMaxExtentFlat)
				add(f, "FLAT", n)
				continue
			case contains(names, s):
				b, err := head(s)
				if err != nil {
					return err
				}
				h, err := parseSparseHeader(b)
				if err != nil {
					return disk.Wrap(err, "", s, -1)
				}
				createType = string(TwoGbMaxExtentSparse)
				add(s, "SPARSE", int64(h.Capacity))
				continue
			}
			break
		}
	}
	if len(ext) == 0 {
		return disk.Errorf(disk.ErrNotFound, "vmdk: no extent files for %s found in %s", base, dir)
	}
	parentCID := uint32(0xffffffff)
	hint := ""
	if createType == "vmfsSparse" || (createType == "seSparse" && parent != "") {
		if parent == "" {
			return disk.Errorf(disk.ErrInvalid, "vmdk: %s is a delta: name its parent", path)
		}
		p, err := Open(ctx, parent, &OpenOptions{ReadOnly: true, FS: fsys})
		if err != nil {
			return err
		}
		parentCID = p.links[0].cid
		p.Close()
		hint = parent
		if rel, err := filepath.Rel(dir, parent); err == nil {
			hint = rel
		}
	}
	var total int64
	for _, e := range ext {
		total += e.Sectors
	}
	g := geometry(total*disk.SectorSize, adapter)
	ddb := [][2]string{
		{"ddb.adapterType", adapter},
		{"ddb.geometry.cylinders", fmt.Sprint(g.Cylinders)},
		{"ddb.geometry.heads", fmt.Sprint(g.Heads)},
		{"ddb.geometry.sectors", fmt.Sprint(g.Sectors)},
		{"ddb.virtualHWVersion", "4"},
	}
	var created []string
	return writeNewFile(fsys, path, newDescriptorText(newCID(), parentCID, createType, hint, ext, ddb), &created)
}

func contains(names []string, n string) bool {
	i := sort.SearchStrings(names, n)
	return i < len(names) && names[i] == n
}
