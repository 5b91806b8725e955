package datastore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/vdisk-project/vdisk/disk"
	"github.com/vdisk-project/vdisk/disk/disktest"
	"github.com/vdisk-project/vdisk/format/vmdk"
)

const testSize = 32 << 20

func openStore(t *testing.T, dir string) *Store {
	t.Helper()
	s, err := Open(context.Background(), dir, &Options{LockedMergeMax: 1 << 20})
	if err != nil {
		t.Fatalf("Open(%s): %v", dir, err)
	}
	return s
}

// model mirrors what a disk must read as.
type model struct {
	mu  sync.Mutex
	buf []byte
}

func (m *model) snapshot() []byte {
	m.mu.Lock()
	defer m.mu.Unlock()
	return bytes.Clone(m.buf)
}

// writeRandom does n random writes or zeroings through h and the model,
// each atomically with respect to model.mu (so a snapshot taken under
// model.mu sees a consistent point).
func writeRandom(t *testing.T, rng *rand.Rand, h *Handle, m *model, n int) {
	t.Helper()
	for range n {
		off := rng.Int64N(testSize/512-256) * 512
		ln := (1 + rng.Int64N(256)) * 512
		m.mu.Lock()
		var err error
		if rng.IntN(8) == 0 && os.Getenv("NOZERO") == "" {
			err = h.WriteZeroes(off, ln, 0)
			clear(m.buf[off : off+ln])
		} else {
			p := make([]byte, ln)
			for i := range p {
				p[i] = byte(rng.Uint32())
			}
			_, err = h.WriteAt(p, off)
			copy(m.buf[off:], p)
		}
		m.mu.Unlock()
		if err != nil {
			t.Errorf("write at %d: %v", off, err)
			return
		}
	}
}

func readAll(t *testing.T, d disk.Disk) []byte {
	t.Helper()
	b := make([]byte, d.Size())
	if _, err := d.ReadAt(b, 0); err != nil {
		t.Fatalf("read: %v", err)
	}
	return b
}

// applyChanges applies a changed-area answer to a backup image, reading
// data areas from the snapshot. It returns the bytes read.
func applyChanges(t *testing.T, ci ChangeInfo, snap disk.Disk, backup []byte) int64 {
	t.Helper()
	var read int64
	for _, a := range ci.Areas {
		if a.Zero {
			clear(backup[a.Start : a.Start+a.Length])
			continue
		}
		if _, err := snap.ReadAt(backup[a.Start:a.Start+a.Length], a.Start); err != nil {
			t.Fatalf("read area %+v: %v", a, err)
		}
		read += a.Length
	}
	return read
}

