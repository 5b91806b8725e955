package cbt

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/vdisk-project/vdisk/disk"
	"github.com/vdisk-project/vdisk/disk/disktest"
)

var ctx = context.Background()

func TestID(t *testing.T) {
	id := ID{UUID: [16]byte{0x52, 0x90, 0x37, 0xee, 0x50, 0xdc, 0xcb, 0x6b, 0xb3, 0x12, 0x7c, 0x48, 0x06, 0x19, 0x7f, 0xd4}, Seq: 81}
	s := id.String()
	if s != "52 90 37 ee 50 dc cb 6b-b3 12 7c 48 06 19 7f d4/81" {
		t.Errorf("String() = %q", s)
	}
	back, err := ParseID(s)
	if err != nil || back != id {
		t.Errorf("ParseID(%q) = %v, %v", s, back, err)
	}
	for _, bad := range []string{"", "*", "abc/1", "52 90/1", "52 90 37 ee 50 dc cb 6b-b3 12 7c 48 06 19 7f d4/x"} {
		if _, err := ParseID(bad); !errors.Is(err, disk.ErrInvalid) {
			t.Errorf("ParseID(%q) = %v, want ErrInvalid", bad, err)
		}
	}
}

// blocksOf collects Changed's answer as a set of blocks.
func blocksOf(t *testing.T, tr *Tracker, since, until string) map[int64]bool {
	t.Helper()
	got := map[int64]bool{}
	err := tr.Changed(ctx, since, until, 0, tr.size, func(e disk.Extent) error {
		for o := e.Off; o < e.End(); o += tr.block {
			got[o/tr.block] = true
		}
		return nil
	})
	if err != nil {
		t.Fatalf("Changed(%s, %s): %v", since, until, err)
	}
	return got
}

// TestGroundTruth writes at random, takes snapshots, and compares every
// answer with a model of exactly which blocks changed between each pair of
// change IDs.
func TestGroundTruth(t *testing.T) {
	const size = 3<<30 + 12345 // not a multiple of the block size
	fsys := disktest.NewCrashFS()
	tr, err := Create(fsys, "/d.ctk", size, 0)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	ids := []string{tr.ChangeID()}
	var writes [][2]int64 // per epoch, the ranges written
	var perEpoch [][][2]int64
	for ep := range 12 {
		writes = nil
		for range 50 {
			off := rng.Int64N(size)
			n := min(rng.Int64N(300<<10)+1, size-off)
			tr.MarkWritten(off, n)
			writes = append(writes, [2]int64{off, n})
		}
		perEpoch = append(perEpoch, writes)
		ids = append(ids, tr.Snapshot())
		if ep%3 == 0 {
			if err := tr.Flush(); err != nil {
				t.Fatal(err)
			}
		}
	}
	for i := range ids {
		for j := i + 1; j < len(ids); j++ {
			want := map[int64]bool{}
			for _, w := range perEpoch[i:j] {
				for _, r := range w {
					for b := r[0] / tr.block; b <= (r[0]+r[1]-1)/tr.block; b++ {
						want[b] = true
					}
				}
			}
			got := blocksOf(t, tr, ids[i], ids[j])
			if len(got) != len(want) {
				t.Fatalf("Changed(%d, %d): %d blocks, want %d", i, j, len(got), len(want))
			}
			for b := range want {
				if !got[b] {
					t.Fatalf("Changed(%d, %d) misses block %d", i, j, b)
				}
			}
		}
	}
	if err := tr.Close(); err != nil {
		t.Fatal(err)
	}
	// A clean reopen keeps every ID and answer.
	tr2, rotated, err := Open(fsys, "/d.ctk")
	if err != nil || rotated {
		t.Fatalf("reopen = %v, rotated %v", err, rotated)
	}
	if len(blocksOf(t, tr2, ids[0], ids[len(ids)-1])) == 0 {
		t.Error("reopened tracker forgot its changes")
	}
}

