package vmdk

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"

	"github.com/vdisk-project/vdisk/disk"
	"github.com/vdisk-project/vdisk/disk/disktest"
	"github.com/vdisk-project/vdisk/internal/testenv"
)

// seModel is what an SEsparse link should read: the content, and which
// grains the link holds (the others show the parent).
type seModel struct {
	b      []byte
	parent []byte
	held   []bool
}

func newSEModel(parent []byte) *seModel {
	return &seModel{b: append([]byte(nil), parent...), parent: parent, held: make([]bool, divRoundUp(uint64(len(parent)), seGrainBytes))}
}

func (m *seModel) hold(off, n int64) {
	for g := off / seGrainBytes; g <= (off+n-1)/seGrainBytes; g++ {
		if !m.held[g] {
			// A partly written grain copies the rest from the parent.
			m.held[g] = true
		}
	}
}

// trim: whole grains the link holds read as zeros, others as before.
func (m *seModel) trim(off, n int64) {
	for g := (off + seGrainBytes - 1) / seGrainBytes; (g+1)*seGrainBytes <= off+n; g++ {
		if m.held[g] {
			clear(m.b[g*seGrainBytes : (g+1)*seGrainBytes])
		}
	}
}

// seOps writes, zeroes and trims d and m alike.
func seOps(t *testing.T, d *Disk, m *seModel, seed uint64, n int) {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, 5))
	size := int64(len(m.b))
	for i := range n {
		off := rng.Int64N(size)
		l := min(rng.Int64N(200<<10)+1, size-off)
		switch rng.IntN(5) {
		case 0:
			if err := d.WriteZeroes(off, l, 0); err != nil {
				t.Fatal(err)
			}
			m.hold(off, l)
			clear(m.b[off : off+l])
		case 1:
			if err := d.Trim(off, l); err != nil {
				t.Fatal(err)
			}
			m.trim(off, l)
		default:
			p := make([]byte, l)
			for j := range p {
				p[j] = byte(rng.Uint32())
			}
			if _, err := d.WriteAt(p, off); err != nil {
				t.Fatal(err)
			}
			m.hold(off, l)
			copy(m.b[off:], p)
		}
		if i%7 == 6 {
			if err := d.Flush(); err != nil {
				t.Fatal(err)
			}
		}
	}
}

