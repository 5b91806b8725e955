package cli

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestRestoreIntoLargerTarget: a restore into an existing image larger than
// the disk writes the disk's bytes, leaves the rest, and says so.
func TestRestoreIntoLargerTarget(t *testing.T) {
	backupRepo(t)
	dir := t.TempDir()
	img := filepath.Join(dir, "d.raw")
	data := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
	os.WriteFile(img, data, 0o644)
	mustRun(t, "backup", "--progress", "none", img)
	big := filepath.Join(dir, "big.raw")
	tail := bytes.Repeat([]byte{0xee}, 1<<20)
	os.WriteFile(big, append(make([]byte, 1<<20), tail...), 0o644)
	_, stderr, code := run(t, "restore", "latest", big)
	if code != 0 || !strings.Contains(stderr, "1 MiB larger than the disk; its bytes from 1048576 on are left as they were") {
		t.Fatalf("restore into a larger image: exit %d, stderr %q", code, stderr)
	}
	got, _ := os.ReadFile(big)
	if !bytes.Equal(got[:1<<20], data) || !bytes.Equal(got[1<<20:], tail) {
		t.Error("the restore into a larger image did not write exactly the disk's bytes")
	}
}
