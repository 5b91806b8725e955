package nbd

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vdisk-project/vdisk/disk"
)

// ClientOptions configure Dial. The zero value (or nil) means the defaults
// below.
type ClientOptions struct {
	// TLSConfig is used for nbds URIs; when nil, one is built from
	// Thumbprint or the URI's tls-certificates directory (its
	// ca-cert.pem), or the system's CAs are trusted. Certificates are
	// always verified: a TLSConfig with InsecureSkipVerify and no
	// verifying callback is refused, and so is more than one of
	// TLSConfig, Thumbprint and tls-certificates (see [Trust]), with
	// disk.ErrInvalid at Dial.
	TLSConfig *tls.Config
	// Thumbprint pins the server's certificate by the SHA-256 of its DER
	// bytes (see [ParseThumbprint]): the way to trust a self-signed host.
	Thumbprint string
	// Timeout bounds each request and the handshake. Default 60 s.
	Timeout time.Duration
	// Connections is the number of connections to stripe requests over
	// when the server allows multi-conn. Default 4.
	Connections int
	// InFlight bounds requests in flight per connection. Default 64.
	InFlight int
	// NoExtendedHeaders keeps to compact headers even when the server
	// offers extended ones.
	NoExtendedHeaders bool
	// MetaContext names a metadata context to negotiate besides
	// base:allocation, such as "qemu:dirty-bitmap:NAME" (the dirty
	// bitmap qemu-nbd -B and libvirt's backup API export). Query it
	// with Client.ContextExtents. At most 4,096 bytes.
	MetaContext string
}

// Client is an NBD export opened by Dial. It is a disk.Disk (with
// Extenter, Zeroer and Trimmer) and is safe for concurrent use; requests
// are pipelined over one or more connections.
type Client struct {
	o      ClientOptions
	size   int64
	flags  uint16
	maxLen int
	conns  []*clientConn
	next   atomic.Uint32
}

type clientConn struct {
	c        *Client
	nc       net.Conn
	br       *bufio.Reader
	wmu      sync.Mutex
	bw       *bufio.Writer
	slots    chan struct{}
	meta     uint32 // base:allocation context id (servers may use 0)
	hasMeta  bool   // base:allocation was negotiated
	meta2    uint32 // ClientOptions.MetaContext's id
	hasMeta2 bool
	sr       bool
	ext      bool // extended headers negotiated
	mu       sync.Mutex
	calls    map[uint64]*call
	cookie   uint64
	err      error // set when the connection failed
	done     chan struct{}
	// reading is the call whose final reply the read loop is reading, out
	// of calls already; only the read loop touches it.
	reading *call
}

// call is one request in flight; Future wraps it.
type call struct {
	cc   *clientConn // the connection it was sent on
	typ  uint16
	off  int64
	buf  []byte
	exts []disk.Extent // BLOCK_STATUS answer, handed to the caller after completion
	meta uint32        // BLOCK_STATUS: the context whose answer is wanted
	raw  bool          // BLOCK_STATUS: keep the context's flags as sent
	n    int64
	err  error
	got  int64
	done chan struct{}
}

// Future is the result of an asynchronous request. Its buffer belongs to
// the client until Wait returns without a context error, or Abort returns.
type Future struct{ calls []*call }

// Abort ends the connections carrying the request with err (failing every
// request in flight on them) and returns once the request has completed:
// from then on no reply can touch its buffer. Use it when a Wait gave up.
func (f *Future) Abort(err error) {
	for _, c := range f.calls {
		if c.cc != nil {
			c.cc.fail(err)
		}
	}
	for _, c := range f.calls {
		<-c.done // the read loop ends once its socket is closed
	}
}

