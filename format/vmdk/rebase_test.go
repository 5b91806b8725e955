package vmdk

import (
	"bytes"
	"path/filepath"
	"testing"
)

// TestRemoveParent: a child without its parent is a disk of one link that
// reads its own grains and zeros elsewhere, for each sparse child kind.
func TestRemoveParent(t *testing.T) {
	for _, sub := range []Subformat{MonolithicSparse, VMFSSparse} {
		t.Run(string(sub), func(t *testing.T) {
			dir := t.TempDir()
			base, child := filepath.Join(dir, "base.vmdk"), filepath.Join(dir, "child.vmdk")
			makeBase(t, base, 1<<20)
			c, err := Create(ctx, child, 0, &CreateOptions{Subformat: sub, Parent: base})
			if err != nil {
				t.Fatal(err)
			}
			own := bytes.Repeat([]byte{9}, 64<<10)
			if _, err := c.WriteAt(own, 128<<10); err != nil {
				t.Fatal(err)
			}
			if err := c.Close(); err != nil {
				t.Fatal(err)
			}
			if err := RemoveParent(ctx, child, nil); err != nil {
				t.Fatal(err)
			}
			d, err := Open(ctx, child, &OpenOptions{ReadOnly: true})
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			if in := d.Info(); in.Links != 1 || in.ParentHint != "" || in.ParentCID != 0xffffffff {
				t.Errorf("after RemoveParent: links %d, hint %q, parentCID %08x; want 1, \"\", ffffffff", in.Links, in.ParentHint, in.ParentCID)
			}
			got := make([]byte, 1<<20)
			if _, err := d.ReadAt(got, 0); err != nil {
				t.Fatal(err)
			}
			want := make([]byte, 1<<20)
			copy(want[128<<10:], own)
			if !bytes.Equal(got, want) {
				t.Errorf("the child without its parent does not read as its own grains and zeros")
			}
		})
	}
}
