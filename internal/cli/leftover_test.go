package cli

import (
	"context"
	"crypto/rand"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/vdisk-project/vdisk/internal/testenv"
)

// TestNoLeftovers: a convert to a multi-file image that fails (no space)
// or is interrupted removes every file it made, extents included, not
// only the descriptor.
func TestNoLeftovers(t *testing.T) {
	src := filepath.Join(t.TempDir(), "src.raw")
	b := make([]byte, 24<<20)
	rand.Read(b)
	if err := os.WriteFile(src, b, 0o600); err != nil {
		t.Fatal(err)
	}
	small := testenv.SmallFS(t, 8<<20)
	for _, sub := range []string{"twoGbMaxExtentSparse", "twoGbMaxExtentFlat", "monolithicFlat", "vmfs", "vmfsThin", "monolithicSparse"} {
		dst := filepath.Join(small, sub+".vmdk")
		_, stderr, code := run(t, "convert", "-O", "vmdk", "-o", "subformat="+sub, src, dst)
		if code != 73 {
			t.Errorf("%s: convert to a full filesystem: exit %d (%s), want 73", sub, code, stderr)
		}
		if ents, _ := os.ReadDir(small); len(ents) > 0 {
			var names []string
			for _, e := range ents {
				names = append(names, e.Name())
				os.Remove(filepath.Join(small, e.Name()))
			}
			t.Errorf("%s: the failed convert left %v", sub, names)
		}
	}
	// Interrupted (SIGINT cancels the command's context) mid-copy.
	dir := t.TempDir()
	for _, sub := range []string{"twoGbMaxExtentSparse", "monolithicFlat"} {
		dst := filepath.Join(dir, sub+".vmdk")
		cctx, cancel := context.WithCancel(context.Background())
		time.AfterFunc(20*time.Millisecond, cancel)
		err := runConvert(cctx, convertOptions{outFormat: "vmdk", options: "subformat=" + sub, cache: "writeback"}, src, dst, os.Stderr)
		cancel()
		if err == nil {
			t.Logf("%s: the convert finished before the interrupt", sub)
			os.Remove(dst)
		}
		if ents, _ := os.ReadDir(dir); len(ents) > 0 && err != nil {
			var names []string
			for _, e := range ents {
				names = append(names, e.Name())
			}
			t.Errorf("%s: the interrupted convert left %v", sub, names)
		}
		for _, e := range must(os.ReadDir(dir)) {
			os.Remove(filepath.Join(dir, e.Name()))
		}
	}
}

func must[T any](v T, _ error) T { return v }
