package nbd

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/vdisk-project/vdisk/disk"
)

// Export is one disk a Server offers.
type Export struct {
	Name        string
	Description string
	Disk        disk.Disk
	ReadOnly    bool
	// Contexts are extra meta contexts (besides base:allocation) that
	// clients may select, such as a changed-blocks context.
	Contexts []MetaContext
	// Close, when set, is called once when the server is done with this
	// Export value: right after the option that looked it up (INFO,
	// LIST_META_CONTEXT, SET_META_CONTEXT, a failed GO), or when the
	// connection that entered transmission with it ends. Lookup may hand
	// out per-connection resources (an open handle, a connection slot) and
	// release them here.
	Close func()
}

// release calls e.Close if e is not nil and has one.
func release(e *Export) {
	if e != nil && e.Close != nil {
		e.Close()
	}
}

// MetaContext is a metadata context a client can query with BLOCK_STATUS.
// Its extents use context-specific 32-bit flags.
type MetaContext interface {
	// Name is the full context name, "namespace:leaf".
	Name() string
	// Extents reports consecutive extents from off, as disk.Extenter does;
	// the flags are sent as the context's status bits.
	Extents(ctx context.Context, off, n int64, fn func(disk.Extent) error) error
}

// ServerOptions configure a Server. The zero value serves plain NBD with
// the defaults below.
type ServerOptions struct {
	// Lookup resolves an export name. Return disk.ErrNotFound for an
	// unknown name and disk.ErrPermission to refuse one.
	Lookup func(ctx context.Context, name string) (*Export, error)
	// List returns the exports NBD_OPT_LIST shows; nil lists none.
	List func(ctx context.Context) []*Export
	// TLSConfig enables STARTTLS; with it, TLS is required: every option
	// but STARTTLS and ABORT is refused until TLS is up.
	TLSConfig *tls.Config
	// MaxConnections bounds concurrent connections (0: unlimited).
	MaxConnections int
	// Workers is the number of requests served concurrently on one
	// connection. Default 16.
	Workers int
	// NoExtendedHeaders refuses NBD_OPT_EXTENDED_HEADERS (64-bit lengths,
	// 32-byte headers), which is offered by default.
	NoExtendedHeaders bool
	// HandshakeTimeout bounds option negotiation. Default 30 s.
	HandshakeTimeout time.Duration
	// Logger receives connection events; nil discards them.
	Logger *slog.Logger
}

// Server serves exports over NBD (fixed newstyle handshake, structured
// replies, base:allocation). It is safe for concurrent use.
type Server struct {
	o ServerOptions

	mu        sync.Mutex
	listeners map[net.Listener]bool
	conns     map[*conn]bool
	closing   bool
	wg        sync.WaitGroup
}

// NewServer returns a server with options o.
func NewServer(o ServerOptions) *Server {
	if o.Workers <= 0 {
		o.Workers = 16
	}
	if o.HandshakeTimeout <= 0 {
		o.HandshakeTimeout = 30 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return &Server{o: o, listeners: map[net.Listener]bool{}, conns: map[*conn]bool{}}
}

// ErrServerClosed is returned by Serve after Shutdown.
var ErrServerClosed = errors.New("nbd: server closed")

// Serve accepts connections on l until Shutdown or a listener error.
func (s *Server) Serve(ctx context.Context, l net.Listener) error {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return ErrServerClosed
	}
	s.listeners[l] = true
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, l)
		s.mu.Unlock()
	}()
	for {
		c, err := l.Accept()
		if err != nil {
			s.mu.Lock()
			closing := s.closing
			s.mu.Unlock()
			if closing {
				return ErrServerClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return err
		}
		s.ServeConn(ctx, c)
	}
}

// ServeConn serves one connection in a new goroutine.
func (s *Server) ServeConn(ctx context.Context, nc net.Conn) {
	s.mu.Lock()
	if s.closing || (s.o.MaxConnections > 0 && len(s.conns) >= s.o.MaxConnections) {
		s.mu.Unlock()
		s.o.Logger.Info("connection refused", "remote", nc.RemoteAddr().String(), "reason", "limit")
		nc.Close()
		return
	}
	c := &conn{s: s, nc: nc}
	s.conns[c] = true
	s.wg.Add(1)
	s.mu.Unlock()
	go func() {
		defer s.wg.Done()
		c.serve(ctx)
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
	}()
}