// TestCheckpointRace: a write recorded after a checkpoint took its state,
// into a region the intent map already named, keeps that region named when
// the checkpoint clears the map; a crash then still reports it.
func TestCheckpointRace(t *testing.T) {
	fsys := disktest.NewCrashFS()
	tr, err := Create(fsys, "/d.ctk", 1<<30, 4096)
	if err != nil {
		t.Fatal(err)
	}
	base := tr.Snapshot()
	tr.Flush()
	tr.MarkWritten(1<<20, 4096) // names region 0
	tr.afterSave = func() {
		tr.afterSave = nil
		tr.MarkWritten(2<<20, 4096) // region 0 again: no sync needed
	}
	if err := tr.Flush(); err != nil {
		t.Fatal(err)
	}
	tr2, rotated, err := Open(fsys.Crash(rand.New(rand.NewPCG(1, 2))), "/d.ctk")
	if err != nil || rotated {
		t.Fatalf("open after a crash: %v, rotated %v", err, rotated)
	}
	if got := blocksOf(t, tr2, base, ""); !got[2<<20/4096] {
		t.Errorf("the write recorded during the checkpoint is lost (%d blocks reported)", len(got))
	}
}

// TestCrashConcurrent crashes while writers and checkpoints run at once:
// a region cleared by a checkpoint while a write into it was recorded after
// the checkpoint began would lose that write.
func TestCrashConcurrent(t *testing.T) {
	const size = 1 << 35 // 2,048 regions of 16 MiB
	for seed := range uint64(20) {
		fsys := disktest.NewCrashFS()
		tr, err := Create(fsys, "/d.ctk", size, 4096)
		if err != nil {
			t.Fatal(err)
		}
		base := tr.Snapshot()
		if err := tr.Flush(); err != nil {
			t.Fatal(err)
		}
		rng := rand.New(rand.NewPCG(seed, 5))
		fsys.CrashAfter(20+rng.IntN(200), rng)
		var mu sync.Mutex
		var done []int64
		var wg sync.WaitGroup
		for w := range 8 {
			wg.Go(func() {
				r := rand.New(rand.NewPCG(seed, uint64(w)))
				for fsys.Crashed() == nil {
					off := r.Int64N(2048) << 24
					if err := tr.MarkWritten(off, 4096); err != nil {
						t.Error(err)
						return
					}
					if fsys.Crashed() == nil {
						mu.Lock()
						done = append(done, off)
						mu.Unlock()
					}
				}
			})
		}
		wg.Go(func() {
			for fsys.Crashed() == nil {
				if err := tr.Flush(); err != nil {
					t.Error(err)
					return
				}
			}
		})
		wg.Wait()
		tr2, rotated, err := Open(fsys.Crashed(), "/d.ctk")
		if err != nil || rotated {
			t.Fatalf("seed %d: open after a crash: %v, rotated %v", seed, err, rotated)
		}
		got := blocksOf(t, tr2, base, "")
		for _, off := range done {
			if !got[off/4096] {
				t.Fatalf("seed %d: a write at %d that returned before the crash is not reported (%d writes, %d blocks reported)", seed, off, len(done), len(got))
			}
		}
		tr2.Close()
	}
}

