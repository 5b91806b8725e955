package storagetest

import (
	"bytes"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vdisk-project/vdisk/internal/testenv"
)

// Server is an S3 server process on a loopback port, started by
// [Versitygw] or [MinIO] for one test.
type Server struct {
	// Endpoint is the server's URL, http://127.0.0.1:PORT.
	Endpoint string
	// AccessKey and SecretKey are the root credentials.
	AccessKey, SecretKey string
	// Dir is the directory the server keeps its data in; for MinIO the
	// parent of its drive directories.
	Dir string
	// Drives are MinIO's drive directories.
	Drives []string

	t     testing.TB
	name  string
	path  string
	args  []string
	env   []string
	ready string // path answering 200 once the server serves

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
	out  *syncBuffer
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// freePort returns a loopback port that was free a moment ago.
func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Versitygw starts versitygw's POSIX gateway on a loopback port over a
// temporary directory and stops it when the test ends. The test is skipped
// when the versitygw binary is missing, unless VDISK_TEST_REQUIRE names it.
// Install it with
//
//	go install github.com/versity/versitygw/cmd/versitygw@v1.8.0
func Versitygw(t testing.TB) *Server {
	t.Helper()
	path := testenv.Tool(t, "versitygw")
	dir := t.TempDir()
	data, iam := filepath.Join(dir, "data"), filepath.Join(dir, "iam")
	for _, d := range []string{data, iam} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	port := freePort(t)
	s := &Server{
		Endpoint:  "http://127.0.0.1:" + strconv.Itoa(port),
		AccessKey: "vdisktestroot",
		SecretKey: "vdisk-test-secret-key",
		Dir:       data,
		t:         t,
		name:      "versitygw",
		path:      path,
		args:      []string{"--port", "127.0.0.1:" + strconv.Itoa(port), "--iam-dir", iam, "posix", data},
		ready:     "/",
	}
	s.env = []string{"ROOT_ACCESS_KEY=" + s.AccessKey, "ROOT_SECRET_KEY=" + s.SecretKey}
	t.Cleanup(s.Stop)
	s.Start()
	return s
}

// MinIO starts a MinIO server on a loopback port with an erasure set of
// the given number of drive directories (1 for a single drive) and stops
// it when the test ends. It is skipped when the minio binary is missing,
// unless VDISK_TEST_REQUIRE names it. Install it with
//
//	go install github.com/minio/minio@v0.0.0-20260212201848-7aac2a2c5b7c
func MinIO(t testing.TB, drives int) *Server {
	t.Helper()
	path := testenv.Tool(t, "minio")
	dir := t.TempDir()
	port, console := freePort(t), freePort(t)
	s := &Server{
		Endpoint:  "http://127.0.0.1:" + strconv.Itoa(port),
		AccessKey: "vdisktestroot",
		SecretKey: "vdisk-test-secret-key",
		Dir:       dir,
		t:         t,
		name:      "minio",
		path:      path,
		ready:     "/minio/health/cluster",
	}
	args := []string{"server", "--quiet", "--address", "127.0.0.1:" + strconv.Itoa(port),
		"--console-address", "127.0.0.1:" + strconv.Itoa(console)}
	for i := range drives {
		d := filepath.Join(dir, fmt.Sprintf("d%d", i+1))
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
		s.Drives = append(s.Drives, d)
	}
	s.args = append(args, s.Drives...)
	s.env = []string{
		"MINIO_ROOT_USER=" + s.AccessKey, "MINIO_ROOT_PASSWORD=" + s.SecretKey,
		"MINIO_UPDATE=off", "MINIO_BROWSER=off",
		// Drives on the root filesystem are refused without it.
		"MINIO_CI_CD=1",
	}
	t.Cleanup(s.Stop)
	s.Start()
	return s
}

// Start starts the server (again, after Stop) on its port and waits until
// it answers.
func (s *Server) Start() {
	t := s.t
	t.Helper()
	s.mu.Lock()
	if s.cmd != nil {
		s.mu.Unlock()
		t.Fatalf("%s: already running", s.name)
	}
	cmd := exec.Command(s.path, s.args...)
	cmd.Env = append(os.Environ(), s.env...)
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		s.mu.Unlock()
		t.Fatalf("start %s: %v", s.name, err)
	}
	done := make(chan struct{})
	go func() {
		cmd.Wait()
		close(done)
	}()
	s.cmd, s.done, s.out = cmd, done, out
	s.mu.Unlock()

	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(60 * time.Second)
	for {
		select {
		case <-done:
			s.Stop()
			t.Fatalf("%s exited while starting:\n%s", s.name, out)
		default:
		}
		resp, err := client.Get(s.Endpoint + s.ready)
		if err == nil {
			resp.Body.Close()
			if s.ready == "/" || resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			s.Stop()
			t.Fatalf("%s did not answer at %s within a minute (last: %v):\n%s", s.name, s.Endpoint, err, out)
		}
		// Polling an external process: there is nothing to wait on.
		time.Sleep(50 * time.Millisecond)
	}
}

// Stop stops the server, waiting until it has exited. Stopping a stopped
// server does nothing.
func (s *Server) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	if s.cmd.Process.Signal(syscall.SIGTERM) != nil {
		s.cmd.Process.Kill()
	}
	select {
	case <-s.done:
	case <-time.After(10 * time.Second):
		s.cmd.Process.Kill()
		<-s.done
	}
	if s.t.Failed() {
		s.t.Logf("%s output:\n%s", s.name, s.out)
	}
	s.cmd = nil
}
