package ext4

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
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
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vdisk-project/vdisk/internal/testenv"
	"github.com/vdisk-project/vdisk/volume/inode"
)

var isRoot = os.Geteuid() == 0

// tree describes what buildTree made, for the checks that need to know.
type tree struct {
	dir      string
	owners   bool // chown worked
	devices  bool // mknod worked
	trusted  bool // trusted.* xattrs could be set
	acl      bool // a POSIX ACL could be set
	manyName string
}

// buildTree makes the source tree that images are built from. Every
// symbolic link resolves (fstest.TestFS opens them).
func buildTree(t testing.TB, many int) *tree {
	t.Helper()
	root := filepath.Join(t.TempDir(), "src")
	tr := &tree{dir: root}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	rng := rand.New(rand.NewPCG(1, 2))
	data := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		return b
	}
	write := func(name string, b []byte) {
		p := filepath.Join(root, name)
		must(os.MkdirAll(filepath.Dir(p), 0o755))
		must(os.WriteFile(p, b, 0o644))
	}
	must(os.MkdirAll(root, 0o755))
	for _, n := range []int{0, 1, 59, 60, 61, 4095, 4096, 4097, 12 * 4096, 13*4096 + 5, 3<<20 + 17} {
		write("sizes/f"+strconv.Itoa(n), data(n))
	}
	write("big/five-mib", data(5<<20))

	// A sparse file: holes at the start, middle and end.
	sp := filepath.Join(root, "sparse")
	fh, err := os.Create(sp)
	must(err)
	must(fh.Truncate(100 << 20))
	for _, off := range []int64{1 << 20, 1<<20 + 8192, 40 << 20, 70<<20 + 100} {
		_, err := fh.WriteAt(data(5000), off)
		must(err)
	}
	must(fh.Close())
	// A file in many extents (a tree of depth 1 or more).
	fh, err = os.Create(filepath.Join(root, "fragmented"))
	must(err)
	for i := int64(0); i < 300; i++ {
		_, err := fh.WriteAt(data(4096), i*3*4096)
		must(err)
	}
	must(fh.Close())

	// Hard links.
	write("links/a", []byte("linked three times\n"))
	must(os.Link(filepath.Join(root, "links/a"), filepath.Join(root, "links/b")))
	must(os.Link(filepath.Join(root, "links/a"), filepath.Join(root, "sizes/also-a")))

	// Symbolic links: fast, slow (target over 60 bytes), absolute (taken
	// from the image's root), to a directory, through a link.
	sym := func(target, name string) { must(os.Symlink(target, filepath.Join(root, name))) }
	sym("a", "links/fast")
	sym(strings.Repeat("./", 40)+"a", "links/slow")
	sym("/sizes/f4096", "links/absolute")
	sym("../sizes", "links/dir")
	sym("dir/f1", "links/through")
	sym("../links/../links/fast", "links/dotdot")

	// Deep nesting.
	deep := root
	for i := range 40 {
		deep = filepath.Join(deep, "d"+strconv.Itoa(i))
	}
	must(os.MkdirAll(deep, 0o755))
	must(os.WriteFile(filepath.Join(deep, "bottom"), []byte("deep\n"), 0o644))

	// Unusual names.
	for _, n := range []string{"with space", "ünïcødé ☃", "-dash", ".hidden", "tab\there", "x" + strings.Repeat("y", 254)} {
		write("names/"+n, []byte(n))
	}

	// A directory big enough for an htree.
	if many > 0 {
		tr.manyName = "many"
		must(os.MkdirAll(filepath.Join(root, "many"), 0o755))
		for i := range many {
			fh, err := os.Create(filepath.Join(root, "many", fmt.Sprintf("entry-%05d-%s", i, strings.Repeat("n", i%40))))
			must(err)
			if i%1000 == 0 {
				_, err = fh.WriteString("some data " + strconv.Itoa(i))
				must(err)
			}
			must(fh.Close())
		}
	}

	// Modes.
	write("modes/setuid", []byte("#!/bin/sh\n"))
	must(os.Chmod(filepath.Join(root, "modes/setuid"), fs.ModeSetuid|0o755))
	write("modes/none", []byte("unreadable"))
	if isRoot { // mke2fs -d must read it
		must(os.Chmod(filepath.Join(root, "modes/none"), 0))
	}
	write("modes/setgid", nil)
	must(os.Chmod(filepath.Join(root, "modes/setgid"), fs.ModeSetgid|0o750))
	must(os.MkdirAll(filepath.Join(root, "modes/sticky"), 0o755))
	must(os.Chmod(filepath.Join(root, "modes/sticky"), fs.ModeSticky|0o777))
	must(os.MkdirAll(filepath.Join(root, "modes/setgid-dir"), 0o755))
	must(os.Chmod(filepath.Join(root, "modes/setgid-dir"), fs.ModeSetgid|0o775))

	// Owners, including ids above 16 bits.
	write("owners/plain", []byte("x"))
	write("owners/high", []byte("y"))
	must(os.Symlink("plain", filepath.Join(root, "owners/link")))
	if isRoot {
		tr.owners = os.Chown(filepath.Join(root, "owners/plain"), 1234, 5678) == nil &&
			os.Chown(filepath.Join(root, "owners/high"), 100000, 70000) == nil &&
			os.Lchown(filepath.Join(root, "owners/link"), 4242, 4343) == nil
	}

	// Special files.
	must(os.MkdirAll(filepath.Join(root, "special"), 0o755))
	must(unix.Mkfifo(filepath.Join(root, "special/fifo"), 0o640))
	if isRoot {
		tr.devices = unix.Mknod(filepath.Join(root, "special/null"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))) == nil &&
			unix.Mknod(filepath.Join(root, "special/blk"), unix.S_IFBLK|0o660, int(unix.Mkdev(259, 70000))) == nil &&
			unix.Mknod(filepath.Join(root, "special/sock"), unix.S_IFSOCK|0o755, 0) == nil
	}

	// Extended attributes: small ones (in the inode), a large one (in an
	// xattr block), several namespaces, a POSIX ACL.
	x := filepath.Join(root, "xattrs")
	must(os.MkdirAll(x, 0o755))
	write("xattrs/small", []byte("s"))
	write("xattrs/large", []byte("l"))
	write("xattrs/acl", []byte("a"))
	must(unix.Lsetxattr(filepath.Join(x, "small"), "user.comment", []byte("hello"), 0))
	must(unix.Lsetxattr(filepath.Join(x, "small"), "user.empty", nil, 0))
	must(unix.Lsetxattr(filepath.Join(x, "large"), "user.big", bytes.Repeat([]byte("0123456789abcdef"), 44), 0))
	must(unix.Lsetxattr(filepath.Join(x, "large"), "user.other", []byte("v"), 0))
	must(unix.Lsetxattr(x, "user.on-dir", []byte("dir"), 0))
	if isRoot {
		tr.trusted = unix.Lsetxattr(filepath.Join(x, "small"), "trusted.t", []byte("trusted value"), 0) == nil
		// owner rw, named user 1000 r, group r, mask r, other none.
		acl := aclXattr([][3]uint32{{aclUserObj, 6, 0xffffffff}, {aclUser, 4, 1000}, {aclGroupObj, 4, 0xffffffff}, {aclMask, 4, 0xffffffff}, {aclOther, 0, 0xffffffff}})
		tr.acl = unix.Lsetxattr(filepath.Join(x, "acl"), "system.posix_acl_access", acl, 0) == nil
		if tr.acl {
			def := aclXattr([][3]uint32{{aclUserObj, 7, 0xffffffff}, {aclGroupObj, 5, 0xffffffff}, {aclOther, 5, 0xffffffff}})
			tr.acl = unix.Lsetxattr(x, "system.posix_acl_default", def, 0) == nil
		}
	}

	// Times with nanoseconds, and before 1970.
	when := time.Date(2001, 2, 3, 4, 5, 6, 123456789, time.UTC)
	must(os.Chtimes(filepath.Join(root, "sizes/f1"), when, when))
	must(os.Chtimes(filepath.Join(root, "sizes/f0"), when, time.Date(1965, 1, 1, 0, 0, 0, 0, time.UTC)))
	must(os.Chtimes(filepath.Join(root, "names"), when, time.Date(2030, 6, 7, 8, 9, 10, 999999999, time.UTC)))
	return tr
}

