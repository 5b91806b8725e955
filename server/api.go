package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/vdisk-project/vdisk/disk"
	"github.com/vdisk-project/vdisk/format/vmdk"
	"github.com/vdisk-project/vdisk/internal/auth"
	"github.com/vdisk-project/vdisk/internal/datastore"
	"github.com/vdisk-project/vdisk/internal/hostclient"
)

// Version is reported by /api/v1/about; the CLI sets it.
var Version = "dev"

// maxBody bounds a request body.
const maxBody = 1 << 20

// APIError is the body of every failed API call:
// {"error": {"code": "busy", "vix": 5, "message": "…"}}.
type APIError struct {
	Code    string `json:"code"`
	Vix     uint32 `json:"vix"`
	Message string `json:"message"`
}

// httpStatus maps an error code to an HTTP status, the one table of the
// control API's boundary.
func httpStatus(err error) int {
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return http.StatusGatewayTimeout
	case errors.Is(err, errUnauthenticated):
		return http.StatusUnauthorized
	}
	switch disk.CodeOf(err) {
	case disk.ErrNotFound:
		return http.StatusNotFound
	case disk.ErrBusy:
		return http.StatusConflict
	case disk.ErrOutOfMemory, disk.ErrNoSpace:
		return http.StatusInsufficientStorage
	case disk.ErrPermission:
		return http.StatusForbidden
	case disk.ErrNotSupported:
		return http.StatusNotImplemented
	case disk.ErrInvalid:
		return http.StatusBadRequest
	case disk.ErrAccess:
		return http.StatusBadGateway
	}
	return http.StatusInternalServerError
}

var errUnauthenticated = disk.Errorf(disk.ErrPermission, "server: log in first (Authorization: Bearer TOKEN)")

func codeName(err error) string {
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	case errors.Is(err, errUnauthenticated):
		return "unauthenticated"
	}
	c := disk.CodeOf(err)
	if c == 0 {
		return "internal"
	}
	return strings.ReplaceAll(c.String(), " ", "_")
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

func (s *Server) writeErr(w http.ResponseWriter, err error) {
	st := httpStatus(err)
	var vix uint32
	if c := disk.CodeOf(err); c != 0 {
		vix = c.VixError()
	}
	writeJSON(w, st, map[string]APIError{"error": {Code: codeName(err), Vix: vix, Message: err.Error()}})
}

func readJSON(r *http.Request, v any) error {
	dec := json.NewDecoder(io.LimitReader(r.Body, maxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil && !errors.Is(err, io.EOF) {
		return disk.Errorf(disk.ErrInvalid, "server: bad request body: %v", err)
	}
	return nil
}

// call is an authenticated API handler. It returns the response body (nil
// for 204) or an error.
type call func(ctx context.Context, sess auth.Session, r *http.Request) (any, error)

// statusWriter remembers the status for metrics.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(s int) {
	w.status = s
	w.ResponseWriter.WriteHeader(s)
}

// observe wraps a handler with metrics and logging.
func (s *Server) observe(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t := time.Now()
		sw := &statusWriter{ResponseWriter: w, status: 200}
		h.ServeHTTP(sw, r)
		d := time.Since(t)
		s.metrics.apiLatency.observe(d)
		if c := sw.status/100 - 1; c >= 0 && c < 5 {
			s.metrics.apiCalls[c].Add(1)
		} else {
			s.metrics.apiCalls[5].Add(1)
		}
		s.log.Debug("api", "method", r.Method, "path", r.URL.Path, "status", sw.status, "duration", d)
	})
}

// authed checks the bearer token and the privileges need, bounds the call
// by CallTimeout, and writes the result.
func (s *Server) authed(need auth.Privilege, h call) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok {
			s.writeErr(w, errUnauthenticated)
			return
		}
		sess, err := s.auth.Authenticate(tok)
		if err != nil {
			s.writeErr(w, errors.Join(errUnauthenticated, err))
			return
		}
		if !sess.Can(need) {
			s.writeErr(w, disk.Errorf(disk.ErrPermission, "server: user %s (role %s) lacks the %s privilege", sess.User, sess.Role, need))
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), s.cfg.CallTimeout)
		defer cancel()
		v, err := h(ctx, sess, r)
		switch {
		case err != nil:
			s.writeErr(w, err)
		case v == nil:
			w.WriteHeader(http.StatusNoContent)
		default:
			st := http.StatusOK
			if r.Method == http.MethodPost {
				st = http.StatusCreated
			}
			writeJSON(w, st, v)
		}
	})
}