// TestSnapshotsAndChanges runs generations of: writes (continuing in the
// background), a snapshot, an incremental from the previous snapshot's
// change ID, removal of the previous snapshot (consolidation while
// writing). The backup rebuilt from a full copy and the incrementals must
// equal the model at every snapshot.
func TestSnapshotsAndChanges(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := openStore(t, dir)
	defer func() { s.Close() }()
	if _, err := s.CreateDisk(ctx, DiskSpec{Name: "db", Capacity: testSize, CBT: true}); err != nil {
		t.Fatal(err)
	}
	d, _ := s.Disk("db")
	h, err := d.OpenLive(false)
	if err != nil {
		t.Fatal(err)
	}
	m := &model{buf: make([]byte, testSize)}
	rng := rand.New(rand.NewPCG(1, 2))
	writeRandom(t, rng, h, m, 200)

	var backup []byte
	prev := ""    // previous snapshot ID
	prevCID := "" // its change ID
	for gen := range 6 {
		// Take the snapshot at a consistent point of the model.
		m.mu.Lock()
		want := bytes.Clone(m.buf)
		info, err := d.Snapshot(ctx, SnapshotSpec{Name: "gen"})
		m.mu.Unlock()
		if err != nil {
			t.Fatalf("gen %d: snapshot: %v", gen, err)
		}
		// Writes go on while we back up and consolidate.
		var wg sync.WaitGroup
		wg.Go(func() { writeRandom(t, rand.New(rand.NewPCG(uint64(gen), 7)), h, m, 300) })

		snap, err := d.OpenSnapshot(ctx, info.ID)
		if err != nil {
			t.Fatal(err)
		}
		since := prevCID
		if backup == nil {
			since = "*"
			backup = make([]byte, testSize)
		}
		ci, err := d.Changes(ctx, info.ID, since, 0, 0)
		if err != nil {
			t.Fatalf("gen %d: changes since %q: %v", gen, since, err)
		}
		applyChanges(t, ci, snap, backup)
		if got := readAll(t, snap); !bytes.Equal(got, want) {
			t.Fatalf("gen %d: the snapshot does not read as the disk did at its creation", gen)
		}
		if !bytes.Equal(backup, want) {
			t.Fatalf("gen %d: full + incrementals differ from the snapshot (since %q, %d areas)", gen, since, len(ci.Areas))
		}
		snap.Close()
		if prev != "" {
			if err := d.RemoveSnapshot(ctx, prev); err != nil {
				t.Fatalf("gen %d: remove %s: %v", gen, prev, err)
			}
		}
		wg.Wait()
		prev, prevCID = info.ID, info.ChangeID
		if got := readAll(t, h); !bytes.Equal(got, m.snapshot()) {
			t.Fatalf("gen %d: live disk differs from the model after consolidation", gen)
		}
	}
	if err := d.RemoveSnapshot(ctx, prev); err != nil {
		t.Fatal(err)
	}
	if in := d.Info(); in.Layers != 1 || len(in.Snapshots) != 0 {
		t.Errorf("after removing every snapshot: %d layers, %d snapshots; want 1 and 0", in.Layers, len(in.Snapshots))
	}
	h.Close()
	cid := d.Info().ChangeID
	// A clean restart keeps the data and the change history.
	s.Close()
	s = openStore(t, dir)
	d, _ = s.Disk("db")
	h, _ = d.OpenLive(true)
	if got := readAll(t, h); !bytes.Equal(got, m.snapshot()) {
		t.Fatal("data differs after a clean restart")
	}
	h.Close()
	if _, err := d.Changes(ctx, "", cid, 0, 0); err != nil {
		t.Errorf("change ID %s after a clean restart: %v", cid, err)
	}
	// The chain is valid for qemu-img and our checker.
	rep, err := vmdk.Check(ctx, filepath.Join(dir, "disks", "db", "db-000000.vmdk"), nil)
	if err != nil || rep.Errors != 0 {
		t.Errorf("check: %v %+v", err, rep)
	}
}

// TestUncleanStopRotates: after a stop without Close, every earlier change
// ID is refused, and the data flushed survives.
// TestUncleanStopKeepsChangeIDs: after an unclean stop (no Close; the
// process "dies") the change IDs handed out before stay valid, and the
// incremental they answer rebuilds the disk exactly. Only without an
// intent map does the tracker rotate.
func TestUncleanStopKeepsChangeIDs(t *testing.T) {
	for _, lostIntent := range []bool{false, true} {
		t.Run(fmt.Sprintf("lostIntent=%v", lostIntent), func(t *testing.T) {
			ctx := context.Background()
			dir := t.TempDir()
			s := openStore(t, dir)
			s.CreateDisk(ctx, DiskSpec{Name: "a", Capacity: testSize, CBT: true})
			d, _ := s.Disk("a")
			h, _ := d.OpenLive(false)
			m := &model{buf: make([]byte, testSize)}
			writeRandom(t, rand.New(rand.NewPCG(3, 4)), h, m, 50)
			sn, err := d.Snapshot(ctx, SnapshotSpec{})
			if err != nil {
				t.Fatal(err)
			}
			sh, _ := d.OpenSnapshot(ctx, sn.ID)
			backup := readAll(t, sh)
			sh.Close()
			writeRandom(t, rand.New(rand.NewPCG(5, 6)), h, m, 50)
			if err := h.Flush(); err != nil {
				t.Fatal(err)
			}
			// No Close: the process "dies". A second store opens the same files.
			if lostIntent {
				os.Remove(filepath.Join(dir, "disks", "a", "cbt.state.intent"))
			}
			s.dropLock()
			s2 := openStore(t, dir)
			defer s2.Close()
			d2, _ := s2.Disk("a")
			sn2, err := d2.Snapshot(ctx, SnapshotSpec{})
			if err != nil {
				t.Fatal(err)
			}
			ci, err := d2.Changes(ctx, sn2.ID, sn.ChangeID, 0, 0)
			if lostIntent {
				if !errors.Is(err, disk.ErrNotFound) {
					t.Errorf("change ID %s after an unclean stop without an intent map: err %v, want ErrNotFound", sn.ChangeID, err)
				}
			} else {
				if err != nil {
					t.Fatalf("change ID %s after an unclean stop: %v", sn.ChangeID, err)
				}
				sh2, _ := d2.OpenSnapshot(ctx, sn2.ID)
				applyChanges(t, ci, sh2, backup)
				sh2.Close()
				if !bytes.Equal(backup, m.snapshot()) {
					t.Error("the incremental after an unclean stop does not rebuild the disk")
				}
			}
			h2, _ := d2.OpenLive(true)
			defer h2.Close()
			if got := readAll(t, h2); !bytes.Equal(got, m.snapshot()) {
				t.Error("flushed data lost after an unclean stop")
			}
		})
	}
}

