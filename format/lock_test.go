package format_test

import (
	"bufio"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/vdisk-project/vdisk/disk"
	"github.com/vdisk-project/vdisk/format"
	"github.com/vdisk-project/vdisk/format/vmdk"
	"github.com/vdisk-project/vdisk/internal/testenv"
)

// The tests here are not parallel: a child forked by one test shares, until
// it execs, the open file descriptions of files another test just closed,
// and so their locks (see disk.LockImage).

// newImage creates a 1 MiB image of format f (a monolithicSparse VMDK)
// and returns its path.
func newImage(t *testing.T, f format.Format) string {
	t.Helper()
	name := filepath.Join(t.TempDir(), "img."+string(f))
	d, err := format.Create(context.Background(), name, f, 1<<20, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	return name
}

// serveQemuNBD runs qemu-nbd on the image (a writer unless ro) until the
// test ends. --fork returns once the image is open and served.
func serveQemuNBD(t *testing.T, name string, f format.Format, ro bool) {
	t.Helper()
	qemuNBD := testenv.Tool(t, "qemu-nbd")
	dir := t.TempDir()
	pidFile := filepath.Join(dir, "pid")
	args := []string{"--fork", "--pid-file", pidFile, "-k", filepath.Join(dir, "sock"), "-f", string(f)}
	if ro {
		args = append(args, "-r")
	}
	if out, err := exec.Command(qemuNBD, append(args, name)...).CombinedOutput(); err != nil {
		t.Fatalf("qemu-nbd %v: %v\n%s", args, err, out)
	}
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Kill(pid, syscall.SIGTERM) })
}

// holdQemuIO opens the image in qemu-io (a writer unless ro) and keeps it
// open until the test ends; it returns once qemu-io has answered a command,
// so the image is open.
func holdQemuIO(t *testing.T, name string, f format.Format, ro bool) {
	t.Helper()
	args := []string{"-f", string(f)}
	if ro {
		args = append(args, "-r")
	}
	cmd := exec.Command(testenv.Tool(t, "qemu-io"), append(args, name)...)
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		in.Close()
		cmd.Wait()
	})
	io.WriteString(in, "length\n")
	r := bufio.NewReader(out)
	line, err := r.ReadString('\n')
	if err != nil || !strings.Contains(line, "MiB") {
		t.Fatalf("qemu-io %v: %q, %v", args, line, err)
	}
	go io.Copy(io.Discard, r)
}

func wantBusy(t *testing.T, what string, err error) {
	t.Helper()
	if !errors.Is(err, disk.ErrBusy) || !strings.Contains(err.Error(), "image is in use by another process") {
		t.Errorf("%s: %v, want ErrBusy (in use by another process)", what, err)
	}
}

func openImage(name string, o format.OpenOptions) error {
	d, _, err := format.Open(context.Background(), name, &o)
	if err == nil {
		err = d.Close()
	}
	return err
}

// TestLockAgainstQemuWriter: while qemu-nbd or qemu-io writes an image,
// vdisk refuses to open it for writing, and for reading unless it forces
// sharing (qemu-img's -U), which then reads it.
func TestLockAgainstQemuWriter(t *testing.T) {
	for _, f := range []format.Format{format.Raw, format.VMDK} {
		for _, peer := range []string{"qemu-nbd", "qemu-io"} {
			t.Run(string(f)+"/"+peer, func(t *testing.T) {
				name := newImage(t, f)
				if peer == "qemu-nbd" {
					serveQemuNBD(t, name, f, false)
				} else {
					holdQemuIO(t, name, f, false)
				}
				wantBusy(t, "open for writing", openImage(name, format.OpenOptions{}))
				wantBusy(t, "open read-only", openImage(name, format.OpenOptions{ReadOnly: true}))
				if err := openImage(name, format.OpenOptions{ReadOnly: true, ForceShare: true}); err != nil {
					t.Errorf("open read-only with ForceShare: %v", err)
				}
			})
		}
	}
}

// TestLockAgainstQemuReader: readers coexist; a vdisk writer is refused
// while qemu reads (qemu-img and qemu-nbd -r do not share write).
func TestLockAgainstQemuReader(t *testing.T) {
	for _, f := range []format.Format{format.Raw, format.VMDK} {
		t.Run(string(f), func(t *testing.T) {
			name := newImage(t, f)
			serveQemuNBD(t, name, f, true)
			if err := openImage(name, format.OpenOptions{ReadOnly: true}); err != nil {
				t.Errorf("open read-only beside qemu-nbd -r: %v", err)
			}
			if f == format.VMDK { // qemu's raw reader shares write
				wantBusy(t, "open for writing beside qemu-nbd -r", openImage(name, format.OpenOptions{}))
			}
		})
	}
}

