package volume

import (
	"context"
	"strings"
	"testing"

	"github.com/vdisk-project/vdisk/disk"
)

// TestPartitionPastTheEnd: a partition that runs past the disk's end is
// listed, cut to the disk, with the reason.
func TestPartitionPastTheEnd(t *testing.T) {
	m := make(memDisk, 1<<20)
	putEntry(m, 0, 0, 0x83, 1, 1<<30)
	putEntry(m, 1, 0, 0x83, 1<<30, 10)
	s, err := OpenSet(context.Background(), []disk.Disk{m}, nil)
	if err != nil {
		t.Fatal(err)
	}
	vs := s.Volumes()
	if len(vs) != 2 {
		t.Fatalf("%d volumes", len(vs))
	}
	for _, v := range vs {
		if v.Size < 0 || v.Size > 1<<20 || !strings.Contains(v.Unsupported, "past the disk's end") {
			t.Errorf("%s: size %d, unsupported %q", v.ID, v.Size, v.Unsupported)
		}
	}
	if len(s.Problems()) == 0 {
		t.Errorf("no problems reported")
	}
}
