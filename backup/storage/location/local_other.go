//go:build !unix

package location

import (
	"errors"

	"github.com/vdisk-project/vdisk/backup/storage"
	"github.com/vdisk-project/vdisk/disk"
)

func openLocal(dir string) (storage.Storage, error) {
	return nil, &disk.Error{Op: "location", Path: dir, Off: -1, Code: disk.ErrNotSupported,
		Err: errors.New("location: directory repositories need a Unix system")}
}

func createLocal(dir string) (storage.Storage, error) { return openLocal(dir) }
