package volume

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/vdisk-project/vdisk/internal/testenv"
)

// blkid reads what blkid -p says of a file (or of the volume at off).
func blkid(t *testing.T, path string, off int64) map[string]string {
	t.Helper()
	testenv.Tool(t, "blkid")
	args := []string{"-p", "-o", "export"}
	if off > 0 {
		args = append(args, "-O", strconv.FormatInt(off, 10))
	}
	out, _ := exec.Command("blkid", append(args, path)...).Output()
	m := map[string]string{}
	for _, l := range strings.Split(string(out), "\n") {
		if k, v, ok := strings.Cut(l, "="); ok {
			m[k] = strings.ReplaceAll(v, `\ `, " ") // export escapes spaces
		}
	}
	return m
}

// mkfs makes a filesystem image of size bytes with a mkfs tool.
func mkfs(t *testing.T, size int64, tool string, args ...string) string {
	t.Helper()
	testenv.Tool(t, tool)
	path := filepath.Join(t.TempDir(), tool+".img")
	f, _ := os.Create(path)
	f.Truncate(size)
	f.Close()
	if out, err := exec.Command(tool, append(args, path)...).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", tool, err, out)
	}
	return path
}

// TestProbeAgreesWithBlkid: filesystems made by the mkfs tools are named,
// with their UUID and label, as blkid names them.
func TestProbeAgreesWithBlkid(t *testing.T) {
	for _, c := range []struct {
		tool string
		size int64
		args []string
	}{
		{"mkfs.ext4", 64 << 20, []string{"-q", "-L", "root fs"}},
		{"mkfs.ext4", 64 << 20, []string{"-q", "-t", "ext3", "-L", "old"}},
		{"mkfs.ext4", 64 << 20, []string{"-q", "-t", "ext2"}},
		{"mkfs.xfs", 300 << 20, []string{"-q", "-L", "data"}},
		{"mkfs.vfat", 64 << 20, []string{"-n", "BOOT"}},
		{"mkfs.vfat", 64 << 20, []string{"-F", "32", "-n", "EFI"}},
		{"mkswap", 64 << 20, []string{"-L", "sw"}},
		{"mkfs.ntfs", 64 << 20, []string{"-Q", "-F", "-L", "win"}},
		{"mkfs.ntfs", 64 << 20, []string{"-Q", "-F", "-c", "65536", "-L", "Data Disk"}},
	} {
		t.Run(c.tool+strings.Join(c.args, ""), func(t *testing.T) {
			path := mkfs(t, c.size, c.tool, c.args...)
			want := blkid(t, path, 0)
			_, vs, err := Volumes(context.Background(), openFile(t, path))
			if err != nil {
				t.Fatal(err)
			}
			if len(vs) != 1 {
				t.Fatalf("%d volumes, want the whole disk", len(vs))
			}
			got := vs[0].Filesystem
			if got.Type != want["TYPE"] || got.UUID != want["UUID"] || got.Label != want["LABEL"] {
				t.Errorf("got %+v; blkid says %v", got, want)
			}
		})
	}
}

// TestVolumesOfPartitions: a GPT disk whose partitions hold an ext4 and a
// swap volume, as blkid sees them at the partitions' offsets.
func TestVolumesOfPartitions(t *testing.T) {
	path := sfdiskImage(t, "label: gpt\nsize=20M, type=L\nsize=20M, type=S\nsize=4M, type=L\n")
	ext := mkfs(t, 20<<20, "mkfs.ext4", "-q", "-L", "part1")
	sw := mkfs(t, 20<<20, "mkswap", "-L", "part2")
	d := openFile(t, path)
	tab, err := Partitions(context.Background(), d)
	if err != nil {
		t.Fatal(err)
	}
	for i, src := range []string{ext, sw} {
		b, _ := os.ReadFile(src)
		d.WriteAt(b, tab.Partitions[i].Start)
	}
	_, vs, err := Volumes(context.Background(), d)
	if err != nil {
		t.Fatal(err)
	}
	if len(vs) != 3 {
		t.Fatalf("%d volumes, want 3", len(vs))
	}
	for i, v := range vs {
		want := blkid(t, path, v.Start)
		if v.Type != want["TYPE"] || v.UUID != want["UUID"] || v.Label != want["LABEL"] {
			t.Errorf("volume %d at %d: %+v; blkid says %v", i, v.Start, v.Filesystem, want)
		}
	}
	if vs[2].Type != "" {
		t.Errorf("the empty partition holds %q", vs[2].Type)
	}
}
