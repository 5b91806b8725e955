package cli

import (
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"

	"github.com/vdisk-project/vdisk/internal/testenv"
)

// mapRun is one entry of qemu-img map --output=json, the shape vdisk map
// --output=json prints too.
type mapRun struct {
	Start, Length int64
	Data, Zero    bool
}

// dataRanges merges the data runs of a map into maximal ranges, the part of
// a map that every tool must agree on (zero/hole detail may differ).
func dataRanges(rs []mapRun) []mapRun {
	var out []mapRun
	for _, r := range rs {
		if !r.Data {
			continue
		}
		if n := len(out); n > 0 && out[n-1].Start+out[n-1].Length == r.Start {
			out[n-1].Length += r.Length
			continue
		}
		out = append(out, mapRun{Start: r.Start, Length: r.Length, Data: true})
	}
	return out
}

func decodeMap(t *testing.T, who, s string) []mapRun {
	t.Helper()
	var rs []mapRun
	if err := json.Unmarshal([]byte(s), &rs); err != nil {
		t.Fatalf("%s map --output=json: %v\n%s", who, err, s)
	}
	return rs
}

// sparseRaw writes a raw file of size bytes with data at the given offsets
// (64 KiB each, file-system-block aligned) and holes elsewhere.
func sparseRaw(t *testing.T, path string, size int64, offs ...int64) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64<<10)
	for i := range buf {
		buf[i] = byte(i%253 + 1)
	}
	for _, off := range offs {
		if _, err := f.WriteAt(buf, off); err != nil {
			t.Fatal(err)
		}
	}
}

// TestQemuMapRawSparse checks that vdisk map of a sparse raw file reports
// the same data ranges as qemu-img map, and the chunk listing covers them.
func TestQemuMapRawSparse(t *testing.T) {
	testenv.Tool(t, "qemu-img")
	img := filepath.Join(t.TempDir(), "s.raw")
	sparseRaw(t, img, 64<<20, 0, 1<<20, 1<<20+64<<10, 17<<20, 64<<20-64<<10)
	ours := dataRanges(decodeMap(t, "vdisk", mustRun(t, "map", "--output=json", img)))
	theirs := dataRanges(decodeMap(t, "qemu-img", testenv.Run(t, "qemu-img", "map", "-f", "raw", "--output=json", img)))
	if !slices.Equal(ours, theirs) {
		t.Errorf("data ranges differ:\nvdisk %+v\nqemu  %+v", ours, theirs)
	}
	if len(ours) == 0 {
		t.Error("no data found in a file with data")
	}
}

// TestQemuVMDKMapAndConvert checks vdisk map and convert against qemu-img on
// a VMDK that qemu-img wrote.
func TestQemuVMDKMapAndConvert(t *testing.T) {
	testenv.Tool(t, "qemu-img")
	dir := t.TempDir()
	src := filepath.Join(dir, "src.raw")
	sparseRaw(t, src, 32<<20, 0, 3<<20, 5<<20+64<<10, 32<<20-64<<10)
	img := filepath.Join(dir, "q.vmdk")
	testenv.Run(t, "qemu-img", "convert", "-f", "raw", "-O", "vmdk", src, img)
	ours := dataRanges(decodeMap(t, "vdisk", mustRun(t, "map", "--output=json", img)))
	theirs := dataRanges(decodeMap(t, "qemu-img", testenv.Run(t, "qemu-img", "map", "--output=json", img)))
	if !slices.Equal(ours, theirs) {
		t.Errorf("data ranges differ:\nvdisk %+v\nqemu  %+v", ours, theirs)
	}
	ourRaw := filepath.Join(dir, "ours.raw")
	theirRaw := filepath.Join(dir, "theirs.raw")
	mustRun(t, "convert", "-O", "raw", img, ourRaw)
	testenv.Run(t, "qemu-img", "convert", "-O", "raw", img, theirRaw)
	if !sameFile(t, ourRaw, theirRaw) || !sameFile(t, ourRaw, src) {
		t.Error("vdisk convert and qemu-img convert give different raw images")
	}
}

func sameFile(t *testing.T, a, b string) bool {
	t.Helper()
	x, err := os.ReadFile(a)
	if err != nil {
		t.Fatal(err)
	}
	y, err := os.ReadFile(b)
	if err != nil {
		t.Fatal(err)
	}
	return slices.Equal(x, y)
}

// TestQemuCompareAgrees checks that vdisk compare and qemu-img compare give
// the same exit status on equal, differing and differently sized images.
func TestQemuCompareAgrees(t *testing.T) {
	qemu := testenv.Tool(t, "qemu-img")
	dir := t.TempDir()
	a := filepath.Join(dir, "a.raw")
	sparseRaw(t, a, 16<<20, 1<<20, 9<<20)
	vm := filepath.Join(dir, "a.vmdk")
	mustRun(t, "convert", "-O", "vmdk", a, vm)
	diff := filepath.Join(dir, "diff.raw")
	sparseRaw(t, diff, 16<<20, 1<<20, 9<<20, 12<<20)
	big := filepath.Join(dir, "big.raw")
	sparseRaw(t, big, 20<<20, 1<<20, 9<<20)
	bigDiff := filepath.Join(dir, "bigdiff.raw")
	sparseRaw(t, bigDiff, 20<<20, 1<<20, 9<<20, 18<<20)
	for _, tc := range []struct {
		name   string
		strict bool
		x, y   string
	}{
		{"equal", false, a, vm},
		{"differ", false, vm, diff},
		{"larger-zero-tail", false, a, big},
		{"larger-data-tail", false, a, bigDiff},
		{"strict-size", true, a, big},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := []string{"compare"}
			if tc.strict {
				args = append(args, "-s")
			}
			args = append(args, tc.x, tc.y)
			_, _, ours := run(t, args...)
			out, err := exec.Command(qemu, args...).CombinedOutput()
			theirs := 0
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				theirs = ee.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
			if ours != theirs {
				t.Errorf("vdisk %v: exit %d, qemu-img exit %d (%s)", args, ours, theirs, out)
			}
		})
	}
}
