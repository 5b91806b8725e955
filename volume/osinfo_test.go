package volume

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"os"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/vdisk-project/vdisk/disk"
	"github.com/vdisk-project/vdisk/internal/testenv"
	"github.com/vdisk-project/vdisk/volume/inode"
)

// fakeFS is an inode.FS over a MapFS, standing in for the filesystem
// readers being written elsewhere.
type fakeFS struct {
	fstest.MapFS
	typ, uuid string
}

func (f fakeFS) Type() string                  { return f.typ }
func (f fakeFS) Label() string                 { return "" }
func (f fakeFS) UUID() string                  { return f.uuid }
func (f fakeFS) Statfs() (inode.Statfs, error) { return inode.Statfs{}, nil }

var _ inode.FS = fakeFS{}

// withFakeExt4 registers, for the test, an "ext4" reader that reads the
// UUID from the volume's real ext4 superblock and serves the tree the
// test gives for that UUID.
func withFakeExt4(t *testing.T, trees map[string]fstest.MapFS) {
	old, had := readers["ext4"]
	readers["ext4"] = func(r io.ReaderAt, size int64) (inode.FS, error) {
		sb := make([]byte, 1024)
		if _, err := r.ReadAt(sb, 1024); err != nil {
			return nil, err
		}
		if binary.LittleEndian.Uint16(sb[56:]) != 0xef53 {
			return nil, disk.Errorf(disk.ErrCorrupt, "fake: no ext4 superblock")
		}
		id := uuid(sb[104:120])
		tree := trees[id]
		if tree == nil {
			tree = fstest.MapFS{}
		}
		return fakeFS{MapFS: tree, typ: "ext4", uuid: id}, nil
	}
	t.Cleanup(func() {
		if had {
			readers["ext4"] = old
		} else {
			delete(readers, "ext4")
		}
	})
}

// lvmCRC is LVM's checksum, written here independently of package lvm.
func lvmCRC(b []byte) uint32 {
	return ^crc32.Update(^uint32(0xf597a6cf), crc32.IEEETable, b)
}

// craftPV returns the first MiB of a PV: its label in sector 1 and one
// metadata area at 4 KiB holding text; the data area starts at 1 MiB.
func craftPV(pvUUID string, devSize int64, text string) []byte {
	le := binary.LittleEndian
	b := make([]byte, 1<<20)
	l := b[512:1024]
	copy(l, "LABELONE")
	le.PutUint64(l[8:], 1)
	le.PutUint32(l[20:], 32)
	copy(l[24:], "LVM2 001")
	ph := l[32:]
	copy(ph, strings.ReplaceAll(pvUUID, "-", ""))
	le.PutUint64(ph[32:], uint64(devSize))
	le.PutUint64(ph[40:], 1<<20) // data area, to the end; then 0,0
	le.PutUint64(ph[72:], 4096)  // metadata area
	le.PutUint64(ph[80:], 1<<20-4096)
	le.PutUint32(l[16:], lvmCRC(l[20:]))
	m := b[4096 : 4096+512]
	copy(m[4:], " LVM2 x[5A%r0N*>")
	le.PutUint32(m[20:], 1)
	le.PutUint64(m[24:], 4096)
	le.PutUint64(m[32:], 1<<20-4096)
	le.PutUint64(m[40:], 512)
	le.PutUint64(m[48:], uint64(len(text)))
	le.PutUint32(m[56:], lvmCRC([]byte(text)))
	le.PutUint32(m, lvmCRC(m[4:]))
	copy(b[4096+512:], text)
	return b
}

