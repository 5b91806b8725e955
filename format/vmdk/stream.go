package vmdk

import (
	"bytes"
	"compress/flate"
	"compress/zlib"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/vdisk-project/vdisk/disk"
)

// streamOptimized extents (§4): compressed grains, each behind a marker
// holding its LBA and compressed size; grain tables and the grain directory
// are found through the header, or through the footer when the header says
// GD_AT_END.

// Marker types (§4.1).
const (
	markerEOS      = 0
	markerGT       = 1
	markerGD       = 2
	markerFooter   = 3
	markerProgress = 4
)

// streamGrainCache is the number of inflated grains kept per extent, so
// that small reads of one grain do not inflate it again.
const streamGrainCache = 32

// streamExtent reads a streamOptimized extent. It is read-only: streams
// cannot be modified in place.
type streamExtent struct {
	*sparseExtent // grain directory and tables; readAt is replaced

	salvaged map[uint32]uint32 // grain index -> sector, when rebuilt by a marker scan
	markers  bool

	cmu   sync.Mutex
	cache map[int64][]byte // grain index -> inflated grain
	order []int64

	zpool sync.Pool // io.ReadCloser (zlib readers)
	bpool sync.Pool // *[]byte of compressed-grain size
}

// openStream opens a compressed (streamOptimized) KDMV file read-only. With
// salvage, a stream whose footer or grain directory is missing (a truncated
// download) is served from a scan of its grain markers.
func openStream(f disk.File, path string, h *sparseHeader, size int64, ro, salvage bool) (extent, error) {
	if !ro {
		return nil, disk.Errorf(disk.ErrPermission, "vmdk: %s: streamOptimized images cannot be modified in place; convert them to another subformat", path)
	}
	if err := h.validate(size); err != nil {
		return nil, disk.Wrap(err, "", path, -1)
	}
	s := &streamExtent{markers: h.markers(), cache: make(map[int64][]byte)}
	hh := *h
	var ferr error
	if hh.GDOffset == gdAtEnd {
		if ft, err := readFooter(f, size); err == nil {
			hh = *ft
		} else {
			ferr = err
		}
	}
	var se *sparseExtent
	if ferr == nil {
		if err := hh.validate(size); err != nil {
			ferr = err
		} else {
			se, ferr = newGrainDirectory(f, path, &hh, size)
		}
	}
	if ferr != nil {
		if !salvage {
			return nil, disk.Errorf(disk.ErrCorrupt,
				"vmdk: %s: streamOptimized image is truncated or damaged (%v); open it with salvage to read the grains that remain, or repair it with 'vdisk check -r all'", path, ferr)
		}
		grains, err := scanMarkers(f, h, size, nil)
		if err != nil {
			return nil, err
		}
		s.salvaged = grains
		se = &sparseExtent{f: f, name: path, h: h, ro: true, size_: int64(h.Capacity) * disk.SectorSize,
			grain: h.grainBytes(), gtCov: h.gtCoverage(), gtLen: int(h.NumGTEsPerGT), fileLen: size}
	}
	s.sparseExtent = se
	return s, nil
}

// newGrainDirectory loads the grain directory of a stream (whose header
// may not pass the hosted sparse checks) for read-only table access.
func newGrainDirectory(f disk.File, path string, h *sparseHeader, size int64) (*sparseExtent, error) {
	e := &sparseExtent{
		f: f, name: path, h: h, ro: true,
		size_: int64(h.Capacity) * disk.SectorSize, grain: h.grainBytes(), gtCov: h.gtCoverage(),
		gtLen: int(h.NumGTEsPerGT), cache: make(map[uint32][]uint32), dirty: map[uint32]bool{},
		pinned: map[uint32]bool{}, fileLen: size, zero: make([]uint32, h.NumGTEsPerGT),
	}
	var err error
	e.gd, err = e.readDir(h.GDOffset, int(h.numGDEntries()))
	return e, err
}

