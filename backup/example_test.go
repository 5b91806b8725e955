package backup_test

import (
	"context"
	"fmt"

	"github.com/vdisk-project/vdisk/backup"
	"github.com/vdisk-project/vdisk/backup/storage/mem"
	"github.com/vdisk-project/vdisk/disk"
	"github.com/vdisk-project/vdisk/disk/disktest"
)

// A full backup, an incremental from the changed areas, and a read of the
// newest point.
func Example() {
	ctx := context.Background()
	repo, err := backup.Init(ctx, mem.New(), backup.InitOptions{Password: []byte("secret"), ScryptN: 1024})
	if err != nil {
		panic(err)
	}
	defer repo.Close()

	d := disktest.NewMemDisk(64 << 20)
	_, _ = d.WriteAt([]byte("first"), 0)
	full, _, err := repo.Backup(ctx, backup.BackupOptions{
		Source: "vm/web01",
		Disks:  []backup.SourceDisk{{Name: "scsi0:0", Disk: d, ChangeID: "uuid/1"}},
	})
	if err != nil {
		panic(err)
	}

	_, _ = d.WriteAt([]byte("second"), 32<<20)
	incr, sum, err := repo.Backup(ctx, backup.BackupOptions{
		Source: "vm/web01",
		Parent: full,
		Disks: []backup.SourceDisk{{Name: "scsi0:0", Disk: d, ChangeID: "uuid/2",
			Changed: []disk.Extent{{Off: 32 << 20, Len: 6}}}},
	})
	if err != nil {
		panic(err)
	}
	fmt.Println("incremental read", sum.BytesRead, "bytes")

	r, err := repo.OpenDisk(ctx, incr, "scsi0:0")
	if err != nil {
		panic(err)
	}
	defer r.Close()
	buf := make([]byte, 6)
	_, _ = r.ReadAt(buf, 32<<20)
	fmt.Printf("%s\n", buf)
	// Output:
	// incremental read 6 bytes
	// second
}
