package ext4

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"testing/fstest"

	"golang.org/x/sys/unix"
	"time"

	"github.com/vdisk-project/vdisk/disk"
	"github.com/vdisk-project/vdisk/internal/testenv"
	"github.com/vdisk-project/vdisk/volume/inode"
)

// variants are the mkfs invocations every check runs against. Most get
// their directories indexed (htree) by e2fsck -fD afterwards: mke2fs -d
// writes linear directories only.
var variants = []variant{
	{name: "ext4", tool: "mkfs.ext4"},
	{name: "ext4-big", tool: "mkfs.ext4", big: true},
	{name: "ext4-linear", tool: "mkfs.ext4", linear: true, long: true},
	{name: "ext4-1k", tool: "mkfs.ext4", args: []string{"-b", "1024"}},
	// mke2fs 1.47.0 with inline_data drops a sparse file's trailing hole
	// (the kernel agrees with the image, not with the source).
	{name: "ext4-inline", tool: "mkfs.ext4", args: []string{"-O", "inline_data"}, skip: []string{"sparse"}},
	{name: "ext4-nocsum", tool: "mkfs.ext4", args: []string{"-O", "^metadata_csum"}},
	{name: "ext4-32bit", tool: "mkfs.ext4", args: []string{"-O", "^64bit"}, long: true},
	{name: "ext4-128", tool: "mkfs.ext4", args: []string{"-I", "128"}},
	{name: "ext4-indirect", tool: "mkfs.ext4", args: []string{"-O", "^extent,^flex_bg,^64bit"}},
	{name: "ext4-metabg", tool: "mkfs.ext4", args: []string{"-O", "meta_bg,^resize_inode"}},
	{name: "ext4-bigalloc", tool: "mkfs.ext4", args: []string{"-O", "bigalloc", "-C", "16384", "-N", "4096"}},
	{name: "ext4-eainode", tool: "mkfs.ext4", args: []string{"-O", "ea_inode"}, long: true},
	{name: "ext4-rootowner", tool: "mkfs.ext4", args: []string{"-E", "root_owner=1000:1001"}},
	{name: "ext4-64k", tool: "mkfs.ext4", args: []string{"-b", "65536"}, noMount: true},
	{name: "ext3", tool: "mkfs.ext3", long: true},
	{name: "ext3-1k", tool: "mkfs.ext3", args: []string{"-b", "1024"}},
	{name: "ext2", tool: "mkfs.ext2", linear: true},
	{name: "ext2-big", tool: "mkfs.ext2", big: true, linear: true},
	{name: "ext2-nofiletype", tool: "mkfs.ext2", args: []string{"-O", "^filetype"}},
}

type variant struct {
	name, tool string
	args       []string
	big        bool     // the tree with a directory of 10,000 entries (mke2fs takes a while)
	linear     bool     // no e2fsck -fD
	noMount    bool     // the kernel cannot mount it here
	skip       []string // files not compared with the source
	long       bool     // only with VDISK_TEST_LONG=1, to keep the package's tests short
}

var (
	shared     sync.Mutex
	sharedDir  string
	trees      = map[bool]*tree{}
	images     = map[string]string{}
	treeErrors = map[bool]bool{}
)

// sharedTemp is a directory that lives as long as the test binary.
func sharedTemp(t testing.TB) string {
	if sharedDir == "" {
		d, err := os.MkdirTemp("", "ext4test")
		if err != nil {
			t.Fatal(err)
		}
		sharedDir = d
	}
	return sharedDir
}

// source builds a source tree once per test binary: with a directory of
// 10,000 entries (big), or of 500.
func source(t *testing.T, big bool) *tree {
	shared.Lock()
	defer shared.Unlock()
	return sourceLocked(t, big)
}

