package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vdisk-project/vdisk/internal/testenv"
	"github.com/vdisk-project/vdisk/server/servertest"
)

// guestImage builds a VMDK with a GPT holding a FAT volume made and filled
// by dosfstools and mtools from a source tree; it returns the image and
// the tree.
func guestImage(t *testing.T) (string, string) {
	t.Helper()
	mkfs := testenv.Tool(t, "mkfs.vfat")
	mcopy := testenv.Tool(t, "mcopy")
	sfdisk := testenv.Tool(t, "sfdisk")
	qimg := testenv.Tool(t, "qemu-img")
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	rng := rand.New(rand.NewSource(4))
	files := map[string]int{"etc/hostname": 6, "docs/a.txt": 200 << 10, "docs/empty": 0, "deep/x/y/z.txt": 5000, "docs/long file name.bin": 70000}
	for p, n := range files {
		b := make([]byte, n)
		rng.Read(b)
		os.MkdirAll(filepath.Join(src, filepath.Dir(p)), 0o755)
		if err := os.WriteFile(filepath.Join(src, p), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	sh := func(name string, args ...string) {
		t.Helper()
		if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
			t.Fatalf("%s %v: %v\n%s", name, args, err, out)
		}
	}
	fat := filepath.Join(dir, "fat.img")
	sh(mkfs, "-C", "-n", "BOOT", fat, "32768")
	for _, top := range []string{"etc", "docs", "deep"} {
		sh(mcopy, "-s", "-m", "-i", fat, filepath.Join(src, top), "::/")
	}
	raw := filepath.Join(dir, "d.raw")
	sh("truncate", "-s", "48M", raw)
	cmd := exec.Command(sfdisk, "-q", raw)
	cmd.Stdin = strings.NewReader("label: gpt\nstart=2048, size=65536, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name=esp\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("sfdisk: %v\n%s", err, out)
	}
	sh("dd", "if="+fat, "of="+raw, "bs=1M", "seek=1", "conv=notrunc", "status=none")
	img := filepath.Join(dir, "d.vmdk")
	sh(qimg, "convert", "-f", "raw", "-O", "vmdk", raw, img)
	return img, src
}

func TestFileCommands(t *testing.T) {
	img, src := guestImage(t)
	var vols struct {
		Volumes []guestVolume `json:"volumes"`
	}
	if err := json.Unmarshal([]byte(mustRun(t, "volumes", "--output=json", img)), &vols); err != nil {
		t.Fatal(err)
	}
	if len(vols.Volumes) != 1 || vols.Volumes[0].FSType != "vfat" || vols.Volumes[0].Label != "BOOT" || vols.Volumes[0].ID != "disk0/p1" || vols.Volumes[0].Unsupported != "" {
		t.Fatalf("volumes: %+v", vols.Volumes)
	}
	if out := mustRun(t, "volumes", img); !strings.Contains(out, "disk0/p1") || !strings.Contains(out, "BOOT") {
		t.Errorf("volumes table:\n%s", out)
	}
	out := mustRun(t, "ls", img, "/docs")
	if !strings.Contains(out, "a.txt") || !strings.Contains(out, "204800") || !strings.Contains(out, "long file name.bin") {
		t.Errorf("ls:\n%s", out)
	}
	var entries []lsEntry
	json.Unmarshal([]byte(mustRun(t, "ls", "-R", "--output=json", "--volume", "BOOT", img, "/")), &entries)
	if len(entries) != 10 { // 3 top directories, 2 below deep, 5 files
		t.Errorf("ls -R: %d entries: %+v", len(entries), entries)
	}
	found := false
	for _, e := range entries {
		found = found || (e.Path == "/deep/x/y/z.txt" && e.Size == 5000 && e.Type == "file")
	}
	if !found {
		t.Errorf("ls -R lacks /deep/x/y/z.txt: %+v", entries)
	}
	want, _ := os.ReadFile(filepath.Join(src, "docs/a.txt"))
	if got := mustRun(t, "cat", img, "/docs/a.txt"); got != string(want) {
		t.Errorf("cat: %d bytes, want %d", len(got), len(want))
	}
	if _, _, code := run(t, "cat", img, "/nope"); code != ExitNotFound {
		t.Errorf("cat of a missing file: exit %d", code)
	}
	if _, _, code := run(t, "ls", "--volume", "disk0/p9", img, "/"); code != ExitNotFound {
		t.Errorf("ls of a missing volume: exit %d", code)
	}
	dest := t.TempDir()
	mustRun(t, "extract", img, "/docs", "/deep", dest)
	for _, d := range []string{"docs", "deep"} {
		if out, err := exec.Command("diff", "-r", filepath.Join(src, d), filepath.Join(dest, d)).CombinedOutput(); err != nil {
			t.Errorf("extract %s: %v\n%s", d, err, out)
		}
	}
	st, _ := os.Stat(filepath.Join(dest, "docs/a.txt"))
	sst, _ := os.Stat(filepath.Join(src, "docs/a.txt"))
	if st == nil || sst == nil || st.ModTime().Sub(sst.ModTime()).Abs() > 2*time.Second {
		t.Errorf("extract kept no mtime: %v vs %v", st, sst)
	}
}

func TestMountCommand(t *testing.T) {
	testenv.FUSE(t)
	img, src := guestImage(t)
	mnt := t.TempDir()
	mctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan int, 1)
	var out, errb bytes.Buffer
	go func() { done <- Main(mctx, []string{"mount", img, mnt}, &out, &errb) }()
	deadline := time.Now().Add(20 * time.Second)
	for !fuseMounts()[mnt] {
		if time.Now().After(deadline) {
			t.Fatalf("not mounted: %s", errb.String())
		}
		select {
		case code := <-done:
			t.Fatalf("mount exited %d: %s", code, errb.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
	if out, err := exec.Command("diff", "-r", src, filepath.Join(mnt, "BOOT")).CombinedOutput(); err != nil {
		t.Errorf("diff -r through the mount: %v\n%s", err, out)
	}
	if err := os.WriteFile(filepath.Join(mnt, "BOOT", "new"), nil, 0o644); err == nil {
		t.Error("the mount is writable")
	}
	mustRun(t, "umount", mnt)
	select {
	case code := <-done:
		if code != 0 {
			t.Errorf("mount exited %d after umount: %s", code, errb.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("mount did not return after umount")
	}
	if fuseMounts()[mnt] {
		t.Error("still mounted")
	}
	if _, _, code := run(t, "umount", mnt); code != ExitNotFound {
		t.Errorf("umount of a directory that is not mounted: exit %d", code)
	}
	// Ctrl-C unmounts too.
	mctx2, cancel2 := context.WithCancel(ctx)
	go func() { done <- Main(mctx2, []string{"mount", img, mnt}, &out, &errb) }()
	for !fuseMounts()[mnt] {
		time.Sleep(20 * time.Millisecond)
	}
	cancel2()
	if code := <-done; code != 0 || fuseMounts()[mnt] {
		t.Errorf("after Ctrl-C: exit %d, mounted %v", code, fuseMounts()[mnt])
	}
}

// TestFileCommandsPeers: the same guest read through qemu-nbd and as a
// host disk's snapshot through the kit.
func TestFileCommandsPeers(t *testing.T) {
	qnbd := testenv.Tool(t, "qemu-nbd")
	img, src := guestImage(t)
	want, _ := os.ReadFile(filepath.Join(src, "docs/a.txt"))
	sock := filepath.Join(t.TempDir(), "s")
	cmd := exec.Command(qnbd, "-r", "-t", "-e", "4", "-f", "vmdk", "-k", sock, img)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	for i := 0; i < 100; i++ {
		if _, err := os.Stat(sock); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	uri := "nbd+unix:///?socket=" + sock
	if got := mustRun(t, "cat", uri, "/docs/a.txt"); got != string(want) {
		t.Errorf("cat through qemu-nbd: %d bytes, want %d", len(got), len(want))
	}
	// A host disk and its snapshot.
	t.Setenv("VDISK_CONFIG_DIR", t.TempDir())
	h := servertest.New(t, nil)
	pwf := filepath.Join(t.TempDir(), "pw")
	os.WriteFile(pwf, []byte(servertest.Password+"\n"), 0o600)
	mustRun(t, "login", "--server", h.API, "--thumbprint", h.Thumbprint, "--password-file", pwf)
	mustRun(t, "disk", "create", "guest", "48M")
	mustRun(t, "convert", "-n", img, "vdisk:disk/guest")
	var sn struct{ ID string }
	json.Unmarshal([]byte(mustRun(t, "snapshot", "create", "--disk", "guest", "--name", "s1", "--output=json")), &sn)
	if sn.ID == "" {
		t.Fatal("no snapshot ID")
	}
	if got := mustRun(t, "cat", "vdisk:disk/guest@"+sn.ID, "/docs/a.txt"); got != string(want) {
		t.Errorf("cat of a host snapshot: %d bytes, want %d", len(got), len(want))
	}
	if out := mustRun(t, "ls", "vdisk:disk/guest@"+sn.ID, "/deep/x/y"); !strings.Contains(out, "z.txt") {
		t.Errorf("ls of a host snapshot:\n%s", out)
	}
}

// TestFileCommandsOnPoint: files read straight out of a backup point.
func TestFileCommandsOnPoint(t *testing.T) {
	img, src := guestImage(t)
	backupRepo(t)
	lastBackup(t, img)
	want, _ := os.ReadFile(filepath.Join(src, "docs/a.txt"))
	if got := mustRun(t, "cat", "point:latest", "/docs/a.txt"); got != string(want) {
		t.Errorf("cat of a backup point: %d bytes, want %d", len(got), len(want))
	}
	dest := filepath.Join(t.TempDir(), "deep")
	mustRun(t, "extract", "point:latest", "/deep", dest)
	if out, err := exec.Command("diff", "-r", filepath.Join(src, "deep"), dest).CombinedOutput(); err != nil {
		t.Errorf("extract from a point: %v\n%s", err, out)
	}
}

// TestGuestOS: a Linux guest as the tools make it — an ext4 root made by
// mkfs.ext4 -d with os-release and an fstab naming the EFI partition by
// UUID — shows its OS and mount points, and the root is the default
// volume of ls.
func TestGuestOS(t *testing.T) {
	mkext4 := testenv.Tool(t, "mkfs.ext4")
	mkfat := testenv.Tool(t, "mkfs.vfat")
	sfdisk := testenv.Tool(t, "sfdisk")
	dir := t.TempDir()
	root := filepath.Join(dir, "root")
	os.MkdirAll(filepath.Join(root, "etc"), 0o755)
	os.MkdirAll(filepath.Join(root, "boot/efi"), 0o755)
	os.WriteFile(filepath.Join(root, "etc/os-release"), []byte("PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME=\"Debian GNU/Linux\"\nVERSION_ID=\"12\"\nID=debian\n"), 0o644)
	os.WriteFile(filepath.Join(root, "etc/fstab"), []byte("LABEL=rootfs / ext4 errors=remount-ro 0 1\nUUID=1234-ABCD /boot/efi vfat umask=0077 0 1\ntmpfs /tmp tmpfs defaults 0 0\n"), 0o644)
	os.Symlink("os-release", filepath.Join(root, "etc/os-release.link"))
	sh := func(name string, args ...string) {
		t.Helper()
		if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
			t.Fatalf("%s %v: %v\n%s", name, args, err, out)
		}
	}
	fat, ext := filepath.Join(dir, "efi.img"), filepath.Join(dir, "root.img")
	sh(mkfat, "-C", "-i", "1234ABCD", "-n", "EFI", fat, "16384")
	sh(mkext4, "-q", "-L", "rootfs", "-d", root, ext, "32M")
	raw := filepath.Join(dir, "d.raw")
	sh("truncate", "-s", "64M", raw)
	cmd := exec.Command(sfdisk, "-q", raw)
	cmd.Stdin = strings.NewReader("label: gpt\nstart=2048, size=32768, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B\nstart=34816, size=65536, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("sfdisk: %v\n%s", err, out)
	}
	sh("dd", "if="+fat, "of="+raw, "bs=512", "seek=2048", "conv=notrunc", "status=none")
	sh("dd", "if="+ext, "of="+raw, "bs=512", "seek=34816", "conv=notrunc", "status=none")
	var vols struct {
		Volumes []guestVolume `json:"volumes"`
		OS      *guestOS      `json:"os"`
	}
	if err := json.Unmarshal([]byte(mustRun(t, "volumes", "--output=json", raw)), &vols); err != nil {
		t.Fatal(err)
	}
	if vols.OS == nil || vols.OS.Pretty != "Debian GNU/Linux 12 (bookworm)" || vols.OS.RootID != "disk0/p2" {
		t.Errorf("OS: %+v", vols.OS)
	}
	mp := map[string]string{}
	for _, v := range vols.Volumes {
		mp[v.ID] = v.MountPoint
	}
	if mp["disk0/p1"] != "/boot/efi" || mp["disk0/p2"] != "/" {
		t.Errorf("mount points %v", mp)
	}
	if out := mustRun(t, "ls", raw, "/etc"); !strings.Contains(out, "os-release.link -> os-release") || !strings.Contains(out, "fstab") {
		t.Errorf("ls /etc of the root:\n%s", out)
	}
	if out := mustRun(t, "volumes", raw); !strings.Contains(out, "OS: Debian GNU/Linux 12 (bookworm)") {
		t.Errorf("volumes:\n%s", out)
	}
	if _, _, code := run(t, "cat", "--volume", "/boot/efi", raw, "/"); code != ExitInvalid {
		t.Errorf("cat of a directory: exit %d, want %d", code, ExitInvalid)
	}
}
