package xfs

import (
	"fmt"
	"strings"
)

// dirent is one entry of a directory.
type dirent struct {
	name string
	ino  uint64
}

// directory is a directory's entries, in on-disk order, with an index by
// name.
type directory struct {
	entries []dirent
	byName  map[string]int
	parent  uint64
}

// leafOffset is where the leaf and free-index blocks of a directory's
// data fork begin: data blocks lie below 32 GiB.
const leafOffset = 32 << 30

// readDir returns the directory n (which must be one), cached.
func (f *FS) readDir(n *dinode) (*directory, error) {
	f.mu.Lock()
	d, ok := f.dirs[n.ino]
	f.mu.Unlock()
	if ok {
		return d, nil
	}
	var err error
	switch n.format {
	case fmtLocal:
		d, err = f.shortformDir(n)
	default:
		d, err = f.blockDir(n)
	}
	if err != nil {
		return nil, err
	}
	f.mu.Lock()
	if f.dirEntries+len(d.entries) > maxDirCache {
		clear(f.dirs)
		f.dirEntries = 0
	}
	f.dirs[n.ino] = d
	f.dirEntries += len(d.entries) + 1
	f.mu.Unlock()
	return d, nil
}

func (d *directory) add(name string, ino uint64) error {
	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\x00") {
		return corrupt("bad directory entry name %q", name)
	}
	if _, dup := d.byName[name]; dup {
		return corrupt("directory entry %q twice", name)
	}
	d.byName[name] = len(d.entries)
	d.entries = append(d.entries, dirent{name, ino})
	return nil
}

// shortformDir decodes a directory stored inline in its inode.
func (f *FS) shortformDir(n *dinode) (*directory, error) {
	b := n.dfork[:n.size]
	if len(b) < 2 {
		return nil, corrupt("inode %d: short-form directory of %d bytes", n.ino, len(b))
	}
	count, i8 := int(b[0]), b[1]
	if i8 != 0 {
		count = int(i8)
	}
	isz := 4
	if i8 != 0 {
		isz = 8
	}
	if len(b) < 2+isz {
		return nil, corrupt("inode %d: short-form directory of %d bytes", n.ino, len(b))
	}
	d := &directory{byName: map[string]int{}, parent: inum(b[2:], isz)}
	p := 2 + isz
	ft := 0
	if f.ftype {
		ft = 1
	}
	for range count {
		if p+3 > len(b) {
			return nil, corrupt("inode %d: short-form entry past the directory", n.ino)
		}
		nl := int(b[p])
		end := p + 3 + nl + ft + isz
		if nl == 0 || end > len(b) {
			return nil, corrupt("inode %d: short-form entry past the directory", n.ino)
		}
		name := string(b[p+3 : p+3+nl])
		if err := d.add(name, inum(b[p+3+nl+ft:], isz)); err != nil {
			return nil, fmt.Errorf("inode %d: %w", n.ino, err)
		}
		p = end
	}
	return d, nil
}

func inum(b []byte, size int) uint64 {
	if size == 8 {
		return be.Uint64(b)
	}
	return uint64(be.Uint32(b))
}

// Directory data block magics.
const (
	magicBlock   = 0x58443242 // XD2B: single-block directory
	magicData    = 0x58443244 // XD2D: data block of a leaf or node directory
	magicBlock3  = 0x58444233 // XDB3
	magicData3   = 0x58444433 // XDD3
	freeTag      = 0xffff
	dataHdrV4    = 16
	dataHdrV5    = 64
	blockTailLen = 8
)

// blockDir reads a directory in block, leaf or node form (its fork in
// extents or btree format): every data block below the leaf offset holds
// entries; leaf, node and free-index blocks are only indexes and are not
// needed to list or find names.
func (f *FS) blockDir(n *dinode) (*directory, error) {
	es, err := f.extents(n, false)
	if err != nil {
		return nil, err
	}
	d := &directory{byName: map[string]int{}}
	dbs := f.dirBlkSize
	fsbPerDir := uint64(dbs / f.blockSize)
	limit := uint64(leafOffset / f.blockSize)
	var read int64
	b := make([]byte, dbs)
	next := uint64(0) // first file block not yet read
	for _, e := range es {
		for blk := max(e.off, next) / fsbPerDir * fsbPerDir; blk < e.off+e.count && blk < limit; blk += fsbPerDir {
			if blk < next {
				continue
			}
			next = blk + fsbPerDir
			if read += dbs; read > maxDirBytes || read > f.size {
				return nil, corrupt("inode %d: directory larger than %d bytes", n.ino, maxDirBytes)
			}
			if err := f.readFork(es, b, int64(blk)*f.blockSize); err != nil {
				return nil, err
			}
			if err := f.dataBlock(n, d, b, blk); err != nil {
				return nil, err
			}
		}
	}
	return d, nil
}

