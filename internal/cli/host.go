package cli

// The commands that talk to a vdisk host (login, vm, disk, snapshot,
// changes, allocated, ticket, access, user, session, cleanup) share the
// saved login and these helpers.

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/vdisk-project/vdisk/disk"
	"github.com/vdisk-project/vdisk/internal/hostclient"
)

// savedLogin is the login file: where the host is, how it is trusted and
// the session token. It is written with mode 0600.
type savedLogin struct {
	Server     string `json:"server"`
	Thumbprint string `json:"thumbprint"`
	User       string `json:"user,omitempty"`
	Token      string `json:"token"`
}

// loginPath is $VDISK_CONFIG_DIR/login.json, or login.json in the user's
// config directory (~/.config/vdisk on Linux).
func loginPath() (string, error) {
	dir := os.Getenv("VDISK_CONFIG_DIR")
	if dir == "" {
		d, err := os.UserConfigDir()
		if err != nil {
			return "", disk.Errorf(disk.ErrNotFound, "no config directory: set VDISK_CONFIG_DIR")
		}
		dir = filepath.Join(d, "vdisk")
	}
	return filepath.Join(dir, "login.json"), nil
}

func readLogin() (savedLogin, error) {
	var l savedLogin
	p, err := loginPath()
	if err != nil {
		return l, err
	}
	b, err := os.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		return l, nil
	}
	if err != nil {
		return l, disk.Wrap(err, "read login", p, -1)
	}
	if err := json.Unmarshal(b, &l); err != nil {
		return l, disk.Errorf(disk.ErrCorrupt, "login file %s: %v", p, err)
	}
	return l, nil
}

func writeLogin(l savedLogin) (string, error) {
	p, err := loginPath()
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return "", disk.Wrap(err, "save login", p, -1)
	}
	b, _ := json.MarshalIndent(l, "", "  ")
	tmp := p + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o600); err != nil {
		return "", disk.Wrap(err, "save login", p, -1)
	}
	return p, disk.Wrap(os.Rename(tmp, p), "save login", p, -1)
}

// hostFlags are the flags every host command takes; they override the
// saved login.
type hostFlags struct {
	server, thumbprint, token, output string
	timeout                           time.Duration
}

func addHostFlags(fs *flag.FlagSet) *hostFlags {
	h := &hostFlags{}
	fs.StringVar(&h.server, "server", "", "host control API address (default: the saved login's)")
	fs.StringVar(&h.thumbprint, "thumbprint", "", "SHA-256 thumbprint of the host certificate (default: the saved login's)")
	fs.StringVar(&h.token, "token", "", "session token (default: the saved login's; env VDISK_TOKEN)")
	fs.StringVar(&h.output, "output", "human", "output format: human or json")
	fs.DurationVar(&h.timeout, "timeout", time.Minute, "bound on each call to the host")
	return h
}

func (h *hostFlags) json() bool { return h.output == "json" }

// client returns an API client from the flags and the saved login.
func (h *hostFlags) client() (*hostclient.Client, error) {
	if h.output != "human" && h.output != "json" {
		return nil, usagef("--output must be human or json")
	}
	l, err := readLogin()
	if err != nil {
		return nil, err
	}
	if h.server != "" {
		l.Server = h.server
	}
	if h.thumbprint != "" {
		l.Thumbprint = h.thumbprint
	}
	if h.token != "" {
		l.Token = h.token
	} else if t := os.Getenv("VDISK_TOKEN"); t != "" {
		l.Token = t
	}
	if l.Server == "" || l.Thumbprint == "" || l.Token == "" {
		return nil, disk.Errorf(disk.ErrPermission, "not logged in: run 'vdisk login --server HOST:PORT --thumbprint TP --user NAME' first")
	}
	return hostclient.New(hostclient.Options{Server: l.Server, Thumbprint: l.Thumbprint, Token: l.Token, Timeout: h.timeout})
}

// emit prints v as JSON, or calls human.
func (h *hostFlags) emit(w io.Writer, v any, human func(w io.Writer)) error {
	if h.json() {
		return writeJSON(w, v)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	human(tw)
	return tw.Flush()
}

// subcommand splits "VERB args…", checking VERB against the list.
func subcommand(name string, args []string, verbs ...string) (string, []string, error) {
	if len(args) > 0 && (args[0] == "-h" || args[0] == "-help" || args[0] == "--help") {
		return "", nil, &helpError{"  subcommands: " + strings.Join(verbs, ", ") + "\n  'vdisk " + name + " SUBCOMMAND -h' shows a subcommand's flags\n"}
	}
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		return "", nil, usagef("%s needs one of: %s", name, strings.Join(verbs, ", "))
	}
	for _, v := range verbs {
		if args[0] == v {
			return v, args[1:], nil
		}
	}
	return "", nil, usagef("%s: unknown subcommand %q (one of: %s)", name, args[0], strings.Join(verbs, ", "))
}

// hostCommand parses a host command's flags and positional arguments,
// checking their count, and returns a client.
func hostCommand(ctx context.Context, fs *flag.FlagSet, args []string, nargs int, usage string) (*hostclient.Client, *hostFlags, []string, error) {
	h := addHostFlags(fs)
	pos, err := parse(fs, args)
	if err != nil {
		return nil, nil, nil, err
	}
	if nargs >= 0 && len(pos) != nargs {
		return nil, nil, nil, usagef("usage: %s", usage)
	}
	c, err := h.client()
	if err != nil {
		return nil, nil, nil, err
	}
	return c, h, pos, nil
}

func ts(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Local().Format("2006-01-02 15:04:05")
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// readPassword takes a password from a file, the environment variable, or
// the terminal (without echo), in that order.
func readPassword(file, env, prompt string, stderr io.Writer) (string, error) {
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return "", disk.Wrap(err, "read password", file, -1)
		}
		return strings.TrimRight(string(b), "\r\n"), nil
	}
	if v := os.Getenv(env); v != "" {
		return v, nil
	}
	if !termIsTerminal(int(os.Stdin.Fd())) {
		return "", usagef("no password: use --password-file or %s", env)
	}
	fmt.Fprint(stderr, prompt)
	b, err := termReadPassword(int(os.Stdin.Fd()))
	fmt.Fprintln(stderr)
	return string(b), err
}

func getenv(k string) string { return os.Getenv(k) }
