package server

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"net/url"
	"testing"

	"github.com/vdisk-project/vdisk/internal/datastore"
)

// TestRevertIncremental: a disk is backed up at two snapshots, reverted
// to the first, written and snapshotted again. An incremental from either
// change ID taken before the revert, applied to the backup made at it,
// must equal the disk after the revert: the areas the revert undid are
// changes too, and every area that differs must be reported.
func TestRevertIncremental(t *testing.T) {
	h := startHost(t, nil)
	const size = 8 << 20
	h.must("POST", "/api/v1/disks", map[string]any{"name": "r", "capacity": size, "cbt": true}, nil)

	model := make([]byte, size)
	rng := rand.New(rand.NewPCG(7, 7))
	// write makes n writes (some of them zeroings) through a fresh
	// read-write connection, and mirrors them in model.
	write := func(n int) {
		t.Helper()
		c := h.dial(h.ticket(TicketRequest{Disk: "r", Mode: "rw"}))
		for range n {
			off := rng.Int64N(size/4096-32) * 4096
			ln := (1 + rng.Int64N(32)) * 4096
			if rng.IntN(5) == 0 {
				if err := c.WriteZeroes(off, ln, 0); err != nil {
					t.Fatal(err)
				}
				clear(model[off : off+ln])
				continue
			}
			p := make([]byte, ln)
			for i := range p {
				p[i] = byte(rng.Uint32() | 1)
			}
			if _, err := c.WriteAt(p, off); err != nil {
				t.Fatal(err)
			}
			copy(model[off:], p)
		}
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
	}
	// snapshot takes a snapshot and returns its ID and change ID, after
	// checking that it reads back as model.
	snapshot := func(name string) (id, cid string) {
		t.Helper()
		var sn datastore.SnapshotInfo
		h.must("POST", "/api/v1/disks/r/snapshots", map[string]any{"name": name}, &sn)
		var in datastore.DiskInfo
		h.must("GET", "/api/v1/disks/r", nil, &in)
		for _, x := range in.Snapshots {
			if x.ID == sn.ID {
				cid = x.ChangeID
			}
		}
		if cid == "" {
			t.Fatalf("snapshot %s has no change ID", sn.ID)
		}
		if got := h.readSnapshot("r", sn.ID, size); !bytes.Equal(got, model) {
			t.Fatalf("snapshot %s differs from the disk at snapshot time", sn.ID)
		}
		return sn.ID, cid
	}
	// incremental applies the areas changed in snapshot since cid to a
	// copy of backup, reading them from the snapshot, and returns it with
	// the areas.
	incremental := func(backup []byte, snap, cid string) ([]byte, []datastore.Area) {
		t.Helper()
		out := bytes.Clone(backup)
		var areas []datastore.Area
		for start := int64(0); start < size; {
			var ci datastore.ChangeInfo
			h.must("GET", fmt.Sprintf("/api/v1/disks/r/changes?snapshot=%s&changeId=%s&start=%d", snap, url.QueryEscape(cid), start), nil, &ci)
			areas = append(areas, ci.Areas...)
			if ci.Length <= 0 {
				t.Fatalf("changes from %d: an empty answer", start)
			}
			start = ci.StartOffset + ci.Length
		}
		c := h.dial(h.ticket(TicketRequest{Disk: "r", Snapshot: snap}))
		defer c.Close()
		for _, a := range areas {
			if a.Zero {
				clear(out[a.Start : a.Start+a.Length])
				continue
			}
			if _, err := c.ReadAt(out[a.Start:a.Start+a.Length], a.Start); err != nil {
				t.Fatal(err)
			}
		}
		return out, areas
	}

	write(300)
	s1, c1 := snapshot("s1")
	full1 := bytes.Clone(model) // the full backup at s1
	write(300)
	s2, c2 := snapshot("s2")
	full2, _ := incremental(full1, s2, c1) // the incremental backup at s2
	if !bytes.Equal(full2, model) {
		t.Fatal("full + incremental differ from s2 (before any revert)")
	}

	var in datastore.DiskInfo
	h.must("POST", "/api/v1/disks/r/snapshots/"+s1+"/revert", nil, &in)
	copy(model, full1)
	if got := h.readLive("r", size); !bytes.Equal(got, model) {
		t.Fatal("after the revert the disk differs from s1")
	}
	write(100)
	s3, _ := snapshot("s3")

	for _, b := range []struct {
		name   string
		backup []byte
		cid    string
	}{{"from s1's change ID", full1, c1}, {"from s2's change ID", full2, c2}} {
		t.Run(b.name, func(t *testing.T) {
			got, areas := incremental(b.backup, s3, b.cid)
			// Every block where the backup differs from the disk after
			// the revert must lie in a reported area.
			for off := int64(0); off < size; off += 4096 {
				if bytes.Equal(b.backup[off:off+4096], model[off:off+4096]) {
					continue
				}
				reported := false
				for _, a := range areas {
					reported = reported || (a.Start <= off && off+4096 <= a.Start+a.Length)
				}
				if !reported {
					t.Errorf("block at %d differs from the backup but is not among the %d areas reported", off, len(areas))
					break
				}
			}
			if !bytes.Equal(got, model) {
				t.Error("backup + incremental differ from the disk after the revert")
			}
		})
	}
}

// readSnapshot reads a whole snapshot over NBD.
func (h *testHost) readSnapshot(name, snap string, size int64) []byte {
	h.t.Helper()
	c := h.dial(h.ticket(TicketRequest{Disk: name, Snapshot: snap}))
	defer c.Close()
	b := make([]byte, size)
	if _, err := c.ReadAt(b, 0); err != nil {
		h.t.Fatal(err)
	}
	return b
}

// readLive reads a whole disk over NBD.
func (h *testHost) readLive(name string, size int64) []byte {
	h.t.Helper()
	c := h.dial(h.ticket(TicketRequest{Disk: name}))
	defer c.Close()
	b := make([]byte, size)
	if _, err := c.ReadAt(b, 0); err != nil {
		h.t.Fatal(err)
	}
	return b
}
