package fat

import (
	"bytes"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/vdisk-project/vdisk/internal/testenv"
	"github.com/vdisk-project/vdisk/volume/inode"
)

type kstat struct {
	nlink uint32
	atime time.Time
}

func sysStat(fi fs.FileInfo) kstat {
	st := fi.Sys().(*syscall.Stat_t)
	return kstat{nlink: uint32(st.Nlink), atime: time.Unix(st.Atim.Sec, st.Atim.Nsec).UTC()}
}

// TestKernel compares what Linux's vfat shows with what FS shows: names,
// modes, sizes, link counts and times. It needs root to loop-mount.
func TestKernel(t *testing.T) {
	img, _ := populated(t, 32, 64<<20, 1<<20)
	// A read-only file.
	tool(t, "mattrib", "-i", img, "+r", "::/small.txt")
	mnt := t.TempDir()
	if out, err := exec.Command("mount", "-o", "loop,ro", "-t", "vfat", img, mnt).CombinedOutput(); err != nil {
		if testenv.Required("mount") {
			t.Fatalf("mount: %v\n%s", err, out)
		}
		t.Skipf("cannot loop-mount vfat (%v: %s); it needs root and the vfat module", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", mnt).Run() })
	fsys := openImage(t, img)
	n := 0
	filepath.WalkDir(mnt, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			t.Fatal(err)
		}
		rel, _ := filepath.Rel(mnt, p)
		rel = filepath.ToSlash(rel)
		wi, _ := os.Lstat(p)
		gi, err := fsys.Lstat(rel)
		if err != nil {
			t.Errorf("%s: %v", rel, err)
			return nil
		}
		n++
		ws := sysStat(wi)
		gs := gi.Sys().(*inode.Stat)
		if gi.Mode() != wi.Mode() || (!wi.IsDir() && gi.Size() != wi.Size()) || !gi.ModTime().Equal(wi.ModTime()) {
			t.Errorf("%s: mode %v size %d mtime %v; kernel: %v %d %v", rel, gi.Mode(), gi.Size(), gi.ModTime(), wi.Mode(), wi.Size(), wi.ModTime())
		}
		if gs.Nlink != ws.nlink || !gs.Atime.Equal(ws.atime) && rel != "." {
			t.Errorf("%s: nlink %d atime %v; kernel: %d %v", rel, gs.Nlink, gs.Atime, ws.nlink, ws.atime)
		}
		if !wi.IsDir() {
			wb, _ := os.ReadFile(p)
			gb, err := fs.ReadFile(fsys, rel)
			if err != nil || !bytes.Equal(wb, gb) {
				t.Errorf("%s: contents differ from the kernel's (%v)", rel, err)
			}
		}
		return nil
	})
	if n < 300 {
		t.Errorf("compared %d files", n)
	}
}
