package server

import (
	"testing"

	"github.com/vdisk-project/vdisk/hostapi"
)

func TestVSphereNames(t *testing.T) {
	if a, b := vmMoRef("web01"), vmMoRef("web01"); a != b || a == vmMoRef("web02") || len(a) < 4 || a[:3] != "vm-" {
		t.Errorf("vmMoRef: got %q, %q, %q; want a stable vm-N per name", a, b, vmMoRef("web02"))
	}
	for _, tc := range []struct {
		in   hostapi.DiskInfo
		want string
	}{
		{hostapi.DiskInfo{Name: "web01-scsi0-0", VM: "web01", Datastore: "default"}, "[datastore1] web01/web01-scsi0-0.vmdk"},
		{hostapi.DiskInfo{Name: "solo", Datastore: "fast"}, "[fast] solo/solo.vmdk"},
	} {
		if got := datastorePath(tc.in); got != tc.want {
			t.Errorf("datastorePath(%+v) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
