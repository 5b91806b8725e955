package vdisk

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/vdisk-project/vdisk/disk"
	"github.com/vdisk-project/vdisk/format"
	"github.com/vdisk-project/vdisk/format/vmdk"
	"github.com/vdisk-project/vdisk/hostapi"
	"github.com/vdisk-project/vdisk/internal/hostclient"
	"github.com/vdisk-project/vdisk/nbd"
)

// OpenFlags modify Open (VIXDISKLIB_FLAG_OPEN_*).
type OpenFlags uint32

// The open flags.
const (
	// OpenReadOnly opens the disk read-only.
	OpenReadOnly OpenFlags = 1 << iota
	// OpenSingleLink opens only the named link of a chain, not its parents
	// (local files and direct mode; implies read-only there).
	OpenSingleLink
	// OpenUnbuffered bypasses the host page cache (O_DIRECT) where the
	// files are opened by this process (file and direct modes); buffers
	// and offsets must then be sector-aligned.
	OpenUnbuffered
)

// Attempt is one transport mode Open considered: the one used has a nil
// Err; the others say why they were skipped or failed.
type Attempt struct {
	Mode string
	Err  error
}

// Handle is an open disk (VixDiskLibHandle): a disk.Disk (ReadAt, WriteAt,
// Size, Flush, Close, and Extents, WriteZeroes and Trim) with the rest of
// VixDiskLib's per-disk calls. It is safe for concurrent use; synchronous
// and asynchronous I/O may be mixed freely (unlike VixDiskLib).
type Handle struct {
	c        *Conn
	spec     Spec
	name     string // host disk name, "" for local files
	mode     string
	attempts []Attempt
	d        disk.Disk
	local    *vmdk.Disk // local VMDK (file and direct modes)
	remote   *remoteDisk
	ro       bool
	release  func() error // ends a direct lease
	tmu      sync.Mutex
	tickets  []string // IDs of the tickets issued for the handle's connections
	sem      chan struct{}
	pending  sync.WaitGroup
	closed   atomic.Bool
}

