package fat

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"github.com/vdisk-project/vdisk/disk"
	"github.com/vdisk-project/vdisk/internal/testenv"
	"github.com/vdisk-project/vdisk/volume/inode"
)

func init() {
	// The mkfs tools live in /usr/sbin, which a user's PATH may lack.
	if !strings.Contains(os.Getenv("PATH"), "/usr/sbin") {
		os.Setenv("PATH", os.Getenv("PATH")+":/usr/sbin")
	}
}

// tool runs a tool with TZ=UTC, so that mtools writes times in UTC.
func tool(t testing.TB, name string, args ...string) string {
	t.Helper()
	path := testenv.Tool(t, name)
	cmd := exec.Command(path, args...)
	cmd.Env = append(os.Environ(), "TZ=UTC", "MTOOLS_SKIP_CHECK=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// mkfat makes an empty FAT image of size bytes.
func mkfat(t testing.TB, bits int, size int64, label string) string {
	t.Helper()
	img := filepath.Join(t.TempDir(), "fat.img")
	f, err := os.Create(img)
	if err != nil {
		t.Fatal(err)
	}
	f.Truncate(size)
	f.Close()
	tool(t, "mkfs.vfat", "-F", fmt.Sprint(bits), "-n", label, img)
	return img
}

var baseTime = time.Date(2021, 3, 4, 5, 6, 8, 0, time.UTC)

// source writes the tree the tests copy into images, and returns its
// directory. Every file's mtime is set (on an even second).
func source(t testing.TB, big int) string {
	t.Helper()
	dir := t.TempDir()
	rnd := rand.New(rand.NewPCG(1, 2))
	blob := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rnd.Uint32())
		}
		return b
	}
	files := map[string][]byte{
		"empty.txt":                        nil,
		"small.txt":                        []byte("hello, world\n"),
		"UPPER.TXT":                        []byte("upper"),
		"lower.txt":                        []byte("lower"),
		"Mixed.Txt":                        []byte("mixed"),
		"A long file name with spaces.txt": blob(5000),
		"café ünïcødé ✓.txt":               blob(100),
		"日本語のファイル名.txt":                    blob(4097),
		"deep/a/b/c/d/e/f/g/h/leaf.txt":    []byte("leaf"),
		"deep/a/b/other":                   blob(8192),
		"big.bin":                          blob(big),
		"c1.bin":                           blob(4096),
		"c1p.bin":                          blob(4097),
	}
	for i := range 300 {
		files[fmt.Sprintf("many/file number %03d with a long name.dat", i)] = blob(i * 7)
	}
	i := 0
	for _, name := range slices.Sorted(mapsKeys(files)) {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, files[name], 0o644); err != nil {
			t.Fatal(err)
		}
		mt := baseTime.Add(time.Duration(i) * 2 * time.Second)
		if err := os.Chtimes(p, mt, mt); err != nil {
			t.Fatal(err)
		}
		i++
	}
	return dir
}

