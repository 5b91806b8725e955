package main

/*
#include "shim.h"
*/
import "C"

import (
	"sync/atomic"
	"unsafe"
)

// The package's tests and benchmarks call the exported functions with C
// arguments, as a C program does; a _test.go file cannot use cgo, so the
// wrappers below build those arguments. They are not part of the API.

// cCounter counts the completions of asynchronous requests in C memory,
// through the C callback vixlib_count_done.
type cCounter struct{ p *C.vixlib_counter }

func newCCounter() cCounter {
	return cCounter{(*C.vixlib_counter)(C.calloc(1, C.sizeof_vixlib_counter))}
}

func (c cCounter) done() int64 { return atomic.LoadInt64((*int64)(unsafe.Pointer(&c.p.done))) }

func (c cCounter) failed() int64 { return atomic.LoadInt64((*int64)(unsafe.Pointer(&c.p.failed))) }

func (c cCounter) free() { C.free(unsafe.Pointer(c.p)) }

// cConnect is VixDiskLib_ConnectEx with a user and password; an empty
// server connects to local files.
func cConnect(server string, port uint32, user, password, thumbprint, vmxSpec, modes string) (uintptr, uint64) {
	p := VixDiskLib_AllocateConnectParams()
	defer VixDiskLib_FreeConnectParams(p)
	var strs []*C.char
	cs := func(s string) *C.char {
		if s == "" {
			return nil
		}
		c := C.CString(s)
		strs = append(strs, c)
		return c
	}
	defer func() {
		for _, s := range strs {
			C.free(unsafe.Pointer(s))
		}
	}()
	p.serverName, p.thumbPrint, p.vmxSpec, p.port = cs(server), cs(thumbprint), cs(vmxSpec), C.uint32(port)
	p.credType = C.VIXDISKLIB_CRED_UID
	C.vixlib_set_cred(p, C.VIXLIB_UID_USER, cs(user))
	C.vixlib_set_cred(p, C.VIXLIB_UID_PASSWORD, cs(password))
	var out C.VixDiskLibConnection
	err := VixDiskLib_ConnectEx(p, 1, nil, cs(modes), &out)
	return uintptr(C.vixlib_p2u(unsafe.Pointer(out))), uint64(err)
}

func cConnection(c uintptr) C.VixDiskLibConnection {
	return C.VixDiskLibConnection(C.vixlib_u2p(C.uintptr_t(c)))
}

func cHandle(h uintptr) C.VixDiskLibHandle { return C.VixDiskLibHandle(C.vixlib_u2p(C.uintptr_t(h))) }

// cOpen is VixDiskLib_Open, read-only.
func cOpen(conn uintptr, path string) (uintptr, uint64) {
	cp := C.CString(path)
	defer C.free(unsafe.Pointer(cp))
	var out C.VixDiskLibHandle
	err := VixDiskLib_Open(cConnection(conn), cp, C.VIXDISKLIB_FLAG_OPEN_READ_ONLY, &out)
	return uintptr(C.vixlib_p2u(unsafe.Pointer(out))), uint64(err)
}

// cReadAsync is VixDiskLib_ReadAsync into C memory with vixlib_count_done
// as the callback.
func cReadAsync(h uintptr, start, n uint64, buf unsafe.Pointer, c cCounter) uint64 {
	return uint64(VixDiskLib_ReadAsync(cHandle(h), C.VixDiskLibSectorType(start), C.VixDiskLibSectorType(n),
		(*C.uint8)(buf), C.VixDiskLibCompletionCB(C.vixlib_count_done), unsafe.Pointer(c.p)))
}

// cRead is VixDiskLib_Read into C memory.
func cRead(h uintptr, start, n uint64, buf unsafe.Pointer) uint64 {
	return uint64(VixDiskLib_Read(cHandle(h), C.VixDiskLibSectorType(start), C.VixDiskLibSectorType(n), (*C.uint8)(buf)))
}

// cThreadReads issues requests ReadAsync calls of sectors each from a C
// thread, depth in flight, as nbdkit's VDDK plugin does, then Waits. It
// returns how many failed and the first error of a call.
func cThreadReads(h uintptr, requests, sectors, slots uint64, depth int, bufs unsafe.Pointer) (failed, err uint64) {
	var f C.uint64_t
	var e C.VixError
	if C.vixlib_thread_reads(cHandle(h), C.uint64_t(requests), C.uint64_t(sectors), C.uint64_t(slots), C.int(depth),
		(*C.uint8_t)(bufs), &f, &e) != 0 && e == vixOK {
		e = vixFail
	}
	return uint64(f), uint64(e)
}

func cWait(h uintptr) uint64       { return uint64(VixDiskLib_Wait(cHandle(h))) }
func cClose(h uintptr) uint64      { return uint64(VixDiskLib_Close(cHandle(h))) }
func cDisconnect(c uintptr) uint64 { return uint64(VixDiskLib_Disconnect(cConnection(c))) }

func cMalloc(n int) unsafe.Pointer { return C.malloc(C.size_t(n)) }
func cFree(p unsafe.Pointer)       { C.free(p) }

// cBytes is n bytes of C memory at p.
func cBytes(p unsafe.Pointer, n int) []byte { return unsafe.Slice((*byte)(p), n) }

// The slow test logger of cthread.c: installSlowLogger makes it the
// InitEx callbacks; markExitReturned tells it Exit has returned;
// lateLogCalls counts the calls running or started after that.
func installSlowLogger()     { C.vixlib_test_install_slow_logger() }
func markExitReturned()      { C.vixlib_test_mark_exit_returned() }
func lateLogCalls() int64    { return int64(C.vixlib_test_late_calls()) }
func slowLoggerCalls() int64 { return int64(C.vixlib_test_calls()) }
