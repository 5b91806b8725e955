package backup

import (
	"context"
	"errors"
	"math/rand/v2"
	"runtime"
	"strings"
	"testing"

	"github.com/vdisk-project/vdisk/backup/storage/mem"
	"github.com/vdisk-project/vdisk/disk"
	"github.com/vdisk-project/vdisk/disk/disktest"
)

// TestModel backs up many generations of a randomly changing disk, each an
// incremental from the true changed extents (some full re-reads), and checks
// that every point reads back as the disk was at its generation.
func TestModel(t *testing.T) {
	for _, enc := range []bool{true, false} {
		name := "plain"
		if enc {
			name = "encrypted"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			r := newTestRepo(t, nil, enc)
			rng := rand.New(rand.NewPCG(1, 2))
			const size = 4<<20 + 12345 // not a chunk multiple
			d := disktest.NewMemDisk(size)
			d1 := disktest.NewMemDisk(size / 3) // a second disk, changing less
			type gen struct {
				p     *Point
				s, s1 snapshot
			}
			var gens []gen
			var parent *Point
			for g := range 16 {
				changed := mutate(t, rng, d, 1+rng.IntN(12))
				changed1 := mutate(t, rng, d1, rng.IntN(3))
				opts := BackupOptions{Source: "model", Parent: parent, Concurrency: 3,
					Disks: []SourceDisk{{Name: "d0", Disk: d, ChangeID: "c" + string(rune('a'+g))}, {Name: "d1", Disk: d1}}}
				if parent != nil && g%5 != 4 {
					opts.Disks[0].Changed = changed
					opts.Disks[1].Changed = append(changed1, disk.Extent{}) // non-nil even when empty
				}
				p, sum, err := r.Backup(ctx, opts)
				if err != nil {
					t.Fatalf("generation %d: %v", g, err)
				}
				if sum.BytesRead > size+size/3+2*testChunk {
					t.Fatalf("generation %d read %d bytes", g, sum.BytesRead)
				}
				gens = append(gens, gen{p, takeSnapshot(t, d), takeSnapshot(t, d1)})
				parent = p
			}
			// Read back through a freshly opened repository.
			r2 := reopen(t, r)
			ps, err := r2.Points(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if len(ps) != len(gens) {
				t.Fatalf("%d points, want %d", len(ps), len(gens))
			}
			for _, g := range gens {
				p, err := r2.Point(ctx, g.p.ID[:8])
				if err != nil {
					t.Fatal(err)
				}
				checkPoint(t, r2, p, "d0", g.s)
				checkPoint(t, r2, p, "d1", g.s1)
			}
			// Restore an old point into the current disk (existing target).
			old := gens[3]
			st, err := r2.Restore(ctx, old.p, "d0", d, RestoreOptions{Existing: true})
			if err != nil {
				t.Fatal(err)
			}
			if got := readAll(t, d); firstDiff(got, old.s.data) >= 0 {
				t.Fatalf("existing restore differs at %d", firstDiff(got, old.s.data))
			}
			if st.Unchanged == 0 {
				t.Errorf("existing restore found no unchanged chunk: %+v", st)
			}
			rep, err := r2.Verify(ctx, VerifyOptions{ReadData: true})
			if err != nil {
				t.Fatal(err)
			}
			if !rep.OK() {
				t.Fatalf("verify: %+v", rep)
			}
		})
	}
}

func TestWrongPassword(t *testing.T) {
	ctx := context.Background()
	st := mem.New()
	newTestRepo(t, st, true)
	_, err := Open(ctx, st, []byte("wrong"))
	if !errors.Is(err, disk.ErrPermission) {
		t.Fatalf("open with a wrong password: %v, want ErrPermission", err)
	}
	t.Log(err)
	if _, err := Open(ctx, mem.New(), nil); !errors.Is(err, disk.ErrNotFound) {
		t.Fatalf("open of an empty store: %v, want ErrNotFound", err)
	}
}

