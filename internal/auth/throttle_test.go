package auth

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vdisk-project/vdisk/disk"
)

// attempt is what one login attempt answered and cost.
type attempt struct {
	err    string
	wait   time.Duration // of a ThrottledError
	hashed int64         // password hashes it cost
}

func try(m *Manager, user, password, client string) attempt {
	before := m.store.hashes.Load()
	_, _, err := m.Login(user, password, client)
	a := attempt{hashed: m.store.hashes.Load() - before}
	if err != nil {
		a.err = err.Error()
		var te *ThrottledError
		if errors.As(err, &te) {
			a.wait = te.RetryAfter
			if !errors.Is(err, disk.ErrBusy) || disk.CodeOf(err) != disk.ErrBusy {
				panic("a ThrottledError is not ErrBusy")
			}
		}
	}
	return a
}

func throttleOpts(o ThrottleOptions) *Options {
	if o.BaseDelay == 0 {
		o.BaseDelay = time.Second
	}
	if o.MaxDelay == 0 {
		o.MaxDelay = 8 * time.Second
	}
	return &Options{Throttle: o}
}

// TestThrottleBackoff: after the free failures each attempt waits,
// doubling up to MaxDelay; a waiting attempt is refused unchecked even
// with the right password; a lockout ends; a success clears the user's
// failures.
func TestThrottleBackoff(t *testing.T) {
	m, _, c := setup(t, throttleOpts(ThrottleOptions{UserFailures: 3, AddrFailures: -1}))
	for i := range 3 {
		if a := try(m, "backup", "wrong-password", "192.0.2.1"); a.wait != 0 || a.hashed != 1 {
			t.Fatalf("free failure %d: got %+v, want a checked refusal", i, a)
		}
	}
	for _, want := range []time.Duration{1, 2, 4, 8, 8, 8} {
		want *= time.Second
		a := try(m, "backup", "password-backup", "192.0.2.9")
		if a.wait != want || a.hashed != 0 {
			t.Fatalf("right password while waiting: got %+v, want a wait of %s, unchecked", a, want)
		}
		c.Advance(want - time.Millisecond)
		if a := try(m, "backup", "wrong-password", ""); a.wait != time.Millisecond {
			t.Fatalf("just before the wait ends: got %+v, want 1ms left", a)
		}
		c.Advance(time.Millisecond)
		if a := try(m, "backup", "wrong-password", ""); a.wait != 0 || a.hashed != 1 || !strings.Contains(a.err, "invalid user name or password") {
			t.Fatalf("after the wait: got %+v, want a checked refusal", a)
		}
	}
	// Bounded: after MaxDelay the right password gets in, and the
	// failures are forgotten.
	c.Advance(8 * time.Second)
	if a := try(m, "backup", "password-backup", ""); a.err != "" {
		t.Fatalf("right password after the lockout: %+v", a)
	}
	for i := range 3 {
		if a := try(m, "backup", "wrong-password", ""); a.wait != 0 {
			t.Fatalf("failure %d after a success: got %+v, want it let through", i, a)
		}
	}
	// Failures older than the window are forgotten too.
	c.Advance(DefaultFailWindow)
	if a := try(m, "backup", "wrong-password", ""); a.wait != 0 {
		t.Fatalf("after the window: %+v", a)
	}
}

// TestThrottleUnknownUser: an unknown user name is slowed exactly like a
// known one, with the same answers and the same work, so neither reveals
// which names exist.
func TestThrottleUnknownUser(t *testing.T) {
	run := func(user string) []attempt {
		m, _, c := setup(t, throttleOpts(ThrottleOptions{UserFailures: 2, AddrFailures: 4}))
		var out []attempt
		for range 8 {
			out = append(out, try(m, user, "wrong-password", "198.51.100.7"))
			c.Advance(1500 * time.Millisecond)
		}
		return out
	}
	known, unknown := run("backup"), run("no-such-user")
	waits := 0
	for i := range known {
		if known[i] != unknown[i] {
			t.Errorf("attempt %d: known user %+v, unknown user %+v", i, known[i], unknown[i])
		}
		if known[i].wait > 0 {
			waits++
		}
	}
	if waits == 0 {
		t.Errorf("8 failures in 12s: %+v, want some told to wait", known)
	}
}

