package lvm

import (
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/vdisk-project/vdisk/disk"
)

const (
	sectorSize = 512
	// maxExtentBytes bounds an extent count times the extent size, so that
	// byte offsets stay far from overflowing an int64.
	maxBytes    = 1 << 60
	maxStripes  = 128
	maxSegments = 1 << 16
)

// VG is a volume group as its text metadata describes it.
type VG struct {
	Name  string
	UUID  string
	Seqno int64
	// ExtentSize is the size of a physical and logical extent in bytes
	// (the metadata records it in 512-byte sectors).
	ExtentSize int64
	Status     []string
	Flags      []string
	PVs        []*PV
	// LVs lists every logical volume, the hidden ones (thin pool data,
	// RAID images, snapshot stores) too; see LV.Visible.
	LVs []*LV
	// Problems says what was wrong with the copies of the metadata that
	// were not chosen, or with the PVs found.
	Problems []string

	devs []Device
	// Indexes built by ParseVG, so that hostile metadata with many PVs
	// and LVs costs linear time.
	pvByName  map[string]*PV
	lvByName  map[string]*LV
	cowOrigin map[string]string // snapshot store LV to its origin
}

// PV is a physical volume of a VG.
type PV struct {
	// Name is the PV's key in the metadata ("pv0").
	Name string
	UUID string
	// DeviceHint is the device path the host last saw it at.
	DeviceHint string
	Status     []string
	Flags      []string
	// DevSize is the PV's size and PEStart the offset of its first
	// extent, in bytes.
	DevSize, PEStart int64
	PECount          int64
	// Device is the index in the scanned devices of the PV, -1 when the
	// PV was not found.
	Device int
}

// LV is a logical volume.
type LV struct {
	Name     string
	UUID     string
	Status   []string
	Flags    []string
	Tags     []string
	Segments []*Segment
}

// Visible reports whether lv is one users see, not a hidden part of
// another LV such as a thin pool's data or a RAID image: its status says
// VISIBLE, or it is a snapshot's copy-on-write store (which the tools
// show under the snapshot's name, while the metadata hides it).
func (vg *VG) Visible(lv *LV) bool {
	return slices.Contains(lv.Status, "VISIBLE") || vg.snapshotOf(lv) != ""
}

// snapshotOf returns the origin of the snapshot whose copy-on-write store
// lv is, or "".
func (vg *VG) snapshotOf(lv *LV) string {
	if vg.cowOrigin != nil {
		return vg.cowOrigin[lv.Name]
	}
	for _, o := range vg.LVs {
		for _, s := range o.Segments {
			if s.Type == "snapshot" {
				if cow, _ := s.Section.Str("cow_store"); cow == lv.Name {
					origin, _ := s.Section.Str("origin")
					return origin
				}
			}
		}
	}
	return ""
}

// Extents returns the LV's length in extents.
func (lv *LV) Extents() int64 {
	var n int64
	for _, s := range lv.Segments {
		n += s.ExtentCount
	}
	return n
}

// Segment is a run of an LV's extents mapped one way.
type Segment struct {
	StartExtent, ExtentCount int64
	// Type is LVM's segment type: "striped" (linear is striped over one
	// stripe), "thin", "thin-pool", "raid1", "mirror", "snapshot", ….
	Type string
	// StripeSize is the striping unit in bytes (0 for a linear segment).
	StripeSize int64
	// Stripes are the PV ranges the segment's extents lie on: each holds
	// ExtentCount/len(Stripes) extents from StartExtent on its PV.
	Stripes []Stripe
	// Section is the segment's metadata, for the keys of other types.
	Section *Section
}

// Stripe is a range of a PV holding part of a segment.
type Stripe struct {
	PV          string // the PV's key in the metadata ("pv0")
	StartExtent int64
}

// PV returns the PV of the given key ("pv0"), or nil.
func (vg *VG) PV(name string) *PV {
	if vg.pvByName != nil {
		return vg.pvByName[name]
	}
	for _, p := range vg.PVs {
		if p.Name == name {
			return p
		}
	}
	return nil
}

// LV returns the named LV, or nil.
func (vg *VG) LV(name string) *LV {
	if vg.lvByName != nil {
		return vg.lvByName[name]
	}
	for _, l := range vg.LVs {
		if l.Name == name {
			return l
		}
	}
	return nil
}