func mapsKeys[M ~map[K]V, K comparable, V any](m M) func(func(K) bool) {
	return func(yield func(K) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// populated makes a FAT image holding source's tree, plus a fragmented
// file: frag2.bin is deleted between two others before frag.bin is
// written, so frag.bin fills its hole and continues after frag3.bin.
func populated(t testing.TB, bits int, size int64, big int) (img, src string) {
	t.Helper()
	src = source(t, big)
	img = mkfat(t, bits, size, "TESTVOL")
	ents, _ := os.ReadDir(src)
	args := []string{"-s", "-m", "-i", img}
	for _, e := range ents {
		args = append(args, filepath.Join(src, e.Name()))
	}
	tool(t, "mcopy", append(args, "::/")...)
	tmp := t.TempDir()
	rnd := rand.New(rand.NewPCG(3, 4))
	for i, n := range []int{10000, 20000, 10000} {
		b := make([]byte, n)
		for j := range b {
			b[j] = byte(rnd.Uint32())
		}
		p := filepath.Join(tmp, fmt.Sprintf("frag%d.bin", i+1))
		os.WriteFile(p, b, 0o644)
		tool(t, "mcopy", "-i", img, p, "::/")
	}
	tool(t, "mdel", "-i", img, "::/frag2.bin")
	if bits == 32 {
		// mtools allocates after FSInfo's next-free hint: clear it so that
		// the hole is found.
		f, _ := os.OpenFile(img, os.O_RDWR, 0)
		f.WriteAt([]byte{2, 0, 0, 0}, 512+492)
		f.Close()
	}
	b := make([]byte, 70000)
	for j := range b {
		b[j] = byte(rnd.Uint32())
	}
	p := filepath.Join(src, "frag.bin")
	os.WriteFile(p, b, 0o644)
	os.Chtimes(p, baseTime, baseTime)
	tool(t, "mcopy", "-m", "-i", img, p, "::/")
	for _, k := range []string{"frag1.bin", "frag3.bin"} {
		os.Rename(filepath.Join(tmp, k), filepath.Join(src, k))
	}
	return img, src
}

func openImage(t testing.TB, img string) *FS {
	t.Helper()
	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	st, _ := f.Stat()
	fsys, err := Open(f, st.Size())
	if err != nil {
		t.Fatal(err)
	}
	return fsys
}

// compareTree checks that every file of src is in fsys with the same
// bytes, size and mtime (FAT keeps even seconds), and that fsys holds
// nothing else.
func compareTree(t *testing.T, fsys *FS, src string) {
	t.Helper()
	want := map[string]bool{}
	filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			t.Fatal(err)
		}
		rel, _ := filepath.Rel(src, p)
		rel = filepath.ToSlash(rel)
		want[rel] = true
		if d.IsDir() {
			return nil
		}
		wb, _ := os.ReadFile(p)
		gb, err := fs.ReadFile(fsys, rel)
		if err != nil {
			t.Errorf("read %s: %v", rel, err)
			return nil
		}
		if !bytes.Equal(gb, wb) {
			t.Errorf("%s: %d bytes differ from the source's %d", rel, len(gb), len(wb))
		}
		info, _ := d.Info()
		gi, err := fsys.Stat(rel)
		if err != nil {
			t.Errorf("stat %s: %v", rel, err)
			return nil
		}
		wt := info.ModTime().UTC().Truncate(2 * time.Second)
		if !gi.ModTime().Equal(wt) || gi.Size() != info.Size() {
			t.Errorf("%s: mtime %v size %d, want %v %d", rel, gi.ModTime(), gi.Size(), wt, info.Size())
		}
		if gi.Mode() != 0o755 {
			t.Errorf("%s: mode %v, want 0755", rel, gi.Mode())
		}
		return nil
	})
	fs.WalkDir(fsys, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			t.Errorf("walk %s: %v", p, err)
			return nil
		}
		if !want[p] {
			t.Errorf("%s is in the image, not in the source", p)
		}
		return nil
	})
}

func TestTree(t *testing.T) {
	for _, c := range []struct {
		bits int
		size int64
		big  int
	}{
		{12, 16 << 20, 3 << 20},
		{16, 64 << 20, 20 << 20},
		{32, 128 << 20, 40 << 20},
	} {
		t.Run(fmt.Sprintf("FAT%d", c.bits), func(t *testing.T) {
			t.Parallel()
			img, src := populated(t, c.bits, c.size, c.big)
			fsys := openImage(t, img)
			if fsys.Variant() != Variant(c.bits) {
				t.Errorf("variant %d, want %d", fsys.Variant(), c.bits)
			}
			compareTree(t, fsys, src)
			// The fragmented file really is in two pieces.
			f, err := fsys.Open("frag.bin")
			if err != nil {
				t.Fatal(err)
			}
			if n := len(f.(*File).runs); n < 2 {
				t.Errorf("frag.bin is in %d run, want a fragmented file", n)
			}
		})
	}
}