func sourceLocked(t *testing.T, big bool) *tree {
	if tr := trees[big]; tr != nil {
		return tr
	}
	if treeErrors[big] {
		t.Fatal("source tree not built")
	}
	treeErrors[big] = true
	d, err := os.MkdirTemp(sharedTemp(t), "src")
	if err != nil {
		t.Fatal(err)
	}
	n := 500
	if big {
		n = 10000
	}
	tr := buildTree(&tempTB{TB: t, dir: d}, n)
	trees[big] = tr
	return tr
}

// image builds variant v's image of its source tree once per test binary.
func image(t *testing.T, v variant) (string, *tree) {
	shared.Lock()
	defer shared.Unlock()
	tr := sourceLocked(t, v.big)
	if img, ok := images[v.name]; ok {
		if img == "" {
			t.Fatal("image not built")
		}
		return img, tr
	}
	images[v.name] = ""
	args := append([]string{"-N", "20000"}, v.args...)
	if !slices.Contains(args, "-b") {
		args = append(args, "-b", "4096") // mke2fs picks 1 KiB blocks for this size
	}
	img := mkfs(&tempTB{TB: t, dir: sharedTemp(t)}, v.tool, tr.dir, imgSize, args...)
	if err := os.Rename(img, filepath.Join(sharedTemp(t), v.name+".img")); err != nil {
		t.Fatal(err)
	}
	img = filepath.Join(sharedTemp(t), v.name+".img")
	if !v.linear {
		fsck(t, img, "-fyD")
	}
	images[v.name] = img
	return img, tr
}

// fsck runs e2fsck, which must find nothing to fix but what it was asked
// to optimize.
func fsck(t *testing.T, img string, flags string) {
	t.Helper()
	out, err := exec.Command(testenv.Tool(t, "e2fsck"), flags, img).CombinedOutput()
	var ee *exec.ExitError
	if err != nil && !(errors.As(err, &ee) && ee.ExitCode() == 1) {
		t.Fatalf("e2fsck %s: %v\n%s", flags, err, out)
	}
}

func variantNamed(name string) variant {
	for _, v := range variants {
		if v.name == name {
			return v
		}
	}
	panic(name)
}

// tempTB makes a helper's TempDir a directory that outlives the test.
type tempTB struct {
	testing.TB
	dir string
}

func (t *tempTB) TempDir() string {
	d, err := os.MkdirTemp(t.dir, "tmp")
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestMain(m *testing.M) {
	code := m.Run()
	if sharedDir != "" {
		os.RemoveAll(sharedDir)
	}
	os.Exit(code)
}

const imgSize = 256 << 20

// TestImages builds an image of the source tree with each mkfs variant
// and compares every file with the source tree, with the kernel's view
// of the image when it can mount it, and with debugfs.
func TestImages(t *testing.T) {
	for _, v := range variants {
		t.Run(v.name, func(t *testing.T) {
			if v.big || v.long {
				testenv.Long(t)
			}
			img, tr := image(t, v)
			fsys := openImage(t, img)
			checkBlkid(t, fsys, img)
			t.Run("source", func(t *testing.T) { compareTree(t, fsys, tr.dir, true, tr, v.skip...) })
			if !v.noMount {
				t.Run("kernel", func(t *testing.T) {
					if m := mount(t, img); m != "" {
						compareTree(t, fsys, m, false, tr)
					}
				})
			}
			t.Run("debugfs", func(t *testing.T) { compareDebugfs(t, fsys, img) })
			t.Run("root", func(t *testing.T) {
				fi, err := fsys.Stat(".")
				if err != nil {
					t.Fatal(err)
				}
				st := fi.Sys().(*inode.Stat)
				if st.Ino != 2 || !fi.IsDir() || fi.Name() != "." {
					t.Errorf("root: %+v", st)
				}
				if v.name == "ext4-rootowner" && (st.UID != 1000 || st.GID != 1001) {
					t.Errorf("root owner %d:%d, want 1000:1001", st.UID, st.GID)
				}
			})
		})
	}
}

// compareDebugfs checks inode numbers, links, allocated blocks and the
// four times against debugfs's stat, for the files outside the big
// directory.
func compareDebugfs(t *testing.T, fsys *FS, img string) {
	n := 0
	fs.WalkDir(fsys, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			t.Fatal(err)
		}
		if p == "many" || strings.HasPrefix(p, "d0") {
			return fs.SkipDir
		}
		if n++; n > 80 {
			return fs.SkipAll
		}
		fi, err := fsys.Lstat(p)
		if err != nil {
			t.Fatal(err)
		}
		st := fi.Sys().(*inode.Stat)
		want := debugfsStat(t, img, p)
		if st.Ino != want.ino || st.Nlink != want.links {
			t.Errorf("%s: ino %d links %d, debugfs says %d %d", p, st.Ino, st.Nlink, want.ino, want.links)
		}
		if st.Blocks != want.blockcount*512 {
			t.Errorf("%s: %d bytes allocated, debugfs says %d sectors", p, st.Blocks, want.blockcount)
		}
		for k, got := range map[string]time.Time{"atime": st.Atime, "mtime": st.Mtime, "ctime": st.Ctime, "crtime": st.Btime} {
			w, ok := want.times[k]
			if !ok && got.IsZero() {
				continue
			}
			if !got.Equal(w) {
				t.Errorf("%s: %s %v, debugfs says %v", p, k, got, w)
			}
		}
		return nil
	})
}

