package cli

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/vdisk-project/vdisk/disk"
	"github.com/vdisk-project/vdisk/internal/testenv"
)

// TestReplaceTarget: create and convert replace an existing image, every
// file of it, as qemu-img does; they refuse (exit 65) to write over their
// own source or backing file, and a stray file in the way of a new
// extent is an invalid argument, not an I/O error.
func TestReplaceTarget(t *testing.T) {
	dir := t.TempDir()
	src, want := sample(t, dir)
	dst := filepath.Join(dir, "d.vmdk")
	mustRun(t, "create", "-f", "vmdk", "-o", "subformat=twoGbMaxExtentSparse,split_size=2M", dst, "8M")
	old, _ := filepath.Glob(filepath.Join(dir, "d-s*.vmdk"))
	if len(old) != 4 {
		t.Fatalf("split extents %v, want 4", old)
	}
	mustRun(t, "convert", "-O", "vmdk", src, dst)
	if left, _ := filepath.Glob(filepath.Join(dir, "d-s*.vmdk")); len(left) != 0 {
		t.Errorf("extents of the replaced image left behind: %v", left)
	}
	back := filepath.Join(dir, "back.raw")
	mustRun(t, "convert", "-O", "raw", dst, back)
	if got, _ := os.ReadFile(back); !slices.Equal(got, want) {
		t.Errorf("the replacing convert does not read back as its source")
	}
	// A create that fails leaves the image it would have replaced.
	if _, errs, code := run(t, "create", "-f", "vmdk", dst, "3T"); code != ExitUnsupported {
		t.Errorf("create of a 3 TiB monolithicSparse over an image: exit %d %q, want %d", code, errs, ExitUnsupported)
	}
	os.Remove(back)
	mustRun(t, "convert", "-O", "raw", dst, back)
	if got, _ := os.ReadFile(back); !slices.Equal(got, want) {
		t.Errorf("a failed create changed the image it would have replaced")
	}
	if aside, _ := filepath.Glob(filepath.Join(dir, ".*")); len(aside) != 0 {
		t.Errorf("files left aside: %v", aside)
	}
	mustRun(t, "create", "-f", "raw", back, "1M") // qemu-img create overwrites too
	if st, _ := os.Stat(back); st.Size() != 1<<20 {
		t.Errorf("create over an existing file: size %d, want %d", st.Size(), 1<<20)
	}

	os.WriteFile(filepath.Join(dir, "s-flat.vmdk"), []byte("keep"), 0o644)
	for _, c := range []struct {
		name string
		args []string
		msg  string
	}{
		{"convert onto its source", []string{"convert", "-O", "raw", src, src}, "is the source image"},
		{"convert onto a file of its source", []string{"convert", "-O", "vmdk", dst, dst}, "is a file of the source image"},
		{"create over its backing file", []string{"create", "-f", "vmdk", "-b", dst, dst}, "backing file"},
		{"stray extent in the way", []string{"create", "-f", "vmdk", "-o", "subformat=monolithicFlat", filepath.Join(dir, "s.vmdk"), "1M"}, "exists"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, errs, code := run(t, c.args...)
			if code != ExitInvalid || !strings.Contains(errs, c.msg) {
				t.Errorf("vdisk %v: exit %d %q, want %d mentioning %q", c.args, code, errs, ExitInvalid, c.msg)
			}
		})
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "s-flat.vmdk")); string(b) != "keep" {
		t.Errorf("the stray file was changed: %q", b)
	}
	if got, _ := os.ReadFile(src); !slices.Equal(got, want) {
		t.Errorf("a refused convert changed its source")
	}
}

// TestProgressNotTerminal: -p on a non-terminal prints the records qemu-img
// -p prints there, "    (N.NN/100%)" ended by "\r", rising, 100.00 last,
// then a newline; qemu-img's own output for the same job has that form.
func TestProgressNotTerminal(t *testing.T) {
	dir := t.TempDir()
	src, _ := sample(t, dir)
	_, errs, code := run(t, "convert", "-p", "-O", "vmdk", src, filepath.Join(dir, "p.vmdk"))
	if code != 0 {
		t.Fatalf("convert -p: exit %d %s", code, errs)
	}
	check := func(who, s string) {
		t.Helper()
		rec := regexp.MustCompile(`^    \((\d{1,3}\.\d\d)/100%\)$`)
		if !strings.HasSuffix(s, "\r\n") {
			t.Fatalf("%s -p output %q does not end in \\r\\n", who, s)
		}
		recs := strings.Split(strings.TrimSuffix(s, "\r\n"), "\r")
		for _, r := range recs {
			if !rec.MatchString(r) {
				t.Errorf("%s -p record %q, want the form %q", who, r, "    (12.34/100%)")
			}
		}
		if recs[0] != "    (0.00/100%)" || recs[len(recs)-1] != "    (100.00/100%)" {
			t.Errorf("%s -p records %q: want 0.00 first and 100.00 last", who, recs)
		}
	}
	check("vdisk", errs)
	testenv.Tool(t, "qemu-img")
	check("qemu-img", testenv.Run(t, "qemu-img", "convert", "-p", "-f", "raw", "-O", "raw", src, filepath.Join(dir, "q.raw")))
}

// allocated returns the bytes of storage behind a file.
func allocated(t *testing.T, path string) int64 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Blocks * 512
}

