package local_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/vdisk-project/vdisk/backup/storage/local"
	"github.com/vdisk-project/vdisk/disk"
	"github.com/vdisk-project/vdisk/internal/testenv"
)

func TestNoSpace(t *testing.T) {
	dir := testenv.SmallFS(t, 1<<20)
	st, err := local.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	err = st.Put(ctx, "data/big", make([]byte, 2<<20))
	if !errors.Is(err, disk.ErrNoSpace) {
		t.Fatalf("Put of 2 MiB into 1 MiB: error %v, want disk.ErrNoSpace", err)
	}
	ents, err := os.ReadDir(filepath.Join(dir, "data"))
	if err != nil || len(ents) != 0 {
		t.Errorf("after a failed Put the directory holds %v (%v), want nothing", ents, err)
	}
	if err := st.Put(ctx, "data/small", []byte("fits")); err != nil {
		t.Errorf("Put after ENOSPC: %v", err)
	}
	// A read-only filesystem refuses with ErrPermission.
	if err := syscall.Mount("", dir, "", syscall.MS_REMOUNT|syscall.MS_RDONLY, ""); err != nil {
		t.Fatalf("remount read-only: %v", err)
	}
	if err := st.Put(ctx, "data/ro", []byte("x")); !errors.Is(err, disk.ErrPermission) {
		t.Errorf("Put on a read-only filesystem: error %v, want disk.ErrPermission", err)
	}
	if b, err := st.Get(ctx, "data/small", 10); err != nil || string(b) != "fits" {
		t.Errorf("Get on a read-only filesystem = %q, %v", b, err)
	}
}
