package vmdk

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/vdisk-project/vdisk/disk"
)

const (
	defaultGrainSectors = 128        // 64 KiB
	defaultSplitSize    = 2047 << 20 // VMware's split extent size
	embeddedDescSectors = 20         // what qemu and open-vmdk reserve
)

func (o *CreateOptions) fs() disk.FS {
	if o.FS == nil {
		return disk.OSFS{}
	}
	return o.FS
}

// validate fills defaults and checks the options.
func (o *CreateOptions) validate(size int64) error {
	if o.Subformat == "" {
		o.Subformat = MonolithicSparse
	}
	if o.Adapter == "" {
		o.Adapter = "ide"
	}
	if o.Adapter == "legacyESX" {
		return disk.Errorf(disk.ErrInvalid, "vmdk: adapter type legacyESX is refused for new disks; use lsilogic, buslogic, lsisas1068, pvscsi or ide")
	}
	if !slices.Contains(Adapters, o.Adapter) {
		return disk.Errorf(disk.ErrInvalid, "vmdk: unknown adapter type %q (want one of %s)", o.Adapter, strings.Join(Adapters, ", "))
	}
	if o.HWVersion == 0 {
		o.HWVersion = 4
	}
	if o.HWVersion < 3 || o.HWVersion > 99 {
		return disk.Errorf(disk.ErrInvalid, "vmdk: invalid hardware version %d", o.HWVersion)
	}
	if o.ToolsVersion == "" {
		o.ToolsVersion = "2147483647"
	}
	if o.SplitSize == 0 {
		o.SplitSize = defaultSplitSize
	}
	if o.SplitSize < 1<<20 || o.SplitSize%(defaultGrainSectors*disk.SectorSize) != 0 {
		return disk.Errorf(disk.ErrInvalid, "vmdk: split size %d must be a multiple of 64 KiB and at least 1 MiB", o.SplitSize)
	}
	if size <= 0 && o.Parent == "" {
		return disk.Errorf(disk.ErrInvalid, "vmdk: invalid size %d", size)
	}
	switch o.Subformat {
	case MonolithicSparse, TwoGbMaxExtentSparse:
	case MonolithicFlat, TwoGbMaxExtentFlat, VMFS, VMFSThin:
		if o.Parent != "" {
			return disk.Errorf(disk.ErrInvalid, "vmdk: flat image can't have backing file")
		}
		if o.ZeroedGrain {
			return disk.Errorf(disk.ErrInvalid, "vmdk: flat image can't enable zeroed grain")
		}
	case StreamOptimized:
		if o.Parent != "" {
			return disk.Errorf(disk.ErrInvalid, "vmdk: streamOptimized image can't have backing file")
		}
	case VMFSSparse:
		if o.Parent == "" {
			return disk.Errorf(disk.ErrInvalid, "vmdk: a vmfsSparse disk is a delta: it needs a parent")
		}
	case SESparse:
		if o.ZeroedGrain {
			return disk.Errorf(disk.ErrInvalid, "vmdk: seSparse images always have zero grain entries; zeroed_grain does not apply")
		}
	default:
		return disk.Errorf(disk.ErrInvalid, "vmdk: unknown subformat %q", o.Subformat)
	}
	return nil
}

// geometry computes the CHS geometry qemu writes for new disks (§2.6).
func geometry(size int64, adapter string) Geometry {
	heads := uint32(255)
	if adapter == "ide" {
		heads = 16
	}
	return Geometry{Cylinders: uint64(size) / (uint64(heads) * 63 * disk.SectorSize), Heads: heads, Sectors: 63}
}

func newUUID() string {
	var b [16]byte
	rand.Read(b[:])
	s := make([]string, 16)
	for i, x := range b {
		s[i] = fmt.Sprintf("%02x", x)
	}
	return strings.Join(s[:8], " ") + "-" + strings.Join(s[8:], " ")
}

