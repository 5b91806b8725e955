package backup

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/vdisk-project/vdisk/backup/storage"
	"github.com/vdisk-project/vdisk/disk"
)

// SourceDisk is one disk to back up.
type SourceDisk struct {
	// Name identifies the disk within the point ("scsi0:0", "disk0.vmdk");
	// an incremental matches parent disks by name. Required, unique.
	Name string
	// Disk is read with ReadAt (concurrently) and, when it is a
	// disk.Extenter, asked for its extents. It is not closed.
	Disk disk.Disk
	// Changed lists the ranges that changed since the parent point (the
	// host's changed areas, an NBD dirty bitmap). nil means "unknown": every
	// allocated chunk is read. It needs BackupOptions.Parent; chunks it does
	// not touch are taken from the parent's map without reading.
	Changed []disk.Extent
	// ChangeID is stored in the point for the caller (see PointDisk).
	ChangeID string
}

// BackupOptions describe one backup.
type BackupOptions struct {
	// Source names what is backed up ("vm/web01", "host:/dev/sda"). Forget
	// groups points by it and a backup resumes an interrupted one of the
	// same source.
	Source string
	// Tags are stored in the point (Forget's KeepTags).
	Tags []string
	// Config is an opaque blob stored in the point, such as a VM
	// configuration.
	Config []byte
	// Parent is the point an incremental builds on (see SourceDisk.Changed).
	Parent *Point
	// Disks are the disks of the point, at least one.
	Disks []SourceDisk
	// Concurrency is the number of chunks read, hashed and compressed at
	// once, across all disks. Default 4.
	Concurrency int
	// Progress, when set, is called after each chunk with the disk's
	// progress. Calls are serialized; Done never decreases per disk.
	Progress func(Progress)
	// NoResume makes the backup ignore checkpoints of interrupted backups
	// of the same source and read everything again.
	NoResume bool
	// CheckpointEvery and CheckpointInterval set how often a checkpoint is
	// saved: after that many chunks or that much time, whichever comes
	// first. Defaults 256 chunks and one minute.
	CheckpointEvery    int
	CheckpointInterval time.Duration
	// MergeBelow decides how an incremental builds a chunk that changed
	// only in part: when the changed areas cover less than this fraction
	// of it, only they are read from the source and the rest is taken from
	// the parent's chunk in the repository; otherwise the chunk is read
	// whole. Zero means DefaultMergeBelow, negative never merges.
	MergeBelow float64
	// Hostname is stored in the point. Default os.Hostname().
	Hostname string
	// Time is the point's time. Default: when the backup starts.
	Time time.Time
}

// Progress reports how far the backup of one disk has come.
type Progress struct {
	Disk  string
	Done  int64   // bytes of the disk dealt with (read, skipped or resumed)
	Total int64   // the disk's size
	Read  int64   // bytes read from the source so far
	Rate  float64 // Done per second since the backup started
}

// Summary reports what a backup did. Bytes are counted on the source unless
// said otherwise.
type Summary struct {
	BytesRead         int64 // read from the sources
	BytesNew          int64 // of chunks the repository did not hold
	BytesDeduplicated int64 // read, but already in the repository
	BytesZero         int64 // read and found to be zeros, plus chunks the extents said were zeros
	BytesHole         int64 // unallocated, not read
	BytesUnchanged    int64 // taken from the parent's map without reading
	BytesResumed      int64 // taken from an interrupted backup's checkpoint
	// BytesResumeChecked is what was read again to check that the source
	// still matches a checkpoint before resuming from it (a few chunks).
	BytesResumeChecked int64
	// BytesChanged is what the sources' changed areas cover (incrementals),
	// ChunksChanged the chunks they touch.
	BytesChanged  int64
	ChunksChanged int64
	// BytesFromParent is what partly changed chunks took from the parent's
	// chunks instead of reading it; ParentFallbacks counts chunks read
	// whole because the parent's chunk could not be read (pruned).
	BytesFromParent int64
	ParentFallbacks int64
	BytesCompressed int64 // new chunks after compression (before encryption)
	BytesStored     int64 // written to the storage: packs, indexes, maps, manifest
	NewChunks       int64
	Checkpoints     int
	Duration        time.Duration
}

// checkpointHeader is the JSON head of a checkpoint object.
type checkpointHeader struct {
	Version int       `json:"version"`
	Point   string    `json:"point"` // the ID the finished point will get
	Source  string    `json:"source"`
	Time    time.Time `json:"time"`
	Disks   []struct {
		Name     string `json:"name"`
		Size     int64  `json:"size"`
		ChangeID string `json:"change_id,omitempty"`
	} `json:"disks"`
}

