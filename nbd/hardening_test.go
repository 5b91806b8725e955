package nbd

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"maps"
	"net"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/vdisk-project/vdisk/disk"
	"github.com/vdisk-project/vdisk/disk/disktest"
)

// testClock is a clock tests move by hand.
type testClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *testClock) advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// serveTCP serves d as the only export on loopback TCP and returns the
// address and the server, shut down with the test.
func serveTCP(t testing.TB, d disk.Disk, o ServerOptions) (string, *Server) {
	t.Helper()
	exp := &Export{Name: "disk", Disk: d, ReadOnly: true}
	if o.Lookup == nil {
		o.Lookup = func(context.Context, string) (*Export, error) { return exp, nil }
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := NewServer(o)
	done := make(chan error, 1)
	go func() { done <- s.Serve(context.Background(), l) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-done; !errors.Is(err, ErrServerClosed) {
			t.Errorf("Serve = %v, want ErrServerClosed", err)
		}
	})
	return l.Addr().String(), s
}

// waitFor polls cond until it holds or 10 s pass.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func openFDs() int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return -1
	}
	return len(ents)
}

// rss reports the process's resident set, now and at its peak.
func rss() string {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return "rss unknown"
	}
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "VmHWM:") || strings.HasPrefix(l, "VmRSS:") {
			out = append(out, strings.Join(strings.Fields(l), " "))
		}
	}
	return strings.Join(out, ", ")
}

// TestStalledHandshakes opens many TCP connections that never negotiate,
// more than MaxNegotiating, and checks that a real client still connects
// and reads meanwhile: stalled sockets count neither against
// MaxConnections nor keep newcomers out once they are old.
func TestStalledHandshakes(t *testing.T) {
	n, limit := 1000, 100
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err == nil && rl.Cur < uint64(n+limit+200) {
		n = int(rl.Cur) - limit - 200 // still more than the cap
		if n <= limit {
			t.Skipf("RLIMIT_NOFILE %d is too low for %d stalled connections", rl.Cur, limit)
		}
	}
	d := disktest.NewMemDisk(8 << 20)
	d.WriteAt(bytes.Repeat([]byte{7}, 1<<20), 0)
	clock := &testClock{now: time.Now()}
	logs := &countHandler{msgs: map[string]int{}}
	addr, s := serveTCP(t, d, ServerOptions{MaxNegotiating: limit, MaxConnections: 1, Now: clock.Now, HandshakeTimeout: time.Minute, Logger: slog.New(logs)})
	fdsBefore := openFDs()
	var stalled []net.Conn
	defer func() {
		for _, c := range stalled {
			c.Close()
		}
	}()
	for range n {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		stalled = append(stalled, c)
	}
	waitFor(t, "every stalled connection to be accepted", func() bool {
		st := s.Stats()
		return st.Negotiating+int(st.Refused) == n
	})
	st := s.Stats()
	if st.Negotiating != limit {
		t.Errorf("%d connections negotiating, want the cap of %d", st.Negotiating, limit)
	}
	if st.Memory > s.NegotiationMemory() || st.Memory == 0 {
		t.Errorf("negotiating connections hold %d bytes, want some and at most NegotiationMemory %d", st.Memory, s.NegotiationMemory())
	}
	t.Logf("%d stalled connections: %d negotiating, %d closed at once; fds %d -> %d (both ends); %s",
		n, st.Negotiating, st.Refused, fdsBefore, openFDs(), rss())
	if got := logs.count("connections negotiating at the cap; refusing or evicting"); got != 1 {
		t.Errorf("the cap was logged %d times, want once", got)
	}

	// The stalled connections are older than a tenth of the handshake
	// timeout: a newcomer takes the place of the oldest.
	clock.advance(10 * time.Second)
	for i := range 3 {
		c, err := Dial(context.Background(), "nbd://"+addr+"/disk", &ClientOptions{Connections: 1, Timeout: 10 * time.Second})
		if err != nil {
			t.Fatalf("client %d with %d stalled connections: %v", i, n, err)
		}
		buf := make([]byte, 64<<10)
		if _, err := c.ReadAt(buf, 4096); err != nil || buf[0] != 7 || buf[len(buf)-1] != 7 {
			t.Fatalf("client %d read: %v, data %d", i, err, buf[0])
		}
		if st := s.Stats(); st.Connections != 1 || st.Negotiating > limit {
			t.Errorf("client %d: stats %+v, want 1 connection and at most %d negotiating", i, st, limit)
		}
		c.Close()
		waitFor(t, "the client's connection to end", func() bool { return s.Stats().Connections == 0 })
	}
	// The first client took the place of the oldest stalled connection;
	// the next ones found its slot free once it entered transmission.
	if st := s.Stats(); st.Negotiating != limit-1 {
		t.Errorf("%d negotiating after the clients, want %d", st.Negotiating, limit-1)
	}
}

