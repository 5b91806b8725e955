package backup

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/vdisk-project/vdisk/backup/storage"
	"github.com/vdisk-project/vdisk/backup/storage/mem"
	"github.com/vdisk-project/vdisk/disk"
	"github.com/vdisk-project/vdisk/disk/disktest"
)

// mergeChunk is the chunk size of the partial-chunk tests: four of
// MemDisk's 64 KiB blocks.
const mergeChunk = 256 << 10

func newMergeRepo(t testing.TB, st storage.Storage, encrypted bool) *Repository {
	t.Helper()
	return newRepoChunk(t, st, encrypted, mergeChunk)
}

// randomPoint fills a new disk of chunks merge chunks with random bytes
// and backs it up whole: the disk and the point.
func randomPoint(t testing.TB, r *Repository, rng *rand.Rand, chunks int64) (*disktest.MemDisk, *Point) {
	t.Helper()
	d := disktest.NewMemDisk(chunks * mergeChunk)
	b := make([]byte, d.Size())
	fill(rng, b)
	if _, err := d.WriteAt(b, 0); err != nil {
		t.Fatal(err)
	}
	p, _, err := r.Backup(context.Background(), BackupOptions{Source: "s", Disks: []SourceDisk{{Name: "d", Disk: d}}})
	if err != nil {
		t.Fatal(err)
	}
	return d, p
}

// scatter makes ops random small changes to d (writes of random or
// repeated bytes, zeroes, trims, none bigger than 40 KiB) and returns their
// extents; zeroings are reported with disk.Zero as a host's changed areas
// report them.
func scatter(t testing.TB, rng *rand.Rand, d *disktest.MemDisk, ops int) []disk.Extent {
	t.Helper()
	var ch []disk.Extent
	for range ops {
		off := rng.Int64N(d.Size()/512) * 512
		n := min(512*(1+rng.Int64N(80)), d.Size()-off)
		e := disk.Extent{Off: off, Len: n}
		switch rng.IntN(5) {
		case 0:
			if err := d.WriteZeroes(off, n, 0); err != nil {
				t.Fatal(err)
			}
			e.Flags = disk.Zero
		case 1:
			if err := d.Trim(off, n); err != nil {
				t.Fatal(err)
			}
		default:
			b := make([]byte, n)
			fill(rng, b)
			if rng.IntN(3) == 0 {
				b = bytes.Repeat([]byte{byte(1 + rng.IntN(3))}, int(n))
			}
			if _, err := d.WriteAt(b, off); err != nil {
				t.Fatal(err)
			}
		}
		ch = append(ch, e)
	}
	return ch
}

// unionBytes is the number of bytes the extents cover, and the set of
// chunks they touch.
func unionBytes(ch []disk.Extent, size, cs int64) (int64, map[int64]bool) {
	m := mergeChanged(ch, size)
	chunks := map[int64]bool{}
	var n int64
	for _, e := range m {
		n += e.Len
		for c := e.Off / cs; c <= (e.End()-1)/cs; c++ {
			chunks[c] = true
		}
	}
	return n, chunks
}

// checkBytes checks that point p's disk reads back as want, through
// OpenDisk and through Restore.
func checkBytes(t testing.TB, r *Repository, p *Point, name string, want []byte) {
	t.Helper()
	ctx := context.Background()
	d, err := r.OpenDisk(ctx, p, name)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if got := readAll(t, d); !bytes.Equal(got, want) {
		t.Fatalf("point %s disk %s: OpenDisk differs at %d", p.ID[:8], name, firstDiff(got, want))
	}
	tgt := disktest.NewMemDisk(int64(len(want)))
	if _, err := r.Restore(ctx, p, name, tgt, RestoreOptions{}); err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, tgt); !bytes.Equal(got, want) {
		t.Fatalf("point %s disk %s: Restore differs at %d", p.ID[:8], name, firstDiff(got, want))
	}
}

