package datastore

import (
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
)

// A seal records, at a clean close, the size and modification time of
// every file of the disk's leaf layer. Change tracking trusts its history
// only for writes the host made: if the leaf was written while the host
// was down (another tool opened the files), the files no longer match the
// seal and the tracker starts a new history, so no incremental misses
// those writes.
type seal struct {
	Files []sealFile `json:"files"`
}

type sealFile struct {
	Name    string `json:"name"`
	Size    int64  `json:"size"`
	ModTime int64  `json:"mtime"` // ns
}

func (d *Disk) sealPath() string { return filepath.Join(d.dir, "cbt.seal") }

// leafSeal describes the leaf's files now.
func (d *Disk) leafSeal() (seal, error) {
	var s seal
	for _, f := range layerFiles(d.dataDir(), d.name, d.st.Leaf) {
		st, err := os.Lstat(f)
		if err != nil {
			return seal{}, err
		}
		s.Files = append(s.Files, sealFile{Name: filepath.Base(f), Size: st.Size(), ModTime: st.ModTime().UnixNano()})
	}
	slices.SortFunc(s.Files, func(a, b sealFile) int {
		if a.Name < b.Name {
			return -1
		}
		if a.Name > b.Name {
			return 1
		}
		return 0
	})
	return s, nil
}

// writeSeal records the leaf after a clean close. The caller holds d.mu.
func (d *Disk) writeSeal() error {
	s, err := d.leafSeal()
	if err != nil {
		return err
	}
	return writeJSON(d.sealPath(), &s)
}

// sealBroken reports whether the leaf changed since the seal was written.
// No seal (an unclean stop, or an older version) is no evidence either way.
func (d *Disk) sealBroken() bool {
	b, err := readSmall(d.sealPath())
	if err != nil {
		return false
	}
	var want seal
	if json.Unmarshal(b, &want) != nil {
		return true
	}
	got, err := d.leafSeal()
	if err != nil {
		return !errors.Is(err, fs.ErrNotExist)
	}
	return !slices.Equal(got.Files, want.Files)
}
