package nbd

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/vdisk-project/vdisk/disk"
	"github.com/vdisk-project/vdisk/disk/disktest"
	"github.com/vdisk-project/vdisk/internal/testenv"
)

func TestParseURI(t *testing.T) {
	tests := []struct {
		in   string
		want ParsedURI
	}{
		{"nbd://example.com/disk", ParsedURI{Network: "tcp", Address: "example.com:10809", Export: "disk"}},
		{"nbds://[::1]:9000/", ParsedURI{TLS: true, Network: "tcp", Address: "[::1]:9000"}},
		{"nbd+unix:///e?socket=/tmp/s", ParsedURI{Network: "unix", Address: "/tmp/s", Export: "e"}},
		{"nbds+unix:///?socket=/s&tls-certificates=/pki", ParsedURI{TLS: true, Network: "unix", Address: "/s", CertDir: "/pki"}},
		{"nbd://10.0.0.1", ParsedURI{Network: "tcp", Address: "10.0.0.1:10809"}},
	}
	for _, tt := range tests {
		got, err := ParseURI(tt.in)
		if err != nil || got != tt.want {
			t.Errorf("ParseURI(%q) = %+v, %v; want %+v", tt.in, got, err, tt.want)
		}
	}
	for _, bad := range []string{"http://x/", "nbd+unix:///x", "::"} {
		if _, err := ParseURI(bad); !errors.Is(err, disk.ErrInvalid) {
			t.Errorf("ParseURI(%q) = %v, want ErrInvalid", bad, err)
		}
	}
}

// TestClientConformance runs the disk conformance suite over our client
// talking to our server.
func TestClientConformance(t *testing.T) {
	disktest.RunTests(t, disktest.Harness{
		New: func(t *testing.T, size int64) disk.Disk {
			sock := serve(t, disktest.NewMemDisk(size), ServerOptions{})
			c, err := Dial(context.Background(), "nbd+unix:///m?socket="+sock, nil)
			if err != nil {
				t.Fatal(err)
			}
			if len(c.conns) < 2 {
				t.Errorf("multi-conn: %d connections", len(c.conns))
			}
			return c
		},
	})
}

func TestClientTLS(t *testing.T) {
	dir := t.TempDir()
	cfg := writeCerts(t, dir)
	d, sock, _ := testServer(t, ServerOptions{TLSConfig: cfg}, true)
	ctx := context.Background()
	c, err := Dial(ctx, "nbds+unix:///disk?socket="+sock+"&tls-certificates="+dir, nil)
	if err != nil {
		t.Fatalf("TLS with a CA: %v", err)
	}
	got := make([]byte, 1<<20)
	want := make([]byte, 1<<20)
	d.ReadAt(want, 5<<20)
	if _, err := c.ReadAt(got, 5<<20); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("read over TLS: %v", err)
	}
	if _, err := c.WriteAt([]byte{1}, 0); !errors.Is(err, disk.ErrPermission) {
		t.Errorf("write to a read-only export = %v", err)
	}
	c.Close()
	thumb := FormatThumbprint(sha256.Sum256(cfg.Certificates[0].Certificate[0]))
	c, err = Dial(ctx, "nbds+unix:///disk?socket="+sock, &ClientOptions{Thumbprint: thumb})
	if err != nil {
		t.Fatalf("TLS with a pinned thumbprint: %v", err)
	}
	c.Close()
	wrong := FormatThumbprint(sha256.Sum256([]byte("another certificate")))
	if _, err := Dial(ctx, "nbds+unix:///disk?socket="+sock, &ClientOptions{Thumbprint: wrong}); !errors.Is(err, disk.ErrPermission) {
		t.Errorf("wrong thumbprint = %v, want ErrPermission", err)
	}
	if _, err := Dial(ctx, "nbds+unix:///disk?socket="+sock, nil); err == nil {
		t.Error("TLS without a CA or pin succeeded against a self-made CA")
	}
	if _, err := Dial(ctx, "nbd+unix:///disk?socket="+sock, nil); !errors.Is(err, disk.ErrPermission) {
		t.Errorf("plaintext against a TLS-required server = %v, want ErrPermission", err)
	}
	if _, err := Dial(ctx, "nbds+unix:///nope?socket="+sock+"&tls-certificates="+dir, nil); !errors.Is(err, disk.ErrNotFound) {
		t.Errorf("unknown export = %v, want ErrNotFound", err)
	}
}

