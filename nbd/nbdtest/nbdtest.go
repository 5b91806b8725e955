// Package nbdtest serves disks over NBD inside a test, as net/http/httptest
// serves handlers: a real server on a Unix socket or on loopback TCP, with
// TLS and a self-made certificate when asked, shut down by t.Cleanup.
package nbdtest

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/vdisk-project/vdisk/disk"
	"github.com/vdisk-project/vdisk/nbd"
)

// Options modify NewServer. The zero value serves plain NBD on a Unix
// socket.
type Options struct {
	// TCP listens on 127.0.0.1 instead of a Unix socket.
	TCP bool
	// TLS requires TLS with a fresh self-signed certificate; Server.Thumbprint
	// pins it.
	TLS bool
	// ReadOnly serves the disk read-only.
	ReadOnly bool
	// Name is the export name; default "disk".
	Name string
	// Server are further server options (Lookup and TLSConfig are set here).
	Server nbd.ServerOptions
}

// Server is a running test server.
type Server struct {
	// URI reaches the export: nbd+unix://, nbd://, nbds+unix:// or nbds://.
	URI string
	// Thumbprint is the SHA-256 thumbprint of the certificate (with TLS).
	Thumbprint string
	// Server is the nbd.Server itself.
	Server *nbd.Server
}

// NewServer serves d until the test ends. The disk is not closed.
func NewServer(t testing.TB, d disk.Disk, o *Options) *Server {
	t.Helper()
	var opts Options
	if o != nil {
		opts = *o
	}
	if opts.Name == "" {
		opts.Name = "disk"
	}
	exp := &nbd.Export{Name: opts.Name, Disk: d, ReadOnly: opts.ReadOnly}
	so := opts.Server
	so.Lookup = func(_ context.Context, name string) (*nbd.Export, error) {
		if name != opts.Name {
			return nil, disk.Errorf(disk.ErrNotFound, "nbdtest: no export %q", name)
		}
		return exp, nil
	}
	so.List = func(context.Context) []*nbd.Export { return []*nbd.Export{exp} }
	ts := &Server{}
	if opts.TLS {
		cert, tp := selfSigned(t)
		so.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
		ts.Thumbprint = tp
	}
	var l net.Listener
	var err error
	scheme := "nbd"
	if opts.TLS {
		scheme = "nbds"
	}
	if opts.TCP {
		l, err = net.Listen("tcp", "127.0.0.1:0")
		if err == nil {
			ts.URI = scheme + "://" + l.Addr().String() + "/" + opts.Name
		}
	} else {
		sock := filepath.Join(t.TempDir(), "nbd.sock")
		l, err = net.Listen("unix", sock)
		ts.URI = scheme + "+unix:///" + opts.Name + "?socket=" + sock
	}
	if err != nil {
		t.Fatalf("nbdtest: listen: %v", err)
	}
	ts.Server = nbd.NewServer(so)
	done := make(chan struct{})
	go func() {
		defer close(done)
		ts.Server.Serve(context.Background(), l)
	}()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := ts.Server.Shutdown(ctx); err != nil {
			t.Errorf("nbdtest: shutdown: %v", err)
		}
		<-done
	})
	return ts
}

// Dial connects an nbd.Client to the server, pinning its certificate when
// it uses TLS. The client is closed when the test ends.
func (s *Server) Dial(t testing.TB) *nbd.Client {
	t.Helper()
	c, err := nbd.Dial(context.Background(), s.URI, &nbd.ClientOptions{Thumbprint: s.Thumbprint, Timeout: 30 * time.Second})
	if err != nil {
		t.Fatalf("nbdtest: dial %s: %v", s.URI, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func selfSigned(t testing.TB) (tls.Certificate, string) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "nbdtest"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(der)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nbd.FormatThumbprint(sum)
}
