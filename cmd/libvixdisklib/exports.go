package main

/*
#include "shim.h"
#include <string.h>
*/
import "C"

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime/debug"
	"sync"
	"unsafe"

	"github.com/vdisk-project/vdisk"
	"github.com/vdisk-project/vdisk/disk"
)

func unsafePointer(p *C.char) unsafe.Pointer { return unsafe.Pointer(p) }

// guard turns a panic in the library into VIX_E_FAIL and a message to the
// panic callback, rather than a crash of the caller's process.
func guard(ret *C.VixError) {
	if r := recover(); r != nil {
		msg := fmt.Sprintf("VixDiskLib: internal error: %v\n%s", r, debug.Stack())
		cs := C.CString(msg)
		if C.vixlib_log(C.VIXLIB_PANIC, cs) == 0 {
			C.vixlib_log(C.VIXLIB_WARN, cs)
		}
		C.free(unsafe.Pointer(cs))
		if ret != nil {
			*ret = vixFail
		}
	}
}

// fail returns err's VIX number and remembers its message for the calling
// thread's GetErrorText.
func fail(err error, remote bool) C.VixError {
	code := vixCode(err, remote)
	if errors.Is(err, errOutOfRange) {
		code = vixDiskOutOfRange
	}
	record(code, err, true)
	if code == vixNotSupported {
		// What vdisk cannot do is said where the program's log shows it.
		logger.Warn("not supported", "reason", err.Error())
	} else {
		logger.Debug("call failed", "vix", code, "err", err.Error())
	}
	return C.VixError(code)
}

func invalid(format string, args ...any) C.VixError {
	return fail(disk.Errorf(disk.ErrInvalid, "vixdisklib: "+format, args...), false)
}

func goString(p *C.char) string {
	if p == nil {
		return ""
	}
	return C.GoString(p)
}

func connOf(p C.VixDiskLibConnection) (*connection, C.VixError) {
	v, ok := reg.get(uintptr(C.vixlib_p2u(unsafe.Pointer(p))))
	c, isConn := v.(*connection)
	if !ok || !isConn {
		record(vixInvalidHandle, disk.Errorf(disk.ErrInvalid, "vixdisklib: not a connection"), true)
		return nil, vixInvalidHandle
	}
	return c, vixOK
}

func handleOf(p C.VixDiskLibHandle) (*diskHandle, C.VixError) {
	v, ok := reg.get(uintptr(C.vixlib_p2u(unsafe.Pointer(p))))
	h, isHandle := v.(*diskHandle)
	if !ok || !isHandle {
		record(vixInvalidHandle, disk.Errorf(disk.ErrInvalid, "vixdisklib: not a disk handle"), true)
		return nil, vixInvalidHandle
	}
	return h, vixOK
}

// ---- library ---------------------------------------------------------------

//export VixDiskLib_InitEx
func VixDiskLib_InitEx(major, minor C.uint32, log, warn, panicFn *C.VixDiskLibGenericLogFunc, libDir, configFile *C.char) (ret C.VixError) {
	defer guard(&ret)
	if err := initLib(uint32(major), uint32(minor), log, warn, panicFn, goString(libDir), goString(configFile)); err != nil {
		return fail(err, false)
	}
	return vixOK
}

//export VixDiskLib_Init
func VixDiskLib_Init(major, minor C.uint32, log, warn, panicFn *C.VixDiskLibGenericLogFunc, libDir *C.char) C.VixError {
	return VixDiskLib_InitEx(major, minor, log, warn, panicFn, libDir, nil)
}

//export VixDiskLib_Exit
func VixDiskLib_Exit() {
	defer guard(nil)
	exitLib()
}

// staticStrings holds the C strings the library returns and never frees
// (ListTransportModes, GetTransportMode).
var staticStrings = struct {
	sync.Mutex
	m map[string]*C.char
}{m: map[string]*C.char{}}

func staticString(s string) *C.char {
	staticStrings.Lock()
	defer staticStrings.Unlock()
	p, ok := staticStrings.m[s]
	if !ok {
		p = C.CString(s)
		staticStrings.m[s] = p
	}
	return p
}