// Open opens a disk (VixDiskLib_Open), trying the connection's transport
// modes in order. A local connection opens Spec.Path; a host connection a
// VM's disk, a named disk or a snapshot of either. Handle.TransportMode
// says which mode was used and Handle.Attempts why the others were not.
// When every mode fails the error joins their reasons.
func (c *Conn) Open(ctx context.Context, spec Spec, flags OpenFlags) (*Handle, error) {
	if c.p.ReadOnly || spec.Snapshot != "" {
		flags |= OpenReadOnly
	}
	h := &Handle{c: c, spec: spec, ro: flags&OpenReadOnly != 0, sem: make(chan struct{}, c.cfg.AsyncWorkers)}
	var errs []error
	for _, m := range strings.Split(c.p.Transports, ":") {
		err := h.try(ctx, m, flags)
		h.attempts = append(h.attempts, Attempt{Mode: m, Err: err})
		if err == nil {
			h.mode = m
			if err := c.track(h); err != nil {
				h.Close()
				return nil, err
			}
			c.log.Debug("vdisk: opened", "disk", spec.String(), "mode", m, "skipped", len(h.attempts)-1)
			return h, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		errs = append(errs, fmt.Errorf("%s: %w", m, err))
	}
	return nil, openError(spec, errs)
}

// openError reports why no mode opened spec. Its code is that of the first
// mode that applied and failed (busy is busy, a missing disk not found),
// not that of the modes that were skipped as not applying.
func openError(spec Spec, errs []error) error {
	code := disk.ErrNotSupported
	for _, err := range errs {
		var s skipError
		if !errors.As(err, &s) {
			code = disk.CodeOf(err)
			break
		}
	}
	return &disk.Error{Op: "vdisk: open " + spec.String(), Off: -1, Code: code, Err: errors.Join(errs...)}
}

// skipError marks a mode that does not apply here (ErrNotSupported).
type skipError struct{ error }

func (e skipError) Unwrap() error { return e.error }

func errSkip(format string, args ...any) error {
	return skipError{disk.Errorf(disk.ErrNotSupported, format, args...)}
}

func (h *Handle) try(ctx context.Context, mode string, flags OpenFlags) error {
	c := h.c
	switch mode {
	case ModeFile:
		if h.spec.Path == "" {
			return errSkip("not a local file")
		}
		d, _, err := format.Open(ctx, h.spec.Path, &format.OpenOptions{ReadOnly: h.ro || flags&OpenSingleLink != 0,
			SingleLink: flags&OpenSingleLink != 0, Unbuffered: flags&OpenUnbuffered != 0})
		if err != nil {
			return err
		}
		h.d = d
		h.local, _ = d.(*vmdk.Disk)
		return nil
	}
	if c.api == nil {
		return errSkip("not connected to a host")
	}
	if h.spec.Path != "" {
		return errSkip("a local path names no host disk")
	}
	if h.name == "" {
		name, err := c.api.ResolveDisk(ctx, h.spec.Disk, h.spec.VM, h.spec.Key)
		if err != nil {
			return err
		}
		h.name = name
	}
	switch mode {
	case ModeDirect:
		return h.openDirect(ctx, flags)
	case ModeNBDSSL, ModeNBD:
		if mode == ModeNBD && len(c.about.PlainNBD) == 0 {
			return errSkip("the host serves no plain NBD")
		}
		if flags&OpenSingleLink != 0 {
			return errSkip("single-link opens need file or direct mode")
		}
		dial := func(ctx context.Context) (*nbd.Client, error) {
			access := "ro"
			if !h.ro {
				access = "rw"
			}
			t, err := c.api.IssueTicket(ctx, hostclient.TicketRequest{Disk: h.name, Snapshot: h.spec.Snapshot, Mode: access, MaxConns: c.cfg.NBDConnections})
			if err != nil {
				return nil, err
			}
			// A redial's ticket replaces the last: revoke that one now,
			// and the last one when the handle closes.
			h.tmu.Lock()
			old := h.tickets
			h.tickets = []string{t.ID}
			h.tmu.Unlock()
			h.revoke(old)
			uri := t.URI
			if mode == ModeNBD {
				uri = t.PlainURI
			}
			return nbd.Dial(ctx, uri, &nbd.ClientOptions{TLSConfig: c.tls, Timeout: c.cfg.Timeout,
				Connections: c.cfg.NBDConnections, InFlight: c.cfg.NBDInFlight})
		}
		r, err := newRemoteDisk(ctx, dial, c.cfg.Retries, c.cfg.Timeout)
		if err != nil {
			return err
		}
		h.d, h.remote = r, r
		return nil
	}
	return errSkip("unknown mode")
}

// openDirect takes a direct lease and opens the datastore's files here.
func (h *Handle) openDirect(ctx context.Context, flags OpenFlags) error {
	c := h.c
	if h.spec.Snapshot == "" && h.ro {
		return errSkip("direct reads need a snapshot (the live disk changes under a reader)")
	}
	l, err := c.api.Direct(ctx, h.name, h.spec.Snapshot, !h.ro)
	if err != nil {
		return err
	}
	end := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), c.cfg.Timeout)
		defer cancel()
		return c.api.EndDirect(ctx, l.ID)
	}
	// The nonce proves that the path reaches the host's own files.
	if b, err := os.ReadFile(l.Proof); err != nil || string(b) != l.Nonce {
		end()
		return errSkip("the datastore's storage is not reachable from here")
	}
	v, err := vmdk.Open(ctx, l.Path, &vmdk.OpenOptions{ReadOnly: h.ro, SingleLink: flags&OpenSingleLink != 0,
		IgnoreCID: true, Unbuffered: flags&OpenUnbuffered != 0})
	if err != nil {
		end()
		return err
	}
	h.d, h.local, h.release = v, v, end
	return nil
}

// TransportMode returns the mode the handle uses (VixDiskLib_GetTransportMode).
func (h *Handle) TransportMode() string { return h.mode }

// Attempts returns the modes Open considered, in order, with the reason
// each unused one was skipped.
func (h *Handle) Attempts() []Attempt { return h.attempts }

// Spec returns what the handle opened.
func (h *Handle) Spec() Spec { return h.spec }

func (h *Handle) errClosed() error { return disk.Errorf(disk.ErrInvalid, "vdisk: handle closed") }

// ReadAt reads len(p) bytes at off (VixDiskLib_Read, in bytes). Unwritten
// ranges read as zeros. Reading past the end returns io.EOF with the bytes
// that exist.
func (h *Handle) ReadAt(p []byte, off int64) (int, error) {
	if h.closed.Load() {
		return 0, h.errClosed()
	}
	return h.d.ReadAt(p, off)
}