// vgText is LVM metadata for a VG of one PV with linear LVs of two 4 MiB
// extents each, one after the other.
func vgText(vg, vgUUID, pvUUID string, peCount int, lvs ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s {\nid = %q\nseqno = 3\nformat = \"lvm2\"\nstatus = [\"RESIZEABLE\", \"READ\", \"WRITE\"]\nextent_size = 8192\n", vg, vgUUID)
	fmt.Fprintf(&b, "physical_volumes {\npv0 {\nid = %q\ndevice = \"/dev/sda3\"\nstatus = [\"ALLOCATABLE\"]\ndev_size = %d\npe_start = 2048\npe_count = %d\n}\n}\n", pvUUID, 2048+peCount*8192, peCount)
	b.WriteString("logical_volumes {\n")
	for i, lv := range lvs {
		fmt.Fprintf(&b, "%s {\nid = \"LV%04d-aaaa-bbbb-cccc-dddd-eeee-ffffff\"\nstatus = [\"READ\", \"WRITE\", \"VISIBLE\"]\nsegment_count = 1\n", lv, i)
		fmt.Fprintf(&b, "segment1 {\nstart_extent = 0\nextent_count = 2\ntype = \"striped\"\nstripe_count = 1\nstripes = [\"pv0\", %d]\n}\n}\n", 2*i)
	}
	b.WriteString("}\n}\ncontents = \"Text Format Volume Group\"\nversion = 1\n")
	return b.String()
}

// ext4UUID makes an ext4 image and returns its bytes and UUID.
func ext4Image(t *testing.T, size int64, label string) ([]byte, string) {
	t.Helper()
	p := mkfs(t, size, "mkfs.ext4", "-q", "-L", label)
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b, uuid(b[1024+104 : 1024+120])
}

