package ext4

import (
	"bytes"
	"errors"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/vdisk-project/vdisk/disk"
)

// smallTree makes a tree for the damage tests: directories of a few files
// each, and a file in many extents.
func smallTree(t *testing.T) string {
	src := t.TempDir()
	for _, d := range []string{"victim", "ok", "other/deeper"} {
		os.MkdirAll(filepath.Join(src, d), 0o755)
		for i := range 40 {
			os.WriteFile(filepath.Join(src, d, "file"+strconv.Itoa(i)), bytes.Repeat([]byte(d), i*100+1), 0o644)
		}
	}
	f, err := os.Create(filepath.Join(src, "frag"))
	if err != nil {
		t.Fatal(err)
	}
	for i := range 300 {
		f.WriteAt(bytes.Repeat([]byte{byte(i)}, 4096), int64(i)*3*4096)
	}
	f.Close()
	return src
}

// patch overwrites bytes of img at off.
func patch(t *testing.T, img string, off int64, b []byte) {
	t.Helper()
	f, err := os.OpenFile(img, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

var imapRE = regexp.MustCompile(`located at block (\d+), offset 0x([0-9a-f]+)`)

// inodeBlock is the block that holds name's inode, by debugfs's imap.
func inodeBlock(t *testing.T, img, name string) int64 {
	t.Helper()
	m := imapRE.FindStringSubmatch(debugfs(t, img, "imap /"+name))
	if m == nil {
		t.Fatalf("imap %s: no location", name)
	}
	b, _ := strconv.ParseInt(m[1], 10, 64)
	return b
}

// checkAll walks the source tree: every path for which bad says so gives
// an error matching code; every other path reads as in the source.
func checkAll(t *testing.T, fsys *FS, src string, bad func(rel string) bool, code error) {
	t.Helper()
	good, broken := 0, 0
	filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		rel, _ := filepath.Rel(src, p)
		rel = filepath.ToSlash(rel)
		var gerr error
		if d.IsDir() {
			_, gerr = fsys.ReadDir(rel)
		} else {
			var b []byte
			b, gerr = fs.ReadFile(fsys, rel)
			if gerr == nil {
				want, _ := os.ReadFile(p)
				if !bytes.Equal(b, want) {
					t.Errorf("%s: wrong contents", rel)
				}
			}
		}
		if bad(rel) {
			broken++
			if !errors.Is(gerr, code) {
				t.Errorf("%s: %v, want an error matching %v", rel, gerr, code)
			}
		} else {
			good++
			if gerr != nil {
				t.Errorf("%s: %v", rel, gerr)
			}
		}
		return nil
	})
	if good == 0 || broken == 0 {
		t.Errorf("%d good and %d broken files: the damage missed", good, broken)
	}
}

func TestDamage(t *testing.T) {
	src := smallTree(t)
	for _, csum := range []bool{true, false} {
		name := "csum"
		args := []string{"-b", "4096"}
		if !csum {
			name = "nocsum"
			args = append(args, "-O", "^metadata_csum")
		}
		t.Run(name, func(t *testing.T) {
			t.Run("inode-table", func(t *testing.T) {
				img := mkfs(t, "mkfs.ext4", src, 64<<20, args...)
				blk := inodeBlock(t, img, "victim/file5")
				inBlock := map[string]bool{}
				filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
					rel, _ := filepath.Rel(src, p)
					if rel != "." && inodeBlock(t, img, filepath.ToSlash(rel)) == blk {
						inBlock[filepath.ToSlash(rel)] = true
					}
					return nil
				})
				patch(t, img, blk*4096, make([]byte, 4096))
				fsys := openImage(t, img)
				checkAll(t, fsys, src, func(rel string) bool {
					for p := rel; p != "."; p = filepath.Dir(p) {
						if inBlock[p] {
							return true
						}
					}
					return false
				}, disk.ErrCorrupt)
			})
			t.Run("extent-header", func(t *testing.T) {
				img := mkfs(t, "mkfs.ext4", src, 64<<20, args...)
				leaf := extentLeaf(t, img, "frag")
				patch(t, img, leaf*4096, []byte{0x0b, 0xad})
				fsys := openImage(t, img)
				if _, err := fsys.Stat("frag"); err != nil {
					t.Errorf("Stat: %v", err)
				}
				checkAll(t, fsys, src, func(rel string) bool { return rel == "frag" }, disk.ErrCorrupt)
			})
			t.Run("extent-out-of-range", func(t *testing.T) {
				img := mkfs(t, "mkfs.ext4", src, 64<<20, args...)
				leaf := extentLeaf(t, img, "frag")
				// The first extent's start, far past the end.
				patch(t, img, leaf*4096+12+6, []byte{0xff, 0x7f})
				checkAll(t, openImage(t, img), src, func(rel string) bool { return rel == "frag" }, disk.ErrCorrupt)
			})
			t.Run("directory-garbage", func(t *testing.T) {
				img := mkfs(t, "mkfs.ext4", src, 64<<20, args...)
				blocks := strings.Fields(debugfs(t, img, "blocks /victim"))
				blk, _ := strconv.ParseInt(blocks[0], 10, 64)
				junk := make([]byte, 4096)
				rng := rand.New(rand.NewPCG(3, 4))
				for i := range junk {
					junk[i] = byte(rng.Uint32())
				}
				patch(t, img, blk*4096, junk)
				fsys := openImage(t, img)
				if fi, err := fsys.Stat("victim"); err != nil || !fi.IsDir() {
					t.Errorf("Stat(victim): %v", err)
				}
				checkAll(t, fsys, src, func(rel string) bool { return strings.HasPrefix(rel, "victim") }, disk.ErrCorrupt)
			})
			t.Run("directory-zeros", func(t *testing.T) {
				img := mkfs(t, "mkfs.ext4", src, 64<<20, args...)
				blk, _ := strconv.ParseInt(strings.Fields(debugfs(t, img, "blocks /victim"))[0], 10, 64)
				patch(t, img, blk*4096, make([]byte, 4096))
				checkAll(t, openImage(t, img), src, func(rel string) bool { return strings.HasPrefix(rel, "victim") }, disk.ErrCorrupt)
			})
		})
	}
}

