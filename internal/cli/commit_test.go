package cli

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/vdisk-project/vdisk/internal/testenv"
)

// copyFiles copies the named files of dir into a new directory.
func copyFiles(t *testing.T, dir string, names ...string) string {
	t.Helper()
	to := t.TempDir()
	for _, n := range names {
		b, err := os.ReadFile(filepath.Join(dir, n))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(to, n), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return to
}

// TestCommit: after vdisk commit the parent reads as the child did
// (qemu-img compare with the expected data) and as qemu-img commit leaves
// a copy of it; the child still opens on its parent and is emptied (every
// byte from the parent in qemu-img map), or keeps its grains with -d;
// -b commits a grandchild's chain into its base and links it there; a
// parent with another child, and an image without a parent, are refused.
func TestCommit(t *testing.T) {
	testenv.Tool(t, "qemu-img")
	testenv.Tool(t, "qemu-io")
	dir := t.TempDir()
	base, child := filepath.Join(dir, "base.vmdk"), filepath.Join(dir, "child.vmdk")
	mustRun(t, "create", "-f", "vmdk", base, "8M")
	qemuIO(t, base, "1 0", "3 2M")
	mustRun(t, "create", "-f", "vmdk", "-b", base, child)
	qemuIO(t, child, "2 1M", "4 2M")
	want := filepath.Join(dir, "want.raw")
	mustRun(t, "convert", "-O", "raw", child, want)
	peer := copyFiles(t, dir, "base.vmdk", "child.vmdk")

	if out := mustRun(t, "commit", child); out != "Image committed.\n" {
		t.Errorf("commit printed %q", out)
	}
	testenv.Run(t, "qemu-img", "compare", "-f", "raw", "-F", "vmdk", want, base)
	testenv.Run(t, "qemu-img", "commit", filepath.Join(peer, "child.vmdk"))
	testenv.Run(t, "qemu-img", "compare", "-f", "vmdk", "-F", "vmdk", base, filepath.Join(peer, "base.vmdk"))
	testenv.Run(t, "qemu-img", "compare", "-f", "raw", "-F", "vmdk", want, child)
	for _, off := range []int64{0, 1 << 20, 2 << 20} {
		if d := depthAt(t, child, off); d != 1 {
			t.Errorf("after commit, the child's byte %d comes from depth %d, want 1 (emptied)", off, d)
		}
	}

	// -d keeps the child's grains.
	qemuIO(t, child, "6 4M")
	mustRun(t, "convert", "-O", "raw", child, want)
	if out := mustRun(t, "commit", "-q", "-d", child); out != "" {
		t.Errorf("commit -q printed %q", out)
	}
	testenv.Run(t, "qemu-img", "compare", "-f", "raw", "-F", "vmdk", want, base)
	if d := depthAt(t, child, 4<<20); d != 0 {
		t.Errorf("after commit -d, the child's grain at 4M comes from depth %d, want 0 (kept)", d)
	}

	// A sibling of the child would read differently: refused.
	sib := filepath.Join(dir, "sibling.vmdk")
	mustRun(t, "create", "-f", "vmdk", "-b", base, sib)
	if _, errs, code := run(t, "commit", child); code != ExitInvalid {
		t.Errorf("commit into a parent with another child: exit %d %q, want %d", code, errs, ExitInvalid)
	}
	os.Remove(sib)
	if _, _, code := run(t, "commit", base); code != ExitInvalid {
		t.Errorf("commit of an image without a parent: exit %d, want %d", code, ExitInvalid)
	}
	if _, _, code := run(t, "commit", want); code != ExitUnsupported {
		t.Errorf("commit of a raw image: exit %d, want %d", code, ExitUnsupported)
	}

	// -b: a grandchild's chain into the base; the grandchild now links to it.
	top := filepath.Join(dir, "top.vmdk")
	mustRun(t, "create", "-f", "vmdk", "-b", child, top)
	qemuIO(t, top, "8 5M", "9 0")
	mustRun(t, "convert", "-O", "raw", top, want)
	mustRun(t, "commit", "-b", "base.vmdk", top)
	testenv.Run(t, "qemu-img", "compare", "-f", "raw", "-F", "vmdk", want, base)
	if got := backingOf(t, top); got != "base.vmdk" {
		t.Errorf("after commit -b, the top's backing file is %q, want base.vmdk", got)
	}
	testenv.Run(t, "qemu-img", "compare", "-f", "raw", "-F", "vmdk", want, top)
	if d := depthAt(t, top, 5<<20); d != 0 {
		t.Errorf("commit -b emptied the top (depth %d at 5M); -b implies -d", d)
	}
}
