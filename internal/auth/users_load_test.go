package auth

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/vdisk-project/vdisk/disk"
)

// TestOpenStoreRefusesSymlink plants a users.json that is a symbolic link
// to a user file elsewhere: OpenStore must refuse it, not load its users.
func TestOpenStoreRefusesSymlink(t *testing.T) {
	dir := t.TempDir()
	real := filepath.Join(dir, "real.json")
	s, err := OpenStore(real, &StoreOptions{Iterations: 1000})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Bootstrap("admin", "secret-password-1"); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "users.json")
	if err := os.Symlink(real, link); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenStore(link, &StoreOptions{Iterations: 1000}); !errors.Is(err, disk.ErrPermission) {
		t.Errorf("OpenStore(symlink) = %v, want ErrPermission", err)
	}
	if _, err := OpenStore(real, &StoreOptions{Iterations: 1000}); err != nil {
		t.Errorf("OpenStore(regular file) = %v", err)
	}
}
