package server

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/vdisk-project/vdisk/disk"
	"github.com/vdisk-project/vdisk/internal/auth"
	"github.com/vdisk-project/vdisk/nbd"
)

// syncBuffer collects log output from many goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// emfileListener fails Accept with EMFILE a number of times, as a process
// out of file descriptors does, then works again.
type emfileListener struct {
	net.Listener
	fails atomic.Int32
}

func (l *emfileListener) Accept() (net.Conn, error) {
	if l.fails.Add(-1) >= 0 {
		return nil, &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", syscall.EMFILE)}
	}
	return l.Listener.Accept()
}

// TestServeEndsOnListenerFailure: when a listener fails for good, Serve
// shuts the host down and returns the error. It used to shut the API and
// NBD down and then wait forever for the ticket sweeper, which only
// stopped with Serve's context: the host stayed up, serving nothing.
func TestServeEndsOnListenerFailure(t *testing.T) {
	s, err := New(context.Background(), Config{DataDir: t.TempDir(), Listen: []string{"127.0.0.1:0"},
		NBDListen: []string{"127.0.0.1:0"}, AdminPassword: "correct horse battery", PasswordIterations: 1000})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Listen(); err != nil {
		t.Fatal(err)
	}
	s.listeners[1].Close() // the NBD listener: Accept fails with net.ErrClosed
	done := make(chan error, 1)
	go func() { done <- s.Serve(context.Background()) }()
	select {
	case err := <-done:
		if err == nil {
			t.Error("Serve returned nil after its NBD listener failed")
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Serve hangs after a listener failed")
	}
}

// TestNBDAcceptEMFILE: file descriptors running out (Accept failing with
// EMFILE) neither stops NBD nor takes the API down; both serve again when
// descriptors are back. It used to end NBD's accept loop, and with it the
// whole host.
func TestNBDAcceptEMFILE(t *testing.T) {
	var l *emfileListener
	h := startHostWrapped(t, func(i int, nl net.Listener) net.Listener {
		if i != 1 { // the NBD-over-TLS listener
			return nl
		}
		l = &emfileListener{Listener: nl}
		l.fails.Store(6)
		return l
	})
	h.must("POST", "/api/v1/disks", map[string]any{"name": "d", "capacity": 1 << 20}, nil)
	c := h.dial(h.ticket(TicketRequest{Disk: "d"}))
	if _, err := c.ReadAt(make([]byte, 512), 0); err != nil {
		t.Fatalf("read after EMFILE: %v", err)
	}
	c.Close()
	if l.fails.Load() >= 0 {
		t.Error("the listener never failed")
	}
	var hl map[string]any
	if st := h.doAs("", "GET", "/api/v1/health", nil, &hl); st != 200 {
		t.Errorf("health after EMFILE: %d", st)
	}
}

// startHostWrapped starts a host as startHost does, with its listeners
// (API, NBD over TLS) passed through wrap first.
func startHostWrapped(t *testing.T, wrap func(int, net.Listener) net.Listener) *testHost {
	t.Helper()
	cfg := Config{DataDir: t.TempDir(), Listen: []string{"127.0.0.1:0"}, NBDListen: []string{"127.0.0.1:0"},
		AdminPassword: "correct horse battery", PasswordIterations: 1000}
	s, err := New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Listen(); err != nil {
		t.Fatal(err)
	}
	for i, l := range s.listeners {
		s.listeners[i] = wrap(i, l)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	tc, err := auth.PinnedConfig(s.Thumbprint())
	if err != nil {
		t.Fatal(err)
	}
	api, _, _ := s.Addrs()
	h := &testHost{t: t, s: s, base: "https://" + api[0].String(),
		hc: &http.Client{Transport: &http.Transport{TLSClientConfig: tc}, Timeout: time.Minute}}
	t.Cleanup(h.hc.CloseIdleConnections)
	h.token = h.login("admin", "correct horse battery")
	return h
}

// TestNBDStalledConnections: hundreds of TCP connections to the NBD port
// that never negotiate, more than NBDMaxNegotiating, leave the API
// working and let a client with a ticket connect and read; closing them
// leaves the host as it was.
func TestNBDStalledConnections(t *testing.T) {
	const stalledN, limit = 500, 50
	const timeout = 10 * time.Second
	h := startHost(t, func(c *Config) { c.NBDMaxNegotiating = limit; c.NBDHandshakeTimeout = timeout })
	h.must("POST", "/api/v1/disks", map[string]any{"name": "d", "capacity": 1 << 20}, nil)
	_, nbdAddrs, _ := h.s.Addrs()
	start := time.Now()
	var stalled []net.Conn
	defer func() {
		for _, c := range stalled {
			c.Close()
		}
	}()
	for range stalledN {
		c, err := net.Dial("tcp", nbdAddrs[0].String())
		if err != nil {
			t.Fatal(err)
		}
		stalled = append(stalled, c)
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		st := h.s.nbd.Stats()
		if st.Negotiating+int(st.Refused) >= stalledN {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("stalled connections not all accepted: %+v", st)
		}
	}
	if st := h.s.nbd.Stats(); st.Negotiating > limit {
		t.Errorf("%d connections negotiating, over the cap of %d", st.Negotiating, limit)
	}
	var hl map[string]any
	if st := h.doAs("", "GET", "/api/v1/health", nil, &hl); st != 200 {
		t.Errorf("health with %d stalled NBD connections: %d", stalledN, st)
	}
	// The stalled connections are older than a tenth of the handshake
	// timeout after 1 s; a client then takes the oldest one's place, well
	// before the timeout would have closed them.
	tk := h.ticket(TicketRequest{Disk: "d"})
	var c *nbd.Client
	var err error
	for time.Since(start) < timeout {
		if c, err = nbd.Dial(context.Background(), tk.URI, &nbd.ClientOptions{Thumbprint: tk.Thumbprint, Connections: 1, Timeout: 10 * time.Second}); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil || time.Since(start) >= timeout {
		t.Fatalf("no client got in while %d stalled connections sat there: %v", stalledN, err)
	}
	if _, err := c.ReadAt(make([]byte, 4096), 0); err != nil {
		t.Errorf("read: %v", err)
	}
	c.Close()
	if st := h.s.nbd.Stats(); st.Negotiating < limit-1 {
		t.Errorf("%d connections negotiating after the client, want the stalled ones (%d) still there", st.Negotiating, limit-1)
	}
	t.Logf("client in after %v with %d stalled connections (%d negotiating); fds %d; %s", time.Since(start).Round(time.Millisecond), stalledN, h.s.nbd.Stats().Negotiating, openFDs(), rss())
}

func openFDs() int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return -1
	}
	return len(ents)
}

// TestNBDRefusals: a host at its connection limit or out of memory
// refuses GO with codes the client maps back to ErrBusy and
// ErrOutOfMemory (not permission errors), and neither GO nor EXPORT_NAME
// refusals log the ticket.
func TestNBDRefusals(t *testing.T) {
	logs := &syncBuffer{}
	const connMem = 1 << 20
	var busy, oom Ticket
	h := startHost(t, func(c *Config) {
		c.PlainNBDListen = []string{"127.0.0.1:0"}
		c.NBDMaxNegotiating = 4
		c.ConnMemory = connMem
		c.Limits.DiskConns = 1
		// The budget holds both servers' negotiation buffers and two
		// connections, not three.
		c.Limits.Memory = 4*nbd.NegotiationMemory + 4*(nbd.NegotiationMemory-128<<10) + 2*connMem + connMem/2
		c.Logger = slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	})
	h.must("POST", "/api/v1/disks", map[string]any{"name": "a", "capacity": 1 << 20}, nil)
	h.must("POST", "/api/v1/disks", map[string]any{"name": "b", "capacity": 1 << 20}, nil)
	h.must("POST", "/api/v1/disks", map[string]any{"name": "c", "capacity": 1 << 20}, nil)
	busy = h.ticket(TicketRequest{Disk: "a", MaxConns: 4})
	a := h.dial(busy)
	defer a.Close()
	b := h.dial(h.ticket(TicketRequest{Disk: "b"}))
	defer b.Close()

	_, err := nbd.Dial(context.Background(), busy.URI, &nbd.ClientOptions{Thumbprint: busy.Thumbprint, Connections: 1})
	if !errors.Is(err, disk.ErrBusy) {
		t.Errorf("second connection to a disk limited to one: %v, want ErrBusy", err)
	}
	oom = h.ticket(TicketRequest{Disk: "c"})
	_, err = nbd.Dial(context.Background(), oom.URI, &nbd.ClientOptions{Thumbprint: oom.Thumbprint, Connections: 1})
	if !errors.Is(err, disk.ErrOutOfMemory) {
		t.Errorf("connection past the memory budget: %v, want ErrOutOfMemory", err)
	}
	if conns, mem := h.s.limiter.Usage(); conns != 2 || mem > h.s.cfg.Limits.Memory {
		t.Errorf("limiter: %d connections, %d bytes; want 2 and at most %d", conns, mem, h.s.cfg.Limits.Memory)
	}

	// EXPORT_NAME (old clients, the kernel's nbd-client) on the plain
	// port: a refusal is a hard disconnect, and nothing logs the ticket.
	_, _, plain := h.s.Addrs()
	for _, name := range []string{busy.Ticket, "not-a-ticket-" + strings.Repeat("x", 20)} {
		c, err := net.Dial("tcp", plain[0].String())
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		io.ReadFull(c, make([]byte, 18))
		opt := make([]byte, 20+len(name))
		binary.BigEndian.PutUint32(opt, 3)
		binary.BigEndian.PutUint64(opt[4:], 0x49484156454F5054)
		binary.BigEndian.PutUint32(opt[12:], 1) // EXPORT_NAME
		binary.BigEndian.PutUint32(opt[16:], uint32(len(name)))
		copy(opt[20:], name)
		c.Write(opt)
		if n, _ := io.Copy(io.Discard, c); n != 0 {
			t.Errorf("EXPORT_NAME refused, yet %d bytes came back", n)
		}
		c.Close()
	}
	for deadline := time.Now().Add(5 * time.Second); !strings.Contains(logs.String(), "handshake ended") && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
	out := logs.String()
	for _, secret := range []string{busy.Ticket, oom.Ticket, "not-a-ticket-"} {
		if strings.Contains(out, secret) {
			t.Errorf("the log shows a ticket (%.12s…):\n%s", secret, out)
		}
	}
	if !strings.Contains(out, "ticket_sha256") {
		t.Errorf("refusals are not logged with a ticket hash:\n%s", out)
	}
}

// TestNBDMemory: ten read-only clients with large reads in flight hold no
// more than what the host budget counts for them (ConnMemory each).
func TestNBDMemory(t *testing.T) {
	const clients, connMem = 10, 4 << 20
	h := startHost(t, func(c *Config) { c.ConnMemory = connMem })
	h.must("POST", "/api/v1/disks", map[string]any{"name": "big", "capacity": 64 << 20}, nil)
	w := h.dial(h.ticket(TicketRequest{Disk: "big", Mode: "rw"}))
	if _, err := w.WriteAt(bytes.Repeat([]byte{6}, 64<<20), 0); err != nil {
		t.Fatal(err)
	}
	w.Close()
	slab := h.s.nbd.NegotiationMemory()
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
	var wg sync.WaitGroup
	var maxReserved atomic.Int64
	errs := make(chan error, clients)
	for range clients {
		tk := h.ticket(TicketRequest{Disk: "big"})
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := nbd.Dial(context.Background(), tk.URI, &nbd.ClientOptions{Thumbprint: tk.Thumbprint, Connections: 1, Timeout: time.Minute})
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			// 8 MiB reads: the client splits each into requests of the
			// advertised maximum, all in flight at once.
			buf := make([]byte, 8<<20)
			for i := range 8 {
				if _, err := c.ReadAt(buf, int64(i)*8<<20); err != nil {
					errs <- err
					return
				}
				if buf[0] != 6 || buf[len(buf)-1] != 6 {
					errs <- errors.New("bad data")
					return
				}
				_, mem := h.s.limiter.Usage()
				for m := maxReserved.Load(); mem > m && !maxReserved.CompareAndSwap(m, mem); m = maxReserved.Load() {
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	close(stop)
	<-sampled
	st := h.s.nbd.Stats()
	t.Logf("%d clients reading 64 MiB each in 8 MiB calls: NBD buffers peak %d KiB; host budget reserved up to %d KiB (negotiation %d KiB + %d x %d KiB); heap peak +%d KiB (clients' buffers included); %s",
		clients, st.MemoryPeak>>10, maxReserved.Load()>>10, slab>>10, clients, connMem>>10, (peakHeap.Load()-heapBefore)>>10, rss())
	if st.MemoryPeak > clients*connMem {
		t.Errorf("NBD buffers peaked at %d bytes, over %d counted by the budget", st.MemoryPeak, clients*connMem)
	}
	if got := maxReserved.Load(); got > slab+clients*connMem {
		t.Errorf("the budget counted %d bytes, want at most %d", got, slab+clients*connMem)
	}
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