var leafRE = regexp.MustCompile(`(?m)^\s*0/\s*\d+\s+\d+/\s*\d+\s+\d+\s+-\s+\d+\s+(\d+)`)

// extentLeaf is the first leaf block of name's extent tree.
func extentLeaf(t *testing.T, img, name string) int64 {
	t.Helper()
	m := leafRE.FindStringSubmatch(debugfs(t, img, "ex /"+name))
	if m == nil {
		t.Fatalf("%s has no extent tree below its inode", name)
	}
	b, _ := strconv.ParseInt(m[1], 10, 64)
	return b
}

// TestSuperblock: a bad superblock checksum is corrupt; unknown INCOMPAT
// features are refused by name.
func TestSuperblock(t *testing.T) {
	img := mkfs(t, "mkfs.ext4", "", 16<<20)
	orig, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	open := func(sb []byte) error {
		b := bytes.Clone(orig)
		copy(b[1024:], sb)
		_, err := Open(bytes.NewReader(b), int64(len(b)))
		return err
	}
	sb := bytes.Clone(orig[1024:2048])
	if err := open(sb); err != nil {
		t.Fatal(err)
	}
	sb[1020] ^= 1
	if err := open(sb); !errors.Is(err, disk.ErrCorrupt) {
		t.Errorf("bad checksum: %v", err)
	}
	for _, c := range []struct {
		bit  uint32
		name string
	}{{0x1, "compression"}, {0x1000, "dirdata"}, {0x80000000, "0x80000000"}} {
		sb := bytes.Clone(orig[1024:2048])
		le.PutUint32(sb[96:], le.Uint32(sb[96:])|c.bit)
		le.PutUint32(sb[1020:], crc32c(^uint32(0), sb[:1020]))
		err := open(sb)
		if !errors.Is(err, disk.ErrNotSupported) || !strings.Contains(err.Error(), c.name) {
			t.Errorf("feature %#x: %v", c.bit, err)
		}
	}
	sb = bytes.Clone(orig[1024:2048])
	sb[56] = 0
	if err := open(sb); !errors.Is(err, disk.ErrCorrupt) {
		t.Errorf("bad magic: %v", err)
	}
	if _, err := Open(bytes.NewReader(orig[:1500]), 1500); !errors.Is(err, disk.ErrCorrupt) {
		t.Errorf("truncated: %v", err)
	}
}

