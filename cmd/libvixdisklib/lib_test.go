package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vdisk-project/vdisk/format/vmdk"
	"github.com/vdisk-project/vdisk/internal/testenv"
)

// The tests build the library and nbdkit's VDDK plugin once per run.
var (
	buildOnce sync.Once
	libDir    string // a VDDK-style directory: lib64/, include/
	pluginSO  string
	buildErr  error
	buildTmp  string
)

func TestMain(m *testing.M) {
	code := m.Run()
	if buildTmp != "" {
		os.RemoveAll(buildTmp)
	}
	os.Exit(code)
}

// moduleRoot is the directory holding go.mod.
func moduleRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d
		}
		if filepath.Dir(d) == d {
			t.Fatalf("no go.mod above %s", dir)
		}
	}
}

// sharedDir finds the project's shared folder (peers, testdata): the
// VDISK_SHARED directory, else ../shared beside the module (a clean clone
// in CI), else ../../shared (a worktree under wt/).
func sharedDir(t testing.TB) string {
	t.Helper()
	if d := os.Getenv("VDISK_SHARED"); d != "" {
		return d
	}
	root := moduleRoot(t)
	for _, d := range []string{filepath.Join(root, "..", "shared"), filepath.Join(root, "..", "..", "shared")} {
		if _, err := os.Stat(filepath.Join(d, "peers", "nbdkit-vddk", "build.sh")); err == nil {
			return d
		}
	}
	return ""
}

// built builds the library (install step) and the plugin, skipping the
// test when gcc or the plugin's sources or headers are missing.
func built(t *testing.T) (string, string) {
	t.Helper()
	testenv.Tool(t, "gcc")
	if _, err := os.Stat("/usr/include/nbdkit-plugin.h"); err != nil {
		if testenv.Required("nbdkit-plugin-dev") {
			t.Fatal("nbdkit-plugin-dev is required by VDISK_TEST_REQUIRE but /usr/include/nbdkit-plugin.h is missing")
		}
		t.Skip("nbdkit-plugin-dev not installed (/usr/include/nbdkit-plugin.h)")
	}
	shared := sharedDir(t)
	if shared == "" {
		if testenv.Required("nbdkit-vddk") {
			t.Fatal("nbdkit-vddk is required by VDISK_TEST_REQUIRE but ../shared/peers/nbdkit-vddk was not found (set VDISK_SHARED)")
		}
		t.Skip("../shared/peers/nbdkit-vddk not found; set VDISK_SHARED")
	}
	buildOnce.Do(func() {
		buildTmp, buildErr = os.MkdirTemp("", "vixdisklib-test")
		if buildErr != nil {
			return
		}
		libDir = filepath.Join(buildTmp, "vddk")
		cmd := exec.Command("go", "run", "./install", libDir)
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("install: %v\n%s", err, out)
			return
		}
		plug := filepath.Join(buildTmp, "plugin")
		if out, err := exec.Command("bash", filepath.Join(shared, "peers", "nbdkit-vddk", "build.sh"), plug).CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("build the plugin: %v\n%s", err, out)
			return
		}
		pluginSO = filepath.Join(plug, "nbdkit-vddk-plugin.so")
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return libDir, pluginSO
}

// nbdkit runs the plugin over the library with args and the --run
// command, and returns the combined output.
func nbdkit(t *testing.T, args []string, run string) (string, error) {
	t.Helper()
	lib, plug := built(t)
	testenv.Tool(t, "nbdkit")
	full := []string{"-U", "-"}
	var params []string
	for _, a := range args {
		if strings.HasPrefix(a, "-") {
			full = append(full, a) // nbdkit's own flags go before the plugin
		} else {
			params = append(params, a)
		}
	}
	full = append(append(full, plug, "libdir="+lib), params...)
	full = append(full, "--run", run)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "nbdkit", full...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// writePattern writes scattered random blocks into a raw file of size
// bytes, near its start, its middle and its end.
func writePattern(t *testing.T, path string, size int64, seed uint64) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(seed, 1))
	buf := make([]byte, 192<<10)
	for _, off := range []int64{0, 1 << 20, size / 2, size/2 + 5<<20 + 4096, size - int64(len(buf))} {
		for i := range buf {
			buf[i] = byte(r.Uint32())
		}
		if _, err := f.WriteAt(buf, off); err != nil {
			t.Fatal(err)
		}
	}
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	return testenv.Run(t, name, args...)
}