// TestCrash crashes the tracker's filesystem at a random operation while
// writes, snapshots and checkpoints go on, and checks that the reopened
// tracker keeps its history and never under-reports: every write that
// returned before the crash is reported by every change ID handed out
// before it.
func TestCrash(t *testing.T) {
	const size = 1 << 32
	seeds := uint64(60)
	if os.Getenv("VDISK_TEST_LONG") != "" {
		seeds = 2000
	}
	recoveredAny := false
	for seed := range seeds {
		fsys := disktest.NewCrashFS()
		tr, err := Create(fsys, "/d.ctk", size, 4096)
		if err != nil {
			t.Fatal(err)
		}
		rng := rand.New(rand.NewPCG(seed, 3))
		fsys.CrashAfter(1+rng.IntN(60), rng)
		type write struct {
			epoch int
			off   int64
		}
		var done []write // writes that returned before the crash
		var ids []string // change IDs handed out before the crash
		for ep := 0; fsys.Crashed() == nil && ep < 40; ep++ {
			for range 1 + rng.IntN(20) {
				off := rng.Int64N(size/4096) * 4096
				if rng.IntN(3) == 0 {
					off = rng.Int64N(64) * 4096 // a hot region
				}
				if err := tr.MarkWritten(off, 4096); err != nil {
					t.Fatal(err)
				}
				if fsys.Crashed() == nil {
					done = append(done, write{ep, off})
				}
			}
			id := tr.Snapshot()
			if err := tr.Flush(); err != nil {
				t.Fatal(err)
			}
			if fsys.Crashed() == nil {
				ids = append(ids, id)
			}
		}
		after := fsys.Crashed()
		if after == nil {
			after = fsys.Crash(rng)
		}
		tr2, rotated, err := Open(after, "/d.ctk")
		if err != nil {
			t.Fatalf("seed %d: open after a crash: %v", seed, err)
		}
		if rotated {
			t.Fatalf("seed %d: the tracker rotated after a crash; its intent map should have kept its history", seed)
		}
		recoveredAny = recoveredAny || tr2.Recovered() > 0
		for i, id := range ids {
			got := blocksOf(t, tr2, id, "")
			for _, w := range done {
				if w.epoch > i && !got[w.off/tr2.block] {
					t.Fatalf("seed %d: after the crash, Changed(%s) misses a write of epoch %d at %d", seed, id, w.epoch, w.off)
				}
			}
		}
		base := tr2.Snapshot() // the recovered regions are in the epoch before
		tr2.MarkWritten(5<<20, 1)
		if got := blocksOf(t, tr2, base, ""); len(got) != 1 || !got[5<<20/tr2.block] {
			t.Fatalf("seed %d: tracking after the crash: %d blocks", seed, len(got))
		}
		tr2.Close()
	}
	if !recoveredAny {
		t.Error("no crash needed the intent map: the test does not reach it")
	}
	// With no intent map (an older tracker, or a lost file), an unclean
	// state cannot be completed: the tracker rotates.
	fsys := disktest.NewCrashFS()
	tr, _ := Create(fsys, "/r.ctk", 1<<30, 0)
	old := tr.Snapshot()
	tr.Flush()
	after := fsys.Crash(rand.New(rand.NewPCG(1, 1)))
	after.Remove(IntentPath("/r.ctk"))
	tr2, rotated, err := Open(after, "/r.ctk")
	if err != nil || !rotated {
		t.Fatalf("no intent map: open = %v, rotated %v; want a rotation", err, rotated)
	}
	if err := tr2.Changed(ctx, old, "", 0, 1<<30, func(disk.Extent) error { return nil }); !errors.Is(err, disk.ErrNotFound) {
		t.Errorf("old ID after a rotation = %v, want ErrNotFound", err)
	}
	// A corrupt state file is refused, not trusted.
	fsys = disktest.NewCrashFS()
	tr, _ = Create(fsys, "/c.ctk", 1<<20, 0)
	tr.Close()
	b := fsys.Bytes("/c.ctk")
	b[len(b)/2] ^= 0xff
	f, _ := fsys.OpenFile("/c.ctk", os.O_RDWR, 0)
	f.WriteAt(b, 0)
	f.Close()
	if _, _, err := Open(fsys, "/c.ctk"); !errors.Is(err, disk.ErrCorrupt) {
		t.Errorf("corrupt state = %v, want ErrCorrupt", err)
	}
}

// TestGrow crosses the 128 GiB boundary that broke VMware's CBT in 6.0.
func TestGrow(t *testing.T) {
	tr, err := Create(disktest.NewCrashFS(), "/g.ctk", 100<<30, 0)
	if err != nil {
		t.Fatal(err)
	}
	before := tr.Snapshot()
	tr.Resize(200 << 30)
	tr.MarkWritten(128<<30-512, 1024) // across the boundary
	got := blocksOf(t, tr, before, "")
	for _, off := range []int64{100 << 30, 128<<30 - 512, 128 << 30, 200<<30 - 1} {
		if !got[off/tr.block] {
			t.Errorf("block at %d not reported after growing", off)
		}
	}
}