// checkBlkid compares Type, Label and UUID with blkid.
func checkBlkid(t *testing.T, fsys *FS, img string) {
	t.Helper()
	p, err := exec.LookPath("blkid")
	if err != nil {
		return
	}
	out, _ := exec.Command(p, "-p", "-o", "export", img).Output()
	m := map[string]string{}
	for _, l := range strings.Split(string(out), "\n") {
		if k, v, ok := strings.Cut(l, "="); ok {
			m[k] = strings.ReplaceAll(v, `\ `, " ")
		}
	}
	if fsys.Type() != m["TYPE"] || fsys.UUID() != m["UUID"] || fsys.Label() != m["LABEL"] {
		t.Errorf("Type/UUID/Label %q %q %q; blkid says %q %q %q", fsys.Type(), fsys.UUID(), fsys.Label(), m["TYPE"], m["UUID"], m["LABEL"])
	}
}

// TestLabelStatfs: a label with a space, and Statfs against dumpe2fs.
func TestLabelStatfs(t *testing.T) {
	for _, args := range [][]string{{"-L", "my root", "-N", "4096"}, {"-O", "bigalloc", "-C", "16384"}} {
		img := mkfs(t, "mkfs.ext4", "", 256<<20, args...)
		fsys := openImage(t, img)
		checkBlkid(t, fsys, img)
		if fsys.Label() != "my root" && args[0] == "-L" {
			t.Errorf("label %q", fsys.Label())
		}
		out, err := exec.Command(testenv.Tool(t, "dumpe2fs"), "-h", img).Output()
		if err != nil {
			t.Fatal(err)
		}
		h := map[string]int64{}
		for _, l := range strings.Split(string(out), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok {
				h[k], _ = strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			}
		}
		sf, err := fsys.Statfs()
		if err != nil {
			t.Fatal(err)
		}
		bs := h["Block size"]
		want := inode.Statfs{BlockSize: bs, TotalBytes: h["Block count"] * bs, FreeBytes: h["Free blocks"] * bs,
			TotalInodes: h["Inode count"], FreeInodes: h["Free inodes"]}
		if sf != want || bs == 0 {
			t.Errorf("%v: Statfs %+v, dumpe2fs says %+v", args, sf, want)
		}
	}
}

