package nbd

import (
	"context"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"runtime/pprof"
	"testing"
	"time"

	"github.com/vdisk-project/vdisk/disk"
)

// TestClientHostileServer plays mutated and truncated server streams to the
// client: every one must end in an error or a result within the timeouts,
// never a hang or a panic.
func TestClientHostileServer(t *testing.T) {
	seed := serverBytes()
	rng := rand.New(rand.NewPCG(1, 1))
	for range 300 {
		in := append([]byte(nil), seed...)
		for range 1 + rng.IntN(4) {
			in[rng.IntN(len(in))] = byte(rng.Uint32())
		}
		if rng.IntN(3) == 0 {
			in = in[:rng.IntN(len(in))]
		}
		done := make(chan struct{})
		go func() {
			defer close(done)
			sock := filepath.Join(t.TempDir(), "f")
			l, _ := net.Listen("unix", sock)
			defer l.Close()
			go func() {
				c, err := l.Accept()
				if err != nil {
					return
				}
				defer c.Close()
				go io.Copy(io.Discard, c)
				c.Write(in)
				time.Sleep(20 * time.Millisecond)
			}()
			c, err := Dial(context.Background(), "nbd+unix:///?socket="+sock, &ClientOptions{Timeout: 50 * time.Millisecond, Connections: 1})
			if err != nil {
				return
			}
			defer c.Close()
			c.ReadAt(make([]byte, 4096), 0)
			c.Extents(context.Background(), 0, c.Size(), func(disk.Extent) error { return nil })
		}()
		select {
		case <-done:
		case <-time.After(3 * time.Second):
			pprof.Lookup("goroutine").WriteTo(os.Stderr, 1)
			t.Fatalf("the client hangs on server bytes %x", in)
		}
	}
}
