package ntfs

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
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"testing/fstest"
	"time"
	"unicode/utf16"

	"golang.org/x/sys/unix"

	"github.com/vdisk-project/vdisk/disk"
	"github.com/vdisk-project/vdisk/internal/testenv"
	"github.com/vdisk-project/vdisk/volume/inode"
)

func init() {
	// mkntfs and the ntfsprogs live in /usr/sbin.
	if p := os.Getenv("PATH"); !strings.Contains(p, "/usr/sbin") {
		os.Setenv("PATH", p+":/usr/sbin:/sbin")
	}
}

// mkntfs makes an empty NTFS volume of size bytes in dir.
func mkntfs(t testing.TB, dir string, size int64, label string) string {
	t.Helper()
	testenv.Tool(t, "mkntfs")
	img := filepath.Join(dir, "ntfs.img")
	if err := os.WriteFile(img, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, size); err != nil {
		t.Fatal(err)
	}
	testenv.Run(t, "mkntfs", "-F", "-Q", "-L", label, img)
	return img
}

// mountNTFS mounts img with ntfs-3g (FUSE), skipping when that cannot
// work here, and unmounts it in Cleanup (or when the returned function is
// called).
func mountNTFS(t testing.TB, img string, opts string) (string, func()) {
	t.Helper()
	testenv.Tool(t, "ntfs-3g")
	testenv.Tool(t, "fusermount3")
	if os.Geteuid() != 0 {
		if testenv.Required("ntfs-3g") {
			t.Fatal("ntfs-3g mount needs root")
		}
		t.Skip("ntfs-3g mount needs root")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skipf("no FUSE: %v", err)
	}
	mnt := t.TempDir()
	out, err := exec.Command("ntfs-3g", "-o", opts, img, mnt).CombinedOutput()
	if err != nil {
		t.Skipf("ntfs-3g mount: %v\n%s", err, out)
	}
	var once sync.Once
	umount := func() {
		once.Do(func() {
			if out, err := exec.Command("fusermount3", "-u", mnt).CombinedOutput(); err != nil {
				t.Errorf("fusermount3 -u %s: %v\n%s", mnt, err, out)
			}
		})
	}
	t.Cleanup(umount)
	return mnt, umount
}

func openImage(t testing.TB, img string) *FS {
	t.Helper()
	fh, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fh.Close() })
	st, err := fh.Stat()
	if err != nil {
		t.Fatal(err)
	}
	f, err := Open(fh, st.Size())
	if err != nil {
		t.Fatalf("Open(%s): %v", img, err)
	}
	return f
}

func utf16le(s string) []byte {
	var b []byte
	for _, u := range utf16.Encode([]rune(s)) {
		b = binary.LittleEndian.AppendUint16(b, u)
	}
	return b
}

// reparseLink builds a symbolic link (or, for junction, a mount point)
// reparse point as Windows writes it.
func reparseLink(sub, print string, relative, junction bool) []byte {
	s, p := utf16le(sub), utf16le(print)
	var d []byte
	d = binary.LittleEndian.AppendUint16(d, 0)
	d = binary.LittleEndian.AppendUint16(d, uint16(len(s)))
	d = binary.LittleEndian.AppendUint16(d, uint16(len(s)+2))
	d = binary.LittleEndian.AppendUint16(d, uint16(len(p)))
	tag := uint32(tagMountPoint)
	if !junction {
		tag = tagSymlink
		flags := uint32(0)
		if relative {
			flags = 1
		}
		d = binary.LittleEndian.AppendUint32(d, flags)
	}
	d = append(d, s...)
	d = append(d, 0, 0)
	d = append(d, p...)
	d = append(d, 0, 0)
	var b []byte
	b = binary.LittleEndian.AppendUint32(b, tag)
	b = binary.LittleEndian.AppendUint16(b, uint16(len(d)))
	b = binary.LittleEndian.AppendUint16(b, 0)
	return append(b, d...)
}

