package disk

import (
	"context"
	"runtime"
	"sync"

	"golang.org/x/sync/errgroup"
)

// CopyOptions tune Copy. The zero value (or nil) means the defaults below.
type CopyOptions struct {
	// Workers is the number of requests in flight. Default: 4, or
	// GOMAXPROCS when that is larger (capped at 16).
	Workers int
	// ChunkSize is the largest single read or write, in bytes; chunks are
	// aligned to multiples of it. Default 1 MiB.
	ChunkSize int
	// ZeroBlock is the granularity, in bytes, at which data read from the
	// source is checked for zeros; zero blocks are not written as data, so a
	// thin image stays thin. It must divide ChunkSize. Default 64 KiB (a
	// VMDK grain). Negative disables zero detection.
	ZeroBlock int
	// DstZeroed says the destination already reads as zeros everywhere (it
	// was just created), so holes and zero ranges are skipped instead of
	// zeroed.
	DstZeroed bool
	// Sequential makes every write reach the destination in ascending
	// offset order, as a streamOptimized writer needs. Reads stay parallel.
	Sequential bool
	// Progress, when set, is called after each chunk with the bytes of the
	// source covered so far and the total. Calls are serialized and done
	// never decreases.
	Progress func(done, total int64)
}

// CopyStats reports what Copy did. Bytes are counted on the source.
type CopyStats struct {
	Total   int64 // virtual size copied
	Read    int64 // data bytes read from the source
	Written int64 // data bytes written to the destination
	Zeroed  int64 // bytes zeroed on the destination without sending data
	Skipped int64 // bytes left alone because the destination was already zero
}

func (o *CopyOptions) withDefaults() CopyOptions {
	var r CopyOptions
	if o != nil {
		r = *o
	}
	if r.Workers <= 0 {
		r.Workers = min(max(4, runtime.GOMAXPROCS(0)), 16)
	}
	if r.ChunkSize <= 0 {
		r.ChunkSize = 1 << 20
	}
	if r.ZeroBlock == 0 {
		r.ZeroBlock = 64 << 10
	}
	if r.ZeroBlock > r.ChunkSize || (r.ZeroBlock > 0 && r.ChunkSize%r.ZeroBlock != 0) {
		r.ZeroBlock = r.ChunkSize
	}
	return r
}

// copyJob is one chunk of a copy: data to read and write, or a range to zero.
type copyJob struct {
	seq  int64
	off  int64
	n    int64
	data bool
	buf  []byte // holds the data read, for data jobs
}

// Copy copies every byte of src into dst at the same offsets, reading only
// what src reports as data (see Extenter) and writing zeros cheaply (see
// Zeroer) or not at all (with DstZeroed), so that thin stays thin. It uses
// at most Workers×2 buffers of ChunkSize bytes whatever the disk size. dst
// must be at least as large as src. Copy stops at the first error and
// returns it with the statistics so far.
//
// A destination that is a [WriteBehinder] is written behind while Copy
// runs (and set back as it was after), so that the caller's final Flush
// finds the data mostly on the device already. Copy itself makes nothing
// durable: that is the caller's Flush or Close.
func Copy(ctx context.Context, dst, src Disk, opts *CopyOptions) (CopyStats, error) {
	o := opts.withDefaults()
	total := src.Size()
	st := CopyStats{Total: total}
	if dst.Size() < total {
		return st, Errorf(ErrInvalid, "copy: destination of %d bytes is smaller than source of %d bytes", dst.Size(), total)
	}
	if wb, ok := dst.(WriteBehinder); ok {
		defer wb.SetWriteBehind(wb.SetWriteBehind(true))
	}
	c := &copier{o: o, dst: dst, src: src, total: total}
	slots := o.Workers * 2
	c.free = make(chan []byte, slots)
	for range slots {
		c.free <- nil // buffers are allocated on first use
	}

	g, gctx := errgroup.WithContext(ctx)
	jobs := make(chan *copyJob, o.Workers)
	var ordered chan *copyJob
	if o.Sequential {
		ordered = make(chan *copyJob, slots)
	}
	g.Go(func() error {
		defer close(jobs)
		return c.produce(gctx, jobs)
	})
	var wg sync.WaitGroup
	for range o.Workers {
		wg.Add(1)
		g.Go(func() error {
			defer wg.Done()
			for j := range jobs {
				if err := c.read(j); err != nil {
					return err
				}
				if ordered != nil {
					select {
					case ordered <- j:
					case <-gctx.Done():
						return gctx.Err()
					}
					continue
				}
				if err := c.write(j); err != nil {
					return err
				}
			}
			return nil
		})
	}
	if ordered != nil {
		go func() { wg.Wait(); close(ordered) }()
		g.Go(func() error {
			pending := make(map[int64]*copyJob, slots)
			next := int64(0)
			for j := range ordered {
				pending[j.seq] = j
				for {
					j, ok := pending[next]
					if !ok {
						break
					}
					delete(pending, next)
					next++
					if err := c.write(j); err != nil {
						return err
					}
				}
			}
			return nil
		})
	}
	err := g.Wait()
	if err == nil {
		err = ctx.Err()
	}
	c.mu.Lock()
	st.Read, st.Written, st.Zeroed, st.Skipped = c.st.Read, c.st.Written, c.st.Zeroed, c.st.Skipped
	c.mu.Unlock()
	return st, err
}

