/*
 * vixDiskLib.h: the VixDiskLib C API of vdisk's open libvixDiskLib.so.
 *
 * Part of vdisk (https://github.com/vdisk-project/vdisk), written for vdisk.
 * The function names, struct layouts, constants and error numbers are those
 * of VMware's VDDK 7/8 so that existing VDDK programs build and run
 * unchanged (ABI compatible with the x86-64 VDDK library); the text and the
 * implementation are vdisk's own. docs/vddk.md lists what each call does
 * here and how it differs from VMware's library.
 *
 * Threads: every function may be called from any thread at any time, and
 * several threads may read and write one handle at once. Completion
 * callbacks of ReadAsync/WriteAsync and progress callbacks run on threads
 * of the library, never on the caller's thread.
 */
#ifndef VDISK_VIXDISKLIB_H
#define VDISK_VIXDISKLIB_H

#include <stdarg.h>
#include "vm_basic_types.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- errors ------------------------------------------------------------ */

/* A VixError is 64 bits; the error number is the low 16 bits. */
typedef uint64 VixError;
#define VIX_ERROR_CODE(err) ((err) & 0xFFFF)
#define VIX_SUCCEEDED(err)  (VIX_OK == (err))
#define VIX_FAILED(err)     (VIX_OK != (err))

#define VIX_OK                                  0
#define VIX_E_FAIL                              1
#define VIX_E_OUT_OF_MEMORY                     2
#define VIX_E_INVALID_ARG                       3
#define VIX_E_FILE_NOT_FOUND                    4
#define VIX_E_OBJECT_IS_BUSY                    5
#define VIX_E_NOT_SUPPORTED                     6
#define VIX_E_FILE_ERROR                        7
#define VIX_E_DISK_FULL                         8
#define VIX_E_INCORRECT_FILE_TYPE               9
#define VIX_E_CANCELLED                         10
#define VIX_E_FILE_READ_ONLY                    11
#define VIX_E_FILE_ALREADY_EXISTS               12
#define VIX_E_FILE_ACCESS_ERROR                 13
#define VIX_E_REQUIRES_LARGE_FILES              14
#define VIX_E_FILE_ALREADY_LOCKED               15
#define VIX_E_VMDB                              16
#define VIX_E_NOT_SUPPORTED_ON_REMOTE_OBJECT    20
#define VIX_E_FILE_TOO_BIG                      21
#define VIX_E_FILE_NAME_INVALID                 22
#define VIX_E_ALREADY_EXISTS                    23
#define VIX_E_BUFFER_TOOSMALL                   24
#define VIX_E_OBJECT_NOT_FOUND                  25
#define VIX_E_HOST_NOT_CONNECTED                26
#define VIX_E_INVALID_UTF8_STRING               27
#define VIX_E_OPERATION_ALREADY_IN_PROGRESS     31
#define VIX_E_AUTHENTICATION_FAIL               35
#define VIX_E_HOST_CONNECTION_LOST              36
#define VIX_E_ARGUMENT_TOO_BIG                  44
#define VIX_E_INVALID_HANDLE                    1000
#define VIX_E_NOT_SUPPORTED_ON_HANDLE_TYPE      1001
#define VIX_E_TOO_MANY_HANDLES                  1002
#define VIX_E_NOT_FOUND                         2000
#define VIX_E_HOST_USER_PERMISSIONS             3014
#define VIX_E_VM_NOT_FOUND                      4000
#define VIX_E_SNAPSHOT_NOTFOUND                 13003
#define VIX_E_HOST_DISK_INVALID_VALUE           14003
#define VIX_E_HOST_DISK_SECTORSIZE              14004
#define VIX_E_HOST_FILE_ERROR_EOF               14005
#define VIX_E_HOST_NETBLKDEV_HANDSHAKE          14006
#define VIX_E_HOST_SOCKET_CREATION_ERROR        14007
#define VIX_E_HOST_SERVER_NOT_FOUND             14008
#define VIX_E_HOST_NETWORK_CONN_REFUSED         14009
#define VIX_E_HOST_TCP_SOCKET_ERROR             14010
#define VIX_E_HOST_TCP_CONN_LOST                14011
#define VIX_E_HOST_SERVER_SHUTDOWN              14014
#define VIX_E_HOST_SERVER_NOT_AVAILABLE         14015
#define VIX_E_DISK_INVAL                        16000
#define VIX_E_DISK_NOINIT                       16001
#define VIX_E_DISK_NOIO                         16002
#define VIX_E_DISK_PARTIALCHAIN                 16003
#define VIX_E_DISK_NEEDSREPAIR                  16006
#define VIX_E_DISK_OUTOFRANGE                   16007
#define VIX_E_DISK_CID_MISMATCH                 16008
#define VIX_E_DISK_CANTSHRINK                   16009
#define VIX_E_DISK_PARTMISMATCH                 16010
#define VIX_E_DISK_UNSUPPORTEDDISKVERSION       16011
#define VIX_E_DISK_OPENPARENT                   16012
#define VIX_E_DISK_NOTSUPPORTED                 16013
#define VIX_E_DISK_NEEDVMFS                     16022
#define VIX_E_DISK_TOOMANYOPENFILES             16027
#define VIX_E_DISK_TOOMANYREDO                  16028
#define VIX_E_DISK_INVALIDCHAIN                 16030
#define VIX_E_DISK_KEY_NOTFOUND                 16052
#define VIX_E_DISK_SUBSYSTEM_INIT_FAIL          16053
#define VIX_E_DISK_INVALID_CONNECTION           16054
#define VIX_E_DISK_ENCODING                     16061
#define VIX_E_DISK_CANTREPAIR                   16062
#define VIX_E_DISK_INVALIDDISK                  16063
#define VIX_E_DISK_NOLICENSE                    16064
#define VIX_E_DISK_NODEVICE                     16065
#define VIX_E_DISK_UNSUPPORTEDDEVICE            16066
#define VIX_E_DISK_CAPACITY_MISMATCH            16067
#define VIX_E_DISK_PARENT_NOTALLOWED            16068
#define VIX_E_DISK_ATTACH_ROOTLINK              16069
#define VIX_E_CANNOT_CONNECT_TO_HOST            18000
#define VIX_E_NOT_FOR_REMOTE_HOST               18001
#define VIX_E_INVALID_HOSTNAME_SPECIFICATION    18002
#define VIX_ASYNC                               25000
#define VIX_E_ASYNC_MIXEDMODE_UNSUPPORTED       26000
#define VIX_E_NET_HTTP_OPERATION_TIMEDOUT       30028
#define VIX_E_NET_HTTP_SSL_CONNECT_ERROR        30035
#define VIX_E_NET_HTTP_SSL_SECURITY             30201