// TestChangedAllocated: trimmed and zeroed ranges are reported as zeros,
// not as data to read (so they do not inflate an incremental, yet a restore
// zeroes them), and "*" is exactly the allocated data.
func TestChangedAllocated(t *testing.T) {
	d := disktest.NewMemDisk(64 << 20)
	d.WriteAt(bytes.Repeat([]byte{7}, 8<<20), 20<<20) // old data
	tr, _ := Create(disktest.NewCrashFS(), "/a.ctk", d.Size(), 0)
	base := tr.ChangeID()
	d.WriteAt(make([]byte, 1<<20), 0) // zero bytes written as data
	d.WriteAt([]byte{1}, 10<<20)
	tr.MarkWritten(0, 1<<20)
	tr.MarkWritten(10<<20, 1)
	d.Trim(20<<20, 4<<20) // the guest discards old data
	tr.MarkWritten(20<<20, 4<<20)
	var data, zero int64
	ChangedAllocated(ctx, tr, base, "", d, 0, d.Size(), func(e disk.Extent) error {
		if e.Flags.Data() {
			data += e.Len
		} else {
			zero += e.Len
		}
		return nil
	})
	if data != 1<<20+64<<10 || zero != 4<<20 {
		t.Errorf("changed: %d data bytes, %d zero bytes; want %d and %d", data, zero, 1<<20+64<<10, 4<<20)
	}
	var sum int64
	ChangedAllocated(ctx, tr, "*", "", d, 0, d.Size(), func(e disk.Extent) error { sum += e.Len; return nil })
	if sum != d.Allocated() {
		t.Errorf(`"*" = %d bytes, allocated %d`, sum, d.Allocated())
	}
}

func TestEpochMerge(t *testing.T) {
	tr, _ := Create(disktest.NewCrashFS(), "/m.ctk", 1<<30, 0)
	first := tr.ChangeID()
	for i := range MaxEpochs + 20 {
		tr.MarkWritten(int64(i)<<20, 1)
		tr.Snapshot()
	}
	if got := blocksOf(t, tr, first, ""); len(got) != MaxEpochs+20 {
		t.Errorf("after merging, %d blocks reported, want %d", len(got), MaxEpochs+20)
	}
}

func FuzzLoad(f *testing.F) {
	fsys := disktest.NewCrashFS()
	tr, _ := Create(fsys, "/f.ctk", 1<<30, 0)
	for i := range 3000 {
		tr.MarkWritten(int64(i)*3<<16, 1)
	}
	z, _ := tr.BeginZero(0, 1<<24)
	tr.EndZero(z, true)
	tr.Snapshot()
	tr.MarkWritten(5, 5)
	z, _ = tr.BeginZero(1<<20, 1<<20)
	tr.EndZero(z, true)
	tr.Close()
	f.Add(fsys.Bytes("/f.ctk"))
	f.Fuzz(func(t *testing.T, b []byte) {
		tr, _, err := decode(b)
		if err != nil {
			return
		}
		tr.Changed(ctx, ID{tr.uuid, tr.floor}.String(), "", 0, 1<<40, func(disk.Extent) error { return nil })
	})
}

func BenchmarkMarkWritten(b *testing.B) {
	tr, _ := Create(disktest.NewCrashFS(), "/b.ctk", 2<<40, 0)
	b.ReportAllocs()
	var off int64
	for b.Loop() {
		tr.MarkWritten(off, 4096)
		off = (off + 4096) % (2 << 40)
	}
}

// BenchmarkChanged2TiB answers a full query on a 2 TiB disk with 1% of its
// blocks changed at random.
func BenchmarkChanged2TiB(b *testing.B) {
	const size = 2 << 40
	tr, _ := Create(disktest.NewCrashFS(), "/b.ctk", size, 0)
	base := tr.ChangeID()
	rng := rand.New(rand.NewPCG(9, 9))
	blocks := int64(size / DefaultBlockSize)
	for range blocks / 100 {
		tr.MarkWritten(rng.Int64N(blocks)*DefaultBlockSize, 1)
	}
	snap := tr.Snapshot()
	b.ReportAllocs()
	for b.Loop() {
		n := 0
		tr.Changed(ctx, base, snap, 0, size, func(disk.Extent) error { n++; return nil })
		if n == 0 {
			b.Fatal("nothing changed")
		}
	}
}

