package auth

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/vdisk-project/vdisk/disk"
)

var noThrottle = ThrottleOptions{UserFailures: -1, AddrFailures: -1}

// loginAll logs user in n times at once and returns the sessions made and
// the errors of the refusals.
func loginAll(m *Manager, user string, n int) ([]Session, []error) {
	var (
		mu       sync.Mutex
		sessions []Session
		errs     []error
		wg       sync.WaitGroup
	)
	for range n {
		wg.Go(func() {
			_, s, err := m.Login(user, "password-"+user, "")
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, err)
			} else {
				sessions = append(sessions, s)
			}
		})
	}
	wg.Wait()
	return sessions, errs
}

// TestUserSessionLimit: one read-only user logging in from many goroutines
// at once gets exactly MaxUserSessions sessions, the rest are refused
// with ErrBusy, and an admin still logs in.
func TestUserSessionLimit(t *testing.T) {
	// Without the login throttle, which lets only a few logins of one
	// user be checked at once (TestThrottleConcurrent).
	m, _, _ := setup(t, &Options{MaxSessions: 100, MaxUserSessions: 8, Throttle: noThrottle})
	got, errs := loginAll(m, "read-only", 50)
	if len(got) != 8 || len(errs) != 42 {
		t.Fatalf("50 logins with a limit of 8: got %d sessions and %d refusals, want 8 and 42", len(got), len(errs))
	}
	for _, err := range errs {
		wantCode(t, err, disk.ErrBusy, "most sessions")
	}
	login(t, m, "root")
	// Ending one makes room for one.
	if err := m.End(got[0].ID); err != nil {
		t.Fatal(err)
	}
	if got, _ := loginAll(m, "read-only", 5); len(got) != 1 {
		t.Errorf("after ending one of 8 sessions: %d logins succeeded, want 1", len(got))
	}
}

// TestAdminSessionsReserved: many non-admin users filling the host at once,
// while admins log in at the same time, never take the room kept for
// admins.
func TestAdminSessionsReserved(t *testing.T) {
	m, s, _ := setup(t, &Options{MaxSessions: 20, MaxUserSessions: 8, AdminSessions: 4, Throttle: noThrottle})
	var users []string
	for i := range 5 {
		name := fmt.Sprintf("ro%d", i)
		if err := s.Add(name, RoleReadOnly, "password-"+name); err != nil {
			t.Fatal(err)
		}
		users = append(users, name)
	}
	var (
		wg               sync.WaitGroup
		mu               sync.Mutex
		others           int
		adminErrs        []error
		adminSessions    int
		nonAdminBusyErrs int
	)
	for _, u := range users {
		wg.Go(func() {
			got, errs := loginAll(m, u, 8) // 40 in all, 16 fit
			mu.Lock()
			defer mu.Unlock()
			others += len(got)
			for _, err := range errs {
				if !errors.Is(err, disk.ErrBusy) {
					t.Errorf("login %s: %v, want ErrBusy", u, err)
				}
				nonAdminBusyErrs++
			}
		})
	}
	for _, a := range []string{"root", "admin"} {
		wg.Go(func() {
			got, errs := loginAll(m, a, 2)
			mu.Lock()
			defer mu.Unlock()
			adminSessions += len(got)
			adminErrs = append(adminErrs, errs...)
		})
	}
	wg.Wait()
	if len(adminErrs) > 0 {
		t.Fatalf("admin logins refused while others filled the host: %v", adminErrs)
	}
	if others != 16 || nonAdminBusyErrs != 24 || adminSessions != 4 {
		t.Fatalf("got %d non-admin sessions (%d refused) and %d admin ones, want 16 (24) and 4", others, nonAdminBusyErrs, adminSessions)
	}
	// The host is full now: even an admin is refused, with ErrBusy.
	_, _, err := m.Login("root", "password-root", "")
	wantCode(t, err, disk.ErrBusy, "session limit of 20")
}

// TestSessionLimitExpired: sessions that expired but were not cleaned up
// yet do not count against the limits.
func TestSessionLimitExpired(t *testing.T) {
	m, _, c := setup(t, &Options{MaxUserSessions: 2, IdleTimeout: time.Minute})
	var ended []string
	var mu sync.Mutex
	m.opts.OnEnd = func(s Session) { mu.Lock(); ended = append(ended, s.ID); mu.Unlock() }
	_, a := login(t, m, "backup")
	_, b := login(t, m, "backup")
	if _, _, err := m.Login("backup", "password-backup", ""); !errors.Is(err, disk.ErrBusy) {
		t.Fatalf("third session over a limit of 2: %v, want ErrBusy", err)
	}
	c.Advance(2 * time.Minute)
	login(t, m, "backup")
	slices.Sort(ended)
	want := []string{a.ID, b.ID}
	slices.Sort(want)
	if !slices.Equal(ended, want) {
		t.Errorf("OnEnd got %v, want the expired %v", ended, want)
	}
}