// startPeer starts a peer NBD server on a Unix socket and waits for it.
func startPeer(t *testing.T, sock string, name string, args ...string) {
	t.Helper()
	cmd := exec.Command(testenv.Tool(t, name), args...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	for i := 0; i < 500; i++ {
		if c, err := net.Dial("unix", sock); err == nil {
			c.Close()
			return
		}
		time.Sleep(10 * time.Millisecond) // waiting for another process to listen
	}
	t.Fatalf("%s did not start", name)
}

func TestClientAgainstQemuNbd(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "d.raw")
	content := bytes.Repeat([]byte("qemu-nbd "), 4<<20/9+1)[:4<<20]
	os.WriteFile(img, content, 0o644)
	os.Truncate(img, 16<<20)
	sock := filepath.Join(dir, "q.sock")
	startPeer(t, sock, "qemu-nbd", "-t", "-f", "raw", "-k", sock, "-e", "4", img)
	c, err := Dial(context.Background(), "nbd+unix:///?socket="+sock, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	got := make([]byte, 4<<20)
	if _, err := c.ReadAt(got, 0); err != nil || !bytes.Equal(got, content) {
		t.Fatalf("read from qemu-nbd: %v", err)
	}
	if _, err := c.WriteAt([]byte("vdisk"), 8<<20); err != nil {
		t.Fatal(err)
	}
	var data int64
	if err := c.Extents(context.Background(), 0, c.Size(), func(e disk.Extent) error {
		if e.Flags.Data() {
			data += e.Len
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if data < 4<<20 || data >= 16<<20 {
		t.Errorf("qemu-nbd's allocation map shows %d data bytes", data)
	}
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(img)
	if string(b[8<<20:8<<20+5]) != "vdisk" {
		t.Error("write through qemu-nbd did not land")
	}
}

func TestClientAgainstNbdkit(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "k.sock")
	startPeer(t, sock, "nbdkit", "-f", "-U", sock, "memory", "64M")
	c, err := Dial(context.Background(), "nbd+unix:///?socket="+sock, nil)
	if err != nil {
		t.Fatal(err)
	}
	p := bytes.Repeat([]byte{7}, 3<<20)
	if _, err := c.WriteAt(p, 10<<20); err != nil {
		t.Fatal(err)
	}
	if err := c.WriteZeroes(11<<20, 1<<20, 0); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 3<<20)
	if _, err := c.ReadAt(got, 10<<20); err != nil {
		t.Fatal(err)
	}
	clear(p[1<<20 : 2<<20])
	if !bytes.Equal(got, p) {
		t.Error("nbdkit memory read back differently")
	}
	c.Close()

	// A stalled server: the request fails within the timeout, never hangs.
	sock2 := filepath.Join(dir, "slow.sock")
	startPeer(t, sock2, "nbdkit", "-f", "-U", sock2, "--filter=delay", "memory", "1M", "rdelay=30")
	c, err = Dial(context.Background(), "nbd+unix:///?socket="+sock2, &ClientOptions{Timeout: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if _, err := c.ReadAt(make([]byte, 4096), 0); !errors.Is(err, disk.ErrAccess) {
		t.Errorf("read from a stalled server = %v, want ErrAccess", err)
	}
	if time.Since(start) > 10*time.Second {
		t.Errorf("the timeout took %v", time.Since(start))
	}
	c.Close()

	// Server-side errors arrive typed.
	sock3 := filepath.Join(dir, "err.sock")
	startPeer(t, sock3, "nbdkit", "-f", "-U", sock3, "--filter=error", "memory", "1M", "error=EIO", "error-pread-rate=100%")
	c, err = Dial(context.Background(), "nbd+unix:///?socket="+sock3, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.ReadAt(make([]byte, 4096), 0); !errors.Is(err, disk.ErrAccess) {
		t.Errorf("read with an injected EIO = %v", err)
	}
}

func BenchmarkClientRead(b *testing.B) {
	m := disktest.NewMemDisk(64 << 20)
	m.WriteAt(bytes.Repeat([]byte{1}, 64<<20), 0)
	sock := serve(b, m, ServerOptions{})
	c, err := Dial(context.Background(), "nbd+unix:///?socket="+sock, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 4<<20)
	b.SetBytes(int64(len(buf)))
	b.ReportAllocs()
	var off int64
	for b.Loop() {
		if _, err := c.ReadAt(buf, off); err != nil {
			b.Fatal(err)
		}
		off = (off + int64(len(buf))) % m.Size()
	}
}

// TestClientCopy copies from a client with the copy engine, whose extent
// callback blocks on reads issued over the same connections: the client
// must not run callbacks on its reader goroutines (that deadlocked).
func TestClientCopy(t *testing.T) {
	d, sock, _ := testServer(t, ServerOptions{}, true)
	c, err := Dial(context.Background(), uri(sock), &ClientOptions{Timeout: 10 * time.Second, InFlight: 2, Connections: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	dst := disktest.NewMemDisk(c.Size())
	if _, err := disk.Copy(context.Background(), dst, c, &disk.CopyOptions{Workers: 4, ChunkSize: 64 << 10}); err != nil {
		t.Fatalf("Copy from the client: %v", err)
	}
	if off, err := disk.Compare(context.Background(), d, dst, nil); off != -1 || err != nil {
		t.Fatalf("copy differs at %d (%v)", off, err)
	}
	if dst.Allocated() > d.Allocated() {
		t.Errorf("thin copy over NBD allocated %d bytes, source %d", dst.Allocated(), d.Allocated())
	}
}

// TestPeersTLS: qemu-img reads our TLS export; our client reads qemu-nbd's
// and nbdkit's TLS-required exports, verifying them against the CA.
func TestPeersTLS(t *testing.T) {
	testenv.Tool(t, "qemu-img")
	dir := t.TempDir()
	cfg := writeCerts(t, dir)
	d, sock, _ := testServer(t, ServerOptions{TLSConfig: cfg}, true)
	want := make([]byte, d.Size())
	d.ReadAt(want, 0)
	out := filepath.Join(t.TempDir(), "o.raw")
	testenv.Run(t, "qemu-img", "convert", "--object", "tls-creds-x509,id=tls0,dir="+dir+",endpoint=client",
		"--image-opts", "driver=nbd,path="+sock+",export=disk,tls-creds=tls0,tls-hostname=localhost", "-O", "raw", out)
	if got, _ := os.ReadFile(out); !bytes.Equal(got, want) {
		t.Error("qemu-img over TLS read different data")
	}

	img := filepath.Join(t.TempDir(), "p.raw")
	os.WriteFile(img, want, 0o644)
	qsock := filepath.Join(t.TempDir(), "q.sock")
	startPeer(t, qsock, "qemu-nbd", "-t", "-r", "-f", "raw", "-k", qsock,
		"--object", "tls-creds-x509,id=tls0,dir="+dir+",endpoint=server,verify-peer=off", "--tls-creds", "tls0", img)
	ksock := filepath.Join(t.TempDir(), "k.sock")
	startPeer(t, ksock, "nbdkit", "-f", "-r", "-U", ksock, "--tls=require", "--tls-certificates="+dir, "file", img)
	for _, s := range []string{qsock, ksock} {
		if _, err := Dial(context.Background(), "nbd+unix:///?socket="+s, &ClientOptions{Timeout: 10 * time.Second}); err == nil {
			t.Errorf("plaintext against TLS-required %s succeeded", s)
		}
		c, err := Dial(context.Background(), "nbds+unix:///?socket="+s+"&tls-certificates="+dir, nil)
		if err != nil {
			t.Fatalf("TLS to %s: %v", s, err)
		}
		got := make([]byte, len(want))
		if _, err := c.ReadAt(got, 0); err != nil || !bytes.Equal(got, want) {
			t.Errorf("read over TLS from %s: %v", s, err)
		}
		c.Close()
	}
}

// TestNbdkitPlugins reads nbdkit's sparse-random and data plugins and
// checks the content against nbdkit's own view through nbdcopy.
func TestNbdkitPlugins(t *testing.T) {
	testenv.Tool(t, "nbdcopy")
	for _, plugin := range [][]string{
		{"sparse-random", "size=64M", "seed=42", "percent=20"},
		{"data", "data=0x55 0xaa @1048576 \"vdisk\" @33554431 1", "size=32M"},
	} {
		t.Run(plugin[0], func(t *testing.T) {
			dir := t.TempDir()
			sock := filepath.Join(dir, "k.sock")
			startPeer(t, sock, "nbdkit", append([]string{"-f", "-r", "-U", sock}, plugin...)...)
			ref := filepath.Join(dir, "ref.raw")
			testenv.Run(t, "nbdcopy", "nbd+unix:///?socket="+sock, ref)
			want, _ := os.ReadFile(ref)
			c, err := Dial(context.Background(), "nbd+unix:///?socket="+sock, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			dst := disktest.NewMemDisk(c.Size())
			if _, err := disk.Copy(context.Background(), dst, c, nil); err != nil {
				t.Fatal(err)
			}
			got := make([]byte, dst.Size())
			dst.ReadAt(got, 0)
			if !bytes.Equal(got, want) {
				t.Error("our client and nbdcopy read different content")
			}
		})
	}
}

// serverBytes builds a server's side of a handshake and a first reply, as
// fuzz seed.
func serverBytes() []byte {
	var b []byte
	be := binary.BigEndian
	b = be.AppendUint64(b, magicInit)
	b = be.AppendUint64(b, magicOpt)
	b = be.AppendUint16(b, handshakeFixed|handshakeNoZeros)
	rep := func(opt, typ uint32, data []byte) {
		b = be.AppendUint64(b, magicOptReply)
		b = be.AppendUint32(b, opt)
		b = be.AppendUint32(b, typ)
		b = be.AppendUint32(b, uint32(len(data)))
		b = append(b, data...)
	}
	rep(optStructuredReply, repAck, nil)
	rep(optSetMetaContext, repMetaContext, append([]byte{0, 0, 0, 1}, "base:allocation"...))
	rep(optSetMetaContext, repAck, nil)
	info := []byte{0, infoExport}
	info = be.AppendUint64(info, 1<<20)
	info = be.AppendUint16(info, flagHasFlags|flagCanMultiConn)
	rep(optGo, repInfo, info)
	rep(optGo, repAck, nil)
	// A structured read reply: a data chunk and a hole chunk.
	b = be.AppendUint32(b, magicStructured)
	b = be.AppendUint16(b, 0)
	b = be.AppendUint16(b, chunkOffsetData)
	b = be.AppendUint64(b, 1)
	b = be.AppendUint32(b, 8+512)
	b = be.AppendUint64(b, 0)
	b = append(b, bytes.Repeat([]byte{1}, 512)...)
	b = be.AppendUint32(b, magicStructured)
	b = be.AppendUint16(b, replyFlagDone)
	b = be.AppendUint16(b, chunkOffsetHole)
	b = be.AppendUint64(b, 1)
	b = be.AppendUint32(b, 12)
	b = be.AppendUint64(b, 512)
	b = be.AppendUint32(b, 3584)
	return b
}

// FuzzReplies plays arbitrary bytes as the server: the client must return
// errors, never panic, hang or allocate what the peer asks for.
func FuzzReplies(f *testing.F) {
	f.Add(serverBytes())
	f.Fuzz(func(t *testing.T, in []byte) {
		sock := filepath.Join(t.TempDir(), "f")
		l, err := net.Listen("unix", sock)
		if err != nil {
			t.Skip(err)
		}
		defer l.Close()
		go func() {
			c, err := l.Accept()
			if err != nil {
				return
			}
			defer c.Close()
			go io.Copy(io.Discard, c)
			c.Write(in)
			time.Sleep(20 * time.Millisecond) // let the client read before the hang-up
		}()
		c, err := Dial(context.Background(), "nbd+unix:///?socket="+sock, &ClientOptions{Timeout: 50 * time.Millisecond, Connections: 1})
		if err != nil {
			return
		}
		defer c.Close()
		c.ReadAt(make([]byte, 4096), 0)
		c.Extents(context.Background(), 0, c.Size(), func(disk.Extent) error { return nil })
	})
}

// TestExtendedHeaders: our client and server agree on extended headers
// (64-bit lengths) when both allow them, and fall back to compact headers
// when either refuses.
func TestExtendedHeaders(t *testing.T) {
	for _, tc := range []struct {
		name           string
		serverOff, cli bool
		want           bool
	}{
		{"both", false, false, true},
		{"server-refuses", true, false, false},
		{"client-refuses", false, true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := disktest.NewMemDisk(10 << 30)
			m.WriteAt([]byte("head"), 0)
			m.WriteAt([]byte("tail"), 10<<30-4)
			sock := serve(t, m, ServerOptions{NoExtendedHeaders: tc.serverOff})
			c, err := Dial(context.Background(), "nbd+unix:///?socket="+sock, &ClientOptions{NoExtendedHeaders: tc.cli})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if got := c.conns[0].ext; got != tc.want {
				t.Fatalf("extended headers = %v, want %v", got, tc.want)
			}
			// A zero request longer than 4 GiB, and a map of a 10 GiB disk.
			if err := c.WriteZeroes(1<<20, 6<<30, 0); err != nil {
				t.Fatalf("WriteZeroes of 6 GiB: %v", err)
			}
			var exts []disk.Extent
			if err := c.Extents(context.Background(), 0, c.Size(), func(e disk.Extent) error {
				if k := len(exts); k > 0 && exts[k-1].Flags == e.Flags {
					exts[k-1].Len += e.Len
					return nil
				}
				exts = append(exts, e)
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			if len(exts) != 3 || exts[1].Len != 10<<30-128<<10 {
				t.Errorf("extents = %+v", exts)
			}
			b := make([]byte, 4)
			if _, err := c.ReadAt(b, 10<<30-4); err != nil || string(b) != "tail" {
				t.Errorf("read at the end = %q, %v", b, err)
			}
			if _, err := c.WriteAt([]byte("new!"), 5<<30); err != nil {
				t.Fatal(err)
			}
			m.ReadAt(b, 5<<30)
			if string(b) != "new!" {
				t.Errorf("write landed as %q", b)
			}
		})
	}
}

// TestClientPayloads reads pieces of every size around directPayload, at
// odd offsets and many at once, plain and over TLS, from a disk of data
// and holes: what the reader buffered and what payload reads straight from
// the connection must join up into the disk's bytes.
func TestClientPayloads(t *testing.T) {
	const size = 8 << 20
	m := disktest.NewMemDisk(size)
	data := make([]byte, size)
	for i := range data {
		data[i] = byte(i*7 + i>>11)
	}
	for off := 0; off < size; off += 1 << 20 {
		clear(data[off+300<<10 : off+500<<10]) // a hole in each MiB
	}
	m.WriteAt(data, 0)
	dir := t.TempDir()
	cfg := writeCerts(t, dir)
	for _, tc := range []struct {
		name string
		uri  func() string
	}{
		{"plain", func() string { return "nbd+unix:///?socket=" + serve(t, m, ServerOptions{}) }},
		{"tls", func() string {
			return "nbds+unix:///?socket=" + serve(t, m, ServerOptions{TLSConfig: cfg}) + "&tls-certificates=" + dir
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Dial(context.Background(), tc.uri(), &ClientOptions{Connections: 2})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			sizes := []int{1, 4096, directPayload - 1, directPayload, directPayload + 1, 100<<10 + 3, 256 << 10, 1<<20 + 512}
			type req struct {
				off int64
				buf []byte
				f   *Future
			}
			var reqs []req
			off := int64(12345)
			for i := range 64 {
				n := sizes[i%len(sizes)]
				if off+int64(n) > size {
					off = int64(i)
				}
				r := req{off: off, buf: make([]byte, n)}
				r.f = c.ReadAsync(r.buf, r.off)
				reqs = append(reqs, r)
				off += int64(n) + 777
			}
			for i, r := range reqs {
				if err := r.f.Wait(context.Background()); err != nil {
					t.Fatalf("read %d (%d bytes at %d): %v", i, len(r.buf), r.off, err)
				}
				if !bytes.Equal(r.buf, data[r.off:r.off+int64(len(r.buf))]) {
					t.Fatalf("read %d (%d bytes at %d) differs from the disk", i, len(r.buf), r.off)
				}
			}
		})
	}
}