// WriteAt writes p at off (VixDiskLib_Write).
func (h *Handle) WriteAt(p []byte, off int64) (int, error) {
	if h.closed.Load() {
		return 0, h.errClosed()
	}
	if h.ro {
		return 0, disk.Errorf(disk.ErrPermission, "vdisk: %s is open read-only", h.spec)
	}
	return h.d.WriteAt(p, off)
}

// WriteZeroes makes a range read as zeros without sending zeros.
func (h *Handle) WriteZeroes(off, n int64, flags disk.ZeroFlags) error {
	if h.ro {
		return disk.Errorf(disk.ErrPermission, "vdisk: %s is open read-only", h.spec)
	}
	return disk.WriteZeroes(h.d, off, n, flags)
}

// Trim releases a range's storage; it then reads as zeros or as before.
func (h *Handle) Trim(off, n int64) error {
	if h.ro {
		return disk.Errorf(disk.ErrPermission, "vdisk: %s is open read-only", h.spec)
	}
	return disk.Trim(h.d, off, n)
}

// Extents reports allocation (see disk.Extenter).
func (h *Handle) Extents(ctx context.Context, off, n int64, fn func(disk.Extent) error) error {
	return disk.Extents(ctx, h.d, off, n, fn)
}

// SetWriteBehind turns write-behind on or off for a disk opened as a
// local file (see disk.WriteBehinder), so that Clone's final flush finds
// the data mostly written; other disks have none and report false.
func (h *Handle) SetWriteBehind(on bool) bool {
	if wb, ok := h.d.(disk.WriteBehinder); ok {
		return wb.SetWriteBehind(on)
	}
	return false
}

// Size returns the capacity in bytes.
func (h *Handle) Size() int64 { return h.d.Size() }

// ReadOnly reports whether the handle refuses writes.
func (h *Handle) ReadOnly() bool { return h.ro }

// Flush makes completed writes durable (VixDiskLib_Flush). It does not
// wait for asynchronous requests; call Wait first for that.
func (h *Handle) Flush() error {
	if h.closed.Load() {
		return h.errClosed()
	}
	return h.d.Flush()
}

// Future is an asynchronous request (VixDiskLib_ReadAsync/WriteAsync).
type Future struct {
	done chan struct{}
	err  error
}

