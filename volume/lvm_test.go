package volume

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/vdisk-project/vdisk/disk"
	"github.com/vdisk-project/vdisk/internal/testenv"
	"github.com/vdisk-project/vdisk/volume/lvm"
)

func TestMain(m *testing.M) {
	// The LVM tools, losetup, sgdisk and blkid live in /usr/sbin, which a
	// user's PATH may lack; lvm complains of inherited descriptors.
	os.Setenv("PATH", os.Getenv("PATH")+":/usr/sbin:/sbin")
	os.Setenv("LVM_SUPPRESS_FD_WARNINGS", "1")
	os.Exit(m.Run())
}

// lvmLab is a set of raw files the real LVM tools work on through loop
// devices, without device-mapper: activation is off, so LVs are never
// activated and the tools only read and write the PVs' labels and
// metadata.
type lvmLab struct {
	t     *testing.T
	files []string
	// off and size are the byte range of each file that is the PV (the
	// whole file, or a partition).
	off, size []int64
	loops     []string
	vg        string
}

func newLVMLab(t *testing.T, files []string, off, size []int64) *lvmLab {
	t.Helper()
	if os.Geteuid() != 0 {
		if testenv.Required("pvcreate") {
			t.Fatal("the LVM tools need root for loop devices, and VDISK_TEST_REQUIRE names pvcreate")
		}
		t.Skip("the LVM tools need root for loop devices")
	}
	for _, tool := range []string{"losetup", "pvcreate", "vgcreate", "lvcreate", "lvs"} {
		testenv.Tool(t, tool)
	}
	l := &lvmLab{t: t, files: files, off: off, size: size, vg: "vdisktest_" + strings.ToLower(rand.Text()[:8])}
	t.Cleanup(l.detach)
	return l
}

// attach puts each PV range on a loop device.
func (l *lvmLab) attach() {
	l.t.Helper()
	for i, f := range l.files {
		out, err := exec.Command("losetup", "-f", "--show", "-o", strconv.FormatInt(l.off[i], 10),
			"--sizelimit", strconv.FormatInt(l.size[i], 10), f).CombinedOutput()
		if err != nil {
			if testenv.Required("losetup") {
				l.t.Fatalf("losetup: %v\n%s", err, out)
			}
			l.t.Skipf("cannot attach a loop device: %v\n%s", err, out)
		}
		l.loops = append(l.loops, strings.TrimSpace(string(out)))
	}
}

// detach frees the loop devices (the files then hold all that LVM wrote).
func (l *lvmLab) detach() {
	for _, d := range l.loops {
		if out, err := exec.Command("losetup", "-d", d).CombinedOutput(); err != nil {
			l.t.Errorf("losetup -d %s: %v\n%s", d, err, out)
		}
	}
	l.loops = nil
}

// lvm runs an LVM command that sees only the lab's loop devices.
func (l *lvmLab) lvm(args ...string) string {
	l.t.Helper()
	var filter []string
	for _, d := range l.loops {
		filter = append(filter, strconv.Quote("a|^"+d+"$|"))
	}
	filter = append(filter, `"r|.*|"`)
	cfg := "devices{filter=[" + strings.Join(filter, ",") + "] obtain_device_list_from_udev=0 use_devicesfile=0}" +
		" activation{udev_sync=0 udev_rules=0} backup{backup=0 archive=0} global{activation=0}"
	cmd := exec.Command(args[0], append(args[1:], "--config", cfg)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		l.t.Fatalf("%s: %v\n%s%s", strings.Join(args, " "), err, out, stderr.Bytes())
	}
	return string(out)
}

// pvIndex returns the index of the lab file a loop device is attached to.
func (l *lvmLab) pvIndex(dev string) int {
	for i, d := range l.loops {
		if d == dev {
			return i
		}
	}
	l.t.Fatalf("unknown device %q", dev)
	return -1
}

// lvLayout is what the LVM tools say of an LV: its size and where each
// segment's extents lie, as file offsets.
type lvLayout struct {
	name, uuid string
	size       int64
	segs       []layoutSeg
}

type layoutSeg struct {
	off, len   int64 // in the LV
	stripeSize int64
	stripes    []layoutStripe
}

type layoutStripe struct {
	file int
	off  int64 // in the file
}

type lvsReport struct {
	Report []map[string][]map[string]string
}

