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