// TestTestFS runs testing/fstest over images of the source tree (more of
// them, with the directory of 10,000 entries, with VDISK_TEST_LONG=1).
func TestTestFS(t *testing.T) {
	names := []string{"ext4", "ext4-inline"}
	if os.Getenv("VDISK_TEST_LONG") == "1" {
		names = append(names, "ext4-big", "ext2-big", "ext4-indirect")
	}
	for _, name := range names {
		t.Run(name, func(t *testing.T) {
			v := variantNamed(name)
			img, tr := image(t, v)
			fsys := openImage(t, img)
			last := "many/entry-00499-" + strings.Repeat("n", 499%40)
			if v.big {
				last = "many/entry-09999-" + strings.Repeat("n", 9999%40)
			}
			if tr.manyName == "" {
				t.Fatal("no big directory")
			}
			if os.Getenv("VDISK_TEST_LONG") == "1" {
				if err := fstest.TestFS(fsys, "sizes/f4097", "links/slow", "names/ünïcødé ☃", last); err != nil {
					t.Fatal(err)
				}
				return
			}
			// fstest reads big files a few bytes at a time: without
			// VDISK_TEST_LONG=1, the subtrees without them.
			for dir, want := range map[string]string{"links": "slow", "names": "ünïcødé ☃", "many": strings.TrimPrefix(last, "many/"),
				"modes": "setuid", "owners": "high", "special": "fifo", "xattrs": "large", "d0": "d1/d2"} {
				sub, err := fs.Sub(fsys, dir)
				if err != nil {
					t.Fatal(err)
				}
				if err := fstest.TestFS(sub, want); err != nil {
					t.Errorf("%s: %v", dir, err)
				}
			}
		})
	}
}

