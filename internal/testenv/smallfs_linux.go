package testenv

import (
	"fmt"
	"syscall"
	"testing"
)

// SmallFS mounts a tmpfs of size bytes on a new temporary directory and
// returns it, for tests that fill a filesystem. It needs root; without it
// the test is skipped, or fails when VDISK_TEST_REQUIRE names "tmpfs".
func SmallFS(t testing.TB, size int64) string {
	t.Helper()
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, fmt.Sprintf("size=%d,mode=0700", size)); err != nil {
		if Required("tmpfs") {
			t.Fatalf("mounting a tmpfs (required by VDISK_TEST_REQUIRE): %v", err)
		}
		t.Skipf("cannot mount a tmpfs (%v); run as root or set VDISK_TEST_REQUIRE=tmpfs to fail instead", err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, syscall.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	return dir
}
