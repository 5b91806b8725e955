// Package disktest is the conformance suite every disk.Disk implementation
// runs, and the fakes that tests use in place of real storage: MemDisk (a
// sparse in-memory disk), FaultyDisk (injected I/O errors, short transfers,
// ENOSPC) and CrashFS (a filesystem that loses unsynced writes, torn at
// sector granularity, at a simulated power cut).
//
// # Testing
//
// An implementation's test calls RunTests with a Harness that creates an
// empty writable disk:
//
//	disktest.RunTests(t, disktest.Harness{
//		New: func(t *testing.T, size int64) disk.Disk { ... },
//	})
package disktest

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/vdisk-project/vdisk/disk"
)

// Harness tells RunTests how to make disks of the implementation under test.
type Harness struct {
	// New returns a new, writable disk of exactly size bytes that reads as
	// zeros. The suite closes it.
	New func(t *testing.T, size int64) disk.Disk
	// Reopen, when set, closes d and opens the same disk again; the suite
	// then checks that flushed data persisted.
	Reopen func(t *testing.T, d disk.Disk) disk.Disk
	// Size is the disk size used by the suite. Default 8 MiB + 64 KiB.
	Size int64
	// Align is the offset and length granularity the suite uses for writes.
	// Default 1 (any byte offset).
	Align int64
}

// RunTests runs the conformance suite against the disks h makes.
func RunTests(t *testing.T, h Harness) {
	if h.Size == 0 {
		h.Size = 8<<20 + 64<<10
	}
	if h.Align == 0 {
		h.Align = 1
	}
	t.Run("Size", func(t *testing.T) {
		d := h.New(t, h.Size)
		defer closeDisk(t, d)
		if got := d.Size(); got != h.Size {
			t.Fatalf("Size() = %d, want %d", got, h.Size)
		}
	})
	t.Run("ReadsZeros", func(t *testing.T) {
		d := h.New(t, h.Size)
		defer closeDisk(t, d)
		buf := make([]byte, 256<<10)
		for off := int64(0); off < h.Size; off += int64(len(buf)) {
			n := min(int64(len(buf)), h.Size-off)
			readFull(t, d, buf[:n], off)
			if !disk.IsZero(buf[:n]) {
				t.Fatalf("new disk reads non-zero bytes at %d", off)
			}
		}
	})
	t.Run("RandomWrites", func(t *testing.T) { testRandomWrites(t, h) })
	t.Run("EOF", func(t *testing.T) { testEOF(t, h) })
	t.Run("OutOfRange", func(t *testing.T) { testOutOfRange(t, h) })
	t.Run("Concurrent", func(t *testing.T) { testConcurrent(t, h) })
	t.Run("Extents", func(t *testing.T) { testExtents(t, h) })
	t.Run("ZeroAndTrim", func(t *testing.T) { testZeroTrim(t, h) })
	t.Run("Copy", func(t *testing.T) { testCopy(t, h) })
	if h.Reopen != nil {
		t.Run("Persist", func(t *testing.T) { testPersist(t, h) })
	}
}

func closeDisk(t *testing.T, d disk.Disk) {
	t.Helper()
	if err := d.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
}

func readFull(t *testing.T, d disk.Disk, p []byte, off int64) {
	t.Helper()
	n, err := d.ReadAt(p, off)
	if err != nil && !(errors.Is(err, io.EOF) && n == len(p)) {
		t.Fatalf("ReadAt(%d bytes @%d) = %d, %v", len(p), off, n, err)
	}
	if n != len(p) {
		t.Fatalf("ReadAt(%d bytes @%d) = %d bytes", len(p), off, n)
	}
}

func writeFull(t *testing.T, d disk.Disk, p []byte, off int64) {
	t.Helper()
	n, err := d.WriteAt(p, off)
	if err != nil || n != len(p) {
		t.Fatalf("WriteAt(%d bytes @%d) = %d, %v", len(p), off, n, err)
	}
}

// randomRange returns an aligned range of at most maxLen bytes inside size.
func randomRange(rng *rand.Rand, size, align, maxLen int64) (int64, int64) {
	off := rng.Int64N(size/align) * align
	n := (rng.Int64N(maxLen/align) + 1) * align
	return off, min(n, size-off)
}

func fill(rng *rand.Rand, p []byte) {
	for len(p) >= 8 {
		v := rng.Uint64()
		for i := range 8 {
			p[i] = byte(v >> (8 * i))
		}
		p = p[8:]
	}
	for i := range p {
		p[i] = byte(rng.Uint32())
	}
}

