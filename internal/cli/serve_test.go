package cli

import (
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/vdisk-project/vdisk/internal/auth"
)

// TestServeSessionFlags: the session limit and login throttle flags, and
// the same keys in a config file, reach server.Config.
func TestServeSessionFlags(t *testing.T) {
	cfgFile := filepath.Join(t.TempDir(), "serve.conf")
	if err := os.WriteFile(cfgFile, []byte("max-user-sessions = 7\nlogin-address-failures = -1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		args   []string
		config string
		want   auth.Options
	}{
		{"defaults", nil, "", auth.Options{MaxSessions: auth.DefaultMaxSessions, MaxUserSessions: auth.DefaultMaxUserSessions,
			Throttle: auth.ThrottleOptions{UserFailures: auth.DefaultUserFailures, AddrFailures: auth.DefaultAddrFailures, MaxDelay: auth.DefaultMaxDelay, FailWindow: auth.DefaultFailWindow}}},
		{"flags", []string{"--max-sessions", "100", "--max-user-sessions", "3", "--admin-sessions", "10",
			"--login-user-failures", "-1", "--login-address-failures", "50", "--login-max-wait", "1m", "--login-fail-window", "1h"}, "",
			auth.Options{MaxSessions: 100, MaxUserSessions: 3, AdminSessions: 10,
				Throttle: auth.ThrottleOptions{UserFailures: -1, AddrFailures: 50, MaxDelay: time.Minute, FailWindow: time.Hour}}},
		{"config file", []string{"--max-user-sessions", "9"}, cfgFile, auth.Options{MaxSessions: auth.DefaultMaxSessions, MaxUserSessions: 9,
			Throttle: auth.ThrottleOptions{UserFailures: auth.DefaultUserFailures, AddrFailures: -1, MaxDelay: auth.DefaultMaxDelay, FailWindow: auth.DefaultFailWindow}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var o serveOptions
			fs := serveFlags(&o)
			if _, err := parse(fs, tt.args); err != nil {
				t.Fatal(err)
			}
			if tt.config != "" {
				if err := applyConfig(fs, tt.config); err != nil {
					t.Fatal(err)
				}
			}
			cfg, err := o.config(io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			s := cfg.Sessions
			got := auth.Options{MaxSessions: s.MaxSessions, MaxUserSessions: s.MaxUserSessions, AdminSessions: s.AdminSessions, Throttle: s.Throttle}
			if got.Throttle != tt.want.Throttle || got.MaxSessions != tt.want.MaxSessions || got.MaxUserSessions != tt.want.MaxUserSessions || got.AdminSessions != tt.want.AdminSessions {
				t.Errorf("%v: got %+v, want %+v", tt.args, got, tt.want)
			}
		})
	}
}
