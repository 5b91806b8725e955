package vdisk_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"path/filepath"

	"github.com/vdisk-project/vdisk"
)

// Open a local image, write and read it, and ask which blocks hold data.
func Example() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "vdisk-example")
	defer os.RemoveAll(dir)
	img := vdisk.Spec{Path: filepath.Join(dir, "disk.vmdk")}

	c, err := vdisk.Connect(ctx, vdisk.ConnectParams{}) // local files
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	if err := c.Create(ctx, img, vdisk.CreateParams{Capacity: 1 << 30}); err != nil {
		log.Fatal(err)
	}
	h, err := c.Open(ctx, img, 0)
	if err != nil {
		log.Fatal(err)
	}
	defer h.Close()
	h.WriteAt([]byte("hello, disk"), 512<<20)
	buf := make([]byte, 11)
	h.ReadAt(buf, 512<<20)
	blocks, _ := h.QueryAllocatedBlocks(ctx, 0, h.Size(), vdisk.MinChunkSize)
	in, _ := h.Info(ctx)
	fmt.Printf("%s via %s, %s %d bytes, allocated %+v\n", buf, h.TransportMode(), in.Type, in.Capacity, blocks)
	// Output: hello, disk via file, monolithicSparse 1073741824 bytes, allocated [{Offset:536870912 Length:65536}]
}

// Back up a VM's disk from a host: prepare access, snapshot, read the
// changed areas of the snapshot, remove the snapshot, end access. See
// examples/backup for a complete program.
func ExampleConn_Open_host() {
	ctx := context.Background()
	c, err := vdisk.Connect(ctx, vdisk.ConnectParams{
		Server:     "backup-host.example:8443",
		User:       "backup",
		Password:   os.Getenv("VDISK_PASSWORD"),
		Thumbprint: "AB:CD:…", // the host's SHA-256 thumbprint, as `vdisk serve` prints it
		Transports: "direct:nbdssl",
	})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	vm := vdisk.Spec{VM: "web01"}
	lease, _ := c.PrepareForAccess(ctx, vm, "nightly backup")
	defer c.EndAccess(ctx, lease)
	sn, _ := c.CreateSnapshot(ctx, vm, "nightly", true)
	defer c.RemoveSnapshot(ctx, vm, sn.ID)

	h, err := c.Open(ctx, vdisk.Spec{VM: "web01", Key: "scsi0:0", Snapshot: sn.ID}, vdisk.OpenReadOnly)
	if err != nil {
		log.Fatal(err)
	}
	defer h.Close()
	previous := "52 de c0 d9 98 ae e2 e9-7c c4 0e 5e 8c 59 2e 7e/9" // saved by the last run
	_, err = h.ChangedAreas(ctx, previous, 0, func(a vdisk.Area) error {
		if a.Zero {
			return nil // record zeros; nothing to read
		}
		buf := make([]byte, a.Length)
		_, err := h.ReadAt(buf, a.Start)
		return err // … and store buf at a.Start
	})
	if err != nil {
		log.Fatal(vdisk.ErrorText(err))
	}
}

// Asynchronous reads, VixDiskLib_ReadAsync style.
func ExampleHandle_ReadAsync() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "vdisk-example")
	defer os.RemoveAll(dir)
	c, _ := vdisk.Connect(ctx, vdisk.ConnectParams{})
	defer c.Close()
	img := vdisk.Spec{Path: filepath.Join(dir, "a.raw")}
	c.Create(ctx, img, vdisk.CreateParams{Capacity: 16 << 20, Type: "raw"})
	h, _ := c.Open(ctx, img, 0)
	defer h.Close()
	bufs := make([][]byte, 4)
	for i := range bufs {
		bufs[i] = make([]byte, 1<<20)
		h.ReadAsync(bufs[i], int64(i)<<20)
	}
	fmt.Println(h.Wait(ctx))
	// Output: <nil>
}
