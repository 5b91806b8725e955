// Package hostclient is a client of the vdisk host's control API
// (HTTPS + JSON under /api/v1, see api/openapi.yaml): the CLI's host
// commands and the kit's host connections go through it.
//
// # Errors
//
// A failed call returns an *Error carrying the host's error body; it
// matches the disk error code the body names with errors.Is
// (errors.Is(err, disk.ErrBusy)).
//
// # Retries and timeouts
//
// Every call is bounded by Options.Timeout. GETs are retried with backoff
// when the host is busy or the connection failed; calls that change state
// are not retried (they may have taken effect).
package hostclient

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/vdisk-project/vdisk/disk"
	"github.com/vdisk-project/vdisk/nbd"
)

// DefaultPort is the control API's port when an address has none.
const DefaultPort = "8443"

// Options configure a Client.
type Options struct {
	// Server is "host:port", "[v6addr]:port", or a host alone (port 8443).
	Server string
	// Thumbprint pins the host certificate by SHA-256; CAFile or TLSConfig
	// trust a CA instead. Exactly one is required (see nbd.Trust): the host
	// is always verified, and New refuses two anchors or a TLSConfig that
	// skips verification with disk.ErrInvalid.
	Thumbprint string
	CAFile     string
	TLSConfig  *tls.Config
	// Token is a session token from Login (a saved login).
	Token string
	// Timeout bounds each call; default 60 s.
	Timeout time.Duration
	// Retries is how often a GET is retried on a transient failure;
	// default 5.
	Retries int
	// Logger receives debug logs; nil discards them.
	Logger *slog.Logger
}

// Client is a control API client, safe for concurrent use.
type Client struct {
	base    string
	server  string
	hc      *http.Client
	tls     *tls.Config
	timeout time.Duration
	retries int
	log     *slog.Logger

	mu    sync.Mutex
	token string
	// user and password, when KeepLoggedIn set them, log in again when
	// the host says the session has ended; relogin serializes that.
	user, password string
	relogin        sync.Mutex
}

// Error is a failed API call: the host's error body.
type Error struct {
	Status  int    `json:"-"`
	Code    string `json:"code"`
	Vix     uint32 `json:"vix"`
	Message string `json:"message"`
}

func (e *Error) Error() string { return e.Message }

// Unwrap returns the disk error code the API code stands for, so that
// errors.Is(err, disk.ErrBusy) and disk.CodeOf work.
func (e *Error) Unwrap() error { return e.DiskCode() }

// DiskCode maps the API error code to a disk error code.
func (e *Error) DiskCode() disk.Code {
	switch e.Code {
	case "not_found":
		return disk.ErrNotFound
	case "busy":
		return disk.ErrBusy
	case "out_of_memory":
		return disk.ErrOutOfMemory
	case "permission_denied", "unauthenticated":
		return disk.ErrPermission
	case "not_supported":
		return disk.ErrNotSupported
	case "corrupt":
		return disk.ErrCorrupt
	case "invalid_argument":
		return disk.ErrInvalid
	case "no_space_left":
		return disk.ErrNoSpace
	}
	return disk.ErrAccess
}

// NormalizeServer turns a server as a user gives it (host, host:port,
// [v6]:port, or the https://HOST:PORT/api/v1 the host prints) into
// host:port, adding the default port.
func NormalizeServer(server string) string {
	// The form the host's banner prints, https://HOST:PORT/api/v1, too.
	server = strings.TrimPrefix(server, "https://")
	server = strings.TrimSuffix(strings.TrimSuffix(server, "/"), "/api/v1")
	server = strings.TrimSuffix(server, "/")
	if _, _, err := net.SplitHostPort(server); err == nil {
		return server
	}
	return net.JoinHostPort(strings.Trim(server, "[]"), DefaultPort)
}

// New makes a client. It does not contact the host.
func New(o Options) (*Client, error) {
	if o.Server == "" {
		return nil, disk.Errorf(disk.ErrInvalid, "hostclient: no server address")
	}
	if o.Timeout <= 0 {
		o.Timeout = 60 * time.Second
	}
	if o.Retries <= 0 {
		o.Retries = 5
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	t := nbd.Trust{Thumbprint: o.Thumbprint, CAFile: o.CAFile, TLSConfig: o.TLSConfig}
	if t.IsZero() {
		return nil, disk.Errorf(disk.ErrInvalid, "hostclient: give the host's thumbprint or a CA file; certificates are always verified")
	}
	tc, err := t.ClientTLSConfig()
	if err != nil {
		return nil, err
	}
	server := NormalizeServer(o.Server)
	tr := &http.Transport{
		TLSClientConfig:     tc,
		DialContext:         (&net.Dialer{Timeout: o.Timeout, KeepAlive: 30 * time.Second}).DialContext,
		TLSHandshakeTimeout: o.Timeout,
		MaxIdleConnsPerHost: 8,
		IdleConnTimeout:     90 * time.Second,
	}
	return &Client{base: "https://" + server, server: server, hc: &http.Client{Transport: tr}, tls: tc,
		token: o.Token, timeout: o.Timeout, retries: o.Retries, log: o.Logger}, nil
}

// Server returns the host's address.
func (c *Client) Server() string { return c.server }

// TLSConfig returns the verifying TLS configuration (for NBD too).
func (c *Client) TLSConfig() *tls.Config { return c.tls }

// Token returns the session token.
func (c *Client) Token() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.token
}

