package datastore

import (
	"context"
	"math/rand/v2"
	"testing"
	"time"
)

// BenchmarkChanges2TiB: QueryChangedDiskAreas on a 2 TiB disk where 1% of
// the 64 KiB blocks, scattered at random, changed between two snapshots.
// Most changes are zeroings (so the files stay small: grain tables with
// zeroed-grain entries, the allocation the query must read all the same);
// 4,096 blocks hold real data. The target is under 100 ms.
func BenchmarkChanges2TiB(b *testing.B) {
	ctx := context.Background()
	s, err := Open(ctx, b.TempDir(), nil)
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	const size = 2<<40 - 64<<10 // monolithicSparse (and so a snapshot delta) stays below 2 TiB
	const block = 64 << 10
	if _, err := s.CreateDisk(ctx, DiskSpec{Name: "big", Capacity: size, CBT: true}); err != nil {
		b.Fatal(err)
	}
	d, _ := s.Disk("big")
	s1, err := d.Snapshot(ctx, SnapshotSpec{})
	if err != nil {
		b.Fatal(err)
	}
	h, _ := d.OpenLive(false)
	rng := rand.New(rand.NewPCG(1, 2))
	n := size / block / 100
	data := make([]byte, block)
	for i := range data {
		data[i] = byte(i*7 + 1)
	}
	t := time.Now()
	for i := range n {
		off := rng.Int64N(size/block) * block
		if i%(int(n)/4096) == 0 {
			_, err = h.WriteAt(data, off)
		} else {
			err = h.WriteZeroes(off, block, 0)
		}
		if err != nil {
			b.Fatal(err)
		}
	}
	if err := h.Flush(); err != nil {
		b.Fatal(err)
	}
	h.Close()
	s2, err := d.Snapshot(ctx, SnapshotSpec{})
	if err != nil {
		b.Fatal(err)
	}
	b.Logf("setup: %d blocks changed in %v", n, time.Since(t).Round(time.Millisecond))
	b.ResetTimer()
	var areas, data2 int
	for b.Loop() {
		ci, err := d.Changes(ctx, s2.ID, s1.ChangeID, 0, 0)
		if err != nil {
			b.Fatal(err)
		}
		areas, data2 = len(ci.Areas), 0
		for _, a := range ci.Areas {
			if !a.Zero {
				data2++
			}
		}
	}
	b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/query")
	b.ReportMetric(float64(areas), "areas")
	b.ReportMetric(float64(data2), "data-areas")
}

// BenchmarkIncrementalOverread measures how many bytes an incremental
// reads (the data areas of a changed-area answer) against the bytes the
// workload actually changed (the union of its written ranges), for
// several workloads and tracking granularities. 1.00 is exact.
func BenchmarkIncrementalOverread(b *testing.B) {
	cases := []struct {
		name       string
		cbtBlock   int64
		minW, maxW int64 // write sizes, multiples of align
		align      int64
		trimEvery  int // every Nth operation trims a 1 MiB range
	}{
		{"64K-aligned-64K-1M/cbt64K", 64 << 10, 64 << 10, 1 << 20, 64 << 10, 0},
		{"64K-aligned-64K-1M+trims/cbt64K", 64 << 10, 64 << 10, 1 << 20, 64 << 10, 10},
		{"4K-random/cbt64K", 64 << 10, 4 << 10, 4 << 10, 4 << 10, 0},
		{"4K-random/default(4K)", 0, 4 << 10, 4 << 10, 4 << 10, 0},
		{"4K-64K-random+trims/cbt4K", 4 << 10, 4 << 10, 64 << 10, 4 << 10, 10},
	}
	for _, tc := range cases {
		b.Run(tc.name, func(b *testing.B) {
			ctx := context.Background()
			s, err := Open(ctx, b.TempDir(), nil)
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			const size = 1 << 30
			s.CreateDisk(ctx, DiskSpec{Name: "d", Capacity: size, CBT: true, CBTBlockSize: tc.cbtBlock})
			d, _ := s.Disk("d")
			h, _ := d.OpenLive(false)
			defer h.Close()
			rng := rand.New(rand.NewPCG(3, 4))
			buf := make([]byte, tc.maxW)
			for i := range buf {
				buf[i] = byte(i | 1)
			}
			var ratio float64
			for b.Loop() {
				s1, _ := d.Snapshot(ctx, SnapshotSpec{})
				changed := make([]bool, size/4096) // 4 KiB cells
				var written int64
				for i := range 2000 {
					off := rng.Int64N(size/tc.align) * tc.align
					if tc.trimEvery > 0 && i%tc.trimEvery == 0 {
						off = off &^ (1<<20 - 1)
						h.WriteZeroes(off, 1<<20, 0)
						for c := off / 4096; c < (off+1<<20)/4096; c++ {
							changed[c] = false // trimmed: nothing to read
						}
						continue
					}
					n := tc.minW + rng.Int64N((tc.maxW-tc.minW)/tc.align+1)*tc.align
					n = min(n, size-off)
					h.WriteAt(buf[:n], off)
					for c := off / 4096; c < (off+n)/4096; c++ {
						changed[c] = true
					}
				}
				for _, c := range changed {
					if c {
						written += 4096
					}
				}
				s2, _ := d.Snapshot(ctx, SnapshotSpec{})
				ci, err := d.Changes(ctx, s2.ID, s1.ChangeID, 0, 0)
				if err != nil {
					b.Fatal(err)
				}
				var read int64
				for _, a := range ci.Areas {
					if !a.Zero {
						read += a.Length
					}
				}
				ratio = float64(read) / float64(written)
				d.RemoveSnapshot(ctx, s1.ID)
				d.RemoveSnapshot(ctx, s2.ID)
			}
			b.ReportMetric(ratio, "read/changed")
		})
	}
}