// TestZeroed: blocks whose last change zeroed them whole are reported
// Zero; anything else that changed is data. Never the other way round.
func TestZeroed(t *testing.T) {
	const bs = DefaultBlockSize
	path := filepath.Join(t.TempDir(), "z.state")
	tr, err := Create(nil, path, 64*bs, 0)
	if err != nil {
		t.Fatal(err)
	}
	zero := func(off, n int64) {
		z, err := tr.BeginZero(off, n)
		if err != nil {
			t.Fatal(err)
		}
		tr.EndZero(z, true)
	}
	write := func(off, n int64) Op {
		w, err := tr.BeginWrite(off, n)
		if err != nil {
			t.Fatal(err)
		}
		return w
	}
	base := tr.ChangeID()
	tr.MarkWritten(0, bs)    // block 0: data
	zero(bs, bs)             // block 1: zero
	tr.MarkWritten(2*bs, bs) // block 2: data, then zeroed
	zero(2*bs, bs)           //
	zero(3*bs, bs)           // block 3: zeroed, then data
	tr.MarkWritten(3*bs, 100)
	zero(4*bs+512, bs-512) // block 4: part zeroed only: data
	// Block 5: a data write begins while the zeroing runs.
	g, _ := tr.BeginZero(5*bs, bs)
	tr.End(write(5*bs, bs))
	tr.EndZero(g, true)
	// Block 8: a data write in flight when the zeroing begins, and still
	// after it ends: it may land last.
	w := write(8*bs, bs)
	zero(8*bs, bs)
	tr.End(w)
	// Block 10: zeroed while an unrelated write runs: still zero.
	w = write(9*bs, 1)
	zero(10*bs, bs)
	tr.End(w)
	// Block 11: a zeroing that failed is data.
	g, _ = tr.BeginZero(11*bs, bs)
	tr.EndZero(g, false)
	zero(6*bs, bs) // block 6: zero in epoch 1, data in epoch 2
	zero(7*bs, bs) // block 7: data in epoch 1, zero in epoch 2
	tr.MarkWritten(7*bs, 1)
	s1 := tr.Snapshot()
	tr.MarkWritten(6*bs, 1)
	zero(7*bs, bs)
	s2 := tr.Snapshot()
	got := func(since, until string) string {
		var b strings.Builder
		if err := tr.Changed(ctx, since, until, 0, 64*bs, func(e disk.Extent) error {
			fmt.Fprintf(&b, "%d+%d%s ", e.Off/bs, e.Len/bs, map[bool]string{true: "z", false: ""}[e.Flags&disk.Zero != 0])
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(b.String())
	}
	want1 := "0+1 1+2z 3+3 6+1z 7+3 10+1z 11+1"
	if g := got(base, s1); g != want1 {
		t.Errorf("epoch 1: %s, want %s", g, want1)
	}
	want12 := "0+1 1+2z 3+4 7+1z 8+2 10+1z 11+1"
	if g := got(base, s2); g != want12 {
		t.Errorf("epochs 1-2: %s, want %s", g, want12)
	}
	// The zero sets survive a clean close and reopen (state version 2).
	tr.Close()
	tr, rotated, err := Open(nil, path)
	if err != nil || rotated {
		t.Fatalf("reopen: %v, rotated %v", err, rotated)
	}
	defer tr.Close()
	if g := got(base, s2); g != want12 {
		t.Errorf("after reopen: %s, want %s", g, want12)
	}
}

// BenchmarkBeginWrite is the write path's cost: a data write begun and
// ended (in flight for zero-taint checks), into regions the intent map
// already names.
func BenchmarkBeginWrite(b *testing.B) {
	tr, _ := Create(disktest.NewCrashFS(), "/b.ctk", 2<<40, 0)
	b.ReportAllocs()
	var off int64
	for b.Loop() {
		op, _ := tr.BeginWrite(off, 4096)
		tr.End(op)
		off = (off + 4096) % (1 << 30)
	}
}

// TestStateSymlinkRefused: a cbt.state that is a symbolic link is refused.
func TestStateSymlinkRefused(t *testing.T) {
	dir := t.TempDir()
	tr, err := Create(nil, filepath.Join(dir, "real.state"), 1<<20, 0)
	if err != nil {
		t.Fatal(err)
	}
	tr.Close()
	link := filepath.Join(dir, "cbt.state")
	if err := os.Symlink(filepath.Join(dir, "real.state"), link); err != nil {
		t.Fatal(err)
	}
	if _, _, err := Open(nil, link); disk.CodeOf(err) != disk.ErrPermission {
		t.Errorf("a symlinked state file: %v, want ErrPermission", err)
	}
}

// TestChangedModel: writes and whole-block zeroings over epochs, into
// chunks that stay short lists and chunks that turn dense, answered for
// every pair of change IDs and compared with a model of each block's last
// change (data or zeros).
func TestChangedModel(t *testing.T) {
	const bs = 4096
	const size = 6 * chunkBlocks * bs
	tr, err := Create(disktest.NewCrashFS(), "/m.ctk", size, bs)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(7, 8))
	ids := []string{tr.ChangeID()}
	// last[e][b]: what epoch e did to block b last (0 nothing, 1 data, 2 zeros).
	var last []map[int64]byte
	for ep := range 6 {
		m := map[int64]byte{}
		for i := range 400 {
			chunk := int64(rng.IntN(6))
			n := int64(1 + rng.IntN(8))
			if chunk == int64(ep%6) && i%2 == 0 {
				n = 400 // this epoch turns this chunk dense
			}
			b := chunk*chunkBlocks + rng.Int64N(chunkBlocks-n)
			if rng.IntN(3) == 0 {
				z, err := tr.BeginZero(b*bs, n*bs)
				if err != nil {
					t.Fatal(err)
				}
				tr.EndZero(z, true)
				for x := b; x < b+n; x++ {
					m[x] = 2
				}
			} else {
				tr.MarkWritten(b*bs, n*bs)
				for x := b; x < b+n; x++ {
					m[x] = 1
				}
			}
		}
		last = append(last, m)
		ids = append(ids, tr.Snapshot())
	}
	for i := range ids {
		for j := i + 1; j < len(ids); j++ {
			want := map[int64]byte{}
			for _, m := range last[i:j] {
				for b, v := range m {
					want[b] = v
				}
			}
			got := map[int64]byte{}
			if err := tr.Changed(ctx, ids[i], ids[j], 0, size, func(e disk.Extent) error {
				v := byte(1)
				if e.Flags&disk.Zero != 0 {
					v = 2
				}
				for b := e.Off / bs; b < e.End()/bs; b++ {
					got[b] = v
				}
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			if len(got) != len(want) {
				t.Fatalf("Changed(%d, %d): %d blocks, want %d", i, j, len(got), len(want))
			}
			for b, v := range want {
				if got[b] != v {
					t.Fatalf("Changed(%d, %d): block %d is %d, want %d", i, j, b, got[b], v)
				}
			}
		}
	}
}

// TestEpochIndexAfterMerge: an ended epoch answered once (its chunk index
// built) and then merged with the epoch before it answers with the merged
// changes, not the index of before; and a range whose epochs were merged
// into a later one is answered by that one (over-reported, not lost).
func TestEpochIndexAfterMerge(t *testing.T) {
	const bs = DefaultBlockSize
	tr, _ := Create(disktest.NewCrashFS(), "/m.ctk", 64*chunkBlocks*bs, 0)
	first := tr.ChangeID()
	tr.MarkWritten(5*chunkBlocks*bs, 1) // epoch a
	ida := tr.Snapshot()
	tr.MarkWritten(9*chunkBlocks*bs, 1) // epoch b
	idb := tr.Snapshot()
	if got := blocksOf(t, tr, ida, idb); len(got) != 1 || !got[9*chunkBlocks] {
		t.Fatalf("epoch b alone: %v", got)
	}
	for range MaxEpochs - 1 {
		tr.Snapshot() // the last one merges a into b
	}
	if got := blocksOf(t, tr, first, idb); !got[5*chunkBlocks] || !got[9*chunkBlocks] {
		t.Fatalf("after a merged into b: %v, want the blocks of both", got)
	}
	for range 2 {
		tr.Snapshot() // b merges into the epochs after it
	}
	if got := blocksOf(t, tr, ida, idb); !got[9*chunkBlocks] {
		t.Fatalf("epoch b, merged into a later one: %v, want its block", got)
	}
}