// dataBlock adds the entries of one directory data block.
func (f *FS) dataBlock(n *dinode, d *directory, b []byte, blk uint64) error {
	magic := be.Uint32(b)
	hdr := dataHdrV4
	end := len(b)
	switch {
	case f.version == 4 && (magic == magicBlock || magic == magicData):
	case f.version == 5 && (magic == magicBlock3 || magic == magicData3):
		hdr = dataHdrV5
		if be.Uint64(b[40:]) != n.ino {
			return corrupt("inode %d: directory block %d owned by inode %d", n.ino, blk, be.Uint64(b[40:]))
		}
		if crcOf(b, 4) != le32(b[4:]) {
			return corrupt("inode %d: directory block %d: bad CRC", n.ino, blk)
		}
	default:
		return corrupt("inode %d: directory block %d: bad magic %#x", n.ino, blk, magic)
	}
	if magic == magicBlock || magic == magicBlock3 {
		count := int64(be.Uint32(b[len(b)-blockTailLen:]))
		if count*8 > int64(len(b)-blockTailLen-hdr) {
			return corrupt("inode %d: directory block %d: %d leaf entries", n.ino, blk, count)
		}
		end = len(b) - blockTailLen - int(count)*8
	}
	ft := 0
	if f.ftype {
		ft = 1
	}
	for p := hdr; p < end; {
		if p+4 > end {
			return corrupt("inode %d: directory block %d: entry past the block", n.ino, blk)
		}
		if be.Uint16(b[p:]) == freeTag {
			l := int(be.Uint16(b[p+2:]))
			if l < 8 || l%8 != 0 || p+l > end {
				return corrupt("inode %d: directory block %d: free space of %d bytes", n.ino, blk, l)
			}
			p += l
			continue
		}
		if p+11 > end {
			return corrupt("inode %d: directory block %d: entry past the block", n.ino, blk)
		}
		ino := be.Uint64(b[p:])
		nl := int(b[p+8])
		l := (8 + 1 + nl + ft + 2 + 7) &^ 7
		if nl == 0 || p+l > end {
			return corrupt("inode %d: directory block %d: entry past the block", n.ino, blk)
		}
		name := string(b[p+9 : p+9+nl])
		p += l
		switch name {
		case ".":
			continue
		case "..":
			d.parent = ino
			continue
		}
		if err := d.add(name, ino); err != nil {
			return fmt.Errorf("inode %d: %w", n.ino, err)
		}
	}
	return nil
}

// symlinkMagic begins each remote symlink block on v5 filesystems.
const symlinkMagic = 0x58534c4d // XSLM

// readLink returns a symbolic link's target.
func (f *FS) readLink(n *dinode) (string, error) {
	if n.size <= 0 || n.size > maxLinkLen {
		return "", corrupt("inode %d: symbolic link of %d bytes", n.ino, n.size)
	}
	if n.format == fmtLocal {
		return string(n.dfork[:n.size]), nil
	}
	es, err := f.extents(n, false)
	if err != nil {
		return "", err
	}
	var out []byte
	hdr := int64(0)
	if f.version == 5 {
		hdr = 56
	}
	b := make([]byte, f.blockSize)
	for blk := int64(0); int64(len(out)) < n.size; blk++ {
		if blk > maxLinkLen {
			return "", corrupt("inode %d: symbolic link blocks", n.ino)
		}
		if err := f.readFork(es, b, blk*f.blockSize); err != nil {
			return "", err
		}
		want := min(n.size-int64(len(out)), f.blockSize-hdr)
		if hdr > 0 {
			if be.Uint32(b) != symlinkMagic || be.Uint64(b[32:]) != n.ino || crcOf(b, 12) != le32(b[12:]) ||
				int64(be.Uint32(b[4:])) != int64(len(out)) || int64(be.Uint32(b[8:])) != want {
				return "", corrupt("inode %d: bad remote symbolic link block %d", n.ino, blk)
			}
		}
		out = append(out, b[hdr:hdr+want]...)
	}
	return string(out), nil
}
