package lvm

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"testing"

	"github.com/vdisk-project/vdisk/disk"
)

// prefixDevice is a device of size bytes whose first bytes are b and the
// rest zeros: the testdata PVs are stored without their zero tails.
type prefixDevice struct {
	b    []byte
	size int64
}

func (p prefixDevice) ReadAt(buf []byte, off int64) (int, error) {
	if off < 0 {
		return 0, errors.New("negative offset")
	}
	if off >= p.size {
		return 0, io.EOF
	}
	n := len(buf)
	var err error
	if int64(n) > p.size-off {
		n, err = int(p.size-off), io.EOF
	}
	clear(buf[:n])
	if off < int64(len(p.b)) {
		copy(buf[:n], p.b[off:])
	}
	return n, err
}

// seedDevices are the two PVs in testdata (16 MiB each, made by
// pvcreate --metadatasize 32k --dataalignment 64k; see testdata/README).
func seedDevices(t testing.TB) []Device {
	t.Helper()
	var ds []Device
	for _, n := range []string{"a", "b"} {
		b, err := os.ReadFile("testdata/pv-" + n + ".bin")
		if err != nil {
			t.Fatal(err)
		}
		ds = append(ds, Device{R: prefixDevice{b, 16 << 20}, Size: 16 << 20, Name: n})
	}
	return ds
}

func TestParse(t *testing.T) {
	root, err := Parse([]byte(`# comment
a = 1
b = -2 # trailing
c = "x \"quoted\" \\ y"
d = [ "s", 3, 4.5 ]
e = []
f = 1.25
sec {
	inner-name.x+y { k = "v" }
	n = 0
}
`))
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := root.Int("a"); v != 1 {
		t.Errorf("a = %d", v)
	}
	if v, _ := root.Int("b"); v != -2 {
		t.Errorf("b = %d", v)
	}
	if v, _ := root.Str("c"); v != `x "quoted" \ y` {
		t.Errorf("c = %q", v)
	}
	if d := root.Keys["d"]; d.Kind != Array || len(d.Array) != 3 || d.Array[1].Int != 3 || d.Array[2].Kind != Float {
		t.Errorf("d = %+v", d)
	}
	if e := root.Keys["e"]; e.Kind != Array || len(e.Array) != 0 {
		t.Errorf("e = %+v", e)
	}
	if v, _ := root.Sub("sec").Sub("inner-name.x+y").Str("k"); v != "v" {
		t.Errorf("nested section: %q", v)
	}
	for _, bad := range []string{
		`a = "unterminated`, `a = `, `a = [1, 2`, `a = [1 2]`, `sec {`, `}`, `a b`, `a = [[1]]`, `a = 99999999999999999999`,
		`= 1`, `a = x`, strings.Repeat("s {", 17) + strings.Repeat("}", 17),
	} {
		if _, err := Parse([]byte(bad)); !errors.Is(err, disk.ErrCorrupt) {
			t.Errorf("Parse(%q): %v, want ErrCorrupt", bad, err)
		}
	}
	// Padding after the text is ignored.
	if _, err := Parse([]byte("a = 1\n\x00\x00garbage")); err != nil {
		t.Errorf("text with NUL padding: %v", err)
	}
}

// TestParseVGBackup reads a VG as vgcfgbackup (LVM 2.03.16) wrote it.
func TestParseVGBackup(t *testing.T) {
	text, err := os.ReadFile("testdata/vgseed.txt")
	if err != nil {
		t.Fatal(err)
	}
	vg, err := ParseVG(text)
	if err != nil {
		t.Fatal(err)
	}
	if vg.Name != "vgseed" || vg.ExtentSize != 1<<20 || len(vg.PVs) != 2 || len(vg.LVs) != 3 {
		t.Fatalf("vg %+v", vg)
	}
	if pv := vg.PVs[0]; pv.PEStart != 64<<10 || pv.PECount != 15 || pv.DevSize != 16<<20 {
		t.Errorf("pv0 %+v", pv)
	}
	st := vg.LV("striped")
	if len(st.Segments) != 1 || st.Segments[0].StripeSize != 64<<10 || len(st.Segments[0].Stripes) != 2 {
		t.Errorf("striped %+v", st.Segments[0])
	}
	if span := vg.LV("span"); len(span.Segments) != 2 || span.Extents() != 20 {
		t.Errorf("span %+v", span)
	}
}

