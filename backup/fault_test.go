package backup

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vdisk-project/vdisk/backup/storage"
	"github.com/vdisk-project/vdisk/backup/storage/mem"
	"github.com/vdisk-project/vdisk/disk"
	"github.com/vdisk-project/vdisk/disk/disktest"
)

// faultStorage wraps a Storage: after failAfter successful puts every put
// fails (torn: the object is left truncated instead), and hook runs before
// each put.
type faultStorage struct {
	storage.Storage
	mu        sync.Mutex
	puts      int
	failAfter int // -1: never
	torn      bool
	cancel    context.CancelFunc // called instead of failing, when set
	hook      func(name string)
}

var errInjected = disk.Errorf(disk.ErrAccess, "injected failure")

func (f *faultStorage) Put(ctx context.Context, name string, data []byte) error {
	f.mu.Lock()
	hook := f.hook
	fail := f.failAfter >= 0 && f.puts >= f.failAfter
	if !fail {
		f.puts++
	}
	f.mu.Unlock()
	if hook != nil {
		hook(name)
	}
	if fail {
		if f.cancel != nil {
			f.cancel()
			return context.Canceled
		}
		if f.torn && len(data) > 1 {
			_ = f.Storage.Put(ctx, name, data[:len(data)/2])
		}
		return errInjected
	}
	return f.Storage.Put(ctx, name, data)
}

func (f *faultStorage) heal() {
	f.mu.Lock()
	f.failAfter = -1
	f.cancel = nil
	f.mu.Unlock()
}

func randomDisk(t testing.TB, rng *rand.Rand, size int64) *disktest.MemDisk {
	t.Helper()
	d := disktest.NewMemDisk(size)
	b := make([]byte, size)
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	// Leave a hole and a zero chunk.
	clear(b[2*testChunk : 3*testChunk])
	if _, err := d.WriteAt(b, 0); err != nil {
		t.Fatal(err)
	}
	if err := d.Trim(5*testChunk, testChunk); err != nil {
		t.Fatal(err)
	}
	return d
}