// transportModes is what ListTransportModes reports, in VDDK's names:
// hotadd and san are both vdisk's direct mode.
const transportModes = "file:nbdssl:nbd:hotadd:san"

//export VixDiskLib_ListTransportModes
func VixDiskLib_ListTransportModes() *C.char { return staticString(transportModes) }

//export VixDiskLib_GetErrorText
func VixDiskLib_GetErrorText(err C.VixError, locale *C.char) *C.char {
	defer guard(nil)
	return C.CString(errorText(uint64(err)))
}

//export VixDiskLib_FreeErrorText
func VixDiskLib_FreeErrorText(msg *C.char) {
	C.free(unsafe.Pointer(msg))
}

// ---- connect parameters ----------------------------------------------------

// ownedParams records the VixDiskLibConnectParams the library allocated,
// and whether their strings are the library's (GetConnectParams) or the
// caller's (AllocateConnectParams).
var ownedParams = struct {
	sync.Mutex
	m map[uintptr]bool
}{m: map[uintptr]bool{}}

//export VixDiskLib_AllocateConnectParams
func VixDiskLib_AllocateConnectParams() *C.VixDiskLibConnectParams {
	p := (*C.VixDiskLibConnectParams)(C.calloc(1, C.sizeof_VixDiskLibConnectParams))
	if p == nil {
		return nil
	}
	p.specType = C.VIXDISKLIB_SPEC_VMX
	ownedParams.Lock()
	ownedParams.m[uintptr(C.vixlib_p2u(unsafe.Pointer(p)))] = false
	ownedParams.Unlock()
	return p
}

//export VixDiskLib_FreeConnectParams
func VixDiskLib_FreeConnectParams(p *C.VixDiskLibConnectParams) {
	if p == nil {
		return
	}
	u := uintptr(C.vixlib_p2u(unsafe.Pointer(p)))
	ownedParams.Lock()
	strs, ok := ownedParams.m[u]
	delete(ownedParams.m, u)
	ownedParams.Unlock()
	if !ok {
		logger.Warn("FreeConnectParams of parameters the library did not allocate ignored")
		return
	}
	if strs {
		for _, s := range []*C.char{p.vmxSpec, p.serverName, p.thumbPrint,
			C.vixlib_cred(p, C.VIXLIB_UID_USER), C.vixlib_cred(p, C.VIXLIB_UID_PASSWORD)} {
			C.free(unsafe.Pointer(s))
		}
		if p.specType == C.VIXDISKLIB_SPEC_VSTORAGE_OBJECT {
			for _, w := range []C.int{C.VIXLIB_FCD_ID, C.VIXLIB_FCD_DATASTORE, C.VIXLIB_FCD_SNAPSHOT} {
				C.free(unsafe.Pointer(C.vixlib_fcd(p, w)))
			}
		}
	}
	C.free(unsafe.Pointer(p))
}

// ownParams reports whether the library allocated p.
func ownParams(p *C.VixDiskLibConnectParams) bool {
	ownedParams.Lock()
	defer ownedParams.Unlock()
	_, ok := ownedParams.m[uintptr(C.vixlib_p2u(unsafe.Pointer(p)))]
	return ok
}

// readParams copies C connect parameters; nil means local.
func readParams(p *C.VixDiskLibConnectParams) params {
	if p == nil {
		return params{}
	}
	out := params{vmxSpec: goString(p.vmxSpec), serverName: goString(p.serverName), thumbprint: goString(p.thumbPrint),
		credType: int(p.credType), port: uint32(p.port), nfcHostPort: uint32(p.nfcHostPort)}
	if out.serverName == "" {
		return out
	}
	if ownParams(p) && p.specType == C.VIXDISKLIB_SPEC_VSTORAGE_OBJECT {
		// Only parameters from AllocateConnectParams have the spec
		// fields: a caller's own struct may be VDDK 6.5's, shorter.
		out.fcdID = goString(C.vixlib_fcd(p, C.VIXLIB_FCD_ID))
		out.fcdDatastore = goString(C.vixlib_fcd(p, C.VIXLIB_FCD_DATASTORE))
		out.fcdSnapshot = goString(C.vixlib_fcd(p, C.VIXLIB_FCD_SNAPSHOT))
	}
	switch out.credType {
	case credUID:
		out.user = goString(C.vixlib_cred(p, C.VIXLIB_UID_USER))
		out.password = goString(C.vixlib_cred(p, C.VIXLIB_UID_PASSWORD))
	case credSessionID:
		out.cookie = goString(C.vixlib_cred(p, C.VIXLIB_SID_COOKIE))
		out.user = goString(C.vixlib_cred(p, C.VIXLIB_SID_USER))
		out.key = goString(C.vixlib_cred(p, C.VIXLIB_SID_KEY))
	}
	return out
}

