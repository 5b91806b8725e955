package vmdk

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/vdisk-project/vdisk/disk"
)

// Info describes the open disk. Descriptor keys are looked up from the leaf
// downward, as VMware does (§2.5). It is safe to call while the disk is
// being written.
func (d *Disk) Info() Info {
	d.mu.Lock()
	defer d.mu.Unlock()
	leaf := d.links[0]
	in := Info{
		Capacity:   d.size,
		CreateType: Subformat(leaf.createType),
		Adapter:    d.meta("ddb.adapterType"),
		HWVersion:  d.meta("ddb.virtualHWVersion"),
		CID:        leaf.cid,
		ParentCID:  leaf.parentCID,
		ParentHint: leaf.desc.get("parentFileNameHint"),
		UUID:       d.meta("ddb.uuid"),
		Links:      len(d.links),
	}
	if in.CreateType == VMFS && d.meta("ddb.thinProvisioned") == "1" {
		in.CreateType = VMFSThin
	}
	c, _ := strconv.ParseUint(d.meta("ddb.geometry.cylinders"), 10, 64)
	h, _ := strconv.ParseUint(d.meta("ddb.geometry.heads"), 10, 32)
	s, _ := strconv.ParseUint(d.meta("ddb.geometry.sectors"), 10, 32)
	in.Geometry = Geometry{Cylinders: c, Heads: uint32(h), Sectors: uint32(s)}
	for i, l := range d.links {
		in.Unclean = in.Unclean || l.unclean
		if !l.selfContained {
			in.Files = append(in.Files, FileInfo{Path: l.path, Link: i, Kind: "descriptor", FileSize: fileSize(d.fsys, l.path)})
		}
		for x, el := range l.desc.extents {
			fi := FileInfo{Link: i, Kind: el.Type, Access: el.Access, Size: el.Sectors * disk.SectorSize}
			if x < len(l.starts) {
				fi.Offset = l.starts[x]
			}
			if el.Type != "ZERO" {
				fi.Path = el.File
				if l.selfContained {
					fi.Path = l.path
				} else if !strings.HasPrefix(fi.Path, "/") {
					fi.Path = joinDir(l.path, el.File)
				}
				fi.FileSize = fileSize(d.fsys, fi.Path)
			}
			if x < len(l.extents) {
				switch se := unwrapExtent(l.extents[x]).(type) {
				case *sparseExtent:
					fi.Compressed = se.h.compressed()
				case *streamExtent:
					fi.Compressed = true
				}
			}
			in.Files = append(in.Files, fi)
		}
	}
	return in
}

func joinDir(file, name string) string {
	i := strings.LastIndexByte(file, '/')
	if i < 0 {
		return name
	}
	return file[:i+1] + name
}

func fileSize(fsys disk.FS, name string) int64 {
	st, err := fsys.Stat(name)
	if err != nil {
		return -1
	}
	return st.Size()
}

// meta looks a key up; the caller holds d.mu.
func (d *Disk) meta(key string) string {
	v, _ := d.metadataLocked(key)
	return v
}

// Metadata returns the value of a disk database key ("ddb.adapterType" or
// "adapterType"), looked up from the leaf downward. An unknown key gives
// ErrNotFound.
func (d *Disk) Metadata(key string) (string, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.metadataLocked(key)
}

func (d *Disk) metadataLocked(key string) (string, error) {
	key = ddbKey(key)
	for _, l := range d.links {
		if v, ok := l.desc.lookup(key); ok {
			return v, nil
		}
	}
	return "", disk.Errorf(disk.ErrNotFound, "vmdk: metadata key %q not found", key)
}

// MetadataKeys lists the disk database keys of the chain, sorted, without
// the "ddb." prefix.
func (d *Disk) MetadataKeys() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	seen := map[string]bool{}
	var keys []string
	for _, l := range d.links {
		for _, k := range l.desc.ddbKeys() {
			k = strings.TrimPrefix(k, "ddb.")
			if !seen[strings.ToLower(k)] {
				seen[strings.ToLower(k)] = true
				keys = append(keys, k)
			}
		}
	}
	sort.Strings(keys)
	return keys
}