func (c *Client) setToken(t string) {
	c.mu.Lock()
	c.token = t
	c.mu.Unlock()
}

// KeepLoggedIn makes the client log in again as user, once per call, when
// the host answers that its session has ended: it expired (its lifetime),
// an administrator ended it, or the host restarted, which ends them all.
// A backup that holds the password so survives them; a changed password
// still ends it.
func (c *Client) KeepLoggedIn(user, password string) {
	c.mu.Lock()
	c.user, c.password = user, password
	c.mu.Unlock()
}

// loginAgain logs in again after a call made with token stale failed on an
// ended session; if another goroutine already did, it does nothing.
func (c *Client) loginAgain(ctx context.Context, stale string) error {
	c.relogin.Lock()
	defer c.relogin.Unlock()
	c.mu.Lock()
	user, password, now := c.user, c.password, c.token
	c.mu.Unlock()
	if now != stale {
		return nil
	}
	c.log.Info("hostclient: the session ended; logging in again", "server", c.server, "user", user)
	_, err := c.Login(ctx, user, password)
	return err
}

// sessionEnded reports whether err is the host refusing a session token.
func sessionEnded(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Status == http.StatusUnauthorized
}

// Close drops idle connections.
func (c *Client) Close() { c.hc.CloseIdleConnections() }

// Do calls the API: method and path (with query), a JSON body (or nil)
// and the value to decode the answer into (or nil).
func (c *Client) Do(ctx context.Context, method, path string, body, out any) error {
	var b []byte
	if body != nil {
		var err error
		if b, err = json.Marshal(body); err != nil {
			return err
		}
	}
	stale := c.Token()
	err := c.do(ctx, method, path, b, out)
	if sessionEnded(err) && path != "/api/v1/login" && stale != "" {
		c.mu.Lock()
		keep := c.user != ""
		c.mu.Unlock()
		if keep {
			if lerr := c.loginAgain(ctx, stale); lerr != nil {
				return errors.Join(err, lerr)
			}
			// The host refused the call before doing it, so it is
			// made again with the new session.
			return c.do(ctx, method, path, b, out)
		}
	}
	return err
}

// do is one call, retried with backoff on a transient failure: a GET up
// to c.retries times, any other call only when it never reached the host.
func (c *Client) do(ctx context.Context, method, path string, b []byte, out any) error {
	var err error
	for i := 0; ; i++ {
		if i > 0 {
			if werr := Backoff(ctx, i); werr != nil {
				return errors.Join(err, werr)
			}
		}
		err = c.once(ctx, method, path, b, out)
		if err == nil || !Transient(err) || i >= c.retries {
			return err
		}
		if method != http.MethodGet && !neverSent(err) {
			return err // the host may have done it: not repeated
		}
		c.log.Debug("hostclient: retrying", "method", method, "path", path, "err", err)
	}
}

func (c *Client) once(ctx context.Context, method, path string, body []byte, out any) error {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return disk.Errorf(disk.ErrInvalid, "hostclient: %v", err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if tok := c.Token(); tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("hostclient: %s %s: %w", method, path, context.DeadlineExceeded)
		}
		return disk.Wrap(err, "hostclient: "+method, c.base+path, -1)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 256<<20))
	if err != nil {
		return disk.Wrap(err, "hostclient: read reply", c.base+path, -1)
	}
	if resp.StatusCode >= 300 {
		var e struct{ Error Error }
		if json.Unmarshal(data, &e) != nil || e.Error.Code == "" {
			return &Error{Status: resp.StatusCode, Code: "access_error", Message: fmt.Sprintf("hostclient: %s %s: HTTP %s", method, path, resp.Status)}
		}
		e.Error.Status = resp.StatusCode
		if resp.StatusCode == http.StatusUnauthorized && c.Token() != "" && path != "/api/v1/login" {
			// A saved session the host no longer knows (it expired, was
			// ended, or the host restarted): say what to do.
			e.Error.Message = "your session with " + c.server + " has ended; run vdisk login (" + e.Error.Message + ")"
		}
		return &e.Error
	}
	if out != nil && len(data) > 0 {
		if s, ok := out.(*string); ok {
			*s = string(data)
			return nil
		}
		if err := json.Unmarshal(data, out); err != nil {
			return disk.Errorf(disk.ErrAccess, "hostclient: %s %s: bad reply: %v", method, path, err)
		}
	}
	return nil
}

// Transient reports errors worth retrying: busy, or the network.
func Transient(err error) bool {
	if errors.Is(err, context.Canceled) {
		return false
	}
	var ae *Error
	if errors.As(err, &ae) {
		return ae.DiskCode() == disk.ErrBusy || ae.Status == http.StatusBadGateway || ae.Status == http.StatusServiceUnavailable
	}
	return disk.CodeOf(err) == disk.ErrBusy || disk.CodeOf(err) == disk.ErrAccess || errors.Is(err, context.DeadlineExceeded)
}

// neverSent reports whether a call failed before reaching the host (no
// connection could be made: it is restarting, or the network is down), so
// that even a call that changes something may be tried again.
func neverSent(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// Backoff waits before retry i (1-based): 100 ms doubling up to 5 s.
func Backoff(ctx context.Context, i int) error {
	d := min(100*time.Millisecond<<min(i-1, 6), 5*time.Second)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// Esc escapes a path element.
func Esc(s string) string { return url.PathEscape(s) }