// aclXattr encodes a POSIX ACL as getxattr(2) returns it.
func aclXattr(ents [][3]uint32) []byte {
	b := binary.LittleEndian.AppendUint32(nil, 2)
	for _, e := range ents {
		b = binary.LittleEndian.AppendUint16(b, uint16(e[0]))
		b = binary.LittleEndian.AppendUint16(b, uint16(e[1]))
		b = binary.LittleEndian.AppendUint32(b, e[2])
	}
	return b
}

// mkfs makes an image of size bytes with tool (mkfs.ext4 and friends),
// filled from src when it is not "".
func mkfs(t testing.TB, tool, src string, size int64, args ...string) string {
	t.Helper()
	path := testenv.Tool(t, tool)
	img := filepath.Join(t.TempDir(), "fs.img")
	f, err := os.Create(img)
	if err != nil {
		t.Fatal(err)
	}
	f.Truncate(size)
	f.Close()
	a := append([]string{"-q", "-F"}, args...)
	if src != "" {
		a = append(a, "-d", src)
	}
	a = append(a, img)
	cmd := exec.Command(path, a...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s %v: %v\n%s", tool, a, err, out)
	}
	return img
}

func openImage(t testing.TB, img string) *FS {
	t.Helper()
	fh, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fh.Close() })
	st, _ := fh.Stat()
	fsys, err := Open(fh, st.Size())
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return fsys
}

