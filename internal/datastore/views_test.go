package datastore

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"

	"github.com/vdisk-project/vdisk/disk"
	"github.com/vdisk-project/vdisk/format/vmdk"
)

// uncachedAllocated is what Allocated must answer for a snapshot: the same
// query on a chain opened afresh.
func uncachedAllocated(t *testing.T, d *Disk, snap string, chunk int64) []Area {
	t.Helper()
	d.mu.Lock()
	rec, _ := d.st.snapshot(snap)
	if rec == nil {
		d.mu.Unlock()
		t.Fatalf("no snapshot %s", snap)
	}
	v, err := d.openFrozen(context.Background(), rec.Layer, nil)
	d.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	out := []Area{}
	if err := disk.Extents(context.Background(), v, 0, v.Size(), func(e disk.Extent) error {
		if !e.Flags.Data() {
			return nil
		}
		a := e.Off &^ (chunk - 1)
		b := min((e.End()+chunk-1)&^(chunk-1), v.Size())
		if n := len(out); n > 0 && out[n-1].Start+out[n-1].Length >= a {
			out[n-1].Length = max(out[n-1].Length, b-out[n-1].Start)
			return nil
		}
		out = append(out, Area{Start: a, Length: b - a})
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

// covers reports whether every non-zero byte of content lies in areas
// (sorted, as the queries return them), and if not where one is not.
func covers(areas []Area, content []byte) (int64, bool) {
	zero := make([]byte, 1<<20)
	gap := func(a, b int64) (int64, bool) {
		for a < b {
			n := min(b-a, int64(len(zero)))
			if !bytes.Equal(content[a:a+n], zero[:n]) {
				return a + int64(bytes.IndexFunc(content[a:a+n], func(r rune) bool { return r != 0 })), false
			}
			a += n
		}
		return 0, true
	}
	var pos int64
	for _, a := range areas {
		if off, ok := gap(pos, min(a.Start, int64(len(content)))); !ok {
			return off, false
		}
		pos = max(pos, a.Start+a.Length)
	}
	return gap(min(pos, int64(len(content))), int64(len(content)))
}

// TestViewCacheModel runs random writes, snapshots (names reused),
// removals with consolidation, and reverts, and after every step asks
// every snapshot for its allocated blocks and changed areas from "*"
// (served from the view cache) and reads it: the answers must equal those
// of a chain opened afresh, cover every byte the model says holds data,
// and the reads must equal the model.
// With SEsparse layers the view of a new snapshot is opened from the live
// chain's tables as the snapshot is taken (warmView), so every first query
// is served from the cache.
func TestViewCacheModel(t *testing.T) {
	for _, typ := range []vmdk.Subformat{vmdk.MonolithicSparse, vmdk.SESparse} {
		t.Run(string(typ), func(t *testing.T) { viewCacheModel(t, typ) })
	}
}

func viewCacheModel(t *testing.T, typ vmdk.Subformat) {
	ctx := context.Background()
	s := openStore(t, t.TempDir())
	defer s.Close()
	if _, err := s.CreateDisk(ctx, DiskSpec{Name: "d", Capacity: viewSize, CBT: true, Type: typ}); err != nil {
		t.Fatal(err)
	}
	d, _ := s.Disk("d")
	h, err := d.OpenLive(false)
	if err != nil {
		t.Fatal(err)
	}
	live := &model{buf: make([]byte, viewSize)}
	snaps := map[string][]byte{} // snapshot ID -> content
	rng := rand.New(rand.NewPCG(11, 12))
	warmed := 0
	for step := range 20 {
		switch op := rng.IntN(10); {
		case op < 4:
			writeSmall(t, rng, h, live, 20)
		case (op < 6 && len(snaps) < 4) || len(snaps) == 0:
			if err := h.Flush(); err != nil {
				t.Fatal(err)
			}
			d.gate.RLock()
			seLeaf := hasSESparse(d.live) // the base (small disks have sparse deltas)
			d.gate.RUnlock()
			si, err := d.Snapshot(ctx, SnapshotSpec{Name: fmt.Sprintf("s%d", rng.IntN(3))})
			if err != nil {
				t.Fatal(err)
			}
			snaps[si.ID] = live.snapshot()
			if seLeaf {
				warmed++
				s.views.mu.Lock()
				warm := s.views.m[viewKey{d, si.ID}] != nil
				s.views.mu.Unlock()
				if !warm {
					t.Fatalf("step %d: no view of the new snapshot %s was opened from the live chain", step, si.ID)
				}
			}
		case op < 8:
			id := pick(rng, snaps)
			if err := d.RemoveSnapshot(ctx, id); err != nil {
				t.Fatalf("step %d: remove %s: %v", step, id, err)
			}
			delete(snaps, id)
		default:
			id := pick(rng, snaps)
			h.Close()
			if err := d.Revert(ctx, id); err != nil {
				t.Fatalf("step %d: revert to %s: %v", step, id, err)
			}
			live.buf = append([]byte(nil), snaps[id]...)
			if h, err = d.OpenLive(false); err != nil {
				t.Fatal(err)
			}
		}
		// Every snapshot is queried; one, in turn, is also read whole.
		for id, content := range snaps {
			for range 2 { // the second from the cache
				got, err := d.Allocated(ctx, id, 0, viewSize, 64<<10)
				if err != nil {
					t.Fatalf("step %d: Allocated(%s): %v", step, id, err)
				}
				if want := uncachedAllocated(t, d, id, 64<<10); !slices.Equal(got, want) {
					t.Fatalf("step %d: Allocated(%s) = %v, a fresh chain says %v", step, id, got, want)
				}
				if off, ok := covers(got, content); !ok {
					t.Fatalf("step %d: Allocated(%s) misses data at %d", step, id, off)
				}
				ci, err := d.Changes(ctx, id, "*", 0, 0)
				if err != nil {
					t.Fatal(err)
				}
				if off, ok := covers(ci.Areas, content); !ok {
					t.Fatalf("step %d: Changes(%s, *) misses data at %d", step, id, off)
				}
			}
			if id != pick(rand.New(rand.NewPCG(uint64(step), 0)), snaps) {
				continue
			}
			sh, err := d.OpenSnapshot(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			if got := readAll(t, sh); !slices.Equal(got, content) {
				t.Fatalf("step %d: snapshot %s reads other data than it was taken with", step, id)
			}
			sh.Close()
		}
		checkViewBounds(t, s)
	}
	h.Close()
	if c := s.views; c.hits == 0 {
		t.Error("no query was served from the cache")
	}
	if typ == vmdk.SESparse && warmed == 0 {
		t.Error("no snapshot of an SEsparse leaf was taken")
	}
}

func pick(rng *rand.Rand, m map[string][]byte) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys[rng.IntN(len(keys))]
}

// checkViewBounds: the cache holds no more views and files than its
// bounds, and only views valid for their disk's state.
func checkViewBounds(t *testing.T, s *Store) {
	t.Helper()
	c := s.views
	c.mu.Lock()
	views := make([]*view, 0, len(c.m))
	files := 0
	for _, v := range c.m {
		views = append(views, v)
		files += v.files
	}
	n, counted := len(c.m), c.files
	c.mu.Unlock()
	if n > c.max || counted > c.maxFiles || files != counted {
		t.Fatalf("cache holds %d views, %d files (counted %d); bounds %d, %d", n, files, counted, c.max, c.maxFiles)
	}
	for _, v := range views {
		v.d.mu.Lock()
		ok := v.d.validView(v)
		v.d.mu.Unlock()
		if !ok {
			t.Fatalf("cache holds a stale view of %s/%s", v.d.name, v.snap)
		}
	}
}

// TestViewCacheReusedID: a VM's snapshot IDs count per VM, so a disk moved
// to another VM can get a snapshot with the ID an old, removed one had.
// The cache must not answer the new snapshot with the old one's chain.
func TestViewCacheReusedID(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, t.TempDir())
	defer s.Close()
	for _, vm := range []string{"a", "b"} {
		if _, err := s.CreateVM(vm); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.AddDisk(ctx, "a", "scsi0:0", DiskSpec{Name: "d", Capacity: testSize}); err != nil {
		t.Fatal(err)
	}
	d, _ := s.Disk("d")
	h, _ := d.OpenLive(false)
	data := make([]byte, 64<<10)
	for i := range data {
		data[i] = 1
	}
	if _, err := h.WriteAt(data, 1<<20); err != nil {
		t.Fatal(err)
	}
	h.Close()
	s1, err := s.SnapshotVM(ctx, "a", SnapshotSpec{})
	if err != nil {
		t.Fatal(err)
	}
	want1 := []Area{{Start: 1 << 20, Length: 64 << 10}}
	if got, err := d.Allocated(ctx, s1.ID, 0, testSize, 64<<10); err != nil || !slices.Equal(got, want1) {
		t.Fatalf("Allocated = %v, %v; want %v", got, err, want1)
	}
	if err := s.RemoveVMSnapshot(ctx, "a", s1.ID); err != nil {
		t.Fatal(err)
	}
	h, _ = d.OpenLive(false)
	if err := h.WriteZeroes(1<<20, 64<<10, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := h.WriteAt(data, 8<<20); err != nil {
		t.Fatal(err)
	}
	h.Close()
	if _, err := s.Detach("a", "scsi0:0"); err != nil {
		t.Fatal(err)
	}
	if err := s.Attach("b", "scsi0:0", "d"); err != nil {
		t.Fatal(err)
	}
	s2, err := s.SnapshotVM(ctx, "b", SnapshotSpec{})
	if err != nil {
		t.Fatal(err)
	}
	if s2.ID != s1.ID {
		t.Skipf("VM snapshot IDs no longer repeat (%s, %s): nothing to test", s1.ID, s2.ID)
	}
	got, err := d.Allocated(ctx, s2.ID, 0, testSize, 64<<10)
	if want := uncachedAllocated(t, d, s2.ID, 64<<10); err != nil || !slices.Equal(got, want) {
		t.Fatalf("Allocated of the new %s = %v, %v; a fresh chain says %v", s2.ID, got, err, want)
	}
	if off, ok := covers(got, readAll(t, mustOpenSnapshot(t, d, s2.ID))); !ok {
		t.Fatalf("Allocated of the new %s misses data at %d", s2.ID, off)
	}
}

// TestViewCacheConcurrent: queries on every snapshot run while snapshots
// are taken and removed (consolidating) and the disk is written; every
// answer a query gets for a snapshot that existed must cover the data the
// snapshot was taken with and match a chain opened afresh, and the cache
// must end within its bounds.
func TestViewCacheConcurrent(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := Open(ctx, dir, &Options{LockedMergeMax: 1 << 20, Views: 3, ViewFiles: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.CreateDisk(ctx, DiskSpec{Name: "d", Capacity: viewSize, CBT: true}); err != nil {
		t.Fatal(err)
	}
	d, _ := s.Disk("d")
	h, _ := d.OpenLive(false)
	defer h.Close()
	live := &model{buf: make([]byte, viewSize)}
	var mu sync.Mutex
	snaps := map[string][]byte{}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for q := range 3 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(q), 99))
			for {
				select {
				case <-stop:
					return
				default:
				}
				mu.Lock()
				if len(snaps) == 0 {
					mu.Unlock()
					continue
				}
				id := pick(rng, snaps)
				content := snaps[id]
				mu.Unlock()
				got, err := d.Allocated(ctx, id, 0, viewSize, 4096)
				if disk.CodeOf(err) == disk.ErrNotFound {
					continue // removed meanwhile
				}
				if err != nil {
					t.Errorf("Allocated(%s): %v", id, err)
					return
				}
				if off, ok := covers(got, content); !ok {
					t.Errorf("Allocated(%s) misses data at %d", id, off)
					return
				}
			}
		})
	}
	rng := rand.New(rand.NewPCG(5, 6))
	for range 16 {
		writeSmall(t, rng, h, live, 10)
		h.Flush()
		si, err := d.Snapshot(ctx, SnapshotSpec{Name: "same"})
		if err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		snaps[si.ID] = live.snapshot()
		var victim string
		if len(snaps) > 3 {
			victim = pick(rng, snaps)
		}
		mu.Unlock()
		if victim != "" {
			// Removed from the model first: a query that picks it after
			// this may see ErrNotFound, never another snapshot's data.
			mu.Lock()
			delete(snaps, victim)
			mu.Unlock()
			if err := d.RemoveSnapshot(ctx, victim); err != nil {
				t.Fatal(err)
			}
		}
	}
	close(stop)
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	for id, content := range snaps {
		got, err := d.Allocated(ctx, id, 0, viewSize, 4096)
		if err != nil {
			t.Fatal(err)
		}
		if want := uncachedAllocated(t, d, id, 4096); !slices.Equal(got, want) {
			t.Fatalf("Allocated(%s) = %v, a fresh chain says %v", id, got, want)
		}
		if off, ok := covers(got, content); !ok {
			t.Fatalf("Allocated(%s) misses data at %d", id, off)
		}
	}
	checkViewBounds(t, s)
}

func mustOpenSnapshot(t *testing.T, d *Disk, id string) *Handle {
	t.Helper()
	h, err := d.OpenSnapshot(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

// viewSize is the disk the view cache tests write: small, so that they
// stay quick under the race detector.
const viewSize = 8 << 20

// writeSmall does n random writes or zeroings of up to 64 KiB through h
// and the model.
func writeSmall(t *testing.T, rng *rand.Rand, h *Handle, m *model, n int) {
	t.Helper()
	p := make([]byte, 64<<10)
	for range n {
		off := rng.Int64N(viewSize/512-128) * 512
		ln := (1 + rng.Int64N(128)) * 512
		var err error
		m.mu.Lock()
		if rng.IntN(8) == 0 {
			err = h.WriteZeroes(off, ln, 0)
			clear(m.buf[off : off+ln])
		} else {
			v := byte(rng.Uint32() | 1)
			for i := range p[:ln] {
				p[i] = v + byte(i>>9)
			}
			_, err = h.WriteAt(p[:ln], off)
			copy(m.buf[off:], p[:ln])
		}
		m.mu.Unlock()
		if err != nil {
			t.Fatalf("write at %d: %v", off, err)
		}
	}
}
