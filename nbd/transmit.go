package nbd

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"sync"

	"github.com/vdisk-project/vdisk/disk"
)

// request is one decoded transmission request. Requests are pooled with
// everything they need to be served, so that the read path allocates
// nothing in the steady state.
type request struct {
	flags  uint16
	typ    uint16
	cookie uint64
	off    uint64
	n      uint64  // length: payload (WRITE) or effect length
	buf    *[]byte // payload (WRITE) or data (READ), pooled
	mem    int64   // bytes reserved from the connection's budget

	pieces  []piece                 // READ: data and hole runs
	collect func(disk.Extent) error // appends to pieces; bound once
}

// piece is a run of a READ reply: data to send, or a hole.
type piece struct {
	off, n int64
	data   bool
}

var requestPool = sync.Pool{New: func() any {
	r := &request{}
	r.collect = r.collectExtent
	return r
}}

func (r *request) collectExtent(e disk.Extent) error {
	data := e.Flags.Data()
	if k := len(r.pieces); k > 0 && (r.pieces[k-1].data == data || k >= maxPieces) {
		// Past maxPieces runs merge, as data when any is (a hole read
		// from the disk is zeros), so that pieces stay bounded.
		r.pieces[k-1].n += e.Len
		r.pieces[k-1].data = r.pieces[k-1].data || data
		return nil
	}
	r.pieces = append(r.pieces, piece{e.Off, e.Len, data})
	return nil
}

func (r *request) release() {
	if r.buf != nil {
		putBuf(r.buf)
		r.buf = nil
	}
	r.pieces = r.pieces[:0]
	r.mem = 0
	requestPool.Put(r)
}

// Buffer pools by power-of-two size class, 4 KiB to MaxPayload. Each
// buffer has bufRoom bytes beyond its class, so that a READ reply's
// header can sit in front of the data read into it and the reply leave in
// one write (see sendData).
var bufPools [27]sync.Pool // classes up to 2^26 = 2×MaxPayload

// bufRoom is the headroom of a pooled buffer: room for the largest header
// of a data reply (an extended chunk header and its offset, 40 bytes).
const bufRoom = 64

// getBuf returns a pooled buffer of n bytes (n > 0) with at least bufRoom
// more capacity, by pointer so that returning it to the pool allocates
// nothing.
func getBuf(n int) *[]byte {
	c := max(12, bits.Len(uint(n-1)))
	if p, ok := bufPools[c].Get().(*[]byte); ok {
		*p = (*p)[:n]
		return p
	}
	b := make([]byte, n, 1<<c+bufRoom)
	return &b
}

func putBuf(p *[]byte) {
	c := bits.Len(uint(cap(*p) - bufRoom - 1))
	if cap(*p) != 1<<c+bufRoom || c >= len(bufPools) {
		return
	}
	bufPools[c].Put(p)
}

// errnoCodes maps disk codes to NBD errors and back: the one table of
// this boundary (STYLE §4). Codes not listed travel as EIO.
var errnoCodes = []struct {
	code  disk.Code
	errno uint32
}{
	{disk.ErrPermission, errPerm},
	{disk.ErrOutOfMemory, errNoMem},
	{disk.ErrNotSupported, errNotSup},
	{disk.ErrNoSpace, errNoSpc},
	{disk.ErrInvalid, errInval},
}

// errnoOf maps an error to the NBD errno sent to the client.
func errnoOf(err error) uint32 {
	code := disk.CodeOf(err)
	for _, m := range errnoCodes {
		if m.code == code {
			return m.errno
		}
	}
	return errIO
}

// errOfErrno maps an NBD errno received from a server to an error. Besides
// the table, EOVERFLOW is a refused size and ESHUTDOWN a busy server.
func errOfErrno(e uint32) error {
	code := disk.ErrAccess
	for _, m := range errnoCodes {
		if m.errno == e {
			code = m.code
		}
	}
	switch e {
	case errOverflow:
		code = disk.ErrInvalid
	case errShutdown:
		code = disk.ErrBusy
	}
	return disk.Errorf(code, "nbd: server error %d", e)
}