// TestScanSeeds: the PVs pvcreate, vgcreate and lvcreate wrote are read
// and their LVs mapped as lvs reported them (see testdata/README).
func TestScanSeeds(t *testing.T) {
	devs := seedDevices(t)
	res, err := Scan(context.Background(), devs)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.VGs) != 1 || len(res.Problems) != 0 {
		t.Fatalf("%d VGs, problems %q", len(res.VGs), res.Problems)
	}
	vg := res.VGs[0]
	if vg.PVs[0].Device != 0 || vg.PVs[1].Device != 1 || len(vg.Problems) != 0 {
		t.Errorf("PVs %+v %+v, problems %q", vg.PVs[0], vg.PVs[1], vg.Problems)
	}
	// lvs: lv1 on loop0(0); striped on loop0(3),loop1(0); span on
	// loop1(2) then loop0(5).
	for _, c := range []struct {
		lv   string
		want []Piece
	}{
		{"lv1", []Piece{{Off: 0, Len: 3 << 20, Stripes: []PieceStripe{{0, 64 << 10}}}}},
		{"striped", []Piece{{Off: 0, Len: 4 << 20, StripeSize: 64 << 10, Stripes: []PieceStripe{{0, 64<<10 + 3<<20}, {1, 64 << 10}}}}},
		{"span", []Piece{{Off: 0, Len: 13 << 20, Stripes: []PieceStripe{{1, 64<<10 + 2<<20}}}, {Off: 13 << 20, Len: 7 << 20, Stripes: []PieceStripe{{0, 64<<10 + 5<<20}}}}},
	} {
		got, err := vg.Map(vg.LV(c.lv))
		if err != nil || fmt.Sprint(got) != fmt.Sprint(c.want) {
			t.Errorf("%s: %v %v, want %v", c.lv, got, err, c.want)
		}
	}
}

// mda builds a device of size bytes holding a label in sector 1 and one
// metadata area of mdaSize bytes at 4 KiB whose committed text starts at
// textOff in the area (wrapping around its end if it must).
func mda(t testing.TB, uuid string, size, mdaSize, textOff int64, text string) []byte {
	t.Helper()
	le := binary.LittleEndian
	b := make([]byte, size)
	l := b[512:1024]
	copy(l, "LABELONE")
	le.PutUint64(l[8:], 1)
	le.PutUint32(l[20:], 32)
	copy(l[24:], "LVM2 001")
	copy(l[32:], strings.ReplaceAll(uuid, "-", ""))
	le.PutUint64(l[64:], uint64(size))
	le.PutUint64(l[72:], uint64(4096+mdaSize))
	le.PutUint64(l[104:], 4096)
	le.PutUint64(l[112:], uint64(mdaSize))
	le.PutUint32(l[16:], crc(initialCRC, l[20:]))
	area := b[4096 : 4096+mdaSize]
	m := area[:512]
	copy(m[4:], mdaMagic)
	le.PutUint32(m[20:], 1)
	le.PutUint64(m[24:], 4096)
	le.PutUint64(m[32:], uint64(mdaSize))
	le.PutUint64(m[40:], uint64(textOff))
	le.PutUint64(m[48:], uint64(len(text)))
	le.PutUint32(m[56:], crc(initialCRC, []byte(text)))
	le.PutUint32(m, crc(initialCRC, m[4:]))
	n := copy(area[textOff:], text)
	copy(area[512:], text[n:])
	return b
}

const (
	uuidA = "AAAAAA-aaaa-aaaa-aaaa-aaaa-aaaa-aaaaaa"
	uuidB = "BBBBBB-bbbb-bbbb-bbbb-bbbb-bbbb-bbbbbb"
)

// vgText is a VG of two PVs (4 MiB extents from 1 MiB on), with lv1 on
// both and a striped lv2.
func vgText(seqno int, extra string) string {
	return fmt.Sprintf(`vg0 {
id = "VGVGVG-0000-0000-0000-0000-0000-000000"
seqno = %d
format = "lvm2"
extent_size = 8192
physical_volumes {
pv0 { id = %q dev_size = 65536 pe_start = 2048 pe_count = 7 }
pv1 { id = %q dev_size = 65536 pe_start = 2048 pe_count = 7 }
}
logical_volumes {
lv1 { id = "LV1" status = ["READ", "WRITE", "VISIBLE"]
  segment1 { start_extent = 0 extent_count = 2 type = "striped" stripe_count = 1 stripes = ["pv0", 0] }
  segment2 { start_extent = 2 extent_count = 1 type = "striped" stripe_count = 1 stripes = ["pv1", 0] }
}
lv2 { id = "LV2" status = ["READ", "WRITE", "VISIBLE"]
  segment1 { start_extent = 0 extent_count = 4 type = "striped" stripe_count = 2 stripe_size = 8 stripes = ["pv0", 2, "pv1", 1] }
}
%s
}
}
contents = "Text Format Volume Group"
version = 1
`, seqno, uuidA, uuidB, extra)
}

