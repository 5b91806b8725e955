package vmdk

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/vdisk-project/vdisk/disk"
)

// Check verifies the image at path and, with o.Repair, repairs what it can
// (reference §11.3 and §11.4). It checks every link of the chain: the
// descriptor, each extent file, the hosted sparse metadata (header, grain
// directories, both grain table copies, grain references, overlaps, leaks,
// the unclean-shutdown mark) and the CID chain. It returns an error only
// when the image cannot be examined at all; findings are in the report.
//
// No repair removes or overwrites bytes that an extent of the descriptor
// references: FLAT extents placed inside a file that also holds a sparse
// header, metadata or grains (Haiku's vmdkimage writes a capacity-0 KDMV
// header whose descriptor names a FLAT extent in the same file), the footer
// of a header that says GD_AT_END, and the grains the grain tables name.
// Where the extents and the checker's idea of the file disagree, the
// problem is reported and left alone.
func Check(ctx context.Context, path string, o *CheckOptions) (*CheckReport, error) {
	var opts CheckOptions
	if o != nil {
		opts = *o
	}
	c := &checker{o: opts, fsys: opts.FS, r: &CheckReport{}}
	if c.fsys == nil {
		c.fsys = disk.OSFS{}
	}
	for link, depth := path, 0; link != "" && depth < maxChainLinks; depth++ {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		next, err := c.checkLink(ctx, link, depth == 0)
		if err != nil {
			return nil, err
		}
		link = next
	}
	return c.r, nil
}

type checker struct {
	o    CheckOptions
	fsys disk.FS
	r    *CheckReport
	// refs holds, for the link being checked, the bytes of each file that
	// the descriptor's FLAT and VMFS extents (and a descriptor container's
	// header) reference. Repairs never truncate or write inside them: when
	// the check and the extents disagree, the check is wrong.
	refs fileRefs
}

// truncate cuts the file at path to size bytes unless that would remove a
// byte some extent references; it reports whether it did.
func (c *checker) truncate(f disk.File, path string, size int64, own ...byteRange) (bool, error) {
	if size < refEnd(c.refs.of(path)) || size < refEnd(own) {
		return false, nil
	}
	if err := f.Truncate(size); err != nil {
		return false, disk.Wrap(err, "vmdk: repair", path, -1)
	}
	return true, nil
}

// writeMeta writes repaired metadata b at off of the file at path, unless
// the bytes belong to another extent; it reports whether it wrote.
func (c *checker) writeMeta(f disk.File, path string, b []byte, off int64) (bool, error) {
	if overlaps(c.refs.of(path), off, off+int64(len(b))) {
		c.problem(path, "error", "metadata at byte %d lies inside data an extent references; it was not rewritten", off)
		return false, nil
	}
	if _, err := f.WriteAt(b, off); err != nil {
		return false, disk.Wrap(err, "vmdk: repair", path, off)
	}
	return true, nil
}

func (c *checker) problem(path, severity, format string, args ...any) *Problem {
	c.r.Problems = append(c.r.Problems, Problem{Path: path, Severity: severity, Message: fmt.Sprintf(format, args...)})
	p := &c.r.Problems[len(c.r.Problems)-1]
	switch severity {
	case "error":
		c.r.Errors++
		c.r.Unrepaired++
	}
	return p
}

func (c *checker) repaired(p *Problem) {
	p.Repaired = true
	c.r.Repaired++
	if p.Severity == "error" {
		c.r.Unrepaired--
	}
}