func verify(t *testing.T, d disk.Disk, model []byte) {
	t.Helper()
	got := make([]byte, len(model))
	readFull(t, d, got, 0)
	if !bytes.Equal(got, model) {
		for i := range got {
			if got[i] != model[i] {
				t.Fatalf("content differs from model at byte %d: got %#x, want %#x", i, got[i], model[i])
			}
		}
	}
}

func testRandomWrites(t *testing.T, h Harness) {
	d := h.New(t, h.Size)
	defer closeDisk(t, d)
	rng := rand.New(rand.NewPCG(1, 2))
	model := make([]byte, h.Size)
	for range 200 {
		off, n := randomRange(rng, h.Size, h.Align, 200<<10)
		p := make([]byte, n)
		fill(rng, p)
		if rng.IntN(4) == 0 {
			clear(p[:n/2]) // zero runs inside data
		}
		writeFull(t, d, p, off)
		copy(model[off:], p)
		if rng.IntN(10) == 0 {
			off, n := randomRange(rng, h.Size, 1, 100<<10)
			got := make([]byte, n)
			readFull(t, d, got, off)
			if !bytes.Equal(got, model[off:off+n]) {
				t.Fatalf("read of %d bytes @%d differs from what was written", n, off)
			}
		}
	}
	if err := d.Flush(); err != nil {
		t.Fatalf("Flush: %v", err)
	}
	verify(t, d, model)
}

func testEOF(t *testing.T, h Harness) {
	d := h.New(t, h.Size)
	defer closeDisk(t, d)
	buf := make([]byte, 4096)
	n, err := d.ReadAt(buf, h.Size-1024)
	if n != 1024 || !errors.Is(err, io.EOF) {
		t.Errorf("ReadAt across the end = %d, %v; want 1024, io.EOF", n, err)
	}
	n, err = d.ReadAt(buf, h.Size)
	if n != 0 || !errors.Is(err, io.EOF) {
		t.Errorf("ReadAt at the end = %d, %v; want 0, io.EOF", n, err)
	}
	if _, err := d.ReadAt(buf, -512); err == nil {
		t.Errorf("ReadAt at a negative offset succeeded")
	}
}

func testOutOfRange(t *testing.T, h Harness) {
	d := h.New(t, h.Size)
	defer closeDisk(t, d)
	buf := bytes.Repeat([]byte{0xAA}, int(max(h.Align, 4096)))
	if n, err := d.WriteAt(buf, h.Size-h.Align); err == nil {
		t.Errorf("WriteAt across the end = %d, nil; want an error", n)
	}
	if _, err := d.WriteAt(buf, h.Size+4096); err == nil {
		t.Errorf("WriteAt past the end succeeded")
	}
	if _, err := d.WriteAt(buf, -4096); err == nil {
		t.Errorf("WriteAt at a negative offset succeeded")
	}
}