// TestThrottleAddress: one address guessing many names is slowed; other
// addresses are not; an IPv6 /64 is one address.
func TestThrottleAddress(t *testing.T) {
	m, _, _ := setup(t, throttleOpts(ThrottleOptions{UserFailures: -1, AddrFailures: 3}))
	tests := []struct {
		client string
		wait   bool
	}{
		{"203.0.113.5", false},
		{"203.0.113.5", false},
		{"::ffff:203.0.113.5", false}, // the same IPv4 address
		{"203.0.113.5", true},
		{"203.0.113.6", false},
		{"2001:db8:1:2::1", false},
		{"2001:db8:1:2::2", false},
		{"2001:db8:1:2:ffff::3%eth0", false},
		{"2001:db8:1:2::4", true}, // the same /64
		{"2001:db8:1:3::1", false},
		{"[2001:db8:1:2::5]:443", true},
	}
	for i, tt := range tests {
		a := try(m, fmt.Sprintf("user%d", i), "wrong-password", tt.client)
		if (a.wait != 0) != tt.wait {
			t.Errorf("attempt %d from %s: got %+v, want waiting %v", i, tt.client, a, tt.wait)
		}
	}
	// A success from the address does not clear its failures.
	m2, _, _ := setup(t, throttleOpts(ThrottleOptions{UserFailures: -1, AddrFailures: 2}))
	try(m2, "backup", "wrong-password", "192.0.2.1")
	if a := try(m2, "restore", "password-restore", "192.0.2.1"); a.err != "" {
		t.Fatal(a)
	}
	try(m2, "admin", "wrong-password", "192.0.2.1")
	if a := try(m2, "root", "wrong-password", "192.0.2.1"); a.wait == 0 {
		t.Errorf("third failure from one address despite a success between: %+v, want a wait", a)
	}
}

// TestThrottleConcurrent: many wrong attempts at once get no more checks
// than the free failures: all are started before any is checked.
func TestThrottleConcurrent(t *testing.T) {
	m, _, _ := setup(t, throttleOpts(ThrottleOptions{UserFailures: 5, AddrFailures: -1}))
	const n = 100
	var (
		wg              sync.WaitGroup
		mu              sync.Mutex
		checked, waited int
		admitted        int
		settled         = make(chan struct{}, n) // admitted or refused
		release         = make(chan struct{})
	)
	m.testHookAdmitted = func() {
		mu.Lock()
		admitted++
		mu.Unlock()
		settled <- struct{}{}
		<-release
	}
	before := m.store.hashes.Load()
	for range n {
		wg.Go(func() {
			a := try(m, "admin", "wrong-password", "")
			mu.Lock()
			defer mu.Unlock()
			switch {
			case a.wait > 0:
				waited++
				settled <- struct{}{}
			case strings.Contains(a.err, "invalid user name or password"):
				checked++
			default:
				t.Errorf("got %+v", a)
			}
		})
	}
	for range n {
		<-settled
	}
	close(release)
	wg.Wait()
	if h := m.store.hashes.Load() - before; admitted != 5 || checked != 5 || waited != n-5 || h != 5 {
		t.Errorf("%d concurrent guesses: %d admitted, %d checked (%d hashes), %d told to wait; want 5, 5 (5) and %d", n, admitted, checked, h, waited, n-5)
	}
}

// TestThrottleBounded: an attacker spraying names and addresses does not
// grow the throttle past MaxTracked; the oldest entries go first.
func TestThrottleBounded(t *testing.T) {
	o := throttleOpts(ThrottleOptions{UserFailures: 1, AddrFailures: 1, MaxTracked: 50})
	o.MaxUserSessions = 1000
	m, _, _ := setup(t, o)
	for i := range 1000 {
		try(m, fmt.Sprintf("spray%d", i), "wrong-password", fmt.Sprintf("10.%d.%d.1", i/256, i%256))
	}
	for i := range 100 {
		if a := try(m, "backup", "password-backup", fmt.Sprintf("10.9.%d.1", i)); a.err != "" { // trusted pairs
			t.Fatal(a)
		}
	}
	u, a, tr := m.throttle.tracked()
	if u > 50 || a > 50 || tr > 50 {
		t.Fatalf("tracking %d names, %d addresses, %d trusted pairs; want at most 50 each", u, a, tr)
	}
	if w := try(m, "spray999", "x", "192.0.2.1").wait; w == 0 {
		t.Error("the newest failed name was forgotten")
	}
	if w := try(m, "spray0", "x", "192.0.2.2").wait; w != 0 {
		t.Error("the oldest failed name was kept")
	}
}

