package main

/*
#include "shim.h"
*/
import "C"

import (
	"context"
	"errors"
	"sync"
	"unsafe"

	"github.com/vdisk-project/vdisk"
	"github.com/vdisk-project/vdisk/disk"
)

// diskHandle is a VixDiskLibHandle.
type diskHandle struct {
	c     *connection
	path  string
	spec  vdisk.Spec
	flags vdisk.OpenFlags

	// mu guards h, which Shrink, Defragment and Attach replace (they
	// close the disk, change its files and open it again).
	mu sync.RWMutex
	h  *vdisk.Handle

	// pending counts asynchronous requests whose callback has not
	// returned yet; Wait and Close wait for them.
	pending inflight
	// zeroes: the disk is sparse, so writes of zeros become WriteZeroes
	// (rw.go).
	zeroes bool
	// slots bounds the asynchronous requests running at once.
	slots chan struct{}
	once  sync.Once
	err   error
}

func (h *diskHandle) remote() bool { return h.c.remote() }

// kit returns the kit handle.
func (h *diskHandle) kit() *vdisk.Handle {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return h.h
}

// reopen closes the kit handle, runs change on the closed disk's files and
// opens the disk again with spec (the same disk, or the chain it became).
// Asynchronous requests are waited for first; the caller must not start
// others meanwhile.
func (h *diskHandle) reopen(ctx context.Context, spec vdisk.Spec, change func() error) error {
	return h.reopenFlags(ctx, spec, 0, change)
}

// reopenFlags is reopen, adding flags to the handle's open flags.
func (h *diskHandle) reopenFlags(ctx context.Context, spec vdisk.Spec, add vdisk.OpenFlags, change func() error) error {
	h.pending.wait()
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := h.h.Close(); err != nil {
		return err
	}
	err := change()
	h.flags |= add
	nh, oerr := h.c.conn.Open(ctx, spec, h.flags)
	if oerr != nil {
		// The handle stays in place, closed: every call on it fails.
		return errors.Join(err, oerr)
	}
	h.h, h.spec = nh, spec
	return err
}

// close waits for the asynchronous requests and their callbacks, then
// closes the kit handle. It runs once.
func (h *diskHandle) close() error {
	h.once.Do(func() {
		h.pending.wait()
		h.err = h.kit().Close()
		h.c.mu.Lock()
		delete(h.c.handles, h)
		h.c.mu.Unlock()
	})
	return h.err
}

// sectors checks a request of n sectors at start against the disk and
// returns its byte offset and length.
func (h *diskHandle) sectors(start, n uint64) (int64, int64, error) {
	const maxSectors = 1 << 53 / disk.SectorSize
	size := uint64(h.kit().Size()) / disk.SectorSize
	if start > maxSectors || n > maxSectors || start+n > size {
		return 0, 0, disk.Errorf(disk.ErrInvalid, "vixdisklib: sectors %d+%d are past the end of %s (%d sectors): %w",
			start, n, h.path, size, errOutOfRange)
	}
	return int64(start) * disk.SectorSize, int64(n) * disk.SectorSize, nil
}

// errOutOfRange marks requests outside the disk (VIX_E_DISK_OUTOFRANGE).
var errOutOfRange = outOfRange{}

type outOfRange struct{}

func (outOfRange) Error() string { return "out of range" }

// async starts a request whose completion cb gets from a goroutine. The
// goroutine makes the kit's synchronous call and then calls cb: one
// goroutine per request, and one hand-off, where the kit's ReadAsync would
// add a goroutine of its own and a second hand-off to reach cb (the
// library's hot path: nbdkit's VDDK plugin reads with ReadAsync only).
// The synchronous calls have the same semantics: over NBD the requests of
// all goroutines are pipelined on the wire, each bounded by the request
// timeout and retried on a new connection when the old one broke. At most
// cap(h.slots) requests run at once; the caller waits for a slot.
func (h *diskHandle) async(p []byte, off int64, write bool, cb C.VixDiskLibCompletionCB, data unsafe.Pointer) {
	h.slots <- struct{}{}
	e := h.pending.start()
	go func() {
		defer h.pending.done(e)
		var err error
		if write {
			err = h.writeAt(p, off)
		} else {
			err = h.readAt(p, off)
		}
		// The slot is free before cb runs: cb may start another request.
		<-h.slots
		code := uint64(vixOK)
		if err != nil {
			code = vixCode(err, h.remote())
			record(code, err, false)
			logger.Debug("asynchronous request failed", "disk", h.path, "off", off, "len", len(p), "err", err.Error())
		}
		C.vixlib_complete(cb, data, C.VixError(code))
	}()
}

// asyncSlots is how many asynchronous requests a handle runs at once: the
// kit's bound for its own asynchronous requests on local and direct
// handles (Config.AsyncWorkers), and the wire's on NBD ones (in flight per
// connection times connections).
func asyncSlots(cfg vdisk.Config, mode string) int {
	switch mode {
	case vdisk.ModeNBD, vdisk.ModeNBDSSL:
		return max(cfg.NBDConnections*cfg.NBDInFlight, 1)
	}
	return max(cfg.AsyncWorkers, 1)
}
