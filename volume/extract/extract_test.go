package extract_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vdisk-project/vdisk/disk"
	"github.com/vdisk-project/vdisk/volume/extract"
	"github.com/vdisk-project/vdisk/volume/inode/inodetest"
)

func tree(t *testing.T) string {
	t.Helper()
	src := t.TempDir()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(src, "etc/deep/er"), 0o755))
	must(os.WriteFile(filepath.Join(src, "etc/hostname"), []byte("guest\n"), 0o644))
	big := make([]byte, 3<<20+5)
	rand.Read(big)
	must(os.WriteFile(filepath.Join(src, "big.bin"), big, 0o600))
	must(os.WriteFile(filepath.Join(src, "empty"), nil, 0o444))
	must(os.Symlink("etc/hostname", filepath.Join(src, "link")))
	must(os.Symlink("/nonexistent/elsewhere", filepath.Join(src, "dangling")))
	must(os.Link(filepath.Join(src, "etc/hostname"), filepath.Join(src, "etc/deep/hard")))
	must(os.WriteFile(filepath.Join(src, "etc/deep/er/suid"), []byte("#!/bin/sh\n"), 0o755))
	must(os.Chmod(filepath.Join(src, "etc/deep/er/suid"), 0o4755))
	must(os.Chmod(filepath.Join(src, "etc/deep"), 0o1777))
	must(os.Chmod(filepath.Join(src, "etc/deep/er"), 0o500)) // read-only dir: filled before its mode is set
	f, err := os.Create(filepath.Join(src, "sparse"))
	must(err)
	must(f.Truncate(32 << 20))
	_, err = f.WriteAt([]byte("end"), 32<<20-3)
	must(err)
	f.Close()
	if os.Geteuid() == 0 {
		must(unix.Mkfifo(filepath.Join(src, "fifo"), 0o640))
		must(unix.Mknod(filepath.Join(src, "null"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))))
		must(os.Lchown(filepath.Join(src, "etc/hostname"), 1234, 5678))
		must(os.Lchown(filepath.Join(src, "link"), 42, 43))
	}
	_ = unix.Lsetxattr(filepath.Join(src, "big.bin"), "user.comment", []byte("hello"), 0)
	_ = unix.Lsetxattr(filepath.Join(src, "etc"), "user.dir", []byte("d"), 0)
	mt := time.Date(2020, 1, 2, 3, 4, 5, 987654321, time.UTC)
	for _, p := range []string{"etc/hostname", "big.bin", "etc/deep/er", "etc", ""} {
		must(os.Chtimes(filepath.Join(src, p), mt, mt))
	}
	must(unix.Lutimes(filepath.Join(src, "link"), []unix.Timeval{{Sec: 1e9}, {Sec: 1e9}}))
	return src
}

