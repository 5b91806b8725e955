package winreg

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"strings"

	"github.com/vdisk-project/vdisk/disk"
)

// Hive files, relative to a Windows system volume's root.
const (
	SoftwareHive = "Windows/System32/config/SOFTWARE"
	SystemHive   = "Windows/System32/config/SYSTEM"
)

// maxHiveFile bounds a hive read into memory when its file is not an
// io.ReaderAt.
const maxHiveFile = 512 << 20

// OS is what SOFTWARE\Microsoft\Windows NT\CurrentVersion says about the
// installed Windows. Fields the hive lacks are empty or zero.
type OS struct {
	ProductName      string // "Windows 10 Pro", "Windows Server 2019 Standard"
	DisplayVersion   string // "22H2" (Windows 10 20H2 and later)
	ReleaseID        string // "1809" (Windows 10 up to 2009)
	CurrentVersion   string // "6.3" on Windows 8.1 and later, "6.1" on 7
	CurrentBuild     string // "19045" (CurrentBuildNumber when CurrentBuild is absent)
	UBR              uint64 // update build revision: the "1234" of 19045.1234
	EditionID        string // "Professional", "ServerStandard"
	InstallationType string // "Client", "Server", "Server Core"
	Major, Minor     uint64 // CurrentMajorVersionNumber and CurrentMinorVersionNumber (Windows 10 and later)
}

// OSInfo reads the SOFTWARE hive of the Windows installed on fsys (a
// mounted system volume; the path is matched without regard to case).
// A volume without it gives an error matching disk.ErrNotFound.
func OSInfo(fsys fs.FS) (OS, error) {
	h, c, err := openHive(fsys, SoftwareHive)
	if err != nil {
		return OS{}, err
	}
	defer c.Close()
	root, err := h.Root()
	if err != nil {
		return OS{}, err
	}
	k, err := root.Lookup(`Microsoft\Windows NT\CurrentVersion`)
	if err != nil {
		return OS{}, err
	}
	var o OS
	str := func(name string) (string, error) {
		v, err := k.Value(name)
		if errors.Is(err, disk.ErrNotFound) {
			return "", nil
		}
		if err != nil {
			return "", err
		}
		return v.String()
	}
	num := func(name string) (uint64, error) {
		v, err := k.Value(name)
		if errors.Is(err, disk.ErrNotFound) {
			return 0, nil
		}
		if err != nil {
			return 0, err
		}
		return v.Uint()
	}
	for _, f := range []struct {
		name string
		dst  *string
	}{
		{"ProductName", &o.ProductName},
		{"DisplayVersion", &o.DisplayVersion},
		{"ReleaseId", &o.ReleaseID},
		{"CurrentVersion", &o.CurrentVersion},
		{"CurrentBuild", &o.CurrentBuild},
		{"EditionID", &o.EditionID},
		{"InstallationType", &o.InstallationType},
	} {
		if *f.dst, err = str(f.name); err != nil {
			return OS{}, err
		}
	}
	if o.CurrentBuild == "" {
		if o.CurrentBuild, err = str("CurrentBuildNumber"); err != nil {
			return OS{}, err
		}
	}
	for _, f := range []struct {
		name string
		dst  *uint64
	}{
		{"UBR", &o.UBR},
		{"CurrentMajorVersionNumber", &o.Major},
		{"CurrentMinorVersionNumber", &o.Minor},
	} {
		if *f.dst, err = num(f.name); err != nil {
			return OS{}, err
		}
	}
	return o, nil
}