// checkLink checks one link and returns the path of its parent, if any.
// Only the leaf (first) link is repaired.
func (c *checker) checkLink(ctx context.Context, path string, leaf bool) (string, error) {
	if !leaf {
		// The report's sizes are the named image's own, as qemu-img check
		// gives them for a delta: not the sum over its chain.
		tb, ab := c.r.TotalBytes, c.r.AllocatedBytes
		defer func() { c.r.TotalBytes, c.r.AllocatedBytes = tb, ab }()
	}
	repair := c.o.Repair != RepairNone && leaf
	f, err := c.fsys.OpenFile(path, openMode(!repair), 0)
	if err != nil {
		return "", disk.Wrap(err, "vmdk: check", path, -1)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return "", disk.Wrap(err, "vmdk: check", path, -1)
	}
	head := make([]byte, headerSize)
	n, _ := f.ReadAt(head, 0)
	var desc *descriptor
	if n >= 4 && binary.LittleEndian.Uint32(head) == sparseMagic {
		h, err := parseSparseHeader(head[:n])
		if err != nil {
			c.problem(path, "error", "%v", err)
			return "", nil
		}
		if desc, err = readEmbeddedDescriptor(f, h, st.Size()); err != nil {
			c.problem(path, "error", "embedded descriptor: %v", err)
		}
		if desc != nil && desc.junk > 0 {
			p := c.problem(path, "warning", "embedded descriptor: %d unparsable line(s) in the disk database, as a torn write leaves them; they are skipped", desc.junk)
			if repair {
				// Dropping lines only shortens the text: it always fits.
				if err := writeEmbeddedDescriptor(f, h, desc.bytes(), path); err != nil {
					return "", err
				}
				c.repaired(p)
			}
		}
		c.refs = flatRefs(filepath.Dir(path), desc)
		if h.Capacity == 0 && h.DescriptorOffset != 0 && desc == nil {
			// The descriptor of a container is unreadable: which bytes
			// its extents use is unknown, so none may be cut.
			c.refs.add(path, byteRange{0, st.Size()})
		}
		if h.Capacity == 0 && desc != nil {
			// A descriptor container (§2.7), as Haiku's vmdkimage
			// writes: the header holds no grains, so nothing in the file
			// is a leak; the extents its descriptor names are checked
			// instead, and its header and descriptor are kept.
			c.refs.add(path, byteRange{0, int64(h.DescriptorOffset+h.DescriptorSize) * disk.SectorSize})
			if len(desc.extents) == 0 {
				c.problem(path, "error", "descriptor lists no extents")
			}
			c.checkExtentFiles(ctx, path, desc, repair)
			return c.checkParent(path, desc)
		}
		if h.compressed() {
			err = c.checkStream(ctx, f, path, h, st.Size(), repair)
		} else {
			err = c.checkSparse(ctx, f, path, h, st.Size(), repair)
		}
		if err != nil {
			return "", err
		}
		if desc == nil {
			return "", nil
		}
	} else {
		if st.Size() > maxDescriptorBytes {
			return "", disk.Errorf(disk.ErrCorrupt, "vmdk: %s: not a VMDK image", path)
		}
		b := make([]byte, st.Size())
		if _, err := f.ReadAt(b, 0); err != nil && err != io.EOF {
			return "", disk.Wrap(err, "vmdk: check", path, 0)
		}
		if desc, err = parseDescriptor(b); err != nil {
			c.problem(path, "error", "descriptor: %v", err)
			return "", nil
		}
		if desc.junk > 0 {
			p := c.problem(path, "warning", "descriptor: %d unparsable line(s) in the disk database, as a torn write leaves them; they are skipped", desc.junk)
			if repair {
				if err := disk.WriteFileAtomic(c.fsys, path, desc.bytes(), st.Mode().Perm()); err != nil {
					return "", disk.Wrap(err, "vmdk: repair", path, -1)
				}
				c.repaired(p)
			}
		}
		c.refs = flatRefs(filepath.Dir(path), desc)
		c.checkExtentFiles(ctx, path, desc, repair)
	}
	return c.checkParent(path, desc)
}

