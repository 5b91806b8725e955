package vmdk

import (
	"io"

	"github.com/vdisk-project/vdisk/disk"
)

// flatExtent is a FLAT or VMFS extent: the extent's bytes stored as they are
// in a file, starting at base bytes (§2.4, §5.1). Holes in the file (a thin
// or sparse copy) are reported as absent so that thin copies stay thin.
type flatExtent struct {
	f    disk.File
	name string
	base int64 // byte offset of the extent in the file
	n    int64
	ro   bool
}

func (e *flatExtent) size() int64 { return e.n }

func (e *flatExtent) lookup(off, n int64) (blockState, int64, error) {
	data, run, err := disk.FileRun(e.f, e.base+off, n)
	if err != nil {
		return 0, 0, disk.Wrap(err, "vmdk: seek", e.name, e.base+off)
	}
	if data {
		return stateData, run, nil
	}
	return stateAbsent, run, nil
}

func (e *flatExtent) readAt(p []byte, off int64) error {
	n, err := e.f.ReadAt(p, e.base+off)
	if err == io.EOF {
		// A flat file shorter than its extent reads as zeros past its end;
		// Check reports the short file.
		clear(p[n:])
		return nil
	}
	if err != nil {
		return disk.Wrap(err, "vmdk: read", e.name, e.base+off)
	}
	return nil
}

func (e *flatExtent) writeAt(p []byte, off int64, _ io.ReaderAt) error {
	if e.ro {
		return disk.Errorf(disk.ErrPermission, "vmdk: %s: opened read-only", e.name)
	}
	if _, err := e.f.WriteAt(p, e.base+off); err != nil {
		return disk.Wrap(err, "vmdk: write", e.name, e.base+off)
	}
	return nil
}

func (e *flatExtent) zeroAt(off, n int64, _ io.ReaderAt) error {
	if e.ro {
		return disk.Errorf(disk.ErrPermission, "vmdk: %s: opened read-only", e.name)
	}
	return disk.ZeroFile(e.f, e.base+off, n)
}

func (e *flatExtent) flush() error {
	if e.ro {
		return nil
	}
	return e.f.Sync()
}

func (e *flatExtent) close() error {
	err := e.flush()
	if cerr := e.f.Close(); err == nil {
		err = cerr
	}
	return err
}

// zeroExtent is a ZERO extent: reads give zeros, writes are refused.
type zeroExtent struct{ n int64 }

func (e zeroExtent) size() int64 { return e.n }
func (e zeroExtent) lookup(off, n int64) (blockState, int64, error) {
	return stateZero, n, nil
}
func (e zeroExtent) readAt(p []byte, _ int64) error { clear(p); return nil }
func (e zeroExtent) writeAt([]byte, int64, io.ReaderAt) error {
	return disk.Errorf(disk.ErrPermission, "vmdk: ZERO extents cannot be written")
}
func (e zeroExtent) flush() error { return nil }
func (e zeroExtent) close() error { return nil }

// limitedExtent applies an extent line's access mode to an extent: RDONLY
// refuses writes, NOACCESS refuses everything.
type limitedExtent struct {
	extent
	access string
	name   string
}

func (e limitedExtent) readAt(p []byte, off int64) error {
	if e.access == "NOACCESS" {
		return disk.Errorf(disk.ErrAccess, "vmdk: %s: extent is NOACCESS", e.name)
	}
	return e.extent.readAt(p, off)
}

func (e limitedExtent) lookup(off, n int64) (blockState, int64, error) {
	if e.access == "NOACCESS" {
		return stateData, n, nil // reading it must fail loudly
	}
	return e.extent.lookup(off, n)
}

func (e limitedExtent) writeAt([]byte, int64, io.ReaderAt) error {
	return disk.Errorf(disk.ErrPermission, "vmdk: %s: extent is %s", e.name, e.access)
}
