package vmdk

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"

	"github.com/vdisk-project/vdisk/disk"
)

// gtCacheBytes bounds the grain tables one open disk caches, whatever its
// size or number of extents.
const gtCacheBytes = 24 << 20

// maxChainLinks bounds a snapshot chain (VDDK: "too many levels of redo
// logs").
const maxChainLinks = 255

// link is one descriptor and its extents.
type link struct {
	path          string // the descriptor file, or the monolithic extent file
	desc          *descriptor
	embedded      *sparseExtent // the writable extent holding the descriptor, when embedded
	selfContained bool          // the descriptor lives inside the extent file
	// container is the header of a capacity-0 KDMV file that holds only
	// the descriptor (§2.7), which is rewritten in place there; nil for
	// other links.
	container  *sparseHeader
	extents    []extent
	starts     []int64 // virtual byte offset of each extent
	size       int64
	cid        uint32
	parentCID  uint32
	createType string
	unclean    bool
	// lockf is a descriptor file kept open to hold its image locks (a
	// descriptor is otherwise closed once parsed); nil when it is an
	// extent's file or locking is off.
	lockf disk.File
}

// Disk is an open VMDK disk: a chain of links, the first of which (the
// leaf) receives writes. It implements disk.Disk, disk.Extenter,
// disk.Zeroer, disk.Trimmer and disk.Resizer. ReadAt, WriteAt and Extents are safe for
// concurrent use; Resize, SetMetadata and Close must not race with I/O.
type Disk struct {
	links []*link
	size  int64
	ro    bool
	fsys  disk.FS
	opts  OpenOptions
	// budget bounds the grain tables cached by all sparse extents, and
	// seBudget those of all SEsparse extents.
	budget   *gtBudget
	seBudget *seBudget

	// wb writes the leaf's files behind (see disk.WriteBehind): on for a
	// disk being filled (Copy's destination, a new stream, a restore).
	wb disk.WriteBehind

	mu      sync.Mutex // CID rotation, metadata writes
	rotated bool
	closed  bool

	lockMu sync.Mutex    // guards locked
	locked []fs.FileInfo // the files this disk holds image locks on
}

func (o *OpenOptions) fs() disk.FS {
	if o == nil || o.FS == nil {
		return disk.OSFS{}
	}
	return o.FS
}

// Open opens the VMDK at path: a descriptor file, a monolithic sparse or
// streamOptimized file, or a single extent file. Parents named by
// parentFileNameHint are opened read-only (unless SingleLink), and each
// link's parentCID must match its parent's CID (unless IgnoreCID). Opening
// for writing a disk that another disk in its directory names as its parent
// is refused: that would corrupt the child.
func Open(ctx context.Context, path string, o *OpenOptions) (*Disk, error) {
	var opts OpenOptions
	if o != nil {
		opts = *o
	}
	if opts.Salvage {
		opts.ReadOnly = true
	}
	d := &Disk{ro: opts.ReadOnly, fsys: opts.fs(), opts: opts, budget: newGTBudget(gtCacheBytes),
		seBudget: &seBudget{max: seGTCache}}
	leaf, err := d.openLink(path, opts.ReadOnly)
	if err != nil {
		return nil, err
	}
	d.links = append(d.links, leaf)
	d.size = leaf.size
	for l := leaf; !opts.SingleLink; {
		hint := l.desc.get("parentFileNameHint")
		if hint == "" {
			break
		}
		if err := ctx.Err(); err != nil {
			d.closeLinks()
			return nil, err
		}
		if len(d.links) >= maxChainLinks {
			d.closeLinks()
			return nil, disk.Errorf(disk.ErrNotSupported, "vmdk: %s: chain longer than %d links", path, maxChainLinks)
		}
		ppath, err := resolveParent(d.fsys, l.path, hint)
		if err != nil {
			d.closeLinks()
			return nil, err
		}
		p, err := d.openLink(ppath, true)
		if err != nil {
			d.closeLinks()
			return nil, disk.Wrap(err, "vmdk: open parent", ppath, -1)
		}
		d.links = append(d.links, p)
		if l.parentCID != p.cid && !opts.IgnoreCID {
			d.closeLinks()
			return nil, disk.Errorf(disk.ErrCorrupt,
				"vmdk: %s: parent %s has been modified since the child was created (parentCID %08x, parent CID %08x); open with IgnoreCID to override",
				l.path, ppath, l.parentCID, p.cid)
		}
		l = p
	}
	if !d.ro {
		if len(d.links) == 1 && leaf.desc.get("parentFileNameHint") != "" {
			d.closeLinks()
			return nil, disk.Errorf(disk.ErrInvalid, "vmdk: %s: a single link of a chain can only be opened read-only", path)
		}
		if child := findChild(d.fsys, path); child != "" && !opts.AllowChildren {
			d.closeLinks()
			return nil, disk.Errorf(disk.ErrPermission, "vmdk: %s is the parent of %s; only the leaf of a chain can be written", path, child)
		}
	}
	return d, nil
}