func (c *checker) checkExtentFiles(ctx context.Context, path string, desc *descriptor, repair bool) {
	dir := filepath.Dir(path)
	for _, el := range desc.extents {
		if el.Type == "ZERO" {
			continue
		}
		name := el.File
		if !filepath.IsAbs(name) {
			name = filepath.Join(dir, name)
		}
		st, err := c.fsys.Stat(name)
		if err != nil {
			c.problem(name, "error", "extent file missing: %v", err)
			continue
		}
		c.r.TotalBytes += el.Sectors * disk.SectorSize
		switch el.Type {
		case "FLAT", "VMFS":
			need := (el.Offset + el.Sectors) * disk.SectorSize
			c.r.AllocatedBytes += min(st.Size(), need) - min(st.Size(), el.Offset*disk.SectorSize)
			if st.Size() < need {
				p := c.problem(name, "error", "flat file holds %d bytes, the extent needs %d", st.Size(), need)
				if repair && c.o.Repair == RepairAll {
					if f, err := c.fsys.OpenFile(name, os.O_RDWR, 0); err == nil {
						if f.Truncate(need) == nil && f.Sync() == nil {
							c.repaired(p)
						}
						f.Close()
					}
				}
			}
		case "SESPARSE":
			if err := c.checkSESparse(ctx, name, st.Size(), repair); err != nil {
				c.problem(name, "error", "%v", err)
			}
		case "VMFSSPARSE":
			f, err := c.fsys.OpenFile(name, os.O_RDONLY, 0)
			if err != nil {
				c.problem(name, "error", "cannot open extent: %v", err)
				continue
			}
			e, err := openCOWD(f, name, st.Size(), true)
			if err != nil {
				c.problem(name, "error", "%v", err)
				f.Close()
				continue
			}
			if err := c.walkDelta(ctx, name, e); err != nil {
				c.problem(name, "error", "%v", err)
			}
			e.close()
		case "SPARSE":
			f, err := c.fsys.OpenFile(name, openMode(!repair), 0)
			if err != nil {
				c.problem(name, "error", "cannot open extent: %v", err)
				continue
			}
			head := make([]byte, headerSize)
			if _, err := f.ReadAt(head, 0); err != nil {
				c.problem(name, "error", "cannot read sparse header: %v", err)
				f.Close()
				continue
			}
			h, err := parseSparseHeader(head)
			if err != nil {
				c.problem(name, "error", "%v", err)
				f.Close()
				continue
			}
			if int64(h.Capacity) != el.Sectors {
				c.problem(name, "error", "extent capacity %d sectors differs from the descriptor's %d", h.Capacity, el.Sectors)
			}
			fst, _ := f.Stat()
			if h.Capacity == 0 && h.DescriptorOffset != 0 {
				// A descriptor container named as a sparse extent: its
				// own descriptor may place data anywhere in the file.
				c.refs.add(name, byteRange{0, fst.Size()})
			}
			if h.compressed() {
				err = c.checkStream(ctx, f, name, h, fst.Size(), repair)
			} else {
				err = c.checkSparse(ctx, f, name, h, fst.Size(), repair)
			}
			if err != nil {
				c.problem(name, "error", "%v", err)
			}
			f.Close()
		}
	}
}

// checkParent verifies that the parent hint resolves and that the CIDs
// agree, and returns the parent's path.
func (c *checker) checkParent(path string, desc *descriptor) (string, error) {
	hint := desc.get("parentFileNameHint")
	if hint == "" {
		return "", nil
	}
	ppath, err := resolveParent(c.fsys, path, hint)
	if err != nil {
		c.problem(path, "error", "parent %q not found", hint)
		return "", nil
	}
	pcid, err := desc.hexValue("parentCID")
	if err != nil {
		c.problem(path, "error", "%v", err)
		return ppath, nil
	}
	pd := peekDescriptor(c.fsys, ppath)
	if pd == nil {
		c.problem(ppath, "error", "cannot read the parent's descriptor")
		return "", nil
	}
	if cid, err := pd.hexValue("CID"); err == nil && cid != pcid && !c.o.IgnoreCID {
		c.problem(path, "error", "parentCID %08x does not match the parent's CID %08x: the parent was modified after the child was created", pcid, cid)
	}
	return ppath, nil
}

// peekDescriptor reads the descriptor of a descriptor file or a monolithic
// sparse file, or returns nil.
func peekDescriptor(fsys disk.FS, name string) *descriptor {
	f, err := fsys.OpenFile(name, os.O_RDONLY, 0)
	if err != nil {
		return nil
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil
	}
	head := make([]byte, headerSize)
	n, _ := f.ReadAt(head, 0)
	if n >= 4 && binary.LittleEndian.Uint32(head) == sparseMagic {
		h, err := parseSparseHeader(head[:n])
		if err != nil {
			return nil
		}
		d, _ := readEmbeddedDescriptor(f, h, st.Size())
		return d
	}
	if st.Size() > maxDescriptorBytes {
		return nil
	}
	b := make([]byte, st.Size())
	f.ReadAt(b, 0)
	d, _ := parseDescriptor(b)
	return d
}