// TestEncryptedCasefold: an encrypted file or directory is refused alone;
// a casefolded directory is read, and looked up ignoring case.
func TestEncryptedCasefold(t *testing.T) {
	src := smallTree(t)
	img := mkfs(t, "mkfs.ext4", src, 64<<20, "-O", "encrypt,casefold")
	// debugfs sets the flags (and fixes the inode checksums).
	debugfsW(t, img, "sif /victim/file3 flags 0x80800", "sif /other flags 0x80800", "sif /ok flags 0x40080000")
	fsys := openImage(t, img)
	if _, err := fsys.Open("victim/file3"); !errors.Is(err, disk.ErrNotSupported) {
		t.Errorf("encrypted file: %v", err)
	}
	if fi, err := fsys.Stat("victim/file3"); err != nil || fi.Size() != 6*301 {
		t.Errorf("Stat of an encrypted file: %v %v", fi, err)
	}
	if _, err := fsys.ReadDir("other"); !errors.Is(err, disk.ErrNotSupported) {
		t.Errorf("encrypted directory: %v", err)
	}
	if _, err := fsys.Stat("other/deeper"); !errors.Is(err, disk.ErrNotSupported) {
		t.Errorf("lookup in an encrypted directory: %v", err)
	}
	if b, err := fs.ReadFile(fsys, "victim/file4"); err != nil || len(b) != 6*401 {
		t.Errorf("a neighbour: %d bytes, %v", len(b), err)
	}
	if ents, err := fsys.ReadDir("ok"); err != nil || len(ents) != 40 {
		t.Errorf("casefolded directory: %d entries, %v", len(ents), err)
	}
	if b, err := fs.ReadFile(fsys, "ok/FILE7"); err != nil || len(b) != 2*701 {
		t.Errorf("case-insensitive lookup: %d bytes, %v", len(b), err)
	}
	if _, err := fs.ReadFile(fsys, "victim/FILE7"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("case-sensitive directory: %v", err)
	}
}

// TestConcurrent walks, stats and reads one filesystem from many
// goroutines at once, with caches small enough to evict (run with -race).
func TestConcurrent(t *testing.T) {
	src := smallTree(t)
	for _, args := range [][]string{nil, {"-O", "inline_data"}, {"-t", "ext3"}} {
		fsys := openImage(t, mkfs(t, "mkfs.ext4", src, 64<<20, args...))
		fsys.blocks = newLRU[uint64, []byte](8)
		fsys.nodes = newLRU[uint32, *node](8)
		fsys.dirs = newLRU[uint32, dirIndex](50)
		done := make(chan error)
		for g := range 8 {
			go func() {
				var err error
				for range 3 {
					if g%2 == 0 {
						err = fs.WalkDir(fsys, ".", func(p string, d fs.DirEntry, err error) error {
							if err != nil {
								return err
							}
							if _, err := d.Info(); err != nil {
								return err
							}
							if d.Type().IsRegular() {
								_, err = fs.ReadFile(fsys, p)
							}
							return err
						})
					} else {
						err = checkTree(fsys, src)
					}
					if err != nil {
						break
					}
				}
				done <- err
			}()
		}
		for range 8 {
			if err := <-done; err != nil {
				t.Error(err)
			}
		}
	}
}

// checkTree compares every regular file of fsys with src.
func checkTree(fsys *FS, src string) error {
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		got, err := fs.ReadFile(fsys, filepath.ToSlash(rel))
		if err != nil {
			return err
		}
		if want, _ := os.ReadFile(p); !bytes.Equal(got, want) {
			return errors.New(rel + ": contents differ")
		}
		return nil
	})
}

// TestDirectoryLoop: hard links to directories (which a kernel never
// makes) do not make walks endless.
func TestDirectoryLoop(t *testing.T) {
	src := t.TempDir()
	os.MkdirAll(filepath.Join(src, "a/b"), 0o755)
	os.WriteFile(filepath.Join(src, "a/b/f"), []byte("f"), 0o644)
	img := mkfs(t, "mkfs.ext4", src, 16<<20)
	debugfsW(t, img, "ln /a /a/b/loop", "ln / /a/root")
	fsys := openImage(t, img)
	n := 0
	err := fs.WalkDir(fsys, ".", func(p string, d fs.DirEntry, err error) error {
		if n++; n > 100 {
			return errors.New("endless walk")
		}
		if err != nil && !errors.Is(err, disk.ErrCorrupt) {
			return err
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fsys.ReadDir("a/b/loop"); err != nil {
		t.Errorf("the last directory of a path is not checked: %v", err)
	}
	if _, err := fsys.ReadDir("a/b/loop/b"); !errors.Is(err, disk.ErrCorrupt) {
		t.Errorf("through the loop: %v", err)
	}
	if _, err := fsys.Stat("a/root"); !errors.Is(err, disk.ErrCorrupt) {
		t.Errorf("link to the root: %v", err)
	}
	if b, err := fs.ReadFile(fsys, "a/b/f"); err != nil || string(b) != "f" {
		t.Errorf("a/b/f: %q %v", b, err)
	}
}
