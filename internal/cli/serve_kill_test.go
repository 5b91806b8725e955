package cli

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vdisk-project/vdisk/internal/auth"
	"github.com/vdisk-project/vdisk/internal/datastore"
	"github.com/vdisk-project/vdisk/nbd"
)

// TestMain lets a test run `vdisk serve` in a child process (the test
// binary itself), so that the child can be killed with SIGKILL.
func TestMain(m *testing.M) {
	if args := os.Getenv("VDISK_TEST_SERVE_ARGS"); args != "" {
		ctx, stop := signalContext()
		defer stop()
		os.Exit(Main(ctx, append([]string{"serve"}, strings.Fields(args)...), os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

func signalContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
}

// child is a `vdisk serve` process.
type child struct {
	cmd        *exec.Cmd
	api, nbd   string
	thumbprint string
	hc         *http.Client
	token      string
	once       sync.Once
}

func startChild(t *testing.T, dataDir, password string) *child {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(),
		"VDISK_TEST_SERVE_ARGS=--data-dir "+dataDir+" --listen 127.0.0.1:0 --nbd-listen 127.0.0.1:0 --log-format json --log-level warn",
		"VDISK_ADMIN_PASSWORD="+password)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &child{cmd: cmd}
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		switch {
		case len(f) >= 3 && f[0] == "control":
			c.api = strings.TrimSuffix(strings.TrimPrefix(f[2], "https://"), "/api/v1")
		case len(f) >= 4 && f[0] == "NBD" && f[2] == "TLS":
			c.nbd = f[3]
		case len(f) >= 4 && f[0] == "certificate":
			c.thumbprint = f[3]
		}
		if strings.HasPrefix(sc.Text(), "next:") {
			break
		}
	}
	go io.Copy(io.Discard, out)
	if c.api == "" || c.nbd == "" || c.thumbprint == "" {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("could not read the server's addresses (api %q nbd %q thumbprint %q)", c.api, c.nbd, c.thumbprint)
	}
	tc, err := auth.PinnedConfig(c.thumbprint)
	if err != nil {
		t.Fatal(err)
	}
	c.hc = &http.Client{Transport: &http.Transport{TLSClientConfig: tc}, Timeout: 2 * time.Minute}
	var lr struct{ Token string }
	if st := c.call("POST", "/api/v1/login", map[string]string{"user": "admin", "password": password}, &lr); st != 201 {
		t.Fatalf("login: status %d", st)
	}
	c.token = lr.Token
	return c
}

// call does an API request; it returns the status (0 when the request
// failed, as it does when the server was killed).
func (c *child) call(method, path string, body, out any) int {
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, "https://"+c.api+path, rd)
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if out != nil && resp.StatusCode < 300 {
		json.Unmarshal(b, out)
	}
	return resp.StatusCode
}

func (c *child) dial(t *testing.T, req map[string]any) *nbd.Client {
	t.Helper()
	var tk struct{ URI, Ticket string }
	if st := c.call("POST", "/api/v1/tickets", req, &tk); st != 201 {
		t.Fatalf("ticket %v: status %d", req, st)
	}
	cl, err := nbd.Dial(context.Background(), tk.URI, &nbd.ClientOptions{Thumbprint: c.thumbprint, Timeout: 20 * time.Second, Connections: 1})
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	return cl
}

func (c *child) kill() {
	c.once.Do(func() {
		c.cmd.Process.Signal(syscall.SIGKILL)
		c.cmd.Wait()
	})
}

