package nbd

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"encoding/json"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/vdisk-project/vdisk/disk"
	"github.com/vdisk-project/vdisk/disk/disktest"
	"github.com/vdisk-project/vdisk/internal/testenv"
)

// testServer serves a MemDisk of 32 MiB with some data on a Unix socket
// and returns the disk, the socket path and the server.
func testServer(t *testing.T, o ServerOptions, readOnly bool) (*disktest.MemDisk, string, *Server) {
	t.Helper()
	d := disktest.NewMemDisk(32 << 20)
	for _, off := range []int64{0, 5 << 20, 20<<20 + 4096} {
		p := bytes.Repeat([]byte{byte(off>>20) + 1}, 300<<10)
		d.WriteAt(p, off)
	}
	exp := &Export{Name: "disk", Description: "test disk", Disk: d, ReadOnly: readOnly}
	o.Lookup = func(_ context.Context, name string) (*Export, error) {
		if name != "disk" {
			return nil, disk.Errorf(disk.ErrNotFound, "no such export")
		}
		return exp, nil
	}
	o.List = func(context.Context) []*Export { return []*Export{exp} }
	sock := filepath.Join(t.TempDir(), "s")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	s := NewServer(o)
	go s.Serve(context.Background(), l)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	})
	return d, sock, s
}

func uri(sock string) string { return "nbd+unix:///disk?socket=" + sock }

func TestNbdinfo(t *testing.T) {
	testenv.Tool(t, "nbdinfo")
	d, sock, _ := testServer(t, ServerOptions{}, false)
	var info struct {
		Exports []struct {
			Name string `json:"export-name"`
			Size int64  `json:"export-size"`
		} `json:"exports"`
	}
	out := testenv.Run(t, "nbdinfo", "--json", uri(sock))
	if err := json.Unmarshal([]byte(out), &info); err != nil {
		t.Fatalf("nbdinfo --json: %v\n%s", err, out)
	}
	if len(info.Exports) != 1 || info.Exports[0].Size != d.Size() || info.Exports[0].Name != "disk" {
		t.Errorf("nbdinfo --json = %+v", info)
	}
	if out := testenv.Run(t, "nbdinfo", "--list", "nbd+unix:///?socket="+sock); !strings.Contains(out, "disk") {
		t.Errorf("nbdinfo --list:\n%s", out)
	}
	// nbdinfo --map equals our own allocation map.
	out = testenv.Run(t, "nbdinfo", "--map", uri(sock))
	var theirs []disk.Extent
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var off, n int64
		var flags uint32
		var desc string
		if _, err := fmtSscan(line, &off, &n, &flags, &desc); err != nil {
			t.Fatalf("nbdinfo --map line %q: %v", line, err)
		}
		theirs = append(theirs, disk.Extent{Off: off, Len: n, Flags: disk.ExtentFlags(flags)})
	}
	var ours []disk.Extent
	d.Extents(context.Background(), 0, d.Size(), func(e disk.Extent) error {
		if k := len(ours); k > 0 && ours[k-1].Flags == e.Flags {
			ours[k-1].Len += e.Len
			return nil
		}
		ours = append(ours, e)
		return nil
	})
	if len(ours) != len(theirs) {
		t.Fatalf("nbdinfo --map = %v, ours %v", theirs, ours)
	}
	for i := range ours {
		if ours[i] != theirs[i] {
			t.Errorf("extent %d: nbdinfo %+v, ours %+v", i, theirs[i], ours[i])
		}
	}
}

func fmtSscan(line string, off, n *int64, flags *uint32, desc *string) (int, error) {
	f := strings.Fields(line)
	if len(f) < 3 {
		return 0, io.ErrUnexpectedEOF
	}
	var err error
	if *off, err = parseInt(f[0]); err != nil {
		return 0, err
	}
	if *n, err = parseInt(f[1]); err != nil {
		return 1, err
	}
	v, err := parseInt(f[2])
	*flags = uint32(v)
	*desc = strings.Join(f[3:], " ")
	return 3, err
}

func parseInt(s string) (int64, error) {
	var v int64
	err := json.Unmarshal([]byte(s), &v)
	return v, err
}

