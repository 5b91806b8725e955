package nbd

import (
	"bytes"
	"net"
	"testing"
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
		f.grow(tlsSendBuf)
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