// Shutdown stops accepting, lets in-flight requests finish (each connection
// flushes its disk), and waits for connections to end until ctx is done,
// when it closes them.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closing = true
	for l := range s.listeners {
		l.Close()
	}
	for c := range s.conns {
		c.stop()
	}
	s.mu.Unlock()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		s.mu.Lock()
		for c := range s.conns {
			c.nc.Close()
		}
		s.mu.Unlock()
		<-done
		return ctx.Err()
	}
}

// conn is one client connection.
type conn struct {
	s  *Server
	nc net.Conn
	br *bufio.Reader
	bw *bufio.Writer

	mu       sync.Mutex // serializes replies
	stopping bool
	inFlight sync.WaitGroup

	structured bool
	extended   bool                   // extended headers negotiated (implies structured)
	metaIDs    map[uint32]MetaContext // selected contexts; id 1 is base:allocation
	exp        *Export
	tls        bool
	raw        *flushConn // under TLS: buffers records; flushed after each reply
	scratch    [32]byte   // reply headers, written under mu
}

// flushConn buffers writes to a connection until Flush, or until the next
// Read (so a TLS handshake's writes go out before it waits for an answer).
type flushConn struct {
	net.Conn
	mu sync.Mutex
	w  *bufio.Writer
}

func (f *flushConn) Write(p []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.w.Write(p)
}

func (f *flushConn) Flush() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.w.Flush()
}

func (f *flushConn) Read(p []byte) (int, error) {
	if err := f.Flush(); err != nil {
		return 0, err
	}
	return f.Conn.Read(p)
}

type allocContext struct{ d disk.Disk }

func (a allocContext) Name() string { return "base:allocation" }
func (a allocContext) Extents(ctx context.Context, off, n int64, fn func(disk.Extent) error) error {
	return disk.Extents(ctx, a.d, off, n, fn)
}

func (c *conn) stop() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.stopping = true
	// Wake a reader blocked on the next request; requests in flight finish.
	c.nc.SetReadDeadline(time.Now())
}

func (c *conn) log() *slog.Logger {
	return c.s.o.Logger.With("remote", c.nc.RemoteAddr().String())
}

func (c *conn) serve(ctx context.Context) {
	defer c.nc.Close()
	defer func() { release(c.exp) }()
	c.br = bufio.NewReaderSize(c.nc, 16<<10)
	c.bw = bufio.NewWriterSize(c.nc, 16<<10)
	c.nc.SetDeadline(time.Now().Add(c.s.o.HandshakeTimeout))
	if err := c.handshake(ctx); err != nil {
		if !errors.Is(err, errDone) {
			c.log().Info("handshake ended", "err", err)
		}
		return
	}
	c.mu.Lock()
	if c.stopping {
		c.mu.Unlock()
		return
	}
	c.nc.SetDeadline(time.Time{})
	c.mu.Unlock()
	c.log().Info("transmission", "export", c.exp.Name, "tls", c.tls)
	err := c.transmit(ctx)
	c.inFlight.Wait()
	if c.exp != nil && !c.exp.ReadOnly {
		c.exp.Disk.Flush()
	}
	if err != nil && !errors.Is(err, errDone) {
		c.log().Info("connection ended", "err", err)
	}
}

// errDone ends a connection without an error worth logging.
var errDone = errors.New("done")