// writable checks a request that changes the export: known flags only, a
// writable export, inside it. It answers the request when it refuses.
func (c *conn) writable(r *request, known uint16, inRange bool) bool {
	switch {
	case r.flags&^known != 0:
		c.replyErr(r, errInval, "invalid flags")
	case c.exp.ReadOnly:
		c.replyErr(r, errPerm, "export is read-only")
	case !inRange:
		c.replyErr(r, errNoSpc, "write past the end of the export")
	default:
		return true
	}
	return false
}

// need is what request r holds in buffers while it is served: its
// payload or reply buffer (by size class) and its bookkeeping.
func (c *conn) need(r *request) int64 {
	switch r.typ {
	case cmdRead, cmdWrite:
		if r.n > 0 && r.n <= MaxPayload {
			return bufSize(r.n) + reqMem
		}
	case cmdBlockStatus:
		return int64(len(c.metaIDs))*int64(c.maxExtents)*extentMem + reqMem
	}
	return reqMem
}

// cmdNoMem marks a request refused for memory (answered with ENOMEM).
const cmdNoMem = 0xfffe

// transmit reads requests and hands them to workers. Each request
// reserves its buffers from the connection's budget before they are
// allocated (WRITE payloads before they are read); while it waits, no
// further request is read. waits ends such a wait when the connection
// stops.
func (c *conn) transmit(ctx, waits context.Context) error {
	// Requests go to worker goroutines, started as the load needs them (up
	// to Workers), so that an idle connection holds one goroutine and a
	// busy one allocates nothing per request.
	queue := make(chan *request, c.s.o.Workers)
	defer close(queue)
	workers, idle := 0, 0
	var mu sync.Mutex
	worker := func() {
		for r := range queue {
			c.handle(ctx, r)
			n := r.mem
			r.release()
			c.mem.release(n)
			c.inFlight.Done()
			mu.Lock()
			idle++
			mu.Unlock()
		}
	}
	var h [32]byte
	for {
		hl := 28
		if c.extended {
			hl = 32
		}
		if _, err := io.ReadFull(c.br, h[:hl]); err != nil {
			if c.stopping.Load() || errors.Is(err, io.EOF) {
				return errDone
			}
			return err
		}
		magic := uint32(magicRequest)
		if c.extended {
			magic = magicExtRequest
		}
		if binary.BigEndian.Uint32(h[:]) != magic {
			return errors.New("bad request magic")
		}
		r := requestPool.Get().(*request)
		r.flags = binary.BigEndian.Uint16(h[4:])
		r.typ = binary.BigEndian.Uint16(h[6:])
		r.cookie = binary.BigEndian.Uint64(h[8:])
		r.off = binary.BigEndian.Uint64(h[16:])
		if c.extended {
			r.n = binary.BigEndian.Uint64(h[24:])
			// With extended headers a payload is announced by PAYLOAD_LEN;
			// WRITE must carry it, other commands must not (an unexpected
			// payload is consumed and refused, so the stream stays in sync).
			hasPayload := r.flags&cmdFlagPayload != 0
			if r.typ == cmdWrite && !hasPayload {
				r.release()
				return errors.New("WRITE without PAYLOAD_LEN")
			}
			if r.typ != cmdWrite && hasPayload {
				if r.n > MaxPayload {
					r.release()
					return errors.New("oversized unexpected payload")
				}
				if _, err := io.CopyN(io.Discard, c.br, int64(r.n)); err != nil {
					r.release()
					return err
				}
				r.typ = 0xffff // answered with EINVAL
			}
		} else {
			r.n = uint64(binary.BigEndian.Uint32(h[24:]))
		}
		switch r.typ {
		case cmdDisc:
			r.release()
			return errDone
		case cmdWrite:
			if r.n > MaxPayload {
				// The payload cannot be skipped safely without reading
				// it; a client that ignores the advertised maximum is
				// disconnected.
				r.release()
				return fmt.Errorf("write of %d bytes exceeds the maximum payload", r.n)
			}
		}
		need := c.need(r)
		if !c.mem.fits(need) {
			// It can never fit: refused with ENOMEM, a WRITE's payload
			// skipped (read through a small buffer) to stay in sync.
			if r.typ == cmdWrite {
				if _, err := io.CopyN(io.Discard, c.br, int64(r.n)); err != nil {
					r.release()
					return err
				}
			}
			r.typ, need = cmdNoMem, reqMem
		}
		if err := c.mem.acquire(waits, need); err != nil {
			r.release()
			if waits.Err() != nil {
				return errDone
			}
			return err
		}
		r.mem = need
		if r.typ == cmdWrite && r.n > 0 {
			r.buf = getBuf(int(r.n))
			if _, err := io.ReadFull(c.br, *r.buf); err != nil {
				c.mem.release(r.mem)
				r.release()
				return err
			}
		}
		c.inFlight.Add(1)
		mu.Lock()
		if idle > 0 {
			idle--
		} else if workers < c.s.o.Workers {
			workers++
			go worker()
		}
		mu.Unlock()
		queue <- r
	}
}

