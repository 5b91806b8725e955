package vmdk

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/vdisk-project/vdisk/disk"
	"github.com/vdisk-project/vdisk/disk/disktest"
	"github.com/vdisk-project/vdisk/internal/testenv"
)

// TestCrashSafety writes at random with occasional flushes on a
// crash-simulating filesystem, cuts the power after a random number of
// file operations (inside flushes too), repairs the image with Check and
// verifies that every byte that was flushed and not written since reads
// back intact.
func TestCrashSafety(t *testing.T) {
	points := 30
	if testenv.Required("long") || isLong() {
		points = 2000
	}
	for _, sf := range []Subformat{MonolithicSparse, TwoGbMaxExtentSparse, MonolithicFlat, SESparse} {
		for _, child := range []bool{false, true} {
			if child && sf != MonolithicSparse && sf != SESparse {
				continue
			}
			t.Run(fmt.Sprintf("%s/child=%v", sf, child), func(t *testing.T) {
				t.Parallel()
				for seed := range uint64(points) {
					crashOnce(t, sf, child, seed)
				}
			})
		}
	}
}

// basePattern is the content of the parent in the child variants.
var basePattern = func() []byte {
	p := make([]byte, 3<<20)
	for i := range p {
		p[i] = byte(i*7 + 1)
	}
	return p
}()

func crashOnce(t *testing.T, sf Subformat, child bool, seed uint64) {
	const size = 3 << 20
	rng := rand.New(rand.NewPCG(seed, 99))
	var key [32]byte
	key[0] = byte(seed)
	data := rand.NewChaCha8(key)
	fsys := disktest.NewCrashFS()
	o := &CreateOptions{Subformat: sf, FS: fsys, SplitSize: 1 << 20}
	path := "/img/d.vmdk"
	flushed := make([]byte, size)
	if child {
		base, err := Create(ctx, "/img/base.vmdk", size, &CreateOptions{FS: fsys})
		if err != nil {
			t.Fatal(err)
		}
		p := basePattern
		if _, err := base.WriteAt(p, 0); err != nil {
			t.Fatal(err)
		}
		if err := base.Close(); err != nil {
			t.Fatal(err)
		}
		copy(flushed, p)
		o = &CreateOptions{Parent: "/img/base.vmdk", FS: fsys}
		if sf == SESparse {
			o.Subformat = SESparse
		}
	}
	d, err := Create(ctx, path, size, o)
	if err != nil {
		t.Fatal(err)
	}
	current := append([]byte(nil), flushed...)
	dirty := make([]bool, size/disk.SectorSize)
	unknown := make([]bool, size/disk.SectorSize) // trimmed: as before or zeros
	fsys.CrashAfter(1+rng.IntN(400), rand.New(rand.NewPCG(seed, 7)))
	for range 60 {
		if fsys.Crashed() != nil {
			break
		}
		switch op := rng.IntN(10); {
		case op >= 8 && sf == SESparse:
			// Zero or trim whole grains (and, for zero, a partial one).
			off := rng.Int64N(size/4096) * 4096
			n := min((rng.Int64N(64)+1)*4096, size-off)
			if op == 8 {
				n = min(n+rng.Int64N(4096), size-off)
				if err := d.WriteZeroes(off, n, 0); err != nil {
					t.Fatal(err)
				}
				clear(current[off : off+n])
			} else if err := d.Trim(off, n); err != nil {
				t.Fatal(err)
			}
			for s := off / disk.SectorSize; s <= (off+n-1)/disk.SectorSize; s++ {
				dirty[s] = true
				if op == 9 {
					unknown[s] = true
				} else if s*disk.SectorSize >= off && (s+1)*disk.SectorSize <= off+n {
					unknown[s] = false
				}
			}
		case op == 0:
			if err := d.Flush(); err != nil {
				t.Fatal(err)
			}
			if fsys.Crashed() == nil { // a crash inside this flush leaves it unfinished
				for s, d := range dirty {
					if d {
						a := s * disk.SectorSize
						copy(flushed[a:a+disk.SectorSize], current[a:])
						dirty[s] = false
					}
				}
			}
		default:
			off := rng.Int64N(size)
			n := min(rng.Int64N(100<<10)+1, size-off)
			p := make([]byte, n)
			data.Read(p)
			if _, err := d.WriteAt(p, off); err != nil {
				t.Fatal(err)
			}
			copy(current[off:], p)
			for s := off / disk.SectorSize; s <= (off+n-1)/disk.SectorSize; s++ {
				dirty[s] = true
				// The rest of a partly written trimmed sector is still
				// as before or zeros.
				if s*disk.SectorSize >= off && (s+1)*disk.SectorSize <= off+n {
					unknown[s] = false
				}
			}
		}
	}
	after := fsys.Crashed()
	if after == nil {
		after = fsys.Crash(rand.New(rand.NewPCG(seed, 8)))
	}
	d.Close()
	r, err := Check(ctx, path, &CheckOptions{Repair: RepairAll, FS: after})
	if err != nil {
		t.Fatalf("seed %d: Check: %v", seed, err)
	}
	if !r.Clean() {
		t.Fatalf("seed %d: image not consistent after repair: %+v", seed, r.Problems)
	}
	r, err = Check(ctx, path, &CheckOptions{FS: after})
	if err != nil || r.Errors != 0 {
		t.Fatalf("seed %d: second check = %+v, %v", seed, r, err)
	}
	d2, err := Open(ctx, path, &OpenOptions{ReadOnly: true, FS: after})
	if err != nil {
		t.Fatalf("seed %d: reopen after crash: %v", seed, err)
	}
	defer d2.Close()
	got := make([]byte, size)
	if _, err := d2.ReadAt(got, 0); err != nil {
		t.Fatalf("seed %d: read after crash: %v", seed, err)
	}
	for s := range dirty {
		if dirty[s] || unknown[s] {
			continue
		}
		a, b := s*disk.SectorSize, (s+1)*disk.SectorSize
		if string(got[a:b]) != string(flushed[a:b]) {
			t.Fatalf("seed %d: flushed sector %d lost after crash", seed, s)
		}
	}
}
