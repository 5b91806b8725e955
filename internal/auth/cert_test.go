package auth

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/vdisk-project/vdisk/disk"
)

func selfSigned(t *testing.T, hosts ...string) (tls.Certificate, *x509.Certificate) {
	t.Helper()
	certPEM, keyPEM, err := SelfSigned(hosts, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(certPEM)
	cert, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return pair, cert
}

func TestSelfSigned(t *testing.T) {
	_, cert := selfSigned(t, "host.example", "127.0.0.1", "::1")
	if len(cert.DNSNames) != 1 || cert.DNSNames[0] != "host.example" || len(cert.IPAddresses) != 2 {
		t.Errorf("SANs: %v %v", cert.DNSNames, cert.IPAddresses)
	}
	if cert.PublicKeyAlgorithm != x509.ECDSA {
		t.Errorf("key algorithm %v", cert.PublicKeyAlgorithm)
	}
	if err := cert.VerifyHostname("127.0.0.1"); err != nil {
		t.Error(err)
	}
	if _, _, err := SelfSigned(nil, time.Now()); !errors.Is(err, disk.ErrInvalid) {
		t.Errorf("no hosts: got %v", err)
	}
}

func TestThumbprint(t *testing.T) {
	_, cert := selfSigned(t, "h")
	tp := Thumbprint(cert)
	if len(tp) != 95 || tp != strings.ToUpper(tp) || strings.Count(tp, ":") != 31 {
		t.Fatalf("thumbprint %q", tp)
	}
	want, err := ParseThumbprint(tp)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{strings.ToLower(tp), strings.ReplaceAll(tp, ":", ""), " " + tp + "\n"} {
		got, err := ParseThumbprint(s)
		if err != nil || got != want {
			t.Errorf("ParseThumbprint(%q): %x, %v", s, got, err)
		}
	}
	for _, s := range []string{"", tp[:59], tp + ":00", "G" + tp[1:], "ABC:" + tp[3:], strings.Repeat("A", 40)} {
		if _, err := ParseThumbprint(s); !errors.Is(err, disk.ErrInvalid) {
			t.Errorf("ParseThumbprint(%q): got %v, want invalid", s, err)
		}
	}
}

// handshake runs a real TLS handshake over loopback TCP between a server
// with pair and a client pinned to thumbprint.
func handshake(t *testing.T, pair tls.Certificate, thumbprint string) error {
	t.Helper()
	cfg, err := PinnedConfig(thumbprint)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{pair}})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		c.(*tls.Conn).Handshake()
	}()
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", ln.Addr().String(), cfg)
	if err == nil {
		c.Close()
	}
	<-done
	return err
}

func TestPinnedConfig(t *testing.T) {
	pair, cert := selfSigned(t, "host")
	_, other := selfSigned(t, "host")
	if err := handshake(t, pair, Thumbprint(cert)); err != nil {
		t.Errorf("right pin refused: %v", err)
	}
	err := handshake(t, pair, Thumbprint(other))
	if !errors.Is(err, disk.ErrPermission) {
		t.Errorf("wrong pin: got %v, want permission denied", err)
	}
	if _, err := PinnedConfig("nope"); !errors.Is(err, disk.ErrInvalid) {
		t.Errorf("bad pin: got %v", err)
	}
}

// TestSelfSignedNamesOnce: each name appears once in the certificate.
func TestSelfSignedNamesOnce(t *testing.T) {
	cp, _, err := SelfSigned([]string{"localhost", "127.0.0.1", "::1", "LOCALHOST", "127.0.0.1", "host.example", "::1"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(cp)
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.DNSNames) != 2 || len(c.IPAddresses) != 2 {
		t.Errorf("names %v, addresses %v; want each once", c.DNSNames, c.IPAddresses)
	}
}
