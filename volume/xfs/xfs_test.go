package xfs

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
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

// tool runs a tool with TZ=UTC. The QA variables let mkfs.xfs make
// filesystems smaller than 300 MB, as xfstests does.
func tool(t testing.TB, name string, args ...string) string {
	t.Helper()
	p := testenv.Tool(t, name)
	cmd := exec.Command(p, args...)
	cmd.Env = append(os.Environ(), "TZ=UTC", "TEST_DIR=1", "TEST_DEV=1", "QA_CHECK_FS=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// spec is one file of a test tree.
type spec struct {
	path         string
	kind         byte // '-', 'd', 'l', 'b', 'c', 'p'
	perm         uint32
	uid, gid     uint32
	data         []byte
	target       string
	major, minor uint32
}

// tree is the test tree: files of many sizes, directories in each form,
// symbolic links short and long, devices and special modes.
func tree(big int) []spec {
	rnd := rand.New(rand.NewPCG(5, 6))
	blob := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rnd.Uint32())
		}
		return b
	}
	s := []spec{
		{path: "empty", kind: '-', perm: 0o644},
		{path: "one", kind: '-', perm: 0o600, uid: 1000, gid: 1000, data: []byte("x")},
		{path: "setuid", kind: '-', perm: 0o4755, data: []byte("#!/bin/sh\n")},
		{path: "setgid", kind: '-', perm: 0o2711, uid: 7, gid: 8, data: blob(4096)},
		{path: "big", kind: '-', perm: 0o644, uid: 65534, gid: 65534, data: blob(big)},
		{path: "odd", kind: '-', perm: 0o444, data: blob(123457)},
		{path: "shortlink", kind: 'l', perm: 0o777, target: "one"},
		{path: "abslink", kind: 'l', perm: 0o777, target: "/dirs/small/a"},
		{path: "dangling", kind: 'l', perm: 0o777, target: "nowhere/at/all"},
		{path: "longlink", kind: 'l', perm: 0o777, target: strings.Repeat("long/", 180) + "end"},
		{path: "dirlink", kind: 'l', perm: 0o777, target: "dirs/small"},
		{path: "dirs/escape", kind: 'l', perm: 0o777, target: "../../../../../dirs/small/a"},
		{path: "loop1", kind: 'l', perm: 0o777, target: "loop2"},
		{path: "loop2", kind: 'l', perm: 0o777, target: "./loop1"},
		{path: "null", kind: 'c', perm: 0o666, major: 1, minor: 3},
		{path: "sda1", kind: 'b', perm: 0o660, gid: 6, major: 8, minor: 1},
		{path: "bigdev", kind: 'c', perm: 0o600, major: 259, minor: 70000},
		{path: "fifo", kind: 'p', perm: 0o644},
		{path: "dirs", kind: 'd', perm: 0o755},
		{path: "dirs/small", kind: 'd', perm: 0o700, uid: 3, gid: 4},
		{path: "dirs/small/a", kind: '-', perm: 0o644, data: []byte("a")},
		{path: "dirs/small/b", kind: '-', perm: 0o644, data: blob(5000)},
		{path: "dirs/block", kind: 'd', perm: 0o755},
		{path: "dirs/leaf", kind: 'd', perm: 0o755},
		{path: "dirs/node", kind: 'd', perm: 0o755},
		{path: "deep", kind: 'd', perm: 0o755},
	}
	for i := range 40 {
		s = append(s, spec{path: fmt.Sprintf("dirs/block/f%02d", i), kind: '-', perm: 0o644, data: blob(i)})
	}
	for i := range 300 {
		s = append(s, spec{path: fmt.Sprintf("dirs/leaf/a-somewhat-longer-file-name-%04d", i), kind: '-', perm: 0o644})
	}
	for i := range 5200 {
		s = append(s, spec{path: fmt.Sprintf("dirs/node/entry-with-a-long-name-for-node-form-%05d", i), kind: '-', perm: 0o640, uid: uint32(i)})
	}
	p := "deep"
	for i := range 20 {
		p += fmt.Sprintf("/d%d", i)
		s = append(s, spec{path: p, kind: 'd', perm: 0o755})
	}
	s = append(s, spec{path: p + "/leaf", kind: '-', perm: 0o644, data: []byte("bottom")})
	return s
}

