package vmdk

import (
	"bytes"
	"context"
	"path/filepath"
	"testing"
)

// TestCheckTotalsOfDelta: check's allocated and total bytes describe the
// delta named, not the sum over its chain (as qemu-img check gives them).
func TestCheckTotalsOfDelta(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	base := filepath.Join(dir, "base.vmdk")
	b, err := Create(ctx, base, 16<<20, nil)
	if err != nil {
		t.Fatal(err)
	}
	b.WriteAt(bytes.Repeat([]byte{1}, 4<<20), 0)
	b.Close()
	child := filepath.Join(dir, "child.vmdk")
	c, err := Create(ctx, child, 0, &CreateOptions{Parent: base})
	if err != nil {
		t.Fatal(err)
	}
	c.WriteAt(bytes.Repeat([]byte{2}, 64<<10), 0)
	c.Close()
	rep, err := Check(ctx, child, nil)
	if err != nil {
		t.Fatal(err)
	}
	if rep.TotalBytes != 16<<20 || rep.AllocatedBytes != 64<<10 {
		t.Errorf("delta check: total %d, allocated %d; want 16 MiB and the delta's 64 KiB", rep.TotalBytes, rep.AllocatedBytes)
	}
}
