package nbd

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"
)

// writeLog is a net.Conn that records the size of each Write.
type writeLog struct {
	net.Conn
	writes []int
	data   bytes.Buffer
}

func (w *writeLog) Write(p []byte) (int, error) {
	w.writes = append(w.writes, len(p))
	return w.data.Write(p)
}

// TestFlushConnRecords: the buffer under crypto/tls sends whole records
// only, a 256 KiB reply's records (TLS 1.3 and 1.2 framing) in one system
// call once it has grown to tlsSendBuf, and a write larger than the
// buffer on its own.
func TestFlushConnRecords(t *testing.T) {
	for _, framing := range []int{22, 29} {
		w := &writeLog{}
		f := newFlushConn(w, tlsNegBuf)
		rec := 16<<10 + framing
		var want bytes.Buffer
		for i := range 5 {
			r := bytes.Repeat([]byte{byte(i)}, rec)
			want.Write(r)
			f.Write(r)
		}
		// 64 KiB holds three records; the fourth sent them, the fifth joined it.
		if len(w.writes) != 1 || w.writes[0] != 3*rec {
			t.Errorf("framing %d: writes %v before the flush, want [%d]", framing, w.writes, 3*rec)
		}
		f.Flush()
		f.transmission(tlsSendBuf)
		w.writes = nil
		for i := range 17 { // a 256 KiB reply and its header
			r := bytes.Repeat([]byte{byte(i)}, rec)
			if i == 16 {
				r = r[:28+framing]
			}
			want.Write(r)
			f.Write(r)
		}
		f.Flush()
		if len(w.writes) != 1 {
			t.Errorf("framing %d: a 256 KiB reply took writes %v, want one", framing, w.writes)
		}
		big := bytes.Repeat([]byte{9}, tlsSendBuf+1)
		want.Write(big)
		f.Write(big)
		if n := w.writes[len(w.writes)-1]; n != len(big) {
			t.Errorf("framing %d: a write larger than the buffer went out as %d bytes", framing, n)
		}
		if !bytes.Equal(w.data.Bytes(), want.Bytes()) {
			t.Errorf("framing %d: the bytes sent differ from those written", framing)
		}
	}
}

// countListener counts the writes made to the connections it accepts.
type countListener struct {
	net.Listener
	writes *atomic.Int64
}

type countConn struct {
	net.Conn
	writes *atomic.Int64
}

func (l countListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return countConn{c, l.writes}, nil
}

func (c countConn) Write(p []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(p)
}

// TestReadReplyOneWrite: a READ reply that is all data (256 KiB, as
// nbdcopy asks) leaves in one write to the socket, with simple and
// structured replies, and under TLS once the connection is in
// transmission.
func TestReadReplyOneWrite(t *testing.T) {
	const n, reads = 256 << 10, 20
	cfg := writeCerts(t, t.TempDir())
	d := &flatDisk{b: make([]byte, 4<<20)}
	for i := range d.b {
		d.b[i] = byte(i * 13)
	}
	for _, tc := range []struct {
		name       string
		tls        bool
		structured bool
	}{{"simple", false, false}, {"structured", false, true}, {"tls", true, true}} {
		t.Run(tc.name, func(t *testing.T) {
			o := ServerOptions{}
			var ccfg *tls.Config
			if tc.tls {
				o.TLSConfig = cfg
				ccfg = &tls.Config{InsecureSkipVerify: true}
			}
			exp := &Export{Disk: d, ReadOnly: true}
			o.Lookup = func(context.Context, string) (*Export, error) { return exp, nil }
			s := NewServer(o)
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			writes := &atomic.Int64{}
			go s.Serve(context.Background(), countListener{l, writes})
			t.Cleanup(func() { s.Shutdown(context.Background()) })
			c := rawTransmission(t, "tcp", l.Addr().String(), ccfg, tc.structured)
			c.SetDeadline(time.Now().Add(20 * time.Second))
			hl := 16
			if tc.structured {
				hl = 28
			}
			reply := make([]byte, hl+n)
			before := writes.Load()
			for i := range reads {
				off := uint64(i) * n % uint64(len(d.b))
				if _, err := c.Write(readReq(uint64(i), off, n)); err != nil {
					t.Fatal(err)
				}
				if _, err := io.ReadFull(c, reply); err != nil {
					t.Fatal(err)
				}
				if binary.BigEndian.Uint64(reply[8:]) != uint64(i) || !bytes.Equal(reply[hl:], d.b[off:off+n]) {
					t.Fatalf("read %d: wrong reply", i)
				}
			}
			if got := writes.Load() - before; got != reads {
				t.Errorf("%d READ replies took %d writes, want one each", reads, got)
			}
		})
	}
}
