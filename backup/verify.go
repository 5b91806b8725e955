package backup

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/vdisk-project/vdisk/backup/storage"
	"github.com/vdisk-project/vdisk/disk"
)

// VerifyOptions tune Verify.
type VerifyOptions struct {
	// ReadData also reads packs and checks that every chunk decrypts,
	// decompresses and hashes to its ID.
	ReadData bool
	// Fraction, with ReadData, reads only about this fraction (0 < f < 1)
	// of the packs, chosen at random. Zero means all.
	Fraction float64
	// Subset, with ReadData, reads only subset n of m ("n/m", 1 ≤ n ≤ m),
	// chosen by pack name, so that m runs with n = 1…m read every pack
	// once. Empty means all.
	Subset string
	// Progress, when set, is called with the packs read so far and the
	// packs to read.
	Progress func(done, total int)
}

// VerifyReport is what Verify found.
type VerifyReport struct {
	Points     int   // manifests checked
	Disks      int   // chunk maps checked
	Chunks     int   // distinct data chunks referenced
	Packs      int   // packs in the store
	PacksRead  int   // packs read (ReadData)
	BytesRead  int64 // bytes of packs read
	ChunksRead int   // chunks opened and hashed
	Damage     []Damage
}

// OK reports whether no damage was found.
func (v *VerifyReport) OK() bool { return len(v.Damage) == 0 }

// Damage is one problem and what it makes unreadable.
type Damage struct {
	Object   string     // the damaged or missing object
	Chunk    string     // the chunk ID concerned, if any (hex)
	Problem  string     // what is wrong
	Affected []Affected // the ranges of points that cannot be restored because of it
}

// Affected is a byte range of one disk of one point.
type Affected struct {
	Point string
	Disk  string
	Off   int64
	Len   int64
}

func (d Damage) String() string {
	var b strings.Builder
	b.WriteString(d.Object)
	if d.Chunk != "" {
		b.WriteString(" chunk " + d.Chunk[:min(16, len(d.Chunk))])
	}
	b.WriteString(": " + d.Problem)
	for _, a := range d.Affected {
		fmt.Fprintf(&b, "; point %s disk %s bytes %d+%d", a.Point[:min(8, len(a.Point))], a.Disk, a.Off, a.Len)
	}
	return b.String()
}

