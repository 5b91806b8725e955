package cli

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vdisk-project/vdisk"
)

// TestKitSurvivesHostRestart reads and writes a disk through the kit, with
// requests in flight on several NBD connections, while the host is killed
// with SIGKILL and started again on the same addresses: the connections
// redial, the session the restart lost is replaced by a new login, and
// every read matches what was written and acknowledged.
func TestKitSurvivesHostRestart(t *testing.T) {
	dir := t.TempDir()
	api, nbdAddr := freePort(t), freePort(t)
	args := []string{"--listen", api, "--nbd-listen", nbdAddr}
	const pw = "restart password"
	host := startChild(t, dir, pw, args...)
	t.Cleanup(func() { host.kill() })
	ctx := context.Background()
	c, err := vdisk.Connect(ctx, vdisk.ConnectParams{Server: host.api, User: "admin", Password: pw, Thumbprint: host.thumbprint,
		Transports: vdisk.ModeNBDSSL, Config: &vdisk.Config{Timeout: 20 * time.Second, Retries: 8}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	spec := vdisk.Spec{Disk: "restart"}
	const size = 16 << 20
	if err := c.Create(ctx, spec, vdisk.CreateParams{Capacity: size}); err != nil {
		t.Fatal(err)
	}
	d, err := c.Open(ctx, spec, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	model := make([]byte, size)
	rng := rand.New(rand.NewPCG(5, 6))
	block := func(i int) []byte { return model[i<<16 : (i+1)<<16] }
	write := func(i int) {
		t.Helper()
		for j := range block(i) {
			block(i)[j] = byte(rng.Uint32())
		}
		if _, err := d.WriteAt(block(i), int64(i)<<16); err != nil {
			t.Fatalf("write of block %d: %v", i, err)
		}
	}
	for i := range size >> 16 {
		write(i)
	}
	if err := d.Flush(); err != nil {
		t.Fatal(err)
	}
	// Four readers, each over its quarter of the disk, keep requests in
	// flight on the handle's connections while the host goes down and
	// comes back; they go on until each has read its quarter three more
	// times after the restart. rounds counts the rounds of the slowest.
	const readers = 4
	var perReader [readers]atomic.Int64
	rounds := func() int64 {
		m := perReader[0].Load()
		for i := range perReader {
			m = min(m, perReader[i].Load())
		}
		return m
	}
	stop := make(chan struct{})
	done := make(chan error, readers)
	for r := range readers {
		go func() {
			buf := make([]byte, 256<<10)
			lo, hi := int64(r)*size/readers, int64(r+1)*size/readers
			for {
				for off := lo; off < hi; off += int64(len(buf)) {
					if _, err := d.ReadAt(buf, off); err != nil {
						done <- err
						return
					}
					if !bytes.Equal(buf, model[off:off+int64(len(buf))]) {
						done <- fmt.Errorf("reader %d, round %d: the read at %d differs from the model", r, perReader[r].Load(), off)
						return
					}
				}
				perReader[r].Add(1)
				select {
				case <-stop:
					done <- nil
					return
				default:
				}
			}
		}()
	}
	for rounds() < 2 {
		time.Sleep(10 * time.Millisecond)
	}
	host.kill()
	host = startChild(t, dir, pw, args...)
	after := rounds() + 3
	for rounds() < after {
		select {
		case err := <-done:
			t.Fatalf("reading across the restart: %v", err)
		case <-time.After(10 * time.Millisecond):
		}
	}
	close(stop)
	for range readers {
		if err := <-done; err != nil {
			t.Fatalf("reading across the restart: %v", err)
		}
	}
	// Writes after the restart are acknowledged and read back.
	for i := range 8 {
		write(i * 16)
	}
	if err := d.Flush(); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, size)
	if _, err := d.ReadAt(got, 0); err != nil || !bytes.Equal(got, model) {
		t.Fatalf("the disk after the restart differs from what was written (err %v)", err)
	}
}