// TestLabelSerial compares the label and serial with minfo's and mdir's.
func TestLabelSerial(t *testing.T) {
	for _, bits := range []int{12, 16, 32} {
		t.Run(fmt.Sprint(bits), func(t *testing.T) {
			t.Parallel()
			size := int64(16 << 20)
			if bits == 32 {
				size = 64 << 20
			}
			img := mkfat(t, bits, size, "MY LABEL")
			fsys := openImage(t, img)
			out := tool(t, "mdir", "-i", img, "::/")
			m := regexp.MustCompile(`Volume in drive : is (.*)\n`).FindStringSubmatch(out)
			s := regexp.MustCompile(`Serial Number is ([0-9A-F]{4}-[0-9A-F]{4})`).FindStringSubmatch(out)
			if m == nil || s == nil {
				t.Fatalf("mdir printed no label or serial:\n%s", out)
			}
			if got, want := fsys.Label(), strings.TrimRight(m[1], " "); got != want {
				t.Errorf("label %q, mdir says %q", got, want)
			}
			if got := fsys.UUID(); got != s[1] {
				t.Errorf("uuid %q, mdir says %q", got, s[1])
			}
			// The root's label entry wins over the boot sector's.
			tool(t, "mlabel", "-i", img, "::NEWLBL")
			if got := openImage(t, img).Label(); got != "NEWLBL" {
				t.Errorf("label after mlabel %q, want NEWLBL", got)
			}
			if b := blkid(t, img); b["LABEL"] != "NEWLBL" || b["UUID"] != fsys.UUID() || b["TYPE"] != "vfat" {
				t.Errorf("blkid says %v; we say label NEWLBL uuid %s", b, fsys.UUID())
			}
			if fsys.Type() != "vfat" {
				t.Errorf("type %q", fsys.Type())
			}
			st, err := fsys.Statfs()
			if err != nil {
				t.Fatal(err)
			}
			free := regexp.MustCompile(`([0-9 ]+) bytes free`).FindStringSubmatch(out)
			if free == nil {
				t.Fatalf("mdir printed no free space:\n%s", out)
			}
			var wf int64
			fmt.Sscan(strings.ReplaceAll(free[1], " ", ""), &wf)
			if st.FreeBytes != wf {
				t.Errorf("free %d bytes, mdir says %d", st.FreeBytes, wf)
			}
		})
	}
}

func TestFSTest(t *testing.T) {
	img, src := populated(t, 16, 64<<20, 1<<20)
	fsys := openImage(t, img)
	var names []string
	filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if !d.IsDir() {
			rel, _ := filepath.Rel(src, p)
			names = append(names, filepath.ToSlash(rel))
		}
		return nil
	})
	if err := fstest.TestFS(fsys, names...); err != nil {
		t.Fatal(err)
	}
}

// corruptImage returns a copy of a populated FAT16 image with the FS
// reading it.
func fat16Image(t *testing.T) (string, *FS) {
	img, _ := populated(t, 16, 64<<20, 1<<20)
	return img, openImage(t, img)
}