// Create makes a new, empty disk of size bytes (rounded up to a sector) at
// path and opens it for writing. With o.Parent it makes a child of that disk
// instead (size 0 means the parent's size). Files are created exclusively:
// an existing file is never overwritten. A streamOptimized disk, which
// can only be filled, is written behind (see Disk.SetWriteBehind); other
// new disks are while Copy fills them, or after SetWriteBehind(true).
func Create(ctx context.Context, path string, size int64, o *CreateOptions) (*Disk, error) {
	var opts CreateOptions
	if o != nil {
		opts = *o
	}
	if err := opts.validate(size); err != nil {
		return nil, err
	}
	fsys := opts.fs()
	parentCID := uint32(0xffffffff)
	hint := ""
	if opts.Parent != "" {
		p, err := Open(ctx, opts.Parent, &OpenOptions{ReadOnly: true, IgnoreCID: opts.IgnoreCID, ForceShare: opts.ForceShare, FS: fsys})
		if err != nil {
			return nil, disk.Wrap(err, "vmdk: open parent", opts.Parent, -1)
		}
		parentCID = p.links[0].cid
		psize := p.Size()
		p.Close()
		if size != 0 && size != psize {
			return nil, disk.Errorf(disk.ErrInvalid, "vmdk: a child must have its parent's size (%d bytes)", psize)
		}
		size = psize
		hint = opts.Parent
		if rel, err := filepath.Rel(filepath.Dir(path), opts.Parent); err == nil && !filepath.IsAbs(opts.Parent) == !filepath.IsAbs(path) {
			hint = rel
		}
	}
	size = (size + disk.SectorSize - 1) / disk.SectorSize * disk.SectorSize
	sectors := uint64(size / disk.SectorSize)
	base := strings.TrimSuffix(filepath.Base(path), filepath.Ext(path))
	dir := filepath.Dir(path)
	g := geometry(size, opts.Adapter)
	ddb := [][2]string{
		{"ddb.virtualHWVersion", strconv.Itoa(opts.HWVersion)},
		{"ddb.geometry.cylinders", strconv.FormatUint(g.Cylinders, 10)},
		{"ddb.geometry.heads", strconv.Itoa(int(g.Heads))},
		{"ddb.geometry.sectors", strconv.Itoa(int(g.Sectors))},
		{"ddb.adapterType", opts.Adapter},
		{"ddb.toolsVersion", opts.ToolsVersion},
		{"ddb.uuid", newUUID()},
	}
	cid := newCID()
	var created []string
	fail := func(err error) (*Disk, error) {
		for _, name := range created {
			fsys.Remove(name)
		}
		return nil, err
	}
	newFile := func(name string) (disk.File, error) {
		f, err := fsys.OpenFile(name, os.O_CREATE|os.O_EXCL|os.O_RDWR, 0o644)
		if err != nil {
			return nil, disk.Wrap(err, "vmdk: create", name, -1)
		}
		created = append(created, name)
		return f, nil
	}
	if err := checkFileLimit(opts, size); err != nil {
		return nil, err
	}
	switch opts.Subformat {
	case MonolithicSparse, StreamOptimized:
		if opts.Subformat == MonolithicSparse && sectors >= maxExtentSectors {
			return nil, disk.Errorf(disk.ErrNotSupported,
				"vmdk: a monolithicSparse disk must be smaller than 2 TiB; use twoGbMaxExtentSparse, monolithicFlat, vmfsThin or seSparse")
		}
		ext := []extentLine{{Access: "RW", Sectors: int64(sectors), Type: "SPARSE", File: filepath.Base(path)}}
		desc := newDescriptorText(cid, parentCID, string(opts.Subformat), hint, ext, ddb)
		f, err := newFile(path)
		if err != nil {
			return fail(err)
		}
		if opts.Subformat == StreamOptimized {
			d := &Disk{size: size, fsys: fsys, rotated: true}
			d.wb.Set(true) // a stream is only ever filled
			w, err := newStreamWriter(d.wb.File(f), path, size, desc, opts.Workers)
			if err != nil {
				f.Close()
				return fail(err)
			}
			pd, _ := parseDescriptor(desc)
			l := &link{path: path, desc: pd, selfContained: true}
			if err := l.initMany([]extent{w}); err != nil {
				w.close()
				return fail(err)
			}
			d.links = []*link{l}
			return d, nil
		}
		if err := writeSparseFile(f, sectors, desc, opts.ZeroedGrain); err != nil {
			return fail(disk.Wrap(err, "vmdk: create", path, -1))
		}
	case TwoGbMaxExtentSparse, TwoGbMaxExtentFlat:
		var ext []extentLine
		for i, left := 1, int64(sectors); left > 0; i++ {
			if err := ctx.Err(); err != nil {
				return fail(err) // an interrupt between extents leaves nothing
			}
			n := min(left, opts.SplitSize/disk.SectorSize)
			left -= n
			if opts.Subformat == TwoGbMaxExtentFlat {
				name := fmt.Sprintf("%s-f%03d.vmdk", base, i)
				f, err := newFile(filepath.Join(dir, name))
				if err != nil {
					return fail(err)
				}
				err = f.Truncate(n * disk.SectorSize)
				if cerr := f.Close(); err == nil {
					err = cerr
				}
				if err != nil {
					return fail(disk.Wrap(err, "vmdk: create", name, -1))
				}
				ext = append(ext, extentLine{Access: "RW", Sectors: n, Type: "FLAT", File: name})
				continue
			}
			name := fmt.Sprintf("%s-s%03d.vmdk", base, i)
			f, err := newFile(filepath.Join(dir, name))
			if err != nil {
				return fail(err)
			}
			if err := writeSparseFile(f, uint64(n), nil, opts.ZeroedGrain); err != nil {
				return fail(disk.Wrap(err, "vmdk: create", name, -1))
			}
			ext = append(ext, extentLine{Access: "RW", Sectors: n, Type: "SPARSE", File: name})
		}
		if err := writeNewFile(fsys, path, newDescriptorText(cid, parentCID, string(opts.Subformat), hint, ext, ddb), &created); err != nil {
			return fail(err)
		}
	case VMFSSparse:
		name := base + "-delta.vmdk"
		f, err := newFile(filepath.Join(dir, name))
		if err != nil {
			return fail(err)
		}
		err = createCOWD(f, size, 1)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fail(disk.Wrap(err, "vmdk: create", name, -1))
		}
		ext := []extentLine{{Access: "RW", Sectors: int64(sectors), Type: "VMFSSPARSE", File: name}}
		if err := writeNewFile(fsys, path, newDescriptorText(cid, parentCID, string(VMFSSparse), hint, ext, ddb), &created); err != nil {
			return fail(err)
		}
	case SESparse:
		// As ESXi names and describes them (§5.5): NAME.vmdk and
		// NAME-sesparse.vmdk, createType "seSparse", ddb.grain = "8".
		// A disk whose one file could outgrow the filesystem's limit is
		// split into several SESPARSE extents (qemu reads them).
		caps, reserve, err := seSplit(sectors, uint64(max(opts.MaxFileSize, 0)))
		if err != nil {
			return fail(err)
		}
		var ext []extentLine
		for i, c := range caps {
			name := base + "-sesparse.vmdk"
			if len(caps) > 1 {
				name = fmt.Sprintf("%s-sesparse-%03d.vmdk", base, i+1)
			}
			f, err := newFile(filepath.Join(dir, name))
			if err != nil {
				return fail(err)
			}
			err = createSESparse(f, c, reserve(c))
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return fail(disk.Wrap(err, "vmdk: create", name, -1))
			}
			ext = append(ext, extentLine{Access: "RW", Sectors: int64(c), Type: "SESPARSE", File: name})
		}
		ddb = append(ddb, [2]string{"ddb.grain", "8"})
		if err := writeNewFile(fsys, path, newDescriptorText(cid, parentCID, string(SESparse), hint, ext, ddb), &created); err != nil {
			return fail(err)
		}
	case MonolithicFlat, VMFS, VMFSThin:
		name := base + "-flat.vmdk"
		typ, ct := "FLAT", string(MonolithicFlat)
		if opts.Subformat != MonolithicFlat {
			typ, ct = "VMFS", string(VMFS)
		}
		if opts.Subformat == VMFSThin {
			ddb = append(ddb, [2]string{"ddb.thinProvisioned", "1"})
		}
		f, err := newFile(filepath.Join(dir, name))
		if err != nil {
			return fail(err)
		}
		err = f.Truncate(size)
		if err == nil && opts.Subformat == VMFS {
			err = disk.Preallocate(f, size)
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fail(disk.Wrap(err, "vmdk: create", name, -1))
		}
		ext := []extentLine{{Access: "RW", Sectors: int64(sectors), Type: typ, File: name}}
		if err := writeNewFile(fsys, path, newDescriptorText(cid, parentCID, ct, hint, ext, ddb), &created); err != nil {
			return fail(err)
		}
	}
	// The new names are durable only once their directory is.
	if err := fsys.SyncDir(dir); err != nil {
		return fail(disk.Wrap(err, "vmdk: create: sync directory", dir, -1))
	}
	d, err := Open(ctx, path, &OpenOptions{ForceShare: opts.ForceShare, FS: fsys, MaxFileSize: opts.MaxFileSize})
	if err != nil {
		return fail(err)
	}
	return d, nil
}