func testConcurrent(t *testing.T, h Harness) {
	d := h.New(t, h.Size)
	defer closeDisk(t, d)
	const workers = 8
	model := make([]byte, h.Size)
	stripe := h.Size / workers / h.Align * h.Align
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		base := int64(w) * stripe
		rng := rand.New(rand.NewPCG(uint64(w), 9))
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 20 {
				off, n := randomRange(rng, stripe, h.Align, 64<<10)
				p := make([]byte, n)
				fill(rng, p)
				if _, err := d.WriteAt(p, base+off); err != nil {
					errs <- err
					return
				}
				copy(model[base+off:], p)
				got := make([]byte, n)
				if _, err := d.ReadAt(got, base+off); err != nil && !errors.Is(err, io.EOF) {
					errs <- err
					return
				}
				if !bytes.Equal(got, p) {
					errs <- errors.New("concurrent read-back differs")
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	verify(t, d, model)
}

// CheckExtents verifies the Extenter contract on d over the whole disk:
// extents are ascending, contiguous and cover the disk exactly, and every
// range reported Zero reads as zeros. It returns the extents.
func CheckExtents(t *testing.T, d disk.Disk) []disk.Extent {
	t.Helper()
	var exts []disk.Extent
	pos := int64(0)
	err := disk.Extents(context.Background(), d, 0, d.Size(), func(e disk.Extent) error {
		if e.Off != pos || e.Len <= 0 {
			t.Fatalf("extent %+v does not start at %d or is empty", e, pos)
		}
		pos = e.End()
		exts = append(exts, e)
		return nil
	})
	if err != nil {
		t.Fatalf("Extents: %v", err)
	}
	if pos != d.Size() {
		t.Fatalf("extents end at %d, disk size %d", pos, d.Size())
	}
	buf := make([]byte, 1<<20)
	for _, e := range exts {
		if e.Flags&disk.Zero == 0 {
			continue
		}
		for off := e.Off; off < e.End(); {
			n := min(e.End()-off, int64(len(buf)))
			readFull(t, d, buf[:n], off)
			if !disk.IsZero(buf[:n]) {
				t.Fatalf("extent %+v is reported zero but reads non-zero bytes near %d", e, off)
			}
			off += n
		}
	}
	return exts
}

func testExtents(t *testing.T, h Harness) {
	d := h.New(t, h.Size)
	defer closeDisk(t, d)
	rng := rand.New(rand.NewPCG(3, 4))
	type rng2 struct{ off, n int64 }
	var written []rng2
	for range 12 {
		off, n := randomRange(rng, h.Size, h.Align, 100<<10)
		p := make([]byte, n)
		fill(rng, p)
		p[0] |= 1 // the first byte is non-zero
		writeFull(t, d, p, off)
		written = append(written, rng2{off, n})
	}
	exts := CheckExtents(t, d)
	// Every byte written non-zero must lie in an extent that is not Zero.
	for _, w := range written {
		for _, e := range exts {
			if e.Off <= w.off && w.off < e.End() && e.Flags&disk.Zero != 0 {
				t.Fatalf("written byte at %d lies in zero extent %+v", w.off, e)
			}
		}
	}
}

func testZeroTrim(t *testing.T, h Harness) {
	d := h.New(t, h.Size)
	defer closeDisk(t, d)
	rng := rand.New(rand.NewPCG(5, 6))
	model := make([]byte, h.Size)
	fill(rng, model)
	writeFull(t, d, model, 0)
	for i := range 20 {
		off, n := randomRange(rng, h.Size, h.Align, 512<<10)
		flags := disk.ZeroFlags(0)
		if i%2 == 1 {
			flags = disk.ZeroNoHole
		}
		if err := disk.WriteZeroes(d, off, n, flags); err != nil {
			t.Fatalf("WriteZeroes(%d, %d): %v", off, n, err)
		}
		clear(model[off : off+n])
	}
	verify(t, d, model)
	// After a trim a range reads either as before or as zeros.
	off, n := randomRange(rng, h.Size, h.Align, 1<<20)
	if err := disk.Trim(d, off, n); err != nil {
		t.Fatalf("Trim(%d, %d): %v", off, n, err)
	}
	got := make([]byte, n)
	readFull(t, d, got, off)
	for i := range got {
		if got[i] != 0 && got[i] != model[off+int64(i)] {
			t.Fatalf("after Trim byte %d reads %#x; want %#x or 0", off+int64(i), got[i], model[off+int64(i)])
		}
	}
	if err := disk.WriteZeroes(d, h.Size-h.Align, 2*h.Align, 0); err == nil {
		t.Errorf("WriteZeroes across the end succeeded")
	}
	CheckExtents(t, d)
}

func testCopy(t *testing.T, h Harness) {
	src := NewMemDisk(h.Size)
	rng := rand.New(rand.NewPCG(7, 8))
	for range 10 {
		off, n := randomRange(rng, h.Size, h.Align, 300<<10)
		p := make([]byte, n)
		fill(rng, p)
		if _, err := src.WriteAt(p, off); err != nil {
			t.Fatal(err)
		}
	}
	d := h.New(t, h.Size)
	defer closeDisk(t, d)
	if _, err := disk.Copy(context.Background(), d, src, &disk.CopyOptions{DstZeroed: true}); err != nil {
		t.Fatalf("Copy to disk: %v", err)
	}
	if off, err := disk.Compare(context.Background(), src, d, nil); err != nil || off != -1 {
		t.Fatalf("Compare after Copy = %d, %v; want -1, nil", off, err)
	}
	back := NewMemDisk(h.Size)
	if _, err := disk.Copy(context.Background(), back, d, nil); err != nil {
		t.Fatalf("Copy from disk: %v", err)
	}
	if off, err := disk.Compare(context.Background(), src, back, nil); err != nil || off != -1 {
		t.Fatalf("Compare after Copy back = %d, %v; want -1, nil", off, err)
	}
}

func testPersist(t *testing.T, h Harness) {
	d := h.New(t, h.Size)
	rng := rand.New(rand.NewPCG(10, 11))
	model := make([]byte, h.Size)
	for range 30 {
		off, n := randomRange(rng, h.Size, h.Align, 128<<10)
		p := make([]byte, n)
		fill(rng, p)
		writeFull(t, d, p, off)
		copy(model[off:], p)
	}
	if err := d.Flush(); err != nil {
		t.Fatalf("Flush: %v", err)
	}
	d = h.Reopen(t, d)
	defer closeDisk(t, d)
	if d.Size() != h.Size {
		t.Fatalf("reopened Size() = %d, want %d", d.Size(), h.Size)
	}
	verify(t, d, model)
}
