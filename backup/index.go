package backup

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/vdisk-project/vdisk/backup/storage"
	"github.com/vdisk-project/vdisk/disk"
)

// packName is the random 16-byte name of a pack.
type packName [16]byte

func (p packName) object() string {
	h := hex.EncodeToString(p[:])
	return dataPrefix + h[:2] + "/" + h
}

func (p packName) String() string { return hex.EncodeToString(p[:]) }

// parsePackObject parses "data/xx/<32 hex>".
func parsePackObject(name string) (packName, bool) {
	var p packName
	rest, ok := strings.CutPrefix(name, dataPrefix)
	if !ok || len(rest) != 3+32 || rest[2] != '/' || rest[:2] != rest[3:5] {
		return p, false
	}
	if _, err := hex.Decode(p[:], []byte(rest[3:])); err != nil {
		return p, false
	}
	return p, true
}

func newPackName() packName {
	var p packName
	copy(p[:], randomBytes(16))
	return p
}

// blobRef locates a sealed chunk inside a pack.
type blobRef struct {
	off, length, rawLen uint32
}

// packEntry is one chunk of a pack.
type packEntry struct {
	id chunkID
	blobRef
}

const packEntrySize = 32 + 12

func putPackEntry(b []byte, e packEntry) []byte {
	b = append(b, e.id[:]...)
	b = binary.LittleEndian.AppendUint32(b, e.off)
	b = binary.LittleEndian.AppendUint32(b, e.length)
	return binary.LittleEndian.AppendUint32(b, e.rawLen)
}

func getPackEntry(b []byte) packEntry {
	var e packEntry
	copy(e.id[:], b)
	e.off = binary.LittleEndian.Uint32(b[32:])
	e.length = binary.LittleEndian.Uint32(b[36:])
	e.rawLen = binary.LittleEndian.Uint32(b[40:])
	return e
}

// Index object limits.
const (
	maxIndexEntries = 1 << 20
	maxIndexObject  = 128 << 20
	indexMagic      = "VDIX"
)

// encodeIndex encodes the index payload of the given packs' entries.
func encodeIndex(packs map[packName][]packEntry) []byte {
	names := make([]packName, 0, len(packs))
	n := 0
	for p, es := range packs {
		names = append(names, p)
		n += len(es)
	}
	slices.SortFunc(names, func(a, b packName) int { return bytes.Compare(a[:], b[:]) })
	b := make([]byte, 0, 9+len(packs)*20+n*packEntrySize)
	b = append(b, indexMagic...)
	b = append(b, 1)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(packs)))
	for _, p := range names {
		b = append(b, p[:]...)
		b = binary.LittleEndian.AppendUint32(b, uint32(len(packs[p])))
		for _, e := range packs[p] {
			b = putPackEntry(b, e)
		}
	}
	return b
}

// decodeIndex decodes an index payload, calling fn for each pack.
func decodeIndex(name string, b []byte, fn func(packName, []packEntry)) error {
	if len(b) < 9 || string(b[:4]) != indexMagic {
		return corrupt(name, "bad index magic")
	}
	if b[4] != 1 {
		return corrupt(name, "index version %d", b[4])
	}
	np := binary.LittleEndian.Uint32(b[5:])
	b = b[9:]
	total := 0
	for range np {
		if len(b) < 20 {
			return corrupt(name, "index truncated")
		}
		var p packName
		copy(p[:], b)
		n := binary.LittleEndian.Uint32(b[16:])
		b = b[20:]
		if uint64(n)*packEntrySize > uint64(len(b)) {
			return corrupt(name, "index truncated: pack %s claims %d entries", p, n)
		}
		total += int(n)
		if total > maxIndexEntries {
			return corrupt(name, "index has more than %d entries", maxIndexEntries)
		}
		es := make([]packEntry, n)
		for i := range es {
			es[i] = getPackEntry(b[i*packEntrySize:])
		}
		b = b[int(n)*packEntrySize:]
		fn(p, es)
	}
	if len(b) != 0 {
		return corrupt(name, "%d bytes after the index", len(b))
	}
	return nil
}

// location is where a chunk is stored.
type location struct {
	pack uint32 // number in index.packs
	blobRef
}

// idxEntry is one entry of the sorted in-memory index: 48 bytes.
type idxEntry struct {
	id  chunkID
	loc location
}

// packState is what the index knows about one pack.
type packState struct {
	name      packName
	listed    bool // present in the last listing of data/
	condemned bool // named by a condemned list
	size      int64
	mod       time.Time
}

