package datastore

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vdisk-project/vdisk/disk"
	"github.com/vdisk-project/vdisk/format/vmdk"
	"github.com/vdisk-project/vdisk/internal/testenv"
)

// TestInputBounds: every client-supplied string and size is bounded and
// refused as invalid before it is stored or worked on.
func TestInputBounds(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	s := openStore(t, root)
	defer s.Close()
	if _, err := s.CreateDisk(ctx, DiskSpec{Name: "a", Capacity: testSize}); err != nil {
		t.Fatal(err)
	}
	d, _ := s.Disk("a")
	big := strings.Repeat("x", 1<<20)
	for _, spec := range []SnapshotSpec{
		{Description: big},
		{Name: strings.Repeat("n", MaxNameLen+1)},
		{Name: "bad\nname"},
		{Name: "esc\x1b[2J"},
		{Description: "nul\x00"},
		{Name: "\xff\xfe"},
	} {
		if _, err := d.Snapshot(ctx, spec); !errors.Is(err, disk.ErrInvalid) {
			t.Errorf("snapshot %.40q/%.40q: %v, want ErrInvalid", spec.Name, spec.Description, err)
		}
	}
	if _, err := d.Snapshot(ctx, SnapshotSpec{Name: "ok", Description: "two\nlines\tand a tab"}); err != nil {
		t.Errorf("a fine snapshot: %v", err)
	}
	for _, reason := range []string{big, "line\nbreak", "\x07"} {
		if _, err := s.PrepareForAccess([]*Disk{d}, "h", "u", reason); !errors.Is(err, disk.ErrInvalid) {
			t.Errorf("lease reason %.40q: %v, want ErrInvalid", reason, err)
		}
	}
	for i := range MaxLeases {
		if _, err := s.PrepareForAccess([]*Disk{d}, "h", "u", "nightly"); err != nil {
			t.Fatalf("lease %d: %v", i, err)
		}
	}
	if _, err := s.PrepareForAccess([]*Disk{d}, "h", "u", "one more"); !errors.Is(err, disk.ErrBusy) {
		t.Errorf("lease %d: %v, want ErrBusy", MaxLeases+1, err)
	}
	for _, v := range []string{"a\x00b", "a\x1bb", "a\"b", "a\nb", strings.Repeat("v", 5000)} {
		if err := d.SetMetadata("key", v); !errors.Is(err, disk.ErrInvalid) {
			t.Errorf("metadata value %.40q: %v, want ErrInvalid", v, err)
		}
	}
	for _, c := range []int64{-1, 0, MaxCapacity + 1, 1 << 50, 1<<63 - 1} {
		for _, typ := range []string{"", "twoGbMaxExtentSparse"} {
			_, err := s.CreateDisk(ctx, DiskSpec{Name: "huge", Capacity: c, Type: vmdk.Subformat(typ)})
			if !errors.Is(err, disk.ErrInvalid) {
				t.Errorf("capacity %d (%s): %v, want ErrInvalid", c, typ, err)
			}
		}
	}
	if _, err := os.Stat(filepath.Join(root, "disks", "huge")); err == nil {
		t.Error("a refused create left files behind")
	}
	// The disk and its record still load.
	s.Close()
	s = openStore(t, root)
	if _, err := s.Disk("a"); err != nil {
		t.Errorf("after the refusals the disk does not load: %v", err)
	}
}

