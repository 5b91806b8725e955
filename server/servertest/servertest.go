// Package servertest runs a vdisk host inside a test, as
// net/http/httptest runs a server: a fresh datastore in t.TempDir(),
// loopback listeners on free ports, an admin user with a known password,
// cheap password hashing, and a clean shutdown at the end of the test.
package servertest

import (
	"context"
	"testing"

	"github.com/vdisk-project/vdisk/server"
)

// Password is the admin user's password.
const Password = "servertest password"

// Host is a running test host.
type Host struct {
	*server.Server
	// API is the control API address ("127.0.0.1:PORT").
	API string
	// Thumbprint pins the host's certificate.
	Thumbprint string
}

// New starts a host. mod, when not nil, adjusts the configuration first
// (limits, plain NBD listeners, advertised addresses…).
func New(t testing.TB, mod func(*server.Config)) *Host {
	t.Helper()
	cfg := server.Config{
		DataDir:            t.TempDir(),
		Listen:             []string{"127.0.0.1:0"},
		NBDListen:          []string{"127.0.0.1:0"},
		AdminPassword:      Password,
		PasswordIterations: 1000,
	}
	if mod != nil {
		mod(&cfg)
	}
	s, err := server.New(context.Background(), cfg)
	if err != nil {
		t.Fatalf("servertest: %v", err)
	}
	if err := s.Listen(); err != nil {
		t.Fatalf("servertest: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("servertest: Serve: %v", err)
		}
	})
	api, _, _ := s.Addrs()
	return &Host{Server: s, API: api[0].String(), Thumbprint: s.Thumbprint()}
}