// TestPartialChunkIncrementals: over generations of small scattered
// writes, zeroes and trims, each incremental reads at most 1.05 times the
// changed bytes (it takes the rest of a partly changed chunk from the
// parent's chunk), stores at most the changed chunks, and every point
// restores bit for bit; also after the disk grows and after it shrinks.
func TestPartialChunkIncrementals(t *testing.T) {
	for _, enc := range []bool{true, false} {
		t.Run(map[bool]string{true: "encrypted", false: "plain"}[enc], func(t *testing.T) {
			ctx := context.Background()
			r := newMergeRepo(t, nil, enc)
			rng := rand.New(rand.NewPCG(21, 22))
			d := disktest.NewMemDisk(24 * mergeChunk)
			scatter(t, rng, d, 100)
			p, _, err := r.Backup(ctx, BackupOptions{Source: "s", Disks: []SourceDisk{{Name: "d", Disk: d}}})
			if err != nil {
				t.Fatal(err)
			}
			points := []*Point{p}
			truth := [][]byte{readAll(t, d)}
			var merged int64
			for gen := 1; gen < 11; gen++ {
				switch gen {
				case 7:
					// Grown: the parent covers only the old chunks.
					if err := d.Resize(ctx, d.Size()+3*mergeChunk+4096); err != nil {
						t.Fatal(err)
					}
				case 9:
					// Shrunk: the parent's chunk at the new end is longer.
					if err := d.Resize(ctx, d.Size()-2*mergeChunk-10000); err != nil {
						t.Fatal(err)
					}
				}
				ch := scatter(t, rng, d, 1+rng.IntN(20))
				cd := &countingDisk{Disk: d}
				var sum Summary
				p, sum, err = r.Backup(ctx, BackupOptions{Source: "s", Parent: p, Disks: []SourceDisk{{Name: "d", Disk: cd, Changed: ch}}})
				if err != nil {
					t.Fatal(err)
				}
				changed, chunks := unionBytes(ch, d.Size(), mergeChunk)
				limit := int64(float64(changed) * 1.05)
				switch gen {
				case 7:
					limit += 4 * mergeChunk // the new end is read (a hole: nothing)
				case 9:
					limit += mergeChunk // the new last chunk is read
				}
				if got := cd.read.Load(); got > limit || got != sum.BytesRead {
					t.Errorf("gen %d: read %d bytes (summary %d) for %d changed", gen, got, sum.BytesRead, changed)
				}
				if sum.NewChunks > int64(len(chunks)) || sum.ChunksChanged != int64(len(chunks)) || sum.BytesChanged != changed {
					t.Errorf("gen %d: stored %d chunks, summary says %d changed in %d bytes; %d chunks of %d bytes changed",
						gen, sum.NewChunks, sum.ChunksChanged, sum.BytesChanged, len(chunks), changed)
				}
				merged += sum.BytesFromParent
				points = append(points, p)
				truth = append(truth, readAll(t, d))
			}
			if merged == 0 {
				t.Error("no chunk was merged with its parent")
			}
			r2 := reopen(t, r)
			for g, p := range points {
				checkBytes(t, r2, p, "d", truth[g])
			}
			checkClean(t, r2)
		})
	}
}

// TestPartialChunkParentGone: when a parent's chunk cannot be read (a
// prune deleted its pack), the chunk is read whole from the source and the
// point is still right.
func TestPartialChunkParentGone(t *testing.T) {
	ctx := context.Background()
	st := mem.New()
	r := newMergeRepo(t, st, true)
	rng := rand.New(rand.NewPCG(23, 24))
	d, p0 := randomPoint(t, r, rng, 16)
	for _, in := range objects(t, st, dataPrefix) {
		if err := st.Delete(ctx, in.Name); err != nil {
			t.Fatal(err)
		}
	}
	ch := []disk.Extent{{Off: 5*mergeChunk + 1000, Len: 3000}, {Off: 9 * mergeChunk, Len: 512}}
	for _, e := range ch {
		if _, err := d.WriteAt(bytes.Repeat([]byte{7}, int(e.Len)), e.Off); err != nil {
			t.Fatal(err)
		}
	}
	cd := &countingDisk{Disk: d}
	p1, sum, err := r.Backup(ctx, BackupOptions{Source: "s", Parent: p0, Disks: []SourceDisk{{Name: "d", Disk: cd, Changed: ch}}})
	if err != nil {
		t.Fatal(err)
	}
	if sum.ParentFallbacks != 2 || sum.BytesFromParent != 0 {
		t.Errorf("summary %+v: want two fallbacks", sum)
	}
	// Every chunk is read whole: the two changed ones because their
	// parents are gone, the others because their packs are.
	if sum.BytesRead != d.Size() {
		t.Errorf("read %d bytes", sum.BytesRead)
	}
	checkBytes(t, reopen(t, r), p1, "d", readAll(t, d))
}

