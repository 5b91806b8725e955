package auth

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"math/big"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/vdisk-project/vdisk/disk"
)

// CertLifetime is the validity of certificates made by [SelfSigned].
const CertLifetime = 825 * 24 * time.Hour

// SelfSigned returns a PEM certificate and PKCS#8 PEM key for a new ECDSA
// P-256 self-signed server certificate (chosen over Ed25519 because
// GnuTLS-based peers such as qemu accept it everywhere). hosts become DNS or
// IP subject alternative names; the first is also the common name. Validity
// starts an hour before now, against clock skew.
func SelfSigned(hosts []string, now time.Time) (certPEM, keyPEM []byte, err error) {
	if len(hosts) == 0 {
		return nil, nil, disk.Errorf(disk.ErrInvalid, "auth: self-signed certificate needs a host name")
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, disk.Errorf(disk.ErrAccess, "auth: generate key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, nil, disk.Errorf(disk.ErrAccess, "auth: serial: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: hosts[0], Organization: []string{"vdisk"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(CertLifetime),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	// Each name once (a listen address often repeats localhost's).
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			if !slices.ContainsFunc(tmpl.IPAddresses, ip.Equal) {
				tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
			}
		} else if h != "" && !slices.ContainsFunc(tmpl.DNSNames, func(n string) bool { return strings.EqualFold(n, h) }) {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, disk.Errorf(disk.ErrInvalid, "auth: create certificate: %w", err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, disk.Errorf(disk.ErrInvalid, "auth: marshal key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), nil
}

// Thumbprint returns the SHA-256 of the certificate's DER encoding as
// colon-separated uppercase hex ("AB:CD:…", 95 characters), the form VMware
// shows for SHA-256 thumbprints.
func Thumbprint(cert *x509.Certificate) string {
	return formatThumbprint(sha256.Sum256(cert.Raw))
}

func formatThumbprint(sum [32]byte) string {
	h := strings.ToUpper(hex.EncodeToString(sum[:]))
	var b strings.Builder
	for i := 0; i < len(h); i += 2 {
		if i > 0 {
			b.WriteByte(':')
		}
		b.WriteString(h[i : i+2])
	}
	return b.String()
}

// ParseThumbprint parses a SHA-256 thumbprint with or without colons, in any
// case. Anything else (including a 20-byte SHA-1 thumbprint) is
// disk.ErrInvalid.
func ParseThumbprint(s string) ([32]byte, error) {
	var sum [32]byte
	t := strings.TrimSpace(s)
	if strings.Contains(t, ":") {
		parts := strings.Split(t, ":")
		for _, p := range parts {
			if len(p) != 2 {
				return sum, disk.Errorf(disk.ErrInvalid, "auth: malformed thumbprint")
			}
		}
		t = strings.Join(parts, "")
	}
	if len(t) != 64 {
		return sum, disk.Errorf(disk.ErrInvalid, "auth: thumbprint is not a SHA-256 (64 hex digits)")
	}
	if _, err := hex.Decode(sum[:], []byte(t)); err != nil {
		return sum, disk.Errorf(disk.ErrInvalid, "auth: malformed thumbprint")
	}
	return sum, nil
}

// PinnedConfig returns a client TLS config that accepts exactly the peer
// whose leaf certificate has the given SHA-256 thumbprint. It sets
// InsecureSkipVerify only to replace the CA-chain check with the pin: the
// VerifyPeerCertificate callback always runs and refuses any other
// certificate, so verification is never skipped. A bad thumbprint is
// disk.ErrInvalid. A pin mismatch fails the handshake with an error
// wrapping disk.ErrPermission.
func PinnedConfig(thumbprint string) (*tls.Config, error) {
	want, err := ParseThumbprint(thumbprint)
	if err != nil {
		return nil, err
	}
	return &tls.Config{
		MinVersion:         tls.VersionTLS12,
		InsecureSkipVerify: true, // the pin below is the verification
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			if len(raw) == 0 {
				return disk.Errorf(disk.ErrPermission, "auth: peer sent no certificate")
			}
			got := sha256.Sum256(raw[0])
			if subtle.ConstantTimeCompare(got[:], want[:]) != 1 {
				return disk.Errorf(disk.ErrPermission, "auth: peer certificate thumbprint %s does not match the pinned %s", formatThumbprint(got), formatThumbprint(want))
			}
			if _, err := x509.ParseCertificate(raw[0]); err != nil {
				return disk.Errorf(disk.ErrPermission, "auth: peer certificate: %w", err)
			}
			return nil
		},
	}, nil
}