// resolveParent finds the file a parentFileNameHint names: relative to the
// child's directory, absolute, or (for Windows and ESXi datastore paths that
// do not exist here) the base name in the child's directory.
func resolveParent(fsys disk.FS, child, hint string) (string, error) {
	dir := filepath.Dir(child)
	var tries []string
	norm := strings.ReplaceAll(hint, "\\", "/")
	if filepath.IsAbs(norm) {
		tries = append(tries, norm)
	} else if len(norm) < 2 || norm[1] != ':' {
		tries = append(tries, filepath.Join(dir, norm))
	}
	tries = append(tries, filepath.Join(dir, filepath.Base(norm)))
	for _, p := range tries {
		if _, err := fsys.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", disk.Errorf(disk.ErrNotFound, "vmdk: %s: parent %q not found", child, hint)
}

// findChild returns a VMDK in path's directory whose parent hint resolves to
// path, or "". Only the first KiB of descriptors is looked at.
func findChild(fsys disk.FS, path string) string {
	dir := filepath.Dir(path)
	entries, err := os.ReadDir(dir)
	if err != nil || len(entries) > 10000 {
		return ""
	}
	abs, _ := filepath.Abs(path)
	for _, e := range entries {
		name := filepath.Join(dir, e.Name())
		if e.IsDir() || !strings.HasSuffix(strings.ToLower(e.Name()), ".vmdk") || name == path {
			continue
		}
		hint := peekParentHint(fsys, name)
		if hint == "" {
			continue
		}
		p, err := resolveParent(fsys, name, hint)
		if err != nil {
			continue
		}
		if pa, _ := filepath.Abs(p); pa == abs {
			return name
		}
	}
	return ""
}

// peekParentHint reads the parent hint of a descriptor or monolithic sparse
// file cheaply, returning "" when there is none or on any error.
func peekParentHint(fsys disk.FS, name string) string {
	f, err := fsys.OpenFile(name, os.O_RDONLY, 0)
	if err != nil {
		return ""
	}
	defer f.Close()
	buf := make([]byte, 64<<10)
	n, _ := f.ReadAt(buf, 0)
	buf = buf[:n]
	if len(buf) >= headerSize && binary.LittleEndian.Uint32(buf) == sparseMagic {
		h, err := parseSparseHeader(buf)
		if err != nil || h.DescriptorOffset == 0 {
			return ""
		}
		start := int64(h.DescriptorOffset) * disk.SectorSize
		end := start + int64(h.DescriptorSize)*disk.SectorSize
		if start >= int64(len(buf)) {
			return ""
		}
		buf = buf[start:min(end, int64(len(buf)))]
	}
	d, err := parseDescriptor(buf)
	if err != nil {
		return ""
	}
	return d.get("parentFileNameHint")
}

func openMode(ro bool) int {
	if ro {
		return os.O_RDONLY
	}
	return os.O_RDWR
}

// openLink opens one link: its descriptor and every extent.
func (d *Disk) openLink(path string, ro bool) (l *link, err error) {
	f, err := d.fsys.OpenFile(path, openMode(ro), 0)
	if err != nil {
		return nil, disk.Wrap(err, "vmdk: open", path, -1)
	}
	keep := false
	defer func() {
		if !keep {
			f.Close()
		}
	}()
	if err := d.lock(f, path, ro, false); err != nil {
		return nil, err
	}
	if !ro {
		f = d.wb.File(f)
	}
	st, err := f.Stat()
	if err != nil {
		return nil, disk.Wrap(err, "vmdk: stat", path, -1)
	}
	head := make([]byte, headerSize)
	n, err := f.ReadAt(head, 0)
	if n < 4 {
		return nil, disk.Errorf(disk.ErrCorrupt, "vmdk: %s: file is too small to be an image", path)
	}
	l = &link{path: path}
	switch binary.LittleEndian.Uint32(head) {
	case sparseMagic:
		if n < headerSize {
			return nil, disk.Errorf(disk.ErrCorrupt, "vmdk: %s: sparse header truncated", path)
		}
		h, err := parseSparseHeader(head)
		if err != nil {
			return nil, disk.Wrap(err, "", path, -1)
		}
		desc, err := readEmbeddedDescriptor(f, h, st.Size())
		if err != nil {
			return nil, disk.Wrap(err, "vmdk: read descriptor", path, -1)
		}
		if desc == nil || h.Capacity != 0 {
			ext, err := d.openSparseFile(f, path, h, st.Size(), ro)
			if err != nil {
				return nil, err
			}
			keep = true
			if desc == nil {
				// A bare extent (for example one file of a split link).
				ct := string(MonolithicSparse)
				if h.compressed() {
					ct = string(StreamOptimized)
				}
				if h.Capacity == 0 {
					// Neither a disk nor a descriptor container.
					ext.close()
					return nil, disk.Errorf(disk.ErrCorrupt, "vmdk: %s: sparse extent of capacity 0 without a descriptor", path)
				}
				if desc, err = parseDescriptor(newDescriptorText(newCID(), 0xffffffff, ct, "",
					[]extentLine{{Access: "RW", Sectors: int64(h.Capacity), Type: "SPARSE", File: filepath.Base(path)}}, nil)); err != nil {
					ext.close()
					return nil, disk.Wrap(err, "", path, -1)
				}
			}
			l.desc = desc
			l.selfContained = true
			if se, ok := ext.(*sparseExtent); ok {
				l.embedded = se
				l.unclean = h.UncleanShutdown && !se.marked
			}
			if err := l.init(ext, st.Size()); err != nil {
				ext.close()
				return nil, err
			}
			return l, nil
		}
		// A capacity-0 KDMV file is only a descriptor container (§2.7).
		l.desc = desc
		l.container = h
	case cowdMagic:
		return nil, disk.Errorf(disk.ErrNotSupported, "vmdk: %s: vmfsSparse (COWD) extents must be opened through their descriptor", path)
	default:
		if st.Size() > maxDescriptorBytes {
			return nil, disk.Errorf(disk.ErrCorrupt, "vmdk: %s: not a VMDK (no sparse magic and too large for a descriptor)", path)
		}
		b := make([]byte, st.Size())
		if _, err := f.ReadAt(b, 0); err != nil && err != io.EOF {
			return nil, disk.Wrap(err, "vmdk: read descriptor", path, 0)
		}
		if l.desc, err = parseDescriptor(b); err != nil {
			return nil, disk.Wrap(err, "", path, -1)
		}
	}
	if err := d.openExtents(l, ro); err != nil {
		return nil, err
	}
	if !d.opts.ForceShare {
		l.lockf, keep = f, true // hold the descriptor's locks
	}
	return l, nil
}

// lock takes the image locks on a file the disk opened, unless the disk
// forces sharing. data marks a flat extent (guest data only). A file the
// disk already holds locks on (a descriptor container that also holds a
// flat extent, one file serving as two extents) is not locked again: its
// second open would conflict with the first. The first open's use stands.
func (d *Disk) lock(f disk.File, name string, ro, data bool) error {
	if d.opts.ForceShare {
		return nil
	}
	d.lockMu.Lock()
	defer d.lockMu.Unlock()
	st, err := f.Stat()
	if err == nil {
		for _, fi := range d.locked {
			if os.SameFile(fi, st) {
				return nil
			}
		}
	}
	if err := disk.LockImage(f, disk.ImageLock{Write: !ro, Data: data}); err != nil {
		return disk.Wrap(err, "vmdk: lock", name, -1)
	}
	if st != nil {
		d.locked = append(d.locked, st)
	}
	return nil
}

// readEmbeddedDescriptor returns the descriptor inside a sparse extent, or
// nil when there is none (or it is empty, as in qemu's split extents).
func readEmbeddedDescriptor(f disk.File, h *sparseHeader, fileSize int64) (*descriptor, error) {
	if h.DescriptorOffset == 0 || h.DescriptorSize == 0 {
		return nil, nil
	}
	if h.DescriptorSize > maxDescriptorSectors || int64(h.DescriptorOffset+h.DescriptorSize)*disk.SectorSize > fileSize {
		return nil, disk.Errorf(disk.ErrCorrupt, "vmdk: embedded descriptor at sector %d+%d is out of range", h.DescriptorOffset, h.DescriptorSize)
	}
	b := make([]byte, h.DescriptorSize*disk.SectorSize)
	if _, err := f.ReadAt(b, int64(h.DescriptorOffset)*disk.SectorSize); err != nil {
		return nil, err
	}
	if disk.IsZero(b) {
		return nil, nil
	}
	return parseDescriptor(b)
}

// openSparseFile opens a KDMV file as an extent: hosted sparse, or
// streamOptimized.
func (d *Disk) openSparseFile(f disk.File, path string, h *sparseHeader, size int64, ro bool) (extent, error) {
	if h.compressed() {
		e, err := openStream(f, path, h, size, ro, d.opts.Salvage)
		if se, ok := e.(*streamExtent); ok {
			se.sparseExtent.budget = d.budget
		}
		return e, err
	}
	e, err := openSparseExtent(f, path, h, size, ro)
	if err != nil {
		return nil, disk.Wrap(err, "", path, -1)
	}
	e.budget = d.budget
	if d.opts.Unbuffered {
		// Grain data goes through a second, O_DIRECT handle; metadata
		// stays buffered.
		if disk.ODirect == 0 {
			e.close()
			return nil, disk.Errorf(disk.ErrNotSupported, "vmdk: unbuffered I/O is not available on this system")
		}
		if e.df, err = d.fsys.OpenFile(path, openMode(ro)|disk.ODirect, 0); err != nil {
			e.close()
			return nil, disk.Wrap(err, "vmdk: open unbuffered", path, -1)
		}
	}
	return e, nil
}

// openExtents opens the extent files a text descriptor lists.
func (d *Disk) openExtents(l *link, ro bool) error {
	ct := l.desc.get("createType")
	if strings.EqualFold(ct, "vsanSparse") {
		return disk.Errorf(disk.ErrNotSupported, "vmdk: %s: vsanSparse disks are not documented and cannot be read; read them through the host that serves them", l.path)
	}
	if len(l.desc.extents) == 0 {
		return disk.Errorf(disk.ErrCorrupt, "vmdk: %s: descriptor lists no extents", l.path)
	}
	dir := filepath.Dir(l.path)
	var exts []extent
	fail := func(err error) error {
		for _, e := range exts {
			e.close()
		}
		return err
	}
	for _, el := range l.desc.extents {
		if strings.HasPrefix(strings.ToLower(el.File), "vsan:") {
			return fail(disk.Errorf(disk.ErrNotSupported, "vmdk: %s: vsanSparse extents cannot be read", l.path))
		}
		e, err := d.openExtent(dir, el, ro || el.Access != "RW")
		if err != nil {
			return fail(err)
		}
		if el.Access != "RW" {
			e = limitedExtent{extent: e, access: el.Access, name: el.File}
		}
		exts = append(exts, e)
	}
	if err := l.initMany(exts); err != nil {
		return fail(err)
	}
	return nil
}

func (d *Disk) openExtent(dir string, el extentLine, ro bool) (extent, error) {
	size := el.Sectors * disk.SectorSize
	if el.Type == "ZERO" {
		return zeroExtent{n: size}, nil
	}
	name := el.File
	if !filepath.IsAbs(name) {
		name = filepath.Join(dir, name)
	}
	switch el.Type {
	case "VMFSRDM", "VMFSRAW":
		return nil, disk.Errorf(disk.ErrNotSupported, "vmdk: %s: raw device mappings (%s) can only be read on the ESXi host", name, el.Type)
	}
	f, err := d.fsys.OpenFile(name, openMode(ro), 0)
	if err != nil {
		return nil, disk.Wrap(err, "vmdk: open extent", name, -1)
	}
	flat := el.Type == "FLAT" || el.Type == "VMFS"
	if !flat || !d.opts.Unbuffered { // an unbuffered flat extent is locked once reopened
		if err := d.lock(f, name, ro, flat); err != nil {
			f.Close()
			return nil, err
		}
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, disk.Wrap(err, "vmdk: stat", name, -1)
	}
	if !ro && !(flat && d.opts.Unbuffered) {
		f = d.wb.File(f) // an unbuffered flat extent leaves no dirty pages
	}
	var e extent
	switch el.Type {
	case "FLAT", "VMFS":
		if d.opts.Unbuffered {
			f.Close()
			if disk.ODirect == 0 {
				return nil, disk.Errorf(disk.ErrNotSupported, "vmdk: unbuffered I/O is not available on this system")
			}
			if f, err = d.fsys.OpenFile(name, openMode(ro)|disk.ODirect, 0); err != nil {
				return nil, disk.Wrap(err, "vmdk: open unbuffered", name, -1)
			}
			if err := d.lock(f, name, ro, true); err != nil {
				f.Close()
				return nil, err
			}
		}
		e, err = &flatExtent{f: f, name: name, base: el.Offset * disk.SectorSize, n: size, ro: ro}, nil
	case "SPARSE":
		head := make([]byte, headerSize)
		if _, err := f.ReadAt(head, 0); err != nil {
			f.Close()
			return nil, disk.Errorf(disk.ErrCorrupt, "vmdk: %s: cannot read sparse header: %w", name, err)
		}
		h, perr := parseSparseHeader(head)
		if perr != nil {
			f.Close()
			return nil, disk.Wrap(perr, "", name, -1)
		}
		e, err = d.openSparseFile(f, name, h, st.Size(), ro)
	case "VMFSSPARSE":
		e, err = openCOWD(f, name, st.Size(), ro)
		if se, ok := e.(*sparseExtent); ok {
			se.budget = d.budget
		}
	case "SESPARSE":
		var se *seSparseExtent
		if se, err = openSESparseWarm(f, name, st.Size(), ro, d.seBudget, d.opts.Warm.seExtent(name)); err == nil {
			e = se
		}
	default:
		err = disk.Errorf(disk.ErrNotSupported, "vmdk: unsupported extent type %s", el.Type)
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	if e.size() < size && el.Type != "FLAT" && el.Type != "VMFS" {
		e.close()
		return nil, disk.Errorf(disk.ErrCorrupt, "vmdk: %s: extent holds %d bytes but the descriptor says %d", name, e.size(), size)
	}
	return sized{extent: e, n: size}, nil
}

// sized presents an extent with the size its descriptor line gives.
type sized struct {
	extent
	n int64
}

func (s sized) size() int64 { return s.n }

func (l *link) init(e extent, fileSize int64) error {
	if len(l.desc.extents) > 1 {
		return disk.Errorf(disk.ErrCorrupt, "vmdk: %s: embedded descriptor lists %d extents", l.path, len(l.desc.extents))
	}
	return l.initMany([]extent{e})
}

func (l *link) initMany(exts []extent) error {
	l.extents = exts
	l.starts = make([]int64, len(exts))
	var pos int64
	for i, e := range exts {
		l.starts[i] = pos
		pos += e.size()
	}
	l.size = pos
	var err error
	if l.cid, err = l.desc.hexValue("CID"); err != nil {
		return err
	}
	if l.parentCID, err = l.desc.hexValue("parentCID"); err != nil {
		return err
	}
	l.createType = l.desc.get("createType")
	return nil
}

// find returns the index of the extent holding off.
func (l *link) find(off int64) int {
	return sort.Search(len(l.starts), func(i int) bool { return l.starts[i] > off }) - 1
}

func (d *Disk) closeLinks() error {
	var errs []error
	for _, l := range d.links {
		for _, e := range l.extents {
			errs = append(errs, e.close())
		}
		if l.lockf != nil {
			errs = append(errs, l.lockf.Close())
			l.lockf = nil
		}
	}
	return errors.Join(errs...)
}

// Size returns the virtual size in bytes.
func (d *Disk) Size() int64 { return d.size }

// ReadOnly reports whether the disk was opened read-only.
func (d *Disk) ReadOnly() bool { return d.ro }

// ReadAt reads from the chain: each range comes from the first link that
// holds it, or reads as zeros.
func (d *Disk) ReadAt(p []byte, off int64) (int, error) {
	q, eof := disk.ReadAtClipped(p, off, d.size)
	if q == nil {
		return 0, eof
	}
	if err := d.aligned(q, off); err != nil {
		return 0, err
	}
	if err := d.readLink(0, q, off); err != nil {
		return 0, err
	}
	return len(q), eof
}

// readLink reads p at virtual offset off from link i downward.
func (d *Disk) readLink(i int, p []byte, off int64) error {
	if i >= len(d.links) {
		clear(p)
		return nil
	}
	l := d.links[i]
	if off >= l.size {
		clear(p)
		return nil
	}
	if tail := off + int64(len(p)) - l.size; tail > 0 {
		clear(p[int64(len(p))-tail:])
		p = p[:int64(len(p))-tail]
	}
	for len(p) > 0 {
		x := l.find(off)
		e := l.extents[x]
		eoff := off - l.starts[x]
		c := min(int64(len(p)), e.size()-eoff)
		for done := int64(0); done < c; {
			st, run, err := e.lookup(eoff+done, c-done)
			if err != nil {
				return err
			}
			q := p[done : done+run]
			switch st {
			case stateData:
				err = e.readAt(q, eoff+done)
			case stateZero:
				clear(q)
			default:
				err = d.readLink(i+1, q, off+done)
			}
			if err != nil {
				return err
			}
			done += run
		}
		p = p[c:]
		off += c
	}
	return nil
}

// parentReader reads the chain below the leaf, in the coordinates of one
// leaf extent.
type parentReader struct {
	d    *Disk
	base int64
}

func (r parentReader) ReadAt(p []byte, off int64) (int, error) {
	if err := r.d.readLink(1, p, r.base+off); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (d *Disk) parentFor(start int64) io.ReaderAt {
	if len(d.links) < 2 {
		if d.opts.Base != nil {
			return io.NewSectionReader(d.opts.Base, start, d.size-start)
		}
		return nil
	}
	return parentReader{d: d, base: start}
}

// aligned enforces unbuffered I/O's rule: buffers, offsets and lengths in
// whole sectors, buffers at sector-aligned addresses.
func (d *Disk) aligned(p []byte, off int64) error {
	if !d.opts.Unbuffered {
		return nil
	}
	if off%disk.SectorSize != 0 || len(p)%disk.SectorSize != 0 || !disk.AlignedBuffer(p) {
		return disk.Errorf(disk.ErrInvalid, "vmdk: unbuffered I/O needs sector-aligned buffers, offsets and lengths")
	}
	return nil
}

func (d *Disk) writable(off, n int64) error {
	if d.ro {
		return disk.Errorf(disk.ErrPermission, "vmdk: %s: opened read-only", d.links[0].path)
	}
	if err := disk.CheckRange(off, n, d.size); err != nil {
		return err
	}
	return d.rotateCID()
}

// rotateCID gives the leaf a new content ID before its first write of the
// session (§2.3), so children made from an older state notice.
func (d *Disk) rotateCID() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.rotated {
		return nil
	}
	l := d.links[0]
	old := l.cid
	l.cid = newCID()
	l.desc.set("CID", formatCID(l.cid))
	if err := d.writeDescriptor(l); err != nil {
		l.cid = old
		l.desc.set("CID", formatCID(old))
		return err
	}
	d.rotated = true
	return nil
}

// writeDescriptor stores a link's descriptor: in place inside a monolithic
// sparse file, or by replacing a descriptor file atomically.
func (d *Disk) writeDescriptor(l *link) error {
	b := l.desc.bytes()
	if l.selfContained && l.embedded == nil {
		return disk.Errorf(disk.ErrNotSupported, "vmdk: %s: the descriptor of this image cannot be rewritten", l.path)
	}
	if l.container != nil {
		return d.writeContainerDescriptor(l, b)
	}
	if se := l.embedded; se != nil {
		return writeEmbeddedDescriptor(se.f, se.h, b, l.path)
	}
	perm := fs.FileMode(0o644) // as Create makes it
	if st, err := d.fsys.Stat(l.path); err == nil {
		perm = st.Mode().Perm() // keep the descriptor's mode
	}
	if err := disk.WriteFileAtomic(d.fsys, l.path, b, perm); err != nil {
		return disk.Wrap(err, "vmdk: write descriptor", l.path, -1)
	}
	return d.relockDescriptor(l)
}

// writeEmbeddedDescriptor writes descriptor text b into the area the
// sparse header h reserves for it in f (padded with NULs, changed sectors
// only), and syncs.
func writeEmbeddedDescriptor(f disk.File, h *sparseHeader, b []byte, path string) error {
	room := int64(h.DescriptorSize) * disk.SectorSize
	if int64(len(b)) > room {
		return disk.Errorf(disk.ErrNoSpace, "vmdk: %s: descriptor of %d bytes does not fit the %d bytes reserved for it", path, len(b), room)
	}
	buf := make([]byte, room)
	copy(buf, b)
	pos := int64(h.DescriptorOffset) * disk.SectorSize
	if err := writeChangedSectors(f, buf, pos); err != nil {
		return disk.Wrap(err, "vmdk: write descriptor", path, pos)
	}
	return f.Sync()
}

// writeChangedSectors writes buf at pos, but only the sectors whose bytes
// differ from what the file holds. An embedded descriptor is rewritten in
// place, so a crash can leave some sectors new and others old; writing
// only the changed ones keeps that to the sectors a change moved, which
// for a metadata key are those of the disk database at the descriptor's
// end, where a torn line is skipped (lineJunk) rather than fatal.
func writeChangedSectors(f interface {
	io.ReaderAt
	io.WriterAt
}, buf []byte, pos int64) error {
	old := make([]byte, len(buf))
	if n, err := f.ReadAt(old, pos); err != nil && n < len(old) {
		_, werr := f.WriteAt(buf, pos)
		return werr
	}
	changed := func(s int) bool {
		e := min(s+disk.SectorSize, len(buf))
		return !bytes.Equal(buf[s:e], old[s:e])
	}
	for s := 0; s < len(buf); {
		if !changed(s) {
			s += disk.SectorSize
			continue
		}
		e := s + disk.SectorSize // a run of changed sectors goes out in one write
		for e < len(buf) && changed(e) {
			e += disk.SectorSize
		}
		e = min(e, len(buf))
		if _, err := f.WriteAt(buf[s:e], pos+int64(s)); err != nil {
			return err
		}
		s = e
	}
	return nil
}

// relockDescriptor moves a link's descriptor locks to the file that now
// has its name: the atomic replace left them on the old one. The extents
// stay locked throughout, so no other opener can slip in.
func (d *Disk) relockDescriptor(l *link) error {
	if l.lockf == nil {
		return nil
	}
	f, err := d.fsys.OpenFile(l.path, os.O_RDONLY, 0)
	if err != nil {
		return disk.Wrap(err, "vmdk: open", l.path, -1)
	}
	if err := d.lock(f, l.path, d.ro, false); err != nil {
		f.Close()
		return err
	}
	old := l.lockf
	l.lockf = f
	return disk.Wrap(old.Close(), "vmdk: close", l.path, -1)
}

// writeContainerDescriptor stores the descriptor of a capacity-0 KDMV file
// in the area its header reserves. The file holds extent data too (Haiku's
// vmdkimage puts a FLAT extent after the header), so it is never replaced,
// and the area must not overlap bytes an extent references.
func (d *Disk) writeContainerDescriptor(l *link, b []byte) error {
	h := l.container
	room := int64(h.DescriptorSize) * disk.SectorSize
	pos := int64(h.DescriptorOffset) * disk.SectorSize
	if int64(len(b)) > room {
		return disk.Errorf(disk.ErrNoSpace, "vmdk: %s: descriptor of %d bytes does not fit the %d bytes reserved for it", l.path, len(b), room)
	}
	if overlaps(flatRefs(filepath.Dir(l.path), l.desc).of(l.path), pos, pos+room) {
		return disk.Errorf(disk.ErrNotSupported, "vmdk: %s: the descriptor area overlaps extent data; it cannot be rewritten", l.path)
	}
	f, err := d.fsys.OpenFile(l.path, os.O_RDWR, 0)
	if err != nil {
		return disk.Wrap(err, "vmdk: write descriptor", l.path, -1)
	}
	buf := make([]byte, room)
	copy(buf, b)
	if _, err := f.WriteAt(buf, pos); err != nil {
		f.Close()
		return disk.Wrap(err, "vmdk: write descriptor", l.path, pos)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return disk.Wrap(err, "vmdk: write descriptor", l.path, -1)
	}
	return disk.Wrap(f.Close(), "vmdk: write descriptor", l.path, -1)
}

// WriteAt writes to the leaf. Partial writes into grains the leaf does not
// hold copy the rest of the grain from the parent first.
func (d *Disk) WriteAt(p []byte, off int64) (int, error) {
	if err := d.aligned(p, off); err != nil {
		return 0, err
	}
	if err := d.writable(off, int64(len(p))); err != nil {
		return 0, err
	}
	l := d.links[0]
	done := 0
	for done < len(p) {
		pos := off + int64(done)
		x := l.find(pos)
		e := l.extents[x]
		eoff := pos - l.starts[x]
		c := int(min(int64(len(p)-done), e.size()-eoff))
		if err := e.writeAt(p[done:done+c], eoff, d.parentFor(l.starts[x])); err != nil {
			return done, err
		}
		done += c
	}
	return done, nil
}

// WriteZeroes makes a range read as zeros, without writing data where the
// extent can avoid it. ZeroFast fails with ErrNotSupported on extents that
// would have to write zeros. ZeroNoHole is honoured by writing zeros.
func (d *Disk) WriteZeroes(off, n int64, flags disk.ZeroFlags) error {
	if err := d.writable(off, n); err != nil {
		return err
	}
	l := d.links[0]
	for end := off + n; off < end; {
		x := l.find(off)
		e := l.extents[x]
		eoff := off - l.starts[x]
		c := min(end-off, e.size()-eoff)
		z, ok := unwrapExtent(e).(zeroer)
		switch {
		case ok && flags&disk.ZeroNoHole == 0:
			if err := z.zeroAt(eoff, c, d.parentFor(l.starts[x])); err != nil {
				return err
			}
		case flags&disk.ZeroFast != 0:
			return disk.Errorf(disk.ErrNotSupported, "vmdk: fast zeroing not supported here")
		default:
			if err := writeZeros(e, eoff, c, d.parentFor(l.starts[x])); err != nil {
				return err
			}
		}
		off += c
	}
	return nil
}

// Trim releases the storage of whole grains of [off, off+n) in the leaf's
// SEsparse extents: they read as zeros afterwards and their grains are
// reused. On other extents it does nothing (trim is advisory).
func (d *Disk) Trim(off, n int64) error {
	if err := d.writable(off, n); err != nil {
		return err
	}
	l := d.links[0]
	for end := off + n; off < end; {
		x := l.find(off)
		e := l.extents[x]
		eoff := off - l.starts[x]
		c := min(end-off, e.size()-eoff)
		if t, ok := unwrapExtent(e).(trimmer); ok {
			if err := t.trimAt(eoff, c, d.parentFor(l.starts[x])); err != nil {
				return err
			}
		}
		off += c
	}
	return nil
}

func unwrapExtent(e extent) extent {
	for {
		switch x := e.(type) {
		case sized:
			e = x.extent
		case limitedExtent:
			return x // access limits apply
		default:
			return e
		}
	}
}

func writeZeros(e extent, off, n int64, parent io.ReaderAt) error {
	buf := disk.AlignedBytes(min(n, 1<<20))
	for n > 0 {
		c := min(n, int64(len(buf)))
		if err := e.writeAt(buf[:c], off, parent); err != nil {
			return err
		}
		off += c
		n -= c
	}
	return nil
}

// Extents reports the chain's allocation: ranges held by some link as data,
// zeroed grains and ZERO extents as Zero, and ranges no link holds as
// Hole|Zero. It reads grain tables only.
func (d *Disk) Extents(ctx context.Context, off, n int64, fn func(disk.Extent) error) error {
	if err := disk.CheckRange(off, 0, d.size); err != nil {
		return err
	}
	n = min(n, d.size-off)
	var pend disk.Extent
	steps := 0
	emit := func(o, c int64, f disk.ExtentFlags) error {
		if pend.Len > 0 && pend.Flags == f && pend.End() == o {
			pend.Len += c
			return nil
		}
		if pend.Len > 0 {
			if err := fn(pend); err != nil {
				return err
			}
		}
		if steps++; steps%1024 == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		pend = disk.Extent{Off: o, Len: c, Flags: f}
		return nil
	}
	if err := d.extentsLink(0, off, n, emit); err != nil {
		return err
	}
	if pend.Len > 0 {
		return fn(pend)
	}
	return nil
}

func (d *Disk) extentsLink(i int, off, n int64, emit func(int64, int64, disk.ExtentFlags) error) error {
	if i >= len(d.links) || off >= d.links[i].size {
		return emit(off, n, disk.Hole|disk.Zero)
	}
	l := d.links[i]
	if tail := off + n - l.size; tail > 0 {
		if err := d.extentsLink(i, off, n-tail, emit); err != nil {
			return err
		}
		return emit(l.size, tail, disk.Hole|disk.Zero)
	}
	for end := off + n; off < end; {
		x := l.find(off)
		e := l.extents[x]
		eoff := off - l.starts[x]
		c := min(end-off, e.size()-eoff)
		for done := int64(0); done < c; {
			st, run, err := e.lookup(eoff+done, c-done)
			if err != nil {
				return err
			}
			switch st {
			case stateData:
				err = emit(off+done, run, 0)
			case stateZero:
				err = emit(off+done, run, disk.Zero)
			default:
				err = d.extentsLink(i+1, off+done, run, emit)
			}
			if err != nil {
				return err
			}
			done += run
		}
		off += c
	}
	return nil
}

// Flush makes every completed write to the leaf durable.
func (d *Disk) Flush() error {
	if d.ro {
		return nil
	}
	var errs []error
	for _, e := range d.links[0].extents {
		errs = append(errs, e.flush())
	}
	return errors.Join(errs...)
}

// SetWriteBehind turns write-behind of the leaf's files on or off (see
// disk.WriteBehinder) and returns whether it was on. It is off for an
// opened disk (a disk in use takes rewrites that early write-back would
// write twice) and on for a new streamOptimized one.
func (d *Disk) SetWriteBehind(on bool) bool { return d.wb.Set(on) }

// Close flushes and closes every file of the chain. A sparse leaf that was
// marked as being written is marked clean again.
func (d *Disk) Close() error {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return disk.Errorf(disk.ErrInvalid, "vmdk: disk already closed")
	}
	d.closed = true
	d.mu.Unlock()
	return d.closeLinks()
}

// Chain describes each link of the open chain on its own, the leaf first.
func (d *Disk) Chain() []LinkInfo {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]LinkInfo, 0, len(d.links))
	for _, l := range d.links {
		li := LinkInfo{Path: l.path, CreateType: l.createType, CID: l.cid, ParentCID: l.parentCID,
			ParentHint: l.desc.get("parentFileNameHint"), Capacity: l.size,
			SelfContained: l.selfContained, Unclean: l.unclean}
		for x, el := range l.desc.extents {
			ei := ExtentInfo{Path: extentPath(l, x), Type: el.Type, Access: el.Access, Size: el.Sectors * disk.SectorSize}
			if x < len(l.starts) {
				ei.Offset = l.starts[x]
			}
			if x < len(l.extents) {
				switch e := baseExtent(l.extents[x]).(type) {
				case *streamExtent:
					ei.GrainSize, ei.Compressed = e.grain, true
				case *sparseExtent:
					ei.GrainSize, ei.Compressed = e.grain, e.h.compressed()
				case *seSparseExtent:
					ei.GrainSize = seGrainBytes
				}
			}
			li.Extents = append(li.Extents, ei)
		}
		out = append(out, li)
	}
	return out
}