func setAttrib(t testing.TB, path string, set uint32) {
	t.Helper()
	b := make([]byte, 4)
	if _, err := unix.Getxattr(path, "system.ntfs_attrib_be", b); err != nil {
		t.Fatalf("getxattr %s: %v", path, err)
	}
	v := binary.BigEndian.Uint32(b) | set
	binary.BigEndian.PutUint32(b, v)
	if err := unix.Setxattr(path, "system.ntfs_attrib_be", b, 0); err != nil {
		t.Fatalf("setxattr %s: %v", path, err)
	}
}

const manyFiles = 5000

var longName = "ñandú-日本語-Ελληνικά-" + strings.Repeat("x", 150)

var mtime = time.Date(2021, 3, 4, 5, 6, 7, 123456700, time.UTC)

// populate fills a mounted volume with the cases the reader must handle.
func populate(t testing.TB, mnt string) {
	t.Helper()
	rng := rand.New(rand.NewPCG(1, 2))
	random := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		return b
	}
	write := func(name string, data []byte) {
		t.Helper()
		p := filepath.Join(mnt, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o777); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, 0o666); err != nil {
			t.Fatal(err)
		}
	}
	write("small.txt", []byte("hello, ntfs\n"))
	write("empty", nil)
	write("medium.bin", random(300000))
	write("big.bin", random(3<<20+123))
	write(longName, []byte("unicode"))
	write("dir/sub/deep.txt", []byte("deep\n"))
	write("Mixed Case Name.TXT", []byte("mixed"))
	// A DOS (8.3) name beside the long one, as Windows makes them.
	if err := unix.Setxattr(filepath.Join(mnt, "Mixed Case Name.TXT"), "system.ntfs_dos_name", []byte("MIXEDC~1.TXT"), 0); err != nil {
		t.Fatalf("set DOS name: %v", err)
	}

	// A sparse file: data, a 6 MiB hole, data, and a hole at the end.
	sp, err := os.Create(filepath.Join(mnt, "sparse"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sp.Write(random(5000)); err != nil {
		t.Fatal(err)
	}
	if _, err := sp.WriteAt(random(7000), 6<<20); err != nil {
		t.Fatal(err)
	}
	if err := sp.Truncate(10 << 20); err != nil {
		t.Fatal(err)
	}
	sp.Close()

	// Hard links.
	write("links/a", []byte("linked"))
	for _, n := range []string{"links/b", "dir/c"} {
		if err := os.Link(filepath.Join(mnt, "links/a"), filepath.Join(mnt, n)); err != nil {
			t.Fatal(err)
		}
	}
	// ntfs-3g's own symbolic links.
	if err := os.Mkdir(filepath.Join(mnt, "loops"), 0o777); err != nil {
		t.Fatal(err)
	}
	for name, target := range map[string]string{
		"links/rel":   "../small.txt",
		"links/dirln": "../dir/sub",
		"loops/loop":  "loop",
		"links/abs":   "/dir/sub/deep.txt",
	} {
		if err := os.Symlink(target, filepath.Join(mnt, name)); err != nil {
			t.Fatal(err)
		}
	}
	// Windows reparse-point links.
	write("links/winrel", nil)
	if err := unix.Setxattr(filepath.Join(mnt, "links/winrel"), "system.ntfs_reparse_data",
		reparseLink(`..\dir\sub\deep.txt`, `..\dir\sub\deep.txt`, true, false), 0); err != nil {
		t.Fatalf("set reparse data: %v", err)
	}
	if err := os.Mkdir(filepath.Join(mnt, "links/junction"), 0o777); err != nil {
		t.Fatal(err)
	}
	if err := unix.Setxattr(filepath.Join(mnt, "links/junction"), "system.ntfs_reparse_data",
		reparseLink(`\??\C:\dir\sub`, `C:\dir\sub`, false, true), 0); err != nil {
		t.Fatalf("set reparse data: %v", err)
	}

	// Alternate data streams.
	if err := unix.Setxattr(filepath.Join(mnt, "small.txt"), "user.Zone.Identifier", []byte("[ZoneTransfer]\r\nZoneId=3\r\n"), 0); err != nil {
		t.Fatal(err)
	}
	if err := unix.Setxattr(filepath.Join(mnt, "dir"), "user.big", random(60000), 0); err != nil {
		t.Fatal(err)
	}

	// More attributes than one record holds: ntfs-3g moves them to
	// extension records listed in an $ATTRIBUTE_LIST.
	write("manystreams", []byte("streams"))
	for i := range 40 {
		if err := unix.Setxattr(filepath.Join(mnt, "manystreams"), fmt.Sprintf("user.s%02d", i), bytes.Repeat([]byte{byte(i)}, 200), 0); err != nil {
			t.Fatal(err)
		}
	}
	write("manylinks/target", []byte("many names"))
	for i := range 30 {
		if err := os.Link(filepath.Join(mnt, "manylinks/target"), filepath.Join(mnt, fmt.Sprintf("manylinks/link-with-a-longer-name-%02d", i))); err != nil {
			t.Fatal(err)
		}
	}

	// Compressed files: made in a directory with the compressed flag.
	if err := os.Mkdir(filepath.Join(mnt, "comp"), 0o777); err != nil {
		t.Fatal(err)
	}
	setAttrib(t, filepath.Join(mnt, "comp"), fileCompressed)
	text := bytes.Repeat([]byte("The quick brown fox jumps over the lazy dog. 0123456789\n"), 40000)
	write("comp/text", text)
	mixed := append(append(append([]byte{}, text[:100000]...), random(200000)...), make([]byte, 300000)...)
	write("comp/mixed", append(mixed, text[:77777]...))
	write("comp/tiny", []byte("tiny"))

	// Attributes: read-only, hidden.
	write("readonly", []byte("ro"))
	setAttrib(t, filepath.Join(mnt, "readonly"), fileReadOnly)
	write("hidden", []byte("hid"))
	setAttrib(t, filepath.Join(mnt, "hidden"), fileHidden)

	// Many files: a B+ tree over several index blocks.
	for i := range manyFiles {
		write(fmt.Sprintf("many/file-%05d-%s", i, strings.Repeat("n", i%40)), []byte(fmt.Sprint(i)))
	}

	if err := os.Chtimes(filepath.Join(mnt, "medium.bin"), mtime, mtime); err != nil {
		t.Fatal(err)
	}
}

var (
	imageOnce sync.Once
	imageDir  string
	imagePath string
	imageErr  string
)

// testImage builds (once per test binary) a populated 128 MiB volume.
func testImage(t *testing.T) string {
	t.Helper()
	testenv.Tool(t, "mkntfs")
	imageOnce.Do(func() {
		dir, err := os.MkdirTemp("", "ntfs-test-")
		if err != nil {
			imageErr = err.Error()
			return
		}
		imageDir = dir
		// Build in a throwaway subtest-like scope: failures are recorded.
		ok := t.Run("build", func(t *testing.T) {
			img := mkntfs(t, dir, 128<<20, "TestVol")
			mnt, umount := mountNTFS(t, img, "streams_interface=xattr,compression")
			populate(t, mnt)
			umount()
			imagePath = img
		})
		if !ok || imagePath == "" {
			imageErr = "building the test image failed or was skipped"
		}
	})
	if imageErr != "" {
		t.Skip(imageErr)
	}
	return imagePath
}

func TestMain(m *testing.M) {
	code := m.Run()
	if imageDir != "" {
		os.RemoveAll(imageDir)
	}
	os.Exit(code)
}

// TestAgainstNTFS3G compares every file against what a read-only ntfs-3g
// mount of the same image shows.
func TestAgainstNTFS3G(t *testing.T) {
	img := testImage(t)
	f := openImage(t, img)
	mnt, _ := mountNTFS(t, img, "ro,streams_interface=xattr")

	var sf unix.Statfs_t
	if err := unix.Statfs(mnt, &sf); err != nil {
		t.Fatal(err)
	}
	st, err := f.Statfs()
	if err != nil {
		t.Fatal(err)
	}
	if got, want := st.FreeBytes, int64(sf.Bfree)*sf.Bsize; got != want {
		t.Errorf("Statfs free %d bytes, ntfs-3g says %d", got, want)
	}
	if got, want := st.TotalBytes, int64(sf.Blocks)*sf.Bsize; got != want {
		t.Errorf("Statfs total %d bytes, ntfs-3g says %d", got, want)
	}
	t.Logf("statfs: ours %+v; ntfs-3g files %d, free %d", st, sf.Files, sf.Ffree)

	seen := 0
	err = filepath.WalkDir(mnt, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(mnt, p)
		rel = filepath.ToSlash(rel)
		seen++
		var want syscall.Stat_t
		if err := syscall.Lstat(p, &want); err != nil {
			return err
		}
		fi, err := f.Lstat(rel)
		if err != nil {
			t.Errorf("Lstat(%q): %v", rel, err)
			return nil
		}
		st := fi.Sys().(*inode.Stat)
		if got, w := fi.Mode().Type(), fs.FileMode(0); true {
			switch want.Mode & syscall.S_IFMT {
			case syscall.S_IFDIR:
				w = fs.ModeDir
			case syscall.S_IFLNK:
				w = fs.ModeSymlink
			}
			if got != w {
				t.Errorf("%s: type %v, want %v", rel, got, w)
			}
		}
		// ntfs-3g shows a read-only file as 0777 too; this reader drops
		// the write bits (see the package documentation).
		if got, w := uint32(st.Mode.Perm()), want.Mode&0o777; got != w && rel != "readonly" {
			t.Errorf("%s: permissions %o, want %o", rel, got, w)
		}
		if want.Mode&syscall.S_IFMT != syscall.S_IFDIR {
			// ntfs-3g counts a separate DOS name as a link; this reader
			// counts the names it shows.
			if st.Nlink != uint32(want.Nlink) && rel != "Mixed Case Name.TXT" {
				t.Errorf("%s: nlink %d, want %d", rel, st.Nlink, want.Nlink)
			}
			// ntfs-3g shows an absolute link's target below its mount point.
			if st.Size != want.Size && !strings.HasPrefix(st.Target, "/") {
				t.Errorf("%s: size %d, want %d", rel, st.Size, want.Size)
			}
		}
		if want.Mode&syscall.S_IFMT == syscall.S_IFREG && st.Blocks > 0 && st.Blocks != want.Blocks*512 {
			t.Errorf("%s: %d bytes allocated, ntfs-3g says %d", rel, st.Blocks, want.Blocks*512)
		}
		if w := time.Unix(want.Mtim.Sec, want.Mtim.Nsec); !st.Mtime.Equal(w) {
			t.Errorf("%s: mtime %v, want %v", rel, st.Mtime, w)
		}
		if w := time.Unix(want.Atim.Sec, want.Atim.Nsec); !st.Atime.Equal(w) {
			t.Errorf("%s: atime %v, want %v", rel, st.Atime, w)
		}
		if w := time.Unix(want.Ctim.Sec, want.Ctim.Nsec); !st.Ctime.Equal(w) {
			t.Errorf("%s: ctime %v, want %v", rel, st.Ctime, w)
		}
		if rel != "." && st.Ino != want.Ino {
			t.Errorf("%s: ino %d, want %d", rel, st.Ino, want.Ino)
		}
		switch want.Mode & syscall.S_IFMT {
		case syscall.S_IFLNK:
			wt, err := os.Readlink(p)
			if err != nil {
				return err
			}
			got, err := f.ReadLink(rel)
			if err != nil {
				t.Errorf("ReadLink(%q): %v", rel, err)
			} else if !strings.HasPrefix(wt, "/") && got != wt {
				t.Errorf("ReadLink(%q) = %q, want %q", rel, got, wt)
			} else if st.Target != got {
				t.Errorf("%s: Stat.Target %q, ReadLink %q", rel, st.Target, got)
			}
		case syscall.S_IFREG:
			w, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			g, err := fs.ReadFile(f, rel)
			if err != nil {
				t.Errorf("ReadFile(%q): %v", rel, err)
			} else if !bytes.Equal(g, w) {
				t.Errorf("%s: contents differ (%d bytes, want %d)", rel, len(g), len(w))
			}
		case syscall.S_IFDIR:
			ents, err := os.ReadDir(p)
			if err != nil {
				return err
			}
			got, err := f.ReadDir(rel)
			if err != nil {
				t.Errorf("ReadDir(%q): %v", rel, err)
			} else if len(got) != len(ents) {
				t.Errorf("ReadDir(%q): %d entries, want %d", rel, len(got), len(ents))
			}
		}
		// Alternate data streams.
		wantX := map[string][]byte{}
		if want.Mode&syscall.S_IFMT != syscall.S_IFLNK {
			buf := make([]byte, 1<<16)
			n, err := unix.Llistxattr(p, buf)
			if err != nil {
				return err
			}
			for _, name := range strings.Split(string(buf[:n]), "\x00") {
				if !strings.HasPrefix(name, "user.") {
					continue
				}
				v := make([]byte, 1<<20)
				n, err := unix.Lgetxattr(p, name, v)
				if err != nil {
					return err
				}
				wantX[name] = v[:n]
			}
		}
		gotX, err := f.Xattrs(rel)
		if err != nil {
			t.Errorf("Xattrs(%q): %v", rel, err)
		} else if len(gotX) != len(wantX) && want.Mode&syscall.S_IFMT != syscall.S_IFLNK {
			t.Errorf("Xattrs(%q): %d streams, want %d", rel, len(gotX), len(wantX))
		} else {
			for k, v := range wantX {
				if !bytes.Equal(gotX[k], v) {
					t.Errorf("Xattrs(%q)[%q] = %d bytes, want %d", rel, k, len(gotX[k]), len(v))
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if seen < manyFiles+20 {
		t.Errorf("walked %d names on the ntfs-3g mount, want over %d", seen, manyFiles+20)
	}
}

// TestFeatures checks each case against the values it was made with.
func TestFeatures(t *testing.T) {
	img := testImage(t)
	f := openImage(t, img)

	if f.Type() != "ntfs" || f.Label() != "TestVol" {
		t.Errorf("Type, Label = %q, %q, want ntfs, TestVol", f.Type(), f.Label())
	}
	if out, err := exec.Command("blkid", "-o", "value", "-s", "UUID", img).Output(); err == nil {
		if got, want := f.UUID(), strings.TrimSpace(string(out)); got != want {
			t.Errorf("UUID = %q, blkid says %q", got, want)
		}
	}
	stat := func(name string) *inode.Stat {
		t.Helper()
		fi, err := f.Lstat(name)
		if err != nil {
			t.Fatalf("Lstat(%q): %v", name, err)
		}
		return fi.Sys().(*inode.Stat)
	}
	if st := stat("medium.bin"); !st.Mtime.Equal(mtime) {
		t.Errorf("medium.bin mtime = %v, want %v", st.Mtime, mtime)
	}
	if st := stat("sparse"); st.Size != 10<<20 || st.Blocks >= 1<<20 || st.Blocks == 0 {
		t.Errorf("sparse: size %d, blocks %d; want 10 MiB with under 1 MiB allocated", st.Size, st.Blocks)
	}
	if st := stat("manylinks/target"); st.Nlink != 31 {
		t.Errorf("manylinks/target nlink = %d, want 31", st.Nlink)
	}
	if x, err := f.Xattrs("manystreams"); err != nil || len(x) != 40 {
		t.Errorf("Xattrs(manystreams) = %d streams, %v; want 40", len(x), err)
	}
	if n, err := f.node(stat("manystreams").Ino, 0); err == nil {
		r, _ := f.readRecord(n.num, -1)
		as, _ := f.recordAttrs(r, nil)
		hasList := false
		for _, a := range as {
			hasList = hasList || a.typ == attrAttributeList
		}
		if !hasList {
			t.Errorf("manystreams has no $ATTRIBUTE_LIST; the case is not tested")
		}
	}
	if st := stat("links/a"); st.Nlink != 3 {
		t.Errorf("links/a nlink = %d, want 3", st.Nlink)
	}
	if st := stat("readonly"); st.Mode != 0o555 {
		t.Errorf("readonly mode = %v, want 0555", st.Mode)
	}
	if st := stat("hidden"); st.Mode != 0o777 {
		t.Errorf("hidden mode = %v, want 0777", st.Mode)
	}
	for name, want := range map[string]string{
		"links/rel":               "hello, ntfs\n",
		"links/abs":               "deep\n",
		"links/winrel":            "deep\n",
		"links/junction/deep.txt": "deep\n",
		"links/dirln/deep.txt":    "deep\n",
	} {
		b, err := fs.ReadFile(f, name)
		if err != nil || string(b) != want {
			t.Errorf("ReadFile(%q) = %q, %v; want %q", name, b, err, want)
		}
	}
	if tg, err := f.ReadLink("links/junction"); err != nil || tg != "/dir/sub" {
		t.Errorf("ReadLink(links/junction) = %q, %v; want /dir/sub", tg, err)
	}
	if _, err := f.Open("loops/loop"); err == nil || !errors.Is(err, disk.ErrCorrupt) {
		t.Errorf("Open(loops/loop) = %v, want corrupt (too many links)", err)
	}
	if _, err := f.Stat("small.txt/x"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Stat(small.txt/x) = %v, want not exist", err)
	}
	if _, err := f.Stat("/small.txt"); !errors.Is(err, fs.ErrInvalid) {
		t.Errorf("Stat(/small.txt) = %v, want invalid", err)
	}
	// The 8.3 name is neither listed nor found, and does not count as a
	// link.
	if _, err := f.Stat("MIXEDC~1.TXT"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Stat(MIXEDC~1.TXT) = %v, want not exist", err)
	}
	if st := stat("Mixed Case Name.TXT"); st.Nlink != 1 {
		t.Errorf("Mixed Case Name.TXT nlink = %d, want 1", st.Nlink)
	}
	ents, err := f.ReadDir(".")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), "$") {
			t.Errorf("metafile %q listed", e.Name())
		}
	}
	many, err := f.ReadDir("many")
	if err != nil || len(many) != manyFiles {
		t.Fatalf("ReadDir(many) = %d entries, %v; want %d", len(many), err, manyFiles)
	}
	x, err := f.Xattrs("small.txt")
	if err != nil || string(x["user.Zone.Identifier"]) != "[ZoneTransfer]\r\nZoneId=3\r\n" {
		t.Errorf("Xattrs(small.txt) = %q, %v", x, err)
	}
	if x, err := f.Xattrs("big.bin"); err != nil || x == nil || len(x) != 0 {
		t.Errorf("Xattrs(big.bin) = %v, %v; want an empty map", x, err)
	}
	st, err := f.Statfs()
	if err != nil {
		t.Fatal(err)
	}
	if st.TotalBytes <= 120<<20 || st.TotalBytes > 128<<20 || st.FreeBytes <= 0 || st.FreeBytes >= st.TotalBytes || st.BlockSize != 4096 {
		t.Errorf("Statfs = %+v", st)
	}
	// The compressed files really are compressed on disk.
	if st := stat("comp/text"); st.Blocks >= st.Size/4 {
		t.Errorf("comp/text: %d bytes allocated for %d; not compressed?", st.Blocks, st.Size)
	}
}

// TestReadAt reads across run, hole and compression unit boundaries at
// odd offsets and compares with whole-file reads.
func TestReadAt(t *testing.T) {
	img := testImage(t)
	f := openImage(t, img)
	for _, name := range []string{"big.bin", "sparse", "comp/mixed", "comp/text", "small.txt"} {
		t.Run(strings.ReplaceAll(name, "/", "_"), func(t *testing.T) {
			whole, err := fs.ReadFile(f, name)
			if err != nil {
				t.Fatal(err)
			}
			fl, err := f.Open(name)
			if err != nil {
				t.Fatal(err)
			}
			defer fl.Close()
			ra := fl.(io.ReaderAt)
			rng := rand.New(rand.NewPCG(3, 4))
			for range 200 {
				off := rng.Int64N(int64(len(whole)) + 100)
				n := rng.IntN(200000)
				b := make([]byte, n)
				got, err := ra.ReadAt(b, off)
				want := max(0, min(int64(n), int64(len(whole))-off))
				if int64(got) != want || (got < n && err != io.EOF) || (got == n && err != nil) {
					t.Fatalf("ReadAt(%d bytes at %d) = %d, %v; want %d", n, off, got, err, want)
				}
				if got > 0 && !bytes.Equal(b[:got], whole[off:off+int64(got)]) {
					t.Fatalf("ReadAt(%d bytes at %d): wrong data", n, off)
				}
			}
		})
	}
}

func TestFSTest(t *testing.T) {
	img := testImage(t)
	f := openImage(t, img)
	// fstest opens every name, so the link loop and the 5,000 files (read
	// in TestAgainstNTFS3G) are left out.
	for dir, want := range map[string][]string{
		"dir":   {"sub/deep.txt"},
		"comp":  {"text", "mixed", "tiny"},
		"links": {"a", "b", "rel", "winrel", "abs"},
	} {
		sub, err := fs.Sub(f, dir)
		if err != nil {
			t.Fatal(err)
		}
		if err := fstest.TestFS(sub, want...); err != nil {
			t.Errorf("%s: %v", dir, err)
		}
	}
}

// TestConcurrent reads files from many goroutines at once (run with
// -race).
func TestConcurrent(t *testing.T) {
	img := testImage(t)
	f := openImage(t, img)
	names := []string{"big.bin", "comp/mixed", "sparse", "medium.bin"}
	want := map[string][]byte{}
	for _, n := range names {
		b, err := fs.ReadFile(f, n)
		if err != nil {
			t.Fatal(err)
		}
		want[n] = b
	}
	fresh := openImage(t, img)
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n := names[i%len(names)]
			b, err := fs.ReadFile(fresh, n)
			if err != nil || !bytes.Equal(b, want[n]) {
				t.Errorf("concurrent ReadFile(%q): %d bytes, %v", n, len(b), err)
			}
			if _, err := fresh.ReadDir("many"); err != nil {
				t.Errorf("concurrent ReadDir(many): %v", err)
			}
		}()
	}
	wg.Wait()
}

