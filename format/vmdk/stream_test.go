package vmdk

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/vdisk-project/vdisk/disk"
	"github.com/vdisk-project/vdisk/disk/disktest"
	"github.com/vdisk-project/vdisk/internal/testenv"
)

// writeStream creates a streamOptimized image from a model, written in
// ascending chunks of the given size.
func writeStream(t testing.TB, path string, model []byte, chunk int) {
	t.Helper()
	d, err := Create(context.Background(), path, int64(len(model)), &CreateOptions{Subformat: StreamOptimized, Adapter: "lsilogic"})
	if err != nil {
		t.Fatal(err)
	}
	for off := 0; off < len(model); off += chunk {
		end := min(off+chunk, len(model))
		if disk.IsZero(model[off:end]) {
			continue
		}
		if _, err := d.WriteAt(model[off:end], int64(off)); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
}

func scattered(size int, seed uint64) []byte {
	b := make([]byte, size)
	rngFill(b, seed)
	return b
}

func rngFill(b []byte, seed uint64) {
	x := seed*2654435761 + 1
	for start := 0; start < len(b); start += 96 << 10 {
		x = x*6364136223846793005 + 1442695040888963407
		if x>>62 == 0 { // about a quarter of the runs hold data
			for i := start; i < min(start+70<<10, len(b)); i++ {
				x = x*6364136223846793005 + 1442695040888963407
				b[i] = byte(x >> 56 & 0x3f) // compressible
			}
		}
	}
}

func TestStreamRoundTrip(t *testing.T) {
	for _, size := range []int{64 << 10, 5<<20 + 512*7, 40 << 20} {
		for _, chunk := range []int{4096, 1 << 20, 100000} {
			path := filepath.Join(t.TempDir(), "s.vmdk")
			model := scattered(size, uint64(size+chunk))
			writeStream(t, path, model, chunk)
			d, err := Open(ctx, path, &OpenOptions{ReadOnly: true})
			if err != nil {
				t.Fatal(err)
			}
			got := make([]byte, size)
			if _, err := d.ReadAt(got, 0); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, model) {
				t.Fatalf("size %d chunk %d: stream reads back different content", size, chunk)
			}
			disktest.CheckExtents(t, d)
			if info := d.Info(); info.CreateType != StreamOptimized || !info.Files[0].Compressed {
				t.Errorf("Info = %+v", info)
			}
			d.Close()
			checkImage(t, path)
		}
	}
}

