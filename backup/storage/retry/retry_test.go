package retry_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/vdisk-project/vdisk/backup/storage"
	"github.com/vdisk-project/vdisk/backup/storage/mem"
	"github.com/vdisk-project/vdisk/backup/storage/retry"
	"github.com/vdisk-project/vdisk/backup/storage/storagetest"
	"github.com/vdisk-project/vdisk/disk"
)

func TestConformance(t *testing.T) {
	storagetest.RunTests(t, func(t *testing.T) storage.Storage {
		return retry.New(mem.New(), retry.Options{Base: time.Millisecond})
	})
}

// flaky fails the next failures calls with err, then passes them on. A
// List fails after delivering half of its names.
type flaky struct {
	storage.Storage
	mu       sync.Mutex
	failures int
	err      error
	calls    int
}

func (f *flaky) fail() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if f.failures > 0 {
		f.failures--
		return f.err
	}
	return nil
}

func (f *flaky) Put(ctx context.Context, name string, data []byte) error {
	if err := f.fail(); err != nil {
		return err
	}
	return f.Storage.Put(ctx, name, data)
}

func (f *flaky) Get(ctx context.Context, name string, max int64) ([]byte, error) {
	if err := f.fail(); err != nil {
		return nil, err
	}
	return f.Storage.Get(ctx, name, max)
}

func (f *flaky) ReadAt(ctx context.Context, name string, p []byte, off int64) (int, error) {
	if err := f.fail(); err != nil {
		return len(p) / 2, err
	}
	return f.Storage.ReadAt(ctx, name, p, off)
}

func (f *flaky) List(ctx context.Context, prefix string, fn func(storage.Info) error) error {
	n := 0
	err := f.Storage.List(ctx, prefix, func(in storage.Info) error {
		n++
		if n == 3 {
			if err := f.fail(); err != nil {
				return err
			}
		}
		return fn(in)
	})
	return err
}

var transient = storage.Transient(&disk.Error{Op: "test: put", Off: -1, Code: disk.ErrAccess, Err: errors.New("connection reset")})

func TestRetries(t *testing.T) {
	ctx := context.Background()
	f := &flaky{Storage: mem.New(), failures: 3, err: transient}
	var logged []int
	st := retry.New(f, retry.Options{Attempts: 4, Base: time.Millisecond, Max: 2 * time.Millisecond,
		OnRetry: func(op, name string, attempt int, err error, wait time.Duration) {
			if op != "put" && op != "get" || name != "x" || !errors.Is(err, disk.ErrAccess) || wait > 2*time.Millisecond {
				t.Errorf("OnRetry(%q, %q, %d, %v, %v)", op, name, attempt, err, wait)
			}
			logged = append(logged, attempt)
		}})
	if err := st.Put(ctx, "x", []byte("x")); err != nil {
		t.Fatalf("Put with 3 transient failures and 4 attempts: %v", err)
	}
	if f.calls != 4 || st.Retries() != 3 || fmt.Sprint(logged) != "[1 2 3]" {
		t.Errorf("calls %d, Retries %d, OnRetry attempts %v; want 4, 3, [1 2 3]", f.calls, st.Retries(), logged)
	}

	// Out of attempts: the last error, still transient, with its code.
	f.failures, f.calls = 10, 0
	_, err := st.Get(ctx, "x", 10)
	if !errors.Is(err, disk.ErrAccess) || !storage.IsTransient(err) || f.calls != 4 {
		t.Errorf("Get with 10 failures: %v after %d calls; want a transient disk.ErrAccess after 4", err, f.calls)
	}
}

func TestNotTransient(t *testing.T) {
	f := &flaky{Storage: mem.New(), failures: 1, err: &disk.Error{Off: -1, Code: disk.ErrPermission, Err: errors.New("denied")}}
	st := retry.New(f, retry.Options{Base: time.Millisecond})
	if err := st.Put(context.Background(), "x", nil); !errors.Is(err, disk.ErrPermission) || f.calls != 1 || st.Retries() != 0 {
		t.Errorf("Put failing for good: %v after %d calls, %d retries; want the error after 1 call", err, f.calls, st.Retries())
	}
	_, err := st.Get(context.Background(), "missing", 10)
	if !errors.Is(err, disk.ErrNotFound) || st.Retries() != 0 {
		t.Errorf("Get(missing) = %v with %d retries", err, st.Retries())
	}
}

func TestCancelWhileWaiting(t *testing.T) {
	f := &flaky{Storage: mem.New(), failures: 100, err: transient}
	ctx, cancel := context.WithCancel(context.Background())
	st := retry.New(f, retry.Options{Attempts: 100, Base: time.Hour,
		OnRetry: func(string, string, int, error, time.Duration) { cancel() }})
	err := st.Put(ctx, "x", nil)
	if !errors.Is(err, context.Canceled) || !errors.Is(err, disk.ErrAccess) {
		t.Errorf("Put canceled during the backoff: %v; want context.Canceled and the last error", err)
	}
	if f.calls != 1 {
		t.Errorf("%d calls, want 1", f.calls)
	}
}

func TestReadAtRepeated(t *testing.T) {
	m := mem.New()
	if err := m.Put(context.Background(), "r", []byte("0123456789")); err != nil {
		t.Fatal(err)
	}
	st := retry.New(&flaky{Storage: m, failures: 2, err: transient}, retry.Options{Base: time.Millisecond})
	p := make([]byte, 4)
	n, err := st.ReadAt(context.Background(), "r", p, 3)
	if n != 4 || err != nil || string(p) != "3456" {
		t.Errorf("ReadAt = %d, %v, %q; want 4, nil, 3456", n, err, p)
	}
}

func TestListRestarts(t *testing.T) {
	m := mem.New()
	for i := range 10 {
		if err := m.Put(context.Background(), fmt.Sprintf("o/%d", i), nil); err != nil {
			t.Fatal(err)
		}
	}
	f := &flaky{Storage: m, failures: 2, err: transient}
	st := retry.New(f, retry.Options{Base: time.Millisecond})
	seen := map[string]int{}
	if err := st.List(context.Background(), "o/", func(in storage.Info) error { seen[in.Name]++; return nil }); err != nil {
		t.Fatal(err)
	}
	if len(seen) != 10 {
		t.Errorf("List gave %d names, want 10", len(seen))
	}
	for n, c := range seen {
		if c != 1 {
			t.Errorf("List gave %s %d times, want once", n, c)
		}
	}
	if st.Retries() != 2 {
		t.Errorf("Retries = %d, want 2", st.Retries())
	}
	// An error of fn is returned as it is and not retried, even when
	// transient.
	calls := 0
	err := st.List(context.Background(), "o/", func(storage.Info) error { calls++; return transient })
	if err != transient || calls != 1 {
		t.Errorf("List with fn failing transiently = %v after %d calls; want fn's error after 1", err, calls)
	}
}
