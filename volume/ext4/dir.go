package ext4

import (
	"io/fs"
	"strings"

	"github.com/vdisk-project/vdisk/disk"
)

var errNotDir = disk.Errorf(disk.ErrInvalid, "not a directory")

// dirent is one directory entry.
type dirent struct {
	name string
	ino  uint32
	typ  uint8 // the entry's file type (0 when unknown or unrecorded)
}

// maxIndexed is the most entries a directory may have for its lookup
// table to be cached; the cache holds two such directories' worth.
const maxIndexed = 1 << 16

// dirIndex is a directory's entries by name.
type dirIndex map[string]dirent

// dirChunk is how much of a directory is read in one request.
const dirChunk = 256 << 10

// dirIter reads a directory's entries in on-disk order, a chunk of blocks
// at a time, skipping "." and "..".
type dirIter struct {
	f    *FS
	n    *node
	pos  int64    // offset of the next chunk to read
	ents []dirent // parsed and not yet returned
	buf  []byte
	done bool
}

func (f *FS) openDir(n *node) (*dirIter, error) {
	if !n.isDir() {
		return nil, errNotDir
	}
	if n.has(flagEncrypt) {
		return nil, unsupported("inode %d: encrypted directory", n.ino)
	}
	return &dirIter{f: f, n: n}, nil
}

// next returns up to max entries (all that are left when max <= 0); an
// empty result means the end.
func (it *dirIter) next(max int) ([]dirent, error) {
	var out []dirent
	for max <= 0 || len(out) < max {
		if len(it.ents) == 0 {
			if it.done {
				break
			}
			if err := it.fill(); err != nil {
				return out, err
			}
			continue
		}
		k := len(it.ents)
		if max > 0 {
			k = min(k, max-len(out))
		}
		out = append(out, it.ents[:k]...)
		it.ents = it.ents[k:]
	}
	return out, nil
}

// fill parses the next chunk of the directory.
func (it *dirIter) fill() error {
	f, n := it.f, it.n
	if n.has(flagInlineData) {
		it.done = true
		data, err := f.inlineData(n)
		if err != nil {
			return err
		}
		if len(data) < 4 {
			return corrupt("inode %d: inline directory of %d bytes", n.ino, len(data))
		}
		// The parent's number, then entries in i_block and in
		// system.data, each a separate chain of records.
		if err := it.parseBlock(data[4:min(60, len(data))], -1); err != nil {
			return err
		}
		if len(data) > 60 {
			return it.parseBlock(data[60:], -1)
		}
		return nil
	}
	bs := int64(f.sb.blockSize)
	size := n.size - n.size%bs
	if size > int64(f.sb.blocksCount)*bs {
		return corrupt("inode %d: directory of %d bytes in a smaller filesystem", n.ino, n.size)
	}
	for {
		if it.pos >= size {
			it.done = true
			return nil
		}
		// Skip a hole at once, however large.
		r, err := f.mapBlock(n, uint64(it.pos/bs))
		if err != nil {
			return err
		}
		if !r.zero {
			break
		}
		it.pos += int64(min(r.count, uint64(size/bs))) * bs
	}
	if it.buf == nil {
		it.buf = make([]byte, min(size-it.pos, dirChunk))
	}
	buf := it.buf[:min(size-it.pos, int64(len(it.buf)))]
	hole := make([]bool, int64(len(buf))/bs)
	for got := int64(0); got < int64(len(buf)); {
		r, err := f.mapBlock(n, uint64((it.pos+got)/bs))
		if err != nil {
			return err
		}
		c := min(int64(min(r.count, 1<<30))*bs, int64(len(buf))-got)
		if r.zero {
			// Holes (and unwritten blocks) in a directory hold no
			// entries.
			for b := got; b < got+c; b += bs {
				hole[b/bs] = true
			}
		} else if err := f.readSpan(buf[got:got+c], r.pblk, 0); err != nil {
			return err
		}
		got += c
	}
	for i := range hole {
		if !hole[i] {
			if err := it.parseBlock(buf[int64(i)*bs:int64(i+1)*bs], (it.pos+int64(i)*bs)/bs); err != nil {
				return err
			}
		}
	}
	it.pos += int64(len(buf))
	return nil
}

// recLen decodes a record length (for 64 KiB blocks, where 65536 does not
// fit in 16 bits, the low two bits hold bits 16-17).
func (f *FS) recLen(v uint16) int {
	if f.sb.blockSize < 65536 {
		return int(v)
	}
	if v == 65535 || v == 0 {
		return int(f.sb.blockSize)
	}
	return int(v&65532) | int(v&3)<<16
}

// parseBlock parses one block of entries (lblk < 0 for inline data, which
// has no checksum).
func (it *dirIter) parseBlock(b []byte, lblk int64) error {
	f, n := it.f, it.n
	end := len(b)
	if lblk >= 0 {
		first := f.recLen(le.Uint16(b[4:]))
		switch {
		case le.Uint32(b) == 0 && first == len(b):
			return nil // an htree interior node: one empty record over it all
		case lblk == 0 && n.has(flagIndex) && isDXRoot(b, f.recLen):
			return nil // "." and "..", then the htree root
		}
		if f.sb.csum() {
			// The leaf's checksum is in a fake last entry.
			t := len(b) - 12
			if le.Uint32(b[t:]) != 0 || le.Uint16(b[t+4:]) != 12 || b[t+6] != 0 || b[t+7] != 0xde {
				return corrupt("inode %d: directory block %d has no checksum", n.ino, lblk)
			}
			if got, want := crc32c(n.seed, b[:t]), le.Uint32(b[t+8:]); got != want {
				return corrupt("inode %d: directory block %d checksum %#x, computed %#x", n.ino, lblk, want, got)
			}
			end = t
		}
	}
	return it.parseEntries(b[:end], lblk)
}