func (l *lvmLab) report(args ...string) []map[string]string {
	l.t.Helper()
	var r lvsReport
	out := l.lvm(append(args, "--units", "b", "--nosuffix", "--reportformat", "json")...)
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		l.t.Fatalf("%s: %v\n%s", args[0], err, out)
	}
	for _, m := range r.Report {
		for _, rows := range m {
			return rows
		}
	}
	return nil
}

func atoi(t *testing.T, s string) int64 {
	t.Helper()
	n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
	if err != nil {
		t.Fatalf("not a number: %q", s)
	}
	return n
}

// layout learns every visible LV's layout from lvs and pvs (while the
// loop devices are attached).
func (l *lvmLab) layout() (vgUUID string, seqno int64, lvs map[string]*lvLayout) {
	t := l.t
	t.Helper()
	vg := l.report("vgs", "-o", "vg_uuid,vg_extent_size,vg_seqno", l.vg)[0]
	ext := atoi(t, vg["vg_extent_size"])
	peStart := map[string]int64{}
	for _, pv := range l.report("pvs", "-o", "pv_name,pe_start") {
		peStart[pv["pv_name"]] = atoi(t, pv["pe_start"])
	}
	lvs = map[string]*lvLayout{}
	for _, s := range l.report("lvs", "--segments", "-o", "lv_name,lv_uuid,lv_size,seg_start_pe,seg_size_pe,seg_pe_ranges,segtype,stripe_size", l.vg) {
		lv := lvs[s["lv_name"]]
		if lv == nil {
			lv = &lvLayout{name: s["lv_name"], uuid: s["lv_uuid"], size: atoi(t, s["lv_size"])}
			lvs[lv.name] = lv
		}
		seg := layoutSeg{off: atoi(t, s["seg_start_pe"]) * ext, len: atoi(t, s["seg_size_pe"]) * ext, stripeSize: atoi(t, s["stripe_size"])}
		for _, r := range strings.Fields(s["seg_pe_ranges"]) {
			dev, rng, _ := strings.Cut(r, ":")
			first, _, _ := strings.Cut(rng, "-")
			i := l.pvIndex(dev)
			seg.stripes = append(seg.stripes, layoutStripe{file: i, off: l.off[i] + peStart[dev] + atoi(t, first)*ext})
		}
		lv.segs = append(lv.segs, seg)
	}
	return vg["vg_uuid"], atoi(t, vg["vg_seqno"]), lvs
}

// write puts content (an LV's bytes) into the files where lv's extents
// lie, striping as LVM does: unit u of a segment on stripe u mod k, row u
// div k.
func (l *lvmLab) write(lv *lvLayout, content []byte) {
	l.t.Helper()
	for _, seg := range lv.segs {
		k := int64(len(seg.stripes))
		unit := seg.len / k
		if k > 1 {
			unit = seg.stripeSize
		}
		for rel := int64(0); rel < seg.len; rel += unit {
			u := rel / unit
			st := seg.stripes[u%k]
			f, err := os.OpenFile(l.files[st.file], os.O_RDWR, 0)
			if err != nil {
				l.t.Fatal(err)
			}
			_, err = f.WriteAt(content[seg.off+rel:seg.off+rel+unit], st.off+(u/k)*unit)
			f.Close()
			if err != nil {
				l.t.Fatal(err)
			}
		}
	}
}

func randomBytes(n int64) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

func newFile(t *testing.T, name string, size int64) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, size); err != nil {
		t.Fatal(err)
	}
	return path
}

