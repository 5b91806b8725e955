// Package nbd serves disks over the Network Block Device protocol, so that
// qemu-img, qemu-nbd's clients, nbdcopy, nbdinfo and the kernel's nbd client
// can read and write them.
//
// # Overview
//
// A Server is shaped like net/http's: NewServer with ServerOptions (a Lookup
// function resolving export names to Exports, optional TLS), then Serve on
// any net.Listener (TCP over IPv4 or IPv6, or a Unix socket) until
// Shutdown. The server speaks the fixed newstyle handshake with the options
// EXPORT_NAME, GO, INFO (export, name, description, block size), LIST,
// ABORT, STARTTLS, STRUCTURED_REPLY, EXTENDED_HEADERS (64-bit lengths;
// ServerOptions.NoExtendedHeaders turns it off) and LIST/SET_META_CONTEXT,
// and the
// commands READ (structured: unallocated ranges travel as OFFSET_HOLE
// chunks), WRITE, FLUSH, TRIM, WRITE_ZEROES (NO_HOLE, FAST_ZERO), CACHE,
// BLOCK_STATUS (base:allocation from the disk's extents, plus pluggable
// MetaContexts) and DISC, with FUA. Exports advertise CAN_MULTI_CONN: every
// connection to an export shares its one disk.Disk, so a FLUSH on any
// connection covers writes made on all of them.
//
// # Concurrency
//
// Each connection has one reader that decodes and validates requests and up
// to ServerOptions.Workers requests served concurrently; replies are
// written whole, one at a time. Shutdown stops accepting, lets requests in
// flight finish, flushes each writable export and waits for connections to
// end, closing them when its context is done.
//
// # Errors
//
// Disk error codes map to NBD errors from one table: ErrPermission to
// EPERM, ErrOutOfMemory to ENOMEM, ErrNotSupported to ENOTSUP, ErrNoSpace
// to ENOSPC, ErrInvalid to EINVAL, everything else to EIO. An unknown export
// gets NBD_REP_ERR_UNKNOWN, a refused one NBD_REP_ERR_POLICY; the protocol
// has no "busy" error, so a connection limit travels as
// NBD_REP_ERR_SHUTDOWN and a memory budget refused as NBD_REP_ERR_TOO_BIG,
// which the Client maps back to ErrBusy and ErrOutOfMemory.
//
// # Security
//
// With ServerOptions.TLSConfig set, TLS is required: every option but
// STARTTLS and ABORT is answered with NBD_REP_ERR_TLS_REQD (EXPORT_NAME
// disconnects) until the TLS handshake is done, bytes a client sends
// between STARTTLS and the handshake end the connection rather than being
// acted on, and whatever was negotiated in clear is forgotten. Lengths from
// the peer are bounded before anything is allocated: option data to 64 KiB,
// names to 4096 bytes, payloads to MaxPayload (32 MiB).
//
// Connections that have not entered transmission are bounded apart from
// the others: ServerOptions.HandshakeTimeout (10 s) closes a connection
// that has not finished negotiating, TLS handshake included, and at most
// ServerOptions.MaxNegotiating (256) negotiate at once; beyond it a new
// connection is closed at once, or takes the place of the oldest one when
// that has been negotiating for a tenth of the timeout. They do not count
// against ServerOptions.MaxConnections. Serve survives running out of file
// descriptors: it retries Accept with a delay growing to 1 s.
//
// # Memory
//
// Every buffer a connection holds (its reader and writer, TLS buffers,
// option data, READ and WRITE payloads, BLOCK_STATUS replies) is reserved
// from its ServerOptions.ConnMemory before it is allocated and released
// after. A request waits for its reservation, and the connection reads no
// further request meanwhile; one that can never fit is refused with ENOMEM.
// The maximum payload advertised in NBD_INFO_BLOCK_SIZE is lowered so that
// two requests of it fit. Server.Stats reports the bytes held.
//
// # Reads
//
// A READ whose range is all data is read straight into its reply buffer,
// behind headroom that takes the reply's header, and leaves in one write:
// no buffer copies the payload on plain connections, and under TLS
// crypto/tls cuts full-size records (16 KiB) from it. Below crypto/tls a
// buffer gathers whole records, 64 KiB while negotiating and, in
// transmission, 17 records (a 256 KiB reply in one system call), the
// difference held from the connection's budget; every reply ends with a
// flush (while negotiating, so does every read). The connection's log
// names the TLS version and cipher suite (TLS 1.3 picks AES-128-GCM on
// CPUs with AES instructions).
//
// # Client
//
// Dial opens an export named by an NBD URI (nbd://, nbds://, nbd+unix://,
// nbds+unix://) and returns a Client, which is a disk.Disk with Extenter,
// Zeroer and Trimmer. Requests are pipelined (ReadAsync and WriteAsync
// return futures; ReadAt and WriteAt wait for them) and striped over
// several connections when the server advertises CAN_MULTI_CONN. Extended
// headers and structured replies are used when the server offers them.
// TLS is always verified: against the CA in the URI's tls-certificates
// directory, against a pinned SHA-256 certificate thumbprint
// ([PinnedTLSConfig], the one pinning implementation in vdisk), or with a
// given verifying tls.Config; two of them at once, or a configuration
// that skips verification, is refused at Dial ([Trust]). Every
// request is bounded by ClientOptions.Timeout; a request past it ends the
// connections so that nothing hangs.
package nbd