// TestThrottleTrusted: failures from elsewhere do not lock a user out
// where they logged in from before, unless TrustFor is off.
func TestThrottleTrusted(t *testing.T) {
	for _, trust := range []time.Duration{0, -1} {
		t.Run(fmt.Sprint("TrustFor=", trust), func(t *testing.T) {
			m, _, c := setup(t, throttleOpts(ThrottleOptions{UserFailures: 2, TrustFor: trust}))
			const home, attacker = "192.0.2.10", "203.0.113.66"
			if a := try(m, "root", "password-root", home); a.err != "" {
				t.Fatal(a)
			}
			for range 5 {
				try(m, "root", "wrong-password", attacker)
				c.Advance(100 * time.Millisecond)
			}
			if a := try(m, "root", "password-root", "198.51.100.1"); a.wait == 0 {
				t.Errorf("root from a new address after guesses: %+v, want a wait", a)
			}
			a := try(m, "root", "password-root", home)
			if trust == 0 && a.err != "" {
				t.Errorf("root from home after guesses elsewhere: %+v, want a login", a)
			}
			if trust < 0 && a.wait == 0 {
				t.Errorf("root from home without trust: %+v, want a wait", a)
			}
			if trust == 0 {
				c.Advance(DefaultTrustFor)
				if a := try(m, "root", "wrong-password", attacker); a.wait != 0 {
					t.Fatalf("%+v", a)
				}
				try(m, "root", "wrong-password", attacker)
				if a := try(m, "root", "password-root", home); a.wait == 0 {
					t.Errorf("root from home after TrustFor: %+v, want a wait", a)
				}
			}
		})
	}
}

// TestLoginLengthBounds: over-long names and passwords are refused before
// any hashing, at login and wherever a password is set.
func TestLoginLengthBounds(t *testing.T) {
	m, s, _ := setup(t, nil)
	_, sess := login(t, m, "backup")
	big := strings.Repeat("p", 10<<20)
	before := s.hashes.Load()
	call := func(f func() (int, error)) error { _, err := f(); return err }
	checks := []struct {
		name string
		err  error
	}{
		{"login password", func() error { _, _, err := m.Login("backup", big, ""); return err }()},
		{"login name", func() error { _, _, err := m.Login(big, "password-backup", ""); return err }()},
		{"verify password", func() error { _, err := s.Verify("backup", big); return err }()},
		{"add", s.Add("new-user", RoleReadOnly, big)},
		{"add name", s.Add(big, RoleReadOnly, "password-long-enough")},
		{"set password", s.SetPassword("backup", big)},
		{"reset", call(func() (int, error) { return m.ResetPassword("backup", big) })},
		{"change", call(func() (int, error) { return m.ChangePassword(sess, big) })},
	}
	for _, c := range checks {
		if c.name == "verify password" {
			wantCode(t, c.err, disk.ErrPermission, "")
		} else {
			wantCode(t, c.err, disk.ErrInvalid, "longer than")
		}
		if len(c.err.Error()) > 200 {
			t.Errorf("%s: the error carries the input (%d bytes)", c.name, len(c.err.Error()))
		}
	}
	if n := s.hashes.Load() - before; n != 0 {
		t.Errorf("over-long inputs cost %d password hashes, want 0", n)
	}
}

// TestThrottleFullInFlight: when a table is full of attempts in flight a
// new key is refused, and that refusal neither counts nor clears the
// failures already counted.
func TestThrottleFullInFlight(t *testing.T) {
	m, _, _ := setup(t, throttleOpts(ThrottleOptions{UserFailures: 3, AddrFailures: 100, MaxTracked: 1}))
	try(m, "victim", "wrong-password", "192.0.2.1") // failure 1
	admitted, release := make(chan struct{}), make(chan struct{})
	m.testHookAdmitted = func() { admitted <- struct{}{}; <-release }
	done := make(chan attempt)
	go func() { done <- try(m, "victim", "wrong-password", "192.0.2.1") }() // failure 2, held
	<-admitted
	m.testHookAdmitted = nil
	if a := try(m, "victim", "wrong-password", "192.0.2.2"); a.wait == 0 || a.hashed != 0 {
		t.Fatalf("a new address while the table is full of attempts in flight: %+v, want a wait", a)
	}
	close(release)
	<-done
	try(m, "victim", "wrong-password", "192.0.2.1") // failure 3
	if a := try(m, "victim", "wrong-password", "192.0.2.1"); a.wait == 0 {
		t.Errorf("after 3 failures with 3 free: %+v, want a wait", a)
	}
}

// TestThrottlePrune: Cleanup forgets failures past their window and
// lapsed trust, and keeps the rest.
func TestThrottlePrune(t *testing.T) {
	m, _, c := setup(t, throttleOpts(ThrottleOptions{UserFailures: 1, AddrFailures: 1, TrustFor: time.Hour}))
	try(m, "backup", "password-backup", "192.0.2.1")
	try(m, "old", "wrong-password", "192.0.2.2")
	c.Advance(DefaultFailWindow)
	try(m, "new", "wrong-password", "192.0.2.3")
	m.Cleanup()
	if u, a, tr := m.throttle.tracked(); u != 1 || a != 1 || tr != 1 {
		t.Errorf("after the window of one failure: %d names, %d addresses, %d trusted; want 1, 1, 1", u, a, tr)
	}
	c.Advance(time.Hour)
	m.Cleanup()
	if u, a, tr := m.throttle.tracked(); u != 0 || a != 0 || tr != 0 {
		t.Errorf("after all lapsed: %d names, %d addresses, %d trusted; want none", u, a, tr)
	}
}
