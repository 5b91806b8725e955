package cli

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/vdisk-project/vdisk/internal/testenv"
)

// TestResizeShrink: a shrink is refused without --shrink (exit 65, the
// image unchanged), as qemu-img refuses it; with --shrink and a negative
// size a raw image ends as qemu-img resize --shrink leaves a copy of it
// (qemu-img compare -s); a VMDK cannot shrink (exit 71).
func TestResizeShrink(t *testing.T) {
	dir := t.TempDir()
	src, _ := sample(t, dir) // 8 MiB
	if _, errs, code := run(t, "resize", src, "-1M"); code != ExitInvalid {
		t.Errorf("resize -1M without --shrink: exit %d %q, want %d", code, errs, ExitInvalid)
	}
	if _, errs, code := run(t, "resize", src, "4M"); code != ExitInvalid {
		t.Errorf("resize to a smaller size without --shrink: exit %d %q, want %d", code, errs, ExitInvalid)
	}
	if st, _ := os.Stat(src); st.Size() != 8<<20 {
		t.Fatalf("a refused shrink changed the size to %d", st.Size())
	}
	theirs := filepath.Join(dir, "theirs.raw")
	b, _ := os.ReadFile(src)
	os.WriteFile(theirs, b, 0o644)
	mustRun(t, "resize", "--shrink", src, "-3M")
	if st, _ := os.Stat(src); st.Size() != 5<<20 {
		t.Errorf("resize --shrink -3M: size %d, want %d", st.Size(), 5<<20)
	}
	v := filepath.Join(dir, "v.vmdk")
	mustRun(t, "create", "-f", "vmdk", v, "4M")
	if _, errs, code := run(t, "resize", "--shrink", v, "-1M"); code != ExitUnsupported {
		t.Errorf("vmdk resize --shrink: exit %d %q, want %d", code, errs, ExitUnsupported)
	}
	testenv.Tool(t, "qemu-img")
	testenv.Run(t, "qemu-img", "resize", "-f", "raw", "--shrink", theirs, "-3M")
	testenv.Run(t, "qemu-img", "compare", "-s", "-f", "raw", "-F", "raw", src, theirs)
}
