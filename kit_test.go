package vdisk_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vdisk-project/vdisk"
	"github.com/vdisk-project/vdisk/disk"
	"github.com/vdisk-project/vdisk/disk/disktest"
	"github.com/vdisk-project/vdisk/internal/auth"
	"github.com/vdisk-project/vdisk/server"
	"github.com/vdisk-project/vdisk/server/servertest"
)

const pw = servertest.Password

// host is an in-process vdisk host for kit tests.
type host struct {
	s      *server.Server
	params vdisk.ConnectParams
}

func startHost(t *testing.T, mod func(*server.Config)) *host {
	t.Helper()
	h := servertest.New(t, func(c *server.Config) {
		c.PlainNBDListen = []string{"127.0.0.1:0"}
		if mod != nil {
			mod(c)
		}
	})
	return &host{s: h.Server, params: vdisk.ConnectParams{Server: h.API, User: "admin", Password: servertest.Password, Thumbprint: h.Thumbprint}}
}

func (h *host) connect(t *testing.T, transports string) *vdisk.Conn {
	t.Helper()
	p := h.params
	p.Transports = transports
	c, err := vdisk.Connect(context.Background(), p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestConformance runs the disk conformance suite over every transport.
func TestConformance(t *testing.T) {
	h := startHost(t, nil)
	var n atomic.Int64
	for _, mode := range []string{vdisk.ModeFile, vdisk.ModeNBDSSL, vdisk.ModeNBD, vdisk.ModeDirect} {
		t.Run(mode, func(t *testing.T) {
			var c *vdisk.Conn
			if mode == vdisk.ModeFile {
				var err error
				if c, err = vdisk.Connect(context.Background(), vdisk.ConnectParams{}); err != nil {
					t.Fatal(err)
				}
			} else {
				c = h.connect(t, mode)
			}
			disktest.RunTests(t, disktest.Harness{New: func(t *testing.T, size int64) disk.Disk {
				ctx := context.Background()
				spec := vdisk.Spec{Disk: fmt.Sprintf("conf%d", n.Add(1))}
				if mode == vdisk.ModeFile {
					spec = vdisk.Spec{Path: filepath.Join(t.TempDir(), "d.vmdk")}
				}
				if err := c.Create(ctx, spec, vdisk.CreateParams{Capacity: size}); err != nil {
					t.Fatal(err)
				}
				d, err := c.Open(ctx, spec, 0)
				if err != nil {
					t.Fatal(err)
				}
				if d.TransportMode() != mode {
					t.Fatalf("opened with %s, want %s", d.TransportMode(), mode)
				}
				return d
			}})
		})
	}
}

// TestTransportChoice: a mode list falls back, reports why modes were
// skipped, and never picks a mode silently.
func TestTransportChoice(t *testing.T) {
	ctx := context.Background()
	h := startHost(t, nil)
	c := h.connect(t, "file:direct:nbdssl")
	if err := c.Create(ctx, vdisk.Spec{Disk: "a"}, vdisk.CreateParams{Capacity: 1 << 20}); err != nil {
		t.Fatal(err)
	}
	// Reading the live disk: direct needs a snapshot, so nbdssl is used.
	d, err := c.Open(ctx, vdisk.Spec{Disk: "a"}, vdisk.OpenReadOnly)
	if err != nil {
		t.Fatal(err)
	}
	at := d.Attempts()
	if d.TransportMode() != vdisk.ModeNBDSSL || len(at) != 3 || at[0].Err == nil || at[1].Err == nil || at[2].Err != nil {
		t.Errorf("mode %s, attempts %v; want nbdssl after skipping file and direct", d.TransportMode(), at)
	}
	d.Close()
	// A snapshot is read directly (this machine reaches the datastore).
	sn, err := c.CreateSnapshot(ctx, vdisk.Spec{Disk: "a"}, "s", true)
	if err != nil {
		t.Fatal(err)
	}
	d, err = c.Open(ctx, vdisk.Spec{Disk: "a", Snapshot: sn.ID}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if d.TransportMode() != vdisk.ModeDirect || !d.ReadOnly() {
		t.Errorf("snapshot opened with %s (read-only %v), want direct read-only", d.TransportMode(), d.ReadOnly())
	}
	d.Close()
	// Plain NBD refused when the host does not serve it.
	h2 := startHost(t, func(c *server.Config) { c.PlainNBDListen = nil })
	c2 := h2.connect(t, "nbd")
	c2.Create(ctx, vdisk.Spec{Disk: "b"}, vdisk.CreateParams{Capacity: 1 << 20})
	if _, err := c2.Open(ctx, vdisk.Spec{Disk: "b"}, 0); !errors.Is(err, vdisk.ErrNotSupported) {
		t.Errorf("plain NBD from a host without it: %v, want ErrNotSupported", err)
	}
	if _, err := vdisk.Connect(ctx, vdisk.ConnectParams{Server: h.params.Server, User: "admin", Password: pw}); !errors.Is(err, vdisk.ErrInvalid) {
		t.Errorf("connect without a thumbprint: %v, want ErrInvalid", err)
	}
	if _, err := vdisk.Connect(ctx, vdisk.ConnectParams{Transports: "san"}); !errors.Is(err, vdisk.ErrInvalid) {
		t.Errorf("unknown mode: %v, want ErrInvalid", err)
	}
	bad := h.params
	bad.Password = "wrong password!"
	if _, err := vdisk.Connect(ctx, bad); !errors.Is(err, vdisk.ErrPermission) {
		t.Errorf("wrong password: %v, want ErrPermission", err)
	}
}

// TestVixSurface exercises the per-handle calls on every transport:
// async I/O, allocated blocks, changed areas, info and metadata.
func TestVixSurface(t *testing.T) {
	ctx := context.Background()
	h := startHost(t, nil)
	c := h.connect(t, "nbdssl")
	if err := c.Create(ctx, vdisk.Spec{VM: "vm1", Key: "scsi0:0"}, vdisk.CreateParams{Capacity: 64 << 20, CBT: true}); err == nil {
		t.Fatal("creating a disk in a VM that does not exist succeeded")
	}
	if err := c.Create(ctx, vdisk.Spec{Disk: "s"}, vdisk.CreateParams{Capacity: 64 << 20, CBT: true}); err != nil {
		t.Fatal(err)
	}
	d, err := c.Open(ctx, vdisk.Spec{Disk: "s"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	// Async writes of 1 MiB at every 8 MiB, then Wait.
	var fs []*vdisk.Future
	for i := range 8 {
		fs = append(fs, d.WriteAsync(bytes.Repeat([]byte{byte(i + 1)}, 1<<20), int64(i)*8<<20))
	}
	if err := d.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	for _, f := range fs {
		if err := f.Wait(ctx); err != nil {
			t.Fatal(err)
		}
	}
	got := make([]byte, 1<<20)
	if err := d.ReadAsync(got, 3*8<<20).Wait(ctx); err != nil || got[0] != 4 || got[len(got)-1] != 4 {
		t.Errorf("async read back: %v, byte %d", err, got[0])
	}
	blocks, err := d.QueryAllocatedBlocks(ctx, 0, 64<<20, 1<<20)
	if err != nil || len(blocks) != 8 || blocks[1] != (vdisk.Block{Offset: 8 << 20, Length: 1 << 20}) {
		t.Errorf("allocated blocks %v, %v; want 8 blocks of 1 MiB every 8 MiB", blocks, err)
	}
	if _, err := d.QueryAllocatedBlocks(ctx, 0, 64<<20, 4096); !errors.Is(err, vdisk.ErrInvalid) {
		t.Errorf("a 4 KiB chunk: %v, want ErrInvalid", err)
	}
	if err := d.SetMetadata(ctx, "vdisk.test", "yes"); err != nil {
		t.Fatal(err)
	}
	if v, err := d.Metadata(ctx, "vdisk.test"); err != nil || v != "yes" {
		t.Errorf("metadata: %q %v", v, err)
	}
	if v, err := d.Metadata(ctx, "adapterType"); err != nil || v != "lsilogic" {
		t.Errorf("adapterType: %q %v", v, err)
	}
	if _, err := d.Metadata(ctx, "nope"); !errors.Is(err, vdisk.ErrNotFound) {
		t.Errorf("unknown key: %v", err)
	}
	in, err := d.Info(ctx)
	if err != nil || in.Capacity != 64<<20 || in.Adapter != "lsilogic" || in.Geometry.Heads == 0 || in.UUID == "" {
		t.Errorf("info %+v, %v", in, err)
	}
	d.Close()
	// Changed areas between two snapshots, read on the snapshot.
	s1, err := c.CreateSnapshot(ctx, vdisk.Spec{Disk: "s"}, "one", false)
	if err != nil {
		t.Fatal(err)
	}
	cid, err := c.ChangeID(ctx, vdisk.Spec{Disk: "s"}, s1.ID)
	if err != nil {
		t.Fatal(err)
	}
	d, _ = c.Open(ctx, vdisk.Spec{Disk: "s"}, 0)
	d.WriteAt(bytes.Repeat([]byte{9}, 64<<10), 40<<20)
	d.Close()
	s2, _ := c.CreateSnapshot(ctx, vdisk.Spec{Disk: "s"}, "two", false)
	r, err := c.Open(ctx, vdisk.Spec{Disk: "s", Snapshot: s2.ID}, 0)
	if err != nil {
		t.Fatal(err)
	}
	var areas []vdisk.Area
	if _, err := r.ChangedAreas(ctx, cid, 0, func(a vdisk.Area) error { areas = append(areas, a); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(areas) != 1 || areas[0].Start != 40<<20 || areas[0].Length != 64<<10 {
		t.Errorf("changed areas %+v, want one of 64 KiB at 40 MiB", areas)
	}
	if _, err := r.WriteAt([]byte{1}, 0); !errors.Is(err, vdisk.ErrPermission) {
		t.Errorf("writing a snapshot: %v, want ErrPermission", err)
	}
	r.Close()
	if err := c.RemoveSnapshot(ctx, vdisk.Spec{Disk: "s"}, s1.ID); err != nil {
		t.Fatal(err)
	}
	if err := c.RemoveSnapshot(ctx, vdisk.Spec{Disk: "s"}, s2.ID); err != nil {
		t.Fatal(err)
	}
	if err := c.Grow(ctx, vdisk.Spec{Disk: "s"}, 128<<20); err != nil {
		t.Fatal(err)
	}
}

// TestCloneThin clones local → host → local and checks the data and that
// thin stays thin.
func TestCloneThin(t *testing.T) {
	ctx := context.Background()
	h := startHost(t, nil)
	remote := h.connect(t, "nbdssl")
	local, _ := vdisk.Connect(ctx, vdisk.ConnectParams{})
	dir := t.TempDir()
	src := vdisk.Spec{Path: filepath.Join(dir, "src.vmdk")}
	if err := local.Create(ctx, src, vdisk.CreateParams{Capacity: 256 << 20}); err != nil {
		t.Fatal(err)
	}
	d, _ := local.Open(ctx, src, 0)
	rng := rand.New(rand.NewPCG(1, 2))
	for range 16 {
		p := make([]byte, 64<<10)
		for i := range p {
			p[i] = byte(rng.Uint32())
		}
		d.WriteAt(p, rng.Int64N(256<<20/(64<<10))*64<<10)
	}
	d.Close()
	st, err := vdisk.Clone(ctx, remote, vdisk.Spec{Disk: "copy"}, local, src, nil)
	if err != nil {
		t.Fatal(err)
	}
	if st.Written > 16*64<<10 {
		t.Errorf("clone to the host wrote %d bytes for 1 MiB of data", st.Written)
	}
	back := vdisk.Spec{Path: filepath.Join(dir, "back.vmdk")}
	if _, err := vdisk.Clone(ctx, local, back, remote, vdisk.Spec{Disk: "copy"}, nil); err != nil {
		t.Fatal(err)
	}
	a, _ := local.Open(ctx, src, vdisk.OpenReadOnly)
	b, _ := local.Open(ctx, back, vdisk.OpenReadOnly)
	defer a.Close()
	defer b.Close()
	if off, err := disk.Compare(ctx, a, b, nil); err != nil || off >= 0 {
		t.Errorf("the round trip differs at %d (%v)", off, err)
	}
	blocks, _ := b.QueryAllocatedBlocks(ctx, 0, 256<<20, 64<<10)
	var n int64
	for _, bl := range blocks {
		n += bl.Length
	}
	if n > 16*64<<10 {
		t.Errorf("the copy back holds %d allocated bytes for 1 MiB of data: not thin", n)
	}
}

// proxy forwards TCP connections and can stall or cut them.
type proxy struct {
	l      net.Listener
	target string
	mu     sync.Mutex
	conns  []net.Conn
	stall  atomic.Bool
}

func newProxy(t *testing.T, target string) *proxy {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{l: l, target: target}
	t.Cleanup(func() { l.Close(); p.cut() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, s)
			p.mu.Unlock()
			go p.pipe(c, s)
			go p.pipe(s, c)
		}
	}()
	return p
}

func (p *proxy) pipe(dst, src net.Conn) {
	buf := make([]byte, 64<<10)
	for {
		n, err := src.Read(buf)
		for p.stall.Load() {
			time.Sleep(5 * time.Millisecond)
		}
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			dst.Close()
			return
		}
	}
}

func (p *proxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

// TestFaults: a stalled network gives a timeout within the bound; a cut
// connection mid-copy is resumed without corrupting data; a busy disk is
// retried, then reported.
func TestFaults(t *testing.T) {
	ctx := context.Background()
	// The host's tickets point at a proxy in front of its NBD port.
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	nbdAddr := l.Addr().String()
	l.Close()
	px := newProxy(t, nbdAddr)
	h := startHost(t, func(c *server.Config) {
		c.Limits = auth.Limits{DiskConns: 2}
		c.NBDListen = []string{nbdAddr}
		c.NBDAdvertise = px.l.Addr().String()
	})
	const timeout = 2 * time.Second
	p := h.params
	p.Transports = "nbdssl"
	p.Config = &vdisk.Config{Timeout: 20 * time.Second, Retries: 5, NBDConnections: 1}
	c, err := vdisk.Connect(ctx, p)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Create(ctx, vdisk.Spec{Disk: "f"}, vdisk.CreateParams{Capacity: 32 << 20})
	d, err := c.Open(ctx, vdisk.Spec{Disk: "f"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	data := make([]byte, 32<<20)
	rng := rand.New(rand.NewPCG(5, 5))
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	if _, err := d.WriteAt(data, 0); err != nil {
		t.Fatal(err)
	}

	t.Run("cut mid-copy", func(t *testing.T) {
		dst := disktest.NewMemDisk(32 << 20)
		var once sync.Once
		_, err := disk.Copy(ctx, dst, d, &disk.CopyOptions{Workers: 2, Progress: func(done, total int64) {
			if done > total/3 {
				once.Do(px.cut)
			}
		}})
		if err != nil {
			t.Fatalf("copy across a dropped connection: %v", err)
		}
		got := make([]byte, 32<<20)
		dst.ReadAt(got, 0)
		if !bytes.Equal(got, data) {
			t.Error("the copy across a dropped connection differs")
		}
	})
	t.Run("stall", func(t *testing.T) {
		// A tight bound here; the other subtests use a roomy one so that
		// reconnecting under -race fits in it.
		p := p
		p.Config = &vdisk.Config{Timeout: timeout, Retries: 3, NBDConnections: 1}
		c, err := vdisk.Connect(ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		d, err := c.Open(ctx, vdisk.Spec{Disk: "f"}, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		px.stall.Store(true)
		defer px.stall.Store(false)
		start := time.Now()
		_, err = d.ReadAt(make([]byte, 4096), 0)
		el := time.Since(start)
		if err == nil {
			t.Fatal("a read through a stalled network succeeded")
		}
		if el > 2*timeout+time.Second {
			t.Errorf("a stalled read returned after %v; the bound is %v", el, timeout)
		}
		t.Logf("stalled read: %v after %v", err, el.Round(time.Millisecond))
	})
	d.Close()
	t.Run("busy", func(t *testing.T) {
		px.cut()
		// Two connections fill the disk's limit; a third open retries and
		// then reports busy; freed in time, it succeeds.
		a, err := c.Open(ctx, vdisk.Spec{Disk: "f"}, vdisk.OpenReadOnly)
		if err != nil {
			t.Fatal(err)
		}
		b, err := c.Open(ctx, vdisk.Spec{Disk: "f"}, vdisk.OpenReadOnly)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Open(ctx, vdisk.Spec{Disk: "f"}, vdisk.OpenReadOnly); err == nil {
			t.Error("a third connection over the limit opened")
		}
		time.AfterFunc(200*time.Millisecond, func() { a.Close() })
		x, err := c.Open(ctx, vdisk.Spec{Disk: "f"}, vdisk.OpenReadOnly)
		if err != nil {
			t.Errorf("an open retried while a slot freed: %v", err)
		} else {
			x.Close()
		}
		b.Close()
	})
}

// TestNoGoroutineLeftBehind: after Close nothing the kit started runs.
func TestNoGoroutineLeftBehind(t *testing.T) {
	ctx := context.Background()
	h := startHost(t, nil)
	c0 := h.connect(t, "nbdssl")
	c0.Create(ctx, vdisk.Spec{Disk: "g"}, vdisk.CreateParams{Capacity: 1 << 20})
	before := runtime.NumGoroutine()
	for _, mode := range []string{"nbdssl", "nbd"} {
		p := h.params
		p.Transports = mode
		c, err := vdisk.Connect(ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		d, err := c.Open(ctx, vdisk.Spec{Disk: "g"}, 0)
		if err != nil {
			t.Fatal(err)
		}
		d.WriteAsync(make([]byte, 4096), 0)
		d.ReadAsync(make([]byte, 4096), 4096)
		if err := c.Close(); err != nil { // closes d too
			t.Fatal(err)
		}
	}
	// Server-side goroutines of the closed connections end asynchronously.
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		buf := make([]byte, 1<<20)
		t.Errorf("%d goroutines after Close, %d before:\n%s", n, before, buf[:runtime.Stack(buf, true)])
	}
}

// TestIPv6 connects to a host listening on [::1].
func TestIPv6(t *testing.T) {
	if l, err := net.Listen("tcp", "[::1]:0"); err != nil {
		t.Skip("no IPv6 loopback here")
	} else {
		l.Close()
	}
	ctx := context.Background()
	h := startHost(t, func(c *server.Config) {
		c.Listen, c.NBDListen, c.PlainNBDListen = []string{"[::1]:0"}, []string{"[::1]:0"}, nil
	})
	c := h.connect(t, "nbdssl")
	if err := c.Create(ctx, vdisk.Spec{Disk: "v6"}, vdisk.CreateParams{Capacity: 1 << 20}); err != nil {
		t.Fatal(err)
	}
	d, err := c.Open(ctx, vdisk.Spec{Disk: "v6"}, 0)
	if err != nil {
		t.Fatalf("open over IPv6 (%s): %v", h.params.Server, err)
	}
	if _, err := d.WriteAt([]byte("v6"), 0); err != nil {
		t.Fatal(err)
	}
	d.Close()
}

// TestCleanupAfterCrash: a client "crashes" holding a lease and a
// temporary snapshot; its successor's Cleanup removes both.
func TestCleanupAfterCrash(t *testing.T) {
	ctx := context.Background()
	h := startHost(t, nil)
	crashed := h.connect(t, "nbdssl")
	crashed.Create(ctx, vdisk.Spec{Disk: "c"}, vdisk.CreateParams{Capacity: 1 << 20})
	if _, err := crashed.PrepareForAccess(ctx, vdisk.Spec{Disk: "c"}, "job 1"); err != nil {
		t.Fatal(err)
	}
	if _, err := crashed.CreateSnapshot(ctx, vdisk.Spec{Disk: "c"}, "tmp", true); err != nil {
		t.Fatal(err)
	}
	// The process dies without Close, EndAccess or RemoveSnapshot.
	next := h.connect(t, "nbdssl")
	rep, err := next.Cleanup(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	// The lease ends with the session Cleanup ends (the host ends a
	// session's leases with it); the snapshot is Cleanup's to remove.
	if len(rep.Snapshots) != 1 {
		t.Errorf("cleanup removed %+v; want the snapshot", rep)
	}
	in, _ := next.Disk(ctx, vdisk.Spec{Disk: "c"})
	if len(in.Snapshots) != 0 || len(in.Leases) != 0 {
		t.Errorf("left behind: %d snapshots, %d leases", len(in.Snapshots), len(in.Leases))
	}
}

// TestPlainModeIsPlain: the nbd mode uses the host's plain listener and
// nbdssl its TLS one (tickets advertise a dead TLS address here, so only
// a plain connection can work).
func TestPlainModeIsPlain(t *testing.T) {
	ctx := context.Background()
	h := startHost(t, func(c *server.Config) { c.NBDAdvertise = "127.0.0.1:1" })
	c := h.connect(t, "nbd")
	c.Create(ctx, vdisk.Spec{Disk: "p"}, vdisk.CreateParams{Capacity: 1 << 20})
	d, err := c.Open(ctx, vdisk.Spec{Disk: "p"}, 0)
	if err != nil {
		t.Fatalf("plain nbd: %v", err)
	}
	d.Close()
	c2 := h.connect(t, "nbdssl")
	if d, err := c2.Open(ctx, vdisk.Spec{Disk: "p"}, 0); err == nil {
		d.Close()
		t.Error("nbdssl opened through a dead TLS address: it did not use TLS's listener")
	}
}

// TestHandleRevokesTickets: each handle opened over NBD takes a ticket;
// closing it revokes the ticket, so a session can open and close handles
// far more times than its ticket limit (here 4).
func TestHandleRevokesTickets(t *testing.T) {
	h := startHost(t, func(c *server.Config) { c.Sessions.MaxTickets = 4 })
	c := h.connect(t, vdisk.ModeNBDSSL)
	ctx := context.Background()
	spec := vdisk.Spec{Disk: "tk"}
	if err := c.Create(ctx, spec, vdisk.CreateParams{Capacity: 1 << 20}); err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		d, err := c.Open(ctx, spec, vdisk.OpenReadOnly)
		if err != nil {
			t.Fatalf("open %d: %v", i, err)
		}
		if _, err := d.ReadAt(make([]byte, 4096), 0); err != nil {
			t.Fatal(err)
		}
		if err := d.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// TestOpenErrorCodes: an open that fails keeps the code of the failure
// that mattered, whatever mode was tried last or first: a missing disk is
// not found (not "not supported" from a mode that did not apply), and
// creating a disk that exists is invalid, not busy.
func TestOpenErrorCodes(t *testing.T) {
	h := startHost(t, nil)
	c := h.connect(t, "file:direct:nbdssl")
	ctx := context.Background()
	if _, err := c.Open(ctx, vdisk.Spec{Disk: "missing"}, 0); disk.CodeOf(err) != disk.ErrNotFound {
		t.Errorf("open of a missing disk: code %v (%v), want ErrNotFound", disk.CodeOf(err), err)
	}
	spec := vdisk.Spec{Disk: "twice"}
	if err := c.Create(ctx, spec, vdisk.CreateParams{Capacity: 1 << 20}); err != nil {
		t.Fatal(err)
	}
	if err := c.Create(ctx, spec, vdisk.CreateParams{Capacity: 1 << 20}); disk.CodeOf(err) != disk.ErrInvalid {
		t.Errorf("creating a disk that exists: code %v (%v), want ErrInvalid", disk.CodeOf(err), err)
	}
}

// TestCloseEndsOwnSession connects with the password, again and again,
// more times than the user may hold sessions: each Close ends its
// session, so no Connect is refused. A session whose token was taken
// outlives Close and still connects; one given as a token is the
// caller's and outlives Close too.
func TestCloseEndsOwnSession(t *testing.T) {
	ctx := context.Background()
	h := startHost(t, func(c *server.Config) { c.Sessions.MaxUserSessions = 4; c.Sessions.AdminSessions = 0 })
	for i := range 12 {
		c, err := vdisk.Connect(ctx, h.params)
		if err != nil {
			t.Fatalf("connect %d: %v", i, err)
		}
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
	}
	c, err := vdisk.Connect(ctx, h.params)
	if err != nil {
		t.Fatal(err)
	}
	tok := c.Token()
	c.Close()
	p := h.params
	p.User, p.Password, p.Token = "", "", tok
	for range 2 {
		c2, err := vdisk.Connect(ctx, p)
		if err != nil {
			t.Fatalf("the saved token no longer connects after Close: %v", err)
		}
		c2.Close()
	}
	// The kept session counts: three more password sessions fit, not four.
	var open []*vdisk.Conn
	defer func() {
		for _, c := range open {
			c.Close()
		}
	}()
	for range 3 {
		c, err := vdisk.Connect(ctx, h.params)
		if err != nil {
			t.Fatal(err)
		}
		open = append(open, c)
	}
	if c, err := vdisk.Connect(ctx, h.params); err == nil {
		c.Close()
		t.Fatal("a fifth session was allowed: the limit did not apply, so this test shows nothing")
	}
}

// TestIdleSessionWithTransfer reads a disk over NBD, with no API call,
// for longer than the host's session idle timeout, while the host cleans
// up expired sessions: a session whose tickets carry live NBD connections
// is in use, so the transfer goes on (the host would otherwise end the
// session and close its connections mid-backup).
func TestIdleSessionWithTransfer(t *testing.T) {
	ctx := context.Background()
	h := startHost(t, func(c *server.Config) { c.Sessions.IdleTimeout = 500 * time.Millisecond })
	admin := h.connect(t, "nbdssl")
	spec := vdisk.Spec{Disk: "long"}
	if err := admin.Create(ctx, spec, vdisk.CreateParams{Capacity: 16 << 20}); err != nil {
		t.Fatal(err)
	}
	c := h.connect(t, "nbdssl")
	d, err := c.Open(ctx, spec, vdisk.OpenReadOnly)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	buf := make([]byte, 1<<20)
	deadline := time.Now().Add(2 * time.Second)
	for i := 0; time.Now().Before(deadline); i++ {
		if _, err := d.ReadAt(buf, int64(i%16)<<20); err != nil {
			t.Fatalf("read %d, %v into the transfer: %v", i, time.Until(deadline), err)
		}
		if i%20 == 0 {
			// Another session's cleanup ends every expired session.
			if _, err := admin.Cleanup(ctx, false); err != nil {
				t.Fatal(err)
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	// Idle for real now: no connection in use after Close. The session
	// ends, and the next call logs in again (the connection has the
	// password).
	before := c.Token()
	d.Close()
	time.Sleep(700 * time.Millisecond)
	admin.Cleanup(ctx, false)
	if _, err := c.Disk(ctx, spec); err != nil {
		t.Fatalf("a call after the idle session ended: %v", err)
	}
	if c.Token() == before {
		t.Error("an idle session outlived its timeout")
	}
}

// TestReloginAfterSessionEnds ends a connection's session under an open
// handle, as a host restart or an administrator does (the host then
// closes the session's NBD connections): a connection made with the
// password logs in again and its reads go on; one made with a token
// cannot, and says the session ended.
func TestReloginAfterSessionEnds(t *testing.T) {
	ctx := context.Background()
	h := startHost(t, nil)
	setup := h.connect(t, "nbdssl")
	spec := vdisk.Spec{Disk: "relogin"}
	if err := setup.Create(ctx, spec, vdisk.CreateParams{Capacity: 8 << 20}); err != nil {
		t.Fatal(err)
	}
	endOthers := func() {
		t.Helper()
		// A fresh session of the same user ends all the others.
		k, err := vdisk.Connect(ctx, h.params)
		if err != nil {
			t.Fatal(err)
		}
		defer k.Close()
		k.Token() // keep its session past Close: it is the survivor
		if _, err := k.Cleanup(ctx, true); err != nil {
			t.Fatal(err)
		}
	}
	c := h.connect(t, "nbdssl")
	d, err := c.Open(ctx, spec, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	want := bytes.Repeat([]byte{7}, 1<<20)
	if _, err := d.WriteAt(want, 0); err != nil {
		t.Fatal(err)
	}
	endOthers()
	got := make([]byte, len(want))
	if _, err := d.ReadAt(got, 0); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("read after the session ended: %v", err)
	}
	if _, err := d.WriteAt(want, 2<<20); err != nil {
		t.Fatalf("write after the session ended: %v", err)
	}
	if _, err := c.Disk(ctx, spec); err != nil {
		t.Fatalf("an API call after the session ended: %v", err)
	}

	p := h.params
	p.User, p.Password, p.Token, p.Transports = "", "", c.Token(), "nbdssl"
	tc, err := vdisk.Connect(ctx, p)
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	endOthers()
	if _, err := tc.Disk(ctx, spec); err == nil || !strings.Contains(err.Error(), "session") {
		t.Fatalf("a token connection after its session ended: %v", err)
	}
}