// sameBytes fails unless the two files are equal; it reads them a piece
// at a time (the split images are 2.5 GiB).
func sameBytes(t *testing.T, a, b string) {
	t.Helper()
	fa, err := os.Open(a)
	if err != nil {
		t.Fatal(err)
	}
	defer fa.Close()
	fb, err := os.Open(b)
	if err != nil {
		t.Fatal(err)
	}
	defer fb.Close()
	sa, _ := fa.Stat()
	sb, _ := fb.Stat()
	if sa.Size() != sb.Size() {
		t.Fatalf("%s holds %d bytes, %s %d", a, sa.Size(), b, sb.Size())
	}
	x, y := make([]byte, 4<<20), make([]byte, 4<<20)
	for off := int64(0); off < sa.Size(); off += int64(len(x)) {
		n, _ := fa.ReadAt(x, off)
		m, _ := fb.ReadAt(y, off)
		if n != m || !bytes.Equal(x[:n], y[:m]) {
			i := 0
			for i < n && i < m && x[i] == y[i] {
				i++
			}
			t.Fatalf("%s and %s differ at byte %d", a, b, off+int64(i))
		}
	}
}

// image is a test image: a VMDK and how it was made.
type image struct {
	name, subformat, maker string
	size                   int64
}

func makeImage(t *testing.T, dir string, im image) (vmdkPath, rawPath string) {
	t.Helper()
	rawPath = filepath.Join(dir, im.name+".src.raw")
	writePattern(t, rawPath, im.size, uint64(len(im.name)))
	vmdkPath = filepath.Join(dir, im.name+".vmdk")
	switch im.maker {
	case "qemu-img":
		run(t, "qemu-img", "convert", "-f", "raw", "-O", "vmdk", "-o", "subformat="+im.subformat, rawPath, vmdkPath)
	case "vdisk":
		ctx := context.Background()
		d, err := vmdk.Create(ctx, vmdkPath, im.size, &vmdk.CreateOptions{Subformat: vmdk.Subformat(im.subformat), Adapter: "lsilogic"})
		if err != nil {
			t.Fatal(err)
		}
		src, err := os.Open(rawPath)
		if err != nil {
			t.Fatal(err)
		}
		defer src.Close()
		blk := make([]byte, 64<<10)
		for off := int64(0); off < im.size; off += int64(len(blk)) {
			n, err := src.ReadAt(blk, off)
			if n == 0 {
				t.Fatal(err)
			}
			if bytes.Count(blk[:n], []byte{0}) == n {
				continue
			}
			if _, err := d.WriteAt(blk[:n], off); err != nil {
				t.Fatal(err)
			}
		}
		if err := d.Close(); err != nil {
			t.Fatal(err)
		}
	}
	return vmdkPath, rawPath
}

var images = []image{
	{"qemu-monolithicSparse", "monolithicSparse", "qemu-img", 96 << 20},
	{"qemu-monolithicFlat", "monolithicFlat", "qemu-img", 96 << 20},
	{"qemu-twoGbMaxExtentSparse", "twoGbMaxExtentSparse", "qemu-img", 2<<30 + 512<<20},
	{"qemu-twoGbMaxExtentFlat", "twoGbMaxExtentFlat", "qemu-img", 2<<30 + 512<<20},
	{"qemu-streamOptimized", "streamOptimized", "qemu-img", 96 << 20},
	{"vdisk-monolithicSparse", "monolithicSparse", "vdisk", 96 << 20},
	{"vdisk-twoGbMaxExtentSparse", "twoGbMaxExtentSparse", "vdisk", 2<<30 + 512<<20},
	{"vdisk-streamOptimized", "streamOptimized", "vdisk", 96 << 20},
	{"vdisk-vmfs", "vmfs", "vdisk", 96 << 20},
	{"vdisk-vmfsThin", "vmfsThin", "vdisk", 96 << 20},
}