// TestQemuAgainstVdiskWriter: while vdisk writes an image, qemu-io cannot
// open it for writing, and qemu-img info fails without -U (for a VMDK: for
// raw images qemu's readers share write) and works with it.
func TestQemuAgainstVdiskWriter(t *testing.T) {
	qemuImg, qemuIO := testenv.Tool(t, "qemu-img"), testenv.Tool(t, "qemu-io")
	for _, f := range []format.Format{format.Raw, format.VMDK} {
		t.Run(string(f), func(t *testing.T) {
			name := newImage(t, f)
			d, _, err := format.Open(context.Background(), name, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			out, err := exec.Command(qemuIO, "-f", string(f), "-c", "write 0 512", name).CombinedOutput()
			if err == nil || !strings.Contains(string(out), `Failed to get "write" lock`) {
				t.Errorf("qemu-io write while vdisk writes: %v\n%s\nwant a write lock failure", err, out)
			}
			if f == format.VMDK {
				out, err = exec.Command(qemuImg, "info", "-f", string(f), name).CombinedOutput()
				if err == nil || !strings.Contains(string(out), `Failed to get shared "write" lock`) {
					t.Errorf("qemu-img info while vdisk writes: %v\n%s\nwant a shared write lock failure", err, out)
				}
			}
			if out, err := exec.Command(qemuImg, "info", "-U", "-f", string(f), name).CombinedOutput(); err != nil {
				t.Errorf("qemu-img info -U while vdisk writes: %v\n%s", err, out)
			}
		})
	}
}

// TestQemuBesideVdiskReader: qemu readers open an image vdisk reads; a
// qemu writer does not.
func TestQemuBesideVdiskReader(t *testing.T) {
	qemuImg, qemuIO := testenv.Tool(t, "qemu-img"), testenv.Tool(t, "qemu-io")
	for _, f := range []format.Format{format.Raw, format.VMDK} {
		t.Run(string(f), func(t *testing.T) {
			name := newImage(t, f)
			d, _, err := format.Open(context.Background(), name, &format.OpenOptions{ReadOnly: true})
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			if out, err := exec.Command(qemuImg, "info", "-f", string(f), name).CombinedOutput(); err != nil {
				t.Errorf("qemu-img info while vdisk reads: %v\n%s", err, out)
			}
			if out, err := exec.Command(qemuIO, "-r", "-f", string(f), "-c", "read 0 512", name).CombinedOutput(); err != nil {
				t.Errorf("qemu-io -r while vdisk reads: %v\n%s", err, out)
			}
			out, err := exec.Command(qemuIO, "-f", string(f), "-c", "write 0 512", name).CombinedOutput()
			if err == nil || !strings.Contains(string(out), "lock") {
				t.Errorf("qemu-io write while vdisk reads: %v\n%s\nwant a lock failure", err, out)
			}
		})
	}
}

// TestLockTwoWriters: two vdisk writers in one process conflict, on every
// file of a VMDK with a descriptor and extents.
func TestLockTwoWriters(t *testing.T) {
	for _, f := range []format.Format{format.Raw, format.VMDK} {
		t.Run(string(f), func(t *testing.T) {
			name := newImage(t, f)
			d, _, err := format.Open(context.Background(), name, nil)
			if err != nil {
				t.Fatal(err)
			}
			wantBusy(t, "second writer", openImage(name, format.OpenOptions{}))
			wantBusy(t, "reader beside a writer", openImage(name, format.OpenOptions{ReadOnly: true}))
			if err := d.Close(); err != nil {
				t.Fatal(err)
			}
			if err := openImage(name, format.OpenOptions{}); err != nil {
				t.Errorf("writer after Close: %v", err)
			}
		})
	}
}

// TestLockDescriptorReplaced writes a VMDK with a descriptor file: the
// first write replaces the descriptor (a new CID, written atomically), and
// the locks must follow it to the new file.
func TestLockDescriptorReplaced(t *testing.T) {
	qemuImg := testenv.Tool(t, "qemu-img")
	name := filepath.Join(t.TempDir(), "flat.vmdk")
	d, err := format.Create(context.Background(), name, format.VMDK, 1<<20,
		&format.CreateOptions{VMDK: vmdk.CreateOptions{Subformat: vmdk.MonolithicFlat}})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	before, err := os.Stat(name)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.WriteAt(make([]byte, 512), 0); err != nil {
		t.Fatal(err)
	}
	after, err := os.Stat(name)
	if err != nil {
		t.Fatal(err)
	}
	if os.SameFile(before, after) {
		t.Fatal("the descriptor was not replaced; the test proves nothing")
	}
	out, err := exec.Command(qemuImg, "info", "-f", "vmdk", name).CombinedOutput()
	if err == nil || !strings.Contains(string(out), `Failed to get shared "write" lock`) {
		t.Errorf("qemu-img info after the descriptor was replaced: %v\n%s\nwant a shared write lock failure", err, out)
	}
	d2, err := os.Open(name)
	if err != nil {
		t.Fatal(err)
	}
	defer d2.Close()
	wantBusy(t, "locking the new descriptor for reading", disk.LockImage(d2, disk.ImageLock{}))
}
