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

// TestClientPayloadCut: the connection drops in the middle of a read
// reply's payload. The read must fail at once (the call was already out of
// the in-flight table), not wait for the request timeout.
func TestClientPayloadCut(t *testing.T) {
	_, sock, _ := testServer(t, ServerOptions{NoExtendedHeaders: true}, true)
	for range 2 {
		front := filepath.Join(t.TempDir(), "p")
		l, err := net.Listen("unix", front)
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			c, err := l.Accept()
			if err != nil {
				return
			}
			defer c.Close()
			s, err := net.Dial("unix", sock)
			if err != nil {
				return
			}
			defer s.Close()
			go io.Copy(s, c)
			// Forward the handshake and the first 100 KiB of replies, then
			// cut: the reply to a 256 KiB read of data (one chunk, the last
			// of its request) is cut inside its payload.
			io.CopyN(c, s, 100<<10)
		}()
		c, err := Dial(context.Background(), "nbd+unix:///disk?socket="+front, &ClientOptions{Timeout: 30 * time.Second, Connections: 1})
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		_, err = c.ReadAt(make([]byte, 256<<10), 0)
		if err == nil {
			t.Error("a read cut in its payload succeeded")
		}
		if el := time.Since(start); el > 5*time.Second {
			t.Errorf("a read cut in its payload failed after %v; it must fail at once", el)
		}
		if !c.Broken() {
			t.Error("Broken() is false after the connection dropped")
		}
		c.Close()
		l.Close()
	}
}
