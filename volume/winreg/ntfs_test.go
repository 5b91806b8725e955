package winreg

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vdisk-project/vdisk/internal/testenv"
	"github.com/vdisk-project/vdisk/volume/ntfs"
)

// TestOnNTFS reads the hives from an NTFS volume through package ntfs,
// as vdisk does with a Windows disk: the hive files are put in place with
// ntfs-3g, their directories named in Windows' mixed case.
func TestOnNTFS(t *testing.T) {
	if p := os.Getenv("PATH"); !strings.Contains(p, "/usr/sbin") {
		t.Setenv("PATH", p+":/usr/sbin")
	}
	testenv.Tool(t, "mkntfs")
	testenv.Tool(t, "ntfs-3g")
	testenv.Tool(t, "fusermount3")
	if os.Geteuid() != 0 {
		t.Skip("ntfs-3g mount needs root")
	}
	dir := t.TempDir()
	img := filepath.Join(dir, "c.img")
	if err := os.WriteFile(img, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 32<<20); err != nil {
		t.Fatal(err)
	}
	testenv.Run(t, "mkntfs", "-F", "-Q", img)
	mnt := filepath.Join(dir, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("ntfs-3g", img, mnt).CombinedOutput(); err != nil {
		t.Skipf("ntfs-3g: %v\n%s", err, out)
	}
	mounted := true
	umount := func() {
		if mounted {
			mounted = false
			if out, err := exec.Command("fusermount3", "-u", mnt).CombinedOutput(); err != nil {
				t.Errorf("fusermount3 -u: %v\n%s", err, out)
			}
		}
	}
	t.Cleanup(umount)
	cfg := filepath.Join(mnt, "Windows", "System32", "config")
	if err := os.MkdirAll(cfg, 0o777); err != nil {
		t.Fatal(err)
	}
	for name, tree := range map[string]*wkey{"SOFTWARE": softwareTree(), "SYSTEM": systemTree()} {
		if err := os.WriteFile(filepath.Join(cfg, name), buildHive(tree), 0o666); err != nil {
			t.Fatal(err)
		}
	}
	umount()
	fh, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	st, _ := fh.Stat()
	fsys, err := ntfs.Open(fh, st.Size())
	if err != nil {
		t.Fatal(err)
	}
	o, err := OSInfo(fsys)
	if err != nil || o.ProductName != "Windows 10 Pro" || o.CurrentBuild != "19045" {
		t.Errorf("OSInfo = %+v, %v", o, err)
	}
	m, err := DriveLetters(fsys)
	if err != nil || m["C:"] != "mbr:0x1234abcd:1048576" {
		t.Errorf("DriveLetters = %v, %v", m, err)
	}
}