// TestBadRecordIsolated: one disk whose record cannot be loaded (garbage,
// or a disk.json larger than Open reads) is set aside; the host opens and
// serves the others.
func TestBadRecordIsolated(t *testing.T) {
	ctx := context.Background()
	for _, bad := range [][]byte{[]byte("{not json"), bytes.Repeat([]byte(" "), maxStateFile+1)} {
		root := t.TempDir()
		s := openStore(t, root)
		for _, n := range []string{"good", "bad"} {
			if _, err := s.CreateDisk(ctx, DiskSpec{Name: n, Capacity: testSize, CBT: true}); err != nil {
				t.Fatal(err)
			}
		}
		s.Close()
		os.WriteFile(filepath.Join(root, "disks", "bad", "disk.json"), bad, 0o600)
		s, err := Open(ctx, root, nil)
		if err != nil {
			t.Fatalf("one bad disk record keeps the host from opening: %v", err)
		}
		if _, err := s.Disk("good"); err != nil {
			t.Errorf("the good disk: %v", err)
		}
		if _, err := s.Disk("bad"); !errors.Is(err, disk.ErrCorrupt) {
			t.Errorf("the bad disk: %v, want ErrCorrupt", err)
		}
		var failed string
		for _, in := range s.Disks() {
			if in.Name == "bad" {
				failed = in.Failed
			}
		}
		if failed == "" {
			t.Error("Disks does not report the disk that failed")
		}
		s.Close()
	}
}