// TestPaths: symbolic links in and at the end of paths, "..", absolute
// targets, loops, errors.
func TestPaths(t *testing.T) {
	img, _ := image(t, variantNamed("ext4"))
	fsys := openImage(t, img)
	read := func(name string) string {
		t.Helper()
		b, err := fs.ReadFile(fsys, name)
		if err != nil {
			t.Fatalf("ReadFile(%q): %v", name, err)
		}
		return string(b)
	}
	want := "linked three times\n"
	for _, p := range []string{"links/fast", "links/slow", "links/dotdot", "links/b", "sizes/also-a"} {
		if got := read(p); got != want {
			t.Errorf("%s: %q", p, got)
		}
	}
	if got := read("links/dir/f1"); len(got) != 1 {
		t.Errorf("links/dir/f1: %d bytes", len(got))
	}
	if got := read("links/through"); len(got) != 1 {
		t.Errorf("links/through: %d bytes", len(got))
	}
	if fi, err := fsys.Stat("links/absolute"); err != nil || fi.Size() != 4096 || fi.Name() != "absolute" {
		t.Errorf("links/absolute: %v %v", fi, err)
	}
	if fi, err := fsys.Lstat("links/dir"); err != nil || fi.Mode().Type() != fs.ModeSymlink {
		t.Errorf("Lstat links/dir: %v %v", fi, err)
	}
	if fi, err := fsys.Stat("links/dir"); err != nil || !fi.IsDir() {
		t.Errorf("Stat links/dir: %v %v", fi, err)
	}
	for _, p := range []string{"nope", "sizes/nope", "sizes/f1/x", "links/dir/nope"} {
		if _, err := fsys.Stat(p); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("Stat(%q): %v, want not exist", p, err)
		}
	}
	for _, p := range []string{"/sizes", "sizes/", "../x", "a//b", ""} {
		if _, err := fsys.Open(p); !errors.Is(err, fs.ErrInvalid) {
			t.Errorf("Open(%q): %v, want invalid", p, err)
		}
	}
	if _, err := fsys.ReadLink("sizes/f1"); err == nil {
		t.Error("ReadLink of a regular file worked")
	}
	if _, err := fsys.ReadDir("sizes/f1"); err == nil {
		t.Error("ReadDir of a regular file worked")
	}
	// Directories read in small steps, with Seek to rewind.
	f, err := fsys.Open("many")
	if err != nil {
		t.Fatal(err)
	}
	d := f.(fs.ReadDirFile)
	total := 0
	for {
		ents, err := d.ReadDir(7)
		total += len(ents)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if total != 500 {
		t.Errorf("ReadDir(7) loop: %d entries", total)
	}
	if _, err := f.(io.Seeker).Seek(0, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	if ents, _ := d.ReadDir(-1); len(ents) != 500 {
		t.Errorf("after rewind: %d entries", len(ents))
	}
	if _, err := f.Read(make([]byte, 1)); err == nil {
		t.Error("Read of a directory worked")
	}
}

// TestSymlinkLoops: 40 links are followed, a loop is an error matching
// disk.ErrCorrupt.
func TestSymlinkLoops(t *testing.T) {
	src := t.TempDir()
	os.WriteFile(filepath.Join(src, "target"), []byte("t"), 0o644)
	os.Symlink("l0", filepath.Join(src, "loop1"))
	os.Symlink("loop1", filepath.Join(src, "l0"))
	os.Symlink("target", filepath.Join(src, "c0"))
	for i := 1; i <= 41; i++ {
		os.Symlink("c"+strconv.Itoa(i-1), filepath.Join(src, "c"+strconv.Itoa(i)))
	}
	os.Symlink("/../../../../target", filepath.Join(src, "escape"))
	fsys := openImage(t, mkfs(t, "mkfs.ext4", src, 16<<20))
	if _, err := fsys.Stat("loop1"); !errors.Is(err, disk.ErrCorrupt) {
		t.Errorf("loop: %v", err)
	}
	if _, err := fsys.Stat("c39"); err != nil {
		t.Errorf("40 links: %v", err)
	}
	if _, err := fsys.Stat("c40"); !errors.Is(err, disk.ErrCorrupt) {
		t.Errorf("41 links: %v", err)
	}
	if b, err := fs.ReadFile(fsys, "escape"); err != nil || string(b) != "t" {
		t.Errorf("escape: %q %v", b, err)
	}
	if _, err := fsys.Lstat("loop1"); err != nil {
		t.Errorf("Lstat of a loop: %v", err)
	}
}

// TestReadAt reads a large file concurrently at random offsets and
// lengths, and a sparse file across its holes.
func TestReadAt(t *testing.T) {
	for _, name := range []string{"ext4", "ext3-1k", "ext4-indirect"} {
		t.Run(name, func(t *testing.T) {
			img, tr := image(t, variantNamed(name))
			fsys := openImage(t, img)
			for _, name := range []string{"big/five-mib", "sparse", "fragmented"} {
				want, err := os.ReadFile(filepath.Join(tr.dir, name))
				if err != nil {
					t.Fatal(err)
				}
				f, err := fsys.Open(name)
				if err != nil {
					t.Fatal(err)
				}
				ra := f.(io.ReaderAt)
				var wg sync.WaitGroup
				for g := range 8 {
					wg.Add(1)
					go func() {
						defer wg.Done()
						rng := rand.New(rand.NewPCG(uint64(g), 9))
						buf := make([]byte, 3<<20)
						for range 200 {
							off := rng.Int64N(int64(len(want)) + 10)
							n := rng.IntN(len(buf))
							if rng.IntN(4) == 0 {
								n = rng.IntN(9000)
							}
							got, err := ra.ReadAt(buf[:n], off)
							end := min(off+int64(n), int64(len(want)))
							wantN := max(0, int(end-off))
							if got != wantN || (got < n) != (err == io.EOF) || err != nil && err != io.EOF {
								t.Errorf("%s: ReadAt(%d, %d) = %d, %v; want %d", name, n, off, got, err, wantN)
								return
							}
							if got > 0 && !bytes.Equal(buf[:got], want[off:end]) {
								t.Errorf("%s: ReadAt(%d, %d): wrong bytes", name, n, off)
								return
							}
						}
					}()
				}
				wg.Wait()
				// Seek and Read.
				s := f.(io.Seeker)
				if p, err := s.Seek(-10, io.SeekEnd); err != nil || p != int64(len(want))-10 {
					t.Fatalf("Seek: %d %v", p, err)
				}
				rest, err := io.ReadAll(f)
				if err != nil || !bytes.Equal(rest, want[len(want)-10:]) {
					t.Errorf("%s: Read after Seek: %d bytes, %v", name, len(rest), err)
				}
				f.Close()
			}
			// Blocks: a sparse file has fewer than its size.
			fi, _ := fsys.Stat("sparse")
			if st := fi.Sys().(*inode.Stat); st.Blocks >= st.Size/10 || st.Blocks == 0 {
				t.Errorf("sparse: %d bytes allocated of %d", st.Blocks, st.Size)
			}
		})
	}
}

// TestKernelWritten fills an image through the kernel (cp -a of the source
// tree onto it mounted, plus a preallocated file, whose extents are
// unwritten) and compares it with the source, nanoseconds included, and
// with the kernel's view. The kernel writes htree directories, extents
// and inline data of its own making.
func TestKernelWritten(t *testing.T) {
	if !isRoot {
		t.Skip("needs root to mount")
	}
	tr := source(t, false)
	for _, c := range []struct {
		name, tool string
		args       []string
	}{
		{"ext4", "mkfs.ext4", []string{"-b", "4096"}},
		{"ext4-inline", "mkfs.ext4", []string{"-b", "4096", "-O", "inline_data"}},
		{"ext3", "mkfs.ext3", []string{"-b", "4096"}},
		{"ext4-1k", "mkfs.ext4", []string{"-b", "1024"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			img := mkfs(t, c.tool, "", imgSize, append([]string{"-N", "20000"}, c.args...)...)
			mnt := t.TempDir()
			if out, err := exec.Command("mount", "-o", "loop", img, mnt).CombinedOutput(); err != nil {
				t.Skipf("mount: %v %s", err, out)
			}
			umount := func() {
				if out, err := exec.Command("umount", mnt).CombinedOutput(); err != nil {
					t.Fatalf("umount: %v %s", err, out)
				}
			}
			if out, err := exec.Command("cp", "-a", tr.dir+"/.", mnt).CombinedOutput(); err != nil {
				umount()
				t.Fatalf("cp: %v %s", err, out)
			}
			fa, err := os.Create(filepath.Join(mnt, "lost+found/prealloc"))
			if err == nil {
				fa.Write([]byte("head"))
				err = syscall.Fallocate(int(fa.Fd()), 0, 0, 8<<20)
				fa.WriteAt([]byte("tail"), 6<<20)
				fa.Close()
			}
			umount()
			if err != nil && c.tool != "mkfs.ext3" {
				t.Fatalf("fallocate: %v", err)
			}
			if err == nil {
				// Junk under the unwritten extents, which must still
				// read as zeros.
				bs := int64(openImage(t, img).sb.blockSize)
				n := 0
				for _, l := range strings.Split(debugfs(t, img, "ex /lost+found/prealloc"), "\n") {
					f := strings.Fields(strings.ReplaceAll(l, "/", " "))
					if len(f) >= 10 && f[len(f)-1] == "Uninit" {
						p, _ := strconv.ParseInt(f[7], 10, 64)
						patch(t, img, p*bs, bytes.Repeat([]byte("junk"), int(bs)/4))
						n++
					}
				}
				if n == 0 {
					t.Error("no unwritten extents in the preallocated file")
				}
			}
			fsys := openImage(t, img)
			compareTree(t, fsys, tr.dir, true, tr)
			for name, want := range map[string]time.Time{
				"sizes/f1": time.Date(2001, 2, 3, 4, 5, 6, 123456789, time.UTC),
				"sizes/f0": time.Date(1965, 1, 1, 0, 0, 0, 0, time.UTC),
				"names":    time.Date(2030, 6, 7, 8, 9, 10, 999999999, time.UTC),
			} {
				fi, err := fsys.Stat(name)
				if err != nil || !fi.ModTime().Equal(want) {
					t.Errorf("%s: mtime %v (%v), want %v", name, fi.ModTime(), err, want)
				}
			}
			if err == nil {
				b, err := fs.ReadFile(fsys, "lost+found/prealloc")
				want := make([]byte, 8<<20)
				copy(want, "head")
				copy(want[6<<20:], "tail")
				if err != nil || !bytes.Equal(b, want) {
					t.Errorf("prealloc: %d bytes, %v", len(b), err)
				}
			}
			if m := mount(t, img); m != "" {
				compareTree(t, fsys, m, false, tr)
			}
		})
	}
}

// TestTimes sets extreme timestamps with debugfs (epoch bits, negative
// seconds, nanoseconds) and compares them with debugfs's decoding and the
// kernel's.
func TestTimes(t *testing.T) {
	src := t.TempDir()
	os.WriteFile(filepath.Join(src, "f"), []byte("x"), 0o644)
	img := mkfs(t, "mkfs.ext4", src, 16<<20)
	debugfsW(t, img,
		"sif /f mtime 0x80000000", "sif /f mtime_extra 0x1",
		"sif /f atime 0x7fffffff", fmt.Sprintf("sif /f atime_extra %#x", 999999999<<2|3),
		"sif /f ctime 0xffffffff", "sif /f ctime_extra 0",
		"sif /f crtime 5", "sif /f crtime_extra 0x4")
	fsys := openImage(t, img)
	fi, err := fsys.Lstat("f")
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*inode.Stat)
	want := map[string]time.Time{
		"mtime":  time.Date(2038, 1, 19, 3, 14, 8, 0, time.UTC),
		"atime":  time.Unix(1<<31-1+3<<32, 999999999),
		"ctime":  time.Date(1969, 12, 31, 23, 59, 59, 0, time.UTC),
		"crtime": time.Unix(5, 1),
	}
	got := map[string]time.Time{"mtime": st.Mtime, "atime": st.Atime, "ctime": st.Ctime, "crtime": st.Btime}
	dfs := debugfsStat(t, img, "f").times
	for k, w := range want {
		if !got[k].Equal(w) || !dfs[k].Equal(w) {
			t.Errorf("%s: %v, debugfs %v, want %v", k, got[k], dfs[k], w)
		}
	}
	if m := mount(t, img); m != "" {
		compareFile(t, fsys, m, "f", false, nil)
	}
}

// TestEAInode: with ea_inode, a value too large for a 1 KiB xattr block
// lives in an inode of its own.
func TestEAInode(t *testing.T) {
	src := t.TempDir()
	p := filepath.Join(src, "f")
	os.WriteFile(p, []byte("x"), 0o644)
	big := bytes.Repeat([]byte("ea-inode value "), 240)
	if err := unix.Lsetxattr(p, "user.huge", big, 0); err != nil {
		t.Skipf("the source filesystem takes no %d-byte xattr: %v", len(big), err)
	}
	unix.Lsetxattr(p, "user.small", []byte("s"), 0)
	img := mkfs(t, "mkfs.ext4", src, 16<<20, "-b", "1024", "-O", "ea_inode")
	fsys := openImage(t, img)
	x, err := fsys.Xattrs("f")
	if err != nil || !bytes.Equal(x["user.huge"], big) || string(x["user.small"]) != "s" || len(x) != 2 {
		t.Fatalf("Xattrs: %d keys, %v", len(x), err)
	}
	n, _ := fsys.walk("f", false)
	if n.fileACL != 0 {
		t.Log("the value went to an xattr block, not an inode")
	}
	if m := mount(t, img); m != "" {
		compareFile(t, fsys, m, "f", false, nil)
	}
}