func TestSessionOptionDefaults(t *testing.T) {
	tests := []struct {
		name      string
		in        Options
		max, user int
		admin     int
	}{
		{"zero", Options{}, DefaultMaxSessions, DefaultMaxUserSessions, DefaultAdminSessions},
		{"small host", Options{MaxSessions: 8}, 8, DefaultMaxUserSessions, 2},
		{"tiny host", Options{MaxSessions: 2}, 2, DefaultMaxUserSessions, 1},
		{"reserve over max", Options{MaxSessions: 4, AdminSessions: 9}, 4, DefaultMaxUserSessions, 4},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := NewManager(nil, &tt.in)
			o := m.opts
			if o.MaxSessions != tt.max || o.MaxUserSessions != tt.user || o.AdminSessions != tt.admin {
				t.Errorf("got max %d, per user %d, admin %d; want %d, %d, %d", o.MaxSessions, o.MaxUserSessions, o.AdminSessions, tt.max, tt.user, tt.admin)
			}
		})
	}
}

// TestCredentialChangeEndsSessions: a password change, reset, role change
// or removal ends the user's (other) sessions, refuses their tokens and
// tickets and tells OnEnd; a user changing their own password keeps the
// calling session and its tickets.
func TestCredentialChangeEndsSessions(t *testing.T) {
	tests := []struct {
		name   string
		change func(m *Manager, caller Session) (int, error)
		keep   bool // the caller's session survives
		newPw  bool // the password is now "password-new-one"
	}{
		{"own password", func(m *Manager, s Session) (int, error) { return m.ChangePassword(s, "password-new-one") }, true, true},
		{"reset by admin", func(m *Manager, s Session) (int, error) { return m.ResetPassword("backup", "password-new-one") }, false, true},
		{"role", func(m *Manager, s Session) (int, error) { return m.SetRole("backup", RoleRestore) }, false, false},
		{"remove", func(m *Manager, s Session) (int, error) { return m.RemoveUser("backup") }, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, _, _ := setup(t, nil)
			var mu sync.Mutex
			var ended []string
			m.opts.OnEnd = func(s Session) { mu.Lock(); ended = append(ended, s.ID); mu.Unlock() }
			type held struct {
				tok     string
				sess    Session
				ticket  string
				release func()
			}
			var hs []held
			for range 3 {
				tok, s := login(t, m, "backup")
				tk, _, err := m.Issue(s, "disk/db", ReadOnly, 0, &TicketOptions{MaxConns: 4})
				if err != nil {
					t.Fatal(err)
				}
				_, release, err := m.Redeem(tk, "disk/db") // an open NBD connection
				if err != nil {
					t.Fatal(err)
				}
				hs = append(hs, held{tok, s, tk, release})
			}
			_, other := login(t, m, "restore") // another user is not touched
			n, err := tt.change(m, hs[0].sess)
			if err != nil {
				t.Fatal(err)
			}
			var want []string
			for i, h := range hs {
				h.release()
				_, aerr := m.Authenticate(h.tok)
				_, rel, rerr := m.Redeem(h.ticket, "disk/db")
				if i == 0 && tt.keep {
					if aerr != nil || rerr != nil {
						t.Errorf("caller's session after %s: token %v, ticket %v; want both to work", tt.name, aerr, rerr)
					}
					if rel != nil {
						rel()
					}
					continue
				}
				want = append(want, h.sess.ID)
				wantCode(t, aerr, disk.ErrPermission, "")
				wantCode(t, rerr, disk.ErrPermission, "invalid ticket")
			}
			if n != len(want) {
				t.Errorf("%s ended %d sessions, want %d", tt.name, n, len(want))
			}
			slices.Sort(ended)
			slices.Sort(want)
			if !slices.Equal(ended, want) {
				t.Errorf("OnEnd got %v, want %v", ended, want)
			}
			if _, err := m.Authenticate(other.ID); err == nil {
				t.Error("a session ID authenticated")
			}
			if !slices.ContainsFunc(m.Sessions(), func(s Session) bool { return s.ID == other.ID }) {
				t.Errorf("%s of backup ended restore's session", tt.name)
			}
			if tt.newPw {
				if _, _, err := m.Login("backup", "password-backup", ""); !errors.Is(err, disk.ErrPermission) {
					t.Errorf("old password after %s: %v, want ErrPermission", tt.name, err)
				}
				if _, _, err := m.Login("backup", "password-new-one", ""); err != nil {
					t.Errorf("new password after %s: %v", tt.name, err)
				}
			}
		})
	}
}

// TestLoginDuringPasswordReset: a login that checked the old password
// just before a reset does not add a session after the reset ended the
// others.
func TestLoginDuringPasswordReset(t *testing.T) {
	m, _, _ := setup(t, nil)
	verified := make(chan struct{})
	resume := make(chan struct{})
	m.testHookVerified = func() { close(verified); <-resume }
	errc := make(chan error, 1)
	go func() {
		_, _, err := m.Login("backup", "password-backup", "")
		errc <- err
	}()
	<-verified
	if _, err := m.ResetPassword("backup", "password-new-one"); err != nil {
		t.Fatal(err)
	}
	close(resume)
	wantCode(t, <-errc, disk.ErrBusy, "changed during login")
	for _, s := range m.Sessions() {
		if s.User == "backup" {
			t.Errorf("session %s made with the old password outlived the reset", s.ID)
		}
	}
}

// TestChangePasswordEndedSession: a session that has ended cannot change
// its user's password.
func TestChangePasswordEndedSession(t *testing.T) {
	m, _, _ := setup(t, nil)
	tok, s := login(t, m, "backup")
	if err := m.Logout(tok); err != nil {
		t.Fatal(err)
	}
	_, err := m.ChangePassword(s, "password-new-one")
	wantCode(t, err, disk.ErrPermission, "session ended")
	login(t, m, "backup") // the old password still works
}
