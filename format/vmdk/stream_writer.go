package vmdk

import (
	"bytes"
	"compress/zlib"
	"encoding/binary"
	"io"
	"runtime"
	"sync"

	"github.com/vdisk-project/vdisk/disk"
)

// streamCompression is the zlib level of new streams. Level 1 compresses
// several times faster than the default level for a file a little larger;
// the format does not record the level.
const streamCompression = zlib.BestSpeed

// streamWriter writes a new streamOptimized extent in the layout of the
// format's specification, which VMware's tools write and ESXi, ovftool and
// the cloud importers read (§4.4, §4.5): header (version 3, flags
// NL|COMPRESSED|MARKERS, GD_AT_END), descriptor, grains with markers in
// ascending order, a grain table with a GT marker after its grains, the
// grain directory with a GD marker, a footer marker and footer, and EOS.
//
// Writes must come in ascending order (a stream is append-only); grains
// that are all zeros are not stored. Grains are compressed by a pool of
// goroutines and appended in order by one writer goroutine; memory is
// bounded by 2×workers grains in flight.
type streamWriter struct {
	f    disk.File
	name string
	h    sparseHeader
	cap  int64 // bytes
	gr   int64 // grain bytes

	cur    []byte // the grain being filled
	curIdx int64  // its index, -1 when none
	next   int64  // lowest offset the next write may start at

	jobs    chan streamJob
	results chan streamJob
	slots   chan struct{}
	wg      sync.WaitGroup // compressors
	done    chan struct{}  // the appender has finished
	seq     int64

	// Owned by the appender goroutine until done is closed.
	pos int64            // next free byte of the file
	gt  map[int64]uint32 // grain index -> sector
	err error            // first error of the appender

	zp   sync.Pool  // *zlib.Writer
	bp   sync.Pool  // *[]byte grain buffers
	mu   sync.Mutex // guards werr
	werr error      // the appender's first error, for early reporting
}

func (w *streamWriter) getBuf() []byte {
	if b, ok := w.bp.Get().(*[]byte); ok {
		return *b
	}
	return make([]byte, w.gr)
}

func (w *streamWriter) putBuf(b []byte) { w.bp.Put(&b) }

func (w *streamWriter) setErr(err error) {
	w.err = err
	w.mu.Lock()
	w.werr = err
	w.mu.Unlock()
}

type streamJob struct {
	seq  int64
	idx  int64
	raw  []byte
	comp *bytes.Buffer
	err  error
}

// newStreamWriter starts a stream of capacity bytes with the descriptor
// text desc, compressing with workers goroutines (0: GOMAXPROCS).
func newStreamWriter(f disk.File, name string, capacity int64, desc []byte, workers int) (*streamWriter, error) {
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	descSectors := divRoundUp(uint64(len(desc)), disk.SectorSize)
	w := &streamWriter{
		f: f, name: name, cap: capacity, gr: defaultGrainSectors * disk.SectorSize,
		curIdx: -1, gt: make(map[int64]uint32),
		jobs: make(chan streamJob, workers), results: make(chan streamJob, 2*workers),
		slots: make(chan struct{}, 2*workers), done: make(chan struct{}),
	}
	w.h = sparseHeader{
		Version: 3, Flags: flagNewlineDetector | flagCompressed | flagMarkers,
		Capacity: uint64(capacity / disk.SectorSize), GrainSize: defaultGrainSectors,
		DescriptorOffset: 1, DescriptorSize: descSectors, NumGTEsPerGT: maxGTEsPerGT,
		GDOffset: gdAtEnd, OverHead: 1 + descSectors, CompressAlgorithm: compressDeflate,
	}
	w.h.setNewlineChars()
	head := make([]byte, (1+descSectors)*disk.SectorSize)
	copy(head, w.h.marshal())
	copy(head[disk.SectorSize:], desc)
	if _, err := f.WriteAt(head, 0); err != nil {
		return nil, disk.Wrap(err, "vmdk: write", name, 0)
	}
	w.pos = int64(len(head))
	for range workers {
		w.wg.Add(1)
		go w.compressor()
	}
	go func() { w.wg.Wait(); close(w.results) }()
	go w.appender()
	return w, nil
}

func (w *streamWriter) compressor() {
	defer w.wg.Done()
	for j := range w.jobs {
		zw, _ := w.zp.Get().(*zlib.Writer)
		j.comp = &bytes.Buffer{}
		j.comp.Grow(int(w.gr/2) + 512)
		// The marker header is written first so that the appender sends
		// one buffer per grain.
		var hdr [12]byte
		binary.LittleEndian.PutUint64(hdr[:], uint64(j.idx)*defaultGrainSectors)
		j.comp.Write(hdr[:])
		if zw == nil {
			zw, _ = zlib.NewWriterLevel(j.comp, streamCompression)
		} else {
			zw.Reset(j.comp)
		}
		n := min(w.gr, w.cap-j.idx*w.gr)
		_, j.err = zw.Write(j.raw[:n])
		if j.err == nil {
			j.err = zw.Close()
		}
		w.zp.Put(zw)
		w.putBuf(j.raw)
		j.raw = nil
		w.results <- j
	}
}

