package cbt

import (
	"encoding/binary"
	"hash/crc32"
	"io"
	"math/bits"
	"os"
	"path/filepath"
	"time"

	"github.com/vdisk-project/vdisk/disk"
)

// The write-intent map keeps change IDs valid across a crash (SIGKILL or
// power loss). The state file is written whole only at checkpoints; between
// them, the intent map names coarse regions of the disk (16 MiB or more, at
// most 32,768 of them) that may have been written since the last
// checkpoint. A write into a region not yet named waits until the map that
// names it is on stable storage (written and synced) before it may reach
// the disk; writes into named regions cost nothing more. A checkpoint saves
// the state (which records every change begun before it) and then clears
// the regions nobody wrote since. After an unclean stop, Open marks every
// block of the named regions changed: the tracker over-reports those
// regions and keeps its history, instead of forgetting every change ID.
//
// The file holds two slots, written alternately, each synced before the
// next is written: a torn write can only hit the newest slot, and the other
// then holds a map that covers every write made. Each slot is: magic,
// sequence number, the tracker's UUID, disk size, block size, region shift,
// region count, the region bitmap and a CRC-32C, little-endian.
const (
	intentMagic   = "VDCBTIN1"
	intentHeader  = 8 + 8 + 16 + 8 + 8 + 4 + 4
	minRegionLog  = 24 // 16 MiB
	maxRegions    = 1 << 15
	intentSlotMax = intentHeader + maxRegions/8 + 4
)

// intent is the in-memory map. It is guarded by the Tracker's mu; its file
// writes are serialized by the Tracker's imu.
type intent struct {
	f       disk.File
	shift   uint
	n       int
	bits    []uint64 // regions that may hold changes made after the last checkpoint
	touched []uint64 // regions written since the last checkpoint began
	seq     uint64   // version of bits
	durable uint64   // the newest version on stable storage; guarded by imu
}

// IntentPath returns the intent map's file name for a state file.
func IntentPath(statePath string) string { return statePath + ".intent" }

func (t *Tracker) intentPath() string { return IntentPath(t.path) }

// regionShift is log2 of the region size for a disk.
func regionShift(size, block int64) uint {
	s := uint(minRegionLog)
	for s < 62 && size > int64(maxRegions)<<s {
		s++
	}
	for int64(1)<<s < block {
		s++
	}
	return s
}

// mark records a change of [off, off+n) and returns the version of the map
// that must be durable before the change is made, or 0 when no new region
// was named. The caller holds t.mu.
func (in *intent) mark(off, n int64) uint64 {
	if in.bits == nil || n <= 0 {
		return 0
	}
	first, last := int(off>>in.shift), int((off+n-1)>>in.shift)
	last = min(last, in.n-1)
	named := false
	for r := first; r <= last; r++ {
		w, m := r/64, uint64(1)<<(r%64)
		in.touched[w] |= m
		if in.bits[w]&m == 0 {
			in.bits[w] |= m
			named = true
		}
	}
	if !named {
		return 0
	}
	in.seq++
	return in.seq
}

// image encodes the map for a slot. The caller holds t.mu.
func (t *Tracker) intentImage() (uint64, []byte) {
	in := &t.in
	le := binary.LittleEndian
	b := make([]byte, 0, intentHeader+len(in.bits)*8+4)
	b = append(b, intentMagic...)
	b = le.AppendUint64(b, in.seq)
	b = append(b, t.uuid[:]...)
	b = le.AppendUint64(b, uint64(t.size))
	b = le.AppendUint64(b, uint64(t.block))
	b = le.AppendUint32(b, uint32(in.shift))
	b = le.AppendUint32(b, uint32(in.n))
	for _, w := range in.bits {
		b = le.AppendUint64(b, w)
	}
	return in.seq, le.AppendUint32(b, crc32.Checksum(b, castagnoli))
}

// writeSlot writes a map version to its slot and syncs it. The caller
// holds t.imu.
func (t *Tracker) writeSlot(seq uint64, img []byte) error {
	pos := int64(seq%2) * intentSlotMax
	if _, err := t.in.f.WriteAt(img, pos); err != nil {
		return disk.Wrap(err, "cbt: write intent map", t.intentPath(), pos)
	}
	if err := t.in.f.Sync(); err != nil {
		return disk.Wrap(err, "cbt: sync intent map", t.intentPath(), -1)
	}
	t.in.durable = max(t.in.durable, seq)
	return nil
}

// syncIntent returns once map version seq (from mark) is durable. Writers
// that wait together share one write and sync.
func (t *Tracker) syncIntent(seq uint64) error {
	if seq == 0 {
		return nil
	}
	t.imu.Lock()
	defer t.imu.Unlock()
	if t.in.durable >= seq {
		return nil
	}
	t.mu.Lock()
	v, img := t.intentImage()
	t.mu.Unlock()
	return t.writeSlot(v, img)
}