// ParseVG parses a metadata text into a VG. Metadata that is not a VG's,
// or whose numbers are inconsistent (extents past a PV's end, segments
// that leave gaps, stripes on unknown PVs), gives an error matching
// disk.ErrCorrupt. Every PV's Device is -1.
func ParseVG(text []byte) (*VG, error) {
	root, err := Parse(text)
	if err != nil {
		return nil, err
	}
	if c, _ := root.Str("contents"); c != "" && c != "Text Format Volume Group" {
		return nil, disk.Errorf(disk.ErrCorrupt, "lvm: metadata contents %q", c)
	}
	if len(root.Sections) != 1 {
		return nil, disk.Errorf(disk.ErrCorrupt, "lvm: metadata holds %d volume groups, want 1", len(root.Sections))
	}
	s := root.Sections[0]
	vg := &VG{Name: s.Name, Status: s.Strings("status"), Flags: s.Strings("flags"),
		pvByName: map[string]*PV{}, lvByName: map[string]*LV{}, cowOrigin: map[string]string{}}
	bad := func(format string, args ...any) (*VG, error) {
		return nil, disk.Errorf(disk.ErrCorrupt, "lvm: VG %s: %s", vg.Name, fmt.Sprintf(format, args...))
	}
	var ok bool
	if vg.UUID, ok = s.Str("id"); !ok {
		return bad("no id")
	}
	if vg.Seqno, ok = s.Int("seqno"); !ok || vg.Seqno < 0 {
		return bad("no seqno")
	}
	if f, ok := s.Str("format"); ok && f != "lvm2" {
		return nil, disk.Errorf(disk.ErrNotSupported, "lvm: VG %s: format %q", vg.Name, f)
	}
	es, ok := s.Int("extent_size")
	if !ok || es <= 0 || es > 1<<32 {
		return bad("extent_size %d", es)
	}
	vg.ExtentSize = es * sectorSize
	maxExtents := maxBytes / vg.ExtentSize

	for _, ps := range s.Sub("physical_volumes").sections() {
		pv := &PV{Name: ps.Name, Device: -1, Status: ps.Strings("status"), Flags: ps.Strings("flags")}
		pv.UUID, _ = ps.Str("id")
		pv.DeviceHint, _ = ps.Str("device")
		devSize, _ := ps.Int("dev_size")
		peStart, ok1 := ps.Int("pe_start")
		peCount, ok2 := ps.Int("pe_count")
		if pv.UUID == "" || !ok1 || !ok2 || devSize < 0 || peStart < 0 || peCount < 0 ||
			devSize > maxBytes/sectorSize || peStart > maxBytes/sectorSize || peCount > maxExtents {
			return bad("PV %s: bad id, dev_size, pe_start or pe_count", ps.Name)
		}
		pv.DevSize, pv.PEStart, pv.PECount = devSize*sectorSize, peStart*sectorSize, peCount
		if vg.PV(pv.Name) != nil {
			return bad("PV %s twice", pv.Name)
		}
		vg.PVs = append(vg.PVs, pv)
		vg.pvByName[pv.Name] = pv
	}
	for _, ls := range s.Sub("logical_volumes").sections() {
		lv := &LV{Name: ls.Name, Status: ls.Strings("status"), Flags: ls.Strings("flags"), Tags: ls.Strings("tags")}
		lv.UUID, _ = ls.Str("id")
		for _, ss := range ls.sections() {
			if !strings.HasPrefix(ss.Name, "segment") {
				continue
			}
			if len(lv.Segments) >= maxSegments {
				return bad("LV %s has more than %d segments", lv.Name, maxSegments)
			}
			seg, err := parseSegment(ss, maxExtents)
			if err != nil {
				return bad("LV %s %s: %v", lv.Name, ss.Name, err)
			}
			lv.Segments = append(lv.Segments, seg)
		}
		sort.Slice(lv.Segments, func(i, j int) bool { return lv.Segments[i].StartExtent < lv.Segments[j].StartExtent })
		var next int64
		for _, seg := range lv.Segments {
			if seg.StartExtent != next {
				return bad("LV %s: segment at extent %d, want %d", lv.Name, seg.StartExtent, next)
			}
			if next += seg.ExtentCount; next > maxExtents {
				return bad("LV %s is larger than %d extents", lv.Name, maxExtents)
			}
			for _, st := range seg.Stripes {
				pv := vg.PV(st.PV)
				if pv == nil {
					return bad("LV %s: stripe on unknown PV %q", lv.Name, st.PV)
				}
				if st.StartExtent > pv.PECount || seg.ExtentCount/int64(len(seg.Stripes)) > pv.PECount-st.StartExtent {
					return bad("LV %s: extents %d+%d past the end of %s (%d extents)", lv.Name, st.StartExtent, seg.ExtentCount/int64(len(seg.Stripes)), pv.Name, pv.PECount)
				}
			}
		}
		if vg.LV(lv.Name) != nil {
			return bad("LV %s twice", lv.Name)
		}
		vg.LVs = append(vg.LVs, lv)
		vg.lvByName[lv.Name] = lv
		for _, seg := range lv.Segments {
			if seg.Type == "snapshot" {
				cow, _ := seg.Section.Str("cow_store")
				origin, _ := seg.Section.Str("origin")
				if cow != "" && origin != "" {
					vg.cowOrigin[cow] = origin
				}
			}
		}
	}
	return vg, nil
}