// Wait waits for the request to complete, or ctx to end, and returns its
// error. When ctx ends first the request is still in flight: its buffer
// must stay untouched until a later Wait returns or Abort does.
func (f *Future) Wait(ctx context.Context) error {
	var first error
	for _, c := range f.calls {
		select {
		case <-c.done:
			if c.err != nil && first == nil {
				first = c.err
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return first
}

// ParsedURI is an NBD URI taken apart.
type ParsedURI struct {
	TLS     bool
	Network string // "tcp" or "unix"
	Address string
	Export  string
	CertDir string // tls-certificates
}

// ParseURI parses nbd://, nbds://, nbd+unix://, nbds+unix:// (and the
// +tcp spellings) URIs as the NBD URI specification describes.
func ParseURI(s string) (ParsedURI, error) {
	var p ParsedURI
	u, err := url.Parse(s)
	if err != nil {
		return p, disk.Errorf(disk.ErrInvalid, "nbd: bad URI %q: %v", s, err)
	}
	switch u.Scheme {
	case "nbd", "nbd+tcp":
		p.Network = "tcp"
	case "nbds", "nbds+tcp":
		p.Network, p.TLS = "tcp", true
	case "nbd+unix":
		p.Network = "unix"
	case "nbds+unix":
		p.Network, p.TLS = "unix", true
	default:
		return p, disk.Errorf(disk.ErrInvalid, "nbd: unsupported URI scheme %q", u.Scheme)
	}
	p.Export = strings.TrimPrefix(u.Path, "/")
	q := u.Query()
	p.CertDir = q.Get("tls-certificates")
	if p.Network == "unix" {
		p.Address = q.Get("socket")
		if p.Address == "" {
			return p, disk.Errorf(disk.ErrInvalid, "nbd: %s URI without socket=", u.Scheme)
		}
		return p, nil
	}
	host, port := u.Hostname(), u.Port()
	if host == "" {
		host = "localhost"
	}
	if port == "" {
		port = "10809"
	}
	p.Address = net.JoinHostPort(host, port)
	return p, nil
}

// Dial connects to the export an NBD URI names.
func Dial(ctx context.Context, uri string, o *ClientOptions) (*Client, error) {
	var opts ClientOptions
	if o != nil {
		opts = *o
	}
	if len(opts.MetaContext) > 4096 {
		return nil, disk.Errorf(disk.ErrInvalid, "nbd: metadata context name of %d bytes (at most 4096)", len(opts.MetaContext))
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 60 * time.Second
	}
	if opts.Connections <= 0 {
		opts.Connections = 4
	}
	if opts.InFlight <= 0 {
		opts.InFlight = 64
	}
	p, err := ParseURI(uri)
	if err != nil {
		return nil, err
	}
	var tc *tls.Config
	if p.TLS {
		if tc, err = clientTLS(p, &opts); err != nil {
			return nil, err
		}
	}
	c := &Client{o: opts, maxLen: MaxPayload}
	first, err := c.connect(ctx, p, tc)
	if err != nil {
		return nil, err
	}
	c.conns = append(c.conns, first)
	if c.flags&flagCanMultiConn != 0 {
		for len(c.conns) < opts.Connections {
			cc, err := c.connect(ctx, p, tc)
			if err != nil {
				break // fewer connections are fine
			}
			c.conns = append(c.conns, cc)
		}
	}
	return c, nil
}

// clientTLS builds the verifying TLS configuration for p: from
// o.TLSConfig, o.Thumbprint or the URI's tls-certificates directory (its
// ca-cert.pem), at most one of them (see [Trust]), or the system's CAs.
func clientTLS(p ParsedURI, o *ClientOptions) (*tls.Config, error) {
	t := Trust{Thumbprint: o.Thumbprint, TLSConfig: o.TLSConfig}
	if p.CertDir != "" {
		t.CAFile = filepath.Join(p.CertDir, "ca-cert.pem")
	}
	cfg, err := t.ClientTLSConfig()
	if err != nil {
		return nil, err
	}
	if cfg.ServerName == "" {
		// The name the chain is checked against (a pin ignores it).
		cfg.ServerName = "localhost"
		if p.Network == "tcp" {
			cfg.ServerName, _, _ = net.SplitHostPort(p.Address)
		}
	}
	return cfg, nil
}

func (c *Client) connect(ctx context.Context, p ParsedURI, tc *tls.Config) (*clientConn, error) {
	ctx, cancel := context.WithTimeout(ctx, c.o.Timeout)
	defer cancel()
	var d net.Dialer
	nc, err := d.DialContext(ctx, p.Network, p.Address)
	if err != nil {
		return nil, disk.Errorf(disk.ErrAccess, "nbd: connect %s: %w", p.Address, err)
	}
	if dl, ok := ctx.Deadline(); ok {
		nc.SetDeadline(dl)
	}
	cc := &clientConn{c: c, nc: nc, br: bufio.NewReaderSize(nc, 256<<10), bw: bufio.NewWriterSize(nc, 256<<10),
		calls: map[uint64]*call{}, done: make(chan struct{}), slots: make(chan struct{}, c.o.InFlight)}
	if err := cc.handshake(ctx, p, tc); err != nil {
		nc.Close()
		return nil, err
	}
	cc.nc.SetDeadline(time.Time{})
	go cc.readLoop()
	return cc, nil
}

func protoErr(format string, args ...any) error {
	return disk.Errorf(disk.ErrAccess, "nbd: protocol error: "+format, args...)
}

func (cc *clientConn) sendOpt(opt uint32, data []byte) error {
	cc.bw.Write(option(opt, data))
	return cc.bw.Flush()
}

func option(opt uint32, data []byte) []byte {
	b := make([]byte, 16+len(data))
	binary.BigEndian.PutUint64(b, magicOpt)
	binary.BigEndian.PutUint32(b[8:], opt)
	binary.BigEndian.PutUint32(b[12:], uint32(len(data)))
	copy(b[16:], data)
	return b
}

func (cc *clientConn) optReply(want uint32) (uint32, []byte, error) {
	var h [20]byte
	if _, err := io.ReadFull(cc.br, h[:]); err != nil {
		return 0, nil, disk.Errorf(disk.ErrAccess, "nbd: read option reply: %w", err)
	}
	if binary.BigEndian.Uint64(h[:]) != magicOptReply || binary.BigEndian.Uint32(h[8:]) != want {
		return 0, nil, protoErr("unexpected option reply")
	}
	n := binary.BigEndian.Uint32(h[16:])
	if n > maxOptionLen {
		return 0, nil, protoErr("option reply of %d bytes", n)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(cc.br, b); err != nil {
		return 0, nil, disk.Errorf(disk.ErrAccess, "nbd: read option reply: %w", err)
	}
	return binary.BigEndian.Uint32(h[12:]), b, nil
}

func optErr(opt, typ uint32, msg []byte) error {
	code := disk.ErrNotSupported
	switch typ {
	case repErrUnknown:
		code = disk.ErrNotFound
	case repErrPolicy, repErrTLSReqd:
		code = disk.ErrPermission
	case repErrShutdown: // also a server at its connection limit
		code = disk.ErrBusy
	case repErrTooBig: // also a server out of its memory budget
		code = disk.ErrOutOfMemory
	case repErrInvalid:
		code = disk.ErrInvalid
	}
	return disk.Errorf(code, "nbd: option %d refused (%#x): %s", opt, typ, msg)
}

func (cc *clientConn) handshake(ctx context.Context, p ParsedURI, tc *tls.Config) error {
	var g [18]byte
	if _, err := io.ReadFull(cc.br, g[:]); err != nil {
		return disk.Errorf(disk.ErrAccess, "nbd: read greeting: %w", err)
	}
	if binary.BigEndian.Uint64(g[:]) != magicInit || binary.BigEndian.Uint64(g[8:]) != magicOpt {
		return protoErr("not a newstyle NBD server")
	}
	sf := binary.BigEndian.Uint16(g[16:])
	if sf&handshakeFixed == 0 {
		return disk.Errorf(disk.ErrNotSupported, "nbd: server lacks the fixed newstyle handshake")
	}
	var cf [4]byte
	binary.BigEndian.PutUint32(cf[:], uint32(sf&(handshakeFixed|handshakeNoZeros)))
	cc.bw.Write(cf[:])
	if tc != nil {
		if err := cc.sendOpt(optStartTLS, nil); err != nil {
			return err
		}
		typ, msg, err := cc.optReply(optStartTLS)
		if err != nil {
			return err
		}
		if typ != repAck {
			return optErr(optStartTLS, typ, msg)
		}
		t := tls.Client(cc.nc, tc)
		if err := t.HandshakeContext(ctx); err != nil {
			code := disk.ErrAccess
			if disk.CodeOf(err) == disk.ErrPermission {
				code = disk.ErrPermission
			}
			return disk.Errorf(code, "nbd: TLS handshake: %w", err)
		}
		cc.nc = t
		cc.br = bufio.NewReaderSize(t, 256<<10)
		cc.bw = bufio.NewWriterSize(t, 256<<10)
	}
	if !cc.c.o.NoExtendedHeaders {
		if err := cc.sendOpt(optExtendedHeaders, nil); err != nil {
			return err
		}
		if typ, _, err := cc.optReply(optExtendedHeaders); err != nil {
			return err
		} else if typ == repAck {
			cc.ext, cc.sr = true, true
		}
	}
	if !cc.ext {
		if err := cc.sendOpt(optStructuredReply, nil); err != nil {
			return err
		}
		if typ, _, err := cc.optReply(optStructuredReply); err != nil {
			return err
		} else if typ == repAck {
			cc.sr = true
		}
	}
	if cc.sr {
		qs := []string{"base:allocation"}
		if q := cc.c.o.MetaContext; q != "" && q != qs[0] {
			qs = append(qs, q)
		}
		b := make([]byte, 4+len(p.Export)+4, 64+len(p.Export))
		binary.BigEndian.PutUint32(b, uint32(len(p.Export)))
		copy(b[4:], p.Export)
		binary.BigEndian.PutUint32(b[4+len(p.Export):], uint32(len(qs)))
		for _, q := range qs {
			b = binary.BigEndian.AppendUint32(b, uint32(len(q)))
			b = append(b, q...)
		}
		if err := cc.sendOpt(optSetMetaContext, b); err != nil {
			return err
		}
		for {
			typ, data, err := cc.optReply(optSetMetaContext)
			if err != nil {
				return err
			}
			if typ == repMetaContext && len(data) >= 4 {
				switch id, name := binary.BigEndian.Uint32(data), string(data[4:]); {
				case name == qs[0]:
					cc.meta, cc.hasMeta = id, true
				case len(qs) > 1 && name == qs[1]:
					cc.meta2, cc.hasMeta2 = id, true
				}
			}
			if typ == repAck || typ&(1<<31) != 0 {
				break
			}
		}
	}
	b := make([]byte, 4+len(p.Export)+2+2)
	binary.BigEndian.PutUint32(b, uint32(len(p.Export)))
	copy(b[4:], p.Export)
	binary.BigEndian.PutUint16(b[4+len(p.Export):], 1)
	binary.BigEndian.PutUint16(b[6+len(p.Export):], infoBlockSize)
	if err := cc.sendOpt(optGo, b); err != nil {
		return err
	}
	gotExport := false
	for {
		typ, data, err := cc.optReply(optGo)
		if err != nil {
			return err
		}
		switch {
		case typ == repAck:
			if !gotExport {
				return protoErr("GO acknowledged without export information")
			}
			return nil
		case typ == repInfo && len(data) >= 2:
			switch binary.BigEndian.Uint16(data) {
			case infoExport:
				if len(data) != 12 {
					return protoErr("bad export information")
				}
				size := int64(binary.BigEndian.Uint64(data[2:]))
				if size < 0 {
					return protoErr("export size out of range")
				}
				cc.c.size, cc.c.flags, gotExport = size, binary.BigEndian.Uint16(data[10:]), true
			case infoBlockSize:
				if len(data) == 14 {
					if m := binary.BigEndian.Uint32(data[10:]); m >= 4096 && m < MaxPayload {
						cc.c.maxLen = int(m)
					}
				}
			}
		case typ&(1<<31) != 0:
			return optErr(optGo, typ, data)
		}
	}
}

// fail ends a connection from any goroutine: it records err and closes
// the socket; the reader then fails every call in flight with it.
func (cc *clientConn) fail(err error) {
	cc.mu.Lock()
	if cc.err == nil {
		cc.err = err
	}
	cc.mu.Unlock()
	cc.nc.Close()
}

// readLoop reads replies until the connection ends, then fails what is
// left in flight.
func (cc *clientConn) readLoop() {
	err := cc.readReplies()
	cc.mu.Lock()
	if cc.err == nil {
		if errors.Is(err, io.EOF) {
			err = disk.Errorf(disk.ErrAccess, "nbd: connection closed by the server")
		}
		if disk.CodeOf(err) != disk.ErrAccess {
			err = disk.Errorf(disk.ErrAccess, "nbd: %w", err)
		}
		cc.err = err
	}
	calls := cc.calls
	cc.calls = nil
	close(cc.done)
	cc.mu.Unlock()
	if c := cc.reading; c != nil {
		// Taken out of the map for its final reply, whose payload the
		// failure cut short.
		cc.reading = nil
		c.err = cc.err
		cc.finish(c)
	}
	for _, c := range calls {
		c.err = cc.err
		close(c.done)
	}
	cc.nc.Close()
}

func (cc *clientConn) take(cookie uint64, done bool) *call {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	c := cc.calls[cookie]
	if done {
		delete(cc.calls, cookie)
	}
	return c
}

func (cc *clientConn) finish(c *call) {
	close(c.done)
	<-cc.slots
}

func (cc *clientConn) readReplies() error {
	var h [32]byte
	for {
		if _, err := io.ReadFull(cc.br, h[:4]); err != nil {
			return err
		}
		switch binary.BigEndian.Uint32(h[:]) {
		case magicSimple:
			if cc.ext {
				return protoErr("simple reply under extended headers")
			}
			if _, err := io.ReadFull(cc.br, h[4:16]); err != nil {
				return err
			}
			c := cc.take(binary.BigEndian.Uint64(h[8:]), true)
			if c == nil {
				return protoErr("reply to an unknown request")
			}
			cc.reading = c // out of the map: fail it if the payload is cut
			if e := binary.BigEndian.Uint32(h[4:]); e != 0 {
				c.err = errOfErrno(e)
			} else if c.typ == cmdRead {
				if err := cc.payload(c.buf); err != nil {
					return err
				}
			}
			cc.reading = nil
			cc.finish(c)
		case magicStructured, magicExtReply:
			ext := binary.BigEndian.Uint32(h[:]) == magicExtReply
			if ext != cc.ext {
				return protoErr("reply header of the wrong kind")
			}
			var n uint64
			if ext {
				if _, err := io.ReadFull(cc.br, h[4:32]); err != nil {
					return err
				}
				n = binary.BigEndian.Uint64(h[24:])
			} else {
				if _, err := io.ReadFull(cc.br, h[4:20]); err != nil {
					return err
				}
				n = uint64(binary.BigEndian.Uint32(h[16:]))
			}
			flags, typ := binary.BigEndian.Uint16(h[4:]), binary.BigEndian.Uint16(h[6:])
			done := flags&replyFlagDone != 0
			c := cc.take(binary.BigEndian.Uint64(h[8:]), done)
			if c == nil {
				return protoErr("reply to an unknown request")
			}
			if done {
				cc.reading = c
			}
			if err := cc.chunk(c, typ, n); err != nil {
				return err
			}
			if done {
				if c.typ == cmdRead && c.err == nil && c.got != int64(len(c.buf)) {
					c.err = protoErr("read reply covered %d of %d bytes", c.got, len(c.buf))
				}
				cc.reading = nil
				cc.finish(c)
			}
		default:
			return protoErr("bad reply magic")
		}
	}
}

// directPayload is the payload size from which payload bypasses br.
const directPayload = 64 << 10

// payload reads a reply's data into p. A large payload is read from the
// connection straight into p once br has handed over what it holds: read
// through br's buffer it would be copied twice (with TLS the decrypted
// record into the buffer and on into p; without, the socket into the
// buffer), which for bulk reads costs as much CPU as the decryption.
func (cc *clientConn) payload(p []byte) error {
	if len(p) < directPayload {
		_, err := io.ReadFull(cc.br, p)
		return err
	}
	n := 0
	if k := cc.br.Buffered(); k > 0 {
		n, _ = cc.br.Read(p[:min(k, len(p))])
	}
	_, err := io.ReadFull(cc.nc, p[n:])
	return err
}

func (cc *clientConn) chunk(c *call, typ uint16, n uint64) error {
	if n > MaxPayload+1024 {
		return protoErr("chunk of %d bytes", n)
	}
	switch typ {
	case chunkNone:
		if n != 0 {
			return protoErr("NONE chunk with payload")
		}
	case chunkOffsetData, chunkOffsetHole:
		if c.typ != cmdRead || n < 8 {
			return protoErr("unexpected data chunk")
		}
		var o [12]byte
		k := 8
		if typ == chunkOffsetHole {
			k = 12
			if n != 12 {
				return protoErr("bad hole chunk")
			}
		}
		if _, err := io.ReadFull(cc.br, o[:k]); err != nil {
			return err
		}
		off := int64(binary.BigEndian.Uint64(o[:])) - c.off
		l := int64(n) - 8
		if typ == chunkOffsetHole {
			l = int64(binary.BigEndian.Uint32(o[8:]))
		}
		if off < 0 || l < 0 || off+l > int64(len(c.buf)) {
			return protoErr("chunk outside the request")
		}
		if typ == chunkOffsetData {
			if err := cc.payload(c.buf[off : off+l]); err != nil {
				return err
			}
		} else {
			clear(c.buf[off : off+l])
		}
		c.got += l
	case chunkBlockStatus, chunkBlockExt:
		ext := typ == chunkBlockExt
		head, size := uint64(4), uint64(8)
		if ext {
			head, size = 8, 16
		}
		if c.typ != cmdBlockStatus || ext != cc.ext || n < head+size || (n-head)%size != 0 {
			return protoErr("bad block status chunk")
		}
		b := make([]byte, n)
		if _, err := io.ReadFull(cc.br, b); err != nil {
			return err
		}
		if binary.BigEndian.Uint32(b) != c.meta {
			return nil // another context
		}
		if ext && uint64(binary.BigEndian.Uint32(b[4:])) != (n-head)/size {
			return protoErr("block status count does not match its length")
		}
		pos := c.off
		for i := int(head); i < len(b); i += int(size) {
			var l int64
			var fl disk.ExtentFlags
			if ext {
				v := binary.BigEndian.Uint64(b[i:])
				if v > 1<<62 {
					return protoErr("extent length out of range")
				}
				l = int64(v)
				fl = disk.ExtentFlags(uint32(binary.BigEndian.Uint64(b[i+8:])))
			} else {
				l = int64(binary.BigEndian.Uint32(b[i:]))
				fl = disk.ExtentFlags(binary.BigEndian.Uint32(b[i+4:]))
			}
			if !c.raw {
				fl &= disk.Hole | disk.Zero
			}
			if l == 0 {
				return protoErr("empty extent")
			}
			l = min(l, c.off+c.n-pos)
			if l <= 0 {
				break
			}
			c.exts = append(c.exts, disk.Extent{Off: pos, Len: l, Flags: fl})
			pos += l
		}
		c.got = pos - c.off
	default:
		if typ&(1<<15) == 0 {
			return protoErr("unknown chunk type %d", typ)
		}
		if n < 6 {
			return protoErr("short error chunk")
		}
		b := make([]byte, n)
		if _, err := io.ReadFull(cc.br, b); err != nil {
			return err
		}
		ml := int(binary.BigEndian.Uint16(b[4:]))
		msg := ""
		if 6+ml <= len(b) {
			msg = string(b[6 : 6+ml])
		}
		err := errOfErrno(binary.BigEndian.Uint32(b))
		c.err = fmt.Errorf("%w: %s", err, msg)
	}
	return nil
}

// send issues one request on a connection.
func (cc *clientConn) send(c *call, flags uint16, payload []byte) {
	c.done = make(chan struct{})
	c.cc = cc
	select {
	case cc.slots <- struct{}{}:
	case <-cc.done:
		cc.mu.Lock()
		c.err = cc.err
		cc.mu.Unlock()
		close(c.done)
		return
	}
	cc.mu.Lock()
	if cc.err != nil || cc.calls == nil {
		err := cc.err
		cc.mu.Unlock()
		if err == nil {
			err = disk.Errorf(disk.ErrAccess, "nbd: connection closed")
		}
		c.err = err
		<-cc.slots
		close(c.done)
		return
	}
	cc.cookie++
	cookie := cc.cookie
	cc.calls[cookie] = c
	cc.mu.Unlock()
	var h [32]byte
	hl := cc.header(&h, c.typ, flags, cookie, c.off, c.n)
	cc.wmu.Lock()
	cc.nc.SetWriteDeadline(time.Now().Add(cc.c.o.Timeout))
	cc.bw.Write(h[:hl])
	cc.bw.Write(payload)
	err := cc.bw.Flush()
	cc.wmu.Unlock()
	if err != nil {
		cc.fail(disk.Errorf(disk.ErrAccess, "nbd: send: %w", err))
	}
}

// header encodes a request header, compact or extended, into h and returns
// its length.
func (cc *clientConn) header(h *[32]byte, typ, flags uint16, cookie uint64, off, n int64) int {
	be := binary.BigEndian
	hl := 28
	be.PutUint32(h[0:], magicRequest)
	if cc.ext {
		hl = 32
		be.PutUint32(h[0:], magicExtRequest)
		if typ == cmdWrite {
			flags |= cmdFlagPayload
		}
		be.PutUint64(h[24:], uint64(n))
	} else {
		be.PutUint32(h[24:], uint32(n))
	}
	be.PutUint16(h[4:], flags)
	be.PutUint16(h[6:], typ)
	be.PutUint64(h[8:], cookie)
	be.PutUint64(h[16:], uint64(off))
	return hl
}

func (c *Client) conn() *clientConn {
	return c.conns[int(c.next.Add(1))%len(c.conns)]
}

// async splits a request into pieces of at most the maximum payload and
// sends them.
func (c *Client) async(typ uint16, flags uint16, p []byte, off, n int64) *Future {
	f := &Future{}
	step := int64(c.maxLen)
	if typ != cmdRead && typ != cmdWrite {
		step = 1 << 30
	}
	for done := int64(0); done < n || (n == 0 && done == 0); {
		k := min(step, n-done)
		cl := &call{typ: typ, off: off + done, n: k}
		var payload []byte
		switch typ {
		case cmdRead:
			cl.buf = p[done : done+k]
		case cmdWrite:
			payload = p[done : done+k]
		}
		c.conn().send(cl, flags, payload)
		f.calls = append(f.calls, cl)
		if n == 0 {
			break
		}
		done += k
	}
	return f
}

func (c *Client) wait(f *Future) error {
	ctx, cancel := context.WithTimeout(context.Background(), c.o.Timeout)
	defer cancel()
	err := f.Wait(ctx)
	if errors.Is(err, context.DeadlineExceeded) {
		// Nothing may hang: a request past its deadline ends the
		// connections, which fails every request in flight, and it
		// returns only once no late reply can write into its buffer.
		terr := disk.Errorf(disk.ErrAccess, "nbd: request timed out after %v", c.o.Timeout)
		for _, cc := range c.conns {
			cc.fail(terr)
		}
		f.Abort(terr)
		return terr
	}
	return err
}

// ReadAsync starts reading len(p) bytes at off into p, which must stay
// untouched until the future completes.
func (c *Client) ReadAsync(p []byte, off int64) *Future {
	return c.async(cmdRead, 0, p, off, int64(len(p)))
}

// WriteAsync starts writing p at off; p must stay untouched until the
// future completes.
func (c *Client) WriteAsync(p []byte, off int64) *Future {
	return c.async(cmdWrite, 0, p, off, int64(len(p)))
}

// Broken reports whether a connection of the client has failed (the
// server went away, the network dropped, a request timed out). Requests
// routed to it fail from then on; a caller that wants to go on dials
// again. A failure the server reported for one request (an NBD error
// reply) does not break the client.
func (c *Client) Broken() bool {
	for _, cc := range c.conns {
		select {
		case <-cc.done:
			return true
		default:
		}
		cc.mu.Lock()
		failed := cc.err != nil
		cc.mu.Unlock()
		if failed {
			return true
		}
	}
	return false
}

// Size returns the export size.
func (c *Client) Size() int64 { return c.size }

// ReadOnly reports whether the server exports read-only.
func (c *Client) ReadOnly() bool { return c.flags&flagReadOnly != 0 }

// ReadAt implements io.ReaderAt.
func (c *Client) ReadAt(p []byte, off int64) (int, error) {
	q, eof := disk.ReadAtClipped(p, off, c.size)
	if q == nil {
		return 0, eof
	}
	if err := c.wait(c.ReadAsync(q, off)); err != nil {
		return 0, err
	}
	return len(q), eof
}

// WriteAt implements io.WriterAt.
func (c *Client) WriteAt(p []byte, off int64) (int, error) {
	if c.ReadOnly() {
		return 0, disk.Errorf(disk.ErrPermission, "nbd: export is read-only")
	}
	if err := disk.CheckRange(off, int64(len(p)), c.size); err != nil {
		return 0, err
	}
	if len(p) == 0 {
		return 0, nil
	}
	if err := c.wait(c.WriteAsync(p, off)); err != nil {
		return 0, err
	}
	return len(p), nil
}

// WriteFUA writes p at off with the FUA flag: when it returns, the write
// is durable. A server that does not take FUA gets a FLUSH after the
// write.
func (c *Client) WriteFUA(p []byte, off int64) error {
	if c.flags&flagSendFUA == 0 {
		if _, err := c.WriteAt(p, off); err != nil {
			return err
		}
		return c.Flush()
	}
	if c.ReadOnly() {
		return disk.Errorf(disk.ErrPermission, "nbd: export is read-only")
	}
	if err := disk.CheckRange(off, int64(len(p)), c.size); err != nil {
		return err
	}
	return c.wait(c.async(cmdWrite, cmdFlagFUA, p, off, int64(len(p))))
}

// WriteZeroes sends WRITE_ZEROES.
func (c *Client) WriteZeroes(off, n int64, flags disk.ZeroFlags) error {
	if err := disk.CheckRange(off, n, c.size); err != nil {
		return err
	}
	if c.flags&flagSendZeroes == 0 {
		if flags&disk.ZeroFast != 0 {
			return disk.Errorf(disk.ErrNotSupported, "nbd: server cannot zero")
		}
		return disk.FillZeros(c, off, n)
	}
	var f uint16
	if flags&disk.ZeroNoHole != 0 {
		f |= cmdFlagNoHole
	}
	if flags&disk.ZeroFast != 0 {
		if c.flags&flagSendFastZero == 0 {
			return disk.Errorf(disk.ErrNotSupported, "nbd: server cannot zero fast")
		}
		f |= cmdFlagFastZero
	}
	return c.wait(c.async(cmdWriteZeroes, f, nil, off, n))
}

// Trim sends TRIM when the server supports it.
func (c *Client) Trim(off, n int64) error {
	if err := disk.CheckRange(off, n, c.size); err != nil {
		return err
	}
	if c.flags&flagSendTrim == 0 || n == 0 {
		return nil
	}
	return c.wait(c.async(cmdTrim, 0, nil, off, n))
}

// Extents asks the server for base:allocation; a server without it
// reports everything as data.
func (c *Client) Extents(ctx context.Context, off, n int64, fn func(disk.Extent) error) error {
	return c.blockStatus(ctx, off, n, false, fn)
}

// ContextExtents reports ClientOptions.MetaContext's extents from off for
// n bytes, in order. Each Extent's Flags are the context's own bits as the
// server sent them (for qemu:dirty-bitmap, 1 marks a dirty range). A
// server that did not accept the context gives disk.ErrNotSupported.
func (c *Client) ContextExtents(ctx context.Context, off, n int64, fn func(disk.Extent) error) error {
	return c.blockStatus(ctx, off, n, true, fn)
}

func (c *Client) blockStatus(ctx context.Context, off, n int64, second bool, fn func(disk.Extent) error) error {
	end := min(off+n, c.size)
	for off < end {
		cc := c.conn()
		id, ok := cc.meta, cc.hasMeta
		if second {
			id, ok = cc.meta2, cc.hasMeta2
			if !ok {
				return disk.Errorf(disk.ErrNotSupported, "nbd: the server does not offer the metadata context %q", c.o.MetaContext)
			}
		}
		if !ok {
			return fn(disk.Extent{Off: off, Len: end - off})
		}
		k := min(end-off, 1<<30)
		cl := &call{typ: cmdBlockStatus, off: off, n: k, meta: id, raw: second}
		cc.send(cl, 0, nil)
		if err := c.wait(&Future{calls: []*call{cl}}); err != nil {
			return err
		}
		if cl.got <= 0 {
			return protoErr("block status made no progress")
		}
		// fn runs here, not on the connection's reader: it may itself
		// issue requests.
		for _, e := range cl.exts {
			if err := fn(e); err != nil {
				return err
			}
		}
		off += cl.got
		if err := ctx.Err(); err != nil {
			return err
		}
	}
	return nil
}

// Flush sends FLUSH on every connection.
func (c *Client) Flush() error {
	if c.flags&flagSendFlush == 0 {
		return nil
	}
	var errs []error
	for _, cc := range c.conns {
		cl := &call{typ: cmdFlush}
		cc.send(cl, 0, nil)
		errs = append(errs, c.wait(&Future{calls: []*call{cl}}))
	}
	return errors.Join(errs...)
}

// Close flushes (when writable), disconnects and closes every connection.
// Requests still in flight fail.
func (c *Client) Close() error {
	var err error
	if !c.ReadOnly() {
		err = c.Flush()
	}
	for _, cc := range c.conns {
		var h [32]byte
		hl := cc.header(&h, cmdDisc, 0, 0, 0, 0)
		cc.wmu.Lock()
		cc.nc.SetWriteDeadline(time.Now().Add(time.Second))
		cc.bw.Write(h[:hl])
		cc.bw.Flush()
		cc.wmu.Unlock()
		cc.fail(disk.Errorf(disk.ErrInvalid, "nbd: client closed"))
		<-cc.done
	}
	return err
}
