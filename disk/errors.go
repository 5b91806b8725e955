package disk

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// Code classifies an error so that callers can act on it without matching
// strings. Each constant is itself an error, usable as a sentinel with
// [errors.Is]:
//
//	if errors.Is(err, disk.ErrBusy) { retry() }
//
// The zero Code means "no error" and is never returned as an error.
type Code uint8

// The error vocabulary shared by every vdisk package. Add a code only when a
// caller must act differently on it.
const (
	// ErrNotFound: the disk, snapshot, export, user, key or change ID is
	// unknown. It matches [fs.ErrNotExist].
	ErrNotFound Code = iota + 1
	// ErrBusy: locked by another writer or session, or a session limit was
	// reached; a retry may work.
	ErrBusy
	// ErrOutOfMemory: a memory budget or allocation limit was refused.
	ErrOutOfMemory
	// ErrPermission: authenticated but not allowed, a bad password or ticket,
	// or a write to a read-only handle. It matches [fs.ErrPermission].
	ErrPermission
	// ErrAccess: the data could not be reached (EIO, a short read, a network
	// reset, a TLS failure).
	ErrAccess
	// ErrNotSupported: a format variant, feature or protocol option that is
	// not implemented or that the peer refused. It matches
	// [errors.ErrUnsupported].
	ErrNotSupported
	// ErrCorrupt: on-disk or wire data breaks the format (bad magic, a grain
	// table entry past the end of file, a CRC mismatch, a truncated stream).
	ErrCorrupt
	// ErrInvalid: a bad argument from the caller: an offset out of range, a
	// misaligned buffer, an unknown option value.
	ErrInvalid
	// ErrNoSpace: the storage under the disk is full (ENOSPC, EDQUOT).
	ErrNoSpace
)

var codeNames = [...]string{
	0:               "ok",
	ErrNotFound:     "not found",
	ErrBusy:         "busy",
	ErrOutOfMemory:  "out of memory",
	ErrPermission:   "permission denied",
	ErrAccess:       "access error",
	ErrNotSupported: "not supported",
	ErrCorrupt:      "corrupt",
	ErrInvalid:      "invalid argument",
	ErrNoSpace:      "no space left",
}

// Codes lists every error code, for tables and documentation.
func Codes() []Code {
	return []Code{ErrNotFound, ErrBusy, ErrOutOfMemory, ErrPermission, ErrAccess,
		ErrNotSupported, ErrCorrupt, ErrInvalid, ErrNoSpace}
}

// String returns the code's short lowercase name, such as "not found".
func (c Code) String() string {
	if int(c) < len(codeNames) {
		return codeNames[c]
	}
	return "code " + strconv.Itoa(int(c))
}

// Error implements error.
func (c Code) Error() string { return c.String() }

// Is bridges codes to the standard library's sentinels, the way
// syscall.Errno does: ErrNotFound matches fs.ErrNotExist, ErrPermission
// matches fs.ErrPermission and ErrNotSupported matches errors.ErrUnsupported.
func (c Code) Is(target error) bool {
	switch target {
	case fs.ErrNotExist:
		return c == ErrNotFound
	case fs.ErrPermission:
		return c == ErrPermission
	case errors.ErrUnsupported:
		return c == ErrNotSupported
	}
	return false
}

// vixCodes maps codes to VMware VixDiskLib error numbers so that VDDK
// programmers recognise them (reference/vddk-api.md §8).
var vixCodes = [...]uint32{
	0:               0,     // VIX_OK
	ErrNotFound:     25,    // VIX_E_OBJECT_NOT_FOUND
	ErrBusy:         15,    // VIX_E_FILE_ALREADY_LOCKED
	ErrOutOfMemory:  2,     // VIX_E_OUT_OF_MEMORY
	ErrPermission:   13,    // VIX_E_FILE_ACCESS_ERROR
	ErrAccess:       7,     // VIX_E_FILE_ERROR
	ErrNotSupported: 6,     // VIX_E_NOT_SUPPORTED
	ErrCorrupt:      16006, // VIX_E_DISK_NEEDSREPAIR
	ErrInvalid:      3,     // VIX_E_INVALID_ARG
	ErrNoSpace:      8,     // VIX_E_DISK_FULL
}

