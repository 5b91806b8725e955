// Package server is the vdisk host (`vdisk serve`) as a library: a
// datastore of VMs and disks served to backup, restore and running
// workloads through a control API (HTTPS and JSON under /api/v1, described
// by api/openapi.yaml) and NBD over TLS.
//
// # Overview
//
// [New] opens the datastore directory, the user database and the TLS
// certificate (creating a self-signed one and an admin user on first
// start, see [Bootstrap]). [Server.Serve] runs the listeners until its
// context ends; [Server.Shutdown] stops them, draining NBD requests.
//
// # Access
//
// A client logs in with a user name and password and gets a bearer token.
// Each call checks the session's privileges (read-only, backup, restore,
// admin). Disk data moves over NBD: the client asks for an access ticket
// naming one disk or snapshot and a mode, and passes it as the NBD export
// name. Plain NBD is served only on the listeners Config.PlainNBDListen
// names.
//
// # Errors
//
// API errors are JSON {"error": {"code", "vix", "message"}} with an HTTP
// status from one table (see httpStatus); NBD refusals are option errors
// carrying the reason.
package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/vdisk-project/vdisk/disk"
	"github.com/vdisk-project/vdisk/internal/auth"
	"github.com/vdisk-project/vdisk/internal/datastore"
	"github.com/vdisk-project/vdisk/nbd"
)

// Defaults for Config.
const (
	DefaultDataDir     = "vdisk-data"
	DefaultListen      = "127.0.0.1:8443"
	DefaultNBDListen   = "127.0.0.1:10809"
	DefaultCallTimeout = 10 * time.Minute
	DefaultConnMemory  = 4 << 20 // reserved per NBD connection
)

// Config configures a Server. Zero fields take the defaults.
type Config struct {
	// DataDir is the datastore directory; default ./vdisk-data.
	DataDir string
	// Listen are the control API addresses (HTTPS); default
	// 127.0.0.1:8443. "[::1]:8443" and other IPv6 forms work.
	Listen []string
	// NBDListen are the NBD-over-TLS addresses; default 127.0.0.1:10809.
	NBDListen []string
	// PlainNBDListen are addresses serving NBD without TLS; none unless
	// set. Tickets still authorize every connection.
	PlainNBDListen []string
	// NBDAdvertise, when set, is the "host:port" put in the nbds:// URIs of
	// tickets instead of the first NBD listener (a proxy, NAT or load
	// balancer in front); PlainNBDAdvertise likewise for plain NBD.
	NBDAdvertise, PlainNBDAdvertise string
	// CertFile and KeyFile are the TLS certificate and key (PEM); default
	// DataDir/tls/server.crt and .key, generated on first start.
	CertFile, KeyFile string
	// AdminUser and AdminPassword bootstrap the first user when there are
	// none; an empty password is generated and reported by Bootstrap. Both
	// happen in Listen, once every address is bound, so that a start that
	// fails leaves no user behind.
	AdminUser, AdminPassword string
	// ResetAdminPassword gives AdminUser the admin role and a new password
	// (AdminPassword, or one generated and reported by Bootstrap), making
	// the user if it is gone, and keeps every other user: the way back for
	// an administrator locked out.
	ResetAdminPassword bool
	// Datastores are extra directories (by name) disks may be relocated
	// to.
	Datastores map[string]string
	// Limits bound connections and memory (auth.Limits); a zero field is
	// no limit, except Memory, which defaults to 1 GiB.
	Limits auth.Limits
	// ConnMemory is what each NBD connection reserves from Limits.Memory,
	// and the most its buffers hold (nbd.ServerOptions.ConnMemory); default
	// 4 MiB, at least nbd.MinConnMemory.
	ConnMemory int64
	// Sessions configures logins and tickets (auth.Options): among them
	// the session limits (MaxSessions, MaxUserSessions per user, and
	// AdminSessions kept for admins) and the failed-login throttle
	// (Throttle), keyed on the peer address of the API connection, never
	// on a forwarding header. OnEnd is the server's own.
	Sessions auth.Options
	// PasswordIterations is the PBKDF2 cost for new passwords; 0 is the
	// default. Tests lower it.
	PasswordIterations int
	// CallTimeout bounds every API call, snapshot consolidation included;
	// default 10 minutes.
	CallTimeout time.Duration
	// NBDWorkers is the requests served at once per NBD connection.
	NBDWorkers int
	// NBDHandshakeTimeout bounds an NBD connection's negotiation (TLS
	// handshake and options); default nbd.DefaultHandshakeTimeout.
	NBDHandshakeTimeout time.Duration
	// NBDMaxNegotiating caps NBD connections still negotiating, per
	// listener kind (TLS, plain); default nbd.DefaultMaxNegotiating. Their
	// buffers are reserved from Limits.Memory at start.
	NBDMaxNegotiating int
	// Logger receives structured logs; nil discards them.
	Logger *slog.Logger
}

