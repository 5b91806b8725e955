package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vdisk-project/vdisk/disk"
	"github.com/vdisk-project/vdisk/internal/auth"
	"github.com/vdisk-project/vdisk/internal/datastore"
	"github.com/vdisk-project/vdisk/nbd"
)

// testHost is a running server and an admin API client.
type testHost struct {
	t     *testing.T
	s     *Server
	base  string
	hc    *http.Client
	token string
	clock *fakeClock
}

type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func startHost(t *testing.T, mod func(*Config)) *testHost {
	t.Helper()
	clock := &fakeClock{now: time.Now()}
	cfg := Config{
		DataDir:            t.TempDir(),
		Listen:             []string{"127.0.0.1:0"},
		NBDListen:          []string{"127.0.0.1:0"},
		AdminPassword:      "correct horse battery",
		PasswordIterations: 1000,
		Sessions:           auth.Options{Now: clock.Now},
	}
	if mod != nil {
		mod(&cfg)
	}
	s, err := New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Listen(); err != nil {
		t.Fatal(err)
	}
	before := runtime.NumGoroutine()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	var h *testHost
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
		// Nothing the server started is left running after Serve returns.
		h.hc.CloseIdleConnections()
		deadline := time.Now().Add(5 * time.Second)
		for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if n := runtime.NumGoroutine(); n > before {
			buf := make([]byte, 1<<20)
			t.Errorf("%d goroutines left after Serve returned (%d before):\n%s", n, before, buf[:runtime.Stack(buf, true)])
		}
	})
	tc, err := auth.PinnedConfig(s.Thumbprint())
	if err != nil {
		t.Fatal(err)
	}
	api, _, _ := s.Addrs()
	h = &testHost{t: t, s: s, base: "https://" + api[0].String(), clock: clock,
		hc: &http.Client{Transport: &http.Transport{TLSClientConfig: tc}, Timeout: time.Minute}}
	h.token = h.login("admin", "correct horse battery")
	return h
}

func (h *testHost) login(user, pw string) string {
	h.t.Helper()
	var out struct{ Token string }
	if st := h.doAs("", "POST", "/api/v1/login", map[string]string{"user": user, "password": pw}, &out); st != http.StatusCreated {
		h.t.Fatalf("login %s: status %d", user, st)
	}
	return out.Token
}

// doAs calls the API with a token; out receives the JSON body (or the
// error body on failure). It returns the status.
func (h *testHost) doAs(token, method, path string, body, out any) int {
	h.t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, h.base+path, rd)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := h.hc.Do(req)
	if err != nil {
		h.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if out != nil && len(b) > 0 {
		if err := json.Unmarshal(b, out); err != nil {
			h.t.Fatalf("%s %s: decode %q: %v", method, path, b, err)
		}
	}
	return resp.StatusCode
}

func (h *testHost) do(method, path string, body, out any) int {
	h.t.Helper()
	return h.doAs(h.token, method, path, body, out)
}

// must calls the API and fails the test unless it succeeds.
func (h *testHost) must(method, path string, body, out any) {
	h.t.Helper()
	var e struct{ Error APIError }
	raw := json.RawMessage{}
	st := h.do(method, path, body, &raw)
	if st >= 300 {
		json.Unmarshal(raw, &e)
		h.t.Fatalf("%s %s: status %d: %+v", method, path, st, e.Error)
	}
	if out != nil {
		json.Unmarshal(raw, out)
	}
}

// errCode calls the API, expects a failure and returns its code.
func (h *testHost) errCode(token, method, path string, body any) (int, string) {
	h.t.Helper()
	var e struct{ Error APIError }
	st := h.doAs(token, method, path, body, &e)
	return st, e.Error.Code
}

func (h *testHost) ticket(req TicketRequest) Ticket {
	h.t.Helper()
	var t Ticket
	h.must("POST", "/api/v1/tickets", req, &t)
	return t
}

// in returns h reporting to t, for use inside a subtest: a helper's
// Fatalf must stop the subtest, not its parent.
func (h *testHost) in(t *testing.T) *testHost {
	c := *h
	c.t = t
	return &c
}

