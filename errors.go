package vdisk

import (
	"context"
	"errors"
	"fmt"

	"github.com/vdisk-project/vdisk/disk"
)

// The error codes, re-exported from package disk. Every error the kit
// returns matches one of them with errors.Is, and the standard library's
// equivalents too (ErrNotFound matches fs.ErrNotExist, ErrPermission
// fs.ErrPermission, ErrNotSupported errors.ErrUnsupported).
const (
	ErrNotFound     = disk.ErrNotFound     // VIX_E_FILE_NOT_FOUND: no such disk, snapshot, user or change ID
	ErrBusy         = disk.ErrBusy         // VIX_E_OBJECT_IS_BUSY: locked, in use or a limit reached; retry later
	ErrOutOfMemory  = disk.ErrOutOfMemory  // VIX_E_OUT_OF_MEMORY: a memory budget refused
	ErrPermission   = disk.ErrPermission   // VIX_E_FILE_ACCESS_ERROR / NOT_PERMITTED: bad credentials, ticket or privilege
	ErrAccess       = disk.ErrAccess       // VIX_E_FILE_ERROR / HOST_* : I/O, network or TLS failure
	ErrNotSupported = disk.ErrNotSupported // VIX_E_NOT_SUPPORTED
	ErrCorrupt      = disk.ErrCorrupt      // VIX_E_DISK_INVAL / CORRUPT: damaged image or wire data
	ErrInvalid      = disk.ErrInvalid      // VIX_E_INVALID_ARG
	ErrNoSpace      = disk.ErrNoSpace      // VIX_E_DISK_FULL
)

// Code returns the error code of err (0 for nil), as VixError_Code does.
func Code(err error) disk.Code {
	if err == nil {
		return 0
	}
	return disk.CodeOf(err)
}

// VixError returns the VixDiskLib error number that corresponds to err:
// 0 (VIX_OK) for nil, VIX_E_NET_HTTP_OPERATION_TIMEDOUT (30028) for a
// timeout (VIX has no generic one), VIX_E_CANCELLED (10) for a cancelled
// context, else the number of its code.
func VixError(err error) uint32 {
	switch {
	case err == nil:
		return 0
	case errors.Is(err, context.DeadlineExceeded):
		return 30028
	case errors.Is(err, context.Canceled):
		return 10
	}
	return disk.CodeOf(err).VixError()
}

// ErrorText returns a one-line description of err with its code, as
// VixDiskLib_GetErrorText does ("busy (VIX 5): …").
func ErrorText(err error) string {
	if err == nil {
		return "ok"
	}
	return fmt.Sprintf("%s (VIX %d): %v", Code(err), VixError(err), err)
}
