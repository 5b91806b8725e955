package backup

import (
	"context"
	"encoding/json"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vdisk-project/vdisk/backup/storage"
	"github.com/vdisk-project/vdisk/backup/storage/mem"
	"github.com/vdisk-project/vdisk/disk/disktest"
)

// clockStorage stamps objects with a fake clock, so that prune's grace
// period can be tested without waiting.
type clockStorage struct {
	*faultStorage
	now  atomic.Int64 // unix nanoseconds
	mu   sync.Mutex
	mods map[string]time.Time
}

func newClockStorage() *clockStorage {
	c := &clockStorage{faultStorage: &faultStorage{Storage: mem.New(), failAfter: -1}, mods: map[string]time.Time{}}
	c.now.Store(time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC).UnixNano())
	return c
}

func (c *clockStorage) Now() time.Time          { return time.Unix(0, c.now.Load()).UTC() }
func (c *clockStorage) advance(d time.Duration) { c.now.Add(int64(d)) }
func (c *clockStorage) Close() error            { return nil }
func (c *clockStorage) fix(in storage.Info) storage.Info {
	c.mu.Lock()
	if t, ok := c.mods[in.Name]; ok {
		in.ModTime = t
	}
	c.mu.Unlock()
	return in
}

func (c *clockStorage) Put(ctx context.Context, name string, data []byte) error {
	err := c.faultStorage.Put(ctx, name, data)
	if err == nil {
		c.mu.Lock()
		c.mods[name] = c.Now()
		c.mu.Unlock()
	}
	return err
}

func (c *clockStorage) Stat(ctx context.Context, name string) (storage.Info, error) {
	in, err := c.faultStorage.Stat(ctx, name)
	return c.fix(in), err
}

func (c *clockStorage) List(ctx context.Context, prefix string, fn func(storage.Info) error) error {
	return c.faultStorage.List(ctx, prefix, func(in storage.Info) error { return fn(c.fix(in)) })
}

