package cli

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"time"

	"github.com/vdisk-project/vdisk/disk"
	"github.com/vdisk-project/vdisk/format"
	"github.com/vdisk-project/vdisk/nbd"
)

type exportOptions struct {
	forceShare bool // -U
	readOnly   bool
	overlay    string
	bind       string
	socket     string
	tlsCert    string
	tlsKey     string
	shared     int
	name       string
	format     string
	// handshakeTimeout, maxNegotiating and connMemory are the server's
	// negotiation deadline, cap on connections negotiating, and buffer
	// bytes per connection; zero takes the nbd defaults.
	handshakeTimeout time.Duration
	maxNegotiating   int
	connMemory       string
}

func cmdExport(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var o exportOptions
	fs := flag.NewFlagSet("export", flag.ContinueOnError)
	fs.BoolVar(&o.readOnly, "read-only", false, "serve the image read-only")
	fs.StringVar(&o.overlay, "overlay", "", "serve the image writable, writes going to this sparse VMDK (made if missing) and the image left untouched: instant restore of a backup point")
	fs.StringVar(&o.bind, "bind", "127.0.0.1:10809", "TCP address to listen on (host:port, [v6addr]:port)")
	fs.StringVar(&o.socket, "socket", "", "Unix socket to listen on instead of TCP")
	fs.StringVar(&o.tlsCert, "tls-cert", "", "server certificate (PEM); with it TLS is required")
	fs.StringVar(&o.tlsKey, "tls-key", "", "server private key (PEM)")
	fs.IntVar(&o.shared, "shared", 16, "maximum connections in transmission at once (connections still negotiating are not counted)")
	fs.DurationVar(&o.handshakeTimeout, "handshake-timeout", nbd.DefaultHandshakeTimeout, "time a connection has to negotiate (TLS handshake and options) before it is closed")
	fs.IntVar(&o.maxNegotiating, "max-negotiating", nbd.DefaultMaxNegotiating, "connections negotiating at once; beyond it new ones are closed, or take the place of one negotiating for a tenth of --handshake-timeout (-1: no limit)")
	fs.StringVar(&o.connMemory, "conn-memory", fmt.Sprintf("%dM", nbd.DefaultConnMemory>>20), "buffer memory per connection (requests in flight wait within it; the advertised maximum request shrinks to fit)")
	fs.StringVar(&o.name, "name", "", "export name (default: the empty name)")
	fs.StringVar(&o.format, "f", "", "image format (default: probe)")
	forceShareFlags(fs, &o.forceShare)
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("export takes one image")
	}
	return runExport(ctx, o, pos[0], stderr, nil)
}

// runExport serves the image until ctx is done. ready, when set, receives
// the listener's address once serving.
func runExport(ctx context.Context, o exportOptions, name string, stderr io.Writer, ready chan<- string) error {
	if (o.tlsCert == "") != (o.tlsKey == "") {
		return usagef("--tls-cert and --tls-key go together")
	}
	var connMem int64
	if o.connMemory != "" {
		var err error
		if connMem, err = parseSize(o.connMemory); err != nil {
			return usagef("--conn-memory: %v", err)
		}
		if connMem < nbd.MinConnMemory {
			return usagef("--conn-memory %s: at least %d bytes (1M)", o.connMemory, nbd.MinConnMemory)
		}
	}
	if o.handshakeTimeout < 0 {
		return usagef("--handshake-timeout must not be negative")
	}
	var d disk.Disk
	if o.overlay != "" {
		if o.readOnly {
			return usagef("--overlay serves writes; it cannot be --read-only")
		}
		base, _, err := openImage(ctx, name, o.format, format.OpenOptions{ReadOnly: true, ForceShare: o.forceShare})
		if err != nil {
			return err
		}
		if d, err = openOverlay(ctx, o.overlay, base, overlayBaseName(name)); err != nil {
			base.Close()
			return err
		}
	} else {
		var err error
		if d, _, err = openImage(ctx, name, o.format, format.OpenOptions{ReadOnly: o.readOnly, ForceShare: o.forceShare}); err != nil {
			return err
		}
	}
	exp := &nbd.Export{Name: o.name, Description: name, Disk: d, ReadOnly: o.readOnly || disk.IsReadOnly(d)}
	so := nbd.ServerOptions{
		Lookup: func(_ context.Context, n string) (*nbd.Export, error) {
			if n != exp.Name {
				return nil, disk.Errorf(disk.ErrNotFound, "no export %q", n)
			}
			return exp, nil
		},
		List:             func(context.Context) []*nbd.Export { return []*nbd.Export{exp} },
		MaxConnections:   o.shared,
		MaxNegotiating:   o.maxNegotiating,
		HandshakeTimeout: o.handshakeTimeout,
		ConnMemory:       connMem,
	}
	if o.tlsCert != "" {
		cert, err := tls.LoadX509KeyPair(o.tlsCert, o.tlsKey)
		if err != nil {
			d.Close()
			return disk.Errorf(disk.ErrInvalid, "load TLS certificate: %w", err)
		}
		so.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12,
			// Bulk data: full-size records from the first byte.
			DynamicRecordSizingDisabled: true}
	}
	var l net.Listener
	var err error
	uri := ""
	if o.socket != "" {
		os.Remove(o.socket)
		l, err = net.Listen("unix", o.socket)
		uri = "nbd+unix:///" + o.name + "?socket=" + o.socket
	} else {
		l, err = net.Listen("tcp", o.bind)
		if err == nil {
			uri = "nbd://" + l.Addr().String() + "/" + o.name
		}
	}
	if err != nil {
		d.Close()
		return disk.Errorf(disk.ErrAccess, "listen: %w", err)
	}
	if so.TLSConfig != nil {
		uri = "nbds" + uri[3:]
	}
	srv := nbd.NewServer(so)
	fmt.Fprintf(stderr, "vdisk: serving %s as %s (%s)\n", name, uri, map[bool]string{true: "read-only", false: "read-write"}[exp.ReadOnly])
	if ready != nil {
		ready <- l.Addr().String()
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ctx, l) }()
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	serr := srv.Shutdown(sctx)
	if o.socket != "" {
		os.Remove(o.socket)
	}
	if cerr := d.Close(); err == nil || errors.Is(err, nbd.ErrServerClosed) {
		err = cerr
	}
	if err == nil {
		err = serr
	}
	return err
}
