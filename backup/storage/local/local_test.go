//go:build unix

package local_test

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vdisk-project/vdisk/backup/storage"
	"github.com/vdisk-project/vdisk/backup/storage/local"
	"github.com/vdisk-project/vdisk/backup/storage/storagetest"
	"github.com/vdisk-project/vdisk/disk"
)

func TestConformance(t *testing.T) {
	storagetest.RunTests(t, func(t *testing.T) storage.Storage {
		st, err := local.Create(t.TempDir() + "/repo")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		return st
	})
}

func newStore(t *testing.T) (*local.Storage, string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "repo")
	st, err := local.Create(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st, dir
}

func TestModes(t *testing.T) {
	st, dir := newStore(t)
	if err := st.Put(context.Background(), "data/ab/obj", []byte("x")); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		path string
		mode fs.FileMode
	}{
		{dir, fs.ModeDir | 0o700},
		{filepath.Join(dir, "data"), fs.ModeDir | 0o700},
		{filepath.Join(dir, "data/ab"), fs.ModeDir | 0o700},
		{filepath.Join(dir, "data/ab/obj"), 0o600},
	} {
		fi, err := os.Stat(c.path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode() != c.mode {
			t.Errorf("mode of %s = %v, want %v", c.path, fi.Mode(), c.mode)
		}
	}
}

func TestOpen(t *testing.T) {
	dir := t.TempDir()
	if _, err := local.Open(filepath.Join(dir, "missing")); !errors.Is(err, disk.ErrNotFound) {
		t.Errorf("Open(missing): error %v, want disk.ErrNotFound", err)
	}
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := local.Open(file); !errors.Is(err, disk.ErrInvalid) {
		t.Errorf("Open(a file): error %v, want disk.ErrInvalid", err)
	}
	st, err := local.Create(filepath.Join(dir, "a/b/repo"))
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Put(context.Background(), "x", []byte("x")); err != nil {
		t.Fatal(err)
	}
	// Create of an existing directory opens it.
	st2, err := local.Create(filepath.Join(dir, "a/b/repo"))
	if err != nil {
		t.Fatal(err)
	}
	if b, err := st2.Get(context.Background(), "x", 10); err != nil || string(b) != "x" {
		t.Errorf("Get through a second Create = %q, %v", b, err)
	}
	st.Close()
	if err := st.Put(context.Background(), "y", nil); !errors.Is(err, disk.ErrInvalid) {
		t.Errorf("Put after Close: error %v, want disk.ErrInvalid", err)
	}
}