//export VixDiskLib_GetConnectParams
func VixDiskLib_GetConnectParams(conn C.VixDiskLibConnection, out **C.VixDiskLibConnectParams) (ret C.VixError) {
	defer guard(&ret)
	c, e := connOf(conn)
	if e != vixOK {
		return e
	}
	if out == nil {
		return invalid("GetConnectParams: no result pointer")
	}
	p := (*C.VixDiskLibConnectParams)(C.calloc(1, C.sizeof_VixDiskLibConnectParams))
	if p == nil {
		return vixOutOfMemory
	}
	cs := func(s string) *C.char {
		if s == "" {
			return nil
		}
		return C.CString(s)
	}
	p.vmxSpec, p.serverName, p.thumbPrint = cs(c.p.vmxSpec), cs(c.p.serverName), cs(c.p.thumbprint)
	p.port, p.nfcHostPort = C.uint32(c.p.port), C.uint32(c.p.nfcHostPort)
	p.specType = C.VIXDISKLIB_SPEC_VMX
	if c.p.fcdID != "" {
		p.specType = C.VIXDISKLIB_SPEC_VSTORAGE_OBJECT
		C.vixlib_set_fcd(p, C.VIXLIB_FCD_ID, cs(c.p.fcdID))
		C.vixlib_set_fcd(p, C.VIXLIB_FCD_DATASTORE, cs(c.p.fcdDatastore))
		C.vixlib_set_fcd(p, C.VIXLIB_FCD_SNAPSHOT, cs(c.p.fcdSnapshot))
	}
	if c.p.serverName != "" {
		// The password is not handed back.
		p.credType = C.VIXDISKLIB_CRED_UID
		C.vixlib_set_cred(p, C.VIXLIB_UID_USER, cs(c.p.user))
	}
	ownedParams.Lock()
	ownedParams.m[uintptr(C.vixlib_p2u(unsafe.Pointer(p)))] = true
	ownedParams.Unlock()
	*out = p
	return vixOK
}

// ---- connections -------------------------------------------------------------

//export VixDiskLib_Connect
func VixDiskLib_Connect(p *C.VixDiskLibConnectParams, out *C.VixDiskLibConnection) C.VixError {
	return VixDiskLib_ConnectEx(p, 0, nil, nil, out)
}

//export VixDiskLib_ConnectEx
func VixDiskLib_ConnectEx(p *C.VixDiskLibConnectParams, readOnly C.Bool, snapshotRef, modes *C.char, out *C.VixDiskLibConnection) (ret C.VixError) {
	defer guard(&ret)
	if out == nil {
		return invalid("ConnectEx: no result pointer")
	}
	*out = nil
	gp := readParams(p)
	if p != nil && p.specType == C.VIXDISKLIB_SPEC_VSTORAGE_OBJECT && (gp.fcdID == "" || gp.serverName == "") {
		return invalid("ConnectEx: a first class disk spec needs parameters from VixDiskLib_AllocateConnectParams, a serverName and spec.vStorageObjSpec.id")
	}
	c, err := connect(context.Background(), gp, readOnly != 0, goString(snapshotRef), goString(modes))
	if err != nil {
		return fail(err, gp.serverName != "")
	}
	h := reg.add(c)
	*out = C.VixDiskLibConnection(C.vixlib_u2p(C.uintptr_t(h)))
	logger.Info("connected", "server", gp.serverName, "vm", c.vm, "fcd", c.fcd, "snapshot", c.snapshot, "transports", c.modes)
	return vixOK
}