// TestReversedChangeQuery: a change ID newer than the snapshot asked about
// is refused, not answered "nothing changed".
func TestReversedChangeQuery(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, t.TempDir())
	defer s.Close()
	s.CreateDisk(ctx, DiskSpec{Name: "a", Capacity: testSize, CBT: true})
	d, _ := s.Disk("a")
	h, _ := d.OpenLive(false)
	defer h.Close()
	m := &model{buf: make([]byte, testSize)}
	s1, _ := d.Snapshot(ctx, SnapshotSpec{})
	writeRandom(t, rand.New(rand.NewPCG(1, 1)), h, m, 10)
	s2, _ := d.Snapshot(ctx, SnapshotSpec{})
	if _, err := d.Changes(ctx, s1.ID, s2.ChangeID, 0, 0); !errors.Is(err, disk.ErrInvalid) {
		t.Errorf("changes of %s since the later %s: err %v, want ErrInvalid", s1.ID, s2.ChangeID, err)
	}
	if ci, err := d.Changes(ctx, s2.ID, s1.ChangeID, 0, 0); err != nil || len(ci.Areas) == 0 {
		t.Errorf("forward query: %v, %d areas", err, len(ci.Areas))
	}
}

// TestWritesAndZeroesInFlight: data writes and overlapping zeroings in
// flight together on several handles. Whatever the order they land in,
// an incremental built from the changed areas must equal the snapshot: an
// area reported zero ("do not read") must read as zeros.
func TestWritesAndZeroesInFlight(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, t.TempDir())
	defer s.Close()
	const size = 8 << 20
	s.CreateDisk(ctx, DiskSpec{Name: "z", Capacity: size, CBT: true, CBTBlockSize: 4096})
	d, _ := s.Disk("z")
	base, _ := d.Snapshot(ctx, SnapshotSpec{})
	bh, _ := d.OpenSnapshot(ctx, base.ID)
	backup := readAll(t, bh)
	bh.Close()
	prev := base
	for round := range 6 {
		var wg sync.WaitGroup
		for c := range 4 {
			h, err := d.OpenLive(false)
			if err != nil {
				t.Fatal(err)
			}
			for g := range 8 {
				wg.Go(func() {
					rng := rand.New(rand.NewPCG(uint64(round), uint64(c*8+g)))
					p := bytes.Repeat([]byte{byte(1 + g + c*8)}, 64<<10)
					for range 60 {
						// Everyone works in the same 256 KiB, so writes
						// and zeroings overlap all the time.
						off := rng.Int64N(64) * 4096
						n := (1 + rng.Int64N(16)) * 4096
						var err error
						if rng.IntN(2) == 0 {
							_, err = h.WriteAt(p[:n], off)
						} else {
							err = h.WriteZeroes(off, n, 0)
						}
						if err != nil {
							t.Error(err)
							return
						}
					}
				})
			}
			defer h.Close()
		}
		wg.Wait()
		sn, err := d.Snapshot(ctx, SnapshotSpec{})
		if err != nil {
			t.Fatal(err)
		}
		ci, err := d.Changes(ctx, sn.ID, prev.ChangeID, 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		sh, _ := d.OpenSnapshot(ctx, sn.ID)
		applyChanges(t, ci, sh, backup)
		want := readAll(t, sh)
		sh.Close()
		if !bytes.Equal(backup, want) {
			for i := range want {
				if want[i] != backup[i] {
					t.Fatalf("round %d: the incremental differs from the snapshot at %d (got %d, want %d): a changed area was reported as zeros", round, i, backup[i], want[i])
				}
			}
		}
		if err := d.RemoveSnapshot(ctx, prev.ID); err != nil {
			t.Fatal(err)
		}
		prev = sn
	}
}

