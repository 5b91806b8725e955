package datastore

import (
	"bytes"
	"context"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vdisk-project/vdisk/disk"
	"github.com/vdisk-project/vdisk/format/vmdk"
)

// sparseModel is what a huge disk must read as: 4 KiB blocks that were
// written (zeroed ones hold zeros); every other block reads as zeros.
type sparseModel struct {
	mu     sync.Mutex
	blocks map[int64][]byte
}

func (m *sparseModel) clone() map[int64][]byte {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make(map[int64][]byte, len(m.blocks))
	for k, v := range m.blocks {
		out[k] = v
	}
	return out
}

// writeScattered does n writes or zeroings of 4 KiB to 64 KiB at random
// 4 KiB-aligned offsets, half of them above 2 TiB when the disk is larger.
func writeScattered(t *testing.T, rng *rand.Rand, h *Handle, m *sparseModel, n int) {
	t.Helper()
	size := h.Size()
	for range n {
		ln := (1 + rng.Int64N(16)) * 4096
		off := rng.Int64N((size-ln)/4096) * 4096
		if size > 2<<40 && rng.IntN(2) == 0 {
			off = 2<<40 + rng.Int64N((size-2<<40-ln)/4096)*4096
		}
		m.mu.Lock()
		var err error
		if rng.IntN(6) == 0 {
			err = h.WriteZeroes(off, ln, 0)
			for b := off; b < off+ln; b += 4096 {
				m.blocks[b/4096] = nil
			}
		} else {
			p := make([]byte, ln)
			for i := range p {
				p[i] = byte(rng.Uint32() | 1)
			}
			_, err = h.WriteAt(p, off)
			for b := off; b < off+ln; b += 4096 {
				m.blocks[b/4096] = p[b-off : b-off+4096]
			}
		}
		m.mu.Unlock()
		if err != nil {
			t.Errorf("write at %d: %v", off, err)
			return
		}
	}
}

// verifySparse reads every block of want from d, and some blocks no write
// touched, which must read as zeros.
func verifySparse(t *testing.T, d disk.Disk, want map[int64][]byte, what string) {
	t.Helper()
	zero := make([]byte, 4096)
	buf := make([]byte, 4096)
	for b, p := range want {
		if _, err := d.ReadAt(buf, b*4096); err != nil {
			t.Fatalf("%s: read block %d: %v", what, b, err)
		}
		if p == nil {
			p = zero
		}
		if !bytes.Equal(buf, p) {
			t.Fatalf("%s: block %d (offset %d) differs from the model", what, b, b*4096)
		}
	}
	rng := rand.New(rand.NewPCG(9, 9))
	for range 200 {
		b := rng.Int64N(d.Size() / 4096)
		if _, ok := want[b]; ok {
			continue
		}
		if _, err := d.ReadAt(buf, b*4096); err != nil || !bytes.Equal(buf, zero) {
			t.Fatalf("%s: untouched block %d does not read as zeros (%v)", what, b, err)
		}
	}
}

func createType(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "createType="); ok {
			return strings.Trim(v, `"`)
		}
	}
	return ""
}

