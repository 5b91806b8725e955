package cli

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
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
	if args := os.Getenv("VDISK_TEST_MAIN_ARGS"); args != "" {
		// Any command line, as JSON (for kill tests of other commands).
		var argv []string
		if err := json.Unmarshal([]byte(args), &argv); err != nil {
			panic(err)
		}
		ctx, stop := signalContext()
		defer stop()
		os.Exit(Main(ctx, argv, os.Stdout, os.Stderr))
	}
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

func startChild(t *testing.T, dataDir, password string, extra ...string) *child {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(),
		"VDISK_TEST_SERVE_ARGS=--data-dir "+dataDir+" --listen 127.0.0.1:0 --nbd-listen 127.0.0.1:0 --log-format json --log-level warn "+strings.Join(extra, " "),
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

// dialN opens an NBD client with conns connections through a new ticket.
func (c *child) dialN(req map[string]any, conns int) (*nbd.Client, error) {
	var tk struct{ URI, Ticket string }
	req["maxConns"] = conns
	if st := c.call("POST", "/api/v1/tickets", req, &tk); st != 201 {
		return nil, fmt.Errorf("ticket %v: status %d", req, st)
	}
	cl, err := nbd.Dial(context.Background(), tk.URI, &nbd.ClientOptions{Thumbprint: c.thumbprint, Timeout: 20 * time.Second, Connections: conns})
	if err != nil {
		return nil, fmt.Errorf("dial: %w", err)
	}
	return cl, nil
}

func (c *child) kill() {
	c.once.Do(func() {
		c.cmd.Process.Signal(syscall.SIGKILL)
		c.cmd.Wait()
	})
}

// The kill test's blocks hold a value: 8-byte words all equal to it (0 for
// zeros), so any block read can be matched against the writes made to it.
const (
	killSize  = 16 << 20
	killBlock = 4096
	killN     = killSize / killBlock
)

func blockValue(p []byte) (uint64, bool) {
	v := binary.LittleEndian.Uint64(p)
	for i := 8; i < len(p); i += 8 {
		if binary.LittleEndian.Uint64(p[i:]) != v {
			return 0, false
		}
	}
	return v, true
}

func fillValue(p []byte, v uint64) {
	for i := 0; i < len(p); i += 8 {
		binary.LittleEndian.PutUint64(p[i:], v)
	}
}

// killLog is the ground truth of one round: per block, every write in
// order with the clock ticks at which it was issued and acknowledged.
type killLog struct {
	clock  atomic.Int64
	start  []uint64 // the block's value when the round began
	writes [killN][]killWrite
}

type killWrite struct {
	v          uint64
	start, end int64 // end 0: never acknowledged
}

// snapshotOK checks a snapshot read between ticks from and to: each block
// holds the last write acknowledged before from, or a later write issued
// before to. It returns the first block that does not.
func (l *killLog) snapshotOK(data []byte, from, to int64) (int, bool) {
	for b := range killN {
		v, ok := blockValue(data[b*killBlock : (b+1)*killBlock])
		if !ok {
			return b, false
		}
		ws := l.writes[b]
		lo := -1
		for j, w := range ws {
			if w.end != 0 && w.end < from {
				lo = j
			}
		}
		good := lo < 0 && v == l.start[b]
		for j := max(lo, 0); j < len(ws) && !good; j++ {
			good = ws[j].start < to && ws[j].v == v
		}
		if !good {
			return b, false
		}
	}
	return 0, true
}

type stormSnap struct {
	id, changeID string
	data         []byte
	deleting     bool // a DELETE was sent: it may be gone
}

// TestServeKill runs `vdisk serve` as a child process and, in every round,
// writes to a disk over NBD from 24 goroutines on two clients with three
// connections (pipelined writes, FUA writes, zeroings and flushes) while
// snapshots are created in a storm, read, removed (consolidated) and the
// disk relocated between two datastores. Even rounds end with SIGKILL at a
// random moment, odd rounds with a clean stop. After each restart:
//   - every write flushed or written with FUA before the kill is there;
//     every other block holds one of the values written to it;
//   - every snapshot created holds exactly what its instant allows, and
//     reads the same after the kill;
//   - incrementals from change IDs taken before the kill (the previous
//     round's snapshot and every surviving storm snapshot) are answered
//     and rebuild the new snapshot exactly: change tracking survives
//     SIGKILL without under-reporting.
func TestServeKill(t *testing.T) {
	rounds := 6
	if os.Getenv("VDISK_TEST_LONG") != "" {
		rounds = 40
	}
	dir, alt := t.TempDir(), t.TempDir()
	const pw = "kill-test-password"
	seed := uint64(time.Now().UnixNano())
	rng := rand.New(rand.NewPCG(42, seed))
	t.Logf("seed %d", seed)

	model := make([]uint64, killN)   // the durable value of each block
	maybe := make([][]uint64, killN) // other values a block may hold after a kill
	var backup []byte
	lastCID := ""
	storm := map[string]*stormSnap{}
	var stats struct {
		writes, flushed, snapshots, relocations, incrementals, kills int
	}
	// On a loaded machine a round can end before its storm has made a
	// snapshot (the consolidations of earlier rounds come first), so
	// rounds go on, up to three times as many, until one has.
	ran := 0
	for round := 0; round < rounds || stats.snapshots == 0 && round < 3*rounds; round++ {
		ran++
		c := startChild(t, dir, pw, "--datastore", "alt="+alt)
		if round == 0 {
			if st := c.call("POST", "/api/v1/disks", map[string]any{"name": "d", "capacity": killSize, "cbt": true}, nil); st != 201 {
				t.Fatalf("create disk: %d", st)
			}
		}
		run, err := c.dialN(map[string]any{"disk": "d", "mode": "rw"}, 2)
		if err != nil {
			t.Fatal(err)
		}
		// The disk against the model.
		got := make([]byte, killSize)
		if _, err := run.ReadAt(got, 0); err != nil {
			t.Fatal(err)
		}
		for b := range killN {
			v, ok := blockValue(got[b*killBlock : (b+1)*killBlock])
			if ok && v != model[b] {
				ok = slices.Contains(maybe[b], v)
			}
			if !ok {
				t.Fatalf("round %d: block %d holds %#x, never written there after its durable value %#x (a flushed write is lost, or a block torn)", round, b, v, model[b])
			}
			model[b] = v
			maybe[b] = nil
		}
		want := make([]byte, killSize)
		for b, v := range model {
			fillValue(want[b*killBlock:(b+1)*killBlock], v)
		}
		// The snapshot of this round, and the incrementals that rebuild it.
		var sn datastore.SnapshotInfo
		if st := c.call("POST", "/api/v1/disks/d/snapshots", map[string]any{}, &sn); st != 201 {
			t.Fatalf("round %d: snapshot: %d", round, st)
		}
		incremental := func(from string, base []byte) []byte {
			var ci datastore.ChangeInfo
			if st := c.call("GET", "/api/v1/disks/d/changes?snapshot="+sn.ID+"&changeId="+url.QueryEscape(from), nil, &ci); st != 200 {
				t.Fatalf("round %d: changes since %s: status %d (a change ID from before the restart must stay valid)", round, from, st)
			}
			snap, err := c.dialN(map[string]any{"disk": "d", "snapshot": sn.ID}, 1)
			if err != nil {
				t.Fatal(err)
			}
			defer snap.Close()
			out := bytes.Clone(base)
			for _, a := range ci.Areas {
				if a.Zero {
					clear(out[a.Start : a.Start+a.Length])
				} else if _, err := snap.ReadAt(out[a.Start:a.Start+a.Length], a.Start); err != nil {
					t.Fatal(err)
				}
			}
			return out
		}
		if lastCID == "" {
			backup = incremental("*", make([]byte, killSize))
		} else {
			backup = incremental(lastCID, backup)
			stats.incrementals++
		}
		if !bytes.Equal(backup, want) {
			t.Fatalf("round %d: the backup rebuilt from change ID %q differs from the disk: %x vs %x", round, lastCID, sha256.Sum256(backup), sha256.Sum256(want))
		}
		// Storm snapshots of earlier rounds: unchanged, and their change
		// IDs answer complete incrementals.
		var in datastore.DiskInfo
		c.call("GET", "/api/v1/disks/d", nil, &in)
		for id, ss := range storm {
			if !slices.ContainsFunc(in.Snapshots, func(s datastore.SnapshotInfo) bool { return s.ID == id }) {
				if !ss.deleting {
					t.Fatalf("round %d: storm snapshot %s is gone after a restart", round, id)
				}
				delete(storm, id)
				continue
			}
			h, err := c.dialN(map[string]any{"disk": "d", "snapshot": id}, 1)
			if err != nil {
				t.Fatal(err)
			}
			data := make([]byte, killSize)
			_, err = h.ReadAt(data, 0)
			h.Close()
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(data, ss.data) {
				t.Fatalf("round %d: storm snapshot %s changed across a restart", round, id)
			}
			if got := incremental(ss.changeID, ss.data); !bytes.Equal(got, want) {
				t.Fatalf("round %d: the incremental since storm snapshot %s's change ID misses changes", round, id)
			}
			stats.incrementals++
		}
		lastCID = sn.ChangeID
		var rm []string
		for _, s := range in.Snapshots {
			if s.ID != sn.ID {
				rm = append(rm, s.ID)
				if ss := storm[s.ID]; ss != nil {
					ss.deleting = true
				}
			}
		}

		// Writers and the storm, until the kill or the clean stop.
		clean := round%2 == 1
		l := &killLog{start: slices.Clone(model)}
		wr, err := c.dialN(map[string]any{"disk": "d", "mode": "rw"}, 1)
		if err != nil {
			t.Fatal(err)
		}
		stop := make(chan struct{})
		var mu sync.Mutex // guards model, maybe, stats and storm while the round runs
		var wg sync.WaitGroup
		const writers = 24
		for g := range writers {
			cl := run
			if g >= 16 {
				cl = wr
			}
			wg.Go(func() {
				r := rand.New(rand.NewPCG(seed, uint64(round*writers+g)))
				p := make([]byte, killBlock)
				var pending []int
				for i := 1; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					b := g + writers*r.IntN(killN/writers)
					v := uint64(round+1)<<48 | uint64(g+1)<<32 | uint64(i)
					kind := r.IntN(8)
					if kind == 0 {
						v = 0
					}
					mu.Lock()
					maybe[b] = append(maybe[b], v)
					mu.Unlock()
					w := killWrite{v: v, start: l.clock.Add(1)}
					var err error
					switch {
					case kind == 0:
						err = cl.WriteZeroes(int64(b)*killBlock, killBlock, 0)
					case kind < 4:
						fillValue(p, v)
						err = cl.WriteFUA(p, int64(b)*killBlock)
					default:
						fillValue(p, v)
						_, err = cl.WriteAt(p, int64(b)*killBlock)
					}
					if err == nil {
						w.end = l.clock.Add(1)
					}
					l.writes[b] = append(l.writes[b], w)
					if err != nil {
						return // killed
					}
					pending = append(pending, b)
					durable := kind > 0 && kind < 4
					if !durable && r.IntN(4) == 0 {
						durable = cl.Flush() == nil
						if !durable {
							return
						}
					}
					mu.Lock()
					stats.writes++
					if durable {
						// Everything this writer had acknowledged is durable.
						for _, x := range pending {
							ws := l.writes[x]
							model[x] = ws[len(ws)-1].v
							maybe[x] = nil
						}
						stats.flushed += len(pending)
						pending = pending[:0]
					}
					mu.Unlock()
				}
			})
		}
		type taken struct {
			id, changeID string
			from, to     int64
			data         []byte
		}
		var made []taken
		wg.Go(func() {
			// Consolidate what the previous rounds left, then the storm.
			for _, id := range rm {
				if c.call("DELETE", "/api/v1/disks/d/snapshots/"+id, nil, nil) == 0 {
					return
				}
			}
			r := rand.New(rand.NewPCG(seed, uint64(1000+round)))
			where := []string{"alt", "default"}
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				var s datastore.SnapshotInfo
				from := l.clock.Add(1)
				st := c.call("POST", "/api/v1/disks/d/snapshots", map[string]any{"name": fmt.Sprint("storm-", round, "-", i)}, &s)
				to := l.clock.Add(1)
				if st != 201 {
					return
				}
				h, err := c.dialN(map[string]any{"disk": "d", "snapshot": s.ID}, 1)
				if err != nil {
					return
				}
				data := make([]byte, killSize)
				_, err = h.ReadAt(data, 0)
				h.Close()
				if err != nil {
					return
				}
				mu.Lock()
				made = append(made, taken{s.ID, s.ChangeID, from, to, data})
				storm[s.ID] = &stormSnap{id: s.ID, changeID: s.ChangeID, data: data}
				stats.snapshots++
				mu.Unlock()
				switch r.IntN(4) {
				case 0:
					// Remove an older storm snapshot: a consolidation under
					// the writes.
					mu.Lock()
					var victim *stormSnap
					for _, ss := range storm {
						if ss.id != s.ID && !ss.deleting {
							victim = ss
							break
						}
					}
					if victim != nil {
						victim.deleting = true
					}
					mu.Unlock()
					if victim != nil && c.call("DELETE", "/api/v1/disks/d/snapshots/"+victim.id, nil, nil) == 0 {
						return
					}
				case 1:
					st := c.call("POST", "/api/v1/disks/d/relocate", map[string]any{"datastore": where[i%2]}, nil)
					if st == 0 {
						return
					}
					if st == 201 {
						mu.Lock()
						stats.relocations++
						mu.Unlock()
					}
				}
				mu.Lock()
				n := len(storm)
				mu.Unlock()
				if n >= 4 {
					time.Sleep(20 * time.Millisecond) // enough kept: let the writers run
				}
			}
		})
		// Half the kills come early, while the consolidations run.
		window := 1200
		if rng.IntN(2) == 0 {
			window = 100
		}
		time.Sleep(time.Duration(50+rng.IntN(window)) * time.Millisecond)
		if clean {
			close(stop)
			wg.Wait()
			if err := run.Flush(); err != nil {
				t.Fatalf("round %d: flush: %v", round, err)
			}
			for b := range killN {
				if ws := l.writes[b]; len(ws) > 0 {
					model[b], maybe[b] = ws[len(ws)-1].v, nil
				}
			}
			run.Close()
			wr.Close()
			c.cmd.Process.Signal(os.Interrupt)
			if err := c.cmd.Wait(); err != nil {
				t.Fatalf("round %d: clean stop: %v", round, err)
			}
		} else {
			c.kill()
			close(stop)
			wg.Wait()
			run.Close()
			wr.Close()
			stats.kills++
		}
		for _, m := range made {
			if b, ok := l.snapshotOK(m.data, m.from, m.to); !ok {
				t.Fatalf("round %d: snapshot %s block %d holds what its instant does not allow", round, m.id, b)
			}
		}
	}
	t.Logf("%d rounds (%d kills): %d writes (%d flushed or FUA), %d storm snapshots, %d relocations, %d incrementals checked; lost: 0, under-reported: 0",
		ran, stats.kills, stats.writes, stats.flushed, stats.snapshots, stats.relocations, stats.incrementals)
	if stats.snapshots == 0 || stats.incrementals < ran-1 {
		t.Errorf("the rounds exercised %d storm snapshots and %d incrementals; want both", stats.snapshots, stats.incrementals)
	}
}
