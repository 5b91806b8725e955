package volume

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"testing"

	"github.com/vdisk-project/vdisk/disk"
	"github.com/vdisk-project/vdisk/internal/testenv"
)

// TestManyGPTPartitions: a GPT sgdisk fills with 100 partitions of
// assorted types and names is read as sfdisk reads it.
func TestManyGPTPartitions(t *testing.T) {
	testenv.Tool(t, "sgdisk")
	path := newFile(t, "many.img", 64<<20)
	args := []string{"-o"}
	types := []string{"8300", "8200", "8e00", "ef00", "0700", "fd00"}
	for i := 1; i <= 100; i++ {
		args = append(args, "-n", fmt.Sprintf("%d:0:+256K", i), "-t", fmt.Sprintf("%d:%s", i, types[i%len(types)]),
			"-c", fmt.Sprintf("%d:part %d", i, i))
	}
	testenv.Run(t, "sgdisk", append(args, path)...)
	s := openSet(t, path)
	agree(t, path, s.Tables()[0])
	if vs := s.Volumes(); len(vs) != 100 || vs[99].ID != "disk0/p100" || vs[99].Partition.Name != "part 100" {
		t.Errorf("%d volumes, the last %+v", len(vs), vs[len(vs)-1])
	}
}

// TestWindowsContainers: partitions of a Windows dynamic disk (MBR type
// 0x42, GPT LDM metadata and data) and of a Storage Spaces pool are
// listed as unsupported.
func TestWindowsContainers(t *testing.T) {
	mbr := sfdiskImage(t, "label: dos\n,8M,42\n,8M,7\n")
	s := openSet(t, mbr)
	vs := s.Volumes()
	if len(vs) != 2 || !strings.HasPrefix(vs[0].Unsupported, "Windows dynamic disk (LDM)") || vs[1].Unsupported != "" {
		t.Errorf("MBR dynamic disk: %+v", vs)
	}
	testenv.Tool(t, "sgdisk")
	gpt := newFile(t, "gpt.img", 64<<20)
	testenv.Run(t, "sgdisk", "-n", "1:0:+1M", "-t", "1:5808C8AA-7E8F-42E0-85D2-E1E90434CFB3",
		"-n", "2:0:+8M", "-t", "2:AF9B60A0-1431-4F62-BC68-3311714A69AD",
		"-n", "3:0:+8M", "-t", "3:E75CAF8F-F680-4CEE-AFA3-B001E56EFC2D", "-n", "4:0:+8M", "-t", "4:8300", gpt)
	vs = openSet(t, gpt).Volumes()
	want := []string{"Windows dynamic disk (LDM)", "Windows dynamic disk (LDM)", "Windows Storage Spaces", ""}
	if len(vs) != len(want) {
		t.Fatalf("%d volumes, want %d", len(vs), len(want))
	}
	for i, w := range want {
		if !strings.HasPrefix(vs[i].Unsupported, w) || (w == "") != (vs[i].Unsupported == "") {
			t.Errorf("%s (%s): unsupported %q, want %q", vs[i].ID, vs[i].Partition.Kind, vs[i].Unsupported, w)
		}
	}
}

// TestLUKS: LUKS1 and LUKS2 headers cryptsetup writes (on a file; no
// device-mapper needed) are named as blkid names them, and listed as
// unsupported.
func TestLUKS(t *testing.T) {
	testenv.Tool(t, "cryptsetup")
	for _, v := range []string{"luks1", "luks2"} {
		t.Run(v, func(t *testing.T) {
			path := newFile(t, v+".img", 32<<20)
			args := []string{"luksFormat", "--type", v, "--batch-mode", "--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000", "--key-file", "-"}
			if v == "luks2" {
				args = append(args, "--label", "secret")
			}
			cmd := exec.Command("cryptsetup", append(args, path)...)
			cmd.Stdin = strings.NewReader("passphrase")
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("cryptsetup: %v\n%s", err, out)
			}
			want := blkid(t, path, 0)
			s := openSet(t, path)
			got := s.Volumes()[0]
			if got.Type != want["TYPE"] || got.UUID != want["UUID"] || got.Label != want["LABEL"] || got.Version != want["VERSION"] {
				t.Errorf("%+v; blkid says %v", got.Filesystem, want)
			}
			if !strings.HasPrefix(got.Unsupported, "LUKS"+want["VERSION"]+" encrypted volume") {
				t.Errorf("unsupported %q", got.Unsupported)
			}
			if _, err := got.FS(); !errors.Is(err, disk.ErrNotSupported) {
				t.Errorf("FS of a LUKS volume: %v, want ErrNotSupported", err)
			}
			if _, err := got.Open(); err != nil {
				t.Errorf("the raw bytes of a LUKS volume: %v", err)
			}
		})
	}
}