func TestQemuImg(t *testing.T) {
	testenv.Tool(t, "qemu-img")
	testenv.Tool(t, "qemu-io")
	d, sock, _ := testServer(t, ServerOptions{}, false)
	want := make([]byte, d.Size())
	d.ReadAt(want, 0)
	out := testenv.Run(t, "qemu-img", "info", "--output=json", uri(sock))
	if !strings.Contains(out, `"virtual-size": 33554432`) {
		t.Errorf("qemu-img info:\n%s", out)
	}
	raw := filepath.Join(t.TempDir(), "out.raw")
	testenv.Run(t, "qemu-img", "convert", "-O", "raw", uri(sock), raw)
	got, _ := os.ReadFile(raw)
	if !bytes.Equal(got, want) {
		t.Fatal("qemu-img convert over NBD read different data")
	}
	testenv.Run(t, "qemu-img", "compare", "-F", "raw", uri(sock), raw)
	testenv.Run(t, "qemu-io", "-f", "raw", "-c", "write -P 0x5a 1M 64k", "-c", "write -z 5M 4k", "-c", "flush", uri(sock))
	b := make([]byte, 64<<10)
	d.ReadAt(b, 1<<20)
	if !bytes.Equal(b, bytes.Repeat([]byte{0x5a}, 64<<10)) {
		t.Error("qemu-io write did not reach the disk")
	}
	d.ReadAt(b[:4096], 5<<20)
	if !disk.IsZero(b[:4096]) {
		t.Error("qemu-io write -z did not zero")
	}
	mapOut := testenv.Run(t, "qemu-img", "map", "--output=json", uri(sock))
	if !strings.Contains(mapOut, `"data": false`) || !strings.Contains(mapOut, `"data": true`) {
		t.Errorf("qemu-img map over NBD shows no holes or no data:\n%s", mapOut)
	}
}

func TestNbdcopy(t *testing.T) {
	testenv.Tool(t, "nbdcopy")
	d, sock, _ := testServer(t, ServerOptions{}, false)
	want := make([]byte, d.Size())
	d.ReadAt(want, 0)
	dir := t.TempDir()
	out := filepath.Join(dir, "out.raw")
	testenv.Run(t, "nbdcopy", uri(sock), out)
	got, _ := os.ReadFile(out)
	if !bytes.Equal(got, want) {
		t.Fatal("nbdcopy from our server copied different data")
	}
	in := filepath.Join(dir, "in.raw")
	src := bytes.Repeat([]byte("vdisk nbd "), (32<<20)/10+1)[:32<<20]
	os.WriteFile(in, src, 0o644)
	testenv.Run(t, "nbdcopy", in, uri(sock))
	got = make([]byte, d.Size())
	d.ReadAt(got, 0)
	if !bytes.Equal(got, src) {
		t.Fatal("nbdcopy to our server wrote different data")
	}
}

// writeCerts makes a CA and a server certificate for localhost in dir, in
// the file names GnuTLS clients (nbdinfo, qemu) look for.
func writeCerts(t testing.TB, dir string) *tls.Config {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ca := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "vdisk test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leaf := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "localhost"},
		DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, leaf, caCert, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(key)
	write := func(name, typ string, b []byte) {
		os.WriteFile(filepath.Join(dir, name), pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: b}), 0o600)
	}
	write("ca-cert.pem", "CERTIFICATE", caDER)
	write("server-cert.pem", "CERTIFICATE", der)
	write("server-key.pem", "EC PRIVATE KEY", kb)
	cert, err := tls.X509KeyPair(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}))
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
}

func TestTLS(t *testing.T) {
	testenv.Tool(t, "nbdinfo")
	dir := t.TempDir()
	cfg := writeCerts(t, dir)
	d, sock, _ := testServer(t, ServerOptions{TLSConfig: cfg}, false)
	tlsURI := "nbds+unix:///disk?socket=" + sock + "&tls-certificates=" + dir
	out := testenv.Run(t, "nbdinfo", "--json", tlsURI)
	if !strings.Contains(out, `"export-size": 33554432`) {
		t.Errorf("nbdinfo over TLS:\n%s", out)
	}
	// A plaintext client is refused.
	if out, err := exec.Command("nbdinfo", uri(sock)).CombinedOutput(); err == nil {
		t.Errorf("plaintext nbdinfo against a TLS-required server succeeded:\n%s", out)
	}
	if _, err := exec.LookPath("nbdcopy"); err == nil {
		raw := filepath.Join(t.TempDir(), "o.raw")
		testenv.Run(t, "nbdcopy", tlsURI, raw)
		got, _ := os.ReadFile(raw)
		want := make([]byte, d.Size())
		d.ReadAt(want, 0)
		if !bytes.Equal(got, want) {
			t.Error("nbdcopy over TLS copied different data")
		}
	}
}