/* ---- basic types --------------------------------------------------------- */

#define VIXDISKLIB_VERSION_MAJOR 8
#define VIXDISKLIB_VERSION_MINOR 0

/* All offsets and lengths are in sectors of this many bytes. */
#define VIXDISKLIB_SECTOR_SIZE 512
typedef uint64 VixDiskLibSectorType;

typedef struct VixDiskLibConnectParamsState VixDiskLibConnectParamsState;
typedef struct VixDiskLibConnectionObj *VixDiskLibConnection;
typedef struct VixDiskLibHandleStruct *VixDiskLibHandle;

typedef struct VixDiskLibGeometry {
   uint32 cylinders;
   uint32 heads;
   uint32 sectors;
} VixDiskLibGeometry;

typedef enum {
   VIXDISKLIB_DISK_MONOLITHIC_SPARSE = 1,
   VIXDISKLIB_DISK_MONOLITHIC_FLAT   = 2,
   VIXDISKLIB_DISK_SPLIT_SPARSE      = 3,
   VIXDISKLIB_DISK_SPLIT_FLAT        = 4,
   VIXDISKLIB_DISK_VMFS_FLAT         = 5,
   VIXDISKLIB_DISK_STREAM_OPTIMIZED  = 6,
   VIXDISKLIB_DISK_VMFS_THIN         = 7,
   VIXDISKLIB_DISK_VMFS_SPARSE       = 8,
   VIXDISKLIB_DISK_UNKNOWN           = 256
} VixDiskLibDiskType;

