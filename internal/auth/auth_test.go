package auth

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vdisk-project/vdisk/disk"
)

const testIter = 1000

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time          { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Advance(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

func newStore(t testing.TB) (*Store, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "users.json")
	s, err := OpenStore(path, &StoreOptions{Iterations: testIter})
	if err != nil {
		t.Fatal(err)
	}
	return s, path
}

// setup returns a manager with an admin "root" and one user per role, all
// with password "password-"+name.
func setup(t testing.TB, opts *Options) (*Manager, *Store, *clock) {
	t.Helper()
	s, _ := newStore(t)
	if _, err := s.Bootstrap("root", "password-root"); err != nil {
		t.Fatal(err)
	}
	for _, r := range Roles() {
		name := string(r)
		if err := s.Add(name, r, "password-"+name); err != nil {
			t.Fatal(err)
		}
	}
	c := &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	var o Options
	if opts != nil {
		o = *opts
	}
	o.Now = c.Now
	return NewManager(s, &o), s, c
}

func login(t testing.TB, m *Manager, user string) (string, Session) {
	t.Helper()
	tok, s, err := m.Login(user, "password-"+user, "")
	if err != nil {
		t.Fatalf("login %s: %v", user, err)
	}
	return tok, s
}

func wantCode(t *testing.T, err error, code disk.Code, msg string) {
	t.Helper()
	if !errors.Is(err, code) {
		t.Fatalf("got %v, want %v", err, code)
	}
	if msg != "" && !strings.Contains(err.Error(), msg) {
		t.Fatalf("got %q, want it to contain %q", err, msg)
	}
}

func TestRolePrivileges(t *testing.T) {
	tests := []struct {
		role       Role
		has, hasnt Privilege
	}{
		{RoleReadOnly, Read, Write | Snapshot | ManageAccess | Admin},
		{RoleBackup, Read | Snapshot, Write | ManageAccess | Admin},
		{RoleRestore, Read | Write | Snapshot, ManageAccess | Admin},
		{RoleAdmin, Read | Write | Snapshot | ManageAccess | Admin, 0},
	}
	for _, tt := range tests {
		p := tt.role.Privileges()
		if !p.Has(tt.has) || (tt.hasnt != 0 && p&tt.hasnt != 0) {
			t.Errorf("%s: got %s", tt.role, p)
		}
	}
	if _, err := ParseRole("root"); !errors.Is(err, disk.ErrInvalid) {
		t.Errorf("ParseRole(root): got %v", err)
	}
}

func TestLogin(t *testing.T) {
	m, _, _ := setup(t, nil)
	_, _, errWrong := m.Login("backup", "password-wrong", "")
	_, _, errUnknown := m.Login("nobody", "password-nobody", "")
	wantCode(t, errWrong, disk.ErrPermission, "")
	wantCode(t, errUnknown, disk.ErrPermission, "")
	if errWrong.Error() != errUnknown.Error() {
		t.Errorf("wrong password %q and unknown user %q differ", errWrong, errUnknown)
	}
	tok, s := login(t, m, "backup")
	if len(tok) != tokenLen {
		t.Errorf("token length %d", len(tok))
	}
	got, err := m.Authenticate(tok)
	if err != nil || got.User != "backup" || got.Privileges != Read|Snapshot || got.ID != s.ID {
		t.Fatalf("Authenticate: got %+v, %v", got, err)
	}
	for _, bad := range []string{"", "x", tok[:42] + "!", strings.Repeat("A", tokenLen)} {
		_, err := m.Authenticate(bad)
		wantCode(t, err, disk.ErrPermission, "")
	}
	if err := m.Logout(tok); err != nil {
		t.Fatal(err)
	}
	_, err = m.Authenticate(tok)
	wantCode(t, err, disk.ErrPermission, "")
}

// TestUnknownUserCost checks that an unknown user costs a full hash: the
// dummy hash uses the store's iteration count, the same as real users.
func TestUnknownUserCost(t *testing.T) {
	s, _ := newStore(t)
	if s.dummy.iter != testIter {
		t.Fatalf("dummy iterations %d, want %d", s.dummy.iter, testIter)
	}
}

func TestSessionExpiry(t *testing.T) {
	m, _, c := setup(t, &Options{IdleTimeout: 10 * time.Minute, Lifetime: time.Hour})
	var ended []string
	m.opts.OnEnd = func(s Session) { ended = append(ended, s.ID) }
	tok, s := login(t, m, "backup")
	// Used every 9 minutes the session survives idle expiry but not the
	// absolute lifetime.
	for i := 0; i < 6; i++ {
		c.Advance(9 * time.Minute)
		if _, err := m.Authenticate(tok); err != nil {
			t.Fatalf("use %d: %v", i, err)
		}
	}
	c.Advance(9 * time.Minute)
	_, err := m.Authenticate(tok)
	wantCode(t, err, disk.ErrPermission, "session expired")
	if len(ended) != 1 || ended[0] != s.ID {
		t.Errorf("OnEnd got %v", ended)
	}
	tok2, _ := login(t, m, "backup")
	c.Advance(10 * time.Minute)
	if n := len(m.Cleanup()); n != 1 {
		t.Errorf("Cleanup ended %d sessions, want 1", n)
	}
	_, err = m.Authenticate(tok2)
	wantCode(t, err, disk.ErrPermission, "")
}

// TestSessionBusyWithConnections: a session whose ticket carries a live
// connection does not idle out, however long it makes no API call; its
// idle time starts when the connection closes; the absolute lifetime
// still ends it, connection or not.
func TestSessionBusyWithConnections(t *testing.T) {
	m, _, c := setup(t, &Options{IdleTimeout: 10 * time.Minute, Lifetime: 3 * time.Hour})
	tok, s := login(t, m, "backup")
	tk, _, err := m.Issue(s, "disk/db", ReadOnly, 24*time.Hour, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, release, err := m.Redeem(tk, "disk/db")
	if err != nil {
		t.Fatal(err)
	}
	for range 6 { // an hour of transfer, no API call
		c.Advance(10 * time.Minute)
		if n := len(m.Cleanup()); n != 0 {
			t.Fatalf("Cleanup ended %d sessions with a connection open", n)
		}
	}
	release()
	c.Advance(9 * time.Minute)
	if _, err := m.Authenticate(tok); err != nil {
		t.Fatalf("9 minutes after the connection closed: %v", err)
	}
	c.Advance(11 * time.Minute)
	if n := len(m.Cleanup()); n != 1 {
		t.Fatalf("Cleanup ended %d sessions 11 minutes idle, want 1", n)
	}

	// The lifetime ends a busy session too.
	_, s2 := login(t, m, "backup")
	tk2, _, err := m.Issue(s2, "disk/db", ReadOnly, 24*time.Hour, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := m.Redeem(tk2, "disk/db"); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 18; i++ {
		c.Advance(10 * time.Minute)
		m.Cleanup()
	}
	if _, err := m.Authenticate(tok); err == nil {
		t.Fatal("the first session came back")
	}
	for _, live := range m.Sessions() {
		if live.ID == s2.ID {
			t.Fatal("a busy session outlived its 3-hour lifetime")
		}
	}
}

func TestTickets(t *testing.T) {
	m, _, c := setup(t, nil)
	_, ro := login(t, m, "read-only")
	_, rs := login(t, m, "restore")
	const target = "vm/web01/scsi0:0"

	_, _, err := m.Issue(ro, target, ReadWrite, 0, nil)
	wantCode(t, err, disk.ErrPermission, "may not")
	tk, g, err := m.Issue(ro, target, ReadOnly, time.Minute, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(tk) != 43 || strings.ContainsAny(tk, "+/=") {
		t.Errorf("ticket %q is not 43 base64url characters", tk)
	}
	if g.Mode != ReadOnly || g.Target != target || g.User != "read-only" {
		t.Errorf("grant %+v", g)
	}

	t.Run("another disk", func(t *testing.T) {
		_, _, err := m.Redeem(tk, "disk/db")
		wantCode(t, err, disk.ErrPermission, "not valid")
	})
	t.Run("unknown", func(t *testing.T) {
		_, _, err := m.Redeem(strings.Repeat("a", 43), "")
		wantCode(t, err, disk.ErrPermission, "")
		_, _, err = m.Redeem("", "")
		wantCode(t, err, disk.ErrPermission, "")
	})
	t.Run("max conns", func(t *testing.T) {
		tk, _, err := m.Issue(rs, "disk/db@snapshot-3", ReadWrite, 0, &TicketOptions{MaxConns: 2})
		if err != nil {
			t.Fatal(err)
		}
		g1, r1, err := m.Redeem(tk, "disk/db@snapshot-3")
		if err != nil || g1.Mode != ReadWrite {
			t.Fatal(g1, err)
		}
		_, r2, err := m.Redeem(tk, "")
		if err != nil {
			t.Fatal(err)
		}
		_, _, err = m.Redeem(tk, "")
		wantCode(t, err, disk.ErrBusy, "connection limit of 2")
		r1()
		r1() // idempotent
		_, r3, err := m.Redeem(tk, "")
		if err != nil {
			t.Fatal(err)
		}
		_, _, err = m.Redeem(tk, "")
		wantCode(t, err, disk.ErrBusy, "")
		r2()
		r3()
	})
	t.Run("single use", func(t *testing.T) {
		tk, _, err := m.Issue(rs, "disk/db", ReadOnly, 0, &TicketOptions{MaxUses: 1})
		if err != nil {
			t.Fatal(err)
		}
		_, r, err := m.Redeem(tk, "")
		if err != nil {
			t.Fatal(err)
		}
		r()
		_, _, err = m.Redeem(tk, "")
		wantCode(t, err, disk.ErrPermission, "already used")
	})
	t.Run("revoked", func(t *testing.T) {
		tk, g, err := m.Issue(rs, "disk/db", ReadOnly, 0, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := m.Revoke(g.ID); err != nil {
			t.Fatal(err)
		}
		_, _, err = m.Redeem(tk, "")
		wantCode(t, err, disk.ErrPermission, "")
		wantCode(t, m.Revoke(g.ID), disk.ErrNotFound, "")
	})
	t.Run("revoked by session", func(t *testing.T) {
		tk, _, err := m.Issue(rs, "disk/db", ReadOnly, 0, nil)
		if err != nil {
			t.Fatal(err)
		}
		ids, err := m.RevokeSession(rs.ID)
		if err != nil || len(ids) == 0 {
			t.Fatal(ids, err)
		}
		_, _, err = m.Redeem(tk, "")
		wantCode(t, err, disk.ErrPermission, "")
	})
	t.Run("expired", func(t *testing.T) {
		c.Advance(time.Minute)
		_, _, err := m.Redeem(tk, target)
		wantCode(t, err, disk.ErrPermission, "ticket expired")
	})
	t.Run("logout revokes", func(t *testing.T) {
		tok, s := login(t, m, "admin")
		tk, _, err := m.Issue(s, "disk/x", ReadWrite, 0, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := m.Logout(tok); err != nil {
			t.Fatal(err)
		}
		_, _, err = m.Redeem(tk, "")
		wantCode(t, err, disk.ErrPermission, "")
		_, _, err = m.Issue(s, "disk/x", ReadOnly, 0, nil)
		wantCode(t, err, disk.ErrPermission, "session ended")
	})
	t.Run("bad target", func(t *testing.T) {
		for _, tg := range []string{"", "a\x00b", strings.Repeat("x", 2000), "\xff"} {
			_, _, err := m.Issue(rs, tg, ReadOnly, 0, nil)
			wantCode(t, err, disk.ErrInvalid, "")
		}
	})
}

func TestTicketLimit(t *testing.T) {
	m, _, _ := setup(t, &Options{MaxTickets: 2, MaxSessions: 2}) // one kept for admins
	_, s := login(t, m, "backup")
	for i := 0; i < 2; i++ {
		if _, _, err := m.Issue(s, "disk/a", ReadOnly, 0, nil); err != nil {
			t.Fatal(err)
		}
	}
	_, _, err := m.Issue(s, "disk/a", ReadOnly, 0, nil)
	wantCode(t, err, disk.ErrBusy, "ticket limit")
	_, _, err = m.Login("restore", "password-restore", "")
	wantCode(t, err, disk.ErrBusy, "session limit")
	// The session is still usable after the refusals.
	if _, err := m.RevokeSession(s.ID); err != nil {
		t.Fatal(err)
	}
	if _, _, err := m.Issue(s, "disk/a", ReadOnly, 0, nil); err != nil {
		t.Fatal(err)
	}
}

func TestStorePersistence(t *testing.T) {
	s, path := newStore(t)
	pw, err := s.Bootstrap("root", "")
	if err != nil || len(pw) < 20 {
		t.Fatalf("Bootstrap: %q, %v", pw, err)
	}
	if _, err := s.Bootstrap("root2", ""); !errors.Is(err, disk.ErrBusy) {
		t.Errorf("second Bootstrap: got %v, want busy", err)
	}
	if err := s.Add("bob", RoleBackup, "short"); !errors.Is(err, disk.ErrInvalid) {
		t.Errorf("short password: got %v", err)
	}
	if err := s.Add("bob", RoleBackup, "bob-password-1"); err != nil {
		t.Fatal(err)
	}
	if err := s.Add("bob", RoleBackup, "bob-password-1"); !errors.Is(err, disk.ErrInvalid) {
		t.Errorf("duplicate: got %v", err)
	}
	if err := s.Add("eve", RoleRestore, "eve-password-1"); err != nil {
		t.Fatal(err)
	}
	if err := s.SetRole("bob", RoleRestore); err != nil {
		t.Fatal(err)
	}
	if err := s.SetPassword("bob", "bob-password-2"); err != nil {
		t.Fatal(err)
	}
	if err := s.Remove("eve"); err != nil {
		t.Fatal(err)
	}
	wantCode(t, s.Remove("eve"), disk.ErrNotFound, "")
	wantCode(t, s.Remove("root"), disk.ErrInvalid, "last admin")
	wantCode(t, s.SetRole("root", RoleBackup), disk.ErrInvalid, "last admin")

	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("user file: %v, %v", fi, err)
	}
	s2, err := OpenStore(path, &StoreOptions{Iterations: testIter})
	if err != nil {
		t.Fatal(err)
	}
	want := []User{{"bob", RoleRestore}, {"root", RoleAdmin}}
	got := s2.List()
	if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] {
		t.Errorf("List after reopen: got %v, want %v", got, want)
	}
	if _, err := s2.Verify("bob", "bob-password-2"); err != nil {
		t.Error(err)
	}
	if _, err := s2.Verify("bob", "bob-password-1"); !errors.Is(err, disk.ErrPermission) {
		t.Errorf("old password: got %v", err)
	}
	if _, err := s2.Verify("root", pw); err != nil {
		t.Error(err)
	}
	if data, _ := os.ReadFile(path); strings.Contains(string(data), "bob-password") {
		t.Error("user file contains a clear password")
	}
	ents, _ := os.ReadDir(filepath.Dir(path))
	if len(ents) != 1 {
		t.Errorf("leftover files: %v", ents)
	}
}

func TestCorruptUserFile(t *testing.T) {
	tests := map[string]string{
		"garbage":    "not json",
		"truncated":  `{"version":1,"users":[{"name":"a"`,
		"version":    `{"version":2,"users":[]}`,
		"role":       `{"version":1,"users":[{"name":"a","role":"god","hash":"x"}]}`,
		"hash":       `{"version":1,"users":[{"name":"a","role":"admin","hash":"md5$x"}]}`,
		"name":       `{"version":1,"users":[{"name":"a/b","role":"admin","hash":"x"}]}`,
		"unknown":    `{"version":1,"users":[],"extra":1}`,
		"iterations": `{"version":1,"users":[{"name":"a","role":"admin","hash":"pbkdf2-sha256$999999999999$AAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}]}`,
	}
	for name, content := range tests {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "users.json")
			if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := OpenStore(path, &StoreOptions{Iterations: testIter})
			wantCode(t, err, disk.ErrCorrupt, "")
			data, _ := os.ReadFile(path)
			if string(data) != content {
				t.Errorf("user file changed to %q", data)
			}
		})
	}
}

func TestLimiter(t *testing.T) {
	l := NewLimiter(Limits{HostConns: 3, DiskConns: 2, SessionConns: 2, Memory: 100, SessionMemory: 60})
	r1, err := l.AcquireConn("s1", "disk/a")
	if err != nil {
		t.Fatal(err)
	}
	r2, err := l.AcquireConn("s2", "disk/a")
	if err != nil {
		t.Fatal(err)
	}
	_, err = l.AcquireConn("s3", "disk/a")
	wantCode(t, err, disk.ErrBusy, `for "disk/a"`)
	r3, err := l.AcquireConn("s1", "disk/b")
	if err != nil {
		t.Fatal(err)
	}
	_, err = l.AcquireConn("s1", "disk/c")
	wantCode(t, err, disk.ErrBusy, "host connection limit")
	r2()
	_, err = l.AcquireConn("s1", "disk/c")
	wantCode(t, err, disk.ErrBusy, "session connection limit")
	r1()
	r3()
	m1, err := l.ReserveMemory("s1", 60)
	if err != nil {
		t.Fatal(err)
	}
	_, err = l.ReserveMemory("s1", 1)
	wantCode(t, err, disk.ErrOutOfMemory, "session memory budget")
	_, err = l.ReserveMemory("s2", 41)
	wantCode(t, err, disk.ErrOutOfMemory, "host memory budget")
	m2, err := l.ReserveMemory("s2", 40)
	if err != nil {
		t.Fatal(err)
	}
	m1()
	m2()
	if c, m := l.Usage(); c != 0 || m != 0 {
		t.Errorf("usage after release: %d conns, %d bytes", c, m)
	}
}

func TestLimiterConcurrent(t *testing.T) {
	const limit = 4
	l := NewLimiter(Limits{HostConns: limit * 2, DiskConns: limit, Memory: 1000, SessionMemory: 300})
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		inUse    = map[string]int{}
		maxInUse int
	)
	for g := 0; g < 32; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			target := []string{"disk/a", "disk/b"}[g%2]
			sess := []string{"s1", "s2", "s3", "s4"}[g%4]
			for i := 0; i < 200; i++ {
				rel, err := l.AcquireConn(sess, target)
				if err != nil {
					if !errors.Is(err, disk.ErrBusy) {
						t.Error(err)
					}
					continue
				}
				mu.Lock()
				inUse[target]++
				maxInUse = max(maxInUse, inUse[target])
				mu.Unlock()
				mrel, err := l.ReserveMemory(sess, 100)
				if err == nil {
					mrel()
				} else if !errors.Is(err, disk.ErrOutOfMemory) {
					t.Error(err)
				}
				mu.Lock()
				inUse[target]--
				mu.Unlock()
				rel()
				rel()
			}
		}()
	}
	wg.Wait()
	if maxInUse > limit {
		t.Errorf("%d connections to one disk, limit %d", maxInUse, limit)
	}
	if c, m := l.Usage(); c != 0 || m != 0 {
		t.Errorf("leak: %d conns, %d bytes", c, m)
	}
	if len(l.diskConns) != 0 || len(l.sessConns) != 0 || len(l.sessMem) != 0 {
		t.Errorf("leaked map entries: %v %v %v", l.diskConns, l.sessConns, l.sessMem)
	}
}