// TestConvertSparseSize: -S 4k leaves a 4 KiB zero block inside data as
// a hole, where qemu-img convert -S 4k does (same data ranges in qemu-img
// map of both outputs); -S 0 allocates every byte; a size qemu refuses is
// refused (exit 65).
func TestConvertSparseSize(t *testing.T) {
	testenv.Tool(t, "qemu-img")
	dir := t.TempDir()
	src := filepath.Join(dir, "z.raw")
	b := make([]byte, 1<<20)
	for i := range b {
		b[i] = 7
	}
	clear(b[64<<10 : 68<<10]) // one 4 KiB zero block inside data
	os.WriteFile(src, b, 0o644)
	ours, theirs := filepath.Join(dir, "ours.raw"), filepath.Join(dir, "theirs.raw")
	mustRun(t, "convert", "-S", "4k", "-O", "raw", src, ours)
	testenv.Run(t, "qemu-img", "convert", "-S", "4k", "-f", "raw", "-O", "raw", src, theirs)
	o := dataRanges(decodeMap(t, "vdisk", testenv.Run(t, "qemu-img", "map", "-f", "raw", "--output=json", ours)))
	q := dataRanges(decodeMap(t, "qemu-img", testenv.Run(t, "qemu-img", "map", "-f", "raw", "--output=json", theirs)))
	if !slices.Equal(o, q) || len(o) != 2 {
		t.Errorf("-S 4k data ranges: vdisk %+v, qemu-img %+v; want the same two", o, q)
	}
	full := filepath.Join(dir, "full.raw")
	sparseRaw(t, src, 1<<20) // a hole: nothing to read, zeros to write
	mustRun(t, "convert", "-S", "0", "-O", "raw", src, full)
	if got := allocated(t, full); got < 1<<20 {
		t.Errorf("-S 0: %d bytes allocated, want all %d", got, 1<<20)
	}
	into := filepath.Join(dir, "into.raw")
	mustRun(t, "create", "-f", "raw", into, "1M")
	mustRun(t, "convert", "-n", "-S", "0", src, into)
	if got := allocated(t, into); got < 1<<20 {
		t.Errorf("-n -S 0: %d bytes allocated, want all %d", got, 1<<20)
	}
	if _, _, code := run(t, "convert", "-S", "1000", "-O", "raw", src, full); code != ExitInvalid {
		t.Errorf("-S 1000: exit %d, want %d", code, ExitInvalid)
	}
}

// TestConvertCompressed: -c -O vmdk writes a streamOptimized image (so
// says qemu-img info) that qemu-img compare finds equal to its source;
// -c -O raw is not supported (exit 71), as in qemu-img.
func TestConvertCompressed(t *testing.T) {
	dir := t.TempDir()
	src, _ := sample(t, dir)
	dst := filepath.Join(dir, "c.vmdk")
	mustRun(t, "convert", "-c", "-W", "-U", "-O", "vmdk", src, dst)
	if _, _, code := run(t, "convert", "-c", "-O", "raw", src, filepath.Join(dir, "c.raw")); code != ExitUnsupported {
		t.Errorf("convert -c -O raw: exit %d, want %d", code, ExitUnsupported)
	}
	testenv.Tool(t, "qemu-img")
	if info := testenv.Run(t, "qemu-img", "info", dst); !strings.Contains(info, "create type: streamOptimized") {
		t.Errorf("qemu-img info of convert -c output:\n%s", info)
	}
	testenv.Run(t, "qemu-img", "compare", "-f", "raw", "-F", "vmdk", src, dst)
}

// TestSESparseTarget: create -o subformat=seSparse makes standalone and
// child SEsparse images, and convert writes one that qemu-img check and
// compare accept.
func TestSESparseTarget(t *testing.T) {
	testenv.Tool(t, "qemu-img")
	dir := t.TempDir()
	src := filepath.Join(dir, "s.raw")
	b := make([]byte, 3<<20)
	for i := 1 << 20; i < 2<<20; i++ {
		b[i] = byte(i / 4096)
	}
	os.WriteFile(src, b, 0o644)
	out := filepath.Join(dir, "c.vmdk")
	mustRun(t, "convert", "-O", "vmdk", "-o", "subformat=seSparse", src, out)
	testenv.Run(t, "qemu-img", "check", out)
	testenv.Run(t, "qemu-img", "compare", "-F", "raw", out, src)
	if info := testenv.Run(t, "qemu-img", "info", out); !strings.Contains(info, "create type: seSparse") {
		t.Errorf("qemu-img info:\n%s", info)
	}
	base, child := filepath.Join(dir, "b.vmdk"), filepath.Join(dir, "ch.vmdk")
	mustRun(t, "create", "-f", "vmdk", base, "8M")
	mustRun(t, "create", "-f", "vmdk", "-o", "subformat=seSparse", "-b", base, child)
	desc, _ := os.ReadFile(child)
	if !strings.Contains(string(desc), `createType="seSparse"`) || !strings.Contains(string(desc), `parentFileNameHint="b.vmdk"`) {
		t.Errorf("child descriptor:\n%s", desc)
	}
	testenv.Run(t, "qemu-img", "check", child)
}

// TestUnsafeStartsNoWriteBack pins that -t unsafe files start no
// write-back of their own (disk.WriteBackStarter): a convert that never
// syncs must not wait for the device either, to stay ahead of qemu-img's
// default.
func TestUnsafeStartsNoWriteBack(t *testing.T) {
	fsys, err := cacheFS("unsafe")
	if err != nil {
		t.Fatal(err)
	}
	f, err := fsys.OpenFile(filepath.Join(t.TempDir(), "f"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, ok := f.(disk.WriteBackStarter); !ok {
		t.Fatal("an unsafe file does not decide its own write-back: Copy would start the device's")
	}
	if err := disk.StartWriteBack(f); err != nil {
		t.Fatal(err)
	}
	if fsys, _ := cacheFS("writeback"); fsys != nil {
		t.Errorf("the durable cache mode has a filesystem of its own (%T); want the default, which writes behind", fsys)
	}
}