//export VixDiskLib_Disconnect
func VixDiskLib_Disconnect(conn C.VixDiskLibConnection) (ret C.VixError) {
	defer guard(&ret)
	v, ok := reg.remove(uintptr(C.vixlib_p2u(unsafe.Pointer(conn))))
	c, isConn := v.(*connection)
	if !ok || !isConn {
		return vixInvalidHandle
	}
	c.mu.Lock()
	hs := make([]*diskHandle, 0, len(c.handles))
	for h := range c.handles {
		hs = append(hs, h)
	}
	c.mu.Unlock()
	reg.mu.Lock()
	for k, v := range reg.live {
		for _, h := range hs {
			if v == h {
				delete(reg.live, k)
				k.Delete()
			}
		}
	}
	reg.mu.Unlock()
	if err := c.close(); err != nil {
		return fail(err, c.remote())
	}
	return vixOK
}

// ---- open, info, close -------------------------------------------------------

//export VixDiskLib_Open
func VixDiskLib_Open(conn C.VixDiskLibConnection, path *C.char, flags C.uint32, out *C.VixDiskLibHandle) (ret C.VixError) {
	defer guard(&ret)
	c, e := connOf(conn)
	if e != vixOK {
		return e
	}
	if out == nil {
		return invalid("Open: no result pointer")
	}
	*out = nil
	name := goString(path)
	ctx := context.Background()
	spec, err := c.spec(ctx, name)
	if err != nil {
		return fail(err, c.remote())
	}
	var kf vdisk.OpenFlags
	if flags&C.VIXDISKLIB_FLAG_OPEN_READ_ONLY != 0 {
		kf |= vdisk.OpenReadOnly
	}
	if flags&C.VIXDISKLIB_FLAG_OPEN_SINGLE_LINK != 0 {
		kf |= vdisk.OpenSingleLink
	}
	if flags&C.VIXDISKLIB_FLAG_OPEN_UNBUFFERED != 0 {
		kf |= vdisk.OpenUnbuffered
	}
	if flags&C.VIXDISKLIB_FLAG_OPEN_COMPRESSION_MASK != 0 {
		logger.Info("wire compression flags ignored: vdisk's NBD carries data uncompressed", "flags", uint32(flags))
	}
	kh, err := c.conn.Open(ctx, spec, kf)
	if err != nil && kf&vdisk.OpenReadOnly == 0 && spec.Path != "" && disk.CodeOf(err) == disk.ErrPermission {
		// A streamOptimized disk is written only while it is made; VDDK
		// opens it anyway and refuses the writes. So does vdisk.
		if ro, rerr := c.conn.Open(ctx, spec, kf|vdisk.OpenReadOnly); rerr == nil {
			if in, ierr := ro.Info(ctx); ierr == nil && in.Type == "streamOptimized" {
				logger.Info("streamOptimized disk opened read-only", "disk", name)
				kh, err, kf = ro, nil, kf|vdisk.OpenReadOnly
			} else {
				ro.Close()
			}
		}
	}
	if err != nil {
		return fail(err, c.remote())
	}
	h := &diskHandle{c: c, h: kh, path: name, spec: spec, flags: kf,
		slots: make(chan struct{}, asyncSlots(c.cfg, kh.TransportMode()))}
	if kf&vdisk.OpenReadOnly == 0 {
		if in, err := kh.Info(ctx); err == nil {
			h.zeroes = sparseTypes[in.Type]
		}
	}
	c.mu.Lock()
	c.handles[h] = true
	c.mu.Unlock()
	ch := reg.add(h)
	*out = C.VixDiskLibHandle(C.vixlib_u2p(C.uintptr_t(ch)))
	for _, a := range kh.Attempts() {
		if a.Err != nil {
			logger.Info("transport mode skipped", "disk", name, "mode", vddkModeName(a.Mode), "reason", a.Err.Error())
		}
	}
	logger.Info("opened", "disk", name, "transport", vddkModeName(kh.TransportMode()))
	return vixOK
}

