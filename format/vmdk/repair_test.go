package vmdk

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vdisk-project/vdisk/disk"
)

func TestRelinkAndStripCBT(t *testing.T) {
	dir := t.TempDir()
	base := filepath.Join(dir, "b.vmdk")
	d, err := Create(ctx, base, 4<<20, nil)
	if err != nil {
		t.Fatal(err)
	}
	d.Close()
	child := filepath.Join(dir, "c.vmdk")
	c, err := Create(ctx, child, 0, &CreateOptions{Parent: base})
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	// Rewrite the parent's CID (as a descriptor-only edit would).
	if err := editDescriptor(ctx, base, disk.OSFS{}, func(d *descriptor) { d.set("CID", "00c0ffee") }); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(ctx, child, &OpenOptions{ReadOnly: true}); !errors.Is(err, disk.ErrCorrupt) {
		t.Fatalf("open with a changed parent CID = %v", err)
	}
	old, cid, err := Relink(ctx, child, nil)
	if err != nil || cid != 0x00c0ffee || old == cid {
		t.Fatalf("Relink = %x, %x, %v", old, cid, err)
	}
	if d, err := Open(ctx, child, &OpenOptions{ReadOnly: true}); err != nil {
		t.Fatalf("open after relink: %v", err)
	} else {
		d.Close()
	}
	// CBT: version 3 and changeTrackPath go.
	flat := filepath.Join(dir, "f.vmdk")
	f, err := Create(ctx, flat, 1<<20, &CreateOptions{Subformat: VMFS})
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	b, _ := os.ReadFile(flat)
	b = bytes.Replace(b, []byte("version=1\n"), []byte("version=3\n"), 1)
	b = bytes.Replace(b, []byte("\n# The Disk Data Base"), []byte("\n# Change Tracking File\nchangeTrackPath=\"f-ctk.vmdk\"\n\n# The Disk Data Base"), 1)
	os.WriteFile(flat, b, 0o644)
	if found, err := StripCBT(ctx, flat, nil); err != nil || !found {
		t.Fatalf("StripCBT = %v, %v", found, err)
	}
	b, _ = os.ReadFile(flat)
	if bytes.Contains(b, []byte("changeTrackPath")) || !bytes.Contains(b, []byte("version=1\n")) {
		t.Errorf("descriptor after StripCBT:\n%s", b)
	}
}

func TestRebuildDescriptor(t *testing.T) {
	for _, sf := range []Subformat{VMFS, TwoGbMaxExtentSparse, TwoGbMaxExtentFlat, VMFSSparse} {
		t.Run(string(sf), func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "d.vmdk")
			o := &CreateOptions{Subformat: sf, SplitSize: 2 << 20}
			parent := ""
			if sf == VMFSSparse {
				parent = filepath.Join(dir, "p.vmdk")
				p, err := Create(ctx, parent, 5<<20, &CreateOptions{Subformat: MonolithicFlat})
				if err != nil {
					t.Fatal(err)
				}
				p.Close()
				o.Parent = parent
			}
			d, err := Create(ctx, path, 5<<20, o)
			if err != nil {
				t.Fatal(err)
			}
			model := make([]byte, d.Size())
			writeRandom(t, d, model, 31, 10)
			d.Close()
			os.Remove(path) // the descriptor is lost
			if err := RebuildDescriptor(ctx, path, parent, "", nil); err != nil {
				t.Fatalf("RebuildDescriptor: %v", err)
			}
			d, err = Open(ctx, path, &OpenOptions{ReadOnly: true})
			if err != nil {
				b, _ := os.ReadFile(path)
				t.Fatalf("open rebuilt: %v\n%s", err, b)
			}
			defer d.Close()
			got := make([]byte, d.Size())
			d.ReadAt(got, 0)
			if !bytes.Equal(got, model) {
				t.Error("the rebuilt disk reads differently")
			}
			if err := RebuildDescriptor(ctx, path, parent, "", nil); err == nil || !strings.Contains(err.Error(), "exists") {
				t.Errorf("rebuilding over an existing descriptor = %v", err)
			}
		})
	}
}
