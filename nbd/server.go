package nbd

import (
	"bufio"
	"container/list"
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
	"sync/atomic"
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
	// Attach, when set, is called when a connection enters transmission
	// with this export, with a function that cuts the connection at once:
	// no request is read after it, and replies not yet sent are dropped,
	// so the client sees a lost connection (and may redial) rather than
	// errors. kill may be called from any goroutine, any number of times.
	Attach func(kill func())
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
	// unknown name and disk.ErrPermission to refuse one; disk.ErrBusy
	// (a connection limit) reaches the client as NBD_REP_ERR_SHUTDOWN and
	// disk.ErrOutOfMemory as NBD_REP_ERR_TOO_BIG, which the Client maps
	// back. Export names may be secrets (access tickets): the server never
	// logs them.
	Lookup func(ctx context.Context, name string) (*Export, error)
	// List returns the exports NBD_OPT_LIST shows; nil lists none.
	List func(ctx context.Context) []*Export
	// TLSConfig enables STARTTLS; with it, TLS is required: every option
	// but STARTTLS and ABORT is refused until TLS is up.
	TLSConfig *tls.Config
	// MaxConnections bounds connections in transmission (0: unlimited).
	// Connections still negotiating do not count (MaxNegotiating bounds
	// them); a GO beyond the limit is refused as busy, an EXPORT_NAME
	// disconnected.
	MaxConnections int
	// MaxNegotiating bounds connections that have not entered
	// transmission yet (TLS handshake, option haggling). Default
	// DefaultMaxNegotiating; negative: unlimited. A connection beyond it
	// is closed at once, unless the oldest negotiating connection has
	// been at it for a tenth of HandshakeTimeout or longer: that one is
	// closed instead, so that stalled sockets cannot keep clients out.
	MaxNegotiating int
	// HandshakeTimeout bounds negotiation, from accept to the start of
	// transmission, TLS handshake included. Default
	// DefaultHandshakeTimeout.
	HandshakeTimeout time.Duration
	// Workers is the number of requests served concurrently on one
	// connection. Default 16.
	Workers int
	// ConnMemory bounds the bytes of buffers one connection holds at
	// once: its reader and writer, TLS buffers, option data, and the
	// payloads of the requests in flight (READ data, WRITE data,
	// BLOCK_STATUS replies). A request reserves its buffers before they
	// are allocated and waits (without reading further requests) until
	// they fit; one that can never fit is refused with ENOMEM. The
	// maximum payload advertised in NBD_INFO_BLOCK_SIZE is lowered to fit.
	// Default DefaultConnMemory; at least MinConnMemory.
	ConnMemory int64
	// NoExtendedHeaders refuses NBD_OPT_EXTENDED_HEADERS (64-bit lengths,
	// 32-byte headers), which is offered by default.
	NoExtendedHeaders bool
	// Now is the clock negotiation ages are measured with (for
	// MaxNegotiating); default time.Now. Socket deadlines use the system
	// clock.
	Now func() time.Time
	// Logger receives connection events; nil discards them.
	Logger *slog.Logger
}

// Defaults and bounds of ServerOptions.
const (
	DefaultMaxNegotiating   = 256
	DefaultHandshakeTimeout = 10 * time.Second
	DefaultConnMemory       = 2*MaxPayload + 1<<20
	MinConnMemory           = 1 << 20
)

// ServerStats is a snapshot of a Server's connections and memory.
type ServerStats struct {
	// Negotiating and Connections count connections before and in
	// transmission.
	Negotiating, Connections int
	// Refused counts connections closed at once or evicted by the
	// MaxNegotiating cap, and GO or EXPORT_NAME refused by
	// MaxConnections.
	Refused int64
	// Memory is the bytes of buffers connections hold now (reserved
	// before allocation); MemoryPeak is the most held at once.
	Memory, MemoryPeak int64
}

// Server serves exports over NBD (fixed newstyle handshake, structured
// replies, base:allocation). It is safe for concurrent use.
type Server struct {
	o ServerOptions

	mu          sync.Mutex
	listeners   map[net.Listener]bool
	conns       map[*conn]bool
	negotiating list.List // of *conn, oldest first
	established int
	atCap       bool // the negotiation cap was reached and logged (s.mu)
	closing     bool
	closed      chan struct{} // closed by Shutdown
	wg          sync.WaitGroup

	refused       atomic.Int64
	mem, memPeak  atomic.Int64
	acceptRetries atomic.Int64
}