// index maps chunk IDs to locations. It is safe for concurrent use.
type index struct {
	mu      sync.RWMutex
	packs   []packState
	packNum map[packName]uint32
	sorted  []idxEntry           // from index objects, sorted by id
	extra   map[chunkID]location // added by this process since the last merge
	loaded  map[string]bool      // index objects merged
	adopted map[packName]bool    // condemned packs whose trailer was merged
	damaged map[string]error     // index objects that failed to load
}

func newIndex() *index {
	return &index{packNum: map[packName]uint32{}, extra: map[chunkID]location{}, loaded: map[string]bool{}, adopted: map[packName]bool{}, damaged: map[string]error{}}
}

// pack returns the number of p, adding it. Callers hold mu.
func (x *index) packLocked(p packName) uint32 {
	n, ok := x.packNum[p]
	if !ok {
		n = uint32(len(x.packs))
		x.packs = append(x.packs, packState{name: p})
		x.packNum[p] = n
	}
	return n
}

// usableLocked reports whether a backup may reference chunks of pack n.
func (x *index) usableLocked(n uint32) bool {
	return x.packs[n].listed && !x.packs[n].condemned
}

// lookup returns where id is stored. With usable, only packs a backup may
// reference count (rule 1 of the design note); otherwise a usable location
// is preferred and any other is returned as a fallback.
func (x *index) lookup(id chunkID, usable bool) (packName, blobRef, bool) {
	x.mu.RLock()
	defer x.mu.RUnlock()
	var fallback *location
	if l, ok := x.extra[id]; ok {
		if x.usableLocked(l.pack) {
			return x.packs[l.pack].name, l.blobRef, true
		}
		fallback = &l
	}
	i, _ := slices.BinarySearchFunc(x.sorted, id, func(e idxEntry, id chunkID) int { return bytes.Compare(e.id[:], id[:]) })
	for ; i < len(x.sorted) && x.sorted[i].id == id; i++ {
		l := x.sorted[i].loc
		if x.usableLocked(l.pack) {
			return x.packs[l.pack].name, l.blobRef, true
		}
		if fallback == nil {
			fallback = &l
		}
	}
	if fallback == nil || usable {
		return packName{}, blobRef{}, false
	}
	return x.packs[fallback.pack].name, fallback.blobRef, true
}

// addDurable records the entries of a pack this process just wrote.
func (x *index) addDurable(p packName, size int64, es []packEntry) {
	x.mu.Lock()
	defer x.mu.Unlock()
	n := x.packLocked(p)
	x.packs[n].listed = true
	x.packs[n].size = size
	x.packs[n].mod = time.Now()
	for _, e := range es {
		x.extra[e.id] = location{pack: n, blobRef: e.blobRef}
	}
}

// merge adds the entries of the index object name (or, with an empty name,
// entries from elsewhere, such as a pack's trailer).
func (x *index) merge(name string, packs map[packName][]packEntry) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if name != "" {
		x.loaded[name] = true
		delete(x.damaged, name)
	}
	var add []idxEntry
	for p, es := range packs {
		n := x.packLocked(p)
		for _, e := range es {
			add = append(add, idxEntry{id: e.id, loc: location{pack: n, blobRef: e.blobRef}})
		}
	}
	if len(add) == 0 {
		return
	}
	cmp := func(a, b idxEntry) int { return bytes.Compare(a.id[:], b.id[:]) }
	slices.SortFunc(add, cmp)
	merged := make([]idxEntry, 0, len(x.sorted)+len(add))
	i, j := 0, 0
	for i < len(x.sorted) || j < len(add) {
		switch {
		case j == len(add) || i < len(x.sorted) && cmp(x.sorted[i], add[j]) <= 0:
			merged = append(merged, x.sorted[i])
			i++
		default:
			// Drop exact duplicates (the same chunk of the same pack named
			// by two index objects, as after prune or rebuild).
			if len(merged) == 0 || merged[len(merged)-1] != add[j] {
				merged = append(merged, add[j])
			}
			j++
		}
	}
	x.sorted = slices.Clip(merged)
}

