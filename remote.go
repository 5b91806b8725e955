package vdisk

import (
	"context"
	"errors"
	"strings"
	"sync"
	"time"

	"github.com/vdisk-project/vdisk/disk"
	"github.com/vdisk-project/vdisk/internal/hostclient"
	"github.com/vdisk-project/vdisk/nbd"
)

// remoteDisk is an NBD export of the host that survives a dropped
// connection: when the client breaks (the network, a host restart, a
// request timeout) the failed request waits for the requests in flight to
// end, the handle dials again with a new ticket, and the request is
// retried, up to Config.Retries times with backoff. A write is retried
// only after every request that was in flight with it has ended, and it
// rewrites the same bytes at the same offset, so nothing is duplicated
// out of order: concurrent overlapping writes have no order to keep, and
// a write that completed before another was issued is never replayed.
type remoteDisk struct {
	dial    func(ctx context.Context) (*nbd.Client, error)
	retries int
	timeout time.Duration

	gate sync.RWMutex // requests hold it shared; a reconnect exclusively
	cl   *nbd.Client
	gen  int // incremented by each reconnect
	size int64
	ro   bool
}

func newRemoteDisk(ctx context.Context, dial func(context.Context) (*nbd.Client, error), retries int, timeout time.Duration) (*remoteDisk, error) {
	// A busy disk (its connection limit reached) may free up: retry.
	var cl *nbd.Client
	var err error
	for try := 0; ; try++ {
		cl, err = dial(ctx)
		if err == nil {
			break
		}
		busy := disk.CodeOf(err) == disk.ErrBusy || strings.Contains(err.Error(), "limit")
		if !busy || try >= retries {
			return nil, err
		}
		if werr := hostclient.Backoff(ctx, try+1); werr != nil {
			return nil, errors.Join(err, werr)
		}
	}
	return &remoteDisk{dial: dial, retries: retries, timeout: timeout, cl: cl, size: cl.Size(), ro: cl.ReadOnly()}, nil
}

// do runs op on the current client, reconnecting and retrying when the
// connection broke under it.
func (r *remoteDisk) do(op func(cl *nbd.Client) error) error {
	var err error
	start := time.Now()
	for try := 0; ; try++ {
		r.gate.RLock()
		cl, gen := r.cl, r.gen
		if cl == nil {
			r.gate.RUnlock()
			return disk.Errorf(disk.ErrInvalid, "vdisk: handle closed")
		}
		err = op(cl)
		broken := err != nil && cl.Broken()
		r.gate.RUnlock()
		// Timeout bounds the request with its retries: a stalled host is
		// reported, not retried for ever.
		left := r.timeout - time.Since(start)
		if !broken || try >= r.retries || left <= 0 {
			return err
		}
		if rerr := r.reconnect(gen, try+1, left); rerr != nil {
			return errors.Join(err, rerr)
		}
	}
}

// reconnect replaces the client of generation gen (if no other request
// did already).
func (r *remoteDisk) reconnect(gen, try int, left time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), left)
	defer cancel()
	if err := hostclient.Backoff(ctx, try); err != nil {
		return err
	}
	r.gate.Lock()
	defer r.gate.Unlock()
	if r.cl == nil {
		return disk.Errorf(disk.ErrInvalid, "vdisk: handle closed")
	}
	if r.gen != gen {
		return nil // another request reconnected already
	}
	cl, err := r.dial(ctx)
	if err != nil {
		return err
	}
	if cl.Size() != r.size {
		cl.Close()
		return disk.Errorf(disk.ErrAccess, "vdisk: the disk changed size while reconnecting (%d to %d bytes)", r.size, cl.Size())
	}
	r.cl.Close()
	r.cl, r.gen = cl, r.gen+1
	return nil
}

func (r *remoteDisk) ReadAt(p []byte, off int64) (int, error) {
	var n int
	err := r.do(func(cl *nbd.Client) (err error) {
		n, err = cl.ReadAt(p, off)
		return err
	})
	return n, err
}

func (r *remoteDisk) WriteAt(p []byte, off int64) (int, error) {
	var n int
	err := r.do(func(cl *nbd.Client) (err error) {
		n, err = cl.WriteAt(p, off)
		return err
	})
	return n, err
}

func (r *remoteDisk) WriteZeroes(off, n int64, flags disk.ZeroFlags) error {
	return r.do(func(cl *nbd.Client) error { return cl.WriteZeroes(off, n, flags) })
}

func (r *remoteDisk) Trim(off, n int64) error {
	return r.do(func(cl *nbd.Client) error { return cl.Trim(off, n) })
}

func (r *remoteDisk) Extents(ctx context.Context, off, n int64, fn func(disk.Extent) error) error {
	// Collect first so that a retry does not call fn twice for a range.
	var ext []disk.Extent
	err := r.do(func(cl *nbd.Client) error {
		ext = ext[:0]
		return cl.Extents(ctx, off, n, func(e disk.Extent) error {
			ext = append(ext, e)
			return nil
		})
	})
	if err != nil {
		return err
	}
	for _, e := range ext {
		if err := fn(e); err != nil {
			return err
		}
	}
	return nil
}

// Flush makes the writes durable. After a reconnect the new connection's
// flush covers them too: the host's disk is shared by all connections.
func (r *remoteDisk) Flush() error {
	return r.do(func(cl *nbd.Client) error { return cl.Flush() })
}

func (r *remoteDisk) Size() int64    { return r.size }
func (r *remoteDisk) ReadOnly() bool { return r.ro }

func (r *remoteDisk) Close() error {
	r.gate.Lock()
	defer r.gate.Unlock()
	if r.cl == nil {
		return nil
	}
	err := r.cl.Close()
	r.cl = nil
	return err
}

// readAsync and writeAsync start a request on the current client. The
// returned wait retries it synchronously if the connection broke.
func (r *remoteDisk) async(p []byte, off int64, write bool) func(ctx context.Context) error {
	r.gate.RLock()
	cl := r.cl
	if cl == nil {
		r.gate.RUnlock()
		return func(context.Context) error { return disk.Errorf(disk.ErrInvalid, "vdisk: handle closed") }
	}
	var f *nbd.Future
	if write {
		f = cl.WriteAsync(p, off)
	} else {
		f = cl.ReadAsync(p, off)
	}
	r.gate.RUnlock()
	return func(ctx context.Context) error {
		ctx, cancel := context.WithTimeout(ctx, r.timeout)
		defer cancel()
		err := f.Wait(ctx)
		if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
			// Given up while the request is in flight: fence the
			// connection first, so that its late reply cannot write into
			// p once the caller has it back.
			f.Abort(disk.Errorf(disk.ErrAccess, "vdisk: request timed out after %v", r.timeout))
		}
		if err != nil && (cl.Broken() || errors.Is(err, context.DeadlineExceeded)) {
			// Retry on a fresh connection, synchronously.
			if write {
				_, err = r.WriteAt(p, off)
			} else {
				_, err = r.ReadAt(p, off)
			}
		}
		return err
	}
}
