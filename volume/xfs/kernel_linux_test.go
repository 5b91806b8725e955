package xfs

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vdisk-project/vdisk/internal/testenv"
	"github.com/vdisk-project/vdisk/volume/inode"
)

// mounted makes an empty XFS image and loop-mounts it; the test is
// skipped when mounting is not possible (not root).
func mounted(t *testing.T, args ...string) (img, mnt string) {
	t.Helper()
	dir := t.TempDir()
	img = filepath.Join(dir, "xfs.img")
	f, _ := os.Create(img)
	f.Truncate(96 << 20)
	f.Close()
	tool(t, "mkfs.xfs", append(append([]string{"-q", "-f"}, args...), img)...)
	mnt = filepath.Join(dir, "mnt")
	os.Mkdir(mnt, 0o755)
	if out, err := exec.Command("mount", "-o", "loop,noatime", img, mnt).CombinedOutput(); err != nil {
		if testenv.Required("mount") {
			t.Fatalf("mount: %v\n%s", err, out)
		}
		t.Skipf("cannot loop-mount (%v: %s); run as root", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", mnt).Run() })
	return img, mnt
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// populate writes what a protofile cannot hold: hard links, xattrs,
// sparse and preallocated files, a btree-format file, far-future times,
// sticky directories, sockets and a long symbolic link.
func populate(t *testing.T, mnt string, bigDir int) {
	p := func(s string) string { return filepath.Join(mnt, s) }
	must(t, os.WriteFile(p("a"), []byte("hard linked"), 0o644))
	must(t, os.Mkdir(p("sub"), 0o755))
	must(t, os.Link(p("a"), p("a2")))
	must(t, os.Link(p("a"), p("sub/a3")))
	// Attributes: short form, then leaf and node form with remote values.
	must(t, os.WriteFile(p("x-short"), nil, 0o644))
	must(t, syscall.Setxattr(p("x-short"), "user.comment", []byte("hello"), 0))
	must(t, os.WriteFile(p("x-many"), nil, 0o644))
	for i := range 300 {
		must(t, syscall.Setxattr(p("x-many"), fmt.Sprintf("user.attribute-%03d", i), bytes.Repeat([]byte{byte(i)}, 40), 0))
	}
	must(t, syscall.Setxattr(p("x-many"), "user.remote", bytes.Repeat([]byte("remote value "), 2000), 0))
	must(t, syscall.Setxattr(p("x-many"), "trusted.t", []byte("trusted"), 0))
	must(t, syscall.Setxattr(p("x-many"), "security.s", []byte("secure"), 0))
	must(t, os.WriteFile(p("x-remote"), nil, 0o644))
	must(t, syscall.Setxattr(p("x-remote"), "user.big", bytes.Repeat([]byte{7}, 60000), 0))
	// A POSIX ACL in the Linux xattr format: user::rw-, user:1000:r--,
	// group::r--, mask::r--, other::---.
	acl := binary.LittleEndian.AppendUint32(nil, 2)
	for _, e := range [][3]uint32{{1, 6, 0xffffffff}, {2, 4, 1000}, {4, 4, 0xffffffff}, {0x10, 4, 0xffffffff}, {0x20, 0, 0xffffffff}} {
		acl = binary.LittleEndian.AppendUint16(acl, uint16(e[0]))
		acl = binary.LittleEndian.AppendUint16(acl, uint16(e[1]))
		acl = binary.LittleEndian.AppendUint32(acl, e[2])
	}
	must(t, os.WriteFile(p("x-acl"), nil, 0o640))
	must(t, syscall.Setxattr(p("x-acl"), "system.posix_acl_access", acl, 0))
	// Sparse: data at the start, the middle and the end of 1 GiB.
	f, err := os.Create(p("sparse"))
	must(t, err)
	for _, off := range []int64{0, 300<<20 + 123, 1<<30 - 5} {
		_, err := f.WriteAt([]byte("data!"), off)
		must(t, err)
	}
	// Preallocated (unwritten) extents, partly written.
	must(t, syscall.Fallocate(int(f.Fd()), 0, 10<<20, 8<<20))
	_, err = f.WriteAt(bytes.Repeat([]byte{0xaa}, 5000), 12<<20)
	must(t, err)
	f.Close()
	// A file of many extents (btree format): punch every other block.
	data := make([]byte, 16<<20)
	for i := range data {
		data[i] = byte(i>>12) ^ byte(i)
	}
	must(t, os.WriteFile(p("holes"), data, 0o644))
	f, err = os.OpenFile(p("holes"), os.O_RDWR, 0)
	must(t, err)
	must(t, f.Sync())
	for off := int64(0); off < int64(len(data)); off += 8192 {
		must(t, syscall.Fallocate(int(f.Fd()), 0x3, off, 4096)) // PUNCH_HOLE|KEEP_SIZE
	}
	f.Close()
	// Times with nanoseconds, past 2038 (clamped without bigtime), and
	// before 1970.
	must(t, os.WriteFile(p("future"), []byte("f"), 0o644))
	must(t, os.Chtimes(p("future"), time.Date(2300, 5, 6, 7, 8, 9, 123456789, time.UTC), time.Date(2100, 1, 2, 3, 4, 5, 987654321, time.UTC)))
	must(t, os.WriteFile(p("past"), []byte("p"), 0o644))
	must(t, os.Chtimes(p("past"), time.Date(1950, 1, 1, 0, 0, 1, 5, time.UTC), time.Date(1960, 1, 1, 0, 0, 1, 999999999, time.UTC)))
	must(t, os.Mkdir(p("tmp"), 0o777))
	must(t, os.Chmod(p("tmp"), 0o777|os.ModeSticky))
	must(t, syscall.Mknod(p("sock"), syscall.S_IFSOCK|0o755, 0))
	must(t, syscall.Mknod(p("tty"), syscall.S_IFCHR|0o620, int(mkdev(4, 1))))
	must(t, os.Symlink(strings.Repeat("a-long-symlink-target/", 40)+"end", p("longlink")))
	must(t, os.Symlink("sub/a3", p("link")))
	must(t, os.Lchown(p("link"), 12, 34))
	must(t, os.Chown(p("a"), 1001, 1002))
	must(t, os.Chmod(p("a"), 0o4750))
	// A large directory (node form) and a directory emptied again.
	must(t, os.Mkdir(p("big"), 0o755))
	for i := range bigDir {
		must(t, os.WriteFile(p(fmt.Sprintf("big/%05d-some-long-name-to-fill-directory-blocks", i)), nil, 0o644))
	}
	for i := 0; i < bigDir; i += 3 {
		must(t, os.Remove(p(fmt.Sprintf("big/%05d-some-long-name-to-fill-directory-blocks", i))))
	}
}

type observed struct {
	fi     fs.FileInfo
	st     *syscall.Stat_t
	target string
	xattrs map[string][]byte
	data   []byte
}

// observe records what the kernel shows of every file.
func observe(t *testing.T, mnt string) map[string]observed {
	m := map[string]observed{}
	must(t, filepath.WalkDir(mnt, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(mnt, p)
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		o := observed{fi: fi, st: fi.Sys().(*syscall.Stat_t), xattrs: map[string][]byte{}}
		if fi.Mode()&fs.ModeSymlink != 0 {
			o.target, _ = os.Readlink(p)
		} else {
			buf := make([]byte, 64<<10)
			n, err := syscall.Listxattr(p, buf)
			if err != nil {
				return err
			}
			for _, name := range strings.Split(strings.TrimRight(string(buf[:n]), "\x00"), "\x00") {
				if name == "" {
					continue
				}
				v := make([]byte, 64<<10)
				k, err := syscall.Getxattr(p, name, v)
				if err != nil {
					return err
				}
				o.xattrs[name] = v[:k]
			}
		}
		if fi.Mode().IsRegular() {
			if o.data, err = os.ReadFile(p); err != nil {
				return err
			}
		}
		m[filepath.ToSlash(rel)] = o
		return nil
	}))
	return m
}

// TestKernel populates images through Linux's XFS and compares what the
// kernel showed (stat, readlink, xattrs, contents) with what FS shows
// after unmounting.
func TestKernel(t *testing.T) {
	for _, v := range []struct {
		name   string
		bigDir int
		args   []string
	}{
		{"v5", 6000, nil},
		{"nobigtime", 500, []string{"-m", "bigtime=0"}},
		{"1k-dir8k", 1500, []string{"-b", "size=1024", "-n", "size=8192", "-d", "agcount=3"}},
	} {
		t.Run(v.name, func(t *testing.T) {
			if v.name != "v5" {
				testenv.Long(t)
			}
			img, mnt := mounted(t, v.args...)
			populate(t, mnt, v.bigDir)
			must(t, exec.Command("umount", mnt).Run())
			must(t, exec.Command("mount", "-o", "loop,ro,noatime", img, mnt).Run())
			want := observe(t, mnt)
			must(t, exec.Command("umount", mnt).Run())
			fsys := openImage(t, img)
			n := 0
			must(t, fs.WalkDir(fsys, ".", func(p string, d fs.DirEntry, err error) error {
				if err != nil {
					return err
				}
				n++
				w, ok := want[p]
				if !ok {
					t.Errorf("%s: not shown by the kernel", p)
					return nil
				}
				compare(t, fsys, p, w)
				return nil
			}))
			if n != len(want) {
				t.Errorf("walked %d files, the kernel showed %d", n, len(want))
			}
		})
	}
}

func compare(t *testing.T, fsys *FS, p string, w observed) {
	t.Helper()
	gi, err := fsys.Lstat(p)
	if err != nil {
		t.Errorf("lstat %s: %v", p, err)
		return
	}
	g := gi.Sys().(*inode.Stat)
	ws := w.st
	ts := func(s syscall.Timespec) time.Time { return time.Unix(s.Sec, s.Nsec).UTC() }
	if gi.Mode() != w.fi.Mode() || g.Ino != ws.Ino || g.Nlink != uint32(ws.Nlink) || g.UID != ws.Uid || g.GID != ws.Gid ||
		g.Size != ws.Size || g.Blocks != ws.Blocks*512 || g.Rdev != ws.Rdev {
		t.Errorf("%s: got mode %v ino %d nlink %d uid %d gid %d size %d blocks %d rdev %#x\nkernel: mode %v ino %d nlink %d uid %d gid %d size %d blocks %d rdev %#x",
			p, gi.Mode(), g.Ino, g.Nlink, g.UID, g.GID, g.Size, g.Blocks, g.Rdev,
			w.fi.Mode(), ws.Ino, ws.Nlink, ws.Uid, ws.Gid, ws.Size, ws.Blocks*512, ws.Rdev)
	}
	if !g.Mtime.Equal(ts(ws.Mtim)) || !g.Atime.Equal(ts(ws.Atim)) || !g.Ctime.Equal(ts(ws.Ctim)) {
		t.Errorf("%s: times m %v a %v c %v; kernel: %v %v %v", p, g.Mtime, g.Atime, g.Ctime, ts(ws.Mtim), ts(ws.Atim), ts(ws.Ctim))
	}
	if w.fi.Mode()&fs.ModeSymlink != 0 {
		if got, err := fsys.ReadLink(p); got != w.target || err != nil {
			t.Errorf("%s: target %q (%v), kernel: %q", p, got, err, w.target)
		}
		return
	}
	x, err := fsys.Xattrs(p)
	if err != nil {
		t.Errorf("xattrs %s: %v", p, err)
	} else if !maps.EqualFunc(x, w.xattrs, bytes.Equal) {
		t.Errorf("%s: %d xattrs, kernel: %d (%v)", p, len(x), len(w.xattrs), slicesKeys(w.xattrs))
	}
	if w.fi.Mode().IsRegular() {
		b, err := fs.ReadFile(fsys, p)
		if err != nil || !bytes.Equal(b, w.data) {
			t.Errorf("%s: contents differ from the kernel's (%d bytes, %v)", p, len(b), err)
		}
	}
}

func slicesKeys(m map[string][]byte) []string {
	var k []string
	for n := range m {
		if len(k) < 5 {
			k = append(k, n)
		}
	}
	return k
}

// TestKernelBtreeDir grows two directories in turn, with file data in
// between, on 1 KiB blocks: their data forks fragment into the btree
// format, which xfs_db confirms.
func TestKernelBtreeDir(t *testing.T) {
	img, mnt := mounted(t, "-b", "size=1024")
	must(t, os.Mkdir(filepath.Join(mnt, "a"), 0o755))
	must(t, os.Mkdir(filepath.Join(mnt, "b"), 0o755))
	for i := range 1500 {
		for _, d := range []string{"a", "b"} {
			p := filepath.Join(mnt, d, fmt.Sprintf("%06d-a-fairly-long-name-to-use-up-space", i))
			must(t, os.WriteFile(p, bytes.Repeat([]byte(d), 1500), 0o644))
		}
	}
	must(t, exec.Command("umount", mnt).Run())
	must(t, exec.Command("mount", "-o", "loop,ro,noatime", img, mnt).Run())
	want := observe(t, mnt)
	must(t, exec.Command("umount", mnt).Run())
	if out := xfsdb(t, img, "path /a", "print core.format"); !strings.Contains(out, "btree") {
		t.Fatalf("directory a is not in btree format: %s", out)
	}
	fsys := openImage(t, img)
	n := 0
	must(t, fs.WalkDir(fsys, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		n++
		if w, ok := want[p]; ok {
			compare(t, fsys, p, w)
		} else {
			t.Errorf("%s: not shown by the kernel", p)
		}
		return nil
	}))
	if n != len(want) {
		t.Errorf("walked %d files, the kernel showed %d", n, len(want))
	}
}