// NewServer returns a server with options o.
func NewServer(o ServerOptions) *Server {
	if o.Workers <= 0 {
		o.Workers = 16
	}
	if o.HandshakeTimeout <= 0 {
		o.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if o.MaxNegotiating == 0 {
		o.MaxNegotiating = DefaultMaxNegotiating
	}
	if o.ConnMemory <= 0 {
		o.ConnMemory = DefaultConnMemory
	}
	o.ConnMemory = max(o.ConnMemory, MinConnMemory)
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return &Server{o: o, listeners: map[net.Listener]bool{}, conns: map[*conn]bool{}, closed: make(chan struct{})}
}

// ErrServerClosed is returned by Serve after Shutdown.
var ErrServerClosed = errors.New("nbd: server closed")

// Stats reports the server's connections and memory.
func (s *Server) Stats() ServerStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return ServerStats{Negotiating: s.negotiating.Len(), Connections: s.established, Refused: s.refused.Load(),
		Memory: s.mem.Load(), MemoryPeak: s.memPeak.Load()}
}

// NegotiationMemory is the most the connections still negotiating hold in
// buffers together: MaxNegotiating times the package's NegotiationMemory,
// less the TLS buffers without TLSConfig (0 when MaxNegotiating is
// unlimited).
func (s *Server) NegotiationMemory() int64 {
	if s.o.MaxNegotiating < 0 {
		return 0
	}
	per := int64(NegotiationMemory)
	if s.o.TLSConfig == nil {
		per -= tlsMem
	}
	return int64(s.o.MaxNegotiating) * per
}

// Serve accepts connections on l until Shutdown or a listener error.
// Errors that pass (out of file descriptors, EMFILE and ENFILE, or of
// buffers) do not end it: it logs the first, retries after a delay growing
// from 5 ms to 1 s, and logs when accepting works again.
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
	var delay time.Duration
	failures := 0
	for {
		c, err := l.Accept()
		if err != nil {
			s.mu.Lock()
			closing := s.closing
			s.mu.Unlock()
			if closing {
				return ErrServerClosed
			}
			if !retryAccept(err) {
				return err
			}
			failures++
			s.acceptRetries.Add(1)
			if delay == 0 {
				delay = acceptDelayMin
				s.o.Logger.Warn("accept failed; retrying", "addr", l.Addr().String(), "err", err)
			} else {
				delay = min(2*delay, acceptDelayMax)
			}
			t := time.NewTimer(delay)
			select {
			case <-t.C:
			case <-s.closed:
				t.Stop()
			}
			continue
		}
		if delay != 0 {
			s.o.Logger.Info("accepting again", "addr", l.Addr().String(), "failures", failures)
			delay, failures = 0, 0
		}
		s.ServeConn(ctx, c)
	}
}

// ServeConn serves one connection in a new goroutine. The connection
// counts against MaxNegotiating until it enters transmission.
func (s *Server) ServeConn(ctx context.Context, nc net.Conn) {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		nc.Close()
		return
	}
	now := s.o.Now()
	if s.o.MaxNegotiating > 0 && s.negotiating.Len() >= s.o.MaxNegotiating {
		if !s.atCap {
			// Logged once until the cap is half free again.
			s.atCap = true
			s.o.Logger.Warn("connections negotiating at the cap; refusing or evicting", "max_negotiating", s.o.MaxNegotiating)
		}
		oldest := s.negotiating.Front().Value.(*conn)
		if now.Sub(oldest.start) < s.o.HandshakeTimeout/10 {
			s.mu.Unlock()
			s.refused.Add(1)
			s.o.Logger.Debug("connection refused", "remote", nc.RemoteAddr().String(), "reason", "negotiation limit")
			nc.Close()
			return
		}
		s.negotiating.Remove(oldest.elem)
		oldest.elem = nil
		oldest.raw.Close()
		s.refused.Add(1)
		s.o.Logger.Debug("connection evicted", "remote", oldest.raw.RemoteAddr().String(), "reason", "negotiation limit")
	}
	c := &conn{s: s, nc: nc, raw: nc, start: now, mem: newBudget(s.o.ConnMemory, &s.mem, &s.memPeak)}
	c.elem = s.negotiating.PushBack(c)
	s.conns[c] = true
	s.wg.Add(1)
	s.mu.Unlock()
	go func() {
		defer s.wg.Done()
		c.serve(ctx)
		s.mu.Lock()
		delete(s.conns, c)
		if c.elem != nil {
			s.negotiating.Remove(c.elem)
			c.elem = nil
		}
		if c.admitted {
			s.established--
		}
		if s.atCap && s.negotiating.Len() <= s.o.MaxNegotiating/2 {
			s.atCap = false
			s.o.Logger.Info("connections negotiating below the cap again", "negotiating", s.negotiating.Len())
		}
		s.mu.Unlock()
	}()
}

