package vdisk_test

import (
	"bytes"
	"context"
	"testing"

	"github.com/vdisk-project/vdisk"
)

// TestZeroesOverSnapshot zeroes a range of a host disk whose snapshot
// holds data there, over NBD: the live disk reads zeros, the snapshot
// keeps its data (libvixDiskLib turns writes of zeros into such requests).
func TestZeroesOverSnapshot(t *testing.T) {
	ctx := context.Background()
	h := startHost(t, nil)
	for _, mode := range []string{vdisk.ModeNBDSSL, vdisk.ModeNBD} {
		t.Run(mode, func(t *testing.T) {
			c := h.connect(t, mode)
			spec := vdisk.Spec{Disk: "zs-" + mode}
			if err := c.Create(ctx, spec, vdisk.CreateParams{Capacity: 8 << 20}); err != nil {
				t.Fatal(err)
			}
			d, err := c.Open(ctx, spec, 0)
			if err != nil {
				t.Fatal(err)
			}
			data := bytes.Repeat([]byte{0x3c}, 1<<20)
			if _, err := d.WriteAt(data, 1<<20); err != nil {
				t.Fatal(err)
			}
			d.Close()
			sn, err := c.CreateSnapshot(ctx, spec, "s", false)
			if err != nil {
				t.Fatal(err)
			}
			d, err = c.Open(ctx, spec, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			// Whole grains, part of a grain, and across the data's end.
			for _, r := range [][2]int64{{1 << 20, 128 << 10}, {1<<20 + 200<<10, 5000}, {2<<20 - 4096, 64 << 10}} {
				if err := d.WriteZeroes(r[0], r[1], 0); err != nil {
					t.Fatal(err)
				}
			}
			if err := d.Flush(); err != nil {
				t.Fatal(err)
			}
			want := make([]byte, 8<<20)
			copy(want[1<<20:], data)
			for _, r := range [][2]int64{{1 << 20, 128 << 10}, {1<<20 + 200<<10, 5000}, {2<<20 - 4096, 64 << 10}} {
				clear(want[r[0] : r[0]+r[1]])
			}
			got := make([]byte, len(want))
			if _, err := d.ReadAt(got, 0); err != nil || !bytes.Equal(got, want) {
				t.Fatalf("the live disk after zeroing differs (err %v)", err)
			}
			s, err := c.Open(ctx, vdisk.Spec{Disk: spec.Disk, Snapshot: sn.ID}, vdisk.OpenReadOnly)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			snapWant := make([]byte, 8<<20)
			copy(snapWant[1<<20:], data)
			snapGot := make([]byte, len(snapWant))
			if _, err := s.ReadAt(snapGot, 0); err != nil || !bytes.Equal(snapGot, snapWant) {
				t.Fatalf("the snapshot changed (err %v)", err)
			}
		})
	}
}