func (c *conn) handle(ctx context.Context, r *request) {
	d := c.exp.Disk
	size := uint64(d.Size())
	end := r.off + r.n
	inRange := end >= r.off && end <= size
	known := uint16(cmdFlagFUA)
	var err error
	switch r.typ {
	case cmdRead:
		known |= cmdFlagDF
		if r.flags&^known != 0 || !inRange {
			c.replyErr(r, errInval, "invalid read")
			return
		}
		if r.n > MaxPayload {
			c.replyErr(r, errOverflow, "read larger than the maximum payload")
			return
		}
		c.read(ctx, r)
		return
	case cmdWrite:
		if !c.writable(r, known|cmdFlagPayload, inRange) {
			return
		}
		if r.buf != nil {
			_, err = d.WriteAt(*r.buf, int64(r.off))
		}
	case cmdFlush:
		err = d.Flush()
	case cmdTrim:
		if c.exp.ReadOnly {
			c.replyErr(r, errPerm, "export is read-only")
			return
		}
		if !inRange || r.flags&^known != 0 {
			c.replyErr(r, errInval, "invalid trim")
			return
		}
		err = disk.Trim(d, int64(r.off), int64(r.n))
	case cmdWriteZeroes:
		if !c.writable(r, known|cmdFlagNoHole|cmdFlagFastZero, inRange) {
			return
		}
		var zf disk.ZeroFlags
		if r.flags&cmdFlagNoHole != 0 {
			zf |= disk.ZeroNoHole
		}
		if r.flags&cmdFlagFastZero != 0 {
			zf |= disk.ZeroFast
		}
		err = disk.WriteZeroes(d, int64(r.off), int64(r.n), zf)
	case cmdCache:
		if !inRange || r.flags != 0 {
			c.replyErr(r, errInval, "invalid cache request")
			return
		}
	case cmdBlockStatus:
		known |= cmdFlagReqOne
		if !inRange || r.n == 0 || r.flags&^known != 0 || len(c.metaIDs) == 0 || !c.structured {
			c.replyErr(r, errInval, "invalid block status request")
			return
		}
		c.blockStatus(ctx, r)
		return
	case cmdNoMem:
		c.replyErr(r, errNoMem, "request exceeds the connection's memory budget")
		return
	default:
		c.replyErr(r, errInval, "unknown command")
		return
	}
	if err == nil && r.flags&cmdFlagFUA != 0 && r.typ != cmdFlush {
		err = d.Flush()
	}
	if err != nil {
		c.replyErr(r, errnoOf(err), err.Error())
		return
	}
	c.replyOK(r)
}

// simpleHeader, chunkHeader and offsetField write through the
// connection's scratch buffer (the caller holds c.mu), so that no header
// escapes to the heap.
func (c *conn) simpleHeader(r *request, errno uint32) {
	h := c.scratch[:16]
	binary.BigEndian.PutUint32(h[0:], magicSimple)
	binary.BigEndian.PutUint32(h[4:], errno)
	binary.BigEndian.PutUint64(h[8:], r.cookie)
	c.bw.Write(h)
}