func TestReadMetadata(t *testing.T) {
	text := vgText(1, "")
	t.Run("wrapped", func(t *testing.T) {
		b := mda(t, uuidA, 32<<20, 8192, 8192-300, text)
		l, err := ReadLabel(bytes.NewReader(b), int64(len(b)))
		if err != nil {
			t.Fatal(err)
		}
		if l.Sector != 1 || l.UUID != uuidA || len(l.Metadata) != 1 || l.Metadata[0] != (Area{4096, 8192}) {
			t.Fatalf("label %+v", l)
		}
		c, err := ReadMetadata(bytes.NewReader(b), int64(len(b)), l.Metadata[0])
		if err != nil || !c.Wrapped || string(c.Text) != text {
			t.Fatalf("wrapped copy: %v wrapped %v, text equal %v", err, c != nil && c.Wrapped, c != nil && string(c.Text) == text)
		}
	})
	for _, c := range []struct {
		name  string
		off   int64
		patch func(b []byte)
		code  disk.Code
	}{
		{"text checksum", 4096 + 600, func(b []byte) { b[0] ^= 1 }, disk.ErrCorrupt},
		{"header checksum", 4096 + 30, func(b []byte) { b[0] ^= 1 }, disk.ErrCorrupt},
		{"magic", 4096 + 4, func(b []byte) { b[0] = 'X' }, disk.ErrCorrupt},
		{"ignored", 4096 + 40 + 20, func(b []byte) { b[0] = 1 }, disk.ErrCorrupt}, // the header's checksum now fails
		{"label checksum", 512 + 100, func(b []byte) { b[0] ^= 1 }, disk.ErrCorrupt},
		{"text past the area", 4096 + 48, func(b []byte) { binary.LittleEndian.PutUint64(b, 1<<40) }, disk.ErrCorrupt},
	} {
		t.Run(c.name, func(t *testing.T) {
			b := mda(t, uuidA, 32<<20, 1<<20, 512, text)
			c.patch(b[c.off:])
			l, err := ReadLabel(bytes.NewReader(b), int64(len(b)))
			if err == nil {
				_, err = ReadMetadata(bytes.NewReader(b), int64(len(b)), l.Metadata[0])
			}
			if disk.CodeOf(err) != c.code {
				t.Errorf("got %v, want %v", err, c.code)
			}
		})
	}
	if _, err := ReadLabel(bytes.NewReader(make([]byte, 4096)), 4096); !errors.Is(err, disk.ErrNotFound) {
		t.Errorf("no label: %v, want ErrNotFound", err)
	}
}

// TestScanChoosesNewest: the newest copy whose checksums hold wins, the
// others are named; LVs on a missing PV are unsupported.
func TestScanChoosesNewest(t *testing.T) {
	ctx := context.Background()
	devA := mda(t, uuidA, 32<<20, 1<<20-4096, 512, vgText(7, `lv3 { id = "LV3" status = ["VISIBLE"]
  segment1 { start_extent = 0 extent_count = 1 type = "striped" stripe_count = 1 stripes = ["pv0", 4] } }`))
	devB := mda(t, uuidB, 32<<20, 1<<20-4096, 512, vgText(5, ""))
	scan := func(bs ...[]byte) *VG {
		t.Helper()
		var ds []Device
		for i, b := range bs {
			ds = append(ds, Device{R: bytes.NewReader(b), Size: int64(len(b)), Name: fmt.Sprint("dev", i)})
		}
		res, err := Scan(ctx, ds)
		if err != nil || len(res.VGs) != 1 {
			t.Fatalf("scan: %v %+v", err, res)
		}
		return res.VGs[0]
	}
	vg := scan(devA, devB)
	if vg.Seqno != 7 || vg.LV("lv3") == nil || !strings.Contains(strings.Join(vg.Problems, "\n"), "dev1: metadata area 1 holds seqno 5, older than 7") {
		t.Errorf("seqno %d, problems %q", vg.Seqno, vg.Problems)
	}
	// Damage A's text: B's older copy is read, and the damage named.
	bad := bytes.Clone(devA)
	bad[4096+600] ^= 1
	vg = scan(bad, devB)
	if vg.Seqno != 5 || vg.LV("lv3") != nil || !strings.Contains(strings.Join(vg.Problems, "\n"), "dev0: metadata area 1 ignored") {
		t.Errorf("seqno %d, problems %q", vg.Seqno, vg.Problems)
	}
	// Without B, lv1 (partly on B) is unsupported, lv3 (on A) is not.
	vg = scan(devA)
	if why := vg.Unsupported(vg.LV("lv1")); why != "PV uuid "+uuidB+" missing" {
		t.Errorf("lv1 without B: %q", why)
	}
	if why := vg.Unsupported(vg.LV("lv3")); why != "" {
		t.Errorf("lv3 without B: %q", why)
	}
	if _, err := vg.Open(vg.LV("lv1")); !errors.Is(err, disk.ErrNotSupported) {
		t.Errorf("open lv1 without B: %v", err)
	}
}

