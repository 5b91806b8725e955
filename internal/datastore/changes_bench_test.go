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