// TestNegotiationDeadline: connections that stall before the handshake,
// in the middle of the options or in the TLS handshake are closed after
// HandshakeTimeout, and their slots are freed.
func TestNegotiationDeadline(t *testing.T) {
	cfg := writeCerts(t, t.TempDir())
	for _, tc := range []struct {
		name string
		send []byte
	}{
		{"silent", nil},
		{"mid-option", append([]byte{0, 0, 0, 3}, option(optList, nil)[:10]...)},
		{"in TLS handshake", append([]byte{0, 0, 0, 3}, option(optStartTLS, nil)...)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			addr, s := serveTCP(t, disktest.NewMemDisk(1<<20), ServerOptions{TLSConfig: cfg, HandshakeTimeout: 200 * time.Millisecond})
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.Write(tc.send)
			start := time.Now()
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			if _, err := io.Copy(io.Discard, c); err != nil {
				t.Fatalf("the server did not close a stalled connection: %v", err)
			}
			if el := time.Since(start); el > 5*time.Second {
				t.Errorf("closed after %v, want about 200ms", el)
			}
			waitFor(t, "the slot to be freed", func() bool { return s.Stats().Negotiating == 0 })
		})
	}
}

// flakyListener fails Accept with EMFILE a number of times, as a process
// out of file descriptors does, then works again.
type flakyListener struct {
	net.Listener
	fails atomic.Int32
}

func (l *flakyListener) Accept() (net.Conn, error) {
	if l.fails.Add(-1) >= 0 {
		return nil, &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", syscall.EMFILE)}
	}
	return l.Listener.Accept()
}

// countHandler counts log records by message.
type countHandler struct {
	mu   sync.Mutex
	msgs map[string]int
}

func (h *countHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *countHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	h.msgs[r.Message]++
	h.mu.Unlock()
	return nil
}
func (h *countHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *countHandler) WithGroup(string) slog.Handler      { return h }

func (h *countHandler) count(msg string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.msgs[msg]
}