func TestKeysAndCorruptManifest(t *testing.T) {
	ctx := context.Background()
	st := mem.New()
	r := newTestRepo(t, st, true)
	if _, err := r.AddKey(ctx, []byte("second")); err != nil {
		t.Fatal(err)
	}
	r2, err := Open(ctx, st, []byte("second"))
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Close()
	if r2.ID() != r.ID() || r2.ChunkSize() != testChunk || !r2.Encrypted() {
		t.Fatalf("second key opens another repository")
	}
	src := disktest.NewMemDisk(3 * testChunk)
	_, _ = src.WriteAt([]byte("hello"), 0)
	p, _, err := r.Backup(ctx, BackupOptions{Source: "s", Disks: []SourceDisk{{Name: "d", Disk: src}}})
	if err != nil {
		t.Fatal(err)
	}
	good, _, err := r.Backup(ctx, BackupOptions{Source: "s", Disks: []SourceDisk{{Name: "d", Disk: src}}})
	if err != nil {
		t.Fatal(err)
	}
	flipByte(t, st, pointsPrefix+p.ID, 20)
	ps, err := r2.Points(ctx)
	if !errors.Is(err, disk.ErrCorrupt) || len(ps) != 1 || ps[0].ID != good.ID {
		t.Fatalf("points with one damaged manifest: %v, %v", ps, err)
	}
	_, err = r2.Point(ctx, p.ID[:6])
	if !errors.Is(err, disk.ErrCorrupt) || !strings.Contains(err.Error(), pointsPrefix+p.ID) {
		t.Fatalf("damaged manifest: %v, want ErrCorrupt naming it", err)
	}
	if _, err := r2.Point(ctx, "ffffffff"); !errors.Is(err, disk.ErrNotFound) {
		t.Fatalf("unknown point: %v", err)
	}
	if _, err := Init(ctx, st, InitOptions{Unencrypted: true}); !errors.Is(err, disk.ErrInvalid) {
		t.Fatalf("init over a repository: %v", err)
	}
	for _, cs := range []int{1000, 32 << 10, 128 << 20} {
		if _, err := Init(ctx, mem.New(), InitOptions{ChunkSize: cs, Unencrypted: true}); !errors.Is(err, disk.ErrInvalid) {
			t.Fatalf("chunk size %d: %v", cs, err)
		}
	}
}

// TestRestoreChangedAndSubset rolls a disk back to a point by restoring
// only what changed since, and verifies the data in two halves.
func TestRestoreChangedAndSubset(t *testing.T) {
	ctx := context.Background()
	r := newTestRepo(t, nil, true)
	rng := rand.New(rand.NewPCG(21, 22))
	d := randomDisk(t, rng, 40*testChunk)
	p, _, err := r.Backup(ctx, BackupOptions{Source: "s", Disks: []SourceDisk{{Name: "d", Disk: d}}})
	if err != nil {
		t.Fatal(err)
	}
	want := takeSnapshot(t, d)
	changed := mutate(t, rng, d, 5)
	st, err := r.Restore(ctx, p, "d", d, RestoreOptions{Existing: true, Changed: changed})
	if err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, d); firstDiff(got, want.data) >= 0 {
		t.Fatalf("rollback differs at %d", firstDiff(got, want.data))
	}
	if st.Skipped == 0 || st.Written+st.Zeroed == 0 {
		t.Fatalf("rollback stats %+v", st)
	}
	total := 0
	for _, sub := range []string{"1/2", "2/2"} {
		rep, err := r.Verify(ctx, VerifyOptions{ReadData: true, Subset: sub})
		if err != nil || !rep.OK() {
			t.Fatalf("subset %s: %v %v", sub, err, rep)
		}
		total += rep.PacksRead
	}
	rep, _ := r.Verify(ctx, VerifyOptions{ReadData: true})
	if total != rep.PacksRead || total != rep.Packs {
		t.Fatalf("subsets read %d packs, all %d of %d", total, rep.PacksRead, rep.Packs)
	}
	if _, err := r.Verify(ctx, VerifyOptions{Subset: "3/2"}); !errors.Is(err, disk.ErrInvalid) {
		t.Fatalf("bad subset: %v", err)
	}
}

// TestHugeSparseDisk backs up a 2 TiB disk with little data at the default
// chunk size: the map is the only thing that grows with the disk, and
// progress reaches the end.
func TestHugeSparseDisk(t *testing.T) {
	ctx := context.Background()
	r, err := Init(ctx, mem.New(), InitOptions{Unencrypted: true})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	const size = 2 << 40
	d := disktest.NewMemDisk(size)
	for _, off := range []int64{0, 1 << 40, size - 100} {
		_, _ = d.WriteAt([]byte("some data here"), off)
	}
	var last Progress
	calls := 0
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	p, sum, err := r.Backup(ctx, BackupOptions{Source: "big", Disks: []SourceDisk{{Name: "d", Disk: d}},
		Progress: func(p Progress) { last = p; calls++ }})
	if err != nil {
		t.Fatal(err)
	}
	runtime.ReadMemStats(&after)
	if last.Done != size || last.Total != size || calls != int(chunksOf(size, DefaultChunkSize)) {
		t.Fatalf("last progress %+v after %d calls", last, calls)
	}
	if sum.BytesRead != 3*DefaultChunkSize || p.Disks[0].DataChunks != 3 {
		t.Fatalf("summary %+v, point %+v", sum, p.Disks[0])
	}
	// 512 Ki chunks: a 16 MiB map plus its encoding, a checkpoint's and
	// buffers; nothing per byte of disk.
	alloc := after.TotalAlloc - before.TotalAlloc
	t.Logf("2 TiB sparse disk: %d MiB allocated in total", alloc>>20)
	if alloc > 256<<20 {
		t.Fatalf("backup of a 2 TiB sparse disk allocated %d MiB", alloc>>20)
	}
	od, err := r.OpenDisk(ctx, p, "d")
	if err != nil {
		t.Fatal(err)
	}
	defer od.Close()
	buf := make([]byte, 14)
	if _, err := od.ReadAt(buf, 1<<40); err != nil || string(buf) != "some data here" {
		t.Fatalf("read %q, %v", buf, err)
	}
}
