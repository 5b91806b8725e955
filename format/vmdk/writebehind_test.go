package vmdk

import (
	"math/rand/v2"
	"path/filepath"
	"testing"

	"github.com/vdisk-project/vdisk/disk"
	"github.com/vdisk-project/vdisk/disk/disktest"
)

// TestWriteBehind fills a new disk of every writable subformat through
// Copy and checks that the data files' write-back started while the data
// came in (the final flush then finds little left to write), and that the
// disk reads back what was written.
func TestWriteBehind(t *testing.T) {
	const size = 6 * disk.DefaultWriteBehindWindow
	src := disktest.NewMemDisk(size)
	data := make([]byte, size)
	rng := rand.New(rand.NewPCG(1, 2)) // incompressible: a stream is as large
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	if _, err := src.WriteAt(data, 0); err != nil {
		t.Fatal(err)
	}
	for _, sf := range append(creatable, StreamOptimized) {
		t.Run(string(sf), func(t *testing.T) {
			t.Parallel()
			fsys := &disktest.WriteBackFS{}
			path := filepath.Join(t.TempDir(), "d.vmdk")
			d, err := Create(ctx, path, size, &CreateOptions{Subformat: sf, FS: fsys, SplitSize: 16 << 20})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := disk.Copy(ctx, d, src, &disk.CopyOptions{DstZeroed: true, Sequential: sf == StreamOptimized}); err != nil {
				t.Fatal(err)
			}
			if err := d.Close(); err != nil {
				t.Fatal(err)
			}
			if got := fsys.Starts(); got < 2 {
				t.Errorf("%d MiB copied into a new %s disk started write-back %d times, want at least 2", size>>20, sf, got)
			}
			checkImage(t, path)
			r, err := Open(ctx, path, &OpenOptions{ReadOnly: true})
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			got := make([]byte, size)
			if _, err := r.ReadAt(got, 0); err != nil {
				t.Fatal(err)
			}
			if string(got) != string(data) {
				t.Errorf("%s disk reads back other data than was copied in", sf)
			}
		})
	}
}

// TestWriteBehindOpen checks that a disk opened for writing is not written
// behind unless asked (a disk in use takes rewrites that early write-back
// would write twice).
func TestWriteBehindOpen(t *testing.T) {
	d, path := create(t, MonolithicFlat, 4*disk.DefaultWriteBehindWindow, nil)
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	fsys := &disktest.WriteBackFS{}
	d, err := Open(ctx, path, &OpenOptions{FS: fsys})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	buf := make([]byte, 4*disk.DefaultWriteBehindWindow)
	buf[0] = 1
	if _, err := d.WriteAt(buf, 0); err != nil {
		t.Fatal(err)
	}
	if got := fsys.Starts(); got != 0 {
		t.Errorf("an opened disk started write-back %d times, want none", got)
	}
	d.SetWriteBehind(true)
	for off := 0; off < len(buf); off += 1 << 20 {
		if _, err := d.WriteAt(buf[off:off+1<<20], int64(off)); err != nil {
			t.Fatal(err)
		}
	}
	if got := fsys.Starts(); got < 3 {
		t.Errorf("with SetWriteBehind(true) write-back started %d times over 4 windows, want at least 3", got)
	}
}
