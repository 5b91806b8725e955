package source_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"path/filepath"
	"testing"

	"github.com/vdisk-project/vdisk"
	"github.com/vdisk-project/vdisk/backup/source"
	"github.com/vdisk-project/vdisk/disk"
	"github.com/vdisk-project/vdisk/format"
	"github.com/vdisk-project/vdisk/hostapi"
	"github.com/vdisk-project/vdisk/internal/hostclient"
	"github.com/vdisk-project/vdisk/server/servertest"
)

type env struct {
	c  *vdisk.Conn
	hc *hostclient.Client
}

func start(t *testing.T) env {
	t.Helper()
	h := servertest.New(t, nil)
	ctx := context.Background()
	c, err := vdisk.Connect(ctx, vdisk.ConnectParams{Server: h.API, User: "admin", Password: servertest.Password, Thumbprint: h.Thumbprint, Transports: "nbdssl"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	hc, err := hostclient.New(hostclient.Options{Server: h.API, Thumbprint: h.Thumbprint, Token: c.Token()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(hc.Close)
	return env{c, hc}
}

func write(t *testing.T, c *vdisk.Conn, spec vdisk.Spec, off int64, p []byte) {
	t.Helper()
	d, err := c.Open(context.Background(), spec, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.WriteAt(p, off); err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
}

func rnd(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// clean checks the host holds no snapshot and no lease of the disk.
func clean(t *testing.T, e env, name string) {
	t.Helper()
	di, err := e.hc.Disk(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	if len(di.Snapshots) != 0 || len(di.Leases) != 0 || len(di.Direct) != 0 {
		t.Errorf("disk %s after Close: snapshots %v, leases %v, direct %v", name, di.Snapshots, di.Leases, di.Direct)
	}
}

func TestHostDiskIncremental(t *testing.T) {
	ctx := context.Background()
	e := start(t)
	spec := vdisk.Spec{Disk: "d1"}
	if err := e.c.Create(ctx, spec, vdisk.CreateParams{Capacity: 64 << 20, CBT: true}); err != nil {
		t.Fatal(err)
	}
	first := rnd(1 << 20)
	write(t, e.c, spec, 8<<20, first)

	s, err := source.Open(ctx, "vdisk:disk/d1", source.Options{Conn: e.c})
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Disks) != 1 || s.Disks[0].Name != "d1" || s.Disks[0].Changed != nil || s.Disks[0].Full == "" || s.Disks[0].ChangeID == "" {
		t.Fatalf("first source: %+v", s.Disks)
	}
	// The source is frozen: a write after Open is not seen.
	write(t, e.c, spec, 8<<20, rnd(4096))
	got := make([]byte, len(first))
	if _, err := s.Disks[0].Disk.ReadAt(got, 8<<20); err != nil || !bytes.Equal(got, first) {
		t.Fatalf("snapshot read: %v, equal %v", err, bytes.Equal(got, first))
	}
	prev := s.Disks[0].ChangeID
	if err := s.Close(ctx); err != nil {
		t.Fatal(err)
	}
	clean(t, e, "d1")

	write(t, e.c, spec, 30<<20, rnd(128<<10))
	zero := make([]byte, 1<<20)
	write(t, e.c, spec, 40<<20, zero)
	s, err = source.Open(ctx, "vdisk:disk/d1", source.Options{Conn: e.c, Prev: map[string]string{"d1": prev}})
	if err != nil {
		t.Fatal(err)
	}
	ch := s.Disks[0].Changed
	if ch == nil {
		t.Fatalf("incremental is full: %s", s.Disks[0].Full)
	}
	covers := func(off, n int64) bool {
		for _, x := range ch {
			if x.Off <= off && off+n <= x.End() {
				return true
			}
		}
		return false
	}
	var total int64
	for _, x := range ch {
		total += x.Len
	}
	if !covers(8<<20, 4096) || !covers(30<<20, 128<<10) || total > 4<<20 {
		t.Errorf("changed areas %v (%d bytes) do not match the writes", ch, total)
	}
	if covers(0, 4096) || covers(50<<20, 4096) {
		t.Errorf("changed areas %v include untouched ranges", ch)
	}
	if err := s.Close(ctx); err != nil {
		t.Fatal(err)
	}
	clean(t, e, "d1")

	// A change ID the host does not know: a full read, said why.
	s, err = source.Open(ctx, "vdisk:disk/d1", source.Options{Conn: e.c, Prev: map[string]string{"d1": "00 00-00/1"}})
	if err != nil {
		t.Fatal(err)
	}
	if s.Disks[0].Changed != nil || s.Disks[0].Full == "" {
		t.Errorf("unknown change ID: changed %v, full %q", s.Disks[0].Changed, s.Disks[0].Full)
	}
	s.Close(ctx)
	clean(t, e, "d1")
}

func TestHostVM(t *testing.T) {
	ctx := context.Background()
	e := start(t)
	if err := e.hc.Do(ctx, "POST", "/api/v1/vms", map[string]string{"name": "vm1"}, nil); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"scsi0:0", "scsi0:1"} {
		if err := e.c.Create(ctx, vdisk.Spec{VM: "vm1", Key: k}, vdisk.CreateParams{Capacity: 16 << 20, CBT: true}); err != nil {
			t.Fatal(err)
		}
	}
	a, b := rnd(64<<10), rnd(64<<10)
	write(t, e.c, vdisk.Spec{VM: "vm1", Key: "scsi0:0"}, 0, a)
	write(t, e.c, vdisk.Spec{VM: "vm1", Key: "scsi0:1"}, 0, b)
	s, err := source.Open(ctx, "vdisk:vm/vm1", source.Options{Conn: e.c})
	if err != nil {
		t.Fatal(err)
	}
	if s.Kind != "host-vm" || len(s.Disks) != 2 || s.Snapshot == "" {
		t.Fatalf("vm source %+v", s)
	}
	var vm hostapi.VMInfo
	if err := json.Unmarshal(s.Config, &vm); err != nil || vm.Name != "vm1" || len(vm.Disks) != 2 {
		t.Errorf("config %s: %v", s.Config, err)
	}
	for i, want := range [][]byte{a, b} {
		got := make([]byte, len(want))
		if _, err := s.Disks[i].Disk.ReadAt(got, 0); err != nil || !bytes.Equal(got, want) {
			t.Errorf("disk %s: %v", s.Disks[i].Name, err)
		}
	}
	if err := s.Close(ctx); err != nil {
		t.Fatal(err)
	}
	vm, err = e.c.VM(ctx, "vm1")
	if err != nil || len(vm.Snapshots) != 0 {
		t.Errorf("VM snapshots after Close: %v %v", vm.Snapshots, err)
	}
	for _, d := range vm.Disks {
		clean(t, e, d.Name)
	}
	// A VM that does not exist: not found, nothing left behind.
	if _, err := source.Open(ctx, "vdisk:vm/nope", source.Options{Conn: e.c}); !errors.Is(err, disk.ErrNotFound) {
		t.Errorf("missing VM: %v", err)
	}
	for _, bad := range []string{"vdisk:vm/", "vdisk:vm/a/b", "vdisk:x/y", "vdisk:disk/a@s"} {
		if _, err := source.Open(ctx, bad, source.Options{Conn: e.c}); !errors.Is(err, disk.ErrInvalid) {
			t.Errorf("%s: %v", bad, err)
		}
	}
}

// TestOpenFailureUndoes: a disk that cannot be opened (ctx canceled after
// the snapshot) leaves no snapshot and no lease.
func TestOpenFailureUndoes(t *testing.T) {
	e := start(t)
	ctx := context.Background()
	if err := e.c.Create(ctx, vdisk.Spec{Disk: "d"}, vdisk.CreateParams{Capacity: 1 << 20, CBT: true}); err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := source.Open(cctx, "vdisk:disk/d", source.Options{Conn: e.c}); err == nil {
		t.Fatal("open with a canceled context succeeded")
	}
	clean(t, e, "d")
}

func TestImage(t *testing.T) {
	ctx := context.Background()
	p := filepath.Join(t.TempDir(), "i.vmdk")
	d, err := format.Create(ctx, p, format.VMDK, 4<<20, nil)
	if err != nil {
		t.Fatal(err)
	}
	d.WriteAt([]byte("hello"), 1<<20)
	d.Close()
	s, err := source.Open(ctx, p, source.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(ctx)
	if s.Kind != "image" || len(s.Disks) != 1 || s.Disks[0].Changed != nil {
		t.Fatalf("%+v", s)
	}
	if _, err := s.Disks[0].Disk.WriteAt([]byte("x"), 0); err == nil {
		t.Error("a backup source is writable")
	}
}
