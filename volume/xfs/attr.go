package xfs

import (
	"encoding/binary"
)

// Attribute entry flags (namespace and state).
const (
	attrLocal      = 0x01
	attrRoot       = 0x02 // trusted.
	attrSecure     = 0x04 // security.
	attrParent     = 0x08 // parent pointer: not an xattr
	attrIncomplete = 0x80
)

// Attribute block magics.
const (
	attrLeafMagic  = 0xfbee
	attrLeafMagic3 = 0x3bee
	daNodeMagic    = 0xfebe
	daNodeMagic3   = 0x3ebe
	attrRmtMagic   = 0x5841524d // XARM
)

// maxAttrs bounds the attributes read for one inode.
const maxAttrs = 1 << 16

// xattrs reads an inode's extended attributes as getfattr names them.
func (f *FS) xattrs(n *dinode) (map[string][]byte, error) {
	m := map[string][]byte{}
	if n.afork == nil {
		return m, nil
	}
	switch n.aformat {
	case fmtLocal:
		return m, f.shortformAttrs(n, m)
	case fmtExtents, fmtBtree:
		es, err := f.extents(n, true)
		if err != nil {
			return nil, err
		}
		if len(es) == 0 {
			return m, nil
		}
		return m, f.attrTree(n, es, m)
	}
	return nil, corrupt("inode %d: attribute fork format %d", n.ino, n.aformat)
}

// put adds one attribute under its getfattr name; XFS's POSIX ACL
// records (trusted.SGI_ACL_FILE and SGI_ACL_DEFAULT) are also listed as
// system.posix_acl_access and system.posix_acl_default in the Linux
// format, as Linux lists them.
func put(m map[string][]byte, flags byte, name string, value []byte) error {
	if flags&(attrParent|attrIncomplete) != 0 {
		return nil
	}
	if len(m) >= maxAttrs {
		return corrupt("more than %d attributes", maxAttrs)
	}
	switch {
	case flags&attrSecure != 0:
		name = "security." + name
	case flags&attrRoot != 0:
		// Linux lists XFS's ACL records twice: as they are, and converted.
		switch name {
		case "SGI_ACL_FILE":
			if acl, ok := posixACL(value); ok {
				m["system.posix_acl_access"] = acl
			}
		case "SGI_ACL_DEFAULT":
			if acl, ok := posixACL(value); ok {
				m["system.posix_acl_default"] = acl
			}
		}
		name = "trusted." + name
	default:
		name = "user." + name
	}
	m[name] = value
	return nil
}

// posixACL converts an XFS ACL (big-endian count, then tag, id and
// permission per entry) to the Linux xattr format (version 2, then
// little-endian tag, permission and id).
func posixACL(b []byte) ([]byte, bool) {
	if len(b) < 4 {
		return nil, false
	}
	n := int(be.Uint32(b))
	if n > 1024 || len(b) != 4+n*12 {
		return nil, false
	}
	le := binary.LittleEndian
	out := le.AppendUint32(nil, 2)
	for i := range n {
		e := b[4+i*12:]
		tag, id, perm := be.Uint32(e), be.Uint32(e[4:]), be.Uint16(e[8:])
		out = le.AppendUint16(out, uint16(tag))
		out = le.AppendUint16(out, perm)
		out = le.AppendUint32(out, id)
	}
	return out, true
}

// shortformAttrs decodes attributes stored in the inode.
func (f *FS) shortformAttrs(n *dinode, m map[string][]byte) error {
	b := n.afork
	if len(b) < 4 {
		return corrupt("inode %d: short-form attributes too small", n.ino)
	}
	total := int(be.Uint16(b))
	if total < 4 || total > len(b) {
		return corrupt("inode %d: short-form attributes of %d bytes", n.ino, total)
	}
	count := int(b[2])
	b = b[:total]
	p := 4
	for range count {
		if p+3 > len(b) {
			return corrupt("inode %d: short-form attribute past its fork", n.ino)
		}
		nl, vl, fl := int(b[p]), int(b[p+1]), b[p+2]
		if p+3+nl+vl > len(b) {
			return corrupt("inode %d: short-form attribute past its fork", n.ino)
		}
		name := string(b[p+3 : p+3+nl])
		val := append([]byte{}, b[p+3+nl:p+3+nl+vl]...)
		if err := put(m, fl, name, val); err != nil {
			return err
		}
		p += 3 + nl + vl
	}
	return nil
}

