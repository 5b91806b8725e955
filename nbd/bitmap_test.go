package nbd_test

import (
	"context"
	"errors"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/vdisk-project/vdisk/disk"
	"github.com/vdisk-project/vdisk/internal/testenv"
	"github.com/vdisk-project/vdisk/nbd"
)

// TestDirtyBitmap reads qemu's persistent dirty bitmap through qemu-nbd
// -B: the ranges qemu-io wrote after the bitmap was added are dirty, the
// rest clean, and base:allocation still answers on the same connection.
func TestDirtyBitmap(t *testing.T) {
	qimg := testenv.Tool(t, "qemu-img")
	qio := testenv.Tool(t, "qemu-io")
	qnbd := testenv.Tool(t, "qemu-nbd")
	dir := t.TempDir()
	img := filepath.Join(dir, "d.qcow2")
	run := func(name string, args ...string) {
		t.Helper()
		if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
			t.Fatalf("%s %v: %v\n%s", name, args, err, out)
		}
	}
	run(qimg, "create", "-f", "qcow2", img, "64M")
	run(qio, "-f", "qcow2", "-c", "write -P 1 0 1M", img) // before the bitmap: clean
	run(qimg, "bitmap", "--add", "-g", "64K", img, "b0")
	run(qio, "-f", "qcow2", "-c", "write -P 2 4M 128K", "-c", "write -P 3 10M 4K", "-c", "write -z 20M 1M", img)
	sock := filepath.Join(dir, "s")
	cmd := exec.Command(qnbd, "-r", "-t", "-e", "8", "-f", "qcow2", "-B", "b0", "-k", sock, img)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	ctx := context.Background()
	var c *nbd.Client
	var err error
	for i := 0; i < 100; i++ {
		c, err = nbd.Dial(ctx, "nbd+unix:///?socket="+sock, &nbd.ClientOptions{MetaContext: "qemu:dirty-bitmap:b0", Connections: 2})
		if err == nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var dirty []disk.Extent
	var total int64
	err = c.ContextExtents(ctx, 0, c.Size(), func(e disk.Extent) error {
		total += e.Len
		if e.Flags&1 != 0 {
			if k := len(dirty); k > 0 && dirty[k-1].End() == e.Off {
				dirty[k-1].Len += e.Len
			} else {
				dirty = append(dirty, e)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []disk.Extent{{Off: 4 << 20, Len: 128 << 10}, {Off: 10 << 20, Len: 64 << 10}, {Off: 20 << 20, Len: 1 << 20}}
	if total != c.Size() || len(dirty) != len(want) {
		t.Fatalf("dirty %v over %d bytes, want %v", dirty, total, want)
	}
	for i := range want {
		if dirty[i].Off != want[i].Off || dirty[i].Len != want[i].Len {
			t.Errorf("dirty[%d] = %+v, want %+v", i, dirty[i], want[i])
		}
	}
	// base:allocation on the same client still answers.
	var data int64
	if err := c.Extents(ctx, 0, c.Size(), func(e disk.Extent) error {
		if e.Flags.Data() {
			data += e.Len
		}
		return nil
	}); err != nil || data < 1<<20 || data > 8<<20 {
		t.Errorf("allocation: %d bytes of data, %v", data, err)
	}
	// A context the server does not have is refused clearly.
	c2, err := nbd.Dial(ctx, "nbd+unix:///?socket="+sock, &nbd.ClientOptions{MetaContext: "qemu:dirty-bitmap:nope"})
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	if err := c2.ContextExtents(ctx, 0, 1<<20, func(disk.Extent) error { return nil }); !errors.Is(err, disk.ErrNotSupported) {
		t.Errorf("unknown context: %v", err)
	}
}