// appender writes compressed grains in order.
func (w *streamWriter) appender() {
	defer close(w.done)
	pending := make(map[int64]streamJob)
	var next int64
	for j := range w.results {
		pending[j.seq] = j
		for {
			j, ok := pending[next]
			if !ok {
				break
			}
			delete(pending, next)
			next++
			<-w.slots
			if w.err != nil {
				continue
			}
			if j.err != nil {
				w.setErr(disk.Errorf(disk.ErrAccess, "vmdk: %s: compress grain %d: %w", w.name, j.idx, j.err))
				continue
			}
			b := j.comp.Bytes()
			binary.LittleEndian.PutUint32(b[8:], uint32(len(b)-12))
			if pad := len(b) % disk.SectorSize; pad != 0 {
				b = append(b, make([]byte, disk.SectorSize-pad)...)
			}
			if _, err := w.f.WriteAt(b, w.pos); err != nil {
				w.setErr(disk.Wrap(err, "vmdk: write", w.name, w.pos))
				continue
			}
			w.gt[j.idx] = uint32(w.pos / disk.SectorSize)
			w.pos += int64(len(b))
		}
	}
}

func (w *streamWriter) size() int64 { return w.cap }

func (w *streamWriter) lookup(off, n int64) (blockState, int64, error) {
	return 0, 0, disk.Errorf(disk.ErrNotSupported, "vmdk: %s: a stream being written cannot be read", w.name)
}

func (w *streamWriter) readAt([]byte, int64) error {
	return disk.Errorf(disk.ErrNotSupported, "vmdk: %s: a stream being written cannot be read", w.name)
}

func (w *streamWriter) failed() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.werr
}

// writeAt appends data; off must not be below the end of the previous
// write, except inside the grain still being filled.
func (w *streamWriter) writeAt(p []byte, off int64, _ io.ReaderAt) error {
	if err := w.failed(); err != nil {
		return err
	}
	if off < w.next && off/w.gr != w.curIdx {
		return disk.Errorf(disk.ErrNotSupported,
			"vmdk: %s: streamOptimized images are written in ascending order; write at %d comes after %d", w.name, off, w.next)
	}
	for len(p) > 0 {
		idx := off / w.gr
		if idx != w.curIdx {
			if err := w.emit(); err != nil {
				return err
			}
			w.curIdx = idx
			w.cur = w.getBuf()
			clear(w.cur)
		}
		in := off % w.gr
		c := copy(w.cur[in:], p)
		p = p[c:]
		off += int64(c)
	}
	w.next = max(w.next, off)
	return nil
}

// emit hands the current grain to the compressors (or drops it when it is
// all zeros).
func (w *streamWriter) emit() error {
	if w.curIdx < 0 {
		return nil
	}
	g := w.cur
	idx := w.curIdx
	w.cur, w.curIdx = nil, -1
	if disk.IsZero(g) {
		w.putBuf(g)
		return nil
	}
	select {
	case w.slots <- struct{}{}:
	case <-w.done:
		return w.appenderErr()
	}
	w.jobs <- streamJob{seq: w.seq, idx: idx, raw: g}
	w.seq++
	return nil
}

func (w *streamWriter) appenderErr() error {
	if w.err != nil {
		return w.err
	}
	return disk.Errorf(disk.ErrAccess, "vmdk: %s: stream writer stopped", w.name)
}

func (w *streamWriter) flush() error { return w.failed() }

// close writes the last grain, the grain tables, the grain directory, the
// footer and the end-of-stream marker, then syncs and closes the file.
func (w *streamWriter) close() error {
	err := w.emit()
	close(w.jobs)
	<-w.done
	if err == nil {
		err = w.err
	}
	if err == nil {
		err = w.finish()
	}
	if err == nil {
		err = w.f.Sync()
	}
	if cerr := w.f.Close(); err == nil && cerr != nil {
		err = disk.Wrap(cerr, "vmdk: close", w.name, -1)
	}
	return err
}

func (w *streamWriter) finish() error {
	return writeStreamTail(w.f, w.name, w.h, w.gt, w.pos)
}

// writeStreamTail writes, at byte pos, the grain tables (with GT markers,
// only for tables that hold grains), the grain directory (with its marker),
// the footer (with its marker) and the end-of-stream marker of a stream
// whose grains are at the sectors gt gives.
func writeStreamTail(f disk.File, name string, h sparseHeader, gt map[int64]uint32, pos int64) error {
	le := binary.LittleEndian
	gdN := int(h.numGDEntries())
	gtN := int(h.NumGTEsPerGT)
	gd := make([]uint32, gdN)
	gtSectors := divRoundUp(uint64(gtN)*4, disk.SectorSize)
	var out bytes.Buffer
	marker := func(numSectors uint64, typ uint32) {
		var m [disk.SectorSize]byte
		le.PutUint64(m[:], numSectors)
		le.PutUint32(m[12:], typ)
		out.Write(m[:])
	}
	sector := func() uint32 { return uint32((pos + int64(out.Len())) / disk.SectorSize) }
	t := make([]byte, gtSectors*disk.SectorSize)
	for i := range gdN {
		clear(t)
		used := false
		for j := range gtN {
			if v, ok := gt[int64(i*gtN+j)]; ok {
				le.PutUint32(t[j*4:], v)
				used = true
			}
		}
		if !used {
			continue
		}
		marker(gtSectors, markerGT)
		gd[i] = sector()
		out.Write(t)
	}
	gdSectors := divRoundUp(uint64(gdN)*4, disk.SectorSize)
	marker(gdSectors, markerGD)
	gdOff := sector()
	gdb := make([]byte, gdSectors*disk.SectorSize)
	for i, v := range gd {
		le.PutUint32(gdb[i*4:], v)
	}
	out.Write(gdb)
	marker(1, markerFooter)
	ft := h
	ft.GDOffset = uint64(gdOff)
	out.Write(ft.marshal())
	marker(0, markerEOS)
	if _, err := f.WriteAt(out.Bytes(), pos); err != nil {
		return disk.Wrap(err, "vmdk: write", name, pos)
	}
	return nil
}
