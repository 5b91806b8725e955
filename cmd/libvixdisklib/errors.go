package main

/*
#include "shim.h"
*/
import "C"

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"sync"

	"github.com/vdisk-project/vdisk/disk"
)

// The VIX numbers the library returns (vixDiskLib.h has them all).
const (
	vixOK                   = 0
	vixFail                 = 1
	vixOutOfMemory          = 2
	vixInvalidArg           = 3
	vixFileNotFound         = 4
	vixObjectIsBusy         = 5
	vixNotSupported         = 6
	vixFileError            = 7
	vixDiskFull             = 8
	vixCancelled            = 10
	vixFileAlreadyExists    = 12
	vixFileAccessError      = 13
	vixFileAlreadyLocked    = 15
	vixBufferTooSmall       = 24
	vixObjectNotFound       = 25
	vixHostConnectionLost   = 36
	vixInvalidHandle        = 1000
	vixHostUserPerms        = 3014
	vixDiskInval            = 16000
	vixDiskNeedsRepair      = 16006
	vixDiskOutOfRange       = 16007
	vixDiskCantShrink       = 16009
	vixDiskKeyNotFound      = 16052
	vixDiskCapacityMismatch = 16067
	vixDiskParentNotAllowed = 16068
	vixDiskCantRepair       = 16062
	vixAsync                = 25000
	vixTimedOut             = 30028
	vixSSLSecurity          = 30201
)

// codeTable maps the kit's error codes to VIX numbers, one column for
// local files and one for a host, the way VDDK reports the two: a missing
// local file is VIX_E_FILE_NOT_FOUND, a missing VM, disk or snapshot of a
// host VIX_E_OBJECT_NOT_FOUND; a file's permission is
// VIX_E_FILE_ACCESS_ERROR, a host user's VIX_E_HOST_USER_PERMISSIONS; a
// locked file VIX_E_FILE_ALREADY_LOCKED, a busy host object
// VIX_E_OBJECT_IS_BUSY; a damaged image VIX_E_DISK_NEEDSREPAIR, damaged
// wire data VIX_E_FILE_ERROR.
var codeTable = map[disk.Code][2]uint64{
	disk.ErrNotFound:     {vixFileNotFound, vixObjectNotFound},
	disk.ErrBusy:         {vixFileAlreadyLocked, vixObjectIsBusy},
	disk.ErrOutOfMemory:  {vixOutOfMemory, vixOutOfMemory},
	disk.ErrPermission:   {vixFileAccessError, vixHostUserPerms},
	disk.ErrAccess:       {vixFileError, vixHostConnectionLost},
	disk.ErrNotSupported: {vixNotSupported, vixNotSupported},
	disk.ErrCorrupt:      {vixDiskNeedsRepair, vixFileError},
	disk.ErrInvalid:      {vixInvalidArg, vixInvalidArg},
	disk.ErrNoSpace:      {vixDiskFull, vixDiskFull},
}

// vixCode returns the VIX number of err; remote says whether it came from
// a host connection.
func vixCode(err error, remote bool) uint64 {
	var cv *tls.CertificateVerificationError
	var ua x509.UnknownAuthorityError
	var hn x509.HostnameError
	var ci x509.CertificateInvalidError
	switch {
	case err == nil:
		return vixOK
	case errors.Is(err, context.DeadlineExceeded):
		return vixTimedOut
	case errors.Is(err, context.Canceled):
		return vixCancelled
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return vixDiskOutOfRange
	case errors.As(err, &cv), errors.As(err, &ua), errors.As(err, &hn), errors.As(err, &ci):
		return vixSSLSecurity
	}
	col := 0
	if remote {
		col = 1
	}
	if v, ok := codeTable[disk.CodeOf(err)]; ok {
		return v[col]
	}
	return vixFail
}

// vixText is the text of each number GetErrorText knows, in vdisk's
// words.
var vixText = map[uint64]string{
	vixOK:                   "The operation was successful",
	vixFail:                 "Unknown error",
	vixOutOfMemory:          "Out of memory",
	vixInvalidArg:           "One of the parameters was invalid",
	vixFileNotFound:         "A file was not found",
	vixObjectIsBusy:         "The object is busy",
	vixNotSupported:         "The operation is not supported",
	vixFileError:            "A file access error occurred",
	vixDiskFull:             "The disk is full",
	vixCancelled:            "The operation was cancelled",
	vixFileAlreadyExists:    "The file already exists",
	vixFileAccessError:      "You do not have access rights to this file",
	vixFileAlreadyLocked:    "The file is already in use",
	vixBufferTooSmall:       "Buffer is too small",
	vixObjectNotFound:       "The object does not exist",
	vixHostConnectionLost:   "The connection to the host was lost",
	vixInvalidHandle:        "The handle is not valid",
	vixHostUserPerms:        "Insufficient permissions on the host",
	vixDiskInval:            "One of the parameters supplied is invalid",
	vixDiskNeedsRepair:      "The virtual disk needs repair",
	vixDiskOutOfRange:       "The request is outside the virtual disk",
	vixDiskCantShrink:       "The virtual disk cannot be shrunk",
	vixDiskKeyNotFound:      "The key is not in the disk database",
	vixDiskCapacityMismatch: "The parent and child capacities differ",
	vixDiskParentNotAllowed: "This disk type cannot be a child",
	vixDiskCantRepair:       "The disk is corrupted and cannot be repaired",
	vixAsync:                "The operation is in progress",
	vixTimedOut:             "Network operation timed out",
	vixSSLSecurity:          "The host certificate could not be verified",
}

// maxThreads bounds the per-thread last-error table.
const maxThreads = 4096

// lastErrors remembers the message of the last error each thread got and
// of the last error of each number, for GetErrorText.
var lastErrors = struct {
	sync.Mutex
	byThread map[uint64]lastError
	byCode   map[uint64]string
}{byThread: map[uint64]lastError{}, byCode: map[uint64]string{}}

type lastError struct {
	code uint64
	msg  string
}

// record stores err's message as the last of its number, and of the
// calling thread when onThread (the calling C thread made the call).
func record(code uint64, err error, onThread bool) {
	msg := err.Error()
	lastErrors.Lock()
	defer lastErrors.Unlock()
	lastErrors.byCode[code] = msg
	if onThread {
		if len(lastErrors.byThread) >= maxThreads {
			for k := range lastErrors.byThread {
				delete(lastErrors.byThread, k)
				break
			}
		}
		lastErrors.byThread[uint64(C.vixlib_thread_id())] = lastError{code, msg}
	}
}

// errorText is GetErrorText's string: the number's text, then the last
// message of that number on this thread, or the last anywhere.
func errorText(code uint64) string {
	c := code & 0xFFFF
	t, ok := vixText[c]
	if !ok {
		t = "Unknown error"
	}
	lastErrors.Lock()
	defer lastErrors.Unlock()
	if le, ok := lastErrors.byThread[uint64(C.vixlib_thread_id())]; ok && le.code == c {
		return t + ": " + le.msg
	}
	if m, ok := lastErrors.byCode[c]; ok {
		return t + ": " + m
	}
	return t
}
