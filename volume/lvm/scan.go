package lvm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"

	"github.com/vdisk-project/vdisk/disk"
)

// Device is a block device that may be a PV: a disk or a partition.
type Device struct {
	R    io.ReaderAt
	Size int64
	// Name says which device this is in problems ("disk0/p2").
	Name string
}

// Result is what Scan found.
type Result struct {
	VGs []*VG
	// Labels holds the label of each scanned device (nil for a device
	// without one), by index.
	Labels []*Label
	// Problems lists damaged labels and metadata areas, and PVs that
	// belong to no VG found.
	Problems []string
}

// copyInfo is what Scan keeps of a metadata copy read from one area: not
// its text, so that memory stays bounded by one parsed VG per UUID.
type copyInfo struct {
	dev, area int
	vgUUID    string
	seqno     int64
	sum       uint32 // LVM's CRC of the text
}

// Scan reads the labels of devs and the metadata in their metadata areas,
// and assembles the VGs they hold. For each VG it takes the copy of the
// metadata with the highest seqno among those whose checksum holds and
// that parse; the copies it ignored are named in the VG's Problems. A PV
// of a VG that no device carries has Device -1; LVs on it are
// Unsupported. Damaged labels or metadata are problems, not errors: Scan
// fails only on a failed read (disk.ErrAccess) or a cancelled ctx.
func Scan(ctx context.Context, devs []Device) (*Result, error) {
	res := &Result{Labels: make([]*Label, len(devs))}
	var copies []copyInfo
	best, bestCopy := map[string]*VG{}, map[string]copyInfo{}
	var order []string
	byUUID := map[string]int{}
	devProblems := map[int][]string{}
	for i, d := range devs {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		l, err := ReadLabel(d.R, d.Size)
		switch {
		case errors.Is(err, disk.ErrNotFound):
			continue
		case errors.Is(err, disk.ErrCorrupt) || errors.Is(err, disk.ErrNotSupported):
			res.Problems = append(res.Problems, fmt.Sprintf("%s: %v", d.Name, err))
			continue
		case err != nil:
			return nil, err
		}
		if j, dup := byUUID[l.UUID]; dup {
			res.Problems = append(res.Problems, fmt.Sprintf("%s: PV uuid %s is also on %s; ignored", d.Name, l.UUID, devs[j].Name))
			continue
		}
		byUUID[l.UUID] = i
		res.Labels[i] = l
		for a, area := range l.Metadata {
			c, err := ReadMetadata(d.R, d.Size, area)
			switch {
			case errors.Is(err, disk.ErrNotFound):
				continue
			case errors.Is(err, disk.ErrCorrupt) || errors.Is(err, disk.ErrNotSupported):
				devProblems[i] = append(devProblems[i], fmt.Sprintf("%s: metadata area %d ignored: %v", d.Name, a+1, err))
				continue
			case err != nil:
				return nil, err
			}
			vg, err := ParseVG(c.Text)
			if err != nil {
				devProblems[i] = append(devProblems[i], fmt.Sprintf("%s: metadata area %d ignored: %v", d.Name, a+1, err))
				continue
			}
			ci := copyInfo{dev: i, area: a, vgUUID: vg.UUID, seqno: vg.Seqno, sum: crc(initialCRC, c.Text)}
			copies = append(copies, ci)
			// The newest copy wins; among equal seqnos, the first read.
			if b, ok := best[vg.UUID]; !ok || vg.Seqno > b.Seqno {
				if !ok {
					order = append(order, vg.UUID)
				}
				best[vg.UUID], bestCopy[vg.UUID] = vg, ci
			}
		}
	}
	for _, c := range copies {
		vg, b := best[c.vgUUID], bestCopy[c.vgUUID]
		name := fmt.Sprintf("%s: metadata area %d", devs[c.dev].Name, c.area+1)
		switch {
		case c.seqno < vg.Seqno:
			vg.Problems = append(vg.Problems, fmt.Sprintf("%s holds seqno %d, older than %d", name, c.seqno, vg.Seqno))
		case c != b && c.sum != b.sum:
			vg.Problems = append(vg.Problems, fmt.Sprintf("%s holds another text with the same seqno %d", name, c.seqno))
		}
	}
	sort.SliceStable(order, func(i, j int) bool { return best[order[i]].Name < best[order[j]].Name })
	for _, id := range order {
		vg := best[id]
		vg.devs = devs
		for _, pv := range vg.PVs {
			if i, ok := byUUID[pv.UUID]; ok {
				pv.Device = i
				delete(byUUID, pv.UUID)
				vg.Problems = append(vg.Problems, devProblems[i]...)
				delete(devProblems, i)
			}
		}
		res.VGs = append(res.VGs, vg)
	}
	for i := range devs {
		res.Problems = append(res.Problems, devProblems[i]...)
	}
	for i, l := range res.Labels {
		if l != nil {
			if _, orphan := byUUID[l.UUID]; orphan {
				res.Problems = append(res.Problems, fmt.Sprintf("%s: PV uuid %s belongs to no volume group found", devs[i].Name, l.UUID))
			}
		}
	}
	return res, nil
}