// TestAgainstNTFSLS compares each directory's names and record numbers
// with what ntfsls (ntfsprogs, reading the image without mounting it)
// lists.
func TestAgainstNTFSLS(t *testing.T) {
	img := testImage(t)
	testenv.Tool(t, "ntfsls")
	f := openImage(t, img)
	dirs := []string{"."}
	for len(dirs) > 0 {
		d := dirs[0]
		dirs = dirs[1:]
		ents, err := f.ReadDir(d)
		if err != nil {
			t.Fatalf("ReadDir(%q): %v", d, err)
		}
		var got []string
		for _, e := range ents {
			fi, err := e.Info()
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, fmt.Sprintf("%d %s", fi.Sys().(*inode.Stat).Ino, e.Name()))
			if e.IsDir() {
				dirs = append(dirs, path.Join(d, e.Name()))
			}
		}
		cmd := exec.Command("ntfsls", "-i", "-p", "/"+strings.TrimPrefix(d, "."), img)
		cmd.Env = append(os.Environ(), "LC_ALL=C.UTF-8")
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("ntfsls %s: %v", d, err)
		}
		var want []string
		for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			if l = strings.TrimSpace(l); l != "" {
				ino, name, _ := strings.Cut(l, " ")
				if name = strings.TrimSpace(name); name != "." && name != ".." {
					want = append(want, ino+" "+name)
				}
			}
		}
		slices.Sort(got)
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Errorf("%s: %d names, ntfsls lists %d\n got %.400q\nwant %.400q", d, len(got), len(want), got, want)
		}
	}
}

