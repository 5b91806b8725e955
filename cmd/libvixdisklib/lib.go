package main

/*
#cgo CFLAGS: -I${SRCDIR}/include
#include "shim.h"
*/
import "C"

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/cgo"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/vdisk-project/vdisk"
	"github.com/vdisk-project/vdisk/disk"
	"github.com/vdisk-project/vdisk/internal/conffile"
)

// The VDDK log levels of vixDiskLib.transport.LogLevel.
const (
	levelPanic   = 0
	levelError   = 1
	levelWarning = 2
	levelAudit   = 3
	levelInfo    = 4
	levelVerbose = 5
)

// maxConfigSize bounds the InitEx config file.
const maxConfigSize = 1 << 20

// library is the process-wide state InitEx sets and Exit releases.
type library struct {
	mu       sync.Mutex
	inited   bool
	cfg      vdisk.Config
	logLevel int
	libDir   string
	logFile  *os.File // the default log when InitEx got no callbacks
}

var lib = &library{logLevel: levelAudit, cfg: vdisk.DefaultConfig()}

// logger is the library's logger: records go to the InitEx callbacks.
var logger = slog.New(&vixHandler{})

// config returns the kit configuration of new connections.
func (l *library) config() vdisk.Config {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.cfg
}

// vixHandler is a slog.Handler that hands each record to the InitEx
// callbacks: errors and warnings to warn, the rest to log, filtered by
// vixDiskLib.transport.LogLevel. Without callbacks it writes warnings and
// errors to vixDiskLib-PID.log in tmpDirectory.
type vixHandler struct {
	attrs []slog.Attr
	group string
}

func (h *vixHandler) Enabled(_ context.Context, lv slog.Level) bool {
	lib.mu.Lock()
	n := lib.logLevel
	lib.mu.Unlock()
	switch {
	case lv >= slog.LevelError:
		return n >= levelError
	case lv >= slog.LevelWarn:
		return n >= levelWarning
	case lv >= slog.LevelInfo:
		return n >= levelAudit
	}
	return n >= levelVerbose
}

func (h *vixHandler) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	b.WriteString("VixDiskLib: ")
	b.WriteString(r.Message)
	add := func(a slog.Attr) bool {
		if a.Equal(slog.Attr{}) {
			return true
		}
		b.WriteByte(' ')
		if h.group != "" {
			b.WriteString(h.group + ".")
		}
		b.WriteString(a.Key)
		b.WriteByte('=')
		b.WriteString(strconv.Quote(a.Value.String()))
		return true
	}
	for _, a := range h.attrs {
		add(a)
	}
	r.Attrs(add)
	b.WriteByte('\n')
	level := C.int(C.VIXLIB_LOG)
	if r.Level >= slog.LevelWarn {
		level = C.VIXLIB_WARN
	}
	emit(level, b.String())
	return nil
}

func (h *vixHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &vixHandler{attrs: append(append([]slog.Attr(nil), h.attrs...), as...), group: h.group}
}

func (h *vixHandler) WithGroup(name string) slog.Handler {
	return &vixHandler{attrs: h.attrs, group: name}
}

