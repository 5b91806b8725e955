package vmdk

import (
	"context"

	"github.com/vdisk-project/vdisk/disk"
)

// RemoveParent makes the child at path a disk of its own: its
// parentFileNameHint goes and its parentCID becomes ffffffff, "no parent"
// (reference §6). Its grains are untouched, so what it did not hold itself
// reads as zeros from then on; the caller (a rebase onto no backing file)
// first copies into it what it read from its parent.
func RemoveParent(ctx context.Context, path string, fsys disk.FS) error {
	if fsys == nil {
		fsys = disk.OSFS{}
	}
	return editDescriptor(ctx, path, fsys, func(desc *descriptor) {
		desc.remove("parentFileNameHint")
		desc.set("parentCID", formatCID(0xffffffff))
	})
}
