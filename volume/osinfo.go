package volume

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"io/fs"
	"path"
	"strconv"
	"strings"

	"github.com/vdisk-project/vdisk/disk"
	"github.com/vdisk-project/vdisk/volume/inode"
)

// readers opens filesystems by blkid type ("ext4", "xfs", "vfat",
// "ntfs"). It is filled in where the filesystem readers are linked.
var readers = map[string]func(io.ReaderAt, int64) (inode.FS, error){}

// windowsInfo reads a Windows system volume's registry and returns what
// it says: the product and version, and the drive letters as Mounts
// whose Spec is "PARTUUID=<GPT partition GUID>" or
// "WINMBR=<MBR disk signature>:<partition byte offset>" (as Windows'
// MountedDevices records MBR partitions). It returns an error matching disk.ErrNotFound
// when fsys holds no Windows. Nil until a registry reader is linked.
var windowsInfo func(fsys fs.FS) (*OSInfo, error)

// FS opens the filesystem the volume holds with the reader for its type.
// A volume that is Unsupported, or whose filesystem vdisk has no reader
// for, gives an error matching disk.ErrNotSupported.
func (v *Volume) FS() (inode.FS, error) {
	if v.Unsupported != "" {
		return nil, disk.Errorf(disk.ErrNotSupported, "volume: %s: %s", v.ID, v.Unsupported)
	}
	open := readers[v.Type]
	if open == nil {
		if v.Type == "" {
			return nil, disk.Errorf(disk.ErrNotSupported, "volume: %s: no filesystem found", v.ID)
		}
		return nil, disk.Errorf(disk.ErrNotSupported, "volume: %s: no reader for %s", v.ID, v.Type)
	}
	r, err := v.Open()
	if err != nil {
		return nil, err
	}
	fsys, err := open(r, v.Size)
	if err != nil {
		return nil, fmt.Errorf("volume: %s: %w", v.ID, err)
	}
	return fsys, nil
}

// OSInfo is what a set's operating system says of itself
// (VixMntapi_GetOsInfo).
type OSInfo struct {
	// Family is "linux" or "windows".
	Family string
	// Name, Version, VersionID, ID and PrettyName are os-release's NAME,
	// VERSION, VERSION_ID, ID and PRETTY_NAME (for Windows, as the
	// registry names the product).
	Name, Version, VersionID, ID, PrettyName string
	// Release holds every os-release key.
	Release map[string]string
	// Root is the ID of the root filesystem's volume.
	Root string
	// Mounts lists /etc/fstab's entries in order.
	Mounts []Mount
}

// Mount is one entry of the guest's mount table.
type Mount struct {
	// Spec, MountPoint, Type and Options are fstab's first four fields,
	// unescaped ("UUID=…", "/home", "ext4", "defaults").
	Spec, MountPoint, Type, Options string
	// Volume is the ID of the set's volume Spec names, "" when it names
	// none (a tmpfs, a network filesystem, a disk not in the set).
	Volume string
}

// Limits on the files OSInfo reads.
const (
	maxOSRelease = 64 << 10
	maxFstab     = 1 << 20
)