func patch(t *testing.T, img string, off int64, b []byte) {
	t.Helper()
	f, err := os.OpenFile(img, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

// firstCluster finds a file's first cluster with FS itself.
func firstCluster(t *testing.T, fsys *FS, name string) uint32 {
	f, err := fsys.Open(name)
	if err != nil {
		t.Fatal(err)
	}
	return f.(*File).runs[0].first
}

func TestDamage(t *testing.T) {
	t.Run("chain loop", func(t *testing.T) {
		img, fsys := fat16Image(t)
		c := firstCluster(t, fsys, "big.bin")
		// big.bin's third cluster links back to its first.
		patch(t, img, fsys.fatOff+int64(c+2)*2, binary.LittleEndian.AppendUint16(nil, uint16(c)))
		fsys = openImage(t, img)
		if _, err := fsys.Open("big.bin"); !errors.Is(err, disk.ErrCorrupt) {
			t.Errorf("open big.bin with a looping chain: %v, want corrupt", err)
		}
		if _, err := fs.ReadFile(fsys, "small.txt"); err != nil {
			t.Errorf("small.txt: %v", err)
		}
	})
	t.Run("chain to free", func(t *testing.T) {
		img, fsys := fat16Image(t)
		c := firstCluster(t, fsys, "big.bin")
		patch(t, img, fsys.fatOff+int64(c)*2, []byte{0, 0})
		fsys = openImage(t, img)
		if _, err := fsys.Open("big.bin"); !errors.Is(err, disk.ErrCorrupt) {
			t.Errorf("open big.bin with a free first cluster: %v, want corrupt", err)
		}
	})
	t.Run("cluster out of range", func(t *testing.T) {
		img, fsys := fat16Image(t)
		c := firstCluster(t, fsys, "big.bin")
		patch(t, img, fsys.fatOff+int64(c)*2, []byte{0xf0, 0xff})
		fsys = openImage(t, img)
		if _, err := fsys.Open("big.bin"); !errors.Is(err, disk.ErrCorrupt) {
			t.Errorf("open big.bin linking past the clusters: %v, want corrupt", err)
		}
	})
	t.Run("directory", func(t *testing.T) {
		img, fsys := fat16Image(t)
		d, err := fsys.lookup("open", "many")
		if err != nil {
			t.Fatal(err)
		}
		// The directory's chain loops on itself.
		patch(t, img, fsys.fatOff+int64(d.cluster)*2, binary.LittleEndian.AppendUint16(nil, uint16(d.cluster)))
		fsys = openImage(t, img)
		if _, err := fsys.ReadDir("many"); !errors.Is(err, disk.ErrCorrupt) {
			t.Errorf("readdir of a looping directory: %v, want corrupt", err)
		}
		if _, err := fs.ReadFile(fsys, "deep/a/b/other"); err != nil {
			t.Errorf("deep/a/b/other: %v", err)
		}
	})
	t.Run("directory loop", func(t *testing.T) {
		img, fsys := fat16Image(t)
		b, _ := fsys.lookup("open", "deep/a/b")
		a, _ := fsys.lookup("open", "deep/a")
		// Point b's entry "c" at a: deep/a/b/c is deep/a again.
		dirOff := fsys.clusterOff(b.cluster)
		buf := make([]byte, fsys.clusterSize)
		f, _ := os.Open(img)
		f.ReadAt(buf, dirOff)
		f.Close()
		found := false
		for i := 0; i < len(buf); i += 32 {
			if string(buf[i:i+11]) == "C          " {
				patch(t, img, dirOff+int64(i)+26, binary.LittleEndian.AppendUint16(nil, uint16(a.cluster)))
				found = true
			}
		}
		if !found {
			t.Fatal("no entry C in deep/a/b")
		}
		fsys = openImage(t, img)
		if _, err := fsys.Stat("deep/a/b/c"); !errors.Is(err, disk.ErrCorrupt) {
			t.Errorf("stat of a directory that is its own ancestor: %v, want corrupt", err)
		}
	})
	t.Run("long name checksum", func(t *testing.T) {
		// A long name whose checksum does not match its short entry is
		// dropped, and the short name shows, as Linux's vfat does.
		img, fsys := fat16Image(t)
		buf := make([]byte, fsys.rootBytes)
		f, _ := os.Open(img)
		f.ReadAt(buf, fsys.rootOff)
		f.Close()
		n := 0
		for i := 0; i < len(buf); i += 32 {
			// The entries of "A long file name with spaces.txt".
			if buf[i+11] == 0x0f && bytes.Contains(buf[i:i+32], []byte{'A', 0, ' ', 0, 'l', 0}) {
				patch(t, img, fsys.rootOff+int64(i)+13, []byte{buf[i+13] + 1})
				n++
			}
		}
		if n == 0 {
			t.Fatal("no long name entry found")
		}
		fsys = openImage(t, img)
		if _, err := fsys.Stat("A long file name with spaces.txt"); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("stat of a long name with a bad checksum: %v, want not found", err)
		}
		out := tool(t, "mdir", "-i", img, "::/")
		short := regexp.MustCompile(`(?m)^(ALONGF~\d)\s+TXT\s`).FindStringSubmatch(out)
		if short == nil {
			t.Fatalf("mdir shows no short name ALONGF~n TXT:\n%s", out)
		}
		if _, err := fsys.Stat(short[1] + ".TXT"); err != nil {
			t.Errorf("short name: %v", err)
		}
	})
	t.Run("boot sector", func(t *testing.T) {
		img, _ := fat16Image(t)
		patch(t, img, 13, []byte{3}) // sectors per cluster
		f, _ := os.Open(img)
		defer f.Close()
		if _, err := Open(f, 64<<20); !errors.Is(err, disk.ErrCorrupt) {
			t.Errorf("open with 3 sectors per cluster: %v, want corrupt", err)
		}
	})
}

// TestConcurrent reads one file from many goroutines.
func TestConcurrent(t *testing.T) {
	img, src := populated(t, 32, 64<<20, 4<<20)
	fsys := openImage(t, img)
	want, _ := os.ReadFile(filepath.Join(src, "big.bin"))
	f, err := fsys.Open("big.bin")
	if err != nil {
		t.Fatal(err)
	}
	r := f.(io.ReaderAt)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			buf := make([]byte, 100_003)
			for off := int64(g * 1000); off < int64(len(want)); off += int64(len(buf)) * 3 {
				n, err := r.ReadAt(buf, off)
				if err != nil && err != io.EOF || !bytes.Equal(buf[:n], want[off:off+int64(n)]) {
					t.Errorf("read @%d: %d bytes, %v", off, n, err)
					return
				}
				fsys.ReadDir("many")
			}
		})
	}
	wg.Wait()
}