// Verify checks the repository (see VerifyOptions and docs/backup.md). It
// returns an error only when it could not run (the store unreachable); what
// is damaged is in the report.
func (r *Repository) Verify(ctx context.Context, opts VerifyOptions) (*VerifyReport, error) {
	subN, subM := 0, 0
	if opts.Subset != "" {
		a, b, ok := strings.Cut(opts.Subset, "/")
		n, err1 := strconv.Atoi(a)
		m, err2 := strconv.Atoi(b)
		if !ok || err1 != nil || err2 != nil || n < 1 || n > m {
			return nil, disk.Errorf(disk.ErrInvalid, "backup: verify: subset %q is not n/m with 1 ≤ n ≤ m", opts.Subset)
		}
		subN, subM = n, m
	}
	if opts.Fraction < 0 || opts.Fraction > 1 {
		return nil, disk.Errorf(disk.ErrInvalid, "backup: verify: fraction %v outside 0…1", opts.Fraction)
	}
	// A fresh view of the index: only what the store holds now.
	v := &Repository{st: r.st, cfg: r.cfg, c: r.c, idx: newIndex()}
	if _, err := v.refresh(ctx); err != nil {
		return nil, err
	}
	rep := &VerifyReport{}
	bad := map[chunkID]*Damage{}
	for name, err := range v.idx.damaged {
		rep.Damage = append(rep.Damage, Damage{Object: name, Problem: err.Error()})
	}

	// Pass 1: manifests and maps; which chunks are referenced.
	ids, err := v.pointIDs(ctx)
	if err != nil {
		return nil, err
	}
	refs := map[chunkID]struct{}{}
	var points []*Point
	for _, id := range ids {
		p, err := v.readPoint(ctx, id)
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			rep.Damage = append(rep.Damage, Damage{Object: pointsPrefix + id, Problem: err.Error(), Affected: []Affected{{Point: id}}})
			continue
		}
		rep.Points++
		points = append(points, p)
		for _, d := range p.Disks {
			m, err := v.loadMap(ctx, &d)
			if err != nil {
				if ctx.Err() != nil {
					return nil, ctx.Err()
				}
				rep.Damage = append(rep.Damage, Damage{Object: d.Map, Problem: err.Error(), Affected: []Affected{{Point: p.ID, Disk: d.Name, Len: d.Size}}})
				continue
			}
			rep.Disks++
			for _, id := range m.ids {
				if id != holeID && id != zeroID {
					refs[id] = struct{}{}
				}
			}
		}
	}
	rep.Chunks = len(refs)
	v.idx.mu.RLock()
	for _, ps := range v.idx.packs {
		if ps.listed {
			rep.Packs++
		}
	}
	v.idx.mu.RUnlock()
	adopted := false
	for id := range refs {
		p, _, ok := v.idx.lookup(id, false)
		if !ok && !adopted {
			// A racing prune may have condemned a pack a new point uses;
			// the data is there until the next prune re-indexes it.
			if err := v.adoptCondemned(ctx); err != nil {
				return nil, err
			}
			adopted = true
			p, _, ok = v.idx.lookup(id, false)
		}
		switch {
		case !ok:
			bad[id] = &Damage{Object: indexPrefix, Chunk: id.String(), Problem: "chunk is in no index"}
		case !v.packListed(p):
			bad[id] = &Damage{Object: p.object(), Chunk: id.String(), Problem: "pack is missing"}
		}
	}

	// Pass 2: read packs.
	if opts.ReadData {
		if err := v.verifyPacks(ctx, opts, subN, subM, refs, bad, rep); err != nil {
			return nil, err
		}
	}

	// Attribute damaged chunks to points, disks and ranges.
	if len(bad) > 0 {
		for _, p := range points {
			for _, d := range p.Disks {
				m, err := v.loadMap(ctx, &d)
				if err != nil {
					continue
				}
				for i, id := range m.ids {
					dm := bad[id]
					if dm == nil {
						continue
					}
					off, n := int64(i)*m.chunkSize, m.chunkLen(int64(i))
					if k := len(dm.Affected) - 1; k >= 0 && dm.Affected[k].Point == p.ID && dm.Affected[k].Disk == d.Name && dm.Affected[k].Off+dm.Affected[k].Len == off {
						dm.Affected[k].Len += n
					} else {
						dm.Affected = append(dm.Affected, Affected{Point: p.ID, Disk: d.Name, Off: off, Len: n})
					}
				}
			}
		}
		keys := make([]chunkID, 0, len(bad))
		for id := range bad {
			keys = append(keys, id)
		}
		slices.SortFunc(keys, func(a, b chunkID) int { return strings.Compare(bad[a].Object+a.String(), bad[b].Object+b.String()) })
		for _, id := range keys {
			rep.Damage = append(rep.Damage, *bad[id])
		}
	}
	return rep, nil
}

func (r *Repository) packListed(p packName) bool {
	r.idx.mu.RLock()
	defer r.idx.mu.RUnlock()
	n, ok := r.idx.packNum[p]
	return ok && r.idx.packs[n].listed
}

// verifyPacks reads the selected packs and opens their chunks.
func (r *Repository) verifyPacks(ctx context.Context, opts VerifyOptions, subN, subM int, refs map[chunkID]struct{}, bad map[chunkID]*Damage, rep *VerifyReport) error {
	// The index's view of each pack: id → ref.
	byPack := map[packName]map[chunkID]blobRef{}
	r.idx.mu.RLock()
	for _, e := range r.idx.sorted {
		ps := r.idx.packs[e.loc.pack]
		if byPack[ps.name] == nil {
			byPack[ps.name] = map[chunkID]blobRef{}
		}
		byPack[ps.name][e.id] = e.loc.blobRef
	}
	var selected []packState
	for _, ps := range r.idx.packs {
		if !ps.listed {
			continue
		}
		h := sha256.Sum256(ps.name[:])
		x := binary.LittleEndian.Uint64(h[:])
		if subM > 0 && int(x%uint64(subM)) != subN-1 {
			continue
		}
		if opts.Fraction > 0 && opts.Fraction < 1 && float64(binary.LittleEndian.Uint64(randomBytes(8))>>11)/(1<<53) >= opts.Fraction {
			continue
		}
		selected = append(selected, ps)
	}
	r.idx.mu.RUnlock()
	mark := func(id chunkID, obj, problem string) {
		if _, ok := refs[id]; !ok {
			return // unreferenced garbage: prune's business
		}
		if bad[id] == nil {
			bad[id] = &Damage{Object: obj, Chunk: id.String(), Problem: problem}
		}
	}
	buf := make([]byte, 0, r.cfg.ChunkSize)
	for k, ps := range selected {
		if err := ctx.Err(); err != nil {
			return err
		}
		name := ps.name.object()
		data, err := r.st.Get(ctx, name, maxPackObject)
		rep.PacksRead++
		if err != nil && !errors.Is(err, disk.ErrNotFound) && disk.CodeOf(err) != disk.ErrOutOfMemory {
			return fmt.Errorf("backup: verify: %w", err)
		}
		var es []packEntry
		if err == nil {
			rep.BytesRead += int64(len(data))
			es, err = r.trailerOf(name, data)
		}
		if err != nil {
			for id := range byPack[ps.name] {
				mark(id, name, err.Error())
			}
			if _, listed := byPack[ps.name]; !listed {
				rep.Damage = append(rep.Damage, Damage{Object: name, Problem: err.Error()})
			}
			continue
		}
		inPack := map[chunkID]bool{}
		for _, e := range es {
			inPack[e.id] = true
			if ref, ok := byPack[ps.name][e.id]; ok && ref != e.blobRef {
				mark(e.id, name, "pack trailer and index disagree on where the chunk is")
			}
			rep.ChunksRead++
			sealed := append([]byte(nil), data[e.off:e.off+e.length]...)
			if _, err := r.c.openChunk(buf, e.id, sealed, int(e.rawLen), name, false); err != nil {
				mark(e.id, name, err.Error())
			}
		}
		for id := range byPack[ps.name] {
			if !inPack[id] {
				mark(id, name, "the index places the chunk in a pack whose trailer does not list it")
			}
		}
		if opts.Progress != nil {
			opts.Progress(k+1, len(selected))
		}
	}
	return nil
}

