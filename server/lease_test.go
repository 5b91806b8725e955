package server

import (
	"net/http"
	"testing"

	"github.com/vdisk-project/vdisk/internal/datastore"
)

// TestLeasePrivilegeAndLifetime: a read-only user can take neither access
// nor direct leases (they pin a disk's layout and hand out its file
// paths); a backup user's direct read lease on one snapshot does not stall
// the consolidation of another; other users never see a lease's paths;
// and leases end with the session that took them.
func TestLeasePrivilegeAndLifetime(t *testing.T) {
	h := startHost(t, nil)
	h.must("POST", "/api/v1/disks", map[string]any{"name": "d", "capacity": 4 << 20}, nil)
	users := map[string]string{}
	for _, u := range []struct{ name, role string }{{"viewer", "read-only"}, {"backup1", "backup"}} {
		var out struct{ Password string }
		h.must("POST", "/api/v1/users", map[string]string{"name": u.name, "role": u.role}, &out)
		users[u.name] = h.login(u.name, out.Password)
	}
	viewer, backup := users["viewer"], users["backup1"]
	var a, b datastore.SnapshotInfo
	h.must("POST", "/api/v1/disks/d/snapshots", map[string]any{"name": "a"}, &a)
	// Data in the layer between a and b, so that removing b merges.
	tk := h.ticket(TicketRequest{Disk: "d", Mode: "rw"})
	c := h.dial(tk)
	c.WriteAt(make([]byte, 64<<10), 0)
	c.Close()
	h.must("POST", "/api/v1/disks/d/snapshots", map[string]any{"name": "b"}, &b)

	for _, req := range []struct {
		path string
		body any
	}{
		{"/api/v1/disks/d/access", map[string]string{"reason": "x"}},
		{"/api/v1/disks/d/direct", map[string]string{"snapshot": a.ID}},
	} {
		if st, _ := h.errCode(viewer, "POST", req.path, req.body); st != http.StatusForbidden {
			t.Errorf("read-only user: POST %s: %d, want 403", req.path, st)
		}
	}
	var dl datastore.DirectLease
	if st := h.doAs(backup, "POST", "/api/v1/disks/d/direct", map[string]string{"snapshot": a.ID}, &dl); st != http.StatusCreated && st != http.StatusOK {
		t.Fatalf("backup user's direct lease: %d", st)
	}
	if dl.Path == "" {
		t.Fatal("the holder got no path")
	}
	var lease datastore.Lease
	if st := h.doAs(backup, "POST", "/api/v1/disks/d/access", map[string]string{"reason": "nightly"}, &lease); st >= 300 {
		t.Fatalf("backup user's access lease: %d", st)
	}
	// Removing b consolidates the layers above a's chain.
	var before, after datastore.DiskInfo
	h.must("GET", "/api/v1/disks/d", nil, &before)
	h.must("DELETE", "/api/v1/disks/d/snapshots/"+b.ID, nil, nil)
	h.must("GET", "/api/v1/disks/d", nil, &after)
	if after.Layers >= before.Layers {
		t.Errorf("a direct lease on %s stalled the consolidation of %s: %d layers before, %d after", a.ID, b.ID, before.Layers, after.Layers)
	}
	var seen datastore.DiskInfo
	h.doAs(viewer, "GET", "/api/v1/disks/d", nil, &seen)
	for _, l := range seen.Direct {
		if l.Path != "" || l.Proof != "" || l.Nonce != "" {
			t.Errorf("another user sees the lease's path %q, proof %q, nonce %q", l.Path, l.Proof, l.Nonce)
		}
	}
	if len(seen.Direct) != 1 || len(seen.Leases) != 1 {
		t.Fatalf("leases: %d direct, %d access; want 1 each", len(seen.Direct), len(seen.Leases))
	}
	// The session ends: its leases go with it.
	if st := h.doAs(backup, "POST", "/api/v1/logout", nil, nil); st >= 300 {
		t.Fatalf("logout: %d", st)
	}
	var end datastore.DiskInfo
	h.must("GET", "/api/v1/disks/d", nil, &end)
	if len(end.Direct) != 0 || len(end.Leases) != 0 {
		t.Errorf("after the holder's session ended: %d direct and %d access leases remain", len(end.Direct), len(end.Leases))
	}
}
