package ntfs

import (
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/vdisk-project/vdisk/internal/testenv"
)

// BenchmarkRead256MiB reads a 256 MiB file copied in with ntfscp, 1 MiB
// per ReadAt.
func BenchmarkRead256MiB(b *testing.B) {
	const size = 256 << 20
	dir := b.TempDir()
	img := mkntfs(b, dir, size+64<<20, "Bench")
	src := filepath.Join(dir, "src")
	data := make([]byte, 1<<20)
	for i := range data {
		data[i] = byte(i * 7)
	}
	fh, err := os.Create(src)
	if err != nil {
		b.Fatal(err)
	}
	for range size / len(data) {
		if _, err := fh.Write(data); err != nil {
			b.Fatal(err)
		}
	}
	fh.Close()
	testenv.Tool(b, "ntfscp")
	testenv.Run(b, "ntfscp", "-f", img, src, "big")
	os.Remove(src)
	f := openImage(b, img)
	fl, err := f.Open("big")
	if err != nil {
		b.Fatal(err)
	}
	ra := fl.(io.ReaderAt)
	buf := make([]byte, 1<<20)
	b.SetBytes(size)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		for off := int64(0); off < size; off += int64(len(buf)) {
			if _, err := ra.ReadAt(buf, off); err != nil && err != io.EOF {
				b.Fatal(err)
			}
		}
	}
}