// checkFileLimit refuses a disk one of whose files could grow past
// o.MaxFileSize, naming the limit, before any file is made.
func checkFileLimit(o CreateOptions, size int64) error {
	if o.MaxFileSize <= 0 {
		return nil
	}
	var biggest int64
	switch o.Subformat {
	case MonolithicFlat, VMFS, VMFSThin:
		biggest = size
	case MonolithicSparse, VMFSSparse:
		// Grains plus at most 1/128 of metadata (4-byte entries per grain
		// of at least 512 bytes) and the header area.
		biggest = size + size/128 + 1<<20
	case TwoGbMaxExtentSparse, TwoGbMaxExtentFlat:
		biggest = min(size, o.SplitSize) + min(size, o.SplitSize)/128 + 1<<20
	default:
		return nil // seSparse splits; streamOptimized is compressed
	}
	if biggest > o.MaxFileSize {
		return disk.Errorf(disk.ErrNoSpace, "vmdk: a %s disk of %d bytes needs a file of up to %d bytes, more than the %d bytes a file holds on this filesystem; use seSparse or twoGbMaxExtentSparse",
			o.Subformat, size, biggest, o.MaxFileSize)
	}
	return nil
}

func writeNewFile(fsys disk.FS, name string, b []byte, created *[]string) error {
	f, err := fsys.OpenFile(name, os.O_CREATE|os.O_EXCL|os.O_RDWR, 0o644)
	if err != nil {
		return disk.Wrap(err, "vmdk: create", name, -1)
	}
	*created = append(*created, name)
	_, err = f.WriteAt(b, 0)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return disk.Wrap(err, "vmdk: create", name, -1)
}