// waitConns waits until the host holds at most n NBD connections. A
// client's Close does not wait for the server to let go (NBD_CMD_DISC has
// no reply), so a step that needs a connection slot back, or counts a
// disk's sessions, waits for the server's release first.
func (h *testHost) waitConns(n int) {
	h.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		conns, _ := h.s.limiter.Usage()
		if conns <= n {
			return
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("the host still holds %d NBD connections after 30 s, want at most %d", conns, n)
		}
		time.Sleep(time.Millisecond)
	}
}

func (h *testHost) dial(t Ticket) *nbd.Client {
	h.t.Helper()
	c, err := nbd.Dial(context.Background(), t.URI, &nbd.ClientOptions{Thumbprint: t.Thumbprint, Timeout: 30 * time.Second, Connections: 1})
	if err != nil {
		h.t.Fatalf("dial %s: %v", t.Target, err)
	}
	return c
}

// TestBackupGenerations: a workload writes over NBD while a backup
// application snapshots the VM, reads changed areas over NBD from the
// snapshot and removes the previous snapshot. The full backup plus every
// incremental must equal the disk at each snapshot, and the incrementals
// must read no more than the changed data.
func TestBackupGenerations(t *testing.T) {
	h := startHost(t, nil)
	const size = 32 << 20
	h.must("POST", "/api/v1/vms", map[string]string{"name": "web"}, nil)
	h.must("POST", "/api/v1/vms/web/disks", map[string]any{"key": "scsi0:0", "capacity": size, "cbt": true}, nil)
	run := h.dial(h.ticket(TicketRequest{VM: "web", Key: "scsi0:0", Mode: "rw"}))
	defer run.Close()

	var mu sync.Mutex
	model := make([]byte, size)
	write := func(rng *rand.Rand, n int) {
		for range n {
			off := rng.Int64N(size/4096-16) * 4096
			ln := (1 + rng.Int64N(16)) * 4096
			mu.Lock()
			var err error
			if rng.IntN(6) == 0 {
				err = run.WriteZeroes(off, ln, 0)
				clear(model[off : off+ln])
			} else {
				p := make([]byte, ln)
				for i := range p {
					p[i] = byte(rng.Uint32())
				}
				_, err = run.WriteAt(p, off)
				copy(model[off:], p)
			}
			mu.Unlock()
			if err != nil {
				t.Errorf("write: %v", err)
				return
			}
		}
	}
	write(rand.New(rand.NewPCG(1, 1)), 200)

	backup := make([]byte, size)
	prev, prevCID := "", ""
	for gen := range 5 {
		var sn datastore.SnapshotInfo
		mu.Lock()
		if err := run.Flush(); err != nil {
			t.Fatal(err)
		}
		want := bytes.Clone(model)
		h.must("POST", "/api/v1/vms/web/snapshots", map[string]any{"name": fmt.Sprint("gen", gen)}, &sn)
		mu.Unlock()
		var wg sync.WaitGroup
		wg.Go(func() { write(rand.New(rand.NewPCG(uint64(gen), 9)), 150) })

		var vm datastore.VMInfo
		h.must("GET", "/api/v1/vms/web", nil, &vm)
		d := vm.Disks[0]
		var cid string
		for _, x := range d.Snapshots {
			if x.ID == sn.ID {
				cid = x.ChangeID
			}
		}
		since := prevCID
		if since == "" {
			since = "*"
		}
		var ci datastore.ChangeInfo
		h.must("GET", fmt.Sprintf("/api/v1/disks/%s/changes?snapshot=%s&changeId=%s", d.Name, sn.ID, url.QueryEscape(since)), nil, &ci)
		snap := h.dial(h.ticket(TicketRequest{Disk: d.Name, Snapshot: sn.ID}))
		var read int64
		for _, a := range ci.Areas {
			if a.Zero {
				clear(backup[a.Start : a.Start+a.Length])
				continue
			}
			if _, err := snap.ReadAt(backup[a.Start:a.Start+a.Length], a.Start); err != nil {
				t.Fatal(err)
			}
			read += a.Length
		}
		all := make([]byte, size)
		if _, err := snap.ReadAt(all, 0); err != nil {
			t.Fatal(err)
		}
		snap.Close()
		if !bytes.Equal(all, want) {
			t.Fatalf("gen %d: the snapshot read over NBD differs from the disk at snapshot time", gen)
		}
		if !bytes.Equal(backup, want) {
			t.Fatalf("gen %d: full + incrementals differ from the snapshot", gen)
		}
		t.Logf("gen %d: %d areas, %d bytes read (changeId %s)", gen, len(ci.Areas), read, cid)
		if prev != "" {
			h.must("DELETE", "/api/v1/vms/web/snapshots/"+prev, nil, nil)
		}
		wg.Wait()
		prev, prevCID = sn.ID, cid
	}
	got := make([]byte, size)
	if _, err := run.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, model) {
		t.Fatal("the running disk differs from the model after the consolidations")
	}
}

