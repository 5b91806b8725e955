package vdisk

import (
	"bytes"
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vdisk-project/vdisk/disk/disktest"
	"github.com/vdisk-project/vdisk/nbd"
	"github.com/vdisk-project/vdisk/nbd/nbdtest"
)

// stallFirstRead is a disk whose first read waits until release is
// closed.
type stallFirstRead struct {
	*disktest.MemDisk
	reads   atomic.Int32
	release chan struct{}
}

func (d *stallFirstRead) ReadAt(p []byte, off int64) (int, error) {
	if d.reads.Add(1) == 1 {
		<-d.release
	}
	return d.MemDisk.ReadAt(p, off)
}

// TestTimedOutAsyncReadIsFenced: an async read that times out is retried;
// the first request's reply, arriving late, must not be written into the
// caller's buffer once its Future has completed. The retry went out on
// the same, unbroken connection, so the late reply was read into the
// buffer the caller already had back.
func TestTimedOutAsyncReadIsFenced(t *testing.T) {
	m := disktest.NewMemDisk(1 << 20)
	m.WriteAt(bytes.Repeat([]byte{0xab}, 1<<20), 0)
	d := &stallFirstRead{MemDisk: m, release: make(chan struct{})}
	srv := nbdtest.NewServer(t, d, nil)
	var once sync.Once
	let := func() { once.Do(func() { close(d.release) }) }
	defer let()
	dial := func(ctx context.Context) (*nbd.Client, error) {
		return nbd.Dial(ctx, srv.URI, &nbd.ClientOptions{Timeout: 5 * time.Second, Connections: 1})
	}
	r, err := newRemoteDisk(context.Background(), dial, 3, 300*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	p := make([]byte, 64<<10)
	if err := r.async(p, 0, false)(context.Background()); err != nil {
		t.Fatalf("the retried read failed: %v", err)
	}
	if !bytes.Equal(p, bytes.Repeat([]byte{0xab}, len(p))) {
		t.Fatal("the retried read returned the wrong data")
	}
	// The Future has completed: the buffer is the caller's. New data on
	// the disk, then the stalled first read is let go.
	for i := range p {
		p[i] = 0x11
	}
	m.WriteAt(bytes.Repeat([]byte{0xcd}, 1<<20), 0)
	let()
	time.Sleep(200 * time.Millisecond)
	for i, b := range p {
		if b != 0x11 {
			t.Fatalf("byte %d of the buffer changed to %#x after the read completed: a late reply was written into it", i, b)
		}
	}
}

func TestCanonicalDatastorePath(t *testing.T) {
	for in, want := range map[string]string{
		"[datastore1] vm/vm.vmdk":   "[datastore1] vm/vm.vmdk",
		"[datastore1]vm/vm.vmdk":    "[datastore1] vm/vm.vmdk",
		"[datastore1]   vm/vm.vmdk": "[datastore1] vm/vm.vmdk",
		" [ds 2] a b/c.vmdk ":       "[ds 2] a b/c.vmdk",
		"vm/web01/scsi0:0":          "vm/web01/scsi0:0",
		"[broken":                   "[broken",
	} {
		if got := canonicalDatastorePath(in); got != want {
			t.Errorf("%q: got %q, want %q", in, got, want)
		}
	}
}
