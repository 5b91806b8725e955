package vdisk

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vdisk-project/vdisk/disk"
	"github.com/vdisk-project/vdisk/internal/hostclient"
)

// The transport modes, as VixDiskLib names its own.
const (
	ModeFile   = "file"   // a local image file
	ModeDirect = "direct" // the host's datastore files, reached by this machine, under a host lease
	ModeNBDSSL = "nbdssl" // NBD over TLS from the host
	ModeNBD    = "nbd"    // plain NBD, only where the host serves it
)

// ListTransportModes returns every mode the kit knows, colon-separated, in
// the order Connect tries them by default ("file:direct:nbdssl:nbd";
// VixDiskLib_ListTransportModes).
func ListTransportModes() string { return "file:direct:nbdssl:nbd" }

// ConnectParams says where disks live and how to reach them
// (VixDiskLibConnectParams).
type ConnectParams struct {
	// Server is the host's control API address, "host:port", "[v6addr]:port"
	// or "v6addr" with the default port 8443. Empty means local files only.
	Server string
	// User and Password log in; Token reuses a session (a saved login)
	// instead.
	User, Password string
	Token          string
	// Thumbprint pins the host certificate by its SHA-256; CAFile (a PEM
	// file) trusts a CA instead. Exactly one of them is required: the host
	// is always verified, over the control API and NBD alike, and giving
	// both is ErrInvalid (they could disagree).
	Thumbprint string
	CAFile     string
	// Transports is the colon-separated list of modes Open tries, in order
	// (ConnectEx's transportModes). Empty means Config.Transports, or
	// "direct:nbdssl" for a host and "file" for local files. Modes the
	// situation rules out are skipped with their reason (Handle.Attempts).
	Transports string
	// ReadOnly makes every Open read-only (ConnectEx's readOnly).
	ReadOnly bool
	// Config holds the tunables; nil means the defaults.
	Config *Config
	// Logger receives the kit's logs; nil keeps it silent.
	Logger *slog.Logger
}

// Conn is a connection to a host or to local files. It is safe for
// concurrent use; any goroutine may use it at any time. Close it when
// done: it closes the handles still open and leaves no goroutine behind.
type Conn struct {
	p     ConnectParams
	cfg   Config
	log   *slog.Logger
	api   *hostclient.Client // nil for local
	about hostclient.About
	tls   *tls.Config

	// ownSession: Connect logged in with the password, so the session is
	// this Conn's alone until Token hands it out (tokenOut); Close then
	// ends it, as nobody else could ever use it.
	ownSession bool
	tokenOut   atomic.Bool

	mu      sync.Mutex
	handles map[*Handle]bool
	closed  bool
}

// Connect opens a connection (VixDiskLib_ConnectEx). For a host it checks
// the certificate, logs in (or checks the token) and learns the host's
// NBD addresses; every call is bounded by Config.Timeout and transient
// failures (busy, reset connections) are retried with backoff.
func Connect(ctx context.Context, p ConnectParams) (*Conn, error) {
	cfg := DefaultConfig()
	if p.Config != nil {
		cfg = p.Config.withDefaults()
	}
	log := p.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c := &Conn{p: p, cfg: cfg, log: log, handles: map[*Handle]bool{}}
	if p.Transports == "" {
		p.Transports = cfg.Transports
		if p.Transports == "" {
			p.Transports = ModeFile
			if p.Server != "" {
				p.Transports = ModeDirect + ":" + ModeNBDSSL
			}
		}
		c.p.Transports = p.Transports
	}
	for _, m := range strings.Split(p.Transports, ":") {
		switch m {
		case ModeFile, ModeDirect, ModeNBDSSL, ModeNBD:
		default:
			return nil, disk.Errorf(disk.ErrInvalid, "vdisk: unknown transport mode %q (known: %s)", m, ListTransportModes())
		}
	}
	if p.Server == "" {
		return c, nil
	}
	if p.Thumbprint == "" && p.CAFile == "" {
		return nil, disk.Errorf(disk.ErrInvalid, "vdisk: a host connection needs the host's Thumbprint or a CAFile; certificates are always verified")
	}
	if p.Thumbprint != "" && p.CAFile != "" {
		return nil, disk.Errorf(disk.ErrInvalid, "vdisk: give the host's Thumbprint or a CAFile, not both")
	}
	if p.Token == "" && p.User == "" {
		return nil, disk.Errorf(disk.ErrInvalid, "vdisk: give User and Password, or Token")
	}
	api, err := hostclient.New(hostclient.Options{Server: p.Server, Thumbprint: p.Thumbprint, CAFile: p.CAFile,
		Token: p.Token, Timeout: cfg.Timeout, Retries: cfg.Retries, Logger: log})
	if err != nil {
		return nil, err
	}
	c.api, c.tls = api, api.TLSConfig()
	server := api.Server()
	if p.Token == "" {
		if _, err := c.api.Login(ctx, p.User, p.Password); err != nil {
			c.api.Close()
			return nil, err
		}
		c.ownSession = true
		// A session that ends under a long backup (its lifetime, an
		// administrator, a host restart) is replaced by a new login.
		c.api.KeepLoggedIn(p.User, p.Password)
	}
	if c.about, err = c.api.About(ctx); err != nil {
		c.endSession()
		c.api.Close()
		return nil, err
	}
	log.Debug("vdisk: connected", "server", server, "version", c.about.Version)
	return c, nil
}

