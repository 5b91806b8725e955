package vmdk

import (
	"context"
	"encoding/binary"

	"github.com/vdisk-project/vdisk/disk"
)

// checkSESparse verifies an SEsparse extent: every grain directory and
// grain table entry, grains inside the grain section and named once, and,
// for extents laid out as vdisk writes them, the free bitmap and back map
// against the tables (doc.go, "SEsparse written by vdisk"). Grains below
// the high-water mark that no table names and that the free bitmap does
// not mark free are leaks (a crash between writing a grain and its table);
// repair marks them free. Wrong free bits or back map entries of named
// grains are errors; repair rewrites both maps from the tables, which are
// the authority.
func (c *checker) checkSESparse(ctx context.Context, name string, size int64, repair bool) error {
	f, err := c.fsys.OpenFile(name, openMode(!repair), 0)
	if err != nil {
		c.problem(name, "error", "cannot open extent: %v", err)
		return nil
	}
	defer f.Close()
	e, err := openSESparse(f, name, size, true)
	if err != nil {
		c.problem(name, "error", "%v", err)
		return nil
	}
	h := e.h
	hw := h.grainsSize / seGrainSectors
	fileGrains := uint64(0)
	if g := uint64(size) / disk.SectorSize; g > h.grainsOff {
		fileGrains = (g - h.grainsOff) / seGrainSectors
	}
	maps := h.freeBitmapOff != 0 && h.backmapOff != 0 && h.reservedGrains() >= hw
	// Grains tracked: those in the file, and with the maps every grain they
	// describe (the sections lie in the file, so this is bounded by its
	// size, whatever grains_size says).
	track := fileGrains
	if maps {
		track = max(track, hw)
	}
	track = min(track, hw)
	named := make([]uint64, divRoundUp(track, 64)) // bit set: some entry names the grain
	owner := map[uint64]uint64{}                   // grain -> virtual grain, for the back map
	maxGT := uint64(0)
	le := binary.LittleEndian
	b := make([]byte, seGTEntries*8)
	for _, i := range e.gd.idx {
		if err := ctx.Err(); err != nil {
			return err
		}
		gde := e.gd.get(i)
		idx := gde & 0xffffffff
		if gde>>32 != seGDEAllocated>>32 || (idx+1)*seGTSectors > h.gtSize {
			c.problem(name, "error", "grain directory entry %d is invalid (%#x)", i, gde)
			continue
		}
		maxGT = max(maxGT, idx+1)
		if err := e.readZeroPadded(b, int64(h.gtOff+idx*seGTSectors)*disk.SectorSize); err != nil {
			c.problem(name, "error", "cannot read grain table %d: %v", idx, err)
			continue
		}
		for j := range uint64(seGTEntries) {
			v := le.Uint64(b[j*8:])
			vg := uint64(i)*seGTEntries + j
			switch v >> 60 {
			case 0:
				if v != 0 {
					c.problem(name, "error", "grain table entry of grain %d is invalid (%#x)", vg, v)
				}
				continue
			case 1, 2:
				continue
			case 3:
			default:
				c.problem(name, "error", "grain table entry of grain %d has unknown type %#x", vg, v)
				continue
			}
			gi := (v&0x0FFF000000000000)>>48 | (v&0x0000FFFFFFFFFFFF)<<12
			switch {
			case gi >= hw:
				c.problem(name, "error", "grain %d of offset %d lies past the grain section (%d grains)", gi, vg*seGrainBytes, hw)
				continue
			case gi >= fileGrains:
				c.problem(name, "error", "grain %d of offset %d lies past the end of the file", gi, vg*seGrainBytes)
				if gi >= track {
					continue
				}
			}
			if named[gi/64]&(1<<(gi%64)) != 0 {
				c.problem(name, "error", "grain %d is named by two grain table entries (one of them offset %d)", gi, vg*seGrainBytes)
				continue
			}
			named[gi/64] |= 1 << (gi % 64)
			if maps {
				owner[gi] = vg
			}
			if vg*seGrainBytes < uint64(e.size()) {
				c.r.AllocatedBytes += min(seGrainBytes, e.size()-int64(vg*seGrainBytes))
			}
		}
	}
	vol := make([]byte, disk.SectorSize)
	f.ReadAt(vol, int64(h.volatileOff)*disk.SectorSize)
	var fixes []func() error
	if maps && le.Uint64(vol[8:]) < maxGT {
		p := c.problem(name, "warning", "the volatile header's next free grain table %d is below a table in use (%d)", le.Uint64(vol[8:]), maxGT-1)
		fixes = append(fixes, func() error {
			le.PutUint64(vol[8:], maxGT)
			if _, err := f.WriteAt(vol, int64(h.volatileOff)*disk.SectorSize); err != nil {
				return err
			}
			c.repaired(p)
			return nil
		})
	}
	if maps && track == hw {
		// Compare the maps page by page with what the tables say.
		var badBits, badBack, leaks, stale int
		var rewrite []sePageWrite
		const chunk = 512 * sePageSize // grains per back map chunk: 256 Ki
		bm := make([]byte, chunk*8)
		fb := make([]byte, chunk/8)
		for first := uint64(0); first < hw; first += chunk {
			if err := ctx.Err(); err != nil {
				return err
			}
			n := min(chunk, hw-first)
			fbOff := int64(h.freeBitmapOff)*disk.SectorSize + int64(first/8)
			bmOff := int64(h.backmapOff)*disk.SectorSize + int64(first*8)
			if err := e.readZeroPadded(fb[:divRoundUp(n, 8)], fbOff); err != nil {
				return err
			}
			if err := e.readZeroPadded(bm[:n*8], bmOff); err != nil {
				return err
			}
			changed := false
			for k := range n {
				gi := first + k
				free := fb[k/8]&(1<<(k%8)) != 0
				back := le.Uint64(bm[k*8:])
				if named[gi/64]&(1<<(gi%64)) != 0 {
					want := seBackmap | owner[gi]
					if free {
						badBits++
						fb[k/8] &^= 1 << (k % 8)
						changed = true
					}
					if back != want {
						badBack++
						le.PutUint64(bm[k*8:], want)
						changed = true
					}
					continue
				}
				if !free {
					leaks++
					fb[k/8] |= 1 << (k % 8)
					le.PutUint64(bm[k*8:], 0)
					changed = true
				}
				if free && back != 0 {
					stale++
					le.PutUint64(bm[k*8:], 0)
					changed = true
				}
			}
			if changed {
				rewrite = append(rewrite, sePageWrite{off: fbOff, b: append([]byte(nil), fb[:divRoundUp(n, 8)]...)},
					sePageWrite{off: bmOff, b: append([]byte(nil), bm[:n*8]...)})
			}
		}
		var ps []*Problem
		if badBits > 0 {
			ps = append(ps, c.problem(name, "error", "the free bitmap marks %d grains in use as free", badBits))
		}
		if badBack > 0 {
			ps = append(ps, c.problem(name, "error", "%d back map entries do not name the grain table entry that uses the grain", badBack))
		}
		if stale > 0 {
			ps = append(ps, c.problem(name, "warning", "%d free grains still have back map entries", stale))
		}
		if leaks > 0 {
			c.r.Leaks += leaks
			c.r.LeakedBytes += int64(leaks) * seGrainBytes
			ps = append(ps, c.problem(name, "leak", "%d grains (%d bytes) are allocated but unreferenced", leaks, int64(leaks)*seGrainBytes))
		}
		if len(rewrite) > 0 {
			errorsToo := badBits > 0 || badBack > 0
			fixes = append(fixes, func() error {
				if errorsToo && c.o.Repair != RepairAll {
					return nil
				}
				for _, w := range rewrite {
					if _, err := f.WriteAt(w.b, w.off); err != nil {
						return err
					}
				}
				for _, p := range ps {
					c.repaired(p)
				}
				return nil
			})
		}
	}
	if repair {
		for _, fix := range fixes {
			if err := fix(); err != nil {
				return disk.Wrap(err, "vmdk: repair", name, -1)
			}
		}
		if len(fixes) > 0 {
			if err := f.Sync(); err != nil {
				return disk.Wrap(err, "vmdk: repair", name, -1)
			}
		}
	}
	return nil
}
