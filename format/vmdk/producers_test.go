package vmdk

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/vdisk-project/vdisk/disk"
	"github.com/vdisk-project/vdisk/internal/testenv"
)

// Images other tools write, built here from their documented layouts, and
// the rule that repair never destroys data: for every repair mode, every
// byte an extent references reads the same after Check as before, and no
// file is cut.

var update = flag.Bool("update", false, "rewrite the generated fuzz seeds under testdata/fuzz")

var repairModes = []struct {
	name string
	mode RepairMode
}{{"none", RepairNone}, {"leaks", RepairLeaks}, {"all", RepairAll}}

// fillPattern fills b with a pattern that differs in every 8 bytes, so that
// lost, zeroed or moved data shows.
func fillPattern(b []byte, seed uint64) {
	for i := 0; i+8 <= len(b); i += 8 {
		binary.LittleEndian.PutUint64(b[i:], uint64(i)*0x9E3779B97F4A7C15^seed|1)
	}
}

// vmdkimageGeometry returns the disk size Haiku's vmdkimage uses for a raw
// image of size bytes: whole cylinders of 63 sectors and 16 heads, heads
// doubling (and cylinders halving) while there are more than 1024.
func vmdkimageGeometry(size int64) (n, heads, cyl int64) {
	heads, cyl = 16, size/(63*16*512)
	for cyl > 1024 {
		cyl /= 2
		heads *= 2
	}
	return cyl * 63 * heads * 512, heads, cyl
}

// haikuImage builds what Haiku's vmdkimage writes for a raw partition image
// of n bytes (see vmdkimageGeometry): a KDMV header of capacity 0 (version
// 1, flags 1, grain 16, 512 GTEs, descriptor at sector 1 for one sector, no
// grain directory, overHead = the header size), an embedded monolithicFlat
// descriptor whose FLAT extent names the same file at the header size, and
// the data after the header. It returns the file and the disk content.
func haikuImage(name string, headerBytes, n, heads, cyl int64, seed uint64) (file, data []byte) {
	h := sparseHeader{Version: 1, Flags: flagNewlineDetector, GrainSize: 16, DescriptorOffset: 1, DescriptorSize: 1,
		NumGTEsPerGT: 512, OverHead: uint64(headerBytes / 512)}
	h.setNewlineChars()
	desc := fmt.Sprintf("# Disk Descriptor File\nversion=1\nCID=fffffffe\nparentCID=ffffffff\ncreateType=\"monolithicFlat\"\n"+
		"# Extent Description\nRW %d FLAT \"%s\" %d\n"+
		"# Disk Data Base\nddb.toolsVersion = \"0\"\nddb.virtualHWVersion = \"3\"\nddb.geometry.sectors = \"63\"\n"+
		"ddb.adapterType = \"ide\"\nddb.geometry.heads = \"%d\"\nddb.geometry.cylinders = \"%d\"\n",
		n/512, name, headerBytes/512, heads, cyl)
	file = make([]byte, headerBytes+n)
	copy(file, h.marshal())
	copy(file[512:1024], desc)
	data = file[headerBytes:]
	fillPattern(data, seed)
	return file, append([]byte(nil), data...)
}