// TestOSInfo: a guest of two disks (a GPT disk with an EFI partition, the
// root filesystem and an LVM PV; an MBR disk with two partitions), whose
// fstab names its filesystems in every way Linux allows; OSInfo finds
// the root, reads os-release through /usr on an LV, and gives each
// volume its mount point.
func TestOSInfo(t *testing.T) {
	testenv.Tool(t, "sgdisk")
	a := newFile(t, "a.img", 128<<20)
	testenv.Run(t, "sgdisk", "-n", "1:2048:+8M", "-t", "1:ef00", "-c", "1:EFI System",
		"-n", "2:0:+32M", "-t", "2:8300", "-c", "2:root", "-n", "3:0:+48M", "-t", "3:8e00", a)
	b := sfdiskImage(t, "label: dos\nlabel-id: 0x1234abcd\n,16M,83\n,16M,83\n")
	da, db := openFile(t, a), openFile(t, b)
	ta, _ := Partitions(context.Background(), da)
	tb, _ := Partitions(context.Background(), db)

	efi := mkfs(t, 8<<20, "mkfs.vfat", "-n", "EFI")
	efiBytes, _ := os.ReadFile(efi)
	da.WriteAt(efiBytes, ta.Partitions[0].Start)
	root, rootUUID := ext4Image(t, 32<<20, "rootfs")
	da.WriteAt(root, ta.Partitions[1].Start)
	const pvUUID, vgUUID = "PVPVPV-aaaa-bbbb-cccc-dddd-eeee-ffffff", "VGVGVG-aaaa-bbbb-cccc-dddd-eeee-ffffff"
	pv := ta.Partitions[2]
	da.WriteAt(craftPV(pvUUID, pv.Size, vgText("vg-os", vgUUID, pvUUID, 10, "home", "my-data", "usr")), pv.Start)
	var lvUUIDs []string
	for i, name := range []string{"home", "my-data", "usr"} {
		img, id := ext4Image(t, 8<<20, name)
		da.WriteAt(img, pv.Start+1<<20+int64(i)*8<<20)
		lvUUIDs = append(lvUUIDs, id)
	}
	data, _ := ext4Image(t, 16<<20, "data vol")
	db.WriteAt(data, tb.Partitions[0].Start)
	b2, _ := ext4Image(t, 16<<20, "b2")
	db.WriteAt(b2, tb.Partitions[1].Start)

	fstab := fmt.Sprintf(`# /etc/fstab
UUID=%s / ext4 errors=remount-ro 0 1
PARTUUID=%s /boot/efi vfat umask=0077 0 1
/dev/mapper/vg--os-home /home ext4 defaults 0 2
/dev/vg-os/my-data /srv/my\040data ext4 defaults 0 2
/dev/disk/by-id/dm-uuid-LVM-%s /usr ext4 ro 0 2
LABEL=data\040vol /data ext4 defaults 0 2
PARTUUID=1234abcd-02 /mnt/b2 ext4 defaults 0 2
tmpfs /tmp tmpfs defaults 0 0
UUID=00000000-0000-0000-0000-000000000000 /gone ext4 defaults 0 0
`, rootUUID, strings.ToLower(ta.Partitions[0].GUID), strings.ReplaceAll(vgUUID+"LV0002-aaaa-bbbb-cccc-dddd-eeee-ffffff", "-", ""))
	withFakeExt4(t, map[string]fstest.MapFS{
		rootUUID: {
			"etc/fstab":      {Data: []byte(fstab)},
			"etc/os-release": {Mode: fs.ModeSymlink, Data: []byte("../usr/lib/os-release")},
		},
		lvUUIDs[2]: {
			"lib/os-release": {Data: []byte("PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME=\"Debian GNU/Linux\"\nVERSION_ID=\"12\"\nVERSION='12 (bookworm)'\nID=debian\n# a comment\n")},
		},
	})

	s, err := OpenSet(context.Background(), []disk.Disk{da, db}, nil)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.OSInfo(context.Background())
	if err != nil {
		t.Fatalf("OSInfo: %v; volumes %v", err, ids(s))
	}
	if info.Family != "linux" || info.Root != "disk0/p2" || info.Name != "Debian GNU/Linux" || info.VersionID != "12" ||
		info.ID != "debian" || info.Version != "12 (bookworm)" || info.PrettyName != "Debian GNU/Linux 12 (bookworm)" {
		t.Errorf("info %+v", info)
	}
	wantVol := map[string]string{
		"/": "disk0/p2", "/boot/efi": "disk0/p1", "/home": "lvm/vg-os/home", "/srv/my data": "lvm/vg-os/my-data",
		"/usr": "lvm/vg-os/usr", "/data": "disk1/p1", "/mnt/b2": "disk1/p2", "/tmp": "", "/gone": "",
	}
	if len(info.Mounts) != len(wantVol) {
		t.Errorf("%d mounts, want %d: %+v", len(info.Mounts), len(wantVol), info.Mounts)
	}
	for _, m := range info.Mounts {
		if w, ok := wantVol[m.MountPoint]; !ok || m.Volume != w {
			t.Errorf("mount %+v: volume %q, want %q", m, m.Volume, w)
		}
	}
	for _, v := range s.Volumes() {
		want := ""
		for mp, id := range wantVol {
			if id == v.ID {
				want = mp
			}
		}
		if v.MountPoint != want {
			t.Errorf("%s: mount point %q, want %q", v.ID, v.MountPoint, want)
		}
	}
	saved := readers["vfat"]
	delete(readers, "vfat")
	_, err = s.Volumes()[0].FS()
	if saved != nil {
		readers["vfat"] = saved
	}
	if !errors.Is(err, disk.ErrNotSupported) {
		t.Errorf("the vfat volume without a reader: %v, want ErrNotSupported", err)
	}
}