// mount mounts img read-only through the kernel, for ground truth, or
// returns "" when that is not possible here.
func mount(t testing.TB, img string) string { return mountWith(t, img, "ro,loop") }

// mountWith mounts img with the mount options o.
func mountWith(t testing.TB, img, o string) string {
	t.Helper()
	if !isRoot {
		return ""
	}
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-o", o, img, dir).CombinedOutput(); err != nil {
		t.Logf("no kernel mount for ground truth (%v: %s)", err, bytes.TrimSpace(out))
		return ""
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount: %v %s", err, out)
		}
	})
	return dir
}

// debugfs runs a debugfs request on img.
func debugfs(t testing.TB, img, req string) string {
	t.Helper()
	out, err := exec.Command(testenv.Tool(t, "debugfs"), "-R", req, img).Output()
	if err != nil {
		t.Fatalf("debugfs -R %q: %v", req, err)
	}
	return string(out)
}

func debugfsW(t testing.TB, img string, reqs ...string) {
	t.Helper()
	cmdf := filepath.Join(t.TempDir(), "cmds")
	os.WriteFile(cmdf, []byte(strings.Join(reqs, "\n")+"\n"), 0o644)
	out, err := exec.Command(testenv.Tool(t, "debugfs"), "-w", "-f", cmdf, img).CombinedOutput()
	if err != nil {
		t.Fatalf("debugfs -w %q: %v\n%s", reqs, err, out)
	}
}

// dstat is what debugfs's stat says of an inode.
type dstat struct {
	ino        uint64
	links      uint32
	blockcount int64
	times      map[string]time.Time // ctime, atime, mtime, crtime
}

func debugfsStat(t testing.TB, img, name string) dstat {
	t.Helper()
	cmd := exec.Command(testenv.Tool(t, "debugfs"), "-R", "stat \"/"+name+"\"", img)
	cmd.Env = append(os.Environ(), "TZ=UTC")
	b, err := cmd.Output()
	if err != nil {
		t.Fatalf("debugfs stat %s: %v", name, err)
	}
	out := string(b)
	d := dstat{times: map[string]time.Time{}}
	fields := strings.Fields(out)
	for i, f := range fields {
		if i+1 >= len(fields) {
			break
		}
		v := fields[i+1]
		switch f {
		case "Inode:":
			d.ino, _ = strconv.ParseUint(v, 10, 64)
		case "Links:":
			n, _ := strconv.ParseUint(v, 10, 32)
			d.links = uint32(n)
		case "Blockcount:":
			d.blockcount, _ = strconv.ParseInt(v, 10, 64)
		}
	}
	// " mtime: 0xSECONDS:EXTRA -- Tue Mar 12 10:33:22 2137" (no EXTRA
	// with 128-byte inodes): the date is debugfs's own decoding of the
	// seconds, epoch bits included; the nanoseconds are EXTRA>>2.
	for _, l := range strings.Split(out, "\n") {
		k, rest, ok := strings.Cut(strings.TrimSpace(l), ": 0x")
		if !ok || (k != "ctime" && k != "atime" && k != "mtime" && k != "crtime") {
			continue
		}
		raw, date, ok := strings.Cut(rest, " -- ")
		if !ok {
			continue
		}
		when, err := time.Parse("Mon Jan _2 15:04:05 2006", strings.TrimSpace(date))
		if err != nil {
			t.Fatalf("debugfs date %q: %v", date, err)
		}
		if _, x, ok := strings.Cut(raw, ":"); ok {
			extra, _ := strconv.ParseUint(x, 16, 32)
			when = when.Add(time.Duration(extra >> 2))
		}
		d.times[k] = when
	}
	return d
}