// gdAtEndImage builds an uncompressed monolithicSparse that uses the
// GD_AT_END convention (§4.1): the header's gdOffset is
// 0xFFFFFFFFFFFFFFFF; the descriptor fills sectors 1-20; grains follow from
// the first grain boundary in ascending disk order; then the grain tables,
// the grain directory, a footer marker (numSectors 1, size 0, type 3), the
// footer (the header with the real gdOffset) and an all-zero end-of-stream
// marker. grains maps a grain index to its data. With leak, an unreferenced
// grain follows the first data grain; with unclean, both copies of the
// header have uncleanShutdown set.
func gdAtEndImage(name string, capacity int64, grainSectors uint64, grains map[int64][]byte, leak, unclean bool) []byte {
	const gtes = 512
	secs := uint64(capacity / 512)
	desc := newDescriptorText(0x1234abcd, 0xffffffff, string(MonolithicSparse), "",
		[]extentLine{{Access: "RW", Sectors: int64(secs), Type: "SPARSE", File: name}}, nil)
	h := sparseHeader{Version: 1, Flags: flagNewlineDetector, Capacity: secs, GrainSize: grainSectors,
		DescriptorOffset: 1, DescriptorSize: 20, NumGTEsPerGT: gtes, GDOffset: gdAtEnd,
		OverHead: roundUp(21, grainSectors)}
	h.setNewlineChars()
	gdN := h.numGDEntries()
	gt := make([]uint32, gdN*gtes)
	gb := int64(grainSectors) * 512
	var body bytes.Buffer
	idx := make([]int64, 0, len(grains))
	for i := range grains {
		idx = append(idx, i)
	}
	sort.Slice(idx, func(a, b int) bool { return idx[a] < idx[b] })
	pos := h.OverHead
	for n, i := range idx {
		g := make([]byte, gb)
		copy(g, grains[i])
		body.Write(g)
		gt[i] = uint32(pos)
		pos += grainSectors
		if leak && n == 0 {
			body.Write(bytes.Repeat([]byte{0xee}, int(gb)))
			pos += grainSectors
		}
	}
	gtSectors := uint64(gtes * 4 / 512)
	gd := make([]uint32, gdN)
	for i := range gd {
		gd[i] = uint32(pos)
		for _, v := range gt[uint64(i)*gtes : uint64(i+1)*gtes] {
			binary.Write(&body, binary.LittleEndian, v)
		}
		pos += gtSectors
	}
	gdPos := pos
	gdBytes := make([]byte, divRoundUp(gdN*4, 512)*512)
	for i, v := range gd {
		binary.LittleEndian.PutUint32(gdBytes[i*4:], v)
	}
	body.Write(gdBytes)
	marker := make([]byte, 512)
	binary.LittleEndian.PutUint64(marker, 1)
	binary.LittleEndian.PutUint32(marker[12:], markerFooter)
	body.Write(marker)
	ft := h
	ft.GDOffset = gdPos
	ft.UncleanShutdown = unclean
	body.Write(ft.marshal())
	body.Write(make([]byte, 512)) // end of stream
	head := h
	head.UncleanShutdown = unclean
	file := make([]byte, h.OverHead*512)
	copy(file, head.marshal())
	copy(file[512:], desc)
	return append(file, body.Bytes()...)
}

func havePeer(name string) bool {
	_, err := exec.LookPath(name)
	return err == nil || testenv.Required(name)
}

// readDisk opens path read-only and reads the whole disk.
func readDisk(t *testing.T, path string) []byte {
	t.Helper()
	d, err := Open(ctx, path, &OpenOptions{ReadOnly: true})
	if err != nil {
		t.Fatalf("Open(%s): %v", path, err)
	}
	defer d.Close()
	b := make([]byte, d.Size())
	if _, err := d.ReadAt(b, 0); err != nil {
		t.Fatalf("ReadAt(%s): %v", path, err)
	}
	return b
}

// qemuAgrees checks, when qemu-img is available, that qemu sees a disk of
// len(want) bytes holding want, and that qemu-img check passes.
func qemuAgrees(t *testing.T, path string, want []byte) {
	t.Helper()
	if !havePeer("qemu-img") {
		return
	}
	var info struct {
		VirtualSize int64 `json:"virtual-size"`
	}
	if err := json.Unmarshal([]byte(testenv.Run(t, "qemu-img", "info", "-f", "vmdk", "--output=json", path)), &info); err != nil {
		t.Fatal(err)
	}
	if info.VirtualSize != int64(len(want)) {
		t.Errorf("qemu-img info %s: virtual size %d, want %d", path, info.VirtualSize, len(want))
	}
	raw := filepath.Join(t.TempDir(), "want.raw")
	if err := os.WriteFile(raw, want, 0o644); err != nil {
		t.Fatal(err)
	}
	testenv.Run(t, "qemu-img", "compare", "-f", "vmdk", "-F", "raw", path, raw)
	testenv.Run(t, "qemu-img", "check", "-f", "vmdk", path)
}

