package ext4

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// seedTree is the small tree of the fuzz seeds: a bit of everything in a
// 64 KiB image.
func seedTree(t testing.TB) string {
	src := t.TempDir()
	w := func(name string, b []byte) {
		os.MkdirAll(filepath.Dir(filepath.Join(src, name)), 0o755)
		if err := os.WriteFile(filepath.Join(src, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	w("d/f", []byte("hello\n"))
	w("d/big", bytes.Repeat([]byte("0123456789abcdef"), 13*64+3))
	os.Link(filepath.Join(src, "d/f"), filepath.Join(src, "hard"))
	os.Symlink("d/f", filepath.Join(src, "fast"))
	os.Symlink(strings.Repeat("./", 35)+"d/f", filepath.Join(src, "slow"))
	unix.Mkfifo(filepath.Join(src, "fifo"), 0o600)
	unix.Lsetxattr(filepath.Join(src, "d/f"), "user.k", []byte("value"), 0)
	f, _ := os.Create(filepath.Join(src, "frag"))
	for i := range 6 {
		f.WriteAt([]byte("x"), int64(i)*2048)
	}
	f.Close()
	for i := range 12 {
		w(fmt.Sprintf("many/entry-with-a-rather-long-name-to-fill-the-first-block-of-the-directory-%02d", i), []byte(strconv.Itoa(i)))
	}
	return src
}

// seedImages makes the fuzz seeds' images, their trailing zeros cut off.
func seedImages(t testing.TB) map[string][]byte {
	src := seedTree(t)
	out := map[string][]byte{}
	for name, c := range map[string]struct {
		tool string
		args []string
	}{
		"ext4-inline": {"mkfs.ext4", []string{"-O", "^has_journal,^resize_inode,^metadata_csum,inline_data"}},
		"ext4-csum":   {"mkfs.ext4", []string{"-O", "^has_journal,^resize_inode"}},
		"ext2":        {"mkfs.ext2", []string{"-I", "128", "-O", "^resize_inode"}},
	} {
		img := mkfs(t, c.tool, src, fuzzSize, append([]string{"-b", "1024", "-N", "32"}, c.args...)...)
		b, err := os.ReadFile(img)
		if err != nil {
			t.Fatal(err)
		}
		out[name] = bytes.TrimRight(b, "\x00")
	}
	return out
}

// addSeeds adds fresh seed images to FuzzOpen's corpus, when mkfs is
// here (testdata holds two of them for when it is not).
func addSeeds(f *testing.F) {
	for _, tool := range []string{"mkfs.ext4", "mkfs.ext2"} {
		if _, err := exec.LookPath(tool); err != nil {
			return
		}
	}
	for _, b := range seedImages(f) {
		f.Add(b)
	}
}

// TestFuzzSeeds checks that the seeds open and walk cleanly, and with
// EXT4_WRITE_SEEDS=1 writes them to testdata/fuzz/FuzzOpen.
func TestFuzzSeeds(t *testing.T) {
	for name, b := range seedImages(t) {
		fsys, err := Open(&padded{b, fuzzSize}, fuzzSize)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		exercise(t, fsys)
		if n := walkCount(t, fsys); n < 20 {
			t.Errorf("%s: %d files", name, n)
		}
		if os.Getenv("EXT4_WRITE_SEEDS") == "1" && name != "ext4-csum" {
			dir := filepath.Join("testdata", "fuzz", "FuzzOpen")
			os.MkdirAll(dir, 0o755)
			body := "go test fuzz v1\n[]byte(" + strconv.Quote(string(b)) + ")\n"
			if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
}
