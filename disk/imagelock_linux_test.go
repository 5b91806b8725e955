package disk_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vdisk-project/vdisk/disk"
)

func openLocked(t *testing.T, name string, l disk.ImageLock) (*os.File, error) {
	t.Helper()
	mode := os.O_RDONLY
	if l.Write {
		mode = os.O_RDWR
	}
	f, err := os.OpenFile(name, mode, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f, disk.LockImage(f, l)
}

// TestLockImageInProcess opens one file twice in this process: image locks
// belong to open file descriptions, so two opens conflict as two
// processes would.
func TestLockImageInProcess(t *testing.T) {
	var (
		metaR = disk.ImageLock{}
		metaW = disk.ImageLock{Write: true}
		dataR = disk.ImageLock{Data: true}
		dataW = disk.ImageLock{Write: true, Data: true}
	)
	tests := []struct {
		name          string
		first, second disk.ImageLock
		busy          string // "" when the second open must succeed
	}{
		{"two readers", metaR, metaR, ""},
		{"two writers", metaW, metaW, `failed to get "write" lock`},
		{"reader then writer", metaR, metaW, `failed to get "write" lock`},
		{"writer then reader", metaW, metaR, `failed to get shared "write" lock`},
		{"two flat readers", dataR, dataR, ""},
		{"two flat writers", dataW, dataW, `failed to get "resize" lock`},
		{"flat writer then reader", dataW, dataR, `failed to get shared "resize" lock`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			name := filepath.Join(t.TempDir(), "img")
			if err := os.WriteFile(name, make([]byte, 4096), 0o644); err != nil {
				t.Fatal(err)
			}
			first, err := openLocked(t, name, tt.first)
			if err != nil {
				t.Fatalf("first open %+v: %v", tt.first, err)
			}
			_, err = openLocked(t, name, tt.second)
			if tt.busy == "" {
				if err != nil {
					t.Fatalf("second open %+v after %+v: %v, want success", tt.second, tt.first, err)
				}
				return
			}
			if !errors.Is(err, disk.ErrBusy) || !strings.Contains(err.Error(), tt.busy) ||
				!strings.Contains(err.Error(), "image is in use by another process") {
				t.Fatalf("second open %+v after %+v: %v, want ErrBusy %q", tt.second, tt.first, err, tt.busy)
			}
			// The refused open released what it took: with the first
			// closed, a writer gets in while the refused file stays open.
			first.Close()
			if _, err := openLocked(t, name, metaW); err != nil {
				t.Errorf("writer after the conflict: %v (the refused open left locks behind)", err)
			}
		})
	}
}

// TestLockImageNoDescriptor leaves files without an OS descriptor alone.
func TestLockImageNoDescriptor(t *testing.T) {
	var f disk.File = noFd{}
	if err := disk.LockImage(f, disk.ImageLock{Write: true}); err != nil {
		t.Errorf("LockImage on a file without a descriptor: %v", err)
	}
}

type noFd struct{ disk.File }