func openSet(t *testing.T, paths ...string) *Set {
	t.Helper()
	var ds []disk.Disk
	for _, p := range paths {
		ds = append(ds, openFile(t, p))
	}
	s, err := OpenSet(context.Background(), ds, nil)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// checkLV checks that the set lists the LV as the tools describe it and
// reads content from it.
func checkLV(t *testing.T, s *Set, vg, vgUUID string, lv *lvLayout, content []byte) *Volume {
	t.Helper()
	v, err := s.Volume("lvm/" + vg + "/" + lv.name)
	if err != nil {
		t.Fatalf("%v; volumes %v", err, ids(s))
	}
	if v.Kind != KindLV || v.Size != lv.size || v.LV.LVUUID != lv.uuid || v.LV.VGUUID != vgUUID || v.LV.VG != vg || v.LV.LV != lv.name {
		t.Errorf("%s: %+v %+v; lvs says size %d uuid %s in VG %s", v.ID, v, v.LV, lv.size, lv.uuid, vgUUID)
	}
	if len(v.Segments) != len(lv.segs) {
		t.Errorf("%s: %d segments, lvs says %d", v.ID, len(v.Segments), len(lv.segs))
	} else {
		for i, sg := range lv.segs {
			g := v.Segments[i]
			if g.Off != sg.off || g.Len != sg.len || len(g.Stripes) != len(sg.stripes) {
				t.Errorf("%s segment %d: %+v; lvs says %+v", v.ID, i, g, sg)
				continue
			}
			for j, st := range sg.stripes {
				if g.Stripes[j].Disk != st.file || g.Stripes[j].Off != st.off {
					t.Errorf("%s segment %d stripe %d: %+v; lvs says %+v", v.ID, i, j, g.Stripes[j], st)
				}
			}
		}
	}
	if v.Unsupported != "" {
		t.Fatalf("%s: unsupported: %s", v.ID, v.Unsupported)
	}
	r, err := v.Open()
	if err != nil {
		t.Fatal(err)
	}
	got := make([]byte, r.Size())
	if n, err := r.ReadAt(got, 0); err != nil || n != len(content) || !bytes.Equal(got, content) {
		t.Errorf("%s: read %d bytes (%v), want the %d written; equal %v", v.ID, n, err, len(content), bytes.Equal(got, content))
	}
	return v
}

func ids(s *Set) []string {
	var out []string
	for _, v := range s.Volumes() {
		out = append(out, v.ID)
	}
	return out
}

// TestLVMAgreesWithTools: a VG on two disks (a GPT partition of one, the
// whole other) made by the real LVM tools, with a linear LV holding an
// ext4 image, a striped LV and an LV spanning both disks; OpenSet lists
// them as lvs does and reads back what was written at their extents.
// Then the metadata changes (a newer seqno), its newest copy is damaged
// on one PV, a PV goes missing, and LVs of unsupported kinds appear.
func TestLVMAgreesWithTools(t *testing.T) {
	testenv.Tool(t, "sgdisk")
	a, b := newFile(t, "a.img", 64<<20), newFile(t, "b.img", 64<<20)
	testenv.Run(t, "sgdisk", "-n", "1:2048:-1M", "-t", "1:8e00", "-c", "1:pv", a)
	d := openFile(t, a)
	tab, err := Partitions(context.Background(), d)
	if err != nil || len(tab.Partitions) != 1 {
		t.Fatalf("sgdisk's table: %v %+v", err, tab)
	}
	part := tab.Partitions[0]
	l := newLVMLab(t, []string{a, b}, []int64{part.Start, 0}, []int64{part.Size, 64 << 20})
	l.attach()
	l.lvm("pvcreate", l.loops[0], l.loops[1])
	l.lvm("vgcreate", l.vg, l.loops[0], l.loops[1])
	l.lvm("lvcreate", "-an", "-Zn", "-L", "20M", "-n", "lv1", l.vg)
	l.lvm("lvcreate", "-an", "-Zn", "-i", "2", "-I", "64k", "-l", "4", "-n", "striped", l.vg)
	l.lvm("lvcreate", "-an", "-Zn", "-l", "16", "-n", "lv2", l.vg)
	vgUUID, seqno, lvs := l.layout()
	l.detach()
	if len(lvs["lv2"].segs) < 2 || lvs["lv2"].segs[0].stripes[0].file == lvs["lv2"].segs[1].stripes[0].file {
		t.Fatalf("lv2 does not span both disks: %+v", lvs["lv2"])
	}

	ext4 := mkfs(t, lvs["lv1"].size, "mkfs.ext4", "-q", "-L", "inlv")
	want := map[string][]byte{"striped": randomBytes(lvs["striped"].size), "lv2": randomBytes(lvs["lv2"].size)}
	want["lv1"], _ = os.ReadFile(ext4)
	for name, c := range want {
		l.write(lvs[name], c)
	}
	fsWant := blkid(t, ext4, 0)

	t.Run("initial", func(t *testing.T) {
		s := openSet(t, a, b)
		for name, c := range want {
			checkLV(t, s, l.vg, vgUUID, lvs[name], c)
		}
		v, _ := s.Volume("lvm/" + l.vg + "/lv1")
		if v.Type != "ext4" || v.UUID != fsWant["UUID"] || v.Label != "inlv" {
			t.Errorf("lv1 holds %+v; blkid says %v", v.Filesystem, fsWant)
		}
		if v, _ := s.Volume("lvm/" + l.vg + "/lv2"); len(v.Disks) != 2 {
			t.Errorf("lv2 is on disks %v, want both", v.Disks)
		}
		p, err := s.Volume("disk0/p1")
		if err != nil || p.Type != "LVM2_member" || p.Partition.Name != "pv" {
			t.Errorf("the PV partition: %+v %v", p, err)
		}
		if got := blkid(t, b, 0); s.Volumes()[1].UUID != got["UUID"] || got["TYPE"] != "LVM2_member" {
			t.Errorf("the whole-disk PV: %+v; blkid says %v", s.Volumes()[1].Filesystem, got)
		}
		if len(s.Problems()) != 0 {
			t.Errorf("problems: %q", s.Problems())
		}
	})

	// Save disk b's metadata area as it is now, for the fallback below.
	oldMDA := readRange(t, b, 4096, 1<<20-4096)

	t.Run("newer seqno", func(t *testing.T) {
		l.attach()
		l.lvm("lvextend", "-l", "+2", l.vg+"/lv1")
		l.lvm("lvcreate", "-an", "-Zn", "-l", "1", "-n", "lv3", l.vg, l.loops[0])
		_, seqno2, lvs2 := l.layout()
		l.detach()
		if seqno2 <= seqno {
			t.Fatalf("seqno %d after updates, was %d", seqno2, seqno)
		}
		ext := randomBytes(lvs2["lv1"].size - lvs["lv1"].size)
		want["lv1"] = append(want["lv1"], ext...)
		want["lv3"] = randomBytes(lvs2["lv3"].size)
		l.write(lvs2["lv1"], want["lv1"])
		l.write(lvs2["lv3"], want["lv3"])
		s := openSet(t, a, b)
		for name, c := range want {
			checkLV(t, s, l.vg, vgUUID, lvs2[name], c)
		}
		if len(lvs2["lv1"].segs) != 2 {
			t.Errorf("lv1 has %d segments after lvextend, want 2", len(lvs2["lv1"].segs))
		}
		lvs = lvs2
	})

	t.Run("missing PV", func(t *testing.T) {
		// Only disk a: lv3 lies on it alone and opens; lv2 spans both.
		s := openSet(t, a)
		pvB := openSet(t, b).Volumes()[0].UUID
		v, err := s.Volume("lvm/" + l.vg + "/lv2")
		if err != nil || v.Unsupported != "PV uuid "+pvB+" missing" {
			t.Fatalf("lv2 without disk b: %+v %v", v, err)
		}
		if _, err := v.Open(); !errors.Is(err, disk.ErrNotSupported) {
			t.Errorf("opening lv2: %v, want ErrNotSupported", err)
		}
		if lvs["lv3"].segs[0].stripes[0].file != 0 {
			t.Fatalf("lv3 is not on disk a: %+v", lvs["lv3"])
		}
		checkLV(t, s, l.vg, vgUUID, lvs["lv3"], want["lv3"])
	})

	t.Run("corrupt newest copy", func(t *testing.T) {
		// Damage the newest text on disk a: disk b's copy is read.
		ca := committed(t, a, part.Start)
		flip(t, a, part.Start+ca.Area.Offset+ca.Offset+10)
		s := openSet(t, a, b)
		checkLV(t, s, l.vg, vgUUID, lvs["lv3"], want["lv3"])
		if !strings.Contains(strings.Join(s.Problems(), "\n"), "disk0/p1: metadata area 1 ignored") {
			t.Errorf("problems %q do not name the damaged copy", s.Problems())
		}
		// And with disk b holding only the older copy, that is read: no
		// lv3, lv1 at its old size.
		writeRange(t, b, 4096, oldMDA)
		s = openSet(t, a, b)
		if _, err := s.Volume("lvm/" + l.vg + "/lv3"); err == nil {
			t.Errorf("lv3 found in the older metadata")
		}
		if v, err := s.Volume("lvm/" + l.vg + "/lv1"); err != nil || v.Size != 20<<20 {
			t.Errorf("lv1 in the older metadata: %+v %v", v, err)
		}
	})
}

func readRange(t *testing.T, path string, off, n int64) []byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, n)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	return b
}