// diskRun is the state of one disk during a backup.
type diskRun struct {
	n       int
	src     SourceDisk
	m       *chunkMap
	parent  *chunkMap     // nil: no incremental
	touched []uint64      // chunks Changed touches, when parent != nil
	changed []disk.Extent // Changed sorted, merged and clipped, when parent != nil
	resume  *chunkMap     // from a checkpoint, or nil
	mu      sync.Mutex    // guards m.ids and done
	done    int64         // bytes resolved
	read    atomic.Int64
	newB    atomic.Int64
	stored  atomic.Int64
}

type backupRun struct {
	r     *Repository
	o     BackupOptions
	start time.Time
	id    string // point ID
	disks []*diskRun
	pk    *packer

	progMu sync.Mutex

	ckptMu    sync.Mutex
	ckptName  string // our latest checkpoint
	ckptOld   string // the checkpoint we resumed from
	sinceCkpt atomic.Int64
	lastCkpt  atomic.Int64 // unix nanos

	sum struct {
		read, newB, dedup, zero, hole, unchanged, resumed, checked, comp, stored, newChunks atomic.Int64
		checkpoints, changed, changedChunks, base, baseFallback                             atomic.Int64
	}
}

// Backup backs up the given disks as a new point and returns it with a
// summary. It reads only what it must (see SourceDisk.Changed and
// disk.Extents), stores only chunks the repository does not hold, saves a
// checkpoint now and then so that an interrupted backup of the same source
// resumes where it stopped, and makes the point visible only once all of
// it is durable. On error no point exists; what was stored stays for a
// resume (or for prune).
func (r *Repository) Backup(ctx context.Context, opts BackupOptions) (*Point, Summary, error) {
	b := &backupRun{r: r, o: opts, start: time.Now(), id: hex.EncodeToString(randomBytes(16))}
	// Uploads outlive a cancellation by up to a minute, so that what was
	// read becomes durable and a final checkpoint covers it.
	uctx, ucancel := context.WithCancel(context.WithoutCancel(ctx))
	defer ucancel()
	stop := context.AfterFunc(ctx, func() { time.AfterFunc(time.Minute, ucancel) })
	defer stop()
	r.running.Store(b.id, true)
	defer r.running.Delete(b.id)
	if err := b.setup(ctx, uctx); err != nil {
		return nil, Summary{}, err
	}
	p, err := b.run(ctx)
	return p, b.summary(), err
}

func (b *backupRun) summary() Summary {
	s := &b.sum
	return Summary{
		BytesRead: s.read.Load(), BytesNew: s.newB.Load(), BytesDeduplicated: s.dedup.Load(),
		BytesZero: s.zero.Load(), BytesHole: s.hole.Load(), BytesUnchanged: s.unchanged.Load(),
		BytesResumed: s.resumed.Load(), BytesResumeChecked: s.checked.Load(), BytesCompressed: s.comp.Load(), BytesStored: s.stored.Load(),
		BytesChanged: s.changed.Load(), ChunksChanged: s.changedChunks.Load(), BytesFromParent: s.base.Load(), ParentFallbacks: s.baseFallback.Load(),
		NewChunks: s.newChunks.Load(), Checkpoints: int(s.checkpoints.Load()), Duration: time.Since(b.start),
	}
}