typedef enum {
   VIXDISKLIB_ADAPTER_IDE           = 1,
   VIXDISKLIB_ADAPTER_SCSI_BUSLOGIC = 2,
   VIXDISKLIB_ADAPTER_SCSI_LSILOGIC = 3,
   VIXDISKLIB_ADAPTER_UNKNOWN       = 256
} VixDiskLibAdapterType;

#define VIXDISKLIB_HWVERSION_WORKSTATION_4 3
#define VIXDISKLIB_HWVERSION_WORKSTATION_5 4
#define VIXDISKLIB_HWVERSION_ESX30         VIXDISKLIB_HWVERSION_WORKSTATION_5
#define VIXDISKLIB_HWVERSION_WORKSTATION_6 6
#define VIXDISKLIB_HWVERSION_ESX4X         7
#define VIXDISKLIB_HWVERSION_ESX50         8
#define VIXDISKLIB_HWVERSION_ESX51         9
#define VIXDISKLIB_HWVERSION_ESX55         10
#define VIXDISKLIB_HWVERSION_ESX60         11
#define VIXDISKLIB_HWVERSION_ESX65         13
#define VIXDISKLIB_HWVERSION_CURRENT       VIXDISKLIB_HWVERSION_ESX65

/* Open flags. */
#define VIXDISKLIB_FLAG_OPEN_UNBUFFERED          (1 << 0)
#define VIXDISKLIB_FLAG_OPEN_SINGLE_LINK         (1 << 1)
#define VIXDISKLIB_FLAG_OPEN_READ_ONLY           (1 << 2)
#define VIXDISKLIB_FLAG_OPEN_COMPRESSION_ZLIB    (1 << 4)
#define VIXDISKLIB_FLAG_OPEN_COMPRESSION_FASTLZ  (1 << 5)
#define VIXDISKLIB_FLAG_OPEN_COMPRESSION_SKIPZ   (1 << 6)
#define VIXDISKLIB_FLAG_OPEN_COMPRESSION_MASK    0x03f0

typedef enum {
   VIXDISKLIB_CRED_UID       = 1,
   VIXDISKLIB_CRED_SESSIONID = 2,
   VIXDISKLIB_CRED_TICKETID  = 3,
   VIXDISKLIB_CRED_SSPI      = 4,
   VIXDISKLIB_CRED_UNKNOWN   = 256
} VixDiskLibCredType;

typedef enum {
   VIXDISKLIB_SPEC_VMX             = 0,
   VIXDISKLIB_SPEC_VSTORAGE_OBJECT = 1,
   VIXDISKLIB_SPEC_UNKNOWN         = 256
} VixDiskLibSpecType;

typedef struct {
   char *userName;
   char *password;
} VixDiskLibUidPasswdCreds;

typedef struct {
   char *cookie;
   char *userName;
   char *key;
} VixDiskLibSessionIdCreds;

struct VixDiskLibTicketIdCreds;

typedef struct {
   char *id;
   char *datastoreMoRef;
   char *ssId;
} VixDiskLibVStorageObjectSpec;

/*
 * Where disks live. All fields NULL/0 (or a NULL pointer) means local files.
 * vmxSpec is "moref=vm-N" on a vdisk host; thumbPrint the host certificate's
 * SHA-1 or SHA-256 fingerprint ("AB:CD:..."); port the host's control API
 * port (0: 443, then vdisk's 8443).
 */
typedef struct {
   char *vmxSpec;
   char *serverName;
   char *thumbPrint;
   long privateUse;
   VixDiskLibCredType credType;
   union VixDiskLibCreds {
      VixDiskLibUidPasswdCreds uid;
      VixDiskLibSessionIdCreds sessionId;
      struct VixDiskLibTicketIdCreds *ticketId;
   } creds;
   uint32 port;
   uint32 nfcHostPort;
   char *vimApiVer;
   char reserved[8];
   VixDiskLibConnectParamsState *state;
   union {
      VixDiskLibVStorageObjectSpec vStorageObjSpec;
   } spec;
   VixDiskLibSpecType specType;
} VixDiskLibConnectParams;

typedef struct {
   VixDiskLibGeometry biosGeo;
   VixDiskLibGeometry physGeo;
   VixDiskLibSectorType capacity;      /* sectors */
   VixDiskLibAdapterType adapterType;
   int numLinks;
   char *parentFileNameHint;
   char *uuid;
   uint32 logicalSectorSize;
   uint32 physicalSectorSize;
} VixDiskLibInfo;