// Bootstrap reports what a first start created, for the operator to see
// once.
type Bootstrap struct {
	// Thumbprint is the SHA-256 thumbprint of the server certificate.
	Thumbprint string
	// CertCreated is set when the certificate was generated now.
	CertCreated bool
	// AdminUser and AdminPassword are set when the admin user was created
	// now; the password is shown nowhere else.
	AdminUser, AdminPassword string
}

// Server is a running vdisk host.
type Server struct {
	cfg     Config
	log     *slog.Logger
	store   *datastore.Store
	users   *auth.Store
	auth    *auth.Manager
	limiter *auth.Limiter
	tlsCfg  *tls.Config
	boot    Bootstrap
	metrics *metrics
	nbd     *nbd.Server
	plain   *nbd.Server
	http    *http.Server

	mu        sync.Mutex
	listeners []net.Listener
	apiAddrs  []net.Addr
	nbdAddrs  []net.Addr
	plainAddr []net.Addr
	conns     map[string]map[*nbdConn]bool // by session ID
	closed    bool
}

// New opens the datastore and prepares the server. It creates what a
// first start needs (directory, certificate, admin user).
func New(ctx context.Context, cfg Config) (*Server, error) {
	if cfg.DataDir == "" {
		cfg.DataDir = DefaultDataDir
	}
	if len(cfg.Listen) == 0 {
		cfg.Listen = []string{DefaultListen}
	}
	if len(cfg.NBDListen) == 0 {
		cfg.NBDListen = []string{DefaultNBDListen}
	}
	if cfg.CallTimeout <= 0 {
		cfg.CallTimeout = DefaultCallTimeout
	}
	if cfg.ConnMemory <= 0 {
		cfg.ConnMemory = DefaultConnMemory
	}
	cfg.ConnMemory = max(cfg.ConnMemory, nbd.MinConnMemory)
	if cfg.NBDHandshakeTimeout <= 0 {
		cfg.NBDHandshakeTimeout = nbd.DefaultHandshakeTimeout
	}
	if cfg.NBDMaxNegotiating == 0 {
		cfg.NBDMaxNegotiating = nbd.DefaultMaxNegotiating
	}
	if cfg.Limits.Memory <= 0 {
		cfg.Limits.Memory = 1 << 30
	}
	if cfg.AdminUser == "" {
		cfg.AdminUser = "admin"
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{cfg: cfg, log: log, metrics: newMetrics(), conns: map[string]map[*nbdConn]bool{}}
	if err := os.MkdirAll(cfg.DataDir, 0o750); err != nil {
		return nil, disk.Wrap(err, "server: create", cfg.DataDir, -1)
	}
	if err := s.loadTLS(); err != nil {
		return nil, err
	}
	users, err := auth.OpenStore(filepath.Join(cfg.DataDir, "users.json"), &auth.StoreOptions{Iterations: cfg.PasswordIterations})
	if err != nil {
		return nil, err
	}
	s.users = users
	sopts := cfg.Sessions
	sopts.OnEnd = s.sessionEnded
	s.auth = auth.NewManager(users, &sopts)
	s.limiter = auth.NewLimiter(cfg.Limits)
	if s.nbd, err = s.newNBD(s.tlsCfg); err != nil {
		return nil, err
	}
	if len(cfg.PlainNBDListen) > 0 {
		if s.plain, err = s.newNBD(nil); err != nil {
			return nil, err
		}
	}
	store, err := datastore.Open(ctx, cfg.DataDir, &datastore.Options{Logger: log, Targets: cfg.Datastores})
	if err != nil {
		return nil, err
	}
	s.store = store
	// No session outlives the host: the leases sessions held before it
	// stopped have no holder any more.
	if ids, err := store.EndLeases(ctx, func(string) bool { return false }); len(ids) > 0 || err != nil {
		log.Info("ended the leases of sessions from before the restart", "leases", len(ids), "err", err)
	}
	s.http = &http.Server{
		Handler:           s.routes(),
		TLSConfig:         s.tlsCfg.Clone(),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       time.Minute,
		WriteTimeout:      cfg.CallTimeout + time.Minute,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	return s, nil
}

// Bootstrap reports what New created on a first start.
func (s *Server) Bootstrap() Bootstrap { return s.boot }

// admin makes the first user, or resets the admin's password when asked.
// Listen calls it once the addresses are bound.
func (s *Server) admin() error {
	cfg := s.cfg
	switch {
	case len(s.users.List()) == 0:
		pw, err := s.users.Bootstrap(cfg.AdminUser, cfg.AdminPassword)
		if err != nil {
			return err
		}
		s.boot.AdminUser = cfg.AdminUser
		if cfg.AdminPassword == "" {
			s.boot.AdminPassword = pw
		}
		s.log.Info("created the admin user", "user", cfg.AdminUser)
	case cfg.ResetAdminPassword:
		pw := cfg.AdminPassword
		if pw == "" {
			var err error
			if pw, err = auth.GeneratePassword(); err != nil {
				return err
			}
			s.boot.AdminPassword = pw
		}
		err := s.users.SetPassword(cfg.AdminUser, pw)
		if disk.CodeOf(err) == disk.ErrNotFound {
			err = s.users.Add(cfg.AdminUser, auth.RoleAdmin, pw)
		} else if err == nil {
			err = s.users.SetRole(cfg.AdminUser, auth.RoleAdmin)
		}
		if err != nil {
			return err
		}
		s.boot.AdminUser = cfg.AdminUser
		s.log.Warn("reset the admin user's password", "user", cfg.AdminUser)
	}
	return nil
}

// Thumbprint returns the SHA-256 thumbprint of the server certificate.
func (s *Server) Thumbprint() string { return s.boot.Thumbprint }

// Store returns the datastore (for tests and embedding programs).
func (s *Server) Store() *datastore.Store { return s.store }

func (s *Server) loadTLS() error {
	cert, key := s.cfg.CertFile, s.cfg.KeyFile
	if cert == "" && key == "" {
		dir := filepath.Join(s.cfg.DataDir, "tls")
		cert, key = filepath.Join(dir, "server.crt"), filepath.Join(dir, "server.key")
		if _, err := os.Stat(cert); errors.Is(err, os.ErrNotExist) {
			if err := os.MkdirAll(dir, 0o700); err != nil {
				return disk.Wrap(err, "server: create", dir, -1)
			}
			hosts := []string{"localhost", "127.0.0.1", "::1"}
			if h, err := os.Hostname(); err == nil {
				hosts = append(hosts, h)
			}
			for _, l := range append(append([]string{}, s.cfg.Listen...), s.cfg.NBDListen...) {
				if h, _, err := net.SplitHostPort(l); err == nil && h != "" {
					hosts = append(hosts, h)
				}
			}
			cp, kp, err := auth.SelfSigned(hosts, time.Now())
			if err != nil {
				return err
			}
			if err := disk.WriteFileAtomic(nil, key, kp, 0o600); err != nil {
				return err
			}
			if err := disk.WriteFileAtomic(nil, cert, cp, 0o644); err != nil {
				return err
			}
			s.boot.CertCreated = true
		}
	} else if cert == "" || key == "" {
		return disk.Errorf(disk.ErrInvalid, "server: a certificate needs both a cert and a key file")
	}
	pair, err := tls.LoadX509KeyPair(cert, key)
	if err != nil {
		return disk.Errorf(disk.ErrInvalid, "server: load TLS certificate %s: %v", cert, err)
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return disk.Errorf(disk.ErrInvalid, "server: parse certificate %s: %v", cert, err)
	}
	s.boot.Thumbprint = auth.Thumbprint(leaf)
	// Bulk data: full-size TLS records from the first byte.
	s.tlsCfg = &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{pair}, DynamicRecordSizingDisabled: true}
	return nil
}

// CertificatePEM returns the server certificate, for clients that trust
// it as a CA rather than by thumbprint.
func (s *Server) CertificatePEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.tlsCfg.Certificates[0].Certificate[0]})
}

