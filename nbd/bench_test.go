package nbd

import (
	"crypto/tls"
	"encoding/binary"
	"io"
	"net"
	"testing"
	"time"
)

// benchClient connects to the server at addr (network "unix" or "tcp"),
// under TLS when tc is set, negotiates structured replies as nbdcopy does
// and enters transmission.
func benchClient(b testing.TB, network, addr string, tc *tls.Config) net.Conn {
	return rawTransmission(b, network, addr, tc, true)
}

// rawTransmission connects to the server at addr, under TLS when tc is
// set, negotiates structured replies when asked and enters transmission.
func rawTransmission(b testing.TB, network, addr string, tc *tls.Config, structured bool) net.Conn {
	b.Helper()
	c, err := net.Dial(network, addr)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	var greet [18]byte
	if _, err := io.ReadFull(c, greet[:]); err != nil {
		b.Fatal(err)
	}
	c.Write([]byte{0, 0, 0, 3})
	if tc != nil {
		c.Write(option(optStartTLS, nil))
		if _, typ, _, err := readReply(c); err != nil || typ != repAck {
			b.Fatalf("STARTTLS: %#x %v", typ, err)
		}
		t := tls.Client(c, tc)
		if err := t.Handshake(); err != nil {
			b.Fatal(err)
		}
		c = t
	}
	if structured {
		c.Write(option(optStructuredReply, nil))
		if _, typ, _, err := readReply(c); err != nil || typ != repAck {
			b.Fatalf("structured replies: %#x %v", typ, err)
		}
	}
	goDefault(b, c)
	return c
}

// BenchmarkServerRead measures the server's READ path as nbdcopy drives
// it: 256 KiB requests, 16 in flight, structured replies, from a disk in
// memory over a Unix socket, TCP and TLS. The client shares the process
// (under TLS its decryption is in the figure); bench/nbd/compare.sh
// measures the server's own CPU per GiB against real clients.
func BenchmarkServerRead(b *testing.B) {
	const n, inFlight = 256 << 10, 16
	d := &flatDisk{b: make([]byte, 64<<20)}
	for i := range d.b {
		d.b[i] = byte(i * 7)
	}
	cfg := writeCerts(b, b.TempDir())
	for _, kind := range []string{"unix", "tcp", "tls"} {
		b.Run(kind, func(b *testing.B) {
			var c net.Conn
			switch kind {
			case "unix":
				c = benchClient(b, "unix", serve(b, d, ServerOptions{}), nil)
			case "tcp":
				addr, _ := serveTCP(b, d, ServerOptions{})
				c = benchClient(b, "tcp", addr, nil)
			case "tls":
				addr, _ := serveTCP(b, d, ServerOptions{TLSConfig: cfg})
				c = benchClient(b, "tcp", addr, &tls.Config{InsecureSkipVerify: true})
			}
			c.SetDeadline(time.Time{})
			errc := make(chan error, 1)
			sent := make(chan struct{}, inFlight)
			reqs := b.N
			go func() {
				req := readReq(0, 0, n)
				for i := range reqs {
					sent <- struct{}{}
					binary.BigEndian.PutUint64(req[8:], uint64(i))
					binary.BigEndian.PutUint64(req[16:], uint64(i)*n%uint64(len(d.b)))
					if _, err := c.Write(req); err != nil {
						errc <- err
						return
					}
				}
				errc <- nil
			}()
			reply := make([]byte, 28+n)
			b.SetBytes(n)
			b.ReportAllocs()
			b.ResetTimer()
			for i := range reqs {
				if _, err := io.ReadFull(c, reply); err != nil {
					b.Fatal(err)
				}
				// Workers answer in any order.
				if binary.BigEndian.Uint32(reply) != magicStructured || binary.BigEndian.Uint64(reply[8:]) >= uint64(reqs) ||
					binary.BigEndian.Uint16(reply[6:]) != chunkOffsetData || binary.BigEndian.Uint32(reply[16:]) != 8+n {
					b.Fatalf("reply %d: header %x", i, reply[:28])
				}
				<-sent
			}
			b.StopTimer()
			if err := <-errc; err != nil {
				b.Fatal(err)
			}
		})
	}
}