// trailerOf parses the trailer of a whole pack held in memory.
func (r *Repository) trailerOf(name string, data []byte) ([]packEntry, error) {
	size := int64(len(data))
	if size < packFooterSize || string(data[size-4:]) != packMagic {
		return nil, corrupt(name, "bad pack magic (truncated pack?)")
	}
	tl := int64(binary.LittleEndian.Uint32(data[size-8:]))
	if tl > maxTrailer || tl > size-packFooterSize {
		return nil, corrupt(name, "pack trailer length %d in a pack of %d bytes", tl, size)
	}
	p, err := r.c.openMeta(name, "pack", data[size-packFooterSize-tl:size-packFooterSize])
	if err != nil {
		return nil, err
	}
	return decodeTrailer(name, p, size-packFooterSize-tl)
}

// RebuildReport is what RebuildIndex did.
type RebuildReport struct {
	Packs   int      // packs indexed
	Chunks  int      // chunks indexed
	Indexes int      // index objects written
	Removed int      // old index objects deleted
	Damaged []string // packs whose trailer could not be read (with the reason)
}

// RebuildIndex rebuilds the index from the packs' trailers: it writes new
// index objects covering every readable pack and then deletes the old ones.
// It repairs a lost or damaged index and adopts the packs of crashed
// backups. Condemned packs are left out. Run it when no prune runs.
func (r *Repository) RebuildIndex(ctx context.Context) (*RebuildReport, error) {
	var old []string
	if err := r.st.List(ctx, indexPrefix, func(in storage.Info) error {
		old = append(old, in.Name)
		return nil
	}); err != nil {
		return nil, fmt.Errorf("backup: rebuild index: %w", err)
	}
	condemned, err := r.loadCondemned(ctx)
	if err != nil {
		return nil, err
	}
	var packs []storage.Info
	if err := r.st.List(ctx, dataPrefix, func(in storage.Info) error {
		packs = append(packs, in)
		return nil
	}); err != nil {
		return nil, fmt.Errorf("backup: rebuild index: %w", err)
	}
	rep := &RebuildReport{}
	all := map[packName][]packEntry{}
	for _, in := range packs {
		pn, ok := parsePackObject(in.Name)
		if !ok {
			continue
		}
		if _, c := condemned.packs[pn]; c {
			continue
		}
		es, err := r.readTrailer(ctx, in.Name, in.Size)
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			rep.Damaged = append(rep.Damaged, fmt.Sprintf("%s: %v", in.Name, err))
			continue
		}
		all[pn] = es
		rep.Packs++
		rep.Chunks += len(es)
	}
	names, _, err := r.writeIndexes(ctx, all)
	if err != nil {
		return nil, err
	}
	rep.Indexes = len(names)
	for _, name := range old {
		if err := r.st.Delete(ctx, name); err != nil {
			return rep, fmt.Errorf("backup: rebuild index: %w", err)
		}
		rep.Removed++
	}
	if _, err := r.refresh(ctx); err != nil {
		return rep, err
	}
	return rep, nil
}
