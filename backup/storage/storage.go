// Package storage is where a backup repository's objects live: the
// interface the backup engine needs from a local directory, an
// S3-compatible store or memory. Implementations are in the sub-packages
// local, s3 and mem, one package each; cross-cutting behaviour (retry with
// backoff, rate limits, fault injection) wraps a Storage in another.
//
// A repository's objects are immutable: written once under a name, read
// many times, deleted only by prune. Storage therefore needs no locks and
// no overwrite semantics beyond "the last complete Put wins".
package storage

import (
	"context"
	"errors"
	"time"
)

// Storage holds named objects.
//
// Names are slash-separated paths of ASCII letters, digits, '-', '_' and
// '.', with no empty, "." or ".." elements and at most 256 bytes
// (ValidName); an invalid name gives an error matching disk.ErrInvalid
// without
// touching the store.
//
// Errors use package disk's codes: a missing object matches
// disk.ErrNotFound (and fs.ErrNotExist); refused credentials match
// disk.ErrPermission; a network, I/O or server failure matches
// disk.ErrAccess. Implementations mark failures a retry may cure with
// Transient. Every method honours ctx.
//
// A Storage is safe for concurrent use by multiple goroutines.
type Storage interface {
	// Put stores data under name. The object becomes visible whole or
	// not at all: a reader never sees part of it, also after a crash in
	// the middle of Put (a local directory writes a temporary file,
	// syncs it, renames it and syncs the directory). When Put returns
	// nil the object is durable. Put does not retain data.
	Put(ctx context.Context, name string, data []byte) error

	// ReadAt reads len(p) bytes of name starting at off into p. A read
	// reaching past the end of the object returns the bytes there are
	// and an error wrapping io.ErrUnexpectedEOF.
	ReadAt(ctx context.Context, name string, p []byte, off int64) (int, error)

	// Get returns the whole object. Objects larger than max bytes are
	// refused with an error matching disk.ErrOutOfMemory without reading
	// them, so that a hostile store cannot size the caller's memory.
	Get(ctx context.Context, name string, max int64) ([]byte, error)

	// Stat returns an object's size and modification time.
	Stat(ctx context.Context, name string) (Info, error)

	// List calls fn for every object whose name starts with prefix, in
	// no particular order. An error from fn stops the listing and is
	// returned.
	List(ctx context.Context, prefix string, fn func(Info) error) error

	// Delete removes name. Deleting a missing object is not an error.
	Delete(ctx context.Context, name string) error

	// Close releases the storage's resources.
	Close() error
}

// Info describes one stored object.
type Info struct {
	Name    string
	Size    int64
	ModTime time.Time
}

// MaxNameLen is the longest object name a Storage accepts.
const MaxNameLen = 256

// ValidName reports whether name is a valid object name (see Storage).
func ValidName(name string) bool {
	if name == "" || len(name) > MaxNameLen {
		return false
	}
	elem := 0
	for i := 0; i <= len(name); i++ {
		if i == len(name) || name[i] == '/' {
			e := name[elem:i]
			if e == "" || e == "." || e == ".." {
				return false
			}
			elem = i + 1
			continue
		}
		c := name[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

// transientError marks an error a retry may cure.
type transientError struct{ err error }

func (e *transientError) Error() string { return e.err.Error() }
func (e *transientError) Unwrap() error { return e.err }

// Transient marks err as one a retry may cure (a timeout, a reset
// connection, an S3 503 SlowDown). It keeps err's codes: errors.Is and
// disk.CodeOf see through it. Transient(nil) is nil.
func Transient(err error) error {
	if err == nil {
		return nil
	}
	return &transientError{err}
}

// IsTransient reports whether err, or an error it wraps, was marked with
// Transient.
func IsTransient(err error) bool {
	var t *transientError
	return errors.As(err, &t)
}
