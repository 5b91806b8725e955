package disk_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/vdisk-project/vdisk/disk"
	"github.com/vdisk-project/vdisk/disk/disktest"
)

// TestWriteBehindStarts writes 10 windows through a write-behind file and
// counts the write-back starts: about one per window while it is on, none
// while it is off.
func TestWriteBehindStarts(t *testing.T) {
	const window = 1 << 20
	for _, on := range []bool{false, true} {
		t.Run(map[bool]string{false: "off", true: "on"}[on], func(t *testing.T) {
			t.Parallel()
			fsys := &disktest.WriteBackFS{}
			f, err := fsys.OpenFile(filepath.Join(t.TempDir(), "f"), os.O_CREATE|os.O_RDWR, 0o644)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			wb := &disk.WriteBehind{Window: window}
			wb.Set(on)
			wf := wb.File(f)
			buf := make([]byte, 256<<10)
			for off := int64(0); off < 10*window; off += int64(len(buf)) {
				if _, err := wf.WriteAt(buf, off); err != nil {
					t.Fatal(err)
				}
			}
			got, want := fsys.Starts(), int64(0)
			if on {
				want = 10
			}
			if got != want {
				t.Errorf("write-back started %d times over 10 windows written with write-behind %v, want %d", got, on, want)
			}
			if err := wf.Sync(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestWriteBehindFd checks that the wrapper keeps a descriptor exactly when
// the file has one: hole punching and SEEK_DATA depend on it.
func TestWriteBehindFd(t *testing.T) {
	var wb disk.WriteBehind
	f, err := os.Create(filepath.Join(t.TempDir(), "f"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	w, ok := wb.File(f).(interface{ Fd() uintptr })
	if !ok || w.Fd() != f.Fd() {
		t.Errorf("wrapped *os.File: Fd method %v, want the file's descriptor", ok)
	}
	c := disktest.NewCrashFS()
	cf, err := c.OpenFile("/g", os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := wb.File(cf).(interface{ Fd() uintptr }); ok {
		t.Error("wrapped file without a descriptor has an Fd method")
	}
	var nilWB *disk.WriteBehind
	if got := nilWB.File(cf); got != cf {
		t.Error("a nil WriteBehind wrapped the file")
	}
	if nilWB.Set(true) || nilWB.On() {
		t.Error("a nil WriteBehind is on")
	}
}

// behindDisk records the write-behind settings Copy makes.
type behindDisk struct {
	disk.Disk
	on   bool
	seen []bool
}

func (b *behindDisk) SetWriteBehind(on bool) bool {
	was := b.on
	b.on = on
	b.seen = append(b.seen, on)
	return was
}

func (b *behindDisk) WriteAt(p []byte, off int64) (int, error) {
	if !b.on {
		return 0, disk.Errorf(disk.ErrInvalid, "written with write-behind off")
	}
	return b.Disk.WriteAt(p, off)
}

// TestCopyWritesBehind checks that Copy writes its destination behind
// while it copies and sets it back as it was after.
func TestCopyWritesBehind(t *testing.T) {
	src := disktest.NewMemDisk(4 << 20)
	buf := make([]byte, 1<<20)
	buf[0] = 1
	if _, err := src.WriteAt(buf, 1<<20); err != nil {
		t.Fatal(err)
	}
	dst := &behindDisk{Disk: disktest.NewMemDisk(4 << 20)}
	if _, err := disk.Copy(context.Background(), dst, src, nil); err != nil {
		t.Fatalf("copy (every write must come with write-behind on): %v", err)
	}
	if len(dst.seen) != 2 || !dst.seen[0] || dst.seen[1] {
		t.Errorf("write-behind set to %v during the copy, want [true false]", dst.seen)
	}
}

// BenchmarkWriteBehind writes 64 MiB into a new file in 1 MiB writes and
// syncs it, as a convert's target is written, with write-behind off and
// on: the time per operation is the durable write's (run it with TMPDIR
// on a real filesystem; tmpfs has no device to overlap with).
func BenchmarkWriteBehind(b *testing.B) {
	const size, chunk = 64 << 20, 1 << 20
	buf := make([]byte, chunk)
	for i := range buf {
		buf[i] = byte(i*7 + 1)
	}
	for _, on := range []bool{false, true} {
		b.Run(map[bool]string{false: "off", true: "on"}[on], func(b *testing.B) {
			dir := b.TempDir()
			b.SetBytes(size)
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				name := filepath.Join(dir, "f")
				f, err := os.Create(name)
				if err != nil {
					b.Fatal(err)
				}
				var wb disk.WriteBehind
				wb.Set(on)
				wf := wb.File(f)
				for off := int64(0); off < size; off += chunk {
					if _, err := wf.WriteAt(buf, off); err != nil {
						b.Fatal(err)
					}
				}
				if err := wf.Sync(); err != nil {
					b.Fatal(err)
				}
				f.Close()
				os.Remove(name)
			}
		})
	}
}
