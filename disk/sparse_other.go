//go:build !linux

package disk

// FileRun reports data for the whole range: this platform has no portable
// SEEK_DATA.
func FileRun(f File, off, n int64) (bool, int64, error) { return true, n, nil }

// ZeroFile writes zeros over the range.
func ZeroFile(f File, off, n int64) error {
	return FillZeros(f, off, n)
}

// Preallocate does nothing on this platform.
func Preallocate(f File, n int64) error { return nil }
