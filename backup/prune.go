package backup

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/vdisk-project/vdisk/backup/storage"
	"github.com/vdisk-project/vdisk/disk"
)

// Policy says which points Forget keeps, per source, with restic's
// semantics: a point is kept when any rule keeps it. For the bucket rules,
// the newest point of each of the n most recent hours, days, ISO weeks,
// months or years that have points is kept (times in UTC). A negative count
// means "all".
type Policy struct {
	KeepLast    int
	KeepHourly  int
	KeepDaily   int
	KeepWeekly  int
	KeepMonthly int
	KeepYearly  int
	// KeepTags keeps every point carrying one of these tags.
	KeepTags []string
}

func (p Policy) empty() bool {
	return p.KeepLast == 0 && p.KeepHourly == 0 && p.KeepDaily == 0 && p.KeepWeekly == 0 &&
		p.KeepMonthly == 0 && p.KeepYearly == 0 && len(p.KeepTags) == 0
}

// ForgetResult lists what Forget kept and removed (or would, in a dry run).
type ForgetResult struct {
	Keep    []*Point
	Remove  []*Point
	Reasons map[string][]string // point ID → the rules that keep it
}

// Forget applies pol to the points of each source and deletes the
// manifests and maps of the points it does not keep (unless dryRun). The
// chunks are reclaimed by Prune. An empty policy is refused with
// disk.ErrInvalid: it would forget everything. A damaged manifest stops
// Forget (its point's time and source are unknown).
func (r *Repository) Forget(ctx context.Context, pol Policy, dryRun bool) (*ForgetResult, error) {
	if pol.empty() {
		return nil, disk.Errorf(disk.ErrInvalid, "backup: forget: empty policy (it would forget every point)")
	}
	ps, err := r.Points(ctx)
	if err != nil {
		return nil, err
	}
	bySource := map[string][]*Point{}
	var sources []string
	for _, p := range ps {
		if _, ok := bySource[p.Source]; !ok {
			sources = append(sources, p.Source)
		}
		bySource[p.Source] = append(bySource[p.Source], p)
	}
	res := &ForgetResult{Reasons: map[string][]string{}}
	for _, s := range sources {
		group := bySource[s]
		slices.SortStableFunc(group, func(a, b *Point) int { return b.Time.Compare(a.Time) }) // newest first
		keep := applyPolicy(group, pol, res.Reasons)
		for i, p := range group {
			if keep[i] {
				res.Keep = append(res.Keep, p)
			} else {
				res.Remove = append(res.Remove, p)
			}
		}
	}
	if dryRun {
		return res, nil
	}
	for _, p := range res.Remove {
		// Manifest first: the point disappears whole; orphan maps are
		// reclaimed by prune if a crash stops us here.
		if err := r.st.Delete(ctx, pointsPrefix+p.ID); err != nil {
			return res, fmt.Errorf("backup: forget %s: %w", p.ID, err)
		}
		for _, d := range p.Disks {
			if err := r.st.Delete(ctx, d.Map); err != nil {
				return res, fmt.Errorf("backup: forget %s: %w", p.ID, err)
			}
		}
	}
	return res, nil
}

func applyPolicy(group []*Point, pol Policy, reasons map[string][]string) []bool {
	keep := make([]bool, len(group))
	add := func(i int, why string) {
		keep[i] = true
		reasons[group[i].ID] = append(reasons[group[i].ID], why)
	}
	for i := range group {
		if pol.KeepLast < 0 || i < pol.KeepLast {
			add(i, "last")
		}
	}
	buckets := []struct {
		n    int
		name string
		key  func(time.Time) string
	}{
		{pol.KeepHourly, "hourly", func(t time.Time) string { return t.Format("2006-01-02 15") }},
		{pol.KeepDaily, "daily", func(t time.Time) string { return t.Format("2006-01-02") }},
		{pol.KeepWeekly, "weekly", func(t time.Time) string { y, w := t.ISOWeek(); return fmt.Sprintf("%d-%02d", y, w) }},
		{pol.KeepMonthly, "monthly", func(t time.Time) string { return t.Format("2006-01") }},
		{pol.KeepYearly, "yearly", func(t time.Time) string { return t.Format("2006") }},
	}
	for _, b := range buckets {
		if b.n == 0 {
			continue
		}
		last, count := "", 0
		for i, p := range group {
			if b.n > 0 && count >= b.n {
				break
			}
			k := b.key(p.Time.UTC())
			if k != last {
				add(i, b.name)
				last = k
				count++
			}
		}
	}
	for i, p := range group {
		for _, t := range pol.KeepTags {
			if slices.Contains(p.Tags, t) {
				add(i, "tag "+t)
				break
			}
		}
	}
	return keep
}