// TestPluginRead reads every subformat through nbdkit's VDDK plugin over
// the library and compares with qemu-img's reading of the same file, the
// bytes and the allocation map.
func TestPluginRead(t *testing.T) {
	testenv.Tool(t, "qemu-img")
	testenv.Tool(t, "nbdcopy")
	testenv.Tool(t, "nbdinfo")
	built(t)
	for _, im := range images {
		t.Run(im.name, func(t *testing.T) {
			dir := t.TempDir()
			path, _ := makeImage(t, dir, im)
			want := filepath.Join(dir, "want.raw")
			run(t, "qemu-img", "convert", "-O", "raw", path, want)
			got := filepath.Join(dir, "got.raw")
			mapFile := filepath.Join(dir, "map.txt")
			out, err := nbdkit(t, []string{"file=" + path},
				fmt.Sprintf("nbdcopy \"$uri\" %s && nbdinfo --map \"$uri\" > %s", got, mapFile))
			if err != nil {
				t.Fatalf("nbdkit: %v\n%s", err, out)
			}
			sameBytes(t, got, want)
			m, err := os.ReadFile(mapFile)
			if err != nil {
				t.Fatal(err)
			}
			qmap := run(t, "qemu-img", "map", "--output=json", path)
			// qemu-img reports every chunk of a flat extent as data; the
			// library asks the file (SEEK_DATA), so its data must be a
			// subset of qemu's, and its holes read as zeros (the bytes
			// above are equal).
			compareMaps(t, string(m), qmap, im.size, strings.Contains(im.subformat, "Flat") || strings.HasPrefix(im.subformat, "vmfs"))
		})
	}
}

const chunk = 64 << 10

// compareMaps compares nbdinfo --map's data ranges with qemu-img map's,
// at the 64 KiB chunks QueryAllocatedBlocks reports.
func compareMaps(t *testing.T, nbdMap, qemuMap string, size int64, subset bool) {
	t.Helper()
	n := (size + chunk - 1) / chunk
	got := make([]bool, n)
	for _, line := range strings.Split(strings.TrimSpace(nbdMap), "\n") {
		f := strings.Fields(line)
		if len(f) < 3 {
			continue
		}
		off, _ := strconv.ParseInt(f[0], 10, 64)
		l, _ := strconv.ParseInt(f[1], 10, 64)
		typ, _ := strconv.Atoi(f[2])
		if typ&1 == 0 { // not a hole: data
			for c := off / chunk; c < (off+l+chunk-1)/chunk && c < n; c++ {
				got[c] = true
			}
		}
	}
	var q []struct {
		Start, Length int64
		Data          bool
	}
	if err := json.Unmarshal([]byte(qemuMap), &q); err != nil {
		t.Fatalf("qemu-img map: %v\n%s", err, qemuMap)
	}
	want := make([]bool, n)
	for _, e := range q {
		if e.Data {
			for c := e.Start / chunk; c < (e.Start+e.Length+chunk-1)/chunk && c < n; c++ {
				want[c] = true
			}
		}
	}
	diff := 0
	first := int64(-1)
	for i := range got {
		if got[i] != want[i] && (!subset || got[i]) {
			diff++
			if first < 0 {
				first = int64(i)
			}
		}
	}
	if diff > 0 {
		t.Errorf("allocation differs in %d of %d chunks (first at byte %d: plugin data=%v, qemu-img data=%v)\nnbdinfo:\n%s\nqemu-img:\n%s",
			diff, n, first*chunk, got[first], want[first], nbdMap, qemuMap)
	}
}

// TestPluginWrite writes through the plugin with nbdcopy and reads the
// result back with qemu-img.
func TestPluginWrite(t *testing.T) {
	testenv.Tool(t, "qemu-img")
	testenv.Tool(t, "nbdcopy")
	built(t)
	for _, sub := range []string{"monolithicSparse", "monolithicFlat", "twoGbMaxExtentSparse"} {
		t.Run(sub, func(t *testing.T) {
			dir := t.TempDir()
			src := filepath.Join(dir, "src.raw")
			writePattern(t, src, 80<<20, 7)
			dst := filepath.Join(dir, "dst.vmdk")
			run(t, "qemu-img", "create", "-f", "vmdk", "-o", "subformat="+sub, dst, "80M")
			out, err := nbdkit(t, []string{"file=" + dst}, fmt.Sprintf("nbdcopy %s \"$uri\"", src))
			if err != nil {
				t.Fatalf("nbdkit: %v\n%s", err, out)
			}
			run(t, "qemu-img", "check", dst)
			run(t, "qemu-img", "compare", "-f", "raw", "-F", "vmdk", src, dst)
		})
	}
}

