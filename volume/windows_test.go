package volume

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/vdisk-project/vdisk/disk"
	"github.com/vdisk-project/vdisk/format"
	"github.com/vdisk-project/vdisk/internal/testenv"
)

// windowsFS is a Windows system volume's registry, as hives (written
// by volume/winreg's test writer, which hivex reads back).
func windowsFS(t *testing.T) fstest.MapFS {
	t.Helper()
	sw, err := os.ReadFile("testdata/windows/SOFTWARE")
	if err != nil {
		t.Fatal(err)
	}
	sys, err := os.ReadFile("testdata/windows/SYSTEM")
	if err != nil {
		t.Fatal(err)
	}
	return fstest.MapFS{
		"Windows/System32/config/SOFTWARE": {Data: sw},
		"Windows/System32/config/SYSTEM":   {Data: sys},
	}
}

func TestReadWindows(t *testing.T) {
	info, err := readWindows(windowsFS(t))
	if err != nil {
		t.Fatal(err)
	}
	if info.Family != "windows" || info.Name != "Windows 10 Pro" || info.Version != "22H2" || info.VersionID != "10.0.19045.3803" || info.PrettyName != "Windows 10 Pro 22H2" {
		t.Errorf("info %+v", info)
	}
	var specs []string
	for _, m := range info.Mounts {
		specs = append(specs, m.MountPoint+"="+m.Spec)
	}
	if got := strings.Join(specs, " "); got != "C:=WINMBR=0x1234abcd:1048576 D:=PARTUUID=12345678-9ABC-DEF0-0123-456789ABCDEF" {
		t.Errorf("mounts %s", got)
	}
}

// TestWindowsDriveLetterMatch: a drive letter of an MBR disk finds its
// partition by the disk signature and the partition's offset.
func TestWindowsDriveLetterMatch(t *testing.T) {
	sfdisk := testenv.Tool(t, "sfdisk")
	raw := filepath.Join(t.TempDir(), "w.raw")
	os.WriteFile(raw, nil, 0o644)
	os.Truncate(raw, 64<<20)
	cmd := exec.Command(sfdisk, "-q", raw)
	cmd.Stdin = strings.NewReader("label: dos\nlabel-id: 0x1234abcd\nstart=2048, size=40960, type=7\nstart=43008, type=7\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("sfdisk: %v\n%s", err, out)
	}
	d, _, err := format.Open(context.Background(), raw, &format.OpenOptions{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	s, err := OpenSet(context.Background(), []disk.Disk{d}, nil)
	if err != nil {
		t.Fatal(err)
	}
	v := s.match(s.Volumes(), "WINMBR=0x1234abcd:1048576")
	if v == nil || v.ID != "disk0/p1" {
		t.Errorf("C: matched %v", v)
	}
	if v := s.match(s.Volumes(), "WINMBR=0x1234abcd:2097152"); v != nil {
		t.Errorf("an offset no partition has matched %s", v.ID)
	}
	if v := s.match(s.Volumes(), "WINMBR=0xdeadbeef:1048576"); v != nil {
		t.Errorf("another disk's signature matched %s", v.ID)
	}
}