// Wait waits for the request, or for ctx, and returns its error. When
// ctx ends first the request goes on: its buffer stays the kit's until a
// later Wait returns the request's own result (or Handle.Wait returns).
func (f *Future) Wait(ctx context.Context) error {
	select {
	case <-f.done:
		return f.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// ReadAsync starts reading len(p) bytes at off. p must stay untouched
// until the future completes. Requests on a host connection are pipelined
// on the wire; local ones run on at most Config.AsyncWorkers goroutines.
func (h *Handle) ReadAsync(p []byte, off int64) *Future { return h.async(p, off, false) }

// WriteAsync starts writing p at off; p must stay untouched until the
// future completes.
func (h *Handle) WriteAsync(p []byte, off int64) *Future { return h.async(p, off, true) }

func (h *Handle) async(p []byte, off int64, write bool) *Future {
	f := &Future{done: make(chan struct{})}
	if h.closed.Load() || (write && h.ro) {
		if write && h.ro {
			f.err = disk.Errorf(disk.ErrPermission, "vdisk: %s is open read-only", h.spec)
		} else {
			f.err = h.errClosed()
		}
		close(f.done)
		return f
	}
	h.pending.Add(1)
	if h.remote != nil {
		w := h.remote.async(p, off, write)
		// Complete in the background, bounded by the request timeout;
		// a caller's Wait only watches (its context must not end the
		// request while a reply can still write into p).
		go func() {
			defer h.pending.Done()
			f.err = w(context.Background())
			close(f.done)
		}()
		return f
	}
	h.sem <- struct{}{}
	go func() {
		defer func() { <-h.sem; h.pending.Done() }()
		if write {
			_, f.err = h.d.WriteAt(p, off)
		} else {
			_, f.err = h.d.ReadAt(p, off)
		}
		close(f.done)
	}()
	return f
}

// Wait waits until every asynchronous request of the handle has completed
// (VixDiskLib_Wait), or ctx ends.
func (h *Handle) Wait(ctx context.Context) error {
	done := make(chan struct{})
	go func() { h.pending.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Close waits for asynchronous requests, flushes and closes the handle
// (VixDiskLib_Close). A direct lease is handed back to the host.
func (h *Handle) Close() error {
	if h.closed.Swap(true) {
		return nil
	}
	h.pending.Wait()
	var errs []error
	if h.d != nil {
		errs = append(errs, h.d.Close())
	}
	if h.release != nil {
		errs = append(errs, h.release())
	}
	h.tmu.Lock()
	ids := h.tickets
	h.tickets = nil
	h.tmu.Unlock()
	h.revoke(ids)
	h.c.untrack(h)
	return errors.Join(errs...)
}

// revoke ends tickets the handle no longer uses, so that they do not count
// against the session's ticket limit until they expire. It is best effort:
// a ticket that cannot be revoked expires by itself.
func (h *Handle) revoke(ids []string) {
	if len(ids) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), h.c.cfg.Timeout)
	defer cancel()
	for _, id := range ids {
		h.c.api.RevokeTicket(ctx, id)
	}
}

// Geometry is a disk's cylinders, heads and sectors per track.
type Geometry = vmdk.Geometry

// Info describes an open disk (VixDiskLibInfo).
type Info struct {
	Capacity           int64    // bytes
	Geometry           Geometry // physical geometry (ddb.geometry.*)
	BIOSGeometry       Geometry // ddb.geometry.biosCylinders… when set, else Geometry
	Adapter            string   // ide, buslogic, lsilogic, lsisas1068, pvscsi
	Type               string   // the format: a VMDK create type or "raw"
	Links              int      // links in the chain (NumLinks)
	ParentHint         string   // parentFileNameHint of the top link
	UUID               string   // ddb.uuid
	LogicalSectorSize  int      // 512
	PhysicalSectorSize int      // 512
	Transport          string
	ReadOnly           bool
}

// Info describes the disk (VixDiskLib_GetInfo).
func (h *Handle) Info(ctx context.Context) (Info, error) {
	in := Info{Capacity: h.Size(), LogicalSectorSize: disk.SectorSize, PhysicalSectorSize: disk.SectorSize,
		Transport: h.mode, ReadOnly: h.ro, Type: "raw", Links: 1}
	switch {
	case h.local != nil:
		vi := h.local.Info()
		in.Geometry, in.BIOSGeometry, in.Adapter, in.Type = vi.Geometry, vi.Geometry, vi.Adapter, string(vi.CreateType)
		in.Links, in.ParentHint, in.UUID = vi.Links, vi.ParentHint, vi.UUID
	case h.name != "":
		d, err := h.c.api.Disk(ctx, h.name)
		if err != nil {
			return in, err
		}
		in.Geometry, in.BIOSGeometry, in.Adapter, in.Type = Geometry(d.Geometry), Geometry(d.Geometry), d.Adapter, d.Type
		in.Links, in.ParentHint, in.UUID = d.Links, d.ParentHint, d.UUID
		if h.spec.Snapshot != "" {
			for i, s := range d.Snapshots {
				if s.ID == h.spec.Snapshot {
					in.Links = i + 1 // the snapshot's chain is shorter than the live one
				}
			}
		}
	}
	if in.Geometry.Cylinders == 0 && in.Capacity > 0 {
		// Raw images have none stored: VMware's rule for ide/lsilogic.
		in.Geometry = Geometry{Cylinders: uint64(min(in.Capacity/(16*63*512), 16383)), Heads: 16, Sectors: 63}
		in.BIOSGeometry = in.Geometry
	}
	if b := h.local; b != nil {
		if v, err := b.Metadata("geometry.biosCylinders"); err == nil {
			var g Geometry
			fmt.Sscan(v, &g.Cylinders)
			if hs, err := b.Metadata("geometry.biosHeads"); err == nil {
				fmt.Sscan(hs, &g.Heads)
			}
			if ss, err := b.Metadata("geometry.biosSectors"); err == nil {
				fmt.Sscan(ss, &g.Sectors)
			}
			if g.Cylinders > 0 && g.Heads > 0 && g.Sectors > 0 {
				in.BIOSGeometry = g
			}
		}
	}
	return in, nil
}

// Block is a range of a disk in bytes.
type Block struct {
	Offset, Length int64
}

// The chunk limits of QueryAllocatedBlocks, in bytes (VixDiskLib's 128 to
// 131072 sectors).
const (
	MinChunkSize = 64 << 10
	MaxChunkSize = 64 << 20
)

// QueryAllocatedBlocks reports the chunks of [start, start+length) that
// hold data (VixDiskLib_QueryAllocatedBlocks, in bytes): each block is
// whole chunks, adjacent ones merged. chunk is a power of two between
// MinChunkSize and MaxChunkSize; start and length are multiples of it (the
// last chunk may run past the capacity). It does not depend on change
// tracking.
func (h *Handle) QueryAllocatedBlocks(ctx context.Context, start, length, chunk int64) ([]Block, error) {
	if chunk < MinChunkSize || chunk > MaxChunkSize || chunk&(chunk-1) != 0 {
		return nil, disk.Errorf(disk.ErrInvalid, "vdisk: chunk size %d must be a power of two from %d to %d bytes", chunk, MinChunkSize, MaxChunkSize)
	}
	if start < 0 || length < 0 || start%chunk != 0 || length%chunk != 0 {
		return nil, disk.Errorf(disk.ErrInvalid, "vdisk: start %d and length %d must be multiples of the chunk size %d", start, length, chunk)
	}
	size := h.Size()
	end := min(start+length, size)
	var out []Block
	if start >= end {
		return out, nil
	}
	err := h.Extents(ctx, start, end-start, func(e disk.Extent) error {
		if !e.Flags.Data() {
			return nil
		}
		a := e.Off &^ (chunk - 1)
		b := (e.End() + chunk - 1) &^ (chunk - 1)
		if n := len(out); n > 0 && out[n-1].Offset+out[n-1].Length >= a {
			out[n-1].Length = max(out[n-1].Length, b-out[n-1].Offset)
			return nil
		}
		out = append(out, Block{Offset: a, Length: b - a})
		return nil
	})
	return out, err
}

// ChangeInfo answers a changed-area query (QueryChangedDiskAreas).
type ChangeInfo = hostapi.ChangeInfo

// Area is a changed range; Zero ones read as zeros and need no reading.
type Area = hostapi.Area

// ChangedAreas reports the areas of the opened snapshot (or of the live
// disk) that changed after changeID, from start on, calling fn for each
// in order (QueryChangedDiskAreas). changeID "*" reports the areas that
// hold data. It needs a host connection and a disk with change tracking;
// an unknown or outdated change ID is ErrNotFound: take a full backup.
func (h *Handle) ChangedAreas(ctx context.Context, changeID string, start int64, fn func(Area) error) (ChangeInfo, error) {
	if h.name == "" {
		return ChangeInfo{}, disk.Errorf(disk.ErrNotSupported, "vdisk: changed areas need a disk of a host (change tracking lives there)")
	}
	return h.c.api.Changes(ctx, h.name, h.spec.Snapshot, changeID, start, fn)
}

// Metadata returns the disk database value of key, without the "ddb."
// prefix, such as "adapterType" (VixDiskLib_ReadMetadata). An unknown key
// is ErrNotFound.
func (h *Handle) Metadata(ctx context.Context, key string) (string, error) {
	m, err := h.metadata(ctx)
	if err != nil {
		return "", err
	}
	v, ok := m[strings.TrimPrefix(key, "ddb.")]
	if !ok {
		return "", disk.Errorf(disk.ErrNotFound, "vdisk: no metadata key %q", key)
	}
	return v, nil
}

// MetadataKeys lists the disk database keys (VixDiskLib_GetMetadataKeys).
func (h *Handle) MetadataKeys(ctx context.Context) ([]string, error) {
	m, err := h.metadata(ctx)
	if err != nil {
		return nil, err
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys, nil
}

func (h *Handle) metadata(ctx context.Context) (map[string]string, error) {
	switch {
	case h.local != nil:
		m := map[string]string{}
		for _, k := range h.local.MetadataKeys() {
			v, err := h.local.Metadata(k)
			if err != nil {
				return nil, err
			}
			m[strings.TrimPrefix(k, "ddb.")] = v
		}
		return m, nil
	case h.name != "":
		return h.c.api.Metadata(ctx, h.name, h.spec.Snapshot)
	}
	return nil, disk.Errorf(disk.ErrNotSupported, "vdisk: %s has no metadata (raw image)", h.spec)
}

// SetMetadata writes a disk database key (VixDiskLib_WriteMetadata).
func (h *Handle) SetMetadata(ctx context.Context, key, value string) error {
	if h.ro {
		return disk.Errorf(disk.ErrPermission, "vdisk: %s is open read-only", h.spec)
	}
	switch {
	case h.local != nil:
		return h.local.SetMetadata(key, value)
	case h.name != "":
		return h.c.api.SetMetadata(ctx, h.name, strings.TrimPrefix(key, "ddb."), value)
	}
	return disk.Errorf(disk.ErrNotSupported, "vdisk: %s has no metadata (raw image)", h.spec)
}