// extentPath returns the file of extent x of l as Info names it: relative
// to the descriptor's directory unless absolute, "" for a ZERO extent.
func extentPath(l *link, x int) string {
	el := l.desc.extents[x]
	switch {
	case el.Type == "ZERO":
		return ""
	case l.selfContained:
		return l.path
	case strings.HasPrefix(el.File, "/"):
		return el.File
	}
	return joinDir(l.path, el.File)
}

// baseExtent strips the wrappers (size, access mode) off an extent.
func baseExtent(e extent) extent {
	for {
		switch x := e.(type) {
		case sized:
			e = x.extent
		case limitedExtent:
			e = x.extent
		default:
			return e
		}
	}
}

// Map reports where the bytes of [off, off+n) are stored, in order: for
// each run, the link that holds it and the file and offset of its bytes.
// Runs of data are split where their bytes stop being contiguous in a
// file, so a run of grains written out of order gives several Mappings;
// runs are not merged otherwise. Like Extents it reads grain tables only,
// and it is safe for concurrent use with reads and writes.
//
// A hole in a flat extent of the last link reads as zeros from its file:
// it is reported as Zero, not Hole, with its File and FileOff.
func (d *Disk) Map(ctx context.Context, off, n int64, fn func(Mapping) error) error {
	if err := disk.CheckRange(off, 0, d.size); err != nil {
		return err
	}
	n = min(n, d.size-off)
	steps := 0
	emit := func(m Mapping) error {
		if steps++; steps%1024 == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		return fn(m)
	}
	return d.mapLink(0, off, n, emit)
}