// TestReader: a linear LV over two PVs and a striped one read the bytes
// at the places their segments say.
func TestReader(t *testing.T) {
	devA := mda(t, uuidA, 32<<20, 1<<20-4096, 512, vgText(1, ""))
	devB := mda(t, uuidB, 32<<20, 1<<20-4096, 512, vgText(1, ""))
	for i := 1 << 20; i < len(devA); i++ {
		devA[i], devB[i] = byte(i/512), byte(i/512+100)
	}
	res, err := Scan(context.Background(), []Device{{R: bytes.NewReader(devA), Size: 32 << 20}, {R: bytes.NewReader(devB), Size: 32 << 20}})
	if err != nil {
		t.Fatal(err)
	}
	vg := res.VGs[0]
	const ext = 4 << 20
	lv1 := append(bytes.Clone(devA[1<<20:1<<20+2*ext]), devB[1<<20:1<<20+ext]...)
	var lv2 []byte
	for row := 0; row < 2*ext/4096; row++ { // 4 KiB stripes
		lv2 = append(lv2, devA[1<<20+2*ext+row*4096:][:4096]...)
		lv2 = append(lv2, devB[1<<20+ext+row*4096:][:4096]...)
	}
	for name, want := range map[string][]byte{"lv1": lv1, "lv2": lv2} {
		r, err := vg.Open(vg.LV(name))
		if err != nil {
			t.Fatal(err)
		}
		if r.Size() != int64(len(want)) {
			t.Fatalf("%s: size %d, want %d", name, r.Size(), len(want))
		}
		got := make([]byte, len(want))
		if n, err := r.ReadAt(got, 0); n != len(got) || err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s: read %d %v, equal %v", name, n, err, bytes.Equal(got, want))
		}
		// Unaligned reads across segment and stripe boundaries.
		for _, off := range []int64{1, 4095, ext*2 - 7, int64(len(want)) - 10} {
			p := make([]byte, 9000)
			n, err := r.ReadAt(p, off)
			wantN := min(len(p), len(want)-int(off))
			if n != wantN || !bytes.Equal(p[:n], want[off:off+int64(n)]) || (n < len(p)) != (err == io.EOF) {
				t.Errorf("%s @%d: %d %v", name, off, n, err)
			}
		}
	}
}

// BenchmarkReader reads a striped LV in 64 KiB requests.
func BenchmarkReader(b *testing.B) {
	devA := mda(b, uuidA, 32<<20, 1<<20-4096, 512, vgText(1, ""))
	devB := mda(b, uuidB, 32<<20, 1<<20-4096, 512, vgText(1, ""))
	res, err := Scan(context.Background(), []Device{{R: bytes.NewReader(devA), Size: 32 << 20}, {R: bytes.NewReader(devB), Size: 32 << 20}})
	if err != nil {
		b.Fatal(err)
	}
	r, err := res.VGs[0].Open(res.VGs[0].LV("lv2"))
	if err != nil {
		b.Fatal(err)
	}
	p := make([]byte, 64<<10)
	b.SetBytes(int64(len(p)))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		off := int64(i) * int64(len(p)) % (r.Size() - int64(len(p)))
		if _, err := r.ReadAt(p, off); err != nil {
			b.Fatal(err)
		}
	}
}
