package vdisk_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/vdisk-project/vdisk"
)

func TestLocalAdmin(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	c, err := vdisk.Connect(ctx, vdisk.ConnectParams{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	base := vdisk.Spec{Path: filepath.Join(dir, "base.vmdk")}
	child := vdisk.Spec{Path: filepath.Join(dir, "child.vmdk")}
	if err := c.Create(ctx, base, vdisk.CreateParams{Capacity: 8 << 20}); err != nil {
		t.Fatal(err)
	}
	h, _ := c.Open(ctx, base, 0)
	h.WriteAt(bytes.Repeat([]byte{1}, 1<<20), 0)
	if n, err := h.SpaceNeededForClone(ctx, ""); err != nil || n < 1<<20 || n > 2<<20 {
		t.Errorf("space needed for a clone of 1 MiB of data: %d, %v", n, err)
	}
	h.Close()
	if err := c.CreateChild(ctx, base, child); err != nil {
		t.Fatal(err)
	}
	h, _ = c.Open(ctx, child, 0)
	h.WriteAt(bytes.Repeat([]byte{2}, 4096), 0)
	in, _ := h.Info(ctx)
	if in.Links != 2 || in.ParentHint != "base.vmdk" {
		t.Errorf("child info: %d links, parent %q", in.Links, in.ParentHint)
	}
	h.Close()
	// Single link reads only the child.
	h, _ = c.Open(ctx, child, vdisk.OpenSingleLink)
	// (The child's grain 0 holds a copy of the parent's rest of the grain;
	// grain 1 is not in the child.)
	b := make([]byte, 128<<10)
	h.ReadAt(b, 0)
	if b[0] != 2 || b[4096] != 1 || b[64<<10] != 0 {
		t.Errorf("single link read %d %d %d, want 2 1 0", b[0], b[4096], b[64<<10])
	}
	h.Close()
	// Detach by making a new base, then attach the child to it again.
	if err := c.IsAttachPossible(ctx, base, child); err != nil {
		t.Errorf("attach possible: %v", err)
	}
	other := vdisk.Spec{Path: filepath.Join(dir, "other.vmdk")}
	c.Create(ctx, other, vdisk.CreateParams{Capacity: 4 << 20})
	if err := c.IsAttachPossible(ctx, other, child); !errors.Is(err, vdisk.ErrInvalid) {
		t.Errorf("attach to a smaller parent: %v, want ErrInvalid", err)
	}
	if err := c.Attach(ctx, base, child); err != nil {
		t.Fatal(err)
	}
	if rep, err := c.CheckRepair(ctx, child, false); err != nil || rep.Errors != 0 {
		t.Errorf("check: %+v %v", rep, err)
	}
	if err := c.Grow(ctx, other, 16<<20); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Shrink(ctx, other); err != nil {
		t.Fatal(err)
	}
	if err := c.Unlink(ctx, other); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(other.Path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("unlinked file still there: %v", err)
	}
	if _, err := c.Open(ctx, vdisk.Spec{Disk: "x"}, 0); err == nil {
		t.Error("a host disk opened on a local connection")
	}
}

func TestLoadConfig(t *testing.T) {
	p := filepath.Join(t.TempDir(), "vdisk.conf")
	os.WriteFile(p, []byte("# kit\ntransports = direct:nbdssl\ntimeout = \"90s\"\nretries=2\nnbd_connections = 8\n"), 0o600)
	c, err := vdisk.LoadConfig(p)
	if err != nil {
		t.Fatal(err)
	}
	if c.Transports != "direct:nbdssl" || c.Timeout.Seconds() != 90 || c.Retries != 2 || c.NBDConnections != 8 {
		t.Errorf("config %+v", c)
	}
	os.WriteFile(p, []byte("tranports = nbd\n"), 0o600)
	if _, err := vdisk.LoadConfig(p); !errors.Is(err, vdisk.ErrInvalid) {
		t.Errorf("a misspelt key: %v, want ErrInvalid", err)
	}
}

func TestErrorText(t *testing.T) {
	err := vdisk.ErrBusy
	if vdisk.VixError(nil) != 0 || vdisk.VixError(err) == 0 || vdisk.ErrorText(err) == "" {
		t.Errorf("VixError/ErrorText: %d %q", vdisk.VixError(err), vdisk.ErrorText(err))
	}
	if vdisk.VixError(context.DeadlineExceeded) != 30028 {
		t.Error("a timeout is not VIX_E_NET_HTTP_OPERATION_TIMEDOUT")
	}
	if s := vdisk.ParseSpec("vm/web/scsi0:1@snapshot-2"); s.VM != "web" || s.Key != "scsi0:1" || s.Snapshot != "snapshot-2" || s.String() != "vm/web/scsi0:1@snapshot-2" {
		t.Errorf("ParseSpec: %+v", s)
	}
}

// FuzzLoadConfig: the kit's config parser never panics.
func FuzzLoadConfig(f *testing.F) {
	f.Add([]byte("# kit\ntransports = direct:nbdssl\ntimeout = \"90s\"\nretries=2\n"))
	f.Add([]byte("timeout = -1h\nretries = -3\nunknown\n"))
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, b []byte) {
		p := filepath.Join(dir, "c.conf")
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		vdisk.LoadConfig(p)
	})
}