typedef struct {
   VixDiskLibDiskType diskType;
   VixDiskLibAdapterType adapterType;
   uint16 hwVersion;
   VixDiskLibSectorType capacity;      /* sectors */
   uint32 logicalSectorSize;           /* 0 or 512 */
   uint32 physicalSectorSize;          /* 0 or 512 */
} VixDiskLibCreateParams;

typedef struct {
   VixDiskLibSectorType offset;        /* sectors */
   VixDiskLibSectorType length;        /* sectors */
} VixDiskLibBlock;

typedef struct {
   uint32 numBlocks;
   VixDiskLibBlock blocks[1];          /* numBlocks entries */
} VixDiskLibBlockList;

#define VIXDISKLIB_MIN_CHUNK_SIZE   (64 * 2)
#define VIXDISKLIB_MAX_CHUNK_SIZE   (64 * 2 * 1024)
#define VIXDISKLIB_MAX_CHUNK_NUMBER (512 * 1024)

/* printf-style log callback: vdisk always passes the format "%s". */
typedef void (VixDiskLibGenericLogFunc)(const char *fmt, va_list args);
/* Progress in percent; the return value is ignored. */
typedef Bool (*VixDiskLibProgressFunc)(void *progressData, int percentCompleted);
/* Completion of ReadAsync/WriteAsync, called on a library thread. */
typedef void (*VixDiskLibCompletionCB)(void *cbData, VixError result);

/* ---- functions ----------------------------------------------------------- */
#ifndef VIXDISKLIB_NO_PROTOTYPES

VixError VixDiskLib_InitEx(uint32 majorVersion, uint32 minorVersion,
                           VixDiskLibGenericLogFunc *log,
                           VixDiskLibGenericLogFunc *warn,
                           VixDiskLibGenericLogFunc *panicFunc,
                           const char *libDir, const char *configFile);
VixError VixDiskLib_Init(uint32 majorVersion, uint32 minorVersion,
                         VixDiskLibGenericLogFunc *log,
                         VixDiskLibGenericLogFunc *warn,
                         VixDiskLibGenericLogFunc *panicFunc,
                         const char *libDir);
void VixDiskLib_Exit(void);
const char *VixDiskLib_ListTransportModes(void);

char *VixDiskLib_GetErrorText(VixError err, const char *locale);
void VixDiskLib_FreeErrorText(char *errMsg);

VixDiskLibConnectParams *VixDiskLib_AllocateConnectParams(void);
void VixDiskLib_FreeConnectParams(VixDiskLibConnectParams *params);
VixError VixDiskLib_GetConnectParams(const VixDiskLibConnection connection,
                                     VixDiskLibConnectParams **params);

VixError VixDiskLib_Connect(const VixDiskLibConnectParams *params,
                            VixDiskLibConnection *connection);
VixError VixDiskLib_ConnectEx(const VixDiskLibConnectParams *params,
                              Bool readOnly, const char *snapshotRef,
                              const char *transportModes,
                              VixDiskLibConnection *connection);
VixError VixDiskLib_Disconnect(VixDiskLibConnection connection);
VixError VixDiskLib_Cleanup(const VixDiskLibConnectParams *connectParams,
                            uint32 *numCleanedUp, uint32 *numRemaining);
VixError VixDiskLib_PrepareForAccess(const VixDiskLibConnectParams *connectParams,
                                     const char *identity);
VixError VixDiskLib_EndAccess(const VixDiskLibConnectParams *connectParams,
                              const char *identity);

VixError VixDiskLib_Open(const VixDiskLibConnection connection,
                         const char *path, uint32 flags,
                         VixDiskLibHandle *diskHandle);
VixError VixDiskLib_Close(VixDiskLibHandle diskHandle);
VixError VixDiskLib_GetInfo(VixDiskLibHandle diskHandle, VixDiskLibInfo **info);
void VixDiskLib_FreeInfo(VixDiskLibInfo *info);
const char *VixDiskLib_GetTransportMode(VixDiskLibHandle diskHandle);

