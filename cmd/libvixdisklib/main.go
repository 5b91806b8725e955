// Command libvixdisklib is vdisk's open libvixDiskLib.so: VMware's
// VixDiskLib C API and ABI over the vdisk kit, so that programs written for
// VDDK (nbdkit's vddk plugin, virt-v2v, KubeVirt CDI, Forklift, VDDK
// samples) run on vdisk unchanged.
//
// # Building
//
// It is built as a C shared library, the one place where vdisk uses cgo:
//
//	go build -buildmode=c-shared -o DIR/lib64/libvixDiskLib.so.8 ./cmd/libvixdisklib
//	go run ./cmd/libvixdisklib/install DIR
//
// The install step builds the library when it is missing, links the
// .so.7, .so.6 and .so names to it, and puts vixDiskLib.h and
// vm_basic_types.h under DIR/include: DIR is then a drop-in for VDDK's
// vmware-vix-disklib-distrib directory (nbdkit's libdir=DIR).
//
// # Connections
//
// A connection without serverName opens local image files (every VMDK
// variant vdisk reads, and raw images) through the kit's file mode. With
// serverName it reaches a vdisk host (`vdisk serve`): vmxSpec
// "moref=vm-N", disks by datastore path "[datastore1] VM/disk.vmdk",
// ConnectEx's snapshotRef "snapshot-N", credentials by user name and
// password or a session token (creds.sessionId.cookie), the host
// certificate pinned by thumbPrint (SHA-1 or SHA-256, checked against the
// certificate the host presents; unverified TLS is refused). Transport
// modes keep VDDK's names: nbdssl, nbd, and hotadd or san for vdisk's
// direct mode.
//
// # Threads
//
// Any thread may call any function at any time, including several threads
// on one handle. ReadAsync and WriteAsync run on Go goroutines, one per
// request, bounded per handle (see docs/vddk.md); their
// completion callbacks, and the progress callbacks of Create, Clone and
// the like, are called from library threads, never from the thread that
// made the request (VDDK also calls them from its own threads).
// VixDiskLib_Wait returns after every callback of the handle has returned.
//
// # Profiling
//
// VDISK_CPUPROFILE=FILE in the program's environment writes a CPU profile
// of the library from VixDiskLib_InitEx to VixDiskLib_Exit.
//
// # Errors
//
// Every function returns a VixError. The kit's error codes map to VIX_E_*
// numbers from one table (errors.go); VixDiskLib_GetErrorText returns the
// number's text followed by the last message of that error on the calling
// thread (or, failing that, the last message of that number), in memory
// the caller frees with VixDiskLib_FreeErrorText.
package main

// main is never called: the package is built with -buildmode=c-shared.
func main() {}