// TestMDSuperblocks: md RAID superblocks of each version, at each place
// the kernel looks for them, written here from the layout (mdadm needs
// the kernel's md driver to make one), are named as blkid names them.
func TestMDSuperblocks(t *testing.T) {
	const size = 16<<20 + 12345*512 // not a multiple of 64 KiB
	for _, c := range []struct {
		version string
		at      int64
	}{
		{"1.2", 4096}, {"1.1", 0}, {"1.0", (size - 8192) &^ 4095}, {"0.90.0", size&^(64<<10-1) - 64<<10},
	} {
		t.Run(c.version, func(t *testing.T) {
			path := newFile(t, "md.img", size)
			if c.at > 4096 {
				// A RAID1 member with its superblock at the end holds the
				// array's filesystem at its start.
				path = mkfs(t, size, "mkfs.ext4", "-q")
			}
			sb := mdSuperblock(c.version, c.at)
			writeRange(t, path, c.at, sb)
			want := blkid(t, path, 0)
			if want["TYPE"] != "linux_raid_member" {
				t.Fatalf("blkid does not take the crafted superblock: %v", want)
			}
			got := openSet(t, path).Volumes()[0]
			if got.Type != want["TYPE"] || got.UUID != want["UUID"] || got.Label != want["LABEL"] {
				t.Errorf("%+v; blkid says %v", got.Filesystem, want)
			}
			if v, ok := want["VERSION"]; ok && v != got.Version {
				t.Errorf("version %q; blkid says %q", got.Version, v)
			}
			if !strings.HasPrefix(got.Unsupported, "Linux md RAID member (metadata "+c.version) {
				t.Errorf("unsupported %q", got.Unsupported)
			}
		})
	}
}

// mdSuperblock lays out an md superblock (md_p.h): v1 with its checksum,
// or v0.90 (little-endian, as x86 writes it).
func mdSuperblock(version string, at int64) []byte {
	le := binary.LittleEndian
	id := make([]byte, 16)
	rand.Read(id)
	if version == "0.90.0" {
		b := make([]byte, 4096)
		le.PutUint32(b, 0xa92b4efc)
		le.PutUint32(b[8:], 90)
		copy(b[20:24], id[:4])
		le.PutUint32(b[28:], 1) // level
		le.PutUint32(b[36:], 2) // nr_disks
		le.PutUint32(b[40:], 2) // raid_disks
		copy(b[52:64], id[4:])
		var sum uint32
		for i := 0; i < 4096; i += 4 {
			sum += le.Uint32(b[i:])
		}
		le.PutUint32(b[38*4:], sum) // sb_csum
		return b
	}
	b := make([]byte, 1024)
	le.PutUint32(b, 0xa92b4efc)
	le.PutUint32(b[4:], 1)
	copy(b[16:32], id)
	copy(b[32:], "host:md0")
	le.PutUint32(b[72:], 1)               // level
	le.PutUint32(b[92:], 2)               // raid_disks
	le.PutUint64(b[128:], 2048)           // data_offset
	le.PutUint64(b[144:], uint64(at/512)) // super_offset
	le.PutUint32(b[220:], 2)              // max_dev
	n := 256 + 2*2
	var sum uint64
	for i := 0; i+4 <= n; i += 4 {
		sum += uint64(le.Uint32(b[i:]))
	}
	le.PutUint32(b[216:], uint32(sum&0xffffffff+sum>>32))
	return b
}