// DefaultGrace is Prune's default grace period: a backup must finish
// within it (docs/backup.md).
const DefaultGrace = 24 * time.Hour

// DefaultRepackUnused is Prune's default repacking threshold: packs at
// least half dead are repacked.
const DefaultRepackUnused = 0.5

// DefaultCheckpointMaxAge is how long Prune keeps an unfinished backup's
// checkpoint.
const DefaultCheckpointMaxAge = 7 * 24 * time.Hour

// PruneOptions tune Prune.
type PruneOptions struct {
	// Grace is the grace period: no pack younger than it is deleted, and a
	// pack is deleted only once it has been condemned for that long. Zero
	// means DefaultGrace; a negative value means none, which is safe only
	// when no backup runs at the same time.
	Grace time.Duration
	// CheckpointMaxAge: checkpoints older than this are deleted and their
	// chunks no longer kept. Zero means DefaultCheckpointMaxAge.
	CheckpointMaxAge time.Duration
	// RepackUnused: a pack with live chunks whose dead bytes are at least
	// this fraction of its bytes is repacked (its live chunks copied into
	// a new pack, the old one condemned). Zero means DefaultRepackUnused;
	// a value above 1 disables repacking.
	RepackUnused float64
	// DryRun computes the result without changing anything.
	DryRun bool
	// Now is the clock. Default time.Now.
	Now func() time.Time
}

// PruneResult is what Prune did (or would do, in a dry run).
type PruneResult struct {
	LiveChunks         int
	PacksKept          int
	PacksCondemned     int   // newly removed from the index, deleted by a later prune
	PacksRestored      int   // condemned earlier, referenced again, put back in the index
	PacksDeleted       int   // deleted now
	BytesDeleted       int64 // bytes of packs deleted
	BytesUnused        int64 // dead chunks left in partly live packs (below RepackUnused)
	PacksRepacked      int   // partly dead packs whose live chunks were copied, then condemned
	BytesRepacked      int64 // bytes of live chunks copied
	IndexesWritten     int
	IndexesDeleted     int
	MapsDeleted        int // orphan maps (no manifest)
	CheckpointsDeleted int
}

