package lvm

import (
	"io"
	"sort"

	"github.com/vdisk-project/vdisk/disk"
)

// Piece is a range of an LV mapped to PV devices: linearly onto one
// device, striped over several, or (with no devices) reading as zeros.
type Piece struct {
	// Off and Len are the range of the LV, in bytes.
	Off, Len int64
	// StripeSize is the striping unit in bytes when there are several
	// stripes.
	StripeSize int64
	Stripes    []PieceStripe
}

// PieceStripe is where one stripe of a Piece lies.
type PieceStripe struct {
	// Device is the index of the PV's device in the scanned devices.
	Device int
	// Off is the byte offset on that device of the stripe's first byte.
	Off int64
}

// Map returns the pieces lv's bytes are made of, in order, or an error
// matching disk.ErrNotSupported naming the reason when lv cannot be read
// (see Unsupported).
func (vg *VG) Map(lv *LV) ([]Piece, error) {
	if why := vg.Unsupported(lv); why != "" {
		return nil, disk.Errorf(disk.ErrNotSupported, "lvm: LV %s/%s: %s", vg.Name, lv.Name, why)
	}
	var ps []Piece
	for _, s := range lv.Segments {
		p := Piece{Off: s.StartExtent * vg.ExtentSize, Len: s.ExtentCount * vg.ExtentSize, StripeSize: s.StripeSize}
		for _, st := range s.Stripes {
			pv := vg.PV(st.PV)
			p.Stripes = append(p.Stripes, PieceStripe{Device: pv.Device, Off: pv.PEStart + st.StartExtent*vg.ExtentSize})
		}
		if len(p.Stripes) > 1 && (p.StripeSize <= 0 || (p.Len/int64(len(p.Stripes)))%p.StripeSize != 0) {
			// LVM keeps each stripe a whole number of units long
			// (extents are multiples of the stripe size).
			return nil, disk.Errorf(disk.ErrCorrupt, "lvm: LV %s/%s: stripe size %d does not divide the stripes", vg.Name, lv.Name, p.StripeSize)
		}
		ps = append(ps, p)
	}
	return ps, nil
}

// Reader reads an LV's bytes from its PVs' devices.
type Reader struct {
	size   int64
	pieces []Piece
	devs   []Device
}

// Open returns a Reader of lv's bytes. An LV that cannot be read gives an
// error matching disk.ErrNotSupported.
func (vg *VG) Open(lv *LV) (*Reader, error) {
	ps, err := vg.Map(lv)
	if err != nil {
		return nil, err
	}
	r := &Reader{pieces: ps, devs: vg.devs}
	if len(ps) > 0 {
		r.size = ps[len(ps)-1].Off + ps[len(ps)-1].Len
	}
	for _, p := range ps {
		for _, st := range p.Stripes {
			if st.Device < 0 || st.Device >= len(vg.devs) {
				return nil, disk.Errorf(disk.ErrNotSupported, "lvm: LV %s/%s: a PV is missing", vg.Name, lv.Name)
			}
			if st.Off+p.Len/int64(len(p.Stripes)) > vg.devs[st.Device].Size {
				return nil, disk.Errorf(disk.ErrCorrupt, "lvm: LV %s/%s: extents past the end of %s", vg.Name, lv.Name, vg.devs[st.Device].Name)
			}
		}
	}
	return r, nil
}

// Size returns the LV's size in bytes.
func (r *Reader) Size() int64 { return r.size }

// ReadAt reads the LV's bytes at off, following io.ReaderAt. It is safe
// for concurrent use when the devices' ReadAt are.
func (r *Reader) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, disk.Errorf(disk.ErrInvalid, "lvm: read at negative offset %d", off)
	}
	var eof error
	if off >= r.size {
		return 0, io.EOF
	}
	if int64(len(p)) > r.size-off {
		p, eof = p[:r.size-off], io.EOF
	}
	n := 0
	i := sort.Search(len(r.pieces), func(i int) bool { return r.pieces[i].Off+r.pieces[i].Len > off })
	for n < len(p) && i < len(r.pieces) {
		pc := &r.pieces[i]
		rel := off + int64(n) - pc.Off
		chunk := min(int64(len(p)-n), pc.Len-rel)
		var dev int
		var devOff int64
		switch len(pc.Stripes) {
		case 0:
			clear(p[n : n+int(chunk)])
			n += int(chunk)
			i++
			continue
		case 1:
			dev, devOff = pc.Stripes[0].Device, pc.Stripes[0].Off+rel
		default:
			// Units go round the stripes: unit u lies on stripe u mod k,
			// in row u div k.
			k := int64(len(pc.Stripes))
			u := rel / pc.StripeSize
			in := rel % pc.StripeSize
			chunk = min(chunk, pc.StripeSize-in)
			st := pc.Stripes[u%k]
			dev, devOff = st.Device, st.Off+(u/k)*pc.StripeSize+in
		}
		m, err := r.devs[dev].R.ReadAt(p[n:n+int(chunk)], devOff)
		n += m
		if err != nil && !(err == io.EOF && int64(m) == chunk) {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return n, disk.Wrap(err, "lvm: read "+r.devs[dev].Name, "", devOff)
		}
		if rel+chunk >= pc.Len {
			i++
		}
	}
	return n, eof
}
