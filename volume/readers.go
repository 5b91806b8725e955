package volume

import (
	"io"

	fatfs "github.com/vdisk-project/vdisk/volume/fat"
	"github.com/vdisk-project/vdisk/volume/inode"
	"github.com/vdisk-project/vdisk/volume/ntfs"
	"github.com/vdisk-project/vdisk/volume/xfs"
)

// The filesystem readers, by blkid type.
func init() {
	readers["xfs"] = func(r io.ReaderAt, n int64) (inode.FS, error) { return asFS(xfs.Open(r, n)) }
	readers["vfat"] = func(r io.ReaderAt, n int64) (inode.FS, error) { return asFS(fatfs.Open(r, n)) }
	readers["ntfs"] = func(r io.ReaderAt, n int64) (inode.FS, error) { return asFS(ntfs.Open(r, n)) }
}

// asFS keeps a nil *T from becoming a non-nil interface.
func asFS[T inode.FS](f T, err error) (inode.FS, error) {
	if err != nil {
		return nil, err
	}
	return f, nil
}