// attrTree reads attributes in leaf or node form: from block 0 it goes
// down the leftmost path of the dabtree to the first leaf, then along the
// leaves' forward links. Visited blocks are remembered to stop loops.
func (f *FS) attrTree(n *dinode, es []extent, m map[string][]byte) error {
	bs := f.blockSize
	b := make([]byte, bs)
	seen := map[uint32]bool{}
	blk := uint32(0)
	v5 := f.version == 5
	for depth := 0; ; depth++ {
		if depth > maxBtreeDepth {
			return corrupt("inode %d: attribute tree too deep", n.ino)
		}
		if err := f.readFork(es, b, int64(blk)*bs); err != nil {
			return err
		}
		magic := be.Uint16(b[8:])
		if magic == attrLeafMagic || magic == attrLeafMagic3 {
			break
		}
		if v5 && magic != daNodeMagic3 || !v5 && magic != daNodeMagic {
			return corrupt("inode %d: attribute block %d: bad magic %#x", n.ino, blk, magic)
		}
		if v5 && (be.Uint64(b[48:]) != n.ino || crcOf(b, 12) != le32(b[12:])) {
			return corrupt("inode %d: attribute node %d: bad owner or CRC", n.ino, blk)
		}
		hdr := 16
		if v5 {
			hdr = 64
		}
		if be.Uint16(b[hdr-4:]) == 0 && !v5 || be.Uint16(b[56:]) == 0 && v5 {
			return corrupt("inode %d: empty attribute node %d", n.ino, blk)
		}
		seen[blk] = true
		blk = be.Uint32(b[hdr+4:]) // the first entry's child
		if seen[blk] {
			return corrupt("inode %d: attribute tree loops", n.ino)
		}
	}
	for {
		seen[blk] = true
		if err := f.attrLeaf(n, es, b, blk, m); err != nil {
			return err
		}
		next := be.Uint32(b) // forw
		if next == 0 {
			return nil
		}
		if seen[next] || len(seen) > 1<<20 {
			return corrupt("inode %d: attribute leaves loop", n.ino)
		}
		blk = next
		if err := f.readFork(es, b, int64(blk)*bs); err != nil {
			return err
		}
	}
}

// attrLeaf decodes one attribute leaf block (already in b).
func (f *FS) attrLeaf(n *dinode, es []extent, b []byte, blk uint32, m map[string][]byte) error {
	v5 := f.version == 5
	magic := be.Uint16(b[8:])
	hdr, cnt := 32, 12
	if v5 {
		hdr, cnt = 80, 56
		if magic != attrLeafMagic3 {
			return corrupt("inode %d: attribute leaf %d: bad magic %#x", n.ino, blk, magic)
		}
		if be.Uint64(b[48:]) != n.ino {
			return corrupt("inode %d: attribute leaf %d owned by inode %d", n.ino, blk, be.Uint64(b[48:]))
		}
		if crcOf(b, 12) != le32(b[12:]) {
			return corrupt("inode %d: attribute leaf %d: bad CRC", n.ino, blk)
		}
	} else if magic != attrLeafMagic {
		return corrupt("inode %d: attribute leaf %d: bad magic %#x", n.ino, blk, magic)
	}
	count := int(be.Uint16(b[cnt:]))
	if hdr+count*8 > len(b) {
		return corrupt("inode %d: attribute leaf %d: %d entries", n.ino, blk, count)
	}
	for i := range count {
		e := b[hdr+i*8:]
		idx, flags := int(be.Uint16(e[4:])), e[6]
		if idx < hdr+count*8 || idx >= len(b) {
			return corrupt("inode %d: attribute leaf %d: entry at %d", n.ino, blk, idx)
		}
		v := b[idx:]
		if flags&attrLocal != 0 {
			if len(v) < 3 {
				return corrupt("inode %d: attribute leaf %d: entry past the block", n.ino, blk)
			}
			vl, nl := int(be.Uint16(v)), int(v[2])
			if 3+nl+vl > len(v) {
				return corrupt("inode %d: attribute leaf %d: entry past the block", n.ino, blk)
			}
			if err := put(m, flags, string(v[3:3+nl]), append([]byte{}, v[3+nl:3+nl+vl]...)); err != nil {
				return err
			}
			continue
		}
		if len(v) < 9 {
			return corrupt("inode %d: attribute leaf %d: entry past the block", n.ino, blk)
		}
		vblk, vl, nl := be.Uint32(v), int64(be.Uint32(v[4:])), int(v[8])
		if 9+nl > len(v) {
			return corrupt("inode %d: attribute leaf %d: entry past the block", n.ino, blk)
		}
		name := string(v[9 : 9+nl])
		if flags&(attrParent|attrIncomplete) != 0 {
			continue
		}
		val, err := f.remoteValue(n, es, vblk, vl)
		if err != nil {
			return err
		}
		if err := put(m, flags, name, val); err != nil {
			return err
		}
	}
	return nil
}

// remoteValue reads an attribute value kept in its own blocks of the
// attribute fork; on v5 each block begins with a header.
func (f *FS) remoteValue(n *dinode, es []extent, blk uint32, size int64) ([]byte, error) {
	if size > maxAttrValue {
		return nil, corrupt("inode %d: attribute value of %d bytes", n.ino, size)
	}
	bs := f.blockSize
	if f.version == 4 {
		v := make([]byte, size)
		return v, f.readFork(es, v, int64(blk)*bs)
	}
	const hdr = 56
	v := make([]byte, 0, size)
	b := make([]byte, bs)
	for int64(len(v)) < size {
		if err := f.readFork(es, b, int64(blk)*bs); err != nil {
			return nil, err
		}
		want := min(size-int64(len(v)), bs-hdr)
		if be.Uint32(b) != attrRmtMagic || int64(be.Uint32(b[4:])) != int64(len(v)) ||
			int64(be.Uint32(b[8:])) != want || be.Uint64(b[32:]) != n.ino || crcOf(b, 12) != le32(b[12:]) {
			return nil, corrupt("inode %d: bad remote attribute block %d", n.ino, blk)
		}
		v = append(v, b[hdr:hdr+want]...)
		blk++
	}
	return v, nil
}