// SetMetadata sets a disk database key in the leaf's descriptor and writes
// it out. Values may not contain quotes or line breaks.
func (d *Disk) SetMetadata(key, value string) error {
	if d.ro {
		return disk.Errorf(disk.ErrPermission, "vmdk: %s: opened read-only", d.links[0].path)
	}
	key = ddbKey(key)
	if strings.IndexFunc(key, func(r rune) bool { return r == '"' || r == '=' || r <= ' ' || r >= 0x7f }) >= 0 || len(key) > 200 || key == "ddb." {
		return disk.Errorf(disk.ErrInvalid, "vmdk: invalid metadata key %q", key)
	}
	if i := strings.IndexFunc(value, func(r rune) bool { return r == '"' || r < 0x20 || r == 0x7f }); i >= 0 || len(value) > 4096 || !utf8.ValidString(value) {
		return disk.Errorf(disk.ErrInvalid, "vmdk: invalid metadata value for %q: at most 4096 bytes of UTF-8 without quotes or control characters", key)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	l := d.links[0]
	old, had := l.desc.lookup(key)
	l.desc.set(key, value)
	if err := d.writeDescriptor(l); err != nil {
		if had {
			l.desc.set(key, old)
		} else {
			l.desc.remove(key)
		}
		return err
	}
	return nil
}

func ddbKey(k string) string {
	if !strings.HasPrefix(strings.ToLower(k), "ddb.") {
		return "ddb." + k
	}
	return k
}

// Resize grows the disk to size bytes (rounded up to a sector). Flat disks
// grow their last extent file; split disks add extents; sparse disks grow
// within the grain directory they were created with. Shrinking is refused
// (it would destroy data; convert to a smaller disk instead).
func (d *Disk) Resize(ctx context.Context, size int64) (err error) {
	if d.ro {
		return disk.Errorf(disk.ErrPermission, "vmdk: %s: opened read-only", d.links[0].path)
	}
	size = (size + disk.SectorSize - 1) / disk.SectorSize * disk.SectorSize
	if size < d.size {
		return disk.Errorf(disk.ErrNotSupported, "vmdk: shrinking a disk is not supported; convert it to a smaller disk")
	}
	if size == d.size {
		return nil
	}
	if len(d.links) > 1 {
		return disk.Errorf(disk.ErrNotSupported, "vmdk: a disk with a parent cannot be grown; grow the base before taking snapshots")
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	l := d.links[0]
	grow := (size - d.size) / disk.SectorSize
	exts := append([]extentLine(nil), l.desc.extents...)
	split := strings.Contains(strings.ToLower(l.createType), "gbmaxextent")
	_, se := unwrapExtent(l.extents[len(l.extents)-1]).(*seSparseExtent)
	switch {
	case se:
		// The last SEsparse extent grows within the room its sections
		// have; past it, extents no larger than the first are added (a
		// split link's first extent is as large as a file may hold).
		if err := growLast(l, exts, grow, d.opts.MaxFileSize); err == nil {
			break
		} else if disk.CodeOf(err) != disk.ErrNotSupported {
			return err
		}
		var addErr error
		exts, addErr = d.addSEExtents(l, exts, grow)
		defer func() {
			if err == nil {
				err = addErr
			}
		}()
	case !split:
		if err := growLast(l, exts, grow, d.opts.MaxFileSize); err != nil {
			return err
		}
	default:
		// Split disks fill their last extent up to the split size, then
		// add extents as VMware does.
		splitSectors := int64(defaultSplitSize / disk.SectorSize)
		if len(exts) > 1 {
			splitSectors = exts[0].Sectors
		}
		first := min(grow, max(0, splitSectors-exts[len(exts)-1].Sectors))
		if first > 0 {
			if err := growLast(l, exts, first, d.opts.MaxFileSize); err != nil {
				return err
			}
		}
		// Extents added before a failure are recorded all the same, so
		// that no file is left orphaned.
		var addErr error
		exts, addErr = d.addExtents(l, exts, grow-first, splitSectors)
		defer func() {
			if err == nil {
				err = addErr
			}
		}()
	}
	l.desc.setExtents(exts)
	var total int64
	for _, e := range exts {
		total += e.Sectors * disk.SectorSize
	}
	g := geometry(total, d.meta("ddb.adapterType"))
	l.desc.set("ddb.geometry.cylinders", strconv.FormatUint(g.Cylinders, 10))
	if err := d.writeDescriptor(l); err != nil {
		return err
	}
	l.size = 0
	for i, e := range l.extents {
		l.starts[i] = l.size
		l.size += e.size()
	}
	d.size = l.size
	return nil
}

// growLast grows a link's last extent by grow sectors and updates exts;
// a flat file may not grow past lim bytes (0: no limit).
func growLast(l *link, exts []extentLine, grow, lim int64) error {
	last := len(l.extents) - 1
	switch u := unwrapExtent(l.extents[last]).(type) {
	case *flatExtent:
		if lim > 0 && u.base+(exts[last].Sectors+grow)*disk.SectorSize > lim {
			return disk.Errorf(disk.ErrNoSpace, "vmdk: %s: growing it to %d bytes would pass the %d bytes a file holds on this filesystem", u.name, u.base+(exts[last].Sectors+grow)*disk.SectorSize, lim)
		}
		if err := u.f.Truncate(u.base + (exts[last].Sectors+grow)*disk.SectorSize); err != nil {
			return disk.Wrap(err, "vmdk: resize", u.name, -1)
		}
		u.n += grow * disk.SectorSize
		exts[last].Sectors += grow
		l.extents[last] = sized{extent: u, n: u.n}
	case *sparseExtent:
		if u.cowd != nil {
			return disk.Errorf(disk.ErrNotSupported, "vmdk: vmfsSparse deltas cannot grow")
		}
		if err := u.grow(u.h.Capacity + uint64(grow)); err != nil {
			return err
		}
		exts[last].Sectors += grow
		l.extents[last] = sized{extent: u, n: u.size_}
	case *seSparseExtent:
		if err := u.grow(u.h.capacity + uint64(grow)); err != nil {
			return err
		}
		exts[last].Sectors += grow
		l.extents[last] = sized{extent: u, n: u.size()}
	default:
		return disk.Errorf(disk.ErrNotSupported, "vmdk: this extent type cannot grow")
	}
	return nil
}

// maxSESparseExtents bounds the extents of an SEsparse link.
const maxSESparseExtents = 1024

// addSEExtents appends SEsparse extents to l until it holds left more
// sectors: one, or as many as the file size limit (d.opts.MaxFileSize)
// requires.
func (d *Disk) addSEExtents(l *link, exts []extentLine, left int64) ([]extentLine, error) {
	dir := filepath.Dir(l.path)
	base := strings.TrimSuffix(filepath.Base(l.path), filepath.Ext(l.path))
	caps, reserve, err := seSplit(uint64(left), uint64(max(d.opts.MaxFileSize, 0)))
	if err != nil {
		return exts, err
	}
	if len(exts)+len(caps) > maxSESparseExtents {
		return exts, disk.Errorf(disk.ErrNotSupported, "vmdk: growing by %d bytes would take more than %d SEsparse extents", left*disk.SectorSize, maxSESparseExtents)
	}
	first := len(exts) + 1
	for i, c := range caps {
		n := int64(c)
		name := fmt.Sprintf("%s-sesparse-%03d.vmdk", base, first+i)
		f, err := d.fsys.OpenFile(filepath.Join(dir, name), os.O_CREATE|os.O_EXCL|os.O_RDWR, 0o644)
		if err != nil {
			return exts, disk.Wrap(err, "vmdk: resize", name, -1)
		}
		err = createSESparse(f, c, reserve(c))
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err == nil {
			err = d.fsys.SyncDir(dir)
		}
		if err != nil {
			return exts, disk.Wrap(err, "vmdk: resize", name, -1)
		}
		el := extentLine{Access: "RW", Sectors: n, Type: "SESPARSE", File: name}
		e, err := d.openExtent(dir, el, false)
		if err != nil {
			return exts, err
		}
		l.extents = append(l.extents, e)
		l.starts = append(l.starts, 0) // recomputed by Resize
		exts = append(exts, el)
		left -= n
	}
	return exts, nil
}

// addExtents appends extents of at most splitSectors to a split link until
// it holds left more sectors, named like the existing ones.
func (d *Disk) addExtents(l *link, exts []extentLine, left, splitSectors int64) ([]extentLine, error) {
	dir := filepath.Dir(l.path)
	base := strings.TrimSuffix(filepath.Base(l.path), filepath.Ext(l.path))
	typ := exts[len(exts)-1].Type
	zeroed := false
	if se, ok := unwrapExtent(l.extents[len(l.extents)-1]).(*sparseExtent); ok {
		zeroed = se.h.Flags&flagZeroedGrainGTE != 0
	}
	for i := len(exts) + 1; left > 0; i++ {
		n := min(left, splitSectors)
		name := fmt.Sprintf("%s-f%03d.vmdk", base, i)
		if typ == "SPARSE" {
			name = fmt.Sprintf("%s-s%03d.vmdk", base, i)
		}
		f, err := d.fsys.OpenFile(filepath.Join(dir, name), os.O_CREATE|os.O_EXCL|os.O_RDWR, 0o644)
		if err != nil {
			return exts, disk.Wrap(err, "vmdk: resize", name, -1)
		}
		if typ == "SPARSE" {
			err = writeSparseFile(f, uint64(n), nil, zeroed) // closes f
		} else {
			err = f.Truncate(n * disk.SectorSize)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
		}
		if err != nil {
			return exts, disk.Wrap(err, "vmdk: resize", name, -1)
		}
		el := extentLine{Access: "RW", Sectors: n, Type: typ, File: name}
		e, err := d.openExtent(dir, el, false)
		if err != nil {
			return exts, err
		}
		l.extents = append(l.extents, e)
		l.starts = append(l.starts, 0) // recomputed by Resize
		exts = append(exts, el)
		left -= n
	}
	return exts, nil
}