// publicRoutes are the only routes served without a session token.
var publicRoutes = []string{"GET /api/v1/health", "GET /metrics", "POST /api/v1/login"}

// route is one authenticated control API route.
type route struct {
	pattern string         // "METHOD /path", as http.ServeMux takes it
	need    auth.Privilege // checked by authed before h runs
	h       call
}

// anyone is the privilege every session has. Routes that need only it
// and act for someone else check that themselves (user update, session
// delete).
const anyone = auth.Privilege(0)

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc(publicRoutes[0], func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, map[string]any{"status": "ok", "version": Version})
	})
	mux.HandleFunc(publicRoutes[1], func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		conns, mem := s.limiter.Usage()
		s.metrics.write(w, len(s.auth.Sessions()), conns, mem)
	})
	mux.HandleFunc(publicRoutes[2], s.login)
	for _, rt := range s.apiRoutes() {
		mux.Handle(rt.pattern, s.authed(rt.need, rt.h))
	}
	return s.observe(mux)
}

// apiRoutes is the table of authenticated routes and the privilege each
// needs; routes registers exactly these. Handlers that also check
// something in the request (a rw ticket or direct lease needs write,
// growing a disk needs write, another user's password needs admin)
// refuse with disk.ErrPermission themselves.
func (s *Server) apiRoutes() []route {
	var rs []route
	handle := func(pattern string, need auth.Privilege, h call) {
		if strings.Contains(pattern, "{vm}") {
			// VMs are found by name or by managed-object ID ("vm-N").
			inner := h
			h = func(ctx context.Context, sess auth.Session, r *http.Request) (any, error) {
				s.resolveVMPath(r)
				return inner(ctx, sess, r)
			}
		}
		rs = append(rs, route{pattern: pattern, need: need, h: h})
	}
	handle("POST /api/v1/logout", anyone, func(ctx context.Context, sess auth.Session, r *http.Request) (any, error) {
		tok, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		return nil, s.auth.Logout(tok)
	})
	handle("GET /api/v1/session", anyone, func(ctx context.Context, sess auth.Session, r *http.Request) (any, error) {
		return sess, nil
	})
	handle("GET /api/v1/about", anyone, s.about)

	// Users.
	handle("GET /api/v1/users", auth.Admin, func(ctx context.Context, sess auth.Session, r *http.Request) (any, error) {
		return s.users.List(), nil
	})
	handle("POST /api/v1/users", auth.Admin, s.addUser)
	handle("PUT /api/v1/users/{name}", anyone, s.updateUser)
	handle("DELETE /api/v1/users/{name}", auth.Admin, func(ctx context.Context, sess auth.Session, r *http.Request) (any, error) {
		name := r.PathValue("name")
		n, err := s.auth.RemoveUser(name)
		if err != nil {
			return nil, err
		}
		s.log.Info("user removed", "user", name, "by", sess.User, "sessions_ended", n)
		return nil, nil
	})
	handle("GET /api/v1/sessions", auth.ManageAccess, func(ctx context.Context, sess auth.Session, r *http.Request) (any, error) {
		return s.auth.Sessions(), nil
	})
	handle("DELETE /api/v1/sessions/{id}", anyone, func(ctx context.Context, sess auth.Session, r *http.Request) (any, error) {
		id := r.PathValue("id")
		if id != sess.ID && !sess.Can(auth.ManageAccess) {
			return nil, disk.Errorf(disk.ErrPermission, "server: ending another user's session needs the manage-access privilege")
		}
		return nil, s.auth.End(id)
	})

	// VMs.
	handle("GET /api/v1/vms", auth.Read, func(ctx context.Context, sess auth.Session, r *http.Request) (any, error) {
		vms := nonNil(s.store.VMs())
		for i := range vms {
			vms[i] = withMoRef(vms[i])
		}
		return vms, nil
	})
	handle("POST /api/v1/vms", auth.Write, func(ctx context.Context, sess auth.Session, r *http.Request) (any, error) {
		var req struct{ Name string }
		if err := readJSON(r, &req); err != nil {
			return nil, err
		}
		return s.store.CreateVM(req.Name)
	})
	handle("GET /api/v1/vms/{vm}", auth.Read, func(ctx context.Context, sess auth.Session, r *http.Request) (any, error) {
		vm, err := s.store.VM(r.PathValue("vm"))
		if err != nil {
			return nil, err
		}
		return withMoRef(vm), nil
	})
	handle("DELETE /api/v1/vms/{vm}", auth.Admin, func(ctx context.Context, sess auth.Session, r *http.Request) (any, error) {
		return nil, s.store.DeleteVM(ctx, r.PathValue("vm"), r.URL.Query().Get("keepDisks") == "true")
	})
	handle("POST /api/v1/vms/{vm}/disks", auth.Write, func(ctx context.Context, sess auth.Session, r *http.Request) (any, error) {
		var req diskRequest
		if err := readJSON(r, &req); err != nil {
			return nil, err
		}
		return s.store.AddDisk(ctx, r.PathValue("vm"), req.Key, req.spec())
	})
	handle("POST /api/v1/vms/{vm}/attach", auth.Write, func(ctx context.Context, sess auth.Session, r *http.Request) (any, error) {
		var req struct{ Key, Disk string }
		if err := readJSON(r, &req); err != nil {
			return nil, err
		}
		if err := s.store.Attach(r.PathValue("vm"), req.Key, req.Disk); err != nil {
			return nil, err
		}
		return s.store.VM(r.PathValue("vm"))
	})
	handle("POST /api/v1/vms/{vm}/detach", auth.Admin, func(ctx context.Context, sess auth.Session, r *http.Request) (any, error) {
		var req struct{ Key string }
		if err := readJSON(r, &req); err != nil {
			return nil, err
		}
		name, err := s.store.Detach(r.PathValue("vm"), req.Key)
		if err != nil {
			return nil, err
		}
		return map[string]string{"disk": name}, nil
	})
	handle("GET /api/v1/vms/{vm}/snapshots", auth.Read, func(ctx context.Context, sess auth.Session, r *http.Request) (any, error) {
		in, err := s.store.VM(r.PathValue("vm"))
		return in.Snapshots, err
	})
	handle("POST /api/v1/vms/{vm}/snapshots", auth.Snapshot, func(ctx context.Context, sess auth.Session, r *http.Request) (any, error) {
		spec, err := snapshotSpec(r, sess)
		if err != nil {
			return nil, err
		}
		in, err := s.store.SnapshotVM(ctx, r.PathValue("vm"), spec)
		if err == nil {
			s.metrics.snapCreated.Add(1)
		}
		return in, err
	})
	handle("DELETE /api/v1/vms/{vm}/snapshots/{id}", auth.Snapshot, func(ctx context.Context, sess auth.Session, r *http.Request) (any, error) {
		err := s.store.RemoveVMSnapshot(ctx, r.PathValue("vm"), r.PathValue("id"))
		if err == nil {
			s.metrics.snapRemoved.Add(1)
		}
		return nil, err
	})
	handle("POST /api/v1/vms/{vm}/snapshots/{id}/revert", auth.Write, func(ctx context.Context, sess auth.Session, r *http.Request) (any, error) {
		if err := s.store.RevertVM(ctx, r.PathValue("vm"), r.PathValue("id")); err != nil {
			return nil, err
		}
		s.metrics.snapReverted.Add(1)
		return s.store.VM(r.PathValue("vm"))
	})
	handle("POST /api/v1/vms/{vm}/access", auth.Snapshot, func(ctx context.Context, sess auth.Session, r *http.Request) (any, error) {
		var req struct{ Reason string }
		if err := readJSON(r, &req); err != nil {
			return nil, err
		}
		ds, err := s.vmDisks(r.PathValue("vm"))
		if err != nil {
			return nil, err
		}
		return s.store.PrepareForAccess(ds, sess.ID, sess.User, req.Reason)
	})
	handle("POST /api/v1/vms/{vm}/relocate", auth.Admin, func(ctx context.Context, sess auth.Session, r *http.Request) (any, error) {
		var req struct{ Datastore string }
		if err := readJSON(r, &req); err != nil {
			return nil, err
		}
		ds, err := s.vmDisks(r.PathValue("vm"))
		if err != nil {
			return nil, err
		}
		for _, d := range ds {
			if err := d.Relocate(ctx, req.Datastore); err != nil {
				return nil, err
			}
		}
		return s.store.VM(r.PathValue("vm"))
	})

	// Disks.
	handle("GET /api/v1/disks", auth.Read, func(ctx context.Context, sess auth.Session, r *http.Request) (any, error) {
		return s.disksByPath(r), nil
	})
	handle("POST /api/v1/disks", auth.Write, func(ctx context.Context, sess auth.Session, r *http.Request) (any, error) {
		var req diskRequest
		if err := readJSON(r, &req); err != nil {
			return nil, err
		}
		return s.store.CreateDisk(ctx, req.spec())
	})
	handle("GET /api/v1/disks/{disk}", auth.Read, s.onDisk(func(ctx context.Context, d *datastore.Disk, sess auth.Session, r *http.Request) (any, error) {
		return withPath(d.Info()), nil
	}))
	handle("DELETE /api/v1/disks/{disk}", auth.Admin, func(ctx context.Context, sess auth.Session, r *http.Request) (any, error) {
		return nil, s.store.DeleteDisk(ctx, r.PathValue("disk"))
	})
	handle("PATCH /api/v1/disks/{disk}", auth.Snapshot, s.onDisk(func(ctx context.Context, d *datastore.Disk, sess auth.Session, r *http.Request) (any, error) {
		var req struct {
			CBT      *bool  `json:"cbt"`
			Capacity *int64 `json:"capacity"`
		}
		if err := readJSON(r, &req); err != nil {
			return nil, err
		}
		if req.Capacity != nil {
			if !sess.Can(auth.Write) {
				return nil, disk.Errorf(disk.ErrPermission, "server: growing a disk needs the write privilege")
			}
			if err := d.Grow(ctx, *req.Capacity); err != nil {
				return nil, err
			}
		}
		if req.CBT != nil {
			if err := d.SetCBT(*req.CBT); err != nil {
				return nil, err
			}
		}
		return d.Info(), nil
	}))
	handle("GET /api/v1/disks/{disk}/snapshots", auth.Read, s.onDisk(func(ctx context.Context, d *datastore.Disk, sess auth.Session, r *http.Request) (any, error) {
		return d.Snapshots(), nil
	}))
	handle("POST /api/v1/disks/{disk}/snapshots", auth.Snapshot, s.onDisk(func(ctx context.Context, d *datastore.Disk, sess auth.Session, r *http.Request) (any, error) {
		spec, err := snapshotSpec(r, sess)
		if err != nil {
			return nil, err
		}
		in, err := d.Snapshot(ctx, spec)
		if err == nil {
			s.metrics.snapCreated.Add(1)
		}
		return in, err
	}))
	handle("DELETE /api/v1/disks/{disk}/snapshots/{id}", auth.Snapshot, s.onDisk(func(ctx context.Context, d *datastore.Disk, sess auth.Session, r *http.Request) (any, error) {
		if vm := d.Info().VM; vm != "" {
			return nil, disk.Errorf(disk.ErrInvalid, "server: disk %s belongs to VM %s; remove the VM's snapshot", d.Name(), vm)
		}
		err := d.RemoveSnapshot(ctx, r.PathValue("id"))
		if err == nil {
			s.metrics.snapRemoved.Add(1)
		}
		return nil, err
	}))
	handle("POST /api/v1/disks/{disk}/snapshots/{id}/revert", auth.Write, s.onDisk(func(ctx context.Context, d *datastore.Disk, sess auth.Session, r *http.Request) (any, error) {
		if vm := d.Info().VM; vm != "" {
			return nil, disk.Errorf(disk.ErrInvalid, "server: disk %s belongs to VM %s; revert the VM", d.Name(), vm)
		}
		if err := d.Revert(ctx, r.PathValue("id")); err != nil {
			return nil, err
		}
		s.metrics.snapReverted.Add(1)
		return d.Info(), nil
	}))
	handle("GET /api/v1/disks/{disk}/changes", auth.Read, s.onDisk(s.changes))
	handle("GET /api/v1/disks/{disk}/allocated", auth.Read, s.onDisk(func(ctx context.Context, d *datastore.Disk, sess auth.Session, r *http.Request) (any, error) {
		q := r.URL.Query()
		start, err1 := intParam(q, "start", 0)
		length, err2 := intParam(q, "length", -1)
		chunk, err3 := intParam(q, "chunk", 64<<10)
		if err := errors.Join(err1, err2, err3); err != nil {
			return nil, err
		}
		if length < 0 {
			length = (d.Info().Capacity - start + chunk - 1) / chunk * chunk
		}
		areas, err := d.Allocated(ctx, q.Get("snapshot"), start, length, chunk)
		return map[string]any{"start": start, "length": length, "chunk": chunk, "areas": areas}, err
	}))
	handle("POST /api/v1/disks/{disk}/access", auth.Snapshot, s.onDisk(func(ctx context.Context, d *datastore.Disk, sess auth.Session, r *http.Request) (any, error) {
		var req struct{ Reason string }
		if err := readJSON(r, &req); err != nil {
			return nil, err
		}
		return s.store.PrepareForAccess([]*datastore.Disk{d}, sess.ID, sess.User, req.Reason)
	}))
	handle("POST /api/v1/disks/{disk}/relocate", auth.Admin, s.onDisk(func(ctx context.Context, d *datastore.Disk, sess auth.Session, r *http.Request) (any, error) {
		var req struct{ Datastore string }
		if err := readJSON(r, &req); err != nil {
			return nil, err
		}
		if err := d.Relocate(ctx, req.Datastore); err != nil {
			return nil, err
		}
		return d.Info(), nil
	}))
	handle("GET /api/v1/disks/{disk}/metadata", auth.Read, s.onDisk(func(ctx context.Context, d *datastore.Disk, sess auth.Session, r *http.Request) (any, error) {
		return d.Metadata(ctx, r.URL.Query().Get("snapshot"))
	}))
	handle("PUT /api/v1/disks/{disk}/metadata/{key}", auth.Write, s.onDisk(func(ctx context.Context, d *datastore.Disk, sess auth.Session, r *http.Request) (any, error) {
		var req struct{ Value string }
		if err := readJSON(r, &req); err != nil {
			return nil, err
		}
		return nil, d.SetMetadata(r.PathValue("key"), req.Value)
	}))
	handle("POST /api/v1/disks/{disk}/direct", auth.Snapshot, s.onDisk(func(ctx context.Context, d *datastore.Disk, sess auth.Session, r *http.Request) (any, error) {
		var req struct{ Snapshot, Mode string }
		if err := readJSON(r, &req); err != nil {
			return nil, err
		}
		write := req.Mode == "rw"
		if write && !sess.Can(auth.Write) {
			return nil, disk.Errorf(disk.ErrPermission, "server: a direct restore needs the write privilege")
		}
		if req.Mode != "" && req.Mode != "ro" && !write {
			return nil, disk.Errorf(disk.ErrInvalid, "server: mode %q: want ro or rw", req.Mode)
		}
		return d.OpenDirect(ctx, req.Snapshot, write, sess.ID)
	}))
	handle("DELETE /api/v1/direct/{lease}", auth.Read, func(ctx context.Context, sess auth.Session, r *http.Request) (any, error) {
		id := r.PathValue("lease")
		for _, in := range s.store.Disks() {
			for _, l := range in.Direct {
				if l.ID != id {
					continue
				}
				if l.Holder != sess.ID && !sess.Can(auth.ManageAccess) {
					return nil, disk.Errorf(disk.ErrPermission, "server: lease %s belongs to another session", id)
				}
				d, err := s.store.Disk(in.Name)
				if err != nil {
					return nil, err
				}
				return nil, d.EndDirect(ctx, id)
			}
		}
		return nil, disk.Errorf(disk.ErrNotFound, "server: no direct lease %s", id)
	})
	handle("DELETE /api/v1/access/{lease}", auth.Read, func(ctx context.Context, sess auth.Session, r *http.Request) (any, error) {
		return nil, s.endAccess(sess, r.PathValue("lease"))
	})

	// Tickets and cleanup.
	handle("POST /api/v1/tickets", auth.Read, s.issueTicket)
	handle("GET /api/v1/tickets", auth.Read, func(ctx context.Context, sess auth.Session, r *http.Request) (any, error) {
		return nonNil(s.auth.Tickets(sess.ID)), nil
	})
	handle("DELETE /api/v1/tickets/{id}", auth.Read, func(ctx context.Context, sess auth.Session, r *http.Request) (any, error) {
		id := r.PathValue("id")
		if !sess.Can(auth.ManageAccess) && !slices.ContainsFunc(s.auth.Tickets(sess.ID), func(g auth.Grant) bool { return g.ID == id }) {
			return nil, disk.Errorf(disk.ErrNotFound, "server: no ticket %s in this session", id)
		}
		return nil, s.auth.Revoke(id)
	})
	handle("POST /api/v1/cleanup", auth.Read, s.cleanup)
	return rs
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

// diskRequest is the body that creates a disk.
type diskRequest hostclient.DiskRequest

func (r diskRequest) spec() datastore.DiskSpec {
	return datastore.DiskSpec{Name: r.Name, Capacity: r.Capacity, Type: vmdk.Subformat(r.Type), Adapter: r.Adapter, CBT: r.CBT, CBTBlockSize: r.CBTBlockSize}
}

func snapshotSpec(r *http.Request, sess auth.Session) (datastore.SnapshotSpec, error) {
	var req struct {
		Name, Description string
		Temporary         bool
	}
	if err := readJSON(r, &req); err != nil {
		return datastore.SnapshotSpec{}, err
	}
	spec := datastore.SnapshotSpec{Name: req.Name, Description: req.Description}
	if req.Temporary {
		spec.Owner = sess.ID
	}
	return spec, nil
}

func intParam(q url.Values, key string, def int64) (int64, error) {
	v := q.Get(key)
	if v == "" {
		return def, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return 0, disk.Errorf(disk.ErrInvalid, "server: %s=%q is not an integer", key, v)
	}
	return n, nil
}

func (s *Server) onDisk(h func(ctx context.Context, d *datastore.Disk, sess auth.Session, r *http.Request) (any, error)) call {
	return func(ctx context.Context, sess auth.Session, r *http.Request) (any, error) {
		d, err := s.store.Disk(r.PathValue("disk"))
		if err != nil {
			return nil, err
		}
		return h(ctx, d, sess, r)
	}
}

func (s *Server) vmDisks(vm string) ([]*datastore.Disk, error) {
	in, err := s.store.VM(vm)
	if err != nil {
		return nil, err
	}
	var ds []*datastore.Disk
	for _, di := range in.Disks {
		d, err := s.store.Disk(di.Name)
		if err != nil {
			return nil, err
		}
		ds = append(ds, d)
	}
	return ds, nil
}

// clientAddr is the peer's address, never X-Forwarded-For: a client sets
// that header as it likes, and would then choose its own throttle key.
func clientAddr(r *http.Request) string {
	client, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return client
}

func (s *Server) login(w http.ResponseWriter, r *http.Request) {
	var req struct{ User, Password string }
	if err := readJSON(r, &req); err != nil {
		s.writeErr(w, err)
		return
	}
	tok, sess, err := s.auth.Login(req.User, req.Password, clientAddr(r))
	if err != nil {
		s.metrics.loginFails.Add(1)
		user := req.User
		if len(user) > 64 {
			user = user[:64] + "…"
		}
		s.log.Warn("login refused", "user", user, "remote", r.RemoteAddr, "err", err)
		var te *auth.ThrottledError
		if errors.As(err, &te) {
			// 429 rather than the table's 409 for busy: the client
			// must wait, and Retry-After says how long.
			w.Header().Set("Retry-After", strconv.Itoa(te.Seconds()))
			writeJSON(w, http.StatusTooManyRequests, map[string]APIError{"error": {Code: codeName(err), Vix: disk.ErrBusy.VixError(), Message: err.Error()}})
			return
		}
		s.writeErr(w, err)
		return
	}
	s.metrics.logins.Add(1)
	s.log.Info("login", "user", sess.User, "session", sess.ID, "remote", r.RemoteAddr)
	writeJSON(w, http.StatusCreated, map[string]any{"token": tok, "session": sess})
}

// About is the body of GET /api/v1/about.
type About = hostclient.About

func (s *Server) about(ctx context.Context, sess auth.Session, r *http.Request) (any, error) {
	_, n, p := s.Addrs()
	a := About{Version: Version, Thumbprint: s.boot.Thumbprint, NBD: []string{}, PlainNBD: []string{}, Datastores: s.store.Targets()}
	for _, x := range n {
		a.NBD = append(a.NBD, x.String())
	}
	for _, x := range p {
		a.PlainNBD = append(a.PlainNBD, x.String())
	}
	return a, nil
}

func (s *Server) addUser(ctx context.Context, sess auth.Session, r *http.Request) (any, error) {
	var req struct{ Name, Role, Password string }
	if err := readJSON(r, &req); err != nil {
		return nil, err
	}
	role, err := auth.ParseRole(req.Role)
	if err != nil {
		return nil, err
	}
	generated := ""
	if req.Password == "" {
		if req.Password, err = auth.GeneratePassword(); err != nil {
			return nil, err
		}
		generated = req.Password
	}
	if err := s.users.Add(req.Name, role, req.Password); err != nil {
		return nil, err
	}
	return map[string]string{"name": req.Name, "role": string(role), "password": generated}, nil
}

func (s *Server) updateUser(ctx context.Context, sess auth.Session, r *http.Request) (any, error) {
	name := r.PathValue("name")
	var req struct{ Role, Password, CurrentPassword string }
	if err := readJSON(r, &req); err != nil {
		return nil, err
	}
	if name != sess.User || req.Role != "" {
		if !sess.Can(auth.Admin) {
			return nil, disk.Errorf(disk.ErrPermission, "server: only an admin changes roles or other users' passwords")
		}
	}
	if req.Role != "" {
		role, err := auth.ParseRole(req.Role)
		if err != nil {
			return nil, err
		}
		n, err := s.auth.SetRole(name, role)
		if err != nil {
			return nil, err
		}
		s.log.Info("role changed", "user", name, "role", string(role), "by", sess.User, "sessions_ended", n)
	}
	if req.Password != "" {
		// A user changing their own password keeps this session; an
		// admin resetting another's ends all of theirs (as does a role
		// change just made, this session included). Either way the other
		// sessions end, with their tickets and NBD connections.
		var n int
		var err error
		if name == sess.User && req.Role == "" {
			// A stolen session must not be enough to take the account:
			// the current password is asked for, through the login
			// throttle like any other password guess.
			if err := s.auth.CheckPassword(name, req.CurrentPassword, clientAddr(r)); err != nil {
				return nil, disk.Errorf(disk.ErrPermission, "server: changing your own password needs your current password: %w", err)
			}
			n, err = s.auth.ChangePassword(sess, req.Password)
		} else {
			n, err = s.auth.ResetPassword(name, req.Password)
		}
		if err != nil {
			return nil, err
		}
		s.log.Info("password changed", "user", name, "by", sess.User, "sessions_ended", n)
	}
	return nil, nil
}

func (s *Server) changes(ctx context.Context, d *datastore.Disk, sess auth.Session, r *http.Request) (any, error) {
	q := r.URL.Query()
	start, err := intParam(q, "start", 0)
	if err != nil {
		return nil, err
	}
	maxAreas, err := intParam(q, "maxAreas", 0)
	if err != nil {
		return nil, err
	}
	cid := q.Get("changeId")
	if cid == "" {
		return nil, disk.Errorf(disk.ErrInvalid, "server: changeId is required (a change ID, or * for all allocated areas)")
	}
	t := time.Now()
	ci, err := d.Changes(ctx, q.Get("snapshot"), cid, start, int(min(maxAreas, 1<<22)))
	s.metrics.cbtQueries.Add(1)
	s.metrics.cbtLatency.observe(time.Since(t))
	return ci, err
}

func (s *Server) endAccess(sess auth.Session, lease string) error {
	if !sess.Can(auth.ManageAccess) {
		own := false
		for _, in := range s.store.Disks() {
			for _, l := range in.Leases {
				own = own || (l.ID == lease && l.Holder == sess.ID)
			}
		}
		if !own {
			return disk.Errorf(disk.ErrNotFound, "server: no lease %s held by this session", lease)
		}
	}
	return s.store.EndAccess(lease)
}

// TicketRequest is the body of POST /api/v1/tickets.
type TicketRequest = hostclient.TicketRequest

// Ticket is the answer to POST /api/v1/tickets.
type Ticket = hostclient.Ticket

func (s *Server) issueTicket(ctx context.Context, sess auth.Session, r *http.Request) (any, error) {
	var req TicketRequest
	if err := readJSON(r, &req); err != nil {
		return nil, err
	}
	var d *datastore.Disk
	var err error
	if req.VM != "" {
		d, err = s.store.VMDisk(req.VM, req.Key)
	} else {
		d, err = s.store.Disk(req.Disk)
	}
	if err != nil {
		return nil, err
	}
	mode := auth.ReadOnly
	switch req.Mode {
	case "", "ro":
	case "rw":
		mode = auth.ReadWrite
		if req.Snapshot != "" {
			return nil, disk.Errorf(disk.ErrPermission, "server: snapshots are read-only")
		}
	default:
		return nil, disk.Errorf(disk.ErrInvalid, "server: mode %q: want ro or rw", req.Mode)
	}
	info := d.Info()
	size := info.Capacity
	if req.Snapshot != "" {
		i := slices.IndexFunc(info.Snapshots, func(sn datastore.SnapshotInfo) bool { return sn.ID == req.Snapshot })
		if i < 0 {
			return nil, disk.Errorf(disk.ErrNotFound, "server: disk %s has no snapshot %s", d.Name(), req.Snapshot)
		}
		size = info.Snapshots[i].Capacity
	}
	tgt := target(d.Name(), req.Snapshot)
	if req.MaxConns == 0 {
		req.MaxConns = 4 // what NBD multi-conn clients open by default
	}
	tok, g, err := s.auth.Issue(sess, tgt, mode, time.Duration(req.TTL)*time.Second, &auth.TicketOptions{MaxConns: req.MaxConns})
	if err != nil {
		return nil, err
	}
	t := Ticket{Ticket: tok, ID: g.ID, Target: tgt, Mode: mode.String(), Expires: g.Expires, Size: size, Thumbprint: s.boot.Thumbprint}
	host := hostOf(r)
	_, n, p := s.Addrs()
	switch {
	case s.cfg.NBDAdvertise != "":
		t.URI = fmt.Sprintf("nbds://%s/%s", s.cfg.NBDAdvertise, tok)
	case len(n) > 0:
		t.URI = fmt.Sprintf("nbds://%s/%s", joinHostPort(host, n[0]), tok)
	}
	switch {
	case s.cfg.PlainNBDAdvertise != "":
		t.PlainURI = fmt.Sprintf("nbd://%s/%s", s.cfg.PlainNBDAdvertise, tok)
	case len(p) > 0:
		t.PlainURI = fmt.Sprintf("nbd://%s/%s", joinHostPort(host, p[0]), tok)
	}
	s.log.Info("ticket issued", "user", sess.User, "target", tgt, "mode", mode.String(), "ticket", g.ID)
	return t, nil
}

// hostOf is the host name the client used to reach the API, so that the
// NBD URI it gets back works from where it is.
func hostOf(r *http.Request) string {
	h, _, err := net.SplitHostPort(r.Host)
	if err != nil {
		return r.Host
	}
	return h
}

func joinHostPort(host string, a net.Addr) string {
	_, port, _ := net.SplitHostPort(a.String())
	return net.JoinHostPort(host, port)
}

func (s *Server) cleanup(ctx context.Context, sess auth.Session, r *http.Request) (any, error) {
	// ?endOtherSessions=true first ends the caller's other sessions: what a
	// client restarted after a crash asks, so that the snapshots and leases
	// its dead predecessor left go now rather than at the idle timeout.
	if r.URL.Query().Get("endOtherSessions") == "true" {
		for _, x := range s.auth.Sessions() {
			if x.User == sess.User && x.ID != sess.ID {
				s.auth.End(x.ID)
			}
		}
	}
	s.auth.Cleanup()
	live := map[string]bool{}
	for _, x := range s.auth.Sessions() {
		live[x.ID] = true
	}
	// A user without manage-access cleans only what their own ended
	// sessions left: sessions are not tied to users after they end, so
	// that means nothing of other users' live sessions is touched either.
	rep, err := s.store.Cleanup(ctx, func(id string) bool { return live[id] })
	s.log.Info("cleanup", "user", sess.User, "snapshots", len(rep.Snapshots), "leases", len(rep.Leases), "stray", len(rep.Stray))
	return rep, err
}
