package ntfs

import (
	"io"
	"sort"
	"sync"

	"github.com/vdisk-project/vdisk/disk"
)

// maxCompUnit bounds a compression unit's size (NTFS writes 16 clusters
// of at most 4 KiB).
const maxCompUnit = 64 << 10

// run maps n clusters from vcn to lcn; lcn < 0 is a hole (sparse).
type run struct {
	vcn, lcn, n int64
}

// decodeRuns decodes a mapping pairs array for the VCNs start..last. Each
// pair is a header byte (low nibble: bytes of the length, high nibble:
// bytes of the signed LCN delta, 0 for a hole) and the two numbers, little
// endian. Every run must lie inside the volume's clusters.
func decodeRuns(b []byte, start, last, clusters int64) ([]run, error) {
	var runs []run
	vcn, lcn := start, int64(0)
	for i := 0; i < len(b) && b[i] != 0; {
		h := b[i]
		ls, os := int(h&0xf), int(h>>4)
		i++
		if ls == 0 || ls > 8 || os > 8 || i+ls+os > len(b) {
			return nil, disk.Errorf(disk.ErrCorrupt, "ntfs: runlist header 0x%02x at byte %d breaks the format", h, i-1)
		}
		n := int64(uvarint(b[i : i+ls]))
		i += ls
		if n <= 0 || n > last-vcn+1 {
			return nil, disk.Errorf(disk.ErrCorrupt, "ntfs: run of %d clusters at vcn %d beyond last vcn %d", n, vcn, last)
		}
		r := run{vcn: vcn, lcn: -1, n: n}
		if os > 0 {
			lcn += svarint(b[i : i+os])
			i += os
			if lcn < 0 || lcn >= clusters || n > clusters-lcn {
				return nil, disk.Errorf(disk.ErrCorrupt, "ntfs: run of %d clusters at lcn %d past the end of the volume (%d clusters)", n, lcn, clusters)
			}
			r.lcn = lcn
		}
		runs = append(runs, r)
		vcn += n
	}
	if vcn != last+1 {
		return nil, disk.Errorf(disk.ErrCorrupt, "ntfs: runlist maps vcn %d..%d, header says ..%d", start, vcn-1, last)
	}
	return runs, nil
}

func uvarint(b []byte) uint64 {
	var v uint64
	for i := len(b) - 1; i >= 0; i-- {
		v = v<<8 | uint64(b[i])
	}
	return v
}

func svarint(b []byte) int64 {
	v := uvarint(b)
	if s := uint(len(b) * 8); s < 64 && b[len(b)-1]&0x80 != 0 {
		v |= ^uint64(0) << s
	}
	return int64(v)
}

// stream is one attribute's value read as a byte stream: resident bytes,
// or clusters through a runlist (holes and bytes past the initialized size
// read as zeros), or LZNT1 compression units.
type stream struct {
	f        *FS
	a        *attr
	size     int64
	compUnit int64 // bytes per compression unit, 0 when not compressed

	mu        sync.Mutex // guards the one decompressed unit kept
	unitIndex int64
	unit      []byte
}

func (f *FS) newStream(a *attr) (*stream, error) {
	s := &stream{f: f, a: a, size: a.size, unitIndex: -1}
	if a.resident {
		return s, nil
	}
	if a.err != nil {
		return nil, a.err
	}
	if a.flags&flagEncrypted != 0 {
		return nil, disk.Errorf(disk.ErrNotSupported, "ntfs: encrypted (EFS) data")
	}
	if a.flags&flagCompressed != 0 {
		if a.cuShift == 0 || f.clusterSize > 4096 || f.clusterSize<<a.cuShift > maxCompUnit {
			return nil, disk.Errorf(disk.ErrNotSupported, "ntfs: compressed data with compression unit %d and %d-byte clusters", a.cuShift, f.clusterSize)
		}
		s.compUnit = f.clusterSize << a.cuShift
	} else if a.flags&0xff != 0 {
		return nil, disk.Errorf(disk.ErrNotSupported, "ntfs: compression method 0x%x", a.flags&0xff)
	}
	return s, nil
}

// allocated returns the bytes of clusters the stream occupies.
func (a *attr) allocated(clusterSize int64) int64 {
	var n int64
	for _, r := range a.runs {
		if r.lcn >= 0 {
			n += r.n
		}
	}
	return n * clusterSize
}

func (s *stream) readFull(b []byte, off int64) error {
	n, err := s.ReadAt(b, off)
	if n == len(b) {
		return nil
	}
	if err == nil || err == io.EOF {
		err = disk.Errorf(disk.ErrCorrupt, "ntfs: %d bytes at %d past the end of a %d-byte stream", len(b), off, s.size)
	}
	return err
}

// ReadAt reads the stream like io.ReaderAt.
func (s *stream) ReadAt(b []byte, off int64) (int, error) {
	if off < 0 {
		return 0, disk.Errorf(disk.ErrInvalid, "ntfs: negative offset %d", off)
	}
	if off >= s.size {
		return 0, io.EOF
	}
	want := len(b)
	if int64(len(b)) > s.size-off {
		b = b[:s.size-off]
	}
	var err error
	switch {
	case s.a.resident:
		copy(b, s.a.value[off:])
	case s.compUnit > 0:
		err = s.readCompressed(b, off)
	default:
		err = s.readRuns(b, off)
	}
	if err != nil {
		return 0, err
	}
	if len(b) < want {
		return len(b), io.EOF
	}
	return len(b), nil
}

