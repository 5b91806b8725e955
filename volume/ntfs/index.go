package ntfs

import (
	"fmt"
	"slices"
	"strings"

	"github.com/vdisk-project/vdisk/disk"
)

// Index entry flags.
const (
	entrySubnode = 0x1
	entryLast    = 0x2
)

const (
	maxIndexDepth   = 64
	maxIndexBlock   = 64 << 10
	maxDirEntries   = 1 << 22 // entries one directory may list
	cacheDirEntries = 1 << 18 // directories larger than this are not cached
)

// dirent is one name in a directory's $I30 index.
type dirent struct {
	name       string
	ino        uint64
	seq        uint16
	fileAttrs  uint32
	reparseTag uint32
}

type dirList struct {
	entries []dirent // sorted by name
}

func (d *dirList) find(name string) (dirent, bool) {
	i, ok := slices.BinarySearchFunc(d.entries, name, func(e dirent, n string) int { return strings.Compare(e.name, n) })
	if !ok {
		return dirent{}, false
	}
	return d.entries[i], true
}

// listDir walks the B+ tree of n's $I30 index from $INDEX_ROOT into the
// $INDEX_ALLOCATION blocks it points to (never into blocks nothing points
// to, which may hold stale entries). DOS (8.3) names and the metafiles
// (records below 16, and the root's "." entry) are left out.
func (f *FS) listDir(n *node) (*dirList, error) {
	if d, ok := f.dirs.get(n.num); ok {
		return d, nil
	}
	if n.indexRoot == nil {
		return nil, disk.Errorf(disk.ErrCorrupt, "ntfs: directory %d has no $INDEX_ROOT", n.num)
	}
	root := n.indexRoot.value
	if len(root) < 32 {
		return nil, disk.Errorf(disk.ErrCorrupt, "ntfs: directory %d: $INDEX_ROOT too short", n.num)
	}
	w := &indexWalk{f: f, n: n, seen: map[int64]bool{}}
	w.blockSize = int64(le.Uint32(root[8:]))
	if n.indexAlloc != nil {
		bs := w.blockSize
		if bs < fixupStride || bs > maxIndexBlock || bs&(bs-1) != 0 {
			return nil, disk.Errorf(disk.ErrCorrupt, "ntfs: directory %d: index block size %d out of range", n.num, bs)
		}
		w.vcnSize = f.clusterSize
		if bs < f.clusterSize {
			w.vcnSize = fixupStride
		}
		s, err := f.newStream(n.indexAlloc)
		if err != nil {
			return nil, fmt.Errorf("ntfs: directory %d: $INDEX_ALLOCATION: %w", n.num, err)
		}
		w.alloc = s
	}
	if err := w.node(root[16:], 0); err != nil {
		return nil, fmt.Errorf("ntfs: directory %d: %w", n.num, err)
	}
	d := &dirList{entries: w.out}
	slices.SortFunc(d.entries, func(a, b dirent) int { return strings.Compare(a.name, b.name) })
	d.entries = slices.CompactFunc(d.entries, func(a, b dirent) bool { return a.name == b.name })
	if len(d.entries) <= cacheDirEntries {
		f.dirs.add(n.num, d, len(d.entries)+1)
	}
	return d, nil
}

type indexWalk struct {
	f                  *FS
	n                  *node
	alloc              *stream
	blockSize, vcnSize int64
	seen               map[int64]bool
	out                []dirent
}

// node reads the entries of one index node (b starts at its index
// header) and, before each entry with a subnode, that subnode.
func (w *indexWalk) node(b []byte, depth int) error {
	if depth > maxIndexDepth {
		return disk.Errorf(disk.ErrCorrupt, "index deeper than %d levels", maxIndexDepth)
	}
	if len(b) < 16 {
		return disk.Errorf(disk.ErrCorrupt, "index header too short")
	}
	start, end := int(le.Uint32(b)), int(le.Uint32(b[4:]))
	if start < 16 || end > len(b) || start > end {
		return disk.Errorf(disk.ErrCorrupt, "index entries %d..%d out of range", start, end)
	}
	for off := start; ; {
		if off+16 > end {
			return disk.Errorf(disk.ErrCorrupt, "index entry at %d past the node", off)
		}
		e := b[off:end]
		n, keyLen, flags := int(le.Uint16(e[8:])), int(le.Uint16(e[10:])), le.Uint16(e[12:])
		if n < 16 || n > len(e) || n&7 != 0 || 16+keyLen > n {
			return disk.Errorf(disk.ErrCorrupt, "index entry at %d: length %d out of range", off, n)
		}
		if flags&entrySubnode != 0 {
			if n < 24 {
				return disk.Errorf(disk.ErrCorrupt, "index entry at %d: no room for a subnode", off)
			}
			if err := w.block(int64(le.Uint64(e[n-8:])), depth+1); err != nil {
				return err
			}
		}
		if flags&entryLast != 0 {
			return nil
		}
		if err := w.entry(e[:n], keyLen); err != nil {
			return err
		}
		off += n
	}
}

func (w *indexWalk) entry(e []byte, keyLen int) error {
	if keyLen < 0x42 {
		return disk.Errorf(disk.ErrCorrupt, "index key of %d bytes too short for a file name", keyLen)
	}
	k := e[16 : 16+keyLen]
	nl := int(k[0x40])
	if 0x42+2*nl > len(k) {
		return disk.Errorf(disk.ErrCorrupt, "index key name past the key")
	}
	ref := le.Uint64(e)
	d := dirent{
		ino:        ref & (1<<48 - 1),
		seq:        uint16(ref >> 48),
		fileAttrs:  le.Uint32(k[0x38:]),
		reparseTag: le.Uint32(k[0x3c:]),
	}
	if k[0x41] == namespaceDOS || d.ino < firstUserRecord {
		return nil
	}
	if len(w.out) >= maxDirEntries {
		return disk.Errorf(disk.ErrCorrupt, "more than %d entries", maxDirEntries)
	}
	d.name = utf16String(k[0x42 : 0x42+2*nl])
	if d.name == "" || strings.ContainsRune(d.name, '/') || d.name == "." || d.name == ".." {
		return disk.Errorf(disk.ErrCorrupt, "invalid name %q in the index", d.name)
	}
	w.out = append(w.out, d)
	return nil
}

// block reads the INDX block at vcn and walks it.
func (w *indexWalk) block(vcn int64, depth int) error {
	if w.alloc == nil {
		return disk.Errorf(disk.ErrCorrupt, "subnode at vcn %d without $INDEX_ALLOCATION", vcn)
	}
	if vcn < 0 || vcn > (w.alloc.size-w.blockSize)/w.vcnSize {
		return disk.Errorf(disk.ErrCorrupt, "subnode vcn %d past $INDEX_ALLOCATION", vcn)
	}
	if w.seen[vcn] {
		return disk.Errorf(disk.ErrCorrupt, "index block at vcn %d reached twice", vcn)
	}
	w.seen[vcn] = true
	b := make([]byte, w.blockSize)
	if err := w.alloc.readFull(b, vcn*w.vcnSize); err != nil {
		return err
	}
	if string(b[:4]) != "INDX" {
		return disk.Errorf(disk.ErrCorrupt, "index block at vcn %d: bad magic %q", vcn, b[:4])
	}
	if err := fixup(b); err != nil {
		return fmt.Errorf("index block at vcn %d: %w", vcn, err)
	}
	if got := int64(le.Uint64(b[0x10:])); got != vcn {
		return disk.Errorf(disk.ErrCorrupt, "index block at vcn %d says vcn %d", vcn, got)
	}
	return w.node(b[0x18:], depth)
}