func writeFile(t *testing.T, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestHaikuVmdkimage: a healthy vmdkimage file (33 MB, 64 KiB header) has
// no leaks, and no repair mode changes a byte of it; vdisk and qemu read
// the same disk. Before, check saw 4,095 leaked grains and -r leaks cut
// the file to the 64 KiB header.
func TestHaikuVmdkimage(t *testing.T) {
	const header = 64 << 10
	n, heads, cyl := vmdkimageGeometry(32 << 20)
	img, data := haikuImage("haiku.vmdk", header, n, heads, cyl, 5)
	if len(img) != 33611776 {
		t.Fatalf("generator: file of %d bytes, want vmdkimage's 33611776", len(img))
	}
	for _, m := range repairModes {
		t.Run(m.name, func(t *testing.T) {
			t.Parallel()
			path := filepath.Join(t.TempDir(), "haiku.vmdk")
			writeFile(t, path, img)
			if got := readDisk(t, path); !bytes.Equal(got, data) {
				t.Fatal("vdisk reads different content than vmdkimage wrote")
			}
			r, err := Check(ctx, path, &CheckOptions{Repair: m.mode})
			if err != nil {
				t.Fatalf("Check: %v", err)
			}
			if r.Leaks != 0 || r.Errors != 0 || len(r.Problems) != 0 {
				t.Errorf("Check(%s) = %d leaks, %d errors, %+v; want a clean report", m.name, r.Leaks, r.Errors, r.Problems)
			}
			if r.TotalBytes != int64(len(data)) || r.AllocatedBytes != int64(len(data)) {
				t.Errorf("Check: total %d, allocated %d bytes; want %d", r.TotalBytes, r.AllocatedBytes, len(data))
			}
			if after := readFile(t, path); !bytes.Equal(after, img) {
				t.Fatalf("Check -r %s changed the file (%d bytes, was %d)", m.name, len(after), len(img))
			}
			if got := readDisk(t, path); !bytes.Equal(got, data) {
				t.Fatal("the disk reads differently after repair")
			}
			qemuAgrees(t, path, data)
		})
	}
}

// TestHaikuVmdkimageWrite: writing to a vmdkimage disk writes into the FLAT
// extent and rotates the CID inside the 512-byte descriptor area; the file
// stays a KDMV container of the same size (it used to be replaced by a
// text descriptor, losing the data).
func TestHaikuVmdkimageWrite(t *testing.T) {
	const header = 4 << 10
	n, heads, cyl := vmdkimageGeometry(4 << 20)
	img, data := haikuImage("h.vmdk", header, n, heads, cyl, 9)
	path := filepath.Join(t.TempDir(), "h.vmdk")
	writeFile(t, path, img)
	d, err := Open(ctx, path, nil)
	if err != nil {
		t.Fatal(err)
	}
	p := bytes.Repeat([]byte{0x5a}, 3000)
	if _, err := d.WriteAt(p, 1<<20+7); err != nil {
		t.Fatalf("WriteAt: %v", err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	copy(data[1<<20+7:], p)
	after := readFile(t, path)
	if len(after) != len(img) || !bytes.Equal(after[:4], []byte("KDMV")) || !bytes.Equal(after[:512], img[:512]) {
		t.Fatalf("the container changed: %d bytes (was %d), head %q", len(after), len(img), after[:4])
	}
	if !bytes.Equal(after[header:], data) {
		t.Fatal("the FLAT extent does not hold the written data")
	}
	desc, err := parseDescriptor(after[512:1024])
	if err != nil {
		t.Fatalf("descriptor after the write: %v", err)
	}
	if cid := desc.get("CID"); cid == "fffffffe" || len(desc.extents) != 1 || desc.extents[0].Offset != header/512 {
		t.Errorf("descriptor after the write: CID %s, extents %+v; want a new CID and the same extent", cid, desc.extents)
	}
	if r, err := Check(ctx, path, &CheckOptions{Repair: RepairAll}); err != nil || len(r.Problems) != 0 {
		t.Errorf("Check = %+v, %v", r, err)
	}
	if !bytes.Equal(readFile(t, path)[header:], data) {
		t.Fatal("check -r all changed the data")
	}
	qemuAgrees(t, path, data)
}

// TestGDAtEndUncompressed: a monolithicSparse with its grain directory at
// the end (GD_AT_END in the header, the real header in the footer) reads
// like qemu reads it, opens read-only only, and Check keeps its footer: no
// repair mode cuts the file or loses a referenced byte.
func TestGDAtEndUncompressed(t *testing.T) {
	const grain = 16                // 8 KiB grains: a grain table covers 4 MiB
	const capacity = 6<<20 + 64<<10 // 2 grain tables, the last partly used
	grains := map[int64][]byte{}
	data := make([]byte, capacity)
	for _, i := range []int64{0, 1, 7, 50, 511, 512, 513, 96} {
		g := data[i*grain*512 : (i+1)*grain*512]
		fillPattern(g, uint64(i)+1)
		grains[i] = g
	}
	variants := []struct {
		name          string
		leak, unclean bool
	}{{"clean", false, false}, {"leak-in-middle", true, false}, {"unclean", false, true}}
	for _, v := range variants {
		for _, m := range repairModes {
			t.Run(v.name+"/"+m.name, func(t *testing.T) {
				t.Parallel()
				path := filepath.Join(t.TempDir(), "e.vmdk")
				img := gdAtEndImage("e.vmdk", capacity, grain, grains, v.leak, v.unclean)
				writeFile(t, path, img)
				if got := readDisk(t, path); !bytes.Equal(got, data) {
					t.Fatal("vdisk reads different content than was written")
				}
				if _, err := Open(ctx, path, nil); !errors.Is(err, disk.ErrPermission) {
					t.Errorf("read-write Open = %v; want ErrPermission", err)
				}
				qemuAgrees(t, path, data)
				r, err := Check(ctx, path, &CheckOptions{Repair: m.mode})
				if err != nil {
					t.Fatalf("Check: %v", err)
				}
				if r.Errors != 0 {
					t.Errorf("Check: %d errors: %+v", r.Errors, r.Problems)
				}
				wantLeaks := 0
				if v.leak {
					wantLeaks = 1
				}
				if r.Leaks != wantLeaks {
					t.Errorf("Check: %d leaks, want %d: %+v", r.Leaks, wantLeaks, r.Problems)
				}
				after := readFile(t, path)
				if len(after) != len(img) {
					t.Fatalf("Check -r %s cut the file to %d bytes (was %d)", m.name, len(after), len(img))
				}
				want := img
				if v.unclean && m.mode != RepairNone {
					// Only the mark goes, in both copies; the head
					// keeps gdOffset GD_AT_END.
					want = append([]byte(nil), img...)
					want[72] = 0
					want[len(want)-1024+72] = 0
					if r.Repaired != 1 {
						t.Errorf("Check: %d repaired, want the unclean mark: %+v", r.Repaired, r.Problems)
					}
				}
				if !bytes.Equal(after, want) {
					t.Fatalf("Check -r %s changed bytes it must keep", m.name)
				}
				if got := readDisk(t, path); !bytes.Equal(got, data) {
					t.Fatal("the disk reads differently after repair")
				}
				qemuAgrees(t, path, data)
			})
		}
	}
}

// TestSparseOver2TiB: qemu creates monolithicSparse disks larger than
// 2 TiB. They open read-write, data beyond 2 TiB reads and writes (in both
// directions with qemu), Check finds nothing to change, and only a grain
// placed past the 2^32-sector file offset limit is refused (ErrNoSpace).
func TestSparseOver2TiB(t *testing.T) {
	const size = 2049 << 30
	path := filepath.Join(t.TempDir(), "big.vmdk")
	writes := []struct {
		off  int64
		fill byte
	}{{0, 0x11}, {2 << 40, 0x22}, {size - 64<<10, 0x33}}
	if havePeer("qemu-img") && havePeer("qemu-io") {
		testenv.Run(t, "qemu-img", "create", "-f", "vmdk", path, strconv.FormatInt(size, 10))
		var args []string
		for _, w := range writes {
			args = append(args, "-c", fmt.Sprintf("write -P %#x %d 64k", w.fill, w.off))
		}
		testenv.Run(t, "qemu-io", append(append([]string{"-f", "vmdk"}, args...), path)...)
	} else {
		// The layout qemu-img create uses (§3.4), written by hand
		// because Create refuses sparse disks of 2 TiB or more.
		f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		desc := newDescriptorText(0x42, 0xffffffff, string(MonolithicSparse), "",
			[]extentLine{{Access: "RW", Sectors: size / 512, Type: "SPARSE", File: "big.vmdk"}}, nil)
		if err := writeSparseFile(f, size/512, desc, false); err != nil {
			t.Fatal(err)
		}
		f.Close()
		d, err := Open(ctx, path, nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, w := range writes {
			if _, err := d.WriteAt(bytes.Repeat([]byte{w.fill}, 64<<10), w.off); err != nil {
				t.Fatal(err)
			}
		}
		if err := d.Close(); err != nil {
			t.Fatal(err)
		}
	}
	d, err := Open(ctx, path, nil)
	if err != nil {
		t.Fatalf("Open read-write: %v", err)
	}
	if d.Size() != size {
		t.Fatalf("Size = %d, want %d", d.Size(), size)
	}
	ours := bytes.Repeat([]byte{0x44}, 100<<10)
	if _, err := d.WriteAt(ours, 2<<40+1<<20); err != nil {
		t.Fatalf("WriteAt past 2 TiB: %v", err)
	}
	writes = append(writes, struct {
		off  int64
		fill byte
	}{2<<40 + 1<<20, 0x44})
	for _, w := range writes {
		got := make([]byte, 64<<10)
		if _, err := d.ReadAt(got, w.off); err != nil || !bytes.Equal(got, bytes.Repeat([]byte{w.fill}, len(got))) {
			t.Errorf("ReadAt(%d) = %v; want 64 KiB of %#x", w.off, err, w.fill)
		}
	}
	// The limit is on file offsets: pretend the file is just short of it.
	se := unwrapExtent(d.links[0].extents[0]).(*sparseExtent)
	st, _ := os.Stat(path)
	se.mu.Lock()
	end := se.end
	se.end = maxExtentSectors*512 - se.grain + 512
	se.mu.Unlock()
	if _, err := d.WriteAt(ours[:512], 1<<40); !errors.Is(err, disk.ErrNoSpace) {
		t.Errorf("a grain past the offset limit: WriteAt = %v; want ErrNoSpace", err)
	}
	se.mu.Lock()
	se.end = end
	se.mu.Unlock()
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if st2, _ := os.Stat(path); st2.Size() > st.Size()+64<<10 {
		t.Errorf("the refused write grew the file from %d to %d bytes", st.Size(), st2.Size())
	}
	img := readFile(t, path)
	for _, m := range repairModes {
		r, err := Check(ctx, path, &CheckOptions{Repair: m.mode})
		if err != nil {
			t.Fatalf("Check -r %s: %v", m.name, err)
		}
		if r.Errors != 0 || r.Leaks != 0 || len(r.Problems) != 0 || r.TotalBytes != size || r.AllocatedBytes != 5*64<<10 {
			t.Errorf("Check -r %s = %+v; want clean, total %d, 320 KiB allocated", m.name, r, int64(size))
		}
		if !bytes.Equal(readFile(t, path), img) {
			t.Fatalf("Check -r %s changed the file", m.name)
		}
	}
	if havePeer("qemu-img") && havePeer("qemu-io") {
		// qemu-img compare walks all 2 TiB (about a minute); qemu-io
		// checks the written ranges and their neighbours instead.
		testenv.Run(t, "qemu-img", "check", "-f", "vmdk", path)
		args := []string{"-r", "-f", "vmdk"}
		for _, w := range writes {
			n := 64 << 10
			if w.fill == 0x44 {
				n = len(ours)
			}
			args = append(args, "-c", fmt.Sprintf("read -P %#x %d %d", w.fill, w.off, n))
			if w.off > 0 {
				args = append(args, "-c", fmt.Sprintf("read -P 0 %d 4096", w.off-4096))
			}
		}
		testenv.Run(t, "qemu-io", append(args, path)...)
	}
}

// fuzzSeeds are the new layouts as FuzzSparse inputs (the fuzz target
// opens them as /x/a.vmdk).
func fuzzSeeds() map[string][]byte {
	// The vmdkimage layout with a smaller disk than it would round to.
	haiku, _ := haikuImage("a.vmdk", 4<<10, 8<<10, 16, 1, 3)
	g := make([]byte, 16*512)
	fillPattern(g, 4)
	gdEnd := gdAtEndImage("a.vmdk", 96<<10, 16, map[int64][]byte{0: g, 5: g}, true, true)
	// 4 TiB in 1 GiB grains: eight grain tables, no grains; the header
	// alone says more than 2 TiB.
	secs := uint64(4 << 40 / 512)
	big := sparseHeader{Version: 1, Flags: flagNewlineDetector | flagRedundantGD, Capacity: secs, GrainSize: 1 << 21,
		DescriptorOffset: 1, DescriptorSize: 20, NumGTEsPerGT: 512, RGDOffset: 21, GDOffset: 54, OverHead: 87}
	big.setNewlineChars()
	bigFile := make([]byte, 87*512)
	copy(bigFile, big.marshal())
	copy(bigFile[512:], newDescriptorText(7, 0xffffffff, string(MonolithicSparse), "",
		[]extentLine{{Access: "RW", Sectors: int64(secs), Type: "SPARSE", File: "a.vmdk"}}, nil))
	for i := range 8 {
		binary.LittleEndian.PutUint32(bigFile[21*512+i*4:], uint32(22+4*i))
		binary.LittleEndian.PutUint32(bigFile[54*512+i*4:], uint32(55+4*i))
	}
	return map[string][]byte{"haiku-vmdkimage": haiku, "gd-at-end-uncompressed": gdEnd, "capacity-4TiB": bigFile}
}

// TestFuzzSeeds keeps testdata/fuzz/FuzzSparse in step with the generators
// (go test -run TestFuzzSeeds -update rewrites them) and proves each seed
// opens, reads and checks cleanly.
func TestFuzzSeeds(t *testing.T) {
	for name, b := range fuzzSeeds() {
		t.Run(name, func(t *testing.T) {
			file := filepath.Join("testdata", "fuzz", "FuzzSparse", name)
			text := "go test fuzz v1\n[]byte(" + strconv.Quote(string(b)) + ")\n"
			if *update {
				writeFile(t, file, []byte(text))
			}
			if got, err := os.ReadFile(file); err != nil || string(got) != text {
				t.Errorf("%s is missing or stale (%v); run go test -run TestFuzzSeeds -update", file, err)
			}
			if err := openBytes(b, nil); err != nil {
				t.Errorf("seed %s: %v", name, err)
			}
			fsys := memFS(t, map[string][]byte{"/x/a.vmdk": b})
			r, err := Check(ctx, "/x/a.vmdk", &CheckOptions{FS: fsys})
			if err != nil || r.Errors != 0 {
				t.Errorf("Check(seed %s) = %+v, %v", name, r, err)
			}
			if strings.HasPrefix(name, "gd-at-end") && r.Leaks != 1 {
				t.Errorf("Check(seed %s): %d leaks, want the one it has", name, r.Leaks)
			}
		})
	}
}

// TestFlatInsideSparseFile: a descriptor whose FLAT extent lies in the
// file of its SPARSE extent, after the grains. The flat bytes are not
// leaked grains, and a grain table entry pointing into them is reported but
// left alone, since two extents claim the same bytes: no repair mode
// changes the file.
func TestFlatInsideSparseFile(t *testing.T) {
	for _, into := range []bool{false, true} {
		for _, m := range repairModes {
			t.Run(fmt.Sprintf("gte-into-flat=%v/%s", into, m.name), func(t *testing.T) {
				t.Parallel()
				dir := t.TempDir()
				sp := filepath.Join(dir, "x.vmdk")
				d, err := Create(ctx, sp, 4<<20, nil)
				if err != nil {
					t.Fatal(err)
				}
				g := make([]byte, 64<<10)
				fillPattern(g, 11)
				for _, off := range []int64{0, 1 << 20} {
					if _, err := d.WriteAt(g, off); err != nil {
						t.Fatal(err)
					}
				}
				if err := d.Close(); err != nil {
					t.Fatal(err)
				}
				img := readFile(t, sp)
				flatOff := int64(len(img)) // grain-aligned: overHead and whole grains
				flat := make([]byte, 256<<10)
				fillPattern(flat, 12)
				img = append(img, flat...)
				if into {
					// The grain table entry of grain 5 points at the flat
					// data, in both copies of the table.
					h, _ := parseSparseHeader(img)
					for _, dir := range []uint64{h.GDOffset, h.RGDOffset} {
						gt := int64(binary.LittleEndian.Uint32(img[dir*512:])) * 512
						binary.LittleEndian.PutUint32(img[gt+5*4:], uint32(flatOff/512))
					}
				}
				writeFile(t, sp, img)
				path := filepath.Join(dir, "d.vmdk")
				writeFile(t, path, newDescriptorText(0x77, 0xffffffff, string(TwoGbMaxExtentSparse), "", []extentLine{
					{Access: "RW", Sectors: 4 << 20 / 512, Type: "SPARSE", File: "x.vmdk"},
					{Access: "RW", Sectors: int64(len(flat) / 512), Type: "FLAT", File: "x.vmdk", Offset: flatOff / 512},
				}, nil))
				before := readDisk(t, path)
				if !bytes.Equal(before[4<<20:], flat) || !bytes.Equal(before[1<<20:1<<20+len(g)], g) {
					t.Fatal("the disk does not read the sparse grains and the flat extent")
				}
				r, err := Check(ctx, path, &CheckOptions{Repair: m.mode})
				if err != nil {
					t.Fatalf("Check: %v", err)
				}
				if r.Leaks != 0 {
					t.Errorf("Check: %d leaks: %+v", r.Leaks, r.Problems)
				}
				wantErrors := 0
				if into {
					wantErrors = 1
				}
				if r.Errors != wantErrors || r.Repaired != 0 {
					t.Errorf("Check: %d errors, %d repaired, want %d and 0: %+v", r.Errors, r.Repaired, wantErrors, r.Problems)
				}
				if !bytes.Equal(readFile(t, sp), img) {
					t.Fatalf("Check -r %s changed the file", m.name)
				}
				if got := readDisk(t, path); !bytes.Equal(got, before) {
					t.Fatal("the disk reads differently after repair")
				}
				if !into && havePeer("qemu-img") {
					qemuAgrees(t, path, before)
				}
			})
		}
	}
}

// TestContainerNamedAsSparse: a text descriptor that names a Haiku-style
// container as a SPARSE extent is wrong (the container holds no grains),
// but Check must not take the container's data for leaked grains.
func TestContainerNamedAsSparse(t *testing.T) {
	dir := t.TempDir()
	n, heads, cyl := vmdkimageGeometry(1 << 20)
	img, _ := haikuImage("h.vmdk", 4<<10, n, heads, cyl, 21)
	writeFile(t, filepath.Join(dir, "h.vmdk"), img)
	path := filepath.Join(dir, "d.vmdk")
	writeFile(t, path, newDescriptorText(0x99, 0xffffffff, string(TwoGbMaxExtentSparse), "",
		[]extentLine{{Access: "RW", Sectors: n / 512, Type: "SPARSE", File: "h.vmdk"}}, nil))
	for _, m := range repairModes {
		r, err := Check(ctx, path, &CheckOptions{Repair: m.mode})
		if err != nil {
			t.Fatalf("Check -r %s: %v", m.name, err)
		}
		if r.Leaks != 0 || r.Errors == 0 {
			t.Errorf("Check -r %s: %d leaks, %d errors; want the capacity mismatch and no leaks: %+v", m.name, r.Leaks, r.Errors, r.Problems)
		}
		if !bytes.Equal(readFile(t, filepath.Join(dir, "h.vmdk")), img) {
			t.Fatalf("Check -r %s changed the container", m.name)
		}
	}
}