// TestPartialChunkOverMarkers: a partly changed chunk whose parent entry
// is a hole or zero marker is built on zeros without any repository read;
// one over data from the parent's chunk.
func TestPartialChunkOverMarkers(t *testing.T) {
	ctx := context.Background()
	r := newMergeRepo(t, nil, true)
	d := disktest.NewMemDisk(3 * mergeChunk)
	// Chunk 0 a hole, chunk 1 allocated zeros, chunk 2 data.
	if _, err := d.WriteAt(make([]byte, mergeChunk), mergeChunk); err != nil {
		t.Fatal(err)
	}
	if _, err := d.WriteAt(bytes.Repeat([]byte{5}, mergeChunk), 2*mergeChunk); err != nil {
		t.Fatal(err)
	}
	p0, _, err := r.Backup(ctx, BackupOptions{Source: "s", Disks: []SourceDisk{{Name: "d", Disk: d}}})
	if err != nil {
		t.Fatal(err)
	}
	m, err := r.loadMap(ctx, &p0.Disks[0])
	if err != nil {
		t.Fatal(err)
	}
	if m.ids[0] != holeID || m.ids[1] != zeroID {
		t.Fatalf("parent entries %s %s, want a hole and a zero marker", m.ids[0], m.ids[1])
	}
	var ch []disk.Extent
	for c := int64(0); c < 3; c++ {
		e := disk.Extent{Off: c*mergeChunk + 70000, Len: 4096}
		if _, err := d.WriteAt(bytes.Repeat([]byte{byte(c + 1)}, 4096), e.Off); err != nil {
			t.Fatal(err)
		}
		ch = append(ch, e)
	}
	p1, sum, err := r.Backup(ctx, BackupOptions{Source: "s", Parent: p0, Disks: []SourceDisk{{Name: "d", Disk: d, Changed: ch}}})
	if err != nil {
		t.Fatal(err)
	}
	if sum.BytesRead != 3*4096 || sum.BytesFromParent != mergeChunk-4096 || sum.NewChunks != 3 {
		t.Fatalf("summary %+v", sum)
	}
	checkBytes(t, r, p1, "d", readAll(t, d))
}

// TestPartialChunkResume: an incremental of partly changed chunks that is
// cancelled resumes from its checkpoint, reads only the changed bytes in
// all, and its point is right.
func TestPartialChunkResume(t *testing.T) {
	ctx := context.Background()
	r := newMergeRepo(t, nil, true)
	rng := rand.New(rand.NewPCG(25, 26))
	d, p0 := randomPoint(t, r, rng, 48)
	var ch []disk.Extent
	for c := int64(0); c < 48; c++ {
		e := disk.Extent{Off: c*mergeChunk + rng.Int64N(mergeChunk-8192), Len: 8192}
		if _, err := d.WriteAt(bytes.Repeat([]byte{byte(c)}, 8192), e.Off); err != nil {
			t.Fatal(err)
		}
		ch = append(ch, e)
	}
	cctx, cancel := context.WithCancel(ctx)
	// cancelDisk counts in testChunk (64 KiB): cancel after 16 reads of
	// 8 KiB, a third of the chunks.
	cd := &cancelDisk{countingDisk: countingDisk{Disk: d}, n: 2, cancel: cancel}
	opts := BackupOptions{Source: "s", Parent: p0, Concurrency: 2, CheckpointEvery: 8,
		Disks: []SourceDisk{{Name: "d", Disk: cd, Changed: ch, ChangeID: "2"}}}
	if _, _, err := r.Backup(cctx, opts); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled backup: %v", err)
	}
	first := cd.read.Load()
	again := &countingDisk{Disk: d}
	opts.Disks[0].Disk = again
	p1, sum, err := reopen(t, r).Backup(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	if sum.BytesResumed == 0 {
		t.Fatalf("nothing resumed: %+v", sum)
	}
	// Each run reads the changed bytes of what it stores, plus the
	// resume's spot checks and the chunks in flight at the cancel.
	if total := first + again.read.Load() - sum.BytesResumeChecked; total > 48*8192+int64(opts.Concurrency+1)*8192 {
		t.Errorf("read %d + %d bytes for %d changed; %d resumed chunks, %d checked", first, again.read.Load(), 48*8192, sum.BytesResumed/mergeChunk, sum.BytesResumeChecked)
	}
	checkBytes(t, r, p1, "d", readAll(t, d))
}