// sections returns s's subsections (nil for a nil s).
func (s *Section) sections() []*Section {
	if s == nil {
		return nil
	}
	return s.Sections
}

func parseSegment(ss *Section, maxExtents int64) (*Segment, error) {
	seg := &Segment{Section: ss}
	var ok bool
	seg.StartExtent, ok = ss.Int("start_extent")
	if !ok || seg.StartExtent < 0 || seg.StartExtent > maxExtents {
		return nil, fmt.Errorf("bad start_extent")
	}
	seg.ExtentCount, ok = ss.Int("extent_count")
	if !ok || seg.ExtentCount <= 0 || seg.ExtentCount > maxExtents {
		return nil, fmt.Errorf("bad extent_count")
	}
	seg.Type, _ = ss.Str("type")
	if seg.Type != "striped" {
		return seg, nil
	}
	n, ok := ss.Int("stripe_count")
	if !ok || n < 1 || n > maxStripes {
		return nil, fmt.Errorf("stripe_count %d", n)
	}
	if seg.ExtentCount%n != 0 {
		return nil, fmt.Errorf("%d extents do not divide into %d stripes", seg.ExtentCount, n)
	}
	if n > 1 {
		sz, ok := ss.Int("stripe_size")
		if !ok || sz <= 0 || sz > 1<<32 {
			return nil, fmt.Errorf("stripe_size %d", sz)
		}
		seg.StripeSize = sz * sectorSize
	}
	v := ss.Keys["stripes"]
	if v.Kind != Array || int64(len(v.Array)) != 2*n {
		return nil, fmt.Errorf("stripes has %d elements, want %d", len(v.Array), 2*n)
	}
	for i := 0; i < len(v.Array); i += 2 {
		name, start := v.Array[i], v.Array[i+1]
		if name.Kind != String || start.Kind != Int || start.Int < 0 || start.Int > maxExtents {
			return nil, fmt.Errorf("stripes element %d is not a PV name and an extent", i/2)
		}
		seg.Stripes = append(seg.Stripes, Stripe{PV: name.Str, StartExtent: start.Int})
	}
	return seg, nil
}

// Unsupported says why lv cannot be read, or "" when it can: a segment
// type other than striped (linear) and zero, a snapshot's copy-on-write
// store, a PV that is missing.
func (vg *VG) Unsupported(lv *LV) string {
	if origin := vg.snapshotOf(lv); origin != "" {
		return "snapshot of " + origin + " (a copy-on-write store; not supported)"
	}
	for _, s := range lv.Segments {
		switch t := s.Type; {
		case t == "striped" || t == "zero":
		case t == "thin-pool":
			return "thin pool (thin provisioning is not supported)"
		case t == "thin":
			pool, _ := s.Section.Str("thin_pool")
			return "thin LV in pool " + pool + " (thin provisioning is not supported)"
		case t == "mirror" || strings.HasPrefix(t, "raid"):
			return "RAID/mirror LV (" + t + ") is not supported"
		case t == "snapshot":
			return "snapshot (not supported)"
		default:
			return "segment type " + strconv.Quote(t) + " is not supported"
		}
	}
	for _, s := range lv.Segments {
		for _, st := range s.Stripes {
			if pv := vg.PV(st.PV); pv.Device < 0 {
				return "PV uuid " + pv.UUID + " missing"
			}
		}
	}
	return ""
}