// TestHugeDiskSEsparse: a sparse 4 TiB disk takes writes above 2 TiB,
// snapshots into SEsparse deltas, answers incremental changed-area queries
// that rebuild each snapshot exactly, and consolidates while writes go on;
// everything reads bit-exact against the model.
func TestHugeDiskSEsparse(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := openStore(t, dir)
	defer s.Close()
	const size = 4 << 40
	in, err := s.CreateDisk(ctx, DiskSpec{Name: "big", Capacity: size, CBT: true})
	if err != nil {
		t.Fatal(err)
	}
	if in.Type != string(vmdk.SESparse) {
		t.Errorf("a 4 TiB base is %s, want seSparse", in.Type)
	}
	d, _ := s.Disk("big")
	h, err := d.OpenLive(false)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	m := &sparseModel{blocks: map[int64][]byte{}}
	writeScattered(t, rand.New(rand.NewPCG(1, 1)), h, m, 150)

	backup := map[int64][]byte{} // full + incrementals, 4 KiB blocks
	prev, prevCID := "", ""
	for gen := range 3 {
		m.mu.Lock()
		info, err := d.Snapshot(ctx, SnapshotSpec{Name: "gen"})
		m.mu.Unlock()
		if err != nil {
			t.Fatalf("gen %d: snapshot: %v", gen, err)
		}
		want := m.clone()
		if ct := createType(t, d.layerPath(d.st.Leaf)); ct != string(vmdk.SESparse) {
			t.Fatalf("gen %d: the new delta is %s, want seSparse", gen, ct)
		}
		var wg sync.WaitGroup
		wg.Go(func() { writeScattered(t, rand.New(rand.NewPCG(uint64(gen), 3)), h, m, 150) })
		snap, err := d.OpenSnapshot(ctx, info.ID)
		if err != nil {
			t.Fatal(err)
		}
		if prev == "" {
			for b, p := range want { // the full backup, from what was written
				backup[b] = p
			}
		} else {
			ci, err := d.Changes(ctx, info.ID, prevCID, 0, 0)
			if err != nil {
				t.Fatalf("gen %d: changes: %v", gen, err)
			}
			var read int64
			for _, a := range ci.Areas {
				for o := a.Start; o < a.Start+a.Length; o += 4096 {
					if a.Zero {
						backup[o/4096] = nil
						continue
					}
					p := make([]byte, 4096)
					if _, err := snap.ReadAt(p, o); err != nil {
						t.Fatal(err)
					}
					backup[o/4096] = p
					read += 4096
				}
			}
			if read > 64<<20 {
				t.Errorf("gen %d: the incremental read %d bytes for about 150 small writes", gen, read)
			}
		}
		verifySparse(t, snap, want, "snapshot")
		for b, p := range backup {
			if w, ok := want[b]; ok && !bytes.Equal(w, p) && !(w == nil && bytes.Equal(p, make([]byte, 4096))) {
				t.Fatalf("gen %d: backup block %d differs from the snapshot", gen, b)
			}
		}
		snap.Close()
		if prev != "" {
			if err := d.RemoveSnapshot(ctx, prev); err != nil { // consolidation under writes
				t.Fatalf("gen %d: remove: %v", gen, err)
			}
		}
		wg.Wait()
		prev, prevCID = info.ID, info.ChangeID
		verifySparse(t, h, m.clone(), "live disk")
	}
	if err := d.RemoveSnapshot(ctx, prev); err != nil {
		t.Fatal(err)
	}
	verifySparse(t, h, m.clone(), "live disk after the last consolidation")
	if n := d.Info().Layers; n != 1 {
		t.Errorf("%d layers after removing every snapshot", n)
	}
	// Revert to a snapshot on an SEsparse delta.
	m.mu.Lock()
	rs, err := d.Snapshot(ctx, SnapshotSpec{Name: "revert"})
	m.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	atSnap := m.clone()
	writeScattered(t, rand.New(rand.NewPCG(8, 8)), h, &sparseModel{blocks: map[int64][]byte{}}, 60)
	h.Close()
	if err := d.Revert(ctx, rs.ID); err != nil {
		t.Fatal(err)
	}
	if h, err = d.OpenLive(false); err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	verifySparse(t, h, atSnap, "live disk after revert")
	m.blocks = atSnap
	if err := d.RemoveSnapshot(ctx, rs.ID); err != nil {
		t.Fatal(err)
	}
	// Allocated blocks cover every written block.
	areas, err := d.Allocated(ctx, "", 0, size, 64<<10)
	if err != nil {
		t.Fatal(err)
	}
	covered := func(off int64) bool {
		for _, a := range areas {
			if off >= a.Start && off < a.Start+a.Length {
				return true
			}
		}
		return false
	}
	for b, p := range m.clone() {
		if p != nil && !covered(b*4096) {
			t.Fatalf("block %d holds data but is not reported allocated", b)
		}
	}
	var alloc int64
	ents, _ := os.ReadDir(d.dataDir())
	for _, e := range ents {
		st, _ := e.Info()
		alloc += allocatedBytes(st)
	}
	if alloc > 512<<20 {
		t.Errorf("the disk's files take %d bytes of storage", alloc)
	}
	// Grow to the largest capacity: extents are added within the file
	// size limit, and the new end takes writes.
	h.Close()
	if err := d.Grow(ctx, MaxCapacity); err != nil {
		t.Fatal(err)
	}
	if h, err = d.OpenLive(false); err != nil {
		t.Fatal(err)
	}
	p := bytes.Repeat([]byte{0x99}, 4096)
	if _, err := h.WriteAt(p, MaxCapacity-4096); err != nil {
		t.Fatal(err)
	}
	m.blocks[MaxCapacity/4096-1] = p
	verifySparse(t, h, m.clone(), "grown disk")
	limit := fileLimit(d.dataDir())
	ents, _ = os.ReadDir(d.dataDir())
	for _, e := range ents {
		if st, _ := e.Info(); limit > 0 && st.Size() > limit {
			t.Errorf("%s is %d bytes, past the file limit", e.Name(), st.Size())
		}
	}
}

