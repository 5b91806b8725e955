package cli

import (
	"bytes"
	"strings"
	"testing"

	"github.com/vdisk-project/vdisk/backup"
	"github.com/vdisk-project/vdisk/backup/source"
	"github.com/vdisk-project/vdisk/disk/disktest"
)

// TestDiskBars: one bar per disk, each ending at its disk's size.
func TestDiskBars(t *testing.T) {
	var out bytes.Buffer
	disks := []source.Disk{{Name: "scsi0:0", Disk: disktest.NewMemDisk(8 << 20)}, {Name: "scsi0:1", Disk: disktest.NewMemDisk(4 << 20)}}
	update, finish := diskBars(&out, "vdisk:vm/web", disks)
	for done := int64(0); done <= 8<<20; done += 1 << 20 {
		update(backup.Progress{Disk: "scsi0:0", Done: done, Total: 8 << 20})
		if done <= 4<<20 {
			update(backup.Progress{Disk: "scsi0:1", Done: done, Total: 4 << 20})
		}
	}
	finish()
	s := out.String()
	for _, want := range []string{"scsi0:0", "scsi0:1", "8.0 MiB / 8.0 MiB", "4.0 MiB / 4.0 MiB"} {
		if !strings.Contains(s, want) {
			t.Errorf("bars lack %q:\n%q", want, s)
		}
	}
}
