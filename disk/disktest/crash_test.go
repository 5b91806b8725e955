package disktest_test

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"os"
	"syscall"
	"testing"

	"github.com/vdisk-project/vdisk/disk/disktest"
)

func TestCrashFS(t *testing.T) {
	c := disktest.NewCrashFS()
	f, err := c.OpenFile("a", os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	synced := bytes.Repeat([]byte{1}, 4096)
	if _, err := f.WriteAt(synced, 0); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := c.SyncDir("."); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(bytes.Repeat([]byte{2}, 8192), 2048); err != nil {
		t.Fatal(err)
	}
	if c.Pending() != 1 {
		t.Fatalf("Pending() = %d, want 1", c.Pending())
	}
	sawOld, sawNew := false, false
	for seed := range uint64(50) {
		after := c.Crash(rand.New(rand.NewPCG(seed, 0))).Bytes("a")
		if len(after) < 2048 || !bytes.Equal(after[:2048], synced[:2048]) {
			t.Fatalf("crash lost synced bytes")
		}
		for s := 2048; s < len(after); s += 512 {
			switch after[s] {
			case 2:
				sawNew = true
			case 1, 0:
				sawOld = true
			default:
				t.Fatalf("sector at %d holds %d", s, after[s])
			}
		}
	}
	if !sawOld || !sawNew {
		t.Errorf("crashes never tore the unsynced write (old %v, new %v)", sawOld, sawNew)
	}
	c.Budget = 10000
	if _, err := f.WriteAt(make([]byte, 20000), 0); !errors.Is(err, syscall.ENOSPC) {
		t.Errorf("write over budget = %v, want ENOSPC", err)
	}
	if _, err := c.OpenFile("missing", os.O_RDONLY, 0); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("open missing = %v", err)
	}
}

// TestCrashFSDirectories checks that names are durable only after SyncDir:
// a crash may drop an unsynced creation or undo an unsynced rename, but
// never splits a rename, and a synced directory keeps its names.
func TestCrashFSDirectories(t *testing.T) {
	c := disktest.NewCrashFS()
	mk := func(name string, b byte) {
		f, err := c.OpenFile(name, os.O_CREATE|os.O_EXCL|os.O_RDWR, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.WriteAt([]byte{b}, 0); err != nil {
			t.Fatal(err)
		}
		if err := f.Sync(); err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
	mk("/d/a", 1)
	if err := c.SyncDir("/d"); err != nil {
		t.Fatal(err)
	}
	mk("/d/new", 2)
	mk("/e/other", 3)
	if err := c.Rename("/d/new", "/d/a"); err != nil {
		t.Fatal(err)
	}
	sawOld, sawNew := false, false
	for seed := range uint64(64) {
		img := c.Crash(rand.New(rand.NewPCG(seed, 0)))
		a, n := img.Bytes("/d/a"), img.Bytes("/d/new")
		switch {
		case bytes.Equal(a, []byte{1}) && n == nil:
			sawOld = true
		case bytes.Equal(a, []byte{1}) && bytes.Equal(n, []byte{2}):
			sawOld = true // created, not yet renamed
		case bytes.Equal(a, []byte{2}) && n == nil:
			sawNew = true
		default:
			t.Fatalf("seed %d: /d/a = %v, /d/new = %v: not a state the operations passed through", seed, a, n)
		}
	}
	if !sawOld || !sawNew {
		t.Errorf("unsynced rename: saw old %v, new %v; want both", sawOld, sawNew)
	}
	if got := c.UnsyncedDirs(); len(got) != 2 || got[0] != "/d" || got[1] != "/e" {
		t.Errorf("UnsyncedDirs() = %v, want [/d /e]", got)
	}
	if err := c.SyncDir("/d"); err != nil {
		t.Fatal(err)
	}
	lostOther := false
	for seed := range uint64(64) {
		img := c.Crash(rand.New(rand.NewPCG(seed, 1)))
		if a := img.Bytes("/d/a"); !bytes.Equal(a, []byte{2}) || img.Bytes("/d/new") != nil {
			t.Fatalf("seed %d: after SyncDir /d/a = %v, want [2]", seed, a)
		}
		lostOther = lostOther || img.Bytes("/e/other") == nil
	}
	if !lostOther {
		t.Errorf("an unsynced creation in /e always survived")
	}
}
