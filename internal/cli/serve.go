package cli

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/vdisk-project/vdisk/disk"
	"github.com/vdisk-project/vdisk/internal/auth"
	"github.com/vdisk-project/vdisk/nbd"
	"github.com/vdisk-project/vdisk/server"
)

type serveOptions struct {
	dataDir       string
	listen        listFlag
	nbdListen     listFlag
	plainListen   listFlag
	tlsCert       string
	tlsKey        string
	adminUser     string
	adminPwFile   string
	resetAdmin    bool
	datastores    listFlag
	maxConns      int
	maxDiskConns  int
	maxSessConns  int
	memory        string
	sessionMemory string
	connMemory    string
	idle          time.Duration
	lifetime      time.Duration
	maxTicketTTL  time.Duration
	maxTickets    int
	maxSessions   int
	maxUserSess   int
	adminSessions int
	userFailures  int
	addrFailures  int
	loginMaxWait  time.Duration
	failWindow    time.Duration
	callTimeout   time.Duration
	workers       int
	nbdHandshake  time.Duration
	nbdMaxNeg     int
	logLevel      string
	logFormat     string
}

func serveFlags(o *serveOptions) *flag.FlagSet {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.String("config", "", "config file of key = value lines, keys as these flags (env VDISK_SERVE_CONFIG)")
	fs.StringVar(&o.dataDir, "data-dir", server.DefaultDataDir, "datastore directory")
	fs.Var(&o.listen, "listen", "control API address, host:port or [v6addr]:port; repeatable (default "+server.DefaultListen+")")
	fs.Var(&o.nbdListen, "nbd-listen", "NBD-over-TLS address; repeatable (default "+server.DefaultNBDListen+")")
	fs.Var(&o.plainListen, "plain-nbd-listen", "address serving NBD without TLS (tickets still required); repeatable; none by default")
	fs.StringVar(&o.tlsCert, "tls-cert", "", "server certificate (PEM); default DATA-DIR/tls/server.crt, generated on first start")
	fs.StringVar(&o.tlsKey, "tls-key", "", "server private key (PEM)")
	fs.StringVar(&o.adminUser, "admin-user", "admin", "name of the admin user created on first start")
	fs.StringVar(&o.adminPwFile, "admin-password-file", "", "file holding the first admin password (env VDISK_ADMIN_PASSWORD; default: generated and printed once)")
	fs.BoolVar(&o.resetAdmin, "reset-admin-password", false, "give the admin user (--admin-user) a new password (from --admin-password-file or VDISK_ADMIN_PASSWORD, else generated and printed once) and the admin role, keeping every other user; for an administrator locked out")
	fs.Var(&o.datastores, "datastore", "NAME=DIR: another directory disks may be relocated to; repeatable")
	fs.IntVar(&o.maxConns, "max-connections", 1000, "NBD connections open on the host at once (0: no limit)")
	fs.IntVar(&o.maxDiskConns, "max-disk-connections", 64, "NBD connections open to one disk at once (0: no limit)")
	fs.IntVar(&o.maxSessConns, "max-session-connections", 256, "NBD connections one login session may open (0: no limit)")
	fs.StringVar(&o.memory, "memory-budget", "4G", "memory the host reserves for NBD connections in total")
	fs.StringVar(&o.sessionMemory, "session-memory", "0", "memory one session may reserve (0: no limit beyond the budget)")
	fs.StringVar(&o.connMemory, "conn-memory", "4M", "memory reserved per NBD connection")
	fs.DurationVar(&o.idle, "session-idle-timeout", auth.DefaultIdleTimeout, "log a session out after this long unused: no API call, and no NBD connection open on its tickets")
	fs.DurationVar(&o.lifetime, "session-lifetime", auth.DefaultSessionLifetime, "log a session out this long after login")
	fs.DurationVar(&o.maxTicketTTL, "max-ticket-ttl", auth.DefaultMaxTicketTTL, "longest validity of an access ticket")
	fs.IntVar(&o.maxTickets, "max-session-tickets", auth.DefaultMaxTickets, "live access tickets one login session may hold")
	fs.IntVar(&o.maxSessions, "max-sessions", auth.DefaultMaxSessions, "login sessions live on the host at once")
	fs.IntVar(&o.maxUserSess, "max-user-sessions", auth.DefaultMaxUserSessions, "login sessions one user may hold at once; a login past it is refused (busy)")
	fs.IntVar(&o.adminSessions, "admin-sessions", 0, "of --max-sessions, how many only admins may use, so that other users never keep an admin out (0: 16, or a quarter of --max-sessions if less)")
	fs.IntVar(&o.userFailures, "login-user-failures", auth.DefaultUserFailures, "failed logins of one user name before each attempt must wait, the wait doubling per failure (-1: no per-user limit)")
	fs.IntVar(&o.addrFailures, "login-address-failures", auth.DefaultAddrFailures, "failed logins from one client address (IPv6: one /64) before each attempt must wait (-1: no per-address limit)")
	fs.DurationVar(&o.loginMaxWait, "login-max-wait", auth.DefaultMaxDelay, "longest wait imposed after failed logins")
	fs.DurationVar(&o.failWindow, "login-fail-window", auth.DefaultFailWindow, "failed logins are forgotten this long after the last one")
	fs.DurationVar(&o.callTimeout, "call-timeout", server.DefaultCallTimeout, "bound on every API call, snapshot consolidation included")
	fs.IntVar(&o.workers, "nbd-workers", 16, "requests served at once per NBD connection")
	fs.DurationVar(&o.nbdHandshake, "nbd-handshake-timeout", nbd.DefaultHandshakeTimeout, "time an NBD connection has to negotiate (TLS handshake, options, ticket) before it is closed")
	fs.IntVar(&o.nbdMaxNeg, "nbd-max-negotiating", nbd.DefaultMaxNegotiating, "NBD connections negotiating at once per listener kind; beyond it new ones are closed or replace the oldest (-1: no limit)")
	fs.StringVar(&o.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&o.logFormat, "log-format", "", "text or json (default: text on a terminal, json otherwise)")
	return fs
}

