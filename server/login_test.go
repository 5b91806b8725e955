package server

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vdisk-project/vdisk/internal/auth"
	"github.com/vdisk-project/vdisk/internal/datastore"
	"github.com/vdisk-project/vdisk/nbd"
)

// rawLogin posts a login with extra headers and returns the status, the
// error code and the Retry-After header.
func (h *testHost) rawLogin(user, pw string, hdr map[string]string) (int, string, string) {
	h.t.Helper()
	b, _ := json.Marshal(map[string]string{"user": user, "password": pw})
	req, _ := http.NewRequest("POST", h.base+"/api/v1/login", bytes.NewReader(b))
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := h.hc.Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	var e struct{ Error APIError }
	json.NewDecoder(resp.Body).Decode(&e)
	return resp.StatusCode, e.Error.Code, resp.Header.Get("Retry-After")
}

func (h *testHost) addUser(name, role string) string {
	h.t.Helper()
	var u struct{ Password string }
	h.must("POST", "/api/v1/users", map[string]string{"name": name, "role": role}, &u)
	return u.Password
}

// TestLoginThrottle: failed logins over HTTP are slowed per user and per
// peer address (X-Forwarded-For does not choose the address), refused
// with 429, code busy and Retry-After, and the wait ends.
func TestLoginThrottle(t *testing.T) {
	t.Run("user", func(t *testing.T) {
		h := startHost(t, func(c *Config) { c.Sessions.Throttle = auth.ThrottleOptions{UserFailures: 2, AddrFailures: -1} })
		pw := h.addUser("viewer", "read-only")
		for i := range 2 {
			if st, code, _ := h.rawLogin("viewer", "wrong password!", nil); st != http.StatusForbidden {
				t.Fatalf("failure %d: %d %s, want 403", i, st, code)
			}
		}
		st, code, ra := h.rawLogin("viewer", pw, nil)
		if st != http.StatusTooManyRequests || code != "busy" || ra != "1" {
			t.Fatalf("right password while waiting: %d %s Retry-After %q, want 429 busy 1", st, code, ra)
		}
		h.clock.advance(time.Second)
		h.login("viewer", pw)
	})
	t.Run("address", func(t *testing.T) {
		h := startHost(t, func(c *Config) { c.Sessions.Throttle = auth.ThrottleOptions{UserFailures: -1, AddrFailures: 3} })
		for i := range 4 {
			fwd := map[string]string{"X-Forwarded-For": fmt.Sprintf("198.51.100.%d", i), "X-Real-IP": fmt.Sprintf("198.51.100.%d", i)}
			st, code, ra := h.rawLogin(fmt.Sprintf("guess%d", i), "wrong password!", fwd)
			want := http.StatusForbidden
			if i == 3 {
				want = http.StatusTooManyRequests
			}
			if st != want {
				t.Fatalf("guess %d from one peer, forwarded for another: %d %s %q, want %d", i, st, code, ra, want)
			}
		}
		// The admin logged in from this address before the guesses: it
		// is the address's wait that refuses.
		if st, _, _ := h.rawLogin("admin", "correct horse battery", nil); st != http.StatusTooManyRequests {
			t.Errorf("admin from the guessing address: %d, want 429", st)
		}
		h.clock.advance(time.Second)
		h.login("admin", "correct horse battery")
	})
	t.Run("long password", func(t *testing.T) {
		h := startHost(t, nil)
		if st, code, _ := h.rawLogin("admin", strings.Repeat("x", 512<<10), nil); st != http.StatusBadRequest {
			t.Errorf("512 KiB password: %d %s, want 400", st, code)
		}
	})
}

// TestAdminLogsInWhenUsersAtLimit: a read-only user opening sessions from
// many goroutines up to and past their limit and the host's room for
// non-admins is refused with busy, and the admin still logs in.
func TestAdminLogsInWhenUsersAtLimit(t *testing.T) {
	h := startHost(t, func(c *Config) {
		c.Sessions.MaxSessions = 12
		c.Sessions.MaxUserSessions = 6
		c.Sessions.AdminSessions = 3
		c.Sessions.Throttle = auth.ThrottleOptions{UserFailures: 100, AddrFailures: 100}
	})
	pws := []string{h.addUser("viewer1", "read-only"), h.addUser("viewer2", "read-only")}
	var wg sync.WaitGroup
	var mu sync.Mutex
	got := map[int]int{}
	for i := range 20 {
		wg.Go(func() {
			n := i % 2
			st, _, _ := h.rawLogin(fmt.Sprintf("viewer%d", n+1), pws[n], nil)
			mu.Lock()
			got[st]++
			mu.Unlock()
		})
	}
	wg.Wait()
	// 9 = 12 - 3 kept for admins (1 already held by the admin); each
	// viewer is refused past 6 as well.
	if got[http.StatusCreated] != 9 || got[http.StatusConflict] != 11 {
		t.Fatalf("20 viewer logins: statuses %v, want 9 created and 11 busy (409)", got)
	}
	h.login("admin", "correct horse battery")
	h.login("admin", "correct horse battery")
}

