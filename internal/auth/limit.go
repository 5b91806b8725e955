package auth

import (
	"sync"

	"github.com/vdisk-project/vdisk/disk"
)

// Limits configures a [Limiter]. A zero field means no limit.
type Limits struct {
	// HostConns caps connections open on the host.
	HostConns int
	// DiskConns caps connections open to one disk (target).
	DiskConns int
	// SessionConns caps connections open by one session.
	SessionConns int
	// Memory caps bytes reserved on the host.
	Memory int64
	// SessionMemory caps bytes reserved by one session.
	SessionMemory int64
}

// Limiter counts connections and memory reservations against [Limits]. A
// refusal changes nothing, so the session stays usable and a retry after
// other holders release may succeed. It is safe for concurrent use.
type Limiter struct {
	lim Limits

	mu        sync.Mutex
	conns     int
	diskConns map[string]int
	sessConns map[string]int
	mem       int64
	sessMem   map[string]int64
}

// NewLimiter returns a Limiter enforcing lim.
func NewLimiter(lim Limits) *Limiter {
	return &Limiter{lim: lim, diskConns: map[string]int{}, sessConns: map[string]int{}, sessMem: map[string]int64{}}
}

// AcquireConn reserves one connection for session to target. It returns a
// release func to call when the connection closes (later calls are no-ops).
// A limit reached is disk.ErrBusy naming the limit.
func (l *Limiter) AcquireConn(session, target string) (func(), error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case l.lim.HostConns > 0 && l.conns >= l.lim.HostConns:
		return nil, disk.Errorf(disk.ErrBusy, "auth: host connection limit of %d reached", l.lim.HostConns)
	case l.lim.DiskConns > 0 && l.diskConns[target] >= l.lim.DiskConns:
		return nil, disk.Errorf(disk.ErrBusy, "auth: connection limit of %d for %q reached", l.lim.DiskConns, target)
	case l.lim.SessionConns > 0 && l.sessConns[session] >= l.lim.SessionConns:
		return nil, disk.Errorf(disk.ErrBusy, "auth: session connection limit of %d reached", l.lim.SessionConns)
	}
	l.conns++
	l.diskConns[target]++
	l.sessConns[session]++
	var once sync.Once
	return func() {
		once.Do(func() {
			l.mu.Lock()
			defer l.mu.Unlock()
			l.conns--
			dec(l.diskConns, target)
			dec(l.sessConns, session)
		})
	}, nil
}

func dec[V int | int64](m map[string]V, k string) {
	m[k]--
	if m[k] <= 0 {
		delete(m, k)
	}
}

// ReserveMemory reserves n bytes for session. It returns a release func
// (later calls are no-ops). A budget exceeded is disk.ErrOutOfMemory naming
// the budget; a negative n is disk.ErrInvalid.
func (l *Limiter) ReserveMemory(session string, n int64) (func(), error) {
	if n < 0 {
		return nil, disk.Errorf(disk.ErrInvalid, "auth: negative memory reservation %d", n)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case l.lim.Memory > 0 && n > l.lim.Memory-l.mem:
		return nil, disk.Errorf(disk.ErrOutOfMemory, "auth: host memory budget of %d bytes exceeded (%d in use, %d asked)", l.lim.Memory, l.mem, n)
	case l.lim.SessionMemory > 0 && n > l.lim.SessionMemory-l.sessMem[session]:
		return nil, disk.Errorf(disk.ErrOutOfMemory, "auth: session memory budget of %d bytes exceeded (%d in use, %d asked)", l.lim.SessionMemory, l.sessMem[session], n)
	}
	l.mem += n
	l.sessMem[session] += n
	var once sync.Once
	return func() {
		once.Do(func() {
			l.mu.Lock()
			defer l.mu.Unlock()
			l.mem -= n
			l.sessMem[session] -= n
			if l.sessMem[session] <= 0 {
				delete(l.sessMem, session)
			}
		})
	}, nil
}

// ReserveHostMemory reserves n bytes on the host budget alone, for memory
// no session owns (such as the buffers of connections that have not
// presented a ticket yet). It returns a release func (later calls are
// no-ops). A budget exceeded is disk.ErrOutOfMemory.
func (l *Limiter) ReserveHostMemory(n int64) (func(), error) {
	if n < 0 {
		return nil, disk.Errorf(disk.ErrInvalid, "auth: negative memory reservation %d", n)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.lim.Memory > 0 && n > l.lim.Memory-l.mem {
		return nil, disk.Errorf(disk.ErrOutOfMemory, "auth: host memory budget of %d bytes exceeded (%d in use, %d asked)", l.lim.Memory, l.mem, n)
	}
	l.mem += n
	var once sync.Once
	return func() {
		once.Do(func() {
			l.mu.Lock()
			l.mem -= n
			l.mu.Unlock()
		})
	}, nil
}

// Usage reports the connections open and bytes reserved on the host.
func (l *Limiter) Usage() (conns int, mem int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.conns, l.mem
}
