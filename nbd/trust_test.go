package nbd

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vdisk-project/vdisk/disk"
)

// TestClientTrust checks every way the NBD client is told whom to trust:
// the right anchor is accepted, a wrong one is refused at the handshake,
// and contradictory or non-verifying settings are refused at Dial.
func TestClientTrust(t *testing.T) {
	dir, other := t.TempDir(), t.TempDir()
	cfg := writeCerts(t, dir) // the server's certificate, signed by dir's CA
	writeCerts(t, other)      // another CA that did not sign it
	_, sock, _ := testServer(t, ServerOptions{TLSConfig: cfg}, true)
	uri := "nbds+unix:///disk?socket=" + sock
	right := FormatThumbprint(sha256.Sum256(cfg.Certificates[0].Certificate[0]))
	wrong := FormatThumbprint(sha256.Sum256([]byte("another certificate")))
	pool := func(dir string) *x509.CertPool {
		b, err := os.ReadFile(filepath.Join(dir, "ca-cert.pem"))
		if err != nil {
			t.Fatal(err)
		}
		p := x509.NewCertPool()
		p.AppendCertsFromPEM(b)
		return p
	}
	pinned, err := PinnedTLSConfig(right)
	if err != nil {
		t.Fatal(err)
	}
	wrongPin, err := PinnedTLSConfig(wrong)
	if err != nil {
		t.Fatal(err)
	}
	unknownCA := func(err error) bool {
		var ua x509.UnknownAuthorityError
		return errors.As(err, &ua)
	}
	permission := func(err error) bool { return errors.Is(err, disk.ErrPermission) }
	invalid := func(err error) bool { return errors.Is(err, disk.ErrInvalid) }
	for _, tc := range []struct {
		name string
		uri  string
		o    ClientOptions
		want func(error) bool // nil: accepted
	}{
		{"right CA directory", uri + "&tls-certificates=" + dir, ClientOptions{}, nil},
		{"CA directory that did not sign it", uri + "&tls-certificates=" + other, ClientOptions{}, unknownCA},
		{"right thumbprint", uri, ClientOptions{Thumbprint: right}, nil},
		{"wrong thumbprint", uri, ClientOptions{Thumbprint: wrong}, permission},
		// A config with RootCAs and no ServerName (what the kit passes
		// when it trusts a CA file) is checked against the URI's host.
		{"right CA as TLSConfig", uri, ClientOptions{TLSConfig: &tls.Config{RootCAs: pool(dir)}}, nil},
		{"wrong CA as TLSConfig", uri, ClientOptions{TLSConfig: &tls.Config{RootCAs: pool(other)}}, unknownCA},
		{"right pin as TLSConfig", uri, ClientOptions{TLSConfig: pinned}, nil},
		{"wrong pin as TLSConfig", uri, ClientOptions{TLSConfig: wrongPin}, permission},
		{"system CAs", uri, ClientOptions{}, unknownCA},
		{"thumbprint and CA directory", uri + "&tls-certificates=" + dir, ClientOptions{Thumbprint: right}, invalid},
		{"thumbprint and TLSConfig", uri, ClientOptions{Thumbprint: right, TLSConfig: pinned}, invalid},
		{"TLSConfig and CA directory", uri + "&tls-certificates=" + dir, ClientOptions{TLSConfig: pinned}, invalid},
		{"InsecureSkipVerify", uri, ClientOptions{TLSConfig: &tls.Config{InsecureSkipVerify: true}}, invalid},
		{"malformed thumbprint", uri, ClientOptions{Thumbprint: right[:50]}, invalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c, err := Dial(context.Background(), tc.uri, &tc.o)
			if err == nil {
				defer c.Close()
			}
			switch {
			case tc.want == nil && err != nil:
				t.Fatalf("Dial(%s): %v, want accepted", tc.uri, err)
			case tc.want == nil:
				buf := make([]byte, 4096)
				if _, err := c.ReadAt(buf, 0); err != nil {
					t.Errorf("read after the handshake: %v", err)
				}
			case err == nil:
				t.Fatalf("Dial(%s) accepted the server, want refused", tc.uri)
			case !tc.want(err):
				t.Errorf("Dial(%s): %v, not the refusal wanted", tc.uri, err)
			}
		})
	}
}

// TestThumbprint checks the one parser and formatter of thumbprints.
func TestThumbprint(t *testing.T) {
	sum := sha256.Sum256([]byte("certificate"))
	tp := FormatThumbprint(sum)
	if len(tp) != 95 || tp != strings.ToUpper(tp) || strings.Count(tp, ":") != 31 {
		t.Fatalf("FormatThumbprint: %q", tp)
	}
	for _, s := range []string{tp, strings.ToLower(tp), strings.ReplaceAll(tp, ":", ""), strings.ReplaceAll(tp, ":", " "), " " + tp + "\n"} {
		if got, err := ParseThumbprint(s); err != nil || got != sum {
			t.Errorf("ParseThumbprint(%q): %x, %v; want %x", s, got, err, sum)
		}
	}
	for _, s := range []string{"", tp[:59], tp + ":00", "G" + tp[1:], "ABC:" + tp[3:], strings.Repeat("A", 40), strings.Repeat("AB:", 19) + "AB", "ABC " + strings.ReplaceAll(tp, ":", " ")[4:], strings.Replace(tp, ":", " ", 1)} {
		if _, err := ParseThumbprint(s); !errors.Is(err, disk.ErrInvalid) {
			t.Errorf("ParseThumbprint(%q): %v, want ErrInvalid", s, err)
		}
	}
}
