package server

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/vdisk-project/vdisk/internal/hostclient"
)

// TestWireTypes keeps hostclient's copies of the API's wire types in step
// with the server's: the same JSON fields, both ways.
func TestWireTypes(t *testing.T) {
	now := time.Now().UTC().Truncate(time.Second)
	pairs := []struct{ server, client any }{
		{&Ticket{Ticket: "t", ID: "i", Target: "disk/a", Mode: "rw", Expires: now, Size: 9, URI: "nbds://h/t", PlainURI: "nbd://h/t", Thumbprint: "AB"}, &hostclient.Ticket{}},
		{&TicketRequest{Disk: "a", VM: "v", Key: "scsi0:0", Snapshot: "s", Mode: "ro", TTL: 5, MaxConns: 2}, &hostclient.TicketRequest{}},
		{&About{Version: "1", Thumbprint: "AB", NBD: []string{"x"}, PlainNBD: []string{"y"}, Datastores: []string{"default"}}, &hostclient.About{}},
		{&diskRequest{Key: "k", Name: "n", Capacity: 1, Type: "vmfs", Adapter: "ide", CBT: true, CBTBlockSize: 4096}, &hostclient.DiskRequest{}},
	}
	for _, p := range pairs {
		b, _ := json.Marshal(p.server)
		if err := json.Unmarshal(b, p.client); err != nil {
			t.Fatal(err)
		}
		b2, _ := json.Marshal(p.client)
		var m1, m2 map[string]any
		json.Unmarshal(b, &m1)
		json.Unmarshal(b2, &m2)
		if !reflect.DeepEqual(m1, m2) {
			t.Errorf("%T and %T differ on the wire:\n%s\n%s", p.server, p.client, b, b2)
		}
	}
}
