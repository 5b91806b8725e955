package vmdk

import (
	"github.com/vdisk-project/vdisk/disk"
)

// The constructors of the extent kinds that live in their own files are
// called from here, so that Open has one place that knows them all.

// openCOWD opens a vmfsSparse (COWD) delta extent.
func openCOWD(f disk.File, path string, size int64, ro bool) (extent, error) {
	return nil, disk.Errorf(disk.ErrNotSupported, "vmdk: %s: vmfsSparse (COWD) extents are not supported yet", path)
}

// openSESparse opens an SEsparse delta extent.
func openSESparse(f disk.File, path string, size int64, ro bool) (extent, error) {
	return nil, disk.Errorf(disk.ErrNotSupported, "vmdk: %s: SEsparse extents are not supported yet", path)
}