// TestAcceptEMFILE: Accept failing with EMFILE (file descriptors
// exhausted) must not end Serve: it backs off, logs once and serves the
// next connection when descriptors are back.
func TestAcceptEMFILE(t *testing.T) {
	d := disktest.NewMemDisk(1 << 20)
	d.WriteAt([]byte{5}, 0)
	tl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := &flakyListener{Listener: tl}
	l.fails.Store(8) // backoff 5+10+20+...+640 ms: about 1.3 s of retries
	h := &countHandler{msgs: map[string]int{}}
	exp := &Export{Disk: d}
	s := NewServer(ServerOptions{Lookup: func(context.Context, string) (*Export, error) { return exp, nil }, Logger: slog.New(h)})
	served := make(chan error, 1)
	go func() { served <- s.Serve(context.Background(), l) }()
	c, err := Dial(context.Background(), "nbd://"+tl.Addr().String()+"/", &ClientOptions{Connections: 1, Timeout: 10 * time.Second})
	if err != nil {
		select {
		case err := <-served:
			t.Fatalf("Serve ended on EMFILE: %v", err)
		default:
		}
		t.Fatalf("dial after EMFILE: %v", err)
	}
	b := make([]byte, 512)
	if _, err := c.ReadAt(b, 0); err != nil || b[0] != 5 {
		t.Fatalf("read after EMFILE: %v, %d", err, b[0])
	}
	c.Close()
	if n := h.count("accept failed; retrying"); n != 1 {
		t.Errorf("%d log records for 8 accept failures, want 1", n)
	}
	if n := h.count("accepting again"); n != 1 {
		t.Errorf("%d recovery records, want 1", n)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s.Shutdown(ctx)
	if err := <-served; !errors.Is(err, ErrServerClosed) {
		t.Errorf("Serve = %v, want ErrServerClosed", err)
	}
}

// TestShutdownDuringBackoff: Shutdown ends Serve while it waits to retry.
func TestShutdownDuringBackoff(t *testing.T) {
	tl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := &flakyListener{Listener: tl}
	l.fails.Store(1 << 30)
	s := NewServer(ServerOptions{})
	served := make(chan error, 1)
	go func() { served <- s.Serve(context.Background(), l) }()
	waitFor(t, "accept retries", func() bool { return s.acceptRetries.Load() > 5 })
	s.Shutdown(context.Background())
	select {
	case err := <-served:
		if !errors.Is(err, ErrServerClosed) {
			t.Errorf("Serve = %v, want ErrServerClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve still running 5 s after Shutdown")
	}
}

// TestRefusalCodes: refusals at GO keep their meaning through the
// handshake: a connection limit is busy, a memory budget out of memory, a
// bad ticket a permission error.
func TestRefusalCodes(t *testing.T) {
	d := disktest.NewMemDisk(1 << 20)
	exp := &Export{Name: "disk", Disk: d}
	lookup := func(_ context.Context, name string) (*Export, error) {
		switch name {
		case "busy":
			return nil, disk.Errorf(disk.ErrBusy, "limit reached")
		case "oom":
			return nil, disk.Errorf(disk.ErrOutOfMemory, "budget exceeded")
		case "denied":
			return nil, disk.Errorf(disk.ErrPermission, "bad ticket")
		case "none":
			return nil, disk.Errorf(disk.ErrNotFound, "no such export")
		}
		return exp, nil
	}
	addr, _ := serveTCP(t, d, ServerOptions{Lookup: lookup, MaxConnections: 1})
	dial := func(name string) (*Client, error) {
		return Dial(context.Background(), "nbd://"+addr+"/"+name, &ClientOptions{Connections: 1, Timeout: 10 * time.Second})
	}
	for _, tc := range []struct {
		name string
		want disk.Code
	}{
		{"busy", disk.ErrBusy},
		{"oom", disk.ErrOutOfMemory},
		{"denied", disk.ErrPermission},
		{"none", disk.ErrNotFound},
	} {
		if _, err := dial(tc.name); disk.CodeOf(err) != tc.want {
			t.Errorf("export %q refused: %v (code %v), want %v", tc.name, err, disk.CodeOf(err), tc.want)
		}
	}
	c, err := dial("disk")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := dial("disk"); !errors.Is(err, disk.ErrBusy) {
		t.Errorf("second connection with MaxConnections 1: %v, want ErrBusy", err)
	}
}

// readReq encodes a compact READ request.
func readReq(cookie, off uint64, n uint32) []byte {
	req := make([]byte, 28)
	binary.BigEndian.PutUint32(req, magicRequest)
	binary.BigEndian.PutUint16(req[6:], cmdRead)
	binary.BigEndian.PutUint64(req[8:], cookie)
	binary.BigEndian.PutUint64(req[16:], off)
	binary.BigEndian.PutUint32(req[24:], n)
	return req
}

// negotiate completes a handshake on c with GO and returns the advertised
// maximum payload.
func negotiate(t testing.TB, c net.Conn) uint32 {
	t.Helper()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	var greet [18]byte
	if _, err := io.ReadFull(c, greet[:]); err != nil {
		t.Fatal(err)
	}
	c.Write([]byte{0, 0, 0, 3})
	return goDefault(t, c)
}

// goDefault sends GO for the default export, asking for the block sizes,
// and returns the advertised maximum payload.
func goDefault(t testing.TB, c net.Conn) uint32 {
	t.Helper()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	c.Write(option(optGo, []byte{0, 0, 0, 0, 0, 1, 0, infoBlockSize}))
	var maxPayload uint32
	for {
		_, typ, data, err := readReply(c)
		if err != nil {
			t.Fatal(err)
		}
		if typ == repAck {
			break
		}
		if typ != repInfo {
			t.Fatalf("GO: reply %#x %q", typ, data)
		}
		if binary.BigEndian.Uint16(data) == infoBlockSize {
			maxPayload = binary.BigEndian.Uint32(data[10:])
		}
	}
	c.SetDeadline(time.Time{})
	return maxPayload
}

// TestMemoryBudget: ten clients each send many large READs and do not read
// the replies for a while, the worst case for a server. Every buffer is
// reserved before it is allocated, so the bytes held stay within ten times
// ConnMemory, and the heap with them.
func TestMemoryBudget(t *testing.T) {
	const (
		clients    = 10
		connMemory = 4 << 20
		reads      = 32
	)
	d := &flatDisk{b: bytes.Repeat([]byte{3}, 64<<20)}
	addr, s := serveTCP(t, d, ServerOptions{ConnMemory: connMemory, Workers: 16})
	var peakHeap atomic.Uint64
	runtime.GC()
	runtime.GC() // and the buffer pools' victims
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	heapBefore := ms.HeapInuse
	peakHeap.Store(heapBefore)

	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		var m runtime.MemStats
		for {
			runtime.ReadMemStats(&m)
			if m.HeapInuse > peakHeap.Load() {
				peakHeap.Store(m.HeapInuse)
			}
			select {
			case <-stop:
				return
			case <-time.After(2 * time.Millisecond):
			}
		}
	}()

	var conns []net.Conn
	var maxPayload uint32
	for range clients {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		maxPayload = negotiate(t, c)
		conns = append(conns, c)
	}
	if maxPayload == 0 || int64(maxPayload) > connMemory/2 {
		t.Fatalf("advertised maximum payload %d with a connection budget of %d", maxPayload, connMemory)
	}
	// Each client asks for reads*maxPayload bytes (64 MiB) at once, and
	// reads nothing until all requests are out and the server has filled
	// what it may.
	for _, c := range conns {
		var reqs []byte
		for i := range reads {
			reqs = append(reqs, readReq(uint64(i), uint64(i)*uint64(maxPayload)%(60<<20), maxPayload)...)
		}
		go c.Write(reqs)
	}
	waitFor(t, "the server to fill its budgets", func() bool {
		return s.Stats().Memory > clients*(connMemory-int64(maxPayload)-reqMem)
	})
	held := s.Stats().Memory
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for _, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.SetReadDeadline(time.Now().Add(60 * time.Second))
			buf := make([]byte, 16+maxPayload)
			for range reads {
				if _, err := io.ReadFull(c, buf); err != nil {
					errs <- err
					return
				}
				if binary.BigEndian.Uint32(buf[4:]) != 0 || buf[16] != 3 || buf[len(buf)-1] != 3 {
					errs <- errors.New("bad reply")
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("client: %v", err)
	}
	close(stop)
	<-sampled
	st := s.Stats()
	peak := peakHeap.Load() - heapBefore
	t.Logf("%d clients x %d reads of %d KiB in flight: %d KiB held while stalled, reserved peak %d KiB (budget %d KiB), heap peak +%d KiB, fds %d, %s",
		clients, reads, maxPayload>>10, held>>10, st.MemoryPeak>>10, clients*connMemory>>10, peak>>10, openFDs(), rss())
	if st.MemoryPeak > clients*connMemory {
		t.Errorf("reserved peak %d bytes, over the budget of %d", st.MemoryPeak, clients*connMemory)
	}
	// The heap may also hold buffers returned to the pools and the
	// clients' own buffers; without the budget, it grows by clients ×
	// Workers × maxPayload (320 MiB) and more.
	if limit := uint64(2*clients*connMemory + 32<<20); peak > limit {
		t.Errorf("heap grew by %d bytes, want at most %d", peak, limit)
	}
	waitFor(t, "connections to release their memory", func() bool {
		for _, c := range conns {
			c.Close()
		}
		return s.Stats().Memory == 0
	})
}

// TestRequestTooBig: a READ or WRITE that cannot fit the connection's
// budget even when nothing else is held is refused with ENOMEM, and the
// connection stays in sync.
func TestRequestTooBig(t *testing.T) {
	d := &flatDisk{b: make([]byte, 8<<20)}
	exp := &Export{Disk: d}
	addr, _ := serveTCP(t, d, ServerOptions{ConnMemory: MinConnMemory, Lookup: func(context.Context, string) (*Export, error) { return exp, nil }})
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if m := negotiate(t, c); m > MinConnMemory/2 {
		t.Errorf("advertised maximum payload %d with a budget of %d", m, MinConnMemory)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	c.Write(readReq(1, 0, 2<<20))
	w := make([]byte, 28+2<<20)
	binary.BigEndian.PutUint32(w, magicRequest)
	binary.BigEndian.PutUint16(w[6:], cmdWrite)
	binary.BigEndian.PutUint64(w[8:], 2)
	binary.BigEndian.PutUint32(w[24:], 2<<20)
	go c.Write(append(w, readReq(3, 0, 4096)...))
	// Replies may come in any order.
	got := map[uint64]uint32{}
	for range 3 {
		var h [16]byte
		if _, err := io.ReadFull(c, h[:]); err != nil {
			t.Fatal(err)
		}
		e, ck := binary.BigEndian.Uint32(h[4:]), binary.BigEndian.Uint64(h[8:])
		got[ck] = e
		if ck == 3 && e == 0 {
			io.ReadFull(c, make([]byte, 4096))
		}
	}
	if want := map[uint64]uint32{1: errNoMem, 2: errNoMem, 3: 0}; !maps.Equal(got, want) {
		t.Errorf("errno by cookie %v, want %v (2 MiB READ, 2 MiB WRITE, 4 KiB READ)", got, want)
	}
}

// TestShutdownStuckClient: a client that sends requests and never reads a
// reply leaves a worker blocked writing, holding the reply lock. Shutdown
// must still end when its context does.
func TestShutdownStuckClient(t *testing.T) {
	d := &flatDisk{b: make([]byte, 64<<20)}
	exp := &Export{Disk: d}
	s := NewServer(ServerOptions{Lookup: func(context.Context, string) (*Export, error) { return exp, nil }})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve(context.Background(), l)
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	m := negotiate(t, c)
	var reqs []byte
	for i := range 64 {
		reqs = append(reqs, readReq(uint64(i), 0, m)...)
	}
	c.Write(reqs)
	waitFor(t, "the server to hold replies", func() bool { return s.Stats().Memory > 2*int64(m) })
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- s.Shutdown(ctx) }()
	select {
	case err := <-done:
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Shutdown = %v, want DeadlineExceeded (the client never read)", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Shutdown hangs on a client that does not read")
	}
}

// TestTLSMemory measures what a TLS connection costs once it has moved
// full-size records both ways, to check the tlsMem estimate the budget
// counts. Client and server share the process, so the figure is per pair:
// the server's side (ioMem+tlsMem) plus a client's TLS state, no larger
// than the server's.
func TestTLSMemory(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector changes allocation sizes")
	}
	cfg := writeCerts(t, t.TempDir())
	d := &flatDisk{b: make([]byte, 4<<20)}
	addr, s := serveTCP(t, d, ServerOptions{TLSConfig: cfg})
	const n = 40
	// Two collections empty the buffer pools (pooled, then victim), which
	// earlier tests may have filled.
	runtime.GC()
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	var conns []net.Conn
	for range n {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		io.ReadFull(c, make([]byte, 18))
		c.Write(append([]byte{0, 0, 0, 3}, option(optStartTLS, nil)...))
		if _, typ, _, err := readReply(c); err != nil || typ != repAck {
			t.Fatalf("STARTTLS: %#x %v", typ, err)
		}
		tc := tls.Client(c, &tls.Config{InsecureSkipVerify: true})
		m := goDefault(t, tc)
		tc.SetDeadline(time.Now().Add(10 * time.Second))
		m = min(m, 1<<20)
		tc.Write(readReq(1, 0, m))
		if _, err := io.ReadFull(tc, make([]byte, 16+int(m))); err != nil {
			t.Fatal(err)
		}
		conns = append(conns, tc)
	}
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&after)
	runtime.KeepAlive(conns)
	per := (int64(after.HeapInuse) - int64(before.HeapInuse)) / n
	st := s.Stats()
	t.Logf("a TLS connection pair holds %d KiB of heap after a full-size read; the server counts %d KiB per connection",
		per>>10, st.Memory/n>>10)
	xmit := int64(tlsSendBuf - tlsNegBuf) // the send buffer's growth in transmission
	if want := ioMem + 2*tlsMem + xmit; per > want || per <= 0 {
		t.Errorf("a TLS connection pair holds %d bytes, want some and at most the %d the estimate allows", per, want)
	}
	if st.Memory != n*(ioMem+tlsMem+xmit) {
		t.Errorf("the server counts %d bytes for %d idle TLS connections, want %d", st.Memory, n, n*(ioMem+tlsMem+xmit))
	}
}
