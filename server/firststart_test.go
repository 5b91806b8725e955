package server

import (
	"context"
	"net"
	"testing"

	"github.com/vdisk-project/vdisk/internal/auth"
)

// TestFirstStartFailsClean: a first start whose port is taken creates no
// admin user (a later start would otherwise not print the password it
// never showed); the next start on a free port does.
func TestFirstStartFailsClean(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	dir := t.TempDir()
	cfg := Config{DataDir: dir, Listen: []string{"127.0.0.1:0"}, NBDListen: []string{busy.Addr().String()}, PasswordIterations: 1000}
	s, err := New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Listen(); err == nil {
		t.Fatal("listening on a port in use succeeded")
	}
	if n := len(s.users.List()); n != 0 || s.Bootstrap().AdminPassword != "" {
		t.Errorf("a start that failed to bind made %d users", n)
	}
	s.Shutdown(context.Background())
	cfg.NBDListen = []string{"127.0.0.1:0"}
	s, err = New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Shutdown(context.Background())
	if err := s.Listen(); err != nil {
		t.Fatal(err)
	}
	if s.Bootstrap().AdminPassword == "" || len(s.users.List()) != 1 {
		t.Errorf("the first start that bound made no admin (boot %+v)", s.Bootstrap())
	}
}

// TestResetAdminPassword: an administrator locked out gets back in with
// --reset-admin-password, and every other user stays.
func TestResetAdminPassword(t *testing.T) {
	dir := t.TempDir()
	cfg := Config{DataDir: dir, Listen: []string{"127.0.0.1:0"}, NBDListen: []string{"127.0.0.1:0"}, PasswordIterations: 1000,
		AdminPassword: "the first admin password"}
	start := func(cfg Config) *Server {
		t.Helper()
		s, err := New(context.Background(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Listen(); err != nil {
			t.Fatal(err)
		}
		return s
	}
	s := start(cfg)
	if err := s.users.Add("bob", auth.RoleBackup, "bob's password, long"); err != nil {
		t.Fatal(err)
	}
	s.Shutdown(context.Background())
	cfg.AdminPassword, cfg.ResetAdminPassword = "", true
	s = start(cfg)
	pw := s.Bootstrap().AdminPassword
	if pw == "" {
		t.Fatal("the reset generated no password")
	}
	if _, err := s.users.Verify("admin", pw); err != nil {
		t.Errorf("admin with the new password: %v", err)
	}
	if _, err := s.users.Verify("admin", "the first admin password"); err == nil {
		t.Error("the old admin password still works")
	}
	if _, err := s.users.Verify("bob", "bob's password, long"); err != nil {
		t.Errorf("another user after the reset: %v", err)
	}
	s.Shutdown(context.Background())
}