func TestMergeCrashRecovery(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := openStore(t, dir)
	s.CreateDisk(ctx, DiskSpec{Name: "a", Capacity: testSize, CBT: true})
	d, _ := s.Disk("a")
	h, _ := d.OpenLive(false)
	m := &model{buf: make([]byte, testSize)}
	rng := rand.New(rand.NewPCG(8, 9))
	writeRandom(t, rng, h, m, 100)
	s1, _ := d.Snapshot(ctx, SnapshotSpec{})
	writeRandom(t, rng, h, m, 100)
	d.Snapshot(ctx, SnapshotSpec{})
	writeRandom(t, rng, h, m, 100)
	h.Flush()
	s.crashAfterMerge = func() bool { return true }
	if err := d.RemoveSnapshot(ctx, s1.ID); !errors.Is(err, errCrash) {
		t.Fatalf("remove: %v, want the simulated crash", err)
	}
	s.dropLock()
	s2 := openStore(t, dir)
	defer s2.Close()
	d2, _ := s2.Disk("a")
	if in := d2.Info(); in.Layers != 2 || len(in.Snapshots) != 1 {
		t.Errorf("after recovery: %d layers, %d snapshots; want 2 and 1", in.Layers, len(in.Snapshots))
	}
	h2, _ := d2.OpenLive(true)
	defer h2.Close()
	if got := readAll(t, h2); !bytes.Equal(got, m.snapshot()) {
		t.Error("data differs after recovering the merge")
	}
}

