package cli

import (
	"io/fs"

	"github.com/vdisk-project/vdisk/disk"
)

// noSyncFS is the filesystem behind "-t unsafe": files never sync, so the
// result is not durable until the kernel writes it back (qemu-img's own
// behaviour for convert). Crash safety is given up for speed.
type noSyncFS struct{ disk.FS }

func (n noSyncFS) OpenFile(name string, flag int, perm fs.FileMode) (disk.File, error) {
	f, err := n.FS.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	return noSyncFile{f}, nil
}

type noSyncFile struct{ disk.File }

func (noSyncFile) Sync() error { return nil }

// StartWriteBack starts none either (see disk.WriteBackStarter): the
// writer never waits for the device, which is what unsafe is for.
func (noSyncFile) StartWriteBack() error { return nil }

// Fd exposes the descriptor so that hole punching and SEEK_DATA still work.
func (f noSyncFile) Fd() uintptr {
	if x, ok := f.File.(interface{ Fd() uintptr }); ok {
		return x.Fd()
	}
	return ^uintptr(0)
}

// cacheFS returns the filesystem for a -t cache mode.
func cacheFS(mode string) (disk.FS, error) {
	switch mode {
	case "", "writeback", "none", "directsync", "writethrough":
		return nil, nil
	case "unsafe":
		return noSyncFS{disk.OSFS{}}, nil
	}
	return nil, usagef("unknown cache mode %q (writeback or unsafe)", mode)
}

// SyncDir does nothing either: under "-t unsafe" no name is made durable.
func (noSyncFS) SyncDir(string) error { return nil }