//export VixDiskLib_Close
func VixDiskLib_Close(hp C.VixDiskLibHandle) (ret C.VixError) {
	defer guard(&ret)
	v, ok := reg.remove(uintptr(C.vixlib_p2u(unsafe.Pointer(hp))))
	h, isHandle := v.(*diskHandle)
	if !ok || !isHandle {
		return vixInvalidHandle
	}
	if err := h.close(); err != nil {
		return fail(err, h.remote())
	}
	return vixOK
}

//export VixDiskLib_GetTransportMode
func VixDiskLib_GetTransportMode(hp C.VixDiskLibHandle) *C.char {
	defer guard(nil)
	h, e := handleOf(hp)
	if e != vixOK {
		return nil
	}
	return staticString(vddkModeName(h.kit().TransportMode()))
}

// adapterTypes maps vdisk's adapter names to VixDiskLibAdapterType; the
// adapters VDDK has no number for are VIXDISKLIB_ADAPTER_UNKNOWN (their
// name is in the adapterType metadata key).
var adapterTypes = map[string]C.VixDiskLibAdapterType{
	"ide":      C.VIXDISKLIB_ADAPTER_IDE,
	"buslogic": C.VIXDISKLIB_ADAPTER_SCSI_BUSLOGIC,
	"lsilogic": C.VIXDISKLIB_ADAPTER_SCSI_LSILOGIC,
}

func u32(x uint64) C.uint32 {
	return C.uint32(min(x, 1<<32-1))
}

//export VixDiskLib_GetInfo
func VixDiskLib_GetInfo(hp C.VixDiskLibHandle, out **C.VixDiskLibInfo) (ret C.VixError) {
	defer guard(&ret)
	h, e := handleOf(hp)
	if e != vixOK {
		return e
	}
	if out == nil {
		return invalid("GetInfo: no result pointer")
	}
	in, err := h.kit().Info(context.Background())
	if err != nil {
		return fail(err, h.remote())
	}
	p := (*C.VixDiskLibInfo)(C.calloc(1, C.sizeof_VixDiskLibInfo))
	if p == nil {
		return vixOutOfMemory
	}
	p.biosGeo = C.VixDiskLibGeometry{cylinders: u32(in.BIOSGeometry.Cylinders), heads: C.uint32(in.BIOSGeometry.Heads), sectors: C.uint32(in.BIOSGeometry.Sectors)}
	p.physGeo = C.VixDiskLibGeometry{cylinders: u32(in.Geometry.Cylinders), heads: C.uint32(in.Geometry.Heads), sectors: C.uint32(in.Geometry.Sectors)}
	p.capacity = C.VixDiskLibSectorType(in.Capacity / disk.SectorSize)
	p.adapterType = C.VIXDISKLIB_ADAPTER_UNKNOWN
	if a, ok := adapterTypes[in.Adapter]; ok {
		p.adapterType = a
	}
	p.numLinks = C.int(in.Links)
	if in.ParentHint != "" {
		p.parentFileNameHint = C.CString(in.ParentHint)
	}
	if in.UUID != "" {
		p.uuid = C.CString(in.UUID)
	}
	p.logicalSectorSize = C.uint32(in.LogicalSectorSize)
	p.physicalSectorSize = C.uint32(in.PhysicalSectorSize)
	*out = p
	return vixOK
}

//export VixDiskLib_FreeInfo
func VixDiskLib_FreeInfo(p *C.VixDiskLibInfo) {
	if p == nil {
		return
	}
	C.free(unsafe.Pointer(p.parentFileNameHint))
	C.free(unsafe.Pointer(p.uuid))
	C.free(unsafe.Pointer(p))
}

// ---- data path ---------------------------------------------------------------

func cbytes(p unsafe.Pointer, n int64) []byte {
	if n == 0 {
		return nil
	}
	return unsafe.Slice((*byte)(p), n)
}