// protofile writes a mkfs.xfs prototype file for the tree, with the
// files' data in dir.
func protofile(t testing.TB, specs []spec, dir string) string {
	t.Helper()
	children := map[string][]spec{}
	for _, s := range specs {
		d := path.Dir(s.path)
		children[d] = append(children[d], s)
	}
	var b strings.Builder
	b.WriteString("dummy\n0 0\nd--755 0 0\n")
	n := 0
	var emit func(d string)
	emit = func(d string) {
		for _, s := range children[d] {
			u, g := byte('-'), byte('-')
			if s.perm&0o4000 != 0 {
				u = 'u'
			}
			if s.perm&0o2000 != 0 {
				g = 'g'
			}
			fmt.Fprintf(&b, "%s %c%c%c%03o %d %d", path.Base(s.path), s.kind, u, g, s.perm&0o777, s.uid, s.gid)
			switch s.kind {
			case '-':
				n++
				src := filepath.Join(dir, "empty")
				if len(s.data) > 0 {
					src = filepath.Join(dir, strconv.Itoa(n))
				}
				if err := os.WriteFile(src, s.data, 0o644); err != nil {
					t.Fatal(err)
				}
				fmt.Fprintf(&b, " %s\n", src)
			case 'l':
				fmt.Fprintf(&b, " %s\n", s.target)
			case 'b', 'c':
				fmt.Fprintf(&b, " %d %d\n", s.major, s.minor)
			case 'd':
				b.WriteString("\n")
				emit(s.path)
				b.WriteString("$\n")
			default:
				b.WriteString("\n")
			}
		}
	}
	emit(".")
	b.WriteString("$\n")
	p := filepath.Join(dir, "proto")
	if err := os.WriteFile(p, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// mkxfs makes an XFS image of size bytes from the tree with mkfs.xfs -p.
func mkxfs(t testing.TB, specs []spec, size int64, args ...string) string {
	t.Helper()
	dir := t.TempDir()
	img := filepath.Join(dir, "xfs.img")
	f, err := os.Create(img)
	if err != nil {
		t.Fatal(err)
	}
	f.Truncate(size)
	f.Close()
	proto := protofile(t, specs, dir)
	tool(t, "mkfs.xfs", append(append([]string{"-q", "-f", "-p", proto}, args...), img)...)
	return img
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

// wantMode is the fs.FileMode a spec's file must have.
func wantMode(s spec) fs.FileMode {
	m := fs.FileMode(s.perm & 0o777)
	switch s.kind {
	case 'd':
		m |= fs.ModeDir
	case 'l':
		m |= fs.ModeSymlink
	case 'b':
		m |= fs.ModeDevice
	case 'c':
		m |= fs.ModeDevice | fs.ModeCharDevice
	case 'p':
		m |= fs.ModeNamedPipe
	}
	if s.perm&0o4000 != 0 {
		m |= fs.ModeSetuid
	}
	if s.perm&0o2000 != 0 {
		m |= fs.ModeSetgid
	}
	return m
}

// mkdev is glibc's makedev.
func mkdev(major, minor uint32) uint64 {
	ma, mi := uint64(major), uint64(minor)
	return ma&0xfff<<8 | ma&^0xfff<<32 | mi&0xff | mi&^0xff<<12
}

// checkTree compares every file of the tree with what fsys shows.
func checkTree(t *testing.T, fsys *FS, specs []spec) {
	t.Helper()
	want := map[string]bool{".": true}
	for _, s := range specs {
		want[s.path] = true
		fi, err := fsys.Lstat(s.path)
		if err != nil {
			t.Errorf("lstat %s: %v", s.path, err)
			continue
		}
		st := fi.Sys().(*inode.Stat)
		if fi.Mode() != wantMode(s) || st.UID != s.uid || st.GID != s.gid {
			t.Errorf("%s: mode %v uid %d gid %d, want %v %d %d", s.path, fi.Mode(), st.UID, st.GID, wantMode(s), s.uid, s.gid)
		}
		switch s.kind {
		case '-':
			if fi.Size() != int64(len(s.data)) || st.Nlink != 1 {
				t.Errorf("%s: size %d nlink %d, want %d 1", s.path, fi.Size(), st.Nlink, len(s.data))
			}
			b, err := fs.ReadFile(fsys, s.path)
			if err != nil || !bytes.Equal(b, s.data) {
				t.Errorf("%s: contents differ (%d bytes, %v)", s.path, len(b), err)
			}
		case 'l':
			if fsys.version == 5 && int64(len(s.target)) > fsys.inodeSize-176 {
				// mkfs.xfs 6.1's protofile writes remote symbolic links
				// without the v5 block header: Linux (xfs_readlink) and
				// xfs_repair reject them, and so must we.
				if _, err := fsys.ReadLink(s.path); !errors.Is(err, disk.ErrCorrupt) {
					t.Errorf("%s: remote link without its header: %v, want corrupt", s.path, err)
				}
				continue
			}
			got, err := fsys.ReadLink(s.path)
			if err != nil || got != s.target || st.Target != s.target || fi.Size() != int64(len(s.target)) {
				t.Errorf("%s: link to %q (%v), want %q", s.path, got, err, s.target)
			}
		case 'b', 'c':
			if st.Rdev != mkdev(s.major, s.minor) {
				t.Errorf("%s: rdev %#x, want %d:%d", s.path, st.Rdev, s.major, s.minor)
			}
		}
	}
	n := 0
	err := fs.WalkDir(fsys, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		n++
		if !want[p] {
			t.Errorf("%s is in the image, not in the tree", p)
		}
		return nil
	})
	if err != nil || n != len(want) {
		t.Errorf("walked %d files (%v), want %d", n, err, len(want))
	}
	// Links resolve inside the filesystem.
	if b, err := fs.ReadFile(fsys, "abslink"); string(b) != "a" {
		t.Errorf("abslink: %q, %v", b, err)
	}
	if b, err := fs.ReadFile(fsys, "dirlink/b"); err != nil || len(b) != 5000 {
		t.Errorf("dirlink/b: %d bytes, %v", len(b), err)
	}
	if _, err := fsys.Stat("dangling"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("stat dangling: %v", err)
	}
	// ".." stops at the root, as a chroot would.
	if b, err := fs.ReadFile(fsys, "dirs/escape"); string(b) != "a" {
		t.Errorf("dirs/escape: %q, %v", b, err)
	}
	if _, err := fsys.Stat("loop1"); !errors.Is(err, disk.ErrCorrupt) {
		t.Errorf("stat of a link loop: %v, want corrupt", err)
	}
	if _, err := fsys.Stat("dirs/../one"); !errors.Is(err, fs.ErrInvalid) {
		t.Errorf("stat of an invalid name: %v, want fs.ErrInvalid", err)
	}
}

// xfsdb runs xfs_db read-only commands on an image.
func xfsdb(t testing.TB, img string, cmds ...string) string {
	t.Helper()
	args := []string{"-r"}
	for _, c := range cmds {
		args = append(args, "-c", c)
	}
	return tool(t, "xfs_db", append(args, img)...)
}

// dbField reads "name = value" from xfs_db output.
func dbField(t testing.TB, out, name string) string {
	t.Helper()
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + ` = (.*)$`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("xfs_db printed no %s:\n%s", name, out)
	}
	return m[1]
}

// checkDB compares a few inodes' times and the superblock's counters with
// xfs_db's.
func checkDB(t *testing.T, fsys *FS, img string) {
	for _, p := range []string{"big", "dirs/node", "longlink", "null"} {
		fi, err := fsys.Lstat(p)
		if err != nil {
			t.Fatal(err)
		}
		st := fi.Sys().(*inode.Stat)
		out := xfsdb(t, img, fmt.Sprintf("inode %d", st.Ino), "print")
		for _, c := range []struct {
			field string
			got   time.Time
		}{{"mtime", st.Mtime}, {"atime", st.Atime}, {"ctime", st.Ctime}} {
			sec := dbField(t, out, "core."+c.field+".sec")
			nsec := dbField(t, out, "core."+c.field+".nsec")
			w, err := time.Parse("Mon Jan _2 15:04:05 2006", sec)
			if err != nil {
				t.Fatalf("xfs_db time %q: %v", sec, err)
			}
			ns, _ := strconv.Atoi(nsec)
			w = w.Add(time.Duration(ns))
			if !c.got.Equal(w) {
				t.Errorf("%s: %s %v, xfs_db says %v", p, c.field, c.got, w)
			}
		}
		if nl, _ := strconv.Atoi(dbField(t, out, "core.nlinkv2")); uint32(nl) != st.Nlink {
			t.Errorf("%s: nlink %d, xfs_db says %d", p, st.Nlink, nl)
		}
		if nb, _ := strconv.Atoi(dbField(t, out, "core.nblocks")); int64(nb)*fsys.blockSize != st.Blocks {
			t.Errorf("%s: %d bytes allocated, xfs_db says %d blocks", p, st.Blocks, nb)
		}
	}
	// The directories are in the forms they are named after: inline, then
	// in blocks, and the node form's data fork reaches the free index.
	if out := xfsdb(t, img, "path /dirs/small", "print core.format"); !strings.Contains(out, "local") {
		t.Errorf("dirs/small is not a short-form directory: %s", out)
	}
	if out := xfsdb(t, img, "path /dirs/block", "print core.format"); fsys.inodeSize <= 512 && !strings.Contains(out, "extents") {
		t.Errorf("dirs/block is not in blocks: %s", out)
	}
	if out := xfsdb(t, img, "path /dirs/node", "bmap"); !strings.Contains(out, "data offset "+strconv.Itoa(64<<30/int(fsys.blockSize))) {
		t.Errorf("dirs/node has no free index block: %s", out)
	}
	out := xfsdb(t, img, "sb 0", "print")
	sf, _ := fsys.Statfs()
	if fd, _ := strconv.ParseInt(dbField(t, out, "fdblocks"), 10, 64); fd*sf.BlockSize != sf.FreeBytes {
		t.Errorf("free %d bytes, xfs_db says %d blocks", sf.FreeBytes, fd)
	}
	if dbField(t, out, "uuid") != fsys.UUID() {
		t.Errorf("uuid %s, xfs_db says %s", fsys.UUID(), dbField(t, out, "uuid"))
	}
}

var variants = []struct {
	name string
	args []string
}{
	{"v5", nil},
	{"v4", []string{"-m", "crc=0"}},
	{"v4-noftype", []string{"-m", "crc=0", "-n", "ftype=0"}},
	{"bigtime", []string{"-m", "bigtime=1", "-i", "size=1024"}},
	{"nobigtime", []string{"-m", "bigtime=0"}},
	{"1k", []string{"-b", "size=1024"}},
	{"4ag", []string{"-d", "agcount=4"}},
	{"dirblk16k", []string{"-n", "size=16384"}},
	{"v4-512", []string{"-m", "crc=0", "-b", "size=512"}},
}

// TestProto builds each variant with mkfs.xfs's protofile (no mount
// needed) and compares the result with the tree.
func TestProto(t *testing.T) {
	specs := tree(3 << 20)
	for _, v := range variants {
		t.Run(v.name, func(t *testing.T) {
			t.Parallel()
			img := mkxfs(t, specs, 64<<20, append([]string{"-L", "lbl-" + v.name[:2]}, v.args...)...)
			fsys := openImage(t, img)
			if fsys.Label() != "lbl-"+v.name[:2] || fsys.Type() != "xfs" {
				t.Errorf("label %q type %q", fsys.Label(), fsys.Type())
			}
			if want := 5; v.name[:2] == "v4" {
				if fsys.Version() != 4 {
					t.Errorf("version %d, want 4", fsys.Version())
				}
			} else if fsys.Version() != want {
				t.Errorf("version %d, want %d", fsys.Version(), want)
			}
			checkTree(t, fsys, specs)
			checkDB(t, fsys, img)
		})
	}
}

func TestFSTest(t *testing.T) {
	var specs []spec
	var names []string
	for _, s := range tree(100 << 10) {
		switch {
		case s.kind == '-' && !strings.HasPrefix(s.path, "dirs/node/"):
			names = append(names, s.path)
		case s.kind == 'd' || s.path == "shortlink" || s.path == "abslink" || s.path == "dirlink":
		default:
			continue
		}
		specs = append(specs, s)
	}
	img := mkxfs(t, specs, 64<<20)
	fsys := openImage(t, img)
	if err := fstest.TestFS(fsys, names...); err != nil {
		t.Fatal(err)
	}
}

// TestConcurrent reads a file and lists directories from many goroutines.
func TestConcurrent(t *testing.T) {
	specs := tree(8 << 20)
	fsys := openImage(t, mkxfs(t, specs, 64<<20))
	want := specs[slices.IndexFunc(specs, func(s spec) bool { return s.path == "big" })].data
	f, err := fsys.Open("big")
	if err != nil {
		t.Fatal(err)
	}
	r := f.(io.ReaderAt)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			buf := make([]byte, 300_001)
			for off := int64(g * 4099); off < int64(len(want)); off += int64(len(buf)) * 2 {
				n, err := r.ReadAt(buf, off)
				if err != nil && err != io.EOF || !bytes.Equal(buf[:n], want[off:off+int64(n)]) {
					t.Errorf("read @%d: %d bytes, %v", off, n, err)
					return
				}
				if _, err := fsys.ReadDir("dirs/leaf"); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
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

// TestDamage breaks one inode, one directory block and one btree block
// and checks that only the files concerned fail, as corrupt.
func TestDamage(t *testing.T) {
	specs := tree(1 << 20)
	for _, v := range []string{"v5", "v4"} {
		t.Run(v, func(t *testing.T) {
			var args []string
			if v == "v4" {
				args = []string{"-m", "crc=0"}
			}
			img := mkxfs(t, specs, 64<<20, args...)
			fsys := openImage(t, img)
			ino := func(p string) uint64 {
				fi, err := fsys.Lstat(p)
				if err != nil {
					t.Fatal(err)
				}
				return fi.Sys().(*inode.Stat).Ino
			}
			// An inode's magic.
			off, _ := fsys.inodeOff(ino("odd"))
			patch(t, img, off, []byte("XX"))
			// A data block of the node directory.
			n, _ := fsys.inode(ino("dirs/node"))
			es, _ := fsys.extents(n, false)
			boff, _ := fsys.blockOff(es[0].start, 1)
			patch(t, img, boff, []byte("JUNK"))
			// A byte of a name in a directory block: only v5's CRC sees it.
			n, _ = fsys.inode(ino("dirs/block"))
			es, _ = fsys.extents(n, false)
			boff, _ = fsys.blockOff(es[0].start, 1)
			blk := make([]byte, fsys.dirBlkSize)
			f, _ := os.Open(img)
			f.ReadAt(blk, boff)
			f.Close()
			i := bytes.Index(blk, []byte("f05"))
			if i < 0 {
				t.Fatal("no entry f05 in dirs/block")
			}
			patch(t, img, boff+int64(i), []byte("F"))
			// A device node's mode, for v5 its CRC catches it.
			off, _ = fsys.inodeOff(ino("null"))
			patch(t, img, off+2, []byte{0xff, 0xff})

			fsys = openImage(t, img)
			if _, err := fsys.Open("odd"); !errors.Is(err, disk.ErrCorrupt) {
				t.Errorf("open of a corrupt inode: %v, want corrupt", err)
			}
			if _, err := fsys.ReadDir("dirs/node"); !errors.Is(err, disk.ErrCorrupt) {
				t.Errorf("readdir of a corrupt directory: %v, want corrupt", err)
			}
			if _, err := fsys.ReadDir("dirs/block"); v == "v5" && !errors.Is(err, disk.ErrCorrupt) {
				t.Errorf("readdir of a directory block with a bad CRC: %v, want corrupt", err)
			}
			if _, err := fsys.Lstat("null"); !errors.Is(err, disk.ErrCorrupt) {
				t.Errorf("lstat of a corrupt inode: %v, want corrupt", err)
			}
			if b, err := fs.ReadFile(fsys, "dirs/small/b"); err != nil || len(b) != 5000 {
				t.Errorf("dirs/small/b: %d bytes, %v", len(b), err)
			}
			if _, err := fsys.ReadDir("dirs/leaf"); err != nil {
				t.Errorf("dirs/leaf: %v", err)
			}
		})
	}
	t.Run("devices", func(t *testing.T) {
		dir := t.TempDir()
		mk := func(name string, size int64) string {
			p := filepath.Join(dir, name)
			f, _ := os.Create(p)
			f.Truncate(size)
			f.Close()
			return p
		}
		for _, c := range []struct{ name, opt, arg, want string }{
			{"external log", "-l", "logdev=" + mk("log", 16<<20) + ",size=8m", "external log"},
			{"realtime", "-r", "rtdev=" + mk("rt", 16<<20), "realtime"},
		} {
			img := mk(c.name, 64<<20)
			tool(t, "mkfs.xfs", "-q", "-f", c.opt, c.arg, img)
			f, _ := os.Open(img)
			_, err := Open(f, 64<<20)
			f.Close()
			if !errors.Is(err, disk.ErrNotSupported) || !strings.Contains(err.Error(), c.want) {
				t.Errorf("%s: %v, want not supported naming it", c.name, err)
			}
		}
	})
	t.Run("features", func(t *testing.T) {
		img := mkxfs(t, specs[:3], 64<<20)
		fsys := openImage(t, img)
		_ = fsys
		sb := make([]byte, 512)
		f, _ := os.Open(img)
		f.ReadAt(sb, 0)
		f.Close()
		// An unknown incompatible feature, with the CRC made right.
		be.PutUint32(sb[216:], be.Uint32(sb[216:])|1<<30)
		le := crcOf(sb, 224)
		sb[224], sb[225], sb[226], sb[227] = byte(le), byte(le>>8), byte(le>>16), byte(le>>24)
		patch(t, img, 0, sb)
		f, _ = os.Open(img)
		defer f.Close()
		_, err := Open(f, 64<<20)
		if !errors.Is(err, disk.ErrNotSupported) || !strings.Contains(err.Error(), "0x40000000") {
			t.Errorf("open with an unknown feature: %v, want not supported naming it", err)
		}
	})
}

// BenchmarkRead256MiB reads a 256 MiB file in 4 MiB requests.
func BenchmarkRead256MiB(b *testing.B) {
	data := make([]byte, 256<<20)
	for i := range data {
		data[i] = byte(i * 13)
	}
	fsys := openImage(b, mkxfs(b, []spec{{path: "big", kind: '-', perm: 0o644, data: data}}, 400<<20))
	buf := make([]byte, 4<<20)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		f, err := fsys.Open("big")
		if err != nil {
			b.Fatal(err)
		}
		if _, err := io.CopyBuffer(io.Discard, struct{ io.Reader }{f}, buf); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkWalk100k walks and stats 100,000 files in 100 directories.
func BenchmarkWalk100k(b *testing.B) {
	var specs []spec
	for d := range 100 {
		specs = append(specs, spec{path: fmt.Sprintf("d%03d", d), kind: 'd', perm: 0o755})
		for i := range 1000 {
			specs = append(specs, spec{path: fmt.Sprintf("d%03d/file-%04d", d, i), kind: 'l', perm: 0o777, target: "x"})
		}
	}
	img := mkxfs(b, specs, 512<<20)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		fsys := openImage(b, img) // cold caches
		n := 0
		fs.WalkDir(fsys, ".", func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				b.Fatal(err)
			}
			if _, err := d.Info(); err != nil {
				b.Fatal(err)
			}
			n++
			return nil
		})
		if n != len(specs)+1 {
			b.Fatalf("walked %d", n)
		}
	}
}

// TestXattrsDB sets attributes offline with xfs_db's attr_set (which
// fills a value of n bytes with 'v'), on v4 and v5 filesystems: short
// form on one file, leaf form with a remote value on another.
func TestXattrsDB(t *testing.T) {
	specs := tree(10)[:6]
	for _, v := range []struct {
		name string
		args []string
	}{{"v5", nil}, {"v4", []string{"-m", "crc=0"}}, {"v4-1k", []string{"-m", "crc=0", "-b", "size=1024"}}} {
		t.Run(v.name, func(t *testing.T) {
			t.Parallel()
			img := mkxfs(t, specs, 64<<20, v.args...)
			set := func(path string, args ...string) {
				tool(t, "xfs_db", "-x", "-c", "path "+path, "-c", "attr_set "+strings.Join(args, " "), img)
			}
			vs := func(n int) []byte { return bytes.Repeat([]byte("v"), n) }
			set("/one", "-v", "10", "small")
			set("/one", "-s", "-v", "3", "sec")
			want := map[string][]byte{"user.small": vs(10), "security.sec": vs(3)}
			wantBig := map[string][]byte{"trusted.remote": vs(9000)}
			set("/setgid", "-r", "-v", "9000", "remote")
			for i := range 40 {
				n := fmt.Sprintf("attribute-number-%02d", i)
				set("/setgid", "-v", strconv.Itoa(20+i), n)
				wantBig["user."+n] = vs(20 + i)
			}
			fsys := openImage(t, img)
			for p, w := range map[string]map[string][]byte{"one": want, "setgid": wantBig, "empty": {}} {
				got, err := fsys.Xattrs(p)
				if err != nil {
					t.Errorf("xattrs %s: %v", p, err)
					continue
				}
				if len(got) != len(w) {
					t.Errorf("%s: %d attributes, want %d", p, len(got), len(w))
				}
				for k, wv := range w {
					if !bytes.Equal(got[k], wv) {
						t.Errorf("%s: %s is %d bytes, want %d", p, k, len(got[k]), len(wv))
					}
				}
			}
			out := xfsdb(t, img, "path /setgid", "print core.aformat")
			if !strings.Contains(out, "(extents)") && !strings.Contains(out, "(btree)") {
				t.Errorf("setgid's attributes are not in leaf form: %s", out)
			}
		})
	}
}