// refresh loads index objects not yet loaded, and the listings of packs
// and condemned packs. It returns the number of chunks the index holds.
// Damaged index objects are remembered (Verify reports them) and skipped.
func (r *Repository) refresh(ctx context.Context) (int, error) {
	var names []string
	err := r.st.List(ctx, indexPrefix, func(in storage.Info) error {
		names = append(names, in.Name)
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("backup: list index: %w", err)
	}
	present := map[string]bool{}
	for _, name := range names {
		present[name] = true
		r.idx.mu.RLock()
		done := r.idx.loaded[name]
		r.idx.mu.RUnlock()
		if done {
			continue
		}
		packs, err := r.readIndex(ctx, name)
		if err != nil {
			if disk.CodeOf(err) == disk.ErrCorrupt || errors.Is(err, disk.ErrOutOfMemory) {
				r.idx.mu.Lock()
				r.idx.damaged[name] = err
				r.idx.mu.Unlock()
				continue
			}
			if errors.Is(err, disk.ErrNotFound) {
				continue // deleted by a prune since the listing
			}
			return 0, err
		}
		r.idx.merge(name, packs)
	}
	if err := r.refreshPacks(ctx); err != nil {
		return 0, err
	}
	r.idx.mu.Lock()
	defer r.idx.mu.Unlock()
	for name := range r.idx.damaged {
		if !present[name] {
			delete(r.idx.damaged, name)
		}
	}
	return len(r.idx.sorted) + len(r.idx.extra), nil
}

// refreshPacks re-lists data/ and condemned/.
func (r *Repository) refreshPacks(ctx context.Context) error {
	type info struct {
		size int64
		mod  time.Time
	}
	listed := map[packName]info{}
	err := r.st.List(ctx, dataPrefix, func(in storage.Info) error {
		if p, ok := parsePackObject(in.Name); ok {
			listed[p] = info{in.Size, in.ModTime}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("backup: list packs: %w", err)
	}
	condemned, err := r.loadCondemned(ctx)
	if err != nil {
		return err
	}
	r.idx.mu.Lock()
	defer r.idx.mu.Unlock()
	for p := range listed {
		r.idx.packLocked(p)
	}
	for i := range r.idx.packs {
		ps := &r.idx.packs[i]
		in, ok := listed[ps.name]
		ps.listed, ps.size, ps.mod = ok, in.size, in.mod
		_, ps.condemned = condemned.packs[ps.name]
	}
	return nil
}

// readIndex fetches and decodes one index object.
func (r *Repository) readIndex(ctx context.Context, name string) (map[packName][]packEntry, error) {
	b, err := r.st.Get(ctx, name, maxIndexObject)
	if err != nil {
		return nil, fmt.Errorf("backup: read %s: %w", name, err)
	}
	p, err := r.c.openMeta(name, "index", b)
	if err != nil {
		return nil, err
	}
	packs := map[packName][]packEntry{}
	err = decodeIndex(name, p, func(pn packName, es []packEntry) { packs[pn] = append(packs[pn], es...) })
	return packs, err
}

// writeIndexes writes the entries as index objects of at most
// maxIndexEntries entries each and returns their names and total size. The
// in-memory index learns of them at the next refresh unless the caller
// marks them loaded.
func (r *Repository) writeIndexes(ctx context.Context, packs map[packName][]packEntry) ([]string, int64, error) {
	var names []string
	var stored int64
	part := map[packName][]packEntry{}
	n := 0
	flush := func() error {
		if len(part) == 0 {
			return nil
		}
		name := indexPrefix + hex.EncodeToString(randomBytes(16))
		b := r.c.sealMeta("index", encodeIndex(part))
		if err := r.st.Put(ctx, name, b); err != nil {
			return fmt.Errorf("backup: write index: %w", err)
		}
		names = append(names, name)
		stored += int64(len(b))
		part, n = map[packName][]packEntry{}, 0
		return nil
	}
	for p, es := range packs {
		for len(es) > 0 {
			k := min(len(es), maxIndexEntries-n)
			part[p] = append(part[p], es[:k]...)
			es = es[k:]
			n += k
			if n == maxIndexEntries {
				if err := flush(); err != nil {
					return names, stored, err
				}
			}
		}
	}
	return names, stored, flush()
}

// adoptCondemned merges the trailers of listed condemned packs into the
// in-memory index, so that a point that a racing prune left referring to
// a condemned pack stays readable until the next prune puts the pack back
// in the index (docs/backup.md).
func (r *Repository) adoptCondemned(ctx context.Context) error {
	if err := r.refreshPacks(ctx); err != nil {
		return err
	}
	r.idx.mu.RLock()
	var todo []packState
	for _, ps := range r.idx.packs {
		if ps.listed && ps.condemned && !r.idx.adopted[ps.name] {
			todo = append(todo, ps)
		}
	}
	r.idx.mu.RUnlock()
	for _, ps := range todo {
		es, err := r.readTrailer(ctx, ps.name.object(), ps.size)
		if errors.Is(err, disk.ErrNotFound) || disk.CodeOf(err) == disk.ErrCorrupt {
			continue
		}
		if err != nil {
			return err
		}
		r.idx.merge("", map[packName][]packEntry{ps.name: es})
		r.idx.mu.Lock()
		r.idx.adopted[ps.name] = true
		r.idx.mu.Unlock()
	}
	return nil
}