func TestOSInfoNone(t *testing.T) {
	withFakeExt4(t, nil)
	img, _ := ext4Image(t, 8<<20, "plain")
	s, err := OpenSet(context.Background(), []disk.Disk{memDisk(img)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.OSInfo(context.Background()); !errors.Is(err, disk.ErrNotFound) {
		t.Errorf("OSInfo of a set without an OS: %v, want ErrNotFound", err)
	}
}

func TestParseDevName(t *testing.T) {
	for _, c := range []struct {
		name    string
		d, p    int
		matches bool
	}{
		{"/dev/sda", 0, 0, true}, {"/dev/sda1", 0, 1, true}, {"/dev/vdb12", 1, 12, true}, {"/dev/xvdc", 2, 0, true},
		{"/dev/sdaa3", 26, 3, true}, {"/dev/hdd2", 3, 2, true}, {"/dev/nvme0n1", 0, 0, true}, {"/dev/nvme1n1p2", 1, 2, true},
		{"/dev/mmcblk0p1", 0, 1, true}, {"/dev/nvme0n2p1", 0, 0, false}, {"/dev/sd", 0, 0, false}, {"/dev/sda0", 0, 0, false},
		{"/dev/loop0", 0, 0, false}, {"sda1", 0, 0, false},
	} {
		d, p, ok := parseDevName(c.name)
		if ok != c.matches || ok && (d != c.d || p != c.p) {
			t.Errorf("%s: disk %d partition %d %v, want %d %d %v", c.name, d, p, ok, c.d, c.p, c.matches)
		}
	}
	for _, c := range []struct{ in, vg, lv string }{
		{"vg-lv", "vg", "lv"}, {"vg--os-my--data", "vg-os", "my-data"}, {"a---b", "a-", "b"},
	} {
		vg, lv, ok := splitDMName(c.in)
		if !ok || vg != c.vg || lv != c.lv {
			t.Errorf("%s: %q %q %v, want %q %q", c.in, vg, lv, ok, c.vg, c.lv)
		}
	}
}

// TestOSInfoWindowsHook: with no Linux root, an NTFS volume goes to the
// registry hook, whose drive letters are matched to volumes.
func TestOSInfoWindowsHook(t *testing.T) {
	path := sfdiskImage(t, "label: dos\nlabel-id: 0xcafe0001\n,8M,7\n,8M,7\n")
	d := openFile(t, path)
	tab, _ := Partitions(context.Background(), d)
	for i, p := range tab.Partitions {
		bs := make([]byte, 512)
		copy(bs[3:], "NTFS    ")
		binary.LittleEndian.PutUint64(bs[0x48:], uint64(0x1122334455667700+i))
		binary.LittleEndian.PutUint16(bs[510:], 0xaa55)
		d.WriteAt(bs, p.Start)
	}
	oldReader, oldHook := readers["ntfs"], windowsInfo
	t.Cleanup(func() {
		windowsInfo = oldHook
		if oldReader == nil {
			delete(readers, "ntfs")
		} else {
			readers["ntfs"] = oldReader
		}
	})
	readers["ntfs"] = func(r io.ReaderAt, size int64) (inode.FS, error) {
		b := make([]byte, 512)
		r.ReadAt(b, 0)
		tree := fstest.MapFS{}
		if b[0x48] == 1 { // the second partition holds Windows
			tree["Windows/System32/config/SOFTWARE"] = &fstest.MapFile{Data: []byte("regf")}
		}
		return fakeFS{MapFS: tree, typ: "ntfs"}, nil
	}
	windowsInfo = func(fsys fs.FS) (*OSInfo, error) {
		if _, err := fs.Stat(fsys, "Windows/System32/config/SOFTWARE"); err != nil {
			return nil, disk.Errorf(disk.ErrNotFound, "no Windows")
		}
		return &OSInfo{Name: "Windows 10 Pro", Mounts: []Mount{
			{Spec: "PARTUUID=cafe0001-02", MountPoint: "C:"}, {Spec: "PARTUUID=cafe0001-01", MountPoint: "D:"},
		}}, nil
	}
	s := openSet(t, path)
	info, err := s.OSInfo(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if info.Family != "windows" || info.Root != "disk0/p2" || info.Name != "Windows 10 Pro" {
		t.Errorf("info %+v", info)
	}
	vs := s.Volumes()
	if vs[0].MountPoint != "D:" || vs[1].MountPoint != "C:" || vs[1].UUID != "1122334455667701" {
		t.Errorf("volumes %+v / %+v", vs[0], vs[1])
	}
}