// ioArgs checks a data call's handle, sector range and buffer and returns
// the handle, the byte offset and the caller's buffer as a slice.
func ioArgs(hp C.VixDiskLibHandle, start, n C.VixDiskLibSectorType, buf *C.uint8, call string) (*diskHandle, int64, []byte, C.VixError) {
	h, e := handleOf(hp)
	if e != vixOK {
		return nil, 0, nil, e
	}
	off, length, err := h.sectors(uint64(start), uint64(n))
	if err != nil {
		return nil, 0, nil, fail(err, false)
	}
	if buf == nil && length > 0 {
		return nil, 0, nil, invalid(call + ": no buffer")
	}
	return h, off, cbytes(unsafe.Pointer(buf), length), vixOK
}

//export VixDiskLib_Read
func VixDiskLib_Read(hp C.VixDiskLibHandle, start, n C.VixDiskLibSectorType, buf *C.uint8) (ret C.VixError) {
	defer guard(&ret)
	h, off, p, e := ioArgs(hp, start, n, buf, "Read")
	if e != vixOK {
		return e
	}
	if err := h.readAt(p, off); err != nil {
		return fail(err, h.remote())
	}
	return vixOK
}

//export VixDiskLib_Write
func VixDiskLib_Write(hp C.VixDiskLibHandle, start, n C.VixDiskLibSectorType, buf *C.uint8) (ret C.VixError) {
	defer guard(&ret)
	h, off, p, e := ioArgs(hp, start, n, buf, "Write")
	if e != vixOK {
		return e
	}
	if err := h.writeAt(p, off); err != nil {
		return fail(err, h.remote())
	}
	return vixOK
}

//export VixDiskLib_ReadAsync
func VixDiskLib_ReadAsync(hp C.VixDiskLibHandle, start, n C.VixDiskLibSectorType, buf *C.uint8, cb C.VixDiskLibCompletionCB, data unsafe.Pointer) (ret C.VixError) {
	defer guard(&ret)
	return asyncIO(hp, start, n, buf, cb, data, false)
}

//export VixDiskLib_WriteAsync
func VixDiskLib_WriteAsync(hp C.VixDiskLibHandle, start, n C.VixDiskLibSectorType, buf *C.uint8, cb C.VixDiskLibCompletionCB, data unsafe.Pointer) (ret C.VixError) {
	defer guard(&ret)
	return asyncIO(hp, start, n, buf, cb, data, true)
}

func asyncIO(hp C.VixDiskLibHandle, start, n C.VixDiskLibSectorType, buf *C.uint8, cb C.VixDiskLibCompletionCB, data unsafe.Pointer, write bool) C.VixError {
	h, off, p, e := ioArgs(hp, start, n, buf, "asynchronous I/O")
	if e != vixOK {
		return e
	}
	h.async(p, off, write, cb, data)
	return vixAsync
}

//export VixDiskLib_Wait
func VixDiskLib_Wait(hp C.VixDiskLibHandle) (ret C.VixError) {
	defer guard(&ret)
	h, e := handleOf(hp)
	if e != vixOK {
		return e
	}
	h.pending.wait()
	return vixOK
}

//export VixDiskLib_Flush
func VixDiskLib_Flush(hp C.VixDiskLibHandle) (ret C.VixError) {
	defer guard(&ret)
	h, e := handleOf(hp)
	if e != vixOK {
		return e
	}
	if h.kit().ReadOnly() {
		return vixOK
	}
	if err := h.kit().Flush(); err != nil {
		return fail(err, h.remote())
	}
	return vixOK
}

