package cli

import (
	"context"

	"github.com/vdisk-project/vdisk/backup/storage"
	"github.com/vdisk-project/vdisk/disk"
)

// openS3 opens an S3 repository location.
func openS3(ctx context.Context, loc, endpoint string, create bool) (storage.Storage, error) {
	return nil, disk.Errorf(disk.ErrNotSupported, "%s: S3 repositories are not wired in yet", loc)
}