func (b *backupRun) setup(ctx, uploadCtx context.Context) error {
	o := &b.o
	if len(o.Disks) == 0 {
		return disk.Errorf(disk.ErrInvalid, "backup: no disks")
	}
	if o.Concurrency <= 0 {
		o.Concurrency = 4
	}
	o.Concurrency = min(o.Concurrency, 64)
	if o.CheckpointEvery <= 0 {
		o.CheckpointEvery = 256
	}
	if o.CheckpointInterval <= 0 {
		o.CheckpointInterval = time.Minute
	}
	if o.MergeBelow == 0 {
		o.MergeBelow = DefaultMergeBelow
	}
	if o.Hostname == "" {
		o.Hostname, _ = os.Hostname()
	}
	if o.Time.IsZero() {
		o.Time = b.start
	}
	o.Time = o.Time.UTC()
	cs := int64(b.r.cfg.ChunkSize)
	seen := map[string]bool{}
	for i, sd := range o.Disks {
		if sd.Name == "" || seen[sd.Name] || sd.Disk == nil {
			return disk.Errorf(disk.ErrInvalid, "backup: disk %d: empty or repeated name %q, or no disk", i, sd.Name)
		}
		seen[sd.Name] = true
		size := sd.Disk.Size()
		if size < 0 || chunksOf(size, cs) > maxChunks {
			return disk.Errorf(disk.ErrInvalid, "backup: disk %q: size %d is more than %d chunks", sd.Name, size, maxChunks)
		}
		if sd.Changed != nil && o.Parent == nil {
			return disk.Errorf(disk.ErrInvalid, "backup: disk %q: changed extents need a parent point", sd.Name)
		}
		dr := &diskRun{n: i, src: sd, m: &chunkMap{size: size, chunkSize: cs, ids: make([]chunkID, chunksOf(size, cs))}}
		for j := range dr.m.ids {
			dr.m.ids[j] = pendingID
		}
		b.disks = append(b.disks, dr)
	}
	// Rule 1: reuse only entries of packs listed now.
	if _, err := b.r.refresh(ctx); err != nil {
		return err
	}
	if o.Parent != nil {
		for _, dr := range b.disks {
			pd := o.Parent.Disk(dr.src.Name)
			if dr.src.Changed == nil || pd == nil || pd.ChunkSize != cs {
				continue
			}
			m, err := b.r.loadMap(ctx, pd)
			if err != nil {
				return fmt.Errorf("backup: parent point %s: %w", o.Parent.ID, err)
			}
			dr.parent = m
			dr.touched = make([]uint64, (len(dr.m.ids)+63)/64)
			dr.changed = mergeChanged(dr.src.Changed, dr.m.size)
			for _, e := range dr.changed {
				b.sum.changed.Add(e.Len)
				for c := e.Off / cs; c <= (e.End()-1)/cs; c++ {
					if dr.touched[c/64]&(1<<(c%64)) == 0 {
						b.sum.changedChunks.Add(1)
					}
					dr.touched[c/64] |= 1 << (c % 64)
				}
			}
		}
	}
	if !o.NoResume {
		if err := b.findCheckpoint(ctx); err != nil {
			return err
		}
	}
	b.pk = newPacker(uploadCtx, b.r)
	b.lastCkpt.Store(time.Now().UnixNano())
	return nil
}

// findCheckpoint picks the newest checkpoint of the same source.
func (b *backupRun) findCheckpoint(ctx context.Context) error {
	var names []string
	if err := b.r.st.List(ctx, checkPrefix, func(in storage.Info) error {
		names = append(names, in.Name)
		return nil
	}); err != nil {
		return fmt.Errorf("backup: list checkpoints: %w", err)
	}
	var best *checkpointHeader
	var bestMaps map[string]*chunkMap
	for _, name := range names {
		h, maps, err := b.r.readCheckpoint(ctx, name)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if disk.CodeOf(err) == disk.ErrCorrupt {
				// Puts are atomic, so this is damage, not a checkpoint
				// being written: garbage.
				if err := b.r.st.Delete(ctx, name); err != nil {
					return fmt.Errorf("backup: delete damaged checkpoint: %w", err)
				}
			}
			continue // damaged or deleted: a checkpoint is only an optimisation
		}
		if _, running := b.r.running.Load(h.Point); h.Source != b.o.Source || running {
			continue // another source, or a backup running in this process
		}
		if _, err := b.r.st.Stat(ctx, pointsPrefix+h.Point); err == nil {
			// That backup finished: its checkpoint is stale.
			if err := b.r.st.Delete(ctx, name); err != nil {
				return fmt.Errorf("backup: delete stale checkpoint: %w", err)
			}
			continue
		}
		if best == nil || h.Time.After(best.Time) {
			best, bestMaps, b.ckptOld = h, maps, name
		}
	}
	if best == nil {
		return nil
	}
	for _, hd := range best.Disks {
		for _, dr := range b.disks {
			m := bestMaps[hd.Name]
			if dr.src.Name == hd.Name && hd.Size == dr.m.size && hd.ChangeID == dr.src.ChangeID &&
				m != nil && m.chunkSize == dr.m.chunkSize {
				ok, err := b.spotCheck(dr, m)
				if err != nil {
					return err
				}
				if ok {
					dr.resume = m
				}
			}
		}
	}
	return nil
}

// resumeChecks is how many data chunks of a checkpoint are read again and
// compared before resuming from it.
const resumeChecks = 2

