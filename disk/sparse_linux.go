package disk

import (
	"errors"

	"golang.org/x/sys/unix"
)

// FileRun reports whether the file byte at off holds data (or lies in a
// hole) and how many bytes from off, at most n, share that state, using
// SEEK_DATA and SEEK_HOLE. Files that cannot tell (not an *os.File, or a
// filesystem without SEEK_DATA) report data.
func FileRun(f File, off, n int64) (bool, int64, error) {
	of, ok := f.(fder)
	if !ok {
		return true, n, nil
	}
	fd := int(of.Fd())
	data, err := unix.Seek(fd, off, unix.SEEK_DATA)
	if errors.Is(err, unix.ENXIO) {
		return false, n, nil // a hole to the end of the file
	}
	if err != nil {
		return true, n, nil
	}
	if data > off {
		return false, min(data-off, n), nil
	}
	hole, err := unix.Seek(fd, off, unix.SEEK_HOLE)
	if err != nil {
		return true, n, nil
	}
	return true, min(hole-off, n), nil
}

// ZeroFile makes a byte range of a file read as zeros, punching a hole when
// the filesystem can (keeping the file size) and writing zeros otherwise.
func ZeroFile(f File, off, n int64) error {
	if of, ok := f.(fder); ok {
		err := unix.Fallocate(int(of.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, n)
		if err == nil {
			return nil
		}
	}
	return FillZeros(f, off, n)
}

// Preallocate reserves storage for the first n bytes of a file (thick
// provisioning) when the filesystem can, and does nothing otherwise.
func Preallocate(f File, n int64) error {
	if of, ok := f.(fder); ok && n > 0 {
		if err := unix.Fallocate(int(of.Fd()), 0, 0, n); err != nil && !errors.Is(err, unix.EOPNOTSUPP) {
			return err
		}
	}
	return nil
}