// openIntent opens (creating when needed) the intent map file and lays out
// an empty map for the current size.
func (t *Tracker) openIntent() error {
	// Never through a planted link: the map is rewritten in place.
	f, err := t.fsys.OpenFile(t.intentPath(), os.O_RDWR|os.O_CREATE|disk.ONoFollow, 0o600)
	if err != nil {
		return disk.Wrap(err, "cbt: open intent map", t.intentPath(), -1)
	}
	// A new file's name survives a crash only once its directory is synced.
	if err := t.fsys.SyncDir(filepath.Dir(t.intentPath())); err != nil {
		f.Close()
		return disk.Wrap(err, "cbt: sync directory of", t.intentPath(), -1)
	}
	t.in.f = f
	t.in.seq = 0
	for slot := range 2 {
		b := make([]byte, intentHeader)
		if _, err := f.ReadAt(b, int64(slot)*intentSlotMax); err == nil && string(b[:8]) == intentMagic {
			t.in.seq = max(t.in.seq, binary.LittleEndian.Uint64(b[8:]))
		}
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.resetIntentLocked()
}

// resetIntentLocked lays out an empty map for the current size and writes
// it to both slots: the state file covers every change made so far. The
// caller holds t.imu and t.mu.
func (t *Tracker) resetIntentLocked() error {
	in := &t.in
	in.shift = regionShift(t.size, t.block)
	in.n = max(1, int((t.size+int64(1)<<in.shift-1)>>in.shift))
	in.bits = make([]uint64, (in.n+63)/64)
	in.touched = make([]uint64, len(in.bits))
	for range 2 {
		in.seq++
		if err := t.writeSlot(t.intentImage()); err != nil {
			return err
		}
	}
	return nil
}

// readIntent returns the newest valid map of an intent file, as a bitmap
// of regions and the region shift. It fails when no slot is valid or the
// map belongs to another history or geometry.
func readIntent(fsys disk.FS, path string, uuid [16]byte, size, block int64) ([]uint64, uint, error) {
	f, err := fsys.OpenFile(path, os.O_RDONLY|disk.ONoFollow, 0)
	if err != nil {
		return nil, 0, disk.Wrap(err, "cbt: open intent map", path, -1)
	}
	defer f.Close()
	le := binary.LittleEndian
	var best []uint64
	var bestSeq uint64
	var shift uint
	for slot := range 2 {
		b := make([]byte, intentSlotMax)
		n, err := f.ReadAt(b, int64(slot)*intentSlotMax)
		if err != nil && err != io.EOF {
			continue
		}
		b = b[:n]
		if len(b) < intentHeader+4 || string(b[:8]) != intentMagic {
			continue
		}
		seq := le.Uint64(b[8:])
		var u [16]byte
		copy(u[:], b[16:32])
		sh, nr := uint(le.Uint32(b[48:])), int(le.Uint32(b[52:]))
		words := (nr + 63) / 64
		if u != uuid || int64(le.Uint64(b[32:])) != size || int64(le.Uint64(b[40:])) != block ||
			sh != regionShift(size, block) || nr < 1 || nr > maxRegions || len(b) < intentHeader+words*8+4 {
			continue
		}
		body := b[:intentHeader+words*8]
		if crc32.Checksum(body, castagnoli) != le.Uint32(b[len(body):]) {
			continue
		}
		if best == nil || seq > bestSeq {
			best, bestSeq, shift = make([]uint64, words), seq, sh
			for i := range best {
				best[i] = le.Uint64(body[intentHeader+i*8:])
			}
		}
	}
	if best == nil {
		return nil, 0, disk.Errorf(disk.ErrCorrupt, "cbt: %s holds no valid intent map for this tracker", path)
	}
	return best, shift, nil
}

// markRegions marks every block of the named regions changed in the
// current epoch and returns the bytes marked. It runs at Open, alone.
func (t *Tracker) markRegions(regions []uint64, shift uint) int64 {
	var total int64
	for w, word := range regions {
		for word != 0 {
			r := w*64 + bits.TrailingZeros64(word)
			word &= word - 1
			off := int64(r) << shift
			n := min(int64(1)<<shift, t.size-off)
			if n > 0 {
				t.markLocked(off, n)
				total += n
			}
		}
	}
	return total
}

// checkpoint saves the state and then clears the regions of the intent map
// that nobody wrote since the save began. clean marks the state clean.
func (t *Tracker) checkpoint(clean bool) error {
	t.imu.Lock()
	defer t.imu.Unlock()
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return disk.Errorf(disk.ErrInvalid, "cbt: tracker closed")
	}
	named := false
	for _, w := range t.in.bits {
		named = named || w != 0
	}
	if !t.dirty && !named && !clean {
		t.mu.Unlock()
		return nil
	}
	b := t.encode(clean)
	clear(t.in.touched)
	t.dirty = false
	t.mu.Unlock()
	if err := disk.WriteFileAtomic(t.fsys, t.path, b, 0o600); err != nil {
		t.mu.Lock()
		t.dirty = true
		t.mu.Unlock()
		return disk.Wrap(err, "cbt: save", t.path, -1)
	}
	if t.afterSave != nil {
		t.afterSave()
	}
	t.mu.Lock()
	t.saved = t.now()
	changed := false
	for i, w := range t.in.bits {
		if k := w & t.in.touched[i]; k != w {
			t.in.bits[i], changed = k, true
		}
	}
	var seq uint64
	var img []byte
	if changed {
		t.in.seq++
		seq, img = t.intentImage()
	}
	t.mu.Unlock()
	if img == nil {
		return nil
	}
	return t.writeSlot(seq, img)
}

// Flush checkpoints: it saves the state file if it changed and clears the
// intent map of the regions written before. Snapshots call it so that the
// change ID they record is durable.
func (t *Tracker) Flush() error { return t.checkpoint(false) }

// FlushAfter checkpoints when the last checkpoint is older than age. The
// write path calls it on every flush: it bounds what an unclean stop makes
// the tracker over-report, at the cost of a state file write per age.
func (t *Tracker) FlushAfter(age time.Duration) error {
	t.mu.Lock()
	due := t.now().Sub(t.saved) >= age
	t.mu.Unlock()
	if !due {
		return nil
	}
	return t.checkpoint(false)
}