func writeRange(t *testing.T, path string, off int64, b []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

func flip(t *testing.T, path string, off int64) {
	b := readRange(t, path, off, 1)
	b[0] ^= 0xff
	writeRange(t, path, off, b)
}

// committed reads the committed metadata copy of the PV at off in path.
func committed(t *testing.T, path string, off int64) *lvm.MetadataCopy {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, _ := f.Stat()
	r := io.NewSectionReader(f, off, st.Size()-off)
	lab, err := lvm.ReadLabel(r, r.Size())
	if err != nil {
		t.Fatal(err)
	}
	c, err := lvm.ReadMetadata(r, r.Size(), lab.Metadata[0])
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestLVMWrapAndUnsupported: many metadata updates on a small metadata
// area wrap its circular buffer, and the wrapped copy is read; then thin,
// RAID and snapshot LVs, restored into the VG by vgcfgrestore (the tools
// cannot create them without device-mapper), are listed as unsupported.
func TestLVMWrapAndUnsupported(t *testing.T) {
	a, b := newFile(t, "a.img", 64<<20), newFile(t, "b.img", 64<<20)
	l := newLVMLab(t, []string{a, b}, []int64{0, 0}, []int64{64 << 20, 64 << 20})
	l.attach()
	l.lvm("pvcreate", "--metadatasize", "32k", "--dataalignment", "64k", l.loops[0], l.loops[1])
	l.lvm("vgcreate", l.vg, l.loops[0], l.loops[1])
	l.lvm("lvcreate", "-an", "-Zn", "-l", "2", "-n", "lv1", l.vg)
	lv1 := randomBytes(8 << 20)
	vgUUID, _, lvs := l.layout()
	l.write(lvs["lv1"], lv1)

	var tags []string
	for i := 0; ; i++ {
		if i == 200 {
			t.Fatalf("the metadata did not wrap after %d updates", i)
		}
		tag := fmt.Sprintf("tag%03d", i)
		l.lvm("lvchange", "--addtag", tag, l.vg+"/lv1")
		tags = append(tags, tag)
		if committed(t, a, 0).Wrapped {
			break
		}
	}
	t.Logf("the metadata wrapped after %d updates", len(tags))
	s := openSet(t, a, b)
	v := checkLV(t, s, l.vg, vgUUID, lvs["lv1"], lv1)
	if !slices.Equal(v.LV.Tags, tags) {
		t.Errorf("tags %q, want %q", v.LV.Tags, tags)
	}

	backup := filepath.Join(t.TempDir(), "vg.txt")
	l.lvm("vgcfgbackup", "-f", backup, l.vg)
	text, err := os.ReadFile(backup)
	if err != nil {
		t.Fatal(err)
	}
	i := bytes.LastIndex(text, []byte("\n\t}\n"))
	if i < 0 {
		t.Fatalf("no logical_volumes section to extend in\n%s", text)
	}
	restored := append(append(bytes.Clone(text[:i]), unsupportedLVs...), text[i:]...)
	restored = bytes.ReplaceAll(restored, []byte("@ID@"), nil)
	for n := 0; bytes.Contains(restored, []byte("@UUID@")); n++ {
		restored = bytes.Replace(restored, []byte("@UUID@"), []byte(fmt.Sprintf("%06d-vdsk-test-uuid-0000-0000-000000", n)), 1)
	}
	if err := os.WriteFile(backup, restored, 0o600); err != nil {
		t.Fatal(err)
	}
	l.lvm("vgcfgrestore", "--force", "-f", backup, l.vg)
	types := map[string]string{}
	for _, r := range l.report("lvs", "-a", "-o", "lv_name,segtype", l.vg) {
		types[r["lv_name"]] = r["segtype"]
	}
	l.detach()
	if types["pool"] != "thin-pool" || types["thin1"] != "thin" || types["r1"] != "raid1" {
		t.Fatalf("the tools read the restored LVs as %v", types)
	}
	if testing.Verbose() {
		t.Logf("%s", committed(t, a, 0).Text)
	}
	s = openSet(t, a, b)
	for lv, why := range map[string]string{
		"snap":  "snapshot of lv1",
		"pool":  "thin pool",
		"thin1": "thin LV in pool pool",
		"r1":    "RAID/mirror LV (raid1)",
	} {
		v, err := s.Volume("lvm/" + l.vg + "/" + lv)
		if err != nil {
			t.Errorf("%s: %v", lv, err)
			continue
		}
		if !strings.HasPrefix(v.Unsupported, why) {
			t.Errorf("%s: unsupported %q, want %q…", lv, v.Unsupported, why)
		}
		if _, err := v.Open(); !errors.Is(err, disk.ErrNotSupported) {
			t.Errorf("%s: Open gives %v, want ErrNotSupported", lv, err)
		}
	}
	for _, v := range s.Volumes() {
		// The LV name only: the VG's random name may hold "_t" or "_r".
		lvName := v.ID[strings.LastIndex(v.ID, "/")+1:]
		if strings.Contains(lvName, "_r") || strings.Contains(lvName, "_t") || strings.Contains(lvName, "snapshot0") {
			t.Errorf("hidden LV %s is listed", v.ID)
		}
	}
	checkLV(t, s, l.vg, vgUUID, lvs["lv1"], lv1)
}

// unsupportedLVs are LV sections for a VG whose lv1 lies on pv0 extents
// 0-1: a snapshot of lv1, a thin pool with one thin LV, and a raid1 LV.
var unsupportedLVs = []byte(`
		snap {
			id = "@UUID@"
			status = ["READ", "WRITE", "VISIBLE"]
			segment_count = 1
			segment1 { start_extent = 0 extent_count = 1 type = "striped" stripe_count = 1 stripes = ["pv0", 2] }
		}
		snapshot0 {
			id = "@UUID@"
			status = ["READ"]
			segment_count = 1
			segment1 { start_extent = 0 extent_count = 2 type = "snapshot" chunk_size = 8 origin = "lv1" cow_store = "snap" }
		}
		pool {
			id = "@UUID@"
			status = ["READ", "WRITE", "VISIBLE"]
			segment_count = 1
			segment1 { start_extent = 0 extent_count = 2 type = "thin-pool" metadata = "pool_tmeta" pool = "pool_tdata"
				transaction_id = 1 chunk_size = 128 discards = "passdown" zero_new_blocks = 1 }
		}
		thin1 {
			id = "@UUID@"
			status = ["READ", "WRITE", "VISIBLE"]
			segment_count = 1
			segment1 { start_extent = 0 extent_count = 4 type = "thin" thin_pool = "pool" transaction_id = 0 device_id = 1 }
		}
		pool_tmeta {
			id = "@UUID@"
			status = ["READ", "WRITE"]
			segment_count = 1
			segment1 { start_extent = 0 extent_count = 1 type = "striped" stripe_count = 1 stripes = ["pv0", 3] }
		}
		pool_tdata {
			id = "@UUID@"
			status = ["READ", "WRITE"]
			segment_count = 1
			segment1 { start_extent = 0 extent_count = 2 type = "striped" stripe_count = 1 stripes = ["pv0", 4] }
		}
		lvol0_pmspare {
			id = "@UUID@"
			status = ["READ", "WRITE"]
			segment_count = 1
			segment1 { start_extent = 0 extent_count = 1 type = "striped" stripe_count = 1 stripes = ["pv0", 6] }
		}
		r1 {
			id = "@UUID@"
			status = ["READ", "WRITE", "VISIBLE"]
			segment_count = 1
			segment1 { start_extent = 0 extent_count = 1 type = "raid1" device_count = 2 region_size = 1024
				raids = ["r1_rmeta_0", "r1_rimage_0", "r1_rmeta_1", "r1_rimage_1"] }
		}
		r1_rmeta_0 {
			id = "@UUID@"
			status = ["READ", "WRITE"]
			segment_count = 1
			segment1 { start_extent = 0 extent_count = 1 type = "striped" stripe_count = 1 stripes = ["pv0", 7] }
		}
		r1_rimage_0 {
			id = "@UUID@"
			status = ["READ", "WRITE"]
			segment_count = 1
			segment1 { start_extent = 0 extent_count = 1 type = "striped" stripe_count = 1 stripes = ["pv0", 8] }
		}
		r1_rmeta_1 {
			id = "@UUID@"
			status = ["READ", "WRITE"]
			segment_count = 1
			segment1 { start_extent = 0 extent_count = 1 type = "striped" stripe_count = 1 stripes = ["pv1", 0] }
		}
		r1_rimage_1 {
			id = "@UUID@"
			status = ["READ", "WRITE"]
			segment_count = 1
			segment1 { start_extent = 0 extent_count = 1 type = "striped" stripe_count = 1 stripes = ["pv1", 1] }
		}
`)