// isDXRoot recognises an htree's root block: "." of 12 bytes, then ".."
// whose record covers the rest of the block.
func isDXRoot(b []byte, recLen func(uint16) int) bool {
	return len(b) >= 24 && recLen(le.Uint16(b[4:])) == 12 && b[6] == 1 && b[8] == '.' &&
		recLen(le.Uint16(b[16:])) == len(b)-12 && b[18] == 2 && b[20] == '.' && b[21] == '.'
}

func (it *dirIter) parseEntries(b []byte, lblk int64) error {
	f, n := it.f, it.n
	filetype := f.sb.has(incompatFiletype)
	for off := 0; off < len(b); {
		if off+8 > len(b) {
			return corrupt("inode %d: directory block %d: entry at %d runs past the block", n.ino, lblk, off)
		}
		e := b[off:]
		ino := le.Uint32(e)
		rl := f.recLen(le.Uint16(e[4:]))
		nameLen := int(e[6])
		if rl < 12 || rl%4 != 0 || rl < 8+nameLen || off+rl > len(b) {
			return corrupt("inode %d: directory block %d: bad entry at %d (record of %d bytes, name of %d)", n.ino, lblk, off, rl, nameLen)
		}
		off += rl
		if ino == 0 {
			continue
		}
		if ino > f.sb.inodesCount {
			return corrupt("inode %d: directory entry for inode %d of %d", n.ino, ino, f.sb.inodesCount)
		}
		name := string(e[8 : 8+nameLen])
		if name == "." || name == ".." {
			continue
		}
		if nameLen == 0 || strings.ContainsAny(name, "/\x00") {
			return corrupt("inode %d: directory entry with name %q", n.ino, name)
		}
		d := dirent{name: name, ino: ino}
		if filetype {
			d.typ = e[7]
		}
		it.ents = append(it.ents, d)
	}
	return nil
}

// direntMode is the file type a directory entry records (ModeIrregular
// when it records none).
func direntMode(t uint8) (fs.FileMode, bool) {
	switch t {
	case 1:
		return 0, true
	case 2:
		return fs.ModeDir, true
	case 3:
		return fs.ModeDevice | fs.ModeCharDevice, true
	case 4:
		return fs.ModeDevice, true
	case 5:
		return fs.ModeNamedPipe, true
	case 6:
		return fs.ModeSocket, true
	case 7:
		return fs.ModeSymlink, true
	}
	return fs.ModeIrregular, false
}

// lookup finds name in directory n: through the directory's cached index
// when it has one (made on first use for directories of up to maxIndexed
// entries), else by reading the directory. In a casefolded directory, a
// name not found as it is is looked up again ignoring case (Unicode simple
// folding, close to the kernel's utf8 casefolding for most names).
func (f *FS) lookup(n *node, name string) (dirent, error) {
	match := func(e dirent) bool {
		return e.name == name || n.has(flagCasefold) && strings.EqualFold(e.name, name)
	}
	idx, ok := f.dirs.get(n.ino)
	if !ok {
		it, err := f.openDir(n)
		if err != nil {
			return dirent{}, err
		}
		idx = dirIndex{}
		var found *dirent
		for {
			ents, err := it.next(1024)
			if err != nil {
				return dirent{}, err
			}
			if len(ents) == 0 {
				break
			}
			for _, e := range ents {
				if found == nil && match(e) {
					found = &e
					if idx == nil {
						return e, nil
					}
				}
				if idx != nil {
					idx[e.name] = e
					if len(idx) > maxIndexed {
						// Too big to keep: search on without.
						idx = nil
						if found != nil {
							return *found, nil
						}
					}
				}
			}
		}
		if idx == nil {
			return dirent{}, fs.ErrNotExist
		}
		f.dirs.add(n.ino, idx, len(idx)+1)
	}
	if e, ok := idx[name]; ok {
		return e, nil
	}
	if n.has(flagCasefold) {
		for _, e := range idx {
			if match(e) {
				return e, nil
			}
		}
	}
	return dirent{}, fs.ErrNotExist
}

// parent returns the inode number a directory's ".." entry names: the
// first four bytes of inline data, else the second entry of its first
// block.
func (f *FS) parent(n *node) (uint32, error) {
	if n.has(flagInlineData) {
		return le.Uint32(n.iblock()), nil
	}
	r, err := f.mapBlock(n, 0)
	if err != nil {
		return 0, err
	}
	if r.zero || n.size < int64(f.sb.blockSize) {
		return 0, corrupt("inode %d: directory without a first block", n.ino)
	}
	b, err := f.block(r.pblk, "directory block")
	if err != nil {
		return 0, err
	}
	first := f.recLen(le.Uint16(b[4:]))
	if first < 12 || first+12 > len(b) || b[6] != 1 || b[8] != '.' {
		return 0, corrupt("inode %d: directory does not start with \".\"", n.ino)
	}
	e := b[first:]
	if e[6] != 2 || e[8] != '.' || e[9] != '.' {
		return 0, corrupt("inode %d: directory has no \"..\" entry", n.ino)
	}
	return le.Uint32(e), nil
}

// checkChild verifies that directory child, found in dir, is not the
// root and (when through is set) names dir as its parent. Each directory
// then has one way in, so walks through the tree cannot loop, whatever
// the entries say.
func (f *FS) checkChild(dir, child *node, through bool) error {
	if child.ino == rootIno {
		return corrupt("inode %d: a directory entry names the root", dir.ino)
	}
	if !through {
		return nil
	}
	p, err := f.parent(child)
	if err != nil {
		return err
	}
	if p != dir.ino {
		return corrupt("inode %d: directory found in %d but its parent is %d", child.ino, dir.ino, p)
	}
	return nil
}
