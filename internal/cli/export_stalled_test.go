package cli

import (
	"context"
	"io"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/vdisk-project/vdisk/nbd"
)

// TestExportStalledHandshakes: 1,000 TCP connections that never negotiate
// must not keep a real client out of `vdisk export`: they do not count
// against --shared, and beyond --max-negotiating the oldest make room.
func TestExportStalledHandshakes(t *testing.T) {
	n := 1000
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err == nil && rl.Cur < uint64(2*n+200) {
		n = (int(rl.Cur) - 200) / 2
	}
	dir := t.TempDir()
	src, content := sample(t, dir)
	for _, tc := range []struct {
		name string
		o    exportOptions
	}{
		// All stalled connections sit in negotiation; --shared 4 is for
		// connections in transmission.
		{"under the cap", exportOptions{maxNegotiating: 2 * n, handshakeTimeout: time.Minute}},
		// Past the default cap: a client takes the place of the oldest
		// stalled connection once it is a tenth of the timeout old.
		{"past the cap", exportOptions{handshakeTimeout: 10 * time.Second}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := tc.o
			o.bind, o.shared, o.readOnly = "127.0.0.1:0", 4, true
			ctx, cancel := context.WithCancel(context.Background())
			ready := make(chan string, 1)
			done := make(chan error, 1)
			go func() { done <- runExport(ctx, o, src, io.Discard, ready) }()
			defer func() {
				cancel()
				if err := <-done; err != nil {
					t.Errorf("export: %v", err)
				}
			}()
			addr := <-ready
			start := time.Now()
			var stalled []net.Conn
			defer func() {
				for _, c := range stalled {
					c.Close()
				}
			}()
			for range n {
				c, err := net.Dial("tcp", addr)
				if err != nil {
					t.Fatal(err)
				}
				stalled = append(stalled, c)
			}
			var c *nbd.Client
			var err error
			for time.Since(start) < o.handshakeTimeout {
				c, err = nbd.Dial(context.Background(), "nbd://"+addr+"/", &nbd.ClientOptions{Connections: 1, Timeout: 10 * time.Second})
				if err == nil {
					break
				}
				time.Sleep(20 * time.Millisecond)
			}
			if err != nil || time.Since(start) >= o.handshakeTimeout {
				t.Fatalf("no client got in while %d stalled connections sat there: %v", n, err)
			}
			defer c.Close()
			buf := make([]byte, 1<<20)
			if _, err := c.ReadAt(buf, 0); err != nil || string(buf) != string(content[:1<<20]) {
				t.Fatalf("read: %v (or different data)", err)
			}
			t.Logf("%d stalled connections: a client got in after %v", n, time.Since(start).Round(time.Millisecond))
		})
	}
}
