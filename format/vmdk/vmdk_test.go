package vmdk

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vdisk-project/vdisk/disk"
	"github.com/vdisk-project/vdisk/disk/disktest"
	"github.com/vdisk-project/vdisk/internal/testenv"
)

var ctx = context.Background()

var creatable = []Subformat{MonolithicSparse, MonolithicFlat, TwoGbMaxExtentSparse, TwoGbMaxExtentFlat, VMFS, VMFSThin, SESparse}

// create makes a disk in a temporary directory and registers a cleanup that
// checks it with Check and, when available, qemu-img check.
func create(t *testing.T, sf Subformat, size int64, o *CreateOptions) (*Disk, string) {
	t.Helper()
	if o == nil {
		o = &CreateOptions{}
	}
	o.Subformat = sf
	if sf == TwoGbMaxExtentSparse || sf == TwoGbMaxExtentFlat {
		o.SplitSize = 3 << 20 // several extents even for small disks
	}
	path := filepath.Join(t.TempDir(), "d.vmdk")
	d, err := Create(ctx, path, size, o)
	if err != nil {
		t.Fatalf("Create(%s, %d): %v", sf, size, err)
	}
	t.Cleanup(func() { checkImage(t, path) })
	return d, path
}

func checkImage(t *testing.T, path string) {
	t.Helper()
	r, err := Check(ctx, path, nil)
	if err != nil {
		t.Errorf("Check(%s): %v", path, err)
	} else if r.Errors > 0 {
		t.Errorf("Check(%s) found %d errors: %+v", path, r.Errors, r.Problems)
	}
	if _, err := exec.LookPath("qemu-img"); err == nil || testenv.Required("qemu-img") {
		// Parallel subtests fork qemu-img while other subtests hold their
		// images open: until the child execs, it holds duplicates of those
		// descriptors and so their OFD locks. A lock conflict is retried.
		for i := 0; ; i++ {
			out, err := exec.Command(testenv.Tool(t, "qemu-img"), "check", "-f", "vmdk", path).CombinedOutput()
			if err == nil {
				break
			}
			if !strings.Contains(string(out), "Failed to get") || i == 20 {
				t.Fatalf("qemu-img check -f vmdk %s: %v\n%s", path, err, out)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

// reopen closes d and opens the same disk again, for the conformance
// suite's persistence test.
func reopen(t *testing.T, d disk.Disk) disk.Disk {
	t.Helper()
	path := d.(*Disk).links[0].path
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	d2, err := Open(ctx, path, nil)
	if err != nil {
		t.Fatal(err)
	}
	return d2
}

func TestConformance(t *testing.T) {
	for _, sf := range creatable {
		t.Run(string(sf), func(t *testing.T) {
			disktest.RunTests(t, disktest.Harness{
				New: func(t *testing.T, size int64) disk.Disk {
					d, _ := create(t, sf, size, nil)
					return d
				},
				Reopen: reopen,
			})
		})
	}
}

func TestChildConformance(t *testing.T) {
	disktest.RunTests(t, disktest.Harness{
		New: func(t *testing.T, size int64) disk.Disk {
			base, bpath := create(t, MonolithicSparse, size, nil)
			if err := base.Close(); err != nil {
				t.Fatal(err)
			}
			cpath := filepath.Join(filepath.Dir(bpath), "child.vmdk")
			d, err := Create(ctx, cpath, 0, &CreateOptions{Parent: bpath})
			if err != nil {
				t.Fatal(err)
			}
			return d
		},
	})
}

func writeRandom(t *testing.T, d disk.Disk, model []byte, seed uint64, n int) {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, seed))
	for range n {
		off := rng.Int64N(int64(len(model)))
		l := min(rng.Int64N(300<<10)+1, int64(len(model))-off)
		p := make([]byte, l)
		for i := range p {
			p[i] = byte(rng.Uint32())
		}
		if _, err := d.WriteAt(p, off); err != nil {
			t.Fatalf("WriteAt(%d, %d): %v", off, l, err)
		}
		copy(model[off:], p)
	}
}

func readAll(t *testing.T, path, format string) []byte {
	t.Helper()
	out := filepath.Join(t.TempDir(), "out.raw")
	testenv.Run(t, "qemu-img", "convert", "-f", format, "-O", "raw", path, out)
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestQemuReadsOurs: every subformat vdisk creates and writes passes
// qemu-img check (in the cleanup), reads back identically through qemu,
// and qemu-img info reports the right create type and size.
func TestQemuReadsOurs(t *testing.T) {
	testenv.Tool(t, "qemu-img")
	const size = 10<<20 + 512*3
	for _, sf := range creatable {
		t.Run(string(sf), func(t *testing.T) {
			d, path := create(t, sf, size, &CreateOptions{Adapter: "lsilogic", HWVersion: 10})
			model := make([]byte, d.Size())
			writeRandom(t, d, model, 1, 40)
			if err := d.Close(); err != nil {
				t.Fatal(err)
			}
			if got := readAll(t, path, "vmdk"); !bytes.Equal(got, model) {
				t.Fatalf("qemu reads different content")
			}
			var info struct {
				Format      string `json:"format"`
				VirtualSize int64  `json:"virtual-size"`
				Specific    struct {
					Data struct {
						CreateType string `json:"create-type"`
					} `json:"data"`
				} `json:"format-specific"`
			}
			if err := json.Unmarshal([]byte(testenv.Run(t, "qemu-img", "info", "--output=json", path)), &info); err != nil {
				t.Fatal(err)
			}
			want := string(sf)
			if sf == VMFSThin {
				want = "vmfs"
			}
			if info.Format != "vmdk" || info.VirtualSize != d.Size() || info.Specific.Data.CreateType != want {
				t.Errorf("qemu-img info = %+v; want vmdk, %d, %s", info, d.Size(), want)
			}
		})
	}
}

// TestWeReadQemus: every subformat qemu-img creates, written by qemu-io,
// reads identically through vdisk.
func TestWeReadQemus(t *testing.T) {
	testenv.Tool(t, "qemu-img")
	testenv.Tool(t, "qemu-io")
	subs := []string{"monolithicSparse", "monolithicFlat", "twoGbMaxExtentSparse", "twoGbMaxExtentFlat", "streamOptimized"}
	for _, sub := range subs {
		for _, opt := range []string{"", ",zeroed_grain=on", ",adapter_type=lsilogic"} {
			if opt == ",zeroed_grain=on" && (strings.Contains(sub, "Flat") || sub == "streamOptimized") {
				continue
			}
			t.Run(sub+opt, func(t *testing.T) {
				dir := t.TempDir()
				raw := filepath.Join(dir, "src.raw")
				writePattern(t, raw, 9<<20+4096)
				path := filepath.Join(dir, "q.vmdk")
				testenv.Run(t, "qemu-img", "convert", "-f", "raw", "-O", "vmdk", "-o", "subformat="+sub+opt, raw, path)
				if sub != "streamOptimized" {
					testenv.Run(t, "qemu-io", "-f", "vmdk", "-c", "write -z 1M 128k", "-c", "write -P 0x5a 3M 4k", path)
				}
				want := readAll(t, path, "vmdk")
				d, err := Open(ctx, path, &OpenOptions{ReadOnly: true})
				if err != nil {
					t.Fatalf("Open: %v", err)
				}
				defer d.Close()
				got := make([]byte, d.Size())
				if _, err := d.ReadAt(got, 0); err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, want) {
					t.Fatalf("vdisk reads different content than qemu")
				}
				disktest.CheckExtents(t, d)
			})
		}
	}
}

// writePattern writes a sparse raw file with scattered data.
func writePattern(t *testing.T, path string, size int64) []byte {
	t.Helper()
	b := make([]byte, size)
	rng := rand.New(rand.NewPCG(7, 7))
	for range 30 {
		off := rng.Int64N(size)
		n := min(rng.Int64N(200<<10), size-off)
		for i := off; i < off+n; i++ {
			b[i] = byte(rng.Uint32() | 1)
		}
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return b
}

func isLong() bool { return os.Getenv("VDISK_TEST_LONG") == "1" }

// BenchmarkExtents2TiB maps a new 2 TiB thin disk in-process: the split
// sparse layout (1025 extent files, 65536 grain tables) and vmfsThin.
func BenchmarkExtents2TiB(b *testing.B) {
	for _, sf := range []Subformat{TwoGbMaxExtentSparse, VMFSThin} {
		b.Run(string(sf), func(b *testing.B) {
			path := filepath.Join(b.TempDir(), "t.vmdk")
			d, err := Create(ctx, path, 2<<40, &CreateOptions{Subformat: sf})
			if err != nil {
				b.Fatal(err)
			}
			if _, err := d.WriteAt([]byte{1}, 1<<40); err != nil {
				b.Fatal(err)
			}
			d.Close()
			d, err = Open(ctx, path, &OpenOptions{ReadOnly: true})
			if err != nil {
				b.Fatal(err)
			}
			defer d.Close()
			b.ReportAllocs()
			for b.Loop() {
				n := 0
				if err := d.Extents(ctx, 0, d.Size(), func(disk.Extent) error { n++; return nil }); err != nil {
					b.Fatal(err)
				}
				if n < 3 {
					b.Fatalf("%d extents", n)
				}
			}
		})
	}
}

// BenchmarkSparseRead reads a monolithicSparse disk sequentially in 1 MiB
// requests.
func BenchmarkSparseRead(b *testing.B) {
	d, err := Create(ctx, filepath.Join(b.TempDir(), "r.vmdk"), 64<<20, nil)
	if err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, 1<<20)
	for i := range buf {
		buf[i] = byte(i | 1)
	}
	for off := int64(0); off < d.Size(); off += 1 << 20 {
		d.WriteAt(buf, off)
	}
	b.SetBytes(1 << 20)
	b.ReportAllocs()
	var off int64
	for b.Loop() {
		if _, err := d.ReadAt(buf, off); err != nil {
			b.Fatal(err)
		}
		off = (off + 1<<20) % d.Size()
	}
	d.Close()
}

// BenchmarkSparseWrite allocates grains in a new monolithicSparse disk.
func BenchmarkSparseWrite(b *testing.B) {
	buf := make([]byte, 1<<20)
	for i := range buf {
		buf[i] = byte(i | 1)
	}
	b.SetBytes(1 << 20)
	b.ReportAllocs()
	path := filepath.Join(b.TempDir(), "w.vmdk")
	d, err := Create(ctx, path, 1<<40, nil)
	if err != nil {
		b.Fatal(err)
	}
	var off int64
	for b.Loop() {
		if _, err := d.WriteAt(buf, off); err != nil {
			b.Fatal(err)
		}
		off += 1 << 20
	}
	d.Close()
}

// TestChainsInterop: a chain made by qemu-img is read by vdisk, and a chain
// made by vdisk is read by qemu, both bit for bit.
func TestChainsInterop(t *testing.T) {
	testenv.Tool(t, "qemu-img")
	testenv.Tool(t, "qemu-io")
	dir := t.TempDir()
	// qemu makes the chain; vdisk reads it.
	qbase := filepath.Join(dir, "qbase.vmdk")
	qchild := filepath.Join(dir, "qchild.vmdk")
	testenv.Run(t, "qemu-img", "create", "-f", "vmdk", qbase, "8M")
	testenv.Run(t, "qemu-io", "-f", "vmdk", "-c", "write -P 0x11 0 3M", qbase)
	testenv.Run(t, "qemu-img", "create", "-f", "vmdk", "-b", "qbase.vmdk", "-F", "vmdk", qchild)
	testenv.Run(t, "qemu-io", "-f", "vmdk", "-c", "write -P 0x22 1M 64k", "-c", "write -P 0x33 5M 1k", qchild)
	want := readAll(t, qchild, "vmdk")
	d, err := Open(ctx, qchild, &OpenOptions{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	got := make([]byte, d.Size())
	if _, err := d.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	if d.Info().Links != 2 || !bytes.Equal(got, want) {
		t.Fatalf("vdisk reads qemu's chain differently (links %d)", d.Info().Links)
	}
	d.Close()
	// vdisk makes the chain (on qemu's base); qemu reads it.
	vchild := filepath.Join(dir, "vchild.vmdk")
	c, err := Create(ctx, vchild, 0, &CreateOptions{Parent: qbase})
	if err != nil {
		t.Fatal(err)
	}
	model := readAll(t, qbase, "vmdk")
	writeRandom(t, c, model, 11, 20)
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, vchild, "vmdk"); !bytes.Equal(got, model) {
		t.Fatal("qemu reads vdisk's child differently")
	}
	testenv.Run(t, "qemu-img", "check", vchild)
	// A parent modified behind the child's back is detected.
	testenv.Run(t, "qemu-io", "-f", "vmdk", "-c", "write -P 0x44 7M 4k", qbase)
	if _, err := Open(ctx, vchild, &OpenOptions{ReadOnly: true}); !errors.Is(err, disk.ErrCorrupt) {
		t.Errorf("open with a changed parent = %v, want ErrCorrupt", err)
	}
	if d, err := Open(ctx, vchild, &OpenOptions{ReadOnly: true, IgnoreCID: true}); err != nil {
		t.Errorf("open with IgnoreCID: %v", err)
	} else {
		d.Close()
	}
	// Writing the parent of a child is refused.
	if _, err := Open(ctx, qbase, nil); !errors.Is(err, disk.ErrPermission) {
		t.Errorf("opening a parent for writing = %v, want ErrPermission", err)
	}
}

// TestGrow grows every growable subformat, across the sparse grain
// directory's end, and checks the result with vdisk and qemu-img.
func TestGrow(t *testing.T) {
	for _, sf := range []Subformat{MonolithicSparse, TwoGbMaxExtentSparse, MonolithicFlat, TwoGbMaxExtentFlat, VMFSThin} {
		t.Run(string(sf), func(t *testing.T) {
			d, path := create(t, sf, 5<<20, &CreateOptions{ZeroedGrain: sf == MonolithicSparse})
			model := make([]byte, 5<<20)
			writeRandom(t, d, model, 21, 10)
			if err := d.Resize(ctx, 70<<20+512); err != nil {
				t.Fatalf("Resize: %v", err)
			}
			model = append(model, make([]byte, 65<<20+512)...)
			writeRandom(t, d, model, 22, 20)
			if err := d.Close(); err != nil {
				t.Fatal(err)
			}
			d, err := Open(ctx, path, &OpenOptions{ReadOnly: true})
			if err != nil {
				t.Fatal(err)
			}
			got := make([]byte, d.Size())
			if _, err := d.ReadAt(got, 0); err != nil {
				t.Fatal(err)
			}
			d.Close()
			if !bytes.Equal(got, model) {
				t.Fatal("grown disk reads differently")
			}
			if _, err := exec.LookPath("qemu-img"); err == nil || testenv.Required("qemu-img") {
				if q := readAll(t, path, "vmdk"); !bytes.Equal(q, model) {
					t.Fatal("qemu reads the grown disk differently")
				}
			}
		})
	}
}

// TestUnbuffered opens disks with O_DIRECT: aligned I/O works and reads
// back, misaligned buffers get ErrInvalid.
func TestUnbuffered(t *testing.T) {
	for _, sf := range []Subformat{MonolithicSparse, MonolithicFlat} {
		t.Run(string(sf), func(t *testing.T) {
			d, path := create(t, sf, 4<<20, nil)
			d.Close()
			d, err := Open(ctx, path, &OpenOptions{Unbuffered: true})
			if err != nil {
				t.Skipf("O_DIRECT not available here: %v", err)
			}
			buf := disk.AlignedBytes(64 << 10)
			for i := range buf {
				buf[i] = byte(i%253 + 1)
			}
			if _, err := d.WriteAt(buf[:4096], 1<<20+512); err != nil {
				t.Fatalf("aligned partial-grain write: %v", err)
			}
			if _, err := d.WriteAt(buf, 2<<20); err != nil {
				t.Fatalf("aligned grain write: %v", err)
			}
			got := disk.AlignedBytes(64 << 10)
			if _, err := d.ReadAt(got, 2<<20); err != nil || !bytes.Equal(got, buf) {
				t.Fatalf("read back = %v", err)
			}
			if _, err := d.ReadAt(got[1:513], 0); !errors.Is(err, disk.ErrInvalid) {
				t.Errorf("misaligned buffer = %v, want ErrInvalid", err)
			}
			if _, err := d.WriteAt(got[:100], 0); !errors.Is(err, disk.ErrInvalid) {
				t.Errorf("misaligned length = %v, want ErrInvalid", err)
			}
			if err := d.Close(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestGrowSplitAddsExtents: a split disk grows by whole extents of its
// split size, named like the existing ones.
func TestGrowSplitAddsExtents(t *testing.T) {
	for _, sf := range []Subformat{TwoGbMaxExtentSparse, TwoGbMaxExtentFlat} {
		d, path := create(t, sf, 4<<20, nil) // 3 MiB split: extents of 3 and 1 MiB
		if err := d.Resize(ctx, 11<<20); err != nil {
			t.Fatal(err)
		}
		in := d.Info()
		var sizes []int64
		for _, f := range in.Files {
			if f.Kind != "descriptor" {
				sizes = append(sizes, f.Size>>20)
			}
		}
		if fmt.Sprint(sizes) != "[3 3 3 2]" {
			t.Errorf("%s extents after growing = %v MiB, want [3 3 3 2]", sf, sizes)
		}
		d.Close()
		if _, err := os.Stat(strings.TrimSuffix(path, ".vmdk") + map[Subformat]string{TwoGbMaxExtentSparse: "-s004.vmdk", TwoGbMaxExtentFlat: "-f004.vmdk"}[sf]); err != nil {
			t.Errorf("fourth extent file: %v", err)
		}
	}
}

// TestCompact writes data, zeroes part of it, compacts, and checks that the
// files shrank, the content is unchanged and both checkers agree.
func TestCompact(t *testing.T) {
	for _, sf := range []Subformat{MonolithicSparse, TwoGbMaxExtentSparse} {
		t.Run(string(sf), func(t *testing.T) {
			d, path := create(t, sf, 8<<20, nil)
			model := make([]byte, d.Size())
			writeRandom(t, d, model, 41, 30)
			zeros := make([]byte, 2<<20)
			d.WriteAt(zeros, 1<<20)
			copy(model[1<<20:], zeros)
			cid := d.Info().CID
			d.Close()
			st, err := Compact(ctx, path, nil)
			if err != nil {
				t.Fatal(err)
			}
			if st.BytesAfter >= st.BytesBefore || st.Grains == 0 {
				t.Errorf("compact did not shrink: %+v", st)
			}
			d, err = Open(ctx, path, &OpenOptions{ReadOnly: true})
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			got := make([]byte, d.Size())
			d.ReadAt(got, 0)
			if !bytes.Equal(got, model) || d.Info().CID != cid {
				t.Error("compact changed the content or the CID")
			}
		})
	}
}

// TestGrainTableBudget: the tables cached by all extents of a disk stay
// within the disk's budget however many extents and tables it has.
func TestGrainTableBudget(t *testing.T) {
	d, path := create(t, TwoGbMaxExtentSparse, 200<<20, &CreateOptions{SplitSize: 8 << 20})
	buf := bytes.Repeat([]byte{1}, 4096)
	for off := int64(0); off < d.Size(); off += 1 << 20 { // data in every grain table
		if _, err := d.WriteAt(buf, off); err != nil {
			t.Fatal(err)
		}
	}
	d.Close()
	d, err := Open(ctx, path, &OpenOptions{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	d.budget.max = 32 * 2048 // 32 tables
	got := make([]byte, 4096)
	peak := int64(0)
	for off := int64(0); off < d.Size(); off += 1 << 20 {
		if _, err := d.ReadAt(got, off); err != nil || got[0] != 1 {
			t.Fatalf("read at %d: %v", off, err)
		}
		d.budget.mu.Lock()
		peak = max(peak, d.budget.held)
		d.budget.mu.Unlock()
	}
	if peak > d.budget.max+64*2048 {
		t.Errorf("cached tables peaked at %d bytes with a budget of %d", peak, d.budget.max)
	}
}
