// Package mem is a Storage in memory, for tests and for repositories that
// need not outlive the process.
package mem

import (
	"context"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/vdisk-project/vdisk/backup/storage"
	"github.com/vdisk-project/vdisk/disk"
)

// Storage keeps objects in a map. The zero value is not usable; call New.
type Storage struct {
	mu      sync.Mutex
	objects map[string]object
}

type object struct {
	data []byte
	mod  time.Time
}

var _ storage.Storage = (*Storage)(nil)

// New returns an empty Storage.
func New() *Storage { return &Storage{objects: map[string]object{}} }

func check(op, name string) error {
	if !storage.ValidName(name) {
		return &disk.Error{Op: op, Path: name, Code: disk.ErrInvalid, Err: fmt.Errorf("mem: invalid object name")}
	}
	return nil
}

func (s *Storage) lookup(op, name string) (object, error) {
	if err := check(op, name); err != nil {
		return object{}, err
	}
	s.mu.Lock()
	o, ok := s.objects[name]
	s.mu.Unlock()
	if !ok {
		return object{}, &disk.Error{Op: op, Path: name, Code: disk.ErrNotFound}
	}
	return o, nil
}

// Put implements storage.Storage.
func (s *Storage) Put(ctx context.Context, name string, data []byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := check("put", name); err != nil {
		return err
	}
	s.mu.Lock()
	s.objects[name] = object{data: append([]byte(nil), data...), mod: time.Now()}
	s.mu.Unlock()
	return nil
}

// ReadAt implements storage.Storage.
func (s *Storage) ReadAt(ctx context.Context, name string, p []byte, off int64) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	o, err := s.lookup("read", name)
	if err != nil {
		return 0, err
	}
	if off < 0 {
		return 0, &disk.Error{Op: "read", Path: name, Off: off, Code: disk.ErrInvalid}
	}
	if off >= int64(len(o.data)) {
		return 0, fmt.Errorf("mem: read %s @%d: %w", name, off, io.ErrUnexpectedEOF)
	}
	n := copy(p, o.data[off:])
	if n < len(p) {
		return n, fmt.Errorf("mem: read %s @%d: %w", name, off, io.ErrUnexpectedEOF)
	}
	return n, nil
}

// Get implements storage.Storage.
func (s *Storage) Get(ctx context.Context, name string, max int64) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	o, err := s.lookup("get", name)
	if err != nil {
		return nil, err
	}
	if int64(len(o.data)) > max {
		return nil, &disk.Error{Op: "get", Path: name, Code: disk.ErrOutOfMemory, Err: fmt.Errorf("mem: object of %d bytes exceeds %d", len(o.data), max)}
	}
	return append([]byte(nil), o.data...), nil
}

// Stat implements storage.Storage.
func (s *Storage) Stat(ctx context.Context, name string) (storage.Info, error) {
	if err := ctx.Err(); err != nil {
		return storage.Info{}, err
	}
	o, err := s.lookup("stat", name)
	if err != nil {
		return storage.Info{}, err
	}
	return storage.Info{Name: name, Size: int64(len(o.data)), ModTime: o.mod}, nil
}

// List implements storage.Storage.
func (s *Storage) List(ctx context.Context, prefix string, fn func(storage.Info) error) error {
	s.mu.Lock()
	var infos []storage.Info
	for name, o := range s.objects {
		if strings.HasPrefix(name, prefix) {
			infos = append(infos, storage.Info{Name: name, Size: int64(len(o.data)), ModTime: o.mod})
		}
	}
	s.mu.Unlock()
	for _, in := range infos {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := fn(in); err != nil {
			return err
		}
	}
	return nil
}

// Delete implements storage.Storage.
func (s *Storage) Delete(ctx context.Context, name string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := check("delete", name); err != nil {
		return err
	}
	s.mu.Lock()
	delete(s.objects, name)
	s.mu.Unlock()
	return nil
}

// Close implements storage.Storage.
func (s *Storage) Close() error { return nil }