// rawClient performs the start of a handshake and returns the connection.
func rawClient(t *testing.T, sock string) net.Conn {
	t.Helper()
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(5 * time.Second))
	var greet [18]byte
	if _, err := io.ReadFull(c, greet[:]); err != nil {
		t.Fatal(err)
	}
	c.Write([]byte{0, 0, 0, 3}) // fixed newstyle, no zeroes
	return c
}

func readReply(c net.Conn) (opt, typ uint32, data []byte, err error) {
	var h [20]byte
	if _, err = io.ReadFull(c, h[:]); err != nil {
		return
	}
	opt, typ = binary.BigEndian.Uint32(h[8:]), binary.BigEndian.Uint32(h[12:])
	data = make([]byte, binary.BigEndian.Uint32(h[16:]))
	_, err = io.ReadFull(c, data)
	return
}

// TestSecurity: a TLS-required server refuses plaintext options and closes
// on a STARTTLS injection; malformed options end the connection or get
// errors, never a crash.
func TestSecurity(t *testing.T) {
	cfg := writeCerts(t, t.TempDir())
	_, sock, _ := testServer(t, ServerOptions{TLSConfig: cfg}, false)

	c := rawClient(t, sock)
	c.Write(option(optList, nil))
	if _, typ, _, err := readReply(c); err != nil || typ != repErrTLSReqd {
		t.Errorf("LIST before TLS = %#x, %v; want ERR_TLS_REQD", typ, err)
	}
	c.Write(option(optExportName, []byte("disk")))
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Error("EXPORT_NAME before TLS did not disconnect")
	}
	c.Close()

	// STARTTLS with plaintext bytes queued behind it: nothing may be acted
	// on; the server hangs up.
	c = rawClient(t, sock)
	c.Write(append(option(optStartTLS, nil), option(optList, nil)...))
	got, _ := io.ReadAll(c)
	for len(got) >= 20 {
		if binary.BigEndian.Uint32(got[8:]) == optList {
			t.Fatal("the server answered an option injected before the TLS handshake")
		}
		n := 20 + int(binary.BigEndian.Uint32(got[16:]))
		if n > len(got) {
			break
		}
		got = got[n:]
	}
	c.Close()

	// Oversized and malformed options.
	_, plain, _ := testServer(t, ServerOptions{}, false)
	c = rawClient(t, plain)
	c.Write(option(optInfo, []byte{0, 0, 0, 200, 'x'}))
	if _, typ, _, err := readReply(c); err != nil || typ != repErrInvalid {
		t.Errorf("truncated INFO = %#x, %v; want ERR_INVALID", typ, err)
	}
	c.Write(option(0x7654321, []byte{1, 2, 3, 4}))
	if _, typ, _, err := readReply(c); err != nil || typ != repErrUnsup {
		t.Errorf("unknown option = %#x, %v; want ERR_UNSUP", typ, err)
	}
	h := option(optList, nil)
	binary.BigEndian.PutUint32(h[12:], 1<<30) // claims 1 GiB of data
	c.Write(h)
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Error("an option claiming 1 GiB did not disconnect")
	}
	c.Close()
}

