package cli

import (
	"crypto/rand"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/vdisk-project/vdisk/internal/testenv"
)

// TestMeasureRawLikeQemu: for -O raw, vdisk measure prints what qemu-img
// measure prints, byte for byte, human and JSON, from a size and from a
// sparse source.
func TestMeasureRawLikeQemu(t *testing.T) {
	testenv.Tool(t, "qemu-img")
	src := filepath.Join(t.TempDir(), "s.raw")
	sparseRaw(t, src, 16<<20, 0, 5<<20)
	for _, args := range [][]string{
		{"-O", "raw", "--size", "1G"},
		{"-O", "raw", "--size", "1000"},
		{"--output=json", "-O", "raw", "--size", "3M"},
		{"-O", "raw", "-f", "raw", src},
		{"--output=json", "-O", "raw", "-f", "raw", src},
	} {
		ours := mustRun(t, append([]string{"measure"}, args...)...)
		theirs := testenv.Run(t, "qemu-img", append([]string{"measure"}, args...)...)
		if ours != theirs {
			t.Errorf("measure %v:\nvdisk    %q\nqemu-img %q", args, ours, theirs)
		}
	}
	if _, _, code := run(t, "measure", "-O", "raw", "--size", "1M", src); code != ExitUsage {
		t.Errorf("measure with --size and a source: exit %d, want %d", code, ExitUsage)
	}
}

// filesBytes sums the sizes of the files matching the glob.
func filesBytes(t *testing.T, glob string) int64 {
	t.Helper()
	names, _ := filepath.Glob(glob)
	var n int64
	for _, name := range names {
		st, err := os.Stat(name)
		if err != nil {
			t.Fatal(err)
		}
		n += st.Size()
	}
	return n
}

// TestMeasureVMDK: qemu 7.2 cannot measure VMDK, so vdisk's numbers are
// checked against the files vdisk convert writes: required is exactly the
// bytes of a sparse target converted from a sparse source, and exactly
// fully-allocated when every grain holds data; flat targets take their full
// size; for streamOptimized (compressed) both are upper bounds.
func TestMeasureVMDK(t *testing.T) {
	dir := t.TempDir()
	sparse := filepath.Join(dir, "sparse.raw")
	sparseRaw(t, sparse, 80<<20, 0, 1<<20, 40<<20, 80<<20-64<<10)
	full := filepath.Join(dir, "full.raw")
	b := make([]byte, 6<<20)
	rand.Read(b)
	os.WriteFile(full, b, 0o644)
	measure := func(src string, o ...string) measurement {
		t.Helper()
		var m measurement
		out := mustRun(t, append(append([]string{"measure", "--output=json", "-O", "vmdk"}, o...), src)...)
		if err := json.Unmarshal([]byte(out), &m); err != nil {
			t.Fatalf("measure %v: %v\n%s", o, err, out)
		}
		return m
	}
	for _, c := range []struct {
		sub   string
		exact bool
	}{
		{"monolithicSparse", true},
		{"twoGbMaxExtentSparse,split_size=32M", true},
		{"monolithicFlat", true},
		{"twoGbMaxExtentFlat,split_size=32M", true},
		{"streamOptimized", false},
	} {
		t.Run(c.sub, func(t *testing.T) {
			for _, src := range []string{sparse, full} {
				m := measure(src, "-o", "subformat="+c.sub)
				out := filepath.Join(t.TempDir(), "o.vmdk")
				mustRun(t, "convert", "-O", "vmdk", "-o", "subformat="+c.sub, src, out)
				got := filesBytes(t, filepath.Join(filepath.Dir(out), "*"))
				want := m.Required
				if src == full && c.exact {
					if m.Required != m.FullyAllocated {
						t.Errorf("%s: required %d, fully allocated %d: want equal for a full source", src, m.Required, m.FullyAllocated)
					}
				}
				if c.exact && got != want || !c.exact && (got > want || m.Required > m.FullyAllocated) {
					t.Errorf("%s: converted files hold %d bytes; measured required %d, fully allocated %d (exact: %v)", src, got, want, m.FullyAllocated, c.exact)
				}
			}
		})
	}
	// From a size: an empty image's metadata, and every grain when full.
	out := filepath.Join(dir, "e.vmdk")
	mustRun(t, "create", "-f", "vmdk", out, "80M")
	m := mustRun(t, "measure", "-O", "vmdk", "--size", "80M")
	want := "required size: " + strconv.FormatInt(filesBytes(t, out), 10) + "\nfully allocated size: " + strconv.FormatInt(filesBytes(t, out)+80<<20, 10) + "\n"
	if m != want {
		t.Errorf("measure -O vmdk --size 80M:\n%q, want\n%q", m, want)
	}
}