func (c *conn) handshake(ctx context.Context) error {
	var b [18]byte
	binary.BigEndian.PutUint64(b[0:], magicInit)
	binary.BigEndian.PutUint64(b[8:], magicOpt)
	binary.BigEndian.PutUint16(b[16:], handshakeFixed|handshakeNoZeros)
	if _, err := c.nc.Write(b[:]); err != nil {
		return err
	}
	var cf [4]byte
	if _, err := io.ReadFull(c.br, cf[:]); err != nil {
		return err
	}
	flags := binary.BigEndian.Uint32(cf[:])
	if flags&^(handshakeFixed|handshakeNoZeros) != 0 {
		return fmt.Errorf("client sent unknown handshake flags %#x", flags)
	}
	noZeros := flags&handshakeNoZeros != 0
	for {
		var h [16]byte
		if _, err := io.ReadFull(c.br, h[:]); err != nil {
			return err
		}
		if binary.BigEndian.Uint64(h[:]) != magicOpt {
			return errors.New("bad option magic")
		}
		opt := binary.BigEndian.Uint32(h[8:])
		n := binary.BigEndian.Uint32(h[12:])
		if n > maxOptionLen {
			return fmt.Errorf("option %d with %d bytes of data", opt, n)
		}
		data := make([]byte, n)
		if _, err := io.ReadFull(c.br, data); err != nil {
			return err
		}
		if c.s.o.TLSConfig != nil && !c.tls && opt != optStartTLS && opt != optAbort {
			if opt == optExportName {
				return errors.New("EXPORT_NAME without TLS")
			}
			if err := c.optReply(opt, repErrTLSReqd, []byte("TLS is required")); err != nil {
				return err
			}
			continue
		}
		done, err := c.option(ctx, opt, data, noZeros)
		if err != nil || done {
			return err
		}
	}
}

func (c *conn) optReply(opt, typ uint32, data []byte) error {
	var h [20]byte
	binary.BigEndian.PutUint64(h[0:], magicOptReply)
	binary.BigEndian.PutUint32(h[8:], opt)
	binary.BigEndian.PutUint32(h[12:], typ)
	binary.BigEndian.PutUint32(h[16:], uint32(len(data)))
	c.bw.Write(h[:])
	c.bw.Write(data)
	return c.flush()
}

// flush sends what the writer holds, through TLS's buffer too.
func (c *conn) flush() error {
	err := c.bw.Flush()
	if c.raw != nil && err == nil {
		err = c.raw.Flush()
	}
	return err
}

// lookup resolves an export name. On failure it returns the option error
// and a message for the client (the reason, bounded in length).
func (c *conn) lookup(ctx context.Context, name string) (*Export, uint32, []byte) {
	if c.s.o.Lookup == nil {
		return nil, repErrUnknown, []byte("unknown export")
	}
	e, err := c.s.o.Lookup(ctx, name)
	if err == nil && e != nil {
		return e, 0, nil
	}
	msg := "unknown export"
	if err != nil {
		msg = err.Error()
		if len(msg) > 1024 {
			msg = msg[:1024]
		}
	}
	switch disk.CodeOf(err) {
	case disk.ErrPermission, disk.ErrBusy, disk.ErrOutOfMemory:
		return nil, repErrPolicy, []byte(msg)
	}
	return nil, repErrUnknown, []byte(msg)
}

func (c *conn) transmissionFlags(e *Export) uint16 {
	f := uint16(flagHasFlags | flagSendFlush | flagSendFUA | flagSendTrim | flagSendZeroes |
		flagSendFastZero | flagCanMultiConn | flagSendCache)
	if e.ReadOnly {
		f |= flagReadOnly
	}
	if c.structured {
		f |= flagSendDF
	}
	return f
}