func TestStreamOrder(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.vmdk")
	d, err := Create(ctx, path, 4<<20, &CreateOptions{Subformat: StreamOptimized})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.WriteAt([]byte{1}, 2<<20); err != nil {
		t.Fatal(err)
	}
	if _, err := d.WriteAt([]byte{1}, 1<<20); !errors.Is(err, disk.ErrNotSupported) {
		t.Errorf("backward write = %v, want ErrNotSupported", err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(ctx, path, nil); !errors.Is(err, disk.ErrPermission) {
		t.Errorf("opening a stream read-write = %v, want ErrPermission", err)
	}
}

// TestStreamQemu: qemu-img accepts our streams and reads them exactly; we
// read qemu's streams (TestWeReadQemus covers qemu's layout).
func TestStreamQemu(t *testing.T) {
	testenv.Tool(t, "qemu-img")
	dir := t.TempDir()
	model := scattered(9<<20+4096, 3)
	raw := filepath.Join(dir, "m.raw")
	if err := os.WriteFile(raw, model, 0o644); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "s.vmdk")
	writeStream(t, path, model, 1<<20)
	testenv.Run(t, "qemu-img", "check", path)
	testenv.Run(t, "qemu-img", "compare", "-f", "vmdk", "-F", "raw", path, raw)
	out := testenv.Run(t, "qemu-img", "info", path)
	if !bytes.Contains([]byte(out), []byte("create type: streamOptimized")) {
		t.Errorf("qemu-img info:\n%s", out)
	}
}

// TestStreamTruncated: the real truncated ttylinux stream from VMware's
// tooling is refused with a clear error, and readable with salvage.
func TestStreamTruncated(t *testing.T) {
	src := filepath.Join("testdata", "stream", "ttylinux-disk1-truncated.vmdk")
	if _, err := os.Stat(src); err != nil {
		t.Skip("sample missing")
	}
	_, err := Open(ctx, src, &OpenOptions{ReadOnly: true})
	if !errors.Is(err, disk.ErrCorrupt) || !bytes.Contains([]byte(err.Error()), []byte("truncated")) {
		t.Fatalf("open truncated stream = %v; want ErrCorrupt saying truncated", err)
	}
	d, err := Open(ctx, src, &OpenOptions{Salvage: true})
	if err != nil {
		t.Fatalf("salvage open: %v", err)
	}
	defer d.Close()
	if d.Size() != 30<<20 {
		t.Errorf("size %d, want 30 MiB", d.Size())
	}
	var data int64
	for _, e := range disktest.CheckExtents(t, d) {
		if e.Flags.Data() {
			data += e.Len
		}
	}
	if data == 0 {
		t.Fatal("salvage found no grains")
	}
	buf := make([]byte, d.Size())
	if _, err := d.ReadAt(buf, 0); err != nil && err != io.EOF {
		t.Fatalf("salvage read: %v", err)
	}
	// The first sector of the disk is an MBR.
	if buf[510] != 0x55 || buf[511] != 0xaa {
		t.Errorf("salvaged sector 0 has no MBR signature")
	}
}

func BenchmarkStreamWrite(b *testing.B) {
	model := scattered(64<<20, 9)
	var data int64
	for i := 0; i < len(model); i += 65536 {
		if !disk.IsZero(model[i:min(i+65536, len(model))]) {
			data += 65536
		}
	}
	b.SetBytes(data)
	b.ReportAllocs()
	for b.Loop() {
		writeStream(b, filepath.Join(b.TempDir(), "s.vmdk"), model, 1<<20)
	}
}

// TestStreamRepair: check finds the truncated sample's damage, and
// check -r all rebuilds it into a stream qemu accepts whose grains read as
// their compressed payloads say (the same bytes as the salvage read).
func TestStreamRepair(t *testing.T) {
	src := filepath.Join("testdata", "stream", "ttylinux-disk1-truncated.vmdk")
	b, err := os.ReadFile(src)
	if err != nil {
		t.Skip("sample missing")
	}
	path := filepath.Join(t.TempDir(), "tty.vmdk")
	os.WriteFile(path, b, 0o644)
	r, err := Check(ctx, path, nil)
	if err != nil || r.Errors == 0 {
		t.Fatalf("check of the truncated stream = %+v, %v; want errors", r, err)
	}
	sd, err := Open(ctx, path, &OpenOptions{Salvage: true})
	if err != nil {
		t.Fatal(err)
	}
	want := make([]byte, sd.Size())
	sd.ReadAt(want, 0)
	sd.Close()
	r, err = Check(ctx, path, &CheckOptions{Repair: RepairAll})
	if err != nil || !r.Clean() {
		t.Fatalf("repair = %+v, %v", r, err)
	}
	if r, err := Check(ctx, path, nil); err != nil || r.Errors != 0 {
		t.Fatalf("check after repair = %+v, %v", r, err)
	}
	d, err := Open(ctx, path, &OpenOptions{ReadOnly: true})
	if err != nil {
		t.Fatalf("open after repair: %v", err)
	}
	got := make([]byte, d.Size())
	if _, err := d.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	d.Close()
	if !bytes.Equal(got, want) {
		t.Error("the repaired stream reads differently from the salvaged grains")
	}
	if _, err := exec.LookPath("qemu-img"); err == nil || testenv.Required("qemu-img") {
		testenv.Run(t, "qemu-img", "check", path)
		if q := readAll(t, path, "vmdk"); !bytes.Equal(q, want) {
			t.Error("qemu reads the repaired stream differently")
		}
	}
}
