package main

import (
	"bytes"
	"context"
	"crypto/sha1"
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/vdisk-project/vdisk"
	"github.com/vdisk-project/vdisk/internal/testenv"
	"github.com/vdisk-project/vdisk/server"
	"github.com/vdisk-project/vdisk/server/servertest"
)

// remoteHost starts a host with a VM web01 holding one disk, writes data
// into it, snapshots the VM and writes over the data again. It returns
// the host, the VM's managed-object ID, the snapshot ID, the disk's
// datastore path and the disk's bytes at the snapshot.
func remoteHost(t *testing.T) (*servertest.Host, string, string, string, []byte) {
	t.Helper()
	h := servertest.New(t, func(c *server.Config) { c.PlainNBDListen = []string{"127.0.0.1:0"} })
	ctx := context.Background()
	if _, err := h.Store().CreateVM("web01"); err != nil {
		t.Fatal(err)
	}
	c, err := vdisk.Connect(ctx, vdisk.ConnectParams{Server: h.API, User: "admin", Password: servertest.Password, Thumbprint: h.Thumbprint})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const size = 48 << 20
	if err := c.Create(ctx, vdisk.Spec{VM: "web01", Key: "scsi0:0"}, vdisk.CreateParams{Capacity: size}); err != nil {
		t.Fatal(err)
	}
	snapData := make([]byte, size)
	d, err := c.Open(ctx, vdisk.Spec{VM: "web01", Key: "scsi0:0"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	for i, off := range []int64{0, 5 << 20, size - 1<<20} {
		blk := bytes.Repeat([]byte{byte(0x11 * (i + 1))}, 1<<20)
		copy(snapData[off:], blk)
		if _, err := d.WriteAt(blk, off); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	sn, err := c.CreateSnapshot(ctx, vdisk.Spec{VM: "web01"}, "backup", false)
	if err != nil {
		t.Fatal(err)
	}
	d, err = c.Open(ctx, vdisk.Spec{VM: "web01", Key: "scsi0:0"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.WriteAt(bytes.Repeat([]byte{0xEE}, 2<<20), 4<<20); err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	vm, err := c.VM(ctx, "web01")
	if err != nil {
		t.Fatal(err)
	}
	if vm.MoRef == "" || len(vm.Disks) != 1 || vm.Disks[0].DatastorePath == "" {
		t.Fatalf("the host names no moref or datastore path: %+v", vm)
	}
	return h, vm.MoRef, sn.ID, vm.Disks[0].DatastorePath, snapData
}

// hostDisk reads a host disk whole through a new kit connection, and
// returns its bytes and the bytes QueryAllocatedBlocks reports allocated
// (in 64 KiB chunks).
func hostDisk(t *testing.T, h *servertest.Host, spec vdisk.Spec) ([]byte, int64) {
	t.Helper()
	ctx := context.Background()
	c, err := vdisk.Connect(ctx, vdisk.ConnectParams{Server: h.API, User: "admin", Password: servertest.Password, Thumbprint: h.Thumbprint})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	d, err := c.Open(ctx, spec, vdisk.OpenReadOnly)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	got := make([]byte, d.Size())
	if _, err := d.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	blocks, err := d.QueryAllocatedBlocks(ctx, 0, d.Size(), 64<<10)
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, b := range blocks {
		n += b.Length
	}
	return got, n
}

// sha1Thumbprint is the SHA-1 fingerprint of the host's certificate, as
// VDDK programs pass it.
func sha1Thumbprint(t *testing.T, addr string) string {
	t.Helper()
	c, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return formatHex(sha1Sum(c.ConnectionState().PeerCertificates[0].Raw))
}

func sha1Sum(b []byte) []byte { s := sha1.Sum(b); return s[:] }

// TestPluginRemote reads a VM's snapshot from a host through nbdkit's
// VDDK plugin, over nbdssl and plain nbd, with the thumbprint in SHA-1
// and SHA-256 forms, and checks a wrong thumbprint is refused.
func TestPluginRemote(t *testing.T) {
	testenv.Tool(t, "nbdcopy")
	built(t)
	h, moref, snap, dsPath, want := remoteHost(t)
	dir := t.TempDir()
	pw := filepath.Join(dir, "password")
	if err := os.WriteFile(pw, []byte(servertest.Password), 0o600); err != nil {
		t.Fatal(err)
	}
	host, port, _ := net.SplitHostPort(h.API)
	sha1tp := sha1Thumbprint(t, h.API)
	args := func(thumb, transports string) []string {
		return []string{"server=" + host, "port=" + port, "user=admin", "password=+" + pw, "thumbprint=" + thumb,
			"vm=moref=" + moref, "snapshot=" + snap, "file=" + dsPath, "transports=" + transports}
	}
	for _, tc := range []struct{ name, thumb, transports, mode string }{
		{"nbdssl-sha1", sha1tp, "nbdssl", "nbdssl"},
		{"nbd-sha256-lower", strings.ToLower(h.Thumbprint), "nbd", "nbd"},
		// hotadd is vdisk's direct mode, which this host does not grant
		// to a client elsewhere: Open falls back to the next mode.
		{"fallback", h.Thumbprint, "hotadd:nbdssl", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := filepath.Join(t.TempDir(), "snap.raw")
			out, err := nbdkit(t, append(args(tc.thumb, tc.transports), "-v"), fmt.Sprintf("nbdcopy \"$uri\" %s", got))
			if err != nil {
				t.Fatalf("nbdkit: %v\n%s", err, out)
			}
			if tc.mode != "" && !strings.Contains(out, "transport mode: "+tc.mode+"\n") {
				t.Errorf("the plugin did not report transport mode %s", tc.mode)
			}
			b, err := os.ReadFile(got)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(b, want) {
				t.Fatalf("the snapshot read through the plugin differs from its bytes (%d vs %d bytes)", len(b), len(want))
			}
		})
	}
	t.Run("datastore-path-forms", func(t *testing.T) {
		// "[ds]path" and extra spaces name the same disk, as in vSphere.
		i := strings.IndexByte(dsPath, ']')
		for _, p := range []string{dsPath[:i+1] + dsPath[i+2:], dsPath[:i+1] + "   " + dsPath[i+2:]} {
			a := []string{"server=" + host, "port=" + port, "user=admin", "password=+" + pw, "thumbprint=" + h.Thumbprint,
				"vm=moref=" + moref, "snapshot=" + snap, "file=" + p, "transports=nbdssl"}
			got := filepath.Join(t.TempDir(), "snap.raw")
			out, err := nbdkit(t, a, fmt.Sprintf("nbdcopy \"$uri\" %s", got))
			if err != nil {
				t.Fatalf("%q: nbdkit: %v\n%s", p, err, out)
			}
			if b, err := os.ReadFile(got); err != nil || !bytes.Equal(b, want) {
				t.Fatalf("%q: the snapshot differs (err %v)", p, err)
			}
		}
	})
	t.Run("multi-conn", func(t *testing.T) {
		// nbdkit's multi-conn filter: four plugin connections, each its
		// own ConnectEx and Open of the snapshot, read at once.
		got := filepath.Join(t.TempDir(), "snap.raw")
		a := append([]string{"-r", "--filter=multi-conn"}, args(h.Thumbprint, "nbdssl")...)
		out, err := nbdkit(t, a, fmt.Sprintf("nbdinfo \"$uri\" | grep -q 'can_multi_conn: true' && nbdcopy --connections=4 --requests=16 \"$uri\" %s", got))
		if err != nil {
			t.Fatalf("nbdkit: %v\n%s", err, out)
		}
		if b, err := os.ReadFile(got); err != nil || !bytes.Equal(b, want) {
			t.Fatalf("the snapshot read over four connections differs (err %v)", err)
		}
	})
	t.Run("multi-conn-write", func(t *testing.T) {
		// Writing the VM's disk (not the snapshot) through four plugin
		// connections at once: the host serves one disk to all of them,
		// and the filter passes every flush to each.
		dir := t.TempDir()
		src := filepath.Join(dir, "src.raw")
		writePattern(t, src, int64(len(want)), 42)
		a := []string{"--filter=multi-conn", "server=" + host, "port=" + port, "user=admin", "password=+" + pw, "thumbprint=" + sha1tp,
			"vm=moref=" + moref, "file=" + dsPath, "transports=nbdssl"}
		out, err := nbdkit(t, a, fmt.Sprintf("nbdcopy --connections=4 --requests=16 %s \"$uri\"", src))
		if err != nil {
			t.Fatalf("nbdkit: %v\n%s", err, out)
		}
		wantDisk, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if got, _ := hostDisk(t, h, vdisk.Spec{VM: "web01", Key: "scsi0:0"}); !bytes.Equal(got, wantDisk) {
			t.Fatal("the disk written over four connections differs from what was written")
		}
	})
	t.Run("cookie", func(t *testing.T) {
		// A saved host session (creds.sessionId.cookie) instead of a
		// password.
		c, err := vdisk.Connect(context.Background(), vdisk.ConnectParams{Server: h.API, User: "admin", Password: servertest.Password, Thumbprint: h.Thumbprint})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		// nbdkit wants a password with a cookie (it is the session
		// key); a wrong one shows the cookie alone logs in.
		wrong := filepath.Join(t.TempDir(), "wrong")
		if err := os.WriteFile(wrong, []byte("not the password"), 0o600); err != nil {
			t.Fatal(err)
		}
		a := []string{"server=" + host, "port=" + port, "user=admin", "cookie=" + c.Token(), "password=+" + wrong, "thumbprint=" + sha1tp,
			"vm=moref=" + moref, "snapshot=" + snap, "file=" + dsPath, "transports=nbdssl"}
		got := filepath.Join(t.TempDir(), "snap.raw")
		out, err := nbdkit(t, a, fmt.Sprintf("nbdcopy \"$uri\" %s", got))
		if err != nil {
			t.Fatalf("nbdkit: %v\n%s", err, out)
		}
		if b, err := os.ReadFile(got); err != nil || !bytes.Equal(b, want) {
			t.Fatalf("the snapshot read with a cookie differs (err %v)", err)
		}
	})
	t.Run("wrong-thumbprint", func(t *testing.T) {
		bad := []byte(sha1tp)
		if bad[0] == 'A' {
			bad[0] = 'B'
		} else {
			bad[0] = 'A'
		}
		out, err := nbdkit(t, args(string(bad), "nbdssl"), "nbdinfo \"$uri\"")
		if err == nil {
			t.Fatalf("a wrong thumbprint was accepted:\n%s", out)
		}
		if !strings.Contains(out, "SHA-1 thumbprint") || !strings.Contains(out, "ConnectEx") {
			t.Fatalf("nbdkit failed, but not on the thumbprint:\n%s", out)
		}
	})
}

// TestAccessLeases takes a PrepareForAccess lease on a VM by its
// managed-object ID and ends it, in-process and as crash cleanup (an
// EndAccess with no PrepareForAccess in this process).
func TestAccessLeases(t *testing.T) {
	h, moref, _, _, _ := remoteHost(t)
	host, port, _ := net.SplitHostPort(h.API)
	pn, _ := strconv.Atoi(port)
	p := params{serverName: host, port: uint32(pn), thumbprint: sha1Thumbprint(t, h.API), credType: credUID,
		user: "admin", password: servertest.Password, vmxSpec: "moref=" + moref}
	ctx := context.Background()
	leases := func() int {
		c, err := vdisk.Connect(ctx, vdisk.ConnectParams{Server: h.API, User: "admin", Password: servertest.Password, Thumbprint: h.Thumbprint})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		in, err := c.Disk(ctx, vdisk.Spec{VM: "web01", Key: "scsi0:0"})
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, l := range in.Leases {
			if l.Reason == "nightly" {
				n++
			}
		}
		return n
	}
	for _, crashed := range []bool{false, true} {
		if err := prepareForAccess(ctx, p, "nightly"); err != nil {
			t.Fatal(err)
		}
		if n := leases(); n != 1 {
			t.Fatalf("after PrepareForAccess: %d leases named nightly, want 1", n)
		}
		if crashed {
			// Forget the lease as a crashed process would (its session
			// stays until it expires).
			accessLeases.Lock()
			clear(accessLeases.m)
			accessLeases.Unlock()
		}
		if err := endAccess(ctx, p, "nightly"); err != nil {
			t.Fatal(err)
		}
		if n := leases(); n != 0 {
			t.Fatalf("after EndAccess (crashed %v): %d leases left", crashed, n)
		}
	}
	if err := prepareForAccess(ctx, params{}, "x"); err != nil {
		t.Errorf("local PrepareForAccess: %v, want a no-op", err)
	}
}

// TestDisconnectEndsSession connects with a password and disconnects more
// times than the host lets one user hold sessions: each Disconnect ends
// the session its ConnectEx made (as VDDK's does), so no ConnectEx is
// refused. nbdkit makes one ConnectEx per NBD connection, so a session
// left to expire would lock the user out after a few dozen copies.
func TestDisconnectEndsSession(t *testing.T) {
	h := servertest.New(t, func(c *server.Config) { c.Sessions.MaxUserSessions = 3 })
	if _, err := h.Store().CreateVM("web01"); err != nil {
		t.Fatal(err)
	}
	name, portStr, _ := net.SplitHostPort(h.API)
	port, _ := strconv.Atoi(portStr)
	for i := range 10 {
		conn, e := cConnect(name, uint32(port), "admin", servertest.Password, h.Thumbprint, "", "nbdssl")
		if e != vixOK {
			t.Fatalf("ConnectEx %d: VixError %d", i, e)
		}
		if e := cDisconnect(conn); e != vixOK {
			t.Fatalf("Disconnect %d: VixError %d", i, e)
		}
	}
}

// TestPluginWriteZeroesRemote copies a sparse source through the plugin
// into a new host disk: the zeros nbdcopy writes for the holes go as NBD
// zero requests, so the disk's allocated blocks are the source's data.
func TestPluginWriteZeroesRemote(t *testing.T) {
	testenv.Tool(t, "nbdcopy")
	built(t)
	h, _, _, _, _ := remoteHost(t)
	ctx := context.Background()
	c, err := vdisk.Connect(ctx, vdisk.ConnectParams{Server: h.API, User: "admin", Password: servertest.Password, Thumbprint: h.Thumbprint})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := h.Store().CreateVM("thin"); err != nil {
		t.Fatal(err)
	}
	const size = 256 << 20
	spec := vdisk.Spec{VM: "thin", Key: "scsi0:0"}
	if err := c.Create(ctx, spec, vdisk.CreateParams{Capacity: size}); err != nil {
		t.Fatal(err)
	}
	vm, err := c.VM(ctx, "thin")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	src := sparseSource(t, dir, size)
	pw := filepath.Join(dir, "password")
	if err := os.WriteFile(pw, []byte(servertest.Password), 0o600); err != nil {
		t.Fatal(err)
	}
	host, port, _ := net.SplitHostPort(h.API)
	for _, mode := range []string{"nbdssl", "nbd"} {
		a := []string{"server=" + host, "port=" + port, "user=admin", "password=+" + pw, "thumbprint=" + h.Thumbprint,
			"vm=moref=" + vm.MoRef, "file=" + vm.Disks[0].DatastorePath, "transports=" + mode}
		out, err := nbdkit(t, a, fmt.Sprintf("nbdcopy %s \"$uri\"", src))
		if err != nil {
			t.Fatalf("%s: nbdkit: %v\n%s", mode, err, out)
		}
		got, n := hostDisk(t, h, spec)
		want, _ := os.ReadFile(src)
		if !bytes.Equal(got, want) {
			t.Fatalf("%s: the host disk differs from the source", mode)
		}
		if n > 2<<20 {
			t.Errorf("%s: 1 MiB of data copied into a host disk allocated %d bytes: the zeros were written", mode, n)
		}
	}
}
