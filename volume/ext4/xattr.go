package ext4

import (
	"io/fs"
)

const (
	xattrMagic    = 0xea020000
	maxXattrValue = 64 << 10 // XATTR_SIZE_MAX

	xattrUser       = 1
	xattrACLAccess  = 2
	xattrACLDefault = 3
	xattrTrusted    = 4
	xattrSecurity   = 6
	xattrSystem     = 7
	xattrHurd       = 10
)

// xattr is one extended attribute as stored: a name index (namespace),
// the name within it, the value.
type xattr struct {
	index uint8
	name  string
	value []byte
}

// xattrs reads the inode's attributes: those in the inode's extra space,
// then those in its xattr block.
func (f *FS) xattrs(n *node) ([]xattr, error) {
	var xs []xattr
	if start := 128 + n.extra; f.sb.inodeSize > 128 && start+4 <= f.sb.inodeSize && le.Uint32(n.raw[start:]) == xattrMagic {
		region := n.raw[start+4:]
		var err error
		if xs, err = f.parseXattrs(n, region, region, "in-inode xattrs"); err != nil {
			return nil, err
		}
	}
	if n.fileACL != 0 {
		b, err := f.block(n.fileACL, "xattr block")
		if err != nil {
			return nil, err
		}
		if le.Uint32(b[0:]) != xattrMagic || le.Uint32(b[8:]) != 1 {
			return nil, corrupt("inode %d: bad xattr block %d", n.ino, n.fileACL)
		}
		if f.sb.csum() {
			var nb [8]byte
			le.PutUint64(nb[:], n.fileACL)
			c := crc32c(f.sb.csumSeed, nb[:])
			c = crc32c(c, b[:16])
			c = crc32c(c, zero4[:])
			c = crc32c(c, b[20:])
			if want := le.Uint32(b[16:]); c != want {
				return nil, corrupt("inode %d: xattr block %d checksum %#x, computed %#x", n.ino, n.fileACL, want, c)
			}
		}
		bx, err := f.parseXattrs(n, b[32:], b, "xattr block")
		if err != nil {
			return nil, err
		}
		xs = append(xs, bx...)
	}
	return xs, nil
}

// parseXattrs reads the entries at the start of ents, whose values are
// at offsets from the start of vals.
func (f *FS) parseXattrs(n *node, ents, vals []byte, where string) ([]xattr, error) {
	var xs []xattr
	for off := 0; ; {
		if off+4 > len(ents) {
			return nil, corrupt("inode %d: %s run past their space", n.ino, where)
		}
		if le.Uint32(ents[off:]) == 0 {
			return xs, nil
		}
		if off+16 > len(ents) {
			return nil, corrupt("inode %d: %s run past their space", n.ino, where)
		}
		e := ents[off:]
		nameLen := int(e[0])
		if off+16+nameLen > len(ents) {
			return nil, corrupt("inode %d: %s: name past the end", n.ino, where)
		}
		x := xattr{index: e[1], name: string(e[16 : 16+nameLen])}
		voff, vinum, vsize := int(le.Uint16(e[2:])), le.Uint32(e[4:]), le.Uint32(e[8:])
		if vsize > maxXattrValue {
			return nil, corrupt("inode %d: %s: value of %d bytes", n.ino, where, vsize)
		}
		if vinum != 0 {
			v, err := f.eaInodeValue(n, vinum, vsize)
			if err != nil {
				return nil, err
			}
			x.value = v
		} else {
			if voff+int(vsize) > len(vals) {
				return nil, corrupt("inode %d: %s: value past the end", n.ino, where)
			}
			x.value = vals[voff : voff+int(vsize) : voff+int(vsize)]
		}
		xs = append(xs, x)
		off += (16 + nameLen + 3) &^ 3
	}
}

// eaInodeValue reads a value stored in its own inode (ea_inode).
func (f *FS) eaInodeValue(n *node, vinum, vsize uint32) ([]byte, error) {
	if !f.sb.has(incompatEAInode) {
		return nil, corrupt("inode %d: xattr value in inode %d without ea_inode", n.ino, vinum)
	}
	if vinum == n.ino {
		return nil, corrupt("inode %d: xattr value in itself", n.ino)
	}
	v, err := f.node(vinum)
	if err != nil {
		return nil, err
	}
	if !v.has(flagEAInode) || v.typ() != sIFREG || v.size != int64(vsize) || v.has(flagInlineData) {
		return nil, corrupt("inode %d: xattr value inode %d is not one", n.ino, vinum)
	}
	b := make([]byte, vsize)
	if _, err := f.readData(v, b, 0); err != nil {
		return nil, err
	}
	return b, nil
}