//export VixDiskLib_QueryAllocatedBlocks
func VixDiskLib_QueryAllocatedBlocks(hp C.VixDiskLibHandle, start, n, chunk C.VixDiskLibSectorType, out **C.VixDiskLibBlockList) (ret C.VixError) {
	defer guard(&ret)
	h, e := handleOf(hp)
	if e != vixOK {
		return e
	}
	if out == nil {
		return invalid("QueryAllocatedBlocks: no result pointer")
	}
	if chunk < C.VIXDISKLIB_MIN_CHUNK_SIZE || chunk > C.VIXDISKLIB_MAX_CHUNK_SIZE {
		return invalid("QueryAllocatedBlocks: chunk size %d sectors is outside %d..%d", uint64(chunk), C.VIXDISKLIB_MIN_CHUNK_SIZE, C.VIXDISKLIB_MAX_CHUNK_SIZE)
	}
	if uint64(n)/uint64(chunk) > C.VIXDISKLIB_MAX_CHUNK_NUMBER {
		return invalid("QueryAllocatedBlocks: %d sectors are more than %d chunks of %d", uint64(n), C.VIXDISKLIB_MAX_CHUNK_NUMBER, uint64(chunk))
	}
	size := uint64(h.kit().Size()) / disk.SectorSize
	if uint64(start) > size || uint64(n) > size+uint64(chunk) || uint64(start)+uint64(n) > size+uint64(chunk) {
		return fail(disk.Errorf(disk.ErrInvalid, "vixdisklib: QueryAllocatedBlocks: sectors %d+%d are past the end (%d): %w",
			uint64(start), uint64(n), size, errOutOfRange), false)
	}
	bs, err := h.kit().QueryAllocatedBlocks(context.Background(), int64(start)*disk.SectorSize, int64(n)*disk.SectorSize, int64(chunk)*disk.SectorSize)
	if err != nil {
		return fail(err, h.remote())
	}
	var one C.VixDiskLibBlockList
	head := C.size_t(unsafe.Offsetof(one.blocks))
	bl := (*C.VixDiskLibBlockList)(C.calloc(1, head+C.size_t(max(len(bs), 1))*C.sizeof_VixDiskLibBlock))
	if bl == nil {
		return vixOutOfMemory
	}
	bl.numBlocks = C.uint32(len(bs))
	blocks := unsafe.Slice((*C.VixDiskLibBlock)(unsafe.Pointer(&bl.blocks[0])), max(len(bs), 1))
	for i, b := range bs {
		blocks[i].offset = C.VixDiskLibSectorType(b.Offset / disk.SectorSize)
		blocks[i].length = C.VixDiskLibSectorType(b.Length / disk.SectorSize)
	}
	*out = bl
	return vixOK
}

//export VixDiskLib_FreeBlockList
func VixDiskLib_FreeBlockList(bl *C.VixDiskLibBlockList) C.VixError {
	C.free(unsafe.Pointer(bl))
	return vixOK
}

// ---- metadata ------------------------------------------------------------------

// copyOut implements VDDK's buffer protocol: requiredLen always gets the
// size needed; a missing or small buffer is VIX_E_BUFFER_TOOSMALL and
// left untouched.
func copyOut(b []byte, buf *C.char, bufLen C.size_t, required *C.size_t) C.VixError {
	if required != nil {
		*required = C.size_t(len(b))
	}
	if buf == nil || int(bufLen) < len(b) {
		record(vixBufferTooSmall, disk.Errorf(disk.ErrInvalid, "vixdisklib: %d bytes needed", len(b)), true)
		return vixBufferTooSmall
	}
	copy(unsafe.Slice((*byte)(unsafe.Pointer(buf)), len(b)), b)
	return vixOK
}

//export VixDiskLib_ReadMetadata
func VixDiskLib_ReadMetadata(hp C.VixDiskLibHandle, key *C.char, buf *C.char, bufLen C.size_t, required *C.size_t) (ret C.VixError) {
	defer guard(&ret)
	h, e := handleOf(hp)
	if e != vixOK {
		return e
	}
	k := goString(key)
	if k == "" {
		return invalid("ReadMetadata: no key")
	}
	v, err := h.kit().Metadata(context.Background(), k)
	if err != nil {
		if disk.CodeOf(err) == disk.ErrNotFound {
			record(vixDiskKeyNotFound, err, true)
			return vixDiskKeyNotFound
		}
		return fail(err, h.remote())
	}
	return copyOut(append([]byte(v), 0), buf, bufLen, required)
}

