package disk_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"

	"github.com/vdisk-project/vdisk/disk"
	"github.com/vdisk-project/vdisk/disk/disktest"
)

func TestCodes(t *testing.T) {
	tests := []struct {
		err  error
		want disk.Code
		std  error
	}{
		{fs.ErrNotExist, disk.ErrNotFound, fs.ErrNotExist},
		{&fs.PathError{Op: "open", Path: "x", Err: syscall.ENOENT}, disk.ErrNotFound, fs.ErrNotExist},
		{syscall.EACCES, disk.ErrPermission, fs.ErrPermission},
		{syscall.ENOSPC, disk.ErrNoSpace, nil},
		{errors.ErrUnsupported, disk.ErrNotSupported, errors.ErrUnsupported},
		{io.ErrUnexpectedEOF, disk.ErrAccess, nil},
		{disk.Errorf(disk.ErrCorrupt, "bad magic"), disk.ErrCorrupt, nil},
		{fmt.Errorf("open: %w", disk.ErrBusy), disk.ErrBusy, nil},
		{errors.New("something"), disk.ErrAccess, nil},
	}
	for _, tt := range tests {
		t.Run(tt.err.Error(), func(t *testing.T) {
			if got := disk.CodeOf(tt.err); got != tt.want {
				t.Errorf("CodeOf(%v) = %v, want %v", tt.err, got, tt.want)
			}
			w := disk.Wrap(tt.err, "vmdk: read", "a.vmdk", 4096)
			if !errors.Is(w, tt.want) {
				t.Errorf("errors.Is(Wrap(%v), %v) = false", tt.err, tt.want)
			}
			if tt.std != nil && !errors.Is(w, tt.std) {
				t.Errorf("errors.Is(Wrap(%v), %v) = false", tt.err, tt.std)
			}
		})
	}
	if disk.CodeOf(nil) != 0 {
		t.Errorf("CodeOf(nil) != 0")
	}
	for _, c := range disk.Codes() {
		if c.VixError() == 0 || c.String() == "" {
			t.Errorf("code %d has no VIX number or name", c)
		}
	}
}

func TestErrorString(t *testing.T) {
	err := &disk.Error{Op: "vmdk: read", Path: "base.vmdk", Off: 4096, Code: disk.ErrCorrupt,
		Err: errors.New("grain table entry 17 past end of file")}
	want := "vmdk: read base.vmdk @4096: corrupt: grain table entry 17 past end of file"
	if got := err.Error(); got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	inner := disk.Errorf(disk.ErrCorrupt, "bad magic")
	outer := disk.Wrap(inner, "vmdk: open", "a.vmdk", -1)
	if got, want := outer.Error(), "vmdk: open a.vmdk: corrupt: bad magic"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
}

func TestIsZero(t *testing.T) {
	for _, n := range []int{0, 1, 7, 63, 64, 65, 4096, 65537} {
		p := make([]byte, n)
		if !disk.IsZero(p) {
			t.Errorf("IsZero(%d zeros) = false", n)
		}
		for i := 0; i < n; i += max(1, n/7) {
			p[i] = 1
			if disk.IsZero(p) {
				t.Errorf("IsZero with byte %d of %d set = true", i, n)
			}
			p[i] = 0
		}
	}
}

// scatter fills a MemDisk with random data runs and returns it.
func scatter(size int64, seed uint64) *disktest.MemDisk {
	d := disktest.NewMemDisk(size)
	rng := rand.New(rand.NewPCG(seed, seed))
	for range 40 {
		off := rng.Int64N(size)
		n := min(rng.Int64N(700<<10)+1, size-off)
		p := make([]byte, n)
		for i := range p {
			p[i] = byte(rng.Uint32() | 1)
		}
		if _, err := d.WriteAt(p, off); err != nil {
			panic(err)
		}
	}
	return d
}

// orderedDisk fails any write below the end of the previous one.
type orderedDisk struct {
	*disktest.MemDisk
	mu  sync.Mutex
	end int64
}

func (o *orderedDisk) WriteAt(p []byte, off int64) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if off < o.end {
		return 0, fmt.Errorf("write at %d before %d", off, o.end)
	}
	o.end = off + int64(len(p))
	return o.MemDisk.WriteAt(p, off)
}

func TestCopy(t *testing.T) {
	ctx := context.Background()
	const size = 64<<20 + 4096
	src := scatter(size, 1)
	tests := []struct {
		name string
		opts *disk.CopyOptions
		dst  func() disk.Disk
	}{
		{"defaults", nil, func() disk.Disk { return disktest.NewMemDisk(size) }},
		{"zeroed", &disk.CopyOptions{DstZeroed: true}, func() disk.Disk { return disktest.NewMemDisk(size) }},
		{"one-worker", &disk.CopyOptions{Workers: 1, ChunkSize: 4096}, func() disk.Disk { return disktest.NewMemDisk(size) }},
		{"sequential", &disk.CopyOptions{Sequential: true, DstZeroed: true, ChunkSize: 128 << 10},
			func() disk.Disk { return &orderedDisk{MemDisk: disktest.NewMemDisk(size)} }},
		{"dirty-dst", nil, func() disk.Disk { return scatter(size, 99) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dst := tt.dst()
			var last int64
			opts := &disk.CopyOptions{}
			if tt.opts != nil {
				*opts = *tt.opts
			}
			opts.Progress = func(done, total int64) {
				if done < last || total != size {
					t.Errorf("progress went %d -> %d of %d", last, done, total)
				}
				last = done
			}
			st, err := disk.Copy(ctx, dst, src, opts)
			if err != nil {
				t.Fatalf("Copy: %v", err)
			}
			if last != size {
				t.Errorf("progress ended at %d, want %d", last, size)
			}
			if off, err := disk.Compare(ctx, src, dst, nil); err != nil || off != -1 {
				t.Fatalf("Compare = %d, %v; want equal", off, err)
			}
			if st.Read > src.Allocated() {
				t.Errorf("read %d bytes, more than the %d allocated", st.Read, src.Allocated())
			}
			if m, ok := dst.(*disktest.MemDisk); ok && tt.opts != nil && tt.opts.DstZeroed && m.Allocated() > src.Allocated() {
				t.Errorf("thin copy allocated %d bytes, source has %d", m.Allocated(), src.Allocated())
			}
		})
	}
}

