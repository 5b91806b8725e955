package nbd

import (
	"context"
	"math/bits"
	"sync"
	"sync/atomic"

	"github.com/vdisk-project/vdisk/disk"
)

// Memory a connection holds besides request payloads. These are upper
// bounds of what the buffers cost, so that ServerOptions.ConnMemory is
// never exceeded by the connection's buffers.
const (
	// ioMem: the connection's bufio reader and writer (16 KiB each).
	ioMem = 32 << 10
	// tlsMem: under TLS, the buffer below crypto/tls (tlsNegBuf) and what
	// crypto/tls holds itself: a record being read, one being written,
	// handshake state. TestTLSMemory checks it, with tlsSendBuf: a client
	// and server pair holds about 380 KiB after full-size records, this
	// side 368 KiB.
	tlsMem = 128 << 10
	// tlsNegBuf is that buffer below crypto/tls while the connection
	// negotiates; tlsSendBuf replaces it in transmission (whole records
	// of a 256 KiB reply: 17 of 16 KiB and at most 32 bytes of framing), and
	// the difference is held from the connection's budget then.
	tlsNegBuf  = 64 << 10
	tlsSendBuf = 17 * (16<<10 + 32)
	// reqMem: one request's own bookkeeping (the pooled struct, its
	// pieces of a READ reply), on top of its payload.
	reqMem = 8 << 10
	// extentMem: one extent of a BLOCK_STATUS reply, as collected (with
	// slice growth) and as encoded.
	extentMem = 64
	// maxPieces bounds the data and hole runs of one structured READ
	// reply; past it, runs merge into data (holes read as zeros).
	maxPieces = 256
)

// NegotiationMemory is the most a connection holds in buffers before it
// enters transmission: its reader and writer, one option's data and, under
// TLS, the TLS buffers. ServerOptions.MaxNegotiating times this bounds the
// memory of connections still negotiating.
const NegotiationMemory = ioMem + maxOptionLen + tlsMem

// errNoFit refuses a reservation larger than the connection's budget can
// ever hold.
var errNoFit = disk.Errorf(disk.ErrOutOfMemory, "nbd: request exceeds the connection's memory budget")

// budget counts the bytes of buffers a connection holds against its
// limit. Reservations happen before allocation and are released after the
// buffer is last used. Only one goroutine (the connection's reader) waits
// in acquire at a time; any goroutine may release.
type budget struct {
	mu    sync.Mutex
	limit int64
	fixed int64 // held for the connection's life (reader, writer, TLS)
	used  int64
	wake  chan struct{} // a release happened; capacity 1

	total *atomic.Int64 // server-wide bytes reserved
	peak  *atomic.Int64 // server-wide peak
}

func newBudget(limit int64, total, peak *atomic.Int64) *budget {
	return &budget{limit: limit, wake: make(chan struct{}, 1), total: total, peak: peak}
}

// hold reserves n bytes for the connection's life; it never waits.
func (b *budget) hold(n int64) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.used+n > b.limit {
		return errNoFit
	}
	b.used += n
	b.fixed += n
	b.count(n)
	return nil
}

// acquire reserves n bytes, waiting for releases until ctx is done. A
// reservation that cannot fit even when nothing else is held fails with
// errNoFit at once.
func (b *budget) acquire(ctx context.Context, n int64) error {
	for {
		b.mu.Lock()
		if n > b.limit-b.fixed {
			b.mu.Unlock()
			return errNoFit
		}
		if b.used+n <= b.limit {
			b.used += n
			b.count(n)
			b.mu.Unlock()
			return nil
		}
		b.mu.Unlock()
		select {
		case <-b.wake:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// fits reports whether n bytes could ever be reserved.
func (b *budget) fits(n int64) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return n <= b.limit-b.fixed
}

// release returns n bytes reserved by acquire.
func (b *budget) release(n int64) {
	if n == 0 {
		return
	}
	b.mu.Lock()
	b.used -= n
	b.count(-n)
	b.mu.Unlock()
	select {
	case b.wake <- struct{}{}:
	default:
	}
}

// releaseAll returns everything at the connection's end.
func (b *budget) releaseAll() {
	b.mu.Lock()
	b.count(-b.used)
	b.used, b.fixed = 0, 0
	b.mu.Unlock()
}

// count adds n to the server-wide total (b.mu held).
func (b *budget) count(n int64) {
	t := b.total.Add(n)
	for {
		p := b.peak.Load()
		if t <= p || b.peak.CompareAndSwap(p, t) {
			return
		}
	}
}

// bufSize is the capacity getBuf gives a buffer of n bytes (its size
// class), which is what a reservation must count.
func bufSize(n uint64) int64 {
	return 1<<max(12, bits.Len64(n-1)) + bufRoom
}