// TestFragmented fills a small volume with 4 KiB files, deletes every
// other one and writes a file into the holes: its runlist is long enough
// to be split over extension records.
func TestFragmented(t *testing.T) {
	dir := t.TempDir()
	img := mkntfs(t, dir, 40<<20, "Frag")
	mnt, umount := mountNTFS(t, img, "streams_interface=xattr")
	var names []string
	chunk := bytes.Repeat([]byte{0x5a}, 4096)
	for i := 0; ; i++ {
		p := filepath.Join(mnt, fmt.Sprintf("f%05d", i))
		if err := os.WriteFile(p, chunk, 0o666); err != nil {
			os.Remove(p)
			break
		}
		names = append(names, p)
	}
	for i := 0; i < len(names); i += 2 {
		os.Remove(names[i])
	}
	rng := rand.New(rand.NewPCG(5, 6))
	want := make([]byte, 4096*(len(names)/2-200))
	for i := range want {
		want[i] = byte(rng.Uint32())
	}
	if err := os.WriteFile(filepath.Join(mnt, "frag"), want, 0o666); err != nil {
		t.Fatal(err)
	}
	umount()
	f := openImage(t, img)
	got, err := fs.ReadFile(f, "frag")
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("ReadFile(frag) = %d bytes, %v; want %d bytes", len(got), err, len(want))
	}
	fi, _ := f.Stat("frag")
	n, err := f.node(fi.Sys().(*inode.Stat).Ino, 0)
	if err != nil {
		t.Fatal(err)
	}
	r, _ := f.readRecord(n.num, -1)
	as, _ := f.recordAttrs(r, nil)
	pieces, list := 0, false
	for _, a := range as {
		list = list || a.typ == attrAttributeList
		if a.typ == attrData && a.name == "" {
			pieces++
		}
	}
	t.Logf("frag: %d runs, %d bytes, %d of its $DATA pieces in the base record", len(n.data.runs), len(want), pieces)
	if !list || len(n.data.runs) < 300 {
		t.Errorf("frag has %d runs and attribute list %v; the case is not tested", len(n.data.runs), list)
	}
}