func (d *Disk) mapLink(i int, off, n int64, emit func(Mapping) error) error {
	if i >= len(d.links) {
		return emit(Mapping{Off: off, Len: n, Flags: disk.Hole | disk.Zero, Link: len(d.links) - 1, FileOff: -1})
	}
	l := d.links[i]
	if off >= l.size {
		// A parent shorter than its child: the child's tail reads as zeros.
		return emit(Mapping{Off: off, Len: n, Flags: disk.Hole | disk.Zero, Link: max(i-1, 0), FileOff: -1})
	}
	if tail := off + n - l.size; tail > 0 {
		if err := d.mapLink(i, off, n-tail, emit); err != nil {
			return err
		}
		return d.mapLink(i, l.size, tail, emit)
	}
	for end := off + n; off < end; {
		x := l.find(off)
		e := l.extents[x]
		eoff := off - l.starts[x]
		c := min(end-off, e.size()-eoff)
		path := extentPath(l, x)
		for done := int64(0); done < c; {
			st, run, err := e.lookup(eoff+done, c-done)
			if err != nil {
				return err
			}
			at := off + done
			switch st {
			case stateData:
				err = mapData(baseExtent(e), i, path, at, eoff+done, run, emit)
			case stateZero:
				err = emit(Mapping{Off: at, Len: run, Flags: disk.Zero, Link: i, FileOff: -1})
			default:
				if fe, ok := baseExtent(e).(*flatExtent); ok && i == len(d.links)-1 {
					err = emit(Mapping{Off: at, Len: run, Flags: disk.Zero, Link: i, File: path, FileOff: fe.base + eoff + done})
				} else {
					err = d.mapLink(i+1, at, run, emit)
				}
			}
			if err != nil {
				return err
			}
			done += run
		}
		off += c
	}
	return nil
}