// same compares two host trees: names, types, modes, owners, sizes,
// mtimes, contents, link targets, hard links and xattrs.
func same(t *testing.T, a, b string, owners bool, skipRoot bool) {
	t.Helper()
	inodes := map[uint64]uint64{}
	err := filepath.Walk(a, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(a, p)
		q := filepath.Join(b, rel)
		if skipRoot && rel == "." {
			return nil
		}
		var s, d unix.Stat_t
		if err := unix.Lstat(p, &s); err != nil {
			return err
		}
		if err := unix.Lstat(q, &d); err != nil {
			t.Errorf("%s: %v", rel, err)
			return nil
		}
		if s.Mode != d.Mode || s.Mtim != d.Mtim || (owners && (s.Uid != d.Uid || s.Gid != d.Gid)) || s.Nlink != d.Nlink || s.Rdev != d.Rdev {
			t.Errorf("%s: source mode %o mtime %v uid %d gid %d nlink %d rdev %d; extracted %o %v %d %d %d %d", rel, s.Mode, s.Mtim, s.Uid, s.Gid, s.Nlink, s.Rdev, d.Mode, d.Mtim, d.Uid, d.Gid, d.Nlink, d.Rdev)
		}
		if prev, ok := inodes[s.Ino]; ok && prev != d.Ino {
			t.Errorf("%s: hard link not kept", rel)
		}
		inodes[s.Ino] = d.Ino
		switch {
		case fi.Mode().IsRegular():
			x, _ := os.ReadFile(p)
			y, _ := os.ReadFile(q)
			if !bytes.Equal(x, y) {
				t.Errorf("%s: contents differ", rel)
			}
			if d.Blocks > s.Blocks+16 {
				t.Errorf("%s: %d blocks extracted from %d: holes filled", rel, d.Blocks, s.Blocks)
			}
		case fi.Mode()&fs.ModeSymlink != 0:
			x, _ := os.Readlink(p)
			y, _ := os.Readlink(q)
			if x != y {
				t.Errorf("%s: link %q, extracted %q", rel, x, y)
			}
		}
		v := make([]byte, 256)
		if n, err := unix.Lgetxattr(p, "user.comment", v); err == nil {
			w := make([]byte, 256)
			m, err := unix.Lgetxattr(q, "user.comment", w)
			if err != nil || !bytes.Equal(v[:n], w[:m]) {
				t.Errorf("%s: xattr %q, extracted: %v", rel, v[:n], err)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestExtractTree(t *testing.T) {
	src := tree(t)
	dest := filepath.Join(t.TempDir(), "out")
	root := os.Geteuid() == 0
	var last extract.Progress
	sum, err := extract.Extract(context.Background(), inodetest.New(src), []string{"."}, dest, extract.Options{
		Owners: root, Xattrs: true, Devices: root, Progress: func(p extract.Progress) { last = p },
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := sum.Err(); err != nil {
		t.Fatal(err)
	}
	same(t, src, dest, root, false)
	if sum.HardLinks != 1 || sum.Symlinks != 2 || sum.Files != 5 {
		t.Errorf("summary %+v", sum)
	}
	if last.Walking || last.Bytes != sum.Bytes || last.Bytes == 0 {
		t.Errorf("final progress %+v, summary bytes %d", last, sum.Bytes)
	}
	// Again into the same place: refused per file, nothing changed.
	sum, err = extract.Extract(context.Background(), inodetest.New(src), []string{"big.bin"}, dest, extract.Options{})
	if err != nil || sum.Err() == nil {
		t.Errorf("extracting over an existing file: %v %v", err, sum.Err())
	}
	// With overwrite, into a directory: files replaced.
	os.WriteFile(filepath.Join(dest, "big.bin"), []byte("changed"), 0o600)
	sum, err = extract.Extract(context.Background(), inodetest.New(src), []string{"big.bin", "etc"}, dest, extract.Options{Overwrite: true, Owners: root, Xattrs: true})
	if err != nil || sum.Err() != nil {
		t.Fatal(err, sum.Err())
	}
	same(t, src, dest, root, true)
}

// hostile returns directory entries no honest filesystem has.
type hostile struct {
	*inodetest.DirFS
	names []string
}

type entry struct{ fs.FileInfo }

func (e entry) Name() string               { return e.FileInfo.Name() }
func (e entry) IsDir() bool                { return e.FileInfo.IsDir() }
func (e entry) Type() fs.FileMode          { return e.FileInfo.Mode().Type() }
func (e entry) Info() (fs.FileInfo, error) { return e.FileInfo, nil }

type renamed struct {
	fs.FileInfo
	name string
}

func (r renamed) Name() string { return r.name }

func (h *hostile) ReadDir(name string) ([]fs.DirEntry, error) {
	es, err := h.DirFS.ReadDir(name)
	if err != nil || name != "." {
		return es, err
	}
	fi, _ := h.DirFS.Lstat("f")
	for _, n := range h.names {
		es = append(es, entry{renamed{fi, n}})
	}
	return es, nil
}

func TestExtractHostileNames(t *testing.T) {
	src := t.TempDir()
	os.WriteFile(filepath.Join(src, "f"), []byte("x"), 0o644)
	os.Symlink("/tmp", filepath.Join(src, "esc"))
	outer := t.TempDir()
	dest := filepath.Join(outer, "d")
	h := &hostile{DirFS: inodetest.New(src), names: []string{"..", "../evil", "a/b", "", ".", "f", "esc"}}
	sum, err := extract.Extract(context.Background(), h, []string{"."}, dest, extract.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if len(sum.Errors) != 7 {
		t.Errorf("%d errors, want one per hostile or duplicate name: %v", len(sum.Errors), sum.Errors)
	}
	for _, err := range sum.Errors {
		if !errors.Is(err, disk.ErrCorrupt) {
			t.Errorf("%v: not corrupt", err)
		}
	}
	es, _ := os.ReadDir(outer)
	if len(es) != 1 {
		t.Errorf("outside the destination: %v", es)
	}
	if fi, err := os.Lstat(filepath.Join(dest, "esc")); err != nil || fi.Mode()&fs.ModeSymlink == 0 {
		t.Errorf("the link itself: %v %v", fi, err)
	}
	if _, err := os.Stat("/tmp/f"); err == nil {
		if b, _ := os.ReadFile("/tmp/f"); string(b) == "x" {
			t.Error("a file was written through a link")
		}
	}
}

func TestExtractCanceled(t *testing.T) {
	src := tree(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := extract.Extract(ctx, inodetest.New(src), []string{"."}, filepath.Join(t.TempDir(), "x"), extract.Options{}); !errors.Is(err, context.Canceled) {
		t.Errorf("canceled extract: %v", err)
	}
}
