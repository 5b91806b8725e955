package vmdk

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// TestCreateInterrupted: a split create interrupted between extents stops
// and removes every file it made.
func TestCreateInterrupted(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := Create(ctx, filepath.Join(dir, "d.vmdk"), 64<<20, &CreateOptions{Subformat: TwoGbMaxExtentSparse, SplitSize: 1 << 20})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("create with an ended context: %v, want context.Canceled", err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("the interrupted create left %d files", len(ents))
	}
}
