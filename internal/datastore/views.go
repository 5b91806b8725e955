package datastore

import (
	"context"
	"slices"
	"sync"

	"github.com/vdisk-project/vdisk/format/vmdk"
)

// Default bounds of the snapshot views a Store keeps open between
// queries (Options.Views, Options.ViewFiles).
const (
	DefaultViews     = 8
	DefaultViewFiles = 256
)

// view is a snapshot's frozen chain, opened read-only for queries
// (allocated blocks, changed areas from "*", metadata). A frozen chain
// never changes while its snapshot exists with the same path of layers in
// the same directory: writes go to the leaf only, and a consolidation
// writes into a layer only what the layer above it, which every such chain
// holds, already says (see the package doc). Once the snapshot is removed
// its layers may be merged and written again under the same IDs, and a
// snapshot of the same ID may come back (VM snapshot IDs count per VM): so
// every commit of the disk's state drops the views it makes stale, before
// anything else can change, and every use checks the record and path
// again.
type view struct {
	d     *Disk
	snap  string
	rec   snapshotRec // the record it was opened for
	path  []int       // layer IDs, top first
	dir   string      // the data directory the files were opened in
	v     *vmdk.Disk
	files int

	refs   int    // queries using it, plus one while cached; guarded by viewCache.mu
	cached bool   // in the cache's map
	used   uint64 // last use, for LRU
}

// viewCache keeps the views of a Store, at most max of them holding at
// most maxFiles files together; the least recently used go first. Memory
// follows: each open chain caches at most a bounded number of grain tables
// (vmdk.Open's budget). Lock order: Disk.mu, then viewCache.mu.
type viewCache struct {
	mu       sync.Mutex
	max      int
	maxFiles int
	files    int
	tick     uint64
	m        map[viewKey]*view

	hits, misses uint64 // for tests
}

type viewKey struct {
	d    *Disk
	snap string
}

func newViewCache(max, maxFiles int) *viewCache {
	return &viewCache{max: max, maxFiles: maxFiles, m: map[viewKey]*view{}}
}

// validView reports whether v still reads what snapshot v.snap holds now.
// The caller holds d.mu.
func (d *Disk) validView(v *view) bool {
	if d.retired {
		return false
	}
	rec, _ := d.st.snapshot(v.snap)
	return rec != nil && *rec == v.rec && slices.Equal(d.st.path(rec.Layer), v.path) && d.dataDir() == v.dir
}

// snapshotView returns an open view of snapshot rec, from the cache when
// it holds a valid one. The caller holds d.mu and must release the view.
func (d *Disk) snapshotView(ctx context.Context, rec *snapshotRec) (*view, error) {
	c := d.s.views
	k := viewKey{d, rec.ID}
	var stale []*view
	defer closeViews(&stale)
	c.mu.Lock()
	if v := c.m[k]; v != nil {
		if d.validView(v) {
			c.tick++
			v.used = c.tick
			v.refs++
			c.hits++
			c.mu.Unlock()
			return v, nil
		}
		c.removeLocked(v, &stale)
	}
	c.misses++
	c.mu.Unlock()
	top, err := d.openFrozen(ctx, rec.Layer, nil)
	if err != nil {
		return nil, err
	}
	return d.cacheView(rec, top, 1), nil
}

// cacheView puts the open chain top of snapshot rec in the cache (unless
// it cannot hold it) and returns its view with refs references besides
// the cache's. The caller holds d.mu.
func (d *Disk) cacheView(rec *snapshotRec, top *vmdk.Disk, refs int) *view {
	c := d.s.views
	k := viewKey{d, rec.ID}
	v := &view{d: d, snap: rec.ID, rec: *rec, path: d.st.path(rec.Layer), dir: d.dataDir(), v: top, files: len(top.Info().Files), refs: refs}
	var stale []*view
	defer closeViews(&stale)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.max <= 0 || v.files > c.maxFiles || d.retired {
		if refs == 0 {
			stale = append(stale, v)
		}
		return v // not cached: closed at release
	}
	if old := c.m[k]; old != nil {
		c.removeLocked(old, &stale)
	}
	c.tick++
	v.used, v.cached = c.tick, true
	v.refs++
	c.m[k] = v
	c.files += v.files
	for len(c.m) > c.max || c.files > c.maxFiles {
		var lru *view
		for _, x := range c.m {
			if lru == nil || x.used < lru.used {
				lru = x
			}
		}
		c.removeLocked(lru, &stale)
	}
	return v
}

// warmView opens, as a snapshot of the leaf is taken, the chain the
// snapshot will read, taking the SEsparse grain directories and tables
// the live chain holds (flushed, and closed right after) instead of
// reading them again: the first query after a snapshot then costs what
// the later ones do. It returns nil when there is nothing to take or the
// open fails (the first query opens the chain then). The caller holds
// d.gate exclusively and d.mu.
func (d *Disk) warmView(ctx context.Context) *vmdk.Disk {
	if d.s.views.max <= 0 || d.live == nil || !hasSESparse(d.live) {
		return nil
	}
	v, err := d.openFrozen(ctx, d.st.Leaf, d.live)
	if err != nil {
		return nil
	}
	return v
}

// removeLocked takes v out of the cache; it is closed once no query uses
// it (appended to closing, which the caller closes after unlocking). The
// caller holds c.mu.
func (c *viewCache) removeLocked(v *view, closing *[]*view) {
	if !v.cached {
		return
	}
	delete(c.m, viewKey{v.d, v.snap})
	c.files -= v.files
	v.cached = false
	c.unrefLocked(v, closing)
}

func (c *viewCache) unrefLocked(v *view, closing *[]*view) {
	if v.refs--; v.refs == 0 {
		*closing = append(*closing, v)
	}
}

// closeViews closes views no one uses any more: a read-only chain only
// closes its files.
func closeViews(vs *[]*view) {
	for _, v := range *vs {
		v.v.Close()
	}
}

// release ends a query's use of v.
func (v *view) release() {
	c := v.d.s.views
	var closing []*view
	c.mu.Lock()
	c.unrefLocked(v, &closing)
	c.mu.Unlock()
	closeViews(&closing)
}

// pruneViews drops the disk's views that no longer match its state (or
// every one when all is set). The caller holds d.mu; commit calls it, so
// every change of layers, snapshots or directory releases the files of
// the views it makes stale at once.
func (d *Disk) pruneViews(all bool) {
	c := d.s.views
	if c == nil {
		return
	}
	var closing []*view
	c.mu.Lock()
	for k, v := range c.m {
		if k.d == d && (all || !d.validView(v)) {
			c.removeLocked(v, &closing)
		}
	}
	c.mu.Unlock()
	closeViews(&closing)
}
