package vdisk

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
	"time"

	"github.com/vdisk-project/vdisk/disk"
	"github.com/vdisk-project/vdisk/internal/datastore"
)

// hostAPI is the kit's client of a vdisk host's control API (/api/v1).
type hostAPI struct {
	base    string // https://host:port
	hc      *http.Client
	token   string
	timeout time.Duration
	retries int
	log     *slog.Logger
}

// apiError is a failed API call: the host's error body, typed by its code.
type apiError struct {
	Status  int
	Code    string
	Vix     uint32
	Message string
}

func (e *apiError) Error() string { return e.Message }

// Is matches the disk error code the API code stands for.
func (e *apiError) Is(target error) bool {
	c, ok := target.(disk.Code)
	return ok && e.code() == c
}

func (e *apiError) code() disk.Code {
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

func newHostAPI(server string, tc *tls.Config, timeout time.Duration, retries int, log *slog.Logger) *hostAPI {
	tr := &http.Transport{
		TLSClientConfig:       tc,
		DialContext:           (&net.Dialer{Timeout: timeout, KeepAlive: 30 * time.Second}).DialContext,
		TLSHandshakeTimeout:   timeout,
		ResponseHeaderTimeout: 0, // bounded per call by the context
		MaxIdleConnsPerHost:   8,
		IdleConnTimeout:       90 * time.Second,
	}
	return &hostAPI{base: "https://" + server, hc: &http.Client{Transport: tr}, timeout: timeout, retries: retries, log: log}
}

// call does one API request. GETs are retried with backoff when the host
// is busy or the connection failed; other methods are not (they may have
// taken effect).
func (h *hostAPI) call(ctx context.Context, method, path string, body, out any) error {
	var b []byte
	if body != nil {
		var err error
		if b, err = json.Marshal(body); err != nil {
			return err
		}
	}
	tries := 1
	if method == http.MethodGet {
		tries += h.retries
	}
	var err error
	for i := range tries {
		if i > 0 {
			if werr := backoff(ctx, i); werr != nil {
				return errors.Join(err, werr)
			}
		}
		err = h.once(ctx, method, path, b, out)
		if err == nil || !transient(err) {
			return err
		}
		h.log.Debug("vdisk: retrying a host call", "method", method, "path", path, "err", err)
	}
	return err
}

func (h *hostAPI) once(ctx context.Context, method, path string, body []byte, out any) error {
	ctx, cancel := context.WithTimeout(ctx, h.timeout)
	defer cancel()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, h.base+path, rd)
	if err != nil {
		return disk.Errorf(disk.ErrInvalid, "vdisk: %v", err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if h.token != "" {
		req.Header.Set("Authorization", "Bearer "+h.token)
	}
	resp, err := h.hc.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("vdisk: %s %s: %w", method, path, context.DeadlineExceeded)
		}
		return disk.Wrap(err, "vdisk: "+method, h.base+path, -1)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 256<<20))
	if err != nil {
		return disk.Wrap(err, "vdisk: read reply", h.base+path, -1)
	}
	if resp.StatusCode >= 300 {
		var e struct{ Error apiError }
		if json.Unmarshal(data, &e) != nil || e.Error.Code == "" {
			return &apiError{Status: resp.StatusCode, Code: "access_error", Message: fmt.Sprintf("vdisk: %s %s: HTTP %s", method, path, resp.Status)}
		}
		e.Error.Status = resp.StatusCode
		return &e.Error
	}
	if out != nil && len(data) > 0 {
		if err := json.Unmarshal(data, out); err != nil {
			return disk.Errorf(disk.ErrAccess, "vdisk: %s %s: bad reply: %v", method, path, err)
		}
	}
	return nil
}

// transient reports errors worth retrying: busy, or the network.
func transient(err error) bool {
	if errors.Is(err, context.Canceled) {
		return false
	}
	var ae *apiError
	if errors.As(err, &ae) {
		return ae.code() == disk.ErrBusy || ae.Status == http.StatusBadGateway || ae.Status == http.StatusServiceUnavailable
	}
	return disk.CodeOf(err) == disk.ErrBusy || disk.CodeOf(err) == disk.ErrAccess || errors.Is(err, context.DeadlineExceeded)
}

