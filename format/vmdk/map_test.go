package vmdk

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/vdisk-project/vdisk/disk"
)

// closeDisk closes d before the image checks that create registered.
func closeDisk(t *testing.T, d *Disk) {
	t.Helper()
	if err := d.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
}

// mappings collects d.Map over the whole disk and checks that the runs
// tile it in order.
func mappings(t *testing.T, d *Disk) []Mapping {
	t.Helper()
	return mappingsIn(t, d, 0, d.Size())
}

// mappingsIn collects d.Map over [off, off+n) and checks that the runs tile
// it in order.
func mappingsIn(t *testing.T, d *Disk, off, n int64) []Mapping {
	t.Helper()
	var out []Mapping
	next := off
	if err := d.Map(ctx, off, n, func(m Mapping) error {
		if m.Off != next || m.Len <= 0 {
			t.Fatalf("Map: run %+v after %d: want a run starting there", m, next)
		}
		next = m.Off + m.Len
		out = append(out, m)
		return nil
	}); err != nil {
		t.Fatalf("Map: %v", err)
	}
	if next != off+n {
		t.Fatalf("Map(%d, %d) ended at %d", off, n, next)
	}
	return out
}

// TestMapOffsets checks that every run Map places in a file holds there
// exactly the bytes the disk reads, and that the other runs read as zeros.
func TestMapOffsets(t *testing.T) {
	for _, sf := range creatable {
		t.Run(string(sf), func(t *testing.T) {
			t.Parallel()
			const size = 8 << 20
			d, _ := create(t, sf, size, nil)
			defer closeDisk(t, d)
			model := make([]byte, size)
			writeRandom(t, d, model, 7, 40)
			if err := d.WriteZeroes(5<<20, 1<<20, 0); err != nil {
				t.Fatal(err)
			}
			clear(model[5<<20 : 6<<20])
			if err := d.Flush(); err != nil {
				t.Fatal(err)
			}
			files := map[string][]byte{}
			// The whole disk, and a window that starts and ends inside grains.
			runs := append(mappings(t, d), mappingsIn(t, d, 1<<20+12345, 3<<20+999)...)
			for _, m := range runs {
				want := model[m.Off : m.Off+m.Len]
				switch {
				case m.FileOff >= 0:
					if m.File == "" || m.Link != 0 || m.Flags&disk.Hole != 0 {
						t.Fatalf("run %+v: a run stored in a file must name it, in link 0, not a hole", m)
					}
					b, ok := files[m.File]
					if !ok {
						var err error
						if b, err = os.ReadFile(m.File); err != nil {
							t.Fatal(err)
						}
						files[m.File] = b
					}
					got := make([]byte, m.Len)
					if m.FileOff < int64(len(b)) {
						copy(got, b[m.FileOff:])
					}
					if !bytes.Equal(got, want) {
						t.Fatalf("run %+v: the bytes at %s@%d differ from the disk's", m, m.File, m.FileOff)
					}
					if m.Flags&disk.Zero != 0 && !disk.IsZero(got) {
						t.Fatalf("run %+v is Zero but its bytes are not", m)
					}
				case m.Flags&disk.Zero != 0:
					if !disk.IsZero(want) {
						t.Fatalf("run %+v reads as zeros, but the disk holds data there", m)
					}
				default:
					t.Fatalf("run %+v: data with no place in a file, in an uncompressed disk", m)
				}
			}
		})
	}
}

// TestMapGrainOrder checks that grains adjacent on the virtual disk but not
// in the file are reported as separate runs, and adjacent ones as one.
func TestMapGrainOrder(t *testing.T) {
	t.Parallel()
	d, _ := create(t, MonolithicSparse, 1<<20, nil)
	defer closeDisk(t, d)
	g := make([]byte, 64<<10)
	for i := range g {
		g[i] = 1
	}
	for _, off := range []int64{128 << 10, 64 << 10, 192 << 10, 256 << 10} {
		if _, err := d.WriteAt(g, off); err != nil {
			t.Fatal(err)
		}
	}
	var data []Mapping
	for _, m := range mappings(t, d) {
		if m.FileOff >= 0 {
			data = append(data, m)
		}
	}
	// Grains were written in the order 2, 1, 3, 4: grain 1 sits before
	// grain 2 on the disk but after it in the file; 2, 3 and 4 are not
	// contiguous in the file (1 lies between 2 and 3).
	if len(data) != 3 || data[0].Off != 64<<10 || data[1].Off != 128<<10 || data[2].Off != 192<<10 || data[2].Len != 128<<10 {
		t.Fatalf("data runs %+v: want 64K@64K, 64K@128K, 128K@192K", data)
	}
	if data[1].FileOff+data[1].Len != data[0].FileOff || data[0].FileOff+data[0].Len != data[2].FileOff {
		t.Fatalf("data runs %+v: want grain 2, 1, then 3 and 4 one after another in the file", data)
	}
}

