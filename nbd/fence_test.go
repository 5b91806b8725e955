package nbd

import (
	"bytes"
	"context"
	"io"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/vdisk-project/vdisk/disk/disktest"
)

// slowProxy relays a Unix socket, passing what the server sends at about
// 512 bytes every 5 ms: a large read reply arrives over many reads.
func slowProxy(t *testing.T, upstream string) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "slow")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("unix", upstream)
			if err != nil {
				c.Close()
				return
			}
			go func() { io.Copy(u, c); u.Close() }()
			go func() {
				defer c.Close()
				buf := make([]byte, 512)
				for {
					n, err := u.Read(buf)
					if n > 0 {
						if _, werr := c.Write(buf[:n]); werr != nil {
							return
						}
						time.Sleep(5 * time.Millisecond)
					}
					if err != nil {
						return
					}
				}
			}()
		}
	}()
	return sock
}

// TestTimedOutReadFencesBuffer: a read that times out while its reply is
// arriving must not return before the connection is fenced. Otherwise the
// reply goes on being copied into the caller's buffer after the call has
// returned it (the race detector sees the caller's write below race with
// the read loop's; without it, the buffer changes under the caller).
func TestTimedOutReadFencesBuffer(t *testing.T) {
	m := disktest.NewMemDisk(1 << 20)
	m.WriteAt(bytes.Repeat([]byte{0xab}, 1<<20), 0)
	sock := slowProxy(t, serve(t, m, ServerOptions{}))
	for _, async := range []bool{false, true} {
		c, err := Dial(context.Background(), "nbd+unix:///?socket="+sock, &ClientOptions{Timeout: 150 * time.Millisecond, Connections: 1})
		if err != nil {
			t.Fatal(err)
		}
		p := make([]byte, 32<<10) // about 0.3 s at the proxy's pace, read through the client's buffer
		if async {
			f := c.ReadAsync(p, 0)
			ctx, cancel := context.WithTimeout(context.Background(), 150*time.Millisecond)
			err = f.Wait(ctx)
			cancel()
			if err == nil {
				t.Fatal("the slow read completed")
			}
			f.Abort(err)
		} else if _, err := c.ReadAt(p, 0); err == nil {
			t.Fatal("the slow read did not time out")
		}
		// The buffer is ours again: write it, then check that nothing
		// else does.
		for i := range p {
			p[i] = 0x11
		}
		time.Sleep(100 * time.Millisecond)
		for i, b := range p {
			if b != 0x11 {
				t.Fatalf("async=%v: byte %d of the buffer changed to %#x after the timed-out read returned", async, i, b)
			}
		}
		c.Close()
	}
}
