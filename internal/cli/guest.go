package cli

import (
	"context"
	"errors"
	"strconv"
	"strings"

	"github.com/vdisk-project/vdisk/disk"
	"github.com/vdisk-project/vdisk/format"
	"github.com/vdisk-project/vdisk/volume"
	"github.com/vdisk-project/vdisk/volume/inode"
)

// guestVolume is one volume of the disks a file command opened, as the
// commands print and select it.
type guestVolume struct {
	ID          string `json:"id"`   // "disk0", "disk0/p1", "lvm/VG/LV"
	Kind        string `json:"kind"` // "disk", "partition", "lvm"
	Disk        int    `json:"disk"`
	Start       int64  `json:"start"`
	Size        int64  `json:"size"`
	PartType    string `json:"partitionType,omitempty"`
	PartName    string `json:"partitionName,omitempty"`
	FSType      string `json:"filesystem,omitempty"`
	Label       string `json:"label,omitempty"`
	UUID        string `json:"uuid,omitempty"`
	MountPoint  string `json:"mountPoint,omitempty"`
	Unsupported string `json:"unsupported,omitempty"`

	open func() (inode.FS, error)
}

// guestOS is what the disks say about the guest (GetOsInfo).
type guestOS struct {
	Name      string `json:"name,omitempty"`
	Version   string `json:"version,omitempty"`
	ID        string `json:"id,omitempty"`
	Pretty    string `json:"prettyName,omitempty"`
	Family    string `json:"family,omitempty"` // "linux", "windows"
	RootID    string `json:"rootVolume,omitempty"`
	Edition   string `json:"edition,omitempty"`
	BuildInfo string `json:"build,omitempty"`
}

// guestSet is the disks a file command opened, read-only, and their
// volumes.
type guestSet struct {
	images []string
	disks  []disk.Disk
	vols   []guestVolume
	os     *guestOS
	// problems are what the set found but could not use (a corrupt
	// partition table, LVM metadata copies that failed their checksum).
	problems []string
}

func (g *guestSet) Close() error {
	var errs []error
	for _, d := range g.disks {
		errs = append(errs, d.Close())
	}
	return errors.Join(errs...)
}

// openGuest opens images read-only (any image name the other commands
// take) as one disk set (VixMntapi_OpenDisks) and lists its volumes:
// partitions, whole disks and LVM logical volumes, with the guest's mount
// points and OS when its root filesystem can be read.
func openGuest(ctx context.Context, images []string, forceShare bool) (*guestSet, error) {
	g := &guestSet{images: images}
	for _, name := range images {
		d, _, err := openImage(ctx, name, "", format.OpenOptions{ReadOnly: true, ForceShare: forceShare})
		if err != nil {
			g.Close()
			return nil, err
		}
		g.disks = append(g.disks, d)
	}
	set, err := volume.OpenSet(ctx, g.disks, nil)
	if err != nil {
		g.Close()
		return nil, err
	}
	if info, err := set.OSInfo(ctx); err == nil {
		g.os = &guestOS{Name: info.Name, Version: info.VersionID, ID: info.ID, Pretty: info.PrettyName, Family: info.Family, RootID: info.Root}
	}
	for _, v := range set.Volumes() {
		gv := guestVolume{ID: v.ID, Kind: string(v.Kind), Disk: v.Disk, Start: v.Start, Size: v.Size,
			FSType: v.Type, Label: v.Label, UUID: v.UUID, MountPoint: v.MountPoint, Unsupported: v.Unsupported}
		if v.Partition != nil {
			gv.PartType, gv.PartName = v.Partition.Kind, v.Partition.Name
		}
		if v.LV != nil {
			gv.PartType = "lvm " + v.LV.VG + "/" + v.LV.LV
		}
		if v.Unsupported == "" && v.Type != "" && v.Type != "swap" {
			if _, err := v.FS(); err == nil {
				vol := v
				gv.open = vol.FS
			} else {
				gv.Unsupported = err.Error()
			}
		}
		g.vols = append(g.vols, gv)
	}
	g.problems = set.Problems()
	return g, nil
}

// fs opens the filesystem of v, or says why it cannot.
func (v *guestVolume) fs() (inode.FS, error) {
	switch {
	case v.open != nil:
		return v.open()
	case v.Unsupported != "":
		return nil, disk.Errorf(disk.ErrNotSupported, "volume %s: %s", v.ID, v.Unsupported)
	case v.FSType == "":
		return nil, disk.Errorf(disk.ErrNotSupported, "volume %s holds no filesystem vdisk recognises", v.ID)
	}
	return nil, disk.Errorf(disk.ErrNotSupported, "volume %s: %s cannot be read as files", v.ID, v.FSType)
}

// pick finds the volume sel names: its ID, its 1-based number in the
// listing, a label, a UUID, a guest mount point, or LABEL=/UUID= forms.
// An empty sel means the guest's root filesystem, or the one readable
// volume.
func (g *guestSet) pick(sel string) (*guestVolume, error) {
	if sel == "" {
		var readable []*guestVolume
		for i := range g.vols {
			v := &g.vols[i]
			if v.MountPoint == "/" && v.open != nil {
				return v, nil
			}
			if v.open != nil {
				readable = append(readable, v)
			}
		}
		if len(readable) == 1 {
			return readable[0], nil
		}
		return nil, usagef("%d volumes hold filesystems vdisk reads; choose one with --volume (see 'vdisk volumes')", len(readable))
	}
	if n, err := strconv.Atoi(sel); err == nil && n >= 1 && n <= len(g.vols) {
		return &g.vols[n-1], nil
	}
	k, val, _ := strings.Cut(sel, "=")
	for i := range g.vols {
		v := &g.vols[i]
		switch {
		case v.ID == sel, v.MountPoint != "" && v.MountPoint == sel,
			strings.EqualFold(k, "LABEL") && v.Label == val && val != "",
			strings.EqualFold(k, "UUID") && strings.EqualFold(v.UUID, val) && val != "":
			return v, nil
		}
	}
	for i := range g.vols {
		v := &g.vols[i]
		if v.Label == sel || v.UUID != "" && strings.EqualFold(v.UUID, sel) {
			return v, nil
		}
	}
	return nil, disk.Errorf(disk.ErrNotFound, "no volume %q (see 'vdisk volumes')", sel)
}