func cmdServe(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var o serveOptions
	fs := serveFlags(&o)
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return usagef("serve takes no arguments")
	}
	cfgPath := fs.Lookup("config").Value.String()
	if cfgPath == "" {
		cfgPath = os.Getenv("VDISK_SERVE_CONFIG")
	}
	if cfgPath != "" {
		if err := applyConfig(fs, cfgPath); err != nil {
			return err
		}
	}
	cfg, err := o.config(stderr)
	if err != nil {
		return err
	}
	return runServe(ctx, cfg, stdout, nil)
}

// config turns the options into a server.Config.
func (o *serveOptions) config(stderr io.Writer) (server.Config, error) {
	cfg := server.Config{
		DataDir: o.dataDir, Listen: o.listen, NBDListen: o.nbdListen, PlainNBDListen: o.plainListen,
		CertFile: o.tlsCert, KeyFile: o.tlsKey, AdminUser: o.adminUser,
		Limits: auth.Limits{HostConns: o.maxConns, DiskConns: o.maxDiskConns, SessionConns: o.maxSessConns},
		Sessions: auth.Options{IdleTimeout: o.idle, Lifetime: o.lifetime, MaxTicketTTL: o.maxTicketTTL, MaxTickets: o.maxTickets,
			MaxSessions: o.maxSessions, MaxUserSessions: o.maxUserSess, AdminSessions: o.adminSessions,
			Throttle: auth.ThrottleOptions{UserFailures: o.userFailures, AddrFailures: o.addrFailures, MaxDelay: o.loginMaxWait, FailWindow: o.failWindow}},
		CallTimeout: o.callTimeout, NBDWorkers: o.workers, Datastores: map[string]string{},
		NBDHandshakeTimeout: o.nbdHandshake, NBDMaxNegotiating: o.nbdMaxNeg,
	}
	var err error
	if cfg.Limits.Memory, err = parseSize(o.memory); err != nil {
		return cfg, err
	}
	if cfg.Limits.SessionMemory, err = parseSize(o.sessionMemory); err != nil {
		return cfg, err
	}
	if cfg.ConnMemory, err = parseSize(o.connMemory); err != nil {
		return cfg, err
	}
	for _, d := range o.datastores {
		name, dir, ok := strings.Cut(d, "=")
		if !ok || name == "" || dir == "" {
			return cfg, usagef("--datastore wants NAME=DIR, got %q", d)
		}
		cfg.Datastores[name] = dir
	}
	cfg.ResetAdminPassword = o.resetAdmin
	switch {
	case o.adminPwFile != "":
		b, err := os.ReadFile(o.adminPwFile)
		if err != nil {
			return cfg, disk.Wrap(err, "read admin password", o.adminPwFile, -1)
		}
		cfg.AdminPassword = strings.TrimRight(string(b), "\r\n")
	default:
		cfg.AdminPassword = os.Getenv("VDISK_ADMIN_PASSWORD")
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(o.logLevel)); err != nil {
		return cfg, usagef("--log-level %q: want debug, info, warn or error", o.logLevel)
	}
	hopts := &slog.HandlerOptions{Level: level}
	switch o.logFormat {
	case "json":
		cfg.Logger = slog.New(slog.NewJSONHandler(stderr, hopts))
	case "text":
		cfg.Logger = slog.New(slog.NewTextHandler(stderr, hopts))
	case "":
		if isTerminal(stderr) {
			cfg.Logger = slog.New(slog.NewTextHandler(stderr, hopts))
		} else {
			cfg.Logger = slog.New(slog.NewJSONHandler(stderr, hopts))
		}
	default:
		return cfg, usagef("--log-format %q: want text or json", o.logFormat)
	}
	return cfg, nil
}

