package nbd

import (
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"os"
	"strings"

	"github.com/vdisk-project/vdisk/disk"
)

// This file is the one implementation of certificate pinning and of the
// choice of trust anchor in vdisk: the NBD client, the control API client
// (through internal/auth) and the kit all use it.

// ParseThumbprint parses a SHA-256 certificate thumbprint: 64 hex digits,
// either bare or as 32 pairs separated by colons ("AB:CD:…") or by
// spaces, in either case, surrounding white space ignored. Anything else, a 20-byte SHA-1
// thumbprint included, is disk.ErrInvalid.
func ParseThumbprint(s string) ([32]byte, error) {
	var sum [32]byte
	t := strings.TrimSpace(s)
	sep := ":"
	if !strings.Contains(t, sep) {
		sep = " " // the way Windows shows thumbprints
	}
	if strings.Contains(t, sep) {
		parts := strings.Split(t, sep)
		for _, p := range parts {
			if len(p) != 2 {
				return sum, disk.Errorf(disk.ErrInvalid, "nbd: malformed thumbprint %q", s)
			}
		}
		t = strings.Join(parts, "")
	}
	if len(t) != 2*len(sum) {
		return sum, disk.Errorf(disk.ErrInvalid, "nbd: %q is not a SHA-256 thumbprint (64 hex digits)", s)
	}
	if _, err := hex.Decode(sum[:], []byte(t)); err != nil {
		return sum, disk.Errorf(disk.ErrInvalid, "nbd: malformed thumbprint %q", s)
	}
	return sum, nil
}

// FormatThumbprint writes a thumbprint as colon-separated upper-case hex
// ("AB:CD:…", 95 characters), the form VMware shows.
func FormatThumbprint(t [32]byte) string {
	h := strings.ToUpper(hex.EncodeToString(t[:]))
	var b strings.Builder
	b.Grow(len(h) + len(t) - 1)
	for i := 0; i < len(h); i += 2 {
		if i > 0 {
			b.WriteByte(':')
		}
		b.WriteString(h[i : i+2])
	}
	return b.String()
}

// Thumbprint returns the thumbprint of a DER-encoded certificate.
func Thumbprint(der []byte) string { return FormatThumbprint(sha256.Sum256(der)) }

// PinnedTLSConfig returns a client TLS configuration that accepts exactly
// the peer whose leaf certificate has the given SHA-256 thumbprint. It
// sets InsecureSkipVerify only to replace the CA-chain check with the
// pin: its VerifyConnection runs on every handshake, resumed ones
// included, and refuses any other certificate. A malformed thumbprint is
// disk.ErrInvalid; a mismatch fails the handshake with an error wrapping
// disk.ErrPermission.
func PinnedTLSConfig(thumbprint string) (*tls.Config, error) {
	want, err := ParseThumbprint(thumbprint)
	if err != nil {
		return nil, err
	}
	return &tls.Config{
		MinVersion:         tls.VersionTLS12,
		InsecureSkipVerify: true, // the pin below is the verification
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return disk.Errorf(disk.ErrPermission, "nbd: peer sent no certificate")
			}
			got := sha256.Sum256(cs.PeerCertificates[0].Raw)
			if subtle.ConstantTimeCompare(got[:], want[:]) != 1 {
				return disk.Errorf(disk.ErrPermission, "nbd: peer certificate thumbprint %s does not match the pinned %s", FormatThumbprint(got), FormatThumbprint(want))
			}
			return nil
		},
	}, nil
}

// CATLSConfig returns a client TLS configuration that trusts only the CA
// certificates in the PEM file caFile. A file without a certificate is
// disk.ErrInvalid.
func CATLSConfig(caFile string) (*tls.Config, error) {
	b, err := os.ReadFile(caFile)
	if err != nil {
		return nil, disk.Wrap(err, "nbd: read CA", caFile, -1)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, disk.Errorf(disk.ErrInvalid, "nbd: no PEM certificate in %s", caFile)
	}
	return &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool}, nil
}

// Trust names what a client trusts in its peer's certificate. At most one
// field may be set: two anchors could disagree, and silently preferring
// one would let a typo in the other go unnoticed.
type Trust struct {
	// Thumbprint pins the peer's leaf certificate by its SHA-256.
	Thumbprint string
	// CAFile is a PEM file of CA certificates the peer's chain must end in.
	CAFile string
	// TLSConfig is a ready configuration. It must verify: one with
	// InsecureSkipVerify needs a VerifyConnection or VerifyPeerCertificate
	// callback that does the checking.
	TLSConfig *tls.Config
}

// IsZero reports whether no trust anchor is set.
func (t Trust) IsZero() bool { return t.Thumbprint == "" && t.CAFile == "" && t.TLSConfig == nil }

// ClientTLSConfig builds the verifying client TLS configuration t names
// (a copy when t.TLSConfig is set). With nothing set it trusts the
// system's CAs. Contradictory or non-verifying settings (more than one
// anchor; InsecureSkipVerify without a verifying callback) are
// disk.ErrInvalid.
func (t Trust) ClientTLSConfig() (*tls.Config, error) {
	n := 0
	for _, set := range []bool{t.Thumbprint != "", t.CAFile != "", t.TLSConfig != nil} {
		if set {
			n++
		}
	}
	if n > 1 {
		return nil, disk.Errorf(disk.ErrInvalid, "nbd: give one trust anchor (a thumbprint, a CA or a TLS config), not several: they could disagree")
	}
	switch {
	case t.Thumbprint != "":
		return PinnedTLSConfig(t.Thumbprint)
	case t.CAFile != "":
		return CATLSConfig(t.CAFile)
	case t.TLSConfig != nil:
		if err := CheckVerifies(t.TLSConfig); err != nil {
			return nil, err
		}
		return t.TLSConfig.Clone(), nil
	}
	return &tls.Config{MinVersion: tls.VersionTLS12}, nil
}

// CheckVerifies returns disk.ErrInvalid when a client TLS configuration
// would accept any certificate: InsecureSkipVerify set without a
// VerifyConnection or VerifyPeerCertificate callback to check the peer.
func CheckVerifies(tc *tls.Config) error {
	if tc.InsecureSkipVerify && tc.VerifyConnection == nil && tc.VerifyPeerCertificate == nil {
		return disk.Errorf(disk.ErrInvalid, "nbd: the TLS config skips verification (InsecureSkipVerify without a verifying callback); certificates are always verified")
	}
	return nil
}