// OSInfo finds the operating system on the set's volumes: the Linux root
// filesystem is the one with etc/fstab and an os-release (etc/os-release
// or usr/lib/os-release). It parses both, matches each fstab entry to a
// volume, and records each volume's mount point (see Volume.MountPoint).
// A set with no operating system vdisk can read gives an error matching
// disk.ErrNotFound.
func (s *Set) OSInfo(ctx context.Context) (*OSInfo, error) {
	var windows []*Volume
	for _, v := range s.Volumes() {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if v.Type == "ntfs" {
			windows = append(windows, v)
		}
		fsys, err := v.FS()
		if err != nil {
			continue
		}
		if _, err := fs.Stat(fsys, "etc/fstab"); err != nil {
			continue
		}
		rel, relErr := readLimited(fsys, "etc/os-release", maxOSRelease)
		if relErr != nil {
			rel, relErr = readLimited(fsys, "usr/lib/os-release", maxOSRelease)
		}
		fstab, err := readLimited(fsys, "etc/fstab", maxFstab)
		if err != nil {
			continue
		}
		info := &OSInfo{Family: "linux", Root: v.ID, Mounts: parseFstab(fstab)}
		s.resolve(info)
		if relErr != nil {
			// etc/os-release may link into a /usr on another volume.
			rel, relErr = s.usrOSRelease(info)
		}
		if relErr == nil {
			info.setRelease(parseOSRelease(rel))
		}
		return info, nil
	}
	if windowsInfo != nil {
		for _, v := range windows {
			fsys, err := v.FS()
			if err != nil {
				continue
			}
			info, err := windowsInfo(fsys)
			if err != nil || info == nil {
				continue
			}
			info.Family, info.Root = "windows", v.ID
			s.resolve(info)
			return info, nil
		}
	}
	return nil, disk.Errorf(disk.ErrNotFound, "volume: no operating system found")
}

// resolve matches info's mounts to volumes and records the mount points.
func (s *Set) resolve(info *OSInfo) {
	vols := s.Volumes()
	mounts := map[string]string{}
	for i := range info.Mounts {
		m := &info.Mounts[i]
		if v := s.match(vols, m.Spec); v != nil {
			m.Volume = v.ID
			if _, dup := mounts[v.ID]; !dup && (strings.HasPrefix(m.MountPoint, "/") || info.Family == "windows") {
				mounts[v.ID] = m.MountPoint
			}
		}
	}
	if _, ok := mounts[info.Root]; !ok && info.Family == "linux" {
		mounts[info.Root] = "/"
	}
	s.mu.Lock()
	s.mounts = mounts
	s.mu.Unlock()
}

// usrOSRelease reads lib/os-release from the volume mounted on /usr.
func (s *Set) usrOSRelease(info *OSInfo) ([]byte, error) {
	for _, m := range info.Mounts {
		if path.Clean(m.MountPoint) != "/usr" || m.Volume == "" {
			continue
		}
		v, err := s.Volume(m.Volume)
		if err != nil {
			return nil, err
		}
		fsys, err := v.FS()
		if err != nil {
			return nil, err
		}
		return readLimited(fsys, "lib/os-release", maxOSRelease)
	}
	return nil, disk.Errorf(disk.ErrNotFound, "volume: no os-release")
}

func (info *OSInfo) setRelease(r map[string]string) {
	info.Release = r
	info.Name, info.Version, info.VersionID = r["NAME"], r["VERSION"], r["VERSION_ID"]
	info.ID, info.PrettyName = r["ID"], r["PRETTY_NAME"]
}

// readLimited reads a file of at most max bytes.
func readLimited(fsys fs.FS, name string, max int64) ([]byte, error) {
	f, err := fsys.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > max {
		return nil, disk.Errorf(disk.ErrNotSupported, "volume: %s is larger than %d bytes", name, max)
	}
	return b, nil
}

// parseOSRelease reads os-release(5): KEY=value lines, the value in
// shell quoting (single or double quotes, backslash escapes).
func parseOSRelease(b []byte) map[string]string {
	m := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(nil, maxOSRelease)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok || k == "" {
			continue
		}
		m[k] = shellUnquote(v)
	}
	return m
}

func shellUnquote(s string) string {
	var b strings.Builder
	var quote byte
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case quote == 0 && (c == '"' || c == '\''):
			quote = c
		case c == quote:
			quote = 0
		case c == '\\' && quote != '\'' && i+1 < len(s):
			i++
			b.WriteByte(s[i])
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

// parseFstab reads fstab(5): whitespace-separated fields with octal
// escapes (\040 for a space), "#" comments.
func parseFstab(b []byte) []Mount {
	var ms []Mount
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(nil, maxFstab)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		for len(f) < 4 {
			f = append(f, "")
		}
		ms = append(ms, Mount{Spec: octalUnescape(f[0]), MountPoint: octalUnescape(f[1]), Type: octalUnescape(f[2]), Options: octalUnescape(f[3])})
	}
	return ms
}

func octalUnescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) && isOctal(s[i+1]) && isOctal(s[i+2]) && isOctal(s[i+3]) {
			n, _ := strconv.ParseUint(s[i+1:i+4], 8, 8)
			b.WriteByte(byte(n))
			i += 3
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func isOctal(c byte) bool { return c >= '0' && c <= '7' }

// udevUnescape decodes the \xHH escapes of /dev/disk/by-* names.
func udevUnescape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) && s[i+1] == 'x' {
			if n, err := strconv.ParseUint(s[i+2:i+4], 16, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// match returns the volume an fstab spec names, or nil.
func (s *Set) match(vols []*Volume, spec string) *Volume {
	find := func(ok func(v *Volume) bool) *Volume {
		for _, v := range vols {
			if ok(v) {
				return v
			}
		}
		return nil
	}
	tag, val, isTag := strings.Cut(spec, "=")
	if isTag && !strings.HasPrefix(spec, "/") {
		val = strings.Trim(val, `"'`)
	} else {
		tag, val = "", spec
	}
	switch {
	case strings.HasPrefix(val, "/dev/disk/by-uuid/") && tag == "":
		tag, val = "UUID", udevUnescape(strings.TrimPrefix(val, "/dev/disk/by-uuid/"))
	case strings.HasPrefix(val, "/dev/disk/by-label/") && tag == "":
		tag, val = "LABEL", udevUnescape(strings.TrimPrefix(val, "/dev/disk/by-label/"))
	case strings.HasPrefix(val, "/dev/disk/by-partuuid/") && tag == "":
		tag, val = "PARTUUID", udevUnescape(strings.TrimPrefix(val, "/dev/disk/by-partuuid/"))
	case strings.HasPrefix(val, "/dev/disk/by-partlabel/") && tag == "":
		tag, val = "PARTLABEL", udevUnescape(strings.TrimPrefix(val, "/dev/disk/by-partlabel/"))
	case strings.HasPrefix(val, "/dev/disk/by-id/dm-name-") && tag == "":
		val = "/dev/mapper/" + strings.TrimPrefix(val, "/dev/disk/by-id/dm-name-")
	case strings.HasPrefix(val, "/dev/disk/by-id/dm-uuid-LVM-") && tag == "":
		id := strings.TrimPrefix(val, "/dev/disk/by-id/dm-uuid-LVM-")
		return find(func(v *Volume) bool {
			return v.LV != nil && strings.ReplaceAll(v.LV.VGUUID+v.LV.LVUUID, "-", "") == id
		})
	}
	switch tag {
	case "UUID":
		return find(func(v *Volume) bool { return v.UUID != "" && strings.EqualFold(v.UUID, val) && v.Type != "LVM2_member" })
	case "LABEL":
		return find(func(v *Volume) bool { return v.Label != "" && v.Label == val })
	case "PARTLABEL":
		return find(func(v *Volume) bool { return v.Partition != nil && v.Partition.Name != "" && v.Partition.Name == val })
	case "PARTUUID":
		return find(func(v *Volume) bool { return v.Partition != nil && strings.EqualFold(s.partUUID(v), val) })
	case "WINMBR":
		// Windows' MountedDevices names an MBR partition by the disk's
		// signature and the partition's byte offset.
		sig, off, _ := strings.Cut(val, ":")
		return find(func(v *Volume) bool {
			return v.Partition != nil && v.Disk >= 0 && v.Disk < len(s.tables) && s.tables[v.Disk].Scheme == MBR &&
				strings.EqualFold(s.tables[v.Disk].DiskID, sig) && strconv.FormatInt(v.Partition.Start, 10) == off
		})
	case "":
	default:
		return nil
	}
	if name, ok := strings.CutPrefix(val, "/dev/mapper/"); ok {
		vg, lv, ok := splitDMName(name)
		if !ok {
			return nil
		}
		return find(func(v *Volume) bool { return v.LV != nil && v.LV.VG == vg && v.LV.LV == lv })
	}
	if d, p, ok := parseDevName(val); ok {
		return find(func(v *Volume) bool {
			if v.Disk != d {
				return false
			}
			if p == 0 {
				return v.Partition == nil
			}
			return v.Partition != nil && v.Partition.Number == p
		})
	}
	if rest, ok := strings.CutPrefix(val, "/dev/"); ok {
		if vg, lv, ok := strings.Cut(rest, "/"); ok && !strings.Contains(lv, "/") {
			return find(func(v *Volume) bool { return v.LV != nil && v.LV.VG == vg && v.LV.LV == lv })
		}
	}
	return nil
}

// partUUID is the partition's PARTUUID as Linux gives it: the GPT
// partition GUID, or for MBR the disk signature and partition number
// ("1234abcd-05").
func (s *Set) partUUID(v *Volume) string {
	if v.Partition.GUID != "" {
		return v.Partition.GUID
	}
	if v.Disk < 0 || v.Disk >= len(s.tables) || s.tables[v.Disk].Scheme != MBR {
		return ""
	}
	return fmt.Sprintf("%s-%02x", strings.TrimPrefix(s.tables[v.Disk].DiskID, "0x"), v.Partition.Number)
}

// splitDMName splits a device-mapper name "VG-LV" (in which each "-" of
// the VG and LV names is doubled) at its single dash.
func splitDMName(name string) (vg, lv string, ok bool) {
	for i := 0; i < len(name); i++ {
		if name[i] != '-' {
			continue
		}
		if i+1 < len(name) && name[i+1] == '-' {
			i++
			continue
		}
		vg, lv = name[:i], name[i+1:]
		return strings.ReplaceAll(vg, "--", "-"), strings.ReplaceAll(lv, "--", "-"), vg != "" && lv != ""
	}
	return "", "", false
}

// parseDevName reads a kernel disk name: /dev/sda1, /dev/vdb, /dev/xvda2,
// /dev/hdc, /dev/nvme0n1p3, /dev/mmcblk0p1. It returns the disk index (a
// is 0, z 25, aa 26; nvme and mmcblk by their controller number) and the
// partition number (0 for the whole disk).
func parseDevName(name string) (diskIndex, partition int, ok bool) {
	rest, found := strings.CutPrefix(name, "/dev/")
	if !found {
		return 0, 0, false
	}
	num := func(s string) (int, bool) {
		if s == "" || len(s) > 6 {
			return 0, false
		}
		n, err := strconv.Atoi(s)
		return n, err == nil && n >= 0
	}
	for _, prefix := range []string{"sd", "vd", "xvd", "hd"} {
		r, found := strings.CutPrefix(rest, prefix)
		if !found {
			continue
		}
		i := 0
		for i < len(r) && r[i] >= 'a' && r[i] <= 'z' {
			i++
		}
		if i == 0 || i > 3 {
			return 0, 0, false
		}
		idx := 0
		for _, c := range r[:i] {
			idx = idx*26 + int(c-'a') + 1
		}
		if r[i:] == "" {
			return idx - 1, 0, true
		}
		p, ok := num(r[i:])
		return idx - 1, p, ok && p > 0
	}
	var part, ctl string
	if r, found := strings.CutPrefix(rest, "nvme"); found {
		c, after, ok := strings.Cut(r, "n")
		ns, p, _ := strings.Cut(after, "p")
		if !ok || ns != "1" {
			return 0, 0, false
		}
		ctl, part = c, p
	} else if r, found := strings.CutPrefix(rest, "mmcblk"); found {
		ctl, part, _ = strings.Cut(r, "p")
	} else {
		return 0, 0, false
	}
	d, ok := num(ctl)
	if !ok {
		return 0, 0, false
	}
	if part == "" {
		return d, 0, true
	}
	p, ok := num(part)
	return d, p, ok && p > 0
}
