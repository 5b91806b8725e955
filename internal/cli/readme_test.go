package cli

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"github.com/vdisk-project/vdisk/format"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vdisk-project/vdisk/internal/auth"
	"github.com/vdisk-project/vdisk/internal/testenv"
	"github.com/vdisk-project/vdisk/server"
	"github.com/vdisk-project/vdisk/server/servertest"
)

// readmeBlock returns the vdisk command lines of the README's fenced block
// that follows the line starting with after: comments dropped, lines with
// several commands split at ';'.
func readmeBlock(t *testing.T, after string) [][]string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	found, in := false, false
	var cmds [][]string
	for sc.Scan() {
		line := sc.Text()
		switch {
		case !found:
			found = strings.HasPrefix(line, after)
		case !in && strings.HasPrefix(line, "```"):
			in = true
		case in && strings.HasPrefix(line, "```"):
			return cmds
		case in:
			if i := strings.Index(line, " #"); i >= 0 {
				line = line[:i]
			}
			for _, c := range strings.Split(line, ";") {
				w := shellWords(t, strings.TrimSpace(c))
				if len(w) > 0 {
					if w[0] != "vdisk" {
						t.Fatalf("README block after %q has a line that is not a vdisk command: %q", after, c)
					}
					cmds = append(cmds, w[1:])
				}
			}
		}
	}
	t.Fatalf("README has no code block after %q", after)
	return nil
}

// shellWords splits a command line as a shell would for the simple quoting
// the README uses ('…' and "…").
func shellWords(t *testing.T, s string) []string {
	var out []string
	var cur strings.Builder
	inWord := false
	var quote rune
	for _, r := range s {
		switch {
		case quote != 0 && r == quote:
			quote = 0
		case quote != 0:
			cur.WriteRune(r)
		case r == '\'' || r == '"':
			quote, inWord = r, true
		case r == ' ' || r == '\t':
			if inWord {
				out = append(out, cur.String())
				cur.Reset()
				inWord = false
			}
		default:
			cur.WriteRune(r)
			inWord = true
		}
	}
	if quote != 0 {
		t.Fatalf("unbalanced quote in %q", s)
	}
	if inWord {
		out = append(out, cur.String())
	}
	return out
}

