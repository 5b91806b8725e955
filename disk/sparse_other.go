//go:build !linux

package disk

// FileRun reports data for the whole range: this platform has no portable
// SEEK_DATA.
func FileRun(f File, off, n int64) (bool, int64, error) { return true, n, nil }

// ZeroFile writes zeros over the range.
func ZeroFile(f File, off, n int64) error {
	buf := make([]byte, min(n, 1<<20))
	for n > 0 {
		c := min(n, int64(len(buf)))
		if _, err := f.WriteAt(buf[:c], off); err != nil {
			return err
		}
		off += c
		n -= c
	}
	return nil
}

// Preallocate does nothing on this platform.
func Preallocate(f File, n int64) error { return nil }