// runServe runs the host until ctx ends. ready, when set, receives the
// server once it listens.
func runServe(ctx context.Context, cfg server.Config, stdout io.Writer, ready chan<- *server.Server) error {
	server.Version = Version
	s, err := server.New(ctx, cfg)
	if err != nil {
		return err
	}
	if err := s.Listen(); err != nil {
		s.Shutdown(context.Background())
		return err
	}
	api, nbdAddrs, plain := s.Addrs()
	b := s.Bootstrap()
	fmt.Fprintf(stdout, "vdisk serve %s: datastore %s\n", Version, cfg.DataDir)
	for _, a := range api {
		fmt.Fprintf(stdout, "  control API   https://%s/api/v1\n", a)
	}
	for _, a := range nbdAddrs {
		fmt.Fprintf(stdout, "  NBD over TLS  %s\n", a)
	}
	for _, a := range plain {
		fmt.Fprintf(stdout, "  NBD (plain)   %s\n", a)
	}
	fmt.Fprintf(stdout, "  certificate   SHA-256 thumbprint %s", b.Thumbprint)
	if b.CertCreated {
		fmt.Fprintf(stdout, " (generated now)")
	}
	fmt.Fprintln(stdout)
	if b.AdminPassword != "" {
		fmt.Fprintf(stdout, "  admin user    %s, password %s\n                (shown only now; change it with 'vdisk user passwd')\n", b.AdminUser, b.AdminPassword)
	} else if b.AdminUser != "" {
		fmt.Fprintf(stdout, "  admin user    %s, with the password given\n", b.AdminUser)
	}
	if len(api) > 0 {
		fmt.Fprintf(stdout, "next: vdisk login --server %s --thumbprint %s --user %s\n", api[0], b.Thumbprint, cfg.AdminUser)
	}
	if ready != nil {
		ready <- s
	}
	return s.Serve(ctx)
}