// emit gives msg to the callback of level, or to the default log file.
func emit(level C.int, msg string) {
	cs := C.CString(msg)
	done := C.vixlib_log(level, cs) != 0
	C.free(unsafePointer(cs))
	if done || level == C.VIXLIB_LOG {
		return
	}
	lib.mu.Lock()
	defer lib.mu.Unlock()
	if !lib.inited {
		return // after Exit (or before InitEx) the library is silent
	}
	if lib.logFile == nil {
		dir := lib.cfg.TempDir
		f, err := os.OpenFile(filepath.Join(dir, fmt.Sprintf("vixDiskLib-%d.log", os.Getpid())),
			os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
		if err != nil {
			return
		}
		lib.logFile = f
	}
	fmt.Fprintf(lib.logFile, "%s %s", time.Now().UTC().Format(time.RFC3339Nano), msg)
}

// initLib is InitEx: callbacks, libDir and the config file.
func initLib(major, minor uint32, log, warn, panicFn *C.VixDiskLibGenericLogFunc, libDir, configFile string) error {
	cfg := vdisk.DefaultConfig()
	level := levelAudit
	var unknown []string
	if configFile != "" {
		c, n, u, err := parseConfig(configFile)
		if err != nil {
			return err
		}
		cfg, level, unknown = c, n, u
	}
	C.vixlib_set_loggers(log, warn, panicFn)
	startProfile()
	lib.mu.Lock()
	lib.inited = true
	lib.cfg = cfg
	lib.logLevel = level
	lib.libDir = libDir
	lib.mu.Unlock()
	lg := logger
	lg.Info("initialised", "version", fmt.Sprintf("%d.%d", major, minor), "lib_dir", libDir, "config", configFile,
		"transports", vdisk.ListTransportModes())
	if libDir != "" {
		if st, err := os.Stat(libDir); err != nil || !st.IsDir() {
			lg.Warn("libDir is not a directory; vdisk needs no plugins from it", "lib_dir", libDir)
		}
	}
	for _, k := range unknown {
		lg.Debug("config key ignored", "key", k)
	}
	return nil
}

// parseConfig reads VDDK's config file: the vixDiskLib.* keys vdisk has a
// use for, and vdisk's own kit keys (vdisk.timeout and the like); every
// other key is ignored, as VDDK ignores keys it does not know. Keys match
// without regard to case.
func parseConfig(path string) (cfg vdisk.Config, level int, unknown []string, err error) {
	cfg, level = vdisk.DefaultConfig(), levelAudit
	f, err := os.Open(path)
	if err != nil {
		return cfg, level, nil, disk.Wrap(err, "vixdisklib: read config", path, -1)
	}
	defer f.Close()
	b := make([]byte, maxConfigSize+1)
	n, _ := f.Read(b)
	for n < len(b) {
		m, rerr := f.Read(b[n:])
		n += m
		if rerr != nil || m == 0 {
			break
		}
	}
	if n > maxConfigSize {
		return cfg, level, nil, disk.Errorf(disk.ErrInvalid, "vixdisklib: config %s is larger than %d bytes", path, maxConfigSize)
	}
	pairs, err := conffile.Parse(b[:n], path)
	if err != nil {
		return cfg, level, nil, err
	}
	var timeout time.Duration
	for _, p := range pairs {
		k := strings.ToLower(p.Key)
		bad := func(what string) error {
			return disk.Errorf(disk.ErrInvalid, "vixdisklib: config %s:%d: %s: %s", path, p.Line, p.Key, what)
		}
		num := func() (int, error) {
			x, err := strconv.Atoi(p.Value)
			if err != nil || x < 0 {
				return 0, bad("want a non-negative number")
			}
			return x, nil
		}
		switch k {
		case "tmpdirectory":
			cfg.TempDir = p.Value
		case "vixdisklib.transport.loglevel":
			x, err := num()
			if err != nil {
				return cfg, level, nil, err
			}
			level = min(x, 6)
		case "vixdisklib.nfc.accepttimeoutms", "vixdisklib.nfc.requesttimeoutms", "vixdisklib.nfc.readtimeoutms",
			"vixdisklib.nfc.writetimeoutms", "vixdisklib.nfc.readtimeoutsms", "vixdisklib.nfc.writetimeoutsms":
			// The kit has one bound per network call: the largest of them.
			x, err := num()
			if err != nil {
				return cfg, level, nil, err
			}
			if d := time.Duration(x) * time.Millisecond; d > timeout {
				timeout = d
			}
		case "vixdisklib.nfcaio.session.bufcount":
			// Buffers in flight per session: the kit's requests in flight
			// per NBD connection.
			x, err := num()
			if err != nil {
				return cfg, level, nil, err
			}
			if x > 0 {
				cfg.NBDInFlight = min(x*16, 1024)
			}
		case "vdisk.timeout":
			d, err := time.ParseDuration(p.Value)
			if err != nil {
				return cfg, level, nil, bad(err.Error())
			}
			timeout = d
		case "vdisk.retries", "vdisk.nbd_connections", "vdisk.nbd_in_flight", "vdisk.async_workers":
			x, err := num()
			if err != nil {
				return cfg, level, nil, err
			}
			switch k {
			case "vdisk.retries":
				cfg.Retries = x
			case "vdisk.nbd_connections":
				cfg.NBDConnections = x
			case "vdisk.nbd_in_flight":
				cfg.NBDInFlight = x
			default:
				cfg.AsyncWorkers = x
			}
		default:
			unknown = append(unknown, p.Key)
		}
	}
	if timeout > 0 {
		cfg.Timeout = timeout
	}
	return cfg, level, unknown, nil
}

// exitLib is Exit: every handle and connection still open is closed, the
// callbacks are dropped and the defaults restored.
func exitLib() {
	objs := reg.drain()
	for _, o := range objs {
		if h, ok := o.(*diskHandle); ok {
			h.close()
		}
	}
	for _, o := range objs {
		if c, ok := o.(*connection); ok {
			c.close()
		}
	}
	C.vixlib_set_loggers(nil, nil, nil)
	stopProfile()
	lib.mu.Lock()
	defer lib.mu.Unlock()
	lib.inited = false
	lib.cfg = vdisk.DefaultConfig()
	lib.logLevel = levelAudit
	lib.libDir = ""
	if lib.logFile != nil {
		lib.logFile.Close()
		lib.logFile = nil
	}
}

// registry holds the objects C holds opaque pointers to: each pointer is
// a cgo.Handle value, never a Go pointer, and a pointer not in the
// registry (freed, or garbage) is refused rather than dereferenced.
type registry struct {
	mu   sync.Mutex
	live map[cgo.Handle]any
}

var reg = &registry{live: map[cgo.Handle]any{}}

func (r *registry) add(v any) cgo.Handle {
	h := cgo.NewHandle(v)
	r.mu.Lock()
	r.live[h] = v
	r.mu.Unlock()
	return h
}

func (r *registry) get(p uintptr) (any, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	v, ok := r.live[cgo.Handle(p)]
	return v, ok
}

// remove drops p and reports whether it was live.
func (r *registry) remove(p uintptr) (any, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	h := cgo.Handle(p)
	v, ok := r.live[h]
	if ok {
		delete(r.live, h)
		h.Delete()
	}
	return v, ok
}

// drain removes and returns every live object.
func (r *registry) drain() []any {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]any, 0, len(r.live))
	for h, v := range r.live {
		out = append(out, v)
		delete(r.live, h)
		h.Delete()
	}
	return out
}