// TestSymlinks plants links inside the repository, pointing outside it and
// inside it; every operation refuses to follow them and nothing outside is
// read or written.
func TestSymlinks(t *testing.T) {
	st, dir := newStore(t)
	ctx := context.Background()
	outside := t.TempDir()
	secret := filepath.Join(outside, "secret")
	if err := os.WriteFile(secret, []byte("secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := st.Put(ctx, "data/real", []byte("real")); err != nil {
		t.Fatal(err)
	}
	for _, l := range []struct{ name, target string }{
		{"file", secret},
		{"dir", outside},
		{"inside", filepath.Join(dir, "data/real")},
		{"insidedir", filepath.Join(dir, "data")},
		{"data/rel", "real"},
	} {
		if err := os.Symlink(l.target, filepath.Join(dir, l.name)); err != nil {
			t.Fatal(err)
		}
	}
	refused := func(op string, err error) {
		t.Helper()
		if !errors.Is(err, disk.ErrPermission) {
			t.Errorf("%s: error %v, want disk.ErrPermission", op, err)
		}
	}
	for _, name := range []string{"file", "inside", "data/rel", "dir/secret", "insidedir/real"} {
		_, err := st.Get(ctx, name, 100)
		refused("Get("+name+")", err)
		_, err = st.ReadAt(ctx, name, make([]byte, 2), 0)
		refused("ReadAt("+name+")", err)
		_, err = st.Stat(ctx, name)
		refused("Stat("+name+")", err)
	}
	refused("Put(dir/new)", st.Put(ctx, "dir/new", []byte("new")))
	refused("Put(insidedir/new)", st.Put(ctx, "insidedir/new", []byte("new")))
	if _, err := os.Stat(filepath.Join(outside, "new")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Put through a link wrote outside the repository: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "data/new")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Put through a link wrote inside the repository: %v", err)
	}
	// Delete removes a link, never its target.
	if err := st.Delete(ctx, "file"); err != nil {
		t.Errorf("Delete(file): %v", err)
	}
	if b, err := os.ReadFile(secret); err != nil || string(b) != "secret" {
		t.Errorf("after Delete of a link its target reads %q, %v", b, err)
	}
	if err := st.Delete(ctx, "dir/secret"); !errors.Is(err, disk.ErrPermission) {
		t.Errorf("Delete(dir/secret): error %v, want disk.ErrPermission", err)
	}
	if _, err := os.Stat(secret); err != nil {
		t.Errorf("Delete through a linked directory removed its target: %v", err)
	}
	// A Put over a link replaces the link, not its target.
	if err := st.Put(ctx, "inside", []byte("new")); err != nil {
		t.Errorf("Put(inside) over a link: %v", err)
	}
	if b, err := st.Get(ctx, "data/real", 100); err != nil || string(b) != "real" {
		t.Errorf("Put over a link changed its target: %q, %v", b, err)
	}
	var listed []string
	if err := st.List(ctx, "", func(in storage.Info) error { listed = append(listed, in.Name); return nil }); err != nil {
		t.Fatal(err)
	}
	sort.Strings(listed)
	if want := []string{"data/real", "inside"}; !slices.Equal(listed, want) {
		t.Errorf("List = %q, want %q (links skipped)", listed, want)
	}
	// A FIFO is refused without blocking.
	if err := syscall.Mkfifo(filepath.Join(dir, "fifo"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := st.Get(ctx, "fifo", 100)
	refused("Get(fifo)", err)
}

func TestTempFiles(t *testing.T) {
	st, dir := newStore(t)
	ctx := context.Background()
	if err := st.Put(ctx, "data/obj", []byte("obj")); err != nil {
		t.Fatal(err)
	}
	// What a Put interrupted by a crash leaves: an old and a fresh one.
	old := filepath.Join(dir, "data", "tmp~0123456789abcdef")
	fresh := filepath.Join(dir, "tmp~fedcba9876543210")
	for _, p := range []string{old, fresh} {
		if err := os.WriteFile(p, []byte("partial"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	past := time.Now().Add(-2 * time.Hour)
	if err := os.Chtimes(old, past, past); err != nil {
		t.Fatal(err)
	}
	var listed []string
	if err := st.List(ctx, "", func(in storage.Info) error { listed = append(listed, in.Name); return nil }); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(listed, []string{"data/obj"}) {
		t.Errorf("List = %q, want [data/obj] without temporary files", listed)
	}
	n, err := st.Cleanup(ctx, time.Hour)
	if err != nil || n != 1 {
		t.Errorf("Cleanup(1h) = %d, %v; want 1, nil", n, err)
	}
	if _, err := os.Stat(old); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("old temporary file after Cleanup: %v", err)
	}
	if _, err := os.Stat(fresh); err != nil {
		t.Errorf("fresh temporary file after Cleanup: %v", err)
	}
	if b, err := st.Get(ctx, "data/obj", 10); err != nil || string(b) != "obj" {
		t.Errorf("Get(data/obj) after Cleanup = %q, %v", b, err)
	}
	if n, err := st.Cleanup(ctx, 0); err != nil || n != 1 {
		t.Errorf("Cleanup(0) = %d, %v; want 1, nil", n, err)
	}
}

func TestCollisions(t *testing.T) {
	st, _ := newStore(t)
	ctx := context.Background()
	if err := st.Put(ctx, "a", []byte("a")); err != nil {
		t.Fatal(err)
	}
	if err := st.Put(ctx, "a/b", []byte("b")); !errors.Is(err, disk.ErrInvalid) {
		t.Errorf("Put(a/b) when a is an object: error %v, want disk.ErrInvalid", err)
	}
	if err := st.Put(ctx, "d/e", []byte("e")); err != nil {
		t.Fatal(err)
	}
	if err := st.Put(ctx, "d", []byte("d")); !errors.Is(err, disk.ErrInvalid) {
		t.Errorf("Put(d) when d/e is an object: error %v, want disk.ErrInvalid", err)
	}
	if err := st.Delete(ctx, "d"); err != nil {
		t.Errorf("Delete(d) of a directory: %v, want nil", err)
	}
	if b, err := st.Get(ctx, "d/e", 10); err != nil || string(b) != "e" {
		t.Errorf("Get(d/e) after Delete(d) = %q, %v", b, err)
	}
	if _, err := st.Get(ctx, "d", 10); !errors.Is(err, disk.ErrNotFound) {
		t.Errorf("Get(d) of a directory: error %v, want disk.ErrNotFound", err)
	}
}

func TestPermission(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("root ignores permission bits")
	}
	st, dir := newStore(t)
	ctx := context.Background()
	if err := st.Put(ctx, "data/x", []byte("x")); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(dir, "data"), 0o500); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Chmod(filepath.Join(dir, "data"), 0o700) })
	if err := st.Put(ctx, "data/y", []byte("y")); !errors.Is(err, disk.ErrPermission) {
		t.Errorf("Put into a read-only directory: error %v, want disk.ErrPermission", err)
	}
}

