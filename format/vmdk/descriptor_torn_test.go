package vmdk

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vdisk-project/vdisk/disk"
)

// TestDescriptorJunkInDDB: an unparsable line in the disk database (what
// a torn write leaves) is skipped and dropped on the next write; the same
// line in the header is still corruption.
func TestDescriptorJunkInDDB(t *testing.T) {
	text := "# Disk DescriptorFile\nversion=1\nCID=12345678\nparentCID=ffffffff\ncreateType=\"monolithicSparse\"\n\n" +
		"RW 8192 SPARSE \"x.vmdk\"\n\n# The Disk Data Base\n#DDB\n\nddb.virtualHWVersion = \"4\"\nddb.geomet\xff\xfe torn\nddb.adapterType = \"lsilogic\"\n"
	d, err := parseDescriptor([]byte(text))
	if err != nil {
		t.Fatalf("a torn disk database line: %v", err)
	}
	if v, _ := d.lookup("ddb.adapterType"); v != "lsilogic" {
		t.Errorf("the key after the torn line reads %q", v)
	}
	if d.junk != 1 || bytes.Contains(d.bytes(), []byte("torn")) {
		t.Errorf("junk %d; rewritten:\n%s", d.junk, d.bytes())
	}
	bad := strings.Replace(text, "createType=\"monolithicSparse\"\n", "createType=\"monolithicSparse\"\ngarbage here\n", 1)
	if _, err := parseDescriptor([]byte(bad)); disk.CodeOf(err) != disk.ErrCorrupt {
		t.Errorf("an unparsable header line: got %v, want ErrCorrupt", err)
	}
}

// TestMetadataWriteTorn writes a metadata key whose new value moves the
// disk database of an embedded descriptor across sectors, then opens
// every image a crash could leave: any subset of the changed sectors
// written. Each opens and reads its data; a key before the change keeps
// its value, and a line cut where sectors of the two versions meet is
// skipped rather than read as a value.
func TestMetadataWriteTorn(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "d.vmdk")
	d, err := Create(ctx, path, 32<<20, &CreateOptions{Subformat: MonolithicSparse, Adapter: "lsilogic"})
	if err != nil {
		t.Fatal(err)
	}
	data := bytes.Repeat([]byte{0x5c}, 65536)
	if _, err := d.WriteAt(data, 1<<20); err != nil {
		t.Fatal(err)
	}
	if err := d.SetMetadata("vdisk.a", "first"); err != nil {
		t.Fatal(err)
	}
	if err := d.SetMetadata("vdisk.z", "last"); err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	before, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	d, err = Open(ctx, path, nil)
	if err != nil {
		t.Fatal(err)
	}
	long := strings.Repeat("v", 900)
	if err := d.SetMetadata("vdisk.a", long); err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	after, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	off := int64(binary.LittleEndian.Uint64(before[28:])) * disk.SectorSize
	size := int64(binary.LittleEndian.Uint64(before[36:])) * disk.SectorSize
	var changed []int64
	for s := off; s < off+size; s += disk.SectorSize {
		if !bytes.Equal(before[s:s+disk.SectorSize], after[s:s+disk.SectorSize]) {
			changed = append(changed, s)
		}
	}
	if len(changed) < 2 || len(changed) > 12 {
		t.Fatalf("%d descriptor sectors changed; the test wants a change across sectors", len(changed))
	}
	for subset := 0; subset < 1<<len(changed); subset++ {
		img := bytes.Clone(before)
		for i, s := range changed {
			if subset&(1<<i) != 0 {
				copy(img[s:s+disk.SectorSize], after[s:s+disk.SectorSize])
			}
		}
		// The rest of the file (grain tables, data) is the same before
		// and after a metadata write.
		p := filepath.Join(dir, "torn.vmdk")
		if err := os.WriteFile(p, img, 0o644); err != nil {
			t.Fatal(err)
		}
		v, err := Open(ctx, p, &OpenOptions{ReadOnly: true})
		if err != nil {
			t.Fatalf("sectors %b written: the image does not open: %v", subset, err)
		}
		got := make([]byte, len(data))
		if _, err := v.ReadAt(got, 1<<20); err != nil || !bytes.Equal(got, data) {
			t.Errorf("sectors %b written: the data reads differently (%v)", subset, err)
		}
		// vdisk.a and the keys after it may read old, new, spliced where
		// a sector of one meets a sector of the other, or not at all:
		// the image opens and its data and other keys are intact.
		if a, err := v.Metadata("vdisk.a"); err == nil && strings.HasPrefix(a, "\"") {
			t.Errorf("sectors %b written: vdisk.a reads a cut quoted value %q", subset, clip(a))
		}
		if ad, _ := v.Metadata("adapterType"); ad != "lsilogic" {
			t.Errorf("sectors %b written: adapterType reads %q", subset, ad)
		}
		v.Close()
	}
}

// TestCheckTornDescriptor: Check reports a torn disk-database line as a
// warning (the image is usable), and repair writes the descriptor again
// without it, embedded in a sparse extent and as a file of its own.
func TestCheckTornDescriptor(t *testing.T) {
	for _, sub := range []Subformat{MonolithicSparse, MonolithicFlat} {
		t.Run(string(sub), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "d.vmdk")
			d, err := Create(ctx, path, 8<<20, &CreateOptions{Subformat: sub})
			if err != nil {
				t.Fatal(err)
			}
			if err := d.Close(); err != nil {
				t.Fatal(err)
			}
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			torn := []byte("ddb.toolsVer\xfe\xff")
			area := b // a descriptor file is all descriptor
			if sub == MonolithicSparse {
				off := int64(binary.LittleEndian.Uint64(b[28:])) * disk.SectorSize
				size := int64(binary.LittleEndian.Uint64(b[36:])) * disk.SectorSize
				area = b[off : off+size]
			}
			text := bytes.TrimRight(area, "\x00")
			at := bytes.Index(text, []byte("ddb."))
			if at < 0 {
				t.Fatal("no disk database")
			}
			nl := at + bytes.IndexByte(text[at:], '\n') + 1
			newText := append(append(append([]byte(nil), text[:nl]...), append(torn, '\n')...), text[nl:]...)
			if sub == MonolithicSparse {
				copy(area, newText) // the area keeps its size; padding follows
			} else {
				b = newText
			}
			if err := os.WriteFile(path, b, 0o644); err != nil {
				t.Fatal(err)
			}
			r, err := Check(ctx, path, nil)
			if err != nil {
				t.Fatal(err)
			}
			if !r.Clean() || len(r.Problems) != 1 || r.Problems[0].Severity != "warning" {
				t.Fatalf("check of a torn line: %+v", r)
			}
			r, err = Check(ctx, path, &CheckOptions{Repair: RepairAll})
			if err != nil || r.Repaired != 1 {
				t.Fatalf("repair: %+v, %v", r, err)
			}
			if after, _ := os.ReadFile(path); bytes.Contains(after, torn) {
				t.Error("the torn line is still there after repair")
			}
			if r, err := Check(ctx, path, nil); err != nil || len(r.Problems) != 0 {
				t.Errorf("check after repair: %+v, %v", r, err)
			}
			v, err := Open(ctx, path, nil)
			if err != nil {
				t.Fatal(err)
			}
			v.Close()
		})
	}
}