// missingChunks reports the data chunks of points whose chunk is in no
// index or in a pack that is gone.
func danglingPoints(t testing.TB, r *Repository) []Damage {
	t.Helper()
	rep, err := r.Verify(context.Background(), VerifyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return rep.Damage
}

// TestPruneGraceIsNeeded replays the race the grace period closes: a
// backup reuses a chunk of a dead pack, and prune runs twice between the
// backup's last check and its manifest. Without a grace period the point
// refers to a deleted pack; with one it does not.
func TestPruneGraceIsNeeded(t *testing.T) {
	for _, grace := range []time.Duration{-1, time.Hour} {
		t.Run(grace.String(), func(t *testing.T) {
			ctx := context.Background()
			st := newClockStorage()
			r := newTestRepo(t, st, true)
			rng := rand.New(rand.NewPCG(11, 12))
			src := randomDisk(t, rng, 8*testChunk)
			if _, _, err := r.Backup(ctx, BackupOptions{Source: "a", Disks: []SourceDisk{{Name: "d", Disk: src}}}); err != nil {
				t.Fatal(err)
			}
			// The point is forgotten: its packs are dead, and old.
			if _, err := r.Forget(ctx, Policy{KeepTags: []string{"none"}}, false); err != nil {
				t.Fatal(err)
			}
			st.advance(2 * time.Hour)
			var once sync.Once
			var perr error
			st.hook = func(name string) {
				if !strings.HasPrefix(name, pointsPrefix) {
					return
				}
				once.Do(func() {
					pr := reopen(t, r)
					if _, perr = pr.Prune(ctx, PruneOptions{Grace: grace, Now: st.Now}); perr != nil {
						return
					}
					st.advance(30 * time.Minute)
					_, perr = pr.Prune(ctx, PruneOptions{Grace: grace, Now: st.Now})
				})
			}
			// The same data again: deduplicated against the dead packs.
			b := reopen(t, r)
			p, sum, err := b.Backup(ctx, BackupOptions{Source: "b", Disks: []SourceDisk{{Name: "d", Disk: src}}})
			if err != nil || perr != nil {
				t.Fatal(err, perr)
			}
			if sum.BytesNew != 0 {
				t.Fatalf("backup stored %d new bytes; the race needs it to reuse the old chunks", sum.BytesNew)
			}
			st.hook = nil
			damage := danglingPoints(t, reopen(t, r))
			if grace < 0 {
				if len(damage) == 0 {
					t.Fatal("without a grace period the point should refer to deleted packs")
				}
				return
			}
			if len(damage) != 0 {
				t.Fatalf("with a grace period: %v", damage)
			}
			// A later prune sees the point and puts the packs back.
			st.advance(4 * time.Hour)
			res, err := reopen(t, r).Prune(ctx, PruneOptions{Grace: grace, Now: st.Now})
			if err != nil {
				t.Fatal(err)
			}
			if res.PacksRestored == 0 || res.PacksDeleted != 0 {
				t.Fatalf("third prune: %+v", res)
			}
			r2 := reopen(t, r)
			checkClean(t, r2)
			checkPoint(t, r2, p, "d", takeSnapshot(t, src))
		})
	}
}

// TestConcurrentBackupsAndPrune runs two writers and a pruner at once on one
// store, each with its own Repository, forgetting old points as they go.
// No point may ever refer to a missing chunk.
func TestConcurrentBackupsAndPrune(t *testing.T) {
	ctx := context.Background()
	st := newClockStorage()
	base := newTestRepo(t, st, true)
	var wg sync.WaitGroup
	var stop atomic.Bool
	errs := make(chan error, 3)
	var rounds, deleted, condemned atomic.Int64
	for w := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := reopen(t, base)
			rng := rand.New(rand.NewPCG(uint64(w), 99))
			d := disktest.NewMemDisk(8 * testChunk)
			var parent *Point
			for range 12 {
				changed := mutate(t, rng, d, 3)
				opts := BackupOptions{Source: string(rune('a' + w)), Parent: parent, Disks: []SourceDisk{{Name: "d", Disk: d}}}
				if parent != nil {
					opts.Disks[0].Changed = changed
				}
				p, _, err := r.Backup(ctx, opts)
				if err != nil {
					errs <- err
					return
				}
				parent = p
				if _, err := r.Forget(ctx, Policy{KeepLast: 2}, false); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		r := reopen(t, base)
		for !stop.Load() {
			st.advance(time.Minute) // a backup spans far fewer than 60 rounds
			res, err := r.Prune(ctx, PruneOptions{Grace: time.Hour, Now: st.Now})
			if err != nil {
				errs <- err
				return
			}
			rounds.Add(1)
			deleted.Add(int64(res.PacksDeleted))
			condemned.Add(int64(res.PacksCondemned))
		}
	}()
	wg.Wait()
	stop.Store(true)
	<-done
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if d := danglingPoints(t, reopen(t, base)); len(d) != 0 {
		t.Fatalf("dangling: %v", d)
	}
	t.Logf("%d prune rounds condemned %d packs and deleted %d", rounds.Load(), condemned.Load(), deleted.Load())
	// Let everything age and prune to the bone: still consistent.
	for range 3 {
		st.advance(2 * time.Hour)
		if _, err := base.Prune(ctx, PruneOptions{Grace: time.Hour, Now: st.Now}); err != nil {
			t.Fatal(err)
		}
	}
	checkClean(t, reopen(t, base))
}

// TestIncrementalReadsOnlyChanged: after changing about 1% of a disk, the
// incremental reads at most 1.05× the changed chunks' bytes.
func TestIncrementalReadsOnlyChanged(t *testing.T) {
	ctx := context.Background()
	r := newTestRepo(t, nil, true)
	rng := rand.New(rand.NewPCG(13, 14))
	const chunks = 400
	d := randomDisk(t, rng, chunks*testChunk)
	p0, _, err := r.Backup(ctx, BackupOptions{Source: "s", Disks: []SourceDisk{{Name: "d", Disk: d}}})
	if err != nil {
		t.Fatal(err)
	}
	changed := mutate(t, rng, d, 2)
	touched := map[int64]bool{}
	for _, e := range changed {
		for c := e.Off / testChunk; c <= (e.End()-1)/testChunk; c++ {
			touched[c] = true
		}
	}
	cd := &countingDisk{Disk: d}
	p1, sum, err := r.Backup(ctx, BackupOptions{Source: "s", Parent: p0, Disks: []SourceDisk{{Name: "d", Disk: cd, Changed: changed}}})
	if err != nil {
		t.Fatal(err)
	}
	limit := int64(float64(len(touched)*testChunk) * 1.05)
	if got := cd.read.Load(); got > limit || got == 0 {
		t.Fatalf("incremental read %d bytes; %d chunks changed (limit %d)", got, len(touched), limit)
	}
	if sum.BytesUnchanged < int64(chunks-len(touched)-1)*testChunk-sum.BytesHole {
		t.Fatalf("summary %+v", sum)
	}
	checkPoint(t, r, p1, "d", takeSnapshot(t, d))
}

// TestPointInCondemnedPack builds the state a prune racing a backup can
// leave: a point whose packs were condemned (in no index) after the
// backup's last look. The point stays readable and verifies, and the next
// prune puts the packs back.
func TestPointInCondemnedPack(t *testing.T) {
	ctx := context.Background()
	st := newClockStorage()
	r := newTestRepo(t, st, true)
	src := randomDisk(t, rand.New(rand.NewPCG(31, 32)), 10*testChunk)
	p, _, err := r.Backup(ctx, BackupOptions{Source: "s", Disks: []SourceDisk{{Name: "d", Disk: src}}})
	if err != nil {
		t.Fatal(err)
	}
	var packs []string
	for _, in := range objects(t, st, dataPrefix) {
		pn, _ := parsePackObject(in.Name)
		packs = append(packs, pn.String())
	}
	for _, in := range objects(t, st, indexPrefix) {
		_ = st.Delete(ctx, in.Name)
	}
	b, _ := json.Marshal(condemnedList{Time: st.Now(), Packs: packs})
	if err := st.Put(ctx, condemnedPrefix+"x", r.c.sealMeta("condemned", b)); err != nil {
		t.Fatal(err)
	}
	want := takeSnapshot(t, src)
	checkPoint(t, reopen(t, r), p, "d", want)
	checkClean(t, reopen(t, r))
	st.advance(2 * time.Hour)
	res, err := reopen(t, r).Prune(ctx, PruneOptions{Grace: time.Hour, Now: st.Now})
	if err != nil {
		t.Fatal(err)
	}
	if res.PacksRestored != len(packs) || res.PacksDeleted != 0 {
		t.Fatalf("prune: %+v, want %d packs restored", res, len(packs))
	}
	if n := len(objects(t, st, condemnedPrefix)); n != 0 {
		t.Fatalf("%d condemned lists left", n)
	}
	checkPoint(t, reopen(t, r), p, "d", want)
}

// TestConcurrentBackupsOneRepository runs backups of disks sharing data on
// one Repository at once.
func TestConcurrentBackupsOneRepository(t *testing.T) {
	ctx := context.Background()
	r := newTestRepo(t, nil, true)
	shared := randomDisk(t, rand.New(rand.NewPCG(51, 52)), 24*testChunk)
	var wg sync.WaitGroup
	points := make([]*Point, 4)
	snaps := make([]snapshot, 4)
	errs := make([]error, 4)
	for w := range 4 {
		d := disktest.NewMemDisk(shared.Size())
		b := readAll(t, shared)
		_, _ = d.WriteAt(b, 0)
		mutate(t, rand.New(rand.NewPCG(uint64(w), 7)), d, 2)
		snaps[w] = takeSnapshot(t, d)
		wg.Add(1)
		go func() {
			defer wg.Done()
			points[w], _, errs[w] = r.Backup(ctx, BackupOptions{Source: "s", CheckpointEvery: 3, Disks: []SourceDisk{{Name: "d", Disk: d}}})
		}()
	}
	wg.Wait()
	for w := range 4 {
		if errs[w] != nil {
			t.Fatal(errs[w])
		}
		checkPoint(t, r, points[w], "d", snaps[w])
	}
	checkClean(t, reopen(t, r))
}
