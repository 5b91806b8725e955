package ext4

import (
	"encoding/binary"
)

// The jbd2 journal (big-endian on disk).
const (
	jbdMagic      = 0xc03b3998
	jbdDescriptor = 1
	jbdCommit     = 2
	jbdSuperV1    = 3
	jbdSuperV2    = 4
	jbdRevoke     = 5

	jbdRevokeFeature = 0x1
	jbd64Bit         = 0x2
	jbdAsyncCommit   = 0x4
	jbdCsumV2        = 0x8
	jbdCsumV3        = 0x10
	jbdFastCommit    = 0x20

	tagEscape   = 0x1
	tagSameUUID = 0x2
	tagLast     = 0x8
)

var be = binary.BigEndian

// jblock is where the journal holds a filesystem block's newest copy: a
// logical block of the journal inode; escape says its first four bytes
// were the journal's magic, stored as zeros.
type jblock struct {
	lblk   uint32
	escape bool
}

// replay scans the journal of a filesystem that was not cleanly unmounted
// and records, for every block written by a committed transaction (and not
// revoked afterwards), the journal block that holds its newest copy. Reads
// then see the filesystem as the kernel would after recovery, without
// writing anything. A malformed transaction ends the log there, as a torn
// one would. The fast-commit area is not replayed.
func (f *FS) replay() error {
	s := &f.sb
	if s.compat&compatHasJournal == 0 {
		return nil // nothing to recover from
	}
	if s.journalInum == 0 {
		return unsupported("the filesystem needs recovery from an external journal")
	}
	jn, err := f.node(s.journalInum)
	if err != nil {
		return err
	}
	if jn.typ() != sIFREG {
		return corrupt("journal inode %d is not a regular file", s.journalInum)
	}
	f.jnode = jn
	bs := s.blockSize
	jsb := make([]byte, bs)
	if err := f.readJournal(jsb, 0); err != nil {
		return err
	}
	if be.Uint32(jsb) != jbdMagic || (be.Uint32(jsb[4:]) != jbdSuperV1 && be.Uint32(jsb[4:]) != jbdSuperV2) {
		return corrupt("bad journal superblock")
	}
	maxlen, first, seq, start := be.Uint32(jsb[16:]), be.Uint32(jsb[20:]), be.Uint32(jsb[24:]), be.Uint32(jsb[28:])
	if be.Uint32(jsb[12:]) != bs {
		return corrupt("journal block size %d in a filesystem of %d-byte blocks", be.Uint32(jsb[12:]), bs)
	}
	if start == 0 {
		return nil // the journal is empty
	}
	var incompat uint32
	if be.Uint32(jsb[4:]) == jbdSuperV2 {
		incompat = be.Uint32(jsb[40:])
	}
	if bad := incompat &^ (jbdRevokeFeature | jbd64Bit | jbdAsyncCommit | jbdCsumV2 | jbdCsumV3 | jbdFastCommit); bad != 0 {
		return unsupported("journal feature %#x", bad)
	}
	last := maxlen // one past the last block of the log
	if incompat&jbdFastCommit != 0 {
		fc := be.Uint32(jsb[0x54:])
		if fc == 0 {
			fc = 256
		}
		if fc < last {
			last -= fc
		}
	}
	if jblocks := uint64(jn.size) / uint64(bs); uint64(maxlen) > jblocks || first == 0 || first >= last || start < first || start >= last {
		return corrupt("journal of %d blocks, log %d..%d, start %d", maxlen, first, last, start)
	}
	tagBytes := 8
	switch {
	case incompat&jbdCsumV3 != 0:
		tagBytes = 16
	case incompat&jbdCsumV2 != 0:
		tagBytes += 2
		fallthrough
	default:
		if incompat&jbd64Bit != 0 {
			tagBytes += 4
		}
	}
	tail := 0 // the block tail that holds a checksum
	if incompat&(jbdCsumV2|jbdCsumV3) != 0 {
		tail = 4
	}

	type tag struct {
		fsblk uint64
		jb    jblock
	}
	type txn struct {
		seq  uint32
		tags []tag
	}
	var (
		done    []txn
		cur     = txn{seq: seq}
		revoked = map[uint64]uint32{} // block → newest revoking transaction
		pending = map[uint64]bool{}   // revoked by the current transaction
	)
	next := func(b uint32) uint32 {
		if b++; b >= last {
			b = first
		}
		return b
	}
	buf := make([]byte, bs)
	blk := start
scan:
	for steps := uint32(0); steps < last-first; steps++ {
		if err := f.readJournal(buf, blk); err != nil {
			break
		}
		if be.Uint32(buf) != jbdMagic || be.Uint32(buf[8:]) != cur.seq {
			break
		}
		switch be.Uint32(buf[4:]) {
		case jbdDescriptor:
			for off := 12; off+tagBytes <= int(bs)-tail; {
				t := buf[off:]
				fsblk := uint64(be.Uint32(t))
				var flags uint32
				if tagBytes == 16 {
					flags = be.Uint32(t[4:])
				} else {
					flags = uint32(be.Uint16(t[6:]))
				}
				if incompat&jbd64Bit != 0 {
					fsblk |= uint64(be.Uint32(t[8:])) << 32
				}
				off += tagBytes
				if flags&tagSameUUID == 0 {
					off += 16
				}
				blk = next(blk)
				if steps++; steps >= last-first {
					break scan
				}
				if fsblk < s.blocksCount {
					cur.tags = append(cur.tags, tag{fsblk, jblock{blk, flags&tagEscape != 0}})
				}
				if flags&tagLast != 0 {
					break
				}
			}
		case jbdCommit:
			for b := range pending {
				if r, ok := revoked[b]; !ok || int32(cur.seq-r) > 0 {
					revoked[b] = cur.seq
				}
			}
			clear(pending)
			done = append(done, cur)
			cur = txn{seq: cur.seq + 1}
		case jbdRevoke:
			if incompat&jbdRevokeFeature == 0 {
				break scan
			}
			rsize := 4
			if incompat&jbd64Bit != 0 {
				rsize = 8
			}
			count := int(be.Uint32(buf[12:]))
			if count > int(bs)-tail || count < 16 {
				break scan
			}
			for off := 16; off+rsize <= count; off += rsize {
				var b uint64
				if rsize == 8 {
					b = be.Uint64(buf[off:])
				} else {
					b = uint64(be.Uint32(buf[off:]))
				}
				pending[b] = true
			}
		default:
			break scan
		}
		blk = next(blk)
	}

	overlay := map[uint64]jblock{}
	for _, t := range done {
		for _, tg := range t.tags {
			if r, ok := revoked[tg.fsblk]; ok && int32(r-t.seq) >= 0 {
				continue // revoked by this or a later transaction
			}
			overlay[tg.fsblk] = tg.jb
		}
	}
	if len(overlay) == 0 {
		return nil
	}
	// Start again with the replayed view: drop what was cached while
	// reading the journal, and take the journal's copy of the superblock.
	f.journal = overlay
	f.blocks = newLRU[uint64, []byte](f.blocks.budget)
	f.nodes = newLRU[uint32, *node](f.nodes.budget)
	sbBlk := uint64(superOff / bs)
	if _, ok := overlay[sbBlk]; ok {
		b := make([]byte, bs)
		if err := f.readBlocks(b, sbBlk); err != nil {
			return err
		}
		saved := f.sb
		if err := f.parseSuper(b[superOff%bs : superOff%bs+1024]); err != nil {
			f.sb = saved // keep the on-disk superblock
		}
	}
	return nil
}

// readJournal reads logical block lblk of the journal inode.
func (f *FS) readJournal(p []byte, lblk uint32) error {
	r, err := f.mapBlock(f.jnode, uint64(lblk))
	if err != nil {
		return err
	}
	if r.zero {
		return corrupt("journal block %d is not allocated", lblk)
	}
	return f.readAt(p, int64(r.pblk)*int64(f.sb.blockSize))
}

// journalBlock reads the start of a filesystem block from its journal
// copy.
func (f *FS) journalBlock(p []byte, jb jblock) error {
	b := make([]byte, f.sb.blockSize)
	if err := f.readJournal(b, jb.lblk); err != nil {
		return err
	}
	if jb.escape {
		be.PutUint32(b, jbdMagic)
	}
	copy(p, b)
	return nil
}
