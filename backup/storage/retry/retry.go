// Package retry wraps a Storage so that failures a retry may cure are
// retried with exponential backoff.
//
// Only errors marked with [storage.Transient] are retried (a reset
// connection, a timeout, an S3 503 SlowDown); everything else (a missing
// object, refused credentials, a full disk, a canceled context) returns at
// once. Every call is idempotent under the Storage contract, so retrying
// one is safe: a Put of the same data under the same name, a Delete of a
// name already gone. A List that fails part way is restarted and skips the
// names it has delivered already, so fn sees each name once.
//
// # Metrics
//
// [Storage.Retries] counts the retries made so far; [Options.OnRetry] is
// called before each one, for logs.
package retry

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync/atomic"
	"time"

	"github.com/vdisk-project/vdisk/backup/storage"
)

// Options tune the retries. The zero value gives the defaults.
type Options struct {
	// Attempts is the number of tries per call, the first included;
	// default 6. 1 disables retries.
	Attempts int
	// Base is the wait before the first retry; each further retry waits
	// twice as long, up to Max. Defaults 200ms and 10s: six attempts
	// wait at most 6.2s in all.
	Base, Max time.Duration
	// Jitter is the fraction, between 0 and 1, of each wait that is
	// random, so that many clients do not retry in step; default 0.5
	// (a wait of d is between d/2 and d). A negative Jitter means none.
	Jitter float64
	// OnRetry, if set, is called before each retry with the operation
	// ("put", "get", "read", "stat", "list", "delete"), the object name
	// (the prefix for list), the number of the attempt that failed
	// (from 1), its error and the wait before the next. It must not
	// block; it may be called from several goroutines at once.
	OnRetry func(op, name string, attempt int, err error, wait time.Duration)
}

// EnsureDefaults fills in the zero fields.
func (o *Options) EnsureDefaults() {
	if o.Attempts <= 0 {
		o.Attempts = 6
	}
	if o.Base <= 0 {
		o.Base = 200 * time.Millisecond
	}
	if o.Max <= 0 {
		o.Max = 10 * time.Second
	}
	if o.Max < o.Base {
		o.Max = o.Base
	}
	switch {
	case o.Jitter == 0:
		o.Jitter = 0.5
	case o.Jitter < 0:
		o.Jitter = 0
	case o.Jitter > 1:
		o.Jitter = 1
	}
}

// Storage retries the transient failures of the Storage it wraps. It is
// safe for concurrent use.
type Storage struct {
	st      storage.Storage
	opts    Options
	retries atomic.Int64
}

var _ storage.Storage = (*Storage)(nil)

// New wraps st.
func New(st storage.Storage, opts Options) *Storage {
	opts.EnsureDefaults()
	return &Storage{st: st, opts: opts}
}

// Unwrap returns the wrapped Storage.
func (s *Storage) Unwrap() storage.Storage { return s.st }

// Retries returns the number of retries made so far, over all calls.
func (s *Storage) Retries() int64 { return s.retries.Load() }

// wait returns the backoff before retry number n (from 1).
func (s *Storage) wait(n int) time.Duration {
	d := s.opts.Base
	for i := 1; i < n && d < s.opts.Max; i++ {
		d *= 2
	}
	d = min(d, s.opts.Max)
	if j := s.opts.Jitter; j > 0 {
		d -= time.Duration(rand.Float64() * j * float64(d))
	}
	return d
}

// do runs f until it succeeds, fails for good, runs out of attempts or ctx
// is done.
func (s *Storage) do(ctx context.Context, op, name string, f func() error) error {
	for attempt := 1; ; attempt++ {
		err := f()
		if err == nil || !storage.IsTransient(err) || ctx.Err() != nil {
			return err
		}
		if attempt >= s.opts.Attempts {
			return fmt.Errorf("retry: %s %s: gave up after %d attempts: %w", op, name, attempt, err)
		}
		d := s.wait(attempt)
		if s.opts.OnRetry != nil {
			s.opts.OnRetry(op, name, attempt, err, d)
		}
		s.retries.Add(1)
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("retry: %s %s: %w while waiting to retry after: %w", op, name, ctx.Err(), err)
		}
	}
}

// Put implements [storage.Storage].
func (s *Storage) Put(ctx context.Context, name string, data []byte) error {
	return s.do(ctx, "put", name, func() error { return s.st.Put(ctx, name, data) })
}

// ReadAt implements [storage.Storage]. A read that fails transiently is
// repeated whole.
func (s *Storage) ReadAt(ctx context.Context, name string, p []byte, off int64) (int, error) {
	var n int
	err := s.do(ctx, "read", name, func() error {
		var err error
		n, err = s.st.ReadAt(ctx, name, p, off)
		return err
	})
	return n, err
}

// Get implements [storage.Storage].
func (s *Storage) Get(ctx context.Context, name string, max int64) ([]byte, error) {
	var b []byte
	err := s.do(ctx, "get", name, func() error {
		var err error
		b, err = s.st.Get(ctx, name, max)
		return err
	})
	return b, err
}

// Stat implements [storage.Storage].
func (s *Storage) Stat(ctx context.Context, name string) (storage.Info, error) {
	var in storage.Info
	err := s.do(ctx, "stat", name, func() error {
		var err error
		in, err = s.st.Stat(ctx, name)
		return err
	})
	return in, err
}

// fnError carries an error of List's fn through the retry loop, which
// never retries it.
type fnError struct{ err error }

func (e *fnError) Error() string { return e.err.Error() }

// List implements [storage.Storage]. After a transient failure the
// listing starts again and skips the names already passed to fn; the
// memory for that grows with the names listed.
func (s *Storage) List(ctx context.Context, prefix string, fn func(storage.Info) error) error {
	var seen map[string]struct{}
	err := s.do(ctx, "list", prefix, func() error {
		first := seen == nil
		if first {
			seen = map[string]struct{}{}
		}
		return s.st.List(ctx, prefix, func(in storage.Info) error {
			if !first {
				if _, ok := seen[in.Name]; ok {
					return nil
				}
			}
			seen[in.Name] = struct{}{}
			if err := fn(in); err != nil {
				return &fnError{err}
			}
			return nil
		})
	})
	var fe *fnError
	if errors.As(err, &fe) {
		return fe.err
	}
	return err
}

// Delete implements [storage.Storage].
func (s *Storage) Delete(ctx context.Context, name string) error {
	return s.do(ctx, "delete", name, func() error { return s.st.Delete(ctx, name) })
}

// Close implements [storage.Storage]; it closes the wrapped Storage.
func (s *Storage) Close() error { return s.st.Close() }
