package backup

import (
	"cmp"
	"context"
	"errors"
	"io"
	"slices"
	"sort"

	"github.com/vdisk-project/vdisk/disk"
)

// span is the byte range [off, end) of a chunk, relative to its start.
type span struct{ off, end int64 }

// maxReadSpans bounds the reads of one chunk: a chunk whose data is cut
// into more pieces is read whole (one read beats thousands of tiny ones).
const maxReadSpans = 128

// spanGap is the largest gap between two pieces of data that is read
// rather than skipped: a read of a few KiB of a hole costs less than a
// second system call.
const spanGap = 4096

// DefaultMergeBelow is BackupOptions.MergeBelow's default.
const DefaultMergeBelow = 31.0 / 32

// addSpan appends [off, end) to spans, joining it to the last span when
// they touch or are at most gap apart.
func addSpan(spans []span, off, end, gap int64) []span {
	if off >= end {
		return spans
	}
	if k := len(spans) - 1; k >= 0 && off <= spans[k].end+gap {
		spans[k].end = max(spans[k].end, end)
		return spans
	}
	return append(spans, span{off, end})
}

func spanBytes(spans []span) int64 {
	var n int64
	for _, s := range spans {
		n += s.end - s.off
	}
	return n
}

// mergeChanged returns the changed extents sorted, with overlapping and
// adjacent ones joined and everything clipped to [0, size). A joined
// extent keeps disk.Zero only if all its parts had it.
func mergeChanged(ch []disk.Extent, size int64) []disk.Extent {
	var out []disk.Extent
	for _, e := range ch {
		off, end := max(e.Off, 0), min(e.End(), size)
		if e.Len > 0 && off < end {
			out = append(out, disk.Extent{Off: off, Len: end - off, Flags: e.Flags & disk.Zero})
		}
	}
	slices.SortFunc(out, func(a, b disk.Extent) int { return cmp.Compare(a.Off, b.Off) })
	j := 0
	for _, e := range out {
		if j > 0 && e.Off <= out[j-1].End() {
			p := &out[j-1]
			if e.Flags != p.Flags && e.Off < p.End() {
				// Overlapping zero and written areas: read them.
				p.Flags = 0
			} else if e.Flags != p.Flags {
				// Adjacent but different: keep both.
				out[j] = e
				j++
				continue
			}
			p.Len = max(p.End(), e.End()) - p.Off
			continue
		}
		out[j] = e
		j++
	}
	return out[:j]
}

// changedIn calls fn for each part of dr.changed inside chunk i, relative
// to the chunk's start.
func (dr *diskRun) changedIn(i int64, fn func(s span, zero bool)) {
	cs := dr.m.chunkSize
	start, end := i*cs, i*cs+dr.m.chunkLen(i)
	k := sort.Search(len(dr.changed), func(k int) bool { return dr.changed[k].End() > start })
	for ; k < len(dr.changed) && dr.changed[k].Off < end; k++ {
		e := dr.changed[k]
		fn(span{max(e.Off, start) - start, min(e.End(), end) - start}, e.Flags&disk.Zero != 0)
	}
}

// intersect appends to out the parts of a that lie in one of the sorted,
// disjoint spans of b.
func intersect(out []span, a span, b []span) []span {
	k := sort.Search(len(b), func(k int) bool { return b[k].end > a.off })
	for ; k < len(b) && b[k].off < a.end; k++ {
		out = addSpan(out, max(a.off, b[k].off), min(a.end, b[k].end), 0)
	}
	return out
}

// planMerge decides how to build a partly changed chunk i whose parent
// entry is base: it returns the job that reads only the changed data
// (data are the chunk's data spans, from the source's extents) and takes
// the rest from the parent, or ok false when the chunk is better read
// whole.
func (b *backupRun) planMerge(dr *diskRun, i int64, base chunkID, data []span) (chunkJob, bool) {
	n := dr.m.chunkLen(i)
	var changed int64
	j := chunkJob{dr: dr, i: i, partial: true, base: base}
	dr.changedIn(i, func(s span, zero bool) {
		changed += s.end - s.off
		if !zero {
			j.reads = intersect(j.reads, s, data)
		}
		if base != holeID && base != zeroID {
			// Over the parent's data, the changed areas are cleared
			// first; their reads then overwrite what holds data.
			j.zeros = addSpan(j.zeros, s.off, s.end, 0)
		}
	})
	if b.o.MergeBelow < 0 || float64(changed) >= b.o.MergeBelow*float64(n) {
		return chunkJob{}, false
	}
	if base == holeID {
		j.base = zeroID
	}
	return j, true
}

// planRead returns the job that reads the data spans of chunk i and takes
// the rest as zeros.
func planRead(dr *diskRun, i int64, data []span) chunkJob {
	if len(data) > maxReadSpans || len(data) == 1 && data[0] == (span{0, dr.m.chunkLen(i)}) {
		return chunkJob{dr: dr, i: i}
	}
	return chunkJob{dr: dr, i: i, partial: true, base: zeroID, reads: slices.Clone(data)}
}

// fill reads chunk j into data (len(data) is the chunk's length) from the
// source, and from the parent's chunk where the job says so. It returns
// the bytes read from the source, whether the chunk is all zeros and,
// when known, the spans outside which it is (for crypter.idKnown).
func (b *backupRun) fill(ctx context.Context, j chunkJob, data []byte, bb *chunkBufs) (read int64, zero bool, known []span, err error) {
	dr := j.dr
	off := j.i * dr.m.chunkSize
	n := int64(len(data))
	if j.partial && j.base != zeroID {
		got, err := b.r.readChunk(ctx, j.base, data[:0], bb.sealed[:0])
		switch {
		case err == nil && int64(len(got)) == n:
			if &got[0] != &data[0] {
				copy(data, got)
			}
			b.sum.base.Add(n - spanBytes(j.reads))
		case ctx.Err() != nil:
			return 0, false, nil, ctx.Err()
		default:
			// The parent's chunk is gone (a prune condemned and deleted
			// its pack) or unreadable: the source has it all.
			b.sum.baseFallback.Add(1)
			j = chunkJob{dr: dr, i: j.i}
		}
	}
	if !j.partial {
		if k, err := dr.src.Disk.ReadAt(data, off); err != nil && !(errors.Is(err, io.EOF) && int64(k) == n) {
			return 0, false, nil, disk.Wrap(err, "backup: read "+dr.src.Name, "", off)
		}
		return n, disk.IsZero(data), nil, nil
	}
	zero = j.base == zeroID
	if zero {
		pos := int64(0)
		for _, s := range j.reads {
			clear(data[pos:s.off])
			pos = s.end
		}
		clear(data[pos:])
	}
	for _, s := range j.zeros {
		clear(data[s.off:s.end])
	}
	for _, s := range j.reads {
		p := data[s.off:s.end]
		if k, err := dr.src.Disk.ReadAt(p, off+s.off); err != nil && !(errors.Is(err, io.EOF) && k == len(p)) {
			return read, false, nil, disk.Wrap(err, "backup: read "+dr.src.Name, "", off+s.off)
		}
		read += s.end - s.off
		zero = zero && disk.IsZero(p)
	}
	if j.base != zeroID {
		return read, disk.IsZero(data), nil, nil
	}
	return read, zero, j.reads, nil
}
