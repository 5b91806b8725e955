package volume

import (
	"bytes"
	"context"
	"io"
	"os"
	"testing"

	"github.com/vdisk-project/vdisk/disk"
)

// prefixDisk is a read-only disk of size bytes whose first bytes are b
// and the rest zeros.
type prefixDisk struct {
	b    []byte
	size int64
}

func (p prefixDisk) ReadAt(buf []byte, off int64) (int, error) {
	if off < 0 {
		return 0, disk.Errorf(disk.ErrInvalid, "negative offset")
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
func (p prefixDisk) WriteAt([]byte, int64) (int, error) { return 0, disk.ErrPermission }
func (p prefixDisk) Size() int64                        { return p.size }
func (p prefixDisk) Flush() error                       { return nil }
func (p prefixDisk) Close() error                       { return nil }

// FuzzSet: two disks whose first bytes are the inputs (the seeds are two
// PVs of one VG made by the LVM tools, see volume/lvm/testdata) open as a
// set without panicking, and every volume that opens reads.
func FuzzSet(f *testing.F) {
	a, errA := os.ReadFile("lvm/testdata/pv-a.bin")
	b, errB := os.ReadFile("lvm/testdata/pv-b.bin")
	if errA == nil && errB == nil {
		f.Add(a, b)
	}
	// An MBR disk whose partition 1 is a PV (crafted) of a VG with one LV.
	mbr := make([]byte, 2<<20)
	putEntry(mbr, 0, 0, 0x8e, 2048, 28672)
	const pvUUID = "PVPVPV-aaaa-bbbb-cccc-dddd-eeee-ffffff"
	copy(mbr[1<<20:], craftPV(pvUUID, 14<<20, vgText("vg", "VGVGVG-aaaa-bbbb-cccc-dddd-eeee-ffffff", pvUUID, 2, "root")))
	f.Add(bytes.TrimRight(mbr, "\x00"), []byte{})
	f.Fuzz(func(t *testing.T, a, b []byte) {
		if len(a) > 1<<20 || len(b) > 1<<20 {
			return
		}
		s, err := OpenSet(context.Background(), []disk.Disk{prefixDisk{a, 16 << 20}, prefixDisk{b, 16 << 20}}, nil)
		if err != nil {
			return
		}
		buf := make([]byte, 4096)
		for _, v := range s.Volumes() {
			if v.Size < 0 || v.Start < 0 {
				t.Fatalf("volume %+v", v)
			}
			if r, err := v.Open(); err == nil {
				r.ReadAt(buf, 0)
				r.ReadAt(buf, max(0, r.Size()-10))
			}
		}
		s.OSInfo(context.Background())
	})
}

// TestSetSeeds: the fuzz seed (two PVs of a VG) opens with its three LVs.
func TestSetSeeds(t *testing.T) {
	a, _ := os.ReadFile("lvm/testdata/pv-a.bin")
	b, _ := os.ReadFile("lvm/testdata/pv-b.bin")
	s, err := OpenSet(context.Background(), []disk.Disk{prefixDisk{a, 16 << 20}, prefixDisk{b, 16 << 20}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"disk0", "disk1", "lvm/vgseed/lv1", "lvm/vgseed/striped", "lvm/vgseed/span"}
	if got := ids(s); len(got) != len(want) {
		t.Fatalf("volumes %v, want %v", got, want)
	}
	for i, v := range s.Volumes() {
		if v.ID != want[i] {
			t.Errorf("volume %d is %s, want %s", i, v.ID, want[i])
		}
	}
	if _, err := s.Disks()[0].WriteAt([]byte{1}, 0); disk.CodeOf(err) != disk.ErrPermission {
		t.Errorf("a write to a disk of the set: %v, want ErrPermission", err)
	}
}

// TestSetCraftedPV: the crafted FuzzSet seed lists its LV.
func TestSetCraftedPV(t *testing.T) {
	mbr := make([]byte, 2<<20)
	putEntry(mbr, 0, 0, 0x8e, 2048, 28672)
	const pvUUID = "PVPVPV-aaaa-bbbb-cccc-dddd-eeee-ffffff"
	copy(mbr[1<<20:], craftPV(pvUUID, 14<<20, vgText("vg", "VGVGVG-aaaa-bbbb-cccc-dddd-eeee-ffffff", pvUUID, 2, "root")))
	s, err := OpenSet(context.Background(), []disk.Disk{prefixDisk{mbr, 16 << 20}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	v, err := s.Volume("lvm/vg/root")
	if err != nil || v.Size != 8<<20 || v.Segments[0].Stripes[0].Off != 2<<20 || v.Unsupported != "" {
		t.Errorf("%+v %v; problems %q", v, err, s.Problems())
	}
}
