package lvm

import (
	"context"
	"os"
	"testing"
)

// FuzzLVMMetadata: no text makes the parser panic, loop or allocate
// beyond its limits, and every VG it accepts has consistent numbers.
func FuzzLVMMetadata(f *testing.F) {
	if b, err := os.ReadFile("testdata/vgseed.txt"); err == nil {
		f.Add(b)
	}
	f.Add([]byte(vgText(3, "")))
	f.Fuzz(func(t *testing.T, text []byte) {
		vg, err := ParseVG(text)
		if err != nil {
			return
		}
		if vg.ExtentSize <= 0 {
			t.Fatalf("extent size %d", vg.ExtentSize)
		}
		for _, lv := range vg.LVs {
			if _, err := vg.Map(lv); err == nil {
				for _, s := range lv.Segments {
					if s.StartExtent < 0 || s.ExtentCount <= 0 {
						t.Fatalf("segment %+v", s)
					}
				}
			}
		}
	})
}

// FuzzLabel: a device whose first bytes are the input (and zeros after,
// up to 16 MiB) gives a label and metadata, or an error, never a panic;
// the VGs Scan assembles read without panicking.
func FuzzLabel(f *testing.F) {
	for _, n := range []string{"a", "b"} {
		if b, err := os.ReadFile("testdata/pv-" + n + ".bin"); err == nil {
			f.Add(b)
		}
	}
	f.Add(mda(f, uuidA, 64<<10, 16<<10, 16<<10-100, vgText(2, "")))
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > 1<<20 {
			return
		}
		dev := Device{R: prefixDevice{b, 16 << 20}, Size: 16 << 20, Name: "fuzz"}
		if l, err := ReadLabel(dev.R, dev.Size); err == nil {
			for _, a := range l.Metadata {
				if c, err := ReadMetadata(dev.R, dev.Size, a); err == nil && int64(len(c.Text)) > a.Size {
					t.Fatalf("text of %d bytes from an area of %d", len(c.Text), a.Size)
				}
			}
		}
		res, err := Scan(context.Background(), []Device{dev})
		if err != nil {
			return
		}
		buf := make([]byte, 64<<10)
		for _, vg := range res.VGs {
			for _, lv := range vg.LVs {
				if r, err := vg.Open(lv); err == nil {
					r.ReadAt(buf, 0)
					r.ReadAt(buf, max(0, r.Size()-100))
				}
			}
		}
	})
}