// writeSparseFile lays out a new hosted sparse extent of capacity sectors,
// with desc embedded when given, exactly as qemu does (§3.4): header,
// descriptor, redundant GD and GTs, GD and GTs, then grains. Grain tables
// are preallocated (as zeros, left as holes in the file).
func writeSparseFile(f disk.File, capacity uint64, desc []byte, zeroedGrain bool) error {
	descSectors := uint64(0)
	if desc != nil {
		descSectors = embeddedDescSectors
		if uint64(len(desc)) > descSectors*disk.SectorSize {
			return disk.Errorf(disk.ErrInvalid, "vmdk: descriptor of %d bytes too large to embed", len(desc))
		}
	}
	l := newSparseLayout(capacity, defaultGrainSectors, maxGTEsPerGT, descSectors)
	h := &sparseHeader{
		Version:      1,
		Flags:        flagNewlineDetector | flagRedundantGD,
		Capacity:     capacity,
		GrainSize:    defaultGrainSectors,
		NumGTEsPerGT: maxGTEsPerGT,
		RGDOffset:    l.rgdOffset,
		GDOffset:     l.gdOffset,
		OverHead:     l.overHead,
	}
	if desc != nil {
		h.DescriptorOffset, h.DescriptorSize = 1, descSectors
	}
	if zeroedGrain {
		h.Version = 2
		h.Flags |= flagZeroedGrainGTE
	}
	h.setNewlineChars()
	if err := f.Truncate(int64(l.overHead) * disk.SectorSize); err != nil {
		return err
	}
	if _, err := f.WriteAt(h.marshal(), 0); err != nil {
		return err
	}
	if desc != nil {
		if _, err := f.WriteAt(desc, disk.SectorSize); err != nil {
			return err
		}
	}
	for _, dirOff := range []uint64{l.rgdOffset, l.gdOffset} {
		b := make([]byte, l.gdSectors*disk.SectorSize)
		for i := range l.gdEntries {
			binary.LittleEndian.PutUint32(b[i*4:], uint32(dirOff+l.gdSectors+i*l.gtSectors))
		}
		if _, err := f.WriteAt(b, int64(dirOff)*disk.SectorSize); err != nil {
			return err
		}
	}
	err := f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}
