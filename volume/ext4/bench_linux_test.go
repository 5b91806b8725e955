package ext4

import (
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
)

var benchImages = map[string]string{}

// benchImage builds (once per test binary) an image of the tree fill makes.
func benchImage(b *testing.B, name string, size int64, fill func(dir string)) string {
	b.Helper()
	shared.Lock()
	defer shared.Unlock()
	if img, ok := benchImages[name]; ok {
		return img
	}
	tmp := sharedTemp(b)
	src := filepath.Join(tmp, name+"-src")
	os.MkdirAll(src, 0o755)
	fill(src)
	img := mkfs(&tempTB{TB: b, dir: tmp}, "mkfs.ext4", src, size, "-N", "120000")
	os.RemoveAll(src)
	benchImages[name] = img
	return img
}

const bigFile = 256 << 20

func bigTree(dir string) {
	f, _ := os.Create(filepath.Join(dir, "big"))
	buf := make([]byte, 1<<20)
	for i := range buf {
		buf[i] = byte(i * 7)
	}
	for range bigFile / len(buf) {
		f.Write(buf)
	}
	f.Close()
}

// BenchmarkRead reads a 256 MiB file with 1 MiB ReadAt calls and with
// io.Copy (WriteTo), against the image file read the same way.
func BenchmarkRead(b *testing.B) {
	img := benchImage(b, "big", 400<<20, bigTree)
	fh, err := os.Open(img)
	if err != nil {
		b.Fatal(err)
	}
	defer fh.Close()
	st, _ := fh.Stat()
	fsys, err := Open(fh, st.Size())
	if err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, 1<<20)
	readAll := func(b *testing.B, r io.ReaderAt) {
		for off := int64(0); off < bigFile; off += int64(len(buf)) {
			if _, err := r.ReadAt(buf, off); err != nil && err != io.EOF {
				b.Fatal(err)
			}
		}
	}
	b.Run("image-file", func(b *testing.B) {
		b.SetBytes(bigFile)
		for b.Loop() {
			readAll(b, fh)
		}
	})
	b.Run("ReadAt", func(b *testing.B) {
		f, err := fsys.Open("big")
		if err != nil {
			b.Fatal(err)
		}
		b.SetBytes(bigFile)
		for b.Loop() {
			readAll(b, f.(io.ReaderAt))
		}
	})
	b.Run("Copy", func(b *testing.B) {
		b.SetBytes(bigFile)
		for b.Loop() {
			f, err := fsys.Open("big")
			if err != nil {
				b.Fatal(err)
			}
			if n, err := io.Copy(io.Discard, f); err != nil || n != bigFile {
				b.Fatal(n, err)
			}
		}
	})
}

// BenchmarkWalk walks a tree of 100,000 files (100 directories of 1,000)
// and stats each, on a freshly opened filesystem each time.
func BenchmarkWalk(b *testing.B) {
	img := benchImage(b, "walk", 1<<30, func(dir string) {
		for d := range 100 {
			sub := filepath.Join(dir, fmt.Sprintf("dir%03d", d))
			os.MkdirAll(sub, 0o755)
			for i := range 1000 {
				os.WriteFile(filepath.Join(sub, fmt.Sprintf("file-%04d", i)), nil, 0o644)
			}
		}
	})
	fh, err := os.Open(img)
	if err != nil {
		b.Fatal(err)
	}
	defer fh.Close()
	st, _ := fh.Stat()
	for b.Loop() {
		fsys, err := Open(fh, st.Size())
		if err != nil {
			b.Fatal(err)
		}
		n := 0
		err = fs.WalkDir(fsys, ".", func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if _, err := d.Info(); err != nil {
				return err
			}
			n++
			return nil
		})
		if err != nil || n < 100100 {
			b.Fatal(n, err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/100100, "ns/file")
}