// readFooter reads the footer copy of the header at the end of a stream:
// a footer marker at EOF-1536, the footer at EOF-1024, EOS at EOF-512.
func readFooter(f disk.File, size int64) (*sparseHeader, error) {
	if size < 3*disk.SectorSize {
		return nil, errors.New("file too small for a footer")
	}
	b := make([]byte, 2*disk.SectorSize)
	if _, err := f.ReadAt(b, size-3*disk.SectorSize); err != nil {
		return nil, err
	}
	le := binary.LittleEndian
	if le.Uint32(b[8:]) != 0 || le.Uint32(b[12:]) != markerFooter {
		return nil, errors.New("no footer marker before the end of the file")
	}
	ft, err := parseSparseHeader(b[disk.SectorSize:])
	if err != nil {
		return nil, fmt.Errorf("footer: %w", err)
	}
	if ft.GDOffset == gdAtEnd {
		return nil, errors.New("footer has no grain directory offset")
	}
	return ft, nil
}

// scanMarkers walks the markers from the first grain (§4.3) and returns the
// sector of each grain found, by grain index. Grains whose data runs past
// the end of the file are left out. visit, when set, is called for every
// marker.
func scanMarkers(f disk.File, h *sparseHeader, size int64, visit func(sector uint64, lba uint64, n uint32, typ uint32) error) (map[uint32]uint32, error) {
	if !h.markers() {
		return nil, disk.Errorf(disk.ErrNotSupported, "vmdk: stream without markers cannot be scanned")
	}
	grains := make(map[uint32]uint32)
	fileSectors := uint64(size) / disk.SectorSize
	sec := max(h.OverHead, 1+h.DescriptorOffset+h.DescriptorSize-1)
	if h.DescriptorOffset == 0 {
		sec = max(h.OverHead, 1)
	}
	b := make([]byte, disk.SectorSize)
	le := binary.LittleEndian
	for sec < fileSectors {
		if _, err := f.ReadAt(b, int64(sec)*disk.SectorSize); err != nil {
			return grains, nil
		}
		lba, n := le.Uint64(b), le.Uint32(b[8:])
		if n != 0 {
			need := divRoundUp(12+uint64(n), disk.SectorSize)
			if sec+need > fileSectors || lba >= h.Capacity || lba%h.GrainSize != 0 || uint64(n) > uint64(h.grainBytes())*2+disk.SectorSize {
				break // a torn or bogus last grain ends the scan
			}
			if visit != nil {
				if err := visit(sec, lba, n, 0); err != nil {
					return nil, err
				}
			}
			idx := lba / h.GrainSize
			if idx < 1<<32 && sec < 1<<32 {
				grains[uint32(idx)] = uint32(sec)
			}
			sec += need
			continue
		}
		typ := le.Uint32(b[12:])
		if visit != nil {
			if err := visit(sec, lba, 0, typ); err != nil {
				return nil, err
			}
		}
		switch {
		case typ == markerEOS:
			return grains, nil
		case typ <= markerProgress && lba < fileSectors:
			sec += 1 + lba
		default:
			return grains, nil
		}
	}
	return grains, nil
}

func (s *streamExtent) gteOf(off int64) (uint32, error) {
	if s.salvaged != nil {
		return s.salvaged[uint32(off/s.grain)], nil
	}
	v, _, err := s.gte(off)
	return v, err
}

func (s *streamExtent) lookup(off, n int64) (blockState, int64, error) {
	if s.salvaged == nil {
		return s.sparseExtent.lookup(off, n)
	}
	v := s.salvaged[uint32(off/s.grain)]
	st := s.stateOf(v)
	pos := (off/s.grain + 1) * s.grain
	for pos < off+n && s.stateOf(s.salvaged[uint32(pos/s.grain)]) == st {
		pos += s.grain
	}
	return st, min(pos, off+n) - off, nil
}

func (s *streamExtent) readAt(p []byte, off int64) error {
	for len(p) > 0 {
		in := off % s.grain
		c := min(int64(len(p)), s.grain-in)
		v, err := s.gteOf(off)
		if err != nil {
			return err
		}
		if v <= 1 {
			clear(p[:c])
		} else {
			g, err := s.grainData(off/s.grain, v)
			if err != nil {
				return err
			}
			copy(p[:c], g[in:])
		}
		p = p[c:]
		off += c
	}
	return nil
}

// grainData returns the inflated grain idx stored at sector v.
func (s *streamExtent) grainData(idx int64, v uint32) ([]byte, error) {
	s.cmu.Lock()
	if g, ok := s.cache[idx]; ok {
		s.cmu.Unlock()
		return g, nil
	}
	s.cmu.Unlock()
	g, err := s.inflateGrain(idx, v)
	if err != nil {
		return nil, err
	}
	s.cmu.Lock()
	if len(s.order) >= streamGrainCache {
		delete(s.cache, s.order[0])
		s.order = s.order[1:]
	}
	s.cache[idx] = g
	s.order = append(s.order, idx)
	s.cmu.Unlock()
	return g, nil
}