// mapData reports a data run of extent e of link i: the run is at virtual
// offset at and at eoff in the extent.
func mapData(e extent, i int, path string, at, eoff, n int64, emit func(Mapping) error) error {
	whole := Mapping{Off: at, Len: n, Link: i, File: path, FileOff: -1}
	var locate func(off int64) (pos, grain int64, err error) // pos: file offset of off, -1 when unknown
	switch e := e.(type) {
	case *flatExtent:
		whole.FileOff = e.base + eoff
		return emit(whole)
	case *streamExtent:
		whole.Compressed = true
		return emit(whole)
	case *sparseExtent:
		if e.h.compressed() {
			whole.Compressed = true
			return emit(whole)
		}
		locate = func(off int64) (int64, int64, error) {
			v, _, err := e.gte(off)
			if err != nil || v <= 1 {
				return -1, e.grain, err
			}
			return int64(v)*disk.SectorSize + off%e.grain, e.grain, nil
		}
	case *seSparseExtent:
		locate = func(off int64) (int64, int64, error) {
			st, pos, err := e.entry(off)
			if err != nil || st != stateData {
				return -1, seGrainBytes, err
			}
			return pos + off%seGrainBytes, seGrainBytes, nil
		}
	default:
		return emit(whole)
	}
	var pend Mapping
	for done := int64(0); done < n; {
		pos, grain, err := locate(eoff + done)
		if err != nil {
			return err
		}
		c := min(n-done, grain-(eoff+done)%grain)
		if pend.Len > 0 && pos >= 0 && pend.FileOff >= 0 && pend.FileOff+pend.Len == pos {
			pend.Len += c
		} else {
			if pend.Len > 0 {
				if err := emit(pend); err != nil {
					return err
				}
			}
			pend = Mapping{Off: at + done, Len: c, Link: i, File: path, FileOff: pos}
		}
		done += c
	}
	return emit(pend)
}
