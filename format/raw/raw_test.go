package raw

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/vdisk-project/vdisk/disk"
	"github.com/vdisk-project/vdisk/disk/disktest"
)

var ctx = context.Background()

func TestConformance(t *testing.T) {
	disktest.RunTests(t, disktest.Harness{
		New: func(t *testing.T, size int64) disk.Disk {
			d, err := Create(ctx, filepath.Join(t.TempDir(), "d.raw"), size, nil)
			if err != nil {
				t.Fatal(err)
			}
			return d
		},
		Reopen: func(t *testing.T, d disk.Disk) disk.Disk {
			name := d.(*Disk).name
			if err := d.Close(); err != nil {
				t.Fatal(err)
			}
			d2, err := Open(ctx, name, nil)
			if err != nil {
				t.Fatal(err)
			}
			return d2
		},
	})
}

func TestSparse(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.raw")
	d, err := Create(ctx, path, 64<<20, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if _, err := d.WriteAt(make([]byte, 4096), 0); err != nil {
		t.Fatal(err)
	}
	if _, err := d.WriteAt([]byte{1}, 32<<20); err != nil {
		t.Fatal(err)
	}
	var data int64
	for _, e := range disktest.CheckExtents(t, d) {
		if e.Flags.Data() {
			data += e.Len
		}
	}
	if data == 0 || data > 1<<20 {
		t.Errorf("data extents cover %d bytes; want a few KiB", data)
	}
	if err := d.WriteZeroes(32<<20-4096, 8192, 0); err != nil {
		t.Fatal(err)
	}
	st, _ := os.Stat(path)
	if st.Size() != 64<<20 {
		t.Errorf("size after punching = %d", st.Size())
	}
}

func TestReadOnlyAndUnbuffered(t *testing.T) {
	path := filepath.Join(t.TempDir(), "r.raw")
	d, err := Create(ctx, path, 1<<20, nil)
	if err != nil {
		t.Fatal(err)
	}
	d.Close()
	ro, err := Open(ctx, path, &Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ro.WriteAt([]byte{1}, 0); !errors.Is(err, disk.ErrPermission) {
		t.Errorf("write to read-only = %v, want ErrPermission", err)
	}
	ro.Close()
	u, err := Open(ctx, path, &Options{Unbuffered: true})
	if err != nil {
		t.Skipf("O_DIRECT not supported here: %v", err)
	}
	defer u.Close()
	buf := disk.AlignedBytes(4096)
	if _, err := u.ReadAt(buf, 0); err != nil {
		t.Errorf("aligned unbuffered read: %v", err)
	}
	if _, err := u.ReadAt(buf[1:513], 0); !errors.Is(err, disk.ErrInvalid) {
		t.Errorf("misaligned unbuffered read = %v, want ErrInvalid", err)
	}
}

func BenchmarkRead(b *testing.B) {
	path := filepath.Join(b.TempDir(), "b.raw")
	d, err := Create(ctx, path, 64<<20, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer d.Close()
	buf := make([]byte, 1<<20)
	for i := range buf {
		buf[i] = byte(i)
	}
	for off := int64(0); off < d.Size(); off += int64(len(buf)) {
		d.WriteAt(buf, off)
	}
	b.SetBytes(int64(len(buf)))
	b.ReportAllocs()
	var off int64
	for b.Loop() {
		if _, err := d.ReadAt(buf, off); err != nil {
			b.Fatal(err)
		}
		off = (off + int64(len(buf))) % d.Size()
	}
}

func BenchmarkWrite(b *testing.B) {
	d, err := Create(ctx, filepath.Join(b.TempDir(), "w.raw"), 64<<20, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer d.Close()
	buf := make([]byte, 1<<20)
	for i := range buf {
		buf[i] = byte(i | 1)
	}
	b.SetBytes(int64(len(buf)))
	b.ReportAllocs()
	var off int64
	for b.Loop() {
		if _, err := d.WriteAt(buf, off); err != nil {
			b.Fatal(err)
		}
		off = (off + int64(len(buf))) % d.Size()
	}
}

// BenchmarkZero measures punching 1 MiB holes into written data.
func BenchmarkZero(b *testing.B) {
	d, err := Create(ctx, filepath.Join(b.TempDir(), "z.raw"), 64<<20, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer d.Close()
	b.SetBytes(1 << 20)
	b.ReportAllocs()
	var off int64
	for b.Loop() {
		if err := d.WriteZeroes(off, 1<<20, 0); err != nil {
			b.Fatal(err)
		}
		off = (off + 1<<20) % d.Size()
	}
}

// BenchmarkExtents maps a 1 GiB file with 256 data runs.
func BenchmarkExtents(b *testing.B) {
	d, err := Create(ctx, filepath.Join(b.TempDir(), "e.raw"), 1<<30, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer d.Close()
	buf := make([]byte, 64<<10)
	for i := range buf {
		buf[i] = 1
	}
	for off := int64(0); off < d.Size(); off += 4 << 20 {
		if _, err := d.WriteAt(buf, off); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	for b.Loop() {
		n := 0
		if err := d.Extents(ctx, 0, d.Size(), func(disk.Extent) error { n++; return nil }); err != nil {
			b.Fatal(err)
		}
		if n < 256 {
			b.Fatalf("%d extents", n)
		}
	}
}

// TestWriteBehind checks that a disk is written behind (its file's
// write-back starts while data comes in) after SetWriteBehind(true) and
// while it is the destination of a Copy, and not otherwise: a disk in use
// takes rewrites that early write-back would write twice.
func TestWriteBehind(t *testing.T) {
	const size = 4 * disk.DefaultWriteBehindWindow
	data := make([]byte, size)
	for i := range data {
		data[i] = byte(i%251) + 1
	}
	src := disktest.NewMemDisk(size)
	if _, err := src.WriteAt(data, 0); err != nil {
		t.Fatal(err)
	}
	fill := func(d *Disk) {
		t.Helper()
		for off := int64(0); off < size; off += 1 << 20 {
			if _, err := d.WriteAt(data[off:off+1<<20], off); err != nil {
				t.Fatal(err)
			}
		}
	}
	fsys := &disktest.WriteBackFS{}
	name := filepath.Join(t.TempDir(), "d.raw")
	d, err := Create(ctx, name, size, &Options{FS: fsys})
	if err != nil {
		t.Fatal(err)
	}
	fill(d)
	if got := fsys.Starts(); got != 0 {
		t.Errorf("a new disk written without SetWriteBehind started write-back %d times, want none", got)
	}
	if d.SetWriteBehind(true) {
		t.Error("write-behind was on before SetWriteBehind(true)")
	}
	fill(d)
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if got := fsys.Starts(); got < 3 {
		t.Errorf("a disk written with %d windows after SetWriteBehind(true) started write-back %d times, want at least 3", size/disk.DefaultWriteBehindWindow, got)
	}

	fsys = &disktest.WriteBackFS{}
	d, err = Open(ctx, name, &Options{FS: fsys})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if _, err := d.WriteAt(data, 0); err != nil {
		t.Fatal(err)
	}
	if got := fsys.Starts(); got != 0 {
		t.Errorf("an opened disk started write-back %d times, want none outside a copy", got)
	}
	if _, err := disk.Copy(ctx, d, src, nil); err != nil {
		t.Fatal(err)
	}
	if got := fsys.Starts(); got < 2 {
		t.Errorf("a copy of 4 windows into an opened disk started write-back %d times, want at least 2", got)
	}
	if d.SetWriteBehind(false) {
		t.Error("write-behind still on after the copy")
	}
}

// hidden hides a disk's optional interfaces but the Disk contract.
type hidden struct{ disk.Disk }

// BenchmarkConvertDurable copies 64 MiB of data into a new raw image with
// Copy and closes it (the sync that makes it durable), as a default
// convert does: "behind" as Copy does it, "sync-only" with write-behind
// hidden from Copy, to show what it saves. Run it with TMPDIR on a real
// filesystem.
func BenchmarkConvertDurable(b *testing.B) {
	const size = 64 << 20
	src := disktest.NewMemDisk(size)
	data := make([]byte, size)
	for i := range data {
		data[i] = byte(i%251) + 1
	}
	if _, err := src.WriteAt(data, 0); err != nil {
		b.Fatal(err)
	}
	for _, behind := range []bool{true, false} {
		b.Run(map[bool]string{true: "behind", false: "sync-only"}[behind], func(b *testing.B) {
			dir := b.TempDir()
			b.SetBytes(size)
			b.ReportAllocs()
			for b.Loop() {
				name := filepath.Join(dir, "d.raw")
				d, err := Create(ctx, name, size, nil)
				if err != nil {
					b.Fatal(err)
				}
				d.SetWriteBehind(behind)
				var dst disk.Disk = d
				if !behind {
					dst = hidden{d} // Copy cannot turn it on
				}
				if _, err := disk.Copy(ctx, dst, src, &disk.CopyOptions{DstZeroed: true}); err != nil {
					b.Fatal(err)
				}
				if err := d.Close(); err != nil {
					b.Fatal(err)
				}
				os.Remove(name)
			}
		})
	}
}
