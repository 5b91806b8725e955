package server

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"sync"
	"time"

	"github.com/vdisk-project/vdisk/disk"
	"github.com/vdisk-project/vdisk/internal/auth"
	"github.com/vdisk-project/vdisk/internal/datastore"
	"github.com/vdisk-project/vdisk/nbd"
)

// DirtyBitmapPrefix starts the name of the NBD meta context that publishes
// changed blocks: "qemu:dirty-bitmap:" followed by a change ID. Its status
// bit 1 marks blocks changed after that change ID (up to the snapshot the
// ticket names, or up to now), as qemu's dirty bitmaps do, so
// `nbdinfo --map=qemu:dirty-bitmap:CHANGEID` shows it.
const DirtyBitmapPrefix = "qemu:dirty-bitmap:"

// nbdConn is one NBD connection's hold on a disk.
type nbdConn struct {
	h       *datastore.Handle
	session string

	mu   sync.Mutex
	kill func() // cuts the NBD connection, once it is in transmission
}

// end cuts the connection, then closes its handle: the client sees the
// connection lost (not an error on each request in flight) and may redial
// with a new session.
func (c *nbdConn) end() {
	c.mu.Lock()
	kill := c.kill
	c.mu.Unlock()
	if kill != nil {
		kill()
	}
	c.h.Close()
}

// newNBD returns the NBD server for the TLS listeners (tc set) or the
// plain ones. Each connection's buffers are bounded by cfg.ConnMemory,
// which lookup reserves from the session's budget; connections still
// negotiating have no session yet, so the host budget holds their worst
// case (NBDMaxNegotiating of them) for the server's life.
func (s *Server) newNBD(tc *tls.Config) (*nbd.Server, error) {
	srv := nbd.NewServer(nbd.ServerOptions{
		Lookup:           s.lookup,
		TLSConfig:        tc,
		Workers:          s.cfg.NBDWorkers,
		HandshakeTimeout: s.cfg.NBDHandshakeTimeout,
		MaxNegotiating:   s.cfg.NBDMaxNegotiating,
		ConnMemory:       s.cfg.ConnMemory,
		Logger:           s.log,
	})
	if _, err := s.limiter.ReserveHostMemory(srv.NegotiationMemory()); err != nil {
		return nil, fmt.Errorf("server: buffers of NBD connections negotiating (%d at most): %w", s.cfg.NBDMaxNegotiating, err)
	}
	return srv, nil
}

// ticketID names a ticket in logs without revealing it: a prefix of its
// SHA-256. Tickets are bearer secrets and never logged.
func ticketID(ticket string) string {
	sum := sha256.Sum256([]byte(ticket))
	return hex.EncodeToString(sum[:6])
}