// checkSparse checks a hosted sparse extent. With repair it writes fixes:
// the valid grain table copy over a bad one, out-of-range entries dropped
// (their data is lost and counted), leaked grains at the end truncated, and
// the unclean-shutdown mark cleared once the extent is consistent.
//
// A header whose gdOffset is GD_AT_END is replaced by its footer, whose
// three sectors at the end of the file count as metadata. Bytes that other
// extents reference in the same file (c.refs) are never leaks, and no
// repair writes or truncates inside them.
func (c *checker) checkSparse(ctx context.Context, f disk.File, path string, h *sparseHeader, fileSize int64, repair bool) error {
	head := h
	var footer []byteRange // the footer's sectors, when there is one
	if h.GDOffset == gdAtEnd {
		ft, err := resolveFooter(f, h, fileSize)
		if err != nil {
			c.problem(path, "error", "%v", err)
			return nil
		}
		if ft.compressed() {
			c.problem(path, "error", "the footer says compressed, the header does not")
			return nil
		}
		h = ft
		footer = []byteRange{{fileSize - footerSectors*disk.SectorSize, fileSize}}
	}
	if err := h.validate(fileSize); err != nil {
		c.problem(path, "error", "%v", err)
		return nil
	}
	refs := c.refs.of(path)
	grain := uint64(h.GrainSize)
	fileSectors := uint64(fileSize) / disk.SectorSize
	gdN := int(h.numGDEntries())
	gtSectors := divRoundUp(uint64(h.NumGTEsPerGT)*4, disk.SectorSize)
	c.r.TotalBytes += int64(h.Capacity) * disk.SectorSize
	readDir := func(sector uint64) []uint32 {
		b := make([]byte, gdN*4)
		if _, err := f.ReadAt(b, int64(sector)*disk.SectorSize); err != nil {
			c.problem(path, "error", "cannot read grain directory at sector %d: %v", sector, err)
			return nil
		}
		d := make([]uint32, gdN)
		for i := range d {
			d[i] = binary.LittleEndian.Uint32(b[i*4:])
		}
		return d
	}
	gd := readDir(h.GDOffset)
	if gd == nil {
		return nil
	}
	var rgd []uint32
	if h.Flags&flagRedundantGD != 0 {
		rgd = readDir(h.RGDOffset)
	}
	// Metadata areas that grains must not overlap: everything before
	// overHead, plus (for robustness) every table's own sectors.
	overHead := h.OverHead
	validGT := func(sec uint32) bool {
		return sec != 0 && uint64(sec)+gtSectors <= fileSectors && uint64(sec) > h.DescriptorOffset+h.DescriptorSize
	}
	slots := (fileSectors + grain - 1) / grain // grain slots in the file
	if slots > 1<<32 {
		slots = 1 << 32
	}
	used := make([]uint64, (slots+63)/64)
	// Metadata placed after the first grain (by a grow) occupies grain
	// slots too.
	gdSectors := divRoundUp(uint64(gdN)*4, disk.SectorSize)
	markMeta := func(sec, n uint64) {
		for s := sec; s < sec+n; s++ {
			if s >= overHead {
				slot := s / grain
				used[slot/64] |= 1 << (slot % 64)
			}
		}
	}
	markMeta(h.GDOffset, gdSectors)
	grainBytes := int64(grain) * disk.SectorSize
	// Bytes other extents reference, and the footer, fill grain slots too.
	for _, r := range append(append([]byteRange(nil), refs...), footer...) {
		lo := max(uint64(r.off/grainBytes), divRoundUp(overHead, grain))
		for s := lo; s < slots && int64(s)*grainBytes < r.end; s++ {
			used[s/64] |= 1 << (s % 64)
		}
	}
	if rgd != nil {
		markMeta(h.RGDOffset, gdSectors)
	}
	for i := range gdN {
		if validGT(gd[i]) {
			markMeta(uint64(gd[i]), gtSectors)
		}
		if rgd != nil && validGT(rgd[i]) {
			markMeta(uint64(rgd[i]), gtSectors)
		}
	}

	gtBytes := int64(h.NumGTEsPerGT) * 4
	decode := func(b []byte) []uint32 {
		t := make([]uint32, h.NumGTEsPerGT)
		for i := range t {
			t[i] = binary.LittleEndian.Uint32(b[i*4:])
		}
		return t
	}
	encode := func(t []uint32) []byte {
		b := make([]byte, len(t)*4)
		for i, v := range t {
			binary.LittleEndian.PutUint32(b[i*4:], v)
		}
		return b
	}
	zeroedOK := h.Flags&flagZeroedGrainGTE != 0
	badEntry := func(v uint32) string {
		switch {
		case v == 1 && !zeroedOK:
			return "is 1 (zeroed grain) but the zeroed-grain flag is not set"
		case v > 1 && uint64(v) < overHead:
			return fmt.Sprintf("points into metadata (sector %d)", v)
		case v > 1 && uint64(v) >= fileSectors:
			return fmt.Sprintf("points past end of file (sector %d)", v)
		case v > 1 && uint64(v)%grain != 0 && uint64(v)%grain != overHead%grain:
			return fmt.Sprintf("is not grain-aligned (sector %d)", v)
		}
		return ""
	}
	for i := range gdN {
		if i%256 == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		if !validGT(gd[i]) {
			if gd[i] != 0 || rgd == nil {
				p := c.problem(path, "error", "grain directory entry %d points to sector %d, outside the metadata area", i, gd[i])
				if rgd != nil && validGT(rgd[i]) && repair {
					gd[i] = rgd[i]
					c.repaired(p)
				}
			}
			if !validGT(gd[i]) {
				continue
			}
		}
		b := make([]byte, gtBytes)
		if _, err := f.ReadAt(b, int64(gd[i])*disk.SectorSize); err != nil {
			c.problem(path, "error", "cannot read grain table %d: %v", i, err)
			continue
		}
		t := decode(b)
		var rt []uint32
		if rgd != nil {
			if !validGT(rgd[i]) {
				p := c.problem(path, "error", "redundant grain directory entry %d points to sector %d, outside the metadata area", i, rgd[i])
				if repair && c.o.Repair == RepairAll {
					p.Message += "; the redundant directory is left as is"
				}
			} else {
				rb := make([]byte, gtBytes)
				if _, err := f.ReadAt(rb, int64(rgd[i])*disk.SectorSize); err == nil && !bytes.Equal(b, rb) {
					rt = decode(rb)
				}
			}
		}
		changed := false
		for j, v := range t {
			if rt != nil && rt[j] != v {
				// The copies disagree: keep the one that is valid, the
				// primary when both are (it is what readers use).
				p := c.problem(path, "error", "grain table %d entry %d: primary %d and redundant %d differ", i, j, v, rt[j])
				if badEntry(v) != "" && badEntry(rt[j]) == "" {
					t[j], v = rt[j], rt[j]
					changed = true
				}
				if repair && c.o.Repair == RepairAll {
					c.repaired(p)
					changed = true
				}
			}
			if why := badEntry(v); why != "" {
				p := c.problem(path, "error", "grain table %d entry %d %s", i, j, why)
				if repair && c.o.Repair == RepairAll {
					t[j] = 0
					changed = true
					if v > 1 {
						c.r.LostBytes += int64(grain) * disk.SectorSize
					}
					c.repaired(p)
				}
				continue
			}
			if v > 1 && overlaps(refs, int64(v)*disk.SectorSize, int64(v)*disk.SectorSize+grainBytes) {
				// Two extents claim the same bytes; which one is right
				// cannot be known, so nothing is changed.
				c.problem(path, "error", "grain table %d entry %d: grain at sector %d lies inside data another extent references", i, j, v)
				continue
			}
			if v > 1 {
				slot := uint64(v) / grain
				if used[slot/64]&(1<<(slot%64)) != 0 {
					p := c.problem(path, "error", "grain table %d entry %d: grain at sector %d is referenced twice", i, j, v)
					if repair && c.o.Repair == RepairAll {
						t[j] = 0
						changed = true
						c.r.LostBytes += int64(grain) * disk.SectorSize
						c.repaired(p)
					}
					continue
				}
				used[slot/64] |= 1 << (slot % 64)
				c.r.AllocatedBytes += int64(grain) * disk.SectorSize
			}
			// Entries past the capacity in the last table must be zero.
			if v != 0 && (uint64(i)*uint64(h.NumGTEsPerGT)+uint64(j))*grain >= h.Capacity {
				p := c.problem(path, "error", "grain table %d entry %d lies past the disk's capacity", i, j)
				if repair && c.o.Repair == RepairAll {
					t[j] = 0
					changed = true
					c.repaired(p)
				}
			}
		}
		if changed || (rt != nil && repair && c.o.Repair == RepairAll) {
			nb := encode(t)
			for _, dir := range [][]uint32{gd, rgd} {
				if dir != nil && validGT(dir[i]) {
					if _, err := c.writeMeta(f, path, nb, int64(dir[i])*disk.SectorSize); err != nil {
						return err
					}
				}
			}
		}
	}
	if repair {
		// Write back repaired directories.
		for _, x := range []struct {
			dir []uint32
			off uint64
		}{{gd, h.GDOffset}, {rgd, h.RGDOffset}} {
			if x.dir == nil {
				continue
			}
			if _, err := c.writeMeta(f, path, encode(x.dir), int64(x.off)*disk.SectorSize); err != nil {
				return err
			}
		}
	}
	// Leaks: grain slots past the metadata that nothing references.
	first := divRoundUp(overHead, grain)
	lastUsed := first
	var leaks []uint64
	for s := first; s < slots; s++ {
		if used[s/64]&(1<<(s%64)) != 0 {
			lastUsed = s + 1
		} else {
			leaks = append(leaks, s)
		}
	}
	if len(leaks) > 0 {
		c.r.Leaks += len(leaks)
		c.r.LeakedBytes += int64(len(leaks)) * int64(grain) * disk.SectorSize
		p := c.problem(path, "leak", "%d grains (%d bytes) are allocated but unreferenced", len(leaks), int64(len(leaks))*int64(grain)*disk.SectorSize)
		if repair {
			// Leaked grains at the end of the file are truncated away;
			// others need compact.
			end := int64(max(lastUsed*grain, overHead)) * disk.SectorSize
			if end < fileSize {
				cut, err := c.truncate(f, path, end, footer...)
				if err != nil {
					return err
				}
				trailing := 0
				for _, s := range leaks {
					if s >= lastUsed {
						trailing++
					}
				}
				switch {
				case !cut:
					p.Message += "; not truncated: extents reference bytes after them"
				case trailing == len(leaks):
					c.repaired(p)
				default:
					p.Message += fmt.Sprintf("; %d at the end were truncated, run 'vdisk compact' for the rest", trailing)
				}
			}
		}
	} else if tail := fileSize % grainBytes; tail != 0 && uint64(fileSize) > overHead*disk.SectorSize && footer == nil && refEnd(refs) < fileSize {
		c.problem(path, "warning", "file ends with %d bytes of a partial grain", tail)
	}
	if head.UncleanShutdown || h.UncleanShutdown {
		p := c.problem(path, "warning", "the extent was not closed cleanly (uncleanShutdown is set)")
		if repair && c.r.Unrepaired == 0 {
			// Both copies of the header, when there is a footer.
			copies, offs := []*sparseHeader{head}, []int64{0}
			if footer != nil {
				copies, offs = append(copies, h), append(offs, fileSize-2*disk.SectorSize)
			}
			done := true
			for i, x := range copies {
				nh := *x
				nh.UncleanShutdown = false
				ok, err := c.writeMeta(f, path, nh.marshal(), offs[i])
				if err != nil {
					return err
				}
				done = done && ok
			}
			if done {
				c.repaired(p)
			}
		}
	}
	if repair {
		if err := f.Sync(); err != nil {
			return disk.Wrap(err, "vmdk: repair", path, -1)
		}
	}
	return nil
}

