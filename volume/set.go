package volume

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"

	"github.com/vdisk-project/vdisk/disk"
	"github.com/vdisk-project/vdisk/volume/lvm"
)

// Kind says what a volume is.
type Kind string

// The kinds of volumes.
const (
	KindDisk      Kind = "disk"      // a whole disk without a partition table
	KindPartition Kind = "partition" // a partition of a disk
	KindLV        Kind = "lv"        // an LVM logical volume
)

// Segment is a range of a volume and where its bytes lie.
type Segment struct {
	// Off and Len are the range in the volume, in bytes.
	Off, Len int64
	// StripeSize is the striping unit in bytes when there are several
	// stripes: the range's units go round the stripes in turn.
	StripeSize int64
	Stripes    []Stripe
}

// Stripe is where (one stripe of) a segment lies on a disk of the set.
type Stripe struct {
	// Disk is the index of the disk in the set, -1 when the PV holding
	// it is missing.
	Disk int
	// Off is the byte offset on the disk (not on the partition).
	Off int64
}

// LVInfo names an LVM logical volume.
type LVInfo struct {
	VG, LV         string
	VGUUID, LVUUID string
	Tags           []string
}

// SetOptions configure OpenSet. A nil *SetOptions means the defaults.
type SetOptions struct {
	// NoLVM skips looking for LVM physical volumes.
	NoLVM bool
}

// Set is a set of disks opened together (VixMntapi_OpenDisks): the
// volumes of all of them, LVM volume groups spanning them included.
//
// A Set reads the disks and never writes them: each disk is wrapped so
// that a write fails with disk.ErrPermission. It does not own the disks:
// the caller closes them after it is done with the set. A Set and its
// Volumes are safe for concurrent use when the disks' ReadAt are.
type Set struct {
	disks    []disk.Disk
	tables   []*Table
	vols     []*Volume
	problems []string

	mu     sync.Mutex
	mounts map[string]string // volume ID to mount point, from OSInfo
}

// maxLVs bounds the logical volumes a set lists (each costs a probe).
const maxLVs = 4096

// readOnly refuses writes to a disk of a set.
type readOnly struct{ disk.Disk }

func (r readOnly) WriteAt([]byte, int64) (int, error) {
	return 0, disk.Errorf(disk.ErrPermission, "volume: the disks of a set are read-only")
}
func (r readOnly) Flush() error   { return nil }
func (r readOnly) ReadOnly() bool { return true }

// OpenSet opens disks together and lists their volumes: each disk's
// partitions (or the whole disk), and the logical volumes of the LVM
// volume groups whose PVs are on any of them. Damage that leaves the rest
// readable (a bad GPT copy, a corrupt LVM metadata copy) is named in
// Problems; a partition table that cannot be read fails with
// disk.ErrCorrupt.
func OpenSet(ctx context.Context, disks []disk.Disk, opts *SetOptions) (*Set, error) {
	if opts == nil {
		opts = &SetOptions{}
	}
	s := &Set{mounts: map[string]string{}}
	var pvs []lvm.Device
	var pvVols []*Volume
	for i, d := range disks {
		d = readOnly{d}
		s.disks = append(s.disks, d)
		t, vs, err := Volumes(ctx, d)
		if err != nil {
			return nil, fmt.Errorf("disk %d: %w", i, err)
		}
		s.tables = append(s.tables, t)
		for _, p := range t.Problems {
			s.problems = append(s.problems, fmt.Sprintf("disk%d: %s", i, p))
		}
		for j := range vs {
			v := &vs[j]
			v.Disk, v.Disks = i, []int{i}
			v.set = s
			if v.Partition == nil {
				v.ID, v.Kind = fmt.Sprintf("disk%d", i), KindDisk
			} else {
				v.ID, v.Kind = fmt.Sprintf("disk%d/p%d", i, v.Partition.Number), KindPartition
			}
			if v.Size > 0 {
				v.Segments = []Segment{{Len: v.Size, Stripes: []Stripe{{Disk: i, Off: v.Start}}}}
			}
			if v.Unsupported == "" {
				v.Unsupported = unsupported(v)
			}
			s.vols = append(s.vols, v)
			if v.Type == "LVM2_member" && !opts.NoLVM {
				pvs = append(pvs, lvm.Device{R: io.NewSectionReader(d, v.Start, v.Size), Size: v.Size, Name: v.ID})
				pvVols = append(pvVols, v)
			}
		}
	}
	if len(pvs) > 0 {
		res, err := lvm.Scan(ctx, pvs)
		if err != nil {
			return nil, err
		}
		s.problems = append(s.problems, res.Problems...)
		nLV := 0
		for _, vg := range res.VGs {
			for _, p := range vg.Problems {
				s.problems = append(s.problems, "VG "+vg.Name+": "+p)
			}
			for _, lv := range vg.LVs {
				if !vg.Visible(lv) {
					continue
				}
				if nLV++; nLV > maxLVs {
					s.problems = append(s.problems, fmt.Sprintf("VG %s: more than %d LVs in the set; LV %s and those after it are not listed", vg.Name, maxLVs, lv.Name))
					break
				}
				v, err := lvVolume(s, vg, lv, pvVols)
				if err != nil {
					return nil, err
				}
				s.vols = append(s.vols, v)
			}
		}
	}
	return s, nil
}