// TestRevertAndGrow: revert discards later writes and records them as
// changed; growing keeps the change record right across the boundary.
func TestRevertAndGrow(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, t.TempDir())
	defer s.Close()
	s.CreateDisk(ctx, DiskSpec{Name: "a", Capacity: testSize, CBT: true})
	d, _ := s.Disk("a")
	h, _ := d.OpenLive(false)
	defer h.Close()
	m := &model{buf: make([]byte, testSize)}
	writeRandom(t, rand.New(rand.NewPCG(1, 1)), h, m, 50)
	base := m.snapshot()
	sn, _ := d.Snapshot(ctx, SnapshotSpec{})
	cid := d.Info().ChangeID
	writeRandom(t, rand.New(rand.NewPCG(2, 2)), h, m, 50)
	if err := d.Revert(ctx, sn.ID); err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, h); !bytes.Equal(got, base) {
		t.Fatal("revert did not restore the snapshot's data")
	}
	// Everything written after the snapshot must be reported changed.
	ci, err := d.Changes(ctx, "", cid, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(ci.Areas) == 0 {
		t.Error("revert recorded no changes")
	}
	// Growing needs a disk without snapshots, as on vSphere.
	if err := d.Grow(ctx, 3*testSize); !errors.Is(err, disk.ErrNotSupported) {
		t.Fatalf("grow with a snapshot: %v, want ErrNotSupported", err)
	}
	if err := d.RemoveSnapshot(ctx, sn.ID); err != nil {
		t.Fatal(err)
	}
	// Grow across a boundary and write at the new end.
	if err := d.Grow(ctx, 3*testSize); err != nil {
		t.Fatal(err)
	}
	cid = d.Info().ChangeID
	p := bytes.Repeat([]byte{7}, 4096)
	if _, err := h.WriteAt(p, 3*testSize-4096); err != nil {
		t.Fatal(err)
	}
	ci, err = d.Changes(ctx, "", cid, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	// The grown range and the write at its end must be reported (the
	// current epoch may also report earlier writes: over-reporting is
	// allowed, under-reporting never).
	covered := int64(0)
	for _, a := range ci.Areas {
		lo, hi := max(a.Start, int64(testSize)), min(a.Start+a.Length, 3*testSize)
		covered += max(0, hi-lo)
	}
	if covered != 2*testSize {
		t.Errorf("changes after grow cover %d bytes of the grown range, want %d: %+v", covered, 2*testSize, ci.Areas)
	}
	got := make([]byte, 4096)
	h.ReadAt(got, 3*testSize-4096)
	if !bytes.Equal(got, p) {
		t.Error("data at the grown end lost in consolidation")
	}
}

func TestNamesAndEscapes(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := openStore(t, dir)
	defer s.Close()
	for _, n := range []string{"", "..", "../x", "a/b", ".hidden", "-x", "a\x00b", string(make([]byte, 65))} {
		if _, err := s.CreateDisk(ctx, DiskSpec{Name: n, Capacity: 1 << 20}); !errors.Is(err, disk.ErrInvalid) {
			t.Errorf("CreateDisk(%q): %v, want ErrInvalid", n, err)
		}
		if _, err := s.CreateVM(n); !errors.Is(err, disk.ErrInvalid) {
			t.Errorf("CreateVM(%q): %v, want ErrInvalid", n, err)
		}
	}
	// A symbolic link planted in place of a disk directory is not followed.
	outside := t.TempDir()
	os.Symlink(outside, filepath.Join(dir, "disks", "evil"))
	s.Close()
	s = openStore(t, dir)
	if _, err := s.Disk("evil"); !errors.Is(err, disk.ErrNotFound) {
		t.Errorf("symlinked disk: %v, want ErrNotFound", err)
	}
	if _, err := s.CreateDisk(ctx, DiskSpec{Name: "evil", Capacity: 1 << 20}); err == nil {
		t.Error("creating a disk through a symbolic link succeeded")
	}
	if ents, _ := os.ReadDir(outside); len(ents) != 0 {
		t.Errorf("files written outside the datastore: %v", ents)
	}
}

func TestVMSnapshotsAndAccess(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, t.TempDir())
	defer s.Close()
	if _, err := s.CreateVM("web"); err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"scsi0:0", "scsi0:1"} {
		if _, err := s.AddDisk(ctx, "web", key, DiskSpec{Capacity: 8 << 20, CBT: true}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.AddDisk(ctx, "web", "scsi0:0", DiskSpec{Name: "x", Capacity: 8 << 20}); !errors.Is(err, disk.ErrInvalid) {
		t.Errorf("second disk at scsi0:0: %v, want ErrInvalid", err)
	}
	sn, err := s.SnapshotVM(ctx, "web", SnapshotSpec{Name: "nightly", Owner: "sess-1"})
	if err != nil {
		t.Fatal(err)
	}
	d, _ := s.VMDisk("web", "scsi0:1")
	if got := d.Info().Snapshots; len(got) != 1 || got[0].ID != sn.ID {
		t.Errorf("disk snapshots %+v, want %s", got, sn.ID)
	}
	if _, err := s.Detach("web", "scsi0:1"); !errors.Is(err, disk.ErrBusy) {
		t.Errorf("detach with snapshots: %v, want ErrBusy", err)
	}
	l, err := s.PrepareForAccess([]*Disk{d}, "sess-1", "backup", "nightly")
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Relocate(ctx, "default"); !errors.Is(err, disk.ErrBusy) {
		t.Errorf("relocating a leased disk: %v, want ErrBusy", err)
	}
	if err := s.DeleteVM(ctx, "web", false); !errors.Is(err, disk.ErrBusy) {
		t.Errorf("delete a leased VM: %v, want ErrBusy", err)
	}
	// The session died: Cleanup removes its temporary snapshot and lease.
	rep, err := s.Cleanup(ctx, func(string) bool { return false })
	if err != nil || len(rep.Snapshots) != 1 || len(rep.Leases) != 1 {
		t.Errorf("cleanup: %+v, %v; want one snapshot and one lease", rep, err)
	}
	if err := s.EndAccess(l.ID); !errors.Is(err, disk.ErrNotFound) {
		t.Errorf("ending a cleaned lease: %v, want ErrNotFound", err)
	}
	if err := s.DeleteVM(ctx, "web", false); err != nil {
		t.Errorf("delete VM: %v", err)
	}
}

func TestRelocateOnline(t *testing.T) {
	ctx := context.Background()
	other := t.TempDir()
	s, err := Open(ctx, t.TempDir(), &Options{Targets: map[string]string{"fast": other}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.CreateDisk(ctx, DiskSpec{Name: "a", Capacity: testSize, CBT: true})
	d, _ := s.Disk("a")
	h, _ := d.OpenLive(false)
	defer h.Close()
	m := &model{buf: make([]byte, testSize)}
	writeRandom(t, rand.New(rand.NewPCG(4, 4)), h, m, 100)
	var wg sync.WaitGroup
	wg.Go(func() { writeRandom(t, rand.New(rand.NewPCG(5, 5)), h, m, 300) })
	if err := d.Relocate(ctx, "fast"); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if got := d.Info().Datastore; got != "fast" {
		t.Errorf("datastore %q, want fast", got)
	}
	if got := readAll(t, h); !bytes.Equal(got, m.snapshot()) {
		t.Fatal("data differs after relocation")
	}
	if _, err := os.Stat(filepath.Join(other, "disks", "a", "a-000000.vmdk")); err != nil {
		t.Errorf("base layer not in the target: %v", err)
	}
}

// TestHandleConformance runs the disk conformance suite on live handles.
func TestHandleConformance(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, t.TempDir())
	defer s.Close()
	n := 0
	disktest.RunTests(t, disktest.Harness{
		New: func(t *testing.T, size int64) disk.Disk {
			n++
			name := "c" + string(rune('a'+n%26)) + string(rune('a'+n/26))
			if _, err := s.CreateDisk(ctx, DiskSpec{Name: name, Capacity: size, CBT: true}); err != nil {
				t.Fatal(err)
			}
			d, _ := s.Disk(name)
			h, err := d.OpenLive(false)
			if err != nil {
				t.Fatal(err)
			}
			return h
		},
	})
}

func TestDirectLeases(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, t.TempDir())
	defer s.Close()
	s.CreateDisk(ctx, DiskSpec{Name: "a", Capacity: testSize, CBT: true})
	d, _ := s.Disk("a")
	h, _ := d.OpenLive(false)
	m := &model{buf: make([]byte, testSize)}
	writeRandom(t, rand.New(rand.NewPCG(7, 7)), h, m, 50)
	sn, _ := d.Snapshot(ctx, SnapshotSpec{})
	want := m.snapshot()
	writeRandom(t, rand.New(rand.NewPCG(8, 8)), h, m, 50)

	// A read lease on the snapshot: the client opens the chain itself.
	if _, err := d.OpenDirect(ctx, "", false, "s1"); !errors.Is(err, disk.ErrInvalid) {
		t.Errorf("direct read of the live disk: %v, want ErrInvalid", err)
	}
	l, err := d.OpenDirect(ctx, sn.ID, false, "s1")
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(l.Proof); string(b) != l.Nonce {
		t.Error("the proof file does not hold the nonce")
	}
	v, err := vmdk.Open(ctx, l.Path, &vmdk.OpenOptions{ReadOnly: true, IgnoreCID: true})
	if err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, v); !bytes.Equal(got, want) {
		t.Error("the directly read snapshot differs")
	}
	v.Close()
	if err := d.RemoveSnapshot(ctx, sn.ID); !errors.Is(err, disk.ErrBusy) {
		t.Errorf("removing a snapshot leased for direct reading: %v, want ErrBusy", err)
	}
	if err := d.EndDirect(ctx, l.ID); err != nil {
		t.Fatal(err)
	}
	if err := d.RemoveSnapshot(ctx, sn.ID); err != nil {
		t.Fatal(err)
	}

	// A write lease needs the disk idle, then takes it from the host.
	if _, err := d.OpenDirect(ctx, "", true, "s1"); !errors.Is(err, disk.ErrBusy) {
		t.Errorf("direct restore with a session open: %v, want ErrBusy", err)
	}
	h.Close()
	cid := d.Info().ChangeID
	wl, err := d.OpenDirect(ctx, "", true, "s1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.OpenLive(true); !errors.Is(err, disk.ErrBusy) {
		t.Errorf("opening a disk under a direct restore: %v, want ErrBusy", err)
	}
	w, err := vmdk.Open(ctx, wl.Path, &vmdk.OpenOptions{IgnoreCID: true})
	if err != nil {
		t.Fatal(err)
	}
	p := bytes.Repeat([]byte{0x5a}, 1<<20)
	w.WriteAt(p, 3<<20)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := d.EndDirect(ctx, wl.ID); err != nil {
		t.Fatal(err)
	}
	h, err = d.OpenLive(true)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	got := make([]byte, 1<<20)
	h.ReadAt(got, 3<<20)
	if !bytes.Equal(got, p) {
		t.Error("the direct restore's data is not seen by the host")
	}
	ci, err := d.Changes(ctx, "", cid, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, a := range ci.Areas {
		n += a.Length
	}
	if n != testSize {
		t.Errorf("after a direct restore %d bytes are reported changed, want all %d", n, int64(testSize))
	}
}

// TestConsolidationResumedAtOpen: a snapshot removed just before a crash,
// its layer not merged yet, is consolidated when the store opens again.
func TestConsolidationResumedAtOpen(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := openStore(t, dir)
	s.CreateDisk(ctx, DiskSpec{Name: "a", Capacity: testSize, CBT: true})
	d, _ := s.Disk("a")
	h, _ := d.OpenLive(false)
	m := &model{buf: make([]byte, testSize)}
	writeRandom(t, rand.New(rand.NewPCG(11, 11)), h, m, 50)
	sn, _ := d.Snapshot(ctx, SnapshotSpec{})
	writeRandom(t, rand.New(rand.NewPCG(12, 12)), h, m, 50)
	h.Flush()
	d.ops.Lock()
	if err := d.dropSnapshot(sn.ID); err != nil {
		t.Fatal(err)
	}
	d.ops.Unlock()
	// Crash: no consolidation, no Close.
	s.dropLock()
	s2 := openStore(t, dir)
	defer s2.Close()
	s2.bg.Wait()
	d2, _ := s2.Disk("a")
	if in := d2.Info(); in.Layers != 1 {
		t.Errorf("%d layers after reopening; want the removed snapshot consolidated into 1", in.Layers)
	}
	h2, _ := d2.OpenLive(true)
	defer h2.Close()
	if got := readAll(t, h2); !bytes.Equal(got, m.snapshot()) {
		t.Error("data differs after the resumed consolidation")
	}
}

// TestLiveExtentsCoverTheRange: a live handle reports extents covering the
// whole range however many there are (they are gathered in batches).
func TestLiveExtentsCoverTheRange(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, t.TempDir())
	defer s.Close()
	s.CreateDisk(ctx, DiskSpec{Name: "x", Capacity: 1 << 30})
	d, _ := s.Disk("x")
	h, _ := d.OpenLive(false)
	defer h.Close()
	p := make([]byte, 64<<10)
	p[0] = 1
	for i := int64(0); i < 3000; i++ { // 3,000 data grains, one every other grain
		h.WriteAt(p, i*128<<10)
	}
	var n int
	var pos int64
	if err := h.Extents(ctx, 0, 1<<30, func(e disk.Extent) error {
		if e.Off != pos {
			t.Fatalf("extent at %d, want %d", e.Off, pos)
		}
		pos = e.End()
		n++
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if pos != 1<<30 || n < 6000 {
		t.Errorf("extents cover [0, %d) in %d extents; want the whole GiB in at least 6000", pos, n)
	}
}

// TestRelocateBackKeepsState: relocating a disk back to the default
// datastore (whose directory also holds disk.json and the change tracking
// state) removed that whole directory before copying, and so did the
// recovery of such a relocation interrupted by a crash: the tracker's
// files vanished and every change ID was lost.
func TestRelocateBackKeepsState(t *testing.T) {
	ctx := context.Background()
	root, other := t.TempDir(), t.TempDir()
	o := &Options{Targets: map[string]string{"fast": other}}
	s, err := Open(ctx, root, o)
	if err != nil {
		t.Fatal(err)
	}
	s.CreateDisk(ctx, DiskSpec{Name: "a", Capacity: testSize, CBT: true})
	d, _ := s.Disk("a")
	h, _ := d.OpenLive(false)
	m := &model{buf: make([]byte, testSize)}
	writeRandom(t, rand.New(rand.NewPCG(4, 4)), h, m, 50)
	sn, err := d.Snapshot(ctx, SnapshotSpec{})
	if err != nil {
		t.Fatal(err)
	}
	writeRandom(t, rand.New(rand.NewPCG(5, 5)), h, m, 50)
	for _, target := range []string{"fast", "default"} {
		if err := d.Relocate(ctx, target); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{"disk.json", "cbt.state", "cbt.state.intent"} {
		if _, err := os.Stat(filepath.Join(root, "disks", "a", f)); err != nil {
			t.Errorf("after relocating back: %v", err)
		}
	}
	// A relocation back to the default that a crash interrupted: recovery
	// must drop only the copy.
	if err := d.Relocate(ctx, "fast"); err != nil {
		t.Fatal(err)
	}
	h.Close()
	s.Close()
	b, _ := os.ReadFile(filepath.Join(root, "disks", "a", "disk.json"))
	b = bytes.Replace(b, []byte(`"datastore": "fast",`), []byte(`"datastore": "fast", "op": {"kind": "relocate"},`), 1)
	if !bytes.Contains(b, []byte(`"relocate"`)) {
		t.Fatalf("could not plant the interrupted relocation in %s", b)
	}
	os.WriteFile(filepath.Join(root, "disks", "a", "disk.json"), b, 0o600)
	s, err = Open(ctx, root, o)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	d, err = s.Disk("a")
	if err != nil {
		t.Fatalf("the disk is gone after recovering an interrupted relocation: %v", err)
	}
	if _, err := d.Changes(ctx, "", sn.ChangeID, 0, 0); err != nil {
		t.Errorf("change ID after relocations and recovery: %v", err)
	}
	h, _ = d.OpenLive(true)
	defer h.Close()
	if !bytes.Equal(readAll(t, h), m.snapshot()) {
		t.Error("data differs after relocations and recovery")
	}
}

// TestSnapshotIDAfterCrash: a crash after a snapshot was recorded but
// before the next ID was (as an older version could leave disk.json) must
// not make every later snapshot fail as "already exists".
func TestSnapshotIDAfterCrash(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	s := openStore(t, root)
	s.CreateDisk(ctx, DiskSpec{Name: "a", Capacity: testSize})
	d, _ := s.Disk("a")
	if _, err := d.Snapshot(ctx, SnapshotSpec{}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	path := filepath.Join(root, "disks", "a", "disk.json")
	b, _ := os.ReadFile(path)
	b = bytes.Replace(b, []byte(`"nextSnapshot": 2`), []byte(`"nextSnapshot": 1`), 1)
	os.WriteFile(path, b, 0o600)
	s = openStore(t, root)
	defer s.Close()
	d, _ = s.Disk("a")
	sn, err := d.Snapshot(ctx, SnapshotSpec{})
	if err != nil || sn.ID != "snapshot-2" {
		t.Fatalf("snapshot after the planted state: %+v, %v; want snapshot-2", sn, err)
	}
}

// TestVMSnapshotCrashReconciled: a crash between the writes of a VM
// snapshot (the disks record it one by one, then the VM lists it) or of
// its removal (the disks drop it, then the VM) is completed at the next
// open, so the VM and its disks agree.
func TestVMSnapshotCrashReconciled(t *testing.T) {
	ctx := context.Background()
	edit := func(t *testing.T, path string, v any, fn func()) {
		t.Helper()
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if err := jsonUnmarshal(b, v); err != nil {
			t.Fatal(err)
		}
		fn()
		if err := writeJSON(path, v); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name            string
		unlistVM, unrec bool // drop the VM's record; drop disk 2's record
		wantListed      bool
	}{
		{"made whole, not listed", true, false, true},
		{"made on one disk only", true, true, false},
		{"removed from one disk", false, true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			s := openStore(t, root)
			s.CreateVM("vm")
			for _, k := range []string{"scsi0:0", "scsi0:1"} {
				if _, err := s.AddDisk(ctx, "vm", k, DiskSpec{Capacity: testSize}); err != nil {
					t.Fatal(err)
				}
			}
			sn, err := s.SnapshotVM(ctx, "vm", SnapshotSpec{Name: "n"})
			if err != nil {
				t.Fatal(err)
			}
			s.Close()
			if tc.unlistVM {
				var v vmState
				edit(t, s.vmPath("vm"), &v, func() { v.Snapshots = nil })
			}
			if tc.unrec {
				var st diskState
				edit(t, filepath.Join(root, "disks", "vm-scsi0-1", "disk.json"), &st, func() { st.Snapshots = nil })
			}
			s = openStore(t, root)
			defer s.Close()
			in, err := s.VM("vm")
			if err != nil {
				t.Fatal(err)
			}
			listed := len(in.Snapshots) == 1 && in.Snapshots[0].ID == sn.ID
			if listed != tc.wantListed {
				t.Errorf("VM lists %+v; want listed %v", in.Snapshots, tc.wantListed)
			}
			for _, dn := range []string{"vm-scsi0-0", "vm-scsi0-1"} {
				d, _ := s.Disk(dn)
				if got := len(d.Snapshots()) == 1; got != tc.wantListed {
					t.Errorf("disk %s holds the snapshot: %v; want %v", dn, got, tc.wantListed)
				}
			}
		})
	}
}

// TestChangedWhileDown: a disk written by another tool while the host was
// down (cleanly stopped) gets a new change tracking history: an old change
// ID would miss those writes. Without such writes the history stays.
func TestChangedWhileDown(t *testing.T) {
	ctx := context.Background()
	for _, outside := range []bool{false, true} {
		root := t.TempDir()
		s := openStore(t, root)
		s.CreateDisk(ctx, DiskSpec{Name: "a", Capacity: testSize, CBT: true})
		d, _ := s.Disk("a")
		sn, err := d.Snapshot(ctx, SnapshotSpec{})
		if err != nil {
			t.Fatal(err)
		}
		leaf := d.layerPath(d.st.Leaf)
		s.Close()
		if outside {
			v, err := vmdk.Open(ctx, leaf, &vmdk.OpenOptions{IgnoreCID: true})
			if err != nil {
				t.Fatal(err)
			}
			v.WriteAt(bytes.Repeat([]byte{7}, 4096), 1<<20)
			if err := v.Close(); err != nil {
				t.Fatal(err)
			}
		}
		s = openStore(t, root)
		d, _ = s.Disk("a")
		_, err = d.Changes(ctx, "", sn.ChangeID, 0, 0)
		if outside && !errors.Is(err, disk.ErrNotFound) {
			t.Errorf("after writes from outside while the host was down: %v, want ErrNotFound", err)
		}
		if !outside && err != nil {
			t.Errorf("after a clean stop and restart: %v", err)
		}
		s.Close()
	}
}