// admit moves c from negotiation to transmission, within MaxConnections.
// A refusal is disk.ErrBusy.
func (s *Server) admit(c *conn) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.closing:
		return errShuttingDown
	case c.elem == nil: // evicted
		return disk.Errorf(disk.ErrBusy, "nbd: negotiation limit reached")
	case s.o.MaxConnections > 0 && s.established >= s.o.MaxConnections:
		s.refused.Add(1)
		return disk.Errorf(disk.ErrBusy, "nbd: connection limit of %d reached", s.o.MaxConnections)
	}
	s.negotiating.Remove(c.elem)
	c.elem = nil
	c.admitted = true
	s.established++
	return nil
}

// errShuttingDown refuses an export while the server shuts down.
var errShuttingDown = errors.New("nbd: server shutting down")

// Shutdown stops accepting, lets in-flight requests finish (each connection
// flushes its disk), and waits for connections to end until ctx is done,
// when it closes them.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	if !s.closing {
		close(s.closed)
	}
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
			c.raw.Close()
		}
		s.mu.Unlock()
		<-done
		return ctx.Err()
	}
}

// conn is one client connection.
type conn struct {
	s     *Server
	nc    net.Conn // the socket, or TLS over it
	raw   net.Conn // the socket
	br    *bufio.Reader
	bw    *bufio.Writer
	start time.Time     // accepted, by ServerOptions.Now
	elem  *list.Element // in s.negotiating; nil once out (s.mu)
	// admitted: counted in s.established (s.mu)
	admitted bool
	mem      *budget
	done     context.CancelFunc // ends waits for memory

	mu      sync.Mutex // serializes replies
	scratch [32]byte   // reply headers, written under mu

	dmu      sync.Mutex // orders stop against clearing the deadline
	stopping atomic.Bool
	inFlight sync.WaitGroup

	structured bool
	extended   bool                   // extended headers negotiated (implies structured)
	metaIDs    map[uint32]MetaContext // selected contexts; id 1 is base:allocation
	exp        *Export
	tls        bool
	fc         *flushConn // under TLS: buffers records; flushed after each reply
	maxPayload uint32     // advertised in NBD_INFO_BLOCK_SIZE
	maxExtents int        // per BLOCK_STATUS reply and context
}

// flushConn buffers writes to a connection until Flush, or, while the
// connection negotiates, until the next Read (so a TLS handshake's writes
// go out before it waits for an answer). crypto/tls writes one record
// (16 KiB at most) per call; the buffer gathers whole records, so that a
// large reply leaves in few system calls and no record is split between
// two of them.
type flushConn struct {
	net.Conn
	mu  sync.Mutex
	buf []byte // records not yet sent; its capacity is the buffer's size
	// replying: in transmission every reply ends with a Flush, and a Read
	// (the next request) must not send half of a reply being written.
	replying bool
}

func newFlushConn(nc net.Conn, size int) *flushConn {
	return &flushConn{Conn: nc, buf: make([]byte, 0, size)}
}

func (f *flushConn) Write(p []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.buf)+len(p) > cap(f.buf) {
		if err := f.flushLocked(); err != nil {
			return 0, err
		}
		if len(p) > cap(f.buf) {
			return f.Conn.Write(p)
		}
	}
	f.buf = append(f.buf, p...)
	return len(p), nil
}