// Listen opens every listener; Serve then serves them. Tests call it to
// learn the addresses (port 0 picks a free port).
func (s *Server) Listen() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.listeners) > 0 {
		return nil
	}
	open := func(addrs []string, into *[]net.Addr) error {
		for _, a := range addrs {
			l, err := net.Listen("tcp", a)
			if err != nil {
				return disk.Wrap(err, "server: listen", a, -1)
			}
			s.listeners = append(s.listeners, l)
			*into = append(*into, l.Addr())
		}
		return nil
	}
	err := open(s.cfg.Listen, &s.apiAddrs)
	if err == nil {
		err = open(s.cfg.NBDListen, &s.nbdAddrs)
	}
	if err == nil && s.plain != nil {
		err = open(s.cfg.PlainNBDListen, &s.plainAddr)
	}
	if err == nil {
		err = s.admin()
	}
	if err != nil {
		for _, l := range s.listeners {
			l.Close()
		}
		s.listeners = nil
	}
	return err
}

// Addrs returns the listening addresses: control API, NBD over TLS and
// plain NBD.
func (s *Server) Addrs() (api, nbdTLS, nbdPlain []net.Addr) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.apiAddrs, s.nbdAddrs, s.plainAddr
}

// Serve runs the server until ctx ends or a listener fails, then shuts it
// down (draining NBD requests for up to 30 seconds) and closes the
// datastore cleanly.
func (s *Server) Serve(ctx context.Context) error {
	if err := s.Listen(); err != nil {
		return err
	}
	s.mu.Lock()
	ls := s.listeners
	napi, nnbd := len(s.cfg.Listen), len(s.cfg.NBDListen)
	s.mu.Unlock()
	errc := make(chan error, len(ls)+1)
	var wg sync.WaitGroup
	for i, l := range ls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var err error
			switch {
			case i < napi:
				err = s.http.Serve(tls.NewListener(l, s.http.TLSConfig))
				if errors.Is(err, http.ErrServerClosed) {
					err = nil
				}
			case i < napi+nnbd:
				err = s.nbd.Serve(ctx, l)
			default:
				err = s.plain.Serve(ctx, l)
			}
			if errors.Is(err, nbd.ErrServerClosed) {
				err = nil
			}
			errc <- err
		}()
	}
	// Expired sessions and their tickets are swept once a minute, until
	// Serve ends (not only its context: a failed listener ends it too).
	sweep, stopSweep := context.WithCancel(ctx)
	defer stopSweep()
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(time.Minute)
		defer t.Stop()
		for {
			select {
			case <-sweep.Done():
				return
			case <-t.C:
				s.auth.Cleanup()
			}
		}
	}()
	s.log.Info("serving", "api", addrStrings(s.apiAddrs), "nbd", addrStrings(s.nbdAddrs), "plain_nbd", addrStrings(s.plainAddr), "thumbprint", s.boot.Thumbprint)
	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	serr := s.Shutdown(sctx)
	stopSweep()
	wg.Wait()
	return errors.Join(err, serr)
}

