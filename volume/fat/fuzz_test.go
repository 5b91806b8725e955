package fat

import (
	"bytes"
	"compress/gzip"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the fuzz seed images in testdata")

// seeds are the fuzz seed images: each is the start of a small populated
// filesystem (trailing zeros trimmed), gzipped.
var seeds = []struct {
	name string
	bits int
	size int64
	args []string
}{
	{"fat12.img.gz", 12, 200 << 10, nil},
	{"fat16.img.gz", 16, 3 << 20, []string{"-s", "1"}},
	{"fat32.img.gz", 32, 34 << 20, []string{"-s", "1", "-f", "1"}},
}

// TestSeeds makes the seed images with -update (mkfs.vfat and mtools),
// and checks that the committed ones open and list.
func TestSeeds(t *testing.T) {
	for _, s := range seeds {
		p := filepath.Join("testdata", s.name)
		if *update {
			img := filepath.Join(t.TempDir(), "seed.img")
			f, _ := os.Create(img)
			f.Truncate(s.size)
			f.Close()
			tool(t, "mkfs.vfat", append(append([]string{"-F", fmt.Sprint(s.bits), "-n", "SEED"}, s.args...), img)...)
			src := t.TempDir()
			os.MkdirAll(filepath.Join(src, "dir", "sub"), 0o755)
			os.WriteFile(filepath.Join(src, "dir", "sub", "a long name.txt"), []byte("hello"), 0o644)
			os.WriteFile(filepath.Join(src, "dir", "SHORT.TXT"), bytes.Repeat([]byte("x"), 3000), 0o644)
			os.WriteFile(filepath.Join(src, "lower.txt"), nil, 0o644)
			tool(t, "mcopy", "-s", "-m", "-i", img, filepath.Join(src, "dir"), filepath.Join(src, "lower.txt"), "::/")
			b, _ := os.ReadFile(img)
			b = bytes.TrimRight(b, "\x00")
			var z bytes.Buffer
			w, _ := gzip.NewWriterLevel(&z, gzip.BestCompression)
			w.Write(b)
			w.Close()
			if err := os.WriteFile(p, z.Bytes(), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		b := seed(t, p)
		fsys, err := Open(zeroTail(b), fuzzSize)
		if err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		if fsys.Variant() != Variant(s.bits) {
			t.Errorf("%s: FAT%d", s.name, fsys.Variant())
		}
		if got, err := fs.ReadFile(fsys, "dir/sub/a long name.txt"); string(got) != "hello" {
			t.Errorf("%s: %q, %v", s.name, got, err)
		}
	}
}

func seed(t testing.TB, p string) []byte {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// fuzzSize is the volume size the fuzzer opens: its input is the
// volume's start, zeros follow.
const fuzzSize = 40 << 20

type zeroTail []byte

func (z zeroTail) ReadAt(p []byte, off int64) (int, error) {
	if off >= fuzzSize {
		return 0, io.EOF
	}
	n := len(p)
	if int64(n) > fuzzSize-off {
		n = int(fuzzSize - off)
	}
	clear(p[:n])
	if off < int64(len(z)) {
		copy(p[:n], z[off:])
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// FuzzOpen opens a mutated volume and walks and reads everything in it.
func FuzzOpen(f *testing.F) {
	for _, s := range seeds {
		f.Add(seed(f, filepath.Join("testdata", s.name)))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		fsys, err := Open(zeroTail(b), fuzzSize)
		if err != nil {
			return
		}
		fsys.Label()
		fsys.UUID()
		fsys.Statfs()
		visits := 0
		fs.WalkDir(fsys, ".", func(p string, d fs.DirEntry, err error) error {
			if visits++; visits > 500 {
				return fs.SkipAll
			}
			if err != nil {
				return nil
			}
			d.Info()
			fsys.Stat(p)
			if !d.IsDir() {
				if f, err := fsys.Open(p); err == nil {
					io.Copy(io.Discard, io.LimitReader(f, 64<<10))
					f.Close()
				}
			}
			return nil
		})
	})
}
