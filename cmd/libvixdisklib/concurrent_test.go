package main

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vdisk-project/vdisk"
	"github.com/vdisk-project/vdisk/internal/testenv"
	"github.com/vdisk-project/vdisk/server/servertest"
)

// buildC compiles a test program from testdata against the installed
// header and library, with AddressSanitizer.
func buildC(t *testing.T, src string) string {
	t.Helper()
	lib, _ := built(t)
	exe := filepath.Join(t.TempDir(), strings.TrimSuffix(filepath.Base(src), ".c"))
	out, err := exec.Command("gcc", "-fsanitize=address", "-g", "-O1", "-Wall", "-Werror", "-I", filepath.Join(lib, "include"),
		"-o", exe, src, "-L", filepath.Join(lib, "lib64"), "-lvixDiskLib",
		"-Wl,-rpath,"+filepath.Join(lib, "lib64"), "-lpthread").CombinedOutput()
	if err != nil {
		t.Fatalf("gcc: %v\n%s", err, out)
	}
	return exe
}

// runC runs a program built by buildC and fails on its failure or on an
// AddressSanitizer report. detect_leaks=0: LeakSanitizer would report the
// Go runtime's own allocations, which live until the process ends.
func runC(t *testing.T, exe string, args ...string) string {
	t.Helper()
	cmd := exec.Command(exe, args...)
	cmd.Env = append(os.Environ(), "ASAN_OPTIONS=detect_leaks=0")
	out, err := cmd.CombinedOutput()
	if err != nil || strings.Contains(string(out), "ERROR: AddressSanitizer") {
		t.Fatalf("%s: %v\n%s", filepath.Base(exe), err, out)
	}
	return string(out)
}

// TestConcurrentHandle runs testdata/stress.c: eight C threads reading
// and writing one handle at once, synchronously and with batches of
// asynchronous requests, while a ninth asks for the allocated blocks,
// every read checked against the threads' model; then the disk is read
// whole after a reopen, and eight threads open, read and close it at
// once. On a local file (buffered, and unbuffered: O_DIRECT under
// malloc'd buffers) qemu-img checks the image and reads the model's
// bytes; on a host's disk (nbdssl, then nbd) a fresh kit connection reads
// them.
func TestConcurrentHandle(t *testing.T) {
	testenv.Tool(t, "gcc")
	exe := buildC(t, "testdata/stress.c")
	for _, mode := range []string{"local", "local-unbuffered"} {
		t.Run(mode, func(t *testing.T) {
			dir := t.TempDir()
			args := []string{dir}
			if mode == "local-unbuffered" {
				args = append(args, "unbuffered") // O_DIRECT under malloc'd buffers
			}
			stressLocal(t, exe, dir, args)
		})
	}
	t.Run("host", func(t *testing.T) {
		h, moref, _, dsPath, _ := remoteHost(t)
		host, port, _ := net.SplitHostPort(h.API)
		for _, mode := range []string{"nbdssl", "nbd"} {
			dir := t.TempDir()
			out := runC(t, exe, dir, host, port, "admin", servertest.Password, sha1Thumbprint(t, h.API), "moref="+moref, dsPath, mode)
			if !strings.Contains(out, "stress ok") || !strings.Contains(out, "concurrent opens ok") {
				t.Fatalf("%s: stress output:\n%s", mode, out)
			}
			want, err := os.ReadFile(filepath.Join(dir, "model.raw"))
			if err != nil {
				t.Fatal(err)
			}
			got, _ := hostDisk(t, h, vdisk.Spec{VM: "web01", Key: "scsi0:0"})
			if !bytes.Equal(got, want) {
				t.Fatalf("%s: the host's disk differs from the model", mode)
			}
		}
	})
}

// stressLocal runs stress.c on a new local disk in dir and checks the
// image with qemu-img against the program's model.
func stressLocal(t *testing.T, exe, dir string, args []string) {
	t.Helper()
	out := runC(t, exe, args...)
	if !strings.Contains(out, "stress ok") || !strings.Contains(out, "concurrent opens ok") {
		t.Fatalf("stress output:\n%s", out)
	}
	img := filepath.Join(dir, "stress.vmdk")
	run(t, "qemu-img", "check", img)
	run(t, "qemu-img", "compare", "-f", "raw", "-F", "vmdk", filepath.Join(dir, "model.raw"), img)
}

