// Package vdisk is the vdisk kit: the open counterpart of VMware's Virtual
// Disk Development Kit (VixDiskLib) for Go programs that back up, restore,
// migrate or inspect virtual disks, locally or on a vdisk host
// (`vdisk serve`).
//
// # Overview
//
// [Connect] opens a [Conn] to local files (empty [ConnectParams.Server])
// or to a host: its control API address, credentials or a saved token,
// and the host certificate's SHA-256 thumbprint (or a CA file); the host
// is always verified. [Conn.Open] opens a disk named by a [Spec] (a local
// path, a VM's disk by controller key, a host disk by name, optionally a
// snapshot of it) with [OpenFlags], and returns a [Handle]: a disk.Disk
// (io.ReaderAt, io.WriterAt, Size, Flush, Close, Extents, WriteZeroes,
// Trim) plus asynchronous I/O ([Handle.ReadAsync], [Handle.WriteAsync],
// [Future.Wait], [Handle.Wait]), [Handle.QueryAllocatedBlocks],
// [Handle.ChangedAreas], [Handle.Info] and the disk database
// ([Handle.Metadata], [Handle.SetMetadata], [Handle.MetadataKeys]).
// [Clone] copies between any two connections, thin staying thin.
//
// Offsets and lengths are bytes, never sectors.
//
// # Transports
//
// A Conn tries its transport modes in order at each Open, like
// VixDiskLib_ConnectEx's mode list:
//
//   - file: a local image file (raw or any VMDK variant, chains included).
//   - direct: the host's own datastore files, reached from this machine
//     (the same machine or a shared filesystem). The host grants a lease,
//     proves the path with a nonce file, and holds the locks: a snapshot
//     is read in place while consolidation waits; a restore writes the
//     idle live disk while the host keeps every session off it and then
//     counts every block as changed. This is the HotAdd/SAN idea without
//     a proxy VM or a SAN.
//   - nbdssl: NBD over TLS with a short-lived access ticket as the export
//     name; several connections per handle (multi-conn).
//   - nbd: plain NBD, only where the host serves it.
//
// Modes that do not apply are skipped with their reason
// ([Handle.Attempts]); [Handle.TransportMode] says which one was used.
// The default is "direct:nbdssl" for a host and "file" locally; no
// default can pick a mode that crashes (the VDDK release notes' NULL
// transport crash).
//
// # Safety
//
// There is no Init or Exit: any goroutine may use the kit at any time, and
// a Conn or Handle is safe for concurrent use. Every network call is
// bounded by [Config.Timeout]; a stalled host gives an error within that
// bound, never a hang. Transient failures (a busy host or disk, a dropped
// connection) are retried with backoff up to [Config.Retries]: a handle
// whose connection drops reconnects with a new ticket and retries the
// request, after every request in flight with it has ended, so writes are
// neither duplicated out of order nor lost. Close leaves no goroutine
// behind. The library logs only through [ConnectParams.Logger].
//
// # Errors
//
// Every error matches one of [ErrNotFound], [ErrBusy], [ErrOutOfMemory],
// [ErrPermission], [ErrAccess], [ErrNotSupported], [ErrCorrupt],
// [ErrInvalid] or [ErrNoSpace] with errors.Is; [VixError] gives the
// VixDiskLib number and [ErrorText] a line of text.
//
// # VixDiskLib and VixMntapi
//
// docs/vddk.md maps every VixDiskLib and VixMntapi function to its vdisk
// counterpart, or says why there is none. In short:
//
//	VixDiskLib_InitEx / Exit          none needed; Config, LoadConfig
//	VixDiskLib_ConnectEx / Disconnect Connect / Conn.Close
//	VixDiskLib_Open / Close           Conn.Open / Handle.Close
//	VixDiskLib_Read / Write           Handle.ReadAt / WriteAt
//	VixDiskLib_ReadAsync / WriteAsync Handle.ReadAsync / WriteAsync, Future.Wait
//	VixDiskLib_Wait / Flush           Handle.Wait / Flush
//	VixDiskLib_QueryAllocatedBlocks   Handle.QueryAllocatedBlocks
//	QueryChangedDiskAreas (vSphere)   Handle.ChangedAreas
//	VixDiskLib_GetInfo                Handle.Info
//	VixDiskLib_Read/WriteMetadata     Handle.Metadata / SetMetadata / MetadataKeys
//	VixDiskLib_Create / Clone / Grow  Conn.Create / Clone / Conn.Grow
//	VixDiskLib_Shrink / Defragment    Conn.Shrink / Conn.Defragment
//	VixDiskLib_CheckRepair            Conn.CheckRepair
//	VixDiskLib_PrepareForAccess / End Conn.PrepareForAccess / Conn.EndAccess
//	VixDiskLib_Cleanup                Conn.Cleanup
//	VixDiskLib_ListTransportModes     ListTransportModes
//	VixDiskLib_GetTransportMode       Handle.TransportMode
//	VixDiskLib_GetErrorText           ErrorText, VixError
package vdisk
