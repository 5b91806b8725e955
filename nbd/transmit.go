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

// request is one decoded transmission request.
type request struct {
	flags  uint16
	typ    uint16
	cookie uint64
	off    uint64
	n      uint32
	buf    []byte // WRITE payload, pooled
}

// Buffer pools by power-of-two size class, 4 KiB to MaxPayload.
var bufPools [27]sync.Pool // classes up to 2^26 = 2×MaxPayload

func getBuf(n int) []byte {
	if n <= 0 {
		return nil
	}
	c := max(12, bits.Len(uint(n-1)))
	if p, ok := bufPools[c].Get().(*[]byte); ok {
		return (*p)[:n]
	}
	return make([]byte, n, 1<<c)
}

func putBuf(b []byte) {
	if cap(b) == 0 {
		return
	}
	c := bits.Len(uint(cap(b) - 1))
	if cap(b) != 1<<c || c >= len(bufPools) {
		return
	}
	b = b[:cap(b)]
	bufPools[c].Put(&b)
}

// errnoOf maps an error to the NBD errno, from one table (STYLE §4).
func errnoOf(err error) uint32 {
	switch disk.CodeOf(err) {
	case disk.ErrPermission:
		return errPerm
	case disk.ErrOutOfMemory:
		return errNoMem
	case disk.ErrNotSupported:
		return errNotSup
	case disk.ErrNoSpace:
		return errNoSpc
	case disk.ErrInvalid:
		return errInval
	}
	return errIO
}

func (c *conn) transmit(ctx context.Context) error {
	slots := make(chan struct{}, c.s.o.Workers)
	var h [28]byte
	for {
		if _, err := io.ReadFull(c.br, h[:]); err != nil {
			c.mu.Lock()
			stopping := c.stopping
			c.mu.Unlock()
			if stopping || errors.Is(err, io.EOF) {
				return errDone
			}
			return err
		}
		if binary.BigEndian.Uint32(h[:]) != magicRequest {
			return errors.New("bad request magic")
		}
		r := &request{
			flags:  binary.BigEndian.Uint16(h[4:]),
			typ:    binary.BigEndian.Uint16(h[6:]),
			cookie: binary.BigEndian.Uint64(h[8:]),
			off:    binary.BigEndian.Uint64(h[16:]),
			n:      binary.BigEndian.Uint32(h[24:]),
		}
		switch r.typ {
		case cmdDisc:
			return errDone
		case cmdWrite:
			if r.n > MaxPayload {
				// The payload cannot be skipped safely without reading
				// it; a client that ignores the advertised maximum is
				// disconnected.
				return fmt.Errorf("write of %d bytes exceeds the maximum payload", r.n)
			}
			r.buf = getBuf(int(r.n))
			if _, err := io.ReadFull(c.br, r.buf); err != nil {
				return err
			}
		}
		slots <- struct{}{}
		c.inFlight.Add(1)
		go func() {
			defer func() { <-slots; c.inFlight.Done() }()
			c.handle(ctx, r)
		}()
	}
}