// option handles one option; done reports that transmission begins.
func (c *conn) option(ctx context.Context, opt uint32, data []byte, noZeros bool) (bool, error) {
	switch opt {
	case optExportName:
		if c.extended {
			return false, errors.New("EXPORT_NAME after extended headers")
		}
		if len(data) > maxNameLen {
			return false, errors.New("export name too long")
		}
		e, code, msg := c.lookup(ctx, string(data))
		if code != 0 {
			return false, fmt.Errorf("export %q: %s", data, msg)
		}
		c.exp = e
		b := make([]byte, 10, 134)
		binary.BigEndian.PutUint64(b, uint64(e.Disk.Size()))
		binary.BigEndian.PutUint16(b[8:], c.transmissionFlags(e))
		if !noZeros {
			b = b[:134]
		}
		c.bw.Write(b)
		return true, c.flush()
	case optAbort:
		c.optReply(opt, repAck, nil)
		return false, errDone
	case optList:
		if len(data) != 0 {
			return false, c.optReply(opt, repErrInvalid, nil)
		}
		if c.s.o.List != nil {
			for _, e := range c.s.o.List(ctx) {
				b := make([]byte, 4+len(e.Name))
				binary.BigEndian.PutUint32(b, uint32(len(e.Name)))
				copy(b[4:], e.Name)
				if err := c.optReply(opt, repServer, b); err != nil {
					return false, err
				}
			}
		}
		return false, c.optReply(opt, repAck, nil)
	case optStartTLS:
		if c.s.o.TLSConfig == nil {
			return false, c.optReply(opt, repErrUnsup, []byte("TLS is not configured"))
		}
		if c.tls || len(data) != 0 {
			return false, c.optReply(opt, repErrInvalid, nil)
		}
		// Bytes the client sent after STARTTLS but before the TLS
		// handshake must not be acted on (the STARTTLS injection attack).
		if c.br.Buffered() > 0 {
			return false, errors.New("data after STARTTLS before the TLS handshake")
		}
		if err := c.optReply(opt, repAck, nil); err != nil {
			return false, err
		}
		// TLS writes one record (16 KiB at most) per call; a buffer
		// under it turns a large reply into few system calls.
		fc := &flushConn{Conn: c.nc}
		fc.w = bufio.NewWriterSize(c.nc, 64<<10)
		c.raw = fc
		tc := tls.Server(fc, c.s.o.TLSConfig)
		if err := tc.HandshakeContext(ctx); err != nil {
			return false, fmt.Errorf("TLS handshake: %w", err)
		}
		c.mu.Lock()
		c.nc = tc
		c.mu.Unlock()
		c.br = bufio.NewReaderSize(tc, 16<<10)
		c.bw = bufio.NewWriterSize(tc, 16<<10)
		c.tls = true
		c.structured, c.extended, c.metaIDs = false, false, nil // forget what was negotiated in clear
		return false, nil
	case optStructuredReply:
		if len(data) != 0 {
			return false, c.optReply(opt, repErrInvalid, nil)
		}
		if c.extended {
			return false, c.optReply(opt, repErrExtReqd, []byte("extended headers are in use"))
		}
		c.structured = true
		return false, c.optReply(opt, repAck, nil)
	case optExtendedHeaders:
		if c.s.o.NoExtendedHeaders {
			return false, c.optReply(opt, repErrUnsup, nil)
		}
		if len(data) != 0 {
			return false, c.optReply(opt, repErrInvalid, nil)
		}
		c.extended, c.structured = true, true
		return false, c.optReply(opt, repAck, nil)
	case optInfo, optGo:
		return c.infoGo(ctx, opt, data)
	case optListMetaContext, optSetMetaContext:
		return false, c.metaContext(ctx, opt, data)
	}
	return false, c.optReply(opt, repErrUnsup, nil)
}

func (c *conn) infoGo(ctx context.Context, opt uint32, data []byte) (bool, error) {
	if len(data) < 6 {
		return false, c.optReply(opt, repErrInvalid, nil)
	}
	nl := binary.BigEndian.Uint32(data)
	if uint64(nl)+6 > uint64(len(data)) || nl > maxNameLen {
		return false, c.optReply(opt, repErrInvalid, nil)
	}
	name := string(data[4 : 4+nl])
	nreq := binary.BigEndian.Uint16(data[4+nl:])
	if int(nreq)*2 != len(data)-int(nl)-6 {
		return false, c.optReply(opt, repErrInvalid, nil)
	}
	e, code, msg := c.lookup(ctx, name)
	if code != 0 {
		return false, c.optReply(opt, code, msg)
	}
	keep := false
	defer func() {
		if !keep {
			release(e)
		}
	}()
	info := func(typ uint16, payload []byte) error {
		b := make([]byte, 2+len(payload))
		binary.BigEndian.PutUint16(b, typ)
		copy(b[2:], payload)
		return c.optReply(opt, repInfo, b)
	}
	var ex [10]byte
	binary.BigEndian.PutUint64(ex[:], uint64(e.Disk.Size()))
	binary.BigEndian.PutUint16(ex[8:], c.transmissionFlags(e))
	if err := info(infoExport, ex[:]); err != nil {
		return false, err
	}
	var bs [12]byte
	binary.BigEndian.PutUint32(bs[0:], 1)
	binary.BigEndian.PutUint32(bs[4:], 4096)
	binary.BigEndian.PutUint32(bs[8:], MaxPayload)
	if err := info(infoBlockSize, bs[:]); err != nil {
		return false, err
	}
	for i := range int(nreq) {
		switch binary.BigEndian.Uint16(data[6+int(nl)+2*i:]) {
		case infoName:
			if err := info(infoName, []byte(e.Name)); err != nil {
				return false, err
			}
		case infoDescription:
			if err := info(infoDescription, []byte(e.Description)); err != nil {
				return false, err
			}
		}
	}
	if err := c.optReply(opt, repAck, nil); err != nil {
		return false, err
	}
	if opt == optGo {
		keep = true
		c.exp = e
		c.rebindContexts()
		return true, nil
	}
	return false, nil
}