//export VixDiskLib_GetMetadataKeys
func VixDiskLib_GetMetadataKeys(hp C.VixDiskLibHandle, buf *C.char, bufLen C.size_t, required *C.size_t) (ret C.VixError) {
	defer guard(&ret)
	h, e := handleOf(hp)
	if e != vixOK {
		return e
	}
	keys, err := h.kit().MetadataKeys(context.Background())
	if err != nil {
		return fail(err, h.remote())
	}
	var b []byte
	for _, k := range keys {
		b = append(append(b, k...), 0)
	}
	b = append(b, 0)
	return copyOut(b, buf, bufLen, required)
}

//export VixDiskLib_WriteMetadata
func VixDiskLib_WriteMetadata(hp C.VixDiskLibHandle, key, val *C.char) (ret C.VixError) {
	defer guard(&ret)
	h, e := handleOf(hp)
	if e != vixOK {
		return e
	}
	k := goString(key)
	if k == "" || val == nil {
		return invalid("WriteMetadata: no key or value")
	}
	if err := h.kit().SetMetadata(context.Background(), k, goString(val)); err != nil {
		return fail(err, h.remote())
	}
	return vixOK
}

// ---- housekeeping ---------------------------------------------------------------

//export VixDiskLib_Rename
func VixDiskLib_Rename(src, dst *C.char) (ret C.VixError) {
	defer guard(&ret)
	if err := rename(context.Background(), goString(src), goString(dst)); err != nil {
		return fail(err, false)
	}
	return vixOK
}

//export VixDiskLib_Unlink
func VixDiskLib_Unlink(conn C.VixDiskLibConnection, path *C.char) (ret C.VixError) {
	defer guard(&ret)
	c, e := connOf(conn)
	if e != vixOK {
		return e
	}
	if c.remote() {
		return fail(disk.Errorf(disk.ErrNotSupported, "vixdisklib: Unlink works on local files; host disks are deleted through the host (vdisk disk delete)"), true)
	}
	p := goString(path)
	if _, err := os.Lstat(p); err != nil {
		return fail(disk.Wrap(err, "vixdisklib: unlink", p, -1), false)
	}
	if err := c.conn.Unlink(context.Background(), vdisk.Spec{Path: p}); err != nil {
		return fail(err, false)
	}
	return vixOK
}

// ---- host coordination ------------------------------------------------------

//export VixDiskLib_PrepareForAccess
func VixDiskLib_PrepareForAccess(p *C.VixDiskLibConnectParams, identity *C.char) (ret C.VixError) {
	defer guard(&ret)
	gp := readParams(p)
	if err := prepareForAccess(context.Background(), gp, goString(identity)); err != nil {
		return fail(err, gp.serverName != "")
	}
	return vixOK
}

//export VixDiskLib_EndAccess
func VixDiskLib_EndAccess(p *C.VixDiskLibConnectParams, identity *C.char) (ret C.VixError) {
	defer guard(&ret)
	gp := readParams(p)
	if err := endAccess(context.Background(), gp, goString(identity)); err != nil {
		return fail(err, gp.serverName != "")
	}
	return vixOK
}

//export VixDiskLib_Cleanup
func VixDiskLib_Cleanup(p *C.VixDiskLibConnectParams, cleaned, remaining *C.uint32) (ret C.VixError) {
	defer guard(&ret)
	if cleaned != nil {
		*cleaned = 0
	}
	if remaining != nil {
		*remaining = 0
	}
	gp := readParams(p)
	if gp.serverName == "" {
		return vixOK // local: nothing is left behind
	}
	if gp.vmxSpec != "" {
		return invalid("Cleanup: vmxSpec must be NULL")
	}
	ctx := context.Background()
	c, err := connect(ctx, gp, true, "", "")
	if err != nil {
		return fail(err, true)
	}
	defer c.close()
	rep, err := c.conn.Cleanup(ctx, false)
	if err != nil {
		return fail(err, true)
	}
	if cleaned != nil {
		*cleaned = C.uint32(len(rep.Snapshots) + len(rep.Leases) + len(rep.Stray))
	}
	return vixOK
}
