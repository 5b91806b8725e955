package cli

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vdisk-project/vdisk/internal/testenv"
)

// qemuMap is one run of qemu-img map --output=json with its depth.
type qemuMap struct {
	Start, Length int64
	Depth         int
	Data          bool
}

// depthAt returns the chain depth qemu-img map reports for the byte at off
// (0: the image itself holds it).
func depthAt(t *testing.T, img string, off int64) int {
	t.Helper()
	var rs []qemuMap
	out := testenv.Run(t, "qemu-img", "map", "--output=json", img)
	if err := json.Unmarshal([]byte(out), &rs); err != nil {
		t.Fatalf("qemu-img map: %v\n%s", err, out)
	}
	for _, r := range rs {
		if off >= r.Start && off < r.Start+r.Length {
			return r.Depth
		}
	}
	t.Fatalf("qemu-img map of %s does not cover %d", img, off)
	return -1
}

// qemuIO writes patterns into an image with qemu-io: each write is
// "PATTERN OFF" of 64 KiB.
func qemuIO(t *testing.T, img string, writes ...string) {
	t.Helper()
	args := []string{}
	for _, w := range writes {
		p, off, _ := strings.Cut(w, " ")
		args = append(args, "-c", "write -P "+p+" "+off+" 64k")
	}
	testenv.Run(t, "qemu-io", append(args, img)...)
}

func backingOf(t *testing.T, img string) string {
	t.Helper()
	for _, l := range strings.Split(testenv.Run(t, "qemu-img", "info", img), "\n") {
		if v, ok := strings.CutPrefix(l, "backing file: "); ok {
			v, _, _ = strings.Cut(v, " (actual path")
			return v
		}
	}
	return ""
}

// TestRebase: a safe rebase onto another parent and onto none leaves the
// child reading as before (qemu-img compare), copying in only the grains
// where the old and the new backing differ (qemu-img map depths), and
// qemu-img info then shows the new backing; rebase -u fixes a child whose
// parent moved, without reading the old one, which safe mode needs (66).
func TestRebase(t *testing.T) {
	testenv.Tool(t, "qemu-img")
	testenv.Tool(t, "qemu-io")
	dir := t.TempDir()
	base, base2, child := filepath.Join(dir, "base.vmdk"), filepath.Join(dir, "base2.vmdk"), filepath.Join(dir, "child.vmdk")
	mustRun(t, "create", "-f", "vmdk", base, "8M")
	mustRun(t, "create", "-f", "vmdk", base2, "8M")
	qemuIO(t, base, "1 0", "3 2M")
	qemuIO(t, base2, "1 0", "5 3M")
	mustRun(t, "create", "-f", "vmdk", "-b", base, child)
	qemuIO(t, child, "2 1M")
	before := filepath.Join(dir, "before.raw")
	mustRun(t, "convert", "-O", "raw", child, before)

	mustRun(t, "rebase", "-b", "base2.vmdk", "-F", "vmdk", child) // relative to the child's directory
	if got := backingOf(t, child); got != "base2.vmdk" {
		t.Errorf("after rebase -b base2.vmdk, qemu-img info: backing file %q", got)
	}
	testenv.Run(t, "qemu-img", "compare", "-f", "raw", "-F", "vmdk", before, child)
	for _, c := range []struct {
		off  int64
		want int
	}{{0, 1}, {1 << 20, 0}, {2 << 20, 0}, {3 << 20, 0}, {4 << 20, 1}} {
		if got := depthAt(t, child, c.off); got != c.want {
			t.Errorf("after the safe rebase, qemu-img map depth at %d = %d, want %d", c.off, got, c.want)
		}
	}

	// A loop is refused: the child onto itself, the base onto its child.
	if _, _, code := run(t, "rebase", "-u", "-b", "child.vmdk", child); code != ExitInvalid {
		t.Errorf("rebase onto itself: exit %d, want %d", code, ExitInvalid)
	}
	if _, _, code := run(t, "rebase", "-u", "-b", "child.vmdk", base2); code != ExitInvalid {
		t.Errorf("rebase of a parent onto its child: exit %d, want %d", code, ExitInvalid)
	}
	mustRun(t, "rebase", "-b", "", child)
	if got := backingOf(t, child); got != "" {
		t.Errorf("after rebase -b \"\", qemu-img info: backing file %q, want none", got)
	}
	testenv.Run(t, "qemu-img", "compare", "-f", "raw", "-F", "vmdk", before, child)

	// The parent moves; -u names its new place, reading nothing else.
	c2 := filepath.Join(dir, "c2.vmdk")
	mustRun(t, "create", "-f", "vmdk", "-b", base, c2)
	qemuIO(t, c2, "7 5M")
	want := filepath.Join(dir, "want.raw")
	mustRun(t, "convert", "-O", "raw", c2, want)
	os.Mkdir(filepath.Join(dir, "moved"), 0o755)
	if err := os.Rename(base, filepath.Join(dir, "moved", "base.vmdk")); err != nil {
		t.Fatal(err)
	}
	if _, _, code := run(t, "rebase", "-b", "moved/base.vmdk", c2); code != ExitNotFound {
		t.Errorf("safe rebase without the old backing: exit %d, want %d", code, ExitNotFound)
	}
	if _, _, code := run(t, "rebase", "-u", "-b", "moved/base.vmdk", want); code != ExitUnsupported {
		t.Errorf("rebase of a raw image: exit %d, want %d", code, ExitUnsupported)
	}
	mustRun(t, "rebase", "-u", "-b", "moved/base.vmdk", c2)
	if got := backingOf(t, c2); got != "moved/base.vmdk" {
		t.Errorf("after rebase -u, qemu-img info: backing file %q, want moved/base.vmdk", got)
	}
	testenv.Run(t, "qemu-img", "compare", "-f", "raw", "-F", "vmdk", want, c2)
}
