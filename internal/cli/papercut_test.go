package cli

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vdisk-project/vdisk/internal/hostclient"
	"github.com/vdisk-project/vdisk/server/servertest"
)

// TestLoginForms: the server as the host's banner prints it
// (https://HOST:PORT/api/v1) logs in; a saved login the host no longer
// knows says what to do; an interrupted command says so.
func TestLoginForms(t *testing.T) {
	t.Setenv("VDISK_CONFIG_DIR", t.TempDir())
	h := servertest.New(t, nil)
	pwf := filepath.Join(t.TempDir(), "pw")
	os.WriteFile(pwf, []byte(servertest.Password+"\n"), 0o600)
	runIn := func(ctx context.Context, want int, args ...string) string {
		t.Helper()
		var out, errb bytes.Buffer
		if code := Main(ctx, args, &out, &errb); code != want {
			t.Fatalf("vdisk %s: exit %d, want %d\n%s%s", strings.Join(args, " "), code, want, out.String(), errb.String())
		}
		return errb.String()
	}
	runIn(ctx, 0, "login", "--server", "https://"+h.API+"/api/v1", "--thumbprint", h.Server.Thumbprint(), "--password-file", pwf)
	runIn(ctx, 0, "vm", "list")
	runIn(ctx, 0, "session", "list")
	// An admin ends the saved session (as a restart would forget it).
	admin, err := hostclient.New(hostclient.Options{Server: h.API, Thumbprint: h.Server.Thumbprint()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := admin.Login(ctx, "admin", servertest.Password); err != nil {
		t.Fatal(err)
	}
	me, _ := admin.Session(ctx)
	var sessions []struct{ ID string }
	if err := admin.Do(ctx, "GET", "/api/v1/sessions", nil, &sessions); err != nil {
		t.Fatal(err)
	}
	for _, s := range sessions {
		if s.ID != me.ID {
			admin.Do(ctx, "DELETE", "/api/v1/sessions/"+s.ID, nil, nil)
		}
	}
	if msg := runIn(ctx, ExitPermission, "vm", "list"); !strings.Contains(msg, "has ended; run vdisk login") {
		t.Errorf("a saved login the host ended: %q", msg)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if msg := runIn(cctx, ExitInterrupted, "convert", "-O", "raw", "nbd://127.0.0.1:1/x", filepath.Join(t.TempDir(), "o")); !strings.Contains(msg, "interrupted") || strings.Contains(msg, "context canceled") {
		t.Errorf("an interrupted command: %q", msg)
	}
}
