package cli

import (
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestServeNBDNegotiationConfig: the NBD negotiation deadline and cap come
// from flags and from the serve config file.
func TestServeNBDNegotiationConfig(t *testing.T) {
	cfgFile := filepath.Join(t.TempDir(), "serve.conf")
	if err := os.WriteFile(cfgFile, []byte("nbd-handshake-timeout = 4s\nnbd-max-negotiating = 33\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		args    []string
		file    bool
		timeout time.Duration
		max     int
	}{
		{"defaults", nil, false, 10 * time.Second, 256},
		{"flags", []string{"--nbd-handshake-timeout", "2s", "--nbd-max-negotiating", "7"}, false, 2 * time.Second, 7},
		{"config file", nil, true, 4 * time.Second, 33},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var o serveOptions
			fs := serveFlags(&o)
			if _, err := parse(fs, tc.args); err != nil {
				t.Fatal(err)
			}
			if tc.file {
				if err := applyConfig(fs, cfgFile); err != nil {
					t.Fatal(err)
				}
			}
			cfg, err := o.config(io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			if cfg.NBDHandshakeTimeout != tc.timeout || cfg.NBDMaxNegotiating != tc.max {
				t.Errorf("got timeout %v, max %d; want %v, %d", cfg.NBDHandshakeTimeout, cfg.NBDMaxNegotiating, tc.timeout, tc.max)
			}
		})
	}
}