func (c *conn) chunkHeader(r *request, flags, typ uint16, n int) {
	if c.extended {
		h := c.scratch[:32]
		binary.BigEndian.PutUint32(h[0:], magicExtReply)
		binary.BigEndian.PutUint16(h[4:], flags)
		binary.BigEndian.PutUint16(h[6:], typ)
		binary.BigEndian.PutUint64(h[8:], r.cookie)
		binary.BigEndian.PutUint64(h[16:], r.off)
		binary.BigEndian.PutUint64(h[24:], uint64(n))
		c.bw.Write(h)
		return
	}
	h := c.scratch[:20]
	binary.BigEndian.PutUint32(h[0:], magicStructured)
	binary.BigEndian.PutUint16(h[4:], flags)
	binary.BigEndian.PutUint16(h[6:], typ)
	binary.BigEndian.PutUint64(h[8:], r.cookie)
	binary.BigEndian.PutUint32(h[16:], uint32(n))
	c.bw.Write(h)
}

// offsetField writes a chunk's offset, and a hole's length when n >= 0.
func (c *conn) offsetField(off uint64, n int64) {
	o := c.scratch[:8]
	binary.BigEndian.PutUint64(o, off)
	if n >= 0 {
		o = c.scratch[:12]
		binary.BigEndian.PutUint32(o[8:], uint32(n))
	}
	c.bw.Write(o)
}

func (c *conn) replyOK(r *request) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.extended {
		c.chunkHeader(r, replyFlagDone, chunkNone, 0)
	} else {
		c.simpleHeader(r, 0)
	}
	c.flush()
}

func (c *conn) replyErr(r *request, errno uint32, msg string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.structured {
		if len(msg) > 4096 {
			msg = msg[:4096]
		}
		c.chunkHeader(r, replyFlagDone, chunkError, 6+len(msg))
		var p [6]byte
		binary.BigEndian.PutUint32(p[0:], errno)
		binary.BigEndian.PutUint16(p[4:], uint16(len(msg)))
		c.bw.Write(p[:])
		c.bw.WriteString(msg)
	} else {
		c.simpleHeader(r, errno)
	}
	c.flush()
}

