package cli

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vdisk-project/vdisk/internal/testenv"
)

// TestDDLikeQemu: vdisk dd's output is byte for byte qemu-img dd's for the
// same operands (count counting from the start of the input, skipped
// blocks included, as qemu-img does), from raw and VMDK inputs, and a
// VMDK output reads as qemu-img dd's raw one.
func TestDDLikeQemu(t *testing.T) {
	testenv.Tool(t, "qemu-img")
	dir := t.TempDir()
	src, _ := sample(t, dir) // 8 MiB, data and zeros
	vsrc := filepath.Join(dir, "src.vmdk")
	mustRun(t, "convert", "-O", "vmdk", src, vsrc)
	for _, ops := range [][]string{
		{"bs=4k", "count=10", "skip=3"},
		{"bs=1000"},
		{"bs=64k", "skip=50"},
		{"count=7000", "skip=6000"},
		{"bs=1M", "count=100"},
		{"bs=3M", "skip=2"},
	} {
		for _, in := range []string{src, vsrc} {
			name := strings.Join(ops, "_") + filepath.Ext(in)
			ours, theirs := filepath.Join(dir, "ours-"+name), filepath.Join(dir, "theirs-"+name)
			mustRun(t, append([]string{"dd"}, append(ops, "if="+in, "of="+ours)...)...)
			testenv.Run(t, "qemu-img", append([]string{"dd", "-O", "raw"}, append(ops, "if="+in, "of="+theirs)...)...)
			a, _ := os.ReadFile(ours)
			b, _ := os.ReadFile(theirs)
			if !bytes.Equal(a, b) {
				t.Errorf("dd %v if=%s: vdisk wrote %d bytes, qemu-img %d; contents differ", ops, filepath.Base(in), len(a), len(b))
			}
		}
	}
	v := filepath.Join(dir, "out.vmdk")
	mustRun(t, "dd", "-O", "vmdk", "bs=64k", "count=100", "skip=10", "if="+src, "of="+v)
	ref := filepath.Join(dir, "ref.raw")
	testenv.Run(t, "qemu-img", "dd", "-f", "raw", "-O", "raw", "bs=64k", "count=100", "skip=10", "if="+src, "of="+ref)
	testenv.Run(t, "qemu-img", "compare", "-f", "vmdk", "-F", "raw", v, ref)
	if _, _, code := run(t, "dd", "bs=1M", "skip=9", "if="+src, "of="+filepath.Join(dir, "past")); code != ExitInvalid {
		t.Errorf("dd skipping past the end: exit %d, want %d", code, ExitInvalid)
	}
}
