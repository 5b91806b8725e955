package datastore

import (
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// The tests in this file keep many writes in flight on several handles (as
// NBD connections with pipelined requests do) while snapshots are taken,
// removed and reverted, and compare what the disk and each snapshot read
// against a log of every acknowledged write.

// The blocks under test are 4 KiB, one every MiB of a 1 GiB disk: they
// spread over 32 grain tables, so that a table one flush writes back is
// often not written again by the next.
const (
	pipeBlock  = 4096
	pipeStride = 1 << 20
	pipeBlocks = 1024
	pipeSize   = pipeBlocks * pipeStride
)

// readBlocks reads the blocks under test.
func readBlocks(t *testing.T, d interface {
	ReadAt([]byte, int64) (int, error)
}) []byte {
	t.Helper()
	b := make([]byte, pipeBlocks*pipeBlock)
	for i := range pipeBlocks {
		if _, err := d.ReadAt(b[i*pipeBlock:(i+1)*pipeBlock], int64(i)*pipeStride); err != nil {
			t.Fatalf("read block %d: %v", i, err)
		}
	}
	return b
}

// pipeLog records the writes to each block in order, with the clock ticks
// at which each was issued and acknowledged. A block has one writer, so its
// writes are ordered.
type pipeLog struct {
	clock  atomic.Int64
	blocks [pipeBlocks]blockWrites
}

type blockWrites struct {
	vals       []uint64
	start, end []int64
}

func (l *pipeLog) tick() int64 { return l.clock.Add(1) }

// fill makes the block content for value v.
func fill(p []byte, v uint64) {
	for i := 0; i < len(p); i += 8 {
		binary.LittleEndian.PutUint64(p[i:], v)
	}
}

// valueOf returns the value a block holds, or an error if it is torn.
func valueOf(p []byte) (uint64, error) {
	v := binary.LittleEndian.Uint64(p)
	for i := 8; i < len(p); i += 8 {
		if w := binary.LittleEndian.Uint64(p[i:]); w != v {
			return 0, fmt.Errorf("torn block: word 0 is %#x, word %d is %#x", v, i/8, w)
		}
	}
	return v, nil
}

// pipeWriters runs conns handles × perConn goroutines, each writing its own
// blocks n times (with FUA, a flush after each write, when fua is set).
func pipeWriters(t *testing.T, d *Disk, l *pipeLog, conns, perConn, n int, fua bool, seed uint64) {
	t.Helper()
	var wg sync.WaitGroup
	writers := conns * perConn
	for c := range conns {
		h, err := d.OpenLive(false)
		if err != nil {
			t.Fatal(err)
		}
		defer h.Close()
		for g := range perConn {
			w := c*perConn + g
			wg.Go(func() {
				rng := rand.New(rand.NewPCG(seed, uint64(w)))
				p := make([]byte, pipeBlock)
				owned := len(l.blocks) / writers
				for i := range n {
					b := w + writers*rng.IntN(owned)
					v := uint64(w+1)<<32 | uint64(i+1)
					fill(p, v)
					bw := &l.blocks[b]
					start := l.tick()
					_, err := h.WriteAt(p, int64(b)*pipeStride)
					if err == nil && (fua || rng.IntN(8) == 0) {
						err = h.Flush()
					}
					end := l.tick()
					if err != nil {
						t.Errorf("writer %d: write block %d: %v", w, b, err)
						return
					}
					bw.vals = append(bw.vals, v)
					bw.start = append(bw.start, start)
					bw.end = append(bw.end, end)
				}
			})
		}
	}
	wg.Wait()
}

// checkLive verifies that every block holds its last acknowledged write.
func checkLive(t *testing.T, got []byte, l *pipeLog) {
	t.Helper()
	bad := 0
	for b := range l.blocks {
		v, err := valueOf(got[b*pipeBlock : (b+1)*pipeBlock])
		bw := &l.blocks[b]
		var want uint64
		if len(bw.vals) > 0 {
			want = bw.vals[len(bw.vals)-1]
		}
		if err != nil || v != want {
			if bad++; bad <= 5 {
				t.Errorf("live block %d: got %#x (%v), want %#x (%d writes)", b, v, err, want, len(bw.vals))
			}
		}
	}
	if bad > 0 {
		t.Errorf("%d of %d blocks lost their last acknowledged write", bad, len(l.blocks))
	}
}

// checkSnapshot verifies that a snapshot taken between ticks from and to
// holds, in every block, the last write acknowledged before from or a
// write issued before to.
func checkSnapshot(t *testing.T, name string, got []byte, l *pipeLog, from, to int64) {
	t.Helper()
	bad := 0
	for b := range l.blocks {
		v, err := valueOf(got[b*pipeBlock : (b+1)*pipeBlock])
		bw := &l.blocks[b]
		lo, hi := -1, -1 // index range of acceptable writes; -1: zeros
		for j := range bw.vals {
			if bw.end[j] < from {
				lo = j
			}
			if bw.start[j] < to {
				hi = j
			}
		}
		ok := err == nil
		if ok {
			ok = false
			if lo < 0 && v == 0 {
				ok = true
			}
			for j := max(lo, 0); j <= hi && !ok; j++ {
				ok = bw.vals[j] == v
			}
		}
		if !ok {
			if bad++; bad <= 5 {
				t.Errorf("%s block %d: got %#x (%v); acceptable writes %d..%d of %d", name, b, v, err, lo, hi, len(bw.vals))
			}
		}
	}
	if bad > 0 {
		t.Errorf("%s: %d of %d blocks are not what the snapshot's instant allows", name, bad, len(l.blocks))
	}
}

// pipeRounds is n, or ten times n with VDISK_TEST_LONG.
func pipeRounds(n int) int {
	if os.Getenv("VDISK_TEST_LONG") != "" {
		return 10 * n
	}
	return n
}

type takenSnap struct {
	id       string
	from, to int64
	data     []byte
}

// snapshotStorm takes snapshots one after another while writers run,
// reading each at once; every other one is removed again right away, so
// consolidations run under the writes too.
func snapshotStorm(t *testing.T, d *Disk, l *pipeLog, done <-chan struct{}) []takenSnap {
	ctx := context.Background()
	var kept []takenSnap
	for i := 0; ; i++ {
		select {
		case <-done:
			return kept
		default:
		}
		from := l.tick()
		info, err := d.Snapshot(ctx, SnapshotSpec{Name: fmt.Sprint("storm", i)})
		to := l.tick()
		if err != nil {
			t.Errorf("snapshot %d: %v", i, err)
			return kept
		}
		if i%2 == 1 {
			if err := d.RemoveSnapshot(ctx, info.ID); err != nil {
				t.Errorf("remove %s: %v", info.ID, err)
				return kept
			}
			continue
		}
		if len(kept) < 6 {
			h, err := d.OpenSnapshot(ctx, info.ID)
			if err != nil {
				t.Fatal(err)
			}
			kept = append(kept, takenSnap{id: info.ID, from: from, to: to, data: readBlocks(t, h)})
			h.Close()
		} else if err := d.RemoveSnapshot(ctx, info.ID); err != nil {
			t.Errorf("remove %s: %v", info.ID, err)
			return kept
		}
	}
}

// TestPipelinedWritesAcrossSnapshots is the lost-write report: 16 FUA
// writes in flight on each of three handles while snapshots are created
// and removed. Every acknowledged write must be in the live disk, and in
// each snapshot exactly when it was acknowledged before the snapshot began.
func TestPipelinedWritesAcrossSnapshots(t *testing.T) {
	for _, fua := range []bool{true, false} {
		t.Run(fmt.Sprintf("fua=%v", fua), func(t *testing.T) {
			ctx := context.Background()
			s := openStore(t, t.TempDir())
			defer func() { s.Close() }()
			info, err := s.CreateDisk(ctx, DiskSpec{Name: "pipe", Capacity: pipeSize, CBT: true})
			if err != nil {
				t.Fatal(err)
			}
			d, _ := s.Disk(info.Name)
			l := &pipeLog{}
			done := make(chan struct{})
			var kept []takenSnap
			var wg sync.WaitGroup
			wg.Go(func() { kept = snapshotStorm(t, d, l, done) })
			pipeWriters(t, d, l, 3, 16, pipeRounds(80), fua, 1)
			close(done)
			wg.Wait()
			h, err := d.OpenLive(true)
			if err != nil {
				t.Fatal(err)
			}
			checkLive(t, readBlocks(t, h), l)
			h.Close()
			for _, k := range kept {
				checkSnapshot(t, k.id, k.data, l, k.from, k.to)
				// And read again now, after the later consolidations.
				sh, err := d.OpenSnapshot(ctx, k.id)
				if err != nil {
					t.Fatal(err)
				}
				checkSnapshot(t, k.id+" (reread)", readBlocks(t, sh), l, k.from, k.to)
				sh.Close()
			}
			// Remove the rest while a second round of writers runs.
			done = make(chan struct{})
			wg.Go(func() {
				defer close(done)
				for _, k := range kept {
					if err := d.RemoveSnapshot(ctx, k.id); err != nil {
						t.Errorf("remove %s: %v", k.id, err)
					}
				}
			})
			pipeWriters(t, d, l, 2, 16, pipeRounds(30), fua, 2)
			<-done
			wg.Wait()
			// Reopen the store: what was acknowledged is on disk.
			s.Close()
			s = openStore(t, s.Root())
			d, _ = s.Disk(info.Name)
			h, err = d.OpenLive(true)
			if err != nil {
				t.Fatal(err)
			}
			checkLive(t, readBlocks(t, h), l)
			h.Close()
			if n := len(d.Snapshots()); n != 0 {
				t.Errorf("%d snapshots left, want 0", n)
			}
		})
	}
}

// TestPipelinedRevert: writers keep 48 writes in flight while the disk is
// reverted to a snapshot taken under the same load. Afterwards a block
// whose last write began after the revert returned holds that write; any
// other block holds what the snapshot held or a write that was still in
// flight when the revert began.
func TestPipelinedRevert(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, t.TempDir())
	defer func() { s.Close() }()
	info, err := s.CreateDisk(ctx, DiskSpec{Name: "rev", Capacity: pipeSize, CBT: true})
	if err != nil {
		t.Fatal(err)
	}
	d, _ := s.Disk(info.Name)
	l := &pipeLog{}
	var snapData []byte
	var revFrom, revTo int64
	var wg sync.WaitGroup
	// Let the writers get going (their writes tick the clock) before each
	// step.
	after := func(ticks int64) {
		for n := l.clock.Load() + ticks; l.clock.Load() < n; {
			time.Sleep(time.Millisecond)
		}
	}
	wg.Go(func() {
		after(400)
		sn, err := d.Snapshot(ctx, SnapshotSpec{Name: "base"})
		if err != nil {
			t.Error(err)
			return
		}
		h, _ := d.OpenSnapshot(ctx, sn.ID)
		snapData = readBlocks(t, h)
		h.Close()
		after(400)
		revFrom = l.tick()
		if err := d.Revert(ctx, sn.ID); err != nil {
			t.Error(err)
		}
		revTo = l.tick()
	})
	pipeWriters(t, d, l, 3, 16, pipeRounds(60), true, 7)
	wg.Wait()
	if revTo == 0 {
		t.Fatal("the revert did not run while the writers did")
	}
	h, _ := d.OpenLive(true)
	got := readBlocks(t, h)
	h.Close()
	bad := 0
	for b := range l.blocks {
		v, err := valueOf(got[b*pipeBlock : (b+1)*pipeBlock])
		ws := &l.blocks[b]
		n := len(ws.vals)
		ok := err == nil
		switch {
		case !ok:
		case n > 0 && ws.start[n-1] > revTo:
			ok = v == ws.vals[n-1]
		default:
			sv, _ := valueOf(snapData[b*pipeBlock : (b+1)*pipeBlock])
			ok = v == sv
			for j := range n {
				ok = ok || (ws.end[j] > revFrom && ws.vals[j] == v)
			}
		}
		if !ok {
			if bad++; bad <= 5 {
				t.Errorf("block %d holds %#x: neither its last write after the revert, the snapshot's, nor one in flight across it", b, v)
			}
		}
	}
	if bad > 0 {
		t.Errorf("%d of %d blocks wrong after a revert under load", bad, len(l.blocks))
	}
}