// TestClusterSizes reads volumes with small and large clusters: index
// block VCNs count clusters when a block is at least a cluster, else
// 512-byte units.
func TestClusterSizes(t *testing.T) {
	for _, cs := range []int{512, 2048, 65536} {
		t.Run(fmt.Sprint(cs), func(t *testing.T) {
			dir := t.TempDir()
			img := filepath.Join(dir, "ntfs.img")
			if err := os.WriteFile(img, nil, 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.Truncate(img, 64<<20); err != nil {
				t.Fatal(err)
			}
			testenv.Run(t, "mkntfs", "-F", "-Q", "-c", fmt.Sprint(cs), "-L", "C", img)
			mnt, umount := mountNTFS(t, img, "streams_interface=xattr")
			want := map[string][]byte{}
			rng := rand.New(rand.NewPCG(uint64(cs), 7))
			for i := range 300 {
				b := make([]byte, rng.IntN(20000))
				for j := range b {
					b[j] = byte(rng.Uint32())
				}
				name := fmt.Sprintf("d/file-number-%04d", i)
				want[name] = b
			}
			if err := os.Mkdir(filepath.Join(mnt, "d"), 0o777); err != nil {
				t.Fatal(err)
			}
			for name, b := range want {
				if err := os.WriteFile(filepath.Join(mnt, name), b, 0o666); err != nil {
					t.Fatal(err)
				}
			}
			umount()
			f := openImage(t, img)
			ents, err := f.ReadDir("d")
			if err != nil || len(ents) != len(want) {
				t.Fatalf("ReadDir(d) = %d entries, %v; want %d", len(ents), err, len(want))
			}
			for name, b := range want {
				got, err := fs.ReadFile(f, name)
				if err != nil || !bytes.Equal(got, b) {
					t.Fatalf("ReadFile(%q) = %d bytes, %v; want %d", name, len(got), err, len(b))
				}
			}
			if st, err := f.Statfs(); err != nil || st.BlockSize != int64(cs) {
				t.Errorf("Statfs = %+v, %v; want %d-byte blocks", st, err, cs)
			}
		})
	}
}

// TestStatName checks that Stat names what was asked for, not what a
// link led to.
func TestStatName(t *testing.T) {
	f := openImage(t, testImage(t))
	for name, want := range map[string]string{"links/rel": "rel", "links/dirln": "dirln", ".": ".", "links/junction": "junction"} {
		fi, err := f.Stat(name)
		if err != nil || fi.Name() != want {
			t.Errorf("Stat(%q).Name() = %v, %v; want %q", name, fi, err, want)
		}
	}
}
