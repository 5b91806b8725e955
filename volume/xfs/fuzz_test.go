package xfs

import (
	"bytes"
	"encoding/binary"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the fuzz seed images in testdata")

// seeds are small filesystems made with mkfs.xfs -p, kept as their
// non-zero sectors (see sparseImage).
var seeds = []struct {
	name string
	args []string
}{
	{"v5.sectors", []string{"-d", "agcount=1", "-i", "size=512"}},
	{"v4-1k.sectors", []string{"-m", "crc=0", "-d", "agcount=1", "-b", "size=1024"}},
	{"v4-noftype.sectors", []string{"-m", "crc=0", "-d", "agcount=1", "-n", "size=8192,ftype=0"}},
}

func seedTree() []spec {
	s := []spec{
		{path: "f", kind: '-', perm: 0o644, data: []byte("hello\n")},
		{path: "big", kind: '-', perm: 0o644, data: bytes.Repeat([]byte("0123456789abcdef"), 700)},
		{path: "l", kind: 'l', perm: 0o777, target: "f"},
		{path: "long", kind: 'l', perm: 0o777, target: strings.Repeat("x/", 300)},
		{path: "c", kind: 'c', perm: 0o600, major: 1, minor: 3},
		{path: "d", kind: 'd', perm: 0o755, uid: 1, gid: 2},
		{path: "d/s", kind: 'd', perm: 0o755},
		{path: "d/s/x", kind: '-', perm: 0o4755, data: []byte("x")},
	}
	for i := range 70 {
		s = append(s, spec{path: fmt.Sprintf("d/file-with-a-long-name-%02d", i), kind: '-', perm: 0o644})
	}
	return s
}

// fuzzSize is the size of the volume the fuzzer opens.
const fuzzSize = 16 << 20

// sparseImage is a volume given as records of a 4-byte big-endian sector
// number and that sector's 512 bytes; every other sector reads as zeros.
type sparseImage map[int64][]byte

func decodeSparse(b []byte) sparseImage {
	m := sparseImage{}
	for len(b) >= 4+512 {
		m[int64(binary.BigEndian.Uint32(b))] = b[4 : 4+512]
		b = b[4+512:]
	}
	return m
}

func encodeSparse(img []byte) []byte {
	var out []byte
	for i := 0; i+512 <= len(img); i += 512 {
		if s := img[i : i+512]; len(bytes.TrimRight(s, "\x00")) > 0 {
			out = binary.BigEndian.AppendUint32(out, uint32(i/512))
			out = append(out, s...)
		}
	}
	return out
}

func (m sparseImage) ReadAt(p []byte, off int64) (int, error) {
	if off >= fuzzSize {
		return 0, io.EOF
	}
	n := int(min(int64(len(p)), fuzzSize-off))
	for i := 0; i < n; {
		sec, o := (off+int64(i))/512, int((off+int64(i))%512)
		k := min(n-i, 512-o)
		if s, ok := m[sec]; ok {
			copy(p[i:i+k], s[o:])
		} else {
			clear(p[i : i+k])
		}
		i += k
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// TestSeeds remakes the seeds with -update and checks that they open.
func TestSeeds(t *testing.T) {
	for _, s := range seeds {
		p := filepath.Join("testdata", s.name)
		if *update {
			img := mkxfs(t, seedTree(), fuzzSize, s.args...)
			b, err := os.ReadFile(img)
			must(t, err)
			must(t, os.WriteFile(p, encodeSparse(b), 0o644))
		}
		b, err := os.ReadFile(p)
		must(t, err)
		fsys, err := Open(decodeSparse(b), fuzzSize)
		if err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		if got, err := fs.ReadFile(fsys, "d/s/x"); string(got) != "x" {
			t.Errorf("%s: d/s/x: %q, %v", s.name, got, err)
		}
	}
}

// FuzzOpen opens a mutated volume and walks, stats and reads everything.
func FuzzOpen(f *testing.F) {
	for _, s := range seeds {
		b, err := os.ReadFile(filepath.Join("testdata", s.name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		fsys, err := Open(decodeSparse(b), fuzzSize)
		if err != nil {
			return
		}
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
			fsys.ReadLink(p)
			fsys.Xattrs(p)
			if f, err := fsys.Open(p); err == nil {
				io.Copy(io.Discard, io.LimitReader(f, 64<<10))
				f.Close()
			}
			return nil
		})
	})
}
