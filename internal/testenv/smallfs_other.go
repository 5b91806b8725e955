//go:build !linux

package testenv

import "testing"

// SmallFS mounts a small filesystem for tests that fill one; it exists on
// Linux only, elsewhere the test is skipped (or fails when
// VDISK_TEST_REQUIRE names "tmpfs").
func SmallFS(t testing.TB, size int64) string {
	t.Helper()
	if Required("tmpfs") {
		t.Fatal("a tmpfs is required by VDISK_TEST_REQUIRE but only Linux has one here")
	}
	t.Skip("no tmpfs on this system")
	return ""
}
