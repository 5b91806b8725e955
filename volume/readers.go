package volume

import (
	"fmt"
	"io"
	"io/fs"
	"sort"
	"strings"

	"github.com/vdisk-project/vdisk/volume/ext4"
	fatfs "github.com/vdisk-project/vdisk/volume/fat"
	"github.com/vdisk-project/vdisk/volume/inode"
	"github.com/vdisk-project/vdisk/volume/ntfs"
	"github.com/vdisk-project/vdisk/volume/winreg"
	"github.com/vdisk-project/vdisk/volume/xfs"
)

// The filesystem readers, by blkid type.
func init() {
	for _, t := range []string{"ext2", "ext3", "ext4"} {
		readers[t] = func(r io.ReaderAt, n int64) (inode.FS, error) { return asFS(ext4.Open(r, n)) }
	}
	readers["xfs"] = func(r io.ReaderAt, n int64) (inode.FS, error) { return asFS(xfs.Open(r, n)) }
	readers["vfat"] = func(r io.ReaderAt, n int64) (inode.FS, error) { return asFS(fatfs.Open(r, n)) }
	readers["ntfs"] = func(r io.ReaderAt, n int64) (inode.FS, error) { return asFS(ntfs.Open(r, n)) }
	windowsInfo = readWindows
}

// readWindows reads what a Windows system volume's registry says of the
// installation (GetOsInfo) and its drive letters.
func readWindows(fsys fs.FS) (*OSInfo, error) {
	w, err := winreg.OSInfo(fsys)
	if err != nil {
		return nil, err
	}
	info := &OSInfo{Family: "windows", ID: "windows", Name: w.ProductName, Release: map[string]string{}}
	info.Version = w.DisplayVersion
	if info.Version == "" {
		info.Version = w.ReleaseID
	}
	switch {
	case w.Major > 0:
		info.VersionID = fmt.Sprintf("%d.%d.%s", w.Major, w.Minor, w.CurrentBuild)
	case w.CurrentVersion != "":
		info.VersionID = w.CurrentVersion + "." + w.CurrentBuild
	}
	if w.UBR > 0 {
		info.VersionID += fmt.Sprintf(".%d", w.UBR)
	}
	info.PrettyName = strings.TrimSpace(w.ProductName + " " + info.Version)
	for k, v := range map[string]string{"ProductName": w.ProductName, "DisplayVersion": w.DisplayVersion, "ReleaseId": w.ReleaseID,
		"CurrentVersion": w.CurrentVersion, "CurrentBuild": w.CurrentBuild, "EditionID": w.EditionID, "InstallationType": w.InstallationType} {
		if v != "" {
			info.Release[k] = v
		}
	}
	letters, err := winreg.DriveLetters(fsys)
	if err != nil {
		return info, nil // the product without the letters
	}
	keys := make([]string, 0, len(letters))
	for k := range letters {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, letter := range keys {
		dev := letters[letter]
		var spec string
		switch {
		case strings.HasPrefix(dev, "gpt:"):
			spec = "PARTUUID=" + strings.TrimPrefix(dev, "gpt:")
		case strings.HasPrefix(dev, "mbr:"):
			spec = "WINMBR=" + strings.TrimPrefix(dev, "mbr:")
		default:
			continue
		}
		info.Mounts = append(info.Mounts, Mount{Spec: spec, MountPoint: letter})
	}
	return info, nil
}

// asFS keeps a nil *T from becoming a non-nil interface.
func asFS[T inode.FS](f T, err error) (inode.FS, error) {
	if err != nil {
		return nil, err
	}
	return f, nil
}