// TestShutdownLeavesNoGoroutines serves a few connections and checks that
// Shutdown ends every goroutine the server started.
func TestShutdownLeavesNoGoroutines(t *testing.T) {
	before := runtime.NumGoroutine()
	d := disktest.NewMemDisk(1 << 20)
	exp := &Export{Name: "", Disk: d}
	s := NewServer(ServerOptions{Lookup: func(context.Context, string) (*Export, error) { return exp, nil }})
	sock := filepath.Join(t.TempDir(), "s")
	l, _ := net.Listen("unix", sock)
	done := make(chan error)
	go func() { done <- s.Serve(context.Background(), l) }()
	for range 3 {
		c := rawClient(t, sock)
		c.Write(option(optExportName, nil))
		var b [10]byte
		io.ReadFull(c, b[:])
		defer c.Close()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	<-done
	for i := 0; i < 100 && runtime.NumGoroutine() > before; i++ {
		time.Sleep(10 * time.Millisecond) // goroutines finish returning
	}
	if n := runtime.NumGoroutine(); n > before {
		t.Errorf("%d goroutines after Shutdown, %d before", n, before)
	}
}

// FuzzHandshake feeds arbitrary client bytes to the server's handshake and
// transmission phases: it must never panic or hang.
func FuzzHandshake(f *testing.F) {
	f.Add(append([]byte{0, 0, 0, 3}, option(optExportName, nil)...))
	f.Add(append(append([]byte{0, 0, 0, 1}, option(optStructuredReply, nil)...), option(optGo, []byte{0, 0, 0, 0, 0, 0})...))
	f.Add(append([]byte{0, 0, 0, 3}, option(optSetMetaContext, []byte{0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 15, 'b', 'a', 's', 'e', ':', 'a', 'l', 'l', 'o', 'c', 'a', 't', 'i', 'o', 'n'})...))
	f.Fuzz(func(t *testing.T, in []byte) {
		d := disktest.NewMemDisk(1 << 20)
		exp := &Export{Disk: d}
		s := NewServer(ServerOptions{Lookup: func(context.Context, string) (*Export, error) { return exp, nil },
			HandshakeTimeout: time.Second})
		a, b := net.Pipe()
		s.ServeConn(context.Background(), a)
		go io.Copy(io.Discard, b)
		b.SetWriteDeadline(time.Now().Add(time.Second))
		b.Write(in)
		b.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Fatalf("server did not finish: %v", err)
		}
	})
}

// TestManyConnections holds 1,000 idle connections and 100 active clients
// on one server, and checks that every request is served and that an idle
// connection costs little memory.
func TestManyConnections(t *testing.T) {
	d := disktest.NewMemDisk(64 << 20)
	d.WriteAt(bytes.Repeat([]byte{9}, 64<<20), 0)
	sock := serve(t, d, ServerOptions{})
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	const idle, active = 1000, 100
	var conns []net.Conn
	for range idle {
		c := rawClient(t, sock)
		c.Write(option(optExportName, nil))
		var b [10]byte
		if _, err := io.ReadFull(c, b[:]); err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Time{})
		conns = append(conns, c)
	}
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	runtime.GC()
	runtime.ReadMemStats(&after)
	perConn := (int64(after.HeapInuse) - int64(before.HeapInuse)) / idle
	t.Logf("%d idle connections: %d bytes of heap each", idle, perConn)
	if perConn > 96<<10 {
		t.Errorf("an idle connection holds %d bytes of heap", perConn)
	}
	errs := make(chan error, active)
	for i := range active {
		go func() {
			c, err := Dial(context.Background(), "nbd+unix:///?socket="+sock, &ClientOptions{Connections: 1, Timeout: 30 * time.Second})
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			buf := make([]byte, 64<<10)
			for j := range 20 {
				if _, err := c.ReadAt(buf, int64((i*20+j)%1000)*64<<10); err != nil {
					errs <- err
					return
				}
				if buf[0] != 9 {
					errs <- io.ErrUnexpectedEOF
					return
				}
			}
			errs <- nil
		}()
	}
	for range active {
		if err := <-errs; err != nil {
			t.Fatalf("active client: %v", err)
		}
	}
}

// flatDisk is a disk over a byte slice that allocates nothing.
type flatDisk struct{ b []byte }

func (f *flatDisk) ReadAt(p []byte, off int64) (int, error)  { return copy(p, f.b[off:]), nil }
func (f *flatDisk) WriteAt(p []byte, off int64) (int, error) { return copy(f.b[off:], p), nil }
func (f *flatDisk) Size() int64                              { return int64(len(f.b)) }
func (f *flatDisk) Flush() error                             { return nil }
func (f *flatDisk) Close() error                             { return nil }

// serve serves d as the only export (under any name) on a Unix socket, and
// returns the socket's path; the server shuts down with the test.
func serve(t testing.TB, d disk.Disk, o ServerOptions) string {
	t.Helper()
	exp := &Export{Disk: d}
	o.Lookup = func(context.Context, string) (*Export, error) { return exp, nil }
	s := NewServer(o)
	sock := filepath.Join(t.TempDir(), "s")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve(context.Background(), l)
	t.Cleanup(func() { s.Shutdown(context.Background()) })
	return sock
}