// Shutdown stops accepting, drains NBD requests in flight and API calls,
// then closes the datastore cleanly.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	s.log.Info("shutting down")
	start := time.Now()
	defer func() { s.log.Info("shut down", "took", time.Since(start).Round(time.Millisecond)) }()
	errs := []error{s.http.Shutdown(ctx), s.nbd.Shutdown(ctx)}
	if s.plain != nil {
		errs = append(errs, s.plain.Shutdown(ctx))
	}
	for i, err := range errs {
		if errors.Is(err, nbd.ErrServerClosed) || errors.Is(err, http.ErrServerClosed) {
			errs[i] = nil
		}
	}
	errs = append(errs, s.store.Close())
	return errors.Join(errs...)
}

// sessionEnded closes the NBD connections of a session that ended.
func (s *Server) sessionEnded(sess auth.Session) {
	s.mu.Lock()
	conns := s.conns[sess.ID]
	delete(s.conns, sess.ID)
	s.mu.Unlock()
	for c := range conns {
		c.end()
	}
	// Its leases end with it: a lease held by nobody would keep the
	// disk from consolidating, relocating or being deleted for ever.
	leases, err := s.store.EndLeases(context.Background(), func(holder string) bool { return holder != sess.ID })
	s.log.Info("session ended", "session", sess.ID, "user", sess.User, "nbd_connections", len(conns), "leases", len(leases), "err", err)
}

// target names what a ticket grants: "disk/NAME" or "disk/NAME@SNAPSHOT".
func target(diskName, snapshot string) string {
	t := "disk/" + diskName
	if snapshot != "" {
		t += "@" + snapshot
	}
	return t
}

func parseTarget(t string) (diskName, snapshot string, err error) {
	rest, ok := strings.CutPrefix(t, "disk/")
	if !ok {
		return "", "", fmt.Errorf("server: bad target %q", t)
	}
	diskName, snapshot, _ = strings.Cut(rest, "@")
	return diskName, snapshot, nil
}

func addrStrings(as []net.Addr) []string {
	out := make([]string, len(as))
	for i, a := range as {
		out[i] = a.String()
	}
	return out
}