func BenchmarkPut(b *testing.B) {
	for _, size := range []int{1 << 20, 16 << 20} {
		b.Run(fmt.Sprintf("%dMiB", size>>20), func(b *testing.B) {
			st, err := local.Create(filepath.Join(b.TempDir(), "repo"))
			if err != nil {
				b.Fatal(err)
			}
			data := storagetest.Data(1, size)
			b.SetBytes(int64(size))
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; b.Loop(); i++ {
				if err := st.Put(context.Background(), fmt.Sprintf("data/%02x/%d", i%256, i), data); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkReadAt(b *testing.B) {
	st, err := local.Create(filepath.Join(b.TempDir(), "repo"))
	if err != nil {
		b.Fatal(err)
	}
	const size = 16 << 20
	if err := st.Put(context.Background(), "data/pack", storagetest.Data(1, size)); err != nil {
		b.Fatal(err)
	}
	for _, n := range []int{64 << 10, 1 << 20} {
		b.Run(fmt.Sprintf("%dKiB", n>>10), func(b *testing.B) {
			p := make([]byte, n)
			b.SetBytes(int64(n))
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; b.Loop(); i++ {
				off := int64(i*n) % (size - int64(n))
				if _, err := st.ReadAt(context.Background(), "data/pack", p, off); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func TestForeignFiles(t *testing.T) {
	st, dir := newStore(t)
	ctx := context.Background()
	if err := st.Put(ctx, "data/x", []byte("x")); err != nil {
		t.Fatal(err)
	}
	// Files no Put makes: invalid names, a deep foreign tree.
	deep := filepath.Join(dir, "bad name", strings.Repeat("d/", 200))
	if err := os.MkdirAll(deep, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{filepath.Join(dir, "data", "sp ace"), filepath.Join(deep, "f"), filepath.Join(dir, "ü")} {
		if err := os.WriteFile(p, nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	var listed []string
	if err := st.List(ctx, "", func(in storage.Info) error { listed = append(listed, in.Name); return nil }); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(listed, []string{"data/x"}) {
		t.Errorf("List = %q, want [data/x]", listed)
	}
}
