package main

import (
	"context"
	"crypto/sha1"
	"crypto/subtle"
	"crypto/tls"
	"encoding/hex"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/vdisk-project/vdisk/disk"
	"github.com/vdisk-project/vdisk/nbd"
)

// serverAddr is the control API address of serverName and port: port 0
// means vdisk's default (8443), as VDDK's 0 means "the library picks".
func serverAddr(name string, port uint32) (string, error) {
	name = strings.TrimSpace(name)
	if name == "" || strings.ContainsAny(name, "/ \t") {
		return "", disk.Errorf(disk.ErrInvalid, "vixdisklib: bad serverName %q", name)
	}
	if port > 65535 {
		return "", disk.Errorf(disk.ErrInvalid, "vixdisklib: bad port %d", port)
	}
	if port == 0 {
		return name, nil
	}
	host := strings.TrimSuffix(strings.TrimPrefix(name, "["), "]")
	return net.JoinHostPort(host, strconv.Itoa(int(port))), nil
}

// parseSHA1 parses a SHA-1 thumbprint: 40 hex digits, bare or as pairs
// separated by colons or spaces, in any case.
func parseSHA1(s string) ([sha1.Size]byte, bool) {
	var sum [sha1.Size]byte
	t := strings.TrimSpace(s)
	for _, sep := range []string{":", " "} {
		if strings.Contains(t, sep) {
			parts := strings.Split(t, sep)
			for _, p := range parts {
				if len(p) != 2 {
					return sum, false
				}
			}
			t = strings.Join(parts, "")
			break
		}
	}
	if len(t) != 2*sha1.Size {
		return sum, false
	}
	if _, err := hex.Decode(sum[:], []byte(t)); err != nil {
		return sum, false
	}
	return sum, true
}

// hostPin returns the SHA-256 thumbprint the kit pins the host with. A
// SHA-256 thumbPrint is used as it is. A SHA-1 one (what VDDK programs
// pass) is checked against the certificate the host presents now: the
// library connects, hashes the leaf certificate with SHA-1, and on a match
// pins that same certificate by its SHA-256 for every later connection,
// control API and NBD alike; on a mismatch it refuses. Any other string
// is refused.
func hostPin(ctx context.Context, server, thumb string, timeout time.Duration) (string, error) {
	if _, err := nbd.ParseThumbprint(thumb); err == nil {
		return thumb, nil
	}
	want, ok := parseSHA1(thumb)
	if !ok {
		return "", disk.Errorf(disk.ErrInvalid, "vixdisklib: thumbPrint %q is neither a SHA-1 (20 bytes) nor a SHA-256 (32 bytes) fingerprint", thumb)
	}
	addr := server
	if _, _, err := net.SplitHostPort(addr); err != nil {
		addr = net.JoinHostPort(strings.Trim(addr, "[]"), "8443")
	}
	var pin string
	cfg := &tls.Config{
		// The chain check is replaced by the thumbprint check below,
		// which runs on the handshake and refuses any other certificate.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return disk.Errorf(disk.ErrPermission, "vixdisklib: %s presented no certificate", server)
			}
			der := cs.PeerCertificates[0].Raw
			got := sha1.Sum(der)
			if subtle.ConstantTimeCompare(got[:], want[:]) != 1 {
				return disk.Errorf(disk.ErrPermission, "vixdisklib: the certificate of %s has SHA-1 thumbprint %s, not %s",
					server, formatHex(got[:]), thumb)
			}
			pin = nbd.Thumbprint(der)
			return nil
		},
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	d := tls.Dialer{Config: cfg}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		if disk.CodeOf(err) == disk.ErrPermission {
			return "", err
		}
		return "", disk.Wrap(err, "vixdisklib: check the certificate of", server, -1)
	}
	c.Close()
	return pin, nil
}

func formatHex(b []byte) string {
	h := strings.ToUpper(hex.EncodeToString(b))
	var s strings.Builder
	for i := 0; i < len(h); i += 2 {
		if i > 0 {
			s.WriteByte(':')
		}
		s.WriteString(h[i : i+2])
	}
	return s.String()
}
