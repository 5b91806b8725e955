package datastore

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vdisk-project/vdisk/disk"
)

// TestOpenLocksRoot opens a data directory twice: the second Open fails
// with ErrBusy naming this process, and succeeds once the first Store is
// closed.
func TestOpenLocksRoot(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	_, err := Open(context.Background(), dir, nil)
	if !errors.Is(err, disk.ErrBusy) {
		s.Close()
		t.Fatalf("second Open(%s) = %v, want ErrBusy", dir, err)
	}
	host, _ := os.Hostname()
	want := fmt.Sprintf("is in use by pid %d on %s since ", os.Getpid(), host)
	if !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), dir) {
		t.Errorf("second Open error %q does not contain %q and the directory", err, want)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2, err := Open(context.Background(), dir, nil)
	if err != nil {
		t.Fatalf("Open after Close: %v", err)
	}
	s2.Close()
}

// TestOpenLockedByOtherProcess holds the data directory in a child process
// (this test binary, re-run) and opens it here.
func TestOpenLockedByOtherProcess(t *testing.T) {
	if dir := os.Getenv("VDISK_TEST_HOLD_DATASTORE"); dir != "" {
		s, err := Open(context.Background(), dir, nil)
		if err != nil {
			fmt.Println("error:", err)
			os.Exit(1)
		}
		fmt.Println("ready")
		var b [1]byte
		os.Stdin.Read(b[:]) // hold until the parent closes stdin
		s.Close()
		os.Exit(0)
	}
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestOpenLockedByOtherProcess$")
	cmd.Env = append(os.Environ(), "VDISK_TEST_HOLD_DATASTORE="+dir)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	defer stdin.Close()
	buf := make([]byte, 256)
	n, _ := out.Read(buf)
	if !strings.HasPrefix(string(buf[:n]), "ready") {
		t.Fatalf("child: %q", buf[:n])
	}
	_, err = Open(context.Background(), dir, nil)
	if !errors.Is(err, disk.ErrBusy) || !strings.Contains(err.Error(), fmt.Sprintf("pid %d ", cmd.Process.Pid)) {
		t.Fatalf("Open while pid %d holds it = %v, want ErrBusy naming that pid", cmd.Process.Pid, err)
	}
}

// TestOpenRefusesOpenDirectory refuses a data directory that group or
// others can write, and creates a new one private.
func TestOpenRefusesOpenDirectory(t *testing.T) {
	t.Run("created private", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "new")
		s := openStore(t, dir)
		defer s.Close()
		for _, sub := range []string{"", "vms", "disks"} {
			st, err := os.Stat(filepath.Join(dir, sub))
			if err != nil {
				t.Fatal(err)
			}
			if m := st.Mode().Perm(); m != 0o700 {
				t.Errorf("%s/%s created with mode %#o, want 0700", dir, sub, m)
			}
		}
	})
	for _, tt := range []struct {
		sub  string
		mode os.FileMode
	}{{"", 0o770}, {"", 0o707}, {"", 0o777}, {"disks", 0o720}, {"vms", 0o702}} {
		t.Run(fmt.Sprintf("%s%#o", tt.sub, tt.mode), func(t *testing.T) {
			dir := t.TempDir()
			s := openStore(t, dir)
			s.Close()
			p := filepath.Join(dir, tt.sub)
			if err := os.Chmod(p, tt.mode); err != nil {
				t.Fatal(err)
			}
			s, err := Open(context.Background(), dir, nil)
			if err == nil {
				s.Close()
			}
			if !errors.Is(err, disk.ErrPermission) || !strings.Contains(err.Error(), "writable by group or others") {
				t.Errorf("Open with %s mode %#o = %v, want ErrPermission", p, tt.mode, err)
			}
		})
	}
}

// TestStateFileSymlinkRefused plants symbolic links in place of state
// files: the store refuses to load them instead of reading their target.
func TestStateFileSymlinkRefused(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	s.Close()
	target := filepath.Join(t.TempDir(), "elsewhere.json")
	if err := os.WriteFile(target, []byte(`{"Version": 1}`), 0o600); err != nil {
		t.Fatal(err)
	}
	marker := filepath.Join(dir, "datastore.json")
	if err := os.Remove(marker); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, marker); err != nil {
		t.Fatal(err)
	}
	s, err := Open(context.Background(), dir, nil)
	if err == nil {
		s.Close()
	}
	if !errors.Is(err, disk.ErrPermission) {
		t.Errorf("Open with datastore.json a symbolic link = %v, want ErrPermission", err)
	}
	if _, err := readSmall(marker); !errors.Is(err, disk.ErrPermission) {
		t.Errorf("readSmall(symlink) = %v, want ErrPermission", err)
	}
}