// TestServeKill writes to a disk over NBD while a backup takes snapshots
// and incrementals, and kills the server with SIGKILL at random moments
// (while writing, and while consolidating). After each restart: every
// flushed write is there; each write that was not flushed shows its old
// or new data; the backup rebuilt from a full copy and the incrementals
// equals each snapshot, and an incremental from a change ID recorded
// before the kill is refused (the client then takes a full backup).
func TestServeKill(t *testing.T) {
	rounds := 4
	if os.Getenv("VDISK_TEST_LONG") != "" {
		rounds = 40
	}
	const size, block = 16 << 20, 4096
	dir := t.TempDir()
	const pw = "kill-test-password"
	seed := uint64(time.Now().UnixNano())
	rng := rand.New(rand.NewPCG(42, seed))
	t.Logf("seed %d", seed)

	model := make([]byte, size) // the flushed state
	// maybe holds, per block, the other values a block may hold after a
	// kill (writes not yet flushed).
	maybe := map[int64][][]byte{}
	var backup []byte
	lastCID, lastSnap := "", ""
	full, incr := 0, 0
	wantIncr := false
	for round := range rounds {
		c := startChild(t, dir, pw)
		if round == 0 {
			if st := c.call("POST", "/api/v1/disks", map[string]any{"name": "d", "capacity": size, "cbt": true}, nil); st != 201 {
				t.Fatalf("create disk: %d", st)
			}
		}
		run := c.dial(t, map[string]any{"disk": "d", "mode": "rw"})
		// Check the disk against the model, resolving the unflushed blocks.
		got := make([]byte, size)
		if _, err := run.ReadAt(got, 0); err != nil {
			t.Fatal(err)
		}
		for b := int64(0); b < size/block; b++ {
			cur := got[b*block : (b+1)*block]
			if bytes.Equal(cur, model[b*block:(b+1)*block]) {
				continue
			}
			ok := false
			for _, v := range maybe[b] {
				ok = ok || bytes.Equal(cur, v)
			}
			if !ok {
				t.Fatalf("round %d: block %d holds data never written there (flushed data lost or torn)", round, b)
			}
			copy(model[b*block:], cur)
		}
		clear(maybe)

		// Backup: snapshot, incremental (or full when refused).
		var sn datastore.SnapshotInfo
		if st := c.call("POST", "/api/v1/disks/d/snapshots", map[string]any{}, &sn); st != 201 {
			t.Fatalf("round %d: snapshot: %d", round, st)
		}
		var ci datastore.ChangeInfo
		st := 404
		if lastCID != "" {
			st = c.call("GET", "/api/v1/disks/d/changes?snapshot="+sn.ID+"&changeId="+url.QueryEscape(lastCID), nil, &ci)
		}
		switch st {
		case 200:
			incr++
		case 404:
			if wantIncr {
				t.Fatalf("round %d: the incremental after a clean stop was refused", round)
			}
		}
		switch st {
		case 200:
		case 404:
			// Unknown change ID (the tracker restarted): a full backup.
			full++
			backup = make([]byte, size)
			if st := c.call("GET", "/api/v1/disks/d/changes?snapshot="+sn.ID+"&changeId=*", nil, &ci); st != 200 {
				t.Fatalf("round %d: full changes: %d", round, st)
			}
		default:
			t.Fatalf("round %d: changes: status %d", round, st)
		}
		snap := c.dial(t, map[string]any{"disk": "d", "snapshot": sn.ID})
		for _, a := range ci.Areas {
			if a.Zero {
				clear(backup[a.Start : a.Start+a.Length])
			} else if _, err := snap.ReadAt(backup[a.Start:a.Start+a.Length], a.Start); err != nil {
				t.Fatal(err)
			}
		}
		snap.Close()
		if !bytes.Equal(backup, model) {
			t.Fatalf("round %d: backup (after %s) differs from the snapshot's data: %x vs %x", round,
				map[bool]string{true: "a full", false: "an incremental"}[st == 404], sha256.Sum256(backup), sha256.Sum256(model))
		}
		var in datastore.DiskInfo
		c.call("GET", "/api/v1/disks/d", nil, &in)
		for _, s := range in.Snapshots {
			if s.ID == sn.ID {
				lastCID = s.ChangeID
			}
		}
		prev := lastSnap
		lastSnap = sn.ID

		// Write in flushed batches while the previous snapshots are
		// removed (consolidated). Even rounds end with SIGKILL at a random
		// moment; odd rounds stop writing then and stop the server
		// cleanly, after which the next incremental must be answered.
		var wg sync.WaitGroup
		if prev != "" {
			wg.Go(func() {
				for _, s := range in.Snapshots {
					if s.ID != sn.ID {
						c.call("DELETE", "/api/v1/disks/d/snapshots/"+s.ID, nil, nil)
					}
				}
			})
		}
		clean := round%2 == 1
		// Half the kills come within the first 30 ms, while the
		// consolidation runs.
		window := 300
		if rng.IntN(2) == 0 {
			window = 30
		}
		end := time.Now().Add(time.Duration(rng.IntN(window)) * time.Millisecond)
		var killer *time.Timer
		if !clean {
			killer = time.AfterFunc(time.Until(end), c.kill)
		}
		pending := map[int64][]byte{}
		for !clean || time.Now().Before(end) {
			bad := false
			for range 1 + rng.IntN(8) {
				b := rng.Int64N(size / block)
				n := min(1+rng.Int64N(4), size/block-b)
				p := make([]byte, n*block)
				for i := range p {
					p[i] = byte(rng.Uint32())
				}
				if rng.IntN(5) == 0 {
					clear(p)
				}
				for i := range n {
					maybe[b+i] = append(maybe[b+i], p[i*block:(i+1)*block])
					pending[b+i] = p[i*block : (i+1)*block]
				}
				if _, err := run.WriteAt(p, b*block); err != nil {
					bad = true
					break
				}
			}
			if bad || run.Flush() != nil {
				break
			}
			for b, v := range pending {
				copy(model[b*block:], v)
				// The flushed value is now the base; older candidates go.
				maybe[b] = nil
			}
			clear(pending)
		}
		if clean {
			wg.Wait()
			run.Close()
			c.cmd.Process.Signal(os.Interrupt)
			if err := c.cmd.Wait(); err != nil {
				t.Fatalf("round %d: clean stop: %v", round, err)
			}
			if len(pending) != 0 {
				t.Fatalf("round %d: writes left unflushed before a clean stop", round)
			}
		} else {
			killer.Stop()
			c.kill()
			wg.Wait()
			run.Close()
		}
		wantIncr = clean
	}
	t.Logf("%d rounds: %d full backups, %d incrementals", rounds, full, incr)
	if full < 2 || incr < 1 {
		t.Errorf("%d full backups and %d incrementals; want both kinds exercised", full, incr)
	}
}