func checkClean(t testing.TB, r *Repository) {
	t.Helper()
	rep, err := r.Verify(context.Background(), VerifyOptions{ReadData: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range rep.Damage {
		if strings.HasPrefix(d.Object, dataPrefix) && len(d.Affected) == 0 {
			continue // a torn, unreferenced pack: garbage, not damage to a point
		}
		t.Fatalf("verify: %s", d)
	}
}

// TestCrashAnywhere fails (or cancels, or tears) the n-th put of a backup
// for every n: no point may be half visible, verify stays clean, and the
// next backup resumes without re-reading what was stored.
func TestCrashAnywhere(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	const size = 24 * testChunk
	src := randomDisk(t, rng, size)
	want := takeSnapshot(t, src)
	for _, mode := range []string{"fail", "cancel", "torn"} {
		t.Run(mode, func(t *testing.T) {
			for n := 0; ; n++ {
				fs := &faultStorage{Storage: mem.New(), failAfter: -1}
				r := newTestRepo(t, fs, true)
				ctx, cancel := context.WithCancel(context.Background())
				fs.mu.Lock()
				fs.failAfter = fs.puts + n
				if mode == "cancel" {
					fs.cancel = cancel
				}
				fs.torn = mode == "torn"
				fs.mu.Unlock()
				opts := BackupOptions{Source: "s", CheckpointEvery: 4, Concurrency: 2,
					Disks: []SourceDisk{{Name: "d", Disk: src}}}
				_, _, err := r.Backup(ctx, opts)
				cancel()
				fs.heal()
				if err == nil {
					if n < 3 {
						t.Fatalf("backup with failing put %d succeeded", n)
					}
					break // n is past the last put
				}
				ps, perr := reopen(t, r).Points(context.Background())
				if perr != nil && mode == "torn" && errors.Is(perr, disk.ErrCorrupt) && len(ps) == 0 {
					// The torn put was the manifest: a damaged point,
					// which the operator forgets.
					for _, in := range objects(t, fs, pointsPrefix) {
						_ = fs.Delete(context.Background(), in.Name)
					}
					ps, perr = nil, nil
				}
				if perr != nil {
					t.Fatal(perr)
				}
				if len(ps) != 0 {
					// The manifest was the failed put only if it was torn.
					t.Fatalf("put %d failed (%v) but %d points are visible", n, err, len(ps))
				}
				r2 := reopen(t, r)
				if mode == "torn" {
					// A torn put breaks the storage contract: the
					// operator's remedy is an index rebuild.
					if _, err := r2.RebuildIndex(context.Background()); err != nil {
						t.Fatal(err)
					}
				}
				checkClean(t, r2)
				cd := &countingDisk{Disk: src}
				opts.Disks[0].Disk = cd
				p, sum, err := r2.Backup(context.Background(), opts)
				if err != nil {
					t.Fatalf("after failing put %d: resume: %v", n, err)
				}
				if cd.read.Load() != sum.BytesRead+sum.BytesResumeChecked || sum.BytesRead+sum.BytesResumed+sum.BytesHole > size ||
					sum.BytesResumeChecked > resumeChecks*testChunk {
					t.Fatalf("after failing put %d: read %d (summary %d), resumed %d, holes %d of %d", n, cd.read.Load(), sum.BytesRead, sum.BytesResumed, sum.BytesHole, size)
				}
				checkPoint(t, r2, p, "d", want)
				checkClean(t, r2)
				var left int
				_ = fs.List(context.Background(), checkPrefix, func(storage.Info) error { left++; return nil })
				if left != 0 {
					t.Fatalf("after failing put %d: %d checkpoints left after a finished backup", n, left)
				}
			}
		})
	}
}

// TestResumeReadsOnlyWhatIsLeft interrupts a backup after some checkpoints
// and checks that the resumed run reads only the chunks not covered.
func TestResumeReadsOnlyWhatIsLeft(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	const size = 64 * testChunk
	src := randomDisk(t, rng, size)
	fs := &faultStorage{Storage: mem.New(), failAfter: -1}
	r := newTestRepo(t, fs, true)
	fs.mu.Lock()
	fs.failAfter = fs.puts + 12
	fs.mu.Unlock()
	opts := BackupOptions{Source: "vm", CheckpointEvery: 8, Concurrency: 1, Disks: []SourceDisk{{Name: "d", Disk: src}}}
	if _, _, err := r.Backup(context.Background(), opts); !errors.Is(err, disk.ErrAccess) {
		t.Fatalf("interrupted backup: %v", err)
	}
	fs.heal()
	cd := &countingDisk{Disk: src}
	opts.Disks[0].Disk = cd
	p, sum, err := reopen(t, r).Backup(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	if sum.BytesResumed < 16*testChunk {
		t.Fatalf("resumed only %d bytes", sum.BytesResumed)
	}
	if got, want := cd.read.Load(), size-sum.BytesResumed-sum.BytesHole+sum.BytesResumeChecked; got != want || sum.BytesResumeChecked != resumeChecks*testChunk {
		t.Fatalf("resumed backup read %d bytes, want %d (size %d, resumed %d)", got, want, size, sum.BytesResumed)
	}
	checkPoint(t, r, p, "d", takeSnapshot(t, src))
}

func flipByte(t testing.TB, st storage.Storage, name string, off int64) {
	t.Helper()
	ctx := context.Background()
	b, err := st.Get(ctx, name, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	b[off] ^= 0x40
	if err := st.Put(ctx, name, b); err != nil {
		t.Fatal(err)
	}
}

func objects(t testing.TB, st storage.Storage, prefix string) []storage.Info {
	t.Helper()
	var out []storage.Info
	if err := st.List(context.Background(), prefix, func(in storage.Info) error { out = append(out, in); return nil }); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestDamage flips a byte in a pack, truncates a pack, and loses or
// corrupts the index.
func TestDamage(t *testing.T) {
	ctx := context.Background()
	setup := func(t *testing.T) (*Repository, storage.Storage, []*Point, snapshot) {
		st := mem.New()
		r := newTestRepo(t, st, true)
		rng := rand.New(rand.NewPCG(7, 8))
		src := randomDisk(t, rng, 20*testChunk)
		var ps []*Point
		for range 2 {
			p, _, err := r.Backup(ctx, BackupOptions{Source: "s", Disks: []SourceDisk{{Name: "d", Disk: src}}})
			if err != nil {
				t.Fatal(err)
			}
			ps = append(ps, p)
		}
		return reopen(t, r), st, ps, takeSnapshot(t, src)
	}
	t.Run("flipped byte", func(t *testing.T) {
		r, st, ps, _ := setup(t)
		packs := objects(t, st, dataPrefix)
		flipByte(t, st, packs[0].Name, 100)
		rep, err := r.Verify(ctx, VerifyOptions{})
		if err != nil || !rep.OK() {
			t.Fatalf("verify without data: %v %v", err, rep.Damage)
		}
		rep, err = r.Verify(ctx, VerifyOptions{ReadData: true})
		if err != nil {
			t.Fatal(err)
		}
		if len(rep.Damage) != 1 || rep.Damage[0].Object != packs[0].Name || len(rep.Damage[0].Affected) != 2 {
			t.Fatalf("damage %v, want one chunk of %s affecting both points", rep.Damage, packs[0].Name)
		}
		a := rep.Damage[0].Affected
		if a[0].Point == a[1].Point || a[0].Disk != "d" || a[0].Len != testChunk || a[0].Off%testChunk != 0 {
			t.Fatalf("affected %+v", a)
		}
		t.Log(rep.Damage[0])
		for _, p := range ps {
			if a[0].Point != p.ID && a[1].Point != p.ID {
				t.Fatalf("point %s not reported", p.ID)
			}
		}
		d, err := r.OpenDisk(ctx, ps[0], "d")
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		buf := make([]byte, a[0].Len)
		if _, err := d.ReadAt(buf, a[0].Off); !errors.Is(err, disk.ErrCorrupt) {
			t.Fatalf("read of the damaged range: %v, want ErrCorrupt", err)
		}
		if _, err := d.WriteAt(buf, 0); !errors.Is(err, disk.ErrPermission) {
			t.Fatalf("write: %v, want ErrPermission", err)
		}
	})
	t.Run("truncated pack", func(t *testing.T) {
		r, st, _, _ := setup(t)
		p := objects(t, st, dataPrefix)[0]
		b, _ := st.Get(ctx, p.Name, 1<<30)
		_ = st.Put(ctx, p.Name, b[:len(b)/3])
		rep, err := r.Verify(ctx, VerifyOptions{ReadData: true})
		if err != nil {
			t.Fatal(err)
		}
		if rep.OK() || len(rep.Damage[0].Affected) == 0 {
			t.Fatalf("truncated pack not reported: %v", rep.Damage)
		}
		rb, err := r.RebuildIndex(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(rb.Damaged) != 1 {
			t.Fatalf("rebuild: %+v", rb)
		}
	})
	for _, how := range []string{"lost", "corrupt"} {
		t.Run(how+" index", func(t *testing.T) {
			r, st, ps, want := setup(t)
			for _, in := range objects(t, st, indexPrefix) {
				if how == "lost" {
					_ = st.Delete(ctx, in.Name)
				} else {
					flipByte(t, st, in.Name, in.Size/2)
				}
			}
			r = reopen(t, r)
			rep, err := r.Verify(ctx, VerifyOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if rep.OK() {
				t.Fatal("verify found nothing wrong")
			}
			if _, err := r.Prune(ctx, PruneOptions{Grace: -1}); err == nil && how == "corrupt" {
				t.Fatal("prune ran over a damaged index")
			}
			if _, err := r.RebuildIndex(ctx); err != nil {
				t.Fatal(err)
			}
			r = reopen(t, r)
			checkClean(t, r)
			for _, p := range ps {
				checkPoint(t, r, p, "d", want)
			}
		})
	}
}

// TestForgetPrune forgets old points and prunes their chunks.
func TestForgetPrune(t *testing.T) {
	ctx := context.Background()
	st := mem.New()
	r := newTestRepo(t, st, false)
	rng := rand.New(rand.NewPCG(9, 10))
	d := disktest.NewMemDisk(16 * testChunk)
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var snaps = map[string]snapshot{}
	var parent *Point
	for g := range 6 {
		// Rewrite the whole disk each time so that old packs die.
		mutate(t, rng, d, 0)
		b := make([]byte, d.Size())
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		_, _ = d.WriteAt(b, 0)
		p, _, err := r.Backup(ctx, BackupOptions{Source: "vm", Parent: parent, Time: t0.Add(time.Duration(g) * 24 * time.Hour),
			Disks: []SourceDisk{{Name: "d", Disk: d}}})
		if err != nil {
			t.Fatal(err)
		}
		snaps[p.ID] = takeSnapshot(t, d)
		parent = p
	}
	if _, err := r.Forget(ctx, Policy{}, false); !errors.Is(err, disk.ErrInvalid) {
		t.Fatalf("empty policy: %v", err)
	}
	fr, err := r.Forget(ctx, Policy{KeepLast: 2}, true)
	if err != nil || len(fr.Keep) != 2 || len(fr.Remove) != 4 {
		t.Fatalf("dry run: %v %+v", err, fr)
	}
	if ps, _ := r.Points(ctx); len(ps) != 6 {
		t.Fatal("dry run removed points")
	}
	if _, err := r.Forget(ctx, Policy{KeepLast: 2}, false); err != nil {
		t.Fatal(err)
	}
	before := len(objects(t, st, dataPrefix))
	later := func() time.Time { return time.Now().Add(48 * time.Hour) }
	res1, err := r.Prune(ctx, PruneOptions{Now: later})
	if err != nil {
		t.Fatal(err)
	}
	if res1.PacksCondemned == 0 || res1.PacksDeleted != 0 {
		t.Fatalf("first prune: %+v", res1)
	}
	checkClean(t, reopen(t, r))
	res2, err := r.Prune(ctx, PruneOptions{Now: func() time.Time { return time.Now().Add(96 * time.Hour) }})
	if err != nil {
		t.Fatal(err)
	}
	after := len(objects(t, st, dataPrefix))
	if res2.PacksDeleted != res1.PacksCondemned || after != before-res2.PacksDeleted {
		t.Fatalf("second prune: %+v; packs %d → %d", res2, before, after)
	}
	r2 := reopen(t, r)
	checkClean(t, r2)
	ps, _ := r2.Points(ctx)
	for _, p := range ps {
		checkPoint(t, r2, p, "d", snaps[p.ID])
	}
}

func TestPolicy(t *testing.T) {
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	var group []*Point
	// Newest first: every 6 hours for 10 days.
	for i := range 40 {
		group = append(group, &Point{ID: string(rune('A' + i)), Time: t0.Add(-time.Duration(i) * 6 * time.Hour)})
	}
	group[30].Tags = []string{"keep"}
	cases := []struct {
		pol  Policy
		want int
	}{
		{Policy{KeepLast: 3}, 3},
		{Policy{KeepDaily: 3}, 3},
		{Policy{KeepDaily: -1}, 11},
		{Policy{KeepLast: 2, KeepDaily: 3}, 4}, // last 2 are on day 1 with the daily one
		{Policy{KeepTags: []string{"keep"}}, 1},
		{Policy{KeepWeekly: 2}, 2},
		{Policy{KeepMonthly: 5}, 2},
	}
	for _, c := range cases {
		keep := applyPolicy(group, c.pol, map[string][]string{})
		n := 0
		for _, k := range keep {
			if k {
				n++
			}
		}
		if n != c.want {
			t.Errorf("%+v keeps %d, want %d", c.pol, n, c.want)
		}
	}
}

var _ = bytes.Equal

// cancelDisk cancels a context after n reads.
type cancelDisk struct {
	countingDisk
	n      int64
	cancel context.CancelFunc
}

func (c *cancelDisk) ReadAt(p []byte, off int64) (int, error) {
	if c.read.Load() >= c.n*testChunk {
		c.cancel()
	}
	return c.countingDisk.ReadAt(p, off)
}

// TestResumeAfterCancel: a cancelled backup saves a final checkpoint, and
// the resumed run reads only what the first did not (give or take the
// chunks in flight at the cancel).
func TestResumeAfterCancel(t *testing.T) {
	rng := rand.New(rand.NewPCG(15, 16))
	const size = 64 * testChunk
	src := randomDisk(t, rng, size)
	r := newTestRepo(t, nil, true)
	ctx, cancel := context.WithCancel(context.Background())
	cd := &cancelDisk{countingDisk: countingDisk{Disk: src}, n: 20, cancel: cancel}
	opts := BackupOptions{Source: "vm", Concurrency: 2, Disks: []SourceDisk{{Name: "d", Disk: cd}}}
	if _, _, err := r.Backup(ctx, opts); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled backup: %v", err)
	}
	first := cd.read.Load()
	again := &countingDisk{Disk: src}
	opts.Disks[0].Disk = again
	p, sum, err := reopen(t, r).Backup(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	// Data chunks: all but the zero and the hole chunk.
	if total := first + again.read.Load() - sum.BytesResumeChecked; total > size-testChunk+int64(opts.Concurrency+1)*testChunk {
		t.Fatalf("first run read %d, resumed run %d: %d chunks read twice", first, again.read.Load(), (total-size+testChunk)/testChunk)
	}
	if sum.BytesResumed < first-int64(opts.Concurrency+1)*testChunk {
		t.Fatalf("resumed %d bytes after a first run that read %d", sum.BytesResumed, first)
	}
	checkPoint(t, r, p, "d", takeSnapshot(t, src))
}

// TestRepack: packs half dead after a forget are repacked, and the old
// packs go a grace period later; the surviving point never stops reading.
func TestRepack(t *testing.T) {
	ctx := context.Background()
	st := newClockStorage()
	r := newTestRepo(t, st, true)
	rng := rand.New(rand.NewPCG(41, 42))
	d := randomDisk(t, rng, 30*testChunk)
	if _, _, err := r.Backup(ctx, BackupOptions{Source: "s", Disks: []SourceDisk{{Name: "d", Disk: d}}}); err != nil {
		t.Fatal(err)
	}
	// Rewrite every other chunk: each old pack becomes half dead.
	b := make([]byte, testChunk)
	for c := int64(0); c < 30; c += 2 {
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		_, _ = d.WriteAt(b, c*testChunk)
	}
	p2, _, err := r.Backup(ctx, BackupOptions{Source: "s", Disks: []SourceDisk{{Name: "d", Disk: d}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Forget(ctx, Policy{KeepLast: 1}, false); err != nil {
		t.Fatal(err)
	}
	want := takeSnapshot(t, d)
	st.advance(2 * time.Hour)
	res, err := r.Prune(ctx, PruneOptions{Grace: time.Hour, Now: st.Now, RepackUnused: 0.3})
	if err != nil {
		t.Fatal(err)
	}
	if res.PacksRepacked == 0 || res.BytesRepacked == 0 {
		t.Fatalf("prune: %+v", res)
	}
	checkClean(t, reopen(t, r))
	checkPoint(t, reopen(t, r), p2, "d", want)
	var before int64
	for _, in := range objects(t, st, dataPrefix) {
		before += in.Size
	}
	st.advance(2 * time.Hour)
	res2, err := r.Prune(ctx, PruneOptions{Grace: time.Hour, Now: st.Now, RepackUnused: 0.3})
	if err != nil {
		t.Fatal(err)
	}
	if res2.PacksDeleted != res.PacksRepacked || res2.PacksRestored != 0 || res2.BytesUnused != 0 {
		t.Fatalf("second prune: %+v after %+v", res2, res)
	}
	var after int64
	for _, in := range objects(t, st, dataPrefix) {
		after += in.Size
	}
	if after >= before {
		t.Fatalf("packs hold %d bytes, before %d", after, before)
	}
	r2 := reopen(t, r)
	checkClean(t, r2)
	checkPoint(t, r2, p2, "d", want)
}

// TestResumeChecksTheSource: a checkpoint of the same source whose chunks
// the source no longer has (another snapshot under the same name and change
// ID) is not resumed from.
func TestResumeChecksTheSource(t *testing.T) {
	rng := rand.New(rand.NewPCG(17, 18))
	src := randomDisk(t, rng, 32*testChunk)
	fs := &faultStorage{Storage: mem.New(), failAfter: -1}
	r := newTestRepo(t, fs, true)
	fs.mu.Lock()
	fs.failAfter = fs.puts + 8
	fs.mu.Unlock()
	opts := BackupOptions{Source: "vm", CheckpointEvery: 4, Concurrency: 1, Disks: []SourceDisk{{Name: "d", Disk: src}}}
	if _, _, err := r.Backup(context.Background(), opts); err == nil {
		t.Fatal("interrupted backup succeeded")
	}
	fs.heal()
	other := randomDisk(t, rng, 32*testChunk)
	opts.Disks[0].Disk = other
	p, sum, err := r.Backup(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	if sum.BytesResumed != 0 {
		t.Fatalf("resumed %d bytes of another disk's checkpoint", sum.BytesResumed)
	}
	checkPoint(t, r, p, "d", takeSnapshot(t, other))
}