// lookup turns a ticket (the export name) into an export: it redeems the
// ticket, takes connection and memory slots, and opens the disk or
// snapshot. Everything is released by the export's Close.
func (s *Server) lookup(ctx context.Context, name string) (*nbd.Export, error) {
	g, relTicket, err := s.auth.Redeem(name, "")
	if err != nil {
		s.metrics.nbdRefused.Add(1)
		s.log.Info("NBD ticket refused", "ticket_sha256", ticketID(name), "err", err)
		return nil, err
	}
	var undo []func()
	fail := func(err error) (*nbd.Export, error) {
		for i := len(undo) - 1; i >= 0; i-- {
			undo[i]()
		}
		s.metrics.nbdRefused.Add(1)
		s.log.Info("NBD connection refused", "ticket_sha256", ticketID(name), "user", g.User, "target", g.Target, "err", err)
		return nil, err
	}
	undo = append(undo, relTicket)
	dn, snap, err := parseTarget(g.Target)
	if err != nil {
		return fail(err)
	}
	d, err := s.store.Disk(dn)
	if err != nil {
		return fail(err)
	}
	relConn, err := s.limiter.AcquireConn(g.SessionID, "disk/"+dn)
	if err != nil {
		return fail(err)
	}
	undo = append(undo, relConn)
	relMem, err := s.limiter.ReserveMemory(g.SessionID, s.cfg.ConnMemory)
	if err != nil {
		return fail(err)
	}
	undo = append(undo, relMem)
	var h *datastore.Handle
	if snap != "" {
		h, err = d.OpenSnapshot(ctx, snap)
	} else {
		h, err = d.OpenLive(g.Mode == auth.ReadOnly)
	}
	if err != nil {
		return fail(err)
	}
	c := &nbdConn{h: h, session: g.SessionID}
	s.mu.Lock()
	if s.conns[g.SessionID] == nil {
		s.conns[g.SessionID] = map[*nbdConn]bool{}
	}
	s.conns[g.SessionID][c] = true
	s.mu.Unlock()
	s.metrics.nbdConns.Add(1)
	var ctxs []nbd.MetaContext
	for _, cid := range d.ChangeIDs() {
		ctxs = append(ctxs, dirtyContext{d: d, snapshot: snap, since: cid})
	}
	return &nbd.Export{
		Name:        g.Target,
		Description: g.Target + " (" + g.Mode.String() + ")",
		Disk:        &meteredDisk{Handle: h, m: s.metrics},
		ReadOnly:    h.ReadOnly(),
		Contexts:    ctxs,
		Attach: func(kill func()) {
			c.mu.Lock()
			c.kill = kill
			c.mu.Unlock()
		},
		Close: func() {
			h.Close()
			s.mu.Lock()
			delete(s.conns[g.SessionID], c)
			if len(s.conns[g.SessionID]) == 0 {
				delete(s.conns, g.SessionID)
			}
			s.mu.Unlock()
			s.metrics.nbdConns.Add(-1)
			relMem()
			relConn()
			relTicket()
		},
	}, nil
}

// dirtyContext publishes the changes after a change ID as an NBD meta
// context.
type dirtyContext struct {
	d        *datastore.Disk
	snapshot string
	since    string
}

func (c dirtyContext) Name() string { return DirtyBitmapPrefix + c.since }

// Extents reports consecutive extents from off: status 1 for changed
// blocks, 0 for the others. It streams: adjacent changes merge into one
// pending extent, and nothing else is held, so a reply's memory stays
// within what the NBD server reserved for it.
func (c dirtyContext) Extents(ctx context.Context, off, n int64, fn func(disk.Extent) error) error {
	pos, end := off, off+n
	var cur disk.Extent // changed, not yet reported
	emit := func() error {
		if cur.Len == 0 {
			return nil
		}
		if cur.Off > pos {
			if err := fn(disk.Extent{Off: pos, Len: cur.Off - pos}); err != nil {
				return err
			}
		}
		pos = cur.End()
		return fn(disk.Extent{Off: cur.Off, Len: cur.Len, Flags: 1})
	}
	err := c.d.ChangedRanges(ctx, c.snapshot, c.since, off, n, func(e disk.Extent) error {
		if cur.Len > 0 && cur.End() == e.Off {
			cur.Len += e.Len
			return nil
		}
		if err := emit(); err != nil {
			return err
		}
		cur = disk.Extent{Off: e.Off, Len: e.Len} // the bitmap says changed or not, whatever the data
		return nil
	})
	if err == nil {
		err = emit()
	}
	if err != nil {
		return err
	}
	if pos < end {
		return fn(disk.Extent{Off: pos, Len: end - pos})
	}
	return nil
}

// meteredDisk counts bytes and latencies of NBD I/O. It passes every
// optional power of the handle through and allocates nothing.
type meteredDisk struct {
	*datastore.Handle
	m *metrics
}

func (d *meteredDisk) ReadAt(p []byte, off int64) (int, error) {
	t := time.Now()
	n, err := d.Handle.ReadAt(p, off)
	d.m.nbdRead.Add(int64(n))
	d.m.readLatency.observe(time.Since(t))
	return n, err
}

func (d *meteredDisk) WriteAt(p []byte, off int64) (int, error) {
	t := time.Now()
	n, err := d.Handle.WriteAt(p, off)
	d.m.nbdWritten.Add(int64(n))
	d.m.writeLatency.observe(time.Since(t))
	return n, err
}
