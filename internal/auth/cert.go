package auth

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/vdisk-project/vdisk/disk"
	"github.com/vdisk-project/vdisk/nbd"
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
// shows for SHA-256 thumbprints. It is [nbd.Thumbprint].
func Thumbprint(cert *x509.Certificate) string { return nbd.Thumbprint(cert.Raw) }

// ParseThumbprint parses a SHA-256 thumbprint with or without colons, in any
// case. Anything else (including a 20-byte SHA-1 thumbprint) is
// disk.ErrInvalid. It is [nbd.ParseThumbprint].
func ParseThumbprint(s string) ([32]byte, error) { return nbd.ParseThumbprint(s) }

// PinnedConfig returns a client TLS config that accepts exactly the peer
// whose leaf certificate has the given SHA-256 thumbprint; it is
// [nbd.PinnedTLSConfig], the one pinning implementation. A bad thumbprint
// is disk.ErrInvalid. A pin mismatch fails the handshake with an error
// wrapping disk.ErrPermission.
func PinnedConfig(thumbprint string) (*tls.Config, error) { return nbd.PinnedTLSConfig(thumbprint) }