func seReadDisk(t *testing.T, path string) []byte {
	t.Helper()
	d, err := Open(ctx, path, &OpenOptions{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	b := make([]byte, d.Size())
	if _, err := d.ReadAt(b, 0); err != nil {
		t.Fatal(err)
	}
	return b
}

// seQemuAgrees checks path with qemu-img check, compares it with the model
// through qemu-img compare and checks a pattern with qemu-io read -P.
func seQemuAgrees(t *testing.T, path string, model []byte, patOff int64, pat byte) {
	t.Helper()
	testenv.Run(t, "qemu-img", "check", "-f", "vmdk", path)
	raw := filepath.Join(t.TempDir(), "model.raw")
	if err := os.WriteFile(raw, model, 0o644); err != nil {
		t.Fatal(err)
	}
	testenv.Run(t, "qemu-img", "compare", "-f", "vmdk", "-F", "raw", path, raw)
	testenv.Run(t, "qemu-io", "-r", "-f", "vmdk", "-c", fmt.Sprintf("read -P %#x %d 64k", pat, patOff), path)
	if r, err := Check(ctx, path, nil); err != nil || r.Errors != 0 || r.Leaks != 0 {
		t.Fatalf("Check = %+v, %v", r, err)
	}
}

// TestSESparseChildOfQemuBase: an SEsparse delta vdisk creates on a base
// qemu-img made reads back, through vdisk and qemu, as the model says
// after writes, zeroes (whole and partial grains) and trims, and grains
// freed by trim or zero are reused rather than appended.
func TestSESparseChildOfQemuBase(t *testing.T) {
	testenv.Tool(t, "qemu-img")
	testenv.Tool(t, "qemu-io")
	dir := t.TempDir()
	const size = 24<<20 + 4096
	base := filepath.Join(dir, "base.vmdk")
	testenv.Run(t, "qemu-img", "create", "-f", "vmdk", base, strconv.Itoa(size))
	testenv.Run(t, "qemu-io", "-f", "vmdk", "-c", "write -P 0x11 0 8M", "-c", "write -P 0x22 16M 4M", base)
	pm := readAll(t, base, "vmdk")
	child := filepath.Join(dir, "child.vmdk")
	d, err := Create(ctx, child, 0, &CreateOptions{Subformat: SESparse, Parent: base})
	if err != nil {
		t.Fatal(err)
	}
	if ct := d.Info().CreateType; ct != SESparse {
		t.Fatalf("create type %q", ct)
	}
	m := newSEModel(pm)
	seOps(t, d, m, 1, 60)
	p := bytes.Repeat([]byte{0x5a}, 64<<10)
	if _, err := d.WriteAt(p, 5<<20+512); err != nil {
		t.Fatal(err)
	}
	m.hold(5<<20+512, 64<<10)
	copy(m.b[5<<20+512:], p)
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if got := seReadDisk(t, child); !bytes.Equal(got, m.b) {
		t.Fatal("vdisk reads the SEsparse child differently from the model")
	}
	seQemuAgrees(t, child, m.b, 5<<20+512, 0x5a)
	desc, _ := os.ReadFile(child)
	for _, want := range []string{`createType="seSparse"`, `parentFileNameHint="base.vmdk"`, `RW 49160 SESPARSE "child-sesparse.vmdk"`, `ddb.grain = "8"`} {
		if !bytes.Contains(desc, []byte(want)) {
			t.Errorf("descriptor lacks %s:\n%s", want, desc)
		}
	}

	// Trim everything the child holds, then write as much again: the
	// freed grains are reused and the grain section does not grow.
	before := seGrains(t, filepath.Join(dir, "child-sesparse.vmdk"))
	d, err = Open(ctx, child, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Trim(0, size); err != nil {
		t.Fatal(err)
	}
	m.trim(0, size)
	// Reopened, the grains come back from the free bitmap.
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if d, err = Open(ctx, child, nil); err != nil {
		t.Fatal(err)
	}
	q := bytes.Repeat([]byte{0x77}, 1<<20)
	for off := int64(0); off+int64(len(q)) <= int64(before)*seGrainBytes && off+int64(len(q)) <= size; off += int64(len(q)) {
		if _, err := d.WriteAt(q, off); err != nil {
			t.Fatal(err)
		}
		m.hold(off, int64(len(q)))
		copy(m.b[off:], q)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if after := seGrains(t, filepath.Join(dir, "child-sesparse.vmdk")); after != before {
		t.Errorf("grain section grew from %d to %d grains: freed grains were not reused", before, after)
	}
	if got := seReadDisk(t, child); !bytes.Equal(got, m.b) {
		t.Fatal("vdisk reads the reused SEsparse child differently from the model")
	}
	seQemuAgrees(t, child, m.b, 0, 0x77)
}

// seGrains returns the grain section's size in grains.
func seGrains(t *testing.T, path string) uint64 {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return binary.LittleEndian.Uint64(b[200:]) / seGrainSectors
}

// TestSESparseStandaloneGrow: a standalone SEsparse disk written, zeroed,
// trimmed, grown and written again past its old end reads as the model in
// vdisk and qemu.
func TestSESparseStandaloneGrow(t *testing.T) {
	testenv.Tool(t, "qemu-img")
	testenv.Tool(t, "qemu-io")
	path := filepath.Join(t.TempDir(), "s.vmdk")
	const size = 12 << 20
	d, err := Create(ctx, path, size, &CreateOptions{Subformat: SESparse})
	if err != nil {
		t.Fatal(err)
	}
	m := newSEModel(make([]byte, size))
	seOps(t, d, m, 2, 50)
	if err := d.Resize(ctx, 3*size+512); err != nil {
		t.Fatal(err)
	}
	m2 := newSEModel(make([]byte, 3*size+512))
	copy(m2.b, m.b)
	copy(m2.held, m.held)
	p := bytes.Repeat([]byte{0xa5}, 64<<10)
	if _, err := d.WriteAt(p, 3*size-(64<<10)); err != nil {
		t.Fatal(err)
	}
	m2.hold(3*size-(64<<10), 64<<10)
	copy(m2.b[3*size-(64<<10):], p)
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if got := seReadDisk(t, path); !bytes.Equal(got, m2.b) {
		t.Fatal("vdisk reads the grown SEsparse disk differently from the model")
	}
	seQemuAgrees(t, path, m2.b, 3*size-(64<<10), 0xa5)
	// Beyond the reserved sections growth adds an extent.
	d, err = Open(ctx, path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Resize(ctx, 1<<40); err != nil {
		t.Fatal(err)
	}
	if n := len(d.Chain()[0].Extents); n != 2 {
		t.Errorf("%d extents after growing past the reserve, want 2", n)
	}
	if _, err := d.WriteAt(p[:4096], 1<<40-4096); err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	testenv.Run(t, "qemu-img", "check", "-f", "vmdk", path)
	testenv.Run(t, "qemu-io", "-r", "-f", "vmdk", "-c", fmt.Sprintf("read -P 0xa5 %d 4k", int64(1<<40-4096)), path)
}

// TestSESparseSplit: with a file size limit an SEsparse disk is split into
// several extents whose files stay below it when every grain is written
// (and written again after a trim); qemu reads the split disk; growing it
// adds extents; subformats whose one file could outgrow the limit are
// refused with ErrNoSpace.
func TestSESparseSplit(t *testing.T) {
	testenv.Tool(t, "qemu-img")
	testenv.Tool(t, "qemu-io")
	dir := t.TempDir()
	path := filepath.Join(dir, "s.vmdk")
	const size, limit = 40 << 20, 17 << 20
	d, err := Create(ctx, path, size, &CreateOptions{Subformat: SESparse, MaxFileSize: limit})
	if err != nil {
		t.Fatal(err)
	}
	if n := len(d.Chain()[0].Extents); n != 3 {
		t.Fatalf("%d extents, want 3", n)
	}
	m := newSEModel(make([]byte, size))
	full := make([]byte, size)
	for i := range full {
		full[i] = byte(i/4096 + 1)
	}
	if _, err := d.WriteAt(full, 0); err != nil {
		t.Fatal(err)
	}
	m.hold(0, size)
	copy(m.b, full)
	seOps(t, d, m, 3, 80)
	if _, err := d.WriteAt(full, 0); err != nil { // rewrite all after trims
		t.Fatal(err)
	}
	copy(m.b, full)
	if err := d.Resize(ctx, size+20<<20); err != nil {
		t.Fatal(err)
	}
	m2 := newSEModel(make([]byte, size+20<<20))
	copy(m2.b, m.b)
	copy(m2.held, m.held)
	p := bytes.Repeat([]byte{0x3c}, 64<<10)
	if _, err := d.WriteAt(p, size+10<<20); err != nil {
		t.Fatal(err)
	}
	copy(m2.b[size+10<<20:], p)
	m2.hold(size+10<<20, 64<<10)
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if st, _ := e.Info(); st.Size() > limit {
			t.Errorf("%s holds %d bytes, more than the limit %d", e.Name(), st.Size(), limit)
		}
	}
	if got := seReadDisk(t, path); !bytes.Equal(got, m2.b) {
		t.Fatal("vdisk reads the split SEsparse disk differently from the model")
	}
	seQemuAgrees(t, path, m2.b, size+10<<20, 0x3c)
	// A lost descriptor is rebuilt from the split extents' files.
	os.Remove(path)
	if err := RebuildDescriptor(ctx, path, "", "", nil); err != nil {
		t.Fatal(err)
	}
	if got := seReadDisk(t, path); !bytes.Equal(got, m2.b) {
		t.Fatal("the rebuilt descriptor reads differently")
	}
	for _, sf := range []Subformat{MonolithicFlat, MonolithicSparse} {
		_, err := Create(ctx, filepath.Join(dir, "x-"+string(sf)+".vmdk"), size, &CreateOptions{Subformat: sf, MaxFileSize: limit})
		if disk.CodeOf(err) != disk.ErrNoSpace {
			t.Errorf("%s over the file limit: %v, want ErrNoSpace", sf, err)
		}
	}
}

// TestSESparseTableBudget: the grain tables the SEsparse extents of one
// open disk cache stay within one budget however many extents it has, and
// a walk of more tables than fit still reports every grain.
func TestSESparseTableBudget(t *testing.T) {
	const size = 32 << 30
	const cover = seGTEntries * seGrainBytes // 16 MiB: one table
	path := filepath.Join(t.TempDir(), "b.vmdk")
	d, err := Create(ctx, path, size, &CreateOptions{Subformat: SESparse, MaxFileSize: 8<<30 + 64<<20})
	if err != nil {
		t.Fatal(err)
	}
	if n := len(d.links[0].extents); n < 4 {
		t.Fatalf("%d extents, want 4 or more", n)
	}
	buf := bytes.Repeat([]byte{7}, seGrainBytes)
	const tables = size / cover // 2048, twice what one budget caches
	for i := range int64(tables) {
		if _, err := d.WriteAt(buf, i*cover+seGrainBytes); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	d, err = Open(ctx, path, &OpenOptions{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	var data int64
	if err := d.Extents(ctx, 0, size, func(e disk.Extent) error {
		if e.Flags.Data() {
			data += e.Len
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if data != tables*seGrainBytes {
		t.Errorf("walk found %d bytes of data, want %d", data, tables*seGrainBytes)
	}
	cached := 0
	for _, e := range d.links[0].extents {
		se := unwrapExtent(e).(*seSparseExtent)
		se.mu.Lock()
		cached += len(se.cache)
		se.mu.Unlock()
	}
	if cached > seGTCache {
		t.Errorf("%d grain tables cached, the budget is %d", cached, seGTCache)
	}
}

// TestSESparseLeakRepairCrash: a power cut at any point of a leak repair
// (Check with RepairLeaks, which the datastore runs after an unclean stop)
// leaves an image with no error and the same data, whose leaks a second
// repair reclaims.
func TestSESparseLeakRepairCrash(t *testing.T) {
	const size = 64 << 20
	fsys := disktest.NewCrashFS()
	path := "/img/d.vmdk"
	d, err := Create(ctx, path, size, &CreateOptions{Subformat: SESparse, FS: fsys})
	if err != nil {
		t.Fatal(err)
	}
	want := make([]byte, size)
	write := func(off int64, n int, v byte) {
		p := bytes.Repeat([]byte{v}, n)
		if _, err := d.WriteAt(p, off); err != nil {
			t.Fatal(err)
		}
		copy(want[off:], p)
	}
	for i := range 40 {
		write(int64(i)*(1<<20)+4096, 8192, byte(i+1))
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	ext := "/img/d-sesparse.vmdk"
	before := fsys.Bytes(ext)
	if before == nil {
		t.Fatalf("no %s in %v", ext, fsys.Names())
	}
	// Grains written and allocated, their tables lost: leaks.
	d, err = Open(ctx, path, &OpenOptions{FS: fsys})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 40 {
		if _, err := d.WriteAt(bytes.Repeat([]byte{0xee}, 4096), int64(i)*(1<<20)+(512<<10)); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	b := fsys.Bytes(ext)
	h, err := parseSEHeader(b, int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	f, err := fsys.OpenFile(ext, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	lo, hi := h.gdOff*disk.SectorSize, h.freeBitmapOff*disk.SectorSize
	if _, err := f.WriteAt(before[lo:hi], int64(lo)); err != nil {
		t.Fatal(err)
	}
	f.Sync()
	f.Close()
	rep, err := Check(ctx, path, &CheckOptions{FS: fsys})
	if err != nil || rep.Leaks == 0 || rep.Errors != 0 {
		t.Fatalf("setup: %v, %d leaks, %d errors", err, rep.Leaks, rep.Errors)
	}
	leaks := rep.Leaks
	rng := rand.New(rand.NewPCG(1, 2))
	for n := 1; ; n++ {
		img := fsys.Crash(rng)
		img.CrashAfter(n, rand.New(rand.NewPCG(uint64(n), 3)))
		if _, err := Check(ctx, path, &CheckOptions{FS: img, Repair: RepairLeaks}); err != nil {
			t.Fatal(err)
		}
		cut := img.Crashed()
		if cut == nil {
			if n == 1 {
				t.Fatal("the repair wrote nothing")
			}
			break // the repair finished in fewer operations
		}
		rep, err := Check(ctx, path, &CheckOptions{FS: cut})
		if err != nil || rep.Errors != 0 || rep.Leaks > leaks {
			t.Fatalf("cut after %d operations: %v, %d errors, %d leaks (had %d): %+v", n, err, rep.Errors, rep.Leaks, leaks, rep.Problems)
		}
		if _, err := Check(ctx, path, &CheckOptions{FS: cut, Repair: RepairLeaks}); err != nil {
			t.Fatal(err)
		}
		rep, err = Check(ctx, path, &CheckOptions{FS: cut})
		if err != nil || rep.Errors != 0 || rep.Leaks != 0 {
			t.Fatalf("repaired again after a cut at %d: %v, %d errors, %d leaks", n, err, rep.Errors, rep.Leaks)
		}
		v, err := Open(ctx, path, &OpenOptions{FS: cut, ReadOnly: true})
		if err != nil {
			t.Fatal(err)
		}
		got := make([]byte, size)
		if _, err := v.ReadAt(got, 0); err != nil {
			t.Fatal(err)
		}
		v.Close()
		if !bytes.Equal(got, want) {
			t.Fatalf("cut after %d operations: the data changed", n)
		}
	}
}

// TestSESparseWarmOpen: a read-only open that takes its grain directory
// and tables from the live disk that wrote them (OpenOptions.Warm) reads
// and maps exactly what a cold open does, without reading the tables; a
// live disk with unflushed changes is not taken from.
func TestSESparseWarmOpen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "w.vmdk")
	const size = 256 << 20
	live, err := Create(ctx, path, size, &CreateOptions{Subformat: SESparse, ForceShare: true})
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close()
	rng := rand.New(rand.NewPCG(4, 4))
	for range 200 {
		p := bytes.Repeat([]byte{byte(rng.Uint32() | 1)}, 4096*(1+rng.IntN(4)))
		if _, err := live.WriteAt(p, rng.Int64N(size/4096-4)*4096); err != nil {
			t.Fatal(err)
		}
	}
	if err := live.WriteZeroes(64<<20, 1<<20, 0); err != nil {
		t.Fatal(err)
	}
	open := func(warm *Disk) *Disk {
		d, err := Open(ctx, path, &OpenOptions{ReadOnly: true, ForceShare: true, Warm: warm})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { d.Close() })
		return d
	}
	cached := func(d *Disk) int {
		se := unwrapExtent(d.links[0].extents[0]).(*seSparseExtent)
		se.mu.Lock()
		defer se.mu.Unlock()
		return len(se.cache)
	}
	if n := cached(open(live)); n != 0 {
		t.Errorf("took %d tables from a disk with unflushed writes", n)
	}
	if err := live.Flush(); err != nil {
		t.Fatal(err)
	}
	warm, cold := open(live), open(nil)
	if cached(warm) == 0 {
		t.Fatal("no table taken from the flushed live disk")
	}
	ext := func(d *Disk) []disk.Extent {
		var out []disk.Extent
		if err := d.Extents(ctx, 0, size, func(e disk.Extent) error { out = append(out, e); return nil }); err != nil {
			t.Fatal(err)
		}
		return out
	}
	if a, b := ext(warm), ext(cold); !slices.Equal(a, b) {
		t.Fatalf("warm open maps %v, cold open %v", a, b)
	}
	a, b := make([]byte, size), make([]byte, size)
	warm.ReadAt(a, 0)
	cold.ReadAt(b, 0)
	if !bytes.Equal(a, b) {
		t.Fatal("warm and cold opens read different data")
	}
}
