package vdisk_test

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/vdisk-project/vdisk"
	"github.com/vdisk-project/vdisk/disk"
	"github.com/vdisk-project/vdisk/internal/auth"
)

// TestConnectTrust checks the kit's trust settings: the host's
// certificate, given by thumbprint or as a CA file, is accepted over the
// control API and over NBD; a CA that did not sign it, or a wrong
// thumbprint, is refused at Connect; both at once are ErrInvalid.
func TestConnectTrust(t *testing.T) {
	h := startHost(t, nil)
	ctx := context.Background()
	dir := t.TempDir()
	hostCA := filepath.Join(dir, "host.pem")
	if err := os.WriteFile(hostCA, h.s.CertificatePEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	otherPEM, _, err := auth.SelfSigned([]string{"127.0.0.1", "localhost"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	otherCA := filepath.Join(dir, "other.pem")
	if err := os.WriteFile(otherCA, otherPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	tp := h.params.Thumbprint
	wrongTP := "00" + tp[2:]
	if wrongTP == tp {
		wrongTP = "01" + tp[2:]
	}
	// A disk with known data, to read back over NBD.
	want := bytes.Repeat([]byte("trust"), 1<<20/5+1)[:1<<20]
	{
		c := h.connect(t, vdisk.ModeNBDSSL)
		if err := c.Create(ctx, vdisk.Spec{Disk: "trusted"}, vdisk.CreateParams{Capacity: 1 << 20}); err != nil {
			t.Fatal(err)
		}
		d, err := c.Open(ctx, vdisk.Spec{Disk: "trusted"}, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := d.WriteAt(want, 0); err != nil {
			t.Fatal(err)
		}
		if err := d.Close(); err != nil {
			t.Fatal(err)
		}
	}
	unknownCA := func(err error) bool {
		var ua x509.UnknownAuthorityError
		return errors.As(err, &ua)
	}
	for _, tc := range []struct {
		name       string
		thumbprint string
		caFile     string
		refused    func(error) bool // nil: accepted
	}{
		{"right thumbprint", tp, "", nil},
		{"right CA file", "", hostCA, nil},
		{"wrong thumbprint", wrongTP, "", func(err error) bool { return errors.Is(err, disk.ErrPermission) }},
		{"CA that did not sign the host's certificate", "", otherCA, unknownCA},
		{"thumbprint and CA file", tp, hostCA, func(err error) bool { return errors.Is(err, disk.ErrInvalid) }},
		{"neither", "", "", func(err error) bool { return errors.Is(err, disk.ErrInvalid) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := h.params
			p.Thumbprint, p.CAFile, p.Transports = tc.thumbprint, tc.caFile, vdisk.ModeNBDSSL
			c, err := vdisk.Connect(ctx, p)
			if tc.refused != nil {
				if err == nil {
					c.Close()
					t.Fatal("Connect accepted the host, want refused")
				}
				if !tc.refused(err) {
					t.Errorf("Connect: %v, not the refusal wanted", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Connect: %v", err)
			}
			defer c.Close()
			// NBD over TLS is verified with the same trust.
			d, err := c.Open(ctx, vdisk.Spec{Disk: "trusted"}, vdisk.OpenReadOnly)
			if err != nil {
				t.Fatalf("Open over nbdssl: %v", err)
			}
			defer d.Close()
			got := make([]byte, len(want))
			if _, err := d.ReadAt(got, 0); err != nil || !bytes.Equal(got, want) {
				t.Errorf("read over nbdssl: %v (data equal: %v)", err, bytes.Equal(got, want))
			}
		})
	}
}
