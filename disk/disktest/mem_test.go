package disktest_test

import (
	"testing"

	"github.com/vdisk-project/vdisk/disk"
	"github.com/vdisk-project/vdisk/disk/disktest"
)

func TestMemDisk(t *testing.T) {
	disktest.RunTests(t, disktest.Harness{
		New: func(t *testing.T, size int64) disk.Disk { return disktest.NewMemDisk(size) },
	})
}