func TestSecurity(t *testing.T) {
	h := startHost(t, func(c *Config) { c.Limits.DiskConns = 2 })
	h.must("POST", "/api/v1/disks", map[string]any{"name": "db", "capacity": 1 << 20}, nil)
	h.must("POST", "/api/v1/disks", map[string]any{"name": "other", "capacity": 1 << 20}, nil)
	var u struct{ Password string }
	h.must("POST", "/api/v1/users", map[string]string{"name": "viewer", "role": "read-only"}, &u)
	viewer := h.login("viewer", u.Password)

	t.Run("wrong password", func(t *testing.T) {
		h := h.in(t)
		st, code := h.errCode("", "POST", "/api/v1/login", map[string]string{"user": "admin", "password": "wrong password!"})
		if st != http.StatusForbidden || code != "permission_denied" {
			t.Errorf("got %d %s, want 403 permission_denied", st, code)
		}
	})
	t.Run("no token", func(t *testing.T) {
		h := h.in(t)
		if st, code := h.errCode("", "GET", "/api/v1/disks", nil); st != http.StatusUnauthorized {
			t.Errorf("got %d %s, want 401", st, code)
		}
		if st, _ := h.errCode("bogus", "GET", "/api/v1/disks", nil); st != http.StatusUnauthorized {
			t.Errorf("bogus token: got %d, want 401", st)
		}
	})
	t.Run("read-only user", func(t *testing.T) {
		h := h.in(t)
		if st, _ := h.errCode(viewer, "POST", "/api/v1/tickets", TicketRequest{Disk: "db", Mode: "rw"}); st != http.StatusForbidden {
			t.Errorf("rw ticket for a read-only user: %d, want 403", st)
		}
		if st, _ := h.errCode(viewer, "DELETE", "/api/v1/disks/db", nil); st != http.StatusForbidden {
			t.Errorf("delete by a read-only user: %d, want 403", st)
		}
		var tk Ticket
		if st := h.doAs(viewer, "POST", "/api/v1/tickets", TicketRequest{Disk: "db"}, &tk); st != http.StatusCreated {
			t.Fatalf("ro ticket: %d", st)
		}
		c := h.dial(tk)
		if _, err := c.WriteAt(make([]byte, 512), 0); !errors.Is(err, disk.ErrPermission) {
			t.Errorf("write with a read-only ticket: %v, want ErrPermission", err)
		}
		c.Close()
		h.waitConns(0) // later subtests count db's sessions and slots
	})
	t.Run("traversal", func(t *testing.T) {
		h := h.in(t)
		for _, n := range []string{"../etc", "a/b", "..", ".x"} {
			if st, _ := h.errCode(h.token, "POST", "/api/v1/disks", map[string]any{"name": n, "capacity": 1 << 20}); st != http.StatusBadRequest {
				t.Errorf("disk %q: %d, want 400", n, st)
			}
		}
		if st, _ := h.errCode(h.token, "GET", "/api/v1/disks/..%2f..%2fetc", nil); st != http.StatusBadRequest && st != http.StatusNotFound {
			t.Errorf("encoded traversal: %d, want 400 or 404", st)
		}
	})
	t.Run("expired ticket", func(t *testing.T) {
		h := h.in(t)
		tk := h.ticket(TicketRequest{Disk: "db", TTL: 60})
		h.clock.advance(2 * time.Minute)
		_, err := nbd.Dial(context.Background(), tk.URI, &nbd.ClientOptions{Thumbprint: tk.Thumbprint})
		if err == nil || !strings.Contains(err.Error(), "expired") {
			t.Errorf("expired ticket: %v, want a refusal saying expired", err)
		}
	})
	t.Run("ticket names one disk", func(t *testing.T) {
		h := h.in(t)
		tk := h.ticket(TicketRequest{Disk: "other"})
		c := h.dial(tk)
		defer func() { c.Close(); h.waitConns(0) }()
		var in datastore.DiskInfo
		h.must("GET", "/api/v1/disks/other", nil, &in)
		if in.Sessions != 1 {
			t.Errorf("the ticket for other opened %d sessions on it, want 1", in.Sessions)
		}
		h.must("GET", "/api/v1/disks/db", nil, &in)
		if in.Sessions != 0 {
			t.Errorf("the ticket for other opened %d sessions on db", in.Sessions)
		}
		if _, err := nbd.Dial(context.Background(), strings.Replace(tk.URI, tk.Ticket, "disk/db", 1), &nbd.ClientOptions{Thumbprint: tk.Thumbprint}); err == nil {
			t.Error("a disk name as export name was accepted")
		}
	})
	t.Run("plaintext refused", func(t *testing.T) {
		h := h.in(t)
		tk := h.ticket(TicketRequest{Disk: "db"})
		plain := strings.Replace(tk.URI, "nbds://", "nbd://", 1)
		if _, err := nbd.Dial(context.Background(), plain, nil); err == nil {
			t.Error("plain NBD on the TLS port succeeded")
		}
	})
	t.Run("wrong thumbprint", func(t *testing.T) {
		h := h.in(t)
		tk := h.ticket(TicketRequest{Disk: "db"})
		bad := strings.Repeat("AB:", 31) + "AB"
		if _, err := nbd.Dial(context.Background(), tk.URI, &nbd.ClientOptions{Thumbprint: bad}); err == nil {
			t.Error("a wrong thumbprint was accepted")
		}
		tc, _ := auth.PinnedConfig(bad)
		hc := &http.Client{Transport: &http.Transport{TLSClientConfig: tc}}
		if _, err := hc.Get(h.base + "/api/v1/health"); err == nil {
			t.Error("the API accepted a client pinning the wrong thumbprint")
		}
	})
	t.Run("per-disk limit", func(t *testing.T) {
		h := h.in(t)
		tk := h.ticket(TicketRequest{Disk: "db", MaxConns: 8})
		a := h.dial(tk)
		b := h.dial(tk)
		_, err := nbd.Dial(context.Background(), tk.URI, &nbd.ClientOptions{Thumbprint: tk.Thumbprint, Connections: 1})
		if err == nil || !strings.Contains(err.Error(), "limit") {
			t.Errorf("third connection to a disk limited to 2: %v, want a limit refusal", err)
		}
		a.Close()
		// The session stays usable: once the server has released a's
		// slot, a retry works.
		h.waitConns(1)
		c := h.dial(tk)
		c.Close()
		b.Close()
	})
}

func TestHealthAndMetrics(t *testing.T) {
	h := startHost(t, nil)
	h.must("POST", "/api/v1/disks", map[string]any{"name": "m", "capacity": 1 << 20}, nil)
	c := h.dial(h.ticket(TicketRequest{Disk: "m", Mode: "rw"}))
	c.WriteAt(make([]byte, 4096), 0)
	c.Close()
	resp, err := h.hc.Get(h.base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{"vdisk_nbd_written_bytes_total 4096", "vdisk_logins_total 1", "vdisk_api_request_seconds_count", "vdisk_nbd_read_seconds_bucket"} {
		if !strings.Contains(string(b), want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	var hl map[string]any
	if st := h.doAs("", "GET", "/api/v1/health", nil, &hl); st != 200 || hl["status"] != "ok" {
		t.Errorf("health: %d %v", st, hl)
	}
}