// spotCheck re-reads a few of the checkpoint's data chunks from the source
// and reports whether they still have the recorded IDs: a cheap guard
// against resuming over a source that now presents other content (another
// snapshot under the same source name and change ID).
func (b *backupRun) spotCheck(dr *diskRun, m *chunkMap) (bool, error) {
	var data []int64
	for i, id := range m.ids {
		if id != holeID && id != zeroID && id != pendingID {
			data = append(data, int64(i))
		}
	}
	if len(data) == 0 {
		return true, nil
	}
	cs := int(dr.m.chunkSize)
	bb := getBufs(cs)
	defer putBufs(cs, bb)
	for k := range min(resumeChecks, len(data)) {
		i := data[int(binary.LittleEndian.Uint64(randomBytes(8))%uint64(len(data)))]
		if k == 0 {
			i = data[len(data)-1] // the newest work is the likeliest to differ
		}
		n := dr.m.chunkLen(i)
		buf := bb.data[:n]
		if j, err := dr.src.Disk.ReadAt(buf, i*dr.m.chunkSize); err != nil && !(errors.Is(err, io.EOF) && int64(j) == n) {
			return false, disk.Wrap(err, "backup: read "+dr.src.Name, "", i*dr.m.chunkSize)
		}
		b.sum.checked.Add(n)
		dr.read.Add(n)
		if b.r.c.id(buf) != m.ids[i] {
			return false, nil
		}
	}
	return true, nil
}

// readCheckpoint loads a checkpoint object.
func (r *Repository) readCheckpoint(ctx context.Context, name string) (*checkpointHeader, map[string]*chunkMap, error) {
	raw, err := r.st.Get(ctx, name, maxMapObj)
	if err != nil {
		return nil, nil, fmt.Errorf("backup: read %s: %w", name, err)
	}
	pl, err := r.c.openMeta(name, "checkpoint", raw)
	if err != nil {
		return nil, nil, err
	}
	return decodeCheckpoint(name, pl)
}

func decodeCheckpoint(name string, pl []byte) (*checkpointHeader, map[string]*chunkMap, error) {
	if len(pl) < 4 {
		return nil, nil, corrupt(name, "checkpoint too short")
	}
	hl := uint64(pl[0]) | uint64(pl[1])<<8 | uint64(pl[2])<<16 | uint64(pl[3])<<24
	if hl > uint64(len(pl)-4) {
		return nil, nil, corrupt(name, "checkpoint header length %d", hl)
	}
	var h checkpointHeader
	if err := json.Unmarshal(pl[4:4+hl], &h); err != nil || h.Version != formatVersion {
		return nil, nil, corrupt(name, "checkpoint header: %v", err)
	}
	rest := pl[4+hl:]
	maps := map[string]*chunkMap{}
	for _, d := range h.Disks {
		m, r, err := decodeMap(name, rest, true)
		if err != nil {
			return nil, nil, err
		}
		if m.size != d.Size {
			return nil, nil, corrupt(name, "checkpoint disk %q: map of %d bytes, header says %d", d.Name, m.size, d.Size)
		}
		maps[d.Name] = m
		rest = r
	}
	if len(rest) != 0 {
		return nil, nil, corrupt(name, "%d bytes after the checkpoint", len(rest))
	}
	return &h, maps, nil
}

func (b *backupRun) run(ctx context.Context) (*Point, error) {
	err := b.pass(ctx)
	if err != nil {
		// Interrupted: make what was read durable and save a checkpoint,
		// so that a resume reads none of it again. Best effort: the store
		// may be what failed; the last periodic checkpoint still counts.
		b.ckptMu.Lock()
		_ = b.checkpoint(b.pk.ctx)
		b.ckptMu.Unlock()
		return nil, err
	}
	ferr := b.pk.flush(ctx, b.addStored)
	if ferr != nil {
		return nil, ferr
	}
	// Rule 1, second half: every chunk the maps name must be in a pack
	// that is still listed; re-store those whose pack vanished.
	for attempt := 0; ; attempt++ {
		missing, err := b.missingChunks(ctx)
		if err != nil {
			return nil, err
		}
		if len(missing) == 0 {
			break
		}
		if attempt == 3 {
			return nil, &disk.Error{Op: "backup", Off: -1, Code: disk.ErrBusy, Err: errors.New("packs keep disappearing under a concurrent prune")}
		}
		for _, mc := range missing {
			if err := b.storeChunk(ctx, chunkJob{dr: mc.dr, i: mc.i}, true); err != nil {
				return nil, err
			}
		}
		if err := b.pk.flush(ctx, b.addStored); err != nil {
			return nil, err
		}
	}
	p := &Point{ID: b.id, Time: b.o.Time, Source: b.o.Source, Tags: b.o.Tags, Hostname: b.o.Hostname, Config: b.o.Config}
	if b.o.Parent != nil {
		p.Parent = b.o.Parent.ID
	}
	for _, dr := range b.disks {
		name := fmt.Sprintf("%s%s.%d", mapsPrefix, b.id, dr.n)
		data := b.r.c.sealMeta("map", encodeMap(dr.m))
		if err := b.r.st.Put(ctx, name, data); err != nil {
			return nil, fmt.Errorf("backup: write %s: %w", name, err)
		}
		b.addStored(int64(len(data)))
		var dataChunks int64
		for _, id := range dr.m.ids {
			if id != holeID && id != zeroID {
				dataChunks++
			}
		}
		p.Disks = append(p.Disks, PointDisk{Name: dr.src.Name, Size: dr.m.size, ChunkSize: dr.m.chunkSize, Map: name,
			ChangeID: dr.src.ChangeID, BytesRead: dr.read.Load(), BytesNew: dr.newB.Load(), BytesStored: dr.stored.Load(), DataChunks: dataChunks})
	}
	mb, _ := json.Marshal(manifest{Version: formatVersion, Point: *p})
	data := b.r.c.sealMeta("point", mb)
	if err := b.r.st.Put(ctx, pointsPrefix+b.id, data); err != nil {
		return nil, fmt.Errorf("backup: write manifest: %w", err)
	}
	b.addStored(int64(len(data)))
	b.reindexCondemned(ctx)
	// The point exists: checkpoints are now garbage. A failure to delete
	// them is harmless (the next backup of the source deletes them).
	for _, name := range []string{b.ckptName, b.ckptOld} {
		if name != "" {
			_ = b.r.st.Delete(ctx, name)
		}
	}
	return p, nil
}

