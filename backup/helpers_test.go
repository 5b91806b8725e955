package backup

import (
	"bytes"
	"context"
	"math/rand/v2"
	"sync/atomic"
	"testing"

	"github.com/vdisk-project/vdisk/backup/storage"
	"github.com/vdisk-project/vdisk/backup/storage/mem"
	"github.com/vdisk-project/vdisk/disk"
	"github.com/vdisk-project/vdisk/disk/disktest"
)

const testChunk = 64 << 10

var testPassword = []byte("correct horse")

func newTestRepo(t testing.TB, st storage.Storage, encrypted bool) *Repository {
	t.Helper()
	return newRepoChunk(t, st, encrypted, testChunk)
}

// newRepoChunk is newTestRepo with chunks of the given size.
func newRepoChunk(t testing.TB, st storage.Storage, encrypted bool, chunk int) *Repository {
	t.Helper()
	if st == nil {
		st = mem.New()
	}
	r, err := Init(context.Background(), st, InitOptions{ChunkSize: chunk, PackSize: MinPackSize,
		Password: testPassword, Unencrypted: !encrypted, ScryptN: 1024})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

func reopen(t testing.TB, r *Repository) *Repository {
	t.Helper()
	r2, err := Open(context.Background(), r.st, testPassword)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r2.Close() })
	return r2
}

// countingDisk counts the bytes read from a disk.
type countingDisk struct {
	disk.Disk
	read atomic.Int64
}

func (c *countingDisk) ReadAt(p []byte, off int64) (int, error) {
	c.read.Add(int64(len(p)))
	return c.Disk.ReadAt(p, off)
}

func (c *countingDisk) Extents(ctx context.Context, off, n int64, fn func(disk.Extent) error) error {
	return disk.Extents(ctx, c.Disk, off, n, fn)
}

// snapshot is a saved copy of a disk.
type snapshot struct {
	data  []byte
	flags []disk.ExtentFlags // per testChunk: hole, zero or data
}

func takeSnapshot(t testing.TB, d *disktest.MemDisk) snapshot {
	t.Helper()
	s := snapshot{data: make([]byte, d.Size())}
	if _, err := d.ReadAt(s.data, 0); err != nil {
		t.Fatal(err)
	}
	n := chunksOf(d.Size(), testChunk)
	s.flags = make([]disk.ExtentFlags, n)
	for i := range s.flags {
		s.flags[i] = disk.Hole | disk.Zero
	}
	err := d.Extents(context.Background(), 0, d.Size(), func(e disk.Extent) error {
		if e.Flags.Data() {
			for c := e.Off / testChunk; c <= (e.End()-1)/testChunk; c++ {
				s.flags[c] = 0
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for i := range s.flags {
		end := min(int64(i+1)*testChunk, d.Size())
		if s.flags[i] == 0 && disk.IsZero(s.data[int64(i)*testChunk:end]) {
			s.flags[i] = disk.Zero
		}
	}
	return s
}

// chunkFlags returns the per-chunk flags a disk reports.
func chunkFlags(t testing.TB, d disk.Disk) []disk.ExtentFlags {
	t.Helper()
	f := make([]disk.ExtentFlags, chunksOf(d.Size(), testChunk))
	err := disk.Extents(context.Background(), d, 0, d.Size(), func(e disk.Extent) error {
		for c := e.Off / testChunk; c <= (e.End()-1)/testChunk; c++ {
			f[c] = e.Flags
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func readAll(t testing.TB, d disk.Disk) []byte {
	t.Helper()
	b := make([]byte, d.Size())
	if _, err := d.ReadAt(b, 0); err != nil {
		t.Fatal(err)
	}
	return b
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	if len(a) != len(b) {
		return min(len(a), len(b))
	}
	return -1
}

// checkPoint checks that point p's disk reads back as s, through OpenDisk
// and through Restore into a new disk.
func checkPoint(t testing.TB, r *Repository, p *Point, name string, s snapshot) {
	t.Helper()
	ctx := context.Background()
	d, err := r.OpenDisk(ctx, p, name)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if got := readAll(t, d); !bytes.Equal(got, s.data) {
		t.Fatalf("point %s disk %s: OpenDisk differs at %d", p.ID[:8], name, firstDiff(got, s.data))
	}
	if got := chunkFlags(t, d); !equalFlags(got, s.flags) {
		t.Fatalf("point %s disk %s: extents %v, want %v", p.ID[:8], name, got, s.flags)
	}
	tgt := disktest.NewMemDisk(s.dataLen())
	if _, err := r.Restore(ctx, p, name, tgt, RestoreOptions{}); err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, tgt); !bytes.Equal(got, s.data) {
		t.Fatalf("point %s disk %s: Restore differs at %d", p.ID[:8], name, firstDiff(got, s.data))
	}
	// Thin: only data chunks are allocated in the restored disk.
	var data int64
	for _, f := range s.flags {
		if f.Data() {
			data++
		}
	}
	if got := tgt.Allocated(); got != data*testChunk {
		t.Fatalf("point %s disk %s: restored disk allocates %d bytes, want %d", p.ID[:8], name, got, data*testChunk)
	}
}

func (s snapshot) dataLen() int64 { return int64(len(s.data)) }

func equalFlags(a, b []disk.ExtentFlags) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i]&(disk.Hole|disk.Zero) != b[i]&(disk.Hole|disk.Zero) {
			return false
		}
	}
	return true
}

// mutate applies random writes, zeroes and trims to d and returns the
// ranges it touched.
func mutate(t testing.TB, rng *rand.Rand, d *disktest.MemDisk, ops int) []disk.Extent {
	t.Helper()
	size := d.Size()
	var changed []disk.Extent
	for range ops {
		off := rng.Int64N(size)
		n := min(1+rng.Int64N(3*testChunk), size-off)
		switch rng.IntN(6) {
		case 0:
			if err := d.WriteZeroes(off, n, 0); err != nil {
				t.Fatal(err)
			}
		case 1:
			if err := d.Trim(off, n); err != nil {
				t.Fatal(err)
			}
		case 2:
			// Repeat an earlier pattern so that dedup has something to find.
			b := bytes.Repeat([]byte{byte(rng.IntN(4) + 1)}, int(n))
			if _, err := d.WriteAt(b, off); err != nil {
				t.Fatal(err)
			}
		default:
			b := make([]byte, n)
			for i := range b {
				b[i] = byte(rng.Uint32())
			}
			if _, err := d.WriteAt(b, off); err != nil {
				t.Fatal(err)
			}
		}
		changed = append(changed, disk.Extent{Off: off, Len: n})
	}
	return changed
}