// TestPluginMultiConn puts nbdkit's multi-conn filter in front of the
// plugin, so that nbdcopy reads over four connections at once, each with
// its own ConnectEx and Open of the same file: the bytes equal qemu-img's
// reading. Opened for writing, the second connection's Open is refused
// (the file is in use) and the image is left as it was.
func TestPluginMultiConn(t *testing.T) {
	testenv.Tool(t, "qemu-img")
	testenv.Tool(t, "nbdcopy")
	built(t)
	dir := t.TempDir()
	for _, im := range []image{
		{"mc-monolithicSparse", "monolithicSparse", "qemu-img", 96 << 20},
		{"mc-streamOptimized", "streamOptimized", "vdisk", 96 << 20},
	} {
		path, _ := makeImage(t, dir, im)
		want := filepath.Join(dir, im.name+".want.raw")
		run(t, "qemu-img", "convert", "-O", "raw", path, want)
		got := filepath.Join(dir, im.name+".got.raw")
		out, err := nbdkit(t, []string{"-r", "--filter=multi-conn", "file=" + path},
			fmt.Sprintf("nbdinfo \"$uri\" | grep -q 'can_multi_conn: true' && nbdcopy --connections=4 --requests=16 \"$uri\" %s", got))
		if err != nil {
			t.Fatalf("%s: nbdkit: %v\n%s", im.name, err, out)
		}
		sameBytes(t, got, want)
	}

	path, _ := makeImage(t, dir, image{"mc-write", "monolithicSparse", "qemu-img", 32 << 20})
	before := filepath.Join(dir, "before.raw")
	run(t, "qemu-img", "convert", "-O", "raw", path, before)
	src := filepath.Join(dir, "src.raw")
	writePattern(t, src, 32<<20, 99)
	out, err := nbdkit(t, []string{"--filter=multi-conn", "file=" + path}, fmt.Sprintf("nbdcopy --connections=4 %s \"$uri\"", src))
	if err == nil {
		t.Fatalf("four writable opens of one file were all accepted:\n%s", out)
	}
	if !strings.Contains(out, "already in use") {
		t.Fatalf("the writable multi-conn copy failed, but not on the file being in use:\n%s", out)
	}
	run(t, "qemu-img", "check", path)
	after := filepath.Join(dir, "after.raw")
	run(t, "qemu-img", "convert", "-O", "raw", path, after)
	sameBytes(t, after, before)
}

// TestPluginOptions drives the plugin's open options over the library:
// unbuffered=true (O_DIRECT under malloc'd buffers, reading and writing),
// single-link=true on a child (only the child's own data, the rest holes
// that are not zero), compression=zlib (accepted; vdisk's wire is not
// compressed) and config= (a VDDK config file with a key it does not
// know).
func TestPluginOptions(t *testing.T) {
	testenv.Tool(t, "qemu-img")
	testenv.Tool(t, "qemu-io")
	testenv.Tool(t, "nbdcopy")
	testenv.Tool(t, "nbdinfo")
	built(t)
	dir := t.TempDir()
	base, baseRaw := makeImage(t, dir, image{"opt-base", "monolithicSparse", "qemu-img", 32 << 20})
	child := filepath.Join(dir, "child.vmdk")
	run(t, "qemu-img", "create", "-f", "vmdk", "-b", base, "-F", "vmdk", child)
	run(t, "qemu-io", "-f", "vmdk", "-c", "write -P 0xab 8M 1M", child)
	full := filepath.Join(dir, "full.raw")
	run(t, "qemu-img", "convert", "-O", "raw", child, full)
	conf := filepath.Join(dir, "vddk.conf")
	if err := os.WriteFile(conf, []byte("vixDiskLib.transport.LogLevel = 3\nsome.unknown.key = 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	t.Run("unbuffered-read", func(t *testing.T) {
		got := filepath.Join(t.TempDir(), "got.raw")
		out, err := nbdkit(t, []string{"-r", "file=" + child, "unbuffered=true", "compression=zlib", "config=" + conf},
			fmt.Sprintf("nbdcopy \"$uri\" %s", got))
		if err != nil {
			t.Fatalf("nbdkit: %v\n%s", err, out)
		}
		sameBytes(t, got, full)
	})
	t.Run("unbuffered-write", func(t *testing.T) {
		dst := filepath.Join(t.TempDir(), "dst.vmdk")
		run(t, "qemu-img", "create", "-f", "vmdk", dst, "32M")
		out, err := nbdkit(t, []string{"file=" + dst, "unbuffered=true"}, fmt.Sprintf("nbdcopy %s \"$uri\"", baseRaw))
		if err != nil {
			t.Fatalf("nbdkit: %v\n%s", err, out)
		}
		run(t, "qemu-img", "check", dst)
		run(t, "qemu-img", "compare", "-f", "raw", "-F", "vmdk", baseRaw, dst)
	})
	t.Run("single-link", func(t *testing.T) {
		got := filepath.Join(t.TempDir(), "got.raw")
		mapFile := filepath.Join(t.TempDir(), "map.txt")
		out, err := nbdkit(t, []string{"-r", "file=" + child, "single-link=true"},
			fmt.Sprintf("nbdcopy \"$uri\" %s && nbdinfo --map \"$uri\" > %s", got, mapFile))
		if err != nil {
			t.Fatalf("nbdkit: %v\n%s", err, out)
		}
		b, err := os.ReadFile(got)
		if err != nil {
			t.Fatal(err)
		}
		want := make([]byte, 32<<20)
		copy(want[8<<20:9<<20], bytes.Repeat([]byte{0xab}, 1<<20))
		if !bytes.Equal(b, want) {
			t.Error("single-link read more than the child's own data")
		}
		m, _ := os.ReadFile(mapFile)
		wantMap := "         0     8388608    1  hole\n   8388608     1048576    0  data\n   9437184    24117248    1  hole\n"
		if string(m) != wantMap {
			t.Errorf("single-link map:\n%s\nwant:\n%s", m, wantMap)
		}
	})
}