func (b *backupRun) addStored(n int64) { b.sum.stored.Add(n) }

// reindexCondemned handles a prune that condemned packs this point uses
// after the backup's last check: it writes index entries for their chunks
// so that the point is readable at once. Prune cannot delete those packs
// before the grace period has passed, and by then it sees the point and
// restores them for good. This is best effort: if it fails, the next prune
// does the same.
func (b *backupRun) reindexCondemned(ctx context.Context) {
	if err := b.r.refreshPacks(ctx); err != nil {
		return
	}
	add := map[packName][]packEntry{}
	seen := map[chunkID]bool{}
	for _, dr := range b.disks {
		for _, id := range dr.m.ids {
			if id == holeID || id == zeroID || seen[id] {
				continue
			}
			seen[id] = true
			if _, _, ok := b.r.idx.lookup(id, true); ok {
				continue
			}
			if p, ref, ok := b.r.idx.lookup(id, false); ok && b.r.packListed(p) {
				add[p] = append(add[p], packEntry{id: id, blobRef: ref})
			}
		}
	}
	if len(add) > 0 {
		_, n, _ := b.r.writeIndexes(ctx, add)
		b.addStored(n)
	}
}

type missingChunk struct {
	dr *diskRun
	i  int64
}

// missingChunks lists the map entries whose chunk's pack is gone.
func (b *backupRun) missingChunks(ctx context.Context) ([]missingChunk, error) {
	if err := b.r.refreshPacks(ctx); err != nil {
		return nil, err
	}
	var out []missingChunk
	for _, dr := range b.disks {
		for i, id := range dr.m.ids {
			if id == holeID || id == zeroID {
				continue
			}
			if _, _, ok := b.r.idx.lookup(id, true); !ok {
				out = append(out, missingChunk{dr, int64(i)})
			}
		}
	}
	return out, nil
}

// chunkJob is a chunk to read and store. A whole job reads the chunk from
// the source. A partial one reads only the spans reads; the rest of the
// chunk is zeros (base zeroID) or the parent's chunk base, with the spans
// zeros cleared in it first.
type chunkJob struct {
	dr      *diskRun
	i       int64
	partial bool
	base    chunkID
	reads   []span
	zeros   []span
}

// pass resolves every chunk of every disk.
func (b *backupRun) pass(ctx context.Context) error {
	g, gctx := errgroup.WithContext(ctx)
	jobs := make(chan chunkJob, b.o.Concurrency)
	var producers sync.WaitGroup
	for _, dr := range b.disks {
		producers.Add(1)
		g.Go(func() error {
			defer producers.Done()
			return b.produce(gctx, dr, jobs)
		})
	}
	go func() { producers.Wait(); close(jobs) }()
	for range b.o.Concurrency {
		g.Go(func() error {
			for j := range jobs {
				if err := b.storeChunk(gctx, j, false); err != nil {
					return err
				}
				if err := b.maybeCheckpoint(gctx); err != nil {
					return err
				}
			}
			return nil
		})
	}
	err := g.Wait()
	if err == nil {
		err = ctx.Err()
	}
	if err != nil {
		// Drain so the closer goroutine ends.
		for range jobs {
		}
	}
	return err
}