func TestCopyErrors(t *testing.T) {
	ctx := context.Background()
	src := scatter(16<<20, 2)
	dst := disktest.NewFaultyDisk(disktest.NewMemDisk(16<<20), disktest.Fault{Ops: disktest.OpWrite, After: 3, Err: syscall.ENOSPC})
	if _, err := disk.Copy(ctx, dst, src, nil); !errors.Is(err, disk.ErrNoSpace) {
		t.Errorf("Copy onto a full disk = %v, want ErrNoSpace", err)
	}
	bad := disktest.NewFaultyDisk(src, disktest.Fault{Ops: disktest.OpRead, After: 2, Short: true})
	if _, err := disk.Copy(ctx, disktest.NewMemDisk(16<<20), bad, nil); !errors.Is(err, disk.ErrAccess) {
		t.Errorf("Copy from a failing disk = %v, want ErrAccess", err)
	}
	if _, err := disk.Copy(ctx, disktest.NewMemDisk(1<<20), src, nil); !errors.Is(err, disk.ErrInvalid) {
		t.Errorf("Copy into a smaller disk = %v, want ErrInvalid", err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := disk.Copy(cctx, disktest.NewMemDisk(16<<20), src, nil); !errors.Is(err, context.Canceled) {
		t.Errorf("Copy with a cancelled context = %v, want context.Canceled", err)
	}
}

func TestCompare(t *testing.T) {
	ctx := context.Background()
	a := scatter(8<<20, 3)
	b := disktest.NewMemDisk(8 << 20)
	if _, err := disk.Copy(ctx, b, a, nil); err != nil {
		t.Fatal(err)
	}
	if off, err := disk.Compare(ctx, a, b, nil); off != -1 || err != nil {
		t.Fatalf("Compare equal = %d, %v", off, err)
	}
	if _, err := b.WriteAt([]byte{0x55}, 5<<20+700); err != nil {
		t.Fatal(err)
	}
	// The first difference is reported at the start of its sector, unless
	// the byte written happened to equal what was there.
	old := make([]byte, 1)
	a.ReadAt(old, 5<<20+700)
	want := int64(5<<20 + 512)
	if old[0] == 0x55 {
		want = -1
	}
	if off, err := disk.Compare(ctx, a, b, nil); off != want || err != nil {
		t.Fatalf("Compare = %d, %v; want %d", off, err, want)
	}
	big := disktest.NewMemDisk(16 << 20)
	if _, err := disk.Copy(ctx, big, a, nil); err != nil {
		t.Fatal(err)
	}
	if off, _ := disk.Compare(ctx, a, big, nil); off != -1 {
		t.Errorf("Compare with zero tail = %d, want -1", off)
	}
	if off, _ := disk.Compare(ctx, a, big, &disk.CompareOptions{Strict: true}); off != 8<<20 {
		t.Errorf("strict Compare of different sizes = %d, want %d", off, 8<<20)
	}
	if _, err := big.WriteAt([]byte{1}, 12<<20); err != nil {
		t.Fatal(err)
	}
	if off, _ := disk.Compare(ctx, a, big, nil); off != 12<<20 {
		t.Errorf("Compare with data in the tail = %d, want %d", off, 12<<20)
	}
}

func TestOSFS(t *testing.T) {
	name := t.TempDir() + "/f"
	f, err := disk.OSFS{}.OpenFile(name, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := (disk.OSFS{}).OpenFile(name+"x", os.O_RDONLY, 0); disk.CodeOf(err) != disk.ErrNotFound {
		t.Errorf("open missing = %v", err)
	}
}

func BenchmarkIsZero(b *testing.B) {
	p := make([]byte, 1<<20)
	b.SetBytes(int64(len(p)))
	b.ReportAllocs()
	for b.Loop() {
		if !disk.IsZero(p) {
			b.Fatal("not zero")
		}
	}
}

func BenchmarkCopy(b *testing.B) {
	const size = 256 << 20
	src := scatter(size, 5)
	b.SetBytes(src.Allocated())
	b.ReportAllocs()
	for b.Loop() {
		if _, err := disk.Copy(context.Background(), disktest.NewMemDisk(size), src, &disk.CopyOptions{DstZeroed: true}); err != nil {
			b.Fatal(err)
		}
	}
}

func TestRemoveAtomicLeftovers(t *testing.T) {
	dir := t.TempDir()
	for _, n := range []string{".disk.json.0123456789abcdef.tmp", ".keep.tmp", "disk.json", ".x.0123456789abcdeg.tmp"} {
		os.WriteFile(filepath.Join(dir, n), []byte("x"), 0o600)
	}
	if n := disk.RemoveAtomicLeftovers(dir); n != 1 {
		t.Errorf("removed %d, want 1", n)
	}
	for _, n := range []string{".keep.tmp", "disk.json", ".x.0123456789abcdeg.tmp"} {
		if _, err := os.Stat(filepath.Join(dir, n)); err != nil {
			t.Errorf("%s: %v", n, err)
		}
	}
}