// TestMergeChanged: changed extents are sorted, joined and clipped; a
// joined extent is zero only if all its parts are.
func TestMergeChanged(t *testing.T) {
	z := disk.Zero
	got := mergeChanged([]disk.Extent{{Off: 50, Len: 10}, {Off: 0, Len: 10, Flags: z}, {Off: 5, Len: 10, Flags: z},
		{Off: 15, Len: 5}, {Off: 55, Len: 10, Flags: z}, {Off: 90, Len: 20}, {Off: -5, Len: 2}, {Off: 30, Len: 0}}, 100)
	want := []disk.Extent{{Off: 0, Len: 15, Flags: z}, {Off: 15, Len: 5}, {Off: 50, Len: 15}, {Off: 90, Len: 10}}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("got %v, want %v", got, want)
		}
	}
}

// TestChunkIDFormats: format 2 IDs hash 64 KiB blocks and skip zero
// blocks, and agree with what idKnown computes from spans; format 1
// repositories still use (and verify) whole-chunk IDs; a newer format is
// refused.
func TestChunkIDFormats(t *testing.T) {
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(27, 28))
	data := make([]byte, 4<<20-12345)
	for _, at := range []int{0, 70000, 3 << 20, len(data) - 10} {
		for i := at; i < at+5000 && i < len(data); i++ {
			data[i] = byte(rng.Uint32())
		}
	}
	for _, enc := range []bool{true, false} {
		var key []byte
		if enc {
			key = bytes.Repeat([]byte{1}, 32)
		}
		c1, err := newCrypter(key, key, 4<<20, false)
		if err != nil {
			t.Fatal(err)
		}
		c2, _ := newCrypter(key, key, 4<<20, true)
		id1, id2 := c1.id(data), c2.id(data)
		if id1 != c1.sum(data) || id1 == id2 {
			t.Fatalf("format 1 ID %s, format 2 %s", id1, id2)
		}
		known := []span{{0, 5000}, {70000, 75000}, {3 << 20, 3<<20 + 5000}, {int64(len(data)) - 10, int64(len(data))}}
		if got := c2.idKnown(data, known); got != id2 {
			t.Fatalf("idKnown %s, id %s", got, id2)
		}
		// A byte anywhere, zero block or not, changes the ID.
		for _, at := range []int{1, 200000, len(data) - 1} {
			data[at] ^= 0x80
			if c2.id(data) == id2 {
				t.Fatalf("flipping byte %d leaves the ID", at)
			}
			data[at] ^= 0x80
		}
		c1.close()
		c2.close()
	}

	st := mem.New()
	r, err := Init(ctx, st, InitOptions{ChunkSize: testChunk, PackSize: MinPackSize, Password: testPassword, ScryptN: 1024, version: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	d := randomDisk(t, rng, 32*testChunk)
	p, _, err := r.Backup(ctx, BackupOptions{Source: "s", Disks: []SourceDisk{{Name: "d", Disk: d}}})
	if err != nil {
		t.Fatal(err)
	}
	r1 := reopen(t, r)
	if r1.cfg.Version != 1 || r1.c.tree {
		t.Fatalf("reopened format 1 repository as version %d", r1.cfg.Version)
	}
	m, err := r1.loadMap(ctx, &p.Disks[0])
	if err != nil {
		t.Fatal(err)
	}
	want := readAll(t, d)
	if m.ids[0] != r1.c.sum(want[:testChunk]) {
		t.Fatal("format 1 chunk ID is not the hash of the whole chunk")
	}
	checkPoint(t, r1, p, "d", takeSnapshot(t, d))
	checkClean(t, r1)

	var cfg map[string]any
	b, _ := st.Get(ctx, configName, maxConfigSize)
	json.Unmarshal(b, &cfg)
	cfg["version"] = configVersion + 1
	b, _ = json.Marshal(cfg)
	st.Put(ctx, configName, b)
	if _, err := Open(ctx, st, testPassword); !errors.Is(err, disk.ErrNotSupported) || !strings.Contains(err.Error(), "version 3") {
		t.Fatalf("open of a newer format: %v", err)
	}
}

// fill fills b with random bytes from rng.
func fill(rng *rand.Rand, b []byte) {
	for len(b) >= 8 {
		binary.LittleEndian.PutUint64(b, rng.Uint64())
		b = b[8:]
	}
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
}