// sparseSource writes a raw file of size bytes that holds data only in
// two 512 KiB pieces, and returns its path.
func sparseSource(t *testing.T, dir string, size int64) string {
	t.Helper()
	src := filepath.Join(dir, "sparse.raw")
	f, err := os.Create(src)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	for _, off := range []int64{3 << 20, size - 5<<20} {
		if _, err := f.WriteAt(bytes.Repeat([]byte{0x5a}, 512<<10), off); err != nil {
			t.Fatal(err)
		}
	}
	return src
}

// allocatedBytes is what qemu-img map reports as data in an image.
func allocatedBytes(t *testing.T, path string) int64 {
	t.Helper()
	var m []struct {
		Length int64 `json:"length"`
		Data   bool  `json:"data"`
	}
	if err := json.Unmarshal([]byte(run(t, "qemu-img", "map", "--output=json", path)), &m); err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, e := range m {
		if e.Data {
			n += e.Length
		}
	}
	return n
}

// TestPluginWriteZeroes copies sparse sources through the plugin, which
// writes every hole nbdcopy zeroes as a buffer of zeros: a sparse
// destination stays sparse, a child over a parent's data reads zeros
// where zeros were written, and a preallocated flat disk keeps its
// storage.
func TestPluginWriteZeroes(t *testing.T) {
	testenv.Tool(t, "qemu-img")
	testenv.Tool(t, "nbdcopy")
	built(t)
	dir := t.TempDir()
	const size = 256 << 20
	src := sparseSource(t, dir, size)

	t.Run("sparse", func(t *testing.T) {
		dst := filepath.Join(t.TempDir(), "dst.vmdk")
		run(t, "qemu-img", "create", "-f", "vmdk", dst, "256M")
		out, err := nbdkit(t, []string{"file=" + dst}, fmt.Sprintf("nbdcopy %s \"$uri\"", src))
		if err != nil {
			t.Fatalf("nbdkit: %v\n%s", err, out)
		}
		run(t, "qemu-img", "check", dst)
		run(t, "qemu-img", "compare", "-f", "raw", "-F", "vmdk", src, dst)
		if n := allocatedBytes(t, dst); n > 2<<20 {
			t.Errorf("1 MiB of data copied in allocated %d bytes: the zeros were written", n)
		}
	})
	t.Run("child", func(t *testing.T) {
		d := t.TempDir()
		base, _ := makeImage(t, d, image{"zbase", "monolithicSparse", "qemu-img", size})
		child := filepath.Join(d, "child.vmdk")
		run(t, "qemu-img", "create", "-f", "vmdk", "-b", base, "-F", "vmdk", child)
		out, err := nbdkit(t, []string{"file=" + child}, fmt.Sprintf("nbdcopy %s \"$uri\"", src))
		if err != nil {
			t.Fatalf("nbdkit: %v\n%s", err, out)
		}
		run(t, "qemu-img", "check", child)
		run(t, "qemu-img", "compare", "-f", "raw", "-F", "vmdk", src, child)
	})
	t.Run("flat", func(t *testing.T) {
		d := t.TempDir()
		dst := filepath.Join(d, "flat.vmdk")
		run(t, "qemu-img", "create", "-f", "vmdk", "-o", "subformat=monolithicFlat", dst, "256M")
		extent := filepath.Join(d, "flat-flat.vmdk")
		run(t, "fallocate", "-l", "256M", extent)
		out, err := nbdkit(t, []string{"file=" + dst}, fmt.Sprintf("nbdcopy %s \"$uri\"", src))
		if err != nil {
			t.Fatalf("nbdkit: %v\n%s", err, out)
		}
		run(t, "qemu-img", "compare", "-f", "raw", "-F", "vmdk", src, dst)
		var st syscall.Stat_t
		if err := syscall.Stat(extent, &st); err != nil {
			t.Fatal(err)
		}
		if st.Blocks*512 < size {
			t.Errorf("the preallocated flat extent holds %d bytes after the copy, of %d: zeros punched holes", st.Blocks*512, size)
		}
	})
}