// rebindContexts points the selected meta contexts at the export chosen by
// GO: SET_META_CONTEXT looked the export up separately.
func (c *conn) rebindContexts() {
	if len(c.metaIDs) == 0 {
		return
	}
	all := c.contexts(c.exp)
	for id, mc := range c.metaIDs {
		i := slices.IndexFunc(all, func(x MetaContext) bool { return x.Name() == mc.Name() })
		if i < 0 {
			delete(c.metaIDs, id)
			continue
		}
		c.metaIDs[id] = all[i]
	}
}

// contexts lists the meta contexts of an export.
func (c *conn) contexts(e *Export) []MetaContext {
	return append([]MetaContext{allocContext{e.Disk}}, e.Contexts...)
}

func (c *conn) metaContext(ctx context.Context, opt uint32, data []byte) error {
	if opt == optSetMetaContext && !c.structured {
		return c.optReply(opt, repErrInvalid, []byte("structured replies are needed first"))
	}
	if len(data) < 8 {
		return c.optReply(opt, repErrInvalid, nil)
	}
	nl := binary.BigEndian.Uint32(data)
	if nl > maxNameLen || uint64(nl)+8 > uint64(len(data)) {
		return c.optReply(opt, repErrInvalid, nil)
	}
	e, code, msg := c.lookup(ctx, string(data[4:4+nl]))
	if code != 0 {
		return c.optReply(opt, code, msg)
	}
	defer release(e)
	rest := data[4+nl:]
	nq := binary.BigEndian.Uint32(rest)
	rest = rest[4:]
	var queries []string
	for range nq {
		if len(rest) < 4 {
			return c.optReply(opt, repErrInvalid, nil)
		}
		ql := binary.BigEndian.Uint32(rest)
		if uint64(ql) > uint64(len(rest)-4) {
			return c.optReply(opt, repErrInvalid, nil)
		}
		queries = append(queries, string(rest[4:4+ql]))
		rest = rest[4+ql:]
	}
	if len(rest) != 0 {
		return c.optReply(opt, repErrInvalid, nil)
	}
	all := c.contexts(e)
	selected := map[uint32]MetaContext{}
	for i, mc := range all {
		match := opt == optListMetaContext && len(queries) == 0
		for _, q := range queries {
			if q == mc.Name() || (len(q) > 0 && q[len(q)-1] == ':' && len(mc.Name()) > len(q) && mc.Name()[:len(q)] == q) {
				match = true
			}
		}
		if !match {
			continue
		}
		id := uint32(i + 1)
		if opt == optSetMetaContext {
			selected[id] = mc
		} else {
			id = 0
		}
		b := make([]byte, 4+len(mc.Name()))
		binary.BigEndian.PutUint32(b, id)
		copy(b[4:], mc.Name())
		if err := c.optReply(opt, repMetaContext, b); err != nil {
			return err
		}
	}
	if opt == optSetMetaContext {
		c.metaIDs = selected
	}
	return c.optReply(opt, repAck, nil)
}
