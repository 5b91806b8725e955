//go:build linux

package nbd

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vdisk-project/vdisk/disk/disktest"
)

// emfileChild is set in the environment of the subprocess
// TestAcceptOutOfFDs starts.
const emfileChild = "VDISK_TEST_EMFILE_CHILD"

// TestMain lets the test binary serve as TestAcceptOutOfFDs's subprocess.
func TestMain(m *testing.M) {
	if os.Getenv(emfileChild) != "" {
		os.Exit(emfileServer())
	}
	os.Exit(m.Run())
}

// emfileServer serves a disk with RLIMIT_NOFILE at 64 until stdin closes.
func emfileServer() int {
	lim := syscall.Rlimit{Cur: 64, Max: 64}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		fmt.Fprintln(os.Stderr, "setrlimit:", err)
		return 2
	}
	d := disktest.NewMemDisk(1 << 20)
	d.WriteAt([]byte{9}, 0)
	exp := &Export{Disk: d}
	s := NewServer(ServerOptions{Lookup: func(context.Context, string) (*Export, error) { return exp, nil },
		Logger: slog.New(slog.NewTextHandler(os.Stderr, nil))})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, "listen:", err)
		return 2
	}
	fmt.Println(l.Addr())
	errc := make(chan error, 1)
	go func() { errc <- s.Serve(context.Background(), l) }()
	stdin := make(chan struct{})
	go func() { os.Stdin.Read(make([]byte, 1)); close(stdin) }()
	select {
	case err := <-errc:
		fmt.Fprintln(os.Stderr, "Serve ended:", err)
		return 1
	case <-stdin:
		s.Shutdown(context.Background())
		return 0
	}
}

// TestAcceptOutOfFDs runs a server in a process limited to 64 file
// descriptors and opens 200 connections to it: Accept fails with EMFILE.
// Once they close, the same server must accept and serve a client.
func TestAcceptOutOfFDs(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Skip(err)
	}
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), emfileChild+"=1")
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		stdin.Close()
		if err := cmd.Wait(); err != nil {
			t.Errorf("server process: %v", err)
		}
	}()
	addr, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		t.Fatalf("no address from the server process: %v", err)
	}
	addr = strings.TrimSpace(addr)
	logs := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			logs <- sc.Text()
		}
		close(logs)
	}()
	var conns []net.Conn
	for range 200 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	var log []string
	for deadline := time.After(10 * time.Second); !strings.Contains(strings.Join(log, "\n"), "accept failed"); {
		select {
		case l, ok := <-logs:
			if !ok {
				t.Fatalf("the server process ended:\n%s", strings.Join(log, "\n"))
			}
			log = append(log, l)
		case <-deadline:
			t.Fatalf("the server never ran out of file descriptors:\n%s", strings.Join(log, "\n"))
		}
	}
	fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", cmd.Process.Pid))
	t.Logf("server process out of descriptors with %d open (limit 64)", len(fds))
	for _, c := range conns {
		c.Close()
	}
	var c *Client
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		c, err = Dial(context.Background(), "nbd://"+addr+"/", &ClientOptions{Connections: 1, Timeout: 5 * time.Second})
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no client served after the descriptors came back: %v\n%s", err, strings.Join(log, "\n"))
		}
	}
	defer c.Close()
	b := make([]byte, 512)
	if _, err := c.ReadAt(b, 0); err != nil || b[0] != 9 {
		t.Fatalf("read: %v, %d", err, b[0])
	}
	status, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", cmd.Process.Pid))
	for _, l := range strings.Split(string(status), "\n") {
		if strings.HasPrefix(l, "VmHWM:") {
			t.Logf("server process peak RSS: %s", strings.Join(strings.Fields(l)[1:], " "))
		}
	}
	for deadline := time.After(5 * time.Second); !strings.Contains(strings.Join(log, "\n"), "accepting again"); {
		select {
		case l, ok := <-logs:
			if !ok {
				t.Fatalf("the server process ended:\n%s", strings.Join(log, "\n"))
			}
			log = append(log, l)
		case <-deadline:
			t.Fatalf("the server did not log its recovery:\n%s", strings.Join(log, "\n"))
		}
	}
	failures := 0
	for _, l := range log {
		if strings.Contains(l, "accept") {
			t.Logf("server log: %s", l)
		}
		if strings.Contains(l, "accept failed") {
			failures++
		}
	}
	if failures != 1 {
		t.Errorf("%d log records of accept failures, want 1", failures)
	}
}