// listXattrs reads a file's attributes through the kernel (lgetxattr).
func listXattrs(t testing.TB, p string) map[string][]byte {
	t.Helper()
	m := map[string][]byte{}
	buf := make([]byte, 1<<16)
	n, err := unix.Llistxattr(p, buf)
	if err != nil {
		if errors.Is(err, unix.ENOTSUP) {
			return m
		}
		t.Fatalf("llistxattr %s: %v", p, err)
	}
	for _, name := range strings.Split(string(buf[:n]), "\x00") {
		if name == "" {
			continue
		}
		v := make([]byte, 1<<16)
		vn, err := unix.Lgetxattr(p, name, v)
		if err != nil {
			t.Fatalf("lgetxattr %s %s: %v", p, name, err)
		}
		m[name] = v[:vn]
	}
	return m
}

func fileHash(t testing.TB, r io.Reader) [32]byte {
	h := sha256.New()
	if _, err := io.Copy(h, r); err != nil {
		t.Fatal(err)
	}
	var s [32]byte
	h.Sum(s[:0])
	return s
}

// compareTree checks every file of fsys against the reference directory
// ref: the source tree mkfs was given (fromSource) or the image mounted
// by the kernel. From the source, directory sizes, atimes and ctimes are
// not compared, and mtimes to the second when the image has no
// nanoseconds (e2fsprogs 1.47.0's mkfs -d drops them).
func compareTree(t *testing.T, fsys *FS, ref string, fromSource bool, tr *tree, skip ...string) {
	t.Helper()
	count := 0
	err := filepath.WalkDir(ref, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(ref, p)
		rel = filepath.ToSlash(rel)
		if rel == "lost+found" {
			return fs.SkipDir
		}
		count++
		if slices.Contains(skip, rel) {
			return nil
		}
		compareFile(t, fsys, ref, rel, fromSource, tr)
		if d.IsDir() {
			want, err := os.ReadDir(p)
			if err != nil {
				return err
			}
			var wantNames []string
			for _, e := range want {
				if rel == "." && e.Name() == "lost+found" {
					continue
				}
				wantNames = append(wantNames, e.Name())
			}
			got, err := fsys.ReadDir(rel)
			if err != nil {
				t.Errorf("ReadDir(%q): %v", rel, err)
				return nil
			}
			var gotNames []string
			for _, e := range got {
				if rel == "." && e.Name() == "lost+found" {
					continue
				}
				gotNames = append(gotNames, e.Name())
				if e.Type() != fs.FileMode(0) && e.Type()&fs.ModeType == 0 {
					t.Errorf("%s: entry type %v", e.Name(), e.Type())
				}
			}
			if !slices.Equal(gotNames, wantNames) {
				t.Errorf("ReadDir(%q): %d names, want %d (%.200q vs %.200q)", rel, len(gotNames), len(wantNames), gotNames, wantNames)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if count < 20 {
		t.Fatalf("compared only %d files", count)
	}
}

func compareFile(t *testing.T, fsys *FS, ref, rel string, fromSource bool, tr *tree) {
	t.Helper()
	full := filepath.Join(ref, filepath.FromSlash(rel))
	wfi, err := os.Lstat(full)
	if err != nil {
		t.Fatal(err)
	}
	ws := wfi.Sys().(*syscall.Stat_t)
	gfi, err := fsys.Lstat(rel)
	if err != nil {
		t.Errorf("Lstat(%q): %v", rel, err)
		return
	}
	gs, ok := gfi.Sys().(*inode.Stat)
	if !ok {
		t.Fatalf("%s: Sys() is %T", rel, gfi.Sys())
	}
	errorf := func(format string, a ...any) {
		t.Helper()
		t.Errorf("%s: %s", rel, fmt.Sprintf(format, a...))
	}
	isDir := wfi.IsDir()
	if want := baseName(rel); gfi.Name() != want {
		errorf("name %q, want %q", gfi.Name(), want)
	}
	if rel != "." || !fromSource {
		if gfi.Mode() != wfi.Mode() {
			errorf("mode %v, want %v", gfi.Mode(), wfi.Mode())
		}
		if (tr == nil || tr.owners || !fromSource) && (gs.UID != ws.Uid || gs.GID != ws.Gid) {
			errorf("owner %d:%d, want %d:%d", gs.UID, gs.GID, ws.Uid, ws.Gid)
		}
	}
	if !isDir || !fromSource {
		if gfi.Size() != wfi.Size() || gs.Size != wfi.Size() {
			errorf("size %d, want %d", gfi.Size(), wfi.Size())
		}
		if rel != "." && gs.Nlink != uint32(ws.Nlink) {
			errorf("nlink %d, want %d", gs.Nlink, ws.Nlink)
		}
	}
	wm := wfi.ModTime()
	switch {
	case gfi.ModTime().Equal(wm) && gs.Mtime.Equal(wm):
	case fromSource && gs.Mtime.Nanosecond() == 0 && gs.Mtime.Unix() == wm.Unix():
	case fromSource && rel == ".":
	default:
		errorf("mtime %v, want %v", gs.Mtime, wm)
	}
	if !fromSource {
		if gs.Ino != ws.Ino {
			errorf("ino %d, want %d", gs.Ino, ws.Ino)
		}
		at := time.Unix(ws.Atim.Unix())
		ct := time.Unix(ws.Ctim.Unix())
		if !gs.Atime.Equal(at) || !gs.Ctime.Equal(ct) {
			errorf("atime %v ctime %v, want %v %v", gs.Atime, gs.Ctime, at, ct)
		}
		want := ws.Blocks * 512
		if n, err := fsys.walk(rel, false); err == nil && n.has(flagInlineData) && n.typ() == sIFREG {
			// The kernel counts inline data as allocated (ext4_file_getattr),
			// Stat.Blocks does not.
			want -= (wfi.Size() + 511) &^ 511
		}
		if gs.Blocks != want {
			errorf("blocks %d bytes, want %d", gs.Blocks, want)
		}
		var stx unix.Statx_t
		if err := unix.Statx(unix.AT_FDCWD, full, unix.AT_SYMLINK_NOFOLLOW, unix.STATX_BTIME, &stx); err == nil && stx.Mask&unix.STATX_BTIME != 0 {
			if bt := time.Unix(stx.Btime.Sec, int64(stx.Btime.Nsec)); !gs.Btime.Equal(bt) {
				errorf("btime %v, want %v", gs.Btime, bt)
			}
		}
	}
	if wfi.Mode()&fs.ModeDevice != 0 && gs.Rdev != uint64(ws.Rdev) {
		errorf("rdev %#x, want %#x", gs.Rdev, ws.Rdev)
	}
	switch {
	case wfi.Mode()&fs.ModeSymlink != 0:
		want, _ := os.Readlink(full)
		got, err := fsys.ReadLink(rel)
		if err != nil || got != want || gs.Target != want {
			errorf("ReadLink %q (Target %q), %v; want %q", got, gs.Target, err, want)
		}
	case wfi.Mode().IsRegular():
		if wfi.Mode()&0o444 == 0 && !isRoot {
			break
		}
		wf, err := os.Open(full)
		if err != nil {
			t.Fatal(err)
		}
		defer wf.Close()
		want := fileHash(t, wf)
		gf, err := fsys.Open(rel)
		if err != nil {
			errorf("Open: %v", err)
			return
		}
		defer gf.Close()
		if got := fileHash(t, gf); got != want {
			errorf("contents differ")
		}
	}
	wantX := listXattrs(t, full)
	gotX, err := fsys.Xattrs(rel)
	if err != nil {
		errorf("Xattrs: %v", err)
	} else if !xattrsEqual(gotX, wantX) {
		errorf("xattrs %q, want %q", gotX, wantX)
	}
}

func xattrsEqual(a, b map[string][]byte) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || !bytes.Equal(v, w) {
			return false
		}
	}
	return true
}