// findRun returns the index of the run holding vcn, or len(runs).
func (s *stream) findRun(vcn int64) int {
	runs := s.a.runs
	return sort.Search(len(runs), func(i int) bool { return runs[i].vcn+runs[i].n > vcn })
}

// readRuns reads b at off through the runlist, one volume read per run.
func (s *stream) readRuns(b []byte, off int64) error {
	cs := s.f.clusterSize
	init := s.a.initSize
	for len(b) > 0 {
		if off >= init {
			clear(b)
			return nil
		}
		vcn := off / cs
		i := s.findRun(vcn)
		if i == len(s.a.runs) || s.a.runs[i].vcn > vcn {
			return disk.Errorf(disk.ErrCorrupt, "ntfs: offset %d of a %d-byte stream is not mapped", off, s.size)
		}
		r := s.a.runs[i]
		n := min(int64(len(b)), (r.vcn+r.n)*cs-off, init-off)
		if r.lcn < 0 {
			clear(b[:n])
		} else if err := s.f.readFull(b[:n], (r.lcn+vcn-r.vcn)*cs+off%cs); err != nil {
			return err
		}
		b, off = b[n:], off+n
	}
	return nil
}

// readCompressed reads b at off one compression unit at a time. A unit
// whose clusters are all holes reads as zeros, one fully allocated is
// stored raw, and one partly allocated holds LZNT1 data in its allocated
// clusters.
func (s *stream) readCompressed(b []byte, off int64) error {
	for len(b) > 0 {
		u := off / s.compUnit
		data, err := s.loadUnit(u)
		if err != nil {
			return err
		}
		n := copy(b, data[off-u*s.compUnit:])
		b, off = b[n:], off+int64(n)
	}
	return nil
}

func (s *stream) loadUnit(u int64) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.unitIndex == u {
		return s.unit, nil
	}
	cs := s.f.clusterSize
	per := s.compUnit / cs
	first := u * per
	out := make([]byte, s.compUnit)
	// Collect the unit's allocated clusters, which come first.
	var raw []byte
	holes := false
	for vcn := first; vcn < first+per; {
		i := s.findRun(vcn)
		if i == len(s.a.runs) || s.a.runs[i].vcn > vcn {
			holes = true // past the mapped part: treat as holes
			break
		}
		r := s.a.runs[i]
		n := min(r.vcn+r.n-vcn, first+per-vcn)
		if r.lcn < 0 {
			holes = true
		} else {
			if holes {
				return nil, disk.Errorf(disk.ErrCorrupt, "ntfs: compression unit %d has clusters after a hole", u)
			}
			p := make([]byte, n*cs)
			if err := s.f.readFull(p, (r.lcn+vcn-r.vcn)*cs); err != nil {
				return nil, err
			}
			raw = append(raw, p...)
		}
		vcn += n
	}
	switch {
	case len(raw) == 0:
	case !holes:
		copy(out, raw)
	default:
		if err := lznt1(out, raw); err != nil {
			return nil, err
		}
	}
	if end := s.a.initSize - u*s.compUnit; end < int64(len(out)) {
		clear(out[max(end, 0):])
	}
	s.unitIndex, s.unit = u, out
	return out, nil
}

// lznt1 decompresses src into dst (one compression unit). The data is a
// sequence of chunks, each a 16-bit header (low 12 bits: chunk bytes
// after the header minus one, top bit: compressed) and up to 4 KiB of
// output. Compressed chunks are groups of a flag byte and eight tokens:
// a literal byte, or a 16-bit back reference whose split between offset
// and length depends on the position in the chunk. A short chunk leaves
// the rest of its 4 KiB as zeros.
func lznt1(dst, src []byte) error {
	const chunk = 4096
	for d := 0; d < len(dst) && len(src) >= 2; d += chunk {
		h := le.Uint16(src)
		if h == 0 {
			break
		}
		n := int(h&0xfff) + 1
		if 2+n > len(src) {
			return disk.Errorf(disk.ErrCorrupt, "ntfs: lznt1 chunk of %d bytes past the compressed data", n)
		}
		in := src[2 : 2+n]
		src = src[2+n:]
		out := dst[d:min(d+chunk, len(dst))]
		if h&0x8000 == 0 {
			copy(out, in)
			continue
		}
		p := 0
		for i := 0; i < len(in); {
			flags := in[i]
			i++
			for bit := 0; bit < 8 && i < len(in); bit++ {
				if p >= len(out) {
					return disk.Errorf(disk.ErrCorrupt, "ntfs: lznt1 chunk decompresses past 4 KiB")
				}
				if flags&(1<<bit) == 0 {
					out[p] = in[i]
					p++
					i++
					continue
				}
				if i+2 > len(in) {
					return disk.Errorf(disk.ErrCorrupt, "ntfs: lznt1 truncated back reference")
				}
				t := int(le.Uint16(in[i:]))
				i += 2
				lenBits := 12
				for q := p - 1; q >= 0x10; q >>= 1 {
					lenBits--
				}
				back := t>>lenBits + 1
				l := t&(1<<lenBits-1) + 3
				if back > p || p+l > len(out) {
					return disk.Errorf(disk.ErrCorrupt, "ntfs: lznt1 back reference (%d, %d) at %d out of range", back, l, p)
				}
				for k := 0; k < l; k++ {
					out[p] = out[p-back]
					p++
				}
			}
		}
	}
	return nil
}