// inlineData returns the data of an inline-data inode: i_block, then the
// value of its system.data attribute, cut to i_size.
func (f *FS) inlineData(n *node) ([]byte, error) {
	ib := n.iblock()
	if n.size <= int64(len(ib)) {
		return ib[:n.size], nil
	}
	xs, err := f.xattrs(n)
	if err != nil {
		return nil, err
	}
	for _, x := range xs {
		if x.index == xattrSystem && x.name == "data" {
			if n.size > int64(len(ib)+len(x.value)) {
				break
			}
			b := make([]byte, 0, n.size)
			b = append(b, ib...)
			return append(b, x.value[:n.size-int64(len(ib))]...), nil
		}
	}
	return nil, corrupt("inode %d: %d bytes of inline data, but not that many stored", n.ino, n.size)
}

// xattrPrefix is the namespace getfattr shows for a name index; "" for
// those the kernel does not list (system.data, encryption contexts, …).
func xattrPrefix(index uint8) string {
	switch index {
	case xattrUser:
		return "user."
	case xattrACLAccess:
		return "system.posix_acl_access"
	case xattrACLDefault:
		return "system.posix_acl_default"
	case xattrTrusted:
		return "trusted."
	case xattrSecurity:
		return "security."
	case xattrHurd:
		return "gnu."
	}
	return ""
}

// Xattrs lists the extended attributes of name (not following a final
// symbolic link) as getfattr names them. POSIX ACLs are converted from
// ext4's compact form to the one getxattr(2) returns (and setxattr(2)
// takes), so they can be restored as they are.
func (f *FS) Xattrs(name string) (map[string][]byte, error) {
	n, err := f.resolve("xattrs", name, false)
	if err != nil {
		return nil, err
	}
	xs, err := f.xattrs(n)
	if err != nil {
		return nil, &fs.PathError{Op: "xattrs", Path: name, Err: err}
	}
	m := make(map[string][]byte, len(xs))
	for _, x := range xs {
		p := xattrPrefix(x.index)
		if p == "" {
			continue
		}
		v := x.value
		if x.index == xattrACLAccess || x.index == xattrACLDefault {
			if x.name != "" {
				continue
			}
			if v, err = aclToXattr(v); err != nil {
				return nil, &fs.PathError{Op: "xattrs", Path: name, Err: corrupt("inode %d: %v", n.ino, err)}
			}
		} else {
			v = append([]byte(nil), v...)
		}
		m[p+x.name] = v
	}
	return m, nil
}

// ACL entry tags.
const (
	aclUserObj  = 0x01
	aclUser     = 0x02
	aclGroupObj = 0x04
	aclGroup    = 0x08
	aclMask     = 0x10
	aclOther    = 0x20
)

// aclToXattr converts an ext4 ACL (version 1, short entries for the
// owner, group, mask and other) to the posix_acl_xattr form (version 2,
// every entry 8 bytes, ACL_UNDEFINED_ID where no id applies).
func aclToXattr(b []byte) ([]byte, error) {
	if len(b) < 4 || le.Uint32(b) != 1 {
		return nil, corrupt("bad ACL header")
	}
	out := le.AppendUint32(make([]byte, 0, 2*len(b)), 2)
	for b = b[4:]; len(b) > 0; {
		if len(b) < 4 {
			return nil, corrupt("truncated ACL entry")
		}
		tag, perm := le.Uint16(b), le.Uint16(b[2:])
		id := uint32(0xffffffff)
		switch tag {
		case aclUser, aclGroup:
			if len(b) < 8 {
				return nil, corrupt("truncated ACL entry")
			}
			id = le.Uint32(b[4:])
			b = b[8:]
		case aclUserObj, aclGroupObj, aclMask, aclOther:
			b = b[4:]
		default:
			return nil, corrupt("unknown ACL tag %#x", tag)
		}
		out = le.AppendUint16(out, tag)
		out = le.AppendUint16(out, perm)
		out = le.AppendUint32(out, id)
	}
	return out, nil
}
