// Package testenv finds the peer tools that interop tests run against
// (qemu-img, qemu-io, qemu-nbd, nbdkit, nbdinfo, nbdcopy) and applies the
// skip policy: a test whose tool is missing is skipped, unless the
// VDISK_TEST_REQUIRE environment variable names the tool (or is "all"), in
// which case it fails. CI sets VDISK_TEST_REQUIRE so that peer tests always
// run there. Long soak, stress and crash loops run only with VDISK_TEST_LONG=1.
package testenv

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// Tool returns the path of the named peer tool, skipping the test when it is
// absent, or failing it when VDISK_TEST_REQUIRE names the tool.
func Tool(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err == nil {
		return p
	}
	if Required(name) {
		t.Fatalf("%s is required by VDISK_TEST_REQUIRE but not found: %v", name, err)
	}
	t.Skipf("%s not found; install it or set VDISK_TEST_REQUIRE to fail instead", name)
	return ""
}

// Required reports whether VDISK_TEST_REQUIRE names the tool or is "all".
func Required(name string) bool {
	for _, r := range strings.Split(os.Getenv("VDISK_TEST_REQUIRE"), ",") {
		r = strings.TrimSpace(r)
		if r == name || r == "all" {
			return true
		}
	}
	return false
}

// Long skips the test unless VDISK_TEST_LONG=1 asks for long-running tests.
func Long(t testing.TB) {
	t.Helper()
	if os.Getenv("VDISK_TEST_LONG") != "1" {
		t.Skip("long test; set VDISK_TEST_LONG=1 to run it")
	}
}

// Run runs a peer tool and fails the test with its output if it fails. It
// returns the combined output.
func Run(t testing.TB, name string, args ...string) string {
	t.Helper()
	path := Tool(t, name)
	out, err := exec.Command(path, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// FUSE skips the test unless a FUSE filesystem can be mounted here: the
// /dev/fuse device and either root or fusermount3. VDISK_TEST_REQUIRE=fuse
// makes its absence a failure.
func FUSE(t testing.TB) {
	t.Helper()
	why := ""
	if _, err := os.Stat("/dev/fuse"); err != nil {
		why = "no /dev/fuse"
	} else if _, err := exec.LookPath("fusermount3"); err != nil && os.Geteuid() != 0 {
		why = "neither root nor fusermount3"
	}
	if why == "" {
		return
	}
	if Required("fuse") {
		t.Fatalf("FUSE is required by VDISK_TEST_REQUIRE but cannot mount: %s", why)
	}
	t.Skipf("FUSE cannot mount here (%s)", why)
}
