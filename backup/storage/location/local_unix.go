//go:build unix

package location

import (
	"github.com/vdisk-project/vdisk/backup/storage"
	"github.com/vdisk-project/vdisk/backup/storage/local"
)

func openLocal(dir string) (storage.Storage, error) {
	s, err := local.Open(dir)
	if err != nil {
		return nil, err
	}
	return s, nil
}

func createLocal(dir string) (storage.Storage, error) {
	s, err := local.Create(dir)
	if err != nil {
		return nil, err
	}
	return s, nil
}