func BenchmarkRead256MiB(b *testing.B) {
	img := mkfat(b, 32, 300<<20, "BENCH")
	p := filepath.Join(b.TempDir(), "big.bin")
	data := make([]byte, 256<<20)
	for i := range data {
		data[i] = byte(i * 7)
	}
	os.WriteFile(p, data, 0o644)
	tool(b, "mcopy", "-i", img, p, "::/")
	fsys := openImage(b, img)
	buf := make([]byte, 4<<20)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		f, err := fsys.Open("big.bin")
		if err != nil {
			b.Fatal(err)
		}
		if _, err := io.CopyBuffer(io.Discard, struct{ io.Reader }{f}, buf); err != nil {
			b.Fatal(err)
		}
	}
}

// blkid reads what blkid -p says of an image.
func blkid(t *testing.T, img string) map[string]string {
	t.Helper()
	out := tool(t, "blkid", "-p", "-o", "export", img)
	m := map[string]string{}
	for _, l := range strings.Split(out, "\n") {
		if k, v, ok := strings.Cut(l, "="); ok {
			m[k] = v
		}
	}
	return m
}

// TestAttributes: the read-only attribute (set with mattrib) takes the
// write bits away from a file, as Linux's vfat does; times and modes of
// the others follow the documented defaults.
func TestAttributes(t *testing.T) {
	img := mkfat(t, 12, 4<<20, "ATTR")
	start := time.Now().UTC()
	src := t.TempDir()
	for _, n := range []string{"ro.txt", "rw.txt"} {
		os.WriteFile(filepath.Join(src, n), []byte(n), 0o644)
		os.Chtimes(filepath.Join(src, n), baseTime, baseTime)
		tool(t, "mcopy", "-m", "-i", img, filepath.Join(src, n), "::/")
	}
	tool(t, "mmd", "-i", img, "::/sub")
	tool(t, "mattrib", "-i", img, "+r", "::/ro.txt")
	tool(t, "mattrib", "-i", img, "+r", "::/sub")
	fsys := openImage(t, img)
	for _, c := range []struct {
		name string
		mode fs.FileMode
	}{{"ro.txt", 0o555}, {"rw.txt", 0o755}, {"sub", fs.ModeDir | 0o755}, {".", fs.ModeDir | 0o755}} {
		fi, err := fsys.Stat(c.name)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode() != c.mode {
			t.Errorf("%s: mode %v, want %v", c.name, fi.Mode(), c.mode)
		}
		st := fi.Sys().(*inode.Stat)
		if c.name == "rw.txt" && (!st.Mtime.Equal(baseTime) || !st.Ctime.Equal(baseTime) || st.Btime.IsZero() || st.Atime.IsZero() || st.Nlink != 1) {
			t.Errorf("%s: %+v", c.name, st)
		}
		// mcopy -m gives the creation time the modification time.
		if c.name == "rw.txt" && !st.Btime.Equal(baseTime) {
			t.Errorf("creation time %v, want %v", st.Btime, baseTime)
		}
		if c.name == "." && st.Nlink != 3 {
			t.Errorf("root: nlink %d, want 3 (one subdirectory)", st.Nlink)
		}
	}
	// Without -m, mtools stamps the file with the time of the copy (in UTC,
	// as TZ=UTC), the access time as a date.
	os.WriteFile(filepath.Join(src, "now.txt"), nil, 0o644)
	tool(t, "mcopy", "-i", img, filepath.Join(src, "now.txt"), "::/")
	end := time.Now().UTC()
	fi, err := openImage(t, img).Stat("now.txt")
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*inode.Stat)
	for _, tm := range []time.Time{st.Btime, st.Mtime} {
		if tm.Before(start.Add(-2*time.Second)) || tm.After(end.Add(time.Second)) {
			t.Errorf("now.txt: time %v, want between %v and %v", tm, start, end)
		}
	}
	if y, m, d := st.Btime.Date(); !st.Atime.Equal(time.Date(y, m, d, 0, 0, 0, 0, time.UTC)) {
		t.Errorf("access time %v, want the date of %v", st.Atime, st.Btime)
	}
	if _, err := fsys.ReadLink("rw.txt"); !errors.Is(err, fs.ErrInvalid) {
		t.Errorf("readlink of a file: %v, want fs.ErrInvalid", err)
	}
	if _, err := fsys.Stat("RW.TXT"); err != nil {
		t.Errorf("a lookup in another case: %v", err)
	}
}