// TestFullDatastoreAtRestart: the host restarts on a full filesystem
// after an unclean stop (change tracking must rewrite its state): the
// disks that need space are set aside with ErrNoSpace, the others are
// served, and once space is freed everything is back with its change IDs.
func TestFullDatastoreAtRestart(t *testing.T) {
	ctx := context.Background()
	root := testenv.SmallFS(t, 48<<20)
	s := openStore(t, root)
	for _, spec := range []DiskSpec{{Name: "tracked", Capacity: testSize, CBT: true}, {Name: "plain", Capacity: testSize}} {
		if _, err := s.CreateDisk(ctx, spec); err != nil {
			t.Fatal(err)
		}
	}
	d, _ := s.Disk("tracked")
	sn, err := d.Snapshot(ctx, SnapshotSpec{})
	if err != nil {
		t.Fatal(err)
	}
	h, _ := d.OpenLive(false)
	h.WriteAt(bytes.Repeat([]byte{1}, 1<<20), 0)
	h.Flush()
	// No Close: the host dies. Then the filesystem fills up.
	s.dropLock()
	free := fillFS(t, root)
	s2, err := Open(ctx, root, nil)
	if err != nil {
		t.Fatalf("a full datastore keeps the host from starting: %v", err)
	}
	if _, err := s2.Disk("plain"); err != nil {
		t.Errorf("the disk that needs no space: %v", err)
	}
	_, err = s2.Disk("tracked")
	t.Logf("the tracked disk on the full filesystem: %v", err)
	if err != nil && !errors.Is(err, disk.ErrNoSpace) {
		t.Errorf("the tracked disk on a full filesystem: %v, want it served or ErrNoSpace", err)
	}
	s2.Close()
	free()
	s3, err := Open(ctx, root, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s3.Close()
	d3, err := s3.Disk("tracked")
	if err != nil {
		t.Fatalf("after freeing space: %v", err)
	}
	if ci, err := d3.Changes(ctx, "", sn.ChangeID, 0, 0); err != nil || len(ci.Areas) == 0 {
		t.Errorf("change ID after the full-disk restart: %v, %d areas", err, len(ci.Areas))
	}
}

// TestSnapshotNotRecorded: a snapshot whose record cannot be written
// (disk.json fails: a full or failing filesystem) leaves the disk serving
// its old leaf, and what is written then is there after a restart. It
// used to take the disk offline (every write failed) until the host
// restarted.
func TestSnapshotNotRecorded(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	s := openStore(t, root)
	for _, cbt := range []bool{false, true} {
		name := map[bool]string{false: "plain", true: "tracked"}[cbt]
		if _, err := s.CreateDisk(ctx, DiskSpec{Name: name, Capacity: testSize, CBT: cbt}); err != nil {
			t.Fatal(err)
		}
		d, _ := s.Disk(name)
		h, _ := d.OpenLive(false)
		h.WriteAt(bytes.Repeat([]byte{1}, 1<<20), 0)
		h.Flush()
		// The ID is spent (one commit), then the record fails.
		n := 0
		s.failCommit = func() error {
			if n++; n == 2 {
				return disk.Errorf(disk.ErrNoSpace, "test: disk.json cannot be written")
			}
			return nil
		}
		if _, err := d.Snapshot(ctx, SnapshotSpec{}); !errors.Is(err, disk.ErrNoSpace) {
			t.Fatalf("%s: snapshot with its record failing: %v", name, err)
		}
		s.failCommit = nil
		if _, err := h.WriteAt(bytes.Repeat([]byte{2}, 1<<20), 0); err != nil {
			t.Fatalf("%s: write after the failed snapshot: %v", name, err)
		}
		if err := h.Flush(); err != nil {
			t.Fatalf("%s: flush after the failed snapshot: %v", name, err)
		}
		h.Close()
	}
	s.Close()
	s = openStore(t, root)
	defer s.Close()
	checkAfterFailedSnapshot(t, s)
}

// TestSnapshotOnFullFilesystem: a snapshot that cannot be recorded (the
// filesystem is full) leaves the disk serving its old leaf, and what is
// written then is there after a restart.
func TestSnapshotOnFullFilesystem(t *testing.T) {
	ctx := context.Background()
	root := testenv.SmallFS(t, 32<<20)
	s := openStore(t, root)
	for _, cbt := range []bool{false, true} {
		name := map[bool]string{false: "plain", true: "tracked"}[cbt]
		if _, err := s.CreateDisk(ctx, DiskSpec{Name: name, Capacity: testSize, CBT: cbt}); err != nil {
			t.Fatal(err)
		}
		d, _ := s.Disk(name)
		h, _ := d.OpenLive(false)
		h.WriteAt(bytes.Repeat([]byte{1}, 1<<20), 0)
		h.Flush()
		h.Close()
	}
	free := fillFS(t, root)
	for _, name := range []string{"plain", "tracked"} {
		d, _ := s.Disk(name)
		if _, err := d.Snapshot(ctx, SnapshotSpec{}); err == nil {
			t.Fatalf("%s: a snapshot on a full filesystem succeeded", name)
		}
		h, err := d.OpenLive(false)
		if err != nil {
			t.Fatalf("%s: after the failed snapshot: %v", name, err)
		}
		// Overwrite allocated grains: no space needed.
		if _, err := h.WriteAt(bytes.Repeat([]byte{2}, 1<<20), 0); err != nil {
			t.Fatalf("%s: write after the failed snapshot: %v", name, err)
		}
		if err := h.Flush(); err != nil {
			t.Fatalf("%s: flush after the failed snapshot: %v", name, err)
		}
		h.Close()
	}
	free()
	s.Close()
	s = openStore(t, root)
	defer s.Close()
	checkAfterFailedSnapshot(t, s)
}

// fillFS fills the filesystem holding dir and returns what frees it again.
func fillFS(t *testing.T, dir string) func() {
	t.Helper()
	filler := filepath.Join(dir, "filler")
	f, err := os.Create(filler)
	if err != nil {
		t.Fatal(err)
	}
	chunk := make([]byte, 64<<10)
	for {
		if _, err := f.Write(chunk); err != nil {
			break
		}
	}
	f.Close()
	return func() { os.Remove(filler) }
}

// checkAfterFailedSnapshot: the disks "plain" and "tracked" hold the 2s
// written after their snapshot failed, and no snapshot.
func checkAfterFailedSnapshot(t *testing.T, s *Store) {
	t.Helper()
	for _, name := range []string{"plain", "tracked"} {
		d, err := s.Disk(name)
		if err != nil {
			t.Fatal(err)
		}
		h, _ := d.OpenLive(true)
		got := make([]byte, 1<<20)
		h.ReadAt(got, 0)
		h.Close()
		if !bytes.Equal(got, bytes.Repeat([]byte{2}, 1<<20)) {
			t.Errorf("%s: the write after the failed snapshot is lost", name)
		}
		if n := len(d.Snapshots()); n != 0 {
			t.Errorf("%s: %d snapshots after the failed one", name, n)
		}
	}
}