func (f *flushConn) flushLocked() error {
	if len(f.buf) == 0 {
		return nil
	}
	_, err := f.Conn.Write(f.buf)
	f.buf = f.buf[:0]
	return err
}

func (f *flushConn) Flush() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.flushLocked()
}

// transmission switches to replies: the buffer becomes size bytes, and
// Read no longer flushes.
func (f *flushConn) transmission(size int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.replying = true
	if size > cap(f.buf) {
		b := make([]byte, len(f.buf), size)
		copy(b, f.buf)
		f.buf = b
	}
}

func (f *flushConn) Read(p []byte) (int, error) {
	f.mu.Lock()
	replying := f.replying
	f.mu.Unlock()
	if !replying {
		if err := f.Flush(); err != nil {
			return 0, err
		}
	}
	return f.Conn.Read(p)
}

type allocContext struct{ d disk.Disk }

func (a allocContext) Name() string { return "base:allocation" }
func (a allocContext) Extents(ctx context.Context, off, n int64, fn func(disk.Extent) error) error {
	return disk.Extents(ctx, a.d, off, n, fn)
}

// stop ends the connection after the requests in flight: it wakes a
// reader blocked on the next request or on memory. It never waits (a
// reply stuck on a client that does not read holds c.mu).
func (c *conn) stop() {
	c.dmu.Lock()
	defer c.dmu.Unlock()
	c.stopping.Store(true)
	c.raw.SetReadDeadline(time.Now())
	if c.done != nil {
		c.done()
	}
}

// kill cuts the connection: its socket is closed, so nothing more is read
// or written.
func (c *conn) kill() {
	c.dmu.Lock()
	defer c.dmu.Unlock()
	c.stopping.Store(true)
	c.raw.Close()
	if c.done != nil {
		c.done()
	}
}

func (c *conn) log() *slog.Logger {
	return c.s.o.Logger.With("remote", c.raw.RemoteAddr().String())
}

func (c *conn) serve(ctx context.Context) {
	defer c.raw.Close()
	defer c.mem.releaseAll()
	defer func() { release(c.exp) }()
	// waits (for memory) end when the connection stops; requests in
	// flight go on with ctx.
	c.dmu.Lock()
	waits, cancel := context.WithCancel(ctx)
	c.done = cancel
	stopping := c.stopping.Load()
	c.dmu.Unlock()
	defer cancel()
	if stopping {
		return
	}
	if err := c.mem.hold(ioMem); err != nil {
		return
	}
	c.br = bufio.NewReaderSize(c.nc, 16<<10)
	c.bw = bufio.NewWriterSize(c.nc, 16<<10)
	c.raw.SetDeadline(time.Now().Add(c.s.o.HandshakeTimeout))
	if err := c.handshake(ctx); err != nil {
		if !errors.Is(err, errDone) {
			c.log().Info("handshake ended", "err", err)
		}
		return
	}
	c.dmu.Lock()
	if c.stopping.Load() {
		c.dmu.Unlock()
		return
	}
	c.raw.SetDeadline(time.Time{})
	c.dmu.Unlock()
	if c.exp.Attach != nil {
		c.exp.Attach(c.kill)
	}
	if c.fc != nil {
		// Replies get the larger buffer, when the budget has room: a
		// 256 KiB READ reply leaves in one system call.
		size := tlsNegBuf
		if c.mem.hold(tlsSendBuf-tlsNegBuf) == nil {
			size = tlsSendBuf
		}
		c.fc.transmission(size)
	}
	if tc, ok := c.nc.(*tls.Conn); ok {
		st := tc.ConnectionState()
		c.log().Info("transmission", "export", c.exp.Name, "tls", c.tls,
			"tls_version", tls.VersionName(st.Version), "cipher", tls.CipherSuiteName(st.CipherSuite))
	} else {
		c.log().Info("transmission", "export", c.exp.Name, "tls", c.tls)
	}
	err := c.transmit(ctx, waits)
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
		// Option data is counted while the option is handled; it is small
		// enough (maxOptionLen) to always fit.
		if err := c.mem.acquire(ctx, int64(n)); err != nil {
			return err
		}
		done, err := c.optionData(ctx, opt, n, noZeros)
		c.mem.release(int64(n))
		if err != nil || done {
			return err
		}
	}
}

