package mount_test

import (
	"bytes"
	"crypto/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vdisk-project/vdisk/internal/testenv"
	"github.com/vdisk-project/vdisk/volume/inode/inodetest"
	"github.com/vdisk-project/vdisk/volume/mount"
)

// tree makes a source tree with the kinds of files a guest has.
func tree(t *testing.T) string {
	t.Helper()
	src := t.TempDir()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(src, "etc/deep/er/still"), 0o755))
	must(os.WriteFile(filepath.Join(src, "etc/hostname"), []byte("guest\n"), 0o644))
	big := make([]byte, 5<<20+123)
	rand.Read(big)
	must(os.WriteFile(filepath.Join(src, "big.bin"), big, 0o600))
	must(os.WriteFile(filepath.Join(src, "empty"), nil, 0o444))
	must(os.Symlink("etc/hostname", filepath.Join(src, "link")))
	must(os.Symlink("/etc/deep", filepath.Join(src, "abs")))
	must(os.Link(filepath.Join(src, "etc/hostname"), filepath.Join(src, "hard")))
	must(os.WriteFile(filepath.Join(src, "etc/deep/er/still/name with spaces ü"), []byte("x"), 0o755))
	must(os.Chmod(filepath.Join(src, "etc/deep"), 0o1777))
	f, err := os.Create(filepath.Join(src, "sparse"))
	must(err)
	must(f.Truncate(64 << 20))
	_, err = f.WriteAt([]byte("end"), 64<<20-3)
	must(err)
	f.Close()
	mt := time.Date(2021, 3, 4, 5, 6, 7, 123456789, time.UTC)
	must(os.Chtimes(filepath.Join(src, "etc/hostname"), mt, mt))
	_ = unix.Lsetxattr(filepath.Join(src, "big.bin"), "user.comment", []byte("hello"), 0)
	return src
}

func mounted(dir string) bool {
	b, _ := os.ReadFile("/proc/self/mountinfo")
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) > 4 && f[4] == dir {
			return true
		}
	}
	return false
}

func TestMountTree(t *testing.T) {
	testenv.FUSE(t)
	a, b := tree(t), tree(t)
	mnt := t.TempDir()
	srv, err := mount.Mount(mnt, []mount.Volume{{Name: "root", FS: inodetest.New(a)}, {Name: "boot", FS: inodetest.New(b)}}, mount.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if mounted(mnt) {
			srv.Unmount()
		}
	})
	es, err := os.ReadDir(mnt)
	if err != nil || len(es) != 2 || es[0].Name() != "boot" || es[1].Name() != "root" {
		t.Fatalf("top level: %v %v", es, err)
	}
	// diff -r compares contents and, without following links, the links.
	if out, err := exec.Command("diff", "-r", "--no-dereference", a, filepath.Join(mnt, "root")).CombinedOutput(); err != nil {
		t.Fatalf("diff -r: %v\n%s", err, out)
	}
	// Attributes the kernel sees equal the source's.
	err = filepath.Walk(a, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(a, p)
		var s, m unix.Stat_t
		if err := unix.Lstat(p, &s); err != nil {
			return err
		}
		if err := unix.Lstat(filepath.Join(mnt, "root", rel), &m); err != nil {
			return err
		}
		if s.Mode != m.Mode || s.Uid != m.Uid || s.Gid != m.Gid || s.Nlink != m.Nlink || s.Mtim != m.Mtim {
			t.Errorf("%s: source mode %o uid %d gid %d nlink %d mtime %v, mount %o %d %d %d %v", rel, s.Mode, s.Uid, s.Gid, s.Nlink, s.Mtim, m.Mode, m.Uid, m.Gid, m.Nlink, m.Mtim)
		}
		if !fi.IsDir() && s.Size != m.Size {
			t.Errorf("%s: size %d, mount %d", rel, s.Size, m.Size)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// The sparse file stays sparse in the block count.
	var sp unix.Stat_t
	if err := unix.Stat(filepath.Join(mnt, "root/sparse"), &sp); err != nil || sp.Blocks*512 > 1<<20 {
		t.Errorf("sparse file: %d blocks, %v", sp.Blocks, err)
	}
	// Hard links share an inode; volumes do not share inode numbers.
	var h1, h2, other unix.Stat_t
	unix.Stat(filepath.Join(mnt, "root/hard"), &h1)
	unix.Stat(filepath.Join(mnt, "root/etc/hostname"), &h2)
	unix.Stat(filepath.Join(mnt, "boot/etc/hostname"), &other)
	if h1.Ino != h2.Ino || h1.Ino == other.Ino {
		t.Errorf("inode numbers: hard %d, file %d, other volume %d", h1.Ino, h2.Ino, other.Ino)
	}
	// An absolute link resolves inside the volume, by the kernel too.
	if _, err := os.Stat(filepath.Join(mnt, "root/link")); err != nil {
		t.Error(err)
	}
	// Extended attributes, where the source has them.
	v := make([]byte, 64)
	if n, err := unix.Getxattr(filepath.Join(a, "big.bin"), "user.comment", v); err == nil {
		m := make([]byte, 64)
		k, err := unix.Getxattr(filepath.Join(mnt, "root/big.bin"), "user.comment", m)
		if err != nil || !bytes.Equal(m[:k], v[:n]) {
			t.Errorf("xattr through the mount: %q %v", m[:k], err)
		}
	}
	// Read-only.
	if err := os.WriteFile(filepath.Join(mnt, "root/new"), []byte("x"), 0o644); err == nil {
		t.Error("a write into the mount succeeded")
	}
	if _, err := os.OpenFile(filepath.Join(mnt, "root/etc/hostname"), os.O_WRONLY, 0); err == nil {
		t.Error("opening for writing succeeded")
	}
	// A busy mount refuses to unmount; then it unmounts.
	f, err := os.Open(filepath.Join(mnt, "root/big.bin"))
	if err != nil {
		t.Fatal(err)
	}
	busy := srv.Unmount()
	f.Close()
	if busy == nil && mounted(mnt) {
		t.Error("unmount reported success while still mounted")
	}
	if busy == nil {
		return // lazily detached by the kernel: acceptable
	}
	if err := srv.Unmount(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { srv.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Wait did not return after unmount")
	}
	if mounted(mnt) {
		t.Fatal("still mounted")
	}
	_ = syscall.Sync
}

func TestMountRefusesBadNames(t *testing.T) {
	for _, n := range []string{"", ".", "..", "a/b"} {
		if _, err := mount.Mount(t.TempDir(), []mount.Volume{{Name: n, FS: inodetest.New(t.TempDir())}}, mount.Options{}); err == nil {
			t.Errorf("name %q accepted", n)
		}
	}
	d := inodetest.New(t.TempDir())
	if _, err := mount.Mount(t.TempDir(), []mount.Volume{{Name: "a", FS: d}, {Name: "a", FS: d}}, mount.Options{}); err == nil {
		t.Error("two volumes named a accepted")
	}
}