// BenchmarkChangesBySize: a changed-area query and an allocated-block
// query where 1% of 4 GiB (40 MiB in 64 KiB blocks, scattered over the
// whole disk) changed between two snapshots, on a 4 GiB disk and on a
// 62 TiB one (seSparse base and deltas). The cost should follow the
// changes, not the capacity. "allocated" runs from the second query on
// with the snapshot's chain open (the store keeps it between queries);
// "allocated-first" is every time the first query after a snapshot,
// which opens the chain and reads its grain tables.
func BenchmarkChangesBySize(b *testing.B) {
	for _, c := range []struct {
		name string
		size int64
	}{{"4GiB", 4 << 30}, {"62TiB", MaxCapacity}} {
		b.Run(c.name, func(b *testing.B) {
			ctx := context.Background()
			s, err := Open(ctx, b.TempDir(), nil)
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			if _, err := s.CreateDisk(ctx, DiskSpec{Name: "d", Capacity: c.size, CBT: true, CBTBlockSize: 64 << 10}); err != nil {
				b.Fatal(err)
			}
			d, _ := s.Disk("d")
			s1, err := d.Snapshot(ctx, SnapshotSpec{})
			if err != nil {
				b.Fatal(err)
			}
			h, _ := d.OpenLive(false)
			rng := rand.New(rand.NewPCG(1, 2))
			const block = 64 << 10
			data := make([]byte, block)
			for i := range data {
				data[i] = byte(i*7 + 1)
			}
			for range (4 << 30) / 100 / block {
				if _, err := h.WriteAt(data, rng.Int64N(c.size/block)*block); err != nil {
					b.Fatal(err)
				}
			}
			h.Close()
			s2, err := d.Snapshot(ctx, SnapshotSpec{})
			if err != nil {
				b.Fatal(err)
			}
			b.Run("changed", func(b *testing.B) {
				for b.Loop() {
					if _, err := d.Changes(ctx, s2.ID, s1.ChangeID, 0, 0); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N)/1000, "ms/query")
			})
			b.Run("allocated", func(b *testing.B) {
				misses := s.views.misses
				for b.Loop() {
					if _, err := d.Allocated(ctx, s2.ID, 0, c.size, 1<<20); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N)/1000, "ms/query")
				b.ReportMetric(float64(s.views.misses-misses), "chain-opens")
			})
			b.Run("allocated-first", func(b *testing.B) {
				for b.Loop() {
					d.mu.Lock()
					d.pruneViews(true)
					d.mu.Unlock()
					if _, err := d.Allocated(ctx, s2.ID, 0, c.size, 1<<20); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N)/1000, "ms/query")
			})
		})
	}
}
