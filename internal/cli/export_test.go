package cli

import (
	"bytes"
	"context"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vdisk-project/vdisk/internal/testenv"
)

// TestExport serves a VMDK with vdisk export and reads and writes it with
// qemu-img and qemu-io over TCP and a Unix socket.
func TestExport(t *testing.T) {
	testenv.Tool(t, "qemu-img")
	dir := t.TempDir()
	src, content := sample(t, dir)
	img := filepath.Join(dir, "e.vmdk")
	mustRun(t, "convert", "-O", "vmdk", src, img)
	for _, mode := range []string{"tcp", "tcp6", "unix"} {
		t.Run(mode, func(t *testing.T) {
			o := exportOptions{bind: "127.0.0.1:0", shared: 4, name: "e"}
			switch mode {
			case "unix":
				o.socket = filepath.Join(t.TempDir(), "nbd.sock")
			case "tcp6":
				if l, err := net.Listen("tcp", "[::1]:0"); err != nil {
					t.Skipf("no IPv6 loopback here: %v", err)
				} else {
					l.Close()
				}
				o.bind = "[::1]:0"
			}
			ctx, cancel := context.WithCancel(context.Background())
			ready := make(chan string, 1)
			done := make(chan error, 1)
			var stderr bytes.Buffer
			go func() { done <- runExport(ctx, o, img, &stderr, ready) }()
			var addr string
			select {
			case addr = <-ready:
			case err := <-done:
				t.Fatalf("export: %v", err)
			case <-time.After(10 * time.Second):
				t.Fatal("export did not start")
			}
			u := "nbd://" + addr + "/e"
			if mode == "unix" {
				u = "nbd+unix:///e?socket=" + o.socket
			}
			out := filepath.Join(t.TempDir(), "o.raw")
			testenv.Run(t, "qemu-img", "convert", "-O", "raw", u, out)
			got, _ := os.ReadFile(out)
			if !bytes.Equal(got, content) {
				t.Error("qemu-img read different data from vdisk export")
			}
			testenv.Run(t, "qemu-io", "-f", "raw", "-c", "write -P 0x77 64k 4k", u)
			cancel()
			if err := <-done; err != nil {
				t.Fatalf("export ended with %v", err)
			}
			if !strings.Contains(stderr.String(), "serving") {
				t.Errorf("stderr: %s", stderr.String())
			}
			content = append([]byte(nil), content...)
			copy(content[64<<10:], bytes.Repeat([]byte{0x77}, 4096))
			if out := mustRun(t, "check", img); !strings.Contains(out, "No errors") {
				t.Errorf("check after export: %s", out)
			}
		})
	}
	raw := filepath.Join(dir, "final.raw")
	mustRun(t, "convert", "-O", "raw", img, raw)
	got, _ := os.ReadFile(raw)
	if !bytes.Equal(got, content) {
		t.Error("writes through vdisk export did not persist")
	}
}

// TestNBDURIs: commands take NBD URIs: convert from and compare with an
// export served by vdisk itself.
func TestNBDURIs(t *testing.T) {
	dir := t.TempDir()
	src, content := sample(t, dir)
	img := filepath.Join(dir, "u.vmdk")
	mustRun(t, "convert", "-O", "vmdk", src, img)
	o := exportOptions{socket: filepath.Join(dir, "u.sock"), shared: 8, readOnly: true}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ready := make(chan string, 1)
	done := make(chan error, 1)
	go func() { done <- runExport(ctx, o, img, io.Discard, ready) }()
	<-ready
	u := "nbd+unix:///?socket=" + o.socket
	if out := mustRun(t, "info", u); !strings.Contains(out, "virtual size: 8 MiB") {
		t.Errorf("info over NBD:\n%s", out)
	}
	dst := filepath.Join(dir, "from-nbd.vmdk")
	mustRun(t, "convert", "-O", "vmdk", "-o", "subformat=streamOptimized", u, dst)
	mustRun(t, "compare", u, dst)
	mustRun(t, "compare", src, u)
	out := filepath.Join(dir, "o.raw")
	mustRun(t, "convert", "-O", "raw", dst, out)
	got, _ := os.ReadFile(out)
	if !bytes.Equal(got, content) {
		t.Error("NBD -> streamOptimized -> raw changed the content")
	}
	if _, _, code := run(t, "map", "nbd+unix:///nope?socket="+o.socket); code != ExitNotFound {
		t.Errorf("unknown export: exit %d, want %d", code, ExitNotFound)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
