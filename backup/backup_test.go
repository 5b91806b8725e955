package backup

import (
	"context"
	"errors"
	"math/rand/v2"
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
			type gen struct {
				p *Point
				s snapshot
			}
			var gens []gen
			var parent *Point
			for g := range 16 {
				changed := mutate(t, rng, d, 1+rng.IntN(12))
				opts := BackupOptions{Source: "model", Parent: parent, Concurrency: 3,
					Disks: []SourceDisk{{Name: "d0", Disk: d, ChangeID: "c" + string(rune('a'+g))}}}
				if parent != nil && g%5 != 4 {
					opts.Disks[0].Changed = changed
				}
				p, sum, err := r.Backup(ctx, opts)
				if err != nil {
					t.Fatalf("generation %d: %v", g, err)
				}
				if sum.BytesRead > size+testChunk {
					t.Fatalf("generation %d read %d bytes", g, sum.BytesRead)
				}
				gens = append(gens, gen{p, takeSnapshot(t, d)})
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