// Prune deletes what no point (and no live checkpoint) needs, by the rules
// of docs/backup.md: mark from every map and checkpoint, condemn fully dead
// packs older than the grace period, delete packs condemned longer ago than
// the grace period and still not needed, repack partly dead packs, and
// replace the index objects by one index of what remains. Prune refuses to
// run (with the error) when a manifest, map or checkpoint cannot be read,
// since it could not tell what they reference.
func (r *Repository) Prune(ctx context.Context, opts PruneOptions) (*PruneResult, error) {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Grace == 0 {
		opts.Grace = DefaultGrace
	}
	opts.Grace = max(opts.Grace, 0)
	if opts.RepackUnused <= 0 {
		opts.RepackUnused = DefaultRepackUnused
	}
	if opts.CheckpointMaxAge <= 0 {
		opts.CheckpointMaxAge = DefaultCheckpointMaxAge
	}
	now := opts.Now()
	res := &PruneResult{}
	// A fresh view: every index object, every pack.
	v := &Repository{st: r.st, cfg: r.cfg, c: r.c, idx: newIndex()}
	if _, err := v.refresh(ctx); err != nil {
		return nil, err
	}
	if len(v.idx.damaged) > 0 {
		for name, err := range v.idx.damaged {
			return nil, fmt.Errorf("backup: prune: damaged index %s (run RebuildIndex): %w", name, err)
		}
	}

	// Mark.
	live := map[chunkID]struct{}{}
	ids, err := v.pointIDs(ctx)
	if err != nil {
		return nil, err
	}
	liveMaps := map[string]bool{}
	for _, id := range ids {
		p, err := v.readPoint(ctx, id)
		if errors.Is(err, disk.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("backup: prune: %w", err)
		}
		for _, d := range p.Disks {
			liveMaps[d.Map] = true
			m, err := v.loadMap(ctx, &d)
			if errors.Is(err, disk.ErrNotFound) {
				if _, serr := v.st.Stat(ctx, pointsPrefix+p.ID); errors.Is(serr, disk.ErrNotFound) {
					break // forgotten while we read it
				}
			}
			if err != nil {
				return nil, fmt.Errorf("backup: prune: %w", err)
			}
			for _, id := range m.ids {
				live[id] = struct{}{}
			}
		}
	}
	var oldCheckpoints []string
	var ckpts []storage.Info
	if err := v.st.List(ctx, checkPrefix, func(in storage.Info) error {
		ckpts = append(ckpts, in)
		return nil
	}); err != nil {
		return nil, fmt.Errorf("backup: prune: list checkpoints: %w", err)
	}
	for _, in := range ckpts {
		if now.Sub(in.ModTime) > opts.CheckpointMaxAge {
			oldCheckpoints = append(oldCheckpoints, in.Name)
			continue
		}
		_, maps, err := v.readCheckpoint(ctx, in.Name)
		if errors.Is(err, disk.ErrNotFound) {
			continue
		}
		if disk.CodeOf(err) == disk.ErrCorrupt {
			// Damaged: no backup can resume from it; garbage.
			oldCheckpoints = append(oldCheckpoints, in.Name)
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("backup: prune: %w", err)
		}
		for _, m := range maps {
			for _, id := range m.ids {
				live[id] = struct{}{}
			}
		}
	}
	delete(live, holeID)
	delete(live, zeroID)
	delete(live, pendingID)
	res.LiveChunks = len(live)

	// What each pack holds, from the index or, for unindexed packs, from
	// their trailer.
	entries := map[packName][]packEntry{}
	v.idx.mu.RLock()
	for _, e := range v.idx.sorted {
		p := v.idx.packs[e.loc.pack].name
		entries[p] = append(entries[p], packEntry{id: e.id, blobRef: e.loc.blobRef})
	}
	packs := slices.Clone(v.idx.packs)
	v.idx.mu.RUnlock()
	condemned, err := v.loadCondemned(ctx)
	if err != nil {
		return nil, err
	}

	newIndex := map[packName][]packEntry{}
	var toDelete []packState
	keepCondemned := map[packName]time.Time{} // still condemned after this prune
	var newlyCondemned []packName
	changed := false
	type condemnedPack struct {
		ps packState
		es []packEntry
		at time.Time
	}
	var wasCondemned []condemnedPack
	rp := &repacker{r: r, ctx: ctx, index: newIndex, res: res}
	// Phase 1: packs not condemned: keep, repack or condemn.
	for _, ps := range packs {
		if !ps.listed {
			continue // in an index but gone: dropped from the new index
		}
		es, indexed := entries[ps.name]
		if !indexed {
			var err error
			es, err = v.readTrailer(ctx, ps.name.object(), ps.size)
			if err != nil {
				if ctx.Err() != nil {
					return nil, ctx.Err()
				}
				res.PacksKept++ // unreadable: leave it for RebuildIndex/verify to report
				continue
			}
			changed = true // adopted
		}
		if ct, ok := condemned.packs[ps.name]; ok {
			wasCondemned = append(wasCondemned, condemnedPack{ps, es, ct})
			continue
		}
		var liveN int
		var used, unused int64
		for _, e := range es {
			if _, ok := live[e.id]; ok {
				liveN++
				used += int64(e.length)
			} else {
				unused += int64(e.length)
			}
		}
		young := now.Sub(ps.mod) < opts.Grace
		switch {
		case liveN > 0 && !young && opts.RepackUnused <= 1 && unused > 0 &&
			float64(unused) >= opts.RepackUnused*float64(used+unused):
			// Partly dead: copy the live sealed chunks (they need no
			// decryption: their AAD is their ID) into new packs, then
			// condemn the old one.
			if !opts.DryRun {
				if err := rp.repack(ps, es, live); err != nil {
					return res, err
				}
			}
			newlyCondemned = append(newlyCondemned, ps.name)
			res.PacksRepacked++
			res.BytesRepacked += used
			changed = true
		case liveN > 0 || young:
			newIndex[ps.name] = es
			res.PacksKept++
			res.BytesUnused += unused
		default:
			newlyCondemned = append(newlyCondemned, ps.name)
			res.PacksCondemned++
			changed = true
		}
	}
	if !opts.DryRun {
		if err := rp.flush(); err != nil {
			return res, err
		}
	}
	// Phase 2: packs condemned earlier. One is still needed when it holds
	// a live chunk that no pack of the new index holds.
	available := map[chunkID]bool{}
	for _, es := range newIndex {
		for _, e := range es {
			available[e.id] = true
		}
	}
	for _, cp := range wasCondemned {
		needed := false
		for _, e := range cp.es {
			if _, ok := live[e.id]; ok && !available[e.id] {
				needed = true
				break
			}
		}
		switch {
		case needed:
			newIndex[cp.ps.name] = cp.es
			for _, e := range cp.es {
				available[e.id] = true
			}
			res.PacksKept++
			res.PacksRestored++
			changed = true
		case now.Sub(cp.at) >= opts.Grace && now.Sub(cp.ps.mod) >= opts.Grace:
			toDelete = append(toDelete, cp.ps)
			changed = true
		default:
			keepCondemned[cp.ps.name] = cp.at
			res.PacksKept++
		}
	}
	v.idx.mu.RLock()
	var oldIndexes []string
	for name := range v.idx.loaded {
		oldIndexes = append(oldIndexes, name)
	}
	v.idx.mu.RUnlock()
	if len(oldIndexes) > 1 {
		changed = true // compact
	}
	// Orphan maps: no manifest, older than the grace period.
	var orphans []string
	if err := v.st.List(ctx, mapsPrefix, func(in storage.Info) error {
		if !liveMaps[in.Name] && now.Sub(in.ModTime) >= opts.Grace {
			id, _, _ := strings.Cut(strings.TrimPrefix(in.Name, mapsPrefix), ".")
			if _, err := v.st.Stat(ctx, pointsPrefix+id); errors.Is(err, disk.ErrNotFound) {
				orphans = append(orphans, in.Name)
			}
		}
		return nil
	}); err != nil {
		return nil, fmt.Errorf("backup: prune: list maps: %w", err)
	}
	for _, ps := range toDelete {
		res.PacksDeleted++
		res.BytesDeleted += ps.size
	}
	res.MapsDeleted = len(orphans)
	res.CheckpointsDeleted = len(oldCheckpoints)
	if opts.DryRun {
		return res, nil
	}

	// 1. The new index, then the old ones go.
	if changed {
		names, _, err := r.writeIndexes(ctx, newIndex)
		if err != nil {
			return res, fmt.Errorf("backup: prune: %w", err)
		}
		res.IndexesWritten = len(names)
		for _, name := range oldIndexes {
			if err := r.st.Delete(ctx, name); err != nil {
				return res, fmt.Errorf("backup: prune: %w", err)
			}
			res.IndexesDeleted++
		}
	}
	// 2. Packs condemned for longer than the grace period.
	for _, ps := range toDelete {
		if err := r.st.Delete(ctx, ps.name.object()); err != nil {
			return res, fmt.Errorf("backup: prune: %w", err)
		}
	}
	// 3. The condemned lists: what stays condemned, plus the new ones,
	// stamped now that no index names them.
	if changed || len(condemned.lists) > 0 {
		byTime := map[time.Time][]string{}
		for p, t := range keepCondemned {
			byTime[t] = append(byTime[t], p.String())
		}
		if len(newlyCondemned) > 0 {
			t := opts.Now().UTC()
			for _, p := range newlyCondemned {
				byTime[t] = append(byTime[t], p.String())
			}
		}
		same := len(byTime) == len(condemned.lists)
		if same {
			for _, l := range condemned.lists {
				if len(byTime[l.Time]) != len(l.Packs) {
					same = false
				}
			}
		}
		if !same {
			for t, ps := range byTime {
				slices.Sort(ps)
				b, _ := json.Marshal(condemnedList{Time: t, Packs: ps})
				name := condemnedPrefix + hex.EncodeToString(randomBytes(16))
				if err := r.st.Put(ctx, name, r.c.sealMeta("condemned", b)); err != nil {
					return res, fmt.Errorf("backup: prune: %w", err)
				}
			}
			for name := range condemned.lists {
				if err := r.st.Delete(ctx, name); err != nil {
					return res, fmt.Errorf("backup: prune: %w", err)
				}
			}
		}
	}
	// Damaged lists: their packs were condemned afresh above.
	for _, name := range condemned.damaged {
		if err := r.st.Delete(ctx, name); err != nil {
			return res, fmt.Errorf("backup: prune: %w", err)
		}
	}
	for _, name := range append(orphans, oldCheckpoints...) {
		if err := r.st.Delete(ctx, name); err != nil {
			return res, fmt.Errorf("backup: prune: %w", err)
		}
	}
	// This Repository's own view follows.
	if _, err := r.refresh(ctx); err != nil {
		return res, err
	}
	return res, nil
}