// TestFirstClassDisk runs testdata/fcd.c, a program that backs up a
// detached disk the way VDDK 6.7 does it (specType
// VIXDISKLIB_SPEC_VSTORAGE_OBJECT): the host's detached disks play
// vSphere's first class disks, named by their name or UUID, with their
// snapshots as ssId. The program reads the snapshot, and the live disk,
// through a NULL path, under a PrepareForAccess lease that EndAccess ends.
func TestFirstClassDisk(t *testing.T) {
	testenv.Tool(t, "gcc")
	exe := buildC(t, "testdata/fcd.c")
	h := servertest.New(t, nil)
	ctx := context.Background()
	c, err := vdisk.Connect(ctx, vdisk.ConnectParams{Server: h.API, User: "admin", Password: servertest.Password, Thumbprint: h.Thumbprint})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const size = 8 << 20
	spec := vdisk.Spec{Disk: "fcd1"}
	if err := c.Create(ctx, spec, vdisk.CreateParams{Capacity: size}); err != nil {
		t.Fatal(err)
	}
	write := func(b byte) []byte {
		d, err := c.Open(ctx, spec, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := d.WriteAt(bytes.Repeat([]byte{b}, 1<<20), 2<<20); err != nil {
			t.Fatal(err)
		}
		if err := d.Close(); err != nil {
			t.Fatal(err)
		}
		want := make([]byte, size)
		copy(want[2<<20:], bytes.Repeat([]byte{b}, 1<<20))
		return want
	}
	atSnap := write(0x11)
	sn, err := c.CreateSnapshot(ctx, spec, "backup", false)
	if err != nil {
		t.Fatal(err)
	}
	live := write(0x22)
	in, err := c.Disk(ctx, spec)
	if err != nil || in.UUID == "" {
		t.Fatalf("the disk has no UUID (err %v)", err)
	}
	host, port, _ := net.SplitHostPort(h.API)
	for _, tc := range []struct {
		name, id, snap string
		want           []byte
	}{
		{"snapshot-by-name", "fcd1", sn.ID, atSnap},
		{"live-by-uuid", strings.ToUpper(strings.ReplaceAll(in.UUID, " ", "")), "-", live},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "fcd.raw")
			cmd := exec.Command(exe, host, port, "admin", servertest.Password, h.Thumbprint, tc.id, tc.snap, out)
			cmd.Env = append(os.Environ(), "ASAN_OPTIONS=detect_leaks=0", "FCD_WAIT=1")
			stdin, _ := cmd.StdinPipe()
			var stdout, stderr bytes.Buffer
			pr, pw := io.Pipe()
			cmd.Stdout, cmd.Stderr = io.MultiWriter(&stdout, pw), &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			exited := make(chan error, 1)
			go func() {
				err := cmd.Wait()
				pw.Close()
				exited <- err
			}()
			sc := bufio.NewScanner(pr)
			for sc.Scan() && sc.Text() != "read" {
			}
			go io.Copy(io.Discard, pr)
			d, err := c.Disk(ctx, spec)
			if err != nil {
				t.Fatal(err)
			}
			leased := false
			for _, l := range d.Leases {
				leased = leased || l.Reason == "fcd-test"
			}
			stdin.Write([]byte("\n"))
			if err := <-exited; err != nil {
				t.Fatalf("fcd: %v\n%s%s", err, stdout.String(), stderr.String())
			}
			if !leased {
				t.Error("PrepareForAccess took no lease on the disk")
			}
			got, err := os.ReadFile(out)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, tc.want) {
				t.Errorf("the first class disk read differs from the %s", tc.name)
			}
			if d, err := c.Disk(ctx, spec); err != nil || len(d.Leases) != 0 {
				t.Errorf("after EndAccess the disk has leases %v (err %v)", d.Leases, err)
			}
		})
	}
	t.Run("unknown", func(t *testing.T) {
		cmd := exec.Command(exe, host, port, "admin", servertest.Password, h.Thumbprint, "no-such-disk", "-", filepath.Join(t.TempDir(), "x"))
		cmd.Env = append(os.Environ(), "ASAN_OPTIONS=detect_leaks=0")
		out, err := cmd.CombinedOutput()
		if err == nil || !strings.Contains(string(out), "no detached disk") {
			t.Fatalf("an unknown first class disk: err %v\n%s", err, out)
		}
	})
}