// TestReadmeQuickstart runs the README's CLI quickstart in order, as a
// newcomer would paste it. The two exports run until they are interrupted;
// the last line reads from the second one.
func TestReadmeQuickstart(t *testing.T) {
	cmds := readmeBlock(t, "## CLI quickstart")
	dir := t.TempDir()
	t.Chdir(dir)
	// The certificate and key the TLS export names, and its CA directory.
	cert, key, err := auth.SelfSigned([]string{"localhost"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile("c.pem", cert, 0o600)
	os.WriteFile("k.pem", key, 0o600)
	os.Mkdir("pki", 0o700)
	os.WriteFile(filepath.Join("pki", "ca-cert.pem"), cert, 0o600)
	sock := filepath.Join(dir, "d.sock")
	var stops []func()
	defer func() {
		for _, s := range stops {
			s()
		}
	}()
	for _, args := range cmds {
		for i, a := range args {
			switch {
			case a == "/tmp/d.sock":
				args[i] = sock
			case strings.HasPrefix(a, "nbds://host/"):
				args[i] = "nbds+unix:///?socket=" + sock + "&tls-certificates=" + filepath.Join(dir, "pki")
			case a == "127.0.0.1:10809":
				args[i] = freePort(t)
			}
		}
		line := "vdisk " + strings.Join(args, " ")
		if args[0] == "export" {
			stops = append(stops, startExport(t, args, sock))
			continue
		}
		var out, errb bytes.Buffer
		start := time.Now()
		code := Main(context.Background(), args, &out, &errb)
		if code != 0 {
			t.Fatalf("%s: exit %d\n%s%s", line, code, out.String(), errb.String())
		}
		t.Logf("%s: %v", line, time.Since(start).Round(time.Millisecond))
	}
}

// freePort returns a loopback address nothing listens on.
func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// startExport runs an export in the background until the returned stop.
func startExport(t *testing.T, args []string, sock string) func() {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	var errb bytes.Buffer
	go func() { done <- Main(ctx, args, new(bytes.Buffer), &errb) }()
	// Wait until it serves (its socket or port answers).
	network, addr := "unix", sock
	for i, a := range args {
		if a == "--bind" {
			network, addr = "tcp", args[i+1]
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial(network, addr)
		if err == nil {
			c.Close()
			break
		}
		select {
		case code := <-done:
			t.Fatalf("vdisk %s ended (exit %d) before serving: %s", strings.Join(args, " "), code, errb.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("vdisk %s does not serve: %v", strings.Join(args, " "), err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return func() {
		cancel()
		if code := <-done; code != 0 && code != ExitInterrupted {
			t.Errorf("vdisk %s: exit %d after the interrupt: %s", strings.Join(args, " "), code, errb.String())
		}
	}
}

// TestReadmeHostSession runs the README's host session in order against a
// host of its own: the same commands, with the host's address and
// thumbprint in place of the placeholders.
func TestReadmeHostSession(t *testing.T) {
	cmds := readmeBlock(t, "The `vdisk` command does the same with a saved login")
	t.Setenv("VDISK_CONFIG_DIR", t.TempDir())
	t.Setenv("VDISK_PASSWORD", servertest.Password)
	t.Chdir(t.TempDir())
	h := servertest.New(t, nil)
	for _, args := range cmds {
		for i, a := range args {
			switch {
			case a == "127.0.0.1:8443":
				args[i] = h.API
			case strings.HasPrefix(a, "AB:CD:"):
				args[i] = h.Server.Thumbprint()
			}
		}
		var out, errb bytes.Buffer
		if code := Main(context.Background(), args, &out, &errb); code != 0 {
			t.Fatalf("vdisk %s: exit %d\n%s%s", strings.Join(args, " "), code, out.String(), errb.String())
		}
	}
}

// TestReadmeCurl runs the README's curl sequence with bash, curl and jq
// against a host whose data directory is ./vdisk-data, as in the README,
// with the host's address and the admin password in place, and checks what
// it made.
func TestReadmeCurl(t *testing.T) {
	testenv.Tool(t, "curl")
	testenv.Tool(t, "jq")
	b, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(b), "A backup application's sequence, with curl")
	if !ok {
		t.Fatal("README lost its curl sequence")
	}
	_, rest, _ = strings.Cut(rest, "```\n")
	script, _, _ := strings.Cut(rest, "```")
	dir := t.TempDir()
	t.Chdir(dir)
	h := servertest.New(t, func(c *server.Config) { c.DataDir = filepath.Join(dir, "vdisk-data") })
	script = strings.ReplaceAll(script, "127.0.0.1:8443", h.API)
	script = strings.ReplaceAll(script, `"password":"…"`, `"password":"`+servertest.Password+`"`)
	out, err := exec.Command("bash", "-euo", "pipefail", "-c", script).CombinedOutput()
	if err != nil {
		t.Fatalf("the README's curl sequence: %v\n%s", err, out)
	}
	// Every call answered JSON; the last, the changed areas of the
	// snapshot the sequence took.
	dec := json.NewDecoder(bytes.NewReader(out))
	var ci struct {
		ChangeID string
		Areas    []json.RawMessage
	}
	n := 0
	for dec.More() {
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			t.Fatalf("answer %d is not JSON (%v):\n%s", n+1, err, out)
		}
		json.Unmarshal(v, &ci)
		n++
	}
	if n != 5 || ci.ChangeID == "" {
		t.Fatalf("%d answers, the last with change ID %q; want 5 (the login goes to jq) ending with the changes:\n%s", n, ci.ChangeID, out)
	}
	for _, want := range []string{`"web01"`, `"scsi0:0"`, `"nbds://`, `"nightly"`} {
		if !strings.Contains(string(out), want) {
			t.Errorf("the sequence's answers lack %s:\n%s", want, out)
		}
	}
}

// TestReadmeServeConfig: the README's example serve config file is read
// as vdisk serve reads it (every key a flag, every value valid).
func TestReadmeServeConfig(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(b), "```\n# /etc/vdisk/serve.conf\n")
	if !ok {
		t.Fatal("README lost its serve config example")
	}
	block, _, _ := strings.Cut(rest, "```")
	path := filepath.Join(t.TempDir(), "serve.conf")
	// The datastore target must exist for the config to be accepted.
	block = strings.ReplaceAll(block, "/mnt/nvme/vdisk", t.TempDir())
	os.WriteFile(path, []byte(block), 0o600)
	var o serveOptions
	fs := serveFlags(&o)
	if err := applyConfig(fs, path); err != nil {
		t.Fatalf("the README's serve config: %v", err)
	}
	cfg, err := o.config(io.Discard)
	if err != nil {
		t.Fatalf("the README's serve config: %v", err)
	}
	if cfg.DataDir != "/srv/vdisk" || len(cfg.Listen) != 2 || cfg.Limits.DiskConns != 64 {
		t.Errorf("the README's serve config read as %+v", cfg)
	}
}

// TestReadmeBackup runs the README's backup block in order on an image
// with data.
func TestReadmeBackup(t *testing.T) {
	cmds := readmeBlock(t, "## Backup and restore")
	t.Chdir(t.TempDir())
	t.Setenv("VDISK_REPO_PASSWORD", "readme")
	t.Setenv("VDISK_REPO", "")
	d, err := format.Create(context.Background(), "disk.vmdk", format.VMDK, 64<<20, nil)
	if err != nil {
		t.Fatal(err)
	}
	d.WriteAt(bytes.Repeat([]byte("readme"), 100000), 5<<20)
	d.Close()
	for _, args := range cmds {
		var out, errb bytes.Buffer
		if code := Main(context.Background(), args, &out, &errb); code != 0 {
			t.Fatalf("vdisk %s: exit %d\n%s%s", strings.Join(args, " "), code, out.String(), errb.String())
		}
	}
}

// TestReadmeFiles runs the README's file commands on a FAT volume made
// by the real tools, with /etc/hostname in it.
func TestReadmeFiles(t *testing.T) {
	cmds := readmeBlock(t, "## Files inside disks")
	img, _ := guestImage(t)
	t.Chdir(t.TempDir())
	if err := os.Rename(img, "guest.vmdk"); err != nil {
		t.Fatal(err)
	}
	for _, args := range cmds {
		var out, errb bytes.Buffer
		if code := Main(context.Background(), args, &out, &errb); code != 0 {
			t.Fatalf("vdisk %s: exit %d\n%s%s", strings.Join(args, " "), code, out.String(), errb.String())
		}
	}
	if b, err := os.ReadFile("restored/hostname"); err != nil || len(b) != 6 {
		t.Errorf("extracted hostname: %q %v", b, err)
	}
}
