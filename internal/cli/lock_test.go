package cli

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/vdisk-project/vdisk/internal/testenv"
)

// TestForceShare: while qemu-nbd writes a VMDK, vdisk's image commands
// are refused with the busy exit code, and -U / --force-share lets the
// read-only ones through, as with qemu-img.
func TestForceShare(t *testing.T) {
	qemuNBD := testenv.Tool(t, "qemu-nbd")
	dir := t.TempDir()
	img := filepath.Join(dir, "d.vmdk")
	mustRun(t, "create", "-f", "vmdk", img, "4M")
	pidFile := filepath.Join(dir, "pid")
	if out, err := exec.Command(qemuNBD, "--fork", "--pid-file", pidFile, "-k", filepath.Join(dir, "sock"), "-f", "vmdk", img).CombinedOutput(); err != nil {
		t.Fatalf("qemu-nbd: %v\n%s", err, out)
	}
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	t.Cleanup(func() { syscall.Kill(pid, syscall.SIGTERM) })

	_, busyOut, busyCode := run(t, "resize", img, "8M")
	if busyCode != ExitBusy || !strings.Contains(busyOut, "image is in use by another process") {
		t.Errorf("resize while qemu-nbd writes: exit %d, stderr %q; want a lock failure", busyCode, busyOut)
	}
	for _, args := range [][]string{
		{"info", img},
		{"map", img},
		{"check", img},
		{"convert", "-O", "raw", img, filepath.Join(dir, "out.raw")},
	} {
		_, errs, code := run(t, args...)
		if code != busyCode || !strings.Contains(errs, "image is in use by another process") {
			t.Errorf("vdisk %s while qemu-nbd writes: exit %d, stderr %q; want exit %d, a lock failure", strings.Join(args, " "), code, errs, busyCode)
		}
		for _, flag := range []string{"-U", "--force-share"} {
			a := append([]string{args[0], flag}, args[1:]...)
			if a[0] == "convert" {
				a[len(a)-1] += flag
			}
			mustRun(t, a...)
		}
	}
	if _, errs, code := run(t, "export", "-U", img); code == 0 || !strings.Contains(errs, "read-only") {
		t.Errorf("export -U of a writable image: exit %d, stderr %q; want a usage error", code, errs)
	}
}