type copier struct {
	o     CopyOptions
	dst   Disk
	src   Disk
	total int64
	free  chan []byte // buffer slots; bounds memory and jobs in flight

	mu   sync.Mutex
	done int64
	st   CopyStats
}

// produce walks the source's extents and emits jobs in ascending order.
func (c *copier) produce(ctx context.Context, jobs chan<- *copyJob) error {
	var seq int64
	chunk := int64(c.o.ChunkSize)
	emit := func(off, n int64, data bool) error {
		var buf []byte
		select {
		case buf = <-c.free:
		case <-ctx.Done():
			return ctx.Err()
		}
		j := &copyJob{seq: seq, off: off, n: n, data: data, buf: buf}
		seq++
		select {
		case jobs <- j:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	// Zero ranges are coalesced and flushed before the next data chunk.
	var zOff, zLen int64
	flushZero := func() error {
		for zLen > 0 {
			n := min(zLen, 1<<30)
			if err := emit(zOff, n, false); err != nil {
				return err
			}
			zOff += n
			zLen -= n
		}
		return nil
	}
	// The source is walked in windows so that a slow Extents call on a huge
	// disk still reaches workers early.
	const window = 64 << 30
	for woff := int64(0); woff < c.total; woff += window {
		err := Extents(ctx, c.src, woff, min(window, c.total-woff), func(e Extent) error {
			if !e.Flags.Data() {
				if zLen > 0 && zOff+zLen == e.Off {
					zLen += e.Len
				} else {
					if err := flushZero(); err != nil {
						return err
					}
					zOff, zLen = e.Off, e.Len
				}
				return nil
			}
			if err := flushZero(); err != nil {
				return err
			}
			for off, end := e.Off, e.End(); off < end; {
				n := min(end, (off/chunk+1)*chunk) - off
				if err := emit(off, n, true); err != nil {
					return err
				}
				off += n
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	return flushZero()
}

// read fills a data job's buffer from the source.
func (c *copier) read(j *copyJob) error {
	if !j.data {
		return nil
	}
	if j.buf == nil {
		j.buf = make([]byte, c.o.ChunkSize)
	}
	if _, err := c.src.ReadAt(j.buf[:j.n], j.off); err != nil {
		return Wrap(err, "copy: read", "", j.off)
	}
	return nil
}

// write stores a job in the destination, splitting data into runs of zero
// and non-zero blocks, and gives the job's buffer slot back.
func (c *copier) write(j *copyJob) error {
	defer func() { c.free <- j.buf }()
	var st CopyStats
	if !j.data {
		if err := c.zero(j.off, j.n, &st); err != nil {
			return err
		}
	} else {
		st.Read = j.n
		p := j.buf[:j.n]
		zb := int64(c.o.ZeroBlock)
		if zb < 0 {
			zb = j.n
		}
		for pos := int64(0); pos < j.n; {
			// Blocks are aligned to the disk, not to the job.
			end := min(j.n, ((j.off+pos)/zb+1)*zb-j.off)
			zero := c.o.ZeroBlock > 0 && IsZero(p[pos:end])
			for end < j.n {
				next := min(j.n, end+zb)
				if c.o.ZeroBlock > 0 && IsZero(p[end:next]) != zero {
					break
				}
				end = next
			}
			if zero {
				if err := c.zero(j.off+pos, end-pos, &st); err != nil {
					return err
				}
			} else {
				if _, err := c.dst.WriteAt(p[pos:end], j.off+pos); err != nil {
					return Wrap(err, "copy: write", "", j.off+pos)
				}
				st.Written += end - pos
			}
			pos = end
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.st.Read += st.Read
	c.st.Written += st.Written
	c.st.Zeroed += st.Zeroed
	c.st.Skipped += st.Skipped
	c.done += j.n
	if c.o.Progress != nil {
		c.o.Progress(c.done, c.total)
	}
	return nil
}

func (c *copier) zero(off, n int64, st *CopyStats) error {
	if c.o.DstZeroed {
		st.Skipped += n
		return nil
	}
	if err := WriteZeroes(c.dst, off, n, 0); err != nil {
		return Wrap(err, "copy: zero", "", off)
	}
	st.Zeroed += n
	return nil
}