VixError VixDiskLib_Read(VixDiskLibHandle diskHandle,
                         VixDiskLibSectorType startSector,
                         VixDiskLibSectorType numSectors, uint8 *readBuffer);
VixError VixDiskLib_Write(VixDiskLibHandle diskHandle,
                          VixDiskLibSectorType startSector,
                          VixDiskLibSectorType numSectors,
                          const uint8 *writeBuffer);
VixError VixDiskLib_ReadAsync(VixDiskLibHandle diskHandle,
                              VixDiskLibSectorType startSector,
                              VixDiskLibSectorType numSectors, uint8 *readBuffer,
                              VixDiskLibCompletionCB callback, void *cbData);
VixError VixDiskLib_WriteAsync(VixDiskLibHandle diskHandle,
                               VixDiskLibSectorType startSector,
                               VixDiskLibSectorType numSectors,
                               const uint8 *writeBuffer,
                               VixDiskLibCompletionCB callback, void *cbData);
VixError VixDiskLib_Wait(VixDiskLibHandle diskHandle);
VixError VixDiskLib_Flush(VixDiskLibHandle diskHandle);
VixError VixDiskLib_QueryAllocatedBlocks(VixDiskLibHandle diskHandle,
                                         VixDiskLibSectorType startSector,
                                         VixDiskLibSectorType numSectors,
                                         VixDiskLibSectorType chunkSize,
                                         VixDiskLibBlockList **blockList);
VixError VixDiskLib_FreeBlockList(VixDiskLibBlockList *blockList);

VixError VixDiskLib_ReadMetadata(VixDiskLibHandle diskHandle, const char *key,
                                 char *buf, size_t bufLen, size_t *requiredLen);
VixError VixDiskLib_WriteMetadata(VixDiskLibHandle diskHandle, const char *key,
                                  const char *val);
VixError VixDiskLib_GetMetadataKeys(VixDiskLibHandle diskHandle, char *keys,
                                    size_t maxLen, size_t *requiredLen);

VixError VixDiskLib_Create(const VixDiskLibConnection connection,
                           const char *path,
                           const VixDiskLibCreateParams *createParams,
                           VixDiskLibProgressFunc progressFunc,
                           void *progressCallbackData);
VixError VixDiskLib_CreateChild(VixDiskLibHandle diskHandle,
                                const char *childPath,
                                VixDiskLibDiskType diskType,
                                VixDiskLibProgressFunc progressFunc,
                                void *progressCallbackData);
VixError VixDiskLib_Clone(const VixDiskLibConnection dstConnection,
                          const char *dstPath,
                          const VixDiskLibConnection srcConnection,
                          const char *srcPath,
                          const VixDiskLibCreateParams *vixCreateParams,
                          VixDiskLibProgressFunc progressFunc,
                          void *progressCallbackData, Bool overWrite);
VixError VixDiskLib_Grow(VixDiskLibConnection connection, const char *path,
                         VixDiskLibSectorType capacity, Bool updateGeometry,
                         VixDiskLibProgressFunc progressFunc,
                         void *progressCallbackData);
VixError VixDiskLib_Shrink(VixDiskLibHandle diskHandle,
                           VixDiskLibProgressFunc progressFunc,
                           void *progressCallbackData);
VixError VixDiskLib_Defragment(VixDiskLibHandle diskHandle,
                               VixDiskLibProgressFunc progressFunc,
                               void *progressCallbackData);
VixError VixDiskLib_Rename(const char *srcFileName, const char *dstFileName);
VixError VixDiskLib_Unlink(VixDiskLibConnection connection, const char *path);
VixError VixDiskLib_SpaceNeededForClone(VixDiskLibHandle diskHandle,
                                        VixDiskLibDiskType cloneDiskType,
                                        uint64 *spaceNeeded);
VixError VixDiskLib_CheckRepair(const VixDiskLibConnection connection,
                                const char *filename, Bool repair);
VixError VixDiskLib_IsAttachPossible(VixDiskLibHandle parent,
                                     VixDiskLibHandle child);
VixError VixDiskLib_Attach(VixDiskLibHandle parent, VixDiskLibHandle child);

#endif /* VIXDISKLIB_NO_PROTOTYPES */

#ifdef __cplusplus
}
#endif

#endif /* VDISK_VIXDISKLIB_H */
