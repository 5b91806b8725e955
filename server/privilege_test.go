package server_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vdisk-project/vdisk/internal/auth"
	"github.com/vdisk-project/vdisk/server"
	"github.com/vdisk-project/vdisk/server/servertest"
)

// api is a control API client of a servertest host.
type api struct {
	t    *testing.T
	base string
	hc   *http.Client
}

func newAPI(t *testing.T, h *servertest.Host) *api {
	tc, err := auth.PinnedConfig(h.Thumbprint)
	if err != nil {
		t.Fatal(err)
	}
	tr := &http.Transport{TLSClientConfig: tc}
	t.Cleanup(tr.CloseIdleConnections)
	return &api{t: t, base: "https://" + h.API, hc: &http.Client{Transport: tr, Timeout: time.Minute}}
}

// call sends body (JSON, or nothing when nil) with token (none when
// empty), decodes a JSON answer into out when not nil, and returns the
// status.
func (a *api) call(token, method, path string, body, out any) int {
	a.t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			a.t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, a.base+path, rd)
	if err != nil {
		a.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := a.hc.Do(req)
	if err != nil {
		a.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		a.t.Fatalf("%s %s: %v", method, path, err)
	}
	if out != nil && resp.StatusCode < 300 && len(b) > 0 {
		if err := json.Unmarshal(b, out); err != nil {
			a.t.Fatalf("%s %s: decode %q: %v", method, path, b, err)
		}
	}
	return resp.StatusCode
}

// login returns a fresh session's token and ID.
func (a *api) login(user, password string) (token, id string) {
	a.t.Helper()
	var out struct {
		Token   string
		Session auth.Session
	}
	if st := a.call("", "POST", "/api/v1/login", map[string]string{"user": user, "password": password}, &out); st != http.StatusCreated {
		a.t.Fatalf("login %s: status %d", user, st)
	}
	return out.Token, out.Session.ID
}

// want checks a status: the request is sent by role (none: without a
// token); allowed says whether role holds what it needs.
func want(t *testing.T, what string, role string, allowed bool, st int) {
	t.Helper()
	switch {
	case role == "":
		if st != http.StatusUnauthorized {
			t.Errorf("%s without a token: %d, want 401", what, st)
		}
	case !allowed:
		if st != http.StatusForbidden {
			t.Errorf("%s as %s: %d, want 403", what, role, st)
		}
	case st == http.StatusUnauthorized || st == http.StatusForbidden || st >= 500:
		t.Errorf("%s as %s: %d, want neither 401, 403 nor 5xx", what, role, st)
	}
}

