package nbd

// Wire constants of the NBD protocol (the NBD project's proto.md). All
// integers on the wire are big-endian.

const (
	magicInit        = 0x4e42444d41474943 // "NBDMAGIC"
	magicOpt         = 0x49484156454F5054 // "IHAVEOPT"
	magicOptReply    = 0x0003e889045565a9
	magicRequest     = 0x25609513
	magicSimple      = 0x67446698
	magicStructured  = 0x668e33ef
	magicExtRequest  = 0x21e41c71 // extended headers
	magicExtReply    = 0x6e8a278c
	handshakeFixed   = 1 << 0 // NBD_FLAG_FIXED_NEWSTYLE
	handshakeNoZeros = 1 << 1 // NBD_FLAG_NO_ZEROES
)

// Options.
const (
	optExportName      = 1
	optAbort           = 2
	optList            = 3
	optStartTLS        = 5
	optInfo            = 6
	optGo              = 7
	optStructuredReply = 8
	optListMetaContext = 9
	optSetMetaContext  = 10
	optExtendedHeaders = 11
)

// Option replies.
const (
	repAck         = 1
	repServer      = 2
	repInfo        = 3
	repMetaContext = 4

	repErrUnsup    = 1<<31 + 1
	repErrPolicy   = 1<<31 + 2
	repErrInvalid  = 1<<31 + 3
	repErrTLSReqd  = 1<<31 + 5
	repErrUnknown  = 1<<31 + 6
	repErrShutdown = 1<<31 + 7
	repErrTooBig   = 1<<31 + 9
	repErrExtReqd  = 1<<31 + 10 // NBD_REP_ERR_EXT_HEADER_REQD
)

// Info types.
const (
	infoExport      = 0
	infoName        = 1
	infoDescription = 2
	infoBlockSize   = 3
)

// Transmission flags.
const (
	flagHasFlags     = 1 << 0
	flagReadOnly     = 1 << 1
	flagSendFlush    = 1 << 2
	flagSendFUA      = 1 << 3
	flagSendTrim     = 1 << 5
	flagSendZeroes   = 1 << 6
	flagSendDF       = 1 << 7
	flagCanMultiConn = 1 << 8
	flagSendCache    = 1 << 10
	flagSendFastZero = 1 << 11
)

// Commands.
const (
	cmdRead        = 0
	cmdWrite       = 1
	cmdDisc        = 2
	cmdFlush       = 3
	cmdTrim        = 4
	cmdCache       = 5
	cmdWriteZeroes = 6
	cmdBlockStatus = 7
)

// Command flags.
const (
	cmdFlagFUA      = 1 << 0
	cmdFlagNoHole   = 1 << 1
	cmdFlagDF       = 1 << 2
	cmdFlagReqOne   = 1 << 3
	cmdFlagFastZero = 1 << 4
	cmdFlagPayload  = 1 << 5 // PAYLOAD_LEN (extended headers)
)

// Structured reply chunk types and flags.
const (
	replyFlagDone    = 1 << 0
	chunkNone        = 0
	chunkOffsetData  = 1
	chunkOffsetHole  = 2
	chunkBlockStatus = 5
	chunkBlockExt    = 6 // BLOCK_STATUS_EXT (extended headers)
	chunkError       = 1<<15 + 1
)

// Errors (errno values on the wire).
const (
	errPerm     = 1
	errIO       = 5
	errNoMem    = 12
	errInval    = 22
	errNoSpc    = 28
	errOverflow = 75
	errNotSup   = 95
	errShutdown = 108
)

// Limits.
const (
	// MaxPayload is the largest READ or WRITE payload the server accepts
	// (advertised as the maximum block size).
	MaxPayload = 32 << 20
	// maxOptionLen bounds option data; no option vdisk understands needs
	// more (a name is at most 4096 bytes, plus meta context queries).
	maxOptionLen = 64 << 10
	maxNameLen   = 4096
	// maxExtentsPerReply bounds a BLOCK_STATUS reply.
	maxExtentsPerReply = 1 << 16
)
