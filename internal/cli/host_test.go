package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vdisk-project/vdisk/internal/datastore"
	"github.com/vdisk-project/vdisk/server/servertest"
)

// TestHostCommands drives the host commands against an in-process host:
// login, VMs, disks, snapshots, changes, tickets, access, users, sessions,
// cleanup, logout.
func TestHostCommands(t *testing.T) {
	ctx := context.Background()
	t.Setenv("VDISK_CONFIG_DIR", t.TempDir())
	h := servertest.New(t, nil)
	s := h.Server
	run := func(want int, args ...string) string {
		t.Helper()
		var out, errb bytes.Buffer
		if code := Main(ctx, args, &out, &errb); code != want {
			t.Fatalf("vdisk %s: exit %d, want %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, want, out.String(), errb.String())
		}
		return out.String()
	}
	pwf := filepath.Join(t.TempDir(), "pw")
	os.WriteFile(pwf, []byte(servertest.Password+"\n"), 0o600)
	bad := strings.Repeat("00:", 31) + "00"
	run(ExitPermission, "login", "--server", h.API, "--thumbprint", bad, "--password-file", pwf)
	run(ExitUsage, "login", "--server", h.API, "--password-file", pwf)
	run(ExitPermission, "vm", "list")
	run(0, "login", "--server", h.API, "--thumbprint", s.Thumbprint(), "--password-file", pwf)
	st, _ := os.Stat(filepath.Join(os.Getenv("VDISK_CONFIG_DIR"), "login.json"))
	if st == nil || st.Mode().Perm() != 0o600 {
		t.Errorf("login file mode %v, want 0600", st)
	}

	run(0, "vm", "create", "web")
	run(0, "vm", "add-disk", "--cbt", "web", "scsi0:0", "64M")
	var vm datastore.VMInfo
	json.Unmarshal([]byte(run(0, "vm", "show", "--output=json", "web")), &vm)
	if len(vm.Disks) != 1 || vm.Disks[0].Name != "web-scsi0-0" || !vm.Disks[0].CBT {
		t.Fatalf("vm show: %+v", vm)
	}
	if out := run(0, "disk", "list"); !strings.Contains(out, "web-scsi0-0") || !strings.Contains(out, "64 MiB") {
		t.Errorf("disk list:\n%s", out)
	}
	run(ExitInvalid, "disk", "create", "../x", "1M")
	run(0, "disk", "create", "--cbt", "solo", "16M")
	run(0, "disk", "meta", "solo", "vdisk.owner", "me")
	if out := run(0, "disk", "meta", "solo", "vdisk.owner"); strings.TrimSpace(out) != "me" {
		t.Errorf("meta: %q", out)
	}
	run(0, "disk", "grow", "solo", "32M")

	var tk struct{ URI, Thumbprint string }
	json.Unmarshal([]byte(run(0, "ticket", "create", "--vm", "web", "--key", "scsi0:0", "--mode", "rw", "--output=json")), &tk)
	if !strings.HasPrefix(tk.URI, "nbds://") || tk.Thumbprint != s.Thumbprint() {
		t.Fatalf("ticket: %+v", tk)
	}
	// Write through the ticket with vdisk's own NBD client.
	img := filepath.Join(t.TempDir(), "src.raw")
	os.WriteFile(img, bytes.Repeat([]byte{7}, 1<<20), 0o600)
	t.Setenv("VDISK_NBD_THUMBPRINT", tk.Thumbprint)
	if out := run(0, "ticket", "list"); !strings.Contains(out, "disk/web-scsi0-0") {
		t.Errorf("ticket list:\n%s", out)
	}

	var sn datastore.SnapshotInfo
	json.Unmarshal([]byte(run(0, "snapshot", "create", "--vm", "web", "--name", "one", "--output=json")), &sn)
	var shown datastore.VMInfo
	json.Unmarshal([]byte(run(0, "vm", "show", "--output=json", "web")), &shown)
	cid := ""
	for _, ds := range shown.Disks[0].Snapshots {
		if ds.ID == sn.ID {
			cid = ds.ChangeID
		}
	}
	if out := run(0, "snapshot", "list", "--vm", "web"); !strings.Contains(out, sn.ID) || cid == "" || !strings.Contains(out, cid) {
		t.Errorf("snapshot list (want change ID %q):\n%s", cid, out)
	}
	if out := run(0, "vm", "show", "web"); !strings.Contains(out, cid) {
		t.Errorf("vm show (want change ID %q):\n%s", cid, out)
	}
	out := run(0, "changes", "--change-id", "*", "--snapshot", sn.ID, "web-scsi0-0")
	if !strings.Contains(out, " up to change ID") {
		t.Errorf("changes:\n%s", out)
	}
	run(0, "allocated", "--snapshot", sn.ID, "web-scsi0-0")
	// Image commands reach host disks through the kit, with its config.
	conf := filepath.Join(os.Getenv("VDISK_CONFIG_DIR"), "vdisk.conf")
	os.WriteFile(conf, []byte("transports = nbdssl\ntimeout = 30s\n"), 0o600)
	raw := filepath.Join(t.TempDir(), "snap.raw")
	run(0, "convert", "-O", "raw", "vdisk:vm/web/scsi0:0@"+sn.ID, raw)
	if st, err := os.Stat(raw); err != nil || st.Size() != 64<<20 {
		t.Errorf("converted snapshot: %v %v", st, err)
	}
	if out := run(0, "info", "vdisk:disk/solo"); !strings.Contains(out, "32 MiB") {
		t.Errorf("info of a host disk:\n%s", out)
	}
	// A restore into an existing host disk (convert -n), read back.
	src := filepath.Join(t.TempDir(), "src.raw")
	os.WriteFile(src, bytes.Repeat([]byte("restore!"), 4<<20/8), 0o600)
	run(0, "convert", "-n", "-f", "raw", src, "vdisk:disk/solo")
	back := filepath.Join(t.TempDir(), "back.raw")
	run(0, "convert", "-O", "raw", "vdisk:disk/solo", back)
	if b, _ := os.ReadFile(back); len(b) != 32<<20 || !bytes.Equal(b[:4<<20], bytes.Repeat([]byte("restore!"), 4<<20/8)) {
		t.Errorf("restored disk reads back %d bytes, not the source", len(b))
	}
	os.WriteFile(conf, []byte("transprots = nbdssl\n"), 0o600)
	run(ExitInvalid, "info", "vdisk:disk/solo")
	os.Remove(conf)
	lease := strings.TrimSpace(run(0, "access", "prepare", "--vm", "web", "--reason", "test"))
	run(ExitBusy, "vm", "delete", "web")
	run(0, "access", "end", lease)
	run(0, "snapshot", "remove", "--vm", "web", sn.ID)

	out = run(0, "user", "add", "viewer", "read-only")
	if !strings.Contains(out, "password") {
		t.Errorf("user add: %s", out)
	}
	if out := run(0, "user", "list"); !strings.Contains(out, "viewer") {
		t.Errorf("user list:\n%s", out)
	}
	run(0, "session", "list")
	run(0, "cleanup")
	run(0, "user", "remove", "viewer")
	run(0, "vm", "delete", "web")
	run(0, "logout")
	run(ExitPermission, "vm", "list")
}