// optionData reads the n bytes of an option's data and handles it.
func (c *conn) optionData(ctx context.Context, opt, n uint32, noZeros bool) (bool, error) {
	data := make([]byte, n)
	if _, err := io.ReadFull(c.br, data); err != nil {
		return false, err
	}
	if c.s.o.TLSConfig != nil && !c.tls && opt != optStartTLS && opt != optAbort {
		if opt == optExportName {
			return false, errors.New("EXPORT_NAME without TLS")
		}
		return false, c.optReply(opt, repErrTLSReqd, []byte("TLS is required"))
	}
	return c.option(ctx, opt, data, noZeros)
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
	if c.fc != nil && err == nil {
		err = c.fc.Flush()
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
	return nil, repErrOf(err), []byte(msg)
}

// repErrOf maps a refusal of an export to the option error the client
// gets: the one table of this boundary. The base protocol has no "busy"
// error: a limit reached travels as ERR_SHUTDOWN (the server is unwilling
// to go on now; the client disconnects and may retry later) and a memory
// budget refused as ERR_TOO_BIG. Client maps both back (see optErr).
func repErrOf(err error) uint32 {
	if errors.Is(err, errShuttingDown) {
		return repErrShutdown
	}
	switch disk.CodeOf(err) {
	case disk.ErrPermission:
		return repErrPolicy
	case disk.ErrBusy:
		return repErrShutdown
	case disk.ErrOutOfMemory:
		return repErrTooBig
	}
	return repErrUnknown
}

// enter admits the connection to transmission with export e: within
// MaxConnections, and with the buffer limits its memory budget allows.
func (c *conn) enter(e *Export) error {
	if err := c.s.admit(c); err != nil {
		return err
	}
	c.exp = e
	return nil
}

// limits sets what one request may hold, from the connection's budget:
// the advertised maximum payload (a power of two, at most MaxPayload, such
// that two requests of it fit the budget with their bookkeeping, so that
// one is read while the other is answered) and the extents of one
// BLOCK_STATUS reply per context (a quarter of the budget for them all).
func (c *conn) limits(contexts int) {
	avail := c.s.o.ConnMemory - ioMem
	if c.s.o.TLSConfig != nil {
		avail -= tlsMem + tlsSendBuf - tlsNegBuf
	}
	p := int64(MaxPayload)
	for p > 4096 && 2*(bufSize(uint64(p))+reqMem) > avail {
		p /= 2
	}
	c.maxPayload = uint32(p)
	c.maxExtents = int(min(maxExtentsPerReply, max(64, avail/4/int64(max(1, contexts))/extentMem)))
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
		// The name may be a secret (a ticket): neither it nor the
		// reason, which Lookup may have written with it, goes in the
		// error that is logged.
		e, code, _ := c.lookup(ctx, string(data))
		if code != 0 {
			return false, fmt.Errorf("EXPORT_NAME refused (%#x)", code)
		}
		if err := c.enter(e); err != nil {
			release(e)
			return false, fmt.Errorf("EXPORT_NAME refused: %w", err)
		}
		c.limits(len(c.metaIDs))
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
		if err := c.mem.hold(tlsMem); err != nil {
			return false, c.optReply(opt, repErrTooBig, []byte(err.Error()))
		}
		if err := c.optReply(opt, repAck, nil); err != nil {
			return false, err
		}
		fc := newFlushConn(c.nc, tlsNegBuf)
		c.fc = fc
		tc := tls.Server(fc, c.s.o.TLSConfig)
		if err := tc.HandshakeContext(ctx); err != nil {
			return false, fmt.Errorf("TLS handshake: %w", err)
		}
		c.nc = tc
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
	if opt == optGo {
		// Admission comes before any reply, so that a refusal replaces
		// them.
		if err := c.enter(e); err != nil {
			return false, c.optReply(opt, repErrOf(err), []byte(err.Error()))
		}
		keep = true
		c.rebindContexts()
	}
	c.limits(len(c.metaIDs))
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
	binary.BigEndian.PutUint32(bs[8:], c.maxPayload)
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
	return opt == optGo, nil
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