// repacker copies live sealed chunks into new packs for Prune.
type repacker struct {
	r     *Repository
	ctx   context.Context
	index map[packName][]packEntry // the new index, which gains the new packs
	res   *PruneResult
	buf   []byte
	es    []packEntry
}

func (rp *repacker) repack(ps packState, es []packEntry, live map[chunkID]struct{}) error {
	name := ps.name.object()
	data, err := rp.r.st.Get(rp.ctx, name, maxPackObject)
	if err != nil {
		return fmt.Errorf("backup: prune: repack: %w", err)
	}
	for _, e := range es {
		if _, ok := live[e.id]; !ok {
			continue
		}
		if int64(e.off)+int64(e.length) > int64(len(data)) {
			return corrupt(name, "chunk %s at %d+%d past the end of the pack", e.id, e.off, e.length)
		}
		// Check before copying: repacking must not spread damage.
		sealed := data[e.off : e.off+e.length]
		if _, err := rp.r.c.openChunk(nil, e.id, append([]byte(nil), sealed...), int(e.rawLen), name, false); err != nil {
			return fmt.Errorf("backup: prune: repack: %w", err)
		}
		if len(rp.buf) > 0 && len(rp.buf)+len(sealed) > rp.r.cfg.PackSize {
			if err := rp.flush(); err != nil {
				return err
			}
		}
		rp.es = append(rp.es, packEntry{id: e.id, blobRef: blobRef{off: uint32(len(rp.buf)), length: e.length, rawLen: e.rawLen}})
		rp.buf = append(rp.buf, sealed...)
	}
	return nil
}

func (rp *repacker) flush() error {
	if len(rp.es) == 0 {
		return nil
	}
	p := newPackName()
	if err := rp.r.st.Put(rp.ctx, p.object(), rp.r.c.finishPack(rp.buf, rp.es)); err != nil {
		return fmt.Errorf("backup: prune: repack: %w", err)
	}
	rp.index[p] = rp.es
	rp.buf, rp.es = nil, nil
	return nil
}