// Remote reports whether the connection is to a host.
func (c *Conn) Remote() bool { return c.api != nil }

// Token returns the host session token, to save a login. A session whose
// token has been asked for outlives Close.
func (c *Conn) Token() string {
	if c.api == nil {
		return ""
	}
	c.tokenOut.Store(true)
	return c.api.Token()
}

// endSession logs out of a session Connect made with the password and
// whose token nobody was given: no one could use it after Close, and left
// to expire it would count against the user's session limit meanwhile (64
// by default, so a program that connects per disk would be locked out).
func (c *Conn) endSession() {
	if !c.ownSession || c.tokenOut.Load() {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), min(c.cfg.Timeout, 5*time.Second))
	defer cancel()
	if err := c.api.Logout(ctx); err != nil {
		c.log.Debug("vdisk: ending the session failed; it expires on its own", "err", err.Error())
	}
}

// Transports returns the mode list Open tries.
func (c *Conn) Transports() string { return c.p.Transports }

func (c *Conn) track(h *Handle) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return disk.Errorf(disk.ErrInvalid, "vdisk: connection closed")
	}
	c.handles[h] = true
	return nil
}

func (c *Conn) untrack(h *Handle) {
	c.mu.Lock()
	delete(c.handles, h)
	c.mu.Unlock()
}

// Close closes the handles still open, then the connection
// (VixDiskLib_Disconnect). A session Connect made with the password ends
// with it, unless Token was called: then it stays valid until it expires,
// so the saved token can be reused; call Logout to end it. A session
// given as ConnectParams.Token is the caller's and stays.
func (c *Conn) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	hs := make([]*Handle, 0, len(c.handles))
	for h := range c.handles {
		hs = append(hs, h)
	}
	c.mu.Unlock()
	var errs []error
	for _, h := range hs {
		errs = append(errs, h.Close())
	}
	if c.api != nil {
		c.endSession()
		c.api.Close()
	}
	return errors.Join(errs...)
}

// Logout ends the host session (its tickets with it).
func (c *Conn) Logout(ctx context.Context) error {
	if c.api == nil {
		return nil
	}
	return c.api.Do(ctx, "POST", "/api/v1/logout", nil, nil)
}

// Spec names a disk (VixDiskLib_Open's path): a local image file, a VM's
// disk by controller key, or a disk of the host by name; Snapshot selects
// a frozen snapshot of it (read-only).
type Spec struct {
	Path     string // a local image file
	VM, Key  string // a VM's disk, such as "web01" and "scsi0:0"
	Disk     string // a host disk by name (detached or a VM's)
	Snapshot string // a snapshot ID such as "snapshot-3"
}

// ParseSpec parses "vm/NAME/KEY", "disk/NAME", either followed by
// "@SNAPSHOT", or a local path.
func ParseSpec(s string) Spec {
	base, snap, _ := strings.Cut(s, "@")
	switch {
	case strings.HasPrefix(base, "vm/"):
		vm, key, _ := strings.Cut(strings.TrimPrefix(base, "vm/"), "/")
		return Spec{VM: vm, Key: key, Snapshot: snap}
	case strings.HasPrefix(base, "disk/"):
		return Spec{Disk: strings.TrimPrefix(base, "disk/"), Snapshot: snap}
	}
	return Spec{Path: s}
}

// String formats the spec as ParseSpec reads it.
func (s Spec) String() string {
	var b string
	switch {
	case s.Path != "":
		return s.Path
	case s.VM != "":
		b = "vm/" + s.VM + "/" + s.Key
	default:
		b = "disk/" + s.Disk
	}
	if s.Snapshot != "" {
		b += "@" + s.Snapshot
	}
	return b
}