// backoff waits before retry i (1-based): 100 ms doubling up to 5 s.
func backoff(ctx context.Context, i int) error {
	d := 100 * time.Millisecond << min(i-1, 6)
	d = min(d, 5*time.Second)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

func esc(s string) string { return url.PathEscape(s) }

// The wire types the kit reads.

type hostAbout struct {
	Version    string   `json:"version"`
	Thumbprint string   `json:"thumbprint"`
	NBD        []string `json:"nbd"`
	PlainNBD   []string `json:"plainNbd"`
	Datastores []string `json:"datastores"`
}

type hostTicket struct {
	Ticket     string    `json:"ticket"`
	ID         string    `json:"id"`
	Target     string    `json:"target"`
	Mode       string    `json:"mode"`
	Expires    time.Time `json:"expires"`
	Size       int64     `json:"size"`
	URI        string    `json:"uri"`
	PlainURI   string    `json:"plainUri"`
	Thumbprint string    `json:"thumbprint"`
}

func (h *hostAPI) login(ctx context.Context, user, password string) error {
	var out struct{ Token string }
	if err := h.call(ctx, "POST", "/api/v1/login", map[string]string{"user": user, "password": password}, &out); err != nil {
		return err
	}
	h.token = out.Token
	return nil
}

func (h *hostAPI) about(ctx context.Context) (hostAbout, error) {
	var a hostAbout
	return a, h.call(ctx, "GET", "/api/v1/about", nil, &a)
}

// resolve turns a spec into the name of a datastore disk.
func (h *hostAPI) resolve(ctx context.Context, s Spec) (string, error) {
	if s.Disk != "" {
		return s.Disk, nil
	}
	if s.VM == "" || s.Key == "" {
		return "", disk.Errorf(disk.ErrInvalid, "vdisk: a host disk is named by Disk, or by VM and Key")
	}
	var vm datastore.VMInfo
	if err := h.call(ctx, "GET", "/api/v1/vms/"+esc(s.VM), nil, &vm); err != nil {
		return "", err
	}
	for _, d := range vm.Disks {
		if d.Key == s.Key {
			return d.Name, nil
		}
	}
	return "", disk.Errorf(disk.ErrNotFound, "vdisk: VM %s has no disk at %s", s.VM, s.Key)
}

func (h *hostAPI) disk(ctx context.Context, name string) (datastore.DiskInfo, error) {
	var d datastore.DiskInfo
	return d, h.call(ctx, "GET", "/api/v1/disks/"+esc(name), nil, &d)
}

func (h *hostAPI) ticket(ctx context.Context, name, snapshot string, write bool, conns int) (hostTicket, error) {
	mode := "ro"
	if write {
		mode = "rw"
	}
	var t hostTicket
	err := h.call(ctx, "POST", "/api/v1/tickets", map[string]any{"disk": name, "snapshot": snapshot, "mode": mode, "maxConns": conns}, &t)
	return t, err
}

func (h *hostAPI) direct(ctx context.Context, name, snapshot string, write bool) (datastore.DirectLease, error) {
	mode := "ro"
	if write {
		mode = "rw"
	}
	var l datastore.DirectLease
	err := h.call(ctx, "POST", "/api/v1/disks/"+esc(name)+"/direct", map[string]string{"snapshot": snapshot, "mode": mode}, &l)
	return l, err
}

func (h *hostAPI) endDirect(ctx context.Context, id string) error {
	return h.call(ctx, "DELETE", "/api/v1/direct/"+esc(id), nil, nil)
}

// changes follows the host's paging until the whole range is answered.
func (h *hostAPI) changes(ctx context.Context, name, snapshot, changeID string, start int64, fn func(datastore.Area) error) (datastore.ChangeInfo, error) {
	var all datastore.ChangeInfo
	for first := true; ; first = false {
		q := url.Values{"changeId": {changeID}, "start": {fmt.Sprint(start)}}
		if snapshot != "" {
			q.Set("snapshot", snapshot)
		}
		var ci datastore.ChangeInfo
		if err := h.call(ctx, "GET", "/api/v1/disks/"+esc(name)+"/changes?"+q.Encode(), nil, &ci); err != nil {
			return all, err
		}
		if first {
			all = ci
			all.Areas = nil
		}
		for _, a := range ci.Areas {
			if err := fn(a); err != nil {
				return all, err
			}
		}
		end := ci.StartOffset + ci.Length
		if end >= ci.Capacity || ci.Length <= 0 {
			all.Length = end - all.StartOffset
			return all, nil
		}
		start = end
	}
}

func (h *hostAPI) metadata(ctx context.Context, name, snapshot string) (map[string]string, error) {
	var m map[string]string
	p := "/api/v1/disks/" + esc(name) + "/metadata"
	if snapshot != "" {
		p += "?snapshot=" + url.QueryEscape(snapshot)
	}
	return m, h.call(ctx, "GET", p, nil, &m)
}

func (h *hostAPI) setMetadata(ctx context.Context, name, key, value string) error {
	return h.call(ctx, "PUT", "/api/v1/disks/"+esc(name)+"/metadata/"+esc(key), map[string]string{"value": value}, nil)
}

// target is the API path of a VM or a disk.
func (s Spec) apiTarget() (string, error) {
	switch {
	case s.VM != "" && s.Key == "":
		return "/api/v1/vms/" + esc(s.VM), nil
	case s.Disk != "":
		return "/api/v1/disks/" + esc(s.Disk), nil
	}
	return "", disk.Errorf(disk.ErrInvalid, "vdisk: name a VM (without Key) or a Disk")
}