func TestTicketsConcurrent(t *testing.T) {
	m, _, _ := setup(t, nil)
	_, s := login(t, m, "restore")
	tk, _, err := m.Issue(s, "disk/a", ReadWrite, 0, &TicketOptions{MaxConns: 3})
	if err != nil {
		t.Fatal(err)
	}
	var (
		wg         sync.WaitGroup
		mu         sync.Mutex
		held, peak int
	)
	for g := 0; g < 16; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 100; i++ {
				_, rel, err := m.Redeem(tk, "disk/a")
				if err != nil {
					if !errors.Is(err, disk.ErrBusy) {
						t.Error(err)
					}
					continue
				}
				mu.Lock()
				held++
				peak = max(peak, held)
				mu.Unlock()
				mu.Lock()
				held--
				mu.Unlock()
				rel()
			}
		}()
	}
	wg.Wait()
	if peak > 3 {
		t.Errorf("peak %d connections, limit 3", peak)
	}
	for i := 0; i < 3; i++ {
		if _, _, err := m.Redeem(tk, ""); err != nil {
			t.Fatalf("slot %d leaked: %v", i, err)
		}
	}
}

func BenchmarkRedeem(b *testing.B) {
	m, _, _ := setup(b, nil)
	_, s := login(b, m, "backup")
	tk, _, err := m.Issue(s, "disk/a", ReadOnly, time.Hour, &TicketOptions{MaxConns: 64})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		_, rel, err := m.Redeem(tk, "disk/a")
		if err != nil {
			b.Fatal(err)
		}
		rel()
	}
}

func BenchmarkAuthenticate(b *testing.B) {
	m, _, _ := setup(b, nil)
	tok, _ := login(b, m, "backup")
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := m.Authenticate(tok); err != nil {
			b.Fatal(err)
		}
	}
}

// TestIDsNeverLookLikeFlags: session and ticket IDs and tokens never begin
// with '-', which a command line would take for a flag.
func TestIDsNeverLookLikeFlags(t *testing.T) {
	for range 20000 {
		id, err := newID()
		tok, _, terr := newToken()
		if err != nil || terr != nil {
			t.Fatal(err, terr)
		}
		if id[0] == '-' || tok[0] == '-' || len(id) != 16 || len(tok) != tokenLen {
			t.Fatalf("id %q, token %q", id, tok)
		}
	}
}
