package vmdk

import (
	"github.com/vdisk-project/vdisk/disk"
)

// The constructors of the extent kinds that live in their own files are
// called from here, so that Open has one place that knows them all.

// openStream opens a compressed (streamOptimized) KDMV file.
func openStream(f disk.File, path string, h *sparseHeader, size int64, ro, salvage bool) (extent, error) {
	if !ro {
		return nil, disk.Errorf(disk.ErrPermission, "vmdk: %s: streamOptimized images cannot be modified in place; convert them to another subformat", path)
	}
	return nil, disk.Errorf(disk.ErrNotSupported, "vmdk: %s: reading streamOptimized images is not supported yet", path)
}

// openCOWD opens a vmfsSparse (COWD) delta extent.
func openCOWD(f disk.File, path string, size int64, ro bool) (extent, error) {
	return nil, disk.Errorf(disk.ErrNotSupported, "vmdk: %s: vmfsSparse (COWD) extents are not supported yet", path)
}

// openSESparse opens an SEsparse delta extent.
func openSESparse(f disk.File, path string, size int64, ro bool) (extent, error) {
	return nil, disk.Errorf(disk.ErrNotSupported, "vmdk: %s: SEsparse extents are not supported yet", path)
}
