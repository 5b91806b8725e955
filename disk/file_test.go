//go:build unix

package disk_test

import (
	"bytes"
	"errors"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/vdisk-project/vdisk/disk"
	"github.com/vdisk-project/vdisk/disk/disktest"
)

// TestWriteFileAtomicCrash cuts the power after every operation of a
// WriteFileAtomic that replaces a file, and after it returns: each crash
// image must hold the old content or the new one under the name, and once
// WriteFileAtomic has returned, always the new. A WriteFileAtomic that
// skips the directory sync fails here: the crash image may keep the name
// bound to the old file.
func TestWriteFileAtomicCrash(t *testing.T) {
	const name = "/state/disk.json"
	oldB, newB := bytes.Repeat([]byte("old "), 300), bytes.Repeat([]byte("new!"), 200)
	for _, fresh := range []bool{false, true} {
		t.Run(map[bool]string{false: "replace", true: "create"}[fresh], func(t *testing.T) {
			t.Parallel()
			for n := 1; ; n++ {
				c := disktest.NewCrashFS()
				if !fresh {
					writeDurably(t, c, name, oldB)
				}
				c.CrashAfter(n, rand.New(rand.NewPCG(uint64(n), 1)))
				if err := disk.WriteFileAtomic(c, name, newB, 0o600); err != nil {
					t.Fatal(err)
				}
				if img := c.Crashed(); img != nil {
					got := img.Bytes(name)
					switch {
					case bytes.Equal(got, newB), bytes.Equal(got, oldB) && !fresh, got == nil && fresh:
					default:
						t.Fatalf("crash after op %d: %s holds %d bytes %.8q, want the old or the new content", n, name, len(got), got)
					}
					continue
				}
				// The power fails after WriteFileAtomic returned.
				for seed := range uint64(64) {
					img := c.Crash(rand.New(rand.NewPCG(seed, 2)))
					if got := img.Bytes(name); !bytes.Equal(got, newB) {
						t.Fatalf("crash after WriteFileAtomic returned (seed %d): %s holds %d bytes %.8q, want the new content", seed, name, len(got), got)
					}
				}
				if dirs := c.UnsyncedDirs(); len(dirs) != 0 {
					t.Errorf("directories left unsynced: %v", dirs)
				}
				if names := c.Names(); len(names) != 1 || names[0] != name {
					t.Errorf("files after WriteFileAtomic: %v, want only %s", names, name)
				}
				if n < 3 {
					t.Fatalf("WriteFileAtomic took only %d operations", n)
				}
				return
			}
		})
	}
}

// writeDurably creates name holding b and syncs it and its directory.
func writeDurably(t *testing.T, c *disktest.CrashFS, name string, b []byte) {
	t.Helper()
	f, err := c.OpenFile(name, os.O_CREATE|os.O_EXCL|os.O_RDWR, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(b, 0); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.SyncDir(filepath.Dir(name)); err != nil {
		t.Fatal(err)
	}
}

// TestWriteFileAtomicPlantedSymlink plants a symbolic link where the old
// implementation put its temporary file: WriteFileAtomic must neither
// follow it nor write through it.
func TestWriteFileAtomicPlantedSymlink(t *testing.T) {
	dir := t.TempDir()
	victim := filepath.Join(dir, "victim")
	if err := os.WriteFile(victim, []byte("precious"), 0o644); err != nil {
		t.Fatal(err)
	}
	name := filepath.Join(dir, "disk.json")
	if err := os.Symlink(victim, name+".tmp"); err != nil {
		t.Fatal(err)
	}
	if err := disk.WriteFileAtomic(nil, name, []byte("{}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(victim); string(b) != "precious" {
		t.Errorf("victim now holds %q, want %q", b, "precious")
	}
	if b, _ := os.ReadFile(name); string(b) != "{}\n" {
		t.Errorf("%s holds %q, want %q", name, b, "{}\n")
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), ".tmp") && e.Name() != "disk.json.tmp" {
			t.Errorf("temporary file %s left behind", e.Name())
		}
	}
}

func TestWriteFileAtomicMode(t *testing.T) {
	old := syscall.Umask(0o077)
	defer syscall.Umask(old)
	for _, perm := range []fs.FileMode{0o600, 0o644, 0o640} {
		name := filepath.Join(t.TempDir(), "f")
		if err := disk.WriteFileAtomic(nil, name, []byte("x"), perm); err != nil {
			t.Fatal(err)
		}
		st, err := os.Stat(name)
		if err != nil {
			t.Fatal(err)
		}
		if got := st.Mode().Perm(); got != perm {
			t.Errorf("WriteFileAtomic(perm %v) made mode %v", perm, got)
		}
	}
}

func TestReadFileNoFollow(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good")
	if err := os.WriteFile(good, []byte("hello"), 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link")
	if err := os.Symlink(good, link); err != nil {
		t.Fatal(err)
	}
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		path string
		max  int64
		want error // nil: the content
	}{
		{"regular", good, 5, nil},
		{"symlink", link, 100, disk.ErrPermission},
		{"fifo", fifo, 100, disk.ErrPermission},
		{"directory", dir, 100, disk.ErrPermission},
		{"too large", good, 4, disk.ErrCorrupt},
		{"missing", filepath.Join(dir, "none"), 100, disk.ErrNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := disk.ReadFileNoFollow(tt.path, tt.max)
			if tt.want == nil {
				if err != nil || string(b) != "hello" {
					t.Errorf("ReadFileNoFollow(%s) = %q, %v; want %q", tt.path, b, err, "hello")
				}
				return
			}
			if !errors.Is(err, tt.want) {
				t.Errorf("ReadFileNoFollow(%s) error = %v, want %v", tt.path, err, tt.want)
			}
		})
	}
	if _, err := disk.ReadFileNoFollow(filepath.Join(dir, "none"), 1); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing file: %v does not match fs.ErrNotExist", err)
	}
}
