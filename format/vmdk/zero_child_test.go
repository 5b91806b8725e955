package vmdk

import (
	"bytes"
	"context"
	"path/filepath"
	"testing"
)

// TestZeroPartGrainOverParent: zeroing part of a grain the child does not
// hold must keep the rest of the grain as the parent has it.
func TestZeroPartGrainOverParent(t *testing.T) {
	ctx := context.Background()
	for _, zg := range []bool{false, true} {
		dir := t.TempDir()
		base := filepath.Join(dir, "base.vmdk")
		p, err := Create(ctx, base, 1<<20, &CreateOptions{ZeroedGrain: zg})
		if err != nil {
			t.Fatal(err)
		}
		fill := bytes.Repeat([]byte{0xab}, 1<<20)
		p.WriteAt(fill, 0)
		p.Close()
		c, err := Create(ctx, filepath.Join(dir, "child.vmdk"), 0, &CreateOptions{Parent: base, ZeroedGrain: zg})
		if err != nil {
			t.Fatal(err)
		}
		// Part of grain 0, all of grain 1, part of grain 2.
		if err := c.WriteZeroes(4096, 128<<10, 0); err != nil {
			t.Fatal(err)
		}
		want := bytes.Clone(fill)
		clear(want[4096 : 4096+128<<10])
		got := make([]byte, 1<<20)
		if _, err := c.ReadAt(got, 0); err != nil {
			t.Fatal(err)
		}
		if i := firstDiff(got, want); i >= 0 {
			t.Errorf("zeroed-grain=%v: byte %d is %#x, want %#x", zg, i, got[i], want[i])
		}
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

func firstDiff(a, b []byte) int {
	for i := range a {
		if a[i] != b[i] {
			return i
		}
	}
	return -1
}