// TestMaxCapacityDisk: a 62 TiB disk is created (split into SEsparse
// extents that fit the filesystem's file size limit), written at its far
// end, snapshotted, and its changed and allocated areas are queried fast.
func TestMaxCapacityDisk(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := openStore(t, dir)
	defer s.Close()
	if _, err := s.CreateDisk(ctx, DiskSpec{Name: "max", Capacity: MaxCapacity, CBT: true}); err != nil {
		t.Fatal(err)
	}
	d, _ := s.Disk("max")
	limit := fileLimit(d.dataDir())
	t.Logf("file size limit here: %d bytes", limit)
	h, err := d.OpenLive(false)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	m := &sparseModel{blocks: map[int64][]byte{}}
	writeScattered(t, rand.New(rand.NewPCG(4, 4)), h, m, 50)
	p := bytes.Repeat([]byte{0xee}, 4096)
	if _, err := h.WriteAt(p, MaxCapacity-4096); err != nil {
		t.Fatal(err)
	}
	m.blocks[MaxCapacity/4096-1] = p
	s1, err := d.Snapshot(ctx, SnapshotSpec{})
	if err != nil {
		t.Fatal(err)
	}
	writeScattered(t, rand.New(rand.NewPCG(5, 5)), h, m, 50)
	s2, err := d.Snapshot(ctx, SnapshotSpec{})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	ci, err := d.Changes(ctx, s2.ID, s1.ChangeID, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	if len(ci.Areas) == 0 || len(ci.Areas) > 50 {
		t.Errorf("%d changed areas for 50 writes", len(ci.Areas))
	}
	start = time.Now()
	areas, err := d.Allocated(ctx, s2.ID, 0, MaxCapacity, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("changed-area query %v, allocated-block query %v (%d areas)", took, time.Since(start), len(areas))
	snap, err := d.OpenSnapshot(ctx, s2.ID)
	if err != nil {
		t.Fatal(err)
	}
	verifySparse(t, snap, m.clone(), "62 TiB snapshot")
	snap.Close()
	for _, id := range []string{s1.ID, s2.ID} {
		if err := d.RemoveSnapshot(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	verifySparse(t, h, m.clone(), "62 TiB disk after consolidation")
	ents, _ := os.ReadDir(d.dataDir())
	var alloc int64
	for _, e := range ents {
		st, _ := e.Info()
		if limit > 0 && st.Size() > limit {
			t.Errorf("%s is %d bytes, past the file limit", e.Name(), st.Size())
		}
		alloc += allocatedBytes(st)
	}
	if alloc > 256<<20 {
		t.Errorf("the disk's files take %d bytes of storage", alloc)
	}
	if _, err := os.Stat(filepath.Join(d.dataDir(), "max-000000-sesparse-001.vmdk")); limit > 0 && limit < MaxCapacity && err != nil {
		t.Errorf("a 62 TiB base is not split: %v", err)
	}
}