// produce decides each chunk of a disk: known from a checkpoint or the
// parent, a hole or zero by the extents, or a job that reads its data (only
// the changed data, for a partly changed chunk of an incremental).
func (b *backupRun) produce(ctx context.Context, dr *diskRun, jobs chan<- chunkJob) error {
	const window = 256
	cs := dr.m.chunkSize
	n := int64(len(dr.m.ids))
	var need [window]bool
	var hasZero [window]bool
	var data [window][]span
	for w := int64(0); w < n; w += window {
		if err := ctx.Err(); err != nil {
			return err
		}
		wn := min(window, n-w)
		any := false
		for k := range wn {
			i := w + k
			need[k] = false
			switch {
			case dr.resume != nil && i < int64(len(dr.resume.ids)) && dr.resume.ids[i] != pendingID && dr.resume.chunkLen(i) == dr.m.chunkLen(i):
				b.resolve(dr, i, dr.resume.ids[i], &b.sum.resumed)
			case dr.parentCovers(i) && dr.touched[i/64]&(1<<(i%64)) == 0:
				b.resolve(dr, i, dr.parent.ids[i], &b.sum.unchanged)
			default:
				need[k], any = true, true
			}
		}
		if !any {
			continue
		}
		clear(hasZero[:])
		for k := range data {
			data[k] = data[k][:0]
		}
		off := w * cs
		err := disk.Extents(ctx, dr.src.Disk, off, min(wn*cs, dr.m.size-off), func(e disk.Extent) error {
			if e.Len <= 0 {
				return nil
			}
			first, last := max(e.Off/cs-w, 0), min((e.End()-1)/cs-w, wn-1)
			for k := first; k <= last; k++ {
				if e.Flags.Data() {
					c := (w + k) * cs
					data[k] = addSpan(data[k], max(e.Off, c)-c, min(e.End(), c+cs)-c, spanGap)
				} else if e.Flags&disk.Hole == 0 {
					hasZero[k] = true
				}
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("backup: disk %q: extents: %w", dr.src.Name, err)
		}
		for k := range wn {
			if !need[k] {
				continue
			}
			i := w + k
			switch {
			case len(data[k]) > 0:
				j, ok := chunkJob{}, false
				if dr.parentCovers(i) {
					j, ok = b.planMerge(dr, i, dr.parent.ids[i], data[k])
				}
				if !ok {
					j = planRead(dr, i, data[k])
				}
				if j.partial && len(j.reads) == 0 && j.base == zeroID {
					// Only zeros were written over zeros.
					b.resolve(dr, i, zeroID, &b.sum.zero)
					continue
				}
				select {
				case jobs <- j:
				case <-ctx.Done():
					return ctx.Err()
				}
			case hasZero[k]:
				b.resolve(dr, i, zeroID, &b.sum.zero)
			default:
				b.resolve(dr, i, holeID, &b.sum.hole)
			}
		}
	}
	return nil
}

// parentCovers reports whether the parent's map has an entry for chunk i
// of the same length (a grown disk's parent does not cover the new end).
func (dr *diskRun) parentCovers(i int64) bool {
	return dr.parent != nil && i < int64(len(dr.parent.ids)) && dr.parent.chunkLen(i) == dr.m.chunkLen(i)
}

// resolve records chunk i's map entry and reports progress.
func (b *backupRun) resolve(dr *diskRun, i int64, id chunkID, counter *atomic.Int64) {
	n := dr.m.chunkLen(i)
	if counter != nil {
		counter.Add(n)
	}
	dr.mu.Lock()
	first := dr.m.ids[i] == pendingID
	dr.m.ids[i] = id
	if first {
		dr.done += n
	}
	done := dr.done
	dr.mu.Unlock()
	b.sinceCkpt.Add(1)
	if b.o.Progress != nil {
		b.progMu.Lock()
		el := time.Since(b.start).Seconds()
		rate := 0.0
		if el > 0 {
			rate = float64(done) / el
		}
		b.o.Progress(Progress{Disk: dr.src.Name, Done: done, Total: dr.m.size, Read: dr.read.Load(), Rate: rate})
		b.progMu.Unlock()
	}
}

// chunkBufs are one worker's buffers.
type chunkBufs struct{ data, z, sealed []byte }

var bufPools sync.Map // chunk size → *sync.Pool of *chunkBufs

func getBufs(cs int) *chunkBufs {
	p, _ := bufPools.LoadOrStore(cs, &sync.Pool{New: func() any {
		return &chunkBufs{data: make([]byte, cs), z: make([]byte, 0, cs), sealed: make([]byte, 0, cs+64)}
	}})
	return p.(*sync.Pool).Get().(*chunkBufs)
}

func putBufs(cs int, bb *chunkBufs) {
	p, _ := bufPools.Load(cs)
	p.(*sync.Pool).Put(bb)
}

// storeChunk reads the chunk of job j, and stores it unless the
// repository holds it (force: store it whatever the index says).
func (b *backupRun) storeChunk(ctx context.Context, j chunkJob, force bool) error {
	dr, i := j.dr, j.i
	cs := int(dr.m.chunkSize)
	bb := getBufs(cs)
	defer putBufs(cs, bb)
	n := dr.m.chunkLen(i)
	data := bb.data[:n]
	read, zero, known, err := b.fill(ctx, j, data, bb)
	b.sum.read.Add(read)
	dr.read.Add(read)
	if err != nil {
		return err
	}
	if zero {
		b.resolve(dr, i, zeroID, &b.sum.zero)
		return nil
	}
	id := b.r.c.idKnown(data, known)
	if !force && b.pk.known(id) {
		b.resolve(dr, i, id, &b.sum.dedup)
		return nil
	}
	var compressed bool
	bb.sealed, bb.z, compressed = b.r.c.sealChunk(bb.sealed[:0], id, data, bb.z)
	added, err := b.pk.add(ctx, id, bb.sealed, uint32(n), force, b.addStored)
	if err != nil {
		return err
	}
	if !added {
		b.resolve(dr, i, id, &b.sum.dedup)
		return nil
	}
	b.sum.newB.Add(n)
	b.sum.newChunks.Add(1)
	dr.newB.Add(n)
	dr.stored.Add(int64(len(bb.sealed)))
	if compressed {
		b.sum.comp.Add(int64(len(bb.z)))
	} else {
		b.sum.comp.Add(n)
	}
	b.resolve(dr, i, id, nil)
	return nil
}

// maybeCheckpoint saves a checkpoint when one is due and no other worker is
// saving one.
func (b *backupRun) maybeCheckpoint(ctx context.Context) error {
	if b.sinceCkpt.Load() < int64(b.o.CheckpointEvery) && time.Since(time.Unix(0, b.lastCkpt.Load())) < b.o.CheckpointInterval {
		return nil
	}
	if !b.ckptMu.TryLock() {
		return nil
	}
	defer b.ckptMu.Unlock()
	b.sinceCkpt.Store(0)
	b.lastCkpt.Store(time.Now().UnixNano())
	return b.checkpoint(ctx)
}

// checkpoint snapshots the maps, makes every chunk they name durable and
// indexed, then writes the checkpoint and deletes the previous one.
func (b *backupRun) checkpoint(ctx context.Context) error {
	h := checkpointHeader{Version: formatVersion, Point: b.id, Source: b.o.Source, Time: b.start.UTC()}
	var body []byte
	for _, dr := range b.disks {
		h.Disks = append(h.Disks, struct {
			Name     string `json:"name"`
			Size     int64  `json:"size"`
			ChangeID string `json:"change_id,omitempty"`
		}{dr.src.Name, dr.m.size, dr.src.ChangeID})
		dr.mu.Lock()
		body = append(body, encodeMap(dr.m)...)
		dr.mu.Unlock()
	}
	// Every chunk named above was added to the packer before its entry was
	// set, so this flush makes it durable and indexed.
	if err := b.pk.flush(ctx, b.addStored); err != nil {
		return err
	}
	hj, _ := json.Marshal(h)
	pl := make([]byte, 4, 4+len(hj)+len(body))
	pl[0], pl[1], pl[2], pl[3] = byte(len(hj)), byte(len(hj)>>8), byte(len(hj)>>16), byte(len(hj)>>24)
	pl = append(append(pl, hj...), body...)
	name := checkPrefix + hex.EncodeToString(randomBytes(16))
	data := b.r.c.sealMeta("checkpoint", pl)
	if err := b.r.st.Put(ctx, name, data); err != nil {
		return fmt.Errorf("backup: write checkpoint: %w", err)
	}
	b.addStored(int64(len(data)))
	b.sum.checkpoints.Add(1)
	prev := b.ckptName
	b.ckptName = name
	for _, old := range []string{prev, b.ckptOld} {
		if old != "" {
			if err := b.r.st.Delete(ctx, old); err != nil {
				return fmt.Errorf("backup: delete old checkpoint: %w", err)
			}
		}
	}
	b.ckptOld = ""
	return nil
}

// packer fills packs and uploads them.
type packer struct {
	r       *Repository
	ctx     context.Context // the backup's: uploads started by add use it
	mu      sync.Mutex
	buf     []byte
	es      []packEntry
	claimed map[chunkID]bool // stored (or being stored) by this backup
	sem     chan struct{}    // uploads in flight
	free    chan []byte      // pack buffers to reuse
	pending []chan struct{}  // done signals of uploads not yet waited for

	resMu   sync.Mutex
	err     error
	durable map[packName][]packEntry // uploaded, not yet indexed
	sizes   map[packName]int64
}

// uploadsInFlight is how many packs are uploaded at once. Four keep the
// workers busy while a local store's fsyncs or an S3 PUT stall.
const uploadsInFlight = 4

func newPacker(ctx context.Context, r *Repository) *packer {
	return &packer{r: r, ctx: ctx, claimed: map[chunkID]bool{}, sem: make(chan struct{}, uploadsInFlight), free: make(chan []byte, uploadsInFlight+1), durable: map[packName][]packEntry{}, sizes: map[packName]int64{}}
}

// known reports whether id is stored, by this backup or in a usable pack.
func (p *packer) known(id chunkID) bool {
	p.mu.Lock()
	c := p.claimed[id]
	p.mu.Unlock()
	if c {
		return true
	}
	_, _, ok := p.r.idx.lookup(id, true)
	return ok
}

// add appends a sealed chunk to the open pack unless this backup already
// stored id (unless force). It reports whether it added it.
func (p *packer) add(ctx context.Context, id chunkID, sealed []byte, rawLen uint32, force bool, stored func(int64)) (bool, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.claimed[id] && !force {
		return false, nil
	}
	if len(p.buf) > 0 && len(p.buf)+len(sealed) > p.r.cfg.PackSize {
		if err := p.cutLocked(p.ctx, stored); err != nil {
			return false, err
		}
	}
	if p.buf == nil {
		select {
		case p.buf = <-p.free:
		default:
			p.buf = make([]byte, 0, p.r.cfg.PackSize+p.r.cfg.ChunkSize/8)
		}
	}
	p.es = append(p.es, packEntry{id: id, blobRef: blobRef{off: uint32(len(p.buf)), length: uint32(len(sealed)), rawLen: rawLen}})
	p.buf = append(p.buf, sealed...)
	p.claimed[id] = true
	return true, nil
}

// cutLocked closes the open pack and starts its upload; ctx bounds only
// the wait for an upload slot.
func (p *packer) cutLocked(ctx context.Context, stored func(int64)) error {
	if len(p.es) == 0 {
		return nil
	}
	select {
	case p.sem <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	buf, es := p.buf, p.es
	p.buf, p.es = nil, nil
	done := make(chan struct{})
	p.pending = append(p.pending, done)
	go func() {
		defer close(done)
		defer func() { <-p.sem }()
		name := newPackName()
		data := p.r.c.finishPack(buf, es)
		// The backup's upload context, not ctx: a flush that a cancelled
		// worker starts must still make the pack durable for the final
		// checkpoint.
		if err := p.r.st.Put(p.ctx, name.object(), data); err != nil {
			p.resMu.Lock()
			if p.err == nil {
				p.err = fmt.Errorf("backup: write pack: %w", err)
			}
			p.resMu.Unlock()
			return
		}
		stored(int64(len(data)))
		select {
		case p.free <- data[:0]: // Put does not retain data
		default:
		}
		p.resMu.Lock()
		p.durable[name] = es
		p.sizes[name] = int64(len(data))
		p.resMu.Unlock()
	}()
	return nil
}

// flush uploads the open pack, waits for every upload and writes the index
// of what is durable.
func (p *packer) flush(ctx context.Context, stored func(int64)) error {
	p.mu.Lock()
	err := p.cutLocked(ctx, stored)
	waits := p.pending
	p.pending = nil
	p.mu.Unlock()
	for _, w := range waits {
		<-w
	}
	p.resMu.Lock()
	if err == nil {
		err = p.err
	}
	durable, sizes := p.durable, p.sizes
	p.durable, p.sizes = map[packName][]packEntry{}, map[packName]int64{}
	p.resMu.Unlock()
	if len(durable) > 0 {
		names, n, ierr := p.r.writeIndexes(ctx, durable)
		stored(n)
		if ierr != nil {
			// Keep them for the next flush (the final checkpoint of a
			// cancelled backup), or its maps would name chunks that no
			// index does.
			p.resMu.Lock()
			for pn, es := range durable {
				p.durable[pn], p.sizes[pn] = es, sizes[pn]
			}
			p.resMu.Unlock()
			return ierr
		}
		// Only now may other backups of this Repository reuse the chunks:
		// a map must name only indexed chunks. (This backup's own see
		// them through claimed.)
		for pn, es := range durable {
			p.r.idx.addDurable(pn, sizes[pn], es)
		}
		p.r.idx.mu.Lock()
		for _, name := range names {
			p.r.idx.loaded[name] = true // addDurable made its entries known
		}
		p.r.idx.mu.Unlock()
	}
	return err
}
