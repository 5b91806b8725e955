package hostclient_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/vdisk-project/vdisk/disk"
	"github.com/vdisk-project/vdisk/internal/auth"
	"github.com/vdisk-project/vdisk/internal/hostclient"
	"github.com/vdisk-project/vdisk/server/servertest"
)

// TestTrust checks how the control API client is told whom to trust: the
// right anchor logs in, a wrong one is refused at the handshake, and
// contradictory or non-verifying settings are refused by New.
func TestTrust(t *testing.T) {
	h := servertest.New(t, nil)
	dir := t.TempDir()
	hostCA := filepath.Join(dir, "host.pem")
	if err := os.WriteFile(hostCA, h.CertificatePEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	otherPEM, _, err := auth.SelfSigned([]string{"127.0.0.1"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	otherCA := filepath.Join(dir, "other.pem")
	if err := os.WriteFile(otherCA, otherPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	// wrongTP differs from the host's thumbprint in its first byte.
	wrongTP := "00" + h.Thumbprint[2:]
	if wrongTP == h.Thumbprint {
		wrongTP = "01" + h.Thumbprint[2:]
	}
	wrong, err := auth.PinnedConfig(wrongTP)
	if err != nil {
		t.Fatal(err)
	}
	right, err := auth.PinnedConfig(h.Thumbprint)
	if err != nil {
		t.Fatal(err)
	}
	notPEM := filepath.Join(dir, "not.pem")
	if err := os.WriteFile(notPEM, []byte("not a certificate\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	unknownCA := func(err error) bool {
		var ua x509.UnknownAuthorityError
		return errors.As(err, &ua)
	}
	permission := func(err error) bool { return errors.Is(err, disk.ErrPermission) }
	for _, tc := range []struct {
		name    string
		o       hostclient.Options
		newErr  bool             // New itself refuses (disk.ErrInvalid)
		refused func(error) bool // nil: login works
	}{
		{name: "right thumbprint", o: hostclient.Options{Thumbprint: h.Thumbprint}},
		{name: "wrong thumbprint", o: hostclient.Options{Thumbprint: wrongTP}, refused: permission},
		{name: "right CA", o: hostclient.Options{CAFile: hostCA}},
		{name: "CA that did not sign the host's certificate", o: hostclient.Options{CAFile: otherCA}, refused: unknownCA},
		{name: "right pin as TLSConfig", o: hostclient.Options{TLSConfig: right}},
		{name: "wrong pin as TLSConfig", o: hostclient.Options{TLSConfig: wrong}, refused: permission},
		{name: "nothing", newErr: true},
		{name: "thumbprint and CA", o: hostclient.Options{Thumbprint: h.Thumbprint, CAFile: hostCA}, newErr: true},
		{name: "thumbprint and TLSConfig", o: hostclient.Options{Thumbprint: h.Thumbprint, TLSConfig: right}, newErr: true},
		{name: "InsecureSkipVerify", o: hostclient.Options{TLSConfig: &tls.Config{InsecureSkipVerify: true}}, newErr: true},
		{name: "malformed thumbprint", o: hostclient.Options{Thumbprint: "AB:CD"}, newErr: true},
		{name: "missing CA file", o: hostclient.Options{CAFile: filepath.Join(dir, "missing.pem")}, newErr: true},
		{name: "CA file without a certificate", o: hostclient.Options{CAFile: notPEM}, newErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			o := tc.o
			o.Server, o.Timeout = h.API, 30*time.Second
			c, err := hostclient.New(o)
			if tc.newErr {
				if err == nil {
					t.Fatal("New accepted the options, want a refusal")
				}
				if tc.name != "missing CA file" && !errors.Is(err, disk.ErrInvalid) {
					t.Errorf("New: %v, want ErrInvalid", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			defer c.Close()
			// Login is a POST: no retries, so a refusal is quick.
			_, err = c.Login(context.Background(), "admin", servertest.Password)
			switch {
			case tc.refused == nil && err != nil:
				t.Errorf("login: %v, want accepted", err)
			case tc.refused != nil && err == nil:
				t.Error("login succeeded, want the host's certificate refused")
			case tc.refused != nil && !tc.refused(err):
				t.Errorf("login: %v, not the refusal wanted", err)
			}
		})
	}
}
