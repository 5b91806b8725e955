package ext4

import (
	"io"
)

// run is a stretch of a file's logical blocks: count blocks that start at
// physical block pblk, or, when zero is set, that read as zeros (a hole or
// an uninitialized extent).
type run struct {
	pblk  uint64
	count uint64
	zero  bool
}

// maxLogical is one past the last logical block a file can have.
const maxLogical = 1 << 32

// mapBlock finds the run of the file's blocks that starts at logical block
// lblk.
func (f *FS) mapBlock(n *node, lblk uint64) (run, error) {
	if lblk >= maxLogical {
		return run{count: 1 << 62, zero: true}, nil
	}
	if n.has(flagExtents) {
		return f.mapExtent(n, lblk)
	}
	return f.mapIndirect(n, lblk)
}

// Extent tree.

const extentMagic = 0xf30a

// mapExtent walks the extent tree from the root in i_block down to the
// leaf that covers lblk. Each level's depth is one less than its parent's,
// so the walk ends after at most maxDepth+1 nodes, whatever the blocks say.
func (f *FS) mapExtent(n *node, lblk uint64) (run, error) {
	nodeb := n.iblock()
	// end is one past the last block the current subtree may map: the
	// next index entry's start in the parent.
	end := uint64(maxLogical)
	depth := -1
	for {
		if len(nodeb) < 12 || le.Uint16(nodeb[0:]) != extentMagic {
			return run{}, corrupt("inode %d: bad extent header", n.ino)
		}
		entries, capacity, d := int(le.Uint16(nodeb[2:])), int(le.Uint16(nodeb[4:])), int(le.Uint16(nodeb[6:]))
		if depth < 0 {
			if d > maxDepth {
				return run{}, corrupt("inode %d: extent tree depth %d", n.ino, d)
			}
		} else if d != depth {
			return run{}, corrupt("inode %d: extent node of depth %d under one of depth %d", n.ino, d, depth+1)
		}
		depth = d
		if entries > capacity || 12+12*capacity > len(nodeb) {
			return run{}, corrupt("inode %d: extent node with %d of %d entries", n.ino, entries, capacity)
		}
		// Find the last entry that starts at or before lblk, checking
		// that the starts increase.
		i := -1
		var prev uint64
		for j := range entries {
			e := nodeb[12+12*j:]
			start := uint64(le.Uint32(e))
			if j > 0 && start <= prev {
				return run{}, corrupt("inode %d: extent entries out of order", n.ino)
			}
			prev = start
			if start <= lblk {
				i = j
			}
		}
		if i < 0 {
			// Before the first entry: a hole up to it.
			if entries > 0 {
				end = min(end, uint64(le.Uint32(nodeb[12:])))
			}
			return run{count: end - lblk, zero: true}, nil
		}
		if i+1 < entries {
			end = min(end, uint64(le.Uint32(nodeb[12+12*(i+1):])))
		}
		e := nodeb[12+12*i:]
		if depth == 0 {
			start := uint64(le.Uint32(e))
			length := uint64(le.Uint16(e[4:]))
			uninit := length > 32768
			if uninit {
				length -= 32768
			}
			pblk := uint64(le.Uint16(e[6:]))<<32 | uint64(le.Uint32(e[8:]))
			if start+length > end {
				return run{}, corrupt("inode %d: overlapping extents", n.ino)
			}
			if lblk >= start+length {
				return run{count: end - lblk, zero: true}, nil
			}
			if err := f.checkBlocks(pblk, length, "extent"); err != nil {
				return run{}, err
			}
			off := lblk - start
			return run{pblk: pblk + off, count: length - off, zero: uninit}, nil
		}
		child := uint64(le.Uint16(e[8:]))<<32 | uint64(le.Uint32(e[4:]))
		b, err := f.block(child, "extent node")
		if err != nil {
			return run{}, err
		}
		if f.sb.csum() {
			capacity := int(le.Uint16(b[4:]))
			if t := 12 + 12*capacity; t+4 <= len(b) && le.Uint16(b[0:]) == extentMagic {
				if got, want := crc32c(n.seed, b[:t]), le.Uint32(b[t:]); got != want {
					return run{}, corrupt("inode %d: extent block %d checksum %#x, computed %#x", n.ino, child, want, got)
				}
			}
		}
		nodeb = b
		depth--
		if depth < 0 {
			return run{}, corrupt("inode %d: extent tree deeper than its root says", n.ino)
		}
	}
}