// VixError returns the VixDiskLib error number that corresponds to c.
func (c Code) VixError() uint32 {
	if int(c) < len(vixCodes) {
		return vixCodes[c]
	}
	return 1 // VIX_E_FAIL
}

// Error is an error with the context of the operation that failed. It reads
// like "vmdk: read base.vmdk @4096: corrupt: grain table entry 17 past end of
// file". Op names the package and the operation ("vmdk: read"); Path and Off
// are optional (Off < 0 means no offset).
type Error struct {
	Op   string
	Path string
	Off  int64
	Code Code
	Err  error
}

// Error implements error. An error without context (made by Errorf) reads
// as its message; with context it reads "op path @off: code: message", the
// code printed once, by the innermost error that has context.
func (e *Error) Error() string {
	if !e.hasContext() {
		if e.Err != nil {
			return e.Err.Error()
		}
		return e.Code.String()
	}
	var b strings.Builder
	b.WriteString(e.Op)
	if e.Path != "" {
		if b.Len() > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(e.Path)
	}
	if e.Off >= 0 {
		b.WriteString(" @")
		b.WriteString(strconv.FormatInt(e.Off, 10))
	}
	if !contextBelow(e.Err) {
		b.WriteString(": ")
		b.WriteString(e.Code.String())
	}
	if e.Err != nil {
		b.WriteString(": ")
		b.WriteString(e.Err.Error())
	}
	return b.String()
}

func (e *Error) hasContext() bool { return e.Op != "" || e.Path != "" || e.Off >= 0 }

// contextBelow reports whether err's chain holds an *Error with context,
// which then prints the code.
func contextBelow(err error) bool {
	for err != nil {
		if x, ok := err.(*Error); ok && x.hasContext() {
			return true
		}
		err = errors.Unwrap(err)
	}
	return false
}

// Unwrap returns the underlying error.
func (e *Error) Unwrap() error { return e.Err }

// Is reports whether target is e's code (or a standard sentinel the code
// bridges to).
func (e *Error) Is(target error) bool {
	if c, ok := target.(Code); ok {
		return c == e.Code
	}
	return e.Code.Is(target)
}

// Errorf returns an *Error with the given code and a message formatted like
// fmt.Errorf (so %w wraps). Op and Path are empty and Off is -1.
func Errorf(code Code, format string, args ...any) error {
	return &Error{Off: -1, Code: code, Err: fmt.Errorf(format, args...)}
}

// Wrap annotates err with an operation, path and offset. The code is taken
// from err (see CodeOf). Wrap(nil, …) returns nil.
func Wrap(err error, op, path string, off int64) error {
	if err == nil {
		return nil
	}
	return &Error{Op: op, Path: path, Off: off, Code: CodeOf(err), Err: err}
}

// CodeOf returns the code that classifies err: the code of the outermost
// *Error or Code in its chain, else a classification of well-known standard
// errors (fs.ErrNotExist is ErrNotFound, ENOSPC is ErrNoSpace, an unexpected
// EOF is ErrAccess, …). Any other non-nil error is ErrAccess. CodeOf(nil) is 0.
func CodeOf(err error) Code {
	if err == nil {
		return 0
	}
	return classify(err)
}

func classify(err error) Code {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	var c Code
	if errors.As(err, &c) {
		return c
	}
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return ErrNotFound
	case errors.Is(err, fs.ErrPermission), errors.Is(err, syscall.EROFS), errors.Is(err, syscall.ELOOP):
		// ELOOP: a symbolic link where O_NOFOLLOW refuses one.
		return ErrPermission
	case errors.Is(err, errors.ErrUnsupported), errors.Is(err, syscall.EOPNOTSUPP):
		return ErrNotSupported
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT), errors.Is(err, syscall.EFBIG):
		return ErrNoSpace
	case errors.Is(err, syscall.ENOMEM):
		return ErrOutOfMemory
	case errors.Is(err, syscall.EBUSY), errors.Is(err, syscall.EAGAIN):
		return ErrBusy
	case errors.Is(err, syscall.EINVAL), errors.Is(err, os.ErrInvalid):
		return ErrInvalid
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return ErrAccess
	case errors.Is(err, io.ErrUnexpectedEOF):
		return ErrAccess
	}
	return ErrAccess
}