// TestPluginCreate has the plugin create every disk type (create=true)
// and checks the images with qemu-img check; vmfs-sparse, a redo log, is
// refused.
func TestPluginCreate(t *testing.T) {
	testenv.Tool(t, "qemu-img")
	testenv.Tool(t, "nbdcopy")
	built(t)
	types := map[string]string{
		"monolithic-sparse": "monolithicSparse", "monolithic-flat": "monolithicFlat",
		"split-sparse": "twoGbMaxExtentSparse", "split-flat": "twoGbMaxExtentFlat",
		"vmfs-flat": "vmfs", "stream-optimized": "streamOptimized", "vmfs-thin": "vmfs",
	}
	for _, typ := range []string{"monolithic-sparse", "monolithic-flat", "split-sparse", "split-flat", "vmfs-flat", "stream-optimized", "vmfs-thin", "vmfs-sparse"} {
		t.Run(typ, func(t *testing.T) {
			dir := t.TempDir()
			dst := filepath.Join(dir, "new.vmdk")
			src := filepath.Join(dir, "src.raw")
			writePattern(t, src, 32<<20, 3)
			args := []string{"file=" + dst, "create=true", "create-type=" + typ, "create-size=32M", "create-adapter-type=scsi-lsilogic"}
			script := fmt.Sprintf("nbdcopy %s \"$uri\"", src)
			if typ == "stream-optimized" {
				// A streamOptimized disk is written only while it is
				// made; the library opens it read-only.
				script = "nbdinfo \"$uri\""
			}
			out, err := nbdkit(t, args, script)
			if typ == "vmfs-sparse" {
				if err == nil || !strings.Contains(out, "redo log") {
					t.Fatalf("vmfs-sparse: got err %v, want a refusal naming the redo log\n%s", err, out)
				}
				return
			}
			if err != nil {
				t.Fatalf("nbdkit: %v\n%s", err, out)
			}
			run(t, "qemu-img", "check", dst)
			info := run(t, "qemu-img", "info", "--output=json", dst)
			if !strings.Contains(info, `"create-type": "`+types[typ]+`"`) {
				t.Errorf("qemu-img info: want create type %s\n%s", types[typ], info)
			}
			desc, _ := os.ReadFile(dst)
			if typ != "monolithic-sparse" && typ != "stream-optimized" && !bytes.Contains(desc, []byte(`ddb.adapterType = "lsilogic"`)) {
				t.Errorf("descriptor records no lsilogic adapter:\n%s", desc)
			}
			if typ == "vmfs-thin" && !bytes.Contains(desc, []byte("thinProvisioned")) {
				t.Errorf("vmfs-thin descriptor has no ddb.thinProvisioned:\n%s", desc)
			}
			if typ != "stream-optimized" {
				run(t, "qemu-img", "compare", "-f", "raw", "-F", "vmdk", src, dst)
			}
		})
	}
}

// TestSample compiles testdata/sample.c, a VDDK-sample-style program,
// against the installed header and library with AddressSanitizer and runs
// it (buildC, runC).
func TestSample(t *testing.T) {
	out := runC(t, buildC(t, "testdata/sample.c"), t.TempDir())
	for _, want := range []string{"log: VixDiskLib: initialised", "info capacity=131072 adapter=3", "read back ok", "async ok", "allocated blocks=2",
		"metadata vdisk.test=hello", "stream clone ok", "clone ok", "grow shrink rename ok", "attached parent=base.vmdk", "params server=(local)",
		"error text: The handle is not valid: vixdisklib: not a disk handle", "check ok", "child ok", "bad handle refused", "done"} {
		if !strings.Contains(out, want) {
			t.Errorf("sample output lacks %q:\n%s", want, out)
		}
	}
}