func lvVolume(s *Set, vg *lvm.VG, lv *lvm.LV, pvVols []*Volume) (*Volume, error) {
	v := &Volume{
		ID: "lvm/" + vg.Name + "/" + lv.Name, Kind: KindLV, Disk: -1, set: s,
		LV:          &LVInfo{VG: vg.Name, LV: lv.Name, VGUUID: vg.UUID, LVUUID: lv.UUID, Tags: lv.Tags},
		Size:        lv.Extents() * vg.ExtentSize,
		Unsupported: vg.Unsupported(lv),
	}
	for _, seg := range lv.Segments {
		sg := Segment{Off: seg.StartExtent * vg.ExtentSize, Len: seg.ExtentCount * vg.ExtentSize, StripeSize: seg.StripeSize}
		for _, st := range seg.Stripes {
			pv := vg.PV(st.PV)
			if pv.Device < 0 {
				sg.Stripes = append(sg.Stripes, Stripe{Disk: -1, Off: -1})
				continue
			}
			pvv := pvVols[pv.Device]
			sg.Stripes = append(sg.Stripes, Stripe{Disk: pvv.Disk, Off: pvv.Start + pv.PEStart + st.StartExtent*vg.ExtentSize})
			if !slices.Contains(v.Disks, pvv.Disk) {
				v.Disks = append(v.Disks, pvv.Disk)
			}
		}
		v.Segments = append(v.Segments, sg)
	}
	slices.Sort(v.Disks)
	if v.Unsupported != "" {
		return v, nil
	}
	r, err := vg.Open(lv)
	if err != nil {
		// Extents past a PV's end: list the LV, with the reason.
		v.Unsupported = strings.TrimPrefix(err.Error(), "lvm: ")
		return v, nil
	}
	v.r = r
	if v.Filesystem, err = probe(r, 0, v.Size); err != nil {
		return nil, fmt.Errorf("%s: %w", v.ID, err)
	}
	if v.Unsupported == "" {
		v.Unsupported = unsupported(v)
	}
	return v, nil
}

// unsupported says why the contents of a partition or whole disk cannot
// be read as a filesystem by vdisk, when what they are is known.
func unsupported(v *Volume) string {
	switch v.Type {
	case "crypto_LUKS":
		return "LUKS" + v.Version + " encrypted volume (dm-crypt is not supported)"
	case "BitLocker":
		return "BitLocker encrypted volume (not supported)"
	case "linux_raid_member":
		s := "Linux md RAID member (metadata " + v.Version
		if v.Label != "" {
			s += ", array " + v.Label
		}
		return s + "; md RAID is not supported)"
	}
	if v.Partition == nil {
		return ""
	}
	switch v.Partition.Kind {
	case "windows-dynamic", "windows-ldm-metadata", "windows-ldm-data":
		return "Windows dynamic disk (LDM) partition (dynamic volumes are not supported)"
	case "windows-storage-spaces":
		return "Windows Storage Spaces pool member (not supported)"
	case "zfs":
		if v.Type == "" {
			return "ZFS pool member (not supported)"
		}
	}
	return ""
}

// Volumes lists every volume of the set, in a stable order: each disk's
// partitions (or the whole disk) by disk, then the LVM logical volumes by
// VG. Each has an ID stable across runs ("disk0", "disk1/p2",
// "lvm/vg0/root"). Each call returns fresh copies, whose MountPoint is
// what the last OSInfo found ("" before it ran).
func (s *Set) Volumes() []*Volume {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*Volume, len(s.vols))
	for i, v := range s.vols {
		c := *v
		c.MountPoint = s.mounts[v.ID]
		c.Disks = slices.Clone(v.Disks)
		c.Segments = slices.Clone(v.Segments)
		for j := range c.Segments {
			c.Segments[j].Stripes = slices.Clone(c.Segments[j].Stripes)
		}
		out[i] = &c
	}
	return out
}

// Volume returns the volume with the given ID, or an error matching
// disk.ErrNotFound.
func (s *Set) Volume(id string) (*Volume, error) {
	for _, v := range s.Volumes() {
		if v.ID == id {
			return v, nil
		}
	}
	return nil, disk.Errorf(disk.ErrNotFound, "volume: no volume %q", id)
}

// Tables returns each disk's partition table, by disk index.
func (s *Set) Tables() []*Table { return slices.Clone(s.tables) }

// Problems lists damage found while opening the set that did not stop
// it: partition tables read from a backup, LVM metadata copies ignored.
func (s *Set) Problems() []string { return slices.Clone(s.problems) }

// Disks returns the set's disks, each wrapped read-only.
func (s *Set) Disks() []disk.Disk { return slices.Clone(s.disks) }

// Open returns a reader of the volume's bytes: a partition's or disk's
// range, or an LV's extents mapped across its PVs. An LV that cannot be
// mapped (a thin, RAID or snapshot LV, or one on a missing PV; see
// Unsupported) gives an error matching disk.ErrNotSupported. Partitions
// always open, also when what they hold is Unsupported (encrypted, an md
// member): their raw bytes are there.
func (v *Volume) Open() (*io.SectionReader, error) {
	if v.r != nil {
		return io.NewSectionReader(v.r, 0, v.Size), nil
	}
	if v.Kind == KindLV {
		return nil, disk.Errorf(disk.ErrNotSupported, "volume: %s: %s", v.ID, v.Unsupported)
	}
	if v.set == nil || v.Disk < 0 || v.Disk >= len(v.set.disks) {
		return nil, disk.Errorf(disk.ErrInvalid, "volume: %s is not a volume of a set", v.ID)
	}
	return io.NewSectionReader(v.set.disks[v.Disk], v.Start, v.Size), nil
}