// checkStream checks a streamOptimized extent: the footer, the grain
// directory and tables, and every grain (its marker's LBA, its size, that
// it inflates to a whole grain). With RepairAll it rebuilds a stream whose
// footer or directory is missing or damaged from a scan of its markers: the
// torn last grain is cut off, then grain tables, directory, footer and
// end-of-stream marker are written after the last complete grain.
func (c *checker) checkStream(ctx context.Context, f disk.File, path string, h *sparseHeader, size int64, repair bool) error {
	c.r.TotalBytes += int64(h.Capacity) * disk.SectorSize
	if err := h.validate(size); err != nil {
		c.problem(path, "error", "%v", err)
		return nil
	}
	ext, err := openStream(f, path, h, size, true, false)
	if err != nil {
		p := c.problem(path, "error", "%v", err)
		if repair && c.o.Repair == RepairAll {
			lost, done, rerr := rebuildStream(f, path, h, size, refEnd(c.refs.of(path)))
			if rerr != nil {
				return rerr
			}
			if !done {
				p.Message += "; not rebuilt: extents reference bytes the rebuild would cut"
				return nil
			}
			c.r.LostBytes += lost
			c.repaired(p)
		}
		return nil
	}
	s := ext.(*streamExtent)
	seen := make(map[uint32]bool)
	bad := 0
	for off := int64(0); off < s.size_; off += s.grain {
		if off%(256*s.grain) == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		v, err := s.gteOf(off)
		if err != nil {
			c.problem(path, "error", "%v", err)
			bad++
			off = (off/s.gtCov+1)*s.gtCov - s.grain
			continue
		}
		if v <= 1 {
			continue
		}
		if seen[v] {
			c.problem(path, "error", "grain at sector %d is referenced twice", v)
			bad++
			continue
		}
		seen[v] = true
		if _, err := s.inflateGrain(off/s.grain, v); err != nil {
			c.problem(path, "error", "%v", err)
			bad++
			continue
		}
		c.r.AllocatedBytes += s.grain
	}
	if s.markers && h.GDOffset == gdAtEnd {
		var tail []byte = make([]byte, disk.SectorSize)
		if _, err := f.ReadAt(tail, size-disk.SectorSize); err != nil || !disk.IsZero(tail) {
			c.problem(path, "error", "the end-of-stream marker is missing")
			bad++
		}
	}
	if bad > 0 && repair && c.o.Repair == RepairAll && s.markers {
		lost, done, err := rebuildStream(f, path, h, size, refEnd(c.refs.of(path)))
		if err != nil {
			return err
		}
		if !done {
			c.problem(path, "error", "the stream was not rebuilt: extents reference bytes the rebuild would cut")
			return nil
		}
		c.r.LostBytes += lost
		for i := len(c.r.Problems) - bad; i < len(c.r.Problems); i++ {
			c.repaired(&c.r.Problems[i])
		}
	}
	return nil
}