// TestPasswordChangeEndsSessions: over the API, a user changing their own
// password keeps the calling session and ends the others, with their
// tickets and NBD connections; an admin reset, a role change and a
// removal end all of them.
func TestPasswordChangeEndsSessions(t *testing.T) {
	h := startHost(t, nil)
	h.must("POST", "/api/v1/disks", map[string]any{"name": "db", "capacity": 1 << 20}, nil)
	pw := h.addUser("viewer", "read-only")
	a := h.login("viewer", pw)
	b := h.login("viewer", pw)
	var tk Ticket
	if st := h.doAs(b, "POST", "/api/v1/tickets", TicketRequest{Disk: "db", MaxConns: 4}, &tk); st != http.StatusCreated {
		t.Fatalf("ticket: %d", st)
	}
	c := h.dial(tk)
	defer c.Close()
	buf := make([]byte, 4096)
	if _, err := c.ReadAt(buf, 0); err != nil {
		t.Fatal(err)
	}

	// The viewer changes their own password from session a: not without
	// the current one (a stolen token is not the account), then with it.
	for _, cur := range []string{"", "not the password"} {
		if st := h.doAs(a, "PUT", "/api/v1/users/viewer", map[string]string{"password": "a new password, long", "currentPassword": cur}, nil); st != http.StatusForbidden {
			t.Fatalf("own password change with current password %q: %d, want 403", cur, st)
		}
	}
	if st := h.doAs(a, "PUT", "/api/v1/users/viewer", map[string]string{"password": "a new password, long", "currentPassword": pw}, nil); st != http.StatusNoContent {
		t.Fatalf("own password change: %d", st)
	}
	if st := h.doAs(a, "GET", "/api/v1/session", nil, nil); st != http.StatusOK {
		t.Errorf("the session that changed the password: %d, want 200", st)
	}
	if st := h.doAs(b, "GET", "/api/v1/session", nil, nil); st != http.StatusUnauthorized {
		t.Errorf("another session after the password change: %d, want 401", st)
	}
	if _, err := c.ReadAt(buf, 0); err == nil {
		t.Error("the other session's NBD connection still reads after the password change")
	}
	var in datastore.DiskInfo
	h.must("GET", "/api/v1/disks/db", nil, &in)
	if in.Sessions != 0 {
		t.Errorf("disk db has %d open handles after the password change, want 0", in.Sessions)
	}
	if c2, err := dialTicket(tk); err == nil {
		c2.Close()
		t.Error("the other session's ticket still opens a connection")
	}

	tests := []struct {
		name         string
		method, path string
		body         any
	}{
		{"admin reset", "PUT", "/api/v1/users/viewer", map[string]string{"password": "reset by the admin"}},
		{"role change", "PUT", "/api/v1/users/viewer", map[string]string{"role": "backup"}},
		{"removal", "DELETE", "/api/v1/users/viewer", nil},
	}
	pw = "a new password, long"
	for _, tt := range tests {
		tok := a
		if tt.name != "admin reset" {
			tok = h.login("viewer", pw)
		}
		var tk Ticket
		if st := h.doAs(tok, "POST", "/api/v1/tickets", TicketRequest{Disk: "db"}, &tk); st != http.StatusCreated {
			t.Fatalf("%s: ticket: %d", tt.name, st)
		}
		h.must(tt.method, tt.path, tt.body, nil)
		if st := h.doAs(tok, "GET", "/api/v1/session", nil, nil); st != http.StatusUnauthorized {
			t.Errorf("after %s: the user's session answers %d, want 401", tt.name, st)
		}
		if c2, err := dialTicket(tk); err == nil {
			c2.Close()
			t.Errorf("after %s: the user's ticket still opens a connection", tt.name)
		}
		if tt.name == "admin reset" {
			pw = "reset by the admin"
		}
	}
	if st := h.doAs(h.token, "GET", "/api/v1/session", nil, nil); st != http.StatusOK {
		t.Errorf("the admin's own session after changing another user: %d", st)
	}
}

// dialTicket tries one NBD connection with a ticket.
func dialTicket(tk Ticket) (*nbd.Client, error) {
	return nbd.Dial(context.Background(), tk.URI, &nbd.ClientOptions{Thumbprint: tk.Thumbprint, Timeout: 30 * time.Second, Connections: 1})
}