// Block maps (ext2/ext3): twelve direct pointers, then single, double and
// triple indirect blocks.

func (f *FS) mapIndirect(n *node, lblk uint64) (run, error) {
	apb := uint64(f.sb.blockSize / 4) // pointers per block
	ib := n.iblock()
	var table []byte // the pointers at the final level
	var idx uint64   // lblk's index in table
	switch {
	case lblk < 12:
		table, idx = ib[:48], lblk
	default:
		l := lblk - 12
		level, span := 1, apb // span: blocks one pointer at the top level covers × apb
		for l >= span {
			l -= span
			level++
			if level > 3 {
				return run{count: 1 << 62, zero: true}, nil
			}
			span *= apb
		}
		ptr := uint64(le.Uint32(ib[4*(11+level):]))
		// Descend: at each level, span is what the whole table covers.
		for ; level > 0; level-- {
			sub := span / apb // what one pointer of this table covers
			if ptr == 0 {
				// A hole as large as what this pointer covers from l.
				return run{count: span - l, zero: true}, nil
			}
			b, err := f.block(ptr, "indirect block")
			if err != nil {
				return run{}, err
			}
			if level == 1 {
				table, idx = b, l
				break
			}
			ptr = uint64(le.Uint32(b[4*(l/sub):]))
			l %= sub
			span = sub
		}
	}
	// Extend the run across contiguous pointers (or holes) in table.
	total := uint64(len(table) / 4)
	first := uint64(le.Uint32(table[4*idx:]))
	count := uint64(1)
	for idx+count < total {
		p := uint64(le.Uint32(table[4*(idx+count):]))
		if first == 0 && p != 0 || first != 0 && p != first+count {
			break
		}
		count++
	}
	if first == 0 {
		return run{count: count, zero: true}, nil
	}
	if err := f.checkBlocks(first, count, "data block"); err != nil {
		return run{}, err
	}
	return run{pblk: first, count: count}, nil
}

// readData reads the file's bytes at off into p, following io.ReaderAt:
// fewer bytes than len(p) come with an error (io.EOF at the end).
func (f *FS) readData(n *node, p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, corrupt("negative offset")
	}
	if off >= n.size {
		return 0, io.EOF
	}
	want := len(p)
	if rest := n.size - off; int64(len(p)) > rest {
		p = p[:rest]
	}
	if n.has(flagInlineData) {
		data, err := f.inlineData(n)
		if err != nil {
			return 0, err
		}
		c := copy(p, data[off:])
		return c, eofIf(c < want)
	}
	bs := int64(f.sb.blockSize)
	done := 0
	for done < len(p) {
		pos := off + int64(done)
		r, err := f.mapBlock(n, uint64(pos/bs))
		if err != nil {
			return done, err
		}
		within := pos % bs
		chunk := int64(len(p) - done)
		if avail := int64(min(r.count, uint64(1)<<40)) * bs; avail-within < chunk {
			chunk = avail - within
		}
		q := p[done : done+int(chunk)]
		if r.zero {
			clear(q)
		} else if err := f.readSpan(q, r.pblk, within); err != nil {
			return done, err
		}
		done += int(chunk)
	}
	return done, eofIf(done < want)
}

// readSpan reads len(q) bytes starting within bytes into physical block
// blk.
func (f *FS) readSpan(q []byte, blk uint64, within int64) error {
	if f.journal == nil {
		return f.readAt(q, int64(blk)*int64(f.sb.blockSize)+within)
	}
	if within == 0 {
		return f.readBlocks(q, blk)
	}
	// The journal works in whole blocks: read the first one apart.
	bs := int64(f.sb.blockSize)
	b := make([]byte, bs)
	if err := f.readBlocks(b, blk); err != nil {
		return err
	}
	c := copy(q, b[within:])
	if c == len(q) {
		return nil
	}
	return f.readBlocks(q[c:], blk+1)
}

func eofIf(short bool) error {
	if short {
		return io.EOF
	}
	return nil
}