// TestRoutePrivileges calls every authenticated route as every role and
// without a token: without a token it is 401; a role lacking the route's
// privilege in the table gets 403, never a 2xx or 5xx; a role holding it
// gets past the check (the request names things that do not exist, so
// nothing is changed). Then the routes that check more than the table
// says (another user's password, another session, rw tickets and leases,
// growing a disk) are tried one by one.
func TestRoutePrivileges(t *testing.T) {
	h := servertest.New(t, nil)
	a := newAPI(t, h)
	admin, _ := a.login("admin", servertest.Password)
	password := map[string]string{}
	roleOf := map[string]auth.Role{}
	for _, r := range auth.Roles() {
		name := "u-" + string(r)
		var out struct{ Password string }
		if st := a.call(admin, "POST", "/api/v1/users", map[string]string{"name": name, "role": string(r)}, &out); st != http.StatusCreated {
			t.Fatalf("add user %s: %d", name, st)
		}
		password[name], roleOf[name] = out.Password, r
	}
	users := []string{""} // no token first
	for _, r := range auth.Roles() {
		users = append(users, "u-"+string(r))
	}

	// The table itself: the routes open to any session are few, and each
	// is listed here with why it is safe.
	anyoneOK := map[string]bool{
		"POST /api/v1/logout":          true, // ends the caller's session
		"GET /api/v1/session":          true, // the caller's session
		"GET /api/v1/about":            true, // version, thumbprint, addresses
		"PUT /api/v1/users/{name}":     true, // checks: own password, or admin
		"DELETE /api/v1/sessions/{id}": true, // checks: own session, or manage-access
	}
	table := server.RouteTable()
	var patterns []string
	for _, rt := range table {
		patterns = append(patterns, rt.Pattern)
		if rt.Need == 0 && !anyoneOK[rt.Pattern] {
			t.Errorf("route %s needs no privilege; add it to anyoneOK with the reason, or give it one", rt.Pattern)
		}
		if strings.HasPrefix(rt.Pattern, "GET ") && rt.Need.Has(auth.Write) {
			t.Errorf("route %s reads but needs write", rt.Pattern)
		}
	}
	for _, p := range server.PublicRoutes {
		if slices.Contains(patterns, p) {
			t.Errorf("route %s is both public and in the table", p)
		}
		st := a.call("", strings.Fields(p)[0], strings.Fields(p)[1], map[string]string{"user": "nobody", "password": "x"}, nil)
		if st == http.StatusUnauthorized {
			t.Errorf("public route %s: 401", p)
		}
	}

	wildcard := regexp.MustCompile(`\{[a-z]+\}`)
	for _, rt := range table {
		method, pattern, _ := strings.Cut(rt.Pattern, " ")
		for _, user := range users {
			role := "no token"
			if user != "" {
				role = string(roleOf[user])
			}
			t.Run(rt.Pattern+"/"+role, func(t *testing.T) {
				a := *a
				a.t = t
				var tok, sid string
				if user != "" {
					tok, sid = a.login(user, password[user]) // a fresh session: logout and session delete end it
				}
				path := wildcard.ReplaceAllStringFunc(pattern, func(w string) string {
					switch {
					case rt.Pattern == "PUT /api/v1/users/{name}" && user != "":
						return user // the own user: any session may update itself
					case rt.Pattern == "DELETE /api/v1/sessions/{id}" && sid != "":
						return sid // the own session
					}
					return "nonexistent-" + strings.Trim(w, "{}")
				})
				var body any
				if method == "POST" || method == "PUT" || method == "PATCH" {
					body = map[string]any{}
				}
				st := a.call(tok, method, path, body, nil)
				if user == "" {
					role = ""
				}
				want(t, method+" "+path, role, user != "" && roleOf[user].Privileges().Has(rt.Need), st)
			})
		}
	}

	t.Run("checks in handlers", func(t *testing.T) {
		a := *a
		a.t = t
		if st := a.call(admin, "POST", "/api/v1/disks", map[string]any{"name": "d", "capacity": 1 << 20}, nil); st != http.StatusCreated {
			t.Fatalf("create disk: %d", st)
		}
		var victim struct{ Password string }
		if st := a.call(admin, "POST", "/api/v1/users", map[string]string{"name": "victim", "role": "read-only"}, &victim); st != http.StatusCreated {
			t.Fatalf("add victim: %d", st)
		}
		victimTok, victimSession := a.login("victim", victim.Password)
		for _, user := range users[1:] {
			r := roleOf[user]
			tok, _ := a.login(user, password[user])
			isAdmin := r.Privileges().Has(auth.Admin)
			if !isAdmin {
				// Another user's password, or an own role change.
				st := a.call(tok, "PUT", "/api/v1/users/victim", map[string]string{"password": "chosen by " + user}, nil)
				want(t, "PUT /api/v1/users/victim (password)", string(r), false, st)
				st = a.call(tok, "PUT", "/api/v1/users/"+user, map[string]string{"role": "admin"}, nil)
				want(t, "PUT /api/v1/users/"+user+" (own role to admin)", string(r), false, st)
				st = a.call(tok, "PUT", "/api/v1/users/admin", map[string]string{"password": "chosen by " + user}, nil)
				want(t, "PUT /api/v1/users/admin (password)", string(r), false, st)
			}
			// Another session.
			st := a.call(tok, "DELETE", "/api/v1/sessions/"+victimSession, nil, nil)
			want(t, "DELETE another user's session", string(r), r.Privileges().Has(auth.ManageAccess), st)
			// Read-write access.
			canWrite := r.Privileges().Has(auth.Write)
			st = a.call(tok, "POST", "/api/v1/tickets", map[string]string{"disk": "d", "mode": "rw"}, nil)
			want(t, "POST /api/v1/tickets (rw)", string(r), canWrite, st)
			st = a.call(tok, "POST", "/api/v1/tickets", map[string]string{"disk": "d", "mode": "ro"}, nil)
			want(t, "POST /api/v1/tickets (ro)", string(r), true, st)
			st = a.call(tok, "POST", "/api/v1/disks/d/direct", map[string]string{"mode": "rw"}, nil)
			want(t, "POST /api/v1/disks/d/direct (rw)", string(r), canWrite, st)
			if r.Privileges().Has(auth.Snapshot) {
				st = a.call(tok, "PATCH", "/api/v1/disks/d", map[string]any{"capacity": 2 << 20}, nil)
				want(t, "PATCH /api/v1/disks/d (grow)", string(r), canWrite, st)
			}
			if isAdmin {
				break // the victim's session is gone now
			}
			// The refusals changed nothing: the victim's session and
			// password still work.
			if st := a.call(victimTok, "GET", "/api/v1/session", nil, nil); st != http.StatusOK {
				t.Fatalf("the victim's session after %s's refused calls: %d", user, st)
			}
			if tok, _ := a.login("victim", victim.Password); tok == "" {
				t.Fatal("the victim's password changed")
			}
		}
		if st := a.call(victimTok, "GET", "/api/v1/session", nil, nil); st != http.StatusUnauthorized {
			t.Errorf("the victim's session after the admin ended it: %d, want 401", st)
		}
		// An admin may reset another's password; the user may change
		// their own.
		if st := a.call(admin, "PUT", "/api/v1/users/victim", map[string]string{"password": "reset by the admin"}, nil); st != http.StatusNoContent {
			t.Errorf("admin resets victim's password: %d, want 204", st)
		}
		tok, _ := a.login("victim", "reset by the admin")
		st := a.call(tok, "PUT", "/api/v1/users/victim", map[string]string{"password": "chosen by a thief", "currentPassword": "a guess"}, nil)
		want(t, "PUT /api/v1/users/victim (own password, wrong current one)", "read-only", false, st)
		if st := a.call(tok, "PUT", "/api/v1/users/victim", map[string]string{"password": "chosen by the victim", "currentPassword": "reset by the admin"}, nil); st != http.StatusNoContent {
			t.Errorf("victim changes own password: %d, want 204", st)
		}
		a.login("victim", "chosen by the victim")
	})
}