// rebuildStream rewrites the metadata of a stream from a marker scan and
// returns the bytes of disk content lost (grains that were torn). It does
// nothing and reports false when it would cut the file below keep bytes
// (data other extents reference).
func rebuildStream(f disk.File, path string, h *sparseHeader, size, keep int64) (int64, bool, error) {
	if !h.markers() {
		return 0, false, disk.Errorf(disk.ErrNotSupported, "vmdk: %s: a stream without markers cannot be rebuilt", path)
	}
	var end uint64
	grains, err := scanMarkers(f, h, size, func(sector, lba uint64, n uint32, typ uint32) error {
		if n != 0 {
			end = sector + divRoundUp(12+uint64(n), disk.SectorSize)
		}
		return nil
	})
	if err != nil {
		return 0, false, err
	}
	// Keep only grains that inflate; the last one may be torn.
	probe := &streamExtent{markers: true, cache: map[int64][]byte{}}
	probe.sparseExtent = &sparseExtent{f: f, name: path, h: h, ro: true, size_: int64(h.Capacity) * disk.SectorSize,
		grain: h.grainBytes(), gtCov: h.gtCoverage(), gtLen: int(h.NumGTEsPerGT), fileLen: size}
	gt := make(map[int64]uint32, len(grains))
	var lost int64
	for idx, sec := range grains {
		if _, err := probe.inflateGrain(int64(idx), sec); err != nil {
			lost += h.grainBytes()
			continue
		}
		gt[int64(idx)] = sec
	}
	if end == 0 {
		end = max(h.OverHead, 1+h.DescriptorSize)
	}
	pos := int64(end) * disk.SectorSize
	if pos < keep {
		return 0, false, nil
	}
	if err := f.Truncate(pos); err != nil {
		return 0, false, disk.Wrap(err, "vmdk: repair", path, -1)
	}
	nh := *h
	nh.GDOffset = gdAtEnd
	nh.Flags &^= flagRedundantGD
	nh.RGDOffset = 0
	if err := writeStreamTail(f, path, nh, gt, pos); err != nil {
		return 0, false, err
	}
	if _, err := f.WriteAt(nh.marshal(), 0); err != nil {
		return 0, false, disk.Wrap(err, "vmdk: repair", path, 0)
	}
	return lost, true, f.Sync()
}

// walkDelta reads every grain table of a delta extent, so that entries
// pointing outside the file or of unknown types are reported, and counts
// the allocated bytes.
func (c *checker) walkDelta(ctx context.Context, name string, e extent) error {
	if se, ok := e.(*sparseExtent); ok && se.cowd != nil && se.cowd.unclean {
		c.problem(name, "warning", "the delta was not closed cleanly (uncleanShutdown is set)")
	}
	for off, n := int64(0), e.size(); off < n; {
		if err := ctx.Err(); err != nil {
			return err
		}
		st, run, err := e.lookup(off, n-off)
		if err != nil {
			return err
		}
		if st == stateData {
			c.r.AllocatedBytes += run
		}
		off += run
	}
	return nil
}