// DriveLetters reads SYSTEM\MountedDevices from the Windows installed on
// fsys and maps each drive letter ("C:") to the partition it was last
// given to:
//
//   - "mbr:0x1234abcd:1048576" for a partition of an MBR disk: the disk
//     signature as volume.Table.DiskID prints it, and the partition's
//     byte offset from the start of the disk (volume.Partition.Start);
//   - "gpt:GUID" for a GPT partition: its partition GUID in upper case,
//     as volume.Partition.GUID prints it.
//
// Letters bound to anything else (removable devices, volume GUID paths)
// are left out.
func DriveLetters(fsys fs.FS) (map[string]string, error) {
	h, c, err := openHive(fsys, SystemHive)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	root, err := h.Root()
	if err != nil {
		return nil, err
	}
	k, err := root.Subkey("MountedDevices")
	if err != nil {
		return nil, err
	}
	vs, err := k.Values()
	if err != nil {
		return nil, err
	}
	m := map[string]string{}
	for _, v := range vs {
		name := strings.ToUpper(v.Name)
		letter, ok := strings.CutPrefix(name, `\DOSDEVICES\`)
		if !ok || len(letter) != 2 || letter[1] != ':' || letter[0] < 'A' || letter[0] > 'Z' {
			continue
		}
		b, err := v.Data()
		if err != nil {
			return nil, err
		}
		if id := MountedDevice(b); id != "" {
			m[letter] = id
		}
	}
	return m, nil
}

// MountedDevice decodes one MountedDevices value (see DriveLetters for
// the encoding), or returns "" for a form that names no partition.
func MountedDevice(b []byte) string {
	switch {
	case len(b) == 12:
		return fmt.Sprintf("mbr:0x%08x:%d", le.Uint32(b), le.Uint64(b[4:]))
	case len(b) == 24 && bytes.HasPrefix(b, []byte("DMIO:ID:")):
		g := b[8:]
		return "gpt:" + strings.ToUpper(fmt.Sprintf("%08x-%04x-%04x-%x-%x", le.Uint32(g), le.Uint16(g[4:]), le.Uint16(g[6:]), g[8:10], g[10:16]))
	}
	return ""
}

// openHive opens a hive file, matching each path element without regard
// to case when the exact name is missing. The caller closes the file once
// done with the hive.
func openHive(fsys fs.FS, name string) (*Hive, io.Closer, error) {
	p, err := findFold(fsys, name)
	if err != nil {
		return nil, nil, err
	}
	f, err := fsys.Open(p)
	if err != nil {
		return nil, nil, fmt.Errorf("winreg: %w", err)
	}
	h, err := openHiveFile(f, p)
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	return h, f, nil
}

func openHiveFile(f fs.File, p string) (*Hive, error) {
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("winreg: %w", err)
	}
	if !st.Mode().IsRegular() {
		return nil, disk.Errorf(disk.ErrCorrupt, "winreg: %s is not a regular file", p)
	}
	var h *Hive
	if ra, ok := f.(io.ReaderAt); ok {
		h, err = Open(ra, st.Size())
	} else {
		if st.Size() > maxHiveFile {
			return nil, disk.Errorf(disk.ErrOutOfMemory, "winreg: %s of %d bytes larger than %d", p, st.Size(), maxHiveFile)
		}
		b, rerr := io.ReadAll(io.LimitReader(f, maxHiveFile))
		if rerr != nil {
			return nil, fmt.Errorf("winreg: read %s: %w", p, rerr)
		}
		h, err = Open(bytes.NewReader(b), int64(len(b)))
	}
	if err != nil {
		return nil, fmt.Errorf("winreg: %s: %w", p, err)
	}
	return h, nil
}

// findFold resolves name in fsys element by element, taking the exact
// name when it exists and otherwise the first that matches without regard
// to case.
func findFold(fsys fs.FS, name string) (string, error) {
	if _, err := fs.Stat(fsys, name); err == nil {
		return name, nil
	}
	cur := "."
	for _, el := range strings.Split(name, "/") {
		ents, err := fs.ReadDir(fsys, cur)
		if err != nil {
			return "", fmt.Errorf("winreg: %w", err)
		}
		found := ""
		for _, e := range ents {
			if e.Name() == el {
				found = el
				break
			}
			if found == "" && strings.EqualFold(e.Name(), el) {
				found = e.Name()
			}
		}
		if found == "" {
			return "", disk.Errorf(disk.ErrNotFound, "winreg: no %s on this volume", name)
		}
		cur = path.Join(cur, found)
	}
	return cur, nil
}
