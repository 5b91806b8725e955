package ext4

import (
	"bytes"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

func copyFile(t *testing.T, from string) string {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	to := filepath.Join(t.TempDir(), "copy.img")
	if err := os.WriteFile(to, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return to
}

// sameTrees compares two of the reader's views file by file.
func sameTrees(t *testing.T, got, want *FS) {
	t.Helper()
	n := 0
	err := fs.WalkDir(want, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		n++
		wi, err := want.Lstat(p)
		if err != nil {
			return err
		}
		gi, err := got.Lstat(p)
		if err != nil {
			t.Errorf("%s: %v", p, err)
			return nil
		}
		if fs.FormatFileInfo(gi) != fs.FormatFileInfo(wi) {
			t.Errorf("%s: %s, want %s", p, fs.FormatFileInfo(gi), fs.FormatFileInfo(wi))
		}
		if wi.Mode().IsRegular() {
			wb, _ := fs.ReadFile(want, p)
			gb, err := fs.ReadFile(got, p)
			if err != nil || !bytes.Equal(gb, wb) {
				t.Errorf("%s: contents differ (%v)", p, err)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	gotN := 0
	fs.WalkDir(got, ".", func(string, fs.DirEntry, error) error { gotN++; return nil })
	if gotN != n {
		t.Errorf("%d files, want %d", gotN, n)
	}
}

// TestJournalDebugfs writes transactions into the journal with debugfs
// (committed, revoked, uncommitted, one with a block that starts with the
// journal's magic), and compares the reader's replayed view with the image
// after e2fsck has recovered it.
func TestJournalDebugfs(t *testing.T) {
	for _, csum := range []bool{false, true} {
		t.Run("csum="+strconv.FormatBool(csum), func(t *testing.T) {
			src := t.TempDir()
			for _, n := range []string{"a", "b", "c"} {
				os.WriteFile(filepath.Join(src, n), []byte(strings.Repeat(n, 3000)), 0o644)
			}
			img := mkfs(t, "mkfs.ext4", src, 64<<20, "-b", "4096")
			blk := map[string]string{}
			for _, n := range []string{"a", "b", "c"} {
				blk[n] = strings.TrimSpace(debugfs(t, img, "blocks /"+n))
			}
			dir := t.TempDir()
			rng := rand.New(rand.NewPCG(5, 6))
			data := map[string][]byte{}
			for _, n := range []string{"X", "Y", "Z"} {
				b := make([]byte, 4096)
				for i := range b {
					b[i] = byte(rng.Uint32())
				}
				data[n] = b
			}
			be.PutUint32(data["X"], jbdMagic) // escaped in the journal
			for n, b := range data {
				os.WriteFile(filepath.Join(dir, n), b, 0o644)
			}
			jo := "jo"
			if csum {
				jo = "jo -c"
			}
			x, y, z := filepath.Join(dir, "X"), filepath.Join(dir, "Y"), filepath.Join(dir, "Z")
			debugfsW(t, img, jo,
				"jw -b "+blk["a"]+" "+x,                 // a ← X
				"jw -b "+blk["b"]+" "+y,                 // b ← Y, revoked below
				"jw -r "+blk["b"]+" -b "+blk["c"]+" "+z, // c ← Z
				"jc", jo,
				"jw -b "+blk["a"]+" -c "+y, // not committed
				"jc")
			fsys := openImage(t, img)
			if len(fsys.journal) == 0 {
				t.Fatal("nothing replayed:", debugfs(t, img, "logdump"))
			}
			for n, want := range map[string][]byte{"a": data["X"][:3000], "b": []byte(strings.Repeat("b", 3000)), "c": data["Z"][:3000]} {
				got, err := fs.ReadFile(fsys, n)
				if err != nil || !bytes.Equal(got, want) {
					t.Errorf("%s: %.8q, %v; want %.8q", n, got, err, want)
				}
			}
			rec := copyFile(t, img)
			fsck(t, rec, "-fy")
			sameTrees(t, fsys, openImage(t, rec))
		})
	}
}

// TestJournalKernel copies an image while the kernel has it mounted and
// files were just written (so the copy needs recovery), and compares the
// reader's view of the copy with the kernel's after it recovers it.
func TestJournalKernel(t *testing.T) {
	if !isRoot {
		t.Skip("needs root to mount")
	}
	src := smallTree(t)
	img := mkfs(t, "mkfs.ext4", src, 64<<20)
	mnt := t.TempDir()
	if out, err := exec.Command("mount", "-o", "loop,commit=1", img, mnt).CombinedOutput(); err != nil {
		t.Skipf("mount: %v %s", err, out)
	}
	mounted := true
	defer func() {
		if mounted {
			exec.Command("umount", mnt).Run()
		}
	}()
	// Metadata changes: new files and directories, renames, removals,
	// a directory grown past one block, xattrs, times with nanoseconds.
	os.MkdirAll(filepath.Join(mnt, "new/sub"), 0o755)
	for i := range 300 {
		os.WriteFile(filepath.Join(mnt, "new", "f"+strconv.Itoa(i)), []byte(strconv.Itoa(i)), 0o644)
	}
	os.Rename(filepath.Join(mnt, "victim"), filepath.Join(mnt, "new/sub/moved"))
	os.RemoveAll(filepath.Join(mnt, "other"))
	when := time.Date(2024, 5, 6, 7, 8, 9, 987654321, time.UTC)
	os.Chtimes(filepath.Join(mnt, "ok/file1"), when, when)
	os.Symlink(strings.Repeat("long/", 30), filepath.Join(mnt, "new/slowlink"))
	// Let the journal commit (commit=1) but copy the image before the
	// metadata reaches its home locations (writeback comes after
	// dirty_expire_centisecs, 30 s by default): the copy is then what a
	// crash-consistent snapshot holds.
	time.Sleep(2500 * time.Millisecond)
	snap := copyFile(t, img)
	if out, err := exec.Command("umount", mnt).CombinedOutput(); err != nil {
		t.Fatalf("umount: %v %s", err, out)
	}
	mounted = false

	fsys := openImage(t, snap)
	t.Logf("%d blocks replayed from the journal", len(fsys.journal))
	if fsys.journal == nil {
		t.Fatal("the copy needs no recovery")
	}
	// Read-write, so that the kernel can recover the copy.
	kern := mountWith(t, copyFile(t, snap), "loop,noatime")
	if kern == "" {
		t.Skip("cannot mount the copy")
	}
	compareTree(t, fsys, kern, false, nil)
	if fi, err := fsys.Stat("ok/file1"); err != nil || !fi.ModTime().Equal(when) {
		t.Errorf("ok/file1: %v %v", fi, err)
	}
}