func (s *streamExtent) inflateGrain(idx int64, v uint32) ([]byte, error) {
	pos := int64(v) * disk.SectorSize
	maxComp := 2*s.grain + disk.SectorSize
	bp, _ := s.bpool.Get().(*[]byte)
	if bp == nil {
		b := make([]byte, maxComp+12)
		bp = &b
	}
	defer s.bpool.Put(bp)
	buf := *bp
	n, err := s.f.ReadAt(buf, pos)
	if err != nil && err != io.EOF {
		return nil, disk.Wrap(err, "vmdk: read grain", s.name, pos)
	}
	buf = buf[:n]
	le := binary.LittleEndian
	var data []byte
	switch {
	case s.markers:
		if len(buf) < 12 {
			return nil, disk.Errorf(disk.ErrCorrupt, "vmdk: %s: grain marker at sector %d past end of file", s.name, v)
		}
		lba, size := le.Uint64(buf), int64(le.Uint32(buf[8:]))
		if lba != uint64(idx)*s.h.GrainSize {
			return nil, disk.Errorf(disk.ErrCorrupt, "vmdk: %s: grain marker at sector %d says LBA %d, the grain table says %d", s.name, v, lba, uint64(idx)*s.h.GrainSize)
		}
		if size == 0 || size > maxComp || 12+size > int64(len(buf)) {
			return nil, disk.Errorf(disk.ErrCorrupt, "vmdk: %s: grain at sector %d has an invalid compressed size %d", s.name, v, size)
		}
		data = buf[12 : 12+size]
	default:
		// Compressed without markers: open-vmdk puts a 4-byte length first,
		// qemu starts the zlib stream at the sector.
		if len(buf) >= 6 && isZlibHeader(buf[4:]) && int64(le.Uint32(buf)) <= maxComp && int64(le.Uint32(buf))+4 <= int64(len(buf)) {
			data = buf[4 : 4+le.Uint32(buf)]
		} else {
			data = buf
		}
	}
	want := min(s.grain, s.size_-idx*s.grain)
	out := make([]byte, s.grain)
	got, err := s.inflate(data, out[:want])
	if err != nil || int64(got) != want {
		return nil, disk.Errorf(disk.ErrCorrupt, "vmdk: %s: grain at sector %d does not inflate to %d bytes (got %d): %v", s.name, v, want, got, err)
	}
	return out, nil
}

func isZlibHeader(b []byte) bool {
	return len(b) >= 2 && b[0]&0x0f == 8 && (uint16(b[0])<<8|uint16(b[1]))%31 == 0
}

// inflate decompresses zlib data (raw deflate as a fallback) into out and
// returns the bytes produced; more output than len(out) is an error.
func (s *streamExtent) inflate(data, out []byte) (int, error) {
	var r io.Reader
	if isZlibHeader(data) {
		zr, _ := s.zpool.Get().(io.ReadCloser)
		var err error
		if zr == nil {
			zr, err = zlib.NewReader(bytes.NewReader(data))
		} else {
			err = zr.(zlib.Resetter).Reset(bytes.NewReader(data), nil)
		}
		if err != nil {
			return 0, err
		}
		defer s.zpool.Put(zr)
		r = zr
	} else {
		r = flate.NewReader(bytes.NewReader(data))
	}
	n, err := io.ReadFull(r, out)
	if err == io.ErrUnexpectedEOF || err == io.EOF {
		return n, nil
	}
	if err != nil {
		return n, err
	}
	var one [1]byte
	if m, _ := r.Read(one[:]); m > 0 {
		return n, errors.New("grain inflates to more than its size")
	}
	return n, nil
}

func (s *streamExtent) writeAt([]byte, int64, io.ReaderAt) error {
	return disk.Errorf(disk.ErrNotSupported, "vmdk: %s: streamOptimized images cannot be modified in place; convert them to another subformat", s.name)
}

func (s *streamExtent) flush() error { return nil }

func (s *streamExtent) close() error { return s.f.Close() }