// TestMapChain checks the link and file of runs in a delta, and Chain.
func TestMapChain(t *testing.T) {
	t.Parallel()
	base, bpath := create(t, MonolithicSparse, 1<<20, nil)
	p := bytes.Repeat([]byte{7}, 128<<10)
	if _, err := base.WriteAt(p, 0); err != nil {
		t.Fatal(err)
	}
	if err := base.Close(); err != nil {
		t.Fatal(err)
	}
	cpath := filepath.Join(filepath.Dir(bpath), "child.vmdk")
	d, err := Create(ctx, cpath, 0, &CreateOptions{Parent: bpath})
	if err != nil {
		t.Fatal(err)
	}
	defer closeDisk(t, d)
	if _, err := d.WriteAt(p[:64<<10], 64<<10); err != nil {
		t.Fatal(err)
	}
	got := mappings(t, d)
	type run struct {
		off, n int64
		link   int
		file   string
		hole   bool
	}
	var runs []run
	for _, m := range got {
		runs = append(runs, run{m.Off, m.Len, m.Link, m.File, m.Flags&disk.Hole != 0})
	}
	want := []run{
		{0, 64 << 10, 1, bpath, false},
		{64 << 10, 64 << 10, 0, cpath, false},
		{128 << 10, 896 << 10, 1, "", true},
	}
	if len(runs) != len(want) {
		t.Fatalf("Map of a delta: got %+v, want %+v", runs, want)
	}
	for i := range want {
		if runs[i] != want[i] {
			t.Fatalf("Map of a delta, run %d: got %+v, want %+v", i, runs[i], want[i])
		}
	}
	ch := d.Chain()
	if len(ch) != 2 || ch[0].Path != cpath || ch[1].Path != bpath || ch[0].ParentHint != "d.vmdk" ||
		ch[0].ParentCID != ch[1].CID || ch[1].ParentCID != 0xffffffff || !ch[0].SelfContained {
		t.Fatalf("Chain: %+v", ch)
	}
	if e := ch[0].Extents; len(e) != 1 || e[0].Path != cpath || e[0].GrainSize != 64<<10 || e[0].Size != 1<<20 {
		t.Fatalf("Chain: leaf extents %+v", e)
	}
}

// TestChainCreateType checks that Chain reports the descriptor's createType
// and grain sizes as stored.
func TestChainCreateType(t *testing.T) {
	for _, tc := range []struct {
		sf         Subformat
		createType string
		grain      int64
		self       bool
	}{
		{MonolithicSparse, "monolithicSparse", 64 << 10, true},
		{MonolithicFlat, "monolithicFlat", 0, false},
		{TwoGbMaxExtentSparse, "twoGbMaxExtentSparse", 64 << 10, false},
		{TwoGbMaxExtentFlat, "twoGbMaxExtentFlat", 0, false},
		{VMFS, "vmfs", 0, false},
		{VMFSThin, "vmfs", 0, false},
	} {
		t.Run(string(tc.sf), func(t *testing.T) {
			t.Parallel()
			d, path := create(t, tc.sf, 8<<20, nil)
			defer closeDisk(t, d)
			ch := d.Chain()
			if len(ch) != 1 || ch[0].CreateType != tc.createType || ch[0].SelfContained != tc.self || ch[0].Path != path {
				t.Fatalf("Chain: %+v, want createType %s, self-contained %v", ch, tc.createType, tc.self)
			}
			var total int64
			for _, e := range ch[0].Extents {
				if e.GrainSize != tc.grain || e.Offset != total || e.Path == "" {
					t.Fatalf("extent %+v: want grain %d at %d with a file", e, tc.grain, total)
				}
				total += e.Size
			}
			if total != 8<<20 {
				t.Fatalf("extents cover %d bytes, want %d", total, 8<<20)
			}
		})
	}
}
