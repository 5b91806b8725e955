package server

import (
	"bytes"
	"encoding/json"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vdisk-project/vdisk/internal/datastore"
	"github.com/vdisk-project/vdisk/internal/testenv"
)

// caDir writes the server certificate as ca-cert.pem, the trust anchor
// GnuTLS peers (qemu, libnbd) read from a directory.
func (h *testHost) caDir() string {
	dir := h.t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "ca-cert.pem"), h.s.CertificatePEM(), 0o600); err != nil {
		h.t.Fatal(err)
	}
	return dir
}

// TestRunningVMWithPeers: qemu-io writes to a VM's disk over NBD/TLS (a
// "running VM") while the host snapshots it; nbdinfo then reads the
// changed blocks through the qemu:dirty-bitmap context, and qemu-img
// reads the snapshot. All through GnuTLS peers verifying our certificate.
func TestRunningVMWithPeers(t *testing.T) {
	qio := testenv.Tool(t, "qemu-io")
	qimg := testenv.Tool(t, "qemu-img")
	nbdinfo := testenv.Tool(t, "nbdinfo")
	h := startHost(t, nil)
	ca := h.caDir()
	h.must("POST", "/api/v1/vms", map[string]string{"name": "vm1"}, nil)
	h.must("POST", "/api/v1/vms/vm1/disks", map[string]any{"key": "scsi0:0", "capacity": 16 << 20, "cbt": true}, nil)
	var vm datastore.VMInfo
	h.must("GET", "/api/v1/vms/vm1", nil, &vm)
	name := vm.Disks[0].Name

	qemuWrite := func(tk Ticket, cmds ...string) {
		t.Helper()
		u, _ := url.Parse(tk.URI)
		args := []string{"--object", "tls-creds-x509,id=tls0,endpoint=client,dir=" + ca,
			"--image-opts", "driver=nbd,host=" + u.Hostname() + ",port=" + u.Port() + ",export=" + tk.Ticket + ",tls-creds=tls0"}
		for _, c := range cmds {
			args = append(args, "-c", c)
		}
		out, err := exec.Command(qio, args...).CombinedOutput()
		if err != nil || bytes.Contains(out, []byte("error")) {
			t.Fatalf("qemu-io %v: %v\n%s", cmds, err, out)
		}
	}
	rw := h.ticket(TicketRequest{VM: "vm1", Key: "scsi0:0", Mode: "rw"})
	qemuWrite(rw, "write -P 0x11 0 4M", "flush")
	var s1 datastore.SnapshotInfo
	h.must("POST", "/api/v1/vms/vm1/snapshots", map[string]string{"name": "one"}, &s1)
	qemuWrite(h.ticket(TicketRequest{VM: "vm1", Key: "scsi0:0", Mode: "rw"}), "write -P 0x22 8M 1M", "write -z 1M 64k", "flush")
	var s2 datastore.SnapshotInfo
	h.must("POST", "/api/v1/vms/vm1/snapshots", map[string]string{"name": "two"}, &s2)
	var d datastore.DiskInfo
	h.must("GET", "/api/v1/disks/"+name, nil, &d)
	cid1 := d.Snapshots[0].ChangeID

	// nbdinfo maps the dirty bitmap of the second snapshot since the first.
	tk := h.ticket(TicketRequest{Disk: name, Snapshot: s2.ID})
	uri := tk.URI + "?tls-certificates=" + url.QueryEscape(ca)
	out, err := exec.Command(nbdinfo, "--json", "--map="+DirtyBitmapPrefix+cid1, uri).CombinedOutput()
	if err != nil {
		t.Fatalf("nbdinfo --map: %v\n%s", err, out)
	}
	var m []struct {
		Offset, Length int64
		Type           int
	}
	if err := json.Unmarshal(out, &m); err != nil {
		t.Fatalf("nbdinfo output %q: %v", out, err)
	}
	var dirty []string
	for _, e := range m {
		if e.Type&1 != 0 {
			dirty = append(dirty, strings.TrimSpace(strings.Join([]string{itoa(e.Offset), itoa(e.Length)}, "+")))
		}
	}
	if got, want := strings.Join(dirty, " "), "1048576+65536 8388608+1048576"; got != want {
		t.Errorf("dirty map since %s: %s, want %s", cid1, got, want)
	}
	// qemu-img reads the frozen snapshot: 0x11 over 4M but a zeroed 64k at
	// 1M, and 0x22 over 1M at 8M.
	want := make([]byte, 16<<20)
	copy(want, bytes.Repeat([]byte{0x11}, 4<<20))
	clear(want[1<<20 : 1<<20+64<<10])
	copy(want[8<<20:], bytes.Repeat([]byte{0x22}, 1<<20))
	ref := filepath.Join(t.TempDir(), "want.raw")
	os.WriteFile(ref, want, 0o600)
	img := "json:" + mustJSON(map[string]any{"file.driver": "nbd", "file.server.type": "inet",
		"file.server.host": "127.0.0.1", "file.server.port": strings.Split(strings.TrimPrefix(tk.URI, "nbds://127.0.0.1:"), "/")[0],
		"file.export": tk.Ticket, "file.tls-creds": "tls0"})
	cmd := exec.Command(qimg, "compare", "--object", "tls-creds-x509,id=tls0,endpoint=client,dir="+ca, "-f", "raw", "-F", "raw", ref, img)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("qemu-img compare over NBD/TLS: %v\n%s", err, out)
	}
}

func itoa(n int64) string { b, _ := json.Marshal(n); return string(b) }

func mustJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}