// read answers a READ: with structured replies, ranges the disk reports as
// holes or zeros are sent as OFFSET_HOLE chunks and only data is read.
func (c *conn) read(ctx context.Context, r *request) {
	d := c.exp.Disk
	if r.n == 0 {
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.structured {
			c.chunkHeader(r, replyFlagDone, chunkNone, 0)
		} else {
			c.simpleHeader(r, 0)
		}
		c.flush()
		return
	}
	r.buf = getBuf(int(r.n))
	full := (*r.buf)[:bufRoom+r.n]
	buf := full[bufRoom:]
	if !c.structured || r.flags&cmdFlagDF != 0 {
		if _, err := d.ReadAt(buf, int64(r.off)); err != nil && !errors.Is(err, io.EOF) {
			c.replyErr(r, errnoOf(err), err.Error())
			return
		}
		c.sendData(r, full)
		return
	}
	err := disk.Extents(ctx, d, int64(r.off), int64(r.n), r.collect)
	if err == nil {
		for _, p := range r.pieces {
			if !p.data {
				continue
			}
			q := buf[p.off-int64(r.off) : p.off-int64(r.off)+p.n]
			if _, err = d.ReadAt(q, p.off); err != nil && !errors.Is(err, io.EOF) {
				break
			}
			err = nil
		}
	}
	if err != nil {
		c.replyErr(r, errnoOf(err), err.Error())
		return
	}
	if len(r.pieces) == 1 && r.pieces[0].data {
		c.sendData(r, full)
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, p := range r.pieces {
		var fl uint16
		if i == len(r.pieces)-1 {
			fl = replyFlagDone
		}
		if p.data {
			c.chunkHeader(r, fl, chunkOffsetData, 8+int(p.n))
			c.offsetField(uint64(p.off), -1)
			c.bw.Write(buf[p.off-int64(r.off) : p.off-int64(r.off)+p.n])
		} else {
			c.chunkHeader(r, fl, chunkOffsetHole, 12)
			c.offsetField(uint64(p.off), p.n)
		}
	}
	c.flush()
}

// sendData answers a READ whose whole range is data, held in
// full[bufRoom:]: its header goes into the headroom in front of the data
// and the reply leaves in one write, so that no buffer copies the payload
// (under TLS, crypto/tls cuts it into full-size records straight from
// here).
func (c *conn) sendData(r *request, full []byte) {
	n := len(full) - bufRoom
	var h []byte
	switch {
	case c.extended:
		h = full[bufRoom-40 : bufRoom]
		binary.BigEndian.PutUint32(h[0:], magicExtReply)
		binary.BigEndian.PutUint16(h[4:], replyFlagDone)
		binary.BigEndian.PutUint16(h[6:], chunkOffsetData)
		binary.BigEndian.PutUint64(h[8:], r.cookie)
		binary.BigEndian.PutUint64(h[16:], r.off)
		binary.BigEndian.PutUint64(h[24:], uint64(8+n))
		binary.BigEndian.PutUint64(h[32:], r.off)
	case c.structured:
		h = full[bufRoom-28 : bufRoom]
		binary.BigEndian.PutUint32(h[0:], magicStructured)
		binary.BigEndian.PutUint16(h[4:], replyFlagDone)
		binary.BigEndian.PutUint16(h[6:], chunkOffsetData)
		binary.BigEndian.PutUint64(h[8:], r.cookie)
		binary.BigEndian.PutUint32(h[16:], uint32(8+n))
		binary.BigEndian.PutUint64(h[20:], r.off)
	default:
		h = full[bufRoom-16 : bufRoom]
		binary.BigEndian.PutUint32(h[0:], magicSimple)
		binary.BigEndian.PutUint32(h[4:], 0)
		binary.BigEndian.PutUint64(h[8:], r.cookie)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	// Replies are written whole under mu, so the writer holds nothing
	// here; writing past it keeps the order.
	if err := c.bw.Flush(); err != nil {
		return
	}
	if _, err := c.nc.Write(full[bufRoom-len(h):]); err != nil {
		return
	}
	if c.fc != nil {
		c.fc.Flush()
	}
}

// blockStatus answers BLOCK_STATUS with one chunk per selected context
// (BLOCK_STATUS_EXT with 64-bit lengths under extended headers).
func (c *conn) blockStatus(ctx context.Context, r *request) {
	type ext struct{ n, flags uint64 }
	chunks := make(map[uint32][]ext, len(c.metaIDs))
	maxLen := uint64(1<<32 - 4096)
	if c.extended {
		maxLen = 1 << 62
	}
	for id, mc := range c.metaIDs {
		var exts []ext
		errFull := errors.New("full")
		err := mc.Extents(ctx, int64(r.off), int64(r.n), func(e disk.Extent) error {
			for l := uint64(e.Len); l > 0; {
				n := min(l, maxLen)
				if k := len(exts); k > 0 && exts[k-1].flags == uint64(e.Flags) && exts[k-1].n+n <= maxLen {
					exts[k-1].n += n
				} else {
					if len(exts) >= c.maxExtents || (r.flags&cmdFlagReqOne != 0 && len(exts) == 1) {
						return errFull
					}
					exts = append(exts, ext{n, uint64(e.Flags)})
				}
				l -= n
			}
			return nil
		})
		if err != nil && !errors.Is(err, errFull) {
			c.replyErr(r, errnoOf(err), err.Error())
			return
		}
		if len(exts) == 0 {
			exts = []ext{{min(r.n, maxLen), 0}}
		}
		chunks[id] = exts
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	i := 0
	for id, exts := range chunks {
		i++
		var fl uint16
		if i == len(chunks) {
			fl = replyFlagDone
		}
		var b []byte
		if c.extended {
			b = make([]byte, 8, 8+16*len(exts))
			binary.BigEndian.PutUint32(b, id)
			binary.BigEndian.PutUint32(b[4:], uint32(len(exts)))
			for _, e := range exts {
				b = binary.BigEndian.AppendUint64(b, e.n)
				b = binary.BigEndian.AppendUint64(b, e.flags)
			}
			c.chunkHeader(r, fl, chunkBlockExt, len(b))
		} else {
			b = make([]byte, 4, 4+8*len(exts))
			binary.BigEndian.PutUint32(b, id)
			for _, e := range exts {
				b = binary.BigEndian.AppendUint32(b, uint32(e.n))
				b = binary.BigEndian.AppendUint32(b, uint32(e.flags))
			}
			c.chunkHeader(r, fl, chunkBlockStatus, len(b))
		}
		c.bw.Write(b)
	}
	c.flush()
}