func (c *conn) handle(ctx context.Context, r *request) {
	d := c.exp.Disk
	size := uint64(d.Size())
	end := r.off + uint64(r.n)
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
		defer putBuf(r.buf)
		switch {
		case r.flags&^known != 0:
			c.replyErr(r, errInval, "invalid flags")
			return
		case c.exp.ReadOnly:
			c.replyErr(r, errPerm, "export is read-only")
			return
		case !inRange:
			c.replyErr(r, errNoSpc, "write past the end of the export")
			return
		}
		_, err = d.WriteAt(r.buf, int64(r.off))
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
		known |= cmdFlagNoHole | cmdFlagFastZero
		switch {
		case r.flags&^known != 0:
			c.replyErr(r, errInval, "invalid flags")
			return
		case c.exp.ReadOnly:
			c.replyErr(r, errPerm, "export is read-only")
			return
		case !inRange:
			c.replyErr(r, errNoSpc, "write past the end of the export")
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

func (c *conn) simpleHeader(r *request, errno uint32) {
	var h [16]byte
	binary.BigEndian.PutUint32(h[0:], magicSimple)
	binary.BigEndian.PutUint32(h[4:], errno)
	binary.BigEndian.PutUint64(h[8:], r.cookie)
	c.bw.Write(h[:])
}

func (c *conn) chunkHeader(r *request, flags, typ uint16, n int) {
	var h [20]byte
	binary.BigEndian.PutUint32(h[0:], magicStructured)
	binary.BigEndian.PutUint16(h[4:], flags)
	binary.BigEndian.PutUint16(h[6:], typ)
	binary.BigEndian.PutUint64(h[8:], r.cookie)
	binary.BigEndian.PutUint32(h[16:], uint32(n))
	c.bw.Write(h[:])
}

func (c *conn) replyOK(r *request) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.simpleHeader(r, 0)
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
	buf := getBuf(int(r.n))
	defer putBuf(buf)
	if !c.structured || r.flags&cmdFlagDF != 0 || r.n == 0 {
		if _, err := d.ReadAt(buf, int64(r.off)); err != nil && !errors.Is(err, io.EOF) {
			c.replyErr(r, errnoOf(err), err.Error())
			return
		}
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.structured {
			c.chunkHeader(r, replyFlagDone, chunkOffsetData, 8+len(buf))
			var o [8]byte
			binary.BigEndian.PutUint64(o[:], r.off)
			c.bw.Write(o[:])
		} else {
			c.simpleHeader(r, 0)
		}
		c.bw.Write(buf)
		c.flush()
		return
	}
	type piece struct {
		off, n int64
		data   bool
	}
	var pieces []piece
	err := disk.Extents(ctx, d, int64(r.off), int64(r.n), func(e disk.Extent) error {
		data := e.Flags.Data()
		if k := len(pieces); k > 0 && pieces[k-1].data == data {
			pieces[k-1].n += e.Len
			return nil
		}
		pieces = append(pieces, piece{e.Off, e.Len, data})
		return nil
	})
	if err == nil {
		for _, p := range pieces {
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
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, p := range pieces {
		var fl uint16
		if i == len(pieces)-1 {
			fl = replyFlagDone
		}
		var o [12]byte
		binary.BigEndian.PutUint64(o[:], uint64(p.off))
		if p.data {
			c.chunkHeader(r, fl, chunkOffsetData, 8+int(p.n))
			c.bw.Write(o[:8])
			c.bw.Write(buf[p.off-int64(r.off) : p.off-int64(r.off)+p.n])
		} else {
			c.chunkHeader(r, fl, chunkOffsetHole, 12)
			binary.BigEndian.PutUint32(o[8:], uint32(p.n))
			c.bw.Write(o[:])
		}
	}
	c.flush()
}

// blockStatus answers BLOCK_STATUS with one chunk per selected context.
func (c *conn) blockStatus(ctx context.Context, r *request) {
	type ext struct{ n, flags uint32 }
	chunks := make(map[uint32][]ext, len(c.metaIDs))
	const maxLen = 1<<32 - 4096
	for id, mc := range c.metaIDs {
		var exts []ext
		errFull := errors.New("full")
		err := mc.Extents(ctx, int64(r.off), int64(r.n), func(e disk.Extent) error {
			for l := e.Len; l > 0; {
				n := min(l, maxLen)
				if k := len(exts); k > 0 && exts[k-1].flags == uint32(e.Flags) && uint64(exts[k-1].n)+uint64(n) <= maxLen {
					exts[k-1].n += uint32(n)
				} else {
					if len(exts) >= maxExtentsPerReply || (r.flags&cmdFlagReqOne != 0 && len(exts) == 1) {
						return errFull
					}
					exts = append(exts, ext{uint32(n), uint32(e.Flags)})
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
			exts = []ext{{r.n, 0}}
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
		c.chunkHeader(r, fl, chunkBlockStatus, 4+8*len(exts))
		b := make([]byte, 4+8*len(exts))
		binary.BigEndian.PutUint32(b, id)
		for j, e := range exts {
			binary.BigEndian.PutUint32(b[4+8*j:], e.n)
			binary.BigEndian.PutUint32(b[8+8*j:], e.flags)
		}
		c.bw.Write(b)
	}
	c.flush()
}
